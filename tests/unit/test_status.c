/* SPDX-License-Identifier: MIT */
/* Unit tests for status.c: progress and ETA, engine progress to live state, the shown status of
 * a session whose process is alive or gone (real child processes), and the JSON field names. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "config.h"
#include "db.h"
#include "status.h"

static void test_progress_and_eta(void **state)
{
    (void)state;
    assert_true(status_progress(true, 5, 10, 50, 100) == 0);    /* scanning */
    assert_true(status_progress(false, 5, 10, 25, 100) == 25);  /* by bytes */
    assert_true(status_progress(false, 5, 10, 0, 0) == 50);     /* no bytes: by files */
    assert_true(status_progress(false, 0, 0, 0, 0) == 100);     /* nothing to do */
    assert_true(status_progress(false, 0, 1, 200, 100) == 100); /* capped */
    double eta = -1;
    assert_false(status_eta(0, 100, 0, &eta));
    assert_false(status_eta(100, 100, 10, &eta));
    assert_true(eta == -1); /* untouched */
    assert_true(status_eta(20, 100, 8, &eta));
    assert_true(eta == 10);
}

static struct engine_progress progress(enum db_session_status st)
{
    struct engine_progress p;
    memset(&p, 0, sizeof(p));
    p.session_id = 7;
    p.status = st;
    p.totals.files_total = 4;
    p.totals.bytes_total = 400;
    p.totals.files_copied = 1;
    p.totals.files_skipped = 1;
    p.files_done = 2;
    p.bytes_done = 100;
    p.rate_bps = 50;
    snprintf(p.current_file, sizeof(p.current_file), "DCIM/IMG_0003.JPG");
    snprintf(p.card_label, sizeof(p.card_label), "EOS");
    p.n_dests = 4;
    snprintf(p.dests[0].section, sizeof(p.dests[0].section), "unraid");
    p.dests[0].usable = false;
    snprintf(p.dests[0].problem, sizeof(p.dests[0].problem), "timed out");
    snprintf(p.dests[1].section, sizeof(p.dests[1].section), "local");
    p.dests[1].usable = true;
    snprintf(p.dests[2].section, sizeof(p.dests[2].section), "s3");
    p.dests[2].usable = true;
    snprintf(p.dests[3].section, sizeof(p.dests[3].section), "rclone");
    p.dests[3].usable = false;
    snprintf(p.dests[3].problem, sizeof(p.dests[3].problem), "didn't find section");
    return p;
}

static void test_live_from_progress(void **state)
{
    (void)state;
    struct engine_progress p = progress(DB_SESSION_BACKING_UP);
    struct status_live s;
    status_live_from_progress(&p, false, &s);
    assert_string_equal(s.status, "backing_up");
    assert_true(s.has_progress && s.progress == 25);
    assert_true(s.has_eta && s.eta_s == 6);
    assert_int_equal(s.files_done, 2);
    assert_int_equal(s.files_copied, 1);
    assert_true(s.rate_bps == 50);
    assert_string_equal(s.current_file, "DCIM/IMG_0003.JPG");
    assert_true(s.card_present);
    assert_string_equal(s.last_result, "");
    assert_int_equal(s.n_dests, 4);
    assert_false(s.dests[0].reachable);

    /* scanning with nothing found yet: no progress to show */
    p = progress(DB_SESSION_SCANNING);
    p.totals.bytes_total = 0;
    status_live_from_progress(&p, false, &s);
    assert_false(s.has_progress);

    /* the end: no rate, no file, the result kept; a completed one is at 100 % */
    p = progress(DB_SESSION_COMPLETED);
    status_live_from_progress(&p, true, &s);
    assert_true(s.has_progress && s.progress == 100);
    assert_false(s.has_eta);
    assert_true(s.rate_bps == 0);
    assert_string_equal(s.current_file, "");
    assert_false(s.card_present);
    assert_string_equal(s.last_result, "completed");
    assert_true(s.last_backup_at > 0);

    /* interrupted without an error of its own says why; a final report still running failed */
    p = progress(DB_SESSION_INTERRUPTED);
    status_live_from_progress(&p, true, &s);
    assert_string_equal(s.error, STATUS_INTERRUPTED_ERROR);
    p = progress(DB_SESSION_BACKING_UP);
    status_live_from_progress(&p, true, &s);
    assert_string_equal(s.status, "failed");
}

