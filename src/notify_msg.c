/* SPDX-License-Identifier: MIT */
/*
 * The words of a session notification (notify_msg.h). Untrusted names are cleaned once
 * (notify_clean: valid UTF-8, no control characters, a ceiling) into a private copy of the
 * session, and every form is written from that copy: the text and HTML bodies into memory
 * streams (bounded, since every part is: at most NOTIFY_FAILED_LIST_MAX names of at most
 * NOTIFY_NAME_MAX bytes, NOTIFY_DESTS_MAX destinations), the JSON object through json-c.
 */
#include "notify_msg.h"

#include "html.h"
#include "jsonout.h"
#include "utf8.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const result_names[] = {
    [NOTIFY_COMPLETED] = "completed",     [NOTIFY_PARTIAL] = "partial", [NOTIFY_FAILED] = "failed",
    [NOTIFY_INTERRUPTED] = "interrupted", [NOTIFY_EMPTY] = "empty",
};
#define N_RESULTS (sizeof(result_names) / sizeof(result_names[0]))

const char *notify_result_name(enum notify_result r)
{
    return (unsigned)r < N_RESULTS ? result_names[r] : NULL;
}

int notify_result_parse(const char *name, enum notify_result *ret)
{
    for (size_t i = 0; name && i < N_RESULTS; i++)
        if (strcmp(name, result_names[i]) == 0) {
            *ret = (enum notify_result)i;
            return 0;
        }
    return -EINVAL;
}

