/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for db.c: schema creation and migration, reopening, read-only mode, corrupt and
 * foreign files, every query, the 10,000-file fast path and two connections at once.
 *
 * Each test gets a fresh database under a temporary folder ($SNAPSYNC_TEST_TMP when set, else
 * /tmp). The tests talk to SQLite directly only to build states the API cannot (a newer schema,
 * a foreign pid, an unknown state string) and to check what was stored.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "db.h"

#define MD5_A "0123456789abcdef0123456789abcdef"
#define SHA1_A "0123456789abcdef0123456789abcdef01234567"
#define MD5_B "ffffffffffffffffffffffffffffffff"
#define SHA1_B "ffffffffffffffffffffffffffffffffffffffff"

static char tmp_root[PATH_MAX];
static int path_seq;

/* ---- helpers ---- */

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
    snprintf(tmp_root, sizeof(tmp_root), "%s/test_db.XXXXXX", base);
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* A fresh path "<tmp>/<n>/data/<name>" whose folders do not exist yet. */
static void new_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%d/data/%s", tmp_root, ++path_seq, name);
}

/* A fresh path whose folder exists, for files the test writes itself. */
static void new_file_path(char *buf, size_t size, const char *name)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/%d", tmp_root, ++path_seq);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(buf, size, "%s/%s", dir, name);
}

static struct db *open_rw(const char *path)
{
    struct db *db = NULL;
    struct error err = {0};
    int r = db_open(path, DB_READ_WRITE, &db, &err);
    if (r < 0)
        print_error("db_open('%s'): %s\n", path, err.msg);
    assert_int_equal(r, 0);
    assert_non_null(db);
    return db;
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Runs SQL on the file through a separate, raw connection. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *c = NULL;
    assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
    sqlite3_busy_timeout(c, 10000);
    int rc = sqlite3_exec(c, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        print_error("%s: %s\n", sql, sqlite3_errmsg(c));
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_close(c);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(c);
    return v;
}

static void raw_text(const char *path, const char *sql, char *buf, size_t size)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
    sqlite3_finalize(st);
    sqlite3_close(c);
}

static int64_t add_card(struct db *db, const char *uuid)
{
    int64_t id = 0;
    assert_int_equal(db_card_upsert(db, uuid, "CANON", &id, NULL), 0);
    assert_true(id > 0);
    return id;
}

static int64_t add_file(struct db *db, int64_t card, const char *rel, int64_t size)
{
    struct db_file_key key = {card, rel, size, 1700000000000000000LL};
    int64_t id = 0;
    assert_int_equal(db_file_get_or_create(db, &key, &id, NULL, NULL), 0);
    assert_true(id > 0);
    return id;
}

/* Mounts made by the tests live in a mount namespace of this process (set up in main), so they
 * vanish with it, whatever happens to the test. */
static bool own_mounts;

/* A fresh folder with a tmpfs of size_kb mounted on it, in buf. Needs root, as CI runs. */
static void new_tmpfs(char *buf, size_t size, size_t size_kb)
{
    char opts[32];
    if (!own_mounts)
        fail_msg("this test mounts a tmpfs: run it as root (CI does)");
    snprintf(buf, size, "%s/%d", tmp_root, ++path_seq);
    assert_int_equal(mkdir(buf, 0755), 0);
    snprintf(opts, sizeof(opts), "size=%zuk,mode=0755", size_kb);
    if (mount("tmpfs", buf, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        fail_msg("cannot mount a tmpfs on '%s': %s", buf, strerror(errno));
}

static void remount_ro(const char *dir)
{
    if (mount("tmpfs", dir, "tmpfs", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        fail_msg("cannot remount '%s' read-only: %s", dir, strerror(errno));
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---- state strings ---- */

static void test_state_strings(void **state)
{
    (void)state;
    static const char *const files[] = {"new",       "scanning",  "backing_up",
                                        "verifying", "completed", "failed"};
    static const char *const copies[] = {"pending", "copying", "verifying", "completed", "failed"};
    static const char *const sessions[] = {"scanning", "backing_up",  "completed", "partial",
                                           "failed",   "interrupted", "empty"};
    static const char *const outcomes[] = {"copied", "skipped", "duplicate", "failed"};

    for (int i = 0; i <= DB_FILE_FAILED; i++)
        assert_string_equal(db_file_state_to_string((enum db_file_state)i), files[i]);
    for (int i = 0; i <= DB_COPY_FAILED; i++)
        assert_string_equal(db_copy_state_to_string((enum db_copy_state)i), copies[i]);
    for (int i = 0; i <= DB_OUTCOME_FAILED; i++)
        assert_string_equal(db_outcome_to_string((enum db_outcome)i), outcomes[i]);
    for (int i = 0; i <= DB_SESSION_EMPTY; i++) {
        enum db_session_status s;
        const char *name = db_session_status_to_string((enum db_session_status)i);
        assert_string_equal(name, sessions[i]);
        assert_int_equal(db_session_status_from_string(name, &s), 0);
        assert_int_equal(s, i);
    }

    enum db_session_status s = DB_SESSION_COMPLETED;
    assert_int_equal(db_session_status_from_string("running", &s), -EINVAL);
    assert_int_equal(db_session_status_from_string("Completed", &s), -EINVAL);
    assert_int_equal(db_session_status_from_string("", &s), -EINVAL);
    assert_int_equal(db_session_status_from_string(NULL, &s), -EINVAL);
    assert_int_equal(s, DB_SESSION_COMPLETED); /* untouched on failure */

    assert_string_equal(db_file_state_to_string((enum db_file_state)42), "unknown");
    assert_string_equal(db_copy_state_to_string((enum db_copy_state) - 1), "unknown");
    assert_string_equal(db_session_status_to_string((enum db_session_status)99), "unknown");
    assert_string_equal(db_outcome_to_string((enum db_outcome)7), "unknown");
}

/* ---- opening, migration, modes ---- */

static void test_create_and_migrate(void **state)
{
    (void)state;
    char path[PATH_MAX], dir[PATH_MAX];
    struct stat st;
    new_path(path, sizeof(path), "snapsync.db");

    struct db *db = open_rw(path);
    db_close(db);

    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777 & ~0640, 0);
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777 & ~0750, 0);

    char mode[16];
    raw_text(path, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "wal");
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                   "name IN ('cards', 'sessions', 'files', 'copies', "
                                   "'session_files')"),
                     5);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                   "name IN ('files_md5', 'files_sha1', 'files_state')"),
                     3);
}

static void test_reopen_keeps_data(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");

    struct db *db = open_rw(path);
    int64_t card = add_card(db, "1234-ABCD");
    int64_t file = add_file(db, card, "DCIM/IMG_0001.JPG", 10);
    db_close(db);
    int64_t objects = raw_int(path, "SELECT count(*) FROM sqlite_master");

    /* The migration uses plain CREATE TABLE: running it again would fail the open. */
    db = open_rw(path);
    int64_t again = 0;
    assert_int_equal(db_card_upsert(db, "1234-ABCD", NULL, &again, NULL), 0);
    assert_int_equal(again, card);
    assert_int_equal(add_file(db, card, "DCIM/IMG_0001.JPG", 10), file);
    db_close(db);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), objects);
}

static void test_zero_byte_file(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_file_path(path, sizeof(path), "empty.db");
    write_file(path, "", 0);

    /* Read-only: an empty file has no schema. */
    struct db *db = NULL;
    struct error err = {0};
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EBADMSG);
    assert_null(db);
    assert_true(contains(err.msg, path));

    /* Read-write: SQLite sees an empty database and it is created in place. */
    db = open_rw(path);
    add_card(db, "u");
    db_close(db);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
}

static void test_read_only(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = NULL;
    struct error err = {0};
    struct stat st;

    new_path(path, sizeof(path), "snapsync.db");
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -ENOENT);
    assert_int_equal(err.code, -ENOENT);
    assert_null(db);
    assert_int_equal(stat(path, &st), -1); /* nothing created */

    db = open_rw(path);
    int64_t card = add_card(db, "card-ro");
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/media/card", &sid, NULL), 0);
    db_close(db);

    db = NULL;
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), 0);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_string_equal(s.card_uuid, "card-ro");
    struct db_stats stats;
    assert_int_equal(db_stats_get(db, &stats, NULL), 0);
    assert_int_equal(stats.cards, 1);

    assert_int_equal(db_card_upsert(db, "other", "x", NULL, &err), -EROFS);
    assert_int_equal(err.code, -EROFS);
    assert_true(contains(err.msg, "readonly") || contains(err.msg, "read-only") ||
                contains(err.msg, "read only"));
    assert_int_equal(db_sessions_interrupt_stale(db, NULL, &err), -EROFS);
    db_close(db);
}

static void test_newer_schema(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = NULL;
    struct error err = {0};
    new_file_path(path, sizeof(path), "future.db");
    raw_exec(path, "CREATE TABLE cards (id INTEGER PRIMARY KEY); PRAGMA user_version = 99");

    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EPROTO);
    assert_null(db);
    assert_true(contains(err.msg, "newer SnapSync"));
    assert_true(contains(err.msg, "99"));
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EPROTO);
    assert_null(db);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 99); /* untouched */
}

static void test_foreign_database(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db *db = NULL;
    struct error err = {0};
    new_file_path(path, sizeof(path), "other-app.db");
    raw_exec(path, "CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('x')");

    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EBADMSG);
    assert_null(db);
    assert_true(contains(err.msg, "not a SnapSync database"));
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EBADMSG);
    /* Untouched: no tables added, not even switched to WAL. */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);
    char mode[16];
    raw_text(path, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "delete");

    /* Right version number, wrong tables. */
    new_file_path(path, sizeof(path), "half.db");
    raw_exec(path, "CREATE TABLE cards (id INTEGER PRIMARY KEY); PRAGMA user_version = 1");
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EBADMSG);
    assert_true(contains(err.msg, "tables missing"));
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EBADMSG);
    assert_null(db);
    raw_text(path, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "delete");
}

static void expect_corrupt(const char *path)
{
    struct db *db = NULL;
    struct error err = {0};
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EBADMSG);
    assert_null(db);
    assert_int_equal(err.code, -EBADMSG);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "database '%s' is corrupt or not a SnapSync database", path);
    assert_true(contains(err.msg, want));
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EBADMSG);
    assert_null(db);
}

static void test_random_bytes(void **state)
{
    (void)state;
    char path[PATH_MAX];
    unsigned char buf[8192];
    uint32_t x = 2463534242u; /* xorshift32: the same "random" file every run */
    for (size_t i = 0; i < sizeof(buf); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
    new_file_path(path, sizeof(path), "random.db");
    write_file(path, buf, sizeof(buf));
    expect_corrupt(path);
}

static void test_text_file(void **state)
{
    (void)state;
    char path[PATH_MAX];
    static const char text[] = "service:\n  database_path: /var/lib/snapsync/snapsync.db\n";
    new_file_path(path, sizeof(path), "config.yaml");
    write_file(path, text, sizeof(text) - 1);
    expect_corrupt(path);
}

static void test_truncated_database(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct stat st;
    new_path(path, sizeof(path), "snapsync.db");

    struct db *db = open_rw(path);
    int64_t card = add_card(db, "trunc");
    char rel[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(rel, sizeof(rel), "DCIM/100CANON/IMG_%04d.JPG", i);
        add_file(db, card, rel, i);
    }
    db_close(db); /* checkpoints the WAL into the file and removes it */
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > 64 * 1024);

    assert_int_equal(truncate(path, st.st_size / 2), 0);
    expect_corrupt(path);
    assert_int_equal(truncate(path, 4096), 0);
    expect_corrupt(path);
}

/* Pages garbled in the middle of a real database: the header is fine, so the open may succeed,
 * but every call must return 0 or -EBADMSG, never crash. */
static void test_garbled_pages(void **state)
{
    (void)state;
    char path[PATH_MAX], rel[64];
    struct stat st;
    new_path(path, sizeof(path), "snapsync.db");

    struct db *db = open_rw(path);
    int64_t card = add_card(db, "garbled");
    for (int i = 0; i < 3000; i++) {
        snprintf(rel, sizeof(rel), "DCIM/100CANON/IMG_%04d.JPG", i);
        int64_t f = add_file(db, card, rel, i);
        if (i % 10 == 0)
            assert_int_equal(db_file_set_state(db, f, DB_FILE_FAILED, "x", NULL), 0);
    }
    db_close(db);
    assert_int_equal(stat(path, &st), 0);

    unsigned char junk[4096];
    uint32_t x = 88172645u;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk[i] = (unsigned char)x;
    }
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    for (off_t off = 2 * 4096; off + 4096 <= st.st_size; off += 3 * 4096)
        assert_int_equal(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
    close(fd);

    struct error err;
    db = NULL;
    int r = db_open(path, DB_READ_WRITE, &db, &err);
    assert_true(r == 0 || r == -EBADMSG);
    if (r < 0)
        return;
    const char *const dests[] = {"nas"};
    struct db_file_key key = {card, "DCIM/100CANON/IMG_2999.JPG", 2999, 1700000000000000000LL};
    struct db_stats stats;
    struct db_file *files = NULL;
    struct db_session *sessions = NULL;
    size_t n;
    bool done;
    int64_t id;
    r = db_stats_get(db, &stats, &err);
    assert_true(r == 0 || r == -EBADMSG);
    r = db_file_done(db, &key, dests, 1, &done, &err);
    assert_true(r == 0 || r == -EBADMSG);
    r = db_file_get_or_create(db, &key, &id, NULL, &err);
    assert_true(r == 0 || r == -EBADMSG);
    r = db_files_failed(db, 10000, &files, &n, &err);
    assert_true(r == 0 || r == -EBADMSG);
    free(files);
    r = db_sessions_list(db, 10, &sessions, &n, &err);
    assert_true(r == 0 || r == -EBADMSG);
    free(sessions);
    db_close(db);
}

