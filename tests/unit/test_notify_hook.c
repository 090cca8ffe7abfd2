/* SPDX-License-Identifier: MIT */
/* Unit tests for notify_hook.c: what is refused before any connection (a URL or token that could
 * inject a header, an unknown format) and the format names. The requests themselves are checked
 * against a real HTTP server in tests/integration/test_notify.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "notify_hook.h"

static void test_refused_before_sending(void **state)
{
    (void)state;
    struct notify_session s = {.card = "EOS", .result = NOTIFY_COMPLETED};
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    /* port 9 (discard) on loopback is never contacted: each is refused first */
    struct notify_hook h = {.url = "http://127.0.0.1:9/t",
                            .format = NOTIFY_HOOK_NTFY,
                            .token = "tk-SECRET\r\nX-Evil: 1",
                            .connect_timeout = 1,
                            .timeout = 1};
    assert_int_equal(notify_hook_send(&h, &m, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "notify.webhooks token"));
    assert_null(strstr(err.msg, "SECRET"));
    h.token = NULL;
    h.url = "http://127.0.0.1:9/t\r\nX-Evil: 1";
    assert_int_equal(notify_hook_send(&h, &m, &err), -EINVAL);
    h.url = "ftp://127.0.0.1/t";
    assert_int_equal(notify_hook_send(&h, &m, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "notify.webhooks url"));
    h.url = "http://127.0.0.1:9/t";
    h.format = (enum notify_hook_format)7;
    assert_int_equal(notify_hook_send(&h, &m, &err), -EINVAL);
    assert_false(notify_error_transient(-EINVAL));
    notify_msg_done(&m);
}

static void test_format_names(void **state)
{
    (void)state;
    enum notify_hook_format f;
    assert_int_equal(notify_hook_format_parse("gotify", &f), 0);
    assert_int_equal(f, NOTIFY_HOOK_GOTIFY);
    assert_string_equal(notify_hook_format_name(NOTIFY_HOOK_NTFY), "ntfy");
    assert_int_equal(notify_hook_format_parse("slack", &f), -EINVAL);
    assert_int_equal(notify_hook_format_parse(NULL, &f), -EINVAL);
    assert_null(notify_hook_format_name((enum notify_hook_format)3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_before_sending),
        cmocka_unit_test(test_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
