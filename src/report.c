/* SPDX-License-Identifier: MIT */
/*
 * The per-session report (report.h). report_write reads the session row and its named scan
 * problems (at most DB_PROBLEMS_MAX), writes the head, then walks db_session_report_rows: one
 * row per (file, copy), ordered by file, so a file starts when its id changes and ends when the
 * next one starts or the walk ends. Only the current file is held (for JSON, its json_object),
 * so memory is bounded whatever the number of files.
 *
 * Every string that came from a card, a destination or an error is written through put_str,
 * which keeps the text unambiguous (control characters, bidirectional overrides and bytes that
 * are not UTF-8 as \xNN, a backslash as \\) and, for HTML, escapes the five markup characters.
 */
#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "html.h"
#include "jsonout.h"
#include "status.h"
#include "utf8.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *const format_names[] = {
    [REPORT_TEXT] = "text",
    [REPORT_JSON] = "json",
    [REPORT_HTML] = "html",
};

static const char *const content_types[] = {
    [REPORT_TEXT] = "text/plain; charset=utf-8",
    [REPORT_JSON] = "application/json",
    [REPORT_HTML] = "text/html; charset=utf-8",
};

int report_format_from_string(const char *s, enum report_format *ret)
{
    for (size_t i = 0; s && i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcmp(s, format_names[i]) == 0) {
            *ret = (enum report_format)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *report_format_to_string(enum report_format f)
{
    return (unsigned)f <= REPORT_HTML ? format_names[f] : "?";
}

const char *report_content_type(enum report_format f)
{
    return (unsigned)f <= REPORT_HTML ? content_types[f] : "application/octet-stream";
}

int report_last_session(struct db *db, int64_t *ret_id, struct error *err)
{
    struct db_session *list = NULL;
    size_t n = 0;
    int r = db_sessions_list(db, 1, &list, &n, err);
    if (r < 0)
        return r;
    if (n == 0)
        r = error_set(err, -ENOENT, "no session yet");
    else
        *ret_id = list[0].id;
    free(list);
    return r;
}

/* ---- writing strings ---- */

/* True for the sequence of l bytes at p that must not reach a reader as it is: C0 and C1
 * controls, DEL, and the bidirectional embeddings, overrides and isolates (U+202A..U+202E,
 * U+2066..U+2069), which could make a name look like another. */
static bool seq_hidden(const unsigned char *p, size_t l)
{
    if (l == 1)
        return p[0] < 0x20 || p[0] == 0x7f;
    if (l == 2)
        return p[0] == 0xc2 && p[1] < 0xa0;
    if (l == 3 && p[0] == 0xe2)
        return (p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) ||
               (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9);
    return false;
}

/* Writes s (NULL: nothing) unambiguously, HTML-escaped when html. */
static void put_str(FILE *out, const char *s, bool html)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = s ? strlen(s) : 0;
    while (n > 0) {
        size_t l = utf8_seq_len(p, n);
        if (l == 0 || seq_hidden(p, l)) {
            size_t k = l ? l : 1;
            for (size_t i = 0; i < k; i++)
                fprintf(out, "\\x%02X", p[i]);
            p += k;
            n -= k;
            continue;
        }
        const char *entity = NULL;
        if (l == 1 && p[0] == '\\')
            entity = "\\\\";
        else if (l == 1 && html)
            entity = html_entity((char)p[0]);
        if (entity)
            fputs(entity, out);
        else
            fwrite(p, 1, l, out);
        p += l;
        n -= l;
    }
}

/* An error text as shown: cfg's secrets scrubbed, then put_str. */
static void put_error(FILE *out, const struct config *cfg, const char *s, bool html)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", s ? s : "");
    config_scrub_secrets(cfg, buf);
    put_str(out, buf, html);
}

/* "2026-12-04 10:15:21 UTC", or "-" for 0. */
static void format_utc(int64_t t, char *buf, size_t size)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || !gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, size, "-");
}

/* A capture time (floating: the camera's clock, no zone; media.h) as "2024-05-01 12:00:00"
 * (sep ' ') or "2024-05-01T12:00:00" (sep 'T'); "" when unknown. */
static void format_capture(int64_t t, char sep, char *buf, size_t size)
{
    struct tm tm;
    time_t tt = (time_t)t;
    size_t n = 0;
    if (t != 0 && gmtime_r(&tt, &tm))
        n = sep == 'T' ? strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm)
                       : strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    if (n == 0)
        snprintf(buf, size, "%s", "");
}

