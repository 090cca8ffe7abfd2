/* SPDX-License-Identifier: MIT */
/*
 * Parsers of Immich server replies (immich_reply.h): pure functions over untrusted bytes, used
 * by the Immich destination and fuzzed by tests/fuzz/fuzz_immich.c. Each parses with a json-c
 * tokener bounded to JSON_DEPTH, refuses trailing bytes other than white space, checks every
 * field it reads and writes its outputs only once the whole reply was found valid.
 */
#include "immich_reply.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define JSON_DEPTH 32

static int parse_json(const char *buf, size_t len, struct json_object **ret, struct error *err)
{
    if (len > INT_MAX)
        return error_set(err, -EBADMSG, "reply too large");
    struct json_tokener *tok = json_tokener_new_ex(JSON_DEPTH);
    if (!tok)
        return error_set(err, -ENOMEM, "out of memory");
    struct json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    if (o && je == json_tokener_success && json_tokener_get_parse_end(tok) < len) {
        /* trailing bytes after the value: only white space is fine */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
            if (!isspace((unsigned char)buf[i])) {
                json_object_put(o);
                o = NULL;
                break;
            }
    }
    json_tokener_free(tok);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the reply is not JSON");
    }
    *ret = o;
    return 0;
}

static const char *get_string(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static bool get_bool(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v) &&
           json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/* An id we put into a URL path: a uuid's characters only. */
static bool valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= IMMICH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

int immich_parse_version(const char *buf, size_t len, int ret[3], struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    static const char *const names[3] = {"major", "minor", "patch"};
    int v[3];
    for (int i = 0; i < 3; i++) {
        struct json_object *x;
        if (!json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, names[i], &x) || !json_object_is_type(x, json_type_int) ||
            json_object_get_int64(x) < 0 || json_object_get_int64(x) > 100000) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the version reply has no valid '%s'", names[i]);
        }
        v[i] = (int)json_object_get_int64(x);
    }
    json_object_put(o);
    memcpy(ret, v, sizeof(v));
    return 0;
}

int immich_parse_upload(const char *buf, size_t len, char ret_id[IMMICH_ID_MAX],
                        bool *ret_duplicate, struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *id = get_string(o, "id");
    const char *status = get_string(o, "status");
    if (!valid_id(id) || !status ||
        (strcmp(status, "created") != 0 && strcmp(status, "duplicate") != 0)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the upload reply has no valid id and status");
    }
    snprintf(ret_id, IMMICH_ID_MAX, "%s", id);
    *ret_duplicate = strcmp(status, "duplicate") == 0;
    json_object_put(o);
    return 0;
}

int immich_parse_asset(const char *buf, size_t len, char ret_checksum[64], bool *ret_trashed,
                       struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *sum = get_string(o, "checksum");
    if (!sum || strlen(sum) >= 64) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the asset reply has no checksum");
    }
    snprintf(ret_checksum, 64, "%s", sum);
    *ret_trashed = get_bool(o, "isTrashed");
    json_object_put(o);
    return 0;
}

int immich_parse_api_key(const char *buf, size_t len, unsigned *ret_perms, char *ret_name,
                         size_t name_size, struct error *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {
        {"all", IMMICH_PERM_ALL},
        {"asset.upload", IMMICH_PERM_UPLOAD},
        {"asset.read", IMMICH_PERM_READ},
        {"album.read", IMMICH_PERM_ALBUM_READ},
        {"album.create", IMMICH_PERM_ALBUM_CREATE},
        {"albumAsset.create", IMMICH_PERM_ALBUM_ADD},
    };
    struct json_object *o, *perms;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "permissions", &perms) ||
        !json_object_is_type(perms, json_type_array)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the API key reply has no permissions");
    }
    unsigned bits = 0;
    size_t n = json_object_array_length(perms);
    for (size_t i = 0; i < n; i++) {
        struct json_object *p = json_object_array_get_idx(perms, i);
        if (!json_object_is_type(p, json_type_string))
            continue;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(json_object_get_string(p), known[k].name) == 0)
                bits |= known[k].bit;
    }
    const char *name = get_string(o, "name");
    if (ret_name && name_size)
        snprintf(ret_name, name_size, "%s", name ? name : "");
    *ret_perms = bits;
    json_object_put(o);
    return 0;
}

