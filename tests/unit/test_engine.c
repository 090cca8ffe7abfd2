/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the session rules of engine.c. engine_final_status and
 * engine_status_nothing_left as tables; whole sessions on a real card folder (files made here)
 * against a real local destination and a real SQLite database, all under SNAPSYNC_TEST_TMP:
 * all new -> completed, run again -> already backed up, the same content again -> duplicate, a
 * file that vanishes after the scan -> partial naming it, a scan problem -> partial with the
 * problem recorded, an empty card -> empty, a dry run -> nothing written (database bytes and
 * mtime, destination listing), a destination that cannot be written -> failed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "db.h"
#include "engine.h"

/* ---- engine_final_status, engine_status_nothing_left ---- */

static void test_final_status_table(void **state)
{
    (void)state;
    static const struct {
        struct db_totals t;
        uint64_t partly;
        bool interrupted;
        enum db_session_status want;
    } cases[] = {
        /* nothing found, nothing wrong */
        {{0}, 0, false, DB_SESSION_EMPTY},
        /* every file copied, skipped or duplicate */
        {{.files_total = 3, .files_copied = 3}, 0, false, DB_SESSION_COMPLETED},
        {{.files_total = 2, .files_skipped = 2}, 0, false, DB_SESSION_COMPLETED},
        {{.files_total = 2, .files_copied = 1, .files_duplicate = 1},
         0,
         false,
         DB_SESSION_COMPLETED},
        /* a scan problem: never completed, never empty, even with nothing failed */
        {{.files_total = 2, .files_copied = 2, .scan_problems = 1}, 0, false, DB_SESSION_PARTIAL},
        {{.scan_problems = 1}, 0, false, DB_SESSION_PARTIAL},
        /* some failed, some done */
        {{.files_total = 2, .files_copied = 1, .files_failed = 1}, 0, false, DB_SESSION_PARTIAL},
        {{.files_total = 2, .files_skipped = 1, .files_failed = 1}, 0, false, DB_SESSION_PARTIAL},
        {{.files_total = 2, .files_duplicate = 1, .files_failed = 1}, 0, false, DB_SESSION_PARTIAL},
        /* all failed, but copied to some destinations: partial */
        {{.files_total = 2, .files_failed = 2}, 1, false, DB_SESSION_PARTIAL},
        /* all failed, nothing anywhere: failed (with or without scan problems) */
        {{.files_total = 2, .files_failed = 2}, 0, false, DB_SESSION_FAILED},
        {{.files_total = 1, .files_failed = 1, .scan_problems = 3}, 0, false, DB_SESSION_FAILED},
        /* interrupted wins */
        {{.files_total = 2, .files_copied = 2}, 0, true, DB_SESSION_INTERRUPTED},
        {{0}, 0, true, DB_SESSION_INTERRUPTED},
        {{.files_total = 2, .files_failed = 2}, 0, true, DB_SESSION_INTERRUPTED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum db_session_status got =
            engine_final_status(&cases[i].t, cases[i].partly, cases[i].interrupted);
        if (got != cases[i].want)
            fail_msg("case %zu: %s, want %s", i, db_session_status_to_string(got),
                     db_session_status_to_string(cases[i].want));
    }
}

static void test_only_completed_and_empty_leave_nothing(void **state)
{
    (void)state;
    assert_true(engine_status_nothing_left(DB_SESSION_COMPLETED));
    assert_true(engine_status_nothing_left(DB_SESSION_EMPTY));
    assert_false(engine_status_nothing_left(DB_SESSION_PARTIAL));
    assert_false(engine_status_nothing_left(DB_SESSION_FAILED));
    assert_false(engine_status_nothing_left(DB_SESSION_INTERRUPTED));
    assert_false(engine_status_nothing_left(DB_SESSION_SCANNING));
    assert_false(engine_status_nothing_left(DB_SESSION_BACKING_UP));
}

/* ---- whole sessions ---- */

struct world {
    char base[PATH_MAX];
    char card[PATH_MAX];
    char dest[PATH_MAX];
    char db[PATH_MAX];
    struct config *cfg;
};

static void make_config(struct world *w, const char *dest)
{
    char yaml[4 * PATH_MAX];
    int n = snprintf(yaml, sizeof(yaml),
                     "service:\n  database_path: %s\n"
                     "unraid:\n  enabled: true\n  protocol: local\n  mount_point: %s\n"
                     "  organize_by_date: true\n"
                     "backup:\n  concurrent_files: 2\n  max_retries: 1\n  retry_delay: 0.01\n"
                     "  destination_wait: 0\n",
                     w->db, dest);
    assert_true(n > 0 && (size_t)n < sizeof(yaml));
    struct error err = {0};
    config_free(w->cfg);
    w->cfg = NULL;
    if (config_parse_buffer("config.yaml", yaml, (size_t)n, &w->cfg, &err) < 0)
        fail_msg("%s", err.msg);
}

static int world_setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    if (!tmp || !tmp[0])
        tmp = "/tmp";
    mkdir(tmp, 0755);
    snprintf(w->base, sizeof(w->base), "%s/engine.XXXXXX", tmp);
    assert_non_null(mkdtemp(w->base));
    snprintf(w->card, sizeof(w->card), "%s/card", w->base);
    snprintf(w->dest, sizeof(w->dest), "%s/dest", w->base);
    snprintf(w->db, sizeof(w->db), "%s/snapsync.db", w->base);
    assert_int_equal(mkdir(w->card, 0755), 0);
    assert_int_equal(mkdir(w->dest, 0755), 0);
    make_config(w, w->dest);
    *state = w;
    return 0;
}

