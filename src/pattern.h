/* SPDX-License-Identifier: MIT */
/*
 * Folder, file and album name patterns (`{year}/{month}/{day}`, `{name}{ext}`,
 * `{date} {model|nocamera}`): compiled once from the config's text into a token list, then
 * expanded for each file with its values. Pure: no I/O, no logging, no global state.
 *
 * Tokens: {year} {month} {day} {hour} {minute} {second} (capture time, the camera's wall clock)
 * {date} (YYYY-MM-DD) {name} (the card file's base name without its extension) {ext} (its
 * extension with the dot, as on the card) {EXT} (the same, upper case) {ext:lower} (lower case)
 * {make} {model} {lens} {serial} (from the metadata) {card} (card label) {session} (session id)
 * {seq} {seq:N} (a counter per session, zero-padded to N digits, 1..9) {md5} {md5:N} (the first
 * N, 1..32, hex digits of the content's MD5). Any token takes a default for an empty value after
 * '|':
 * `{model|nocamera}`; without one an empty {make} {model} {lens} {serial} {card} reads
 * `unknown` (an empty {ext}, a name without one, stays empty). Text outside braces is copied as
 * it is; '/' separates folders (folder patterns only).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define PATTERN_TEXT_MAX 256   /* bytes of a pattern's text */
#define PATTERN_TOKENS_MAX 64  /* tokens and literals of one pattern */
#define PATTERN_VALUE_MAX 64   /* bytes of a value but {name} {ext} (cut on a UTF-8 boundary) */
#define PATTERN_OUT_MAX 512    /* bytes of an expansion, with the NUL */
#define PATTERN_FOLDERS_MAX 16 /* folder levels of a folder pattern (a walk goes 32 deep) */

/* What a pattern names: folders below a destination's root ("" allowed: no folder), a file
 * name (no '/'), or an album name (no '/'). */
enum pattern_kind { PATTERN_FOLDER, PATTERN_FILE, PATTERN_ALBUM };

struct pattern;

/* The values of one file. Text fields are raw (as the card or the metadata says; NULL or ""
 * when absent): expansion cleans them. */
struct pattern_values {
    int64_t capture_time; /* "floating" seconds (media.h): the camera's wall clock read as UTC */
    const char *name;     /* base name on the card, with its extension ("IMG_0001.JPG") */
    const char *make, *model, *lens, *serial;
    const char *card; /* card label */
    int64_t session;  /* session id */
    uint64_t seq;     /* the file's number in its session, from 1 */
    /* 32 lower-case hex digits; PATTERN_MD5_UNKNOWN while the content is not read (a name
     * chosen before it, a dry run: it expands to '?'s); NULL: an {md5} token fails. */
    const char *md5;
};

#define PATTERN_MD5_UNKNOWN "????????????????????????????????"

/*
 * Compiles text as a pattern of kind. Refused (-EINVAL, err reads "column C: problem", C from
 * 1): an unknown token, unbalanced braces, a bad width ({seq:x}, {seq:0}, {md5:33}), an empty
 * default ({model|}), literal text holding "..", a folder pattern starting with '/' (absolute)
 * or with an empty component ("a//b", a trailing '/'), an empty file or album pattern, a '/' in
 * a file or album pattern, a component that is "." alone, more than PATTERN_FOLDERS_MAX folder
 * levels, a text longer than PATTERN_TEXT_MAX bytes or with more than PATTERN_TOKENS_MAX parts, or
 * control characters. An empty folder pattern is valid (no folder). *ret is the caller's
 * (pattern_free); written only on success. Errors: -EINVAL, -ENOMEM. Any thread.
 */
int pattern_compile(const char *text, enum pattern_kind kind, struct pattern **ret,
                    struct error *err);

/* Frees p; NULL-safe. */
void pattern_free(struct pattern *p);

/* The text p was compiled from (borrowed, lives with p). */
const char *pattern_text(const struct pattern *p);

/* True when p has an {md5} token (its expansion needs the content's hash). */
bool pattern_uses_md5(const struct pattern *p);

/*
 * Expands p with v into out (size bytes). {name} and {ext} are the card's name as it is (it
 * is a file name already; cut at 255 bytes). Other text values (metadata, card label, defaults)
 * are cleaned for file names: control characters dropped, '/' and '\' replaced by '_', invalid
 * UTF-8 bytes replaced by '_', leading and trailing spaces removed, and dots too (but in a
 * default), cut to PATTERN_VALUE_MAX bytes; an empty value becomes the token's default, or
 * "unknown" (see the top). The result is checked: no empty, "." or ".." component, no component
 * longer than 255 bytes. A folder pattern may expand to "". Per-destination rules (SMB's
 * characters) remain the backends'. Writes out only on success. Errors: -EINVAL (an {md5} token
 * and v->md5 NULL or neither 32 hex digits nor PATTERN_MD5_UNKNOWN, or a bad result; err says
 * which), -ENAMETOOLONG (does not fit size). Pure; any thread.
 */
int pattern_expand(const struct pattern *p, const struct pattern_values *v, char *out, size_t size,
                   struct error *err);

/*
 * A glob (fnmatch(3) with FNM_PATHNAME) matching what p expands to for v when some values are
 * not known: {make} {model} {lens} {serial} {session} {seq}, {md5} when v->md5 is NULL, and the
 * time tokens when v->capture_time <= 0, are '*'; the others are expanded from v as
 * pattern_expand does (but not checked); '*', '?', '[' and '\' of values and text are escaped
 * with '\'. For telling whether a stored copy's path could come from p. Errors: -ENAMETOOLONG
 * (does not fit size); out written only on success. Pure; any thread.
 */
int pattern_glob(const struct pattern *p, const struct pattern_values *v, char *out, size_t size);
