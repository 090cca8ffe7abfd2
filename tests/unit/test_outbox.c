/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the notification outbox (outbox.c) and its tables (db.c) on a real SQLite file
 * in a temporary folder. Time is passed explicitly, so backoff, rate limit and give-up are
 * checked without sleeping. The channels' sender here records each message and answers what
 * the test says; the real senders against real servers are tests/integration/test_outbox.py.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "db.h"
#include "outbox.h"

#define T0 1800000000 /* a fixed "now" */
#define SENT_MAX 16

static char tmp_root[PATH_MAX];
static int path_seq;

/* What the recording sender saw, and what it answers next. */
static struct {
    int answer;              /* returned by the next sends */
    const char *answer_text; /* their error message */
    int calls;
    char subject[SENT_MAX][256];
    char *text[SENT_MAX];
    char *json[SENT_MAX];
} rec;

static int record_send(const struct outbox_channel *ch, const struct notify_msg *m,
                       struct error *err)
{
    (void)ch;
    int i = rec.calls++;
    if (i < SENT_MAX) {
        snprintf(rec.subject[i], sizeof(rec.subject[i]), "%s", m->subject);
        rec.text[i] = strdup(m->text);
        rec.json[i] = strdup(m->json);
    }
    if (rec.answer < 0)
        return error_set(err, rec.answer, "%s", rec.answer_text ? rec.answer_text : "refused");
    return 0;
}

static void rec_reset(void)
{
    for (int i = 0; i < SENT_MAX; i++) {
        free(rec.text[i]);
        free(rec.json[i]);
    }
    memset(&rec, 0, sizeof(rec));
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    if (!base || !base[0])
        base = "/tmp";
    if (mkdir(base, 0755) < 0 && errno != EEXIST)
        return -1;
    snprintf(tmp_root, sizeof(tmp_root), "%s/test_outbox.XXXXXX", base);
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    rec_reset();
    return 0;
}

static struct db *open_db(char *path, size_t size, bool fresh)
{
    if (fresh)
        snprintf(path, size, "%s/%d/snapsync.db", tmp_root, ++path_seq);
    struct db *db = NULL;
    struct error err = {0};
    int r = db_open(path, DB_READ_WRITE, &db, &err);
    if (r < 0)
        print_error("db_open: %s\n", err.msg);
    assert_int_equal(r, 0);
    return db;
}

static const char *const failed_names[] = {"DCIM/100CANON/IMG_0001.CR2",
                                           "DCIM/100CANON/IMG_0002.CR2"};
static const struct notify_dest dests[] = {{"unraid", "ok"}, {"immich", "2 files failed"}};

static struct notify_session session(const char *card, enum notify_result result)
{
    return (struct notify_session){
        .card = card,
        .result = result,
        .copied = 10,
        .already = 3,
        .failed = result == NOTIFY_PARTIAL ? 2 : 0,
        .bytes = 123456789,
        .duration = 61,
        .dests = dests,
        .n_dests = 2,
        .failed_files = result == NOTIFY_PARTIAL ? failed_names : NULL,
        .n_failed_files = result == NOTIFY_PARTIAL ? 2 : 0,
        .safe_to_remove = result == NOTIFY_COMPLETED,
        .dashboard_url = "http://pi:8080/",
    };
}

static struct outbox_channel channel(const char *key)
{
    return (struct outbox_channel){.key = key, .kind = OUTBOX_WEBHOOK, .send = record_send};
}

static void queue(struct db *db, const char *card, enum notify_result result,
                  const struct outbox_channel *ch, size_t n, int64_t now)
{
    struct notify_session s = session(card, result);
    struct error err = {0};
    int r = outbox_queue(db, &s, outbox_event_of(result), 0, ch, n, now, NULL, &err);
    if (r < 0)
        print_error("outbox_queue: %s\n", err.msg);
    assert_int_equal(r, 0);
}

static struct outbox_result deliver(struct db *db, const struct outbox_channel *ch, size_t n,
                                    int64_t now)
{
    struct outbox_result res;
    struct error err = {0};
    int r = outbox_deliver(db, ch, n, now, NULL, &res, &err);
    if (r < 0)
        print_error("outbox_deliver: %s\n", err.msg);
    assert_int_equal(r, 0);
    return res;
}

