/* SPDX-License-Identifier: MIT */
/*
 * Immich destination (`immich.enabled`): uploads each file as an asset of the key's user.
 *
 * The file part is streamed: open() builds the multipart head (text fields first, then the
 * optional XMP sidecar, then the assetData part header) and starts a POST /api/assets whose
 * CURLOPT_READFUNCTION feeds the head, then the chunks write() hands over, then the closing
 * boundary. The read callback pauses the transfer (CURL_READFUNC_PAUSE) when the current chunk is
 * used up; write() unpauses and drives curl_multi_perform/poll until the chunk is consumed, so
 * memory is one chunk whatever the size and the card is read once. Content-Length is known from
 * the size. With a SHA-1 known from an earlier read, `x-immich-checksum` lets Immich answer
 * "duplicate" before the body: the transfer then stops and the rest of the chunks are dropped.
 *
 * Each open file takes a transfer slot (a CURL easy handle in its own multi handle) from its
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
#include "dest_immich.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <linux/tcp.h>
#include <openssl/evp.h>

#include "dest.h"
#include "scanner.h"

#define URL_MAX 2048
#define REPLY_MAX (1024 * 1024)           /* an ordinary JSON reply */
#define ALBUM_LIST_MAX (32 * 1024 * 1024) /* GET /albums on 2.x lists every album */
#define JSON_DEPTH 32
#define SIDECAR_MAX (4 * 1024 * 1024)
#define HEAD_MAX (SIDECAR_MAX + 64 * 1024)
#define PRECHECK_BATCH 1000 /* items per bulk-upload-check (the CLI sends 5000) */
#define ALBUM_BATCH 500     /* asset ids per album add */
#define ALBUMS_MAX 4096     /* distinct albums one session adds to */
#define SLOTS_MAX 4         /* transfers one connection runs at once (writer + finisher) */
#define NAME_MAX_BYTES 255
#define MIN_MAJOR 2 /* oldest Immich served: 2.0.0 */

enum album_mode { ALBUM_NONE, ALBUM_FIXED, ALBUM_SESSION, ALBUM_DATE };

/* One CURL easy handle in its own multi handle, with the reply of its last request. */
struct xfer {
    CURL *easy;
    CURLM *multi;
    bool in_use;
    char *reply;
    size_t reply_len, reply_cap, reply_max;
    bool reply_overflow;
    long resp_clen;       /* Content-Length of the reply being received, -1 unknown */
    char retry_after[32]; /* Retry-After of the reply, "" if none */
    char location[256];
    double last_progress; /* monotonic seconds */
    curl_off_t moved;     /* bytes up + down seen by the progress callback */
    uint64_t wire;        /* bytes the peer acknowledged + bytes received, from TCP_INFO */
    curl_socket_t sock;   /* the connection's socket (one per multi handle), or CURL_SOCKET_BAD */
    bool stalled;
    bool done;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
    long timeout;
};

struct album {
    char name[256];
    char id[IMMICH_ID_MAX]; /* "" until found or created */
    char (*pending)[IMMICH_ID_MAX];
    size_t n_pending;
};

struct immich {
    char api[URL_MAX]; /* "https://host/api" */
    char ca_file[PATH_MAX]; /* immich.tls_ca_file, "" for the system's CAs */
    char *key_header;  /* "x-api-key: ..." (secret) */
    long timeout;
    bool verify;
    enum album_mode album_mode;
    char album_fixed[256];
    char device_id[96];
    int version[3];       /* from prepare */
    struct xfer *main;    /* prepare, precheck, end_session, probe: the main thread */
    pthread_mutex_t lock; /* guards the albums */
    struct album *albums;
    size_t n_albums;
    char session_album[256];
};

struct immich_conn {
    struct immich *im;
    pthread_mutex_t lock; /* guards slots[].in_use */
    struct xfer *slots[SLOTS_MAX];
};

