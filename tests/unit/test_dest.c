/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the destination interface with the local backend: naming by date, collisions
 * (same content is done, different content gets "_N"), names at the 255-byte limit, abort and
 * stale temporaries, verification, the NFS mount-point check.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "dest.h"
#include "hasher.h"

struct fixture {
    char dir[PATH_MAX];
    struct config *cfg;
    struct dest **dests;
    size_t n;
    struct dest_conn *conn;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    char tmpl[PATH_MAX];
    if (base)
        mkdir(base, 0755);
    snprintf(tmpl, sizeof(tmpl), "%s/dest.XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpl));
    snprintf(f->dir, sizeof(f->dir), "%s", tmpl);
    assert_int_equal(config_default(&f->cfg, NULL), 0);
    free(f->cfg->unraid.mount_point);
    f->cfg->unraid.mount_point = strdup(f->dir);
    struct error err;
    assert_int_equal(dest_create_all(f->cfg, &f->dests, &f->n, &err), 0);
    assert_int_equal(f->n, 1);
    assert_string_equal(dest_kind(f->dests[0]), "local");
    assert_int_equal(dest_prepare(f->dests[0], NULL, &err), 0);
    assert_int_equal(dest_conn_new(f->dests[0], &f->conn, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dest_conn_free(f->conn);
    dest_free_all(f->dests, f->n);
    config_free(f->cfg);
    free(f); /* the folder stays under the build's test-tmp for inspection */
    return 0;
}

static void digest_of(const char *data, size_t len, struct hasher_digest *d)
{
    struct hasher *h = NULL;
    assert_int_equal(hasher_new(&h, NULL), 0);
    assert_int_equal(hasher_update(h, data, len, NULL), 0);
    assert_int_equal(hasher_final(h, d, NULL), 0);
    hasher_free(h);
}

/* The floating capture time of midnight of date_path ("YYYY/MM/DD"). */
static int64_t day_of(const char *date_path)
{
    struct tm tm = {0};
    assert_non_null(strptime(date_path, "%Y/%m/%d", &tm));
    return (int64_t)timegm(&tm);
}

/* Copies data as `name` dated date_path; returns the finish result. */
static int copy(struct fixture *f, const char *name, const char *date_path, const char *data,
                struct dest_result *res, struct error *err)
{
    struct dest_item item = {.rel_path = name,
                             .name = name,
                             .size = strlen(data),
                             .capture_time = day_of(date_path),
                             .kind = "photo",
                             .sha1_known = "",
                             .card_dir_fd = -1};
    struct dest_file *file = NULL;
    int r = dest_open(f->conn, &item, &file, err);
    if (r < 0)
        return r;
    /* in two pieces, as the engine writes chunks */
    size_t half = strlen(data) / 2;
    assert_int_equal(dest_write(file, data, half, err), 0);
    assert_int_equal(dest_write(file, data + half, strlen(data) - half, err), 0);
    struct hasher_digest d;
    digest_of(data, strlen(data), &d);
    return dest_finish(file, &d, true, res, err);
}

static void read_file(const char *path, char *buf, size_t size)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t n = fread(buf, 1, size - 1, fp);
    buf[n] = '\0';
    fclose(fp);
}

static size_t count_tmp(struct fixture *f)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/.snapsync-tmp", f->dir);
    size_t n = 0;
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_date_folder_and_collisions(void **state)
{
    struct fixture *f = *state;
    struct dest_result res;
    struct error err;
    char path[PATH_MAX], buf[64];

    assert_int_equal(copy(f, "IMG_0001.JPG", "2024/05/06", "first content", &res, &err), 0);
    snprintf(path, sizeof(path), "%s/2024/05/06/IMG_0001.JPG", f->dir);
    assert_string_equal(res.remote, path);
    assert_false(res.existed);
    read_file(path, buf, sizeof(buf));
    assert_string_equal(buf, "first content");

    /* same name, same content: done, nothing added */
    assert_int_equal(copy(f, "IMG_0001.JPG", "2024/05/06", "first content", &res, &err), 0);
    assert_true(res.existed);
    assert_string_equal(res.remote, path);

    /* same name, other content: a new name, the first untouched */
    assert_int_equal(copy(f, "IMG_0001.JPG", "2024/05/06", "second content", &res, &err), 0);
    snprintf(path, sizeof(path), "%s/2024/05/06/IMG_0001_1.JPG", f->dir);
    assert_string_equal(res.remote, path);
    read_file(path, buf, sizeof(buf));
    assert_string_equal(buf, "second content");
    snprintf(path, sizeof(path), "%s/2024/05/06/IMG_0001.JPG", f->dir);
    read_file(path, buf, sizeof(buf));
    assert_string_equal(buf, "first content");

    /* and the second content again finds its own copy under _1 */
    assert_int_equal(copy(f, "IMG_0001.JPG", "2024/05/06", "second content", &res, &err), 0);
    assert_true(res.existed);
    assert_non_null(strstr(res.remote, "IMG_0001_1.JPG"));

    /* a name without extension */
    assert_int_equal(copy(f, "README", "2024/05/06", "x", &res, &err), 0);
    assert_int_equal(copy(f, "README", "2024/05/06", "y", &res, &err), 0);
    assert_non_null(strstr(res.remote, "/README_1"));
    assert_int_equal(count_tmp(f), 0);
}

static void test_long_names_fit(void **state)
{
    struct fixture *f = *state;
    struct dest_result res;
    struct error err;
    char name[256];
    memset(name, 'a', 251);
    memcpy(name + 251, ".JPG", 5); /* 255 bytes: the limit */
    assert_int_equal(copy(f, name, "2020/01/01", "one", &res, &err), 0);
    assert_int_equal(copy(f, name, "2020/01/01", "two", &res, &err), 0);
    const char *base = strrchr(res.remote, '/') + 1;
    assert_int_equal(strlen(base), 255);
    assert_memory_equal(base + 249, "_1.JPG", 6);

    /* a multi-byte character is not cut in half */
    char utf[256];
    memset(utf, 'b', 249);
    memcpy(utf + 249, "\xc3\xa9.JPG", 7); /* 249 + 2 + 4 = 255 */
    assert_int_equal(copy(f, utf, "2020/01/01", "one", &res, &err), 0);
    assert_int_equal(copy(f, utf, "2020/01/01", "two", &res, &err), 0);
    base = strrchr(res.remote, '/') + 1;
    assert_true(strlen(base) <= 255);
    assert_non_null(strstr(base, "_1.JPG"));
    assert_null(strstr(base, "\xc3_"));

    /* names that cannot be a file name are refused */
    assert_int_equal(copy(f, "..", "2020/01/01", "x", &res, &err), -EINVAL);
    assert_int_equal(copy(f, "a/b", "2020/01/01", "x", &res, &err), -EINVAL);
}

static void test_abort_and_verify_failure_leave_nothing(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct dest_item item = {.rel_path = "A.JPG",
                             .name = "A.JPG",
                             .size = 5,
                             .capture_time = day_of("2021/02/03"),
                             .sha1_known = "",
                             .card_dir_fd = -1};
    struct dest_file *file = NULL;
    assert_int_equal(dest_open(f->conn, &item, &file, &err), 0);
    assert_int_equal(dest_write(file, "hello", 5, &err), 0);
    assert_int_equal(count_tmp(f), 1);
    dest_abort(file);
    assert_int_equal(count_tmp(f), 0);

    /* the digest of other bytes: verification fails, the copy never gets its name */
    assert_int_equal(dest_open(f->conn, &item, &file, &err), 0);
    assert_int_equal(dest_write(file, "hello", 5, &err), 0);
    struct hasher_digest d;
    digest_of("HELLO", 5, &d);
    struct dest_result res;
    assert_int_equal(dest_finish(file, &d, true, &res, &err), -EIO);
    assert_non_null(strstr(err.msg, "verification failed"));
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/2021/02/03/A.JPG", f->dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_tmp(f), 0);
}

/* Changes the byte at off of the one temporary in .snapsync-tmp on disk, as a bad disk, cable or
 * NAS would, after the copy was written and before it is finished. */
static void corrupt_tmp(struct fixture *f, off_t off)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/.snapsync-tmp", f->dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    int done = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        unsigned char c;
        assert_int_equal(pread(fd, &c, 1, off), 1);
        c ^= 0x01;
        assert_int_equal(pwrite(fd, &c, 1, off), 1);
        close(fd);
        done++;
    }
    closedir(d);
    assert_int_equal(done, 1);
}