char *notify_clean(const char *s, size_t max)
{
    if (!s)
        s = "";
    size_t len = strnlen(s, max);
    if (len == max) { /* a character cut by the ceiling is dropped, not replaced */
        size_t back = 0;
        while (back < 3 && back < len && ((unsigned char)s[len - 1 - back] & 0xc0) == 0x80)
            back++;
        const unsigned char *lead = (const unsigned char *)s + len - 1 - back;
        if (back < len && *lead >= 0xc0 && utf8_seq_len(lead, back + 1) == 0)
            len -= back + 1;
    }
    char *cut = strndup(s, len);
    char *out = cut ? jsonout_utf8_sanitize(cut) : NULL;
    free(cut);
    for (char *p = out; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return out;
}

/* The session with its untrusted strings cleaned, owned here. */
struct clean {
    char *card;
    char *dest_name[NOTIFY_DESTS_MAX];
    char *dest_state[NOTIFY_DESTS_MAX];
    char *failed[NOTIFY_FAILED_LIST_MAX];
    size_t n_failed; /* listed */
    uint64_t more;   /* failed files not listed */
    char *url;
};

static void clean_done(struct clean *c)
{
    free(c->card);
    for (size_t i = 0; i < NOTIFY_DESTS_MAX; i++) {
        free(c->dest_name[i]);
        free(c->dest_state[i]);
    }
    for (size_t i = 0; i < NOTIFY_FAILED_LIST_MAX; i++)
        free(c->failed[i]);
    free(c->url);
}

static int clean_init(struct clean *c, const struct notify_session *s)
{
    memset(c, 0, sizeof(*c));
    c->card = notify_clean(s->card && s->card[0] ? s->card : "(no label)", NOTIFY_LABEL_MAX);
    c->url = notify_clean(s->dashboard_url, 2048);
    if (!c->card || !c->url)
        return -ENOMEM;
    for (size_t i = 0; i < s->n_dests; i++) {
        c->dest_name[i] = notify_clean(s->dests[i].name, NOTIFY_LABEL_MAX);
        c->dest_state[i] = notify_clean(s->dests[i].state, NOTIFY_LABEL_MAX);
        if (!c->dest_name[i] || !c->dest_state[i])
            return -ENOMEM;
    }
    c->n_failed =
        s->n_failed_files < NOTIFY_FAILED_LIST_MAX ? s->n_failed_files : NOTIFY_FAILED_LIST_MAX;
    for (size_t i = 0; i < c->n_failed; i++)
        if (!(c->failed[i] = notify_clean(s->failed_files[i], NOTIFY_NAME_MAX)))
            return -ENOMEM;
    uint64_t total = s->failed > s->n_failed_files ? s->failed : s->n_failed_files;
    c->more = total - c->n_failed;
    return 0;
}

static void format_bytes(uint64_t b, char *out, size_t size)
{
    static const char *const units[] = {"bytes", "KB", "MB", "GB", "TB", "PB"};
    double v = (double)b;
    size_t u = 0;
    while (v >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(out, size, "%llu bytes", (unsigned long long)b);
    else
        snprintf(out, size, "%.1f %s", v, units[u]);
}

static void format_duration(double secs, char *out, size_t size)
{
    unsigned long long s = secs > 0 && secs < 1e12 ? (unsigned long long)(secs + 0.5) : 0;
    if (s >= 3600)
        snprintf(out, size, "%llu h %02llu min", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, size, "%llu min %02llu s", s / 60, s % 60);
    else
        snprintf(out, size, "%llu s", s);
}

/* The headline after the card's name, e.g. "backed up, safe to remove". */
static void headline(const struct notify_session *s, char *out, size_t size)
{
    unsigned long long f = s->failed > s->n_failed_files ? s->failed : s->n_failed_files;
    switch (s->result) {
    case NOTIFY_COMPLETED:
        snprintf(out, size, "backed up%s", s->safe_to_remove ? ", safe to remove" : "");
        break;
    case NOTIFY_PARTIAL:
        snprintf(out, size, "partly backed up, %llu file%s failed", f, f == 1 ? "" : "s");
        break;
    case NOTIFY_FAILED:
        snprintf(out, size, "backup failed");
        break;
    case NOTIFY_INTERRUPTED:
        snprintf(out, size, "backup interrupted");
        break;
    case NOTIFY_EMPTY:
        snprintf(out, size, "nothing to back up");
        break;
    }
}

/* The dashboard link, when there is one. */
static void html_link(FILE *f, const char *url)
{
    if (!url[0])
        return;
    fputs("<p><a href=\"", f);
    html_escape(f, url);
    fputs("\">Open the dashboard</a></p>\n", f);
}

/* "... and N more" closing a list, when N is not 0. */
static void html_more(FILE *f, uint64_t more)
{
    if (more)
        fprintf(f, "<li>... and %llu more</li>\n", (unsigned long long)more);
    fputs("</ul>\n", f);
}

/* Closes a memory stream, handing its text over; NULL when writing it failed. */
static char *stream_close(FILE *f, char **text)
{
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) { /* fclose sets *text, which is only then safe to read */
        free(*text);
        return NULL;
    }
    return *text;
}

static char *build_text(const struct notify_session *s, const struct clean *c, const char *head)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    char size[32], dur[32];
    format_bytes(s->bytes, size, sizeof(size));
    format_duration(s->duration, dur, sizeof(dur));
    fprintf(f, "Card %s: %s.\n\n", c->card, head);
    fprintf(f, "Result: %s\n", notify_result_name(s->result));
    fprintf(f, "Copied: %llu\nAlready backed up: %llu\nDuplicates: %llu\nFailed: %llu\n",
            (unsigned long long)s->copied, (unsigned long long)s->already,
            (unsigned long long)s->duplicates, (unsigned long long)(c->n_failed + c->more));
    fprintf(f, "Size: %s\nDuration: %s\n", size, dur);
    fprintf(f, "Safe to remove the card: %s\n", s->safe_to_remove ? "yes" : "no");
    if (s->n_dests) {
        fputs("\nDestinations:\n", f);
        for (size_t i = 0; i < s->n_dests; i++)
            fprintf(f, "  %s: %s\n", c->dest_name[i], c->dest_state[i]);
    }
    if (c->n_failed || c->more) {
        fputs("\nFailed files:\n", f);
        for (size_t i = 0; i < c->n_failed; i++)
            fprintf(f, "  %s\n", c->failed[i]);
        if (c->more)
            fprintf(f, "  ... and %llu more\n", (unsigned long long)c->more);
    }
    if (c->url[0])
        fprintf(f, "\nDashboard: %s\n", c->url);
    return stream_close(f, &text);
}

