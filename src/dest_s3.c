/* SPDX-License-Identifier: MIT */
/*
 * S3-compatible object store destination (`s3.enabled`): each file becomes an object
 * <prefix>/<folder>/<name> (the patterns, dest.c) in the bucket, over libcurl (http.h) with AWS
 * Signature V4 done by libcurl (CURLOPT_AWS_SIGV4). Bodies are not hashed for the signature: every
 * request says "x-amz-content-sha256: UNSIGNED-PAYLOAD", which libcurl signs as the payload hash,
 * and the content is protected by Content-MD5 instead (S3 refuses a body whose MD5 differs).
 *
 * Content-MD5 must be sent before the body, so the chunks write() receives are gathered into one
 * part buffer of s3.part_size bytes (smaller for a smaller file): a file that fits goes at finish
 * as one PUT; a larger one becomes a multipart upload, each full buffer sent as an UploadPart
 * from write() and the rest at finish, then CompleteMultipartUpload. Memory is one part per open
 * file whatever its size; the card is still read once (the engine hashes it on the way).
 *
 * Never overwrite: before the first request that creates the object, candidate keys (name,
 * name_1, ...) are looked at with HEAD. A free key is taken, and the PUT (or the Complete) says
 * `If-None-Match: *` so a server that supports it refuses a racing writer (412: the next name).
 * A key holding an object of the same size is compared by ETag: a single-PUT object's ETag is its
 * MD5, a multipart one's the MD5 of its part MD5s and "-N". For a small file the MD5 is known
 * before it is sent; for a large one the parts are hashed without being sent and compared at
 * finish. Same content counts as existed; different content is remembered (a small ring) and the
 * attempt fails with -EAGAIN so that the engine's retry takes the next name.
 *
 * Verification (backup.verify_checksums): the ETag each PUT and part returns must be the MD5 that
 * was sent, the Complete's the multipart ETag (or, as s3rver does, the whole MD5), and a HEAD of
 * the final object must show the size and the ETag. An ETag that is not the MD5 means the server
 * stored other bytes (one that ignores Content-MD5) or that its ETags are not MD5s (SSE-KMS,
 * SSE-C): the object is read back (ranged GETs) and its size and MD5 decide; once that found a
 * right object under an ETag that is not its MD5, the server is known for it and every copy it
 * holds is verified by reading it back. A part whose ETag is not its MD5 on a server that gave
 * MD5 ETags before fails at once. Complete names the parts by the ETags the server gave. The same
 * ranged GETs read copies back for `snapsync verify` (read_copy).
 *
 * Stale uploads: abort() sends AbortMultipartUpload; prepare() lists the multipart uploads under
 * the prefix and aborts those older than STALE_AGE (uploads of dead runs; another station's
 * running upload is younger), as a best effort: a server without ListMultipartUploads (501) or a
 * key without the right to list them does not stop the backup.
 *
 * Errors: the XML error reply is parsed (s3_proto.h) and mapped to an errno with a hint: bucket
 * missing, access denied, wrong keys, clock skew, quota. The keys never appear in a message.
 */
#include "http.h"
#include "s3_proto.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "dest.h"
#include "log.h"

#define URL_MAX 2048
#define REPLY_MAX (1024 * 1024)
#define CANDIDATES_MAX 1000 /* names tried for one file: name, name_1, ... name_999 */
#define DIFFERENT_MAX 64    /* keys remembered as holding other content */
#define STALE_AGE (24 * 3600)
#define LIST_PAGES_MAX 100

static const char *const captured[] = {"etag", "content-length", NULL};

struct s3 {
    char endpoint[URL_MAX]; /* "https://host:port" without a trailing '/' */
    char base[URL_MAX];     /* the bucket's URL: endpoint/bucket or scheme://bucket.host */
    char bucket[256];
    char prefix[S3_KEY_MAX]; /* without leading or trailing '/' */
    char sigv4[160];         /* "aws:amz:<region>:s3" */
    char *credentials;       /* "<id>:<secret>" (secret) */
    char ca_file[PATH_MAX];
    char class_header[160]; /* "x-amz-storage-class: ..." or "" */
    uint64_t part_size;
    long timeout;
    struct http *main; /* prepare, probe: the main thread */
    pthread_mutex_t lock;
    char (*different)[S3_KEY_MAX + 1]; /* ring of keys known to hold other content */
    size_t n_different;
    char label[160];
    atomic_bool etags_not_md5; /* learned: an object read back was right, its ETag not its MD5 */
    atomic_bool etags_md5;     /* learned: a PUT's or part's ETag was its MD5 */
};

struct s3_conn {
    struct s3 *s;
    struct http *x;
};

struct s3_file {
    struct s3_conn *c;
    char name[DEST_NAME_MAX + 1];
    char date[PATTERN_OUT_MAX]; /* the folder from the folder pattern; "" none */
    char key[S3_KEY_MAX + 1];   /* "" until chosen */
    uint64_t size, received;
    uint8_t *buf;
    size_t buf_cap, buf_len;
    size_t n_parts, parts_done;
    uint8_t (*part_md5)[16];
    char (*part_etag)[S3_ETAG_MAX];   /* the server's, unquoted: what Complete must name */
    bool etag_off;                    /* a part's ETag was not its MD5 */
    char upload_id[S3_UPLOAD_ID_MAX]; /* "" when not multipart */
    bool dry;                         /* an object of the same size is at key: only compare */
    char dry_etag[S3_ETAG_MAX];       /* its ETag, unquoted */
};

/* ---- requests ---- */

static int xfer_new(const struct s3 *s, struct http **ret, struct error *err)
{
    struct http_options o = {
        .name = "the S3 server",
        .section = "s3",
        .ca_file = s->ca_file,
        .connect_timeout = s->timeout,
        .stall_timeout = s->timeout,
        .aws_sigv4 = s->sigv4,
        .credentials = s->credentials,
    };
    return http_new(&o, ret, err);
}

