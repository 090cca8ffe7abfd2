/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the HTTP client (http.h) against a real HTTP server: libmicrohttpd in this
 * process on 127.0.0.1, a port the OS picks. Paths: /get (a known body with an ETag), /put (echoes
 * the length and an FNV-1a hash of the body it received), /stall (10 bytes of a 100-byte reply,
 * then nothing until the test releases it), /signed/... (keeps the Authorization header and the
 * headers it names as signed, for the test to check the AWS Signature V4 itself).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "http.h"

#define GET_LEN 10000
#define PUT_LEN (1024 * 1024 + 17)
#define PIECE (100 * 1000)

static struct MHD_Daemon *daemon_;
static char base[64];
static char get_body[GET_LEN];
static pthread_mutex_t stall_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stall_cond = PTHREAD_COND_INITIALIZER;
static bool stall_released;

/* what /signed saw, under signed_lock */
static pthread_mutex_t signed_lock = PTHREAD_MUTEX_INITIALIZER;
static char signed_auth[512];
static char signed_headers[1024]; /* canonical: "name:value\n" for each signed header */

static uint64_t fnv1a(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static unsigned char put_byte(size_t i)
{
    return (unsigned char)(i * 31 + i / 7);
}

struct upload {
    uint64_t hash;
    size_t len;
};

/* /stall: 10 bytes, then waits (bounded) until the test releases it, then fails the reply. */
static ssize_t stall_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    if (pos == 0 && max >= 10) {
        memset(buf, 's', 10);
        return 10;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&stall_lock);
    while (!stall_released)
        if (pthread_cond_timedwait(&stall_cond, &stall_lock, &until) != 0)
            break;
    pthread_mutex_unlock(&stall_lock);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result reply(struct MHD_Connection *c, struct MHD_Response *resp)
{
    enum MHD_Result r = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    if (strcmp(url, "/put") == 0 && strcmp(method, "PUT") == 0) {
        struct upload *u = *con_cls;
        if (!u) {
            u = calloc(1, sizeof(*u));
            if (!u)
                return MHD_NO;
            u->hash = 0xcbf29ce484222325ull;
            *con_cls = u;
            return MHD_YES;
        }
        if (*data_size) {
            u->hash = fnv1a(u->hash, data, *data_size);
            u->len += *data_size;
            *data_size = 0;
            return MHD_YES;
        }
        char text[64];
        int n = snprintf(text, sizeof(text), "%zu %016llx", u->len, (unsigned long long)u->hash);
        return reply(c, MHD_create_response_from_buffer((size_t)n, text, MHD_RESPMEM_MUST_COPY));
    }
    if (strcmp(url, "/get") == 0) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(GET_LEN, get_body, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "ETag", "\"v1-abc\"");
        return reply(c, resp);
    }
    if (strncmp(url, "/signed/", 8) == 0) {
        if (!*con_cls) { /* headers first; the body (if any) is read and dropped */
            *con_cls = calloc(1, sizeof(struct upload));
            return *con_cls ? MHD_YES : MHD_NO;
        }
        if (*data_size) {
            *data_size = 0;
            return MHD_YES;
        }
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        const char *sh = auth ? strstr(auth, "SignedHeaders=") : NULL;
        pthread_mutex_lock(&signed_lock);
        snprintf(signed_auth, sizeof(signed_auth), "%s", auth ? auth : "");
        signed_headers[0] = '\0';
        for (const char *p = sh ? sh + 14 : ""; *p && *p != ',';) {
            char name[64];
            size_t n = strcspn(p, ";,");
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
            size_t at = strlen(signed_headers);
            snprintf(signed_headers + at, sizeof(signed_headers) - at, "%s:%s\n", name, v ? v : "");
            p += n;
            if (*p == ';')
                p++;
        }
        pthread_mutex_unlock(&signed_lock);
        return reply(c, MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT));
    }
    if (strcmp(url, "/stall") == 0)
        return reply(c, MHD_create_response_from_callback(100, 64, stall_reader, NULL, NULL));
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static int server_start(void **state)
{
    (void)state;
    for (size_t i = 0; i < GET_LEN; i++)
        get_body[i] = (char)('a' + i % 26);
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                   MHD_USE_POLL | MHD_USE_ERROR_LOG,
                               0, NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                               on_completed, NULL, MHD_OPTION_END);
    if (!daemon_)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || !info->port)
        return -1;
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", (unsigned)info->port);
    return 0;
}

static int server_stop(void **state)
{
    (void)state;
    pthread_mutex_lock(&stall_lock);
    stall_released = true;
    pthread_cond_broadcast(&stall_cond);
    pthread_mutex_unlock(&stall_lock);
    MHD_stop_daemon(daemon_);
    return 0;
}

static struct http *client(long stall)
{
    struct http_options o = {
        .name = "the test server",
        .section = "test",
        .connect_timeout = 5,
        .stall_timeout = stall,
    };
    struct http *h = NULL;
    struct error err = {0};
    assert_int_equal(http_new(&o, &h, &err), 0);
    return h;
}