struct immich_file {
    struct immich_conn *conn;
    struct xfer *x;
    struct curl_slist *headers;
    char *head;
    size_t head_len, head_off;
    char tail[128];
    size_t tail_len, tail_off;
    const uint8_t *chunk;
    size_t chunk_len, chunk_off;
    uint64_t size, sent, written;
    bool paused;
    bool early; /* the server answered before the whole body was sent */
    char sha1_known[41];
    char dup_id[IMMICH_ID_MAX]; /* found by checksum after the server cut the upload */
    char album_date[16];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- reply parsers (dest_immich.h) ---- */

static int parse_json(const char *buf, size_t len, struct json_object **ret, struct error *err)
{
    if (len > INT_MAX)
        return error_set(err, -EBADMSG, "reply too large");
    struct json_tokener *tok = json_tokener_new_ex(JSON_DEPTH);
    if (!tok)
        return error_set(err, -ENOMEM, "out of memory");
    struct json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    if (o && je == json_tokener_success && json_tokener_get_parse_end(tok) < len) {
        /* trailing bytes after the value: only white space is fine */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
            if (!isspace((unsigned char)buf[i])) {
                json_object_put(o);
                o = NULL;
                break;
            }
    }
    json_tokener_free(tok);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the reply is not JSON");
    }
    *ret = o;
    return 0;
}

static const char *get_string(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static bool get_bool(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v) &&
           json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/* An id we put into a URL path: a uuid's characters only. */
static bool valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= IMMICH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

int immich_parse_version(const char *buf, size_t len, int ret[3], struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    static const char *const names[3] = {"major", "minor", "patch"};
    int v[3];
    for (int i = 0; i < 3; i++) {
        struct json_object *x;
        if (!json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, names[i], &x) || !json_object_is_type(x, json_type_int) ||
            json_object_get_int64(x) < 0 || json_object_get_int64(x) > 100000) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the version reply has no valid '%s'", names[i]);
        }
        v[i] = (int)json_object_get_int64(x);
    }
    json_object_put(o);
    memcpy(ret, v, sizeof(v));
    return 0;
}

int immich_parse_upload(const char *buf, size_t len, char ret_id[IMMICH_ID_MAX],
                        bool *ret_duplicate, struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *id = get_string(o, "id");
    const char *status = get_string(o, "status");
    if (!valid_id(id) || !status ||
        (strcmp(status, "created") != 0 && strcmp(status, "duplicate") != 0)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the upload reply has no valid id and status");
    }
    snprintf(ret_id, IMMICH_ID_MAX, "%s", id);
    *ret_duplicate = strcmp(status, "duplicate") == 0;
    json_object_put(o);
    return 0;
}

int immich_parse_asset(const char *buf, size_t len, char ret_checksum[64], bool *ret_trashed,
                       struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *sum = get_string(o, "checksum");
    if (!sum || strlen(sum) >= 64) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the asset reply has no checksum");
    }
    snprintf(ret_checksum, 64, "%s", sum);
    *ret_trashed = get_bool(o, "isTrashed");
    json_object_put(o);
    return 0;
}

int immich_parse_api_key(const char *buf, size_t len, unsigned *ret_perms, char *ret_name,
                         size_t name_size, struct error *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {
        {"all", IMMICH_PERM_ALL},
        {"asset.upload", IMMICH_PERM_UPLOAD},
        {"asset.read", IMMICH_PERM_READ},
        {"album.read", IMMICH_PERM_ALBUM_READ},
        {"album.create", IMMICH_PERM_ALBUM_CREATE},
        {"albumAsset.create", IMMICH_PERM_ALBUM_ADD},
    };
    struct json_object *o, *perms;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "permissions", &perms) ||
        !json_object_is_type(perms, json_type_array)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the API key reply has no permissions");
    }
    unsigned bits = 0;
    size_t n = json_object_array_length(perms);
    for (size_t i = 0; i < n; i++) {
        struct json_object *p = json_object_array_get_idx(perms, i);
        if (!json_object_is_type(p, json_type_string))
            continue;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(json_object_get_string(p), known[k].name) == 0)
                bits |= known[k].bit;
    }
    const char *name = get_string(o, "name");
    if (ret_name && name_size)
        snprintf(ret_name, name_size, "%s", name ? name : "");
    *ret_perms = bits;
    json_object_put(o);
    return 0;
}