/* The URL of key (NULL: the bucket) with query (NULL: none; sorted by the caller, as SigV4's
 * canonical query wants). */
static int make_url(const struct s3 *s, const char *key, const char *query, char *out, size_t size)
{
    char enc[S3_KEY_MAX * 3 + 1] = "";
    if (key && s3_uri_encode(key, enc, sizeof(enc)) < 0)
        return -ENAMETOOLONG;
    int n = snprintf(out, size, "%s/%s%s%s", s->base, enc, query ? "?" : "", query ? query : "");
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Runs one request; body may be NULL. */
static int request(struct s3 *s, struct http *x, const char *method, const char *key,
                   const char *query, const char *const *extra, const void *body, size_t len,
                   long *ret_status, struct error *err)
{
    char url[URL_MAX + S3_KEY_MAX * 3 + 2048];
    if (make_url(s, key, query, url, sizeof(url)) < 0)
        return error_set(err, -ENAMETOOLONG, "request URL too long");
    const char *headers[12] = {"x-amz-content-sha256: UNSIGNED-PAYLOAD", "Expect:"};
    size_t k = 2;
    for (const char *const *p = extra; p && *p && k < 11; p++)
        headers[k++] = *p;
    struct http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = len,
        .reply_max = REPLY_MAX,
        .capture = captured,
    };
    return http_run(x, &req, ret_status, err);
}

/* The error of a request answered with status: the server's code and message, and a hint. */
static int s3_failure(const struct http *x, long status, const char *what, struct error *err)
{
    char code[S3_CODE_MAX] = "", msg[256] = "";
    if (s3_parse_error(http_reply(x), http_reply_len(x), code, sizeof(code), msg, sizeof(msg)) < 0)
        code[0] = msg[0] = '\0';
    if (!code[0] && status == 404)
        snprintf(code, sizeof(code), "NoSuchBucket");
    const char *hint;
    int r = s3_error_errno(status, code, &hint);
    return error_set(err, r, "%s: HTTP %ld%s%s%s%s%s%s", what, status, code[0] ? " " : "", code,
                     msg[0] ? ": " : "", msg, hint[0] ? "; " : "", hint);
}

static void md5_of(const void *buf, size_t len, uint8_t out[16])
{
    unsigned int n = 0;
    EVP_Digest(buf, len, out, &n, EVP_md5(), NULL);
}

/* "Content-MD5: <base64>" of md5. */
static void md5_header(const uint8_t md5[16], char *out, size_t size)
{
    char b64[32];
    EVP_EncodeBlock((unsigned char *)b64, md5, 16);
    snprintf(out, size, "Content-MD5: %s", b64);
}

/* An ETag the server sent (quoted or not) as out (unquoted, S3_ETAG_MAX bytes): false when it is
 * missing, too long or holds more than letters, digits and '-' (it goes back into Complete's
 * XML). */
static bool etag_usable(const char *etag, char out[S3_ETAG_MAX])
{
    if (!etag)
        return false;
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
        etag++;
        n -= 2;
    }
    if (n == 0 || n >= S3_ETAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = etag[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-'))
            return false;
    }
    memcpy(out, etag, n);
    out[n] = '\0';
    return true;
}

/* ---- reading an object back ---- */

/* Reads the object at key through x in ranged GETs of DEST_READ_CHUNK bytes, each handed to fn;
 * *ret_size (NULL: not wanted) its size. -ENOENT when there is none. */
static int read_object(struct s3 *s, struct http *x, const char *key,
                       int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                       uint64_t *ret_size, struct error *err)
{
    long code = 0;
    int r = request(s, x, "HEAD", key, NULL, NULL, NULL, 0, &code, err);
    if (r < 0)
        return error_prefix(err, "reading '%s'", key);
    if (code == 404)
        return error_set(err, -ENOENT, "'%s': no such object", key);
    if (code != 200)
        return s3_failure(x, code, key, err);
    const char *len = http_reply_header(x, "content-length");
    char *end = NULL;
    uint64_t size = len ? strtoull(len, &end, 10) : 0;
    if (!len || !*len || *end)
        return error_set(err, -EIO, "reading '%s': the server said no size", key);
    for (uint64_t off = 0; off < size;) {
        uint64_t want = size - off < DEST_READ_CHUNK ? size - off : DEST_READ_CHUNK;
        char range[64];
        snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64, off, off + want - 1);
        const char *extra[] = {range, NULL};
        r = request(s, x, "GET", key, NULL, extra, NULL, 0, &code, err);
        if (r < 0)
            return error_prefix(err, "reading '%s'", key);
        if (code == 404)
            return error_set(err, -ENOENT, "'%s': no such object", key);
        /* 200: a server that ignores ranges sends it whole, fine only when that is the range */
        if (code != 206 && !(code == 200 && off == 0 && want == size))
            return code == 200
                       ? error_set(err, -EIO, "reading '%s': the server ignored the range", key)
                       : s3_failure(x, code, key, err);
        if (http_reply_len(x) != want)
            return error_set(err, -EIO,
                             "reading '%s': %zu bytes at %" PRIu64 ", %" PRIu64 " asked (it "
                             "changed?)",
                             key, http_reply_len(x), off, want);
        r = fn(http_reply(x), (size_t)want, arg);
        if (r < 0)
            return r;
        off += want;
    }
    if (ret_size)
        *ret_size = size;
    return 0;
}

static int md5_update(const void *buf, size_t len, void *arg)
{
    return EVP_DigestUpdate(arg, buf, len) == 1 ? 0 : -ENOMEM;
}

