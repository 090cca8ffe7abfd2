/* SPDX-License-Identifier: MIT */
/*
 * HTTP(S) client (http.h): one CURL easy handle in its own multi handle per `struct http`.
 *
 * Each request starts from curl_easy_reset (which keeps the live connections) plus the options
 * every request shares: http and https only, HTTP/2 over TLS when offered, peers verified, TCP
 * keep-alive, no signals. The reply body grows into a buffer up to the request's ceiling; the
 * header callback resets it when a new response starts (after a 100 Continue) and keeps
 * Content-Length and the captured headers. Stalls are timed by the progress callback from the
 * bytes curl moved and, through the connection's socket remembered at creation, the bytes the
 * kernel says the peer acknowledged, so a body sitting in a full socket buffer on a slow link
 * does not look like progress and a peer still taking it does not look like a stall.
 */
#include "http.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <linux/tcp.h>

_Static_assert(HTTP_READ_PAUSE == CURL_READFUNC_PAUSE, "HTTP_READ_PAUSE");
_Static_assert(HTTP_READ_ABORT == CURL_READFUNC_ABORT, "HTTP_READ_ABORT");

struct capture {
    const char *name; /* borrowed from the request: compared in the header callback only */
    char value[HTTP_HEADER_VALUE_MAX];
    bool present;
};

struct http {
    CURL *easy;
    CURLM *multi;
    struct http_options opts;
    char ca_file[PATH_MAX];
    char *aws_sigv4;   /* NULL: no signing */
    char *credentials; /* secret, wiped at free */
    struct curl_slist *headers;
    http_read_fn *read;
    void *read_arg;
    bool attached; /* in the multi handle */
    bool paused;
    char *reply;
    size_t reply_len, reply_cap, reply_max;
    bool reply_overflow;
    long resp_clen; /* Content-Length of the reply being received, -1 unknown */
    struct capture capture[HTTP_CAPTURE_MAX];
    size_t n_capture;
    double last_progress; /* monotonic seconds */
    curl_off_t moved;     /* bytes up + down seen by the progress callback */
    uint64_t wire;        /* bytes the peer acknowledged + bytes received, from TCP_INFO */
    curl_socket_t sock;   /* the connection's socket (one per multi handle), or CURL_SOCKET_BAD */
    bool stalled;
    bool done;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct http *h = userdata;
    size_t n = size * nmemb;
    h->last_progress = now_s();
    if (h->reply_len + n > h->reply_max) {
        h->reply_overflow = true;
        return n; /* keep the connection usable; the reply is refused afterwards */
    }
    if (h->reply_len + n + 1 > h->reply_cap) {
        size_t cap = h->reply_cap ? h->reply_cap : 4096;
        while (cap < h->reply_len + n + 1)
            cap *= 2;
        char *p = realloc(h->reply, cap);
        if (!p) {
            h->reply_overflow = true;
            return n;
        }
        h->reply = p;
        h->reply_cap = cap;
    }
    memcpy(h->reply + h->reply_len, data, n);
    h->reply_len += n;
    h->reply[h->reply_len] = '\0';
    return n;
}

/* The value of header line `line` when it is header `name`, trimmed. */
static bool header_is(const char *line, size_t len, const char *name, const char **ret_value,
                      size_t *ret_len)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    *ret_value = v;
    *ret_len = (size_t)(end - v);
    return true;
}

/* Copies a header value, bytes outside printable ASCII as '?', cut to fit. */
static void copy_value(const char *v, size_t len, char *out, size_t size)
{
    size_t n = len < size - 1 ? len : size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = v[i] >= 0x20 && v[i] < 0x7f ? v[i] : '?';
    out[n] = '\0';
}

static void reply_reset(struct http *h)
{
    h->reply_len = 0;
    if (h->reply)
        h->reply[0] = '\0';
    h->resp_clen = -1;
    for (size_t i = 0; i < h->n_capture; i++) {
        h->capture[i].present = false;
        h->capture[i].value[0] = '\0';
    }
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct http *h = userdata;
    size_t n = size * nmemb;
    const char *v;
    size_t vlen;
    h->last_progress = now_s();
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) { /* a new response (after a 100, ...) */
        reply_reset(h);
        return n;
    }
    if (header_is(data, n, "content-length", &v, &vlen)) {
        char tmp[24];
        copy_value(v, vlen, tmp, sizeof(tmp));
        char *end;
        errno = 0;
        long long cl = strtoll(tmp, &end, 10);
        h->resp_clen = (!errno && end != tmp && !*end && cl >= 0) ? (long)cl : -1;
    }
    for (size_t i = 0; i < h->n_capture; i++)
        if (header_is(data, n, h->capture[i].name, &v, &vlen)) {
            copy_value(v, vlen, h->capture[i].value, sizeof(h->capture[i].value));
            h->capture[i].present = true;
        }
    return n;
}