static void html_begin(FILE *f, const char *subject)
{
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>", f);
    html_escape(f, subject);
    fputs("</title></head>\n<body style=\"font-family:sans-serif\">\n", f);
}

/* The part of the HTML body about one session. */
static void html_session(FILE *f, const struct notify_session *s, const struct clean *c,
                         const char *head)
{
    char size[32], dur[32];
    format_bytes(s->bytes, size, sizeof(size));
    format_duration(s->duration, dur, sizeof(dur));
    fputs("<p><strong>Card ", f);
    html_escape(f, c->card);
    fputs(":</strong> ", f);
    html_escape(f, head);
    fputs(".</p>\n<table>\n", f);
    fprintf(f, "<tr><td>Result</td><td>%s</td></tr>\n", notify_result_name(s->result));
    fprintf(f,
            "<tr><td>Copied</td><td>%llu</td></tr>\n"
            "<tr><td>Already backed up</td><td>%llu</td></tr>\n"
            "<tr><td>Duplicates</td><td>%llu</td></tr>\n"
            "<tr><td>Failed</td><td>%llu</td></tr>\n",
            (unsigned long long)s->copied, (unsigned long long)s->already,
            (unsigned long long)s->duplicates, (unsigned long long)(c->n_failed + c->more));
    fprintf(f, "<tr><td>Size</td><td>%s</td></tr>\n<tr><td>Duration</td><td>%s</td></tr>\n", size,
            dur);
    fprintf(f, "<tr><td>Safe to remove the card</td><td>%s</td></tr>\n</table>\n",
            s->safe_to_remove ? "yes" : "no");
    if (s->n_dests) {
        fputs("<h3>Destinations</h3>\n<ul>\n", f);
        for (size_t i = 0; i < s->n_dests; i++) {
            fputs("<li>", f);
            html_escape(f, c->dest_name[i]);
            fputs(": ", f);
            html_escape(f, c->dest_state[i]);
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }
    if (c->n_failed || c->more) {
        fputs("<h3>Failed files</h3>\n<ul>\n", f);
        for (size_t i = 0; i < c->n_failed; i++) {
            fputs("<li>", f);
            html_escape(f, c->failed[i]);
            fputs("</li>\n", f);
        }
        html_more(f, c->more);
    }
    html_link(f, c->url);
}

static char *build_html(const struct notify_session *s, const struct clean *c, const char *subject,
                        const char *head)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    html_begin(f, subject);
    html_session(f, s, c, head);
    fputs("</body></html>\n", f);
    return stream_close(f, &text);
}

static char *build_json(const struct notify_session *s, const struct clean *c, const char *subject,
                        const char *text)
{
    struct json_object *o = json_object_new_object(), *counts = json_object_new_object(),
                       *dests = json_object_new_array(), *failed = json_object_new_array();
    char *out = NULL;
    if (!o || !counts || !dests || !failed) {
        json_object_put(counts);
        json_object_put(dests);
        json_object_put(failed);
        goto out;
    }
    json_object_object_add(o, "event", json_object_new_string("session"));
    json_object_object_add(o, "result", json_object_new_string(notify_result_name(s->result)));
    json_object_object_add(o, "card", json_object_new_string(c->card));
    json_object_object_add(o, "title", json_object_new_string(subject));
    json_object_object_add(o, "message", json_object_new_string(text));
    json_object_object_add(counts, "copied", json_object_new_int64((int64_t)s->copied));
    json_object_object_add(counts, "already_backed_up", json_object_new_int64((int64_t)s->already));
    json_object_object_add(counts, "duplicates", json_object_new_int64((int64_t)s->duplicates));
    json_object_object_add(counts, "failed",
                           json_object_new_int64((int64_t)(c->n_failed + c->more)));
    json_object_object_add(o, "counts", counts);
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)s->bytes));
    json_object_object_add(o, "duration_seconds", json_object_new_double(s->duration));
    for (size_t i = 0; i < s->n_dests; i++) {
        struct json_object *d = json_object_new_object();
        if (!d)
            goto out;
        json_object_object_add(d, "name", json_object_new_string(c->dest_name[i]));
        json_object_object_add(d, "state", json_object_new_string(c->dest_state[i]));
        json_object_array_add(dests, d);
    }
    json_object_object_add(o, "destinations", dests);
    for (size_t i = 0; i < c->n_failed; i++)
        json_object_array_add(failed, json_object_new_string(c->failed[i]));
    json_object_object_add(o, "failed_files", failed);
    json_object_object_add(o, "failed_files_more", json_object_new_int64((int64_t)c->more));
    json_object_object_add(o, "safe_to_remove", json_object_new_boolean(s->safe_to_remove));
    json_object_object_add(o, "dashboard_url", c->url[0] ? json_object_new_string(c->url) : NULL);
    const char *j =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    out = j ? strdup(j) : NULL;
