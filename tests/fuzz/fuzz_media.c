/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for media.c: every input goes through media_probe_buffer with a few extension
 * hints (the hint changes the kind, never the parser, but it is cheap to cover). Besides memory
 * errors, it checks the contract: a failure is -ENODATA or -EBADMSG (nothing else can come from
 * memory) with a message, and leaves the output untouched.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "media.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const exts[] = {"jpg", "mp4", NULL};

    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        struct media_info info, before;
        struct error err = {0};
        memset(&info, 0x5a, sizeof(info));
        before = info;
        int r = media_probe_buffer(data, size, exts[i], &info, &err);
        if (r == 0) {
            if (info.kind < MEDIA_KIND_UNKNOWN || info.kind > MEDIA_KIND_VIDEO ||
                (info.has_offset != 0 && info.has_offset != 1))
                abort();
            char day[16];
            media_date_path(info.capture_time, day, sizeof(day));
        } else if ((r != -ENODATA && r != -EBADMSG) || err.code != r || err.msg[0] == '\0' ||
                   memcmp(&info, &before, sizeof(info)) != 0) {
            abort();
        }
    }
    return 0;
}
