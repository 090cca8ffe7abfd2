/* SPDX-License-Identifier: MIT */
/*
 * The one status model (status.h): engine progress to live state, session liveness and shown
 * status, and the JSON of sessions, live state and totals for the CLI, the web API and MQTT.
 *
 * Inside: plain conversions. Liveness is db_session_alive and nothing else; every shown status
 * of a database row goes through status_session_status, so a session whose process died reads
 * "interrupted" wherever it is shown.
 */
#include "status.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "jsonout.h"
#include "outbox.h"
#include "utf8.h"

double status_progress(bool scanning, int64_t files_done, int64_t files_total, int64_t bytes_done,
                       int64_t bytes_total)
{
    double p;
    if (scanning)
        p = 0;
    else if (bytes_total > 0)
        p = 100.0 * (double)bytes_done / (double)bytes_total;
    else if (files_total > 0)
        p = 100.0 * (double)files_done / (double)files_total;
    else
        p = 100;
    if (p < 0)
        p = 0;
    return p > 100 ? 100 : p;
}

bool status_eta(int64_t bytes_done, int64_t bytes_total, double rate_bps, double *ret_s)
{
    if (!(rate_bps > 0) || bytes_total <= bytes_done)
        return false;
    *ret_s = (double)(bytes_total - bytes_done) / rate_bps;
    return true;
}

static bool status_runs(enum db_session_status st)
{
    return st == DB_SESSION_SCANNING || st == DB_SESSION_BACKING_UP;
}

bool status_progress_is_final(const struct engine_progress *p)
{
    return !status_runs(p->status);
}

void status_live_from_progress(const struct engine_progress *p, bool final, struct status_live *s)
{
    memset(s, 0, sizeof(*s));
    bool running = status_runs(p->status);
    /* a final report always carries the session's end status; a running one cannot end */
    snprintf(s->status, sizeof(s->status), "%s",
             final && running ? "failed" : db_session_status_to_string(p->status));
    s->files_done = (int64_t)p->files_done;
    s->files_copied = p->totals.files_copied;
    s->files_total = p->totals.files_total;
    s->files_failed = p->totals.files_failed;
    s->files_skipped = p->totals.files_skipped;
    s->files_duplicate = p->totals.files_duplicate;
    s->scan_problems = p->totals.scan_problems;
    snprintf(s->error, sizeof(s->error), "%s", p->error);
    if (!s->error[0] && p->status == DB_SESSION_INTERRUPTED)
        snprintf(s->error, sizeof(s->error), "%s", STATUS_INTERRUPTED_ERROR);
    s->bytes_done = (int64_t)p->bytes_done;
    s->bytes_total = p->totals.bytes_total;
    bool scanning = !final && p->status == DB_SESSION_SCANNING;
    /* while the scan has found no bytes yet there is nothing to measure against */
    s->has_progress = !scanning || p->totals.bytes_total > 0;
    if (s->has_progress)
        s->progress = final && p->status == DB_SESSION_COMPLETED
                          ? 100
                          : status_progress(false, s->files_done, s->files_total, s->bytes_done,
                                            s->bytes_total);
    s->rate_bps = final ? 0 : p->rate_bps;
    if (!final)
        s->has_eta = status_eta(s->bytes_done, s->bytes_total, p->rate_bps, &s->eta_s);
    snprintf(s->current_file, sizeof(s->current_file), "%s", final ? "" : p->current_file);
    snprintf(s->card_label, sizeof(s->card_label), "%s", p->card_label);
    s->session_id = p->session_id;
    s->card_present = !final;
    if (final) {
        s->last_backup_at = (int64_t)time(NULL);
        snprintf(s->last_result, sizeof(s->last_result), "%s",
                 db_session_status_to_string(p->status));
    }
    size_t n = sizeof(p->dests) / sizeof(p->dests[0]);
    if (n > STATUS_DEST_MAX)
        n = STATUS_DEST_MAX;
    s->n_dests = p->n_dests < n ? p->n_dests : n;
    for (size_t i = 0; i < s->n_dests; i++) {
        snprintf(s->dests[i].kind, sizeof(s->dests[i].kind), "%s", p->dests[i].kind);
        snprintf(s->dests[i].section, sizeof(s->dests[i].section), "%s", p->dests[i].section);
        snprintf(s->dests[i].id, sizeof(s->dests[i].id), "%s", p->dests[i].id);
        s->dests[i].reachable = p->dests[i].usable;
        snprintf(s->dests[i].problem, sizeof(s->dests[i].problem), "%s", p->dests[i].problem);
    }
}

