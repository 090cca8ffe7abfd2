/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the parsers of S3 replies (s3_proto.h). The first byte picks the parser,
 * the rest is the reply. Whatever the bytes, a parser returns 0 or -EBADMSG, writes bounded,
 * NUL-terminated outputs, and never reads past the reply.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_upload(const char *key, const char *upload_id, const char *initiated, void *arg)
{
    if (strlen(key) > S3_KEY_MAX || strlen(upload_id) >= S3_UPLOAD_ID_MAX || strlen(initiated) > 64)
        abort();
    (*(size_t *)arg)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned which = data[0] % 4;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    struct error err;
    int r = 0;
    switch (which) {
    case 0: {
        char code[S3_CODE_MAX], msg[64];
        r = s3_parse_error(buf, len, code, sizeof(code), msg, sizeof(msg));
        if (r == 0 && (strlen(code) >= sizeof(code) || strlen(msg) >= sizeof(msg) || !code[0]))
            abort();
        break;
    }
    case 1: {
        char id[S3_UPLOAD_ID_MAX];
        r = s3_parse_upload_id(buf, len, id, &err);
        if (r == 0 && strlen(id) >= sizeof(id))
            abort();
        break;
    }
    case 2: {
        char etag[S3_ETAG_MAX];
        r = s3_parse_complete(buf, len, etag, &err);
        if (r == 0 && strlen(etag) >= sizeof(etag))
            abort();
        break;
    }
    default: {
        size_t n = 0;
        bool more;
        char next_key[S3_KEY_MAX + 1], next_id[S3_UPLOAD_ID_MAX];
        r = s3_parse_list_uploads(buf, len, count_upload, &n, &more, next_key, next_id, &err);
        if (r == 0 && (n > 1000 || strlen(next_key) > S3_KEY_MAX))
            abort();
        break;
    }
    }
    if (r != 0 && r != -EBADMSG)
        abort();
    return 0;
}
