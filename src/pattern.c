/* SPDX-License-Identifier: MIT */
/*
 * Name patterns (pattern.h). Compiling walks the text once into at most PATTERN_TOKENS_MAX parts,
 * each a literal (a slice of the text) or a token with its width and default; every problem is
 * reported with the column where it starts. Expanding appends each part's cleaned value into the
 * caller's buffer and then checks the components of the result, so whatever the values are the
 * caller gets a relative path without "." or ".." components, or an error.
 */
#include "pattern.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum field {
    F_LITERAL,
    F_YEAR,
    F_MONTH,
    F_DAY,
    F_HOUR,
    F_MINUTE,
    F_SECOND,
    F_DATE,
    F_NAME,
    F_EXT,
    F_EXT_UPPER,
    F_EXT_LOWER, /* {ext:lower} */
    F_MAKE,
    F_MODEL,
    F_LENS,
    F_SERIAL,
    F_CARD,
    F_SESSION,
    F_SEQ,
    F_MD5,
};

static const struct {
    const char *name;
    enum field field;
    bool width; /* takes ":N" */
} tokens[] = {
    {"year", F_YEAR, false},       {"month", F_MONTH, false},   {"day", F_DAY, false},
    {"hour", F_HOUR, false},       {"minute", F_MINUTE, false}, {"second", F_SECOND, false},
    {"date", F_DATE, false},       {"name", F_NAME, false},     {"ext", F_EXT, false},
    {"EXT", F_EXT_UPPER, false},   {"make", F_MAKE, false},     {"model", F_MODEL, false},
    {"lens", F_LENS, false},       {"serial", F_SERIAL, false}, {"card", F_CARD, false},
    {"session", F_SESSION, false}, {"seq", F_SEQ, true},        {"md5", F_MD5, true},
};

struct part {
    enum field field;
    size_t off, len;         /* F_LITERAL: the slice of text */
    unsigned width;          /* F_SEQ: zero-padding, 0 none; F_MD5: digits, 32 by default */
    size_t def_off, def_len; /* the default's slice of text; def_len 0: "unknown" */
};

struct pattern {
    enum pattern_kind kind;
    char text[PATTERN_TEXT_MAX + 1];
    struct part parts[PATTERN_TOKENS_MAX];
    size_t n;
    bool md5;
};

static int bad(struct error *err, size_t col, const char *what)
{
    return error_set(err, -EINVAL, "column %zu: %s", col + 1, what);
}

static int add_part(struct pattern *p, const struct part *part, size_t col, struct error *err)
{
    if (p->n >= PATTERN_TOKENS_MAX)
        return bad(err, col, "too many tokens and texts");
    p->parts[p->n++] = *part;
    return 0;
}

/* Parses the token between text[open] == '{' and text[close] == '}'. */
static int parse_token(struct pattern *p, size_t open, size_t close, struct error *err)
{
    const char *t = p->text + open + 1;
    size_t len = close - open - 1;
    const char *bar = memchr(t, '|', len);
    size_t head = bar ? (size_t)(bar - t) : len;
    const char *colon = memchr(t, ':', head);
    size_t nlen = colon ? (size_t)(colon - t) : head;
    struct part part = {.field = F_LITERAL};
    bool width = false;
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
        if (strlen(tokens[i].name) == nlen && memcmp(tokens[i].name, t, nlen) == 0) {
            part.field = tokens[i].field;
            width = tokens[i].width;
        }
    if (part.field == F_LITERAL) {
        char msg[96];
        snprintf(msg, sizeof(msg), "unknown token '{%.*s}'", (int)(nlen > 32 ? 32 : nlen), t);
        return bad(err, open, msg);
    }
    if (part.field == F_MD5)
        part.width = 32;
    if (colon && part.field == F_EXT && head - nlen - 1 == 5 &&
        memcmp(colon + 1, "lower", 5) == 0) {
        part.field = F_EXT_LOWER;
        colon = NULL;
    }
    if (colon) {
        const char *w = colon + 1;
        size_t wl = head - nlen - 1;
        unsigned max = part.field == F_MD5 ? 32 : 9;
        unsigned v = 0;
        bool ok = width && wl >= 1 && wl <= 2;
        for (size_t i = 0; ok && i < wl; i++) {
            ok = w[i] >= '0' && w[i] <= '9';
            v = v * 10 + (unsigned)(w[i] - '0');
        }
        if (!ok || v < 1 || v > max) {
            char msg[96];
            snprintf(msg, sizeof(msg), "bad width in '{%.*s}' (a number from 1 to %u%s)",
                     (int)(head > 32 ? 32 : head), t, max, width ? "" : "; this token takes none");
            return bad(err, open + 1 + nlen, msg);
        }
        part.width = v;
    }
    if (bar) {
        part.def_off = (size_t)(bar + 1 - p->text);
        part.def_len = len - head - 1;
        if (part.def_len == 0)
            return bad(err, part.def_off - 1, "empty default after '|'");
        if (memchr(bar + 1, '/', part.def_len))
            return bad(err, part.def_off, "a default cannot hold '/'");
        if (part.def_len >= 2 && memmem(bar + 1, part.def_len, "..", 2))
            return bad(err, part.def_off, "a default cannot hold '..'");
    }
    if (part.field == F_MD5)
        p->md5 = true;
    return add_part(p, &part, open, err);
}