/* The read-back is compared by XXH3-128: one changed byte in the copy is caught (the copy never
 * gets its name), and a digest whose MD5 and SHA-1 are not the copy's but whose XXH3-128 is
 * passes, so XXH3-128 is what is compared. */
static void test_verify_compares_xxh128(void **state)
{
    struct fixture *f = *state;
    struct error err;
    static const char data[] = "a photo of a few bytes, one of which will change";
    struct dest_item item = {.rel_path = "B.JPG",
                             .name = "B.JPG",
                             .size = sizeof(data) - 1,
                             .capture_time = day_of("2021/02/04"),
                             .sha1_known = "",
                             .card_dir_fd = -1};
    struct hasher_digest d;
    digest_of(data, sizeof(data) - 1, &d);
    struct dest_file *file = NULL;
    assert_int_equal(dest_open(f->conn, &item, &file, &err), 0);
    assert_int_equal(dest_write(file, data, sizeof(data) - 1, &err), 0);
    corrupt_tmp(f, 17);
    struct dest_result res;
    assert_int_equal(dest_finish(file, &d, true, &res, &err), -EIO);
    assert_non_null(strstr(err.msg, "verification failed"));
    assert_non_null(strstr(err.msg, "XXH3-128"));
    assert_non_null(strstr(err.msg, d.xxh128_hex)); /* expected: the card's */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/2021/02/04/B.JPG", f->dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_tmp(f), 0);

    struct hasher_digest other;
    digest_of("other bytes", 11, &other);
    memcpy(other.xxh128, d.xxh128, sizeof(d.xxh128));
    memcpy(other.xxh128_hex, d.xxh128_hex, sizeof(d.xxh128_hex));
    assert_int_equal(dest_open(f->conn, &item, &file, &err), 0);
    assert_int_equal(dest_write(file, data, sizeof(data) - 1, &err), 0);
    assert_int_equal(dest_finish(file, &other, true, &res, &err), 0);
    assert_int_equal(access(path, F_OK), 0);
}

