/* SPDX-License-Identifier: MIT */
/*
 * Feeds (feed.h): libmicrohttpd on 127.0.0.1, one thread per connection, so a reader's content
 * callback may wait for the owner's next chunk on a condition variable. One lock and one
 * condition for the server and all its feeds: a handful of streams at a time, and a stop wakes
 * every waiting reader at once.
 *
 * A feed's memory has a reference for its owner and one for each response serving it (held
 * from MHD_create_response_from_callback to its free callback), so neither side waits for the
 * other to let go: feed_free never blocks on a reader that is slow to notice.
 */
#include "feed.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "hasher.h"
#include "log.h"

#define FEED_CONNECTIONS_MAX 64
#define FEED_BLOCK (256 * 1024) /* bytes libmicrohttpd asks the reader for at once */
#define FEED_STACK_SIZE (256 * 1024)

struct feed_server {
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a chunk offered, a feed cancelled, the server stopping */
    struct feed *feeds;  /* those with an owner */
    bool quit;
};

struct feed {
    struct feed_server *s;
    struct feed *next;
    char path[FEED_PATH_MAX];
    uint64_t size, given; /* given: bytes the reader took */
    int64_t mtime;
    const uint8_t *chunk; /* offered, borrowed */
    size_t chunk_len, chunk_off;
    bool cancelled;   /* the owner let go */
    bool reading;     /* a GET is being served */
    bool reader_gone; /* a GET ended after taking bytes but before the end */
    unsigned refs;
    void (*wake)(void *arg);
    void *wake_arg;
};

/* ---- the server's side ---- */

static void unref_locked(struct feed *f)
{
    if (--f->refs == 0)
        free(f);
}

static void wake_locked(struct feed *f)
{
    if (!f->cancelled && f->wake)
        f->wake(f->wake_arg);
}

static ssize_t on_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct feed *f = cls;
    struct feed_server *s = f->s;
    ssize_t n = MHD_CONTENT_READER_END_WITH_ERROR;
    pthread_mutex_lock(&s->lock);
    while (!f->cancelled && !s->quit && pos == f->given) {
        if (f->chunk && f->chunk_off < f->chunk_len) {
            size_t k = f->chunk_len - f->chunk_off < max ? f->chunk_len - f->chunk_off : max;
            memcpy(buf, f->chunk + f->chunk_off, k);
            f->chunk_off += k;
            f->given += k;
            if (f->chunk_off == f->chunk_len)
                wake_locked(f);
            n = (ssize_t)k;
            break;
        }
        pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void on_response_free(void *cls)
{
    struct feed *f = cls;
    struct feed_server *s = f->s;
    pthread_mutex_lock(&s->lock);
    f->reading = false;
    if (f->given > 0 && f->given < f->size) {
        /* a new GET would have to start again: the bytes it took are gone */
        f->reader_gone = true;
        wake_locked(f);
    }
    unref_locked(f);
    pthread_mutex_unlock(&s->lock);
}

/* A HEAD's body is never read. */
static ssize_t on_read_none(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static bool path_ok(const char *url)
{
    if (!url || url[0] != '/' || strlen(url + 1) != FEED_PATH_MAX - 1)
        return false;
    for (const char *c = url + 1; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **state)
{
    struct feed_server *s = cls;
    (void)version;
    (void)upload_data;
    (void)state;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!head && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    if (*upload_data_size)
        return answer(conn, MHD_HTTP_BAD_REQUEST, "no body expected\n");
    if (!path_ok(url))
        return answer(conn, MHD_HTTP_NOT_FOUND, "no such stream\n");
    if (!head && MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE))
        return answer(conn, MHD_HTTP_RANGE_NOT_SATISFIABLE, "a stream is read whole, once\n");

    pthread_mutex_lock(&s->lock);
    struct feed *f = s->feeds;
    while (f && strcmp(f->path, url + 1) != 0)
        f = f->next;
    if (!f || f->cancelled) {
        pthread_mutex_unlock(&s->lock);
        return answer(conn, MHD_HTTP_NOT_FOUND, "no such stream\n");
    }
    if (!head && (f->reading || f->given > 0)) {
        pthread_mutex_unlock(&s->lock);
        return answer(conn, MHD_HTTP_CONFLICT, "the stream was read already\n");
    }
    uint64_t size = f->size;
    int64_t mtime = f->mtime;
    if (!head) {
        f->reading = true;
        f->refs++;
    }
    pthread_mutex_unlock(&s->lock);

    struct MHD_Response *r =
        head ? MHD_create_response_from_callback(size, FEED_BLOCK, on_read_none, NULL, NULL)
             : MHD_create_response_from_callback(size, FEED_BLOCK, on_read, f, on_response_free);
    if (!r) {
        if (!head)
            on_response_free(f);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    if (mtime > 0) {
        char date[64];
        time_t t = (time_t)mtime;
        struct tm tm;
        if (gmtime_r(&t, &tm) && strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm))
            MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, date);
    }
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

__attribute__((format(printf, 2, 0))) static void on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_library("feed", fmt, ap);
}

int feed_server_start(unsigned idle_timeout_s, struct feed_server **ret, struct error *err)
{
    struct feed_server *s = calloc(1, sizeof(*s));
    if (!s)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)FEED_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT, idle_timeout_s,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)FEED_STACK_SIZE, MHD_OPTION_END);
    if (!s->daemon) {
        int e = errno ? errno : EIO;
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return error_set_errno(err, -e, "cannot listen on 127.0.0.1 for the copies' streams");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    if (s->port <= 0) {
        feed_server_stop(s);
        return error_set(err, -EIO, "cannot tell the port of the copies' streams");
    }
    *ret = s;
    return 0;
}