/* The size and MD5 (hex) of the object at key, read back through x. */
static int object_md5(struct s3 *s, struct http *x, const char *key, uint64_t *ret_size,
                      char hex[33], struct error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return error_set(err, -ENOMEM, "out of memory");
    }
    int r = read_object(s, x, key, md5_update, ctx, ret_size, err);
    uint8_t md5[16];
    unsigned int n = 0;
    if (r == 0 && EVP_DigestFinal_ex(ctx, md5, &n) != 1)
        r = error_set(err, -ENOMEM, "out of memory");
    EVP_MD_CTX_free(ctx);
    if (r == 0)
        hasher_hex(md5, 16, hex);
    return r;
}

/* An object found right by reading it back although its ETag was not its MD5. */
static void learn_etags_not_md5(struct s3 *s)
{
    if (!atomic_exchange(&s->etags_not_md5, true))
        log_info("%s: the server's ETags are not the MD5s of what it stores (a bucket encrypted "
                 "with KMS or customer keys?): copies are checked by reading them back",
                 s->label);
}

/* Reads the object f made back and compares its size and MD5 with what was read from the card:
 * 0 the same, -EIO not (the server stored other bytes; err says so). */
static int read_back(struct s3_file *f, const struct hasher_digest *digest, struct error *err)
{
    uint64_t size = 0;
    char hex[33];
    int r = object_md5(f->c->s, f->c->x, f->key, &size, hex, err);
    if (r < 0)
        return r == -ENOENT ? error_set(err, -EIO, "verify '%s': the object is gone", f->key) : r;
    if (size != f->size || strcmp(hex, digest->md5_hex) != 0)
        return error_set(err, -EIO,
                         "'%s': the server stored other bytes than were sent (read back: %" PRIu64
                         " bytes, MD5 %s; sent %" PRIu64 " bytes, MD5 %s)",
                         f->key, size, hex, f->size, digest->md5_hex);
    /* right: so the ETag that was not its MD5 says nothing about the bytes */
    learn_etags_not_md5(f->c->s);
    return 0;
}

/* An object already at key, of f's size, whose ETag is not md5_hex: whether it holds this
 * content after all. Only asked when the server may have ETags that are not MD5s (it has not
 * given an MD5 ETag in this run): then the object is read back. A read that fails counts as
 * other content (the next name: nothing is lost). */
static bool same_by_reading(struct s3_file *f, const char *key, const char *md5_hex)
{
    struct s3 *s = f->c->s;
    if (atomic_load(&s->etags_md5))
        return false;
    uint64_t size = 0;
    char hex[33];
    struct error e;
    if (object_md5(s, f->c->x, key, &size, hex, &e) < 0 || size != f->size ||
        strcmp(hex, md5_hex) != 0)
        return false;
    learn_etags_not_md5(s);
    return true;
}

/* ---- keys known to hold other content ---- */

static bool different_has(struct s3 *s, const char *key)
{
    bool found = false;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_different && i < DIFFERENT_MAX && !found; i++)
        found = strcmp(s->different[i], key) == 0;
    pthread_mutex_unlock(&s->lock);
    return found;
}

static void different_add(struct s3 *s, const char *key)
{
    pthread_mutex_lock(&s->lock);
    snprintf(s->different[s->n_different % DIFFERENT_MAX], S3_KEY_MAX + 1, "%s", key);
    s->n_different++;
    pthread_mutex_unlock(&s->lock);
}

/* ---- ops ---- */