static void test_stale_temporaries_are_removed(void **state)
{
    struct fixture *f = *state;
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    for (char *p = host; *p; p++)
        if (*p == '/' || *p == '.')
            *p = '_';
    char path[PATH_MAX];
    /* pid 2^22+1 is above the kernel's pid_max default: nobody */
    snprintf(path, sizeof(path), "%s/.snapsync-tmp/4194305.7.%s.part", f->dir, host);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);
    /* our own live pid: kept */
    snprintf(path, sizeof(path), "%s/.snapsync-tmp/%ld.9.%s.part", f->dir, (long)getpid(), host);
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);
    struct error err;
    assert_int_equal(dest_prepare(f->dests[0], NULL, &err), 0);
    assert_int_equal(count_tmp(f), 1);
    unlink(path);
}

static void test_nfs_needs_a_mount_point(void **state)
{
    struct fixture *f = *state;
    f->cfg->unraid.protocol = CONFIG_PROTOCOL_NFS;
    struct dest **dests = NULL;
    size_t n = 0;
    struct error err;
    assert_int_equal(dest_create_all(f->cfg, &dests, &n, &err), 0);
    assert_int_equal(dest_prepare(dests[0], NULL, &err), -ENXIO);
    assert_non_null(strstr(err.msg, "not a mount point"));
    char detail[256];
    assert_int_equal(dest_probe(dests[0], detail, sizeof(detail), &err), -ENXIO);
    dest_free_all(dests, n);
    f->cfg->unraid.protocol = CONFIG_PROTOCOL_LOCAL;
}

