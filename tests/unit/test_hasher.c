/* SPDX-License-Identifier: MIT */
/* Unit tests for hasher.c against the RFC 1321 / FIPS 180 test vectors, chunked and whole. */
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
        const char *in, *md5, *sha1;
    } v[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0",
         "c12252ceda8be8994d5fa0290a47231c1d16aae3"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "8215ef0796a20bcaaae116d3876c664a", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        for (size_t chunk = 1; chunk <= 64; chunk *= 4) {
            struct hasher_digest d;
            digest_of(v[i].in, chunk, &d);
            assert_string_equal(d.md5_hex, v[i].md5);
            assert_string_equal(d.sha1_hex, v[i].sha1);
        }
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
    hasher_free(h);
    hasher_free(NULL);
}

static void test_md5_fd(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    /* a million 'a': the FIPS long-message vector, read through a small buffer */
    char block[1000];
    memset(block, 'a', sizeof(block));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(fwrite(block, 1, sizeof(block), f), sizeof(block));
    fflush(f);
    char hex[33], buf[4096];
    assert_int_equal(hasher_md5_fd(fileno(f), buf, sizeof(buf), hex, NULL), 0);
    assert_string_equal(hex, "7707d6ae4e027c70eea2a935c2296f21");
    fclose(f);
    struct error err;
    assert_int_equal(hasher_md5_fd(-1, buf, sizeof(buf), hex, &err), -EBADF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_reuse_after_final),
        cmocka_unit_test(test_md5_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