static void s3_done(void *priv)
{
    struct s3 *s = priv;
    if (!s)
        return;
    http_free(s->main);
    if (s->credentials) {
        explicit_bzero(s->credentials, strlen(s->credentials));
        free(s->credentials);
    }
    free(s->different);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static bool printable(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int s3_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size, char *label,
                   size_t label_size, struct error *err)
{
    const char *ep = cfg->s3.endpoint ? cfg->s3.endpoint : "";
    const char *bucket = cfg->s3.bucket ? cfg->s3.bucket : "";
    const char *akid = cfg->s3.access_key_id ? cfg->s3.access_key_id : "";
    const char *secret = cfg->s3.secret_access_key ? cfg->s3.secret_access_key : "";
    size_t len = strlen(ep);
    while (len > 0 && ep[len - 1] == '/')
        len--;
    const char *host = strstr(ep, "://");
    if (len == 0 || len > URL_MAX - 512 || !host)
        return error_set(err, -EINVAL, "s3.endpoint: missing or too long");
    host += 3;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)ep[i] <= 0x20 || ep[i] == 0x7f || ep[i] == '?' || ep[i] == '#')
            return error_set(err, -EINVAL, "s3.endpoint: no spaces, query or fragment allowed");
    /* bucket names: 3..63 of a-z 0-9 . - (S3's rules; other servers accept no more in URLs) */
    size_t bl = strlen(bucket);
    if (bl < 3 || bl > 63 || strspn(bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != bl)
        return error_set(err, -EINVAL, "s3.bucket: 3 to 63 lower-case letters, digits, '.' or '-'");
    if (!akid[0] || !secret[0])
        return error_set(err, -EINVAL, "s3: S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set");
    if (!printable(akid) || !printable(secret) || strchr(akid, ':'))
        return error_set(err, -EINVAL, "s3: the access keys hold a control character or ':'");
    const char *region = cfg->s3.region ? cfg->s3.region : "us-east-1";
    if (!printable(region) || strchr(region, ':') || strlen(region) > 64)
        return error_set(err, -EINVAL, "s3.region: not a region name");
    const char *cls = cfg->s3.storage_class ? cfg->s3.storage_class : "";
    if (!printable(cls) || strlen(cls) > 64)
        return error_set(err, -EINVAL, "s3.storage_class: not a storage class");
    char probe_key[S3_KEY_MAX + 1];
    if (s3_object_key(cfg->s3.prefix, NULL, "x", probe_key, sizeof(probe_key)) < 0)
        return error_set(err, -EINVAL, "s3.prefix: not a folder name (no '//', '.' or '..')");
    const char *ca = cfg->s3.tls_ca_file ? cfg->s3.tls_ca_file : "";
    if (ca[0] && access(ca, R_OK) != 0)
        return error_set(err, -errno, "s3.tls_ca_file: cannot read '%s': %s", ca, strerror(errno));

    struct s3 *s = calloc(1, sizeof(*s));
    if (!s)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->different = calloc(DIFFERENT_MAX, sizeof(*s->different));
    size_t cl = strlen(akid) + strlen(secret) + 2;
    s->credentials = malloc(cl);
    if (!s->different || !s->credentials) {
        s3_done(s);
        return error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(s->credentials, cl, "%s:%s", akid, secret);
    snprintf(s->endpoint, sizeof(s->endpoint), "%.*s", (int)len, ep);
    if (cfg->s3.addressing && strcmp(cfg->s3.addressing, "virtual") == 0)
        snprintf(s->base, sizeof(s->base), "%.*s%s.%.*s", (int)(host - ep), ep, bucket,
                 (int)(len - (size_t)(host - ep)), host);
    else
        snprintf(s->base, sizeof(s->base), "%s/%s", s->endpoint, bucket);
    snprintf(s->bucket, sizeof(s->bucket), "%s", bucket);
    /* the prefix as s3_object_key normalises it: probe_key is "<prefix>/x" or "x" */
    size_t pl = strlen(probe_key);
    snprintf(s->prefix, sizeof(s->prefix), "%.*s", (int)(pl > 2 ? pl - 2 : 0), probe_key);
    snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", region);
    if (cls[0])
        snprintf(s->class_header, sizeof(s->class_header), "x-amz-storage-class: %s", cls);
    snprintf(s->ca_file, sizeof(s->ca_file), "%s", ca);
    s->part_size = (uint64_t)(cfg->s3.part_size > 0 ? cfg->s3.part_size : 8) * 1024 * 1024;
    s->timeout = cfg->s3.timeout > 0 ? cfg->s3.timeout : 30;
    snprintf(id, id_size, "s3:%s/%s%s%s", s->endpoint, s->bucket, s->prefix[0] ? "/" : "",
             s->prefix);
    snprintf(label, label_size, "s3 %s/%s%s", s->bucket, s->prefix, s->prefix[0] ? "/" : "");
    snprintf(s->label, sizeof(s->label), "%s", label);
    *ret_priv = s;
    return 0;
}

static int main_xfer(struct s3 *s, struct error *err)
{
    return s->main ? 0 : xfer_new(s, &s->main, err);
}

/* "prefix=<prefix>/" for a query, "" without a prefix. */
static int prefix_query(const struct s3 *s, char *out, size_t size)
{
    out[0] = '\0';
    if (!s->prefix[0])
        return 0;
    char p[S3_KEY_MAX + 2], enc[S3_KEY_MAX * 3 + 8];
    snprintf(p, sizeof(p), "%s/", s->prefix);
    if (s3_uri_encode(p, enc, sizeof(enc)) < 0)
        return -ENAMETOOLONG;
    /* in a query '/' is encoded too (SigV4's canonical query) */
    size_t k = 0;
    for (const char *c = enc; *c && k + 4 < size; c++) {
        if (*c == '/') {
            memcpy(out + k, "%2F", 3);
            k += 3;
        } else {
            out[k++] = *c;
        }
    }
    out[k] = '\0';
    return 0;
}

/* The bucket exists and the keys may use it: HEAD bucket; on a refusal, a listing of no keys
 * tells why (HEAD replies have no body to carry S3's error code). */
static int check_bucket(struct s3 *s, struct error *err)
{
    char pq[S3_KEY_MAX * 3 + 16], query[S3_KEY_MAX * 3 + 64], what[512];
    long code = 0;
    int r = request(s, s->main, "HEAD", NULL, NULL, NULL, NULL, 0, &code, err);
    if (r < 0)
        return error_prefix(err, "%s", s->endpoint);
    if (code == 200)
        return 0;
    prefix_query(s, pq, sizeof(pq));
    snprintf(query, sizeof(query), "list-type=2&max-keys=0%s%s", pq[0] ? "&prefix=" : "", pq);
    long why = 0;
    struct error e;
    snprintf(what, sizeof(what), "bucket '%s' at %s", s->bucket, s->endpoint);
    if (request(s, s->main, "GET", NULL, query, NULL, NULL, 0, &why, &e) == 0 && why != 200)
        return s3_failure(s->main, why, what, err);
    return s3_failure(s->main, code, what, err);
}

struct stale {
    struct s3 *s;
    char (*keys)[S3_KEY_MAX + 1];
    char (*ids)[S3_UPLOAD_ID_MAX];
    size_t n;
};

static int stale_add(const char *key, const char *upload_id, const char *initiated, void *arg)
{
    struct stale *st = arg;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = initiated ? strptime(initiated, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end || st->n >= 1000)
        return 0;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || time(NULL) - t < STALE_AGE)
        return 0;
    snprintf(st->keys[st->n], S3_KEY_MAX + 1, "%s", key);
    snprintf(st->ids[st->n], S3_UPLOAD_ID_MAX, "%s", upload_id);
    st->n++;
    return 0;
}