/* A session row run by pid, begun now. */
static struct db_session session(pid_t pid, enum db_session_status st)
{
    struct db_session s;
    memset(&s, 0, sizeof(s));
    s.id = 3;
    s.pid = pid;
    s.status = st;
    s.started_at = (int64_t)time(NULL) + 1;
    snprintf(s.card_label, sizeof(s.card_label), "EOS");
    snprintf(s.source, sizeof(s.source), "/media/card");
    s.totals.files_total = 4;
    snprintf(s.error, sizeof(s.error), "left over");
    return s;
}

static const char *get_str(json_object *o, const char *key)
{
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_string(v);
}

static bool get_bool(json_object *o, const char *key)
{
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_boolean(v);
}

static void test_liveness_and_session_json(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    assert_int_equal(config_default(&cfg, NULL), 0);

    /* a live process running the session (a child waiting on a pipe) */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t alive = fork();
    assert_true(alive >= 0);
    if (alive == 0) {
        char c;
        close(fds[1]);
        _exit(read(fds[0], &c, 1) < 0);
    }
    close(fds[0]);
    /* a process that has gone */
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);

    struct db_session running = session(alive, DB_SESSION_BACKING_UP);
    struct db_session died = session(dead, DB_SESSION_BACKING_UP);
    struct db_session done = session(dead, DB_SESSION_COMPLETED);
    assert_true(status_session_running(&running));
    assert_false(status_session_running(&died));
    assert_string_equal(status_session_status(&running), "backing_up");
    assert_string_equal(status_session_status(&died), "interrupted");
    assert_string_equal(status_session_status(&done), "completed");

    struct db_session list[] = {died, running};
    assert_string_equal(status_state(list, 1), "idle");
    assert_string_equal(status_state(list, 2), "backing_up");
    list[1].status = DB_SESSION_SCANNING;
    assert_string_equal(status_state(list, 2), "scanning");
    assert_string_equal(status_state(NULL, 0), "idle");

    json_object *o = status_session_json(cfg, &died);
    assert_string_equal(get_str(o, "status"), "interrupted");
    assert_false(get_bool(o, "running"));
    assert_string_equal(get_str(o, "error"), STATUS_DIED_ERROR);
    static const char *const keys[] = {"id",
                                       "status",
                                       "running",
                                       "card_uuid",
                                       "card_label",
                                       "source",
                                       "started_at",
                                       "ended_at",
                                       "files_total",
                                       "bytes_total",
                                       "files_copied",
                                       "files_skipped",
                                       "files_duplicate",
                                       "files_failed",
                                       "bytes_copied",
                                       "scan_problems",
                                       "safe_to_remove",
                                       "error"};
    assert_int_equal(json_object_object_length(o), sizeof(keys) / sizeof(keys[0]));
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_true(json_object_object_get_ex(o, keys[i], NULL));
    json_object_put(o);

    o = status_session_json(cfg, &running);
    assert_string_equal(get_str(o, "status"), "backing_up");
    assert_true(get_bool(o, "running"));
    assert_string_equal(get_str(o, "error"), "left over");
    json_object_put(o);

    close(fds[1]); /* the child reads EOF and ends */
    assert_int_equal(waitpid(alive, NULL, 0), alive);
    config_free(cfg);
}