static void test_unusable_paths(void **state)
{
    (void)state;
    char path[PATH_MAX], below[PATH_MAX + 16];
    struct db *db = NULL;
    struct error err = {0};

    assert_int_equal(db_open(NULL, DB_READ_WRITE, &db, &err), -EINVAL);
    assert_int_equal(db_open("", DB_READ_WRITE, &db, &err), -EINVAL);
    assert_int_equal(db_open("x.db", (enum db_mode)5, &db, &err), -EINVAL);

    /* A folder where the file should be. Works as root too, unlike chmod 000. */
    new_file_path(path, sizeof(path), "dir.db");
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EISDIR);
    assert_true(contains(err.msg, path));
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EISDIR);

    /* A regular file where a parent folder should be. */
    new_file_path(path, sizeof(path), "plain");
    write_file(path, "x", 1);
    snprintf(below, sizeof(below), "%s/sub/snapsync.db", path);
    assert_int_equal(db_open(below, DB_READ_WRITE, &db, &err), -ENOTDIR);
    assert_int_equal(db_open(below, DB_READ_ONLY, &db, &err), -ENOTDIR);
    assert_null(db);

    /* A user who may read the file but not write its folder, where SQLite must create the
     * -shm of a WAL database: -EACCES naming the file, not "does not exist". As root, the
     * check runs in a child that becomes nobody, in a folder under /var/tmp that nobody can
     * reach wherever $SNAPSYNC_TEST_TMP is (a checkout in /root is 0700). */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "/var/tmp/snapsync-test_db.XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);
    snprintf(path, sizeof(path), "%s/others.db", dir);
    db_close(open_rw(path));
    assert_int_equal(chmod(path, 0644), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(3);
        struct error cerr = {0};
        int r = db_open(path, DB_READ_ONLY, &db, &cerr);
        if (r != -EACCES)
            fprintf(stderr, "as nobody: %d %s\n", r, cerr.msg);
        _exit(r == -EACCES && contains(cerr.msg, path) && contains(cerr.msg, "-shm") ? 0
              : r == 0                                                               ? 1
                                                                                     : 2);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Permission denied can only be shown without root: root reads a chmod 000 file. */
    if (geteuid() != 0) {
        new_path(path, sizeof(path), "locked.db");
        db_close(open_rw(path));
        assert_int_equal(chmod(path, 0), 0);
        assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EACCES);
        assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EACCES);
        assert_null(db);
    }
    db_close(NULL);
}

/* ---- transactions ---- */

static char uuid_committed[] = "committed", uuid_rolled_back[] = "rolled-back",
            uuid_inner_fails[] = "inner-fails", uuid_inner_ok[] = "inner-ok";

static int tx_add_card(struct db *db, void *userdata)
{
    return db_card_upsert(db, userdata, NULL, NULL, NULL);
}

static int tx_add_card_then_fail(struct db *db, void *userdata)
{
    int r = db_card_upsert(db, userdata, NULL, NULL, NULL);
    return r < 0 ? r : -EIO;
}

static int tx_nested(struct db *db, void *userdata)
{
    (void)userdata;
    int r = db_card_upsert(db, "outer", NULL, NULL, NULL);
    if (r < 0)
        return r;
    r = db_transaction(db, tx_add_card_then_fail, uuid_inner_fails, NULL);
    if (r != -EIO)
        return -EINVAL;
    return db_transaction(db, tx_add_card, uuid_inner_ok, NULL);
}

static void test_transaction(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db_stats stats;
    struct error err = {.code = 1234, .msg = "fn's own detail"};
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);

    assert_int_equal(db_transaction(db, tx_add_card, uuid_committed, NULL), 0);
    assert_int_equal(db_transaction(db, tx_add_card_then_fail, uuid_rolled_back, &err), -EIO);
    assert_string_equal(err.msg, "fn's own detail"); /* fn's failure: err is fn's business */
    assert_int_equal(db_stats_get(db, &stats, NULL), 0);
    assert_int_equal(stats.cards, 1);

    assert_int_equal(db_transaction(db, tx_nested, NULL, NULL), 0);
    assert_int_equal(db_stats_get(db, &stats, NULL), 0);
    assert_int_equal(stats.cards, 3); /* committed, outer, inner-ok */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM cards WHERE uuid = 'inner-fails'"), 0);

    assert_int_equal(db_transaction(db, NULL, NULL, NULL), -EINVAL);
    db_close(db);
}

/* ---- cards and sessions ---- */

static void test_cards(void **state)
{
    (void)state;
    char path[PATH_MAX], longlabel[300];
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);

    int64_t a = 0, b = 0, a2 = 0;
    assert_int_equal(db_card_upsert(db, "AAAA-1111", "EOS_DIGITAL", &a, NULL), 0);
    assert_int_equal(db_card_upsert(db, "BBBB-2222", NULL, &b, NULL), 0);
    assert_true(a > 0 && b > 0 && a != b);
    assert_int_equal(db_card_upsert(db, "AAAA-1111", "RENAMED", &a2, NULL), 0);
    assert_int_equal(a2, a);
    char label[64];
    raw_text(path, "SELECT label FROM cards WHERE uuid = 'AAAA-1111'", label, sizeof(label));
    assert_string_equal(label, "RENAMED");
    /* NULL label keeps the old one. */
    assert_int_equal(db_card_upsert(db, "AAAA-1111", NULL, NULL, NULL), 0);
    raw_text(path, "SELECT label FROM cards WHERE uuid = 'AAAA-1111'", label, sizeof(label));
    assert_string_equal(label, "RENAMED");
    assert_true(raw_int(path, "SELECT last_seen FROM cards WHERE uuid = 'AAAA-1111'") > 0);

    assert_int_equal(db_card_upsert(db, NULL, "x", NULL, &err), -EINVAL);
    assert_int_equal(db_card_upsert(db, "", "x", NULL, &err), -EINVAL);

    /* A long label is kept, and cut (NUL-terminated) in struct db_session. */
    memset(longlabel, 'L', sizeof(longlabel) - 1);
    longlabel[sizeof(longlabel) - 1] = '\0';
    int64_t c = 0, sid = 0;
    assert_int_equal(db_card_upsert(db, "CCCC", longlabel, &c, NULL), 0);
    assert_int_equal(db_session_begin(db, c, "/media/c", &sid, NULL), 0);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(strlen(s.card_label), sizeof(s.card_label) - 1);
    db_close(db);
}

static void test_sessions(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "SESS-1");

    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/media/EOS", &sid, NULL), 0);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.id, sid);
    assert_int_equal(s.card_id, card);
    assert_string_equal(s.card_uuid, "SESS-1");
    assert_string_equal(s.card_label, "CANON");
    assert_string_equal(s.source, "/media/EOS");
    assert_int_equal(s.status, DB_SESSION_SCANNING);
    assert_int_equal(s.pid, getpid());
    assert_true(s.started_at > 0);
    assert_int_equal(s.ended_at, 0);
    assert_string_equal(s.error, "");

    struct db_totals t = {100, 1000, 10, 20, 3, 4, 500, 7};
    assert_int_equal(db_session_update(db, sid, DB_SESSION_BACKING_UP, &t, NULL), 0);
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_BACKING_UP);
    assert_memory_equal(&s.totals, &t, sizeof(t));
    assert_int_equal(s.ended_at, 0);

    t.files_copied = 93;
    assert_int_equal(db_session_end(db, sid, DB_SESSION_PARTIAL, &t, "4 files failed", NULL), 0);
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_PARTIAL);
    assert_int_equal(s.totals.files_copied, 93);
    assert_true(s.ended_at >= s.started_at);
    assert_string_equal(s.error, "4 files failed");

    assert_int_equal(db_session_get(db, 9999, &s, &err), -ENOENT);
    assert_int_equal(db_session_update(db, 9999, DB_SESSION_BACKING_UP, &t, &err), -ENOENT);
    assert_int_equal(db_session_end(db, 9999, DB_SESSION_FAILED, &t, NULL, &err), -ENOENT);
    assert_int_equal(db_session_update(db, sid, (enum db_session_status)17, &t, &err), -EINVAL);
    assert_int_equal(db_session_update(db, 9999, DB_SESSION_BACKING_UP, NULL, &err), -ENOENT);
    assert_int_equal(db_session_end(db, 9999, DB_SESSION_FAILED, NULL, NULL, &err), -ENOENT);
    /* No such card: the foreign key refuses it. */
    assert_int_equal(db_session_begin(db, 4242, "/x", &sid, &err), -EINVAL);
    assert_true(contains(err.msg, "FOREIGN KEY"));

    /* A session without a card, with a source too long for the struct. */
    char source[2000];
    memset(source, 's', sizeof(source) - 1);
    source[sizeof(source) - 1] = '\0';
    assert_int_equal(db_session_begin(db, 0, source, &sid, NULL), 0);
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.card_id, 0);
    assert_string_equal(s.card_uuid, "");
    assert_int_equal(strlen(s.source), sizeof(s.source) - 1);

    /* An unknown status string in the file reads as interrupted, never a crash. */
    raw_exec(path, "UPDATE sessions SET status = 'paused-by-v9' WHERE id = 1");
    assert_int_equal(db_session_get(db, 1, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_INTERRUPTED);
    db_close(db);
}

/* Verification runs: copies come checked longest ago first, a page at a time; a verdict moves a
 * copy out of the walk, a check that could not be made leaves it for the next walk. */
static void test_verify_runs_pages_and_results(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "verify"), f[4], sid = 0;
    assert_int_equal(db_session_begin(db, card, "/m", &sid, NULL), 0);
    for (int i = 0; i < 4; i++) {
        char rel[32], remote[32];
        snprintf(rel, sizeof(rel), "DCIM/%d.JPG", i);
        snprintf(remote, sizeof(remote), "/n/%d.jpg", i);
        f[i] = add_file(db, card, rel, 100 + i);
        assert_int_equal(db_file_set_meta(db, f[i], "0123456789abcdef0123456789abcdef",
                                          "0123456789abcdef0123456789abcdef01234567", NULL, 0,
                                          "photo", NULL),
                         0);
        assert_int_equal(db_copy_set(db, f[i], "nas", i == 3 ? DB_COPY_FAILED : DB_COPY_COMPLETED,
                                     remote, NULL, NULL),
                         0);
    }
    assert_int_equal(db_copy_set(db, f[0], "usb", DB_COPY_COMPLETED, "/u/0.jpg", NULL, NULL), 0);
    assert_int_equal(db_session_file_set(db, sid, f[1], DB_OUTCOME_COPIED, NULL), 0);
    raw_exec(path, "UPDATE copies SET checked_at = 50 WHERE file_id = 1 AND dest = 'nas'");

    int64_t run = 0;
    assert_int_equal(db_verify_run_begin(db, "all", "", &run, NULL), 0);
    struct db_verify_filter flt = {.checked_before = 1000};
    struct db_verify_cursor cur = {0};
    struct db_verify_copy page[2];
    size_t n = 0;
    assert_int_equal(db_verify_copies_page(db, &flt, &cur, page, 2, &n, NULL), 0);
    assert_int_equal(n, 2); /* never checked first: file 1 usb... then file 2 nas */
    assert_int_equal(page[0].file_id, f[0]);
    assert_string_equal(page[0].dest, "usb");
    assert_int_equal(page[1].file_id, f[1]);
    assert_string_equal(page[1].remote, "/n/1.jpg");
    assert_int_equal(page[1].size, 101);
    assert_string_equal(page[1].sha1, "0123456789abcdef0123456789abcdef01234567");
    assert_int_equal(
        db_verify_result_add(db, run, f[0], "usb", DB_VERIFY_ERROR, "offline", 2000, true, NULL),
        0);
    assert_int_equal(
        db_verify_result_add(db, run, f[1], "nas", DB_VERIFY_MISSING, "gone", 2000, true, NULL), 0);
    assert_int_equal(db_verify_copies_page(db, &flt, &cur, page, 2, &n, NULL), 0);
    assert_int_equal(n, 2); /* not the failed copy of file 4 */
    assert_int_equal(page[0].file_id, f[2]);
    assert_int_equal(page[1].file_id, f[0]); /* checked at 50: last */
    assert_int_equal(page[1].checked_at, 50);
    assert_int_equal(db_verify_copies_page(db, &flt, &cur, page, 2, &n, NULL), 0);
    assert_int_equal(n, 0);
    /* a new walk: the copy that could not be checked comes first again, the missing one not */
    struct db_verify_cursor fresh = {0};
    assert_int_equal(db_verify_copies_page(db, &flt, &fresh, page, 2, &n, NULL), 0);
    assert_int_equal(page[0].file_id, f[0]);
    assert_string_equal(page[0].dest, "usb");
    assert_int_equal(raw_int(path, "SELECT checked_at FROM copies WHERE file_id = 2 AND dest = "
                                   "'nas'"),
                     2000);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM verify_results WHERE run_id = 1"), 2);
    /* the missing copy is no backup any more: failed, so that a backup makes it again */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM copies WHERE file_id = 2 AND dest = "
                                   "'nas' AND state = 'failed' AND error = 'verification run 1 "
                                   "found it missing: gone'"),
                     1);

    /* the run's own walk leaves out what it has a row for, verdict or not */
    struct db_verify_filter own = {.checked_before = INT64_MAX, .run_id = run};
    memset(&fresh, 0, sizeof(fresh));
    assert_int_equal(db_verify_copies_page(db, &own, &fresh, page, 2, &n, NULL), 0);
    assert_int_equal(n, 2);
    assert_int_equal(page[0].file_id, f[2]);
    assert_int_equal(page[1].file_id, f[0]);
    assert_string_equal(page[1].dest, "nas");

    /* filters: a destination, a session */
    struct db_verify_filter by_session = {.session_id = sid, .checked_before = 5000};
    memset(&fresh, 0, sizeof(fresh));
    assert_int_equal(db_verify_copies_page(db, &by_session, &fresh, page, 2, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(page[0].file_id, f[1]);
    struct db_verify_filter by_dest = {.dest = "usb", .checked_before = 5000};
    memset(&fresh, 0, sizeof(fresh));
    assert_int_equal(db_verify_copies_page(db, &by_dest, &fresh, page, 2, &n, NULL), 0);
    assert_int_equal(n, 1);

    struct db_verify_counts counts = {.checked = 2, .missing = 1, .errors = 1};
    assert_int_equal(db_verify_run_end(db, run, &counts, DB_VERIFY_PROBLEMS, NULL), 0);
    assert_int_equal(raw_int(path, "SELECT missing FROM verify_runs WHERE id = 1"), 1);
    assert_int_equal(db_verify_run_end(db, 99, &counts, DB_VERIFY_CLEAN, NULL), -ENOENT);
    assert_int_equal(db_verify_result_add(db, 99, f[0], "nas", DB_VERIFY_OK, NULL, 1, true, NULL),
                     -ENOENT);
    assert_int_equal(
        db_verify_result_add(db, run, f[0], "nowhere", DB_VERIFY_OK, NULL, 1, true, NULL), -ENOENT);
    assert_int_equal(db_verify_copies_page(db, &flt, &fresh, page, 0, &n, NULL), -EINVAL);
    assert_string_equal(db_verify_status_to_string(DB_VERIFY_PAUSED), "paused");
    assert_string_equal(db_verify_result_to_string(DB_VERIFY_CHANGED), "changed");
    db_close(db);
}

/* Files known at a destination (copies in any state, sidecars) are not extra; a run names its
 * extra files up to the bound and counts them all; a run left running by a dead process reads
 * as interrupted and is marked so by the next run's begin. */
static void test_verify_extras_and_dead_runs(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "extras");
    int64_t f = add_file(db, card, "DCIM/1.JPG", 100);
    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_FAILED, "/n/1.jpg", "x", NULL), 0);
    raw_exec(path, "INSERT INTO sidecar_copies VALUES (1, 'nas', '/n/1.xmp', 3, 0, 'm', 's', 0)");
    bool known = false;
    assert_int_equal(db_remote_known(db, "nas", "/n/1.jpg", &known, NULL), 0);
    assert_true(known);
    assert_int_equal(db_remote_known(db, "nas", "/n/1.xmp", &known, NULL), 0);
    assert_true(known);
    assert_int_equal(db_remote_known(db, "usb", "/n/1.jpg", &known, NULL), 0);
    assert_false(known);
    assert_int_equal(db_remote_known(db, "nas", "/n/2.jpg", &known, NULL), 0);
    assert_false(known);

    int64_t run = 0;
    assert_int_equal(db_verify_run_begin(db, "all", "", &run, NULL), 0);
    for (int i = 0; i < DB_VERIFY_EXTRAS_MAX + 5; i++) {
        char remote[32];
        snprintf(remote, sizeof(remote), "/n/x%d", i);
        assert_int_equal(db_verify_extra_add(db, run, "nas", remote, NULL), 0);
    }
    assert_int_equal(raw_int(path, "SELECT count(*) FROM verify_extras"), DB_VERIFY_EXTRAS_MAX);
    assert_int_equal(db_verify_result_add(db, run, f, "nas", DB_VERIFY_EXTRA, NULL, 1, true, NULL),
                     -EINVAL);
    struct db_verify_counts k = {.extra = DB_VERIFY_EXTRAS_MAX + 5};
    assert_int_equal(db_verify_run_end(db, run, &k, DB_VERIFY_PROBLEMS, NULL), 0);
    struct db_verify_run last;
    assert_int_equal(db_verify_run_last(db, &last, NULL), 0);
    assert_int_equal(last.counts.extra, DB_VERIFY_EXTRAS_MAX + 5);
    assert_int_equal(last.status, DB_VERIFY_PROBLEMS);

    /* this process's running run is alive; one of a process that is gone is not */
    assert_int_equal(db_verify_run_begin(db, "all", "", &run, NULL), 0);
    assert_int_equal(db_verify_run_last(db, &last, NULL), 0);
    assert_int_equal(last.status, DB_VERIFY_RUNNING);
    raw_exec(path, "UPDATE verify_runs SET pid = 2147483647 WHERE status = 'running'");
    assert_int_equal(db_verify_run_last(db, &last, NULL), 0);
    assert_int_equal(last.status, DB_VERIFY_INTERRUPTED);
    int64_t run2 = 0;
    assert_int_equal(db_verify_run_begin(db, "all", "", &run2, NULL), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM verify_runs WHERE status = 'interrupted'"),
                     1);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM verify_runs WHERE status = 'running'"), 1);
    db_close(db);
}