static int add_literal(struct pattern *p, size_t off, size_t len, struct error *err)
{
    if (len == 0)
        return 0;
    const char *s = p->text + off;
    if (len >= 2 && memmem(s, len, "..", 2))
        return bad(err, (size_t)((const char *)memmem(s, len, "..", 2) - p->text),
                   "'..' is not allowed (it could name a parent folder)");
    if (p->kind != PATTERN_FOLDER && memchr(s, '/', len))
        return bad(err, (size_t)((const char *)memchr(s, '/', len) - p->text),
                   p->kind == PATTERN_FILE ? "a file pattern cannot hold '/' (folders belong in "
                                             "folder_pattern)"
                                           : "an album pattern cannot hold '/'");
    struct part part = {.field = F_LITERAL, .off = off, .len = len};
    return add_part(p, &part, off, err);
}

/* Checks the components of a folder pattern: not absolute, none empty or ".". */
static int check_components(const struct pattern *p, struct error *err)
{
    const char *t = p->text;
    if (p->kind != PATTERN_FOLDER)
        return t[0] ? 0 : bad(err, 0, "empty name");
    if (t[0] == '/')
        return bad(err, 0, "absolute path (a folder pattern is relative to the destination)");
    size_t levels = 1;
    for (size_t i = 0; t[i]; i++)
        if (t[i] == '/' && ++levels > PATTERN_FOLDERS_MAX)
            return bad(err, i, "more than 16 folder levels");
    for (size_t i = 0; t[i];) {
        size_t len = strcspn(t + i, "/");
        if (len == 0 || (len == 1 && t[i] == '.'))
            return bad(err, i,
                       len ? "a folder named '.'"
                           : "empty folder name ('//' or a "
                             "trailing '/')");
        i += len;
        if (t[i] == '/')
            i++;
        if (t[i] == '\0' && t[i - 1] == '/')
            return bad(err, i - 1, "empty folder name ('//' or a trailing '/')");
    }
    return 0;
}

int pattern_compile(const char *text, enum pattern_kind kind, struct pattern **ret,
                    struct error *err)
{
    size_t tl = text ? strnlen(text, PATTERN_TEXT_MAX + 1) : 0;
    if (tl > PATTERN_TEXT_MAX)
        return error_set(err, -EINVAL, "longer than %d bytes", PATTERN_TEXT_MAX);
    struct pattern *p = calloc(1, sizeof(*p));
    if (!p)
        return error_set(err, -ENOMEM, "out of memory");
    p->kind = kind;
    memcpy(p->text, text ? text : "", tl);
    int r = 0;
    size_t lit = 0; /* start of the current literal */
    for (size_t i = 0; i < tl && r == 0; i++) {
        unsigned char c = (unsigned char)p->text[i];
        if (c < 0x20 || c == 0x7f) {
            r = bad(err, i, "control character");
        } else if (c == '}') {
            r = bad(err, i, "'}' without '{'");
        } else if (c == '{') {
            const char *close = memchr(p->text + i + 1, '}', tl - i - 1);
            const char *reopen = memchr(p->text + i + 1, '{', tl - i - 1);
            if (!close || (reopen && reopen < close)) {
                r = bad(err, i, "'{' without '}'");
                break;
            }
            r = add_literal(p, lit, i - lit, err);
            if (r == 0)
                r = parse_token(p, i, (size_t)(close - p->text), err);
            i = (size_t)(close - p->text);
            lit = i + 1;
        }
    }
    if (r == 0)
        r = add_literal(p, lit, tl - lit, err);
    if (r == 0)
        r = check_components(p, err);
    if (r < 0) {
        free(p);
        return r;
    }
    *ret = p;
    return 0;
}

void pattern_free(struct pattern *p)
{
    free(p);
}

const char *pattern_text(const struct pattern *p)
{
    return p->text;
}

bool pattern_uses_md5(const struct pattern *p)
{
    return p->md5;
}

/* Output being built, with a sticky overflow. */
struct out {
    char *buf;
    size_t size, len;
    bool full;
};