static void test_live_and_totals_json(void **state)
{
    (void)state;
    struct engine_progress p = progress(DB_SESSION_BACKING_UP);
    struct status_live s;
    status_live_from_progress(&p, false, &s);
    json_object *o = status_live_json(&s);
    assert_string_equal(get_str(o, "status"), "backing_up");
    static const char *const keys[] = {"files_copied", "files_done", "rate_bps",    "eta_s",
                                       "progress",     "bytes_done", "current_file"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_true(json_object_object_get_ex(o, keys[i], NULL));
    assert_false(json_object_object_get_ex(o, "files_completed", NULL));
    assert_false(json_object_object_get_ex(o, "speed_bps", NULL));
    assert_string_equal(get_str(o, "unraid_reachable"), "OFF");
    assert_string_equal(get_str(o, "unraid_problem"), "timed out");
    assert_false(json_object_object_get_ex(o, "local_reachable", NULL));
    /* the object store and the rclone remote have entities like the share */
    assert_string_equal(get_str(o, "s3_reachable"), "ON");
    assert_string_equal(get_str(o, "rclone_reachable"), "OFF");
    assert_string_equal(get_str(o, "rclone_problem"), "didn't find section");
    assert_string_equal(get_str(o, "last_result"), "none");
    json_object_put(o);

    struct status_live idle = {.status = "idle"};
    o = status_live_json(&idle);
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, "progress", &v) && v == NULL);
    assert_true(json_object_object_get_ex(o, "session_id", &v) && v == NULL);
    json_object_put(o);

    struct db_stats st = {.sessions = 2, .files_completed = 9, .bytes_completed = 1024};
    o = status_totals_json(&st);
    assert_int_equal(json_object_object_length(o), 7);
    assert_true(json_object_object_get_ex(o, "files_completed", &v));
    assert_int_equal(json_object_get_int64(v), 9);
    json_object_put(o);
}

/* ---- verification: a real database made through db.h ---- */

static int64_t verified_copy(struct db *db, int64_t card, const char *rel)
{
    struct db_file_key key = {card, rel, 100, 1700000000000000000LL};
    int64_t id = 0;
    assert_int_equal(db_file_get_or_create(db, &key, &id, NULL, NULL), 0);
    assert_int_equal(db_file_set_meta(db, id, "0123456789abcdef0123456789abcdef",
                                      "0123456789abcdef0123456789abcdef01234567", NULL, 0, "photo",
                                      NULL),
                     0);
    char remote[1200];
    snprintf(remote, sizeof(remote), "/nas/%s", rel);
    assert_int_equal(db_copy_set(db, id, "nas", DB_COPY_COMPLETED, remote, NULL, NULL), 0);
    return id;
}

static void run_end(struct db *db, int64_t run, int64_t ok, int64_t missing, int64_t changed,
                    int64_t errors, enum db_verify_status st)
{
    struct db_verify_counts c = {ok + missing + changed + errors, ok, missing, changed, errors, 0};
    assert_int_equal(db_verify_run_end(db, run, &c, st, NULL), 0);
}

static json_object *get_obj(json_object *o, const char *key)
{
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return v;
}

