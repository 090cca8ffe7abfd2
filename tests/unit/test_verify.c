/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for verify.c: the verdict and the pacing (pure), and verify_run on a real folder
 * destination backed up by the engine: slices bounded by max_copies that go on where the last
 * stopped (the scheduled scrub's contract), a cancel, and the problems a callback receives.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "engine.h"
#include "verify.h"

static void test_compare(void **state)
{
    (void)state;
    char d[128];
    const char *md5 = "d41d8cd98f00b204e9800998ecf8427e";
    assert_int_equal(verify_compare(0, md5, 0, md5, "MD5", d, sizeof(d)), DB_VERIFY_OK);
    assert_string_equal(d, "");
    assert_int_equal(
        verify_compare(0, md5, 0, "D41D8CD98F00B204E9800998ECF8427E", "MD5", d, sizeof(d)),
        DB_VERIFY_OK);
    assert_int_equal(verify_compare(2048, md5, 10, md5, "MD5", d, sizeof(d)), DB_VERIFY_CHANGED);
    assert_string_equal(d, "size 10, recorded 2048");
    assert_int_equal(
        verify_compare(0, md5, 0, "00000000000000000000000000000000", "MD5", d, sizeof(d)),
        DB_VERIFY_CHANGED);
    assert_string_equal(d, "MD5 00000000000000000000000000000000, recorded "
                           "d41d8cd98f00b204e9800998ecf8427e");
    assert_int_equal(verify_compare(-1, md5, 0, md5, "MD5", d, sizeof(d)), DB_VERIFY_CHANGED);
    assert_int_equal(verify_compare(0, NULL, 0, md5, "MD5", d, sizeof(d)), DB_VERIFY_CHANGED);
    const char *x = "99aa06d3014798d86001c324468d497f"; /* XXH3-128 of "" */
    assert_int_equal(verify_compare(0, x, 0, "00", "XXH3-128", d, sizeof(d)), DB_VERIFY_CHANGED);
    assert_string_equal(d, "XXH3-128 00, recorded 99aa06d3014798d86001c324468d497f");
}

static void test_pace(void **state)
{
    (void)state;
    assert_true(verify_pace(1000000, 0.1, 0) == 0);   /* unlimited */
    assert_true(verify_pace(1000000, 2.0, 1e6) == 0); /* behind: no wait */
    double w = verify_pace(3000000, 1.0, 1e6);        /* 3 MB at 1 MB/s: 3 s in all */
    assert_true(w > 1.99 && w < 2.01);
}

struct world {
    char base[PATH_MAX], card[PATH_MAX + 8], dest[PATH_MAX + 8], db[PATH_MAX + 16];
    struct config *cfg;
    struct dest **dests;
    size_t n;
    struct db *conn;
    int problems;
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int world_setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    if (!tmp || !tmp[0])
        tmp = "/tmp";
    mkdir(tmp, 0755);
    snprintf(w->base, sizeof(w->base), "%s/verify.XXXXXX", tmp);
    assert_non_null(mkdtemp(w->base));
    snprintf(w->card, sizeof(w->card), "%s/card", w->base);
    snprintf(w->dest, sizeof(w->dest), "%s/dest", w->base);
    snprintf(w->db, sizeof(w->db), "%s/snapsync.db", w->base);
    assert_int_equal(mkdir(w->card, 0755), 0);
    assert_int_equal(mkdir(w->dest, 0755), 0);
    char yaml[4 * PATH_MAX];
    int n = snprintf(yaml, sizeof(yaml),
                     "service:\n  database_path: %s\n"
                     "unraid:\n  enabled: true\n  protocol: local\n  mount_point: %s\n"
                     "  organize_by_date: false\n"
                     "backup:\n  concurrent_files: 2\n  max_retries: 1\n  retry_delay: 0.01\n"
                     "  destination_wait: 0\n",
                     w->db, w->dest);
    assert_true(n > 0 && (size_t)n < sizeof(yaml));
    struct error err = {0};
    if (config_parse_buffer("config.yaml", yaml, (size_t)n, &w->cfg, &err) < 0)
        fail_msg("%s", err.msg);
    for (int i = 0; i < 5; i++) {
        char path[PATH_MAX + 32], text[32];
        snprintf(path, sizeof(path), "%s/IMG_000%d.JPG", w->card, i);
        snprintf(text, sizeof(text), "photo number %d", i);
        write_file(path, text);
    }
    struct engine_options opt = {0};
    struct engine_report rep = {0};
    if (engine_backup(w->cfg, w->card, &opt, &rep, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(rep.totals.files_copied, 5);
    assert_int_equal(dest_create_all(w->cfg, &w->dests, &w->n, &err), 0);
    assert_int_equal(db_open(w->db, DB_READ_WRITE, &w->conn, &err), 0);
    *state = w;
    return 0;
}

static int world_teardown(void **state)
{
    struct world *w = *state;
    db_close(w->conn);
    dest_free_all(w->dests, w->n);
    config_free(w->cfg);
    free(w);
    return 0;
}

static void on_problem(const struct verify_problem *p, void *userdata)
{
    struct world *w = userdata;
    w->problems++;
    assert_int_equal(p->result, DB_VERIFY_MISSING);
    assert_string_equal(p->rel_path, "IMG_0003.JPG");
    assert_string_equal(p->detail, "no such file");
}

/* A scrub: slices of 2 copies, each going on where the last stopped; then nothing is left. */
static void test_slices_go_on_where_the_last_stopped(void **state)
{
    struct world *w = *state;
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/IMG_0003.JPG", w->dest);
    assert_int_equal(unlink(path), 0);
    struct verify_scope scope = {.checked_before = (int64_t)time(NULL)};
    struct db_verify_cursor cursor = {0};
    struct verify_opts o = {
        .max_copies = 2, .resume = &cursor, .on_problem = on_problem, .userdata = w};
    struct verify_summary sum;
    struct error err = {0};
    int64_t seen = 0, missing = 0;
    for (int slice = 0; slice < 3; slice++) {
        assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &o, &sum, &err), 0);
        assert_int_equal(sum.counts.checked, slice < 2 ? 2 : 1);
        assert_int_equal(sum.complete, slice == 2); /* the last one found no more */
        seen += sum.counts.checked;
        missing += sum.counts.missing;
    }
    assert_int_equal(seen, 5);
    assert_int_equal(missing, 1);
    assert_int_equal(w->problems, 1);
    /* every copy got a time: the next slice finds none */
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &o, &sum, &err), 0);
    assert_int_equal(sum.counts.checked, 0);
    assert_true(sum.complete);
    assert_int_equal(sum.status, DB_VERIFY_CLEAN);
}

