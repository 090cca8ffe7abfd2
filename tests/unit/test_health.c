/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for health.c: which failures take a destination down, the streak rule (one file's
 * own retries count once), the first probe with its grace period, and recovery through the
 * prober thread. The probe is the test's: it answers what the test sets, and can be held until
 * the test lets it go. Waits are on a condition variable with a deadline, never a sleep.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "health.h"

struct fake {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int answer[4]; /* what probe(i) returns */
    bool hold[4];  /* probe(i) waits while set */
    int probes[4];
    int ups[4];
};

static int fake_probe(size_t i, void *userdata, struct error *err)
{
    struct fake *f = userdata;
    pthread_mutex_lock(&f->lock);
    f->probes[i]++;
    pthread_cond_broadcast(&f->cond);
    while (f->hold[i])
        pthread_cond_wait(&f->cond, &f->lock);
    int r = f->answer[i];
    pthread_mutex_unlock(&f->lock);
    return r < 0 ? error_set(err, r, "fake answer %d", r) : 0;
}

static void fake_up(size_t i, void *userdata)
{
    struct fake *f = userdata;
    pthread_mutex_lock(&f->lock);
    f->ups[i]++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static const struct health_ops ops = {.probe = fake_probe, .up = fake_up};
static const char *const labels[] = {"local /a", "smb //nas/b", "immich c", "local /d"};

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
}

static void fake_done(struct fake *f)
{
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
}

static void fake_set(struct fake *f, size_t i, int answer, bool hold)
{
    pthread_mutex_lock(&f->lock);
    f->answer[i] = answer;
    f->hold[i] = hold;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Waits up to 20 s for *counter (under f->lock) to reach at least n. */
static bool fake_wait(struct fake *f, const int *counter, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&f->lock);
    while (*counter < n)
        if (pthread_cond_timedwait(&f->cond, &f->lock, &ts) != 0)
            break;
    bool ok = *counter >= n;
    pthread_mutex_unlock(&f->lock);
    return ok;
}

/* n destinations whose first probe answered fine: all up. */
static struct health *started(struct fake *f, size_t n)
{
    struct health *h = NULL;
    struct error err;
    fake_init(f);
    assert_int_equal(health_new(n, labels, &ops, f, &h, &err), 0);
    health_start(h, 10);
    for (size_t i = 0; i < n; i++)
        assert_true(health_is_up(h, i));
    return h;
}

static void test_start_prepares_every_destination(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    fake_set(&f, 1, -EACCES, false);
    struct health *h = NULL;
    struct error err;
    assert_int_equal(health_new(3, labels, &ops, &f, &h, &err), 0);
    assert_false(health_is_up(h, 0)); /* nothing is up before its first probe */
    health_start(h, 10);
    assert_true(health_is_up(h, 0));
    assert_false(health_is_up(h, 1));
    assert_true(health_is_up(h, 2));
    assert_true(health_any_down(h));
    struct health_state hs;
    health_get(h, 1, &hs);
    assert_false(hs.up);
    assert_int_equal(hs.error, -EACCES);
    assert_string_equal(hs.reason, "fake answer -13");
    assert_int_equal(hs.downs, 1);
    health_free(h);
    fake_done(&f);
}

static void test_a_probe_past_the_grace_is_down_then_up_by_itself(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    fake_set(&f, 1, 0, true); /* answers fine, but only when let go */
    struct health *h = NULL;
    struct error err;
    assert_int_equal(health_new(2, labels, &ops, &f, &h, &err), 0);
    health_start(h, 0.2);
    assert_true(health_is_up(h, 0));
    assert_false(health_is_up(h, 1));
    struct health_state hs;
    health_get(h, 1, &hs);
    assert_int_equal(hs.error, -ETIMEDOUT);
    assert_non_null(strstr(hs.reason, "no answer within 0.2 s"));
    fake_set(&f, 1, 0, false);
    assert_true(fake_wait(&f, &f.ups[1], 1));
    assert_true(health_is_up(h, 1));
    assert_int_equal(f.ups[0], 0); /* up at the start is not a recovery */
    health_free(h);
    fake_done(&f);
}

