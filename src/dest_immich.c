/* SPDX-License-Identifier: MIT */
/*
 * Immich destination (`immich.enabled`): uploads each file as an asset of the key's user.
 *
 * The file part is streamed: open() builds the multipart head (text fields first, then the
 * optional XMP sidecar, then the assetData part header) and starts a POST /api/assets (http.h)
 * whose read callback feeds the head, then the chunks write() hands over, then the closing
 * boundary. The read callback pauses the transfer (HTTP_READ_PAUSE) when the current chunk is
 * used up; write() resumes it and drives it until the chunk is consumed, so
 * memory is one chunk whatever the size and the card is read once. Content-Length is known from
 * the size. With a SHA-1 known from an earlier read, `x-immich-checksum` lets Immich answer
 * "duplicate" before the body: the transfer then stops and the rest of the chunks are dropped.
 *
 * Each open file takes a transfer slot (a `struct http`: one CURL easy handle) from its
 * connection's small pool and gives it back at finish/abort, so a finisher thread can verify
 * file k while file k+1 streams on the same connection; a slot keeps its HTTP connections alive
 * for the next file. Stalls are timed by us (no byte moved for immich.timeout seconds while we
 * drive the transfer), so the time spent waiting for the card reader never counts and a long
 * video never times out.
 *
 * prepare() reads the server version (2.x and 3.x field sets, older refused), checks the key and
 * its permissions, and finds or creates the session's album. Assets are added to albums in
 * batches (end_session flushes). precheck() asks bulk-upload-check for files whose SHA-1 is
 * known. Errors are classified for the engine's retries: connection problems, stalls, 5xx and
 * 429 are retryable (-ECONNRESET, -ETIMEDOUT, -EIO, -EAGAIN), 401/403 are -EACCES and other 4xx
 * -EINVAL (not retried), each with the server's message. The API key is sent only as a header
 * and never appears in a message.
 */
#include "http.h"
#include "immich_reply.h"
#include "media.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "dest.h"
#include "scanner.h"

#define URL_MAX 2048
#define REPLY_MAX (1024 * 1024)           /* an ordinary JSON reply */
#define ALBUM_LIST_MAX (32 * 1024 * 1024) /* GET /albums on 2.x lists every album */
#define SIDECAR_MAX (4 * 1024 * 1024)
#define HEAD_MAX (SIDECAR_MAX + 64 * 1024)
#define PRECHECK_BATCH 1000 /* items per bulk-upload-check (the CLI sends 5000) */
#define ALBUM_BATCH 500     /* asset ids per album add */
#define ALBUMS_MAX 4096     /* distinct albums one session adds to */
#define SLOTS_MAX 4         /* transfers one connection runs at once (writer + finisher) */
#define NAME_MAX_BYTES 255
#define MIN_MAJOR 2 /* oldest Immich served: 2.0.0 */

enum album_mode { ALBUM_NONE, ALBUM_FIXED, ALBUM_SESSION, ALBUM_DATE };

struct album {
    char name[256];
    char id[IMMICH_ID_MAX]; /* "" until found or created */
    char (*pending)[IMMICH_ID_MAX];
    size_t n_pending;
};

struct immich {
    char api[URL_MAX];      /* "https://host/api" */
    char ca_file[PATH_MAX]; /* immich.tls_ca_file, "" for the system's CAs */
    char *key_header;       /* "x-api-key: ..." (secret) */
    long timeout;
    bool verify;
    enum album_mode album_mode;
    bool album_pattern; /* immich.album_pattern names each file's album (album_mode none) */
    char album_fixed[256];
    char device_id[96];
    int version[3];       /* from prepare */
    struct http *main;    /* prepare, precheck, end_session, probe: the main thread */
    pthread_mutex_t lock; /* guards the albums */
    struct album *albums;
    size_t n_albums;
    char session_album[256];
};

struct immich_conn {
    struct immich *im;
    pthread_mutex_t lock; /* guards busy[] */
    struct http *slots[SLOTS_MAX];
    bool busy[SLOTS_MAX];
};

struct immich_file {
    struct immich_conn *conn;
    struct http *x;
    char *head; /* the form around the file, in body */
    char tail[128];
    struct http_framed body;
    uint64_t size, written;
    bool early; /* the server answered before the whole body was sent */
    char sha1_known[41];
    char dup_id[IMMICH_ID_MAX]; /* found by checksum after the server cut the upload */
    char album_date[16];
    char album[256]; /* from immich.album_pattern (dest_item.album); "" none */
};

/* ---- requests ---- */

/* Reply headers http_failure reads. */
static const char *const captured[] = {"retry-after", "location", NULL};

/* The error of an HTTP status other than the expected one. */
static int http_failure(const struct http *x, long code, struct error *err)
{
    char msg[256];

    const char *retry_after = http_reply_header(x, "retry-after");
    const char *location = http_reply_header(x, "location");
    immich_reply_message(http_reply(x), http_reply_len(x), msg, sizeof(msg));
    if (code == 429 || (code == 503 && retry_after && retry_after[0]))
        return error_set(err, -EAGAIN, "HTTP %ld %s (server busy, retry after %s s)", code, msg,
                         retry_after && retry_after[0] ? retry_after : "?");
    if (code == 408)
        return error_set(err, -ETIMEDOUT, "HTTP 408 %s", msg);
    if (code >= 500)
        return error_set(err, -EIO, "HTTP %ld %s (server error)", code, msg);
    if (code == 401)
        return error_set(err, -EACCES, "HTTP 401 %s (the API key was refused)", msg);
    if (code == 403)
        return error_set(err, -EACCES, "HTTP 403 %s", msg);
    if (code == 413)
        return error_set(err, -EINVAL,
                         "HTTP 413 %s (a proxy in front of Immich limits the request size; "
                         "raise client_max_body_size)",
                         msg);
    if (code >= 300 && code < 400)
        return error_set(err, -EINVAL, "HTTP %ld: redirected to '%s'; set immich.url to it", code,
                         location ? location : "");
    return error_set(err, -EINVAL, "HTTP %ld %s", code, msg);
}

