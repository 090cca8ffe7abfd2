/* SPDX-License-Identifier: MIT */
/*
 * The report of one backup session, from the database: the card (label, UUID), the source,
 * start and end, the result and its counts, the entries the scan could not read, and every file
 * the session recorded: its card path, size, capture date, MD5 and SHA-1, what the session did
 * with it, and for each destination the path there, whether the copy is verified (read back
 * and compared at copy time) and when, and the ASC MHL generation listing it (history.h).
 *
 * Three formats: plain text (names with control characters or bytes that are not UTF-8 shown
 * as \xNN, a backslash as \\), JSON (docs/api.md, "Session report"; names made valid UTF-8 with
 * a *_hex twin holding the exact bytes, as jsonout_add_path does), and one self-contained HTML
 * page (inline CSS, no script, no external resource; every string escaped; laid out for A4).
 *
 * The output is streamed: the files are read one database row at a time and written as they
 * come, so memory stays bounded whatever the number of files. The copies' states are those of
 * now (a copy a later session made or a scrub found changed shows as it is now).
 *
 * Library code: no logging. The connection's thread.
 */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "db.h"
#include "error.h"

#define REPORT_FORMAT_VERSION 1 /* "report_version" of the JSON; bumped on incompatible change */

enum report_format {
    REPORT_TEXT,
    REPORT_JSON,
    REPORT_HTML,
};

/* "text", "json" or "html" (exactly, lower case) into *ret. Returns 0 or -EINVAL. */
int report_format_from_string(const char *s, enum report_format *ret);

/* The format's name ("text", "json", "html"); static string. */
const char *report_format_to_string(enum report_format f);

/* The media type of the format with its charset ("text/plain; charset=utf-8", ...); static
 * string. */
const char *report_content_type(enum report_format f);

/* The id of the newest session (by start time) into *ret_id. -ENOENT ("no session yet") when
 * there is none; else the database's errors. */
int report_last_session(struct db *db, int64_t *ret_id, struct error *err);

/*
 * Writes the report of session_id in format f to out. cfg (may be NULL) scrubs its secrets from
 * the error texts shown. On failure, part of the report may have been written already: the
 * caller discards it. Returns 0, or -ENOENT ("no session N"; nothing written), -EIO ("cannot
 * write the report: ..." when out fails, also when it fails at the final flush), -EINVAL (a bad
 * argument), or the database's errors (db.h). The connection's thread.
 */
int report_write(struct db *db, const struct config *cfg, int64_t session_id, enum report_format f,
                 FILE *out, struct error *err);
