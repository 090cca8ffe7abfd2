/* SPDX-License-Identifier: MIT */
/* Unit tests for md5mb.c: every kind this CPU runs (and the portable one) against the RFC 1321
 * test suite and against OpenSSL's MD5 on random streams: random lengths (many around the
 * padding's edges, 55/56/63/64 bytes mod 64), random pieces, lanes starting, finishing and
 * resetting at different times, empty streams, a lane finished while bytes are still fed, lanes
 * run alone. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "hasher.h"
#include "md5mb.h"

static const enum md5mb_kind kinds[] = {MD5MB_SCALAR, MD5MB_SSE2, MD5MB_AVX2, MD5MB_AVX512,
                                        MD5MB_NEON};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
    /* xorshift64*: reproducible from the seed above */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

static void openssl_md5(const uint8_t *p, size_t len, uint8_t ret[16])
{
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(p, len, ret, &n, EVP_md5(), NULL), 1);
    assert_int_equal(n, 16);
}

static void test_kinds(void **state)
{
    (void)state;
    enum md5mb_kind best = md5mb_best();
    assert_true(md5mb_supported(best));
    assert_true(md5mb_supported(MD5MB_SCALAR));
    /* SSE2 and NEON are never both there: one kind is refused, whatever the machine */
    assert_false(md5mb_supported(MD5MB_SSE2) && md5mb_supported(MD5MB_NEON));
    struct md5mb *m = NULL;
    struct error err = {0};
    int refused = 0;
    for (size_t k = 0; k < N_KINDS; k++) {
        int r = md5mb_new(&m, kinds[k], &err);
        if (!md5mb_supported(kinds[k])) {
            assert_int_equal(r, -ENOTSUP);
            refused++;
            continue;
        }
        assert_int_equal(r, 0);
        assert_int_equal(md5mb_kind(m), kinds[k]);
        assert_true(md5mb_lanes(m) >= 1 && md5mb_lanes(m) <= MD5MB_LANES_MAX);
        md5mb_free(m);
        m = NULL;
    }
    assert_true(refused >= 1);
    assert_int_equal(md5mb_new(&m, MD5MB_AUTO, NULL), 0);
    assert_int_equal(md5mb_kind(m), best);
#if defined(__x86_64__) || defined(__aarch64__)
    assert_int_not_equal(best, MD5MB_SCALAR); /* SSE2 and NEON are part of the base ISA */
    assert_true(md5mb_lanes(m) >= 4);
#endif
    printf("md5mb: best kind here %s, %u lanes\n", md5mb_kind_name(best), md5mb_lanes(m));
    md5mb_free(m);
    md5mb_free(NULL);
}

/* RFC 1321, A.5, in every lane at once and in one lane among empty ones */
static void test_rfc1321_suite(void **state)
{
    (void)state;
    static const struct {
        const char *in, *md5;
    } v[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    for (size_t k = 0; k < N_KINDS; k++) {
        struct md5mb *m = NULL;
        if (md5mb_new(&m, kinds[k], NULL) < 0)
            continue;
        unsigned lanes = md5mb_lanes(m);
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
            for (unsigned l = 0; l < lanes; l++)
                md5mb_feed(m, l, v[i].in, strlen(v[i].in));
            md5mb_run(m);
            for (unsigned l = 0; l < lanes; l++) {
                uint8_t d[16];
                char hex[33];
                md5mb_final(m, l, d);
                hasher_hex(d, 16, hex);
                assert_string_equal(hex, v[i].md5);
            }
            /* alone, the other lanes idle (they are given zero blocks, their state kept) */
            unsigned l = (unsigned)(i % lanes);
            md5mb_feed(m, l, v[i].in, strlen(v[i].in));
            md5mb_run(m);
            uint8_t d[16];
            char hex[33];
            md5mb_final(m, l, d);
            hasher_hex(d, 16, hex);
            assert_string_equal(hex, v[i].md5);
        }
        md5mb_free(m);
    }
}

/* A length with a good chance of being at the padding's edges. */
static size_t random_length(size_t max)
{
    static const size_t edge[] = {55, 56, 57, 63, 64, 65, 119, 120, 127, 128};
    switch (rnd() % 4) {
    case 0: {
        /* one call per statement: the order of calls in one expression is unspecified */
        size_t blocks = rnd() % 8;
        size_t e = edge[rnd() % (sizeof(edge) / sizeof(edge[0]))];
        return 64 * blocks + e;
    }
    case 1:
        return rnd() % 3 == 0 ? 0 : rnd() % 130;
    default:
        return rnd() % (max + 1);
    }
}

struct stream {
    uint8_t *msg;
    size_t len, off;
    bool busy;
};