/* Aborts the multipart uploads under the prefix older than STALE_AGE. */
static int clean_stale(struct s3 *s, struct error *err)
{
    char pq[S3_KEY_MAX * 3 + 16];
    char next_key[S3_KEY_MAX + 1] = "", next_id[S3_UPLOAD_ID_MAX] = "";
    struct stale st = {.s = s};
    st.keys = calloc(1000, sizeof(*st.keys));
    st.ids = calloc(1000, sizeof(*st.ids));
    int r = 0;
    if (!st.keys || !st.ids) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    prefix_query(s, pq, sizeof(pq));
    for (int page = 0; page < LIST_PAGES_MAX && r == 0; page++) {
        char query[S3_KEY_MAX * 9 + S3_UPLOAD_ID_MAX * 3 + 128];
        char ek[S3_KEY_MAX * 3 + 1] = "", ei[S3_UPLOAD_ID_MAX * 3 + 1] = "";
        s3_uri_encode(next_key, ek, sizeof(ek));
        s3_uri_encode(next_id, ei, sizeof(ei));
        /* parameters in SigV4's canonical (sorted) order */
        snprintf(query, sizeof(query), "%s%s%s%s%s%s%s%s%suploads=", ek[0] ? "key-marker=" : "", ek,
                 ek[0] ? "&" : "", pq[0] ? "prefix=" : "", pq, pq[0] ? "&" : "",
                 ei[0] ? "upload-id-marker=" : "", ei, ei[0] ? "&" : "");
        long code = 0;
        r = request(s, s->main, "GET", NULL, query, NULL, NULL, 0, &code, err);
        if (r < 0)
            break;
        if (code == 501 || code == 405) /* the server has no ListMultipartUploads */
            break;
        if (code != 200) {
            r = s3_failure(s->main, code, "listing unfinished uploads", err);
            break;
        }
        bool more = false;
        r = s3_parse_list_uploads(http_reply(s->main), http_reply_len(s->main), stale_add, &st,
                                  &more, next_key, next_id, err);
        if (r < 0 || !more || !next_key[0])
            break;
    }
    for (size_t i = 0; r == 0 && i < st.n; i++) {
        char query[S3_UPLOAD_ID_MAX * 3 + 16], ei[S3_UPLOAD_ID_MAX * 3 + 1];
        long code = 0;
        if (s3_uri_encode(st.ids[i], ei, sizeof(ei)) < 0)
            continue;
        snprintf(query, sizeof(query), "uploadId=%s", ei);
        struct error e;
        if (request(s, s->main, "DELETE", st.keys[i], query, NULL, NULL, 0, &code, &e) < 0)
            continue; /* a best effort: the next session tries again */
    }
out:
    free(st.keys);
    free(st.ids);
    return r;
}

static int s3_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    struct s3 *s = priv;
    (void)session;
    int r = main_xfer(s, err);
    if (r == 0)
        r = check_bucket(s, err);
    if (r == 0) {
        /* a best effort: a key that may upload but not list uploads still backs up */
        struct error ignored;
        clean_stale(s, &ignored);
    }
    return r;
}

static int s3_probe(void *priv, char *detail, size_t detail_size, struct error *err)
{
    struct s3 *s = priv;
    int r = main_xfer(s, err);
    if (r == 0)
        r = check_bucket(s, err);
    if (r < 0)
        return r;
    uint8_t rnd[8];
    char hex[17], name[64], key[S3_KEY_MAX + 1], hdr[64];
    uint8_t md5[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return error_set_errno(err, -errno, "getrandom");
    hasher_hex(rnd, sizeof(rnd), hex);
    snprintf(name, sizeof(name), ".snapsync-probe-%s", hex);
    if (s3_object_key(s->prefix, NULL, name, key, sizeof(key)) < 0)
        return error_set(err, -ENAMETOOLONG, "s3.prefix too long");
    static const char body[] = "SnapSync test-connection probe\n";
    md5_of(body, sizeof(body) - 1, md5);
    md5_header(md5, hdr, sizeof(hdr));
    const char *extra[] = {hdr, "Content-Type: text/plain", NULL};
    long code = 0;
    r = request(s, s->main, "PUT", key, NULL, extra, body, sizeof(body) - 1, &code, err);
    if (r < 0)
        return error_prefix(err, "writing a probe object");
    if (code != 200)
        return s3_failure(s->main, code, "writing a probe object", err);
    r = request(s, s->main, "DELETE", key, NULL, NULL, NULL, 0, &code, err);
    if (r < 0)
        return error_prefix(err, "deleting the probe object '%s'", key);
    if (code != 204 && code != 200)
        return s3_failure(s->main, code, "deleting the probe object", err);
    snprintf(detail, detail_size, "%s: bucket '%s' readable, a probe object written and deleted",
             s->endpoint, s->bucket);
    return 0;
}

static int s3_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct s3_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->s = priv;
    int r = xfer_new(c->s, &c->x, err);
    if (r < 0) {
        free(c);
        return r;
    }
    *ret_conn = c;
    return 0;
}

static void s3_conn_free(void *conn)
{
    struct s3_conn *c = conn;
    if (!c)
        return;
    http_free(c->x);
    free(c);
}

static void file_free(struct s3_file *f)
{
    free(f->buf);
    free(f->part_md5);
    free(f->part_etag);
    free(f);
}

static int s3_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct s3_conn *c = conn;
    struct s3 *s = c->s;
    if (!dest_name_valid(item->target))
        return error_set(err, -EINVAL, "unusable file name");
    uint64_t parts = item->size == 0 ? 1 : (item->size + s->part_size - 1) / s->part_size;
    if (parts > S3_PARTS_MAX)
        return error_set(err, -EFBIG,
                         "%" PRIu64 " bytes need more than %d parts of s3.part_size; raise it",
                         item->size, S3_PARTS_MAX);
    struct s3_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->c = c;
    f->size = item->size;
    f->n_parts = (size_t)parts;
    f->buf_cap = item->size < s->part_size ? (size_t)item->size : (size_t)s->part_size;
    f->buf = malloc(f->buf_cap ? f->buf_cap : 1);
    f->part_md5 = calloc(f->n_parts, sizeof(*f->part_md5));
    f->part_etag = calloc(f->n_parts, sizeof(*f->part_etag));
    if (!f->buf || !f->part_md5 || !f->part_etag) {
        file_free(f);
        return error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(f->name, sizeof(f->name), "%s", item->target);
    snprintf(f->date, sizeof(f->date), "%s", item->folder);
    char key[S3_KEY_MAX + 1];
    if (s3_object_key(s->prefix, f->date, f->name, key, sizeof(key)) < 0) {
        file_free(f);
        return error_set(err, -ENAMETOOLONG, "the object key of '%s' is too long", item->name);
    }
    *ret_file = f;
    return 0;
}

