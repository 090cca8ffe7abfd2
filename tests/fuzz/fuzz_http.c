/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the dashboard's HTTP handling: the input is sent as it is, as the bytes of
 * one connection, to the real web server (libmicrohttpd and web.c's routing, framing checks,
 * query and body parsing, the handlers) listening on 127.0.0.1 with a token, over a database
 * holding one session. The answer must be an HTTP response or a closed connection; ASan and
 * UBSan in the fuzz build catch the rest. An event stream (GET /api/events) never ends: the
 * answer is read for at most a second.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "web.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int port;
static char dir[] = "/tmp/snapsync-fuzz-http-XXXXXX";

static void remove_dir(void)
{
    static const char *const names[] = {"snapsync.db", "snapsync.db-wal", "snapsync.db-shm"};
    char path[sizeof(dir) + 32];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void start_server(void)
{
    static struct config *cfg;
    static struct web *w;
    if (!mkdtemp(dir))
        abort();
    atexit(remove_dir);
    char yaml[512];
    int n = snprintf(yaml, sizeof(yaml),
                     "service:\n  database_path: %s/snapsync.db\n  web_ui_bind: 127.0.0.1\n"
                     "  web_ui_token: fuzz-token-1234\n",
                     dir);
    struct error err;
    if (config_parse_buffer("fuzz", yaml, (size_t)n, &cfg, &err) != 0)
        goto fail;
    struct db *db;
    int64_t card, session;
    if (db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err) != 0 ||
        db_card_upsert(db, "fuzz-card-uuid", "FUZZ", &card, &err) != 0 ||
        db_session_begin(db, card, "/card", &session, &err) != 0)
        goto fail;
    db_close(db);
    if (web_new(cfg, 0, NULL, &w, &err) != 0 || web_start(w, &err) != 0)
        goto fail;
    port = web_port(w);
    return;
fail:
    fprintf(stderr, "fuzz_http: %s\n", err.msg);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!port) {
        log_set_level(LOG_LEVEL_ERROR); /* not a line per request */
        start_server();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t k = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (k <= 0)
            break; /* the server answered and closed early */
        off += (size_t)k;
    }
    shutdown(fd, SHUT_WR);
    char buf[16384], first[9] = "";
    size_t got = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            1000 - (long)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t k = recv(fd, buf, sizeof(buf), 0);
        if (k <= 0)
            break;
        for (ssize_t i = 0; i < k && got < 8; i++)
            first[got++] = buf[i];
    }
    close(fd);
    if (got > 0 && got < 8 && memcmp(first, "HTTP/1.", got) != 0)
        abort();
    if (got >= 8 && memcmp(first, "HTTP/1.", 7) != 0) {
        fprintf(stderr, "fuzz_http: the answer is no HTTP response: '%.8s'\n", first);
        abort();
    }
    return 0;
}