int immich_parse_bulk_check(const char *buf, size_t len, size_t n, struct dest_precheck *ret,
                            struct error *err)
{
    struct json_object *o, *results;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "results", &results) ||
        !json_object_is_type(results, json_type_array)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the bulk check reply has no results");
    }
    size_t m = json_object_array_length(results);
    /* check everything first: outputs are written only on success */
    for (size_t i = 0; i < m; i++) {
        struct json_object *it = json_object_array_get_idx(results, i);
        const char *id = get_string(it, "id");
        char *end;
        errno = 0;
        unsigned long long k = id && *id ? strtoull(id, &end, 10) : 0;
        if (!id || !*id || *end || errno || k >= n) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the bulk check reply has an unknown id");
        }
    }
    for (size_t i = 0; i < m; i++) {
        struct json_object *it = json_object_array_get_idx(results, i);
        size_t k = (size_t)strtoull(get_string(it, "id"), NULL, 10);
        const char *action = get_string(it, "action");
        const char *asset = get_string(it, "assetId");
        if (action && strcmp(action, "reject") == 0 && valid_id(asset) &&
            !get_bool(it, "isTrashed")) {
            ret[k].present = true;
            snprintf(ret[k].remote, sizeof(ret[k].remote), "%s", asset);
        }
    }
    json_object_put(o);
    return 0;
}

int immich_parse_album(const char *buf, size_t len, const char *name, char ret_id[IMMICH_ID_MAX],
                       bool *ret_found, struct error *err)
{
    struct json_object *o;
    int r = parse_json(buf, len, &o, err);
    if (r < 0)
        return r;
    const char *found = NULL;
    if (json_object_is_type(o, json_type_object)) {
        found = get_string(o, "id");
        if (!valid_id(found)) {
            json_object_put(o);
            return error_set(err, -EBADMSG, "the album reply has no valid id");
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n && !found; i++) {
            struct json_object *a = json_object_array_get_idx(o, i);
            const char *an = get_string(a, "albumName");
            const char *id = get_string(a, "id");
            if (an && name && strcmp(an, name) == 0 && valid_id(id))
                found = id;
        }
    } else {
        json_object_put(o);
        return error_set(err, -EBADMSG, "the album reply is neither an album nor a list");
    }
    if (found)
        snprintf(ret_id, IMMICH_ID_MAX, "%s", found);
    *ret_found = found != NULL;
    json_object_put(o);
    return 0;
}

static void printable(const char *in, size_t len, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < size; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (size)
        out[j] = '\0';
}

void immich_reply_message(const char *buf, size_t len, char *out, size_t size)
{
    struct json_object *o = NULL, *m;
    char tmp[300] = "";
    if (size == 0)
        return;
    out[0] = '\0';
    if (len > 0 && parse_json(buf, len, &o, NULL) == 0 &&
        json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "message", &m)) {
        if (json_object_is_type(m, json_type_string)) {
            snprintf(tmp, sizeof(tmp), "%s", json_object_get_string(m));
        } else if (json_object_is_type(m, json_type_array)) {
            size_t n = json_object_array_length(m), at = 0;
            for (size_t i = 0; i < n && at < sizeof(tmp); i++) {
                struct json_object *s = json_object_array_get_idx(m, i);
                if (!json_object_is_type(s, json_type_string))
                    continue;
                int k = snprintf(tmp + at, sizeof(tmp) - at, "%s%s", at ? "; " : "",
                                 json_object_get_string(s));
                if (k < 0)
                    break;
                at += (size_t)k;
            }
        }
    }
    json_object_put(o);
    if (tmp[0])
        printable(tmp, strlen(tmp), out, size);
    else
        printable(buf, len < 200 ? len : 200, out, size);
}