int status_db_open(const struct config *cfg, struct db **ret, struct error *err)
{
    int r = db_open(cfg->service.database_path, DB_READ_ONLY, ret, err);
    if (r == -ENOENT)
        error_set(err, -ENOENT, "no backup has run yet (no database)");
    return r;
}

bool status_session_running(const struct db_session *s)
{
    return db_session_alive(s);
}

/* the row says it runs, but the process that ran it is gone (the next run marks it) */
static bool session_died(const struct db_session *s)
{
    return status_runs(s->status) && !status_session_running(s);
}

/* A row that says its session runs while its process is gone is read again: the process may
 * have ended the session between the first read and the check, and its final row counts. Only
 * then is it interrupted. */
static void settle(struct db *db, struct db_session *s)
{
    struct db_session again;
    if (session_died(s) && db_session_get(db, s->id, &again, NULL) == 0)
        *s = again;
}

int status_sessions_list(struct db *db, int limit, struct db_session **ret, size_t *ret_n,
                         struct error *err)
{
    int r = db_sessions_list(db, limit, ret, ret_n, err);
    for (size_t i = 0; r == 0 && i < *ret_n; i++)
        settle(db, &(*ret)[i]);
    return r;
}

int status_session_get(struct db *db, int64_t id, struct db_session *ret, struct error *err)
{
    int r = db_session_get(db, id, ret, err);
    if (r == 0)
        settle(db, ret);
    return r;
}

const char *status_session_status(const struct db_session *s)
{
    return session_died(s) ? "interrupted" : db_session_status_to_string(s->status);
}

const char *status_state(const struct db_session *list, size_t n)
{
    size_t running = 0;
    bool scanning = false;
    for (size_t i = 0; i < n; i++) {
        if (!status_session_running(&list[i]))
            continue;
        running++;
        scanning |= list[i].status == DB_SESSION_SCANNING;
    }
    return running == 0 ? "idle" : scanning && running == 1 ? "scanning" : "backing_up";
}

json_object *status_session_json(const struct config *cfg, const struct db_session *s)
{
    bool running = status_session_running(s);
    bool died = !running && status_runs(s->status);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(s->id));
    json_object_object_add(o, "status", json_object_new_string(status_session_status(s)));
    json_object_object_add(o, "running", json_object_new_boolean(running));
    json_object_object_add(o, "card_uuid", jsonout_string(s->card_uuid));
    json_object_object_add(o, "card_label", jsonout_string(s->card_label));
    jsonout_add_path(o, "source", s->source);
    json_object_object_add(o, "started_at", json_object_new_int64(s->started_at));
    json_object_object_add(o, "ended_at", s->ended_at ? json_object_new_int64(s->ended_at) : NULL);
    json_object_object_add(o, "files_total", json_object_new_int64(s->totals.files_total));
    json_object_object_add(o, "bytes_total", json_object_new_int64(s->totals.bytes_total));
    json_object_object_add(o, "files_copied", json_object_new_int64(s->totals.files_copied));
    json_object_object_add(o, "files_skipped", json_object_new_int64(s->totals.files_skipped));
    json_object_object_add(o, "files_duplicate", json_object_new_int64(s->totals.files_duplicate));
    json_object_object_add(o, "files_failed", json_object_new_int64(s->totals.files_failed));
    json_object_object_add(o, "bytes_copied", json_object_new_int64(s->totals.bytes_copied));
    json_object_object_add(o, "scan_problems", json_object_new_int64(s->totals.scan_problems));
    json_object_object_add(o, "safe_to_remove", json_object_new_boolean(s->safe_to_remove));
    json_object_object_add(o, "error",
                           died ? json_object_new_string(STATUS_DIED_ERROR)
                                : jsonout_error(cfg, s->error));
    return o;
}

