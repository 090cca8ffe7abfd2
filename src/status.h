/* SPDX-License-Identifier: MIT */
/*
 * One status model for every front end: the live state of a running session (what the engine
 * reports, as the CLI, the dashboard and Home Assistant show it), whether a session recorded in
 * the database still runs, the status it is shown with, and the JSON of a session, of the live
 * state and of the totals. `snapsync status --json`, `snapsync sessions --json`, the web API
 * and the MQTT state payload all build their JSON here, so they use the same field names and
 * values; docs/api.md ("Session and totals") documents them once.
 *
 * Pure functions over plain values: no locks, no I/O but db_session_alive's look at the
 * session's process. Any thread.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "engine.h"

struct json_object;

#define STATUS_DEST_MAX 8

/* Why an interrupted session is not done, when it recorded no error of its own. */
#define STATUS_INTERRUPTED_ERROR                                                                   \
    "stopped before the end (cancelled, or the card went away): files not yet backed up are "      \
    "backed up when the card is backed up again"
/* Why a session whose row still says it runs is shown as interrupted. */
#define STATUS_DIED_ERROR "the process running it stopped"

/* The live state of one session (or of nothing: status "idle"); plain values, copied freely. */
struct status_live {
    char status[16]; /* idle | scanning | backing_up | completed | partial | failed | interrupted
                      * | empty (db_session_status_to_string, or idle) */
    bool has_progress;
    double progress;    /* 0..100, status_progress */
    int64_t files_done; /* copied + skipped + duplicate + failed */
    int64_t files_copied;
    int64_t files_total;
    int64_t files_failed;
    int64_t files_skipped;
    int64_t files_duplicate;
    int64_t bytes_done;
    int64_t bytes_total;
    double rate_bps;
    bool has_eta;
    double eta_s;
    char current_file[256];
    char card_label[128];
    int64_t session_id;
    bool card_present;
    int64_t last_backup_at; /* seconds since the epoch, 0 never */
    char last_result[16];   /* completed | empty | partial | failed | interrupted; "": keep the
                             * last one known (mqtt_publish_state) */
    int64_t scan_problems;  /* entries of the card the session could not read */
    char error[256];        /* the session's first failure (naming the first unreadable entry) */
    size_t n_dests;
    struct {
        char kind[16];    /* "local", "smb", "immich", "s3", "rclone" */
        char section[16]; /* "unraid", "local", "immich", "s3", "rclone": its config section */
        char id[1024];    /* the destination's id, as the database names it */
        bool reachable;
        char problem[256]; /* why it is down, "" while reachable */
    } dests[STATUS_DEST_MAX];
};

/* Percent done (0..100) of a session: 0 while scanning, else by bytes, by files when it has no
 * bytes, 100 when it has nothing at all. */
double status_progress(bool scanning, int64_t files_done, int64_t files_total, int64_t bytes_done,
                       int64_t bytes_total);

/* Seconds left at rate_bps for bytes_total - bytes_done. False (and *ret_s untouched) when it
 * cannot be told: no rate, or nothing left to read. */
bool status_eta(int64_t bytes_done, int64_t bytes_total, double rate_bps, double *ret_s);

/* True when an engine progress report is the session's last (its status is not scanning or
 * backing_up). */
bool status_progress_is_final(const struct engine_progress *p);

/* The live state for an engine progress report. final: the session ended (last_backup_at now,
 * last_result the session's status, card not present, no rate, no current file); a final
 * report whose status still says running shows failed. error: the report's first failure, or
 * for an interrupted session STATUS_INTERRUPTED_ERROR. Before the end last_result is "". */
void status_live_from_progress(const struct engine_progress *p, bool final, struct status_live *s);

/* db_sessions_list and db_session_get for what is shown: a row that says its session runs while
 * its process is gone is read once more (the process may have ended it in between: its final
 * row counts), so status_session_status calls it interrupted only when it really died. Same
 * errors and ownership as theirs. */
int status_sessions_list(struct db *db, int limit, struct db_session **ret, size_t *ret_n,
                         struct error *err);
int status_session_get(struct db *db, int64_t id, struct db_session *ret, struct error *err);

/* Opens the database of cfg read-only for one answer (a CLI command, a web request, MQTT's last
 * result). Errors: db_open's; -ENOENT with the message "no backup has run yet (no database)"
 * when it does not exist, which the callers show as the empty state rather than as a failure.
 * *ret is the caller's (db_close). */
int status_db_open(const struct config *cfg, struct db **ret, struct error *err);

/* Whether session s still runs: db_session_alive (its process, checked by pid and start time).
 * The only liveness decision of the front ends. */
bool status_session_running(const struct db_session *s);

/* The status session s is shown with: its recorded status, or "interrupted" when the row says
 * it runs but its process is gone. Static string. */
const char *status_session_status(const struct db_session *s);

/* The overall state of n sessions (newest first, as db_sessions_list gives them): "idle" when
 * none runs, "scanning" when the only one running scans, else "backing_up". Static string. */
const char *status_state(const struct db_session *list, size_t n);

/* The JSON object of session s (docs/api.md, "Session and totals"): its id, shown status,
 * running, card, source, times, totals, safe_to_remove and error (secrets of cfg scrubbed; for a
 * session whose process died, STATUS_DIED_ERROR). New reference, the caller's (json_object_put). */
struct json_object *status_session_json(const struct config *cfg, const struct db_session *s);

