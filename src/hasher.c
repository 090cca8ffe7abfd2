/* SPDX-License-Identifier: MIT */
/*
 * Hashing: two EVP digest contexts and an XXH3 state fed with the same chunks. They are reused
 * across files (EVP_DigestInit_ex, XXH3_128bits_reset on reset) so a worker allocates them once.
 */
#include "hasher.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>

struct hasher {
    EVP_MD_CTX *md5;
    EVP_MD_CTX *sha1;
    XXH3_state_t *xxh;
    bool sha1_on;
};

struct hasher_xxh128 {
    XXH3_state_t *state;
};

static void xxh128_hex(XXH3_state_t *state, uint8_t ret[16], char ret_hex[33])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(state));
    _Static_assert(sizeof(c.digest) == 16, "XXH3-128 is 16 bytes");
    memcpy(ret, c.digest, 16);
    hasher_hex(c.digest, 16, ret_hex);
}

void hasher_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * len] = '\0';
}

int hasher_reset(struct hasher *h, struct error *err)
{
    if (EVP_DigestInit_ex(h->md5, EVP_md5(), NULL) != 1 ||
        (h->sha1_on && EVP_DigestInit_ex(h->sha1, EVP_sha1(), NULL) != 1) ||
        XXH3_128bits_reset(h->xxh) != XXH_OK)
        return error_set(err, -EIO, "cannot initialise MD5/SHA-1/XXH3");
    return 0;
}

int hasher_set_sha1(struct hasher *h, bool on, struct error *err)
{
    h->sha1_on = on;
    return hasher_reset(h, err);
}

int hasher_new(struct hasher **ret, struct error *err)
{
    struct hasher *h = calloc(1, sizeof(*h));
    if (!h)
        return error_set(err, -ENOMEM, "out of memory");
    h->md5 = EVP_MD_CTX_new();
    h->sha1 = EVP_MD_CTX_new();
    h->xxh = XXH3_createState();
    h->sha1_on = true;
    int r = -ENOMEM;
    if (!h->md5 || !h->sha1 || !h->xxh) {
        error_set(err, r, "out of memory");
        goto fail;
    }
    r = hasher_reset(h, err);
    if (r < 0)
        goto fail;
    *ret = h;
    return 0;
fail:
    hasher_free(h);
    return r;
}

int hasher_update(struct hasher *h, const void *data, size_t len, struct error *err)
{
    if (EVP_DigestUpdate(h->md5, data, len) != 1 ||
        (h->sha1_on && EVP_DigestUpdate(h->sha1, data, len) != 1) ||
        XXH3_128bits_update(h->xxh, data, len) != XXH_OK)
        return error_set(err, -EIO, "hashing failed");
    return 0;
}

int hasher_final(struct hasher *h, struct hasher_digest *ret, struct error *err)
{
    struct hasher_digest d;
    unsigned int n5 = 0, n1 = sizeof(d.sha1);
    memset(d.sha1, 0, sizeof(d.sha1));
    if (EVP_DigestFinal_ex(h->md5, d.md5, &n5) != 1 ||
        (h->sha1_on && EVP_DigestFinal_ex(h->sha1, d.sha1, &n1) != 1) || n5 != sizeof(d.md5) ||
        n1 != sizeof(d.sha1))
        return error_set(err, -EIO, "hashing failed (OpenSSL)");
    hasher_hex(d.md5, sizeof(d.md5), d.md5_hex);
    if (h->sha1_on)
        hasher_hex(d.sha1, sizeof(d.sha1), d.sha1_hex);
    else
        d.sha1_hex[0] = '\0';
    xxh128_hex(h->xxh, d.xxh128, d.xxh128_hex);
    int r = hasher_reset(h, err);
    if (r < 0)
        return r;
    *ret = d;
    return 0;
}

void hasher_free(struct hasher *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->md5);
    EVP_MD_CTX_free(h->sha1);
    XXH3_freeState(h->xxh);
    free(h);
}

int hasher_xxh128_new(struct hasher_xxh128 **ret, struct error *err)
{
    struct hasher_xxh128 *x = calloc(1, sizeof(*x));
    if (!x || !(x->state = XXH3_createState())) {
        free(x);
        return error_set(err, -ENOMEM, "out of memory");
    }
    (void)XXH3_128bits_reset(x->state); /* fails only on a NULL state */
    *ret = x;
    return 0;
}

void hasher_xxh128_update(struct hasher_xxh128 *x, const void *data, size_t len)
{
    (void)XXH3_128bits_update(x->state, data, len); /* fails only on NULL input with len > 0 */
}

void hasher_xxh128_final(struct hasher_xxh128 *x, char ret_hex[33])
{
    uint8_t bin[16];
    xxh128_hex(x->state, bin, ret_hex);
}

void hasher_xxh128_free(struct hasher_xxh128 *x)
{
    if (!x)
        return;
    XXH3_freeState(x->state);
    free(x);
}

int hasher_xxh128_fd(int fd, void *buf, size_t bufsize, char ret_hex[33], struct error *err)
{
    struct hasher_xxh128 *x = NULL;
    int r = hasher_xxh128_new(&x, err);
    if (r < 0)
        return r;
    for (off_t off = 0;;) {
        ssize_t n = pread(fd, buf, bufsize, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = error_set_errno(err, -errno, "read failed");
            goto out;
        }
        if (n == 0)
            break;
        hasher_xxh128_update(x, buf, (size_t)n);
        off += n;
    }
    hasher_xxh128_final(x, ret_hex);
out:
    hasher_xxh128_free(x);
    return r;
}