static void put(struct out *o, const char *s, size_t len)
{
    if (o->full || o->len + len >= o->size) {
        o->full = true;
        return;
    }
    memcpy(o->buf + o->len, s, len);
    o->len += len;
    o->buf[o->len] = '\0';
}

#define NAME_VALUE_MAX 256 /* {name}, {ext}: a whole file name (255 bytes) */

/* Cleans raw text (len bytes) into dst (max bytes): drops control characters,
 * maps '/', '\' and invalid UTF-8 to '_', trims spaces (and dots when trim_dots), cuts on a
 * UTF-8 boundary. Returns the length. */
static size_t clean(const char *s, size_t len, bool trim_dots, char *dst, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < len && s[i];) {
        unsigned char c = (unsigned char)s[i];
        size_t sl = c < 0x80 ? 1 : utf8_seq_len((const unsigned char *)s + i, len - i);
        if (c < 0x20 || c == 0x7f) {
            i++;
            continue;
        }
        if (sl == 0) { /* not UTF-8 */
            c = '_';
            sl = 1;
        } else if (c == '/' || c == '\\') {
            c = '_';
        }
        if (n + sl >= max)
            break;
        if (sl == 1)
            dst[n] = (char)c;
        else
            memcpy(dst + n, s + i, sl);
        n += sl;
        i += sl;
    }
    dst[n] = '\0';
    size_t start = 0;
    while (start < n && (dst[start] == ' ' || (trim_dots && dst[start] == '.')))
        start++;
    while (n > start && (dst[n - 1] == ' ' || (trim_dots && dst[n - 1] == '.')))
        n--;
    memmove(dst, dst + start, n - start);
    dst[n - start] = '\0';
    return n - start;
}

/* The extension of name (from its last dot, not a leading one), or "". */
static const char *ext_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name ? dot : name + strlen(name);
}

static int valid_md5(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, PATTERN_MD5_UNKNOWN) == 0)
        return 1;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[32] == '\0';
}

/* The value of one token into v (NAME_VALUE_MAX bytes; cut to PATTERN_VALUE_MAX but for {name}
 * and {ext}). */
