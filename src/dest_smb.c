/* SPDX-License-Identifier: MIT */
/*
 * SMB destination (`unraid.protocol: smb`): an SMB2/3 share (Unraid, a NAS, Windows) reached with
 * libsmbclient, no mount needed.
 *
 * Each lane connection has its own libsmbclient context (struct smb_conn around a smblib_ctx),
 * used by one thread at a time; prepare and probe use one more, owned by the main thread. Loading
 * libsmbclient, Samba's thread hooks, the locks that make its calls safe in parallel and the
 * cutting of a hung server's connections are smblib.c's (smblib.h); this file keeps the SMB
 * semantics: URLs and names, temporaries and the rename, the read-back, the sidecars, messages.
 *
 * A copy is written to <path>/.snapsync-tmp/<pid>.<seq>.<host>.part, closed, given the card file's
 * modification (and access) time (utimes: microseconds on the wire), read back over SMB and
 * compared by MD5, then renamed to <path>/<folder>/<name> (the patterns, dest.c). Owner and
 * permissions are the server's to decide (force user, create mask): config.c refuses file_mode,
 * dir_mode, owner and group with protocol smb. libsmbclient's rename replaces an existing target
 * (it unlinks it and retries), so the move is check-then-rename under `place_lock`, which makes it
 * atomic among the lanes of this process; a name that is taken is compared (size, then MD5 read
 * back): same content is done, other content gets "<stem>_N.<ext>". Temporaries of dead processes
 * are removed by the next prepare.
 *
 * The destination's own files (the ASC MHL history in ascmhl/, dest.h's meta ops) go through the
 * main connection (main thread), under names mapped like copies, through a temporary of
 * .snapsync-tmp renamed into place: check-then-rename under place_lock when nothing may be
 * replaced, libsmbclient's replacing rename (unlink, then rename) for the chain.
 *
 * Names: Windows and SMB forbid " * : < > ? \ | and control characters, and a trailing space or
 * dot. They are mapped as Services for Mac does (U+F001..U+F01F for controls, U+F020..U+F027 for
 * the eight characters, U+F028/U+F029 for a final space/dot), reversibly: a server running vfs
 * catia/fruit with that mapping (Unraid's "enhanced macOS interoperability", fruit:encoding =
 * native) stores the original name (tests/integration/test_smb.py checks it), another server
 * stores the private-use characters, which macOS shows as the original.
 *
 * Errors say what failed in SMB terms: server unreachable, authentication failed, share missing,
 * access denied, share full. A call that fails like a dropped connection marks the context
 * broken; the next open builds a fresh one (libsmbclient reconnects a new context by itself).
 * A call that times out means the server hangs: smblib cuts every connection to it; until a call
 * succeeds again, a connection is not revived just to remove temporaries (the next prepare
 * removes them).
 * The password lives only in struct smb (its smblib_server) and smblib's auth callback; it is
 * wiped when freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "dest.h"
#include "log.h"
#include "sidecar.h"
#include "smblib.h"

#define TMP_DIR ".snapsync-tmp"
#define VERIFY_BUF (1024 * 1024)
#define URL_MAX 4096
#define STALE_FOREIGN_TMP_S (24 * 3600)
/* A share name no server has: tells a failed login from a share that refuses the user. */
#define NO_SUCH_SHARE "snapsync-no-such-share-7f3c"

struct smb {
    struct smblib_server srv; /* host, port, credentials, timeout, hung */
    char share[256];
    char path[1024];        /* folder inside the share, no leading or trailing '/'; may be "" */
    char hostname[64];      /* this machine, in temporary names */
    char base_url[URL_MAX]; /* smb://host/share[/path], encoded */
    char shown[URL_MAX];    /* smb://host[:port]/share[/path], for messages */
    pthread_mutex_t place_lock;
    struct smb_conn *main; /* prepare and probe (main thread) */
};

struct smb_conn {
    struct smb *smb;
    struct smblib_ctx *ctx; /* NULL or broken: rebuilt before the next file */
    uint8_t *buf;
    char made_dir[DEST_REMOTE_MAX]; /* the last folder known to exist */
    /* temporaries an abort could not remove (connection gone): removed after reconnecting */
    char orphans[8][128];
    size_t n_orphans;
};

struct smb_file {
    struct smb_conn *conn;
    struct smblib_file *fh;
    char tmp_url[URL_MAX];
    char tmp_name[128];
    char name[DEST_NAME_MAX + 1]; /* as stored on the share (mapped) */
    char folder[DEST_REMOTE_MAX]; /* below the root, mapped as names are; "" none */
    int64_t mtime_ns;             /* the card file's */
    uint64_t written;
    int card_dir_fd; /* the card, for the sidecars (borrowed) */
    char *card_rel;  /* the file's path on the card */
};

static atomic_uint tmp_seq;

/* ---- names and URLs ---- */

/* Appends s to out percent-encoded (everything but unreserved characters and, when keep_slash,
 * '/'); libsmbclient decodes the path of a URL, and '?' would start its options. */
static int url_append(char *out, size_t size, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~' ||
                     (keep_slash && *p == '/');
        if (len + (plain ? 1 : 3) >= size)
            return -ENAMETOOLONG;
        if (plain) {
            out[len++] = (char)*p;
        } else {
            out[len++] = '%';
            out[len++] = hex[*p >> 4];
            out[len++] = hex[*p & 15];
        }
    }
    out[len] = '\0';
    return 0;
}

/* url = base_url + "/" + each of the parts joined by '/', encoded. NULL ends the parts. */
static int url_join(const struct smb *s, char *url, size_t size, const char *a, const char *b,
                    const char *c)
{
    const char *parts[] = {a, b, c};
    int n = snprintf(url, size, "%s", s->base_url);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    for (size_t i = 0; i < 3 && parts[i]; i++) {
        if (!parts[i][0])
            continue;
        size_t len = strlen(url);
        if (len + 2 >= size)
            return -ENAMETOOLONG;
        url[len] = '/';
        url[len + 1] = '\0';
        int r = url_append(url, size, parts[i], true);
        if (r < 0)
            return r;
    }
    return 0;
}

static size_t put_private_use(char *out, unsigned n)
{
    /* U+F000 + n for n < 0x40, in UTF-8 */
    out[0] = (char)0xEF;
    out[1] = (char)0x80;
    out[2] = (char)(0x80 | n);
    return 3;
}

/* The name as the share stores it: characters Windows forbids mapped to the Services for Mac
 * private-use characters (see the top of this file). -ENAMETOOLONG when the result does not fit
 * DEST_NAME_MAX. */