/* Whether x ended without a whole reply (a reply over its ceiling is not this). */
static bool transfer_failed(const struct http *x)
{
    int r = http_error(x, NULL);
    return r < 0 && r != -EBADMSG;
}

/* Runs one JSON request to completion on x; *ret_code is the HTTP status. */
static int request(struct immich *im, struct http *x, const char *method, const char *path,
                   const char *body, bool auth, size_t reply_max, long *ret_code, struct error *err)
{
    char url[URL_MAX + 512];
    int n = snprintf(url, sizeof(url), "%s%s", im->api, path);
    if (n < 0 || (size_t)n >= sizeof(url))
        return error_set(err, -ENAMETOOLONG, "request URL too long");
    const char *headers[4] = {"Accept: application/json"};
    size_t k = 1;
    if (auth)
        headers[k++] = im->key_header;
    if (body)
        headers[k++] = "Content-Type: application/json";
    struct http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .reply_max = reply_max,
        .capture = captured,
    };
    return http_run(x, &req, ret_code, err);
}

/* request() that expects status `want`; anything else is classified. */
static int request_ok(struct immich *im, struct http *x, const char *method, const char *path,
                      const char *body, long want, size_t reply_max, struct error *err)
{
    long code = 0;
    int r = request(im, x, method, path, body, true, reply_max, &code, err);
    if (r < 0)
        return r;
    if (code != want)
        return http_failure(x, code, err);
    return 0;
}

/* ---- albums ---- */

static int album_resolve(struct immich *im, struct http *x, struct album *a, struct error *err)
{
    char path[1024];
    bool found = false;
    int r;
    if (im->version[0] >= 3) {
        char *q = curl_easy_escape(NULL, a->name, 0);
        if (!q)
            return error_set(err, -ENOMEM, "out of memory");
        snprintf(path, sizeof(path), "/albums?name=%s", q);
        curl_free(q);
    } else {
        snprintf(path, sizeof(path), "/albums"); /* 2.x has no name filter */
    }
    r = request_ok(im, x, "GET", path, NULL, 200, ALBUM_LIST_MAX, err);
    if (r == 0)
        r = immich_parse_album(http_reply(x), http_reply_len(x), a->name, a->id, &found, err);
    if (r < 0)
        return error_prefix(err, "album '%s'", a->name);
    if (found)
        return 0;
    struct json_object *o = json_object_new_object();
    if (!o || json_object_object_add(o, "albumName", json_object_new_string(a->name)) < 0) {
        json_object_put(o);
        return error_set(err, -ENOMEM, "out of memory");
    }
    r = request_ok(im, x, "POST", "/albums", json_object_to_json_string(o), 201, REPLY_MAX, err);
    json_object_put(o);
    if (r == 0)
        r = immich_parse_album(http_reply(x), http_reply_len(x), NULL, a->id, &found, err);
    if (r == 0 && !found)
        r = error_set(err, -EBADMSG, "no album id in the reply");
    if (r < 0)
        return error_prefix(err, "cannot create album '%s'", a->name);
    return 0;
}

/* Sends a's pending ids. Caller holds im->lock. */
static int album_flush(struct immich *im, struct http *x, struct album *a, struct error *err)
{
    int r = 0;
    if (a->n_pending == 0)
        return 0;
    if (!a->id[0] && (r = album_resolve(im, x, a, err)) < 0)
        return r;
    struct json_object *o = json_object_new_object();
    struct json_object *ids = json_object_new_array();
    if (!o || !ids || json_object_object_add(o, "ids", ids) < 0) {
        json_object_put(o);
        json_object_put(ids);
        return error_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < a->n_pending; i++)
        if (json_object_array_add(ids, json_object_new_string(a->pending[i])) < 0) {
            json_object_put(o);
            return error_set(err, -ENOMEM, "out of memory");
        }
    char path[128];
    snprintf(path, sizeof(path), "/albums/%s/assets", a->id);
    r = request_ok(im, x, "PUT", path, json_object_to_json_string(o), 200, REPLY_MAX, err);
    json_object_put(o);
    if (r < 0)
        return error_prefix(err, "cannot add %zu assets to album '%s'", a->n_pending, a->name);
    a->n_pending = 0; /* "duplicate" (already in the album) counts as done */
    return 0;
}