static int64_t pending(struct db *db)
{
    int64_t n = -1;
    assert_int_equal(outbox_pending_count(db, &n, NULL), 0);
    return n;
}

/* Queued on two channels, each gets the message once; then nothing is left or due. */
static void test_queue_then_deliver(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch[] = {channel("email"), channel("webhook:https://ntfy.sh/t")};
    queue(db, "EOS_R6", NOTIFY_COMPLETED, ch, 2, T0);
    assert_int_equal(pending(db), 2);
    int64_t due = 0;
    assert_int_equal(outbox_next_due(db, ch, 2, &due, NULL), 0);
    assert_int_equal(due, T0);

    struct outbox_result res = deliver(db, ch, 2, T0);
    assert_int_equal(res.messages, 2);
    assert_int_equal(res.sent, 2);
    assert_int_equal(res.next_due, 0);
    assert_int_equal(rec.calls, 2);
    assert_string_equal(rec.subject[0], "SnapSync: EOS_R6: backed up, safe to remove");
    assert_int_equal(pending(db), 0);

    res = deliver(db, ch, 2, T0 + 3600); /* delivered once */
    assert_int_equal(res.messages, 0);
    assert_int_equal(rec.calls, 2);
    db_close(db);
}

/* Results within a minute of the last message wait for it and go as one message, in order. */
static void test_rate_limit_merges(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("email");
    queue(db, "A", NOTIFY_COMPLETED, &ch, 1, T0);
    assert_int_equal(deliver(db, &ch, 1, T0).messages, 1);
    queue(db, "B", NOTIFY_PARTIAL, &ch, 1, T0 + 10);
    queue(db, "C", NOTIFY_FAILED, &ch, 1, T0 + 20);

    struct outbox_result res = deliver(db, &ch, 1, T0 + 30);
    assert_int_equal(res.messages, 0);
    assert_int_equal(res.next_due, T0 + OUTBOX_RATE);
    assert_int_equal(rec.calls, 1);

    res = deliver(db, &ch, 1, T0 + OUTBOX_RATE);
    assert_int_equal(res.messages, 1);
    assert_int_equal(res.sent, 2);
    assert_int_equal(rec.calls, 2);
    assert_string_equal(rec.subject[1], "SnapSync: 2 results: 1 partial, 1 failed");
    const char *b = strstr(rec.text[1], "Card B:"), *c = strstr(rec.text[1], "Card C:");
    assert_non_null(b);
    assert_non_null(c);
    assert_true(b < c);
    assert_non_null(strstr(rec.text[1], "DCIM/100CANON/IMG_0002.CR2"));
    struct json_object *o = json_tokener_parse(rec.json[1]), *results;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "results", &results));
    assert_int_equal(json_object_array_length(results), 2);
    json_object_put(o);
    assert_int_equal(pending(db), 0);

    /* the rate limit holds across calls and connections: the next one waits for the minute */
    queue(db, "D", NOTIFY_COMPLETED, &ch, 1, T0 + OUTBOX_RATE + 1);
    res = deliver(db, &ch, 1, T0 + OUTBOX_RATE + 1);
    assert_int_equal(res.messages, 0);
    assert_int_equal(res.next_due, T0 + 2 * OUTBOX_RATE);
    db_close(db);
}

/* A transient error keeps it pending with a doubling delay (1 min .. 1 h); it arrives once the
 * server answers. */
static void test_backoff(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("webhook:http://127.0.0.1:9/");
    queue(db, "A", NOTIFY_COMPLETED, &ch, 1, T0);
    rec.answer = -ECONNREFUSED;
    rec.answer_text = "cannot connect to 127.0.0.1:9";
    int64_t now = T0, expect[] = {60, 120, 240, 480, 960, 1920, 3600, 3600};
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        struct outbox_result res = deliver(db, &ch, 1, now);
        assert_int_equal(res.retry, 1);
        assert_int_equal(res.next_due, now + expect[i]);
        assert_int_equal(deliver(db, &ch, 1, now + expect[i] - 1).retry, 0); /* not yet */
        now += expect[i];
    }
    assert_int_equal(rec.calls, 8);
    assert_int_equal(pending(db), 1);
    rec.answer = 0;
    struct outbox_result res = deliver(db, &ch, 1, now);
    assert_int_equal(res.sent, 1);
    assert_int_equal(pending(db), 0);
    db_close(db);
}