static int map_name(const char *in, char *out, size_t size)
{
    static const char special[] = "\"*:<>?\\|"; /* U+F020 .. U+F027, in this order */
    size_t len = strlen(in), o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        char buf[3];
        size_t n = 1;
        const char *sp = ch ? strchr(special, ch) : NULL;
        buf[0] = (char)ch;
        if (ch < 0x20)
            n = put_private_use(buf, ch);
        else if (sp)
            n = put_private_use(buf, 0x20 + (unsigned)(sp - special));
        else if (i == len - 1 && ch == ' ')
            n = put_private_use(buf, 0x28);
        else if (i == len - 1 && ch == '.')
            n = put_private_use(buf, 0x29);
        if (o + n > DEST_NAME_MAX || o + n >= size)
            return -ENAMETOOLONG;
        memcpy(out + o, buf, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

/* Frees the context of a conn that failed like a dropped connection and builds a fresh one. */
static int conn_revive(struct smb_conn *c, struct error *err)
{
    if (!smblib_ctx_broken(c->ctx))
        return 0;
    smblib_ctx_free(c->ctx);
    c->ctx = NULL;
    c->made_dir[0] = '\0';
    int r = smblib_ctx_new(&c->smb->srv, &c->ctx, err);
    if (r < 0)
        return r;
    /* the server may still be down: keep what could not be reached for the next revive */
    size_t kept = 0;
    for (size_t i = 0; i < c->n_orphans; i++) {
        char url[URL_MAX];
        if (url_join(c->smb, url, sizeof(url), TMP_DIR, c->orphans[i], NULL) < 0)
            continue;
        int e = smblib_unlink(c->ctx, url);
        if (e < 0 && smblib_is_connection_error(-e))
            memmove(c->orphans[kept++], c->orphans[i], sizeof(c->orphans[0]));
    }
    c->n_orphans = kept;
    return 0;
}

static void conn_destroy(struct smb_conn *c)
{
    if (!c)
        return;
    if (c->n_orphans > 0 && !smblib_hung(&c->smb->srv)) {
        /* temporaries an abort could not remove while the server was away: one more try on a
         * fresh connection before this worker goes, so a finished run leaves none behind (not
         * while the server hangs: that would wait a timeout; the next prepare removes them) */
        struct error err;
        smblib_ctx_set_broken(c->ctx);
        if (conn_revive(c, &err) < 0)
            log_debug("%s: %s", c->smb->shown, err.msg);
    }
    smblib_ctx_free(c->ctx);
    free(c->buf);
    free(c);
}

static int conn_create(struct smb *s, struct smb_conn **ret, struct error *err)
{
    struct smb_conn *c = calloc(1, sizeof(*c));
    if (c)
        c->buf = malloc(VERIFY_BUF);
    if (!c || !c->buf) {
        free(c);
        return error_set(err, -ENOMEM, "out of memory");
    }
    c->smb = s;
    int r = smblib_ctx_new(&s->srv, &c->ctx, err);
    if (r < 0) {
        conn_destroy(c);
        return r;
    }
    *ret = c;
    return 0;
}

/* ---- errors ---- */

static const char *who(const struct smb *s)
{
    return s->srv.guest ? "guest" : s->srv.username;
}

/* The message for a failed operation on the share (what = "cannot create 'x'"). */
static int share_error(const struct smb *s, struct error *err, int r, const char *what)
{
    switch (-r) {
    case EACCES:
    case EPERM:
        return error_set(err, -EACCES, "%s on %s: access denied for %s", what, s->shown, who(s));
    case EROFS:
        return error_set(err, -EROFS, "%s on %s: the share is read-only", what, s->shown);
    case ENOSPC:
    case EDQUOT:
        return error_set(err, -ENOSPC, "%s: SMB share %s is full", what, s->shown);
    case EINVAL:
        return error_set(err, -EINVAL, "%s on %s: the server refused the name", what, s->shown);
    case ENAMETOOLONG:
        return error_set(err, -ENAMETOOLONG, "%s on %s: name too long", what, s->shown);
    default:
        if (smblib_is_connection_error(-r))
            return error_set_errno(err, r, "%s: connection to SMB server '%s' lost", what,
                                   s->srv.host);
        return error_set_errno(err, r, "%s on %s", what, s->shown);
    }
}

/* Reaches the server, logs in and opens the share; the error says which of those failed. */
static int connect_check(struct smb_conn *c, struct error *err)
{
    const struct smb *s = c->smb;
    char url[URL_MAX];
    struct stat st;
    int n = snprintf(url, sizeof(url), "smb://%s/", s->srv.host);
    if (n < 0 || (size_t)n >= sizeof(url) || url_append(url, sizeof(url), s->share, false) < 0)
        return error_set(err, -ENAMETOOLONG, "SMB share name too long");
    int r = smblib_stat(c->ctx, url, &st);
    if (r == 0)
        return 0;
    if (r == -ENOENT)
        return error_set(err, -ENOENT, "SMB share '%s' does not exist on '%s'", s->share,
                         s->srv.host);
    if (r == -EACCES || r == -EPERM) {
        /* Denied before the share (login failed), or by the share? Ask for one that no server
         * has: after a good login the answer is "no such share". */
        snprintf(url, sizeof(url), "smb://%s/" NO_SUCH_SHARE, s->srv.host);
        if (smblib_stat(c->ctx, url, &st) == -ENOENT)
            return error_set(err, -EACCES, "SMB share '%s' on '%s': access denied for %s", s->share,
                             s->srv.host, who(s));
        if (s->srv.guest)
            return error_set(err, -EACCES,
                             "SMB server '%s' refused a guest login: set unraid.username and "
                             "UNRAID_PASSWORD",
                             s->srv.host);
        return error_set(err, -EACCES,
                         "SMB authentication failed for user '%s' on '%s' (wrong user name or "
                         "password?)",
                         s->srv.username, s->srv.host);
    }
    if (r == -EINVAL || r == -EHOSTUNREACH || r == -ENETUNREACH)
        return error_set_errno(err, -EHOSTUNREACH,
                               "SMB server '%s' is unreachable (does the "
                               "name resolve?)",
                               s->srv.host);
    if (smblib_is_connection_error(-r))
        return error_set_errno(err, r, "SMB server '%s' port %u is unreachable", s->srv.host,
                               s->srv.port ? s->srv.port : 445);
    return error_set_errno(err, r, "cannot open SMB share %s", s->shown);
}

/* mkdir -p of rel (may be "") below the share's path. */
static int mkdir_p(struct smb_conn *c, const char *rel, struct error *err)
{
    char part[1024];
    char url[URL_MAX];
    size_t len = strlen(rel);
    if (len >= sizeof(part))
        return error_set(err, -ENAMETOOLONG, "folder name too long");
    for (size_t i = 0; i <= len; i++) {
        if (rel[i] != '/' && rel[i] != '\0')
            continue;
        if (i == 0)
            continue;
        memcpy(part, rel, i);
        part[i] = '\0';
        int r = url_join(c->smb, url, sizeof(url), part, NULL, NULL);
        if (r < 0)
            return error_set(err, r, "folder name too long");
        r = smblib_mkdir(c->ctx, url);
        if (r == 0 || r == -EEXIST)
            continue;
        /* some servers deny mkdir of a folder that exists; it is fine if it is there */
        struct stat st;
        if (smblib_stat(c->ctx, url, &st) == 0 && S_ISDIR(st.st_mode))
            continue;
        char what[1200];
        snprintf(what, sizeof(what), "cannot create folder '%s'", part);
        return share_error(c->smb, err, r, what);
    }
    return 0;
}

/* The share's path itself, which may be several folders deep. */
static int mkdir_root(struct smb_conn *c, struct error *err)
{
    const struct smb *s = c->smb;
    char url[URL_MAX];
    if (!s->path[0])
        return 0;
    int n = snprintf(url, sizeof(url), "smb://%s/", s->srv.host);
    if (n < 0 || (size_t)n >= sizeof(url) || url_append(url, sizeof(url), s->share, false) < 0)
        return error_set(err, -ENAMETOOLONG, "path too long");
    size_t base = strlen(url);
    for (size_t i = 0; s->path[i]; i++) {
        if (s->path[i + 1] != '/' && s->path[i + 1] != '\0')
            continue;
        char part[1024];
        snprintf(part, sizeof(part), "%.*s", (int)(i + 1), s->path);
        url[base] = '/';
        url[base + 1] = '\0';
        if (url_append(url, sizeof(url), part, true) < 0)
            return error_set(err, -ENAMETOOLONG, "path too long");
        int r = smblib_mkdir(c->ctx, url);
        struct stat st;
        if (r == 0 || r == -EEXIST || (smblib_stat(c->ctx, url, &st) == 0 && S_ISDIR(st.st_mode)))
            continue;
        char what[1200];
        snprintf(what, sizeof(what), "cannot create folder '%s'", part);
        return share_error(s, err, r, what);
    }
    return 0;
}

/* ---- XXH3-128 of a file on the share ---- */

static int xxh128_url(struct smb_conn *c, const char *url, uint64_t *ret_size, char ret_hex[33],
                      struct error *err)
{
    struct smblib_file *fh = NULL;
    struct hasher_xxh128 *x = NULL;
    uint64_t total = 0;
    int r = hasher_xxh128_new(&x, err);
    if (r < 0)
        return r;
    r = smblib_open(c->ctx, url, O_RDONLY, &fh);
    if (r < 0) {
        fh = NULL;
        error_set_errno(err, r, "cannot open it");
        goto out;
    }
    for (;;) {
        size_t n = 0;
        r = smblib_read(c->ctx, fh, c->buf, VERIFY_BUF, &n);
        if (r < 0) {
            error_set_errno(err, r, "cannot read it");
            goto out;
        }
        if (n == 0)
            break;
        hasher_xxh128_update(x, c->buf, n);
        total += n;
    }
    hasher_xxh128_final(x, ret_hex);
    *ret_size = total;
out:
    if (fh)
        (void)smblib_close(c->ctx, fh);
    hasher_xxh128_free(x);
    return r;
}

/* ---- the backend ---- */

/* "host", "host:port", "[v6]" or "[v6]:port" into host and port. */
static int parse_host(const char *in, char *host, size_t size, uint16_t *ret_port)
{
    const char *colon = NULL;
    const char *h = in;
    size_t hl;
    if (in[0] == '[') {
        const char *close = strchr(in, ']');
        if (!close)
            return -EINVAL;
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] && !colon)
            return -EINVAL;
        hl = (size_t)(close + 1 - in);
    } else {
        colon = strchr(in, ':');
        if (colon && strchr(colon + 1, ':'))
            return -EINVAL; /* a bare IPv6 address needs brackets */
        hl = colon ? (size_t)(colon - in) : strlen(in);
    }
    if (hl == 0 || hl >= size)
        return -EINVAL;
    for (size_t i = 0; i < hl; i++) {
        char ch = h[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' || ch == '[' ||
                  ch == ']' || ch == ':';
        if (!ok)
            return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *ret_port = 0;
    if (colon) {
        char *end = NULL;
        errno = 0;
        long p = strtol(colon + 1, &end, 10);
        if (errno || !end || *end || end == colon + 1 || p < 1 || p > 65535)
            return -EINVAL;
        *ret_port = (uint16_t)p;
    }
    return 0;
}

static void smb_done(void *priv)
{
    struct smb *s = priv;
    if (!s)
        return;
    conn_destroy(s->main);
    pthread_mutex_destroy(&s->place_lock);
    explicit_bzero(s->srv.password, sizeof(s->srv.password));
    free(s);
}

static int smb_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                    char *label, size_t label_size, struct error *err)
{
    int lr = smblib_load(err);
    if (lr < 0)
        return lr;
    struct smb *s = calloc(1, sizeof(*s));
    if (!s)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->place_lock, NULL);
    s->srv.timeout_ms = cfg->unraid.timeout * 1000;
    int r = 0;
    const char *host = cfg->unraid.host ? cfg->unraid.host : "";
    const char *share = cfg->unraid.share ? cfg->unraid.share : "";
    const char *path = cfg->unraid.path ? cfg->unraid.path : "";
    const char *user = cfg->unraid.username ? cfg->unraid.username : "";
    const char *pass = cfg->unraid.password ? cfg->unraid.password : "";

    if (parse_host(host, s->srv.host, sizeof(s->srv.host), &s->srv.port) < 0) {
        r = error_set(err, -EINVAL,
                      "unraid.host '%s': expected a name or address, optionally "
                      "with :port",
                      host);
        goto fail;
    }
    while (*share == '/' || *share == '\\')
        share++;
    size_t sl = strlen(share);
    if (sl == 0 || sl >= sizeof(s->share) || strpbrk(share, "/\\")) {
        r = error_set(err, -EINVAL, "unraid.share '%s': expected one share name", share);
        goto fail;
    }
    memcpy(s->share, share, sl + 1);
    while (*path == '/')
        path++;
    if (strlen(path) >= sizeof(s->path)) {
        r = error_set(err, -ENAMETOOLONG, "unraid.path is too long");
        goto fail;
    }
    snprintf(s->path, sizeof(s->path), "%s", path);
    for (size_t len = strlen(s->path); len > 0 && s->path[len - 1] == '/'; len--)
        s->path[len - 1] = '\0';
    if (strstr(s->path, "..") || strchr(s->path, '\\')) {
        r = error_set(err, -EINVAL, "unraid.path '%s': use '/' between folders and no '..'",
                      s->path);
        goto fail;
    }
    /* "DOMAIN\user" or "DOMAIN/user" */
    const char *sep = strpbrk(user, "\\/");
    if (sep && (size_t)(sep - user) < sizeof(s->srv.workgroup)) {
        snprintf(s->srv.workgroup, sizeof(s->srv.workgroup), "%.*s", (int)(sep - user), user);
        user = sep + 1;
    }
    if (strlen(user) >= sizeof(s->srv.username) || strlen(pass) >= sizeof(s->srv.password)) {
        r = error_set(err, -EINVAL, "unraid.username or password is too long");
        goto fail;
    }
    snprintf(s->srv.username, sizeof(s->srv.username), "%s", user);
    snprintf(s->srv.password, sizeof(s->srv.password), "%s", pass);
    s->srv.guest = !user[0] && !pass[0];
    if (!user[0] && pass[0]) {
        r = error_set(err, -EINVAL, "unraid: a password is set but no username (UNRAID_USERNAME)");
        goto fail;
    }
    if (gethostname(s->hostname, sizeof(s->hostname)) < 0 || !s->hostname[0])
        snprintf(s->hostname, sizeof(s->hostname), "localhost");
    s->hostname[sizeof(s->hostname) - 1] = '\0';
    for (char *p = s->hostname; *p; p++) /* keep the temporary name parseable */
        if (*p == '/' || *p == '.' || *p == '\\' || *p == ':')
            *p = '_';

    int n = snprintf(s->base_url, sizeof(s->base_url), "smb://%s/", s->srv.host);
    if (n < 0 || (size_t)n >= sizeof(s->base_url) ||
        url_append(s->base_url, sizeof(s->base_url), s->share, false) < 0) {
        r = error_set(err, -ENAMETOOLONG, "unraid: share name too long");
        goto fail;
    }
    if (s->path[0]) {
        size_t len = strlen(s->base_url);
        s->base_url[len] = '/';
        s->base_url[len + 1] = '\0';
        if (url_append(s->base_url, sizeof(s->base_url), s->path, true) < 0) {
            r = error_set(err, -ENAMETOOLONG, "unraid.path is too long");
            goto fail;
        }
    }
    char port[16] = "";
    if (s->srv.port)
        snprintf(port, sizeof(port), ":%u", s->srv.port);
    snprintf(s->shown, sizeof(s->shown), "smb://%s%s/%s%s%s", s->srv.host, port, s->share,
             s->path[0] ? "/" : "", s->path);
    snprintf(id, id_size, "smb://%s%s/%s%s%s", s->srv.host, port, s->share, s->path[0] ? "/" : "",
             s->path);
    snprintf(label, label_size, "smb %s", s->shown);
    *ret_priv = s;
    return 0;
fail:
    smb_done(s);
    return r;
}

static int main_conn(struct smb *s, struct error *err)
{
    if (!s->main)
        return conn_create(s, &s->main, err);
    return conn_revive(s->main, err);
}

enum { MAX_STALE = 256 };

/* The temporaries clean_stale() found to remove. */
struct stale_list {
    const struct smb *smb;
    time_t now;
    char (*names)[128];
    size_t n;
};

/* smblib_list() callback: notes name when it is a temporary whose writer is gone. */
static bool note_stale(void *arg, struct smblib_ctx *ctx, const char *name)
{
    struct stale_list *l = arg;
    const struct smb *s = l->smb;
    size_t nl = strlen(name);
    if (nl < 6 || nl >= 128 || strcmp(name + nl - 5, ".part") != 0)
        return true;
    char *end = NULL;
    errno = 0;
    long pid = strtol(name, &end, 10);
    const char *host = end && *end == '.' ? strchr(end + 1, '.') : NULL;
    if (!host || errno || pid <= 0)
        return true;
    host++;
    size_t hl = strlen(s->hostname);
    bool same_host = strncmp(host, s->hostname, hl) == 0 && strcmp(host + hl, ".part") == 0;
    bool is_stale = false;
    if (same_host) {
        is_stale = (pid_t)pid != getpid() && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
    } else {
        char url[URL_MAX];
        struct stat st;
        if (url_join(s, url, sizeof(url), TMP_DIR, name, NULL) == 0 &&
            smblib_list_stat(ctx, url, &st) == 0)
            is_stale = l->now - st.st_mtime > STALE_FOREIGN_TMP_S;
    }
    if (is_stale)
        memcpy(l->names[l->n++], name, nl + 1);
    return l->n < MAX_STALE;
}

/* Removes temporaries whose writer is gone: this host's by pid, other hosts' after a day. */
static void clean_stale(struct smb_conn *c)
{
    const struct smb *s = c->smb;
    char dir_url[URL_MAX];
    if (url_join(s, dir_url, sizeof(dir_url), TMP_DIR, NULL, NULL) < 0)
        return;
    /* names first (the listing holds the lock), then the removals */
    struct stale_list l = {.smb = s, .now = time(NULL), .names = calloc(MAX_STALE, 128)};
    if (!l.names)
        return;
    smblib_list(c->ctx, dir_url, note_stale, &l);
    for (size_t i = 0; i < l.n; i++) {
        char url[URL_MAX];
        if (url_join(s, url, sizeof(url), TMP_DIR, l.names[i], NULL) == 0 &&
            smblib_unlink(c->ctx, url) == 0)
            log_debug("%s: removed the temporary '%s' of a run that died", s->shown, l.names[i]);
    }
    free(l.names);
}

static int smb_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    (void)session;
    struct smb *s = priv;
    int r = main_conn(s, err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    const char *why = NULL;
    if (smblib_parallel(&why))
        log_debug("%s: libsmbclient thread hooks in place: transfers run in parallel", s->shown);
    else
        log_debug("%s: libsmbclient calls are serialised (no thread hooks: %s)", s->shown, why);
    r = connect_check(c, err);
    if (r < 0)
        return r;
    r = mkdir_root(c, err);
    if (r < 0)
        return r;
    r = mkdir_p(c, TMP_DIR, err);
    if (r < 0)
        return r;
    clean_stale(c);
    return 0;
}

/* Free space of the share in bytes, or -1. libsmbclient reports bytes per sector in f_bsize and
 * sectors per allocation unit in f_frsize. */
static double free_bytes(struct smb_conn *c)
{
    struct statvfs sv;
    if (smblib_statvfs(c->ctx, c->smb->base_url, &sv) < 0)
        return -1;
    double unit =
        sv.f_frsize < 512 ? (double)sv.f_frsize * (double)sv.f_bsize : (double)sv.f_frsize;
    return (double)sv.f_bavail * unit;
}

static int smb_probe(void *priv, char *detail, size_t detail_size, struct error *err)
{
    struct smb *s = priv;
    int r = smb_prepare(priv, NULL, err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    char name[128], url[URL_MAX];
    snprintf(name, sizeof(name), "%ld.probe.%s.part", (long)getpid(), s->hostname);
    if (url_join(s, url, sizeof(url), TMP_DIR, name, NULL) < 0)
        return error_set(err, -ENAMETOOLONG, "path too long");
    struct smblib_file *fh = NULL;
    r = smblib_open(c->ctx, url, O_WRONLY | O_CREAT | O_TRUNC, &fh);
    if (r < 0)
        return share_error(s, err, r, "cannot create a probe file");
    size_t n = 0;
    r = smblib_write(c->ctx, fh, "snapsync", 8, &n);
    int rc = smblib_close(c->ctx, fh);
    if (r == 0 && n != 8)
        r = -EIO;
    if (r == 0)
        r = rc;
    int ru = smblib_unlink(c->ctx, url);
    if (r < 0)
        return share_error(s, err, r, "cannot write a probe file");
    if (ru < 0)
        return share_error(s, err, ru, "cannot delete the probe file");
    double fb = free_bytes(c);
    if (fb >= 0)
        snprintf(detail, detail_size, "%s writable as %s, %.1f GiB free", s->shown, who(s),
                 fb / (1024.0 * 1024 * 1024));
    else
        snprintf(detail, detail_size, "%s writable as %s", s->shown, who(s));
    return 0;
}

static int smb_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct smb_conn *c = NULL;
    int r = conn_create(priv, &c, err);
    if (r < 0)
        return r;
    *ret_conn = c;
    return 0;
}

static void smb_conn_free(void *conn)
{
    conn_destroy(conn);
}

static int meta_map(const char *rel, char *out, size_t size);

/* map_name for each component of a folder path ("" stays ""). */
static int map_folder(const char *in, char *out, size_t size)
{
    if (!in[0]) {
        out[0] = '\0';
        return 0;
    }
    return meta_map(in, out, size);
}

/* f's name and folder from target and folder, with SMB's own rule on top of the shared check:
 * the characters Windows forbids and a trailing dot or space are mapped (see the top of this
 * file), which may make a name too long. */
static int smb_names(struct smb_file *f, const char *folder, const char *target, struct error *err)
{
    if (!dest_name_valid(target))
        return error_set(err, -EINVAL, "unusable file name");
    if (map_name(target, f->name, sizeof(f->name)) < 0 ||
        map_folder(folder, f->folder, sizeof(f->folder)) < 0)
        return error_set(err, -ENAMETOOLONG,
                         "name too long for an SMB share once the characters Windows forbids are "
                         "mapped (more than %d bytes)",
                         DEST_NAME_MAX);
    return 0;
}

static int smb_retarget(void *file, const char *folder, const char *target, struct error *err)
{
    return smb_names(file, folder, target, err);
}

static int smb_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct smb_conn *c = conn;
    struct smb *s = c->smb;
    if (!dest_name_valid(item->target))
        return error_set(err, -EINVAL, "unusable file name");
    struct smb_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->conn = c;
    f->card_dir_fd = item->card_dir_fd;
    f->card_rel = strdup(item->rel_path);
    if (!f->card_rel) {
        free(f);
        return error_set(err, -ENOMEM, "out of memory");
    }
    int r = smb_names(f, item->folder, item->target, err);
    if (r < 0)
        goto fail;
    f->mtime_ns = item->mtime_ns;
    r = conn_revive(c, err);
    if (r < 0)
        goto fail;
    snprintf(f->tmp_name, sizeof(f->tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), s->hostname);
    if (url_join(s, f->tmp_url, sizeof(f->tmp_url), TMP_DIR, f->tmp_name, NULL) < 0) {
        r = error_set(err, -ENAMETOOLONG, "path too long");
        goto fail;
    }
    r = smblib_open(c->ctx, f->tmp_url, O_WRONLY | O_CREAT | O_EXCL, &f->fh);
    if (r == -ENOENT) { /* the temporary folder went away (a clean-up on the server) */
        struct error ignored;
        if (mkdir_p(c, TMP_DIR, &ignored) == 0)
            r = smblib_open(c->ctx, f->tmp_url, O_WRONLY | O_CREAT | O_EXCL, &f->fh);
    }
    if (r < 0) {
        f->fh = NULL;
        r = share_error(s, err, r, "cannot create a temporary file");
        goto fail;
    }
    *ret_file = f;
    return 0;
fail:
    free(f->card_rel);
    free(f);
    return r;
}

