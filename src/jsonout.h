/* SPDX-License-Identifier: MIT */
/*
 * Strings for the JSON that users and their programs read (the web API, `--json` of the CLI,
 * the MQTT state): always valid UTF-8, so a strict decoder accepts the whole document even when
 * a card holds a file whose name is not UTF-8 (Linux allows any bytes but '/' and NUL).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/* True when the len bytes at s are well-formed UTF-8 (no overlong forms, no surrogates, nothing
 * above U+10FFFF). NULL with len 0 is valid. Any thread. */
bool jsonout_utf8_valid(const char *s, size_t len);

/* A newly allocated copy of s in which each byte that does not start or continue a well-formed
 * UTF-8 sequence is replaced by U+FFFD (EF BF BD); valid text comes back unchanged. The caller
 * frees it; NULL when s is NULL or out of memory. Any thread. */
char *jsonout_utf8_sanitize(const char *s);

/* A JSON string holding s made valid UTF-8 as jsonout_utf8_sanitize does. NULL (JSON null)
 * when s is NULL or out of memory. The caller owns it (json_object_put). Any thread. */
struct json_object *jsonout_string(const char *s);

/* As jsonout_string, but JSON null also for "". */
struct json_object *jsonout_string_or_null(const char *s);

/* Adds key: jsonout_string(s) to object o, and when s is not valid UTF-8 also "<key>_hex": the
 * exact bytes of s as lowercase hex, so the real name stays retrievable. s NULL adds key: null.
 * Keys longer than 64 bytes get no _hex twin. Any thread. */
void jsonout_add_path(struct json_object *o, const char *key, const char *s);

struct config;

/* An error text as users are shown it: every configured secret of cfg scrubbed from it
 * (config_scrub_secrets; a row written by an older version may hold one), made valid UTF-8.
 * JSON null when s is NULL or "", or when out of memory. cfg may be NULL (nothing scrubbed).
 * The caller owns it. Any thread while cfg lives. */
struct json_object *jsonout_error(const struct config *cfg, const char *s);