static int token_value(const struct part *part, const struct pattern_values *vals,
                       const struct tm *tm, char *v, struct error *err)
{
    const char *name = vals->name ? vals->name : "";
    const char *raw = NULL;
    bool as_is = false; /* {name}, {ext}: raw_len bytes of raw */
    size_t raw_len = 0;
    switch (part->field) {
    case F_YEAR:
        snprintf(v, PATTERN_VALUE_MAX, "%04d", tm->tm_year + 1900);
        return 0;
    case F_MONTH:
        snprintf(v, PATTERN_VALUE_MAX, "%02d", tm->tm_mon + 1);
        return 0;
    case F_DAY:
        snprintf(v, PATTERN_VALUE_MAX, "%02d", tm->tm_mday);
        return 0;
    case F_HOUR:
        snprintf(v, PATTERN_VALUE_MAX, "%02d", tm->tm_hour);
        return 0;
    case F_MINUTE:
        snprintf(v, PATTERN_VALUE_MAX, "%02d", tm->tm_min);
        return 0;
    case F_SECOND:
        snprintf(v, PATTERN_VALUE_MAX, "%02d", tm->tm_sec);
        return 0;
    case F_DATE:
        snprintf(v, PATTERN_VALUE_MAX, "%04d-%02d-%02d", tm->tm_year + 1900, tm->tm_mon + 1,
                 tm->tm_mday);
        return 0;
    case F_SESSION:
        snprintf(v, PATTERN_VALUE_MAX, "%" PRId64, vals->session);
        return 0;
    case F_SEQ:
        snprintf(v, PATTERN_VALUE_MAX, "%0*" PRIu64, (int)part->width, vals->seq);
        return 0;
    case F_MD5:
        if (!valid_md5(vals->md5))
            return error_set(err, -EINVAL, "{md5} needs the content's MD5, not known here");
        snprintf(v, PATTERN_VALUE_MAX, "%.*s", (int)part->width, vals->md5);
        return 0;
    case F_NAME:
        raw = name;
        raw_len = (size_t)(ext_of(name) - name);
        as_is = true;
        break;
    case F_EXT:
    case F_EXT_UPPER:
    case F_EXT_LOWER:
        raw = ext_of(name);
        raw_len = strlen(raw);
        as_is = true;
        break;
    case F_MAKE:
        raw = vals->make;
        break;
    case F_MODEL:
        raw = vals->model;
        break;
    case F_LENS:
        raw = vals->lens;
        break;
    case F_SERIAL:
        raw = vals->serial;
        break;
    case F_CARD:
        raw = vals->card;
        break;
    case F_LITERAL:
        break;
    }
    if (as_is) { /* the card's own name, as it is (a backend maps what it must) */
        size_t n = raw_len < NAME_VALUE_MAX - 1 ? raw_len : NAME_VALUE_MAX - 1;
        for (size_t i = 0; i < n; i++)
            v[i] = raw[i] == '/' ? '_' : raw[i];
        v[n] = '\0';
    } else {
        clean(raw ? raw : "", raw ? strlen(raw) : 0, true, v, PATTERN_VALUE_MAX);
    }
    if (part->field == F_EXT_UPPER)
        for (char *c = v; *c; c++)
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
    if (part->field == F_EXT_LOWER)
        for (char *c = v; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
    return 0;
}

/* Checks the components of an expansion (size bytes at most 255 each, none empty, ".", ".."). */
static int check_result(const char *s, struct error *err)
{
    for (const char *c = s;;) {
        size_t len = strcspn(c, "/");
        if (len == 0 && s[0])
            return error_set(err, -EINVAL, "'%s': empty name", s);
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return error_set(err, -EINVAL, "'%s': a name is '%.*s'", s, (int)len, c);
        if (len > 255)
            return error_set(err, -ENAMETOOLONG, "a name of '%.40s...' is longer than 255 bytes",
                             s);
        if (!c[len])
            return 0;
        c += len + 1;
    }
}

/* The broken-down capture time of v (floating: read as UTC). */
static void capture_tm(const struct pattern_values *v, struct tm *tm)
{
    time_t t = (time_t)v->capture_time;
    if (!gmtime_r(&t, tm))
        memset(tm, 0, sizeof(*tm));
}

int pattern_expand(const struct pattern *p, const struct pattern_values *v, char *out, size_t size,
                   struct error *err)
{
    char tmp[PATTERN_OUT_MAX];
    struct out o = {.buf = tmp, .size = sizeof(tmp)};
    tmp[0] = '\0';
    struct tm tm;
    capture_tm(v, &tm);
    for (size_t i = 0; i < p->n; i++) {
        const struct part *part = &p->parts[i];
        if (part->field == F_LITERAL) {
            put(&o, p->text + part->off, part->len);
            continue;
        }
        char val[NAME_VALUE_MAX];
        int r = token_value(part, v, &tm, val, err);
        if (r < 0)
            return r;
        if (!val[0] && part->def_len)
            clean(p->text + part->def_off, part->def_len, false, val, PATTERN_VALUE_MAX);
        if (!val[0] && part->field >= F_MAKE && part->field <= F_CARD)
            snprintf(val, sizeof(val), "unknown"); /* an extension may well be empty */
        put(&o, val, strlen(val));
    }
    if (o.full || o.len >= size)
        return error_set(err, -ENAMETOOLONG, "'%.40s...' is too long", tmp);
    if (!tmp[0]) {
        if (p->kind != PATTERN_FOLDER)
            return error_set(err, -EINVAL, "'%s' gives an empty name", p->text);
        out[0] = '\0';
        return 0;
    }
    int r = check_result(tmp, err);
    if (r < 0)
        return r;
    memcpy(out, tmp, o.len + 1);
    return 0;
}

/* Appends len bytes of s to o, glob characters escaped. */
static void put_escaped(struct out *o, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (strchr("*?[\\", s[i]))
            put(o, "\\", 1);
        put(o, s + i, 1);
    }
}

int pattern_glob(const struct pattern *p, const struct pattern_values *v, char *out, size_t size)
{
    char tmp[2 * PATTERN_OUT_MAX];
    struct out o = {.buf = tmp, .size = sizeof(tmp)};
    tmp[0] = '\0';
    struct tm tm;
    capture_tm(v, &tm);
    for (size_t i = 0; i < p->n; i++) {
        const struct part *part = &p->parts[i];
        enum field f = part->field;
        bool timed = f >= F_YEAR && f <= F_DATE;
        if (f == F_LITERAL) {
            put_escaped(&o, p->text + part->off, part->len);
            continue;
        }
        if ((f >= F_MAKE && f <= F_SERIAL) || f == F_SESSION || f == F_SEQ ||
            (f == F_MD5 && !v->md5) || (timed && v->capture_time <= 0)) {
            put(&o, "*", 1);
            continue;
        }
        char val[NAME_VALUE_MAX];
        struct error err;
        if (token_value(part, v, &tm, val, &err) < 0) {
            put(&o, "*", 1);
            continue;
        }
        if (!val[0] && part->def_len)
            clean(p->text + part->def_off, part->def_len, false, val, PATTERN_VALUE_MAX);
        if (!val[0] && f == F_CARD)
            snprintf(val, sizeof(val), "unknown");
        put_escaped(&o, val, strlen(val));
    }
    if (o.full || o.len >= size)
        return -ENAMETOOLONG;
    memcpy(out, tmp, o.len + 1);
    return 0;
}