/* ---- transfers ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;
    x->last_progress = now_s();
    if (x->reply_len + n > x->reply_max) {
        x->reply_overflow = true;
        return n; /* keep the connection usable; the reply is refused afterwards */
    }
    if (x->reply_len + n + 1 > x->reply_cap) {
        size_t cap = x->reply_cap ? x->reply_cap : 4096;
        while (cap < x->reply_len + n + 1)
            cap *= 2;
        char *p = realloc(x->reply, cap);
        if (!p) {
            x->reply_overflow = true;
            return n;
        }
        x->reply = p;
        x->reply_cap = cap;
    }
    memcpy(x->reply + x->reply_len, data, n);
    x->reply_len += n;
    x->reply[x->reply_len] = '\0';
    return n;
}

static bool header_is(const char *line, size_t len, const char *name, const char **ret_value,
                      size_t *ret_len)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    *ret_value = v;
    *ret_len = (size_t)(end - v);
    return true;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;
    const char *v;
    size_t vlen;
    x->last_progress = now_s();
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) { /* a new response (after a 100, ...) */
        x->reply_len = 0;
        x->resp_clen = -1;
        x->retry_after[0] = '\0';
        x->location[0] = '\0';
    } else if (header_is(data, n, "content-length", &v, &vlen)) {
        char tmp[24];
        printable(v, vlen < sizeof(tmp) - 1 ? vlen : sizeof(tmp) - 1, tmp, sizeof(tmp));
        char *end;
        errno = 0;
        long long cl = strtoll(tmp, &end, 10);
        x->resp_clen = (!errno && end != tmp && !*end && cl >= 0) ? (long)cl : -1;
    } else if (header_is(data, n, "retry-after", &v, &vlen)) {
        printable(v, vlen, x->retry_after, sizeof(x->retry_after));
    } else if (header_is(data, n, "location", &v, &vlen)) {
        printable(v, vlen, x->location, sizeof(x->location));
    }
    return n;
}

/*
 * Bytes the connection's peer has acknowledged plus bytes received, as the kernel counts them
 * (0 when unknown). curl's counters stop when the last of the body is in the socket buffer, which
 * on a slow link can hold many seconds of upload; the acknowledged count keeps moving while the
 * server takes it, so only a real stall trips immich.timeout.
 */
static uint64_t wire_bytes(curl_socket_t fd)
{
    if (fd == CURL_SOCKET_BAD)
        return 0;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return 0;
    return ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = userdata;
    (void)dltotal;
    (void)ultotal;
    double t = now_s();
    uint64_t wire = wire_bytes(x->sock);
    if (dlnow + ulnow != x->moved || wire != x->wire) {
        x->moved = dlnow + ulnow;
        x->wire = wire;
        x->last_progress = t;
    } else if (t - x->last_progress > (double)x->timeout) {
        x->stalled = true;
        return 1; /* abort: no byte moved for timeout seconds */
    }
    return 0;
}

/* Remembers the socket of this transfer's connection, for wire_bytes(). */
static int on_sockopt(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
    struct xfer *x = userdata;
    if (purpose == CURLSOCKTYPE_IPCXN)
        x->sock = fd;
    return CURL_SOCKOPT_OK;
}

static int on_closesocket(void *userdata, curl_socket_t fd)
{
    struct xfer *x = userdata;
    if (x->sock == fd)
        x->sock = CURL_SOCKET_BAD;
    return close(fd);
}

static void xfer_free(struct xfer *x)
{
    if (!x)
        return;
    if (x->multi && x->easy)
        curl_multi_remove_handle(x->multi, x->easy);
    curl_easy_cleanup(x->easy);
    curl_multi_cleanup(x->multi);
    free(x->reply);
    free(x);
}

static int xfer_new(long timeout, struct xfer **ret, struct error *err)
{
    struct xfer *x = calloc(1, sizeof(*x));
    if (!x)
        return error_set(err, -ENOMEM, "out of memory");
    x->easy = curl_easy_init();
    x->multi = curl_multi_init();
    x->timeout = timeout;
    x->sock = CURL_SOCKET_BAD;
    if (!x->easy || !x->multi) {
        xfer_free(x);
        return error_set(err, -ENOMEM, "cannot create a CURL handle");
    }
    *ret = x;
    return 0;
}