static int smb_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct smb_file *f = file;
    const char *p = buf;
    while (len > 0) {
        size_t n = 0;
        int r = smblib_write(f->conn->ctx, f->fh, p, len, &n);
        if (r == 0 && n == 0)
            r = -EIO;
        if (r < 0)
            return share_error(f->conn->smb, err, r, "write failed");
        p += n;
        len -= n;
        f->written += n;
    }
    return 0;
}

static void file_free(struct smb_file *f, bool unlink_tmp)
{
    struct smb_conn *c = f->conn;
    /* a server that hangs gets no more calls: the context's teardown frees the handle, the next
     * prepare removes the temporary */
    if (smblib_hung(&c->smb->srv))
        smblib_ctx_set_broken(c->ctx);
    if (f->fh && !smblib_hung(&c->smb->srv))
        (void)smblib_close(c->ctx, f->fh);
    int r = unlink_tmp && !smblib_ctx_broken(c->ctx) ? smblib_unlink(c->ctx, f->tmp_url) : 0;
    /* with the connection gone: after reconnecting (conn_revive), else by the next prepare */
    if (unlink_tmp && smblib_ctx_broken(c->ctx) && r != -ENOENT &&
        c->n_orphans < sizeof(c->orphans) / sizeof(c->orphans[0]))
        snprintf(c->orphans[c->n_orphans++], sizeof(c->orphans[0]), "%s", f->tmp_name);
    free(f->card_rel);
    free(f);
}