/* Takes a schema-9 database back to schema 8 (before the files' XXH3-128). */
#define UNDO_V9 "ALTER TABLE files DROP COLUMN xxh128; "
/* Takes a database back to schema 7 (before verify runs' pid and extra files). */
#define UNDO_V8                                                                                    \
    UNDO_V9 "DROP INDEX copies_remote; DROP TABLE verify_extras; "                                 \
            "ALTER TABLE verify_runs DROP COLUMN extra; ALTER TABLE verify_runs DROP COLUMN pid; "
/* Takes a database back to schema 6 (before the outbox). */
#define UNDO_V7 UNDO_V8 "DROP TABLE deliveries; DROP TABLE notifications; "
#define DB_SCHEMA_VERSION_BEFORE_OUTBOX 6 /* the step before the outbox's */
#define STR_(x) #x
#define STR(x) STR_(x)
/* Takes a schema-6 database back to schema 5 (before sidecar copies). */
#define UNDO_V6 "DROP TABLE sidecar_copies; "
/* Takes a schema-5 database back to schema 4 (before verification runs). */
#define UNDO_V5                                                                                    \
    "DROP TABLE verify_results; DROP TABLE verify_runs; DROP INDEX copies_checked; "               \
    "ALTER TABLE copies DROP COLUMN check_result; ALTER TABLE copies DROP COLUMN checked_at; "

/* A version-2 database (before scan problems) is migrated in place, its sessions kept. */
static void test_migrate_from_v2(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, add_card(db, "v2"), "/m", &sid, NULL), 0);
    db_close(db);
    raw_exec(path, UNDO_V7 UNDO_V6 UNDO_V5
             "DROP TABLE session_problems; ALTER TABLE sessions DROP COLUMN scan_problems; "
             "ALTER TABLE copies DROP COLUMN mhl_generation; "
             "UPDATE sessions SET status = 'completed'; PRAGMA user_version = 2");

    struct error err = {0};
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), -EPROTO);
    assert_true(contains(err.msg, "version 2"));
    db = open_rw(path);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_COMPLETED);
    assert_int_equal(s.totals.scan_problems, 0);
    assert_int_equal(db_session_problem_add(db, sid, "DCIM", "cannot list the folder: x", NULL), 0);
    db_close(db);
}

/* A schema-8 database (before the XXH3-128) is migrated in place: its files keep their hashes,
 * without an XXH3-128, and can be given one. */
static void test_migrate_to_xxh128(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "v8");
    int64_t id = add_file(db, card, "DCIM/IMG_1.JPG", 10);
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, MD5_A, 0, "photo", NULL), 0);
    db_close(db);
    raw_exec(path, UNDO_V9 "PRAGMA user_version = 8");
    assert_int_equal(raw_int(path, "SELECT count(*) FROM pragma_table_info('files') "
                                   "WHERE name = 'xxh128'"),
                     0);
    db = open_rw(path);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    struct db_file f;
    assert_int_equal(db_file_get(db, id, &f, NULL), 0);
    assert_string_equal(f.md5, MD5_A);
    assert_string_equal(f.sha1, SHA1_A);
    assert_string_equal(f.xxh128, "");
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, MD5_A, 0, "photo", NULL), 0);
    assert_int_equal(db_file_get(db, id, &f, NULL), 0);
    assert_string_equal(f.xxh128, MD5_A);
    db_close(db);
}

/* A database before the outbox is migrated in place; a notification of one of its sessions is
 * queued after. */
static void test_migrate_to_outbox(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, add_card(db, "v5"), "/m", &sid, NULL), 0);
    db_close(db);
    raw_exec(path, UNDO_V7 "PRAGMA user_version = " STR(DB_SCHEMA_VERSION_BEFORE_OUTBOX));
    db = open_rw(path);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    const char *channels[] = {"email", "webhook:https://ntfy.sh/t"};
    int64_t id = 0, n = 0;
    assert_int_equal(db_notification_add(db, 1000, "completed", sid, "{}", channels, 2, &id, NULL),
                     0);
    assert_int_equal(db_deliveries_pending_count(db, &n, NULL), 0);
    assert_int_equal(n, 2);
    /* one transaction: a channel given twice leaves no notification behind */
    const char *twice[] = {"email", "email"};
    assert_int_equal(db_notification_add(db, 1000, "completed", sid, "{}", twice, 2, NULL, NULL),
                     -EINVAL);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM notifications"), 1);
    db_close(db);
}

static void test_session_problems(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err = {0};
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "PROB");
    int64_t a = 0, b = 0;
    assert_int_equal(db_session_begin(db, card, "/a", &a, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/b", &b, NULL), 0);

    struct db_problem *list = (struct db_problem *)1;
    size_t n = 99;
    assert_int_equal(db_session_problems(db, a, &list, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_null(list);

    /* more than the ceiling: the first ones are kept, in order; the rest only count elsewhere */
    char rel[64];
    for (int i = 0; i < DB_PROBLEMS_MAX + 20; i++) {
        snprintf(rel, sizeof(rel), "DCIM/%03d", i);
        assert_int_equal(db_session_problem_add(db, a, rel, "cannot examine it: EIO", NULL), 0);
    }
    assert_int_equal(db_session_problem_add(db, b, "x", "cannot list the folder: y", NULL), 0);
    /* a long path is kept whole */
    char longpath[4000];
    memset(longpath, 'L', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(db_session_problem_add(db, b, longpath, "path too long", NULL), 0);

    assert_int_equal(db_session_problems(db, a, &list, &n, NULL), 0);
    assert_int_equal(n, DB_PROBLEMS_MAX);
    assert_string_equal(list[0].path, "DCIM/000");
    assert_string_equal(list[DB_PROBLEMS_MAX - 1].path, "DCIM/099");
    assert_string_equal(list[0].error, "cannot examine it: EIO");
    free(list);
    assert_int_equal(db_session_problems(db, b, &list, &n, NULL), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].path, "x");
    assert_string_equal(list[1].path, longpath);
    free(list);

    assert_int_equal(db_session_problem_add(db, 4242, "x", "y", &err), -EINVAL);
    assert_int_equal(db_session_problem_add(db, a, NULL, "y", &err), -EINVAL);
    assert_int_equal(db_session_problems(db, a, NULL, &n, &err), -EINVAL);

    /* the count travels with the totals; an empty session reads back as such */
    struct db_totals t = {.scan_problems = DB_PROBLEMS_MAX + 20};
    assert_int_equal(db_session_end(db, a, DB_SESSION_PARTIAL, &t, "x", NULL), 0);
    struct db_totals none = {0};
    assert_int_equal(db_session_end(db, b, DB_SESSION_EMPTY, &none, NULL, NULL), 0);
    struct db_session s;
    assert_int_equal(db_session_get(db, a, &s, NULL), 0);
    assert_int_equal(s.totals.scan_problems, DB_PROBLEMS_MAX + 20);
    assert_int_equal(db_session_get(db, b, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_EMPTY);
    db_close(db);

    /* read-only connections list them too */
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), 0);
    assert_int_equal(db_session_problems(db, a, &list, &n, NULL), 0);
    assert_int_equal(n, DB_PROBLEMS_MAX);
    free(list);
    db_close(db);
}

static void test_sessions_list(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db_session *list = NULL;
    size_t n = 99;
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);

    assert_int_equal(db_sessions_list(db, 10, &list, &n, NULL), 0);
    assert_null(list);
    assert_int_equal(n, 0);

    int64_t card = add_card(db, "LIST");
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(db_session_begin(db, card, "/m", &ids[i], NULL), 0);

    /* Same second: newest id first. */
    assert_int_equal(db_sessions_list(db, 3, &list, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].id, ids[4]);
    assert_int_equal(list[1].id, ids[3]);
    assert_int_equal(list[2].id, ids[2]);
    assert_string_equal(list[0].card_uuid, "LIST");
    free(list);

    /* started_at decides before id. */
    raw_exec(path, "UPDATE sessions SET started_at = started_at + 100 WHERE id = 1");
    assert_int_equal(db_sessions_list(db, 10000, &list, &n, NULL), 0);
    assert_int_equal(n, 5);
    assert_int_equal(list[0].id, ids[0]);
    assert_int_equal(list[1].id, ids[4]);
    assert_int_equal(list[4].id, ids[1]);
    free(list);

    list = NULL;
    assert_int_equal(db_sessions_list(db, 0, &list, &n, &err), -EINVAL);
    assert_int_equal(db_sessions_list(db, 10001, &list, &n, &err), -EINVAL);
    assert_int_equal(db_sessions_list(db, -1, &list, &n, &err), -EINVAL);
    assert_null(list);
    db_close(db);
}

static void test_interrupt_stale(void **state)
{
    (void)state;
    char path[PATH_MAX], sql[256];

    /* A child that has exited and been reaped: its pid is free. Forked before any connection
     * exists, so the child inherits nothing to leak. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);

    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "STALE");

    int64_t own, mine, alive, dead, zero, done;
    assert_int_equal(db_session_begin(db, card, "/m", &own, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &mine, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &alive, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &dead, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &zero, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &done, NULL), 0);
    struct db_totals t = {0};
    assert_int_equal(db_session_update(db, dead, DB_SESSION_BACKING_UP, &t, NULL), 0);
    assert_int_equal(db_session_end(db, done, DB_SESSION_COMPLETED, &t, NULL, NULL), 0);

    snprintf(sql, sizeof(sql),
             "UPDATE sessions SET pid = %d WHERE id = %lld;"
             "UPDATE sessions SET pid = %d WHERE id = %lld;"
             "UPDATE sessions SET pid = 0 WHERE id = %lld;"
             /* a leftover of a dead process that had our pid: a new id, never begun by us */
             "UPDATE sessions SET id = %lld WHERE id = %lld",
             (int)getppid(), (long long)alive, (int)child, (long long)dead, (long long)zero,
             (long long)(done + 100), (long long)own);
    raw_exec(path, sql);
    own = done + 100;

    int64_t count = -1;
    assert_int_equal(db_sessions_interrupt_stale(db, &count, NULL), 0);
    assert_int_equal(count, 3);

    struct db_session s;
    int64_t stale[] = {own, dead, zero};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(db_session_get(db, stale[i], &s, NULL), 0);
        assert_int_equal(s.status, DB_SESSION_INTERRUPTED);
        assert_true(s.ended_at > 0);
        assert_true(s.error[0] != '\0');
    }
    /* ours and running (the service runs several sessions at once), or another live process */
    int64_t running[] = {alive, mine};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(db_session_get(db, running[i], &s, NULL), 0);
        assert_int_equal(s.status, DB_SESSION_SCANNING);
        assert_int_equal(s.ended_at, 0);
    }
    assert_int_equal(db_session_get(db, done, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_COMPLETED);

    assert_int_equal(db_sessions_interrupt_stale(db, NULL, NULL), 0); /* NULL count is fine */
    assert_int_equal(db_sessions_interrupt_stale(db, &count, NULL), 0);
    assert_int_equal(count, 0);
    assert_false(s.safe_to_remove);
    assert_int_equal(db_session_set_safe_to_remove(db, done, true, NULL), 0);
    assert_int_equal(db_session_get(db, done, &s, NULL), 0);
    assert_true(s.safe_to_remove);
    assert_int_equal(db_session_set_safe_to_remove(db, done + 1000, true, NULL), -ENOENT);
    assert_int_equal(db_session_end(db, mine, DB_SESSION_COMPLETED, &t, NULL, NULL), 0);
    db_close(db);
}