/* Finds (or adds) the album entry named name. Caller holds im->lock. */
static int album_get(struct immich *im, const char *name, struct album **ret, struct error *err)
{
    for (size_t i = 0; i < im->n_albums; i++)
        if (strcmp(im->albums[i].name, name) == 0) {
            *ret = &im->albums[i];
            return 0;
        }
    if (im->n_albums >= ALBUMS_MAX)
        return error_set(err, -ENOSPC, "more than %d albums in one session", ALBUMS_MAX);
    struct album *p = realloc(im->albums, (im->n_albums + 1) * sizeof(*p));
    if (!p)
        return error_set(err, -ENOMEM, "out of memory");
    im->albums = p;
    struct album *a = &p[im->n_albums];
    memset(a, 0, sizeof(*a));
    a->pending = calloc(ALBUM_BATCH, sizeof(*a->pending));
    if (!a->pending)
        return error_set(err, -ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", name);
    im->n_albums++;
    *ret = a;
    return 0;
}

/* Queues asset id for album name; sends a full batch at once with x. */
static int album_add(struct immich *im, struct http *x, const char *name, const char *id,
                     struct error *err)
{
    struct album *a;
    pthread_mutex_lock(&im->lock);
    int r = album_get(im, name, &a, err);
    if (r == 0) {
        snprintf(a->pending[a->n_pending++], IMMICH_ID_MAX, "%s", id);
        if (a->n_pending == ALBUM_BATCH)
            r = album_flush(im, x, a, err);
    }
    pthread_mutex_unlock(&im->lock);
    return r;
}

static void albums_clear(struct immich *im)
{
    for (size_t i = 0; i < im->n_albums; i++)
        free(im->albums[i].pending);
    free(im->albums);
    im->albums = NULL;
    im->n_albums = 0;
}

/* The album a file goes to, or NULL. */
static const char *album_for(const struct immich *im, const char *date, char *buf, size_t size)
{
    switch (im->album_mode) {
    case ALBUM_FIXED:
        return im->album_fixed;
    case ALBUM_SESSION:
        return im->session_album;
    case ALBUM_DATE:
        if (!date || !date[0])
            return NULL;
        snprintf(buf, size, "%s", date);
        for (char *p = buf; *p; p++)
            if (*p == '/')
                *p = '-';
        return buf;
    case ALBUM_NONE:
        break;
    }
    return NULL;
}

/* ---- ops ---- */

static int immich_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                       char *label, size_t label_size, struct error *err)
{
    const char *url = cfg->immich.url ? cfg->immich.url : "";
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/')
        len--;
    if (len == 0 || len > URL_MAX - 16)
        return error_set(err, -EINVAL, "immich.url: missing or too long");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f || url[i] == '?' || url[i] == '#')
            return error_set(err, -EINVAL, "immich.url: no spaces, query or fragment allowed");
    if (!cfg->immich.api_key || !cfg->immich.api_key[0])
        return error_set(err, -EINVAL, "immich.api_key (IMMICH_API_KEY) is not set");
    const char *ca = cfg->immich.tls_ca_file ? cfg->immich.tls_ca_file : "";
    if (ca[0] && access(ca, R_OK) != 0)
        return error_set(err, -errno, "immich.tls_ca_file: cannot read '%s': %s", ca,
                         strerror(errno));
    for (const char *p = cfg->immich.api_key; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return error_set(err, -EINVAL, "IMMICH_API_KEY holds a control character");

    struct immich *im = calloc(1, sizeof(*im));
    if (!im)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&im->lock, NULL);
    bool has_api = len >= 4 && strncmp(url + len - 4, "/api", 4) == 0;
    snprintf(im->api, sizeof(im->api), "%.*s%s", (int)len, url, has_api ? "" : "/api");
    snprintf(im->ca_file, sizeof(im->ca_file), "%s", ca);
    size_t kl = strlen("x-api-key: ") + strlen(cfg->immich.api_key) + 1;
    im->key_header = malloc(kl);
    if (!im->key_header) {
        free(im);
        return error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(im->key_header, kl, "x-api-key: %s", cfg->immich.api_key);
    im->timeout = cfg->immich.timeout > 0 ? cfg->immich.timeout : 30;
    im->verify = cfg->backup.verify_checksums;
    const char *mode = cfg->immich.album_mode ? cfg->immich.album_mode : "auto";
    if (strcmp(mode, "fixed") == 0)
        im->album_mode = ALBUM_FIXED;
    else if (strcmp(mode, "session") == 0)
        im->album_mode = ALBUM_SESSION;
    else if (strcmp(mode, "date") == 0)
        im->album_mode = ALBUM_DATE;
    else if (strcmp(mode, "auto") == 0)
        im->album_mode = cfg->immich.organize_by_date ? ALBUM_DATE : ALBUM_NONE;
    else
        im->album_mode = ALBUM_NONE;
    im->album_pattern = cfg->immich.album_pattern[0] != '\0';
    if (im->album_pattern) /* albums come with each file (dest_item.album) */
        im->album_mode = ALBUM_NONE;
    snprintf(im->album_fixed, sizeof(im->album_fixed), "%s",
             cfg->immich.album ? cfg->immich.album : "");
    char host[64] = "";
    if (gethostname(host, sizeof(host)) < 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(im->device_id, sizeof(im->device_id), "snapsync-%s", host);
    snprintf(id, id_size, "immich:%s", im->api);
    snprintf(label, label_size, "immich %s", im->api);
    *ret_priv = im;
    return 0;
}

static void immich_done(void *priv)
{
    struct immich *im = priv;
    if (!im)
        return;
    http_free(im->main);
    albums_clear(im);
    if (im->key_header) {
        explicit_bzero(im->key_header, strlen(im->key_header));
        free(im->key_header);
    }
    pthread_mutex_destroy(&im->lock);
    free(im);
}

/* A new transfer handle with the options of im. */
static int xfer_new(const struct immich *im, struct http **ret, struct error *err)
{
    struct http_options o = {
        .name = "Immich",
        .section = "immich",
        .ca_file = im->ca_file,
        .connect_timeout = im->timeout,
        .stall_timeout = im->timeout,
    };
    return http_new(&o, ret, err);
}

static int main_xfer(struct immich *im, struct error *err)
{
    return im->main ? 0 : xfer_new(im, &im->main, err);
}

/* Server version into im->version; refuses what we do not serve. */
static int check_version(struct immich *im, struct error *err)
{
    long code = 0;
    int r = request(im, im->main, "GET", "/server/version", NULL, false, REPLY_MAX, &code, err);
    if (r < 0)
        return error_prefix(err, "%s", im->api);
    if (code != 200) {
        http_failure(im->main, code, err);
        return error_prefix(err, "%s/server/version", im->api);
    }
    r = immich_parse_version(http_reply(im->main), http_reply_len(im->main), im->version, err);
    if (r < 0)
        return error_prefix(err, "%s/server/version", im->api);
    if (im->version[0] < MIN_MAJOR)
        return error_set(err, -ENOTSUP,
                         "Immich %d.%d.%d is older than %d.0.0, the oldest version SnapSync "
                         "supports; upgrade Immich",
                         im->version[0], im->version[1], im->version[2], MIN_MAJOR);
    return 0;
}

/* The permissions this configuration needs. */
static unsigned perms_needed(const struct immich *im)
{
    unsigned need = IMMICH_PERM_UPLOAD | IMMICH_PERM_READ;
    if (im->album_mode != ALBUM_NONE || im->album_pattern)
        need |= IMMICH_PERM_ALBUM_READ | IMMICH_PERM_ALBUM_CREATE | IMMICH_PERM_ALBUM_ADD;
    return need;
}

static const char *perm_name(unsigned bit)
{
    switch (bit) {
    case IMMICH_PERM_UPLOAD:
        return "asset.upload";
    case IMMICH_PERM_READ:
        return "asset.read";
    case IMMICH_PERM_ALBUM_READ:
        return "album.read";
    case IMMICH_PERM_ALBUM_CREATE:
        return "album.create";
    default:
        return "albumAsset.create";
    }
}

static int check_key(struct immich *im, char *name, size_t name_size, struct error *err)
{
    long code = 0;
    unsigned perms = 0;
    int r = request(im, im->main, "GET", "/api-keys/me", NULL, true, REPLY_MAX, &code, err);
    if (r < 0)
        return r;
    if (code == 401)
        return error_set(err, -EACCES, "the API key was refused (HTTP 401); check IMMICH_API_KEY");
    if (code != 200) {
        http_failure(im->main, code, err);
        return error_prefix(err, "checking the API key");
    }
    r = immich_parse_api_key(http_reply(im->main), http_reply_len(im->main), &perms, name,
                             name_size, err);
    if (r < 0)
        return r;
    unsigned missing = perms_needed(im) & ~perms;
    if (missing) {
        char list[160] = "";
        size_t at = 0;
        for (unsigned bit = 1; bit <= IMMICH_PERM_ALBUM_ADD; bit <<= 1)
            if (missing & bit) {
                int k =
                    snprintf(list + at, sizeof(list) - at, "%s%s", at ? ", " : "", perm_name(bit));
                if (k > 0 && (size_t)k < sizeof(list) - at)
                    at += (size_t)k;
            }
        return error_set(err, -EACCES, "the API key lacks the permission%s %s",
                         strchr(list, ',') ? "s" : "", list);
    }
    return 0;
}

static int immich_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    struct immich *im = priv;
    int r = main_xfer(im, err);
    if (r == 0)
        r = check_version(im, err);
    if (r == 0)
        r = check_key(im, NULL, 0, err);
    if (r < 0)
        return r;
    albums_clear(im);
    if (im->album_mode == ALBUM_SESSION) {
        time_t t = (time_t)session->started_at;
        struct tm tm;
        char when[32] = "";
        if (localtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
        const char *card = session->card_label && session->card_label[0] ? session->card_label
                                                                         : session->card_uuid;
        snprintf(im->session_album, sizeof(im->session_album), "SnapSync %s %s",
                 card ? card : "card", when);
    }
    const char *name = im->album_mode == ALBUM_FIXED     ? im->album_fixed
                       : im->album_mode == ALBUM_SESSION ? im->session_album
                                                         : NULL;
    if (name) { /* found or created now, so a problem shows before any upload */
        struct album *a;
        pthread_mutex_lock(&im->lock);
        r = album_get(im, name, &a, err);
        if (r == 0)
            r = album_resolve(im, im->main, a, err);
        pthread_mutex_unlock(&im->lock);
    }
    return r;
}

static int immich_precheck(void *priv, const struct dest_item *items, size_t n,
                           struct dest_precheck *ret, struct error *err)
{
    struct immich *im = priv;
    int r = main_xfer(im, err);
    for (size_t start = 0; r == 0 && start < n; start += PRECHECK_BATCH) {
        size_t m = n - start < PRECHECK_BATCH ? n - start : PRECHECK_BATCH;
        struct json_object *o = json_object_new_object();
        struct json_object *list = json_object_new_array();
        if (!o || !list || json_object_object_add(o, "assets", list) < 0) {
            json_object_put(o);
            json_object_put(list);
            return error_set(err, -ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < m; i++) {
            char idx[24];
            snprintf(idx, sizeof(idx), "%zu", i);
            struct json_object *it = json_object_new_object();
            if (!it || json_object_object_add(it, "id", json_object_new_string(idx)) < 0 ||
                json_object_object_add(it, "checksum",
                                       json_object_new_string(items[start + i].sha1_known)) < 0 ||
                json_object_array_add(list, it) < 0) {
                json_object_put(it);
                json_object_put(o);
                return error_set(err, -ENOMEM, "out of memory");
            }
        }
        r = request_ok(im, im->main, "POST", "/assets/bulk-upload-check",
                       json_object_to_json_string(o), 200, REPLY_MAX, err);
        json_object_put(o);
        if (r == 0)
            r = immich_parse_bulk_check(http_reply(im->main), http_reply_len(im->main), m,
                                        ret + start, err);
    }
    if (r < 0)
        return r;
    /* files Immich already has still belong in the session's album (date unknown here) */
    char buf[64];
    const char *album = im->album_mode == ALBUM_DATE ? NULL : album_for(im, NULL, buf, sizeof(buf));
    for (size_t i = 0; album && i < n && r == 0; i++)
        if (ret[i].present)
            r = album_add(im, im->main, album, ret[i].remote, err);
    return r;
}

/* `snapsync verify`: bulk-upload-check by the SHA-1 says whether Immich still has the content
 * (outside its trash); when it has not, GET /assets/{id} tells a trashed asset from a gone one. */
static int immich_lookup_copy(void *priv, const char *remote, const char *sha1_hex,
                              struct dest_lookup *ret, struct error *err)
{
    struct immich *im = priv;
    char body[160];
    struct dest_precheck pc = {0};
    int n =
        snprintf(body, sizeof(body), "{\"assets\":[{\"id\":\"0\",\"checksum\":\"%s\"}]}", sha1_hex);
    if (n < 0 || (size_t)n >= sizeof(body) || strlen(sha1_hex) != 40 ||
        strspn(sha1_hex, "0123456789abcdef") != 40)
        return error_set(err, -EINVAL, "not a SHA-1: '%.64s'", sha1_hex);
    int r = main_xfer(im, err);
    if (r == 0)
        r = request_ok(im, im->main, "POST", "/assets/bulk-upload-check", body, 200, REPLY_MAX,
                       err);
    if (r == 0)
        r = immich_parse_bulk_check(http_reply(im->main), http_reply_len(im->main), 1, &pc, err);
    if (r < 0)
        return r;
    struct dest_lookup out = {.present = pc.present};
    snprintf(out.remote, sizeof(out.remote), "%s", pc.present ? pc.remote : remote);
    if (!pc.present && strlen(remote) < 64 &&
        strspn(remote, "0123456789abcdef-") == strlen(remote)) {
        char path[128], sum[64];
        bool trashed = false;
        struct error ignored = {0};
        snprintf(path, sizeof(path), "/assets/%s", remote);
        if (request_ok(im, im->main, "GET", path, NULL, 200, REPLY_MAX, &ignored) == 0 &&
            immich_parse_asset(http_reply(im->main), http_reply_len(im->main), sum, &trashed,
                               &ignored) == 0)
            out.trashed = trashed;
    }
    *ret = out;
    return 0;
}

static int immich_end_session(void *priv, struct error *err)
{
    struct immich *im = priv;
    int r = 0;
    pthread_mutex_lock(&im->lock);
    for (size_t i = 0; i < im->n_albums; i++) {
        struct error e;
        if (im->albums[i].n_pending == 0)
            continue;
        int k = main_xfer(im, &e);
        if (k == 0)
            k = album_flush(im, im->main, &im->albums[i], &e);
        if (k < 0 && r == 0) {
            r = k;
            *err = e;
        }
    }
    pthread_mutex_unlock(&im->lock);
    return r;
}

static int immich_probe(void *priv, char *detail, size_t detail_size, struct error *err)
{
    struct immich *im = priv;
    long code = 0;
    char name[128] = "";
    int r = main_xfer(im, err);
    if (r < 0)
        return r;
    r = request(im, im->main, "GET", "/server/ping", NULL, false, REPLY_MAX, &code, err);
    if (r < 0)
        return error_prefix(err, "unreachable: %s", im->api);
    if (code != 200) {
        http_failure(im->main, code, err);
        return error_prefix(err, "unreachable: %s/server/ping", im->api);
    }
    r = check_version(im, err);
    if (r < 0)
        return error_prefix(err, "version");
    r = check_key(im, name, sizeof(name), err);
    if (r < 0)
        return error_prefix(err, "API key");
    char safe[128];
    immich_printable(name, strlen(name), safe, sizeof(safe));
    snprintf(detail, detail_size, "%s: Immich %d.%d.%d, API key '%s' may upload and read assets%s",
             im->api, im->version[0], im->version[1], im->version[2], safe,
             im->album_mode != ALBUM_NONE || im->album_pattern ? " and manage albums" : "");
    return 0;
}

static int immich_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct immich_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->im = priv;
    pthread_mutex_init(&c->lock, NULL);
    *ret_conn = c;
    return 0;
}

static void immich_conn_free(void *conn)
{
    struct immich_conn *c = conn;
    if (!c)
        return;
    for (int i = 0; i < SLOTS_MAX; i++)
        http_free(c->slots[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A transfer slot of c for one file (its connections stay alive in it for the next). */
static int slot_take(struct immich_conn *c, struct http **ret, struct error *err)
{
    int r = -EBUSY;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SLOTS_MAX; i++) {
        if (c->busy[i])
            continue;
        if (!c->slots[i] && (r = xfer_new(c->im, &c->slots[i], err)) < 0)
            break;
        c->busy[i] = true;
        *ret = c->slots[i];
        r = 0;
        break;
    }
    pthread_mutex_unlock(&c->lock);
    if (r == -EBUSY)
        error_set(err, r, "more than %d transfers on one connection", SLOTS_MAX);
    return r;
}

static void slot_give(struct immich_conn *c, struct http *x)
{
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SLOTS_MAX; i++)
        if (c->slots[i] == x)
            c->busy[i] = false;
    pthread_mutex_unlock(&c->lock);
}

/* ISO-8601 with a zone, as Immich 3 wants: floating wall clock + offset seconds. */
static int format_time(int64_t wall, int32_t offset, int ms, char *out, size_t size)
{
    time_t t = (time_t)wall;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999)
        return -EINVAL;
    char zone[8] = "Z";
    if (offset != 0) {
        int a = offset < 0 ? -offset : offset;
        if (a >= 24 * 3600)
            return -EINVAL;
        snprintf(zone, sizeof(zone), "%c%02d:%02d", offset < 0 ? '-' : '+', a / 3600, a / 60 % 60);
    }
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%s", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms, zone);
    return 0;
}

/* Offset of the local zone at a floating wall-clock time. */
static int32_t local_offset(int64_t wall)
{
    time_t t = (time_t)wall;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return 0;
    tm.tm_isdst = -1;
    time_t utc = mktime(&tm);
    if (utc == (time_t)-1)
        return 0;
    int64_t off = wall - (int64_t)utc;
    return off > -24 * 3600 && off < 24 * 3600 ? (int32_t)off : 0;
}

/* A value safe inside a quoted Content-Disposition parameter (HTML form encoding). */
static void quoted_name(const char *in, char *out, size_t size)
{
    size_t j = 0;
    for (const char *p = in; *p && j + 4 < size; p++) {
        if (*p == '"' || *p == '\r' || *p == '\n' || *p == '%') {
            j += (size_t)snprintf(out + j, size - j, "%%%02X", (unsigned char)*p);
        } else {
            out[j++] = *p;
        }
    }
    out[j] = '\0';
}

static int add_field(FILE *f, const char *boundary, const char *name, const char *value)
{
    return fprintf(f, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", boundary,
                   name, value) < 0
               ? -EIO
               : 0;
}

/* Reads the sidecar into the multipart head as the sidecarData file part. */
static int add_sidecar(FILE *f, const char *boundary, const struct dest_item *item,
                       struct error *err)
{
    int fd = scanner_open_beneath(item->card_dir_fd, item->sidecar_rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, fd, "cannot open the sidecar '%s'", item->sidecar_rel);
    int r = 0;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = error_set_errno(err, -errno, "sidecar '%s'", item->sidecar_rel);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > SIDECAR_MAX) {
        r = error_set(err, -EFBIG, "the sidecar '%s' is larger than %d bytes", item->sidecar_rel,
                      SIDECAR_MAX);
        goto out;
    }
    size_t size = (size_t)st.st_size, got = 0;
    buf = malloc(size ? size : 1);
    if (!buf) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    while (got < size) {
        ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = error_set_errno(err, n < 0 ? -errno : -EIO, "cannot read the sidecar '%s'",
                                item->sidecar_rel);
            goto out;
        }
        got += (size_t)n;
    }
    const char *base = strrchr(item->sidecar_rel, '/');
    char qn[NAME_MAX_BYTES * 3 + 1];
    quoted_name(base ? base + 1 : item->sidecar_rel, qn, sizeof(qn));
    if (fprintf(f,
                "--%s\r\nContent-Disposition: form-data; name=\"sidecarData\"; filename=\"%s\"\r\n"
                "Content-Type: application/xml\r\n\r\n",
                boundary, qn) < 0 ||
        fwrite(buf, 1, size, f) != size || fputs("\r\n", f) < 0)
        r = error_set(err, -ENOMEM, "out of memory");