/* Options every request of x starts from (curl_easy_reset keeps the connections). */
static void xfer_setup(struct xfer *x, const struct immich *im, const char *url,
                       struct curl_slist *headers, size_t reply_max)
{
    CURL *e = x->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (im->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, im->ca_file);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, im->timeout);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "snapsync/" SNAPSYNC_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, x);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    x->errbuf[0] = '\0';
    x->reply_len = 0;
    x->reply_max = reply_max;
    x->reply_overflow = false;
    x->resp_clen = -1;
    x->retry_after[0] = '\0';
    x->location[0] = '\0';
    x->moved = 0;
    x->stalled = false;
    x->done = false;
    x->result = CURLE_OK;
    x->last_progress = now_s();
}

static int xfer_start(struct xfer *x, struct error *err)
{
    if (curl_multi_add_handle(x->multi, x->easy) != CURLM_OK)
        return error_set(err, -EIO, "cannot start a transfer");
    return 0;
}

/* The whole reply arrived while the request body is still being sent. */
static bool reply_complete(const struct xfer *x)
{
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    return code >= 200 && x->resp_clen >= 0 && (size_t)x->resp_clen == x->reply_len;
}

/* Drives x until it is done, or until stop(arg) holds. Returns 0 or -EIO (multi failure). */
static int xfer_drive(struct xfer *x, bool (*stop)(void *), void *arg, struct error *err)
{
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(x->multi, &running);
        if (mc != CURLM_OK)
            return error_set(err, -EIO, "transfer failed: %s", curl_multi_strerror(mc));
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(x->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                x->done = true;
                x->result = m->data.result;
            }
        if (x->done)
            return 0;
        if (stop && stop(arg))
            return 0;
        mc = curl_multi_poll(x->multi, NULL, 0, 500, NULL);
        if (mc != CURLM_OK)
            return error_set(err, -EIO, "transfer failed: %s", curl_multi_strerror(mc));
    }
}

static void xfer_stop(struct xfer *x)
{
    curl_multi_remove_handle(x->multi, x->easy);
}

/* The error of a transfer that did not get a whole reply. */
static int curl_failure(const struct xfer *x, const struct immich *im, struct error *err)
{
    const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result);
    switch (x->result) {
    case CURLE_ABORTED_BY_CALLBACK:
        if (x->stalled)
            return error_set(err, -ETIMEDOUT, "no progress for %ld s (immich.timeout)",
                             im->timeout);
        return error_set(err, -EIO, "transfer aborted");
    case CURLE_OPERATION_TIMEDOUT:
        return error_set(err, -ETIMEDOUT, "timed out: %s", detail);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return error_set(err, -ECONNREFUSED, "cannot reach Immich: %s", detail);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return error_set(err, -ECONNRESET, "connection lost: %s", detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        return error_set(err, -EACCES,
                         "TLS: the server's certificate is not trusted (%s; a self-signed "
                         "server needs its CA in immich.tls_ca_file): %s",
                         im->ca_file[0] ? "not signed by immich.tls_ca_file" : "system CAs",
                         detail);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return error_set(err, -EINVAL, "immich.url: %s", detail);
    default:
        return error_set(err, -EIO, "transfer failed: %s", detail);
    }
}

/* The error of an HTTP status other than the expected one. */
static int http_failure(const struct xfer *x, long code, struct error *err)
{
    char msg[256];
    immich_reply_message(x->reply ? x->reply : "", x->reply_len, msg, sizeof(msg));
    if (code == 429 || (code == 503 && x->retry_after[0]))
        return error_set(err, -EAGAIN, "HTTP %ld %s (server busy, retry after %s s)", code, msg,
                         x->retry_after[0] ? x->retry_after : "?");
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
                         x->location);
    return error_set(err, -EINVAL, "HTTP %ld %s", code, msg);
}

/* Appends to a header list; false (list unchanged) when out of memory. */
static bool slist_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *t = curl_slist_append(*list, line);
    if (t)
        *list = t;
    return t != NULL;
}

