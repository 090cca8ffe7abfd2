/* SPDX-License-Identifier: MIT */
/* notify_outbox_channels: the outbox's channels from the notify section of a configuration. The
 * session's message from a real backup is checked by tests/integration/test_notify_service.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "notify_channel.h"
#include "notify_outbox.h"

static char *to[] = {(char[]){"ann@example.com"}};

/* static: the config borrows them beyond fill() */
static char host[] = "smtp.example.com";
static char security[] = "starttls";
static char user[] = "ann";
static char password[] = "pw-SECRET";
static char from[] = "snapsync@example.com";
static char empty[] = "";

static void fill(struct config *cfg, struct config_webhook *hooks, size_t n)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->notify.email.enabled = true;
    cfg->notify.email.host = host;
    cfg->notify.email.security = security;
    cfg->notify.email.username = user;
    cfg->notify.email.password = password;
    cfg->notify.email.from = from;
    cfg->notify.email.to = to;
    cfg->notify.email.n_to = 1;
    cfg->notify.email.tls_ca_file = empty;
    cfg->notify.webhooks = hooks;
    cfg->notify.n_webhooks = n;
}

static void test_channels_keys_without_secrets(void **state)
{
    (void)state;
    struct config_webhook hooks[] = {
        {.url = (char[]){"https://user:tk-SECRET@ntfy.example/topic?auth=tk-SECRET"},
         .format = (char[]){"ntfy"},
         .token = (char[]){"tk-SECRET"},
         .tls_ca_file = (char[]){""}},
        {.url = (char[]){"https://hooks.example/snapsync"},
         .format = (char[]){"json"},
         .token = (char[]){""},
         .tls_ca_file = (char[]){""}},
    };
    struct config cfg;
    fill(&cfg, hooks, 2);
    struct notify_outbox_channels c;
    notify_outbox_channels(&cfg, &c);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.n_skipped, 0);
    assert_string_equal(c.ch[0].key, "email");
    assert_int_equal(c.ch[0].kind, OUTBOX_EMAIL);
    assert_int_equal(c.ch[0].mail.port, 587);
    assert_string_equal(c.ch[0].mail.password, "pw-SECRET");
    assert_int_equal(c.ch[0].mail.timeout, NOTIFY_CHANNEL_TIMEOUT);
    assert_string_equal(c.ch[1].key, "webhook:https://ntfy.example/topic");
    assert_int_equal(c.ch[1].kind, OUTBOX_WEBHOOK);
    assert_int_equal(c.ch[1].hook.format, NOTIFY_HOOK_NTFY);
    assert_string_equal(c.ch[1].hook.token, "tk-SECRET");
    assert_int_equal(c.ch[1].hook.connect_timeout, NOTIFY_CHANNEL_CONNECT_TIMEOUT);
    assert_string_equal(c.ch[2].key, "webhook:https://hooks.example/snapsync");
    for (size_t i = 0; i < c.n; i++)
        assert_null(strstr(c.ch[i].key, "SECRET"));
}

static void test_duplicate_and_bad_channels_skipped(void **state)
{
    (void)state;
    struct config_webhook hooks[] = {
        {.url = (char[]){"https://hooks.example/a?token=1"},
         .format = (char[]){"json"},
         .token = (char[]){""},
         .tls_ca_file = (char[]){""}},
        {.url = (char[]){"https://hooks.example/a?token=2"},
         .format = (char[]){"json"},
         .token = (char[]){""},
         .tls_ca_file = (char[]){""}},
        {.url = (char[]){"https://hooks.example/b"},
         .format = (char[]){"slack"},
         .token = (char[]){""},
         .tls_ca_file = (char[]){""}},
        {.url = (char[]){"https://hooks.example/c"},
         .format = (char[]){"gotify"},
         .token = (char[]){""},
         .tls_ca_file = (char[]){""}},
    };
    struct config cfg;
    fill(&cfg, hooks, 4);
    cfg.notify.email.enabled = false;
    struct notify_outbox_channels c;
    notify_outbox_channels(&cfg, &c);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ch[0].key, "webhook:https://hooks.example/a");
    assert_string_equal(c.ch[1].key, "webhook:https://hooks.example/c");
    assert_int_equal(c.n_skipped, 2);
    assert_non_null(strstr(c.skipped, "webhook 2"));
    assert_non_null(strstr(c.skipped, "same URL"));
}

static void test_no_channel(void **state)
{
    (void)state;
    struct config cfg;
    fill(&cfg, NULL, 0);
    cfg.notify.email.enabled = false;
    struct notify_outbox_channels c;
    notify_outbox_channels(&cfg, &c);
    assert_int_equal(c.n, 0);
    assert_int_equal(c.n_skipped, 0);
}

/* A verification's problems: missing, changed and extra kept (the first NOTIFY_FAILED_LIST_MAX),
 * errors left out; a destination the config does not have is named by its id. */
static void test_problems_and_dest_name(void **state)
{
    (void)state;
    struct notify_outbox_problems ps = {0};
    struct verify_problem p = {.dest_label = "local /srv/p",
                               .remote = "/srv/p/A.JPG",
                               .rel_path = "DCIM/A.JPG",
                               .result = DB_VERIFY_ERROR};
    notify_outbox_problem_add(&ps, &p);
    assert_int_equal(ps.n, 0);
    p.result = DB_VERIFY_MISSING;
    notify_outbox_problem_add(&ps, &p);
    p.result = DB_VERIFY_EXTRA;
    p.remote = "/srv/p/notes.txt";
    notify_outbox_problem_add(&ps, &p);
    assert_int_equal(ps.n, 2);
    assert_string_equal(ps.p[0].problem, "missing");
    assert_string_equal(ps.p[0].path, "/srv/p/A.JPG");
    assert_string_equal(ps.p[0].dest, "local /srv/p");
    assert_string_equal(ps.p[1].problem, "extra");
    for (int i = 0; i < 30; i++)
        notify_outbox_problem_add(&ps, &p);
    assert_int_equal(ps.n, NOTIFY_FAILED_LIST_MAX);

    struct config cfg;
    fill(&cfg, NULL, 0);
    char name[64];
    notify_outbox_dest_name(&cfg, "local:/srv/gone", name, sizeof(name));
    assert_string_equal(name, "local:/srv/gone");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channels_keys_without_secrets),
        cmocka_unit_test(test_duplicate_and_bad_channels_skipped),
        cmocka_unit_test(test_no_channel),
        cmocka_unit_test(test_problems_and_dest_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