/*
 * Bytes the connection's peer has acknowledged plus bytes received, as the kernel counts them
 * (0 when unknown). curl's counters stop when the last of the body is in the socket buffer, which
 * on a slow link can hold many seconds of upload; the acknowledged count keeps moving while the
 * server takes it, so only a real stall trips the stall timeout.
 */
static uint64_t wire_bytes(curl_socket_t fd)
{
    if (fd == CURL_SOCKET_BAD)
        return 0;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return 0;
    return ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct http *h = userdata;
    (void)dltotal;
    (void)ultotal;
    double t = now_s();
    uint64_t wire = wire_bytes(h->sock);
    if (dlnow + ulnow != h->moved || wire != h->wire) {
        h->moved = dlnow + ulnow;
        h->wire = wire;
        h->last_progress = t;
    } else if (t - h->last_progress > (double)h->opts.stall_timeout) {
        h->stalled = true;
        return 1; /* abort: no byte moved for stall_timeout seconds */
    }
    return 0;
}

/* Remembers the socket of this transfer's connection, for wire_bytes(). */
static int on_sockopt(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
    struct http *h = userdata;
    if (purpose == CURLSOCKTYPE_IPCXN)
        h->sock = fd;
    return CURL_SOCKOPT_OK;
}

static int on_closesocket(void *userdata, curl_socket_t fd)
{
    struct http *h = userdata;
    if (h->sock == fd)
        h->sock = CURL_SOCKET_BAD;
    return close(fd);
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct http *h = userdata;
    size_t n = h->read(h->read_arg, buf, size * nitems);
    if (n == HTTP_READ_PAUSE)
        h->paused = true;
    return n;
}

void http_free(struct http *h)
{
    if (!h)
        return;
    http_end(h);
    curl_easy_cleanup(h->easy);
    curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->headers);
    free(h->reply);
    free(h->aws_sigv4);
    if (h->credentials) {
        explicit_bzero(h->credentials, strlen(h->credentials));
        free(h->credentials);
    }
    free(h);
}

int http_new(const struct http_options *opts, struct http **ret, struct error *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return error_set(err, -EIO, "cannot initialise libcurl: %s",
                         curl_easy_strerror(curl_init_result));
    const char *ca = opts->ca_file ? opts->ca_file : "";
    if (strlen(ca) >= PATH_MAX)
        return error_set(err, -EINVAL, "CA file name too long");
    struct http *h = calloc(1, sizeof(*h));
    if (!h)
        return error_set(err, -ENOMEM, "out of memory");
    h->opts = *opts;
    snprintf(h->ca_file, sizeof(h->ca_file), "%s", ca);
    h->opts.ca_file = h->ca_file;
    h->opts.aws_sigv4 = h->opts.credentials = NULL; /* the copies below are used */
    h->sock = CURL_SOCKET_BAD;
    h->easy = curl_easy_init();
    h->multi = curl_multi_init();
    if (opts->aws_sigv4) {
        h->aws_sigv4 = strdup(opts->aws_sigv4);
        h->credentials = strdup(opts->credentials ? opts->credentials : ":");
    }
    if (!h->easy || !h->multi || (opts->aws_sigv4 && (!h->aws_sigv4 || !h->credentials))) {
        http_free(h);
        return error_set(err, -ENOMEM, "cannot create a CURL handle");
    }
    *ret = h;
    return 0;
}

/* The options every request starts from (curl_easy_reset keeps the connections). */
static void setup(struct http *h, const struct http_request *req)
{
    CURL *e = h->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (h->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, h->opts.connect_timeout);
    if (h->opts.total_timeout > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT, h->opts.total_timeout);
    if (h->opts.no_proxy)
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "snapsync/" SNAPSYNC_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, h);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, h);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
    if (h->aws_sigv4) {
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, h->aws_sigv4);
        curl_easy_setopt(e, CURLOPT_USERPWD, h->credentials);
    }
    const char *m = req->method ? req->method : "GET";
    if (strcmp(m, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(m, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
    } else if (req->read) {
        /* POST sends the body without changing the verb set above (PUT and others) */
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, h);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(req->body_size >= 0 ? req->body_size : -1));
    }
}

int http_start(struct http *h, const struct http_request *req, struct error *err)
{
    http_end(h);
    curl_slist_free_all(h->headers);
    h->headers = NULL;
    for (const char *const *p = req->headers; p && *p; p++) {
        struct curl_slist *t = curl_slist_append(h->headers, *p);
        if (!t)
            return error_set(err, -ENOMEM, "out of memory");
        h->headers = t;
    }
    h->n_capture = 0;
    for (const char *const *p = req->capture; p && *p && h->n_capture < HTTP_CAPTURE_MAX; p++)
        h->capture[h->n_capture++].name = *p;
    h->read = req->read;
    h->read_arg = req->read_arg;
    setup(h, req);
    h->errbuf[0] = '\0';
    h->reply_max = req->reply_max;
    h->reply_overflow = false;
    reply_reset(h);
    h->moved = 0;
    h->stalled = false;
    h->paused = false;
    h->done = false;
    h->result = CURLE_OK;
    h->last_progress = now_s();
    if (curl_multi_add_handle(h->multi, h->easy) != CURLM_OK)
        return error_set(err, -EIO, "cannot start a transfer");
    h->attached = true;
    return 0;
}