/* A process that started after a session began cannot be the one that ran it, whatever pid it
 * has: the session of a process that died, whose pid a newer process took, is interrupted. */
static void test_interrupt_reused_pid(void **state)
{
    (void)state;
    char path[PATH_MAX], sql[256];
    int hold[2];

    /* a live child that waits until the test closes the pipe; forked before any connection */
    assert_int_equal(pipe(hold), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c;
        close(hold[1]);
        while (read(hold[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(hold[0]);

    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "REUSED");
    int64_t reused, young;
    assert_int_equal(db_session_begin(db, card, "/m", &reused, NULL), 0);
    assert_int_equal(db_session_begin(db, card, "/m", &young, NULL), 0);
    /* both rows name the live child; one began an hour before it started */
    snprintf(sql, sizeof(sql),
             "UPDATE sessions SET pid = %d; UPDATE sessions SET started_at = started_at - 3600 "
             "WHERE id = %lld",
             (int)child, (long long)reused);
    raw_exec(path, sql);

    struct db_session s;
    assert_int_equal(db_session_get(db, reused, &s, NULL), 0);
    assert_false(db_session_alive(&s));
    assert_int_equal(db_session_get(db, young, &s, NULL), 0);
    assert_true(db_session_alive(&s)); /* began after the child started: may be its own */

    int64_t count = -1;
    assert_int_equal(db_sessions_interrupt_stale(db, &count, NULL), 0);
    assert_int_equal(count, 1);
    assert_int_equal(db_session_get(db, reused, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_INTERRUPTED);
    assert_false(db_session_alive(&s)); /* ended: not running, whatever the process */
    assert_int_equal(db_session_get(db, young, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_SCANNING);

    close(hold[1]);
    assert_int_equal(waitpid(child, NULL, 0), child);
    assert_false(db_session_alive(&s)); /* and once the process is gone, it is not alive */
    db_close(db);
}

/* Rows left in flight by a session whose process died are put back, so the next run does them
 * again; rows of a card that a live session is backing up are left alone. */
static void test_repair_stale(void **state)
{
    (void)state;
    char path[PATH_MAX], sql[512];

    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t dead_card = add_card(db, "DEAD"), live_card = add_card(db, "LIVE");
    int64_t dead, live;
    assert_int_equal(db_session_begin(db, dead_card, "/dead", &dead, NULL), 0);
    assert_int_equal(db_session_begin(db, live_card, "/live", &live, NULL), 0);

    static const enum db_file_state stuck[] = {DB_FILE_SCANNING, DB_FILE_BACKING_UP,
                                               DB_FILE_VERIFYING};
    int64_t dead_files[3], live_files[3];
    char rel[32];
    for (size_t i = 0; i < 3; i++) {
        snprintf(rel, sizeof(rel), "IMG_%zu.JPG", i);
        dead_files[i] = add_file(db, dead_card, rel, 100);
        live_files[i] = add_file(db, live_card, rel, 100);
        assert_int_equal(db_file_set_state(db, dead_files[i], stuck[i], NULL, NULL), 0);
        assert_int_equal(db_file_set_state(db, live_files[i], stuck[i], NULL, NULL), 0);
    }
    int64_t done_file = add_file(db, dead_card, "DONE.JPG", 100);
    int64_t failed_file = add_file(db, dead_card, "FAILED.JPG", 100);
    assert_int_equal(db_file_set_state(db, done_file, DB_FILE_COMPLETED, NULL, NULL), 0);
    assert_int_equal(db_file_set_state(db, failed_file, DB_FILE_FAILED, "bad", NULL), 0);
    int64_t ids[] = {dead_files[0], live_files[0]};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(db_copy_set(db, ids[i], "nas", DB_COPY_COPYING, NULL, NULL, NULL), 0);
        assert_int_equal(db_copy_set(db, ids[i], "usb", DB_COPY_VERIFYING, "r", NULL, NULL), 0);
        assert_int_equal(db_copy_set(db, ids[i], "ssd", DB_COPY_COMPLETED, "r", NULL, NULL), 0);
    }
    assert_int_equal(db_copy_set(db, done_file, "nas", DB_COPY_FAILED, NULL, "x", NULL), 0);

    /* the dead card's session ran in a process that has gone: a leftover with our pid */
    snprintf(sql, sizeof(sql), "UPDATE sessions SET id = %lld WHERE id = %lld",
             (long long)(live + 100), (long long)dead);
    raw_exec(path, sql);

    struct db_repair rep = {-1, -1, -1};
    assert_int_equal(db_repair_stale(db, &rep, NULL), 0);
    assert_int_equal(rep.sessions, 1);
    assert_int_equal(rep.files, 3);
    assert_int_equal(rep.copies, 2);

    struct db_file f;
    struct db_copy c;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(db_file_get(db, dead_files[i], &f, NULL), 0);
        assert_int_equal(f.state, DB_FILE_NEW);
        assert_string_equal(f.last_error, "interrupted");
        assert_int_equal(db_file_get(db, live_files[i], &f, NULL), 0);
        assert_int_equal(f.state, stuck[i]);
    }
    assert_int_equal(db_copy_get(db, dead_files[0], "nas", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_PENDING);
    assert_int_equal(db_copy_get(db, dead_files[0], "usb", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_PENDING);
    assert_string_equal(c.remote, "r");
    assert_int_equal(c.verified_at, 0);
    assert_int_equal(db_copy_get(db, dead_files[0], "ssd", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_COMPLETED);
    assert_int_equal(db_copy_get(db, live_files[0], "nas", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_COPYING);
    assert_int_equal(db_copy_get(db, live_files[0], "usb", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_VERIFYING);
    assert_int_equal(db_file_get(db, done_file, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_COMPLETED);
    assert_int_equal(db_copy_get(db, done_file, "nas", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_FAILED);
    assert_int_equal(db_file_get(db, failed_file, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_FAILED);

    /* nothing left to repair; NULL is fine */
    assert_int_equal(db_repair_stale(db, &rep, NULL), 0);
    assert_int_equal(rep.sessions + rep.files + rep.copies, 0);
    assert_int_equal(db_repair_stale(db, NULL, NULL), 0);

    /* once the live session ends, its card's leftovers are repaired too */
    struct db_totals t = {0};
    assert_int_equal(db_session_end(db, live, DB_SESSION_INTERRUPTED, &t, NULL, NULL), 0);
    assert_int_equal(db_repair_stale(db, &rep, NULL), 0);
    assert_int_equal(rep.sessions, 0);
    assert_int_equal(rep.files, 3);
    assert_int_equal(rep.copies, 2);
    db_close(db);
}

static void test_session_files(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "SF");
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/m", &sid, NULL), 0);
    int64_t f = add_file(db, card, "a.jpg", 1);

    assert_int_equal(db_session_file_set(db, sid, f, DB_OUTCOME_FAILED, NULL), 0);
    assert_int_equal(db_session_file_set(db, sid, f, DB_OUTCOME_COPIED, NULL), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM session_files"), 1);
    char outcome[32];
    raw_text(path, "SELECT outcome FROM session_files", outcome, sizeof(outcome));
    assert_string_equal(outcome, "copied");

    assert_int_equal(db_session_file_set(db, sid, f, (enum db_outcome)9, &err), -EINVAL);
    assert_int_equal(db_session_file_set(db, sid, 777, DB_OUTCOME_SKIPPED, &err), -EINVAL);
    assert_int_equal(db_session_file_set(db, 777, f, DB_OUTCOME_SKIPPED, &err), -EINVAL);
    db_close(db);
}

/* ---- one file's outcome in one transaction ---- */

static void expect_counts(struct db *db, int64_t sid, int64_t copied, int64_t skipped, int64_t dup,
                          int64_t failed, int64_t bytes)
{
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.totals.files_copied, copied);
    assert_int_equal(s.totals.files_skipped, skipped);
    assert_int_equal(s.totals.files_duplicate, dup);
    assert_int_equal(s.totals.files_failed, failed);
    assert_int_equal(s.totals.bytes_copied, bytes);
    /* the row agrees with session_files, whatever happened */
    int64_t files = 0, sizes = 0;
    assert_int_equal(db_session_done(db, sid, &files, &sizes, NULL), 0);
    assert_int_equal(files, copied + skipped + dup + failed);
}

static void test_file_record(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err = {0};
    struct db_file f;
    struct db_copy c;

    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "RECORD");
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/m", &sid, NULL), 0);
    struct db_totals t = {.files_total = 3, .bytes_total = 600};
    assert_int_equal(db_session_update(db, sid, DB_SESSION_BACKING_UP, &t, NULL), 0);
    int64_t a = add_file(db, card, "A.JPG", 100), b = add_file(db, card, "B.JPG", 200),
            d = add_file(db, card, "D.JPG", 300);

    /* copied to two destinations */
    struct db_file_record rec = {
        .file_id = a,
        .state = DB_FILE_COMPLETED,
        .copies = {{"nas", DB_COPY_COMPLETED, "2023/A.JPG", NULL},
                   {"usb", DB_COPY_COMPLETED, "2023/A.JPG", NULL}},
        .n_copies = 2,
        .outcome = DB_OUTCOME_COPIED,
    };
    assert_int_equal(db_file_record(db, sid, &rec, &err), 0);
    assert_int_equal(db_file_get(db, a, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_COMPLETED);
    assert_int_equal(db_copy_get(db, a, "usb", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_COMPLETED);
    assert_string_equal(c.remote, "2023/A.JPG");
    assert_true(c.verified_at > 0);
    expect_counts(db, sid, 1, 0, 0, 0, 100);

    /* failed at one destination */
    struct db_file_record fail = {
        .file_id = b,
        .state = DB_FILE_FAILED,
        .last_error = "nas: Connection refused",
        .copies = {{"nas", DB_COPY_FAILED, NULL, "Connection refused"},
                   {"usb", DB_COPY_COMPLETED, "2023/B.JPG", NULL}},
        .n_copies = 2,
        .outcome = DB_OUTCOME_FAILED,
    };
    assert_int_equal(db_file_record(db, sid, &fail, &err), 0);
    assert_int_equal(db_file_get(db, b, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_FAILED);
    assert_string_equal(f.last_error, "nas: Connection refused");
    assert_int_equal(db_copy_get(db, b, "nas", &c, NULL), 0);
    assert_string_equal(c.error, "Connection refused");
    expect_counts(db, sid, 1, 0, 0, 1, 100);

    /* retried in the same session and copied: the failure is taken back, not counted twice */
    struct db_file_record again = {
        .file_id = b,
        .state = DB_FILE_COMPLETED,
        .copies = {{"nas", DB_COPY_COMPLETED, "2023/B.JPG", NULL}},
        .n_copies = 1,
        .outcome = DB_OUTCOME_COPIED,
    };
    assert_int_equal(db_file_record(db, sid, &again, &err), 0);
    assert_int_equal(db_file_get(db, b, &f, NULL), 0);
    assert_string_equal(f.last_error, "");
    assert_int_equal(db_copy_get(db, b, "nas", &c, NULL), 0);
    assert_string_equal(c.error, "");
    expect_counts(db, sid, 2, 0, 0, 0, 300);
    assert_int_equal(db_file_record(db, sid, &again, &err), 0); /* the same twice: once */
    expect_counts(db, sid, 2, 0, 0, 0, 300);

    /* a duplicate of a */
    struct db_file_record dup = {
        .file_id = d,
        .state = DB_FILE_COMPLETED,
        .duplicate_of = a,
        .copies = {{"nas", DB_COPY_COMPLETED, "2023/A.JPG", NULL}},
        .n_copies = 1,
        .outcome = DB_OUTCOME_DUPLICATE,
    };
    assert_int_equal(db_file_record(db, sid, &dup, &err), 0);
    assert_int_equal(db_file_get(db, d, &f, NULL), 0);
    assert_int_equal(f.duplicate_of, a);
    assert_int_equal(f.state, DB_FILE_COMPLETED);
    expect_counts(db, sid, 2, 0, 1, 0, 300);

    /* interrupted: no session outcome */
    int64_t e = add_file(db, card, "E.JPG", 50);
    struct db_file_record stop = {
        .file_id = e,
        .state = DB_FILE_NEW,
        .last_error = "interrupted",
        .copies = {{"nas", DB_COPY_PENDING, NULL, NULL}},
        .n_copies = 1,
    };
    assert_int_equal(db_file_record(db, 0, &stop, &err), 0);
    assert_int_equal(db_file_get(db, e, &f, NULL), 0);
    assert_string_equal(f.last_error, "interrupted");
    expect_counts(db, sid, 2, 0, 1, 0, 300);

    /* NULL totals keep the row's counts; set_found sets only what the scan found */
    assert_int_equal(db_session_update(db, sid, DB_SESSION_BACKING_UP, NULL, NULL), 0);
    assert_int_equal(db_session_set_found(db, sid, 4, 650, NULL), 0);
    assert_int_equal(db_session_end(db, sid, DB_SESSION_COMPLETED, NULL, NULL, NULL), 0);
    expect_counts(db, sid, 2, 0, 1, 0, 300);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_int_equal(s.status, DB_SESSION_COMPLETED);
    assert_int_equal(s.totals.files_total, 4);
    assert_int_equal(s.totals.bytes_total, 650);
    assert_true(s.ended_at > 0);
    assert_int_equal(db_session_set_found(db, sid + 99, 1, 1, &err), -ENOENT);

    /* a failing part rolls back the parts done before it */
    int64_t g = add_file(db, card, "G.JPG", 10);
    struct db_file_record bad = {
        .file_id = g,
        .state = DB_FILE_COMPLETED,
        .copies = {{"nas", DB_COPY_COMPLETED, "G", NULL}},
        .n_copies = 1,
        .outcome = DB_OUTCOME_COPIED,
    };
    assert_int_equal(db_file_record(db, sid + 99, &bad, &err), -ENOENT); /* no such session */
    assert_int_equal(err.code, -ENOENT);
    assert_int_equal(db_file_get(db, g, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_NEW);
    assert_int_equal(db_copy_get(db, g, "nas", &c, NULL), -ENOENT);
    bad.file_id = g + 1000; /* no such file */
    assert_int_equal(db_file_record(db, sid, &bad, &err), -ENOENT);
    expect_counts(db, sid, 2, 0, 1, 0, 300);

    /* bad records change nothing */
    bad.file_id = g;
    bad.copies[0].dest = "";
    assert_int_equal(db_file_record(db, sid, &bad, &err), -EINVAL);
    bad.copies[0].dest = "nas";
    bad.n_copies = DB_RECORD_COPIES_MAX + 1;
    assert_int_equal(db_file_record(db, sid, &bad, &err), -EINVAL);
    bad.n_copies = 1;
    bad.outcome = (enum db_outcome)9;
    assert_int_equal(db_file_record(db, sid, &bad, &err), -EINVAL);
    bad.outcome = DB_OUTCOME_COPIED;
    bad.duplicate_of = g;
    assert_int_equal(db_file_record(db, sid, &bad, &err), -EINVAL);
    bad.duplicate_of = a;
    bad.state = DB_FILE_FAILED;
    assert_int_equal(db_file_record(db, sid, &bad, &err), -EINVAL);
    assert_int_equal(db_file_record(db, sid, NULL, &err), -EINVAL);
    assert_int_equal(db_file_get(db, g, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_NEW);
    expect_counts(db, sid, 2, 0, 1, 0, 300);
    db_close(db);
}

/* Fills the filesystem holding dir: a file grown until write() says ENOSPC. */
static void fill_disk(const char *file)
{
    static char block[65536];
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t chunk = sizeof(block);
    while (chunk > 0) {
        ssize_t n = write(fd, block, chunk);
        if (n < 0) {
            assert_int_equal(errno, ENOSPC);
            chunk /= 2;
        }
    }
    close(fd);
}

/* The disk holding the database fills while a file's outcome is recorded: nothing of it is
 * recorded, the caller gets -ENOSPC, and the same record goes through once there is room. */
static void test_file_record_disk_full(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32], filler[PATH_MAX + 32], remote[4000];
    struct error err = {0};

    new_tmpfs(dir, sizeof(dir), 1024);
    snprintf(path, sizeof(path), "%s/snapsync.db", dir);
    snprintf(filler, sizeof(filler), "%s/filler", dir);
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "FULL");
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/m", &sid, NULL), 0);
    int64_t fid = add_file(db, card, "DCIM/BIG.MP4", 1 << 30);
    assert_int_equal(db_file_set_state(db, fid, DB_FILE_VERIFYING, NULL, NULL), 0);

    /* 16 copies with long remote paths: many pages to write */
    static char dests[DB_RECORD_COPIES_MAX][16];
    struct db_file_record rec = {
        .file_id = fid,
        .state = DB_FILE_COMPLETED,
        .n_copies = DB_RECORD_COPIES_MAX,
        .outcome = DB_OUTCOME_COPIED,
    };
    memset(remote, 'r', sizeof(remote) - 1);
    remote[sizeof(remote) - 1] = '\0';
    for (size_t i = 0; i < DB_RECORD_COPIES_MAX; i++) {
        snprintf(dests[i], sizeof(dests[i]), "dest-%zu", i);
        assert_int_equal(db_copy_set(db, fid, dests[i], DB_COPY_COPYING, NULL, NULL, NULL), 0);
        rec.copies[i] = (struct db_record_copy){dests[i], DB_COPY_COMPLETED, remote, NULL};
    }

    fill_disk(filler);
    assert_int_equal(db_file_record(db, sid, &rec, &err), -ENOSPC);
    assert_int_equal(err.code, -ENOSPC);
    assert_true(contains(err.msg, path));

    /* wholly rolled back: as it was before */
    struct db_file f;
    struct db_copy c;
    assert_int_equal(db_file_get(db, fid, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_VERIFYING);
    for (size_t i = 0; i < DB_RECORD_COPIES_MAX; i++) {
        assert_int_equal(db_copy_get(db, fid, dests[i], &c, NULL), 0);
        assert_int_equal(c.state, DB_COPY_COPYING);
        assert_string_equal(c.remote, "");
    }
    expect_counts(db, sid, 0, 0, 0, 0, 0);

    /* room again: the same record goes through */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(db_file_record(db, sid, &rec, &err), 0);
    assert_int_equal(db_file_get(db, fid, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_COMPLETED);
    assert_int_equal(db_copy_get(db, fid, dests[15], &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_COMPLETED);
    expect_counts(db, sid, 1, 0, 0, 0, 1 << 30);
    db_close(db);

    /* and after a reopen, the file agrees */
    db = open_rw(path);
    expect_counts(db, sid, 1, 0, 0, 0, 1 << 30);
    db_close(db);
}

/* ---- files ---- */

static void test_files(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "FILES");

    struct db_file_key key = {card, "DCIM/100CANON/IMG_0001.CR2", 25000000, 1700000000123456789};
    struct db_file f;
    int64_t id = 0, id2 = 0;
    assert_int_equal(db_file_get_or_create(db, &key, &id, &f, NULL), 0);
    assert_true(id > 0);
    assert_int_equal(f.id, id);
    assert_int_equal(f.card_id, card);
    assert_string_equal(f.rel_path, key.rel_path);
    assert_int_equal(f.size, key.size);
    assert_int_equal(f.mtime_ns, key.mtime_ns);
    assert_string_equal(f.md5, "");
    assert_string_equal(f.sha1, "");
    assert_int_equal(f.state, DB_FILE_NEW);
    assert_int_equal(f.attempts, 0);
    assert_int_equal(f.duplicate_of, 0);
    assert_int_equal(db_file_get_or_create(db, &key, &id2, NULL, NULL), 0);
    assert_int_equal(id2, id);

    /* Any part of the key differing makes another file. */
    struct db_file_key k2 = key;
    k2.mtime_ns++;
    assert_int_equal(db_file_get_or_create(db, &k2, &id2, NULL, NULL), 0);
    assert_true(id2 != id);

    assert_int_equal(db_file_set_state(db, id, DB_FILE_SCANNING, NULL, NULL), 0);
    assert_int_equal(db_file_set_state(db, id, DB_FILE_BACKING_UP, NULL, NULL), 0);
    assert_int_equal(db_file_set_state(db, id, DB_FILE_SCANNING, NULL, NULL), 0);
    assert_int_equal(db_file_set_state(db, id, DB_FILE_FAILED, "read error", NULL), 0);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_int_equal(f.attempts, 2);
    assert_int_equal(f.state, DB_FILE_FAILED);
    assert_string_equal(f.last_error, "read error");
    assert_int_equal(db_file_set_state(db, id, DB_FILE_VERIFYING, NULL, NULL), 0);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_VERIFYING);
    assert_string_equal(f.last_error, "");

    assert_int_equal(db_file_set_meta(db, id, "0123456789ABCDEF0123456789ABCDEF", SHA1_A, NULL,
                                      1699999999, "raw", NULL),
                     0);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_string_equal(f.md5, MD5_A);
    assert_string_equal(f.sha1, SHA1_A);
    assert_string_equal(f.xxh128, ""); /* not recorded */
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, "99AA06D3014798D86001C324468D497F",
                                      1699999999, "raw", NULL),
                     0);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_string_equal(f.xxh128, "99aa06d3014798d86001c324468d497f");
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, MD5_A "0", 0, "raw", &err), -EINVAL);
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, SHA1_A, 0, "raw", &err), -EINVAL);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_string_equal(f.xxh128, "99aa06d3014798d86001c324468d497f"); /* refused: unchanged */
    assert_int_equal(f.capture_time, 1699999999);
    assert_string_equal(f.kind, "raw");

    assert_int_equal(db_file_set_meta(db, id, "0123", SHA1_A, NULL, 0, "raw", &err), -EINVAL);
    assert_int_equal(db_file_set_meta(db, id, MD5_A, MD5_A, NULL, 0, "raw", &err), -EINVAL);
    assert_int_equal(db_file_set_meta(db, id, MD5_A "0", SHA1_A, NULL, 0, "raw", &err), -EINVAL);
    assert_int_equal(
        db_file_set_meta(db, id, "0123456789abcdef0123456789abcdeg", SHA1_A, NULL, 0, "raw", &err),
        -EINVAL);
    assert_int_equal(db_file_set_meta(db, id, NULL, SHA1_A, NULL, 0, "raw", &err), -EINVAL);
    assert_int_equal(db_file_set_meta(db, id, MD5_A, SHA1_A, NULL, 0, "a-kind-far-too-long", &err),
                     -EINVAL);
    assert_int_equal(db_file_set_meta(db, 9999, MD5_A, SHA1_A, NULL, 0, NULL, &err), -ENOENT);
    assert_int_equal(db_file_set_meta(db, id2, MD5_A, SHA1_A, NULL, 0, NULL, NULL), 0);
    assert_int_equal(db_file_get_or_create(db, &k2, NULL, &f, NULL), 0);
    assert_string_equal(f.kind, "unknown");

    assert_int_equal(db_file_set_duplicate(db, id2, id, NULL), 0);
    assert_int_equal(db_file_get_or_create(db, &k2, NULL, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_COMPLETED);
    assert_int_equal(f.duplicate_of, id);
    assert_int_equal(db_file_set_duplicate(db, id, id, &err), -EINVAL);
    assert_int_equal(db_file_set_duplicate(db, id, 0, &err), -EINVAL);
    assert_int_equal(db_file_set_duplicate(db, id, 9999, &err), -EINVAL); /* foreign key */
    assert_int_equal(db_file_set_duplicate(db, 9999, id, &err), -ENOENT);

    assert_int_equal(db_file_set_state(db, 9999, DB_FILE_NEW, NULL, &err), -ENOENT);
    assert_int_equal(db_file_set_state(db, id, (enum db_file_state)6, NULL, &err), -EINVAL);

    /* Bad keys. */
    struct db_file_key bad = key;
    bad.rel_path = NULL;
    assert_int_equal(db_file_get_or_create(db, &bad, &id2, NULL, &err), -EINVAL);
    bad.rel_path = "";
    assert_int_equal(db_file_get_or_create(db, &bad, &id2, NULL, &err), -EINVAL);
    bad = key;
    bad.card_id = 0;
    assert_int_equal(db_file_get_or_create(db, &bad, &id2, NULL, &err), -EINVAL);
    bad.card_id = 4242; /* no such card */
    assert_int_equal(db_file_get_or_create(db, &bad, &id2, NULL, &err), -EINVAL);
    assert_int_equal(db_file_get_or_create(db, NULL, &id2, NULL, &err), -EINVAL);

    /* Long paths: stored whole, cut in the struct; beyond the ceiling, refused. */
    static char longpath[5000];
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[2000] = '\0';
    struct db_file_key lk = {card, longpath, 1, 1};
    assert_int_equal(db_file_get_or_create(db, &lk, &id2, &f, NULL), 0);
    assert_int_equal(strlen(f.rel_path), sizeof(f.rel_path) - 1);
    assert_int_equal(raw_int(path, "SELECT max(length(rel_path)) FROM files"), 2000);
    longpath[2000] = 'p';
    assert_int_equal(db_file_get_or_create(db, &lk, &id2, &f, &err), -ENAMETOOLONG);

    /* An error message longer than the struct. */
    static char longerr[3000];
    memset(longerr, 'e', sizeof(longerr) - 1);
    assert_int_equal(db_file_set_state(db, id, DB_FILE_FAILED, longerr, NULL), 0);
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_int_equal(strlen(f.last_error), sizeof(f.last_error) - 1);

    /* A state string from a newer build reads as new (redo the work), never a crash. */
    raw_exec(path, "UPDATE files SET state = 'hashing' WHERE id = 1");
    assert_int_equal(db_file_get_or_create(db, &key, NULL, &f, NULL), 0);
    assert_int_equal(f.state, DB_FILE_NEW);
    db_close(db);
}

static void test_files_failed(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db_file *list = NULL;
    size_t n = 99;
    struct error err;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "FAIL");

    assert_int_equal(db_files_failed(db, 10, &list, &n, NULL), 0);
    assert_null(list);
    assert_int_equal(n, 0);

    int64_t a = add_file(db, card, "a.jpg", 1);
    int64_t b = add_file(db, card, "b.jpg", 2);
    int64_t c = add_file(db, card, "c.jpg", 3);
    add_file(db, card, "d.jpg", 4); /* stays new */
    assert_int_equal(db_file_set_state(db, a, DB_FILE_FAILED, "error a", NULL), 0);
    assert_int_equal(db_file_set_state(db, b, DB_FILE_FAILED, "error b", NULL), 0);
    assert_int_equal(db_file_set_state(db, c, DB_FILE_FAILED, "error c", NULL), 0);
    /* a failed most recently */
    raw_exec(path, "UPDATE files SET updated_at = updated_at + 50 WHERE rel_path = 'a.jpg'");

    assert_int_equal(db_files_failed(db, 10, &list, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].id, a);
    assert_string_equal(list[0].last_error, "error a");
    assert_int_equal(list[0].state, DB_FILE_FAILED);
    assert_int_equal(list[1].id, c); /* same second: newest id first */
    assert_int_equal(list[2].id, b);
    free(list);

    assert_int_equal(db_files_failed(db, 1, &list, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].id, a);
    free(list);

    assert_int_equal(db_files_failed(db, 0, &list, &n, &err), -EINVAL);
    assert_int_equal(db_files_failed(db, 10001, &list, &n, &err), -EINVAL);
    db_close(db);
}

/* ---- copies, fast path, dedup ---- */

static void test_copies(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    struct db_copy c;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "COPY");
    int64_t f = add_file(db, card, "a.jpg", 1);

    assert_int_equal(db_copy_get(db, f, "nas", &c, &err), -ENOENT);

    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_PENDING, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_get(db, f, "nas", &c, NULL), 0);
    assert_int_equal(c.file_id, f);
    assert_string_equal(c.dest, "nas");
    assert_int_equal(c.state, DB_COPY_PENDING);
    assert_string_equal(c.remote, "");
    assert_int_equal(c.verified_at, 0);
    assert_string_equal(c.error, "");

    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_COPYING, "2024/01/02/a.jpg", NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_FAILED, NULL, "disk full", NULL), 0);
    assert_int_equal(db_copy_get(db, f, "nas", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_FAILED);
    assert_string_equal(c.remote, "2024/01/02/a.jpg"); /* NULL keeps remote */
    assert_string_equal(c.error, "disk full");
    assert_int_equal(c.verified_at, 0);

    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_get(db, f, "nas", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_COMPLETED);
    assert_string_equal(c.remote, "2024/01/02/a.jpg");
    assert_string_equal(c.error, ""); /* NULL clears error */
    assert_true(c.verified_at > 0);

    assert_int_equal(db_copy_set(db, f, "immich", DB_COPY_VERIFYING, "asset-uuid", NULL, NULL), 0);
    assert_int_equal(db_copy_get(db, f, "immich", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_VERIFYING);
    assert_string_equal(c.remote, "asset-uuid");
    assert_int_equal(raw_int(path, "SELECT count(*) FROM copies"), 2);

    /* Unknown state strings read as pending (copy again), never a crash. */
    raw_exec(path, "UPDATE copies SET state = 'uploading' WHERE dest = 'immich'");
    assert_int_equal(db_copy_get(db, f, "immich", &c, NULL), 0);
    assert_int_equal(c.state, DB_COPY_PENDING);

    char longdest[300];
    memset(longdest, 'd', sizeof(longdest) - 1);
    longdest[sizeof(longdest) - 1] = '\0';
    assert_int_equal(db_copy_set(db, f, longdest, DB_COPY_PENDING, NULL, NULL, &err), -EINVAL);
    assert_int_equal(db_copy_set(db, f, NULL, DB_COPY_PENDING, NULL, NULL, &err), -EINVAL);
    assert_int_equal(db_copy_set(db, f, "", DB_COPY_PENDING, NULL, NULL, &err), -EINVAL);
    assert_int_equal(db_copy_set(db, f, "nas", (enum db_copy_state)5, NULL, NULL, &err), -EINVAL);
    assert_int_equal(db_copy_set(db, 9999, "nas", DB_COPY_PENDING, NULL, NULL, &err), -EINVAL);
    assert_int_equal(db_copy_get(db, f, NULL, &c, &err), -EINVAL);
    db_close(db);
}

static void test_file_done(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    bool done = true;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "DONE");
    const char *const dests[] = {"nas", "immich"};
    const char *const twice[] = {"nas", "nas"};
    const char *const nas[] = {"nas"};

    struct db_file_key key = {card, "DCIM/a.jpg", 100, 1700000000000000000LL};
    assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
    assert_false(done); /* unknown file */

    int64_t f = add_file(db, card, "DCIM/a.jpg", 100);
    assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
    assert_false(done); /* no copies */

    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_COMPLETED, "a.jpg", NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, f, "immich", DB_COPY_VERIFYING, NULL, NULL, NULL), 0);
    assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
    assert_false(done); /* one destination not verified yet */
    assert_int_equal(db_file_done(db, &key, nas, 1, &done, NULL), 0);
    assert_true(done);
    assert_int_equal(db_file_done(db, &key, twice, 2, &done, NULL), 0);
    assert_true(done); /* the same name twice counts once */

    assert_int_equal(db_copy_set(db, f, "immich", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
    assert_true(done);

    /* The key must match exactly: a changed size or mtime is another file. */
    struct db_file_key k2 = key;
    k2.size = 101;
    assert_int_equal(db_file_done(db, &k2, dests, 2, &done, NULL), 0);
    assert_false(done);
    k2 = key;
    k2.mtime_ns--;
    assert_int_equal(db_file_done(db, &k2, dests, 2, &done, NULL), 0);
    assert_false(done);

    /* A failed copy is not done. */
    assert_int_equal(db_copy_set(db, f, "nas", DB_COPY_FAILED, NULL, "gone", NULL), 0);
    assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
    assert_false(done);

    const char *many[17];
    char names[17][8];
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "d%d", i);
        many[i] = names[i];
    }
    assert_int_equal(db_file_done(db, &key, many, 16, &done, NULL), 0);
    assert_false(done);
    done = true;
    assert_int_equal(db_file_done(db, &key, many, 17, &done, &err), -EINVAL);
    assert_int_equal(db_file_done(db, &key, dests, 0, &done, &err), -EINVAL);
    assert_true(done); /* untouched on failure */
    const char *const with_null[] = {"nas", NULL};
    assert_int_equal(db_file_done(db, &key, with_null, 2, &done, &err), -EINVAL);
    assert_int_equal(db_file_done(db, NULL, dests, 2, &done, &err), -EINVAL);
    db_close(db);
}

struct bulk {
    int64_t card;
    int n;
};

static int bulk_insert(struct db *db, void *userdata)
{
    const struct bulk *b = userdata;
    char rel[64];
    for (int i = 0; i < b->n; i++) {
        snprintf(rel, sizeof(rel), "DCIM/%03dCANON/IMG_%05d.JPG", 100 + i / 1000, i);
        struct db_file_key key = {b->card, rel, 1000000 + i, 1700000000000000000LL + i};
        int64_t id;
        int r = db_file_get_or_create(db, &key, &id, NULL, NULL);
        if (r == 0)
            r = db_copy_set(db, id, "nas", DB_COPY_COMPLETED, rel, NULL, NULL);
        if (r == 0)
            r = db_copy_set(db, id, "immich", DB_COPY_COMPLETED, "asset", NULL, NULL);
        if (r == 0)
            r = db_file_set_state(db, id, DB_FILE_COMPLETED, NULL, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* A re-run over a card of 10,000 files already backed up: every file takes the fast path. The
 * time is printed, not asserted (sanitizer and valgrind builds are many times slower). */
static void test_fast_path_10000(void **state)
{
    (void)state;
    char path[PATH_MAX], rel[64];
    struct timespec t0, t1, t2;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    struct bulk b = {add_card(db, "BULK"), 10000};
    const char *const dests[] = {"nas", "immich"};

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(db_transaction(db, bulk_insert, &b, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    size_t n_done = 0;
    for (int i = 0; i < b.n; i++) {
        snprintf(rel, sizeof(rel), "DCIM/%03dCANON/IMG_%05d.JPG", 100 + i / 1000, i);
        struct db_file_key key = {b.card, rel, 1000000 + i, 1700000000000000000LL + i};
        bool done = false;
        assert_int_equal(db_file_done(db, &key, dests, 2, &done, NULL), 0);
        n_done += done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t2);
    assert_int_equal(n_done, 10000);
    print_message("10000 files: insert %.1f ms in one transaction, db_file_done x10000 %.1f ms\n",
                  elapsed_ms(&t0, &t1), elapsed_ms(&t1, &t2));

    struct db_stats stats;
    assert_int_equal(db_stats_get(db, &stats, NULL), 0);
    assert_int_equal(stats.files, 10000);
    assert_int_equal(stats.files_completed, 10000);
    db_close(db);
}

static void test_hash_backed_up(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct error err;
    int64_t found = -1;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "HASH");
    const char *const dests[] = {"nas", "immich"};
    const char *const other[] = {"nas", "s3"};
    const char *const twice[] = {"nas", "nas", "immich"};

    int64_t a = add_file(db, card, "a.jpg", 10);
    int64_t b = add_file(db, card, "copy-of-a.jpg", 10);
    int64_t c = add_file(db, card, "c.jpg", 10);
    assert_int_equal(db_file_set_meta(db, a, MD5_A, SHA1_A, NULL, 0, "photo", NULL), 0);
    assert_int_equal(db_file_set_meta(db, b, MD5_A, SHA1_A, NULL, 0, "photo", NULL), 0);
    /* Same MD5, different SHA-1: not the same content. */
    assert_int_equal(db_file_set_meta(db, c, MD5_A, SHA1_B, NULL, 0, "photo", NULL), 0);

    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, dests, 2, &found, NULL), 0);
    assert_int_equal(found, 0); /* a has no copies yet */

    assert_int_equal(db_copy_set(db, a, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, dests, 2, &found, NULL), 0);
    assert_int_equal(found, 0); /* only one of two */
    assert_int_equal(db_copy_set(db, a, "immich", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, c, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, c, "immich", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);

    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, dests, 2, &found, NULL), 0);
    assert_int_equal(found, a);
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, twice, 3, &found, NULL), 0);
    assert_int_equal(found, a);
    /* Upper-case input is the same hash. */
    assert_int_equal(db_hash_backed_up(db, "0123456789ABCDEF0123456789ABCDEF", SHA1_A, NULL, b,
                                       dests, 2, &found, NULL),
                     0);
    assert_int_equal(found, a);
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, a, dests, 2, &found, NULL), 0);
    assert_int_equal(found, 0); /* excluding a leaves only b, which has no copies */
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, other, 2, &found, NULL), 0);
    assert_int_equal(found, 0); /* not on s3 */
    assert_int_equal(db_hash_backed_up(db, MD5_B, SHA1_B, NULL, 0, dests, 2, &found, NULL), 0);
    assert_int_equal(found, 0);

    found = -1;
    assert_int_equal(db_hash_backed_up(db, "xyz", SHA1_A, NULL, b, dests, 2, &found, &err),
                     -EINVAL);
    assert_int_equal(db_hash_backed_up(db, MD5_A, NULL, NULL, b, dests, 2, &found, &err), -EINVAL);
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, dests, 0, &found, &err),
                     -EINVAL);
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, b, dests, 17, &found, &err),
                     -EINVAL);
    assert_int_equal(found, -1);
    db_close(db);
}