static int world_teardown(void **state)
{
    struct world *w = *state;
    config_free(w->cfg);
    free(w);
    return 0;
}

/* Writes a file of the card (folders made as needed) holding text. */
static void card_write(struct world *w, const char *rel, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", w->card, rel);
    for (char *s = strchr(path + strlen(w->card) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Regular files under dir, counted recursively; names appended to list (one per line). The
 * ASC MHL history (ascmhl/, history.h) is not a copy: left out. */
static size_t count_files(const char *dir, char *list, size_t size)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "ascmhl"))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            n += count_files(path, list, size);
        } else {
            n++;
            if (list) {
                size_t len = strlen(list);
                snprintf(list + len, size - len, "%s %lld\n", path, (long long)st.st_size);
            }
        }
    }
    closedir(d);
    return n;
}

struct run {
    int rc;
    struct engine_report rep;
    struct error err;
};

/* What on_progress does once, when the pipeline is about to start: removes a card file, or
 * makes it longer (as a camera still writing it would). */
struct meddle {
    const char *path;
    bool grow; /* else remove */
    bool done;
};

static void meddle_on_backing_up(const struct engine_progress *p, void *userdata)
{
    struct meddle *m = userdata;
    if (p->status != DB_SESSION_BACKING_UP || m->done)
        return;
    if (m->grow) {
        FILE *f = fopen(m->path, "a");
        assert_non_null(f);
        assert_true(fputs(" and more", f) >= 0);
        assert_int_equal(fclose(f), 0);
    } else {
        assert_int_equal(unlink(m->path), 0);
    }
    m->done = true;
}

static struct run backup_with(struct world *w, const struct engine_options *opt)
{
    struct run r;
    memset(&r, 0, sizeof(r));
    r.rc = engine_backup(w->cfg, w->card, opt, &r.rep, &r.err);
    return r;
}

static struct run backup(struct world *w, bool dry)
{
    struct engine_options opt = {.dry_run = dry};
    return backup_with(w, &opt);
}

