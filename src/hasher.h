/* SPDX-License-Identifier: MIT */
/*
 * One-pass MD5 + SHA-1 over a stream of chunks (OpenSSL EVP). MD5 is what destinations verify
 * with; SHA-1 is what Immich dedups by. Both are computed from the same bytes in one read.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct hasher_digest {
    uint8_t md5[16];
    uint8_t sha1[20];
    char md5_hex[33];
    char sha1_hex[41];
};

struct hasher;

/* A hasher ready for hasher_update. *ret is the caller's (hasher_free). -ENOMEM, -EIO. */
int hasher_new(struct hasher **ret, struct error *err);

/* Feeds len bytes. -EIO on an OpenSSL failure. */
int hasher_update(struct hasher *h, const void *data, size_t len, struct error *err);

/* Writes both digests to ret and resets the hasher for the next stream. */
int hasher_final(struct hasher *h, struct hasher_digest *ret, struct error *err);

/* Starts a new stream, discarding what was fed. */
int hasher_reset(struct hasher *h, struct error *err);

/* NULL-safe. */
void hasher_free(struct hasher *h);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void hasher_hex(const uint8_t *bytes, size_t len, char *out);

/* MD5 of a whole file read from fd from offset 0 (pread, buffered through buf of bufsize bytes).
 * Used to verify copies; ret_hex gets 33 bytes. */
int hasher_md5_fd(int fd, void *buf, size_t bufsize, char ret_hex[33], struct error *err);