static void test_probe(void **state)
{
    struct fixture *f = *state;
    char detail[256];
    struct error err;
    assert_int_equal(dest_probe(f->dests[0], detail, sizeof(detail), &err), 0);
    assert_non_null(strstr(detail, "writable"));
    assert_int_equal(count_tmp(f), 0);
    char id[PATH_MAX + 8];
    snprintf(id, sizeof(id), "local:%s", f->dir);
    assert_string_equal(dest_id(f->dests[0]), id);
}

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* valid accepts each of good and refuses each of bad. */
static void check_valid(bool (*valid)(const char *), const char *const *good, size_t n_good,
                        const char *const *bad, size_t n_bad)
{
    for (size_t i = 0; i < n_good; i++)
        if (!valid(good[i]))
            fail_msg("'%s' refused", good[i]);
    for (size_t i = 0; i < n_bad; i++)
        if (valid(bad[i]))
            fail_msg("'%s' accepted", bad[i]);
}

/* The one check every backend applies to a file name before its own rules. */
static void test_name_valid(void **state)
{
    (void)state;
    char longest[DEST_NAME_MAX + 2];
    memset(longest, 'a', DEST_NAME_MAX);
    longest[DEST_NAME_MAX] = '\0';
    assert_true(dest_name_valid(longest));
    longest[DEST_NAME_MAX] = 'a';
    longest[DEST_NAME_MAX + 1] = '\0';
    assert_false(dest_name_valid(longest)); /* one byte over */
    static const char *const good[] = {
        "IMG_0001.CR2", "a",         "...",        ".hidden",
        "name.",        "trailing ", "a:b*c?.jpg", "caf\xc3\xa9.jpg"};
    static const char *const bad[] = {"", ".", "..", "a/b", "/", "DCIM/IMG_0001.JPG", "../x"};
    check_valid(dest_name_valid, good, ARRAY_LEN(good), bad, ARRAY_LEN(bad));
    assert_false(dest_name_valid(NULL));
}

/* What a walk for extra files leaves out: SnapSync's own folders at the root only, clutter of
 * file browsers and NAS systems at any depth. */
static void test_walk_skip(void **state)
{
    (void)state;
    assert_true(dest_walk_skip(0, "ascmhl"));
    assert_true(dest_walk_skip(0, ".snapsync-tmp"));
    assert_false(dest_walk_skip(1, "ascmhl")); /* a folder of the user's named so */
    assert_false(dest_walk_skip(3, ".snapsync-tmp"));
    const char *clutter[] = {".",         "..",          ".DS_Store", "._IMG_0001.JPG",
                             "Thumbs.db", "desktop.ini", "@eaDir",    ".Trash-1000",
                             "#recycle",  ".AppleDouble"};
    for (size_t i = 0; i < sizeof(clutter) / sizeof(clutter[0]); i++) {
        assert_true(dest_walk_skip(0, clutter[i]));
        assert_true(dest_walk_skip(4, clutter[i]));
    }
    const char *kept[] = {"IMG_0001.JPG",  "2024",       ".hidden.jpg", "_IMG.JPG",
                          "thumbs.db.jpg", "ascmhl.txt", "DS_Store"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        assert_false(dest_walk_skip(0, kept[i]));
}

/* The one check of a meta path (dest_ops' meta operations) every backend applies. */
static void test_rel_valid(void **state)
{
    (void)state;
    static const char *const good[] = {"ascmhl",  "ascmhl/0001_camera_2026-12-04_101521Z.mhl",
                                       "ascmhl/", "a/b/c",
                                       "...",     ".hidden/x"};
    static const char *const bad[] = {"",    "/",   "/ascmhl", "a//b", ".",    "..",
                                      "./a", "a/.", "a/../b",  "../x", "a/..", "//"};
    check_valid(dest_rel_valid, good, ARRAY_LEN(good), bad, ARRAY_LEN(bad));
    assert_false(dest_rel_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_skip),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_rel_valid),
        cmocka_unit_test_setup_teardown(test_date_folder_and_collisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_names_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_compares_xxh128, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_and_verify_failure_leave_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_temporaries_are_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nfs_needs_a_mount_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