int feed_server_port(const struct feed_server *s)
{
    return s->port;
}

void feed_server_stop(struct feed_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->quit = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->daemon)
        MHD_stop_daemon(s->daemon); /* joins the connections' threads: no reader is left */
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- the owner's side ---- */

int feed_new(struct feed_server *s, uint64_t size, int64_t mtime_s, void (*wake)(void *arg),
             void *wake_arg, struct feed **ret, struct error *err)
{
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return error_set_errno(err, -errno, "getrandom");
    struct feed *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    hasher_hex(rnd, sizeof(rnd), f->path);
    f->s = s;
    f->size = size;
    f->mtime = mtime_s;
    f->wake = wake;
    f->wake_arg = wake_arg;
    f->refs = 1;
    pthread_mutex_lock(&s->lock);
    f->next = s->feeds;
    s->feeds = f;
    pthread_mutex_unlock(&s->lock);
    *ret = f;
    return 0;
}

const char *feed_path(const struct feed *f)
{
    return f->path;
}

void feed_offer(struct feed *f, const void *buf, size_t len)
{
    pthread_mutex_lock(&f->s->lock);
    f->chunk = buf;
    f->chunk_len = len;
    f->chunk_off = 0;
    pthread_cond_broadcast(&f->s->cond);
    pthread_mutex_unlock(&f->s->lock);
}

bool feed_taken(struct feed *f)
{
    pthread_mutex_lock(&f->s->lock);
    bool r = f->chunk_off == f->chunk_len || f->reader_gone || f->cancelled;
    pthread_mutex_unlock(&f->s->lock);
    return r;
}

uint64_t feed_withdraw(struct feed *f)
{
    pthread_mutex_lock(&f->s->lock);
    f->chunk = NULL;
    f->chunk_len = f->chunk_off = 0;
    uint64_t given = f->given;
    pthread_mutex_unlock(&f->s->lock);
    return given;
}

uint64_t feed_delivered(struct feed *f)
{
    pthread_mutex_lock(&f->s->lock);
    uint64_t given = f->given;
    pthread_mutex_unlock(&f->s->lock);
    return given;
}

bool feed_reader_gone(struct feed *f)
{
    pthread_mutex_lock(&f->s->lock);
    bool r = f->reader_gone;
    pthread_mutex_unlock(&f->s->lock);
    return r;
}

void feed_free(struct feed *f)
{
    if (!f)
        return;
    struct feed_server *s = f->s;
    pthread_mutex_lock(&s->lock);
    f->cancelled = true;
    f->chunk = NULL;
    f->chunk_len = f->chunk_off = 0;
    for (struct feed **p = &s->feeds; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    pthread_cond_broadcast(&s->cond);
    unref_locked(f);
    pthread_mutex_unlock(&s->lock);
}
