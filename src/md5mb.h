/* SPDX-License-Identifier: MIT */
/*
 * Multi-buffer MD5 (RFC 1321): up to MD5MB_LANES_MAX independent MD5 streams computed together,
 * one stream per SIMD lane, so several files share the cost of one core's MD5 steps. The kinds:
 * SSE2 (4 lanes, every x86-64), AVX2 (8 lanes), AVX-512VL (8 lanes, with its rotate and
 * three-input logic instructions), NEON (4 lanes, arm64) and a portable scalar one (1 lane, the
 * reference). Which of them the CPU runs is found at run time (md5mb_best).
 *
 * Use: md5mb_feed hands each lane the next bytes of its stream (borrowed, not copied), md5mb_run
 * consumes all that was fed, stepping one 64-byte block of every lane that has one at a time;
 * md5mb_final pads a lane's stream and gives its digest. Lanes are independent: each starts,
 * is fed and ends on its own, with streams of any lengths.
 *
 * An md5mb is not locked: one thread at a time (the caller's lock if it is shared).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MD5MB_LANES_MAX 8

struct md5mb;

enum md5mb_kind {
    MD5MB_AUTO = 0, /* md5mb_best() */
    MD5MB_SCALAR,
    MD5MB_SSE2,
    MD5MB_AVX2,
    MD5MB_AVX512,
    MD5MB_NEON,
};

/* Whether this build on this CPU can run kind (MD5MB_AUTO and MD5MB_SCALAR: always). */
bool md5mb_supported(enum md5mb_kind kind);

/* The kind with the most lanes this CPU runs, the fastest first: AVX-512VL, AVX2, SSE2 on
 * x86-64, NEON on arm64, else scalar. */
enum md5mb_kind md5mb_best(void);

/* "scalar", "sse2", "avx2", "avx512", "neon" ("auto" for MD5MB_AUTO); static. */
const char *md5mb_kind_name(enum md5mb_kind kind);

/* An md5mb of kind (MD5MB_AUTO: md5mb_best()), every lane at the start of an empty stream.
 * *ret is the caller's (md5mb_free). -ENOTSUP when this CPU or build cannot run kind, -ENOMEM. */
int md5mb_new(struct md5mb **ret, enum md5mb_kind kind, struct error *err);

/* NULL-safe. */
void md5mb_free(struct md5mb *m);

/* Its kind (never MD5MB_AUTO) and number of lanes (1..MD5MB_LANES_MAX). */
enum md5mb_kind md5mb_kind(const struct md5mb *m);
unsigned md5mb_lanes(const struct md5mb *m);

/* Starts a new, empty stream in lane, discarding what it held (fed bytes included). */
void md5mb_reset(struct md5mb *m, unsigned lane);

/* Hands lane its stream's next len bytes. data is borrowed until the next md5mb_run or
 * md5mb_final of that lane; a lane holds one such piece at a time (feeding a lane again before
 * either is a programmer error). len 0 is allowed. */
void md5mb_feed(struct md5mb *m, unsigned lane, const void *data, size_t len);

/* Whether lane holds fed bytes not yet consumed. */
bool md5mb_pending(const struct md5mb *m, unsigned lane);

/* Consumes every lane's fed bytes: whole blocks in SIMD steps over the lanes that have one (the
 * others keep their state), a tail under 64 bytes kept in the lane for its next bytes. Afterwards
 * no fed data is referenced. */
void md5mb_run(struct md5mb *m);

/* Consumes lane's fed bytes alone, with the portable kernel (the other lanes untouched): for a
 * lane that has no company, where a SIMD step would cost more than the scalar one. */
void md5mb_run_lane(struct md5mb *m, unsigned lane);

/* Consumes what lane still holds (alone), pads it and writes the MD5 of everything fed to lane
 * since its last reset to ret; the lane then starts a new, empty stream. */
void md5mb_final(struct md5mb *m, unsigned lane, uint8_t ret[16]);