/* Runs one JSON request to completion on x; *ret_code is the HTTP status. */
static int request(struct immich *im, struct xfer *x, const char *method, const char *path,
                   const char *body, bool auth, size_t reply_max, long *ret_code, struct error *err)
{
    char url[URL_MAX + 512];
    int n = snprintf(url, sizeof(url), "%s%s", im->api, path);
    if (n < 0 || (size_t)n >= sizeof(url))
        return error_set(err, -ENAMETOOLONG, "request URL too long");
    struct curl_slist *h = NULL;
    int r = 0;
    if (!slist_add(&h, "Accept: application/json") || (auth && !slist_add(&h, im->key_header)) ||
        (body && !slist_add(&h, "Content-Type: application/json"))) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    xfer_setup(x, im, url, h, reply_max);
    if (body) {
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, method);
    r = xfer_start(x, err);
    if (r < 0)
        goto out;
    r = xfer_drive(x, NULL, NULL, err);
    xfer_stop(x);
    if (r < 0)
        goto out;
    if (x->result != CURLE_OK) {
        r = curl_failure(x, im, err);
        goto out;
    }
    if (x->reply_overflow) {
        r = error_set(err, -EBADMSG, "the reply is larger than %zu bytes", reply_max);
        goto out;
    }
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, ret_code);
out:
    curl_slist_free_all(h);
    return r;
}