out:
    json_object_put(o);
    return out;
}

/* ---- the other kinds: a destination down, a verification's problems ---- */

/* The cleaned strings of a notification of another kind than a session's. */
struct other {
    char *a, *b, *url; /* down: dest, reason; verify: scope, unused */
    char *dest[NOTIFY_FAILED_LIST_MAX], *path[NOTIFY_FAILED_LIST_MAX];
    const char *problem[NOTIFY_FAILED_LIST_MAX]; /* static */
    size_t n;                                    /* problems listed */
    uint64_t more;                               /* problems not listed */
    char head[NOTIFY_LABEL_MAX + 96];
};

static void other_done(struct other *o)
{
    free(o->a);
    free(o->b);
    free(o->url);
    for (size_t i = 0; i < NOTIFY_FAILED_LIST_MAX; i++) {
        free(o->dest[i]);
        free(o->path[i]);
    }
}

static const char *problem_name(const char *p)
{
    static const char *const known[] = {"missing", "changed", "extra"};
    for (size_t i = 0; p && i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(p, known[i]) == 0)
            return known[i];
    return "problem";
}

static uint64_t verify_total(const struct notify_verify *v)
{
    uint64_t t = v->missing + v->changed + v->extra;
    return t > v->n_problems ? t : v->n_problems;
}

static int other_init(struct other *o, const struct notify_session *s)
{
    memset(o, 0, sizeof(*o));
    o->url = notify_clean(s->dashboard_url, 2048);
    if (s->kind == NOTIFY_KIND_DEST_DOWN) {
        const struct notify_down *d = &s->down;
        o->a = notify_clean(d->dest && d->dest[0] ? d->dest : "(unnamed)", NOTIFY_LABEL_MAX);
        o->b = notify_clean(d->reason, NOTIFY_NAME_MAX);
        if (!o->a || !o->b || !o->url)
            return -ENOMEM;
        if (d->back_up)
            snprintf(o->head, sizeof(o->head), "destination %s back up", o->a);
        else
            snprintf(o->head, sizeof(o->head), "destination %s down for %lld min", o->a,
                     (long long)d->minutes);
        return 0;
    }
    const struct notify_verify *v = &s->verify;
    o->a = notify_clean(v->scope && v->scope[0] ? v->scope : "all", NOTIFY_LABEL_MAX);
    if (!o->a || !o->url)
        return -ENOMEM;
    o->n = v->n_problems < NOTIFY_FAILED_LIST_MAX ? v->n_problems : NOTIFY_FAILED_LIST_MAX;
    for (size_t i = 0; i < o->n; i++) {
        o->dest[i] = notify_clean(v->problems[i].dest, NOTIFY_LABEL_MAX);
        o->path[i] = notify_clean(v->problems[i].path, NOTIFY_NAME_MAX);
        o->problem[i] = problem_name(v->problems[i].problem);
        if (!o->dest[i] || !o->path[i])
            return -ENOMEM;
    }
    uint64_t total = verify_total(v);
    o->more = total - o->n;
    snprintf(o->head, sizeof(o->head), "verification found %llu problem%s",
             (unsigned long long)total, total == 1 ? "" : "s");
    return 0;
}

static void format_utc(int64_t t, char *out, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "unknown");
}