static void url_of(char *out, size_t size, const char *path)
{
    snprintf(out, size, "%s%s", base, path);
}

static void test_get_bounded(void **state)
{
    (void)state;
    struct http *h = client(10);
    char url[128];
    url_of(url, sizeof(url), "/get");
    static const char *const capture[] = {"etag", NULL};
    struct http_request req = {
        .method = "GET", .url = url, .reply_max = GET_LEN, .capture = capture};
    struct error err = {0};
    long status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    assert_int_equal(http_reply_len(h), GET_LEN);
    assert_memory_equal(http_reply(h), get_body, GET_LEN);
    assert_string_equal(http_reply_header(h, "ETag"), "\"v1-abc\"");
    assert_null(http_reply_header(h, "Location"));
    assert_true(http_reply_complete(h));

    /* one byte over the ceiling: refused, and the handle stays usable */
    req.reply_max = GET_LEN - 1;
    status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), -EBADMSG);
    assert_int_equal(status, 0);
    assert_non_null(strstr(err.msg, "larger than 9999 bytes"));
    req.reply_max = GET_LEN;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(http_reply_len(h), GET_LEN);

    /* HEAD: the headers, no body */
    req.method = "HEAD";
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    assert_int_equal(http_reply_len(h), 0);
    assert_string_equal(http_reply_header(h, "etag"), "\"v1-abc\"");
    http_free(h);
}

/* A streamed body handed over piece by piece, as a destination receives chunks. */
struct stream {
    size_t at, piece_end, total;
    bool pauses;
};

static size_t stream_read(void *arg, char *buf, size_t room)
{
    struct stream *s = arg;
    size_t n = 0;
    while (n < room && s->at < s->piece_end)
        buf[n++] = (char)put_byte(s->at++);
    if (n == 0 && s->at < s->total)
        return s->pauses ? HTTP_READ_PAUSE : HTTP_READ_ABORT;
    return n;
}

static bool piece_used(void *arg)
{
    const struct stream *s = arg;
    return s->at == s->piece_end;
}

static void expect_echo(struct http *h, size_t len)
{
    uint64_t want = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = put_byte(i);
        want = fnv1a(want, &b, 1);
    }
    char text[64];
    snprintf(text, sizeof(text), "%zu %016llx", len, (unsigned long long)want);
    assert_string_equal(http_reply(h), text);
}

static void test_put_streamed(void **state)
{
    (void)state;
    struct http *h = client(10);
    char url[128];
    url_of(url, sizeof(url), "/put");
    static const char *const headers[] = {"Content-Type: application/octet-stream",
                                          "Expect:", NULL};
    struct error err = {0};

    /* known length, paused whenever the piece is used up */
    struct stream s = {.total = PUT_LEN, .pauses = true};
    struct http_request req = {.method = "PUT",
                               .url = url,
                               .headers = headers,
                               .read = stream_read,
                               .read_arg = &s,
                               .body_size = PUT_LEN,
                               .reply_max = 4096};
    assert_int_equal(http_start(h, &req, &err), 0);
    while (s.piece_end < s.total) {
        s.piece_end = s.piece_end + PIECE < s.total ? s.piece_end + PIECE : s.total;
        http_resume(h);
        assert_int_equal(http_drive(h, piece_used, &s, &err), 0);
    }
    http_resume(h);
    assert_int_equal(http_drive(h, NULL, NULL, &err), 0);
    http_end(h);
    assert_true(http_done(h));
    assert_int_equal(http_error(h, &err), 0);
    assert_int_equal(http_status(h), 200);
    expect_echo(h, PUT_LEN);

    /* unknown length (chunked), all at once */
    struct stream all = {.total = PUT_LEN, .piece_end = PUT_LEN};
    req.read_arg = &all;
    req.body_size = -1;
    long status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    expect_echo(h, PUT_LEN);
    http_free(h);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_stall_times_out(void **state)
{
    (void)state;
    struct http *h = client(1);
    char url[128];
    url_of(url, sizeof(url), "/stall");
    struct http_request req = {.method = "GET", .url = url, .reply_max = 4096};
    struct error err = {0};
    long status = 0;
    double t0 = now();
    assert_int_equal(http_run(h, &req, &status, &err), -ETIMEDOUT);
    assert_true(now() - t0 < 10);
    assert_string_equal(err.msg, "no progress for 1 s (test.timeout)");
    assert_int_equal(http_reply_len(h), 10);
    http_free(h);
}

static bool reply_started(void *arg)
{
    return http_reply_len(arg) > 0;
}

static void test_stop_ends_transfer(void **state)
{
    (void)state;
    struct http *h = client(60);
    char url[128];
    url_of(url, sizeof(url), "/stall");
    struct http_request req = {.method = "GET", .url = url, .reply_max = 4096};
    struct error err = {0};
    double t0 = now();
    assert_int_equal(http_start(h, &req, &err), 0);
    assert_int_equal(http_drive(h, reply_started, h, &err), 0);
    assert_false(http_done(h));
    assert_true(now() - t0 < 10);
    assert_int_equal(http_reply_len(h), 10);
    http_end(h);

    /* the handle serves the next request */
    url_of(url, sizeof(url), "/get");
    req.reply_max = GET_LEN;
    long status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    http_free(h);
}

static void test_errors(void **state)
{
    (void)state;
    struct http *h = client(10);
    struct error err = {0};
    long status = 0;
    struct http_request req = {.method = "GET", .url = "ftp://127.0.0.1/x", .reply_max = 10};
    assert_int_equal(http_run(h, &req, &status, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "test.url: "));
    /* a server that closes the connection without a reply */
    char url[128];
    url_of(url, sizeof(url), "/missing");
    req.url = url;
    assert_int_equal(http_run(h, &req, &status, &err), -ECONNRESET);
    http_free(h);
    http_free(NULL);
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;
    assert_non_null(
        HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len));
}