json_object *status_problems_json(const struct config *cfg, const struct db_problem *p, size_t n,
                                  size_t max)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n && i < max; i++) {
        json_object *e = json_object_new_object();
        jsonout_add_path(e, "path", p[i].path);
        json_object_object_add(e, "error", jsonout_error(cfg, p[i].error));
        json_object_array_add(a, e);
    }
    return a;
}

json_object *status_dests_json(const struct config *cfg, const struct db_dest_stats *d, size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", jsonout_string(d[i].dest));
        json_object_object_add(o, "completed", json_object_new_int64(d[i].completed));
        json_object_object_add(o, "failed", json_object_new_int64(d[i].failed));
        json_object_object_add(o, "pending", json_object_new_int64(d[i].pending));
        json_object_object_add(o, "bytes_completed", json_object_new_int64(d[i].bytes_completed));
        json_object_object_add(o, "error", jsonout_error(cfg, d[i].last_error));
        json_object_array_add(a, o);
    }
    return a;
}

json_object *status_totals_json(const struct db_stats *st)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "sessions", json_object_new_int64(st->sessions));
    json_object_object_add(o, "cards", json_object_new_int64(st->cards));
    json_object_object_add(o, "files", json_object_new_int64(st->files));
    json_object_object_add(o, "files_completed", json_object_new_int64(st->files_completed));
    json_object_object_add(o, "files_failed", json_object_new_int64(st->files_failed));
    json_object_object_add(o, "files_duplicate", json_object_new_int64(st->files_duplicate));
    json_object_object_add(o, "bytes_completed", json_object_new_int64(st->bytes_completed));
    return o;
}

/* ISO 8601 local time with its offset, as Home Assistant's timestamp sensors want it */
static void iso_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    char zone[8];
    strftime(zone, sizeof(zone), "%z", &tm); /* +0100 -> +01:00 */
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s%.3s:%.2s", date, zone, zone + 3);
}

json_object *status_live_json(const struct status_live *s)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string(s->status[0] ? s->status : "idle"));
    json_object_object_add(o, "progress",
                           s->has_progress ? json_object_new_double(s->progress) : NULL);
    json_object_object_add(o, "files_copied", json_object_new_int64(s->files_copied));
    json_object_object_add(o, "files_total", json_object_new_int64(s->files_total));
    json_object_object_add(o, "files_failed", json_object_new_int64(s->files_failed));
    json_object_object_add(o, "files_skipped", json_object_new_int64(s->files_skipped));
    json_object_object_add(o, "files_duplicate", json_object_new_int64(s->files_duplicate));
    json_object_object_add(o, "files_done", json_object_new_int64(s->files_done));
    json_object_object_add(o, "bytes_done", json_object_new_int64(s->bytes_done));
    json_object_object_add(o, "bytes_total", json_object_new_int64(s->bytes_total));
    json_object_object_add(o, "rate_bps", json_object_new_int64((int64_t)s->rate_bps));
    json_object_object_add(o, "eta_s",
                           s->has_eta ? json_object_new_int64((int64_t)s->eta_s) : NULL);
    jsonout_add_path(o, "current_file", s->current_file);
    json_object_object_add(o, "card_label", jsonout_string(s->card_label));
    json_object_object_add(o, "session_id",
                           s->session_id ? json_object_new_int64(s->session_id) : NULL);
    json_object_object_add(o, "scan_problems", json_object_new_int64(s->scan_problems));
    json_object_object_add(o, "error", jsonout_string_or_null(s->error));
    json_object_object_add(o, "card_present",
                           json_object_new_string(s->card_present ? "ON" : "OFF"));
    if (s->last_backup_at > 0) {
        char t[48];
        iso_time(s->last_backup_at, t, sizeof(t));
        json_object_object_add(o, "last_backup", json_object_new_string(t));
    } else {
        json_object_object_add(o, "last_backup", NULL);
    }
    json_object_object_add(o, "last_result",
                           json_object_new_string(s->last_result[0] ? s->last_result : "none"));
    /* one state per destination with an entity (the local folder has none) */
    for (size_t i = 0; i < s->n_dests && i < STATUS_DEST_MAX; i++) {
        const char *sec = s->dests[i].section;
        if (strcmp(sec, "unraid") != 0 && strcmp(sec, "immich") != 0 && strcmp(sec, "s3") != 0 &&
            strcmp(sec, "rclone") != 0)
            continue;
        char key[32];
        snprintf(key, sizeof(key), "%s_reachable", sec);
        json_object_object_add(o, key,
                               json_object_new_string(s->dests[i].reachable ? "ON" : "OFF"));
        snprintf(key, sizeof(key), "%s_problem", sec);
        json_object_object_add(o, key, jsonout_string_or_null(s->dests[i].problem));
    }
    return o;
}