/* A file hashed without SHA-1 (no destination needed it) is deduplicated by MD5 and XXH3-128;
 * one with another XXH3-128 or only other hashes is not the same content. A file hashed again
 * without SHA-1 keeps the SHA-1 it had when its MD5 is the same, else has none. */
static void test_hash_backed_up_without_sha1(void **state)
{
    (void)state;
    char path[PATH_MAX];
    int64_t found = -1;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "XXH");
    const char *const dests[] = {"nas"};
    static const char XXH_A[] = "99aa06d3014798d86001c324468d497f";
    static const char XXH_B[] = "06b05ab6733a618578af5f94892f3950";
    int64_t a = add_file(db, card, "a.jpg", 10);
    int64_t b = add_file(db, card, "b.jpg", 10);
    int64_t old = add_file(db, card, "old.jpg", 10); /* hashed before schema 9 */
    assert_int_equal(db_file_set_meta(db, a, MD5_A, NULL, XXH_A, 0, "photo", NULL), 0);
    assert_int_equal(db_file_set_meta(db, b, MD5_A, NULL, XXH_B, 0, "photo", NULL), 0);
    assert_int_equal(db_file_set_meta(db, old, MD5_B, SHA1_B, NULL, 0, "photo", NULL), 0);
    assert_int_equal(db_copy_set(db, a, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, b, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, old, "nas", DB_COPY_COMPLETED, NULL, NULL, NULL), 0);

    assert_int_equal(db_hash_backed_up(db, MD5_A, NULL, XXH_A, 0, dests, 1, &found, NULL), 0);
    assert_int_equal(found, a);
    assert_int_equal(db_hash_backed_up(db, MD5_A, NULL, XXH_B, a, dests, 1, &found, NULL), 0);
    assert_int_equal(found, b);
    assert_int_equal(db_hash_backed_up(db, MD5_A, NULL, XXH_B, b, dests, 1, &found, NULL), 0);
    assert_int_equal(found, 0); /* a has the same MD5, another XXH3-128 */
    assert_int_equal(db_hash_backed_up(db, MD5_A, SHA1_A, NULL, 0, dests, 1, &found, NULL), 0);
    assert_int_equal(found, 0); /* a and b have no SHA-1 to match */
    /* an old file has no XXH3-128: found by SHA-1 only, never by a NULL */
    assert_int_equal(db_hash_backed_up(db, MD5_B, NULL, XXH_A, 0, dests, 1, &found, NULL), 0);
    assert_int_equal(found, 0);
    assert_int_equal(db_hash_backed_up(db, MD5_B, SHA1_B, XXH_A, 0, dests, 1, &found, NULL), 0);
    assert_int_equal(found, old);

    struct db_file f;
    assert_int_equal(db_file_set_meta(db, old, MD5_B, NULL, XXH_A, 0, "photo", NULL), 0);
    assert_int_equal(db_file_get(db, old, &f, NULL), 0);
    assert_string_equal(f.sha1, SHA1_B); /* same MD5: kept */
    assert_string_equal(f.xxh128, XXH_A);
    assert_int_equal(db_file_set_meta(db, old, MD5_A, NULL, NULL, 0, "photo", NULL), 0);
    assert_int_equal(db_file_get(db, old, &f, NULL), 0);
    assert_string_equal(f.md5, MD5_A);
    assert_string_equal(f.sha1, ""); /* another content: neither is kept */
    assert_string_equal(f.xxh128, "");
    db_close(db);
}

