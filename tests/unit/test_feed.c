/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for feeds (feed.h): the real server on 127.0.0.1 read by the real HTTP client
 * (http.h), the way dest_rclone.c uses them: the owner offers a chunk and drives the reader's
 * GET until the chunk is taken (the feed wakes the client's event loop). Checked: the bytes and
 * length of a whole stream, HEAD's Content-Length and Last-Modified, an empty stream, the
 * refusals (unknown path, another method, a Range, a second GET), a reader that goes away
 * mid-stream, and an owner that lets go while the reader waits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "feed.h"
#include "http.h"

#define LEN (1024 * 1024 + 17)
#define PIECE 100000

static struct feed_server *server;
static uint8_t data[LEN];

static int setup(void **state)
{
    (void)state;
    struct error err;
    for (size_t i = 0; i < LEN; i++)
        data[i] = (uint8_t)(i * 131 + i / 251);
    return feed_server_start(60, &server, &err);
}

static int teardown(void **state)
{
    (void)state;
    feed_server_stop(server);
    return 0;
}

static struct http *client(void)
{
    struct http_options o = {.name = "feed",
                             .section = "test",
                             .connect_timeout = 5,
                             .stall_timeout = 30,
                             .no_proxy = true};
    struct http *h;
    struct error err;
    assert_int_equal(http_new(&o, &h, &err), 0);
    return h;
}

static void url_of(const struct feed *f, char *out, size_t size)
{
    snprintf(out, size, "http://127.0.0.1:%d/%s", feed_server_port(server), feed_path(f));
}

static void wake(void *arg)
{
    http_wakeup(arg);
}

static bool taken(void *arg)
{
    return feed_taken(arg);
}

/* Runs method on url (with one header line or none) on h; its HTTP status. */
static long status_of(struct http *h, const char *method, const char *url, const char *header)
{
    const char *headers[] = {header, NULL};
    bool post = strcmp(method, "POST") == 0;
    struct http_request req = {.method = method,
                               .url = url,
                               .headers = headers,
                               .body = post ? "x" : NULL,
                               .body_len = post ? 1 : 0,
                               .reply_max = LEN + 1};
    long status = 0;
    struct error err;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    return status;
}

/* Starts a GET of f on h (extra: a header line or NULL). */
static void start_get(struct http *h, const struct feed *f, const char *extra, char *url,
                      size_t url_size)
{
    url_of(f, url, url_size);
    const char *headers[] = {extra, NULL};
    struct http_request req = {
        .method = "GET", .url = url, .headers = headers, .reply_max = LEN + 1};
    struct error err;
    assert_int_equal(http_start(h, &req, &err), 0);
}

/* Offers data[off, off+len) and drives h until the reader took it. */
static void offer(struct http *h, struct feed *f, size_t off, size_t len)
{
    struct error err;
    feed_offer(f, data + off, len);
    assert_int_equal(http_drive(h, taken, f, &err), 0);
    assert_int_equal(feed_withdraw(f), off + len);
}

static void test_whole_stream(void **state)
{
    (void)state;
    struct http *h = client();
    struct feed *f;
    struct error err;
    char url[128];
    assert_int_equal(feed_new(server, LEN, 0, wake, h, &f, &err), 0);
    assert_int_equal(strlen(feed_path(f)), FEED_PATH_MAX - 1);
    start_get(h, f, NULL, url, sizeof(url));
    for (size_t off = 0; off < LEN; off += PIECE)
        offer(h, f, off, LEN - off < PIECE ? LEN - off : PIECE);
    assert_int_equal(http_drive(h, NULL, NULL, &err), 0);
    http_end(h);
    assert_int_equal(http_error(h, &err), 0);
    assert_int_equal(http_status(h), 200);
    assert_int_equal(http_reply_len(h), LEN);
    assert_memory_equal(http_reply(h), data, LEN);
    assert_int_equal(feed_delivered(f), LEN);
    assert_false(feed_reader_gone(f));

    /* read whole: a second GET is refused */
    assert_int_equal(status_of(h, "GET", url, NULL), 409);
    feed_free(f);
    /* gone with its owner */
    assert_int_equal(status_of(h, "GET", url, NULL), 404);
    http_free(h);
}

static void test_head_says_length_and_date(void **state)
{
    (void)state;
    struct http *h = client();
    struct feed *f;
    struct error err;
    char url[128];
    /* 2023-07-14 18:30:05 UTC */
    assert_int_equal(feed_new(server, 5000000000ull, 1689359405, wake, h, &f, &err), 0);
    url_of(f, url, sizeof(url));
    static const char *const capture[] = {"content-length", "last-modified", NULL};
    struct http_request req = {.method = "HEAD", .url = url, .reply_max = 1024, .capture = capture};
    long status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    assert_string_equal(http_reply_header(h, "content-length"), "5000000000");
    assert_string_equal(http_reply_header(h, "last-modified"), "Fri, 14 Jul 2023 18:30:05 GMT");
    /* a HEAD takes nothing: the GET may still come */
    assert_int_equal(feed_delivered(f), 0);
    feed_free(f);
    http_free(h);
}

static void test_empty_stream(void **state)
{
    (void)state;
    struct http *h = client();
    struct feed *f;
    struct error err;
    char url[128];
    assert_int_equal(feed_new(server, 0, 0, wake, h, &f, &err), 0);
    url_of(f, url, sizeof(url));
    assert_int_equal(status_of(h, "GET", url, NULL), 200);
    assert_int_equal(http_reply_len(h), 0);
    assert_false(feed_reader_gone(f));
    feed_free(f);
    http_free(h);
}

static void test_refusals(void **state)
{
    (void)state;
    struct http *h = client();
    struct feed *f;
    struct error err;
    char url[160];
    assert_int_equal(feed_new(server, 100, 0, wake, h, &f, &err), 0);
    url_of(f, url, sizeof(url));
    assert_int_equal(status_of(h, "POST", url, NULL), 405);
    assert_int_equal(status_of(h, "GET", url, "Range: bytes=50-99"), 416);

    static const char *const wrong[] = {"/00000000000000000000000000000000", "/", "/../etc",
                                        "/ABCDEF00000000000000000000000000"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        char other[160];
        snprintf(other, sizeof(other), "http://127.0.0.1:%d%s", feed_server_port(server), wrong[i]);
        assert_int_equal(status_of(h, "GET", other, NULL), 404);
    }
    /* nothing was taken by the refusals */
    assert_int_equal(feed_delivered(f), 0);
    feed_free(f);
    http_free(h);
}

/* wake() for an owner without an event loop: a condition variable */
static pthread_mutex_t woken_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t woken_cond = PTHREAD_COND_INITIALIZER;
static unsigned woken;

static void wake_cond(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&woken_lock);
    woken++;
    pthread_cond_broadcast(&woken_cond);
    pthread_mutex_unlock(&woken_lock);
}

