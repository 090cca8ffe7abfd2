/* SPDX-License-Identifier: MIT */
/*
 * Valid UTF-8 for JSON: json-c copies the bytes of a string through unchanged, so a file name
 * that is not UTF-8 would make the whole document unreadable to a strict client. Names are
 * cleaned here, one byte at a time (each byte of a broken sequence becomes one U+FFFD), and a
 * path that had to be changed keeps its real bytes in a hex twin field.
 */
#include "jsonout.h"

#include "config.h"
#include "hasher.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool jsonout_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len(p + i, len - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

char *jsonout_utf8_sanitize(const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s);
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(3 * len + 1); /* each byte becomes at most the 3 bytes of U+FFFD */
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len(p + i, len - i);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    return out;
}

json_object *jsonout_string(const char *s)
{
    if (!s)
        return NULL;
    if (jsonout_utf8_valid(s, strlen(s)))
        return json_object_new_string(s);
    char *clean = jsonout_utf8_sanitize(s);
    json_object *o = clean ? json_object_new_string(clean) : NULL;
    free(clean);
    return o;
}

json_object *jsonout_string_or_null(const char *s)
{
    return s && s[0] ? jsonout_string(s) : NULL;
}

void jsonout_add_path(json_object *o, const char *key, const char *s)
{
    json_object_object_add(o, key, jsonout_string(s));
    size_t len = s ? strlen(s) : 0;
    if (!s || jsonout_utf8_valid(s, len) || strlen(key) > 64)
        return;
    char hkey[64 + sizeof("_hex")];
    snprintf(hkey, sizeof(hkey), "%s_hex", key);
    char *hex = len <= (SIZE_MAX - 1) / 2 ? malloc(2 * len + 1) : NULL;
    if (!hex)
        return;
    hasher_hex((const uint8_t *)s, len, hex);
    json_object_object_add(o, hkey, json_object_new_string(hex));
    free(hex);
}

json_object *jsonout_error(const struct config *cfg, const char *s)
{
    if (!s || !s[0])
        return NULL;
    char *text = strdup(s);
    if (!text)
        return NULL;
    config_scrub_secrets(cfg, text);
    json_object *o = jsonout_string(text);
    free(text);
    return o;
}