/*
 * Chooses f->key: the first candidate name that is free, or that holds an object that may be
 * this content. md5_hex: the whole file's MD5 when known (a single PUT), else NULL (multipart:
 * an object of the same size whose ETag fits is compared at finish, f->dry). Sets *ret_same when
 * the object at the key is this content (md5_hex known).
 */
static int choose_key(struct s3_file *f, const char *md5_hex, bool *ret_same, struct error *err)
{
    struct s3 *s = f->c->s;
    struct http *x = f->c->x;
    *ret_same = false;
    for (unsigned k = 0; k < CANDIDATES_MAX; k++) {
        char name[DEST_NAME_MAX + 1], key[S3_KEY_MAX + 1];
        dest_candidate_name(f->name, k, name, sizeof(name));
        if (s3_object_key(s->prefix, f->date, name, key, sizeof(key)) < 0)
            return error_set(err, -ENAMETOOLONG, "the object key of '%s' is too long", name);
        if (different_has(s, key))
            continue;
        long code = 0;
        int r = request(s, x, "HEAD", key, NULL, NULL, NULL, 0, &code, err);
        if (r < 0)
            return error_prefix(err, "looking at '%s'", key);
        if (code == 404) {
            snprintf(f->key, sizeof(f->key), "%s", key);
            return 0;
        }
        if (code != 200)
            return s3_failure(x, code, key, err);
        const char *etag = http_reply_header(x, "etag");
        const char *len = http_reply_header(x, "content-length");
        char want_len[24];
        snprintf(want_len, sizeof(want_len), "%" PRIu64, f->size);
        if (!etag || !len || strcmp(len, want_len) != 0)
            continue;
        if (md5_hex) {
            if (s3_etag_equal(etag, md5_hex) || same_by_reading(f, key, md5_hex)) {
                snprintf(f->key, sizeof(f->key), "%s", key);
                *ret_same = true;
                return 0;
            }
            continue;
        }
        /* multipart: comparable when a plain MD5 or made of as many parts as ours */
        size_t el = strlen(etag);
        const char *e = etag;
        if (el >= 2 && e[0] == '"') {
            e++;
            el -= 2;
        }
        char tail[24];
        snprintf(tail, sizeof(tail), "-%zu", f->n_parts);
        bool plain = el == 32;
        bool same_parts = el == 32 + strlen(tail) && strncmp(e + 32, tail, strlen(tail)) == 0;
        /* (an ETag of another form is compared by reading the object back at finish, where
         * ETags may not be MD5s) */
        if (!plain && !same_parts && atomic_load(&s->etags_md5))
            continue;
        snprintf(f->key, sizeof(f->key), "%s", key);
        snprintf(f->dry_etag, sizeof(f->dry_etag), "%.*s", (int)el, e);
        f->dry = true;
        return 0;
    }
    return error_set(err, -EEXIST, "'%s' and %d other names are taken", f->name,
                     CANDIDATES_MAX - 1);
}

/* Sends the buffer as part f->parts_done + 1 (multipart started on the first). */
static int send_part(struct s3_file *f, struct error *err)
{
    struct s3 *s = f->c->s;
    struct http *x = f->c->x;
    size_t n = f->parts_done;
    int r;
    long code = 0;
    md5_of(f->buf, f->buf_len, f->part_md5[n]);
    if (n == 0) {
        bool same;
        r = choose_key(f, NULL, &same, err);
        if (r < 0)
            return r;
    }
    if (f->dry)
        goto done;
    if (n == 0) {
        const char *extra[] = {"Content-Type: application/octet-stream",
                               s->class_header[0] ? s->class_header : NULL, NULL};
        r = request(s, x, "POST", f->key, "uploads=", extra, "", 0, &code, err);
        if (r < 0)
            return error_prefix(err, "starting the upload of '%s'", f->key);
        if (code != 200)
            return s3_failure(x, code, f->key, err);
        r = s3_parse_upload_id(http_reply(x), http_reply_len(x), f->upload_id, err);
        if (r < 0)
            return error_set(err, -EIO, "starting the upload of '%s': %s", f->key, err->msg);
    }
    char query[S3_UPLOAD_ID_MAX * 3 + 64], ei[S3_UPLOAD_ID_MAX * 3 + 1], hdr[64], hex[33];
    if (s3_uri_encode(f->upload_id, ei, sizeof(ei)) < 0)
        return error_set(err, -EIO, "upload id too long");
    snprintf(query, sizeof(query), "partNumber=%zu&uploadId=%s", n + 1, ei);
    md5_header(f->part_md5[n], hdr, sizeof(hdr));
    const char *extra[] = {hdr, NULL};
    r = request(s, x, "PUT", f->key, query, extra, f->buf, f->buf_len, &code, err);
    if (r < 0)
        return error_prefix(err, "part %zu of '%s'", n + 1, f->key);
    if (code != 200)
        return s3_failure(x, code, f->key, err);
    hasher_hex(f->part_md5[n], 16, hex);
    const char *etag = http_reply_header(x, "etag");
    if (!etag_usable(etag, f->part_etag[n]))
        return error_set(err, -EIO, "part %zu of '%s': the server's ETag '%s' is not usable", n + 1,
                         f->key, etag ? etag : "(none)");
    /* not its MD5: the server stored other bytes (one that does not check Content-MD5), or its
     * ETags are not MD5s (encryption): when it has given MD5s before, the former (a bucket's
     * objects are all encrypted alike); else the object is read back at finish to tell */
    if (s3_etag_equal(etag, hex))
        atomic_store(&s->etags_md5, true);
    else if (atomic_load(&s->etags_md5))
        return error_set(err, -EIO, "part %zu of '%s': the server's ETag \"%s\" is not its MD5 %s",
                         n + 1, f->key, f->part_etag[n], hex);
    else
        f->etag_off = true;
done:
    f->parts_done++;
    f->buf_len = 0;
    return 0;
}