/* ---- verification ---- */

/* s copied into buf (size bytes) whole, or cut before the character that does not fit: a cut
 * never splits a well-formed UTF-8 sequence (other bytes count one each). */
static void copy_cut(char *buf, size_t size, const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (k == 0)
            k = 1;
        if (i + k >= size)
            break;
        i += k;
    }
    memcpy(buf, s, i);
    buf[i] = '\0';
}

int status_verification_get(struct db *db, struct status_verification *ret, struct error *err)
{
    struct db_verify_run run;
    struct db_verify_open *open = NULL;
    size_t n = 0;
    int64_t total = 0;
    bool has_run = true;
    int r = db_verify_run_last(db, &run, err);
    if (r == -ENOENT) {
        has_run = false;
        r = 0;
    }
    if (r == 0)
        r = db_verify_open_list(db, 0, STATUS_VERIFY_NAMED, &open, &n, &total, err);
    if (r < 0)
        goto out;
    memset(ret, 0, sizeof(*ret));
    ret->has_run = has_run;
    if (has_run) {
        ret->run_id = run.id;
        ret->started_at = run.started_at;
        ret->ended_at = run.status == DB_VERIFY_RUNNING ? 0 : run.ended_at;
        snprintf(ret->scope, sizeof(ret->scope), "%s", run.scope);
        snprintf(ret->status, sizeof(ret->status), "%s", db_verify_status_to_string(run.status));
        ret->counts = run.counts;
        ret->running = run.status == DB_VERIFY_RUNNING;
    }
    ret->problems = total;
    ret->n_named = n < STATUS_VERIFY_NAMED ? n : STATUS_VERIFY_NAMED;
    for (size_t i = 0; i < ret->n_named; i++) {
        copy_cut(ret->named[i].dest, sizeof(ret->named[i].dest), open[i].dest);
        copy_cut(ret->named[i].path, sizeof(ret->named[i].path), open[i].rel_path);
        snprintf(ret->named[i].result, sizeof(ret->named[i].result), "%s",
                 db_verify_result_to_string(open[i].result));
    }
out:
    free(open);
    return r;
}

int64_t status_verification_time(const struct status_verification *v)
{
    if (!v->has_run)
        return 0;
    return v->ended_at > 0 ? v->ended_at : v->started_at;
}

void status_verify_counts_add(json_object *o, const struct db_verify_counts *c)
{
    json_object_object_add(o, "checked", json_object_new_int64(c->checked));
    json_object_object_add(o, "ok", json_object_new_int64(c->ok));
    json_object_object_add(o, "missing", json_object_new_int64(c->missing));
    json_object_object_add(o, "changed", json_object_new_int64(c->changed));
    json_object_object_add(o, "errors", json_object_new_int64(c->errors));
    json_object_object_add(o, "extra", json_object_new_int64(c->extra));
}

