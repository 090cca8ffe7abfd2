/* SPDX-License-Identifier: MIT */
/*
 * notify_send: sends a session notification of any content through one channel, for
 * tests/integration/test_notify.py (MessageTest): untrusted card names, failed files, a text part
 * with lines starting with '.', an attachment, a short timeout; what `snapsync notify-test`, whose
 * sample is fixed, cannot send. The channels' settings come from the command line.
 *
 *   notify_send mail HOST PORT starttls|tls|none FROM TO[,TO...] [options]
 *   notify_send hook URL json|ntfy|gotify [options]
 * Options: --ca FILE (trusted CA), --user NAME (password from $SMTP_PASSWORD), --token-env
 * (token from $NOTIFY_TOKEN), --card LABEL, --failed N (failed files of the sample), --text-file
 * FILE (replaces the text part), --attach FILE (attached as text/plain), --timeout SECONDS.
 *
 * Prints "sent", or "error transient|permanent: <message>"; exits 0 sent, 1 transient error,
 * 2 permanent error, 3 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "notify_hook.h"
#include "notify_mail.h"
#include "notify_msg.h"

#define TO_MAX 16
#define FILES_MAX 200

static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1024 * 1024 + 1);
    size_t n = buf ? fread(buf, 1, 1024 * 1024, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    *ret_len = n;
    return buf;
}

static int usage(void)
{
    fputs("usage: notify_send mail HOST PORT SECURITY FROM TO[,TO...] [options]\n"
          "       notify_send hook URL FORMAT [options]\n",
          stderr);
    return 3;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ca", required_argument, NULL, 'c'},
        {"user", required_argument, NULL, 'u'},
        {"token-env", no_argument, NULL, 'k'},
        {"card", required_argument, NULL, 'l'},
        {"failed", required_argument, NULL, 'f'},
        {"text-file", required_argument, NULL, 't'},
        {"attach", required_argument, NULL, 'a'},
        {"timeout", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    const char *ca = NULL, *user = NULL, *card = "EOS_DIGITAL", *text_file = NULL, *attach = NULL;
    bool token = false;
    long failed = 0, timeout = 10;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'c':
            ca = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        case 'k':
            token = true;
            break;
        case 'l':
            card = optarg;
            break;
        case 'f':
            failed = strtol(optarg, &end, 10);
            if (*end || failed < 0 || failed > FILES_MAX)
                return usage();
            break;
        case 't':
            text_file = optarg;
            break;
        case 'a':
            attach = optarg;
            break;
        case 'T':
            timeout = strtol(optarg, &end, 10);
            if (*end || timeout < 1)
                return usage();
            break;
        default:
            return usage();
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1)
        return usage();

    static char names[FILES_MAX][32];
    const char *files[FILES_MAX];
    for (long i = 0; i < failed; i++) {
        snprintf(names[i], sizeof(names[i]), "DCIM/100CANON/IMG_%04ld.CR2", i);
        files[i] = names[i];
    }
    const struct notify_dest dests[] = {{"unraid", "ok"}, {"immich", "3 files failed"}};
    struct notify_session s = {
        .card = card,
        .result = failed ? NOTIFY_PARTIAL : NOTIFY_COMPLETED,
        .copied = 120,
        .already = 30,
        .duplicates = 2,
        .failed = (uint64_t)failed,
        .bytes = 3500000000ULL,
        .duration = 754,
        .dests = dests,
        .n_dests = 2,
        .failed_files = files,
        .n_failed_files = (size_t)failed,
        .safe_to_remove = failed == 0,
        .dashboard_url = "http://snapsync.local:8080/",
    };
    struct notify_msg m = {0};
    struct error err = {0};
    char *message = NULL, *text = NULL, *att = NULL;
    size_t len = 0, att_len = 0;
    int r = notify_msg_build(&s, &m, &err);
    if (r < 0)
        goto out;
    if (text_file && !(text = read_file(text_file, &len))) {
        r = error_set_errno(&err, -errno, "cannot read %s", text_file);
        goto out;
    }
    if (strcmp(argv[0], "mail") == 0 && argc == 6) {
        char *to_list = argv[5];
        const char *to[TO_MAX];
        size_t n_to = 0;
        for (char *p = to_list; p && n_to < TO_MAX;) {
            to[n_to++] = p;
            p = strchr(p, ',');
            if (p)
                *p++ = '\0';
        }
        struct notify_mail_attachment a = {.filename = "report.txt", .content_type = "text/plain"};
        if (attach) {
            if (!(att = read_file(attach, &att_len))) {
                r = error_set_errno(&err, -errno, "cannot read %s", attach);
                goto out;
            }
            a.data = att;
            a.len = att_len;
        }
        struct notify_mail_content mc = {
            .from = argv[4],
            .to = to,
            .n_to = n_to,
            .subject = m.subject,
            .text = text ? text : m.text,
            .html = m.html,
            .attachment = attach ? &a : NULL,
            .date = time(NULL),
        };
        struct notify_mail_server srv = {
            .host = argv[1],
            .port = (int)strtol(argv[2], NULL, 10),
            .username = user,
            .password = getenv("SMTP_PASSWORD"),
            .ca_file = ca,
            .connect_timeout = timeout,
            .timeout = timeout,
        };
        if (notify_mail_security_parse(argv[3], &srv.security) < 0)
            return usage();
        r = notify_mail_format(&mc, &message, &len, &err);
        if (r == 0)
            r = notify_mail_send(&srv, mc.from, to, n_to, message, len, &err);
    } else if (strcmp(argv[0], "hook") == 0 && argc == 3) {
        struct notify_hook h = {
            .url = argv[1],
            .token = token ? getenv("NOTIFY_TOKEN") : NULL,
            .ca_file = ca,
            .connect_timeout = timeout,
            .timeout = timeout,
        };
        if (notify_hook_format_parse(argv[2], &h.format) < 0)
            return usage();
        r = notify_hook_send(&h, &m, &err);
    } else {
        r = -EINVAL;
        notify_msg_done(&m);
        return usage();
    }
out:
    if (r == 0)
        puts("sent");
    else
        printf("error %s: %s\n", notify_error_transient(r) ? "transient" : "permanent", err.msg);
    free(message);
    free(text);
    free(att);
    notify_msg_done(&m);
    return r == 0 ? 0 : notify_error_transient(r) ? 1 : 2;
}