static bool copy_verified(const struct db_copy *c)
{
    return c->state == DB_COPY_COMPLETED && c->verified_at > 0;
}

/* ---- the walk ---- */

struct ctx {
    FILE *out;
    const struct config *cfg;
    enum report_format f;
    int64_t file_id; /* the file being written, 0 none yet */
    int64_t n_files;
    json_object *jfile; /* JSON: the current file, written when it ends */
    json_object *jcopies;
};

static void file_end_json(struct ctx *c)
{
    if (!c->jfile)
        return;
    if (c->n_files > 1)
        fputs(",\n", c->out);
    fputs(json_object_to_json_string_ext(c->jfile, JSON_FLAGS), c->out);
    json_object_put(c->jfile);
    c->jfile = NULL;
    c->jcopies = NULL;
}

static void file_end(struct ctx *c)
{
    if (c->file_id == 0)
        return;
    if (c->f == REPORT_JSON)
        file_end_json(c);
    else if (c->f == REPORT_HTML)
        fputs("</td></tr></tbody>\n", c->out);
    else
        fputs("\n", c->out);
}

static int file_begin_json(struct ctx *c, const struct db_report_row *row)
{
    const struct db_file *f = &row->sf.file;
    char cap[32];
    json_object *o = json_object_new_object();
    json_object *copies = json_object_new_array();
    if (!o || !copies) {
        json_object_put(o);
        json_object_put(copies);
        return -ENOMEM;
    }
    format_capture(f->capture_time, 'T', cap, sizeof(cap));
    json_object_object_add(o, "id", json_object_new_int64(f->id));
    jsonout_add_path(o, "path", f->rel_path);
    json_object_object_add(o, "size", json_object_new_int64(f->size));
    json_object_object_add(o, "mtime_ns", json_object_new_int64(f->mtime_ns));
    json_object_object_add(o, "capture_time",
                           f->capture_time ? json_object_new_int64(f->capture_time) : NULL);
    json_object_object_add(o, "capture_date", cap[0] ? json_object_new_string(cap) : NULL);
    json_object_object_add(o, "kind", json_object_new_string(f->kind[0] ? f->kind : "unknown"));
    json_object_object_add(o, "state", json_object_new_string(db_file_state_to_string(f->state)));
    json_object_object_add(o, "outcome",
                           json_object_new_string(db_outcome_to_string(row->sf.outcome)));
    json_object_object_add(o, "md5", jsonout_string_or_null(f->md5));
    json_object_object_add(o, "sha1", jsonout_string_or_null(f->sha1));
    json_object_object_add(o, "xxh128", jsonout_string_or_null(f->xxh128));
    json_object_object_add(o, "duplicate_of",
                           f->duplicate_of ? json_object_new_int64(f->duplicate_of) : NULL);
    json_object_object_add(o, "error", jsonout_error(c->cfg, f->last_error));
    json_object_object_add(o, "copies", copies);
    c->jfile = o;
    c->jcopies = copies;
    return 0;
}

static void file_begin_text(struct ctx *c, const struct db_report_row *row)
{
    const struct db_file *f = &row->sf.file;
    char cap[32];
    format_capture(f->capture_time, ' ', cap, sizeof(cap));
    put_str(c->out, f->rel_path, false);
    fprintf(c->out, "\n  size:     %" PRId64 " bytes\n", f->size);
    fprintf(c->out, "  captured: %s\n", cap[0] ? cap : "unknown");
    fprintf(c->out, "  outcome:  %s (file %s)\n", db_outcome_to_string(row->sf.outcome),
            db_file_state_to_string(f->state));
    fprintf(c->out, "  md5:      %s\n", f->md5[0] ? f->md5 : "-");
    fprintf(c->out, "  sha1:     %s\n", f->sha1[0] ? f->sha1 : "-");
    fprintf(c->out, "  xxh128:   %s\n", f->xxh128[0] ? f->xxh128 : "-");
    if (f->duplicate_of)
        fprintf(c->out, "  duplicate of file %" PRId64 "\n", f->duplicate_of);
    if (f->last_error[0]) {
        fputs("  error:    ", c->out);
        put_error(c->out, c->cfg, f->last_error, false);
        fputs("\n", c->out);
    }
}