/* ---- statistics ---- */

static void test_stats(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct db_stats s;
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);

    assert_int_equal(db_stats_get(db, &s, NULL), 0);
    struct db_stats zero = {0};
    assert_memory_equal(&s, &zero, sizeof(s));

    int64_t c1 = add_card(db, "S1");
    add_card(db, "S2");
    int64_t sid;
    assert_int_equal(db_session_begin(db, c1, "/m", &sid, NULL), 0);
    assert_int_equal(db_session_begin(db, c1, "/m", &sid, NULL), 0);
    int64_t a = add_file(db, c1, "a.jpg", 1000);
    int64_t b = add_file(db, c1, "b.jpg", 2000);
    int64_t d = add_file(db, c1, "dup-of-a.jpg", 1000);
    int64_t e = add_file(db, c1, "e.jpg", 4000);
    add_file(db, c1, "new.jpg", 8000);
    assert_int_equal(db_file_set_state(db, a, DB_FILE_COMPLETED, NULL, NULL), 0);
    assert_int_equal(db_file_set_state(db, b, DB_FILE_COMPLETED, NULL, NULL), 0);
    assert_int_equal(db_file_set_duplicate(db, d, a, NULL), 0);
    assert_int_equal(db_file_set_state(db, e, DB_FILE_FAILED, "x", NULL), 0);

    assert_int_equal(db_stats_get(db, &s, NULL), 0);
    assert_int_equal(s.sessions, 2);
    assert_int_equal(s.cards, 2);
    assert_int_equal(s.files, 5);
    assert_int_equal(s.files_completed, 3); /* duplicates are completed too */
    assert_int_equal(s.files_failed, 1);
    assert_int_equal(s.files_duplicate, 1);
    assert_int_equal(s.bytes_completed, 3000); /* a + b; the duplicate is not counted */
    db_close(db);
}