/* The session ran and ended with status and these counts. */
static void assert_outcome(const struct run *r, enum db_session_status status, int64_t copied,
                           int64_t skipped, int64_t duplicate, int64_t failed)
{
    if (r->rc != 0)
        fail_msg("session did not run: %d %s", r->rc, r->err.msg);
    if (r->rep.status != status)
        fail_msg("status %s, want %s", db_session_status_to_string(r->rep.status),
                 db_session_status_to_string(status));
    assert_int_equal(r->rep.totals.files_copied, copied);
    assert_int_equal(r->rep.totals.files_skipped, skipped);
    assert_int_equal(r->rep.totals.files_duplicate, duplicate);
    assert_int_equal(r->rep.totals.files_failed, failed);
}

/* The session as the database recorded it. */
static void recorded(struct world *w, int64_t id, struct db_session *ret)
{
    struct db *db = NULL;
    struct error err = {0};
    if (db_open(w->db, DB_READ_ONLY, &db, &err) < 0 || db_session_get(db, id, ret, &err) < 0)
        fail_msg("%s", err.msg);
    db_close(db);
}

static void test_new_then_done_then_duplicate(void **state)
{
    struct world *w = *state;
    card_write(w, "DCIM/100CANON/IMG_0001.JPG", "first photo");
    card_write(w, "DCIM/100CANON/IMG_0002.JPG", "second photo");

    struct run r = backup(w, false);
    assert_outcome(&r, DB_SESSION_COMPLETED, 2, 0, 0, 0);
    assert_int_equal(r.rep.totals.files_total, 2);
    assert_string_equal(r.rep.error, "");
    assert_int_equal(count_files(w->dest, NULL, 0), 2);
    struct db_session s;
    recorded(w, r.rep.session_id, &s);
    assert_int_equal(s.status, DB_SESSION_COMPLETED);
    assert_int_equal(s.totals.files_copied, 2);

    /* again: already backed up, nothing copied, the destination as it was */
    char before[8192] = "", after[8192] = "";
    count_files(w->dest, before, sizeof(before));
    r = backup(w, false);
    assert_outcome(&r, DB_SESSION_COMPLETED, 0, 2, 0, 0);
    assert_int_equal(r.rep.totals.bytes_copied, 0);
    count_files(w->dest, after, sizeof(after));
    assert_string_equal(before, after);

    /* the same content under another name: a duplicate, not a third copy */
    card_write(w, "DCIM/101CANON/IMG_0003.JPG", "first photo");
    r = backup(w, false);
    assert_outcome(&r, DB_SESSION_COMPLETED, 0, 2, 1, 0);
    assert_int_equal(count_files(w->dest, NULL, 0), 2);
}

/* Two files with the same content in one session: whether the second is a duplicate depends on
 * whether the first was recorded complete before the second's read ended (workers and finishers
 * overlap), so only what holds either way is asserted: both accounted for, and a duplicate
 * leaves no copy of its own behind. */
static void test_same_content_twice_in_one_session(void **state)
{
    struct world *w = *state;
    card_write(w, "DCIM/A.JPG", "same bytes");
    card_write(w, "DCIM/B.JPG", "same bytes");
    struct run r = backup(w, false);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.rep.status, DB_SESSION_COMPLETED);
    assert_int_equal(r.rep.totals.files_copied + r.rep.totals.files_duplicate, 2);
    assert_true(r.rep.totals.files_copied >= 1);
    assert_int_equal(count_files(w->dest, NULL, 0), (size_t)r.rep.totals.files_copied);
}

static void test_empty_card(void **state)
{
    struct world *w = *state;
    card_write(w, "notes.txt", "not a photo"); /* ignored by extension */
    struct run r = backup(w, false);
    assert_outcome(&r, DB_SESSION_EMPTY, 0, 0, 0, 0);
    assert_int_equal(r.rep.totals.files_total, 0);
    assert_int_equal(count_files(w->dest, NULL, 0), 0);
}

/* A card file meddled with after the scan: the session is partial, naming it and why; the other
 * file is copied and nothing of the meddled one reaches the destination (no temporary either). */