static void file_begin_html(struct ctx *c, const struct db_report_row *row)
{
    const struct db_file *f = &row->sf.file;
    char cap[32];
    format_capture(f->capture_time, ' ', cap, sizeof(cap));
    fputs("<tbody><tr><td class=\"path\">", c->out);
    put_str(c->out, f->rel_path, true);
    if (f->duplicate_of)
        fprintf(c->out, "<div class=\"note\">duplicate of file %" PRId64 "</div>", f->duplicate_of);
    if (f->last_error[0]) {
        fputs("<div class=\"bad\">", c->out);
        put_error(c->out, c->cfg, f->last_error, true);
        fputs("</div>", c->out);
    }
    fprintf(c->out, "</td><td class=\"num\">%" PRId64 "</td><td>%s</td>", f->size,
            cap[0] ? cap : "unknown");
    fprintf(c->out, "<td class=\"%s\">%s</td>", row->sf.outcome == DB_OUTCOME_FAILED ? "bad" : "ok",
            db_outcome_to_string(row->sf.outcome));
    fprintf(c->out, "<td class=\"hash\">MD5&nbsp;%s<br>SHA-1&nbsp;%s<br>XXH3-128&nbsp;%s</td><td>",
            f->md5[0] ? f->md5 : "-", f->sha1[0] ? f->sha1 : "-", f->xxh128[0] ? f->xxh128 : "-");
}

static int copy_json(struct ctx *c, const struct db_report_row *row)
{
    const struct db_copy *cp = &row->copy;
    json_object *o = json_object_new_object();
    if (!o)
        return -ENOMEM;
    json_object_object_add(o, "destination", jsonout_string(cp->dest));
    json_object_object_add(o, "state", json_object_new_string(db_copy_state_to_string(cp->state)));
    jsonout_add_path(o, "remote", cp->remote[0] ? cp->remote : NULL);
    json_object_object_add(o, "verified", json_object_new_boolean(copy_verified(cp)));
    json_object_object_add(o, "verified_at",
                           cp->verified_at ? json_object_new_int64(cp->verified_at) : NULL);
    json_object_object_add(o, "mhl_generation",
                           row->mhl_generation > 0 ? json_object_new_int64(row->mhl_generation)
                                                   : NULL);
    json_object_object_add(o, "error", jsonout_error(c->cfg, cp->error));
    json_object_array_add(c->jcopies, o);
    return 0;
}

static void copy_text_html(struct ctx *c, const struct db_report_row *row)
{
    const struct db_copy *cp = &row->copy;
    bool html = c->f == REPORT_HTML;
    bool ok = copy_verified(cp);
    char when[40];
    format_utc(cp->verified_at, when, sizeof(when));
    fputs(html ? "<div class=\"copy\"><b>" : "  ", c->out);
    put_str(c->out, cp->dest, html);
    fputs(html ? "</b> " : ": ", c->out);
    put_str(c->out, cp->remote[0] ? cp->remote : "(no path)", html);
    fputs(html ? (ok ? "<br><span class=\"ok\">" : "<br><span class=\"bad\">") : "\n      ",
          c->out);
    if (ok)
        fprintf(c->out, "verified %s", when);
    else
        fprintf(c->out, "not verified (%s)", db_copy_state_to_string(cp->state));
    if (html)
        fputs("</span>", c->out);
    if (row->mhl_generation > 0)
        fprintf(c->out, ", ASC MHL generation %" PRId64, row->mhl_generation);
    if (cp->error[0]) {
        fputs(": ", c->out);
        put_error(c->out, c->cfg, cp->error, html);
    }
    fputs(html ? "</div>" : "\n", c->out);
}

static int on_row(const struct db_report_row *row, void *arg)
{
    struct ctx *c = arg;
    int r = 0;
    if (row->sf.file.id != c->file_id) {
        file_end(c);
        c->file_id = row->sf.file.id;
        c->n_files++;
        if (c->f == REPORT_JSON)
            r = file_begin_json(c, row);
        else if (c->f == REPORT_HTML)
            file_begin_html(c, row);
        else
            file_begin_text(c, row);
    }
    if (r == 0 && row->has_copy && c->f == REPORT_JSON)
        r = copy_json(c, row);
    else if (r == 0 && row->has_copy)
        copy_text_html(c, row);
    else if (r == 0 && c->f != REPORT_JSON)
        fputs(c->f == REPORT_HTML ? "<span class=\"bad\">no copy</span>" : "  no copy\n", c->out);
    if (r == 0 && ferror(c->out))
        r = -EIO;
    return r;
}

/* ---- head and tail ---- */

