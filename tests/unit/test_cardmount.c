/* SPDX-License-Identifier: MIT */
/* Unit tests for cardmount.c: mount folder names, and the errors that need no block device.
 * Mounting itself is tested with loop devices in tests/integration/test_devices.py and
 * test_fuse_cards.py. Files go under $SNAPSYNC_TEST_TMP (set by CTest), else /tmp. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cardmount.h"

static void test_folder_names(void **state)
{
    (void)state;
    char buf[32];
    cardmount_folder_name("EOS_DIGITAL", "1234-ABCD", "sdb1", buf, sizeof(buf));
    assert_string_equal(buf, "EOS_DIGITAL");
    cardmount_folder_name("", "1234-ABCD", "sdb1", buf, sizeof(buf));
    assert_string_equal(buf, "1234-ABCD");
    cardmount_folder_name(NULL, "", "sdb1", buf, sizeof(buf));
    assert_string_equal(buf, "sdb1");
    /* nothing can climb out of the mount folder or hide */
    cardmount_folder_name("../../etc", "", "x", buf, sizeof(buf));
    assert_null(strchr(buf, '/'));
    assert_true(buf[0] != '.');
    cardmount_folder_name("My Card\n", "", "x", buf, sizeof(buf));
    assert_string_equal(buf, "My_Card_");
    cardmount_folder_name("", "", "", buf, sizeof(buf));
    assert_string_equal(buf, "card");
    cardmount_folder_name("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "", "", buf, 8);
    assert_string_equal(buf, "ABCDEFG");
}

static char tmp_root[4096];

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    if (!base || !base[0])
        base = "/tmp";
    if (mkdir(base, 0755) < 0 && errno != EEXIST)
        return -1;
    snprintf(tmp_root, sizeof(tmp_root), "%s/test_cardmount.XXXXXX", base);
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char path[4200];
    snprintf(path, sizeof(path), "%s/file", tmp_root);
    unlink(path);
    snprintf(path, sizeof(path), "%s/plain", tmp_root);
    rmdir(path);
    return rmdir(tmp_root);
}

/* A base folder that cannot be made fails before anything is mounted, and says which. */
static void test_mount_base_unusable(void **state)
{
    (void)state;
    char file[4200], base[4300];
    snprintf(file, sizeof(file), "%s/file", tmp_root);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(base, sizeof(base), "%s/cards", file);
    struct cardmount m = {.target = "untouched"};
    struct error err = {0};
    assert_int_equal(cardmount_mount("/dev/null", "vfat", "EOS", "", base, &m, &err), -ENOTDIR);
    assert_non_null(strstr(err.msg, base));
    assert_string_equal(m.target, "untouched");
}

/* A folder that is no mount point is refused with -EINVAL and left in place. */
static void test_unmount_not_mounted(void **state)
{
    (void)state;
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/plain", tmp_root);
    assert_int_equal(mkdir(dir, 0755), 0);
    struct error err = {0};
    assert_int_equal(cardmount_unmount(dir, false, &err), -EINVAL);
    assert_non_null(strstr(err.msg, dir));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folder_names),
        cmocka_unit_test(test_mount_base_unusable),
        cmocka_unit_test(test_unmount_not_mounted),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