/* A permanent error fails it at once, kept with its error and without the secrets. */
static void test_permanent_error(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("webhook:https://gotify.example/");
    ch.hook.token = "A1b2C3-secret";
    queue(db, "A", NOTIFY_FAILED, &ch, 1, T0);
    rec.answer = -EACCES;
    rec.answer_text = "HTTP 401: bad token A1b2C3-secret";
    struct outbox_result res = deliver(db, &ch, 1, T0);
    assert_int_equal(res.failed, 1);
    assert_int_equal(res.next_due, 0);
    assert_int_equal(pending(db), 0);
    struct db_delivery *rows = NULL;
    size_t n = 0;
    assert_int_equal(outbox_failed_list(db, 10, &rows, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].channel, "webhook:https://gotify.example/");
    assert_string_equal(rows[0].event, "failed");
    assert_int_equal(rows[0].attempts, 1);
    assert_string_equal(rows[0].last_error, "HTTP 401: bad token ***");
    db_deliveries_free(rows, n);
    assert_int_equal(deliver(db, &ch, 1, T0 + 7200).messages, 0);
    assert_int_equal(rec.calls, 1);
    db_close(db);
}

/* Still failing 24 h after it was queued: given up with the last error. */
static void test_give_up(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("email");
    queue(db, "A", NOTIFY_COMPLETED, &ch, 1, T0);
    rec.answer = -ETIMEDOUT;
    rec.answer_text = "timed out";
    assert_int_equal(deliver(db, &ch, 1, T0).retry, 1);
    assert_int_equal(deliver(db, &ch, 1, T0 + OUTBOX_GIVE_UP - 3600).retry, 1);
    struct outbox_result res = deliver(db, &ch, 1, T0 + OUTBOX_GIVE_UP);
    assert_int_equal(res.failed, 1);
    assert_int_equal(res.next_due, 0);
    struct db_delivery *rows = NULL;
    size_t n = 0;
    assert_int_equal(outbox_failed_list(db, 10, &rows, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].last_error, "timed out");
    assert_int_equal(rows[0].attempts, 3);
    db_deliveries_free(rows, n);
    db_close(db);
}

/* Queued through one connection, which closes (the service stops); delivered from another with
 * the same content. */
static void test_restart(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("email");
    queue(db, "Caf\xc3\xa9\n<b>", NOTIFY_PARTIAL, &ch, 1, T0);
    db_close(db);
    db = open_db(path, sizeof(path), false);
    struct outbox_result res = deliver(db, &ch, 1, T0 + 5);
    assert_int_equal(res.sent, 1);
    assert_string_equal(rec.subject[0],
                        "SnapSync: Caf\xc3\xa9?<b>: partly backed up, 2 files failed");
    assert_non_null(strstr(rec.text[0], "  DCIM/100CANON/IMG_0001.CR2\n"));
    assert_non_null(strstr(rec.text[0], "  immich: 2 files failed\n"));
    assert_non_null(strstr(rec.text[0], "Size: 123.5 MB\n"));
    db_close(db);
}

/* The failed list is bounded, newest first; the limit is checked. */
static void test_bounded_lists(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("email");
    rec.answer = -EBADMSG;
    for (int i = 0; i < 30; i++) {
        char card[16];
        snprintf(card, sizeof(card), "C%d", i);
        queue(db, card, NOTIFY_COMPLETED, &ch, 1, T0 + i * OUTBOX_RATE);
        assert_int_equal(deliver(db, &ch, 1, T0 + i * OUTBOX_RATE).failed, 1);
    }
    struct db_delivery *rows = NULL;
    size_t n = 0;
    assert_int_equal(outbox_failed_list(db, 10, &rows, &n, NULL), 0);
    assert_int_equal(n, 10);
    assert_true(rows[0].notification_id > rows[9].notification_id);
    db_deliveries_free(rows, n);
    struct error err = {0};
    assert_int_equal(outbox_failed_list(db, 0, &rows, &n, &err), -EINVAL);
    assert_int_equal(outbox_failed_list(db, 1001, &rows, &n, &err), -EINVAL);

    /* more pending than one message holds: NOTIFY_MERGED_MAX now, the rest a minute later */
    rec.answer = 0;
    struct outbox_channel hook = channel("webhook:http://h/");
    int64_t now = T0 + 100000;
    for (int i = 0; i < NOTIFY_MERGED_MAX + 5; i++)
        queue(db, "X", NOTIFY_COMPLETED, &hook, 1, now);
    assert_int_equal(deliver(db, &hook, 1, now).sent, NOTIFY_MERGED_MAX);
    assert_int_equal(pending(db), 5);
    assert_int_equal(deliver(db, &hook, 1, now + OUTBOX_RATE).sent, 5);
    db_close(db);
}