static int s3_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct s3_file *f = file;
    const uint8_t *p = buf;
    if (f->received + len > f->size)
        return error_set(err, -EIO, "the file grew while it was read (%" PRIu64 " bytes expected)",
                         f->size);
    while (len > 0) {
        if (f->buf_len == f->buf_cap) { /* full, and more is coming: a part of many */
            int r = send_part(f, err);
            if (r < 0)
                return r;
        }
        size_t k = f->buf_cap - f->buf_len < len ? f->buf_cap - f->buf_len : len;
        memcpy(f->buf + f->buf_len, p, k);
        f->buf_len += k;
        f->received += k;
        p += k;
        len -= k;
    }
    return 0;
}

/* HEAD of the final object: its size must be what was sent (-EIO), and *ret_etag_differs says
 * whether its ETag is neither etag1 nor etag2. */
static int verify_object(struct s3_file *f, const char *etag1, const char *etag2,
                         bool *ret_etag_differs, struct error *err)
{
    struct s3 *s = f->c->s;
    struct http *x = f->c->x;
    long code = 0;
    int r = request(s, x, "HEAD", f->key, NULL, NULL, NULL, 0, &code, err);
    if (r < 0)
        return error_prefix(err, "verify '%s'", f->key);
    if (code != 200)
        return s3_failure(x, code, f->key, err);
    const char *etag = http_reply_header(x, "etag");
    const char *len = http_reply_header(x, "content-length");
    char want_len[24];
    snprintf(want_len, sizeof(want_len), "%" PRIu64, f->size);
    if (!len || strcmp(len, want_len) != 0)
        return error_set(err, -EIO, "verify '%s': %s bytes on the server, %s sent", f->key,
                         len ? len : "?", want_len);
    *ret_etag_differs = !s3_etag_equal(etag, etag1) && !(etag2 && s3_etag_equal(etag, etag2));
    return 0;
}

static void abort_upload(struct s3_file *f)
{
    if (!f->upload_id[0])
        return;
    char query[S3_UPLOAD_ID_MAX * 3 + 16], ei[S3_UPLOAD_ID_MAX * 3 + 1];
    long code = 0;
    struct error e;
    if (s3_uri_encode(f->upload_id, ei, sizeof(ei)) == 0) {
        snprintf(query, sizeof(query), "uploadId=%s", ei);
        request(f->c->s, f->c->x, "DELETE", f->key, query, NULL, NULL, 0, &code, &e);
    }
    f->upload_id[0] = '\0';
}

/* CompleteMultipartUpload of the parts sent; *etag gets the server's answer. */
static int complete(struct s3_file *f, char etag[S3_ETAG_MAX], struct error *err)
{
    struct s3 *s = f->c->s;
    struct http *x = f->c->x;
    size_t cap = 128 + f->parts_done * 128;
    char *xml = malloc(cap);
    if (!xml)
        return error_set(err, -ENOMEM, "out of memory");
    size_t at = (size_t)snprintf(xml, cap, "<CompleteMultipartUpload>");
    for (size_t i = 0; i < f->parts_done; i++)
        at += (size_t)snprintf(xml + at, cap - at,
                               "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag></Part>",
                               i + 1, f->part_etag[i]);
    at += (size_t)snprintf(xml + at, cap - at, "</CompleteMultipartUpload>");
    char query[S3_UPLOAD_ID_MAX * 3 + 16], ei[S3_UPLOAD_ID_MAX * 3 + 1];
    s3_uri_encode(f->upload_id, ei, sizeof(ei));
    snprintf(query, sizeof(query), "uploadId=%s", ei);
    const char *extra[] = {"Content-Type: application/xml", "If-None-Match: *", NULL};
    long code = 0;
    int r = request(s, x, "POST", f->key, query, extra, xml, at, &code, err);
    free(xml);
    if (r < 0)
        return error_prefix(err, "completing '%s'", f->key);
    if (code == 412) {
        different_add(s, f->key);
        return error_set(err, -EAGAIN, "'%s' was created meanwhile; retrying under a new name",
                         f->key);
    }
    if (code != 200)
        return s3_failure(x, code, f->key, err);
    r = s3_parse_complete(http_reply(x), http_reply_len(x), etag, err);
    if (r < 0) /* an error sent with 200: retryable */
        return error_set(err, -EIO, "completing '%s': %s", f->key, err->msg);
    f->upload_id[0] = '\0'; /* done: nothing to abort */
    return 0;
}

/* Deletes the object this finish created at f->key, found to differ from what was sent (a
 * server that does not check Content-MD5, as s3rver for parts and single PUTs: a bad link or
 * proxy changed the bytes), so that its final name never holds a damaged copy; the next attempt
 * uploads it again. err (an error already) gets a note when the delete fails. */
static void remove_created(struct s3_file *f, struct error *err)
{
    long code = 0;
    struct error e = {0};
    int r = request(f->c->s, f->c->x, "DELETE", f->key, NULL, NULL, NULL, 0, &code, &e);
    if (r == 0 && (code == 204 || code == 200))
        return;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, "; it could not be removed (%s): delete it",
             r < 0 ? e.msg : "the server refused");
}