int immich_parse_bulk_check(const char *buf, size_t len, size_t n, struct dest_precheck *ret,
                            struct error *err)
{
    struct json_object *o, *results;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "results", &results) ||
        !json_object_is_type(results, json_type_array)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the bulk check reply has no results");
    }
    size_t m = json_object_array_length(results);
    /* check everything first: outputs are written only on success */
    for (size_t i = 0; i < m; i++) {
        struct json_object *it = json_object_array_get_idx(results, i);
        const char *id = get_string(it, "id");
        char *end;
        errno = 0;
        unsigned long long k = id && *id ? strtoull(id, &end, 10) : 0;
        if (!id || !*id || *end || errno || k >= n) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the bulk check reply has an unknown id");
        }
    }
    for (size_t i = 0; i < m; i++) {
        struct json_object *it = json_object_array_get_idx(results, i);
        size_t k = (size_t)strtoull(get_string(it, "id"), NULL, 10);
        const char *action = get_string(it, "action");
        const char *asset = get_string(it, "assetId");
        if (action && strcmp(action, "reject") == 0 && valid_id(asset) &&
            !get_bool(it, "isTrashed")) {
            ret[k].present = true;
            snprintf(ret[k].remote, sizeof(ret[k].remote), "%s", asset);
        }
    }
    json_object_put(o);
    return 0;
}

int immich_parse_album(const char *buf, size_t len, const char *name, char ret_id[IMMICH_ID_MAX],
                       bool *ret_found, struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *found = NULL;
    if (json_object_is_type(o, json_type_object)) {
        found = get_string(o, "id");
        if (!valid_id(found)) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the album reply has no valid id");
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n && !found; i++) {
            struct json_object *a = json_object_array_get_idx(o, i);
            const char *an = get_string(a, "albumName");
            const char *id = get_string(a, "id");
            if (an && name && strcmp(an, name) == 0 && valid_id(id))
                found = id;
        }
    } else {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the album reply is neither an album nor a list");
    }
    if (found)
        snprintf(ret_id, IMMICH_ID_MAX, "%s", found);
    *ret_found = found != NULL;
    json_object_put(o);
    return 0;
}

void immich_printable(const char *in, size_t len, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < size; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (size)
        out[j] = '\0';
}

void immich_reply_message(const char *buf, size_t len, char *out, size_t size)
{
    struct json_object *o = NULL, *m;
    char tmp[300] = "";
    if (size == 0)
        return;
    out[0] = '\0';
    if (len > 0 && parse_json(buf, len, &o, NULL) == 0 &&
        json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "message", &m)) {
        if (json_object_is_type(m, json_type_string)) {
            snprintf(tmp, sizeof(tmp), "%s", json_object_get_string(m));
        } else if (json_object_is_type(m, json_type_array)) {
            size_t n = json_object_array_length(m), at = 0;
            for (size_t i = 0; i < n && at < sizeof(tmp); i++) {
                struct json_object *s = json_object_array_get_idx(m, i);
                if (!json_object_is_type(s, json_type_string))
                    continue;
                int k = snprintf(tmp + at, sizeof(tmp) - at, "%s%s", at ? "; " : "",
                                 json_object_get_string(s));
                if (k < 0)
                    break;
                at += (size_t)k;
            }
        }
    }
    json_object_put(o);
    if (tmp[0])
        immich_printable(tmp, strlen(tmp), out, size);
    else
        immich_printable(buf, len < 200 ? len : 200, out, size);
}