/* Channel keys hold no credentials; refused arguments. */
static void test_keys_and_arguments(void **state)
{
    (void)state;
    char key[OUTBOX_KEY_MAX];
    assert_int_equal(outbox_channel_key(OUTBOX_EMAIL, NULL, key, sizeof(key)), 0);
    assert_string_equal(key, "email");
    assert_int_equal(outbox_channel_key(OUTBOX_WEBHOOK,
                                        "https://user:pw@gotify.example:8443/message?token=X#f",
                                        key, sizeof(key)),
                     0);
    assert_string_equal(key, "webhook:https://gotify.example:8443/message");
    assert_int_equal(outbox_channel_key(OUTBOX_WEBHOOK, "http://h?token=1", key, sizeof(key)), 0);
    assert_string_equal(key, "webhook:http://h");
    assert_int_equal(outbox_channel_key(OUTBOX_WEBHOOK, "", key, sizeof(key)), -EINVAL);

    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("email");
    struct notify_session s = session("A", NOTIFY_COMPLETED);
    struct error err = {0};
    assert_int_equal(outbox_queue(db, &s, OUTBOX_FAILED, 0, &ch, 1, T0, NULL, &err), -EINVAL);
    assert_int_equal(outbox_queue(db, &s, OUTBOX_VERIFY_PROBLEM, 0, &ch, 1, T0, NULL, &err),
                     -EINVAL); /* a session's result is not a verification */
    assert_int_equal(outbox_queue(db, &s, OUTBOX_COMPLETED, 0, &ch, 0, T0, NULL, &err), -EINVAL);
    assert_int_equal(outbox_queue(db, &s, OUTBOX_COMPLETED, 999, &ch, 1, T0, NULL, &err),
                     -EINVAL); /* no such session */
    assert_int_equal(pending(db), 0);
    atomic_bool cancel = true;
    queue(db, "A", NOTIFY_COMPLETED, &ch, 1, T0);
    assert_int_equal(outbox_deliver(db, &ch, 1, T0, &cancel, NULL, &err), -ECANCELED);
    assert_int_equal(rec.calls, 0);
    assert_int_equal(pending(db), 1);
    db_close(db);
}

/* A destination down and a verification's problems are stored and rebuilt at delivery: each
 * alone gives its own message; with a session result within the minute, one merged message. */
static void test_other_events(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch = channel("webhook:x");
    struct error err = {0};
    struct notify_session down = {
        .kind = NOTIFY_KIND_DEST_DOWN,
        .down = {.dest = "unraid: smb //nas/photos",
                 .reason = "cannot connect",
                 .since = T0 - 1800,
                 .minutes = 30},
        .dashboard_url = "http://pi:8080/",
    };
    const struct notify_problem probs[] = {{"local: /srv/p", "/srv/p/IMG_1.CR2", "missing"},
                                           {"local: /srv/p", "/srv/p/stray.txt", "extra"}};
    struct notify_session ver = {
        .kind = NOTIFY_KIND_VERIFY,
        .verify = {.scope = "scrub",
                   .run_id = 4,
                   .checked = 9,
                   .ok = 8,
                   .missing = 1,
                   .extra = 1,
                   .problems = probs,
                   .n_problems = 2},
    };
    assert_int_equal(outbox_queue(db, &down, OUTBOX_COMPLETED, 0, &ch, 1, T0, NULL, &err), -EINVAL);
    assert_int_equal(outbox_queue(db, &down, OUTBOX_DESTINATION_DOWN, 0, &ch, 1, T0, NULL, &err),
                     0);
    struct outbox_result res = deliver(db, &ch, 1, T0);
    assert_int_equal(res.sent, 1);
    assert_string_equal(rec.subject[0],
                        "SnapSync: destination unraid: smb //nas/photos down for 30 min");
    assert_non_null(strstr(rec.json[0], "\"event\":\"destination_down\""));
    assert_non_null(strstr(rec.text[0], "Reason: cannot connect\n"));

    assert_int_equal(outbox_queue(db, &ver, OUTBOX_VERIFY_PROBLEM, 0, &ch, 1, T0 + 10, NULL, &err),
                     0);
    queue(db, "B", NOTIFY_PARTIAL, &ch, 1, T0 + 20);
    res = deliver(db, &ch, 1, T0 + OUTBOX_RATE);
    assert_int_equal(res.messages, 1);
    assert_int_equal(res.sent, 2);
    assert_string_equal(rec.subject[1], "SnapSync: 2 results: 1 partial, 1 verification problem");
    assert_non_null(strstr(rec.text[1], "  extra: local: /srv/p: /srv/p/stray.txt\n"));
    assert_non_null(strstr(rec.text[1], "Verification run 4 (scrub)"));
    assert_non_null(strstr(rec.json[1], "\"problems_more\":0"));
    assert_int_equal(pending(db), 0);
    db_close(db);
}

