/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for media.c: every input goes through media_probe_buffer with a few extension
 * hints (the hint changes the kind, never the parser, but it is cheap to cover). Besides memory
 * errors, it checks the contract: a failure is -ENODATA or -EBADMSG (nothing else can come from
 * memory) with a message; -EBADMSG leaves the output untouched, -ENODATA writes it with no
 * capture time; the text fields are NUL-terminated and trimmed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "media.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* NUL-terminated inside the field, no space or NUL at either end. */
static bool text_ok(const char *s)
{
    const char *nul = memchr(s, '\0', MEDIA_TEXT_MAX);
    if (!nul)
        return false;
    size_t n = (size_t)(nul - s);
    return n == 0 || (s[0] != ' ' && s[n - 1] != ' ');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const exts[] = {"jpg", "mp4", NULL};

    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        struct media_info info, before;
        struct error err = {0};
        memset(&info, 0x5a, sizeof(info));
        before = info;
        int r = media_probe_buffer(data, size, exts[i], &info, &err);
        if (r == 0 || r == -ENODATA) {
            if (info.kind < MEDIA_KIND_UNKNOWN || info.kind > MEDIA_KIND_VIDEO ||
                (info.has_offset != 0 && info.has_offset != 1) || !text_ok(info.make) ||
                !text_ok(info.model) || !text_ok(info.lens) || !text_ok(info.serial))
                abort();
            if (r == -ENODATA && (info.capture_time != 0 || info.has_offset != 0 || err.code != r ||
                                  err.msg[0] == '\0'))
                abort();
            char day[16];
            media_date_path(info.capture_time, day, sizeof(day));
        } else if (r != -EBADMSG || err.code != r || err.msg[0] == '\0' ||
                   memcmp(&info, &before, sizeof(info)) != 0) {
            abort();
        }
    }
    return 0;
}