out:
    free(buf);
    close(fd);
    return r;
}

/* The multipart head: text fields, then the sidecar, then the assetData part header. */
static int build_head(struct immich_file *fl, const struct immich *im, const struct dest_item *it,
                      const char *boundary, struct error *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    int r = 0;
    char created[48], modified[48];
    int64_t mtime_s = it->mtime_ns / 1000000000;
    int mtime_ms = (int)(it->mtime_ns % 1000000000 / 1000000);
    if (mtime_ms < 0)
        mtime_ms = 0;
    if (format_time(mtime_s, 0, mtime_ms, modified, sizeof(modified)) < 0)
        format_time(0, 0, 0, modified, sizeof(modified));
    int32_t off = it->has_offset ? it->utc_offset : local_offset(it->capture_time);
    if (it->capture_time <= 0 ||
        format_time(it->capture_time, off, 0, created, sizeof(created)) < 0)
        snprintf(created, sizeof(created), "%s", modified);
    /* the text must not hold the boundary or a line break that would end the part */
    for (const char *p = it->name; *p; p++)
        if (*p == '\r' || *p == '\n') {
            fclose(f);
            free(text);
            return error_set(err, -EINVAL, "a line break in the file name cannot be uploaded");
        }
    if (im->version[0] < 3) {
        char dev_asset[NAME_MAX_BYTES + 48];
        snprintf(dev_asset, sizeof(dev_asset), "%s-%" PRIu64, it->name, it->size);
        r = add_field(f, boundary, "deviceAssetId", dev_asset);
        if (r == 0)
            r = add_field(f, boundary, "deviceId", im->device_id);
    }
    if (r == 0)
        r = add_field(f, boundary, "fileCreatedAt", created);
    if (r == 0)
        r = add_field(f, boundary, "fileModifiedAt", modified);
    if (r == 0)
        r = add_field(f, boundary, "filename", it->name);
    if (r == 0 && it->kind && strcmp(it->kind, "video") == 0)
        r = add_field(f, boundary, "duration", im->version[0] < 3 ? "0:00:00.000000" : "0");
    if (r < 0) {
        fclose(f);
        free(text);
        return error_set(err, -ENOMEM, "out of memory");
    }
    if (it->sidecar_rel && (r = add_sidecar(f, boundary, it, err)) < 0) {
        fclose(f);
        free(text);
        return r;
    }
    char qn[NAME_MAX_BYTES * 3 + 1];
    quoted_name(it->name, qn, sizeof(qn));
    if (fprintf(f,
                "--%s\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"%s\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n",
                boundary, qn) < 0 ||
        fclose(f) != 0) {
        free(text);
        return error_set(err, -ENOMEM, "out of memory");
    }
    if (len > HEAD_MAX) {
        free(text);
        return error_set(err, -EFBIG, "multipart head too large");
    }
    fl->head = text;
    fl->body.head = text;
    fl->body.head_len = len;
    fl->body.tail = fl->tail;
    fl->body.tail_len = (size_t)snprintf(fl->tail, sizeof(fl->tail), "\r\n--%s--\r\n", boundary);
    return 0;
}