static void smb_abort(void *file)
{
    if (file)
        file_free(file, true);
}

/* Is the file at url the same content as the copy (size, then XXH3-128)? */
static int same_content(struct smb_file *f, const char *url, const struct hasher_digest *digest,
                        const struct stat *st, bool *ret_same, struct error *err)
{
    if (!S_ISREG(st->st_mode) || (uint64_t)st->st_size != f->written) {
        *ret_same = false;
        return 0;
    }
    char hex[33];
    uint64_t size = 0;
    int r = xxh128_url(f->conn, url, &size, hex, err);
    if (r < 0)
        return r;
    *ret_same = size == f->written && strcmp(hex, digest->xxh128_hex) == 0;
    return 0;
}

/* Moves the temporary to a free name in dir (a date path or ""), never replacing a file. The
 * name it got goes into name (DEST_NAME_MAX + 1 bytes). */
static int place(struct smb_file *f, const struct hasher_digest *digest, struct dest_result *ret,
                 char *name, struct error *err)
{
    struct smb_conn *c = f->conn;
    struct smb *s = c->smb;
    char url[URL_MAX];
    int r = 0;
    pthread_mutex_lock(&s->place_lock);
    for (unsigned k = 0;; k++) {
        if (k > 9999) {
            r = error_set(err, -EEXIST, "no free name for '%s' in %s/%s", f->name, s->shown,
                          f->folder);
            break;
        }
        dest_candidate_name(f->name, k, name, DEST_NAME_MAX + 1);
        if (url_join(s, url, sizeof(url), f->folder, name, NULL) < 0) {
            r = error_set(err, -ENAMETOOLONG, "path too long");
            break;
        }
        struct stat st;
        r = smblib_stat(c->ctx, url, &st);
        if (r == -ENOENT) {
            r = smblib_rename(c->ctx, f->tmp_url, url);
            if (r < 0)
                share_error(s, err, r, "cannot move the copy into place");
            else
                ret->existed = false;
            break;
        }
        if (r < 0) {
            share_error(s, err, r, "cannot look at the destination folder");
            break;
        }
        bool same = false;
        r = same_content(f, url, digest, &st, &same, err);
        if (r < 0) {
            error_prefix(err, "cannot read the existing '%s'", name);
            break;
        }
        if (same) {
            (void)smblib_unlink(c->ctx, f->tmp_url);
            ret->existed = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->place_lock);
    if (r == 0)
        snprintf(ret->remote, sizeof(ret->remote), "%s/%s%s%s", s->shown, f->folder,
                 f->folder[0] ? "/" : "", name);
    return r;
}

/* Is the file at url exactly the len bytes of want? */
static int same_bytes(struct smb_conn *c, const char *url, const uint8_t *want, size_t len,
                      bool *ret_same, struct error *err)
{
    struct smblib_file *fh = NULL;
    int r = smblib_open(c->ctx, url, O_RDONLY, &fh);
    if (r < 0)
        return share_error(c->smb, err, r, "cannot open it again");
    bool same = true;
    size_t off = 0;
    for (;;) {
        size_t n = 0;
        r = smblib_read(c->ctx, fh, c->buf, VERIFY_BUF, &n);
        if (r < 0) {
            share_error(c->smb, err, r, "cannot read it back");
            break;
        }
        if (n == 0)
            break;
        if (n > len - off || memcmp(c->buf, want + off, n) != 0) {
            same = false;
            break;
        }
        off += n;
    }
    (void)smblib_close(c->ctx, fh);
    if (r == 0)
        *ret_same = same && off == len;
    return r;
}

/* Copies the sidecar rel of the card next to the copy, named after final_name (as stored, see
 * sidecar.h), through a temporary given the sidecar's time, read back and compared when verify,
 * then moved if the name is free. A file that has the name already is left as it is (never
 * overwritten: it may be the user's edited XMP), and that is not an error. Adds it to ret when
 * the file at its name has the card's bytes (placed now, or found the same). */
static int put_sidecar(struct smb_file *f, const char *rel, const char *final_name, bool verify,
                       struct dest_result *ret, struct error *err)
{
    struct smb_conn *c = f->conn;
    struct smb *s = c->smb;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t mtime_ns = 0;
    char name[DEST_NAME_MAX + 1], tmp_name[128], tmp_url[URL_MAX], url[URL_MAX];
    struct smblib_file *fh = NULL;
    bool tmp_made = false;
    snprintf(tmp_name, sizeof(tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), s->hostname);
    if (sidecar_dest_name(rel, f->card_rel, final_name, name, sizeof(name)) < 0 ||
        url_join(s, url, sizeof(url), f->folder, name, NULL) < 0 ||
        url_join(s, tmp_url, sizeof(tmp_url), TMP_DIR, tmp_name, NULL) < 0)
        return error_set(err, -ENAMETOOLONG, "the name for the sidecar '%s' is too long", rel);
    int r = sidecar_read(f->card_dir_fd, rel, &buf, &len, &mtime_ns, err);
    if (r < 0)
        return r;
    r = smblib_open(c->ctx, tmp_url, O_WRONLY | O_CREAT | O_EXCL, &fh);
    if (r < 0) {
        fh = NULL;
        r = share_error(s, err, r, "cannot create a temporary file for a sidecar");
        goto out;
    }
    tmp_made = true;
    for (size_t off = 0; off < len;) {
        size_t n = 0;
        r = smblib_write(c->ctx, fh, buf + off, len - off, &n);
        if (r == 0 && n == 0)
            r = -EIO;
        if (r < 0) {
            r = share_error(s, err, r, "cannot write a sidecar");
            goto out;
        }
        off += n;
    }
    r = smblib_close(c->ctx, fh);
    fh = NULL;
    if (r == 0)
        r = smblib_utimes(c->ctx, tmp_url, mtime_ns);
    if (r < 0) {
        r = share_error(s, err, r, "cannot finish a sidecar");
        goto out;
    }
    if (verify) {
        bool same = false;
        r = same_bytes(c, tmp_url, buf, len, &same, err);
        if (r < 0) {
            error_prefix(err, "cannot verify the sidecar '%s'", rel);
            goto out;
        }
        if (!same) {
            r = error_set(err, -EIO,
                          "verification failed: the copy of the sidecar '%s' on %s "
                          "differs from the card",
                          rel, s->shown);
            goto out;
        }
    }
    pthread_mutex_lock(&s->place_lock);
    struct stat st;
    bool ours = false;
    r = smblib_stat(c->ctx, url, &st);
    if (r == -ENOENT) {
        r = smblib_rename(c->ctx, tmp_url, url);
        if (r == 0) {
            tmp_made = false;
            ours = true;
        } else {
            share_error(s, err, r, "cannot move a sidecar into place");
        }
    } else if (r < 0) {
        share_error(s, err, r, "cannot look at the destination folder");
    } else {
        /* kept as it is; the temporary goes. Listed when it is the card's (a RAW and a JPEG
         * sharing one XMP, a copy found in place); unreadable or other bytes: not ours */
        struct error ignored = {0};
        if (!S_ISREG(st.st_mode) || same_bytes(c, url, buf, len, &ours, &ignored) < 0)
            ours = false;
    }
    pthread_mutex_unlock(&s->place_lock);
    if (r == 0 && ours) {
        char remote[DEST_REMOTE_MAX];
        if ((size_t)snprintf(remote, sizeof(remote), "%s/%s%s%s", s->shown, f->folder,
                             f->folder[0] ? "/" : "", name) < sizeof(remote))
            r = dest_sidecar_add(ret, remote, buf, len, mtime_ns, err);
    }
out:
    if (fh)
        (void)smblib_close(c->ctx, fh);
    if (tmp_made && !smblib_hung(&s->srv))
        (void)smblib_unlink(c->ctx, tmp_url);
    free(buf);
    return r;
}

static int smb_finish(void *file, const struct hasher_digest *digest, bool verify,
                      struct dest_result *ret, struct error *err)
{
    struct smb_file *f = file;
    struct smb_conn *c = f->conn;
    struct smb *s = c->smb;
    int r = smblib_close(c->ctx, f->fh);
    f->fh = NULL;
    if (r < 0) {
        r = share_error(s, err, r, "cannot close the copy");
        goto fail;
    }
    /* after the close, which would otherwise stamp its own time */
    r = smblib_utimes(c->ctx, f->tmp_url, f->mtime_ns);
    if (r < 0) {
        r = share_error(s, err, r, "cannot set the modification time of the copy");
        goto fail;
    }
    if (verify) {
        char hex[33];
        uint64_t size = 0;
        r = xxh128_url(c, f->tmp_url, &size, hex, err);
        if (r < 0) {
            error_prefix(err, "cannot read the copy back from %s to verify it", s->shown);
            goto fail;
        }
        if (size != f->written || strcmp(hex, digest->xxh128_hex) != 0) {
            r = error_set(err, -EIO,
                          "verification failed: the copy on %s differs from the card (XXH3-128 "
                          "%s, %llu bytes; expected %s, %llu bytes)",
                          s->shown, hex, (unsigned long long)size, digest->xxh128_hex,
                          (unsigned long long)f->written);
            goto fail;
        }
    }
    if (f->folder[0] && strcmp(c->made_dir, f->folder) != 0) {
        r = mkdir_p(c, f->folder, err);
        if (r < 0)
            goto fail;
        snprintf(c->made_dir, sizeof(c->made_dir), "%s", f->folder);
    }
    char name[DEST_NAME_MAX + 1];
    r = place(f, digest, ret, name, err);
    if (r < 0)
        goto fail;
    /* The copy is in place: a sidecar that fails now fails the copy, which is retried and then
     * finds the copy the same and tries the sidecars again. */
    struct sidecar_set sidecars;
    sidecar_find(f->card_dir_fd, f->card_rel, false, &sidecars);
    ret->n_sidecars = 0;
    for (size_t i = 0; i < sidecars.n; i++) {
        r = put_sidecar(f, sidecars.rel[i], name, verify, ret, err);
        if (r < 0) {
            file_free(f, false);
            return r;
        }
    }
    file_free(f, false);
    return 0;
fail:
    c->made_dir[0] = '\0'; /* the folder may be what went wrong */
    file_free(f, true);
    return r;
}

/* ---- the destination's own files (ascmhl/, dest.h's meta ops) ---- */

#define META_LIST_MAX 100000 /* names in a folder of meta files, at most */

/* rel (relative to the root, checked by dest_rel_valid) with each component as the share stores
 * it (map_name: plain ASCII names such as "ascmhl" stay as they are). -EINVAL, -ENAMETOOLONG. */
static int meta_map(const char *rel, char *out, size_t size)
{
    if (!dest_rel_valid(rel))
        return -EINVAL;
    size_t o = 0;
    for (const char *p = rel; *p;) {
        size_t len = strcspn(p, "/");
        char part[DEST_NAME_MAX + 1], mapped[DEST_NAME_MAX + 1];
        if (len > DEST_NAME_MAX)
            return -ENAMETOOLONG;
        memcpy(part, p, len);
        part[len] = '\0';
        int r = map_name(part, mapped, sizeof(mapped));
        if (r < 0)
            return r;
        int n = snprintf(out + o, size - o, "%s%s", o ? "/" : "", mapped);
        if (n < 0 || (size_t)n >= size - o)
            return -ENAMETOOLONG;
        o += (size_t)n;
        p += len;
        if (*p == '/')
            p++;
    }
    return 0;
}

/* The URL of rel (mapped, see meta_map) on the main connection, revived if need be. */
static int meta_url(struct smb *s, const char *rel, char *mapped, size_t mapped_size, char *url,
                    size_t url_size, struct error *err)
{
    int r = meta_map(rel, mapped, mapped_size);
    if (r == 0)
        r = url_join(s, url, url_size, mapped, NULL, NULL);
    if (r < 0)
        return error_set_errno(err, r, "'%s'", rel);
    return main_conn(s, err);
}

static int smb_meta_read(void *priv, const char *rel, size_t max, char **ret_buf, size_t *ret_len,
                         struct error *err)
{
    struct smb *s = priv;
    char mapped[2048], url[URL_MAX], what[2200];
    int r = meta_url(s, rel, mapped, sizeof(mapped), url, sizeof(url), err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    snprintf(what, sizeof(what), "cannot read '%s'", mapped);
    struct stat st;
    r = smblib_stat(c->ctx, url, &st);
    if (r == -ENOENT)
        return error_set(err, -ENOENT, "%s on %s: no such file", what, s->shown);
    if (r < 0)
        return share_error(s, err, r, what);
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
        return error_set(err, S_ISREG(st.st_mode) ? -EFBIG : -EINVAL,
                         "'%s' on %s is not a regular file of at most %zu bytes", mapped, s->shown,
                         max);
    struct smblib_file *fh = NULL;
    char *buf = malloc(max + 1);
    if (!buf)
        return error_set(err, -ENOMEM, "out of memory");
    r = smblib_open(c->ctx, url, O_RDONLY, &fh);
    if (r < 0) {
        fh = NULL;
        r = share_error(s, err, r, what);
        goto out;
    }
    size_t len = 0;
    for (;;) { /* one byte more than max tells a file that grew */
        size_t n = 0;
        r = smblib_read(c->ctx, fh, buf + len, max + 1 - len, &n);
        if (r < 0) {
            r = share_error(s, err, r, what);
            goto out;
        }
        if (n == 0)
            break;
        len += n;
        if (len > max) {
            r = error_set(err, -EFBIG, "'%s' on %s has more than %zu bytes", mapped, s->shown, max);
            goto out;
        }
    }
    buf[len] = '\0';
    *ret_buf = buf;
    *ret_len = len;
    buf = NULL;
out:
    if (fh)
        (void)smblib_close(c->ctx, fh);
    free(buf);
    return r;
}

/* The names a smblib_list() found (the listing holds the lock: fn is called after it). */
struct name_list {
    char **names;
    size_t n, cap;
    bool full, nomem;
};

static bool note_name(void *arg, struct smblib_ctx *ctx, const char *name)
{
    (void)ctx;
    struct name_list *l = arg;
    if (l->n >= META_LIST_MAX) {
        l->full = true;
        return false;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **n = realloc(l->names, cap * sizeof(*n));
        if (!n) {
            l->nomem = true;
            return false;
        }
        l->names = n;
        l->cap = cap;
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) {
        l->nomem = true;
        return false;
    }
    l->n++;
    return true;
}

static int smb_meta_list(void *priv, const char *rel_dir, int (*fn)(const char *name, void *arg),
                         void *arg, struct error *err)
{
    struct smb *s = priv;
    char mapped[2048], url[URL_MAX];
    int r = meta_url(s, rel_dir, mapped, sizeof(mapped), url, sizeof(url), err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    /* smblib_list() lists a folder it cannot open as an empty one: look first */
    struct stat st;
    r = smblib_stat(c->ctx, url, &st);
    if (r == 0 && !S_ISDIR(st.st_mode))
        r = -ENOTDIR;
    if (r == -ENOENT)
        return error_set(err, -ENOENT, "no folder '%s' on %s", mapped, s->shown);
    if (r < 0) {
        char what[2200];
        snprintf(what, sizeof(what), "cannot list folder '%s'", mapped);
        return share_error(s, err, r, what);
    }
    struct name_list l = {0};
    smblib_list(c->ctx, url, note_name, &l);
    if (l.nomem)
        r = error_set(err, -ENOMEM, "out of memory");
    else if (l.full)
        r = error_set(err, -E2BIG, "folder '%s' on %s has more than %d files", mapped, s->shown,
                      META_LIST_MAX);
    for (size_t i = 0; i < l.n; i++) {
        if (r == 0)
            r = fn(l.names[i], arg);
        free(l.names[i]);
    }
    free(l.names);
    return r;
}

/* A temporary of the share's TMP_DIR holding the len bytes at buf, closed. */
static int meta_put_tmp(struct smb_conn *c, const char *tmp_url, const void *buf, size_t len,
                        struct error *err)
{
    struct smb *s = c->smb;
    struct smblib_file *fh = NULL;
    int r = smblib_open(c->ctx, tmp_url, O_WRONLY | O_CREAT | O_EXCL, &fh);
    if (r == -ENOENT) { /* the temporary folder went away (a clean-up on the server) */
        struct error ignored;
        if (mkdir_p(c, TMP_DIR, &ignored) == 0)
            r = smblib_open(c->ctx, tmp_url, O_WRONLY | O_CREAT | O_EXCL, &fh);
    }
    if (r < 0)
        return share_error(s, err, r, "cannot create a temporary file");
    for (size_t off = 0; off < len;) {
        size_t n = 0;
        r = smblib_write(c->ctx, fh, (const char *)buf + off, len - off, &n);
        if (r == 0 && n == 0)
            r = -EIO;
        if (r < 0) {
            (void)smblib_close(c->ctx, fh);
            return share_error(s, err, r, "write failed");
        }
        off += n;
    }
    /* the close is where the server reports a write it could not keep */
    r = smblib_close(c->ctx, fh);
    return r < 0 ? share_error(s, err, r, "cannot close a temporary file") : 0;
}

/*
 * The temporary is written and closed first; then, with replace false, the name is checked and
 * the temporary renamed under place_lock (atomic among this process's lanes; SnapSync's history
 * lock orders the processes of this machine). With replace true, smblib_rename() replaces:
 * libsmbclient renames, and when the name is taken unlinks it and renames again, so a reader
 * sees the old file, for a moment none, or the whole new one, never a part of it. SMB has no
 * fsync: the close hands the bytes to the server, whose disk is its own.
 */
static int smb_meta_write(void *priv, const char *rel, const void *buf, size_t len, bool replace,
                          struct error *err)
{
    struct smb *s = priv;
    char mapped[2048], url[URL_MAX], tmp_name[128], tmp_url[URL_MAX], what[2200];
    int r = meta_url(s, rel, mapped, sizeof(mapped), url, sizeof(url), err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    char *slash = strrchr(mapped, '/');
    if (slash) {
        *slash = '\0';
        r = mkdir_p(c, mapped, err);
        *slash = '/';
        if (r < 0)
            return r;
    }
    snprintf(tmp_name, sizeof(tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), s->hostname);
    if (url_join(s, tmp_url, sizeof(tmp_url), TMP_DIR, tmp_name, NULL) < 0)
        return error_set(err, -ENAMETOOLONG, "path too long");
    snprintf(what, sizeof(what), "cannot write '%s'", mapped);
    r = meta_put_tmp(c, tmp_url, buf, len, err);
    if (r < 0) {
        error_prefix(err, "%s", what);
        goto out;
    }
    pthread_mutex_lock(&s->place_lock);
    struct stat st;
    r = replace ? -ENOENT : smblib_stat(c->ctx, url, &st);
    if (r == 0)
        r = error_set(err, -EEXIST, "'%s' exists already on %s", mapped, s->shown);
    else if (r != -ENOENT)
        share_error(s, err, r, what);
    else if ((r = smblib_rename(c->ctx, tmp_url, url)) < 0)
        share_error(s, err, r, what);
    pthread_mutex_unlock(&s->place_lock);
out:
    if (r < 0 && !smblib_hung(&s->srv))
        (void)smblib_unlink(c->ctx, tmp_url); /* else the next prepare removes it */
    return r;
}

/* remote is "smb://host[:port]/share[/path]/rel" (smb_finish's dest_result.remote, whose names
 * are those the share stores, mapped): rel. The host part is not compared, so that a server
 * reached by another name or port keeps its history. */
static int smb_rel_of(void *priv, const char *remote, char *out, size_t size)
{
    const struct smb *s = priv;
    if (strncmp(remote, "smb://", 6) != 0)
        return -EINVAL;
    const char *p = strchr(remote + 6, '/');
    if (!p)
        return -EINVAL;
    p++;
    size_t sl = strlen(s->share), pl = strlen(s->path);
    if (strncmp(p, s->share, sl) != 0 || p[sl] != '/')
        return -EINVAL;
    p += sl + 1;
    if (pl) {
        if (strncmp(p, s->path, pl) != 0 || p[pl] != '/')
            return -EINVAL;
        p += pl + 1;
    }
    if (!*p)
        return -EINVAL;
    int k = snprintf(out, size, "%s", p);
    return k < 0 || (size_t)k >= size ? -ENAMETOOLONG : 0;
}

/* ---- reading a copy back (`snapsync verify`) ---- */

static int smb_read_copy(void *priv, const char *remote,
                         int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                         struct error *err)
{
    struct smb *s = priv;
    char rel[URL_MAX], url[URL_MAX], what[URL_MAX + 32];
    /* remote holds the names the share stores (mapped): joined as they are */
    if (smb_rel_of(s, remote, rel, sizeof(rel)) < 0 ||
        url_join(s, url, sizeof(url), rel, NULL, NULL) < 0)
        return error_set(err, -EINVAL, "'%s' is not below %s", remote, s->shown);
    int r = main_conn(s, err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    snprintf(what, sizeof(what), "cannot read '%s'", rel);
    struct stat st;
    r = smblib_stat(c->ctx, url, &st);
    if (r == -ENOENT)
        return error_set(err, -ENOENT, "'%s' on %s: no such file", rel, s->shown);
    if (r < 0)
        return share_error(s, err, r, what);
    if (!S_ISREG(st.st_mode))
        return error_set(err, -EINVAL, "'%s' on %s is not a regular file", rel, s->shown);
    struct smblib_file *fh = NULL;
    r = smblib_open(c->ctx, url, O_RDONLY, &fh);
    if (r < 0) {
        fh = NULL;
        if (r == -ENOENT)
            return error_set(err, -ENOENT, "'%s' on %s: no such file", rel, s->shown);
        return share_error(s, err, r, what);
    }
    for (;;) {
        size_t n = 0;
        r = smblib_read(c->ctx, fh, c->buf,
                        DEST_READ_CHUNK < VERIFY_BUF ? DEST_READ_CHUNK : VERIFY_BUF, &n);
        if (r < 0) {
            r = share_error(s, err, r, what);
            break;
        }
        if (n == 0)
            break;
        r = fn(c->buf, n, arg);
        if (r < 0)
            break;
    }
    (void)smblib_close(c->ctx, fh);
    return r;
}

/* ---- listing the tree (`snapsync verify`'s extra files) ---- */

struct entry_lists {
    struct name_list files, dirs;
};

static bool note_entry(void *arg, const char *name, bool is_dir)
{
    struct entry_lists *e = arg;
    return note_name(is_dir ? &e->dirs : &e->files, NULL, name);
}

static void name_list_free(struct name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    *l = (struct name_list){0};
}

struct smb_walk {
    struct smb *s;
    int (*fn)(const char *remote, void *arg);
    void *arg;
    char rel[URL_MAX];    /* the folder being listed, relative to the root ("" at the root) */
    char url[URL_MAX];    /* scratch */
    char remote[URL_MAX]; /* scratch */
    struct error *err;
};

/* rel + "/" + name (or name at the root) into w->rel from len on; the new length in *ret. */
static int walk_push(struct smb_walk *w, size_t len, const char *name, size_t *ret)
{
    int k = snprintf(w->rel + len, sizeof(w->rel) - len, "%s%s", len ? "/" : "", name);
    if (k < 0 || (size_t)k >= sizeof(w->rel) - len) {
        w->rel[len] = '\0';
        return error_set(w->err, -ENAMETOOLONG, "a name in '%s' on %s is too long", w->rel,
                         w->s->shown);
    }
    *ret = len + (size_t)k;
    return 0;
}

static int walk_folder(struct smb_walk *w, size_t len, unsigned depth)
{
    struct smb *s = w->s;
    struct entry_lists e = {0};
    int r = url_join(s, w->url, sizeof(w->url), w->rel, NULL, NULL);
    if (r < 0)
        return error_set(w->err, r, "'%s' on %s: name too long", w->rel, s->shown);
    r = smblib_list_entries(s->main->ctx, w->url, note_entry, &e);
    if (r < 0) {
        char what[URL_MAX + 32];
        snprintf(what, sizeof(what), "cannot list folder '%s'", w->rel[0] ? w->rel : "/");
        r = share_error(s, w->err, r, what);
    } else if (e.files.nomem || e.dirs.nomem) {
        r = error_set(w->err, -ENOMEM, "out of memory");
    } else if (e.files.full || e.dirs.full) {
        r = error_set(w->err, -E2BIG, "folder '%s' on %s has more than %d entries", w->rel,
                      s->shown, META_LIST_MAX);
    }
    for (size_t i = 0; r == 0 && i < e.files.n; i++) {
        size_t n = 0; /* walk_push sets it; -O3 cannot tell */
        if (dest_walk_skip(depth, e.files.names[i]))
            continue;
        r = walk_push(w, len, e.files.names[i], &n);
        if (r == 0 && (size_t)snprintf(w->remote, sizeof(w->remote), "%s/%s", s->shown, w->rel) >=
                          sizeof(w->remote))
            r = error_set(w->err, -ENAMETOOLONG, "'%s' on %s: name too long", w->rel, s->shown);
        if (r == 0)
            r = w->fn(w->remote, w->arg);
        w->rel[len] = '\0';
    }
    name_list_free(&e.files);
    for (size_t i = 0; r == 0 && i < e.dirs.n; i++) {
        size_t n = 0;
        if (dest_walk_skip(depth, e.dirs.names[i]))
            continue;
        r = walk_push(w, len, e.dirs.names[i], &n);
        if (r == 0 && depth + 1 >= DEST_WALK_DEPTH)
            r = error_set(w->err, -ELOOP, "'%s' on %s is more than %d folders deep", w->rel,
                          s->shown, DEST_WALK_DEPTH);
        if (r == 0)
            r = walk_folder(w, n, depth + 1);
        w->rel[len] = '\0';
    }
    name_list_free(&e.dirs);
    return r;
}

static int smb_walk(void *priv, int (*fn)(const char *remote, void *arg), void *arg,
                    struct error *err)
{
    struct smb *s = priv;
    int r = main_conn(s, err);
    if (r < 0)
        return r;
    struct smb_walk *w = malloc(sizeof(*w));
    if (!w)
        return error_set(err, -ENOMEM, "out of memory");
    *w = (struct smb_walk){.s = s, .fn = fn, .arg = arg, .err = err};
    r = walk_folder(w, 0, 0);
    free(w);
    return r;
}

static const char *smb_root_name(void *priv)
{
    const struct smb *s = priv;
    const char *slash = strrchr(s->path, '/');
    return slash ? slash + 1 : s->path[0] ? s->path : s->share;
}

/* The session ends while a call waits for a server that hangs: cut our connections to it. */
static void smb_interrupt(void *priv)
{
    struct smb *s = priv;
    smblib_interrupt(&s->srv, "the session ends without the share");
}

const struct dest_ops dest_smb_ops = {
    .kind = "smb",
    .init = smb_init,
    .done = smb_done,
    .prepare = smb_prepare,
    .probe = smb_probe,
    .interrupt = smb_interrupt,
    .conn_new = smb_conn_new,
    .conn_free = smb_conn_free,
    .open = smb_open,
    .write = smb_write,
    .finish = smb_finish,
    .abort = smb_abort,
    .retarget = smb_retarget,
    .meta_read = smb_meta_read,
    .meta_list = smb_meta_list,
    .meta_write = smb_meta_write,
    .rel_of = smb_rel_of,
    .root_name = smb_root_name,
    .read_copy = smb_read_copy,
    .walk = smb_walk,
};