/* ---- two connections at once ---- */

#define WRITER_ROUNDS 200

struct conc {
    char path[PATH_MAX];
    atomic_int writers_left;
    atomic_int errors;
    atomic_long reads;
    char first_error[ERROR_MSG_MAX];
    pthread_mutex_t lock;
    pthread_cond_t progressed; /* a writer finished a round (or exited) */
    long rounds;               /* under lock */
};

static void conc_fail(struct conc *c, const struct error *err)
{
    pthread_mutex_lock(&c->lock);
    if (atomic_fetch_add(&c->errors, 1) == 0)
        snprintf(c->first_error, sizeof(c->first_error), "%d %s", err->code, err->msg);
    pthread_mutex_unlock(&c->lock);
}

static void *writer_main(void *arg)
{
    struct conc *c = arg;
    struct db *db = NULL;
    struct error err;
    char uuid[32], rel[64];
    static atomic_int seq;
    int me = atomic_fetch_add(&seq, 1);

    if (db_open(c->path, DB_READ_WRITE, &db, &err) < 0) {
        conc_fail(c, &err);
        goto out;
    }
    snprintf(uuid, sizeof(uuid), "WRITER-%d", me);
    int64_t card;
    if (db_card_upsert(db, uuid, "w", &card, &err) < 0) {
        conc_fail(c, &err);
        goto out;
    }
    for (int i = 0; i < WRITER_ROUNDS; i++) {
        int64_t sid, fid;
        struct db_totals t = {i, i, i, 0, 0, 0, i, 0};
        snprintf(rel, sizeof(rel), "IMG_%04d.JPG", i);
        struct db_file_key key = {card, rel, i, i};
        if (db_session_begin(db, card, "/media/w", &sid, &err) < 0 ||
            db_session_update(db, sid, DB_SESSION_BACKING_UP, &t, &err) < 0 ||
            db_file_get_or_create(db, &key, &fid, NULL, &err) < 0 ||
            db_copy_set(db, fid, "nas", DB_COPY_COMPLETED, rel, NULL, &err) < 0 ||
            db_session_file_set(db, sid, fid, DB_OUTCOME_COPIED, &err) < 0 ||
            db_session_end(db, sid, DB_SESSION_COMPLETED, &t, NULL, &err) < 0) {
            conc_fail(c, &err);
            break;
        }
        pthread_mutex_lock(&c->lock);
        c->rounds++;
        pthread_cond_broadcast(&c->progressed);
        pthread_mutex_unlock(&c->lock);
    }
out:
    db_close(db);
    pthread_mutex_lock(&c->lock);
    atomic_fetch_sub(&c->writers_left, 1);
    pthread_cond_broadcast(&c->progressed);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void *reader_main(void *arg)
{
    struct conc *c = arg;
    struct db *db = NULL;
    struct error err;

    if (db_open(c->path, DB_READ_ONLY, &db, &err) < 0) {
        conc_fail(c, &err);
        return NULL;
    }
    /* Reads until the writers are done; at least one round even if they finish first. */
    do {
        struct db_session *list = NULL;
        size_t n = 0;
        struct db_stats stats;
        if (db_sessions_list(db, 50, &list, &n, &err) < 0 || db_stats_get(db, &stats, &err) < 0) {
            conc_fail(c, &err);
            break;
        }
        if (n > 0) {
            struct db_session s;
            if (db_session_get(db, list[0].id, &s, &err) < 0)
                conc_fail(c, &err);
        }
        free(list);
        atomic_fetch_add(&c->reads, 1);
        /* one read per round of the writers: reading flat out starves them under valgrind,
         * which runs one thread at a time */
        pthread_mutex_lock(&c->lock);
        long seen = c->rounds;
        while (c->rounds == seen && atomic_load(&c->writers_left) > 0)
            pthread_cond_wait(&c->progressed, &c->lock);
        pthread_mutex_unlock(&c->lock);
    } while (atomic_load(&c->writers_left) > 0);
    db_close(db);
    return NULL;
}

static void test_concurrent_connections(void **state)
{
    (void)state;
    static struct conc c;
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.progressed, NULL);
    new_path(c.path, sizeof(c.path), "snapsync.db");
    db_close(open_rw(c.path)); /* created and migrated before the threads start */

    pthread_t w1, w2, r;
    atomic_store(&c.writers_left, 2);
    assert_int_equal(pthread_create(&r, NULL, reader_main, &c), 0);
    assert_int_equal(pthread_create(&w1, NULL, writer_main, &c), 0);
    assert_int_equal(pthread_create(&w2, NULL, writer_main, &c), 0);
    pthread_join(w1, NULL);
    pthread_join(w2, NULL);
    pthread_join(r, NULL);
    pthread_cond_destroy(&c.progressed);
    pthread_mutex_destroy(&c.lock);

    if (atomic_load(&c.errors) > 0)
        print_error("first error: %s\n", c.first_error);
    assert_int_equal(atomic_load(&c.errors), 0);
    assert_true(atomic_load(&c.reads) > 0);
    assert_int_equal(raw_int(c.path, "SELECT count(*) FROM sessions WHERE status = 'completed'"),
                     2 * WRITER_ROUNDS);
}

/* ---- a database on a read-only filesystem ---- */

static void test_read_only_filesystem(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32], walled[PATH_MAX + 32], live[PATH_MAX + 32],
        fresh[PATH_MAX + 32], side[PATH_MAX + 40];
    struct db *db = NULL;
    struct error err = {0};

    new_tmpfs(dir, sizeof(dir), 4096);
    snprintf(path, sizeof(path), "%s/snapsync.db", dir);
    snprintf(walled, sizeof(walled), "%s/walled.db", dir);
    snprintf(live, sizeof(live), "%s/live.db", dir);
    snprintf(fresh, sizeof(fresh), "%s/new/snapsync.db", dir);

    /* closed cleanly: no -wal, no -shm */
    db = open_rw(path);
    int64_t card = add_card(db, "RO-CARD");
    int64_t sid = 0;
    assert_int_equal(db_session_begin(db, card, "/media/ro", &sid, NULL), 0);
    db_close(db);
    /* left by a writer that stopped (or copied off a running system): a write-ahead log that
     * holds data, with its -shm (live) or without (walled) */
    const char *const logged[] = {walled, live};
    for (size_t i = 0; i < 2; i++) {
        db_close(open_rw(logged[i]));
        sqlite3 *c = NULL;
        assert_int_equal(sqlite3_open(logged[i], &c), SQLITE_OK);
        assert_int_equal(sqlite3_db_config(c, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_exec(c,
                                      "INSERT INTO cards (uuid, first_seen, last_seen) "
                                      "VALUES ('IN-WAL', 1, 1)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(c);
        snprintf(side, sizeof(side), "%s-wal", logged[i]);
        assert_true(exists(side));
        snprintf(side, sizeof(side), "%s-shm", logged[i]);
        assert_true(exists(side));
    }
    snprintf(side, sizeof(side), "%s-shm", walled);
    assert_int_equal(unlink(side), 0);
    remount_ro(dir);

    /* reading works */
    assert_int_equal(db_open(path, DB_READ_ONLY, &db, &err), 0);
    struct db_session s;
    assert_int_equal(db_session_get(db, sid, &s, NULL), 0);
    assert_string_equal(s.card_uuid, "RO-CARD");
    assert_int_equal(db_card_upsert(db, "other", "x", NULL, &err), -EROFS);
    db_close(db);
    snprintf(side, sizeof(side), "%s-shm", path);
    assert_false(exists(side));

    assert_int_equal(db_open(live, DB_READ_ONLY, &db, &err), 0);
    int64_t id = 0;
    assert_int_equal(db_card_find(db, "IN-WAL", &id, NULL), 0); /* read from the log */
    db_close(db);

    /* honest errors naming the file, never "does not exist" */
    db = NULL;
    assert_int_equal(db_open(walled, DB_READ_ONLY, &db, &err), -EROFS);
    assert_null(db);
    assert_true(contains(err.msg, walled));
    assert_true(contains(err.msg, "read-only"));
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), -EROFS);
    assert_true(contains(err.msg, path));
    assert_int_equal(db_open(fresh, DB_READ_WRITE, &db, &err), -EROFS);
    assert_true(contains(err.msg, dir));
    assert_int_equal(db_open(fresh, DB_READ_ONLY, &db, &err), -ENOENT); /* truly missing */
    assert_null(db);
}

/* ---- several processes creating the same new database ---- */

#define CREATORS 6
#define CREATOR_ROUNDS 50

/* Child: waits for the parent to open the gate (the write end of the pipe closes), then opens
 * path read-write; exits 0 or 1 and reports a failure on the error pipe. */
static void creator_main(const char *path, int gate, int report)
{
    char c;
    while (read(gate, &c, 1) < 0 && errno == EINTR)
        ;
    struct db *db = NULL;
    struct error err = {0};
    int r = db_open(path, DB_READ_WRITE, &db, &err);
    if (r == 0) {
        /* and a write, as the engine does right after opening */
        r = db_card_upsert(db, "CONCURRENT", "c", NULL, &err);
    }
    db_close(db);
    if (r < 0) {
        char msg[ERROR_MSG_MAX + 32];
        int n = snprintf(msg, sizeof(msg), "%d %s\n", r, err.msg);
        if (write(report, msg, (size_t)n) < 0)
            _exit(2);
    }
    _exit(r < 0 ? 1 : 0);
}

static void test_concurrent_creation(void **state)
{
    (void)state;
    char path[PATH_MAX];
    int failures = 0;

    for (int round = 0; round < CREATOR_ROUNDS; round++) {
        int gate[2], report[2];
        pid_t pids[CREATORS];
        new_path(path, sizeof(path), "snapsync.db");
        assert_int_equal(pipe(gate), 0);
        assert_int_equal(pipe(report), 0);
        for (int i = 0; i < CREATORS; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                close(gate[1]);
                close(report[0]);
                creator_main(path, gate[0], report[1]);
            }
        }
        close(gate[0]);
        close(report[1]);
        close(gate[1]); /* every child's read returns 0 at once */
        for (int i = 0; i < CREATORS; i++) {
            int status = 0;
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                failures++;
        }
        char msg[4096];
        ssize_t n = read(report[0], msg, sizeof(msg) - 1);
        if (n > 0) {
            msg[n] = '\0';
            print_error("round %d: %s", round, msg);
        }
        close(report[0]);
        if (failures == 0) {
            assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);
            assert_int_equal(raw_int(path, "SELECT count(*) FROM cards"), 1);
            char mode[16];
            raw_text(path, "PRAGMA journal_mode", mode, sizeof(mode));
            assert_string_equal(mode, "wal");
        }
    }
    assert_int_equal(failures, 0);
}

struct unsealed_seen {
    size_t n;
    int64_t ids[8];
    bool listed_before[8];
    char remote[8][64];
};