/* request() that expects status `want`; anything else is classified. */
static int request_ok(struct immich *im, struct xfer *x, const char *method, const char *path,
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

static int album_resolve(struct immich *im, struct xfer *x, struct album *a, struct error *err)
{
    char path[1024];
    bool found = false;
    int r;
    if (im->version[0] >= 3) {
        char *q = curl_easy_escape(x->easy, a->name, 0);
        if (!q)
            return error_set(err, -ENOMEM, "out of memory");
        snprintf(path, sizeof(path), "/albums?name=%s", q);
        curl_free(q);
    } else {
        snprintf(path, sizeof(path), "/albums"); /* 2.x has no name filter */
    }
    r = request_ok(im, x, "GET", path, NULL, 200, ALBUM_LIST_MAX, err);
    if (r == 0)
        r = immich_parse_album(x->reply, x->reply_len, a->name, a->id, &found, err);
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
        r = immich_parse_album(x->reply, x->reply_len, NULL, a->id, &found, err);
    if (r == 0 && !found)
        r = error_set(err, -EBADMSG, "no album id in the reply");
    if (r < 0)
        return error_prefix(err, "cannot create album '%s'", a->name);
    return 0;
}

/* Sends a's pending ids. Caller holds im->lock. */
static int album_flush(struct immich *im, struct xfer *x, struct album *a, struct error *err)
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
static int album_add(struct immich *im, struct xfer *x, const char *name, const char *id,
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
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return error_set(err, -EIO, "cannot initialise libcurl: %s",
                         curl_easy_strerror(curl_init_result));
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
    xfer_free(im->main);
    albums_clear(im);
    if (im->key_header) {
        explicit_bzero(im->key_header, strlen(im->key_header));
        free(im->key_header);
    }
    pthread_mutex_destroy(&im->lock);
    free(im);
}

static int main_xfer(struct immich *im, struct error *err)
{
    return im->main ? 0 : xfer_new(im->timeout, &im->main, err);
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
    r = immich_parse_version(im->main->reply, im->main->reply_len, im->version, err);
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
    if (im->album_mode != ALBUM_NONE)
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
    r = immich_parse_api_key(im->main->reply, im->main->reply_len, &perms, name, name_size, err);
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
            r = immich_parse_bulk_check(im->main->reply, im->main->reply_len, m, ret + start, err);
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
    printable(name, strlen(name), safe, sizeof(safe));
    snprintf(detail, detail_size, "%s: Immich %d.%d.%d, API key '%s' may upload and read assets%s",
             im->api, im->version[0], im->version[1], im->version[2], safe,
             im->album_mode != ALBUM_NONE ? " and manage albums" : "");
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
        xfer_free(c->slots[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A transfer slot of c for one file (its connections stay alive in it for the next). */
static int slot_take(struct immich_conn *c, struct xfer **ret, struct error *err)
{
    int r = -EBUSY;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SLOTS_MAX; i++) {
        if (c->slots[i] && c->slots[i]->in_use)
            continue;
        if (!c->slots[i] && (r = xfer_new(c->im->timeout, &c->slots[i], err)) < 0)
            break;
        c->slots[i]->in_use = true;
        *ret = c->slots[i];
        r = 0;
        break;
    }
    pthread_mutex_unlock(&c->lock);
    if (r == -EBUSY)
        error_set(err, r, "more than %d transfers on one connection", SLOTS_MAX);
    return r;
}

static void slot_give(struct immich_conn *c, struct xfer *x)
{
    pthread_mutex_lock(&c->lock);
    x->in_use = false;
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
    fl->head_len = len;
    fl->tail_len = (size_t)snprintf(fl->tail, sizeof(fl->tail), "\r\n--%s--\r\n", boundary);
    return 0;
}

static size_t upload_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct immich_file *f = userdata;
    size_t room = size * nitems, n = 0;
    while (n < room) {
        if (f->head_off < f->head_len) {
            size_t k = f->head_len - f->head_off;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->head + f->head_off, k);
            f->head_off += k;
            n += k;
        } else if (f->sent < f->size) {
            size_t k = f->chunk_len - f->chunk_off;
            if (k == 0)
                break;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->chunk + f->chunk_off, k);
            f->chunk_off += k;
            f->sent += k;
            n += k;
        } else if (f->tail_off < f->tail_len) {
            size_t k = f->tail_len - f->tail_off;
            k = k < room - n ? k : room - n;
            memcpy(buf + n, f->tail + f->tail_off, k);
            f->tail_off += k;
            n += k;
        } else {
            break;
        }
    }
    if (n == 0 && f->sent < f->size) {
        f->paused = true;
        return CURL_READFUNC_PAUSE;
    }
    return n;
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
    snprintf(f->album_date, sizeof(f->album_date), "%s", item->date_path ? item->date_path : "");
    r = build_head(f, im, item, boundary, err);
    if (r < 0)
        goto fail;

    char ct[96], sum[80];
    snprintf(ct, sizeof(ct), "Content-Type: multipart/form-data; boundary=%s", boundary);
    snprintf(sum, sizeof(sum), "x-immich-checksum: %s", f->sha1_known);
    /* no "Expect: 100-continue": servers that ignore it would cost a second per file */
    if (!slist_add(&f->headers, "Accept: application/json") ||
        !slist_add(&f->headers, im->key_header) || !slist_add(&f->headers, ct) ||
        !slist_add(&f->headers, "Expect:") ||
        (strlen(f->sha1_known) == 40 && !slist_add(&f->headers, sum))) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    r = slot_take(c, &f->x, err);
    if (r < 0)
        goto fail;
    char url[URL_MAX + 16];
    snprintf(url, sizeof(url), "%s/assets", im->api);
    xfer_setup(f->x, im, url, f->headers, REPLY_MAX);
    CURL *e = f->x->easy;
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, upload_read);
    curl_easy_setopt(e, CURLOPT_READDATA, f);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)(f->head_len + f->size + f->tail_len));
    r = xfer_start(f->x, err);
    if (r < 0)
        goto fail;
    *ret_file = f;
    return 0;
fail:
    if (f->x)
        slot_give(c, f->x);
    curl_slist_free_all(f->headers);
    free(f->head);
    free(f);
    return r;
}

static bool chunk_used(void *arg)
{
    struct immich_file *f = arg;
    if (f->chunk_off == f->chunk_len)
        return true;
    if (reply_complete(f->x)) { /* answered early (a duplicate by checksum, an error) */
        f->early = true;
        return true;
    }
    return false;
}

