/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for scanner.c on real folders under SNAPSYNC_TEST_TMP: a tree far deeper than the
 * folders the walk keeps open (reopened by path, no fd left behind), the path ceiling as a
 * named problem, the ceiling on named problems, symlinks as a notice only. (Entries that answer
 * EIO need a damaged filesystem: tests/integration/test_devices.py mounts one.)
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
#include <unistd.h>

#include <cmocka.h>

#include "scanner.h"

static char jpg[] = "jpg", mp4[] = "mp4";
static char *const extensions[] = {jpg, mp4, NULL};

/* A fresh folder for one test. */
static void new_root(char *buf, size_t size, const char *name)
{
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    char base[PATH_MAX];
    snprintf(base, sizeof(base), "%s/scanner.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    mkdir(tmp && tmp[0] ? tmp : "/tmp", 0755);
    assert_non_null(mkdtemp(base));
    snprintf(buf, size, "%s/%s", base, name);
    assert_int_equal(mkdir(buf, 0755), 0);
}

static void write_at(int dir_fd, const char *name, size_t size)
{
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    char buf[512] = {1};
    while (size > 0) {
        size_t n = size < sizeof(buf) ? size : sizeof(buf);
        assert_int_equal(write(fd, buf, n), (ssize_t)n);
        size -= n;
    }
    close(fd);
}

/* Makes depth folders named name one inside the other below dir_fd; returns the deepest's fd. */
static int make_chain(int dir_fd, const char *name, int depth)
{
    int fd = dup(dir_fd);
    for (int i = 0; i < depth; i++) {
        assert_int_equal(mkdirat(fd, name, 0755), 0);
        int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(sub >= 0);
        close(fd);
        fd = sub;
    }
    return fd;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void test_deep_tree_is_walked_whole(void **state)
{
    (void)state;
    char root[PATH_MAX];
    new_root(root, sizeof(root), "card");
    int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(root_fd >= 0);
    write_at(root_fd, "TOP.JPG", 10);
    int fd = make_chain(root_fd, "d", 500); /* far past the 64 folders kept open */
    write_at(fd, "DEEP.JPG", 10);
    int mid = make_chain(fd, "e", 3);
    write_at(mid, "DEEPER.MP4", 10);
    write_at(mid, "notes.txt", 10);
    assert_int_equal(symlinkat("/", mid, "escape"), 0);
    close(mid);
    close(fd);
    close(root_fd);

    int before = open_fds();
    struct scan_list *l = NULL;
    assert_int_equal(scanner_scan(root, extensions, 1, &l, NULL), 0);
    assert_int_equal(open_fds(), before);
    assert_int_equal(l->n, 3);
    assert_int_equal(l->n_problems, 0);
    assert_int_equal(l->n_symlinks, 1);
    assert_int_equal(l->n_ignored, 1);
    assert_string_equal(l->entries[0].name, "TOP.JPG");
    assert_int_equal(strlen(l->entries[1].rel_path), 500 * 2 + strlen("DEEP.JPG"));
    assert_string_equal(l->entries[2].name, "DEEPER.MP4");
    scan_list_free(l);
}

static void test_ignored_files_are_named_up_to_the_bound(void **state)
{
    (void)state;
    char root[PATH_MAX];
    new_root(root, sizeof(root), "ignored");
    int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(root_fd >= 0);
    write_at(root_fd, "A.JPG", 10);
    write_at(root_fd, "SMALL.JPG", 2);
    write_at(root_fd, "notes.txt", 10);
    write_at(root_fd, "README", 10);
    write_at(root_fd, ".hidden.txt", 10);
    close(root_fd);

    struct scan_list *l = NULL;
    assert_int_equal(scanner_scan_naming(root, extensions, 5, 10, &l, NULL), 0);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->n_ignored, 3);
    assert_int_equal(l->n_ignored_named, 3);
    int small = 0, ext = 0;
    for (size_t i = 0; i < l->n_ignored_named; i++) {
        const struct scan_ignored *ig = &l->ignored[i];
        if (strcmp(ig->rel_path, "SMALL.JPG") == 0) {
            small++;
            assert_int_equal(ig->reason, SCAN_IGNORED_SMALL);
            assert_int_equal(ig->size, 2);
        } else {
            ext++;
            assert_int_equal(ig->reason, SCAN_IGNORED_EXTENSION);
        }
    }
    assert_int_equal(small, 1);
    assert_int_equal(ext, 2);
    scan_list_free(l);

    /* bounded: the others are only counted; plain scanner_scan names none */
    assert_int_equal(scanner_scan_naming(root, extensions, 5, 1, &l, NULL), 0);
    assert_int_equal(l->n_ignored, 3);
    assert_int_equal(l->n_ignored_named, 1);
    scan_list_free(l);
    assert_int_equal(scanner_scan(root, extensions, 5, &l, NULL), 0);
    assert_int_equal(l->n_ignored_named, 0);
    assert_null(l->ignored);
    scan_list_free(l);
    assert_int_equal(scanner_scan_naming(root, extensions, 5, SCANNER_MAX_IGNORED + 1, &l, NULL),
                     -EINVAL);
}

static void test_path_ceiling_is_a_named_problem(void **state)
{
    (void)state;
    char root[PATH_MAX], name[251], what[ERROR_MSG_MAX];
    memset(name, 'L', 250);
    name[250] = '\0';
    new_root(root, sizeof(root), "card");
    int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    write_at(root_fd, "TOP.JPG", 10);
    /* 16 levels of 251 bytes: 4016; every 200-byte name inside passes 4095 */
    int fd = make_chain(root_fd, name, 16);
    char file[201];
    for (int i = 0; i < SCANNER_MAX_PROBLEMS + 50; i++) {
        snprintf(file, sizeof(file), "%0196d.JPG", i);
        write_at(fd, file, 10);
    }
    close(fd);
    close(root_fd);

    struct scan_list *l = NULL;
    assert_int_equal(scanner_scan(root, extensions, 1, &l, NULL), 0);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->n_problems, SCANNER_MAX_PROBLEMS + 50);
    assert_int_equal(l->n_problems_named, SCANNER_MAX_PROBLEMS);
    const struct scan_problem *p = &l->problems[0];
    assert_int_equal(p->kind, SCAN_PROBLEM_PATH);
    assert_int_equal(p->error, ENAMETOOLONG);
    assert_int_equal(strlen(p->rel_path), 16 * 251 - 1); /* the folder holding the names */
    scan_problem_describe(p, what, sizeof(what));
    assert_non_null(strstr(what, "path too long"));
    scan_list_free(l);
}