int http_drive(struct http *h, bool (*stop)(void *arg), void *arg, struct error *err)
{
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(h->multi, &running);
        if (mc != CURLM_OK)
            return error_set(err, -EIO, "transfer failed: %s", curl_multi_strerror(mc));
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                h->done = true;
                h->result = m->data.result;
            }
        if (h->done)
            return 0;
        if (stop && stop(arg))
            return 0;
        mc = curl_multi_poll(h->multi, NULL, 0, 500, NULL);
        if (mc != CURLM_OK)
            return error_set(err, -EIO, "transfer failed: %s", curl_multi_strerror(mc));
    }
}

void http_wakeup(struct http *h)
{
    curl_multi_wakeup(h->multi);
}

void http_resume(struct http *h)
{
    h->last_progress = now_s();
    if (h->paused) {
        h->paused = false;
        curl_easy_pause(h->easy, CURLPAUSE_CONT);
    }
}

void http_end(struct http *h)
{
    if (h->attached)
        curl_multi_remove_handle(h->multi, h->easy);
    h->attached = false;
}

bool http_done(const struct http *h)
{
    return h->done;
}

long http_status(const struct http *h)
{
    long code = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

bool http_reply_complete(const struct http *h)
{
    return http_status(h) >= 200 && h->resp_clen >= 0 && (size_t)h->resp_clen == h->reply_len;
}

const char *http_reply(const struct http *h)
{
    return h->reply ? h->reply : "";
}

size_t http_reply_len(const struct http *h)
{
    return h->reply_len;
}

const char *http_reply_header(const struct http *h, const char *name)
{
    for (size_t i = 0; i < h->n_capture; i++)
        if (h->capture[i].present && strcasecmp(h->capture[i].name, name) == 0)
            return h->capture[i].value;
    return NULL;
}

int http_error(const struct http *h, struct error *err)
{
    const char *detail = h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->result);
    const char *name = h->opts.name ? h->opts.name : "the server";
    const char *sec = h->opts.section ? h->opts.section : "http";
    switch (h->result) {
    case CURLE_OK:
        if (h->reply_overflow)
            return error_set(err, -EBADMSG, "the reply is larger than %zu bytes", h->reply_max);
        return 0;
    case CURLE_ABORTED_BY_CALLBACK:
        if (h->stalled)
            return error_set(err, -ETIMEDOUT, "no progress for %ld s (%s.timeout)",
                             h->opts.stall_timeout, sec);
        return error_set(err, -EIO, "transfer aborted");
    case CURLE_OPERATION_TIMEDOUT:
        return error_set(err, -ETIMEDOUT, "timed out: %s", detail);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return error_set(err, -ECONNREFUSED, "cannot reach %s: %s", name, detail);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return error_set(err, -ECONNRESET, "connection lost: %s", detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE: {
        char trust[80] = "system CAs";
        if (h->ca_file[0])
            snprintf(trust, sizeof(trust), "not signed by %s.tls_ca_file", sec);
        return error_set(err, -EACCES,
                         "TLS: the server's certificate is not trusted (%s; a self-signed "
                         "server needs its CA in %s.tls_ca_file): %s",
                         trust, sec, detail);
    }
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return error_set(err, -EINVAL, "%s.url: %s", sec, detail);
    default:
        return error_set(err, -EIO, "transfer failed: %s", detail);
    }
}

int http_run(struct http *h, const struct http_request *req, long *ret_status, struct error *err)
{
    int r = http_start(h, req, err);
    if (r == 0)
        r = http_drive(h, NULL, NULL, err);
    http_end(h);
    if (r == 0)
        r = http_error(h, err);
    if (r == 0)
        *ret_status = http_status(h);
    return r;
}

size_t http_framed_read(void *arg, char *buf, size_t room)
{
    struct http_framed *f = arg;
    size_t n = 0;
    while (n < room) {
        if (f->head_off < f->head_len) {
            size_t k = f->head_len - f->head_off;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->head + f->head_off, k);
            f->head_off += k;
            n += k;
        } else if (f->sent < f->size) {
            size_t k = f->chunk_len - f->chunk_off;
            if (k == 0)
                break;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->chunk + f->chunk_off, k);
            f->chunk_off += k;
            f->sent += k;
            n += k;
        } else if (f->tail_off < f->tail_len) {
            size_t k = f->tail_len - f->tail_off;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->tail + f->tail_off, k);
            f->tail_off += k;
            n += k;
        } else {
            break;
        }
    }
    if (n == 0 && f->sent < f->size)
        return HTTP_READ_PAUSE;
    return n;
}