/* The outcome of an upload whose transfer ended (or was answered early). */
static int upload_result(struct immich_file *f, char id[IMMICH_ID_MAX], bool *ret_dup,
                         struct error *err)
{
    struct xfer *x = f->x;
    struct immich *im = f->conn->im;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    bool whole = code >= 200 && (x->resp_clen < 0 || (size_t)x->resp_clen == x->reply_len);
    /* a connection cut after a complete reply (duplicate by checksum) is not an error */
    if (x->result != CURLE_OK && !(x->done && whole && x->resp_clen >= 0) && !f->early)
        return curl_failure(x, im, err);
    if (x->reply_overflow)
        return error_set(err, -EBADMSG, "the upload reply is too large");
    if (code != 200 && code != 201)
        return http_failure(x, code, err);
    int r = immich_parse_upload(x->reply, x->reply_len, id, ret_dup, err);
    if (r < 0) /* retryable: the next attempt gets a clean answer or a duplicate */
        return error_set(err, -EIO, "upload: %s", err->msg);
    return 0;
}

static void file_free(struct immich_file *f)
{
    if (f->x) {
        xfer_stop(f->x);
        slot_give(f->conn, f->x);
    }
    curl_slist_free_all(f->headers);
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
    CURLcode res = f->x->result;
    if (!f->sha1_known[0] || (res != CURLE_SEND_ERROR && res != CURLE_RECV_ERROR &&
                              res != CURLE_GOT_NOTHING))
        return false;
    struct immich *im = f->conn->im;
    char body[160];
    snprintf(body, sizeof(body), "{\"assets\":[{\"id\":\"0\",\"checksum\":\"%s\"}]}",
             f->sha1_known);
    struct dest_precheck pc = {0};
    struct error err = {0};
    xfer_stop(f->x);
    if (request_ok(im, f->x, "POST", "/assets/bulk-upload-check", body, 200, REPLY_MAX, &err) < 0 ||
        immich_parse_bulk_check(f->x->reply, f->x->reply_len, 1, &pc, &err) < 0 || !pc.present)
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
    if (f->early || f->x->done) {
        f->written += len;
        return 0; /* answered already; the rest of the file is not needed */
    }
    f->written += len;
    f->chunk = buf;
    f->chunk_len = len;
    f->chunk_off = 0;
    f->x->last_progress = now_s(); /* waiting for the reader is not a stall */
    if (f->paused) {
        f->paused = false;
        curl_easy_pause(f->x->easy, CURLPAUSE_CONT);
    }
    int r = xfer_drive(f->x, chunk_used, f, err);
    if (r < 0)
        return r;
    if (f->x->done && !f->early) {
        long code = 0;
        curl_easy_getinfo(f->x->easy, CURLINFO_RESPONSE_CODE, &code);
        if (f->x->result != CURLE_OK && !reply_complete(f->x))
            return duplicate_after_cut(f) ? 0 : curl_failure(f->x, f->conn->im, err);
        if (code != 200 && code != 201)
            return http_failure(f->x, code, err);
        f->early = f->sent < f->size;
    }
    return 0;
}

/* GET /assets/{id}: the server's SHA-1 must be ours. */
static int verify_asset(struct immich *im, struct xfer *x, const char *id,
                        const struct hasher_digest *digest, struct error *err)
{
    char path[128], sum[64], want[40];
    bool trashed = false;
    snprintf(path, sizeof(path), "/assets/%s", id);
    int r = request_ok(im, x, "GET", path, NULL, 200, REPLY_MAX, err);
    if (r == 0)
        r = immich_parse_asset(x->reply, x->reply_len, sum, &trashed, err);
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
    if (!f->early && !f->x->done) {
        if (f->written != f->size) {
            r = error_set(err, -EIO, "read %" PRIu64 " of %" PRIu64 " bytes", f->written, f->size);
            goto out;
        }
        f->x->last_progress = now_s();
        if (f->paused) {
            f->paused = false;
            curl_easy_pause(f->x->easy, CURLPAUSE_CONT);
        }
        f->chunk_len = f->chunk_off = 0;
        r = xfer_drive(f->x, NULL, NULL, err);
        if (r < 0)
            goto out;
    }
    if (f->dup_id[0]) {
        snprintf(id, sizeof(id), "%s", f->dup_id);
        dup = true;
    } else {
        xfer_stop(f->x);
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
    const char *album = album_for(im, f->album_date, buf, sizeof(buf));
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
};