/* The lines of a verification's counts: label and value. */
static size_t verify_counts(const struct notify_verify *v, const char **labels, uint64_t *values)
{
    static const char *const names[] = {"Checked", "OK",          "Missing",
                                        "Changed", "Extra files", "Could not be checked"};
    const uint64_t vals[] = {v->checked, v->ok, v->missing, v->changed, v->extra, v->errors};
    for (size_t i = 0; i < 6; i++) {
        labels[i] = names[i];
        values[i] = vals[i];
    }
    return 6;
}

static char *other_text(const struct notify_session *s, const struct other *o)
{
    char *text = NULL, since[32];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    if (s->kind == NOTIFY_KIND_DEST_DOWN) {
        format_utc(s->down.since, since, sizeof(since));
        if (s->down.back_up)
            fprintf(f, "Destination %s is back up after %lld min down (since %s).\n", o->a,
                    (long long)s->down.minutes, since);
        else
            fprintf(f,
                    "Destination %s has been down for %lld min, since %s.\n"
                    "Files for it wait and are copied when it is back; cards are not safe to "
                    "remove until then.\n",
                    o->a, (long long)s->down.minutes, since);
        if (o->b[0])
            fprintf(f, "\nReason: %s\n", o->b);
    } else {
        const char *labels[6];
        uint64_t values[6];
        fprintf(f, "Verification run %lld (%s): %s.\n\n", (long long)s->verify.run_id, o->a,
                o->head);
        for (size_t i = 0, n = verify_counts(&s->verify, labels, values); i < n; i++)
            fprintf(f, "%s: %llu\n", labels[i], (unsigned long long)values[i]);
        if (o->n || o->more) {
            fputs("\nProblems:\n", f);
            for (size_t i = 0; i < o->n; i++)
                fprintf(f, "  %s: %s: %s\n", o->problem[i], o->dest[i], o->path[i]);
            if (o->more)
                fprintf(f, "  ... and %llu more\n", (unsigned long long)o->more);
        }
    }
    if (o->url[0])
        fprintf(f, "\nDashboard: %s\n", o->url);
    return stream_close(f, &text);
}

/* The part of the HTML body about a notification of another kind. */
static void other_html_part(FILE *f, const struct notify_session *s, const struct other *o)
{
    char since[32];
    fputs("<p><strong>SnapSync:</strong> ", f);
    html_escape(f, o->head);
    fputs(".</p>\n", f);
    if (s->kind == NOTIFY_KIND_DEST_DOWN) {
        format_utc(s->down.since, since, sizeof(since));
        fprintf(f, "<table>\n<tr><td>%s</td><td>",
                s->down.back_up ? "Was down since" : "Down since");
        html_escape(f, since);
        fprintf(f, "</td></tr>\n<tr><td>Minutes</td><td>%lld</td></tr>\n",
                (long long)s->down.minutes);
        if (o->b[0]) {
            fputs("<tr><td>Reason</td><td>", f);
            html_escape(f, o->b);
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    } else {
        const char *labels[6];
        uint64_t values[6];
        fprintf(f, "<table>\n<tr><td>Run</td><td>%lld</td></tr>\n<tr><td>Scope</td><td>",
                (long long)s->verify.run_id);
        html_escape(f, o->a);
        fputs("</td></tr>\n", f);
        for (size_t i = 0, n = verify_counts(&s->verify, labels, values); i < n; i++)
            fprintf(f, "<tr><td>%s</td><td>%llu</td></tr>\n", labels[i],
                    (unsigned long long)values[i]);
        fputs("</table>\n", f);
        if (o->n || o->more) {
            fputs("<h3>Problems</h3>\n<ul>\n", f);
            for (size_t i = 0; i < o->n; i++) {
                fprintf(f, "<li>%s: ", o->problem[i]);
                html_escape(f, o->dest[i]);
                fputs(": ", f);
                html_escape(f, o->path[i]);
                fputs("</li>\n", f);
            }
            html_more(f, o->more);
        }
    }
    html_link(f, o->url);
}

static char *other_html(const struct notify_session *s, const struct other *o, const char *subject)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    html_begin(f, subject);
    other_html_part(f, s, o);
    fputs("</body></html>\n", f);
    return stream_close(f, &text);
}