static int immich_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct immich_conn *c = conn;
    struct immich *im = c->im;
    struct immich_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->conn = c;
    f->size = item->size;
    f->body.size = item->size;
    int r = 0;
    uint8_t rnd[16];
    char boundary[48];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        r = error_set_errno(err, -errno, "getrandom");
        goto fail;
    }
    memcpy(boundary, "snapsync-", 9);
    hasher_hex(rnd, sizeof(rnd), boundary + 9);
    snprintf(f->sha1_known, sizeof(f->sha1_known), "%s", item->sha1_known ? item->sha1_known : "");
    media_date_path(item->capture_time, f->album_date, sizeof(f->album_date));
    snprintf(f->album, sizeof(f->album), "%s", item->album ? item->album : "");
    r = build_head(f, im, item, boundary, err);
    if (r < 0)
        goto fail;

    char ct[96], sum[80];
    snprintf(ct, sizeof(ct), "Content-Type: multipart/form-data; boundary=%s", boundary);
    snprintf(sum, sizeof(sum), "x-immich-checksum: %s", f->sha1_known);
    /* no "Expect: 100-continue": servers that ignore it would cost a second per file */
    const char *headers[] = {"Accept: application/json",
                             im->key_header,
                             ct,
                             "Expect:",
                             strlen(f->sha1_known) == 40 ? sum : NULL,
                             NULL};
    r = slot_take(c, &f->x, err);
    if (r < 0)
        goto fail;
    char url[URL_MAX + 16];
    snprintf(url, sizeof(url), "%s/assets", im->api);
    struct http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .read = http_framed_read,
        .read_arg = &f->body,
        .body_size = (int64_t)(f->body.head_len + f->size + f->body.tail_len),
        .reply_max = REPLY_MAX,
        .capture = captured,
    };
    r = http_start(f->x, &req, err);
    if (r < 0)
        goto fail;
    *ret_file = f;
    return 0;
