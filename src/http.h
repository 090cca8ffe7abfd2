/* SPDX-License-Identifier: MIT */
/*
 * A small HTTP(S) client over libcurl (http.c), shared by the destinations and notifiers that
 * speak HTTP: Immich (dest_immich.c), S3 (dest_s3.c) and the webhooks (notify_hook.c). The mail
 * notifier speaks SMTP through libcurl itself (notify_mail.c).
 *
 * A `struct http` is one transfer at a time on one CURL easy handle driven by its own multi
 * handle. It is reused request after request and keeps its connections alive between them.
 * Threads: any thread may use a handle, one thread at a time (the caller hands it over with its
 * own locking); handles are never shared. http_new initialises libcurl once per process.
 *
 * A request is either run to completion (http_run) or driven step by step (http_start, then
 * http_drive until it is done or the caller's stop callback holds, http_resume after a pause,
 * http_end), which is how a body is streamed from chunks the caller receives one at a time.
 *
 * Limits: the reply body goes into a buffer of at most req->reply_max bytes (a larger reply is
 * read to its end, so the connection stays usable, and refused with -EBADMSG). TLS peers are
 * always verified, against the system's CAs or opts->ca_file. Stalls are timed by us: a transfer
 * fails with -ETIMEDOUT when neither the bytes the peer acknowledged (TCP_INFO) nor the bytes
 * received moved for opts->stall_timeout seconds while it is driven; time between drives (a
 * caller waiting for its own input) never counts.
 *
 * Errors are negative errnos with the detail in struct error (curl's own text quoted):
 * -ETIMEDOUT stall or timeout, -ECONNREFUSED cannot connect or resolve, -ECONNRESET connection
 * lost, -EACCES certificate not trusted, -EINVAL bad URL or protocol, -EBADMSG reply too large,
 * -ENOMEM, -EIO anything else. An HTTP status is not an error here: the caller reads it with
 * http_status and decides.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct http;

#define HTTP_CAPTURE_MAX 4        /* reply headers one request captures */
#define HTTP_HEADER_VALUE_MAX 256 /* a captured value, longer ones are cut */

/* What a read callback returns: bytes written into buf (0 = end of body), or one of these. */
#define HTTP_READ_PAUSE ((size_t)0x10000001) /* no data now: http_resume when there is */
#define HTTP_READ_ABORT ((size_t)0x10000000) /* fail the transfer */

/* Fills buf with at most room bytes of the request body. Called on the thread driving. */
typedef size_t http_read_fn(void *arg, char *buf, size_t room);

/* A request body made of a head, a file handed over in chunks as it is read, and a tail (a
 * multipart form around one file, built by the caller). The caller sets head, tail and size,
 * and before each http_drive the chunk to send (chunk_off 0); the callback advances the offsets. */
struct http_framed {
    const char *head, *tail;
    size_t head_len, head_off, tail_len, tail_off;
    const uint8_t *chunk; /* borrowed until chunk_off reaches chunk_len */
    size_t chunk_len, chunk_off;
    uint64_t size, sent; /* the file's bytes, and those given to libcurl so far */
};

/* An http_read_fn over a struct http_framed (arg): the head, the chunks, the tail;
 * HTTP_READ_PAUSE while the file is not all sent and no chunk is pending. */
size_t http_framed_read(void *arg, char *buf, size_t room);

struct http_options {
    const char *name;     /* the peer in messages: "cannot reach <name>" ("Immich") */
    const char *section;  /* config section for hints: "<section>.timeout" ("immich") */
    const char *ca_file;  /* PEM CA bundle to trust, NULL or "" for the system's (copied) */
    long connect_timeout; /* seconds, > 0 */
    long stall_timeout;   /* seconds without a byte acknowledged or received, > 0 */
    long total_timeout;   /* seconds for a whole request, 0 for none */
    bool no_proxy;        /* never through a proxy of the environment (http_proxy ...): a
                           * server of our own on loopback */
    /* AWS Signature V4 (S3): CURLOPT_AWS_SIGV4's "aws:amz:<region>:<service>", NULL for none;
     * then credentials is "<key id>:<secret>" (a secret: copied, wiped at http_free). The
     * request names its payload hash in an "x-amz-content-sha256" header, which libcurl signs. */
    const char *aws_sigv4;
    const char *credentials;
};

struct http_request {
    const char *method;         /* "GET", "POST", "PUT", "DELETE", "HEAD" (no reply body) */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const void *body;           /* a body in memory (borrowed until the transfer ends) */
    size_t body_len;
    http_read_fn *read; /* or a streamed body (body must be NULL) */
    void *read_arg;
    int64_t body_size;          /* streamed body's length, -1 unknown (chunked) */
    size_t reply_max;           /* ceiling of the reply body, > 0 */
    const char *const *capture; /* reply header names to keep, NULL-terminated, at most
                                 * HTTP_CAPTURE_MAX, or NULL */
};

/* A new handle with opts (copied). 0, or -ENOMEM, -EIO (libcurl cannot be initialised), -EINVAL
 * (ca_file too long). *ret is the caller's, freed with http_free. */
int http_new(const struct http_options *opts, struct http **ret, struct error *err);

/* Ends a transfer in progress and frees h. NULL-safe. */
void http_free(struct http *h);

/* Runs req to completion: http_start, http_drive, http_end and http_error. *ret_status is the
 * HTTP status of the final reply (written on success only). */
int http_run(struct http *h, const struct http_request *req, long *ret_status, struct error *err);

/* Starts req on h, abandoning a transfer still attached. The URL and headers are copied;
 * req->body and the read callback's state must live until http_end, the capture names until the
 * next start. 0, or -ENOMEM, -EIO. */
int http_start(struct http *h, const struct http_request *req, struct error *err);

/* Drives the transfer until it is done or stop(arg) holds (checked after each step; NULL for
 * never). 0, or -EIO when libcurl's multi interface fails; the transfer's own outcome is
 * http_done/http_error. */
int http_drive(struct http *h, bool (*stop)(void *arg), void *arg, struct error *err);

/* Makes an http_drive that waits on h return to check its stop callback now. Any thread. */
void http_wakeup(struct http *h);

/* Restarts the stall clock (the caller had its own waiting to do) and unpauses a transfer whose
 * read callback returned HTTP_READ_PAUSE. */
void http_resume(struct http *h);

/* Detaches the transfer from the multi handle: a transfer not done is abandoned. The reply, the
 * status and the outcome stay readable until the next start. Idempotent. */
void http_end(struct http *h);

/* Whether the transfer finished (well or not). */
bool http_done(const struct http *h);

/* 0 when the finished transfer got a whole reply (whatever its status), else its error as above;
 * also -EBADMSG when the reply passed reply_max. err may be NULL. */
int http_error(const struct http *h, struct error *err);

/* The HTTP status of the last reply, 0 before one arrived. */
long http_status(const struct http *h);

/* Whether the whole reply (status >= 200, body of the announced Content-Length) arrived, even
 * while the request body is still being sent (a server answering early). */
bool http_reply_complete(const struct http *h);

/* The reply body so far, NUL-terminated, borrowed until the next start; and its length. */
const char *http_reply(const struct http *h);
size_t http_reply_len(const struct http *h);

/* The value of a captured reply header (case-insensitive name, control characters replaced), or
 * NULL when the reply had none. Borrowed until the next start. */
const char *http_reply_header(const struct http *h, const char *name);