/* The entries a session could not read, as [{"path", "error"}] (the first max of n). New
 * reference. */
struct json_object *status_problems_json(const struct config *cfg, const struct db_problem *p,
                                         size_t n, size_t max);

/* Copies per destination (db_dest_stats): an array of {name (the destination id), completed,
 * failed, pending, bytes_completed, error}, the error scrubbed as jsonout_error does. New
 * reference. */
struct json_object *status_dests_json(const struct config *cfg, const struct db_dest_stats *d,
                                      size_t n);

/* The all-time totals: sessions, cards, files, files_completed, files_failed, files_duplicate,
 * bytes_completed. New reference. */
struct json_object *status_totals_json(const struct db_stats *st);

/* The live state as the MQTT state payload carries it (docs/api.md, "Session and totals";
 * docs/home-assistant.md for the Home Assistant-only fields card_present, last_backup,
 * last_result, <section>_reachable and <section>_problem for unraid, immich, s3 and rclone; the
 * local folder has none). New reference. */
struct json_object *status_live_json(const struct status_live *s);

/* ---- verification (`snapsync verify`, the scheduled scrub; docs/verification.md) ---- */

#define STATUS_VERIFY_NAMED 20         /* open problems named in the MQTT payload */
#define STATUS_VERIFY_NAMED_PATH 256   /* bytes of a card path kept for it (longer ones cut) */
#define STATUS_VERIFY_LIST_DEFAULT 100 /* open problems listed by GET /api/verification */

/* The last verification run and the open problems, as Home Assistant and the dashboard show
 * them; plain values (about 11 KB), copied freely. */
struct status_verification {
    bool has_run; /* false: never verified (the run fields are zero) */
    int64_t run_id;
    int64_t started_at;
    int64_t ended_at; /* 0 while it runs */
    char scope[64];   /* "all", "session 12", "scrub", ... */
    char status[16];  /* db_verify_status_to_string of the run */
    struct db_verify_counts counts;
    bool running;     /* the run's status is running. verify_runs records no process, so a run
                       * whose process died also reads running until the next run */
    int64_t problems; /* copies whose last check found them missing or changed (open ones) */
    size_t n_named;   /* the first of them (newest check first), at most STATUS_VERIFY_NAMED */
    struct {
        char dest[256];
        char path[STATUS_VERIFY_NAMED_PATH]; /* the card path, cut at a UTF-8 character */
        char result[16];                     /* missing | changed */
    } named[STATUS_VERIFY_NAMED];
};

/* The last run (db_verify_run_last) and the open problems (db_verify_open_list, the first
 * STATUS_VERIFY_NAMED named) from db, into *ret (written only on success). A database without
 * any run is no error: has_run false. Errors: db's. Two short queries and a bounded list; the
 * thread that owns db. */
int status_verification_get(struct db *db, struct status_verification *ret, struct error *err);

/* When the last verification happened: the run's end, its start while it runs; 0 never. */
int64_t status_verification_time(const struct status_verification *v);

/* Adds a run's counts to o: "checked", "ok", "missing", "changed", "errors". */
void status_verify_counts_add(struct json_object *o, const struct db_verify_counts *c);

/* The JSON of v for the web API and the CLI (docs/api.md, "Verification"):
 * {"last_run": {id, scope, status, running, started_at, ended_at, checked, ok, missing,
 * changed, errors} or null, "running", "problems_total"}. New reference. */
struct json_object *status_verification_json(const struct status_verification *v);

/* The open problems p[0..n) as [{"dest", "path" (where the copy is), "card_path", "file_id",
 * "result", "detail", "checked_at"}], the names `snapsync verify --json` uses (detail scrubbed
 * of cfg's secrets; a path that is not UTF-8 also as "<key>_hex"). New reference. */
struct json_object *status_verify_problems_json(const struct config *cfg,
                                                const struct db_verify_open *p, size_t n);

/* The MQTT verification payload (docs/home-assistant.md): {"last_verification": ISO time or
 * null, "last_status": run status or "none", "checked", "ok", "missing", "changed", "errors",
 * "running": "ON"/"OFF", "problems": count, "problem": "ON"/"OFF", "problem_files": [{"card_path",
 * "dest", "result"}] (the first STATUS_VERIFY_NAMED)}. Bounded: about 12 KB at most.
 * New reference. */
struct json_object *status_verification_mqtt_json(const struct status_verification *v);

#define STATUS_NOTIFY_FAILED_MAX 5 /* failed deliveries shown */

/* The notification outbox as `status` and the dashboard show it. */
struct status_notifications {
    int64_t pending;
    size_t n_failed;
    struct db_delivery failed[STATUS_NOTIFY_FAILED_MAX]; /* most recent first; data NULL */
};

/* The pending count and the STATUS_NOTIFY_FAILED_MAX most recent failed deliveries from db
 * (outbox_pending_count, outbox_failed_list) into *ret (written only on success). Errors:
 * db's. Two short queries; the thread that owns db. */
int status_notifications_get(struct db *db, struct status_notifications *ret, struct error *err);

/* The JSON of n (docs/api.md, "Status"): {"pending": count, "failed": [{"channel", "event",
 * "queued_at" (seconds since the epoch), "attempts", "error" (scrubbed of cfg's secrets)}]}.
 * New reference. */
struct json_object *status_notifications_json(const struct config *cfg,
                                              const struct status_notifications *n);