static void meddled_makes_partial(struct world *w, bool grow, const char *why)
{
    card_write(w, "DCIM/KEEP.JPG", "kept");
    card_write(w, "DCIM/MEDDLED.JPG", "changes before it is read");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/DCIM/MEDDLED.JPG", w->card);
    struct meddle m = {.path = path, .grow = grow};
    struct engine_options opt = {.on_progress = meddle_on_backing_up, .userdata = &m};
    struct run r = backup_with(w, &opt);
    assert_true(m.done);
    assert_outcome(&r, DB_SESSION_PARTIAL, 1, 0, 0, 1);
    assert_non_null(strstr(r.rep.error, "MEDDLED.JPG"));
    if (!strstr(r.rep.error, why))
        fail_msg("'%s' does not say '%s'", r.rep.error, why);
    struct db_session s;
    recorded(w, r.rep.session_id, &s);
    assert_int_equal(s.status, DB_SESSION_PARTIAL);
    assert_non_null(strstr(s.error, "MEDDLED.JPG"));
    char list[8192] = "";
    assert_int_equal(count_files(w->dest, list, sizeof(list)), 1);
    assert_non_null(strstr(list, "KEEP.JPG"));
}

static void test_file_vanishing_after_the_scan_makes_partial(void **state)
{
    meddled_makes_partial(*state, false, "No such file");
}

/* Retried (backup.max_retries 1), it keeps being unlike what the scan saw: it fails. */
static void test_file_changed_after_the_scan_makes_partial(void **state)
{
    meddled_makes_partial(*state, true, "changed");
}

static void test_scan_problem_makes_partial(void **state)
{
    struct world *w = *state;
    card_write(w, "DCIM/OK.JPG", "fine");
    /* folders of 251-byte names deep enough that a name inside passes the path ceiling */
    char name[252];
    memset(name, 'L', 250);
    name[250] = '\0';
    int fd = open(w->card, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(mkdirat(fd, name, 0755), 0);
        int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(sub >= 0);
        close(fd);
        fd = sub;
    }
    char file[201];
    snprintf(file, sizeof(file), "%0196d.JPG", 0);
    int f = openat(fd, file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(f >= 0);
    assert_int_equal(write(f, "x", 1), 1);
    close(f);
    close(fd);

    struct run r = backup(w, false);
    assert_outcome(&r, DB_SESSION_PARTIAL, 1, 0, 0, 0);
    assert_int_equal(r.rep.totals.scan_problems, 1);
    assert_non_null(strstr(r.rep.error, "could not be read"));

    struct db *db = NULL;
    struct db_problem *probs = NULL;
    size_t n = 0;
    struct error err = {0};
    if (db_open(w->db, DB_READ_ONLY, &db, &err) < 0 ||
        db_session_problems(db, r.rep.session_id, &probs, &n, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, 1);
    assert_int_equal(strlen(probs[0].path), 16 * 251 - 1);
    assert_non_null(strstr(probs[0].error, "path too long"));
    free(probs);
    db_close(db);

    /* the dry run says the same */
    r = backup(w, true);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.rep.status, DB_SESSION_PARTIAL);
}

static void file_state(const char *path, char **ret_bytes, size_t *ret_len, struct timespec *mtime)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    *mtime = st.st_mtim;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    *ret_bytes = buf;
    *ret_len = (size_t)st.st_size;
}