fail:
    if (f->x)
        slot_give(c, f->x);
    free(f->head);
    free(f);
    return r;
}

static bool chunk_used(void *arg)
{
    struct immich_file *f = arg;
    if (f->body.chunk_off == f->body.chunk_len)
        return true;
    if (http_reply_complete(f->x)) { /* answered early (a duplicate by checksum, an error) */
        f->early = true;
        return true;
    }
    return false;
}

/* The outcome of an upload whose transfer ended (or was answered early). */
static int upload_result(struct immich_file *f, char id[IMMICH_ID_MAX], bool *ret_dup,
                         struct error *err)
{
    struct http *x = f->x;
    long code = http_status(x);
    /* a connection cut after a complete reply (duplicate by checksum) is not an error */
    if (transfer_failed(x) && !(http_done(x) && http_reply_complete(x)) && !f->early)
        return http_error(x, err);
    if (http_error(x, NULL) == -EBADMSG)
        return error_set(err, -EBADMSG, "the upload reply is too large");
    if (code != 200 && code != 201)
        return http_failure(x, code, err);
    int r = immich_parse_upload(http_reply(x), http_reply_len(x), id, ret_dup, err);
    if (r < 0) /* retryable: the next attempt gets a clean answer or a duplicate */
        return error_set(err, -EIO, "upload: %s", err->msg);
    return 0;
}