/* A cancel before the first copy: nothing checked, the run recorded as interrupted. */
static void test_cancel_stops_at_once(void **state)
{
    struct world *w = *state;
    atomic_bool cancel = true;
    struct verify_scope scope = {0};
    struct verify_opts o = {.cancel = &cancel};
    struct verify_summary sum;
    struct error err = {0};
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &o, &sum, &err), 0);
    assert_int_equal(sum.counts.checked, 0);
    assert_int_equal(sum.status, DB_VERIFY_INTERRUPTED);
    assert_false(sum.complete);
    struct verify_opts bad = {.max_copies = -1};
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &bad, &sum, &err),
                     -EINVAL);
}

/* Cancels the run once two copies are checked. */
static void cancel_after_two(const struct verify_progress *p, void *userdata)
{
    if (p->counts->checked >= 2)
        atomic_store((atomic_bool *)userdata, true);
}

/* A scrub slice cut by a card resumes with the copies it had not checked, not after the page
 * it had fetched; copies made after made_before are not due at all. */
static void test_a_cut_slice_resumes_where_it_was_cut(void **state)
{
    struct world *w = *state;
    struct error err = {0};
    struct verify_summary sum;
    struct verify_scope young = {.checked_before = (int64_t)time(NULL),
                                 .made_before = (int64_t)time(NULL) - 86400,
                                 .name = "scrub"};
    struct verify_opts plain = {0};
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &young, &plain, &sum, &err), 0);
    assert_int_equal(sum.counts.checked, 0); /* all made just now */

    atomic_bool cancel = false;
    struct db_verify_cursor cursor = {0};
    struct verify_scope scope = {.checked_before = (int64_t)time(NULL), .name = "scrub"};
    struct verify_opts o = {
        .cancel = &cancel, .resume = &cursor, .on_progress = cancel_after_two, .userdata = &cancel};
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &o, &sum, &err), 0);
    assert_int_equal(sum.status, DB_VERIFY_INTERRUPTED);
    assert_int_equal(sum.counts.checked, 2);
    atomic_store(&cancel, false);
    o.on_progress = NULL;
    assert_int_equal(verify_run(w->cfg, w->conn, w->dests, w->n, &scope, &o, &sum, &err), 0);
    assert_int_equal(sum.counts.checked, 3);
    assert_int_equal(sum.counts.ok, 3);
    assert_true(sum.complete);
    assert_int_equal(sum.status, DB_VERIFY_CLEAN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compare),
        cmocka_unit_test(test_pace),
        cmocka_unit_test_setup_teardown(test_slices_go_on_where_the_last_stopped, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_stops_at_once, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_a_cut_slice_resumes_where_it_was_cut, world_setup,
                                        world_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
