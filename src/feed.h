/* SPDX-License-Identifier: MIT */
/*
 * Feeds: a stream of known length, handed over in chunks as SnapSync reads it, served to one
 * local reader over HTTP (feed.c, libmicrohttpd on 127.0.0.1). This is how the rclone destination
 * (dest_rclone.c) gives rclone a file with its size known up front: rclone copies
 * `:http,url='http://127.0.0.1:<port>/':<path>` into the remote, so its backend knows the size
 * (one PUT on S3 below its upload cutoff, no spooling to a temporary file on backends without
 * streaming uploads) while the card is still read only once.
 *
 * A feed_server is one daemon; a feed is one stream at /<path>, a random 128-bit name, for as
 * long as its owner keeps it. HEAD says its length (and Last-Modified, its mtime); one GET reads
 * it from the start to the end: a second GET once bytes were taken is refused (409), a Range
 * (416), a method other than GET and HEAD (405), an unknown path (404).
 *
 * The owner (one thread) offers a chunk (feed_offer), waits until feed_taken says the reader took
 * all of it (or will not: it went away, or the feed was cancelled), then feed_withdraw, and the
 * chunk is its own again. The reader's thread calls the owner's wake function each time it took
 * a chunk whole, so the owner can sleep in another event loop (curl's) meanwhile. feed_free
 * cancels: a reader waiting for bytes ends its response with an error, and the feed's memory
 * goes when both sides let go. Threads: the owner's calls on a feed from one thread at a time;
 * feed_server_stop after every feed was freed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct feed_server;
struct feed;

#define FEED_PATH_MAX 33 /* 32 hex digits */

/* Starts the daemon on 127.0.0.1 and a port the kernel picks; idle_timeout_s: seconds a
 * connection may sit idle (between requests) before it is closed. */
int feed_server_start(unsigned idle_timeout_s, struct feed_server **ret, struct error *err);
int feed_server_port(const struct feed_server *s);
/* Stops the daemon (waking readers that wait) and frees it; NULL is fine. */
void feed_server_stop(struct feed_server *s);

/* A new feed of size bytes, mtime_s (seconds since the epoch; <= 0: none said); wake(wake_arg)
 * is called from the reader's thread when a chunk was taken whole or the reader went away. */
int feed_new(struct feed_server *s, uint64_t size, int64_t mtime_s, void (*wake)(void *arg),
             void *wake_arg, struct feed **ret, struct error *err);
/* Its path below the server's root, without the '/'. */
const char *feed_path(const struct feed *f);
/* Offers buf[0..len) to the reader (borrowed until feed_withdraw). */
void feed_offer(struct feed *f, const void *buf, size_t len);
/* The offered chunk was taken whole, or will not be (the reader went away, the feed was
 * cancelled): check feed_delivered. */
bool feed_taken(struct feed *f);
/* Takes the chunk back; returns the bytes of the stream the reader has taken so far. */
uint64_t feed_withdraw(struct feed *f);
/* The bytes the reader has taken so far. */
uint64_t feed_delivered(struct feed *f);
/* Whether a reader's GET ended before the end of the stream (it gave up or lost its
 * connection). */
bool feed_reader_gone(struct feed *f);
/* Cancels (a waiting reader fails) and lets go; NULL is fine. */
void feed_free(struct feed *f);