static int s3_finish(void *file, const struct hasher_digest *digest, bool verify,
                     struct dest_result *ret, struct error *err)
{
    struct s3_file *f = file;
    struct s3 *s = f->c->s;
    struct http *x = f->c->x;
    int r = 0;
    bool existed = false;
    bool created = false; /* this finish created the object at f->key */
    bool read = false;    /* and read it back whole */
    char mp_etag[S3_ETAG_MAX] = "";
    if (f->received != f->size) {
        r = error_set(err, -EIO, "read %" PRIu64 " of %" PRIu64 " bytes", f->received, f->size);
        goto out;
    }
    if (f->parts_done == 0) { /* one PUT: the MD5 is known before sending */
        for (int attempt = 0; attempt < 4; attempt++) {
            bool same;
            r = choose_key(f, digest->md5_hex, &same, err);
            if (r < 0 || same) {
                existed = same;
                goto result;
            }
            char hdr[64];
            md5_header(digest->md5, hdr, sizeof(hdr));
            const char *extra[] = {hdr, "Content-Type: application/octet-stream",
                                   "If-None-Match: *", s->class_header[0] ? s->class_header : NULL,
                                   NULL};
            long code = 0;
            r = request(s, x, "PUT", f->key, NULL, extra, f->buf, f->buf_len, &code, err);
            if (r < 0) {
                error_prefix(err, "uploading '%s'", f->key);
                goto out;
            }
            if (code == 412) { /* created meanwhile: look again */
                different_add(s, f->key);
                continue;
            }
            if (code != 200) {
                r = s3_failure(x, code, f->key, err);
                goto out;
            }
            created = true;
            if (!s3_etag_equal(http_reply_header(x, "etag"), digest->md5_hex))
                goto check_etag;
            atomic_store(&s->etags_md5, true);
            goto result;
        }
        r = error_set(err, -EAGAIN, "'%s': names taken while uploading", f->name);
        goto out;
    }
    /* multipart: the rest is the last part */
    r = send_part(f, err);
    if (r < 0)
        goto out;
    s3_multipart_etag((const uint8_t(*)[16])f->part_md5, f->parts_done, mp_etag);
    if (f->dry) {
        if (s3_etag_equal(f->dry_etag, mp_etag) || s3_etag_equal(f->dry_etag, digest->md5_hex) ||
            same_by_reading(f, f->key, digest->md5_hex)) {
            existed = true;
            goto result;
        }
        different_add(s, f->key);
        r = error_set(err, -EAGAIN,
                      "'%s' holds other content of the same size; retrying under a new name",
                      f->key);
        goto out;
    }
    char etag[S3_ETAG_MAX];
    r = complete(f, etag, err);
    if (r < 0)
        goto out;
    created = true;
    if (!f->etag_off && (s3_etag_equal(etag, mp_etag) || s3_etag_equal(etag, digest->md5_hex)))
        goto result;
check_etag:
    /* an ETag that is not the MD5 sent: the server stored other bytes (one that does not check
     * Content-MD5, as s3rver), or its ETags are not MD5s (encryption with KMS or customer keys):
     * reading the object back tells, unless the server is known for the latter and copies are
     * not verified */
    if (verify || !atomic_load(&s->etags_not_md5)) {
        r = read_back(f, digest, err);
        if (r < 0) /* not left under the name as if it were a copy */
            goto remove;
        read = true;
    }
result:
    if (r == 0 && verify && !read) {
        bool etag_differs = false;
        r = verify_object(f, mp_etag[0] ? mp_etag : digest->md5_hex,
                          mp_etag[0] ? digest->md5_hex : NULL, &etag_differs, err);
        if (r == 0 && etag_differs)
            r = read_back(f, digest, err);
    }
remove:
    if (r < 0 && created) /* differs, or could not be checked: not left as if it were a copy */
        remove_created(f, err);
    if (r == 0) {
        snprintf(ret->remote, sizeof(ret->remote), "s3://%s/%s", s->bucket, f->key);
        ret->existed = existed;
    }
out:
    abort_upload(f);
    file_free(f);
    return r;
}

static void s3_abort(void *file)
{
    struct s3_file *f = file;
    if (!f)
        return;
    abort_upload(f);
    file_free(f);
}

/* Reads a copy back for `snapsync verify`: remote is "s3://<bucket>/<key>" (dest_result), the key
 * below the prefix. */
static int s3_read_copy(void *priv, const char *remote,
                        int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                        struct error *err)
{
    struct s3 *s = priv;
    char head[sizeof(s->bucket) + 8];
    snprintf(head, sizeof(head), "s3://%s/", s->bucket);
    size_t hl = strlen(head), pl = strlen(s->prefix);
    const char *key = strncmp(remote, head, hl) == 0 ? remote + hl : NULL;
    if (!key || !key[0] || strlen(key) > S3_KEY_MAX ||
        (pl && (strncmp(key, s->prefix, pl) != 0 || key[pl] != '/')))
        return error_set(err, -EINVAL, "'%s' is not in %s", remote, s->label);
    int r = main_xfer(s, err);
    return r < 0 ? r : read_object(s, s->main, key, fn, arg, NULL, err);
}

const struct dest_ops dest_s3_ops = {
    .kind = "s3",
    .init = s3_init,
    .done = s3_done,
    .prepare = s3_prepare,
    .probe = s3_probe,
    .conn_new = s3_conn_new,
    .conn_free = s3_conn_free,
    .open = s3_open,
    .write = s3_write,
    .finish = s3_finish,
    .abort = s3_abort,
    .read_copy = s3_read_copy,
};