static void sha256_hex(const char *msg, char out[65])
{
    unsigned char d[32];
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(msg, strlen(msg), d, &len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* aws_sigv4: the request libcurl signs carries a signature this test recomputes by the AWS
 * Signature V4 rules from the secret, with the payload hash UNSIGNED-PAYLOAD taken from the
 * request's own header (the body is not hashed), an encoded path and a sorted query. */
static void test_aws_sigv4(void **state)
{
    (void)state;
    struct http_options o = {
        .name = "the test server",
        .section = "test",
        .connect_timeout = 5,
        .stall_timeout = 5,
        .aws_sigv4 = "aws:amz:eu-test-1:s3",
        .credentials = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    };
    struct http *h = NULL;
    struct error err = {0};
    assert_int_equal(http_new(&o, &h, &err), 0);
    char url[256];
    url_of(url, sizeof(url), "/signed/a%20b.jpg?partNumber=1&uploadId=x%2By");
    const char *headers[] = {"x-amz-content-sha256: UNSIGNED-PAYLOAD",
                             "Content-MD5: XUFAKrxLKna5cZ2REBfFkg==", NULL};
    struct http_request req = {.method = "PUT",
                               .url = url,
                               .headers = headers,
                               .body = "hello",
                               .body_len = 5,
                               .reply_max = 64};
    long status = 0;
    assert_int_equal(http_run(h, &req, &status, &err), 0);
    assert_int_equal(status, 200);
    http_free(h);

    pthread_mutex_lock(&signed_lock);
    char auth[512], canon_headers[1024];
    snprintf(auth, sizeof(auth), "%s", signed_auth);
    snprintf(canon_headers, sizeof(canon_headers), "%s", signed_headers);
    pthread_mutex_unlock(&signed_lock);
    /* AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/<date>/eu-test-1/s3/aws4_request,
     * SignedHeaders=..., Signature=<hex> */
    const char *cred = strstr(auth, "Credential=AKIDEXAMPLE/");
    const char *sh = strstr(auth, "SignedHeaders=");
    const char *sig = strstr(auth, "Signature=");
    assert_non_null(cred);
    assert_non_null(sh);
    assert_non_null(sig);
    assert_non_null(strstr(canon_headers, "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"));
    assert_non_null(strstr(canon_headers, "content-md5:"));
    char date[9], amz_date[32] = "", signed_list[256];
    snprintf(date, sizeof(date), "%.8s", cred + strlen("Credential=AKIDEXAMPLE/"));
    snprintf(signed_list, sizeof(signed_list), "%.*s", (int)strcspn(sh + 14, ","), sh + 14);
    const char *d = strstr(canon_headers, "x-amz-date:");
    assert_non_null(d);
    snprintf(amz_date, sizeof(amz_date), "%.*s", (int)strcspn(d + 11, "\n"), d + 11);

    char canonical[2048], hash[65], sts[512];
    snprintf(canonical, sizeof(canonical),
             "PUT\n/signed/a%%20b.jpg\npartNumber=1&uploadId=x%%2By\n%s\n%s\nUNSIGNED-PAYLOAD",
             canon_headers, signed_list);
    sha256_hex(canonical, hash);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/eu-test-1/s3/aws4_request\n%s", amz_date,
             date, hash);
    unsigned char k[32];
    const char *secret = "AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    hmac(secret, strlen(secret), date, k);
    hmac(k, 32, "eu-test-1", k);
    hmac(k, 32, "s3", k);
    hmac(k, 32, "aws4_request", k);
    unsigned char s[32];
    hmac(k, 32, sts, s);
    char want[65];
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", s[i]);
    assert_string_equal(sig + strlen("Signature="), want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_bounded),     cmocka_unit_test(test_put_streamed),
        cmocka_unit_test(test_stall_times_out), cmocka_unit_test(test_stop_ends_transfer),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_aws_sigv4),
    };
    return cmocka_run_group_tests(tests, server_start, server_stop);
}