static void test_destination_wide_failures_take_it_down(void **state)
{
    (void)state;
    static const int wide[] = {-ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -EACCES,
                               -ENOSPC,       -EROFS,     -ENODEV,       -ECONNRESET};
    for (size_t k = 0; k < sizeof(wide) / sizeof(wide[0]); k++) {
        struct fake f;
        struct health *h = started(&f, 1);
        assert_false(health_down_but_answering(h, 0)); /* up */
        struct error fail;
        fake_set(&f, 0, -EIO, false); /* stays down when probed */
        error_set(&fail, wide[k], "write failed");
        assert_true(health_report_failure(h, 0, 7, wide[k], &fail));
        assert_false(health_is_up(h, 0));
        struct health_state hs;
        health_get(h, 0, &hs);
        assert_string_equal(hs.reason, "write failed");
        assert_true(hs.next_probe_in_s > 0 && hs.next_probe_in_s <= HEALTH_PROBE_FIRST_S);
        /* a server that said "full", "read-only" or "denied" answers: nothing to interrupt */
        bool answering = wide[k] == -EACCES || wide[k] == -ENOSPC || wide[k] == -EROFS;
        assert_int_equal(health_down_but_answering(h, 0), answering);
        health_free(h);
        fake_done(&f);
    }
}

static void test_the_streak_counts_files_not_attempts(void **state)
{
    (void)state;
    struct fake f;
    struct health *h = started(&f, 1);
    struct error fail;
    error_set(&fail, -EIO, "HTTP 500 Internal server error (server error)");
    /* one file failing again and again is that file's business (its retries) */
    for (int i = 0; i < 10; i++)
        assert_false(health_report_failure(h, 0, 1, -EIO, &fail));
    /* a file-level error between them ends the streak */
    assert_false(health_report_failure(h, 0, 2, -EIO, &fail));
    assert_false(health_report_failure(h, 0, 3, -ENAMETOOLONG, &fail));
    assert_false(health_report_failure(h, 0, 4, -EIO, &fail));
    assert_false(health_report_failure(h, 0, 5, -EIO, &fail));
    /* a success ends it too */
    health_report_success(h, 0);
    assert_false(health_report_failure(h, 0, 6, -EIO, &fail));
    assert_false(health_report_failure(h, 0, 7, -EBADMSG, &fail));
    assert_true(health_is_up(h, 0));
    /* three different files in a row: the server is failing */
    assert_true(health_report_failure(h, 0, 8, -EIO, &fail));
    struct health_state hs;
    health_get(h, 0, &hs);
    assert_non_null(strstr(hs.reason, "3 copies failed in a row, the last: HTTP 500"));
    health_free(h);
    fake_done(&f);
}

static void test_a_down_destination_is_probed_until_it_answers(void **state)
{
    (void)state;
    struct fake f;
    struct health *h = started(&f, 2);
    struct error fail;
    fake_set(&f, 1, -ECONNREFUSED, false);
    error_set(&fail, -ECONNREFUSED, "connection refused");
    assert_true(health_report_failure(h, 1, 1, -ECONNREFUSED, &fail));
    assert_true(health_report_failure(h, 1, 2, -ECANCELED, &fail)); /* still down */
    int probes = f.probes[1];
    assert_true(fake_wait(&f, &f.probes[1], probes + 1)); /* after HEALTH_PROBE_FIRST_S */
    assert_false(health_is_up(h, 1));
    fake_set(&f, 1, 0, false);
    assert_true(fake_wait(&f, &f.ups[1], 1));
    assert_true(health_is_up(h, 1));
    assert_true(health_is_up(h, 0));
    struct health_state hs;
    health_get(h, 1, &hs);
    assert_int_equal(hs.downs, 1);
    assert_string_equal(hs.reason, "");
    health_free(h);
    fake_done(&f);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct health *h = NULL;
    struct error err;
    assert_int_equal(health_new(0, labels, &ops, NULL, &h, &err), -EINVAL);
    assert_int_equal(health_new(HEALTH_DEST_MAX + 1, labels, &ops, NULL, &h, &err), -EINVAL);
    health_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_prepares_every_destination),
        cmocka_unit_test(test_a_probe_past_the_grace_is_down_then_up_by_itself),
        cmocka_unit_test(test_destination_wide_failures_take_it_down),
        cmocka_unit_test(test_the_streak_counts_files_not_attempts),
        cmocka_unit_test(test_a_down_destination_is_probed_until_it_answers),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