/* A channel no longer configured: its pending deliveries are given up, the others' kept. */
static void test_forget_others(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    struct outbox_channel ch[] = {channel("email"), channel("webhook:http://old/")};
    queue(db, "A", NOTIFY_COMPLETED, ch, 2, T0);
    int64_t n = -1;
    assert_int_equal(outbox_forget_others(db, ch, 2, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(outbox_forget_others(db, ch, 1, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pending(db), 1);
    struct db_delivery *rows = NULL;
    size_t k = 0;
    assert_int_equal(outbox_failed_list(db, 10, &rows, &k, NULL), 0);
    assert_int_equal(k, 1);
    assert_string_equal(rows[0].channel, "webhook:http://old/");
    assert_string_equal(rows[0].last_error, "the channel is no longer configured");
    db_deliveries_free(rows, k);
    assert_int_equal(outbox_forget_others(db, NULL, 0, &n, NULL), 0); /* none configured */
    assert_int_equal(n, 1);
    assert_int_equal(pending(db), 0);
    db_close(db);
}

static struct db *other_db; /* a second connection, as another process would have */

/* While its message is on its way, another delivery (another process) finds nothing due. */
static int racing_send(const struct outbox_channel *ch, const struct notify_msg *m,
                       struct error *err)
{
    if (other_db) {
        struct db *db = other_db;
        other_db = NULL;
        struct outbox_result res;
        assert_int_equal(outbox_deliver(db, ch, 1, T0, NULL, &res, NULL), 0);
        assert_int_equal(res.messages, 0);
        assert_int_equal(res.next_due, T0 + OUTBOX_LEASE);
    }
    return record_send(ch, m, err);
}

static void test_claimed_once(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = open_db(path, sizeof(path), true);
    other_db = open_db(path, sizeof(path), false);
    struct db *other = other_db;
    struct outbox_channel ch = channel("email");
    ch.send = racing_send;
    queue(db, "A", NOTIFY_COMPLETED, &ch, 1, T0);
    struct outbox_result res = deliver(db, &ch, 1, T0);
    assert_int_equal(res.sent, 1);
    assert_null(other_db); /* the race ran */
    assert_int_equal(rec.calls, 1);
    assert_int_equal(pending(db), 0);
    db_close(other);
    db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_queue_then_deliver, test_teardown),
        cmocka_unit_test_teardown(test_rate_limit_merges, test_teardown),
        cmocka_unit_test_teardown(test_backoff, test_teardown),
        cmocka_unit_test_teardown(test_permanent_error, test_teardown),
        cmocka_unit_test_teardown(test_give_up, test_teardown),
        cmocka_unit_test_teardown(test_restart, test_teardown),
        cmocka_unit_test_teardown(test_bounded_lists, test_teardown),
        cmocka_unit_test_teardown(test_keys_and_arguments, test_teardown),
        cmocka_unit_test_teardown(test_forget_others, test_teardown),
        cmocka_unit_test_teardown(test_other_events, test_teardown),
        cmocka_unit_test_teardown(test_claimed_once, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