static void test_dry_run_writes_nothing(void **state)
{
    struct world *w = *state;
    /* no database yet: the dry run creates none */
    card_write(w, "DCIM/ONE.JPG", "one");
    struct run r = backup(w, true);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.rep.session_id, 0);
    assert_int_equal(r.rep.totals.files_copied, 1); /* would be copied */
    assert_int_equal(access(w->db, F_OK), -1);
    assert_int_equal(count_files(w->dest, NULL, 0), 0);

    /* with a database: its bytes and mtime, and the destination, stay as they were */
    r = backup(w, false);
    assert_int_equal(r.rep.status, DB_SESSION_COMPLETED);
    card_write(w, "DCIM/TWO.JPG", "two");
    card_write(w, "DCIM/THREE.JPG", "one"); /* same content as ONE: not known before a read */
    char list0[8192] = "", list1[8192] = "", *db0 = NULL, *db1 = NULL;
    size_t len0 = 0, len1 = 0;
    struct timespec m0, m1;
    count_files(w->dest, list0, sizeof(list0));
    file_state(w->db, &db0, &len0, &m0);
    r = backup(w, true);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.rep.session_id, 0);
    assert_int_equal(r.rep.status, DB_SESSION_COMPLETED); /* what the real run would say */
    assert_int_equal(r.rep.totals.files_skipped, 1);
    assert_int_equal(r.rep.totals.files_copied, 2);
    file_state(w->db, &db1, &len1, &m1);
    count_files(w->dest, list1, sizeof(list1));
    assert_string_equal(list0, list1);
    assert_int_equal(len0, len1);
    assert_memory_equal(db0, db1, len0);
    assert_int_equal(m0.tv_sec, m1.tv_sec);
    assert_int_equal(m0.tv_nsec, m1.tv_nsec);
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof(wal), "%s-wal", w->db);
    struct stat st;
    assert_true(stat(wal, &st) < 0 || st.st_size == 0);
    free(db0);
    free(db1);
}

/* Cancelled once the session exists: interrupted, whatever the counts, and so never safe. */
static void cancel_on_start(int64_t session_id, void *userdata)
{
    (void)session_id;
    atomic_store((atomic_bool *)userdata, true);
}

static void test_cancelled_session_is_interrupted(void **state)
{
    struct world *w = *state;
    card_write(w, "DCIM/A.JPG", "a");
    atomic_bool cancel = false;
    struct engine_options opt = {
        .on_session_started = cancel_on_start, .userdata = &cancel, .cancel = &cancel};
    struct run r = backup_with(w, &opt);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.rep.status, DB_SESSION_INTERRUPTED);
    assert_int_equal(r.rep.totals.files_failed, 0);
    struct db_session s;
    recorded(w, r.rep.session_id, &s);
    assert_int_equal(s.status, DB_SESSION_INTERRUPTED);
    /* no temporary left: whatever is there is a whole copy */
    char list[8192] = "";
    count_files(w->dest, list, sizeof(list));
    assert_null(strstr(list, ".part"));
}

static void test_unwritable_destination_fails(void **state)
{
    struct world *w = *state;
    /* as root no mode keeps a folder from being written: a mount point below a plain file */
    char blocker[PATH_MAX], dest[PATH_MAX + 8];
    snprintf(blocker, sizeof(blocker), "%s/blocker", w->base);
    FILE *f = fopen(blocker, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(dest, sizeof(dest), "%s/dest", blocker);
    make_config(w, dest);
    card_write(w, "DCIM/A.JPG", "a");
    card_write(w, "DCIM/B.JPG", "b");
    struct run r = backup(w, false);
    assert_outcome(&r, DB_SESSION_FAILED, 0, 0, 0, 2);
    assert_int_equal(r.rep.dests_down, 1);
    assert_non_null(strstr(r.rep.error, "is down"));
    struct db_session s;
    recorded(w, r.rep.session_id, &s);
    assert_int_equal(s.status, DB_SESSION_FAILED);
    assert_false(engine_status_nothing_left(s.status));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_final_status_table),
        cmocka_unit_test(test_only_completed_and_empty_leave_nothing),
        cmocka_unit_test_setup_teardown(test_new_then_done_then_duplicate, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_same_content_twice_in_one_session, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_empty_card, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_file_vanishing_after_the_scan_makes_partial,
                                        world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_file_changed_after_the_scan_makes_partial, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_scan_problem_makes_partial, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_dry_run_writes_nothing, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_session_is_interrupted, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_destination_fails, world_setup,
                                        world_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