static void file_free(struct immich_file *f)
{
    if (f->x) {
        http_end(f->x);
        slot_give(f->conn, f->x);
    }
    free(f->head);
    free(f);
}

/*
 * The server may answer "duplicate" to the checksum header and close the connection while the
 * body is still being sent; when the write hits the closed socket first, the reply is lost. With
 * the checksum known, ask the server whether it has that content: if so, it is a duplicate, not
 * an error. Returns true when it is (f->dup_id set).
 */
static bool duplicate_after_cut(struct immich_file *f)
{
    if (!f->sha1_known[0] || http_error(f->x, NULL) != -ECONNRESET)
        return false;
    struct immich *im = f->conn->im;
    char body[160];
    snprintf(body, sizeof(body), "{\"assets\":[{\"id\":\"0\",\"checksum\":\"%s\"}]}",
             f->sha1_known);
    struct dest_precheck pc = {0};
    struct error err = {0};
    http_end(f->x);
    if (request_ok(im, f->x, "POST", "/assets/bulk-upload-check", body, 200, REPLY_MAX, &err) < 0 ||
        immich_parse_bulk_check(http_reply(f->x), http_reply_len(f->x), 1, &pc, &err) < 0 ||
        !pc.present)
        return false;
    snprintf(f->dup_id, sizeof(f->dup_id), "%s", pc.remote);
    f->early = true;
    return true;
}