static char *other_json(const struct notify_session *s, const struct other *o, const char *subject,
                        const char *text)
{
    struct json_object *j = json_object_new_object();
    char *out = NULL, since[32];
    if (!j)
        return NULL;
    if (s->kind == NOTIFY_KIND_DEST_DOWN) {
        format_utc(s->down.since, since, sizeof(since));
        json_object_object_add(
            j, "event",
            json_object_new_string(s->down.back_up ? "destination_up" : "destination_down"));
        json_object_object_add(j, "title", json_object_new_string(subject));
        json_object_object_add(j, "message", json_object_new_string(text));
        json_object_object_add(j, "destination", json_object_new_string(o->a));
        json_object_object_add(j, "reason", json_object_new_string(o->b));
        json_object_object_add(j, "down_since", json_object_new_string(since));
        json_object_object_add(j, "down_minutes", json_object_new_int64(s->down.minutes));
    } else {
        const struct notify_verify *v = &s->verify;
        struct json_object *counts = json_object_new_object(), *list = json_object_new_array();
        if (!counts || !list) {
            json_object_put(counts);
            json_object_put(list);
            goto out;
        }
        json_object_object_add(j, "event", json_object_new_string("verify_problem"));
        json_object_object_add(j, "title", json_object_new_string(subject));
        json_object_object_add(j, "message", json_object_new_string(text));
        json_object_object_add(j, "run_id", json_object_new_int64(v->run_id));
        json_object_object_add(j, "scope", json_object_new_string(o->a));
        json_object_object_add(j, "counts", counts);
        json_object_object_add(counts, "checked", json_object_new_int64((int64_t)v->checked));
        json_object_object_add(counts, "ok", json_object_new_int64((int64_t)v->ok));
        json_object_object_add(counts, "missing", json_object_new_int64((int64_t)v->missing));
        json_object_object_add(counts, "changed", json_object_new_int64((int64_t)v->changed));
        json_object_object_add(counts, "extra", json_object_new_int64((int64_t)v->extra));
        json_object_object_add(counts, "errors", json_object_new_int64((int64_t)v->errors));
        json_object_object_add(j, "problems", list);
        for (size_t i = 0; i < o->n; i++) {
            struct json_object *p = json_object_new_object();
            if (!p || json_object_array_add(list, p) < 0) {
                json_object_put(p);
                goto out;
            }
            json_object_object_add(p, "destination", json_object_new_string(o->dest[i]));
            json_object_object_add(p, "path", json_object_new_string(o->path[i]));
            json_object_object_add(p, "problem", json_object_new_string(o->problem[i]));
        }
        json_object_object_add(j, "problems_more", json_object_new_int64((int64_t)o->more));
    }
    json_object_object_add(j, "dashboard_url", o->url[0] ? json_object_new_string(o->url) : NULL);
    const char *str =
        json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    out = str ? strdup(str) : NULL;
out:
    json_object_put(j);
    return out;
}

static int other_build(const struct notify_session *s, struct notify_msg *ret, struct error *err)
{
    struct notify_msg m = {0};
    struct other o;
    int r = other_init(&o, s);
    if (r < 0)
        goto out;
    r = -ENOMEM;
    size_t n = strlen("SnapSync: ") + strlen(o.head) + 1;
    if (!(m.subject = malloc(n)))
        goto out;
    snprintf(m.subject, n, "SnapSync: %s", o.head);
    if (!(m.text = other_text(s, &o)) || !(m.html = other_html(s, &o, m.subject)) ||
        !(m.json = other_json(s, &o, m.subject, m.text)) || !(m.click = strdup(o.url)))
        goto out;
    bool up = s->kind == NOTIFY_KIND_DEST_DOWN && s->down.back_up;
    m.priority = up ? 3 : 4;
    m.tags = up ? "white_check_mark" : s->kind == NOTIFY_KIND_DEST_DOWN ? "rotating_light" : "mag";
    *ret = m;
    m = (struct notify_msg){0};
    r = 0;
out:
    other_done(&o);
    notify_msg_done(&m);
    if (r < 0)
        return error_set(err, r, "cannot build the notification: out of memory");
    return 0;
}