static const char html_style[] =
    "@page{size:A4;margin:12mm 10mm}"
    "body{font:10pt/1.35 system-ui,-apple-system,'Segoe UI',sans-serif;color:#111;margin:1.5em}"
    "h1{font-size:16pt;margin:0 0 .4em}h2{font-size:12pt;margin:1.2em 0 .4em}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;padding:3px 5px;border-bottom:1px solid #ccc}"
    "table.summary th{width:11em;font-weight:600}"
    "table.files thead{display:table-header-group}"
    "table.files th{background:#eee;border-bottom:1px solid #888}"
    "tbody,tr{break-inside:avoid;page-break-inside:avoid}"
    ".path{overflow-wrap:anywhere}table.files td.path{width:20%}"
    ".num{text-align:right;white-space:nowrap}"
    ".hash,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:8pt;"
    "word-break:break-all}"
    ".copy{overflow-wrap:anywhere;margin-bottom:2px}.note{color:#555}"
    ".ok{color:#146c2e}.bad{color:#b42318;font-weight:600}"
    "footer{margin-top:1em;color:#555;font-size:9pt}"
    "@media print{body{margin:0;font-size:8pt}.hash,.mono{font-size:7pt}"
    "h1{font-size:13pt}th{background:none}}";

/* One line of the summary: text "Name:     value" or an HTML row; value written by the caller
 * between head_row and head_row_end. */
static void head_row(struct ctx *c, const char *name)
{
    if (c->f == REPORT_HTML)
        fprintf(c->out, "<tr><th>%s</th><td>", name);
    else
        fprintf(c->out, "%-10s ", name);
}

static void head_row_end(struct ctx *c)
{
    fputs(c->f == REPORT_HTML ? "</td></tr>\n" : "\n", c->out);
}

static void head_text_html(struct ctx *c, const struct db_session *s, const struct db_problem *p,
                           size_t n_p)
{
    bool html = c->f == REPORT_HTML;
    char t[40];
    if (html) {
        fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
              "<meta name=\"generator\" content=\"SnapSync " SNAPSYNC_VERSION "\">",
              c->out);
        fprintf(c->out, "<title>SnapSync report: session %" PRId64, s->id);
        if (s->card_label[0]) {
            fputs(" (", c->out);
            put_str(c->out, s->card_label, true);
            fputs(")", c->out);
        }
        fprintf(c->out, "</title><style>%s</style></head>\n<body>\n", html_style);
        fprintf(c->out, "<h1>SnapSync backup report: session %" PRId64 "</h1>\n", s->id);
        fputs("<table class=\"summary\">\n", c->out);
    } else {
        fprintf(c->out, "SnapSync backup report: session %" PRId64 "\n\n", s->id);
    }
    head_row(c, "Card:");
    if (s->card_uuid[0]) {
        put_str(c->out, s->card_label[0] ? s->card_label : "(no label)", html);
        fputs(html ? " <span class=\"mono\">UUID " : " (UUID ", c->out);
        put_str(c->out, s->card_uuid, html);
        fputs(html ? "</span>" : ")", c->out);
    } else {
        fputs("none (a folder)", c->out);
    }
    head_row_end(c);
    head_row(c, "Source:");
    put_str(c->out, s->source, html);
    head_row_end(c);
    format_utc(s->started_at, t, sizeof(t));
    head_row(c, "Started:");
    fputs(t, c->out);
    head_row_end(c);
    format_utc(s->ended_at, t, sizeof(t));
    head_row(c, "Ended:");
    fputs(s->ended_at ? t : "still running", c->out);
    head_row_end(c);
    const char *status = status_session_status(s);
    head_row(c, "Result:");
    bool good = strcmp(status, "completed") == 0 || strcmp(status, "empty") == 0;
    if (html)
        fprintf(c->out, "<span class=\"%s\">%s</span>", good ? "ok" : "bad", status);
    else
        fputs(status, c->out);
    head_row_end(c);
    bool died = !status_session_running(s) &&
                (s->status == DB_SESSION_SCANNING || s->status == DB_SESSION_BACKING_UP);
    if (died || s->error[0]) {
        head_row(c, "Error:");
        put_error(c->out, c->cfg, died ? STATUS_DIED_ERROR : s->error, html);
        head_row_end(c);
    }
    const struct db_totals *tt = &s->totals;
    head_row(c, "Found:");
    fprintf(c->out, "%" PRId64 " files, %" PRId64 " bytes", tt->files_total, tt->bytes_total);
    head_row_end(c);
    head_row(c, "Done:");
    fprintf(c->out,
            "%" PRId64 " copied (%" PRId64 " bytes), %" PRId64 " already backed up, %" PRId64
            " duplicates, %" PRId64 " failed",
            tt->files_copied, tt->bytes_copied, tt->files_skipped, tt->files_duplicate,
            tt->files_failed);
    head_row_end(c);
    if (tt->scan_problems > 0) {
        head_row(c, "Unreadable:");
        fprintf(c->out, "%" PRId64 " entries of the source could not be read", tt->scan_problems);
        for (size_t i = 0; i < n_p; i++) {
            fputs(html ? "<div><span class=\"path\">" : "\n             '", c->out);
            put_str(c->out, p[i].path, html);
            fputs(html ? "</span>: " : "': ", c->out);
            put_error(c->out, c->cfg, p[i].error, html);
            if (html)
                fputs("</div>", c->out);
        }
        head_row_end(c);
    }
    if (html) {
        fputs("</table>\n<h2>Files</h2>\n<table class=\"files\"><thead><tr><th>Card path</th>"
              "<th>Size (bytes)</th><th>Captured</th><th>Outcome</th><th>Checksums</th>"
              "<th>Copies</th></tr></thead>\n",
              c->out);
    } else {
        fputs("\nFiles\n-----\n", c->out);
    }
}

