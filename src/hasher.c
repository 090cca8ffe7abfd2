/* SPDX-License-Identifier: MIT */
/*
 * Hashing: two EVP digest contexts fed with the same chunks. The contexts are reused across
 * files (EVP_DigestInit_ex on reset) so a worker allocates them once.
 */
#include "hasher.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/evp.h>

struct hasher {
    EVP_MD_CTX *md5;
    EVP_MD_CTX *sha1;
};

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
        EVP_DigestInit_ex(h->sha1, EVP_sha1(), NULL) != 1)
        return error_set(err, -EIO, "cannot initialise MD5/SHA-1 (OpenSSL)");
    return 0;
}

int hasher_new(struct hasher **ret, struct error *err)
{
    struct hasher *h = calloc(1, sizeof(*h));
    if (!h)
        return error_set(err, -ENOMEM, "out of memory");
    h->md5 = EVP_MD_CTX_new();
    h->sha1 = EVP_MD_CTX_new();
    int r = -ENOMEM;
    if (!h->md5 || !h->sha1) {
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
    if (EVP_DigestUpdate(h->md5, data, len) != 1 || EVP_DigestUpdate(h->sha1, data, len) != 1)
        return error_set(err, -EIO, "hashing failed (OpenSSL)");
    return 0;
}

int hasher_final(struct hasher *h, struct hasher_digest *ret, struct error *err)
{
    struct hasher_digest d;
    unsigned int n5 = 0, n1 = 0;
    if (EVP_DigestFinal_ex(h->md5, d.md5, &n5) != 1 ||
        EVP_DigestFinal_ex(h->sha1, d.sha1, &n1) != 1 || n5 != sizeof(d.md5) ||
        n1 != sizeof(d.sha1))
        return error_set(err, -EIO, "hashing failed (OpenSSL)");
    hasher_hex(d.md5, sizeof(d.md5), d.md5_hex);
    hasher_hex(d.sha1, sizeof(d.sha1), d.sha1_hex);
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
    free(h);
}

int hasher_md5_fd(int fd, void *buf, size_t bufsize, char ret_hex[33], struct error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return error_set(err, -ENOMEM, "out of memory");
    int r = 0;
    if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
        r = error_set(err, -EIO, "cannot initialise MD5 (OpenSSL)");
        goto out;
    }
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
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            r = error_set(err, -EIO, "hashing failed (OpenSSL)");
            goto out;
        }
        off += n;
    }
    uint8_t md[16];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != sizeof(md)) {
        r = error_set(err, -EIO, "hashing failed (OpenSSL)");
        goto out;
    }
    hasher_hex(md, sizeof(md), ret_hex);
out:
    EVP_MD_CTX_free(ctx);
    return r;
}