static int note_unsealed(const struct db_unsealed *u, void *arg)
{
    struct unsealed_seen *seen = arg;
    assert_true(seen->n < 8);
    assert_string_equal(u->md5, "0123456789abcdef0123456789abcdef");
    assert_int_equal(u->size, 10);
    seen->ids[seen->n] = u->file_id;
    seen->listed_before[seen->n] = u->listed_before;
    snprintf(seen->remote[seen->n], sizeof(seen->remote[0]), "%s", u->remote);
    seen->n++;
    return 0;
}

/* The copies an ASC MHL generation lists: completed, hashed, not yet listed, per destination;
 * a copy at a remote an earlier one was listed under is marked, and a v3 database gets the
 * column with every copy unlisted. */
static void test_copies_unsealed_and_sealed(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "mhl");
    int64_t f[4];
    for (int i = 0; i < 4; i++) {
        char rel[32];
        snprintf(rel, sizeof(rel), "DCIM/IMG_%d.JPG", i);
        f[i] = add_file(db, card, rel, 10);
        assert_int_equal(db_file_set_meta(db, f[i], "0123456789abcdef0123456789abcdef",
                                          "0123456789abcdef0123456789abcdef01234567", NULL, 0,
                                          "photo", NULL),
                         0);
    }
    assert_int_equal(db_copy_set(db, f[0], "nas", DB_COPY_COMPLETED, "/n/b.jpg", NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, f[1], "nas", DB_COPY_COMPLETED, "/n/a.jpg", NULL, NULL), 0);
    assert_int_equal(db_copy_set(db, f[2], "nas", DB_COPY_FAILED, "/n/c.jpg", "x", NULL), 0);
    assert_int_equal(db_copy_set(db, f[3], "usb", DB_COPY_COMPLETED, "/u/a.jpg", NULL, NULL), 0);
    db_close(db);
    raw_exec(path, UNDO_V7 UNDO_V6 UNDO_V5
             "ALTER TABLE copies DROP COLUMN mhl_generation; PRAGMA user_version = 3");
    db = open_rw(path);

    struct unsealed_seen seen = {0};
    assert_int_equal(db_copies_unsealed(db, "nas", note_unsealed, &seen, NULL), 0);
    assert_int_equal(seen.n, 2);                     /* not the failed one, not usb's */
    assert_string_equal(seen.remote[0], "/n/a.jpg"); /* ordered by remote */
    assert_int_equal(seen.ids[0], f[1]);
    assert_false(seen.listed_before[0]);
    assert_int_equal(db_copies_seal(db, "nas", seen.ids, seen.n, 1, NULL), 0);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(db_copies_unsealed(db, "nas", note_unsealed, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);

    /* the failed one completes later, found in place where a listed copy is */
    assert_int_equal(db_copy_set(db, f[2], "nas", DB_COPY_COMPLETED, "/n/a.jpg", NULL, NULL), 0);
    assert_int_equal(db_copies_unsealed(db, "nas", note_unsealed, &seen, NULL), 0);
    assert_int_equal(seen.n, 1);
    assert_true(seen.listed_before[0]);
    assert_int_equal(db_copies_seal(db, "nas", seen.ids, 1, 0, NULL), -EINVAL);
    db_close(db);
}

struct sidecars_seen {
    size_t n;
    bool listed_before[8];
    char remote[8][64];
    char md5[8][33];
};

static int note_sidecar(const struct db_unsealed *u, void *arg)
{
    struct sidecars_seen *seen = arg;
    assert_true(seen->n < 8);
    seen->listed_before[seen->n] = u->listed_before;
    snprintf(seen->remote[seen->n], sizeof(seen->remote[0]), "%s", u->remote);
    snprintf(seen->md5[seen->n], sizeof(seen->md5[0]), "%s", u->md5);
    assert_int_equal(u->size, 5);
    assert_int_equal(u->mtime_ns, 1700000000123456789LL);
    assert_true(u->verified_at > 0); /* its copy's */
    seen->n++;
    return 0;
}

/* Records file_id completed at dest "nas" (remote copy_remote) with the sidecar remote. */
static int record_with_sidecar(struct db *db, int64_t file_id, const char *copy_remote,
                               const char *sidecar_dest, const char *remote, const char *md5)
{
    struct db_sidecar sc = {.dest = sidecar_dest,
                            .remote = remote,
                            .size = 5,
                            .mtime_ns = 1700000000123456789LL,
                            .md5 = md5,
                            .sha1 = SHA1_A};
    struct db_file_record rec = {.file_id = file_id,
                                 .state = DB_FILE_COMPLETED,
                                 .n_copies = 1,
                                 .sidecars = &sc,
                                 .n_sidecars = 1};
    rec.copies[0] =
        (struct db_record_copy){.dest = "nas", .state = DB_COPY_COMPLETED, .remote = copy_remote};
    return db_file_record(db, 0, &rec, NULL);
}

/* Sidecars recorded with their copy: listed once per remote (a RAW and a JPEG sharing an XMP),
 * sealed by remote with the copies, never again; another content at a listed remote is listed
 * before (it is no new file); a sidecar without its completed copy is refused whole. A version-5
 * database gets the table. */
static void test_sidecars_unsealed_and_sealed(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "side");
    int64_t raw = add_file(db, card, "DCIM/IMG_1.CR3", 10);
    int64_t jpg = add_file(db, card, "DCIM/IMG_1.JPG", 10);
    int64_t other = add_file(db, card, "DCIM/IMG_2.JPG", 10);
    assert_int_equal(db_copy_set(db, other, "nas", DB_COPY_COMPLETED, "/n/IMG_2.JPG", NULL, NULL),
                     0);
    db_close(db);
    raw_exec(path, UNDO_V7 UNDO_V6 "PRAGMA user_version = 5");
    db = open_rw(path);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), DB_SCHEMA_VERSION);

    /* refused: the sidecar's destination has no completed copy in the record; nothing stored */
    assert_int_equal(record_with_sidecar(db, raw, "/n/IMG_1.CR3", "usb", "/n/IMG_1.xmp", MD5_A),
                     -EINVAL);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sidecar_copies"), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM copies WHERE file_id = 1"), 0);

    assert_int_equal(record_with_sidecar(db, raw, "/n/IMG_1.CR3", "nas", "/n/IMG_1.xmp", MD5_A), 0);
    assert_int_equal(record_with_sidecar(db, jpg, "/n/IMG_1.JPG", "nas", "/n/IMG_1.xmp", MD5_A), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sidecar_copies"), 2);
    struct sidecars_seen seen = {0};
    assert_int_equal(db_sidecars_unsealed(db, "usb", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);
    assert_int_equal(db_sidecars_unsealed(db, "nas", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 1); /* one remote, two copies */
    assert_string_equal(seen.remote[0], "/n/IMG_1.xmp");
    assert_false(seen.listed_before[0]);

    /* sealed with the copies in one transaction, by remote: both rows */
    int64_t ids[] = {raw, jpg, other};
    const char *remotes[] = {"/n/IMG_1.xmp"};
    assert_int_equal(db_history_seal(db, "nas", ids, 3, remotes, 1, 0, NULL), -EINVAL);
    assert_int_equal(db_history_seal(db, "nas", ids, 3, remotes, 1, 4, NULL), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sidecar_copies WHERE mhl_generation = 4"),
                     2);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM copies WHERE mhl_generation = 4"), 3);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(db_sidecars_unsealed(db, "nas", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);

    /* recorded again the same (a retry): stays listed */
    assert_int_equal(record_with_sidecar(db, jpg, "/n/IMG_1.JPG", "nas", "/n/IMG_1.xmp", MD5_A), 0);
    assert_int_equal(db_sidecars_unsealed(db, "nas", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);
    /* other bytes at the remote: unlisted again, but the remote is listed already */
    assert_int_equal(record_with_sidecar(db, jpg, "/n/IMG_1.JPG", "nas", "/n/IMG_1.xmp", MD5_B), 0);
    assert_int_equal(db_sidecars_unsealed(db, "nas", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.md5[0], MD5_B);
    assert_true(seen.listed_before[0]);

    /* a copy that is no longer completed takes its sidecars out of the list */
    assert_int_equal(db_copy_set(db, jpg, "nas", DB_COPY_FAILED, NULL, "gone", NULL), 0);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(db_sidecars_unsealed(db, "nas", note_sidecar, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);
    db_close(db);
}

/* Open problems: a copy's last verdict counts while it is missing or changed, the copy is
 * completed and was not made again after the check; the list is paged and bounded. */
static void test_verify_open_problems(void **state)
{
    (void)state;
    char path[PATH_MAX];
    new_path(path, sizeof(path), "snapsync.db");
    struct db *db = open_rw(path);
    int64_t card = add_card(db, "open"), f[3], run = 0, last = 0;
    for (int i = 0; i < 3; i++) {
        char rel[32];
        snprintf(rel, sizeof(rel), "DCIM/%d.JPG", i);
        f[i] = add_file(db, card, rel, 10);
        assert_int_equal(db_file_set_meta(db, f[i], "0123456789abcdef0123456789abcdef",
                                          "0123456789abcdef0123456789abcdef01234567", NULL, 0,
                                          "photo", NULL),
                         0);
        assert_int_equal(db_copy_set(db, f[i], "nas", DB_COPY_COMPLETED, rel, NULL, NULL), 0);
    }
    struct db_verify_run r;
    struct error err = {0};
    assert_int_equal(db_verify_run_last(db, &r, &err), -ENOENT);
    assert_int_equal(db_verify_run_begin(db, "scrub", "", &run, NULL), 0);
    int64_t at = (int64_t)time(NULL) + 100; /* after the copies were made */
    for (int i = 0; i < 3; i++)
        assert_int_equal(db_verify_result_add(db, run, f[i], "nas", DB_VERIFY_MISSING, "gone",
                                              at + i, true, NULL),
                         0);
    assert_int_equal(db_verify_run_last(db, &r, NULL), 0);
    assert_int_equal(r.id, run);
    assert_int_equal(r.status, DB_VERIFY_RUNNING);
    assert_string_equal(r.scope, "scrub");
    assert_int_equal(db_verify_run_begin(db, "all", "", &last, NULL), 0);
    assert_int_equal(db_verify_run_last(db, &r, NULL), 0);
    assert_int_equal(r.id, last);

    struct db_verify_open *o = NULL;
    size_t n = 0;
    int64_t total = 0;
    assert_int_equal(db_verify_open_list(db, 0, 0, NULL, &n, &total, NULL), 0);
    assert_int_equal(total, 3);
    assert_int_equal(n, 0);
    assert_int_equal(db_verify_open_list(db, 0, 2, &o, &n, &total, NULL), 0);
    assert_int_equal(n, 2);
    assert_int_equal(o[0].file_id, f[2]); /* newest check first */
    assert_int_equal(o[0].result, DB_VERIFY_MISSING);
    assert_string_equal(o[0].detail, "gone");
    free(o);
    o = NULL;

    /* made again after the check (a newer verified_at), or no longer completed: closed */
    char sql[160];
    snprintf(sql, sizeof(sql), "UPDATE copies SET verified_at = %lld WHERE file_id = %lld",
             (long long)(at + 50), (long long)f[0]);
    raw_exec(path, sql);
    assert_int_equal(db_copy_set(db, f[1], "nas", DB_COPY_PENDING, NULL, NULL, NULL), 0);
    assert_int_equal(db_verify_open_list(db, 0, 10, &o, &n, &total, NULL), 0);
    assert_int_equal(total, 1);
    assert_int_equal(n, 1);
    assert_int_equal(o[0].file_id, f[2]);
    free(o);
    o = NULL;
    assert_int_equal(db_verify_open_list(db, 5, 10, &o, &n, &total, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(total, 1);
    free(o);
    assert_int_equal(db_verify_open_list(db, -1, 10, &o, &n, &total, &err), -EINVAL);
    assert_int_equal(db_verify_open_list(db, 0, 1, NULL, &n, &total, &err), -EINVAL);
    db_close(db);
}

int main(void)
{
    /* a private mount namespace: the tmpfs the tests mount are gone when the process is */
    own_mounts =
        unshare(CLONE_NEWNS) == 0 && mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_strings),
        cmocka_unit_test(test_create_and_migrate),
        cmocka_unit_test(test_reopen_keeps_data),
        cmocka_unit_test(test_zero_byte_file),
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_newer_schema),
        cmocka_unit_test(test_foreign_database),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_text_file),
        cmocka_unit_test(test_truncated_database),
        cmocka_unit_test(test_garbled_pages),
        cmocka_unit_test(test_unusable_paths),
        cmocka_unit_test(test_read_only_filesystem),
        cmocka_unit_test(test_transaction),
        cmocka_unit_test(test_cards),
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_sessions_list),
        cmocka_unit_test(test_verify_extras_and_dead_runs),
        cmocka_unit_test(test_migrate_from_v2),
        cmocka_unit_test(test_migrate_to_outbox),
        cmocka_unit_test(test_migrate_to_xxh128),
        cmocka_unit_test(test_hash_backed_up_without_sha1),
        cmocka_unit_test(test_copies_unsealed_and_sealed),
        cmocka_unit_test(test_verify_runs_pages_and_results),
        cmocka_unit_test(test_verify_open_problems),
        cmocka_unit_test(test_sidecars_unsealed_and_sealed),
        cmocka_unit_test(test_session_problems),
        cmocka_unit_test(test_interrupt_stale),
        cmocka_unit_test(test_interrupt_reused_pid),
        cmocka_unit_test(test_repair_stale),
        cmocka_unit_test(test_session_files),
        cmocka_unit_test(test_file_record),
        cmocka_unit_test(test_file_record_disk_full),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_files_failed),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_file_done),
        cmocka_unit_test(test_fast_path_10000),
        cmocka_unit_test(test_hash_backed_up),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_concurrent_connections),
        cmocka_unit_test(test_concurrent_creation),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