static void test_describe(void **state)
{
    (void)state;
    char what[ERROR_MSG_MAX];
    char dcim[] = "DCIM";
    struct scan_problem p = {.rel_path = dcim, .kind = SCAN_PROBLEM_STAT, .error = EIO};
    scan_problem_describe(&p, what, sizeof(what));
    assert_string_equal(what, "cannot examine it: Input/output error");
    p.kind = SCAN_PROBLEM_LIST;
    p.error = EACCES;
    scan_problem_describe(&p, what, sizeof(what));
    assert_string_equal(what, "cannot list the folder: Permission denied");
    p.kind = SCAN_PROBLEM_READ;
    p.error = EIO;
    scan_problem_describe(&p, what, sizeof(what));
    assert_string_equal(what, "cannot read the folder's entries: Input/output error");
    char small[8];
    scan_problem_describe(&p, small, sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void test_missing_root(void **state)
{
    (void)state;
    struct scan_list *l = NULL;
    struct error err = {0};
    assert_int_equal(scanner_scan("/nonexistent/card", extensions, 1, &l, &err), -ENOENT);
    assert_null(l);
    assert_non_null(strstr(err.msg, "/nonexistent/card"));
    scan_list_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deep_tree_is_walked_whole),
        cmocka_unit_test(test_ignored_files_are_named_up_to_the_bound),
        cmocka_unit_test(test_path_ceiling_is_a_named_problem),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_missing_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