/* Random streams in random lanes, fed in random pieces; each lane runs several streams one after
 * the other, so lanes start and finish at different steps. */
struct counts {
    int finished, finished_pending, resets, alone;
};

static void random_streams(enum md5mb_kind kind, int steps, size_t max_len, struct counts *c)
{
    struct md5mb *m = NULL;
    if (md5mb_new(&m, kind, NULL) < 0)
        return;
    unsigned lanes = md5mb_lanes(m);
    struct stream s[MD5MB_LANES_MAX] = {0};
    uint8_t *src = malloc(max_len + 1);
    assert_non_null(src);
    for (size_t i = 0; i <= max_len; i++)
        src[i] = (uint8_t)rnd();
    int finished = 0, finished_pending = 0, resets = 0, alone = 0; /* in this call */
    for (int step = 0; step < steps; step++) {
        for (unsigned l = 0; l < lanes; l++) {
            struct stream *t = &s[l];
            if (!t->busy) {
                if (rnd() % 4 == 0)
                    continue; /* this lane idles for a step */
                t->len = random_length(max_len);
                t->msg = src + rnd() % (max_len + 1 - t->len); /* any alignment */
                t->off = 0;
                t->busy = true;
                if (rnd() % 16 == 0) {                  /* garbage first, then a reset */
                    md5mb_feed(m, l, src, rnd() % 200); /* max_len is larger */
                    if (rnd() % 2)
                        md5mb_run(m);
                    md5mb_reset(m, l);
                    resets++;
                }
            }
            if (t->off < t->len && rnd() % 3 != 0) {
                size_t piece = rnd() % 4 == 0 ? rnd() % 200 : rnd() % (t->len - t->off + 1);
                if (piece > t->len - t->off)
                    piece = t->len - t->off;
                md5mb_feed(m, l, t->msg + t->off, piece);
                t->off += piece;
                if (rnd() % 8 == 0) { /* this lane alone, with the portable kernel */
                    md5mb_run_lane(m, l);
                    assert_false(md5mb_pending(m, l));
                    alone++;
                }
            }
            if (t->off == t->len && rnd() % 2 == 0) {
                uint8_t got[16], want[16];
                finished_pending += md5mb_pending(m, l);
                md5mb_final(m, l, got); /* with or without bytes still fed */
                openssl_md5(t->msg, t->len, want);
                assert_memory_equal(got, want, 16);
                t->busy = false;
                finished++;
            }
        }
        md5mb_run(m);
        for (unsigned l = 0; l < lanes; l++)
            assert_false(md5mb_pending(m, l));
    }
    assert_true(finished >= 10); /* the comparisons above did happen */
    c->finished += finished;
    c->finished_pending += finished_pending;
    c->resets += resets;
    c->alone += alone;
    free(src);
    md5mb_free(m);
}

static void test_random_small(void **state)
{
    (void)state;
    struct counts c = {0};
    for (size_t k = 0; k < N_KINDS; k++)
        random_streams(kinds[k], 3000, 700, &c);
    assert_true(c.finished_pending > 0 && c.resets > 0 && c.alone > 0);
}

static void test_random_large(void **state)
{
    (void)state;
    struct counts c = {0};
    for (size_t k = 0; k < N_KINDS; k++)
        random_streams(kinds[k], 300, 300000, &c);
    assert_true(c.finished_pending > 0 && c.resets > 0 && c.alone > 0);
}

/* Streams of whole blocks fed at once, as a hasher gets 1 MiB chunks: the long multi-block
 * steps, lanes with different numbers of blocks. */
static void test_long_pieces(void **state)
{
    (void)state;
    size_t max = 1 << 20;
    uint8_t *src = malloc(max);
    assert_non_null(src);
    for (size_t i = 0; i < max; i++)
        src[i] = (uint8_t)rnd();
    for (size_t k = 0; k < N_KINDS; k++) {
        struct md5mb *m = NULL;
        if (md5mb_new(&m, kinds[k], NULL) < 0)
            continue;
        unsigned lanes = md5mb_lanes(m);
        size_t len[MD5MB_LANES_MAX];
        for (unsigned l = 0; l < lanes; l++) {
            len[l] = (max >> (l % 4)) - l * 64 - (l % 3) * 17;
            md5mb_feed(m, l, src + l, len[l]);
        }
        md5mb_run(m);
        for (unsigned l = 0; l < lanes; l++) {
            uint8_t got[16], want[16];
            md5mb_final(m, l, got);
            openssl_md5(src + l, len[l], want);
            assert_memory_equal(got, want, 16);
        }
        md5mb_free(m);
    }
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),        cmocka_unit_test(test_rfc1321_suite),
        cmocka_unit_test(test_random_small), cmocka_unit_test(test_random_large),
        cmocka_unit_test(test_long_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
