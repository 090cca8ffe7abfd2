/* SPDX-License-Identifier: MIT */
/* Unit tests for hasher.c against the RFC 1321 / FIPS 180 test vectors, chunked and whole, and
 * XXH3-128 against the reference tool's output (xxhsum -H2, xxHash 0.8.1; the empty input's
 * digest is the one in xxHash's own sanity test). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hasher.h"

static void digest_of(const char *s, size_t chunk, struct hasher_digest *d)
{
    struct hasher *h = NULL;
    assert_int_equal(hasher_new(&h, NULL), 0);
    size_t len = strlen(s);
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        assert_int_equal(hasher_update(h, s + off, n, NULL), 0);
    }
    assert_int_equal(hasher_final(h, d, NULL), 0);
    hasher_free(h);
}

static void test_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *md5, *sha1, *xxh128;
    } v[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e", "da39a3ee5e6b4b0d3255bfef95601890afd80709",
         "99aa06d3014798d86001c324468d497f"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72", "a9993e364706816aba3e25717850c26c9cd0d89d",
         "06b05ab6733a618578af5f94892f3950"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0",
         "c12252ceda8be8994d5fa0290a47231c1d16aae3", "34ab715d95e3b6490abfabecb8e3a424"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "8215ef0796a20bcaaae116d3876c664a", "84983e441c3bd26ebaae4aa1f95129e5e54670f1", NULL},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        for (size_t chunk = 1; chunk <= 64; chunk *= 4) {
            struct hasher_digest d;
            digest_of(v[i].in, chunk, &d);
            assert_string_equal(d.md5_hex, v[i].md5);
            assert_string_equal(d.sha1_hex, v[i].sha1);
            if (v[i].xxh128)
                assert_string_equal(d.xxh128_hex, v[i].xxh128);
            char hex[33];
            hasher_hex(d.xxh128, sizeof(d.xxh128), hex);
            assert_string_equal(hex, d.xxh128_hex);
        }
}

/* Without SHA-1 the other digests are the same and sha1_hex is ""; on again, SHA-1 is back. */
static void test_without_sha1(void **state)
{
    (void)state;
    struct hasher *h = NULL;
    struct hasher_digest d;
    assert_int_equal(hasher_new(&h, NULL), 0);
    assert_int_equal(hasher_update(h, "garbage", 7, NULL), 0);
    assert_int_equal(hasher_set_sha1(h, false, NULL), 0); /* a new stream */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hasher_update(h, "abc", 3, NULL), 0);
        assert_int_equal(hasher_final(h, &d, NULL), 0);
        assert_string_equal(d.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
        assert_string_equal(d.xxh128_hex, "06b05ab6733a618578af5f94892f3950");
        assert_string_equal(d.sha1_hex, "");
    }
    assert_int_equal(hasher_set_sha1(h, true, NULL), 0);
    assert_int_equal(hasher_update(h, "abc", 3, NULL), 0);
    assert_int_equal(hasher_final(h, &d, NULL), 0);
    assert_string_equal(d.sha1_hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    hasher_free(h);
}

static void test_reuse_after_final(void **state)
{
    (void)state;
    struct hasher *h = NULL;
    struct hasher_digest d;
    assert_int_equal(hasher_new(&h, NULL), 0);
    assert_int_equal(hasher_update(h, "garbage", 7, NULL), 0);
    assert_int_equal(hasher_final(h, &d, NULL), 0);
    assert_int_equal(hasher_update(h, "abc", 3, NULL), 0);
    assert_int_equal(hasher_final(h, &d, NULL), 0);
    assert_string_equal(d.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
    assert_string_equal(d.xxh128_hex, "06b05ab6733a618578af5f94892f3950");
    hasher_free(h);
    hasher_free(NULL);
}

/* A million 'a' (the FIPS long-message input), read back through a small buffer, and a copy
 * of it with one byte changed: the read-back's XXH3-128 is the one the hasher computed from the
 * same bytes in chunks, and differs when one byte differs. */
static void test_xxh128_fd(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    struct hasher *h = NULL;
    assert_int_equal(hasher_new(&h, NULL), 0);
    char block[1000];
    memset(block, 'a', sizeof(block));
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(fwrite(block, 1, sizeof(block), f), sizeof(block));
        assert_int_equal(hasher_update(h, block, sizeof(block), NULL), 0);
    }
    fflush(f);
    struct hasher_digest d;
    assert_int_equal(hasher_final(h, &d, NULL), 0);
    hasher_free(h);
    assert_string_equal(d.md5_hex, "7707d6ae4e027c70eea2a935c2296f21");
    assert_string_equal(d.xxh128_hex, "a545df8e384a9579b1fd6fae5285c4eb");
    char hex[33], buf[4096];
    assert_int_equal(hasher_xxh128_fd(fileno(f), buf, sizeof(buf), hex, NULL), 0);
    assert_string_equal(hex, d.xxh128_hex);

    assert_int_equal(pwrite(fileno(f), "b", 1, 654321), 1);
    assert_int_equal(hasher_xxh128_fd(fileno(f), buf, sizeof(buf), hex, NULL), 0);
    assert_string_not_equal(hex, d.xxh128_hex);
    fclose(f);

    struct error err;
    assert_int_equal(hasher_xxh128_fd(-1, buf, sizeof(buf), hex, &err), -EBADF);
}

/* The stream on its own (SMB read-backs) gives the same digest, whatever the chunking. */
static void test_xxh128_stream(void **state)
{
    (void)state;
    static const char in[] = "message digest";
    for (size_t chunk = 1; chunk <= 16; chunk *= 2) {
        struct hasher_xxh128 *x = NULL;
        assert_int_equal(hasher_xxh128_new(&x, NULL), 0);
        for (size_t off = 0; off < sizeof(in) - 1; off += chunk)
            hasher_xxh128_update(x, in + off,
                                 sizeof(in) - 1 - off < chunk ? sizeof(in) - 1 - off : chunk);
        char hex[33];
        hasher_xxh128_final(x, hex);
        assert_string_equal(hex, "34ab715d95e3b6490abfabecb8e3a424");
        hasher_xxh128_free(x);
    }
    hasher_xxh128_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),       cmocka_unit_test(test_reuse_after_final),
        cmocka_unit_test(test_without_sha1),  cmocka_unit_test(test_xxh128_fd),
        cmocka_unit_test(test_xxh128_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
