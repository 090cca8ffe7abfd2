/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for name patterns (pattern.h; the text comes from a config file, the values
 * from a card's metadata): the first byte picks the kind, the text runs to the first NUL and the
 * bytes after it become the model's value. A pattern that compiles must expand to a relative
 * path without an empty, "." or ".." component and without control characters (but the card's
 * name's), or fail cleanly.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2 * PATTERN_TEXT_MAX)
        return 0;
    enum pattern_kind kind = (enum pattern_kind)(data[0] % 3);
    char *text = calloc(1, size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    size_t tl = strlen(text);
    const char *value = tl + 2 <= size ? text + tl + 1 : "";
    struct pattern *p = NULL;
    struct error err;
    if (pattern_compile(text, kind, &p, &err) == 0) {
        struct pattern_values v = {.capture_time = (int64_t)size * 86400 * 97,
                                   .name = value,
                                   .make = value,
                                   .model = value,
                                   .lens = "",
                                   .card = value,
                                   .seq = size,
                                   .md5 = (size & 1) ? "00112233445566778899aabbccddeeff" : NULL};
        char out[PATTERN_OUT_MAX];
        if (pattern_expand(p, &v, out, sizeof(out), &err) == 0) {
            size_t len = strlen(out);
            if (kind != PATTERN_FOLDER && (len == 0 || strchr(out, '/')))
                abort();
            if (out[0] == '/' || strstr(out, "//") || (len && out[len - 1] == '/'))
                abort();
            bool ctl = false; /* control characters come only from {name} and {ext} */
            for (const char *c = value; *c; c++)
                ctl = ctl || (unsigned char)*c < 0x20 || *c == 0x7f;
            for (const char *c = out; *c && !ctl; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    abort();
            for (const char *c = out; len;) {
                size_t l = strcspn(c, "/");
                if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
                    abort();
                if (!c[l])
                    break;
                c += l + 1;
            }
        }
        pattern_free(p);
    }
    free(text);
    return 0;
}
