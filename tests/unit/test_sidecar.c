/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for sidecar.c on a real folder under SNAPSYNC_TEST_TMP: which files are sidecars of
 * which (lookup order, case, the "<name>.xmp" form, the size ceiling, a sidecar never its own),
 * the names they get next to a renamed copy, and reading one whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar.h"

static int new_dir(void)
{
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    char base[PATH_MAX];
    mkdir(tmp && tmp[0] ? tmp : "/tmp", 0755);
    snprintf(base, sizeof(base), "%s/sidecar.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    assert_non_null(mkdtemp(base));
    int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(mkdirat(fd, "DCIM", 0755), 0);
    return fd;
}

static void put(int dir_fd, const char *rel, const char *data, off_t size)
{
    int fd = openat(dir_fd, rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    if (data)
        assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    else
        assert_int_equal(ftruncate(fd, size), 0);
    close(fd);
}

static void test_find_order_case_and_ceiling(void **state)
{
    (void)state;
    int d = new_dir();
    put(d, "DCIM/IMG_1.JPG", "photo", 0);
    put(d, "DCIM/IMG_1.XMP", "stem xmp", 0);
    put(d, "DCIM/IMG_1.JPG.xmp", "name xmp", 0);
    put(d, "DCIM/IMG_1.wav", "memo", 0);
    put(d, "DCIM/IMG_1.Thm", "mixed case: not looked up", 0);
    struct sidecar_set *set = malloc(sizeof(*set));
    assert_non_null(set);
    sidecar_find(d, "DCIM/IMG_1.JPG", false, set);
    assert_int_equal(set->n, 2);
    assert_string_equal(set->rel[0], "DCIM/IMG_1.JPG.xmp"); /* the "<name>.xmp" form first */
    assert_string_equal(set->rel[1], "DCIM/IMG_1.wav");
    sidecar_find(d, "DCIM/IMG_1.JPG", true, set);
    assert_int_equal(set->n, 1);

    /* a file is never its own sidecar; too big is no sidecar */
    put(d, "DCIM/MEMO.wav", "alone", 0);
    sidecar_find(d, "DCIM/MEMO.wav", false, set);
    assert_int_equal(set->n, 0);
    put(d, "DCIM/BIG.MP4", "video", 0);
    put(d, "DCIM/BIG.THM", NULL, (off_t)SIDECAR_MAX_BYTES + 1);
    sidecar_find(d, "DCIM/BIG.MP4", false, set);
    assert_int_equal(set->n, 0);
    free(set);
    close(d);
}

static void test_belongs(void **state)
{
    (void)state;
    assert_true(sidecar_belongs("DCIM/IMG_1.xmp", "DCIM/IMG_1.JPG"));
    assert_true(sidecar_belongs("DCIM/IMG_1.JPG.XMP", "DCIM/IMG_1.JPG"));
    assert_true(sidecar_belongs("DCIM/IMG_1.WAV", "DCIM/IMG_1.CR2"));
    assert_false(sidecar_belongs("DCIM/IMG_1.JPG.wav", "DCIM/IMG_1.JPG")); /* xmp only */
    assert_false(sidecar_belongs("DCIM/IMG_1.Wav", "DCIM/IMG_1.JPG"));
    assert_false(sidecar_belongs("DCIM/IMG_10.xmp", "DCIM/IMG_1.JPG"));
    assert_false(sidecar_belongs("OTHER/IMG_1.xmp", "DCIM/IMG_1.JPG"));
    assert_false(sidecar_belongs("DCIM/IMG_1.lrv", "DCIM/IMG_1.MP4"));
    assert_false(sidecar_belongs("DCIM/IMG_1.wav", "DCIM/IMG_1.wav"));
}

static void test_dest_name(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(
        sidecar_dest_name("D/IMG_1.xmp", "D/IMG_1.JPG", "IMG_1_1.JPG", out, sizeof(out)), 0);
    assert_string_equal(out, "IMG_1_1.xmp");
    assert_int_equal(
        sidecar_dest_name("D/IMG_1.JPG.XMP", "D/IMG_1.JPG", "IMG_1_2.JPG", out, sizeof(out)), 0);
    assert_string_equal(out, "IMG_1_2.JPG.XMP");
    assert_int_equal(sidecar_dest_name("D/IMG_1.WAV", "D/IMG_1.JPG", "IMG_1.JPG", out, sizeof(out)),
                     0);
    assert_string_equal(out, "IMG_1.WAV");
    /* the stem alone fits out, with ".xmp" it does not */
    assert_int_equal(sidecar_dest_name("D/IMG_1.xmp", "D/IMG_1.JPG",
                                       "0123456789012345678901234567.J", out, sizeof(out)),
                     -ENAMETOOLONG);
}

static void test_read(void **state)
{
    (void)state;
    int d = new_dir();
    put(d, "DCIM/A.xmp", "<xmp/>", 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t mtime = 0;
    struct error err = {0};
    assert_int_equal(sidecar_read(d, "DCIM/A.xmp", &buf, &len, &mtime, &err), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(buf, "<xmp/>", 6);
    assert_true(mtime > 0);
    free(buf);
    buf = NULL;
    assert_int_equal(sidecar_read(d, "DCIM/none.xmp", &buf, &len, &mtime, &err), -ENOENT);
    assert_null(buf);
    assert_non_null(strstr(err.msg, "DCIM/none.xmp"));
    put(d, "DCIM/B.wav", NULL, (off_t)SIDECAR_MAX_BYTES + 1);
    assert_int_equal(sidecar_read(d, "DCIM/B.wav", &buf, &len, &mtime, &err), -EFBIG);
    assert_null(buf);
    close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_order_case_and_ceiling),
        cmocka_unit_test(test_belongs),
        cmocka_unit_test(test_dest_name),
        cmocka_unit_test(test_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
