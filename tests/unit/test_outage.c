/* SPDX-License-Identifier: MIT */
/* Unit tests for outage.c: one destination_down message per outage, however many sessions see
 * it down, none for an outage shorter than the threshold, a back-up note after a told one, with
 * explicit times (no sleeping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "outage.h"

#define T0 1800000000
#define TH (30 * 60) /* destination_down_minutes: 30 */

static struct outage *new_outage(void)
{
    struct outage *o = NULL;
    assert_int_equal(outage_new(&o, NULL), 0);
    return o;
}

/* Down across two sessions and the idle time between: one message at the threshold, none
 * before or after; back up: one note, then nothing. */
static void test_one_message_per_outage(void **state)
{
    (void)state;
    struct outage *o = new_outage();
    struct outage_event ev;
    outage_observe(o, "smb://nas/photos", false, "cannot connect", T0);
    assert_int_equal(outage_next_due(o, T0, TH), T0 + TH);
    assert_int_equal(outage_take(o, T0 + TH - 1, TH, &ev), 0);
    /* the session ends; a second session 20 minutes later sees it down still */
    outage_observe(o, "smb://nas/photos", false, "host is unreachable", T0 + 20 * 60);
    assert_int_equal(outage_next_due(o, T0 + 20 * 60, TH), T0 + TH); /* since did not move */
    /* idle: the threshold passes with no session */
    assert_int_equal(outage_take(o, T0 + TH, TH, &ev), 1);
    assert_string_equal(ev.id, "smb://nas/photos");
    assert_string_equal(ev.reason, "host is unreachable");
    assert_int_equal(ev.since, T0);
    assert_int_equal(ev.minutes, 30);
    assert_false(ev.back_up);
    assert_int_equal(outage_take(o, T0 + TH, TH, &ev), 0);
    assert_int_equal(outage_next_due(o, T0 + TH, TH), 0);
    /* a third session still sees it down: the same outage, no second message */
    outage_observe(o, "smb://nas/photos", false, "cannot connect", T0 + 3 * 3600);
    assert_int_equal(outage_take(o, T0 + 5 * 3600, TH, &ev), 0);
    /* up again: one short note, then the record is gone */
    outage_observe(o, "smb://nas/photos", true, NULL, T0 + 6 * 3600);
    outage_observe(o, "smb://nas/photos", true, NULL, T0 + 6 * 3600 + 5);
    assert_int_equal(outage_next_due(o, T0 + 6 * 3600 + 5, TH), T0 + 6 * 3600 + 5);
    assert_int_equal(outage_take(o, T0 + 6 * 3600 + 10, TH, &ev), 1);
    assert_true(ev.back_up);
    assert_int_equal(ev.minutes, 360);
    assert_int_equal(outage_take(o, T0 + 6 * 3600 + 10, TH, &ev), 0);
    assert_int_equal(outage_next_due(o, T0 + 6 * 3600 + 10, TH), 0);
    /* a new outage later is a new message */
    outage_observe(o, "smb://nas/photos", false, "x", T0 + 10 * 3600);
    assert_int_equal(outage_take(o, T0 + 10 * 3600 + TH, TH, &ev), 1);
    assert_false(ev.back_up);
    assert_int_equal(ev.since, T0 + 10 * 3600);
    outage_free(o);
}

/* Down for less than the threshold: no message and no note; destinations are apart. */
static void test_short_outage_and_two_destinations(void **state)
{
    (void)state;
    struct outage *o = new_outage();
    struct outage_event ev;
    outage_observe(o, "local:/srv/a", false, "read-only", T0);
    outage_observe(o, "immich:http://pi", false, "refused", T0 + 60);
    outage_observe(o, "local:/srv/a", true, NULL, T0 + TH - 1);
    assert_int_equal(outage_take(o, T0 + TH + 30, TH, &ev), 0);
    assert_int_equal(outage_take(o, T0 + TH + 60, TH, &ev), 1);
    assert_string_equal(ev.id, "immich:http://pi");
    assert_int_equal(outage_take(o, T0 + 2 * TH, TH, &ev), 0);
    /* down again before its back-up note was taken: the same outage, no note */
    outage_observe(o, "immich:http://pi", true, NULL, T0 + 2 * TH);
    outage_observe(o, "immich:http://pi", false, "refused", T0 + 2 * TH + 1);
    assert_int_equal(outage_take(o, T0 + 3 * TH, TH, &ev), 0);
    /* ignored: no id, NULL outage */
    outage_observe(o, "", false, "x", T0);
    outage_observe(NULL, "x", false, "x", T0);
    assert_int_equal(outage_take(NULL, T0, TH, &ev), 0);
    outage_free(o);
    outage_free(NULL);
}

/* More destinations than the table: the others are ignored, never overwritten. */
static void test_ceiling(void **state)
{
    (void)state;
    struct outage *o = new_outage();
    struct outage_event ev;
    char id[32];
    for (int i = 0; i < OUTAGE_DESTS_MAX + 3; i++) {
        snprintf(id, sizeof(id), "local:/d%d", i);
        outage_observe(o, id, false, "gone", T0);
    }
    int n = 0;
    while (outage_take(o, T0 + TH, TH, &ev) == 1)
        n++;
    assert_int_equal(n, OUTAGE_DESTS_MAX);
    outage_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_message_per_outage),
        cmocka_unit_test(test_short_outage_and_two_destinations),
        cmocka_unit_test(test_ceiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