/* Waits until f's offered chunk was taken or its reader went away. */
static void wait_taken(struct feed *f)
{
    for (;;) {
        /* feed_taken not under woken_lock: wake_cond runs under the feed's lock */
        pthread_mutex_lock(&woken_lock);
        unsigned seen = woken;
        pthread_mutex_unlock(&woken_lock);
        if (feed_taken(f))
            return;
        pthread_mutex_lock(&woken_lock);
        while (woken == seen)
            pthread_cond_wait(&woken_cond, &woken_lock);
        pthread_mutex_unlock(&woken_lock);
    }
}

static void test_reader_gone_mid_stream(void **state)
{
    (void)state;
    struct feed *f;
    struct error err;
    assert_int_equal(feed_new(server, LEN, 0, wake_cond, NULL, &f, &err), 0);
    /* a reader that takes a little, then resets its connection */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)feed_server_port(server))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    char req[128];
    int n = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", feed_path(f));
    assert_int_equal(write(fd, req, (size_t)n), n);
    feed_offer(f, data, PIECE);
    wait_taken(f);
    assert_int_equal(feed_withdraw(f), PIECE);
    char buf[4096];
    assert_true(read(fd, buf, sizeof(buf)) > 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    /* the server learns it when it sends: the owner keeps offering until it hears */
    size_t off = PIECE;
    while (!feed_reader_gone(f) && off < LEN) {
        size_t k = LEN - off < PIECE ? LEN - off : PIECE;
        feed_offer(f, data + off, k);
        wait_taken(f);
        off = feed_withdraw(f);
    }
    assert_true(feed_reader_gone(f));
    assert_true(feed_delivered(f) < LEN);
    /* another GET would have to start again: refused */
    struct http *h = client();
    char url[128];
    url_of(f, url, sizeof(url));
    assert_int_equal(status_of(h, "GET", url, NULL), 409);
    feed_free(f);
    http_free(h);
}

static void test_owner_lets_go_while_the_reader_waits(void **state)
{
    (void)state;
    struct http *h = client();
    struct feed *f;
    struct error err;
    char url[128];
    assert_int_equal(feed_new(server, LEN, 0, wake, h, &f, &err), 0);
    start_get(h, f, NULL, url, sizeof(url));
    offer(h, f, 0, PIECE);
    feed_free(f);
    /* the response ends short: an error, never a complete reply */
    assert_int_equal(http_drive(h, NULL, NULL, &err), 0);
    http_end(h);
    int r = http_error(h, &err);
    assert_true(r < 0 || http_reply_len(h) < LEN);
    http_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_head_says_length_and_date),
        cmocka_unit_test(test_empty_stream),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_reader_gone_mid_stream),
        cmocka_unit_test(test_owner_lets_go_while_the_reader_waits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