int notify_msg_build(const struct notify_session *s, struct notify_msg *ret, struct error *err)
{
    if (s->kind == NOTIFY_KIND_DEST_DOWN || s->kind == NOTIFY_KIND_VERIFY)
        return other_build(s, ret, err);
    if (s->kind != NOTIFY_KIND_SESSION)
        return error_set(err, -EINVAL, "unknown notification kind %d", (int)s->kind);
    static const char *const tags[] = {
        [NOTIFY_COMPLETED] = "white_check_mark",
        [NOTIFY_PARTIAL] = "warning",
        [NOTIFY_FAILED] = "x",
        [NOTIFY_INTERRUPTED] = "warning",
        [NOTIFY_EMPTY] = "information_source",
    };
    static const int priorities[] = {
        [NOTIFY_COMPLETED] = 3,   [NOTIFY_PARTIAL] = 4, [NOTIFY_FAILED] = 5,
        [NOTIFY_INTERRUPTED] = 4, [NOTIFY_EMPTY] = 3,
    };
    if (!notify_result_name(s->result))
        return error_set(err, -EINVAL, "unknown session result %d", (int)s->result);
    if (s->n_dests > NOTIFY_DESTS_MAX)
        return error_set(err, -EINVAL, "more than %d destinations", NOTIFY_DESTS_MAX);
    struct notify_msg m = {0};
    struct clean c;
    int r = clean_init(&c, s);
    if (r < 0)
        goto out;
    char head[96];
    headline(s, head, sizeof(head));
    r = -ENOMEM;
    size_t n = strlen("SnapSync: ") + strlen(c.card) + 2 + strlen(head) + 1;
    if (!(m.subject = malloc(n)))
        goto out;
    snprintf(m.subject, n, "SnapSync: %s: %s", c.card, head);
    if (!(m.text = build_text(s, &c, head)) || !(m.html = build_html(s, &c, m.subject, head)) ||
        !(m.json = build_json(s, &c, m.subject, m.text)) || !(m.click = strdup(c.url)))
        goto out;
    m.priority = priorities[s->result];
    m.tags = tags[s->result];
    *ret = m;
    m = (struct notify_msg){0};
    r = 0;
out:
    clean_done(&c);
    notify_msg_done(&m);
    if (r < 0)
        return error_set(err, r, "cannot build the notification: out of memory");
    return 0;
}

void notify_msg_done(struct notify_msg *m)
{
    if (!m)
        return;
    free(m->subject);
    free(m->text);
    free(m->html);
    free(m->json);
    free(m->click);
    free(m->attachment);
    *m = (struct notify_msg){0};
}

/* The HTML of a merged message: each session's part after the other. */
static char *build_html_merged(const struct notify_session *sessions, size_t n, const char *subject,
                               const char *intro)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    html_begin(f, subject);
    fputs("<p>", f);
    html_escape(f, intro);
    fputs("</p>\n", f);
    for (size_t i = 0; i < n; i++) {
        bool ok;
        if (sessions[i].kind != NOTIFY_KIND_SESSION) {
            struct other o;
            ok = other_init(&o, &sessions[i]) == 0;
            if (ok) {
                fputs("<hr>\n", f);
                other_html_part(f, &sessions[i], &o);
            }
            other_done(&o);
        } else {
            struct clean c;
            char head[96];
            headline(&sessions[i], head, sizeof(head));
            ok = clean_init(&c, &sessions[i]) == 0;
            if (ok) {
                fputs("<hr>\n", f);
                html_session(f, &sessions[i], &c, head);
            }
            clean_done(&c);
        }
        if (!ok) {
            fclose(f);
            free(text);
            return NULL;
        }
    }
    fputs("</body></html>\n", f);
    return stream_close(f, &text);
}