static void test_verification_state(void **state)
{
    (void)state;
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    char dir[512], path[600];
    if (!base || !base[0])
        base = "/tmp";
    assert_true(mkdir(base, 0755) == 0 || errno == EEXIST);
    snprintf(dir, sizeof(dir), "%s/test_status.XXXXXX", base);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/snapsync.db", dir);
    struct db *db = NULL;
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, NULL), 0);
    struct status_verification *v = malloc(sizeof(*v));
    assert_non_null(v);

    /* never verified */
    assert_int_equal(status_verification_get(db, v, NULL), 0);
    assert_false(v->has_run);
    assert_int_equal(v->problems, 0);
    assert_int_equal(v->n_named, 0);
    assert_int_equal(status_verification_time(v), 0);
    json_object *o = status_verification_json(v);
    assert_null(get_obj(o, "last_run"));
    assert_int_equal(json_object_get_int64(get_obj(o, "problems_total")), 0);
    json_object_put(o);
    o = status_verification_mqtt_json(v);
    assert_null(get_obj(o, "last_verification"));
    assert_string_equal(get_str(o, "last_status"), "none");
    assert_string_equal(get_str(o, "problem"), "OFF");
    json_object_put(o);

    int64_t card = 0;
    assert_int_equal(db_card_upsert(db, "VERIFY-1", "CANON", &card, NULL), 0);
    int64_t f[4];
    for (int i = 0; i < 4; i++) {
        char rel[32];
        snprintf(rel, sizeof(rel), "DCIM/IMG_%d.JPG", i);
        f[i] = verified_copy(db, card, rel);
    }
    /* a long name with a two-byte character across the cut */
    char longrel[400];
    memset(longrel, 'a', 254);
    memcpy(longrel + 254, "\xc3\xa9", 2);
    memset(longrel + 256, 'b', 100);
    longrel[356] = '\0';
    int64_t flong = verified_copy(db, card, longrel);

    int64_t now = (int64_t)time(NULL), run1 = 0, run2 = 0;
    assert_int_equal(db_verify_run_begin(db, "all", "", &run1, NULL), 0);
    assert_int_equal(
        db_verify_result_add(db, run1, f[0], "nas", DB_VERIFY_OK, NULL, now, true, NULL), 0);
    assert_int_equal(db_verify_result_add(db, run1, f[1], "nas", DB_VERIFY_MISSING, "no such file",
                                          now + 1, true, NULL),
                     0);
    assert_int_equal(db_verify_result_add(db, run1, f[2], "nas", DB_VERIFY_CHANGED,
                                          "size 10, recorded 100", now + 2, true, NULL),
                     0);
    assert_int_equal(db_verify_result_add(db, run1, f[3], "nas", DB_VERIFY_ERROR, "offline",
                                          now + 3, true, NULL),
                     0);
    assert_int_equal(
        db_verify_result_add(db, run1, flong, "nas", DB_VERIFY_MISSING, NULL, now + 4, true, NULL),
        0);
    run_end(db, run1, 1, 2, 1, 1, DB_VERIFY_PROBLEMS);

    assert_int_equal(status_verification_get(db, v, NULL), 0);
    assert_true(v->has_run);
    assert_int_equal(v->run_id, run1);
    assert_string_equal(v->status, "problems");
    assert_string_equal(v->scope, "all");
    assert_false(v->running);
    assert_true(v->ended_at >= now);
    assert_int_equal(v->counts.checked, 5);
    assert_int_equal(v->counts.missing, 2);
    assert_int_equal(v->counts.errors, 1);
    /* the error is no verdict: three open problems, newest check first */
    assert_int_equal(v->problems, 3);
    assert_int_equal(v->n_named, 3);
    assert_int_equal(strlen(v->named[0].path), 254); /* cut before the two-byte character */
    assert_string_equal(v->named[0].result, "missing");
    assert_string_equal(v->named[1].path, "DCIM/IMG_2.JPG");
    assert_string_equal(v->named[1].result, "changed");
    assert_string_equal(v->named[1].dest, "nas");
    assert_string_equal(v->named[2].path, "DCIM/IMG_1.JPG");

    struct db_verify_open *open = NULL;
    size_t n = 0;
    int64_t total = 0;
    assert_int_equal(db_verify_open_list(db, 1, 10, &open, &n, &total, NULL), 0);
    assert_int_equal(total, 3);
    assert_int_equal(n, 2);
    assert_string_equal(open[0].remote, "/nas/DCIM/IMG_2.JPG");
    assert_string_equal(open[0].detail, "size 10, recorded 100");
    assert_int_equal(open[0].checked_at, now + 2);
    assert_string_equal(open[1].detail, "no such file");
    o = status_verify_problems_json(NULL, open, n);
    assert_int_equal(json_object_array_length(o), 2);
    assert_string_equal(get_str(json_object_array_get_idx(o, 0), "card_path"), "DCIM/IMG_2.JPG");
    assert_string_equal(get_str(json_object_array_get_idx(o, 0), "path"), "/nas/DCIM/IMG_2.JPG");
    assert_string_equal(get_str(json_object_array_get_idx(o, 0), "result"), "changed");
    json_object_put(o);
    free(open);
    assert_int_equal(db_verify_open_list(db, 0, DB_VERIFY_OPEN_MAX + 1, &open, &n, &total, NULL),
                     -EINVAL);

    /* a second run is under way: it found file 1 back, could not read file 2 */
    assert_int_equal(db_verify_run_begin(db, "scrub", "", &run2, NULL), 0);
    assert_int_equal(
        db_verify_result_add(db, run2, f[1], "nas", DB_VERIFY_OK, NULL, now + 5, true, NULL), 0);
    assert_int_equal(
        db_verify_result_add(db, run2, f[2], "nas", DB_VERIFY_ERROR, "busy", now + 6, true, NULL),
        0);
    assert_int_equal(status_verification_get(db, v, NULL), 0);
    assert_int_equal(v->run_id, run2);
    assert_true(v->running);
    assert_string_equal(v->status, "running");
    assert_int_equal(v->ended_at, 0);
    assert_int_equal(status_verification_time(v), v->started_at);
    assert_int_equal(v->problems, 2); /* file 1 is fine now; file 2's last verdict stays */
    o = status_verification_json(v);
    json_object *last = get_obj(o, "last_run");
    assert_string_equal(get_str(last, "scope"), "scrub");
    assert_true(get_bool(last, "running"));
    assert_null(get_obj(last, "ended_at"));
    json_object_put(o);

    /* many problems: the MQTT payload names the first STATUS_VERIFY_NAMED, bounded */
    for (int i = 0; i < 30; i++) {
        char rel[32];
        snprintf(rel, sizeof(rel), "DCIM/GONE_%02d.JPG", i);
        int64_t id = verified_copy(db, card, rel);
        assert_int_equal(db_verify_result_add(db, run2, id, "nas", DB_VERIFY_MISSING, "gone",
                                              now + 10 + i, true, NULL),
                         0);
    }
    run_end(db, run2, 1, 30, 0, 1, DB_VERIFY_PROBLEMS);
    assert_int_equal(status_verification_get(db, v, NULL), 0);
    assert_int_equal(v->problems, 32);
    assert_int_equal(v->n_named, STATUS_VERIFY_NAMED);
    assert_string_equal(v->named[0].path, "DCIM/GONE_29.JPG");
    o = status_verification_mqtt_json(v);
    assert_string_equal(get_str(o, "problem"), "ON");
    assert_int_equal(json_object_get_int64(get_obj(o, "problems")), 32);
    assert_int_equal(json_object_get_int64(get_obj(o, "missing")), 30);
    assert_string_equal(get_str(o, "last_status"), "problems");
    assert_non_null(get_obj(o, "last_verification"));
    json_object *files = get_obj(o, "problem_files");
    assert_int_equal(json_object_array_length(files), STATUS_VERIFY_NAMED);
    assert_string_equal(get_str(json_object_array_get_idx(files, 0), "card_path"),
                        "DCIM/GONE_29.JPG");
    assert_string_equal(get_str(json_object_array_get_idx(files, 0), "dest"), "nas");
    json_object_put(o);
    /* the worst case stays under Home Assistant's 16 KB for an entity's attributes */
    for (size_t i = 0; i < STATUS_VERIFY_NAMED; i++) {
        memset(v->named[i].path, 'p', sizeof(v->named[i].path) - 1);
        v->named[i].path[sizeof(v->named[i].path) - 1] = '\0';
        memset(v->named[i].dest, 'd', sizeof(v->named[i].dest) - 1);
        v->named[i].dest[sizeof(v->named[i].dest) - 1] = '\0';
    }
    o = status_verification_mqtt_json(v);
    assert_true(strlen(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) < 16384);
    json_object_put(o);

    free(v);
    db_close(db);
    remove(path);
    char side[700];
    snprintf(side, sizeof(side), "%s-wal", path);
    remove(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    remove(side);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_and_eta),
        cmocka_unit_test(test_live_from_progress),
        cmocka_unit_test(test_liveness_and_session_json),
        cmocka_unit_test(test_live_and_totals_json),
        cmocka_unit_test(test_verification_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