json_object *status_verification_json(const struct status_verification *v)
{
    json_object *o = json_object_new_object();
    json_object *run = NULL;
    if (v->has_run) {
        run = json_object_new_object();
        json_object_object_add(run, "id", json_object_new_int64(v->run_id));
        json_object_object_add(run, "scope", jsonout_string(v->scope));
        json_object_object_add(run, "status", json_object_new_string(v->status));
        json_object_object_add(run, "running", json_object_new_boolean(v->running));
        json_object_object_add(run, "started_at", json_object_new_int64(v->started_at));
        json_object_object_add(run, "ended_at",
                               v->ended_at ? json_object_new_int64(v->ended_at) : NULL);
        status_verify_counts_add(run, &v->counts);
    }
    json_object_object_add(o, "last_run", run);
    json_object_object_add(o, "running", json_object_new_boolean(v->running));
    json_object_object_add(o, "problems_total", json_object_new_int64(v->problems));
    return o;
}

json_object *status_verify_problems_json(const struct config *cfg, const struct db_verify_open *p,
                                         size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "dest", jsonout_string(p[i].dest));
        jsonout_add_path(e, "path", p[i].remote);
        jsonout_add_path(e, "card_path", p[i].rel_path);
        json_object_object_add(e, "file_id", json_object_new_int64(p[i].file_id));
        json_object_object_add(e, "result",
                               json_object_new_string(db_verify_result_to_string(p[i].result)));
        json_object_object_add(e, "detail", jsonout_error(cfg, p[i].detail));
        json_object_object_add(e, "checked_at", json_object_new_int64(p[i].checked_at));
        json_object_array_add(a, e);
    }
    return a;
}

json_object *status_verification_mqtt_json(const struct status_verification *v)
{
    json_object *o = json_object_new_object();
    int64_t t = status_verification_time(v);
    if (t > 0) {
        char iso[48];
        iso_time(t, iso, sizeof(iso));
        json_object_object_add(o, "last_verification", json_object_new_string(iso));
    } else {
        json_object_object_add(o, "last_verification", NULL);
    }
    json_object_object_add(o, "last_status",
                           json_object_new_string(v->has_run ? v->status : "none"));
    status_verify_counts_add(o, &v->counts);
    json_object_object_add(o, "running", json_object_new_string(v->running ? "ON" : "OFF"));
    json_object_object_add(o, "problems", json_object_new_int64(v->problems));
    json_object_object_add(o, "problem", json_object_new_string(v->problems > 0 ? "ON" : "OFF"));
    json_object *files = json_object_new_array();
    for (size_t i = 0; i < v->n_named && i < STATUS_VERIFY_NAMED; i++) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "card_path", jsonout_string(v->named[i].path));
        json_object_object_add(e, "dest", jsonout_string(v->named[i].dest));
        json_object_object_add(e, "result", json_object_new_string(v->named[i].result));
        json_object_array_add(files, e);
    }
    json_object_object_add(o, "problem_files", files);
    return o;
}

int status_notifications_get(struct db *db, struct status_notifications *ret, struct error *err)
{
    int64_t pending = 0;
    struct db_delivery *rows = NULL;
    size_t n = 0;
    int r = outbox_pending_count(db, &pending, err);
    if (r == 0)
        r = outbox_failed_list(db, STATUS_NOTIFY_FAILED_MAX, &rows, &n, err);
    if (r < 0)
        return r;
    memset(ret, 0, sizeof(*ret));
    ret->pending = pending;
    for (size_t i = 0; i < n && i < STATUS_NOTIFY_FAILED_MAX; i++) {
        ret->failed[i] = rows[i];
        ret->failed[i].data = NULL;
        ret->n_failed++;
    }
    db_deliveries_free(rows, n);
    return 0;
}

json_object *status_notifications_json(const struct config *cfg,
                                       const struct status_notifications *n)
{
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array();
    json_object_object_add(o, "pending", json_object_new_int64(n->pending));
    for (size_t i = 0; i < n->n_failed; i++) {
        const struct db_delivery *d = &n->failed[i];
        json_object *e = json_object_new_object();
        json_object_object_add(e, "channel", jsonout_string(d->channel));
        json_object_object_add(e, "event", jsonout_string(d->event));
        json_object_object_add(e, "queued_at", json_object_new_int64(d->created_at));
        json_object_object_add(e, "attempts", json_object_new_int64(d->attempts));
        json_object_object_add(e, "error", jsonout_error(cfg, d->last_error));
        json_object_array_add(a, e);
    }
    json_object_object_add(o, "failed", a);
    return o;
}