int notify_msg_build_merged(const struct notify_session *sessions, size_t n, struct notify_msg *ret,
                            struct error *err)
{
    if (!sessions || n < 1 || n > NOTIFY_MERGED_MAX)
        return error_set(err, -EINVAL, "cannot merge %zu notifications (1 to %d)", n,
                         NOTIFY_MERGED_MAX);
    if (n == 1)
        return notify_msg_build(&sessions[0], ret, err);
    struct notify_msg single[NOTIFY_MERGED_MAX] = {0}, m = {0};
    struct json_object *o = NULL, *results = NULL;
    /* the results, then the other kinds: destination down, back up, verification */
    static const char *const other_names[] = {"destination down", "destination back up",
                                              "verification problem"};
    size_t counts[N_RESULTS + 3] = {0};
    bool all_sessions = true;
    char *text = NULL, intro[64];
    size_t text_len = 0;
    FILE *f = NULL;
    int r;
    for (size_t i = 0; i < n; i++) {
        r = notify_msg_build(&sessions[i], &single[i], err);
        if (r < 0)
            goto out;
        const struct notify_session *si = &sessions[i];
        all_sessions = all_sessions && si->kind == NOTIFY_KIND_SESSION;
        counts[si->kind == NOTIFY_KIND_SESSION  ? (size_t)si->result
               : si->kind == NOTIFY_KIND_VERIFY ? N_RESULTS + 2
               : si->down.back_up               ? N_RESULTS + 1
                                                : N_RESULTS]++;
        if (single[i].priority > m.priority) {
            m.priority = single[i].priority;
            m.tags = single[i].tags;
        }
    }
    r = -ENOMEM;
    snprintf(intro, sizeof(intro), "%zu %s since the last message.", n,
             all_sessions ? "backup results" : "notifications");
    /* "SnapSync: 3 results: 2 completed, 1 failed" */
    if (!(f = open_memstream(&m.subject, &text_len)))
        goto out;
    fprintf(f, "SnapSync: %zu results:", n);
    for (size_t k = 0, first = 1; k < N_RESULTS + 3; k++)
        if (counts[k]) {
            fprintf(f, "%s %zu %s", first ? "" : ",", counts[k],
                    k < N_RESULTS ? result_names[k] : other_names[k - N_RESULTS]);
            first = 0;
        }
    if (!stream_close(f, &m.subject)) {
        m.subject = NULL;
        goto out;
    }
    if (!(f = open_memstream(&text, &text_len)))
        goto out;
    fprintf(f, "%s\n", intro);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "\n---- %zu of %zu ----\n\n%s", i + 1, n, single[i].text);
    if (!(m.text = stream_close(f, &text)))
        goto out;
    if (!(m.html = build_html_merged(sessions, n, m.subject, intro)))
        goto out;
    if (!(o = json_object_new_object()) || !(results = json_object_new_array()))
        goto out;
    json_object_object_add(o, "event", json_object_new_string("sessions"));
    json_object_object_add(o, "count", json_object_new_int64((int64_t)n));
    json_object_object_add(o, "title", json_object_new_string(m.subject));
    json_object_object_add(o, "message", json_object_new_string(m.text));
    for (size_t i = 0; i < n; i++) {
        struct json_object *one = json_tokener_parse(single[i].json);
        if (!one || json_object_array_add(results, one) < 0) {
            json_object_put(one);
            goto out;
        }
    }
    json_object_object_add(o, "results", results);
    results = NULL;
    const char *j =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!j || !(m.json = strdup(j)))
        goto out;
    for (size_t i = 0; i < n && !m.click; i++)
        if (single[i].click[0] || i + 1 == n)
            m.click = strdup(single[i].click);
    if (!m.click)
        goto out;
    *ret = m;
    m = (struct notify_msg){0};
    r = 0;
out:
    json_object_put(results);
    json_object_put(o);
    for (size_t i = 0; i < n; i++)
        notify_msg_done(&single[i]);
    notify_msg_done(&m);
    if (r == -ENOMEM)
        return error_set(err, r, "cannot build the notification: out of memory");
    return r;
}

bool notify_error_transient(int code)
{
    switch (code) {
    case -ETIMEDOUT:
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -EAGAIN:
    case -ENOMEM:
    case -EIO:
        return true;
    default:
        return false;
    }
}