static int head_json(struct ctx *c, const struct db_session *s, const struct db_problem *p,
                     size_t n_p)
{
    json_object *o = status_session_json(c->cfg, s);
    if (!o)
        return -ENOMEM;
    json_object_object_add(o, "scan_problem_entries", status_problems_json(c->cfg, p, n_p, n_p));
    fprintf(c->out,
            "{\"report_version\":%d,\"generator\":\"SnapSync " SNAPSYNC_VERSION
            "\",\"generated_at\":%" PRId64 ",\"session\":%s,\"files\":[\n",
            REPORT_FORMAT_VERSION, (int64_t)time(NULL),
            json_object_to_json_string_ext(o, JSON_FLAGS));
    json_object_put(o);
    return 0;
}

static void tail(struct ctx *c)
{
    char t[40];
    format_utc((int64_t)time(NULL), t, sizeof(t));
    if (c->f == REPORT_JSON) {
        fprintf(c->out, "\n],\"files_listed\":%" PRId64 "}\n", c->n_files);
    } else if (c->f == REPORT_HTML) {
        if (c->n_files == 0)
            fputs("<tbody><tr><td colspan=\"6\">No file was recorded in this session.</td></tr>"
                  "</tbody>\n",
                  c->out);
        fprintf(c->out,
                "</table>\n<footer>%" PRId64
                " files listed. Generated %s by SnapSync " SNAPSYNC_VERSION
                ". Verified: the copy was read back and its checksums compared when it was "
                "made.</footer>\n</body></html>\n",
                c->n_files, t);
    } else {
        if (c->n_files == 0)
            fputs("No file was recorded in this session.\n\n", c->out);
        fprintf(c->out,
                "%" PRId64 " files listed. Generated %s by SnapSync " SNAPSYNC_VERSION ".\n",
                c->n_files, t);
    }
}

int report_write(struct db *db, const struct config *cfg, int64_t session_id, enum report_format f,
                 FILE *out, struct error *err)
{
    struct db_session s;
    struct db_problem *p = NULL;
    size_t n_p = 0;
    struct ctx c = {.out = out, .cfg = cfg, .f = f};
    int r;

    if (!db || !out || (unsigned)f > REPORT_HTML)
        return error_set(err, -EINVAL, "invalid report request");
    r = status_session_get(db, session_id, &s, err);
    if (r == -ENOENT)
        r = error_set(err, -ENOENT, "no session %" PRId64, session_id);
    if (r == 0 && s.totals.scan_problems > 0)
        r = db_session_problems(db, session_id, &p, &n_p, err);
    if (r < 0)
        goto out;
    if (f == REPORT_JSON)
        r = head_json(&c, &s, p, n_p);
    else
        head_text_html(&c, &s, p, n_p);
    if (r == 0)
        r = db_session_report_rows(db, session_id, on_row, &c, err);
    if (r == 0) {
        file_end(&c);
        tail(&c);
    }
    if (r == -ENOMEM)
        error_set(err, r, "out of memory");
    if ((r == 0 || r == -EIO) && (fflush(out) != 0 || ferror(out)))
        r = error_set(err, -EIO, "cannot write the report: %s", strerror(errno ? errno : EIO));
out:
    json_object_put(c.jfile);
    free(p);
    return r;
}
