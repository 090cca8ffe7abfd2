/* SPDX-License-Identifier: MIT */
/*
 * outbox_run: queues a sample session notification in a database's outbox, or delivers what is
 * due, for tests/integration/test_outbox.py (until the service and `snapsync backup` do it).
 * Each call is its own process with its own connection, as a restarted service would be.
 *
 *   outbox_run DB queue --now T [--card LABEL] [--failed N] [channels]
 *   outbox_run DB deliver --now T [channels]
 * Channels: --mail HOST:PORT (STARTTLS, --ca FILE, --user NAME with the password from
 * $SMTP_PASSWORD, from snapsync@pi.example to ann@example.com) and/or --hook URL --format
 * json|ntfy|gotify (token from $NOTIFY_TOKEN when set); --timeout SECONDS.
 *
 * deliver prints "messages=M sent=S retry=R failed=F next_due=T pending=P", then one line
 * "failed CHANNEL: ERROR" per failed delivery. Exits 0, 1 on an error of the call, 3 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "outbox.h"

static int usage(void)
{
    fputs("usage: outbox_run DB queue|deliver --now T [--card L] [--failed N] [--mail HOST:PORT "
          "[--ca F] [--user U]] [--hook URL --format F] [--timeout S]\n",
          stderr);
    return 3;
}

static bool parse_long(const char *s, long min, long max, long *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *ret = v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"now", required_argument, NULL, 'n'},    {"card", required_argument, NULL, 'l'},
        {"failed", required_argument, NULL, 'f'}, {"mail", required_argument, NULL, 'm'},
        {"ca", required_argument, NULL, 'c'},     {"user", required_argument, NULL, 'u'},
        {"hook", required_argument, NULL, 'h'},   {"format", required_argument, NULL, 'F'},
        {"timeout", required_argument, NULL, 'T'}, {NULL, 0, NULL, 0},
    };
    const char *card = "EOS_DIGITAL", *mail = NULL, *ca = NULL, *user = NULL, *hook = NULL;
    const char *format = "json";
    long now = -1, failed = 0, timeout = 5;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (!parse_long(optarg, 0, 1L << 40, &now))
                return usage();
            break;
        case 'l':
            card = optarg;
            break;
        case 'f':
            if (!parse_long(optarg, 0, 100000, &failed))
                return usage();
            break;
        case 'm':
            mail = optarg;
            break;
        case 'c':
            ca = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        case 'h':
            hook = optarg;
            break;
        case 'F':
            format = optarg;
            break;
        case 'T':
            if (!parse_long(optarg, 1, 600, &timeout))
                return usage();
            break;
        default:
            return usage();
        }
    }
    if (argc - optind != 2 || now < 0 || (!mail && !hook))
        return usage();
    const char *path = argv[optind], *verb = argv[optind + 1];

    struct outbox_channel ch[2];
    size_t n = 0;
    char mail_host[256], hook_key[OUTBOX_KEY_MAX], mail_key[OUTBOX_KEY_MAX];
    static const char *const to[] = {"ann@example.com"};
    if (mail) {
        const char *colon = strrchr(mail, ':');
        long port;
        if (!colon || (size_t)(colon - mail) >= sizeof(mail_host) ||
            !parse_long(colon + 1, 1, 65535, &port))
            return usage();
        snprintf(mail_host, sizeof(mail_host), "%.*s", (int)(colon - mail), mail);
        outbox_channel_key(OUTBOX_EMAIL, NULL, mail_key, sizeof(mail_key));
        ch[n++] = (struct outbox_channel){
            .key = mail_key,
            .kind = OUTBOX_EMAIL,
            .mail = {.host = mail_host,
                     .port = (int)port,
                     .security = NOTIFY_MAIL_STARTTLS,
                     .username = user,
                     .password = user ? getenv("SMTP_PASSWORD") : NULL,
                     .ca_file = ca,
                     .connect_timeout = timeout,
                     .timeout = timeout},
            .from = "snapsync@pi.example",
            .to = to,
            .n_to = 1,
        };
    }
    if (hook) {
        struct outbox_channel h = {.key = hook_key, .kind = OUTBOX_WEBHOOK};
        if (outbox_channel_key(OUTBOX_WEBHOOK, hook, hook_key, sizeof(hook_key)) < 0 ||
            notify_hook_format_parse(format, &h.hook.format) < 0)
            return usage();
        h.hook.url = hook;
        h.hook.token = getenv("NOTIFY_TOKEN");
        h.hook.ca_file = ca;
        h.hook.connect_timeout = timeout;
        h.hook.timeout = timeout;
        ch[n++] = h;
    }

    struct db *db = NULL;
    struct error err = {0};
    struct db_delivery *rows = NULL;
    size_t n_rows = 0;
    int r = db_open(path, DB_READ_WRITE, &db, &err);
    if (r < 0)
        goto out;
    if (strcmp(verb, "queue") == 0) {
        static char names[100][32];
        const char *files[100];
        size_t listed = failed < 100 ? (size_t)failed : 100;
        for (size_t i = 0; i < listed; i++) {
            snprintf(names[i], sizeof(names[i]), "DCIM/100CANON/IMG_%04zu.CR2", i);
            files[i] = names[i];
        }
        const struct notify_dest dests[] = {{"unraid", "ok"}};
        struct notify_session s = {
            .card = card,
            .result = failed ? NOTIFY_PARTIAL : NOTIFY_COMPLETED,
            .copied = 120,
            .failed = (uint64_t)failed,
            .bytes = 3500000000ULL,
            .duration = 754,
            .dests = dests,
            .n_dests = 1,
            .failed_files = files,
            .n_failed_files = listed,
            .safe_to_remove = failed == 0,
            .dashboard_url = "http://snapsync.local:8080/",
        };
        r = outbox_queue(db, &s, outbox_event_of(s.result), 0, ch, n, now, NULL, &err);
        if (r == 0)
            puts("queued");
    } else if (strcmp(verb, "deliver") == 0) {
        struct outbox_result res = {0};
        int64_t pending = 0;
        r = outbox_deliver(db, ch, n, now, NULL, &res, &err);
        if (r == 0)
            r = outbox_pending_count(db, &pending, &err);
        if (r == 0)
            r = outbox_failed_list(db, 100, &rows, &n_rows, &err);
        if (r < 0)
            goto out;
        printf("messages=%zu sent=%zu retry=%zu failed=%zu next_due=%lld pending=%lld\n",
               res.messages, res.sent, res.retry, res.failed, (long long)res.next_due,
               (long long)pending);
        for (size_t i = 0; i < n_rows; i++)
            printf("failed %s: %s\n", rows[i].channel, rows[i].last_error);
    } else {
        db_close(db);
        return usage();
    }
out:
    if (r < 0)
        fprintf(stderr, "outbox_run: %s\n", err.msg);
    db_deliveries_free(rows, n_rows);
    db_close(db);
    return r < 0 ? 1 : 0;
}