static int immich_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct immich_file *f = file;
    if (f->written + len > f->size)
        return error_set(err, -EIO, "the file grew while it was read (%" PRIu64 " bytes expected)",
                         f->size);
    if (f->early || http_done(f->x)) {
        f->written += len;
        return 0; /* answered already; the rest of the file is not needed */
    }
    f->written += len;
    f->body.chunk = buf;
    f->body.chunk_len = len;
    f->body.chunk_off = 0;
    http_resume(f->x); /* waiting for the reader is not a stall */
    int r = http_drive(f->x, chunk_used, f, err);
    if (r < 0)
        return r;
    if (http_done(f->x) && !f->early) {
        long code = http_status(f->x);
        if (transfer_failed(f->x) && !http_reply_complete(f->x))
            return duplicate_after_cut(f) ? 0 : http_error(f->x, err);
        if (code != 200 && code != 201)
            return http_failure(f->x, code, err);
        f->early = f->body.sent < f->size;
    }
    return 0;
}

/* GET /assets/{id}: the server's SHA-1 must be ours. */
static int verify_asset(struct immich *im, struct http *x, const char *id,
                        const struct hasher_digest *digest, struct error *err)
{
    char path[128], sum[64], want[40];
    bool trashed = false;
    snprintf(path, sizeof(path), "/assets/%s", id);
    int r = request_ok(im, x, "GET", path, NULL, 200, REPLY_MAX, err);
    if (r == 0)
        r = immich_parse_asset(http_reply(x), http_reply_len(x), sum, &trashed, err);
    if (r == -EBADMSG)
        r = -EIO;
    if (r < 0) {
        error_prefix(err, "verify asset %s", id);
        err->code = r;
        return r;
    }
    EVP_EncodeBlock((unsigned char *)want, digest->sha1, sizeof(digest->sha1));
    if (strcmp(sum, want) != 0 && strcasecmp(sum, digest->sha1_hex) != 0)
        return error_set(err, -EIO, "verify: Immich asset %s has checksum %s, the file %s", id, sum,
                         want);
    if (trashed)
        return error_set(err, -EINVAL,
                         "Immich asset %s (the same content) is in the trash; restore it or "
                         "empty the trash",
                         id);
    return 0;
}

static int immich_finish(void *file, const struct hasher_digest *digest, bool verify,
                         struct dest_result *ret, struct error *err)
{
    struct immich_file *f = file;
    struct immich *im = f->conn->im;
    int r = 0;
    char id[IMMICH_ID_MAX];
    bool dup = false;
    if (!f->early && !http_done(f->x)) {
        if (f->written != f->size) {
            r = error_set(err, -EIO, "read %" PRIu64 " of %" PRIu64 " bytes", f->written, f->size);
            goto out;
        }
        f->body.chunk_len = f->body.chunk_off = 0;
        http_resume(f->x);
        r = http_drive(f->x, NULL, NULL, err);
        if (r < 0)
            goto out;
    }
    if (f->dup_id[0]) {
        snprintf(id, sizeof(id), "%s", f->dup_id);
        dup = true;
    } else {
        http_end(f->x);
        r = upload_result(f, id, &dup, err);
        if (r == -ECONNRESET && duplicate_after_cut(f)) {
            snprintf(id, sizeof(id), "%s", f->dup_id);
            dup = true;
            r = 0;
        }
        if (r < 0)
            goto out;
    }
    if (dup && f->early && f->sha1_known[0] && strcmp(f->sha1_known, digest->sha1_hex) != 0) {
        r = error_set(err, -EIO, "the file changed since it was hashed; uploading it again");
        goto out;
    }
    if (verify && (r = verify_asset(im, f->x, id, digest, err)) < 0)
        goto out;
    char buf[64];
    const char *album = f->album[0] ? f->album : album_for(im, f->album_date, buf, sizeof(buf));
    if (album && (r = album_add(im, f->x, album, id, err)) < 0)
        goto out;
    snprintf(ret->remote, sizeof(ret->remote), "%s", id);
    ret->existed = dup;
out:
    file_free(f);
    return r;
}

static void immich_abort(void *file)
{
    if (file)
        file_free(file);
}

const struct dest_ops dest_immich_ops = {
    .kind = "immich",
    .needs_sha1 = true,
    .init = immich_init,
    .done = immich_done,
    .prepare = immich_prepare,
    .precheck = immich_precheck,
    .end_session = immich_end_session,
    .probe = immich_probe,
    .conn_new = immich_conn_new,
    .conn_free = immich_conn_free,
    .open = immich_open,
    .write = immich_write,
    .finish = immich_finish,
    .abort = immich_abort,
    .lookup_copy = immich_lookup_copy,
};
