/* SPDX-License-Identifier: MIT */
/*
 * One-pass MD5 + SHA-1 + XXH3-128 over a stream of chunks (OpenSSL EVP, libxxhash). MD5 and
 * SHA-1 are what the database deduplicates by, SHA-1 is what Immich knows an asset by, MD5 is
 * what S3 checks; XXH3-128 is what file destinations verify their read-back with (a changed
 * byte is found as surely, at a small fraction of MD5's CPU: docs/performance.md). All are
 * computed from the same bytes in one read.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct hasher_digest {
    uint8_t md5[16];
    uint8_t sha1[20];
    uint8_t xxh128[16]; /* canonical (big-endian) form, as xxhsum -H2 and ASC MHL write it */
    char md5_hex[33];
    char sha1_hex[41];
    char xxh128_hex[33];
};

struct hasher;

/* A hasher ready for hasher_update. *ret is the caller's (hasher_free). -ENOMEM, -EIO. */
int hasher_new(struct hasher **ret, struct error *err);

/* Feeds len bytes. -EIO on an OpenSSL failure. */
int hasher_update(struct hasher *h, const void *data, size_t len, struct error *err);

/* Writes the three digests to ret and resets the hasher for the next stream. */
int hasher_final(struct hasher *h, struct hasher_digest *ret, struct error *err);

/* Starts a new stream, like hasher_reset, that computes SHA-1 when on (as from hasher_new) or
 * not, as the streams after it do until the next call. Off, hasher_final gives sha1 zeroed and
 * sha1_hex "" (docs/design.md, "Hashes": SHA-1 only for a consumer). -EIO. */
int hasher_set_sha1(struct hasher *h, bool on, struct error *err);

/* Starts a new stream, discarding what was fed. */
int hasher_reset(struct hasher *h, struct error *err);

/* NULL-safe. */
void hasher_free(struct hasher *h);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void hasher_hex(const uint8_t *bytes, size_t len, char *out);

/* XXH3-128 of a whole file read from fd from offset 0 (pread, buffered through buf of bufsize
 * bytes), as lower-case hex of its canonical form into ret_hex (33 bytes). Used to read copies
 * back and compare them with hasher_digest.xxh128_hex. -ENOMEM, a read's negative errno. */
int hasher_xxh128_fd(int fd, void *buf, size_t bufsize, char ret_hex[33], struct error *err);

/* An XXH3-128 stream on its own, for read-backs that are not file descriptors (SMB). */
struct hasher_xxh128;

/* A stream ready for hasher_xxh128_update; *ret is the caller's (hasher_xxh128_free). -ENOMEM. */
int hasher_xxh128_new(struct hasher_xxh128 **ret, struct error *err);

/* Feeds len bytes. Cannot fail. */
void hasher_xxh128_update(struct hasher_xxh128 *x, const void *data, size_t len);

/* Lower-case hex of the canonical digest of what was fed into ret_hex (33 bytes). */
void hasher_xxh128_final(struct hasher_xxh128 *x, char ret_hex[33]);

/* NULL-safe. */
void hasher_xxh128_free(struct hasher_xxh128 *x);
