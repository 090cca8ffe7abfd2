/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the parsers of Immich server replies (immich_reply.h). The first byte
 * picks the parser, the rest is the reply. Whatever the bytes, a parser returns 0 or -EBADMSG,
 * writes bounded, NUL-terminated outputs, and never reads past the reply.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "immich_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned which = data[0] % 7;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    struct error err;
    int r = 0;
    switch (which) {
    case 0: {
        int v[3];
        r = immich_parse_version(buf, len, v, &err);
        break;
    }
    case 1: {
        char id[IMMICH_ID_MAX];
        bool dup;
        r = immich_parse_upload(buf, len, id, &dup, &err);
        if (r == 0 && strlen(id) >= IMMICH_ID_MAX)
            abort();
        break;
    }
    case 2: {
        char sum[64];
        bool trashed;
        r = immich_parse_asset(buf, len, sum, &trashed, &err);
        if (r == 0 && strlen(sum) >= sizeof(sum))
            abort();
        break;
    }
    case 3: {
        unsigned perms;
        char name[32];
        r = immich_parse_api_key(buf, len, &perms, name, sizeof(name), &err);
        if (r == 0 && (perms & ~IMMICH_PERM_ALL))
            abort();
        break;
    }
    case 4: {
        struct dest_precheck res[4];
        memset(res, 0, sizeof(res));
        r = immich_parse_bulk_check(buf, len, 4, res, &err);
        break;
    }
    case 5: {
        char id[IMMICH_ID_MAX];
        bool found;
        r = immich_parse_album(buf, len, "2023-07-14", id, &found, &err);
        break;
    }
    default: {
        char msg[128];
        immich_reply_message(buf, len, msg, sizeof(msg));
        if (strlen(msg) >= sizeof(msg))
            abort();
        break;
    }
    }
    if (r != 0 && r != -EBADMSG && r != -ENOMEM)
        abort();
    return 0;
}
