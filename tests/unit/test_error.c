/* SPDX-License-Identifier: MIT */
/* Unit tests for error.c: formatting, errno suffix, prefixing and truncation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"

static void test_set_returns_code(void **state)
{
    (void)state;
    struct error err;
    assert_int_equal(error_set(&err, -EINVAL, "bad %s", "thing"), -EINVAL);
    assert_string_equal(err.msg, "bad thing");
    assert_int_equal(err.code, -EINVAL);
    assert_int_equal(error_set(NULL, -EIO, "ignored"), -EIO);
}

static void test_errno_and_prefix(void **state)
{
    (void)state;
    struct error err;
    error_set_errno(&err, -ENOENT, "cannot open '%s'", "a.jpg");
    assert_string_equal(err.msg, "cannot open 'a.jpg': No such file or directory");
    error_prefix(&err, "card %d", 1);
    assert_string_equal(err.msg, "card 1: cannot open 'a.jpg': No such file or directory");
}

static void test_truncation(void **state)
{
    (void)state;
    struct error err;
    char big[2 * ERROR_MSG_MAX];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    error_set(&err, -E2BIG, "%s", big);
    assert_int_equal(strlen(err.msg), ERROR_MSG_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_returns_code),
        cmocka_unit_test(test_errno_and_prefix),
        cmocka_unit_test(test_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
