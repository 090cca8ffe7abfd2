/* SPDX-License-Identifier: MIT */
/*
 * SMB destination (`unraid.protocol: smb`): an SMB2/3 share (Unraid, a NAS, Windows) reached with
 * libsmbclient, no mount needed.
 *
 * Each lane connection has its own libsmbclient context (struct smb_conn), used by one thread at a
 * time; prepare and probe use one more, owned by the main thread. libsmbclient keeps process-wide
 * state: a talloc stack every call uses, debug and loadparm globals, a name cache. Debian's build
 * does not export smbc_thread_posix(), so right after loading the library we hand pthread-based
 * thread hooks to libsamba-util's smb_thread_set_functions() (which is all smbc_thread_posix()
 * does); they make the talloc stack per thread. A read-write lock, `lib_lock`, and a mutex,
 * `path_lock`, keep the rest safe: creating and freeing contexts holds lib_lock exclusively;
 * every call that takes a path (it may connect or reconnect: name resolution, credentials,
 * loadparm) holds it shared plus path_lock, so such calls take turns among themselves; reads,
 * writes and closes of open files hold it shared, so they run in parallel with each other and
 * with path calls (the read-back of one file overlaps the writes of the next, and opening or
 * renaming one file never stops another's transfer; see "calls into libsmbclient" below).
 * The hooks' layout is Samba's private one, so they are installed only on a libsmbclient whose
 * smbc_version() is of the series that layout was checked against (smb_hooks_version_known).
 * Without the hooks (another version, a library lacking smb_thread_set_functions, or one whose
 * talloc stack was set up before them) every call holds lib_lock exclusively. A call blocks for
 * one SMB round trip at most (a 1 MiB write is one request), bounded by unraid.timeout.
 *
 * A copy is written to <path>/.snapsync-tmp/<pid>.<seq>.<host>.part, closed, given the card file's
 * modification (and access) time (utimes: microseconds on the wire), read back over SMB and
 * compared by MD5, then renamed to <path>/YYYY/MM/DD/<name>. Owner and permissions are the
 * server's to decide (force user, create mask): config.c refuses file_mode, dir_mode, owner and
 * group with protocol smb. libsmbclient's rename replaces
 * an existing target (it unlinks it and retries), so the move is check-then-rename under
 * `place_lock`, which makes it atomic among the lanes of this process; a name that is taken is
 * compared (size, then MD5 read back): same content is done, other content gets "<stem>_N.<ext>".
 * Temporaries of dead processes are removed by the next prepare.
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
 * A call that times out means the server hangs (frozen, smbd stopped): every other connection to
 * it would wait out its own timeout, one call after another, so all of this process's TCP
 * connections to that server are shut down at once (cut_connections) and whatever waits on them
 * fails now; until a call succeeds again, a connection is not revived just to remove temporaries
 * (the next prepare removes them).
 * The password lives only in struct smb and the auth callback; it is wiped when freed.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <libsmbclient.h>
#include <openssl/evp.h>

#include "dest.h"
#include "sidecar.h"
#include "dest_smb.h"
#include "log.h"

/*
 * libsmbclient is loaded (dlopen) only when an SMB destination is configured: linked directly,
 * its dependencies (Samba, Kerberos, LDAP, GnuTLS) add about 14 MiB to the memory of every run,
 * SMB or not. Each function is taken by name with the type the header declares.
 */
#define SMB_API(X) X(smbc_free_context) X(smbc_getFunctionClose) X(smbc_getFunctionClosedir) X(smbc_getFunctionMkdir) X(smbc_getFunctionOpen) X(smbc_getFunctionOpendir) X(smbc_getFunctionRead) X(smbc_getFunctionReaddir) X(smbc_getFunctionRename) X(smbc_getFunctionStat) X(smbc_getFunctionStatVFS) X(smbc_getFunctionUnlink) X(smbc_getFunctionUtimes) X(smbc_getFunctionWrite) X(smbc_getOptionUserData) X(smbc_init_context) X(smbc_new_context) X(smbc_setDebug) X(smbc_setFunctionAuthDataWithContext) X(smbc_setLogCallback) X(smbc_setOptionCaseSensitive) X(smbc_setOptionDebugToStderr) X(smbc_setOptionFallbackAfterKerberos) X(smbc_setOptionNoAutoAnonymousLogin) X(smbc_setOptionProtocols) X(smbc_setOptionSmbEncryptionLevel) X(smbc_setOptionUseCCache) X(smbc_setOptionUseKerberos) X(smbc_setOptionUserData) X(smbc_setPort) X(smbc_setTimeout) X(smbc_version)

static struct {
#define SMB_API_FIELD(name) __typeof__(name) *name;
    SMB_API(SMB_API_FIELD)
#undef SMB_API_FIELD
} smb_api;

static pthread_once_t smb_api_once = PTHREAD_ONCE_INIT;
static char smb_api_error[256];

/* Exclusive for whatever touches libsmbclient's process-wide state, shared among transfers on
 * open files: see "calls into libsmbclient". Writers first, so a transfer-heavy load never holds
 * off an open or a rename for long. */
static pthread_rwlock_t lib_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
/* One call that takes a path at a time (with the thread hooks; see lib_lock_path). */
static pthread_mutex_t path_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Samba's thread hooks. libsmbclient.h documents them for smbc_thread_impl(), which Debian's
 * library (4.17) does not export; smbc_thread_posix() and smbc_thread_impl() only hand such a table
 * to smb_thread_set_functions() of libsamba-util, which is exported and is what we call. The layout
 * is that of lib/util/smb_threads.h (checked against the 4.17 binary: talloc_tos() calls get_tls
 * at offset 48, smb_thread_once() calls lock_mutex at offset 16 with 1 and 2). With the hooks,
 * Samba's talloc stack (the one process-wide state every call touches) is per thread, and its
 * own few globals (module init, the count of contexts) take these mutexes.
 */
struct smb_thread_functions {
    int (*create_mutex)(const char *lockname, void **pplock, const char *location);
    void (*destroy_mutex)(void *plock, const char *location);
    int (*lock_mutex)(void *plock, int lock_type, const char *location);
    int (*create_tls)(const char *keyname, void **ppkey, const char *location);
    void (*destroy_tls)(void **ppkey, const char *location);
    int (*set_tls)(void *pkey, const void *pval, const char *location);
    void *(*get_tls)(void *pkey, const char *location);
};

enum { SMB_THREAD_LOCK = 1, SMB_THREAD_UNLOCK = 2, TLS_KEYS_MAX = 4 };

/*
 * Thread-local values are kept in nodes. When a thread ends, its node goes to its key's free list
 * and the next thread that has none takes it over: Samba never frees a thread's talloc stack (an
 * empty one when the thread's last call returned), so without reuse every lane thread of every
 * session would leak one. Reusing an empty stack in another thread is what a long-lived thread
 * does anyway.
 */
struct tls_key;

struct tls_node {
    struct tls_key *key;
    void *value;
    struct tls_node *next;
};

struct tls_key {
    pthread_key_t key;
    pthread_mutex_t lock;
    struct tls_node *free; /* nodes of threads that ended, values kept */
};

static struct tls_key *tls_keys[TLS_KEYS_MAX]; /* never freed: Samba keeps its keys for good */
static atomic_size_t n_tls_keys;
/* Samba asked for a value under a key that is not ours: its talloc stack was set up before the
 * hooks. Every call then holds lib_lock exclusively, as without hooks. */
static atomic_bool tls_foreign;
/* The hooks are installed: transfers on open files may run in parallel. */
static bool lib_threads;
/* Why they are not, for the log ("" when they are). */
static char lib_threads_why[160];

static int hook_create_mutex(const char *lockname, void **pplock, const char *location)
{
    (void)lockname;
    (void)location;
    pthread_mutex_t *m = malloc(sizeof(*m));
    if (!m)
        return ENOMEM;
    int r = pthread_mutex_init(m, NULL);
    if (r != 0) {
        free(m);
        return r;
    }
    *pplock = m;
    return 0;
}

static void hook_destroy_mutex(void *plock, const char *location)
{
    (void)location;
    if (!plock)
        return;
    pthread_mutex_destroy(plock);
    free(plock);
}

static int hook_lock_mutex(void *plock, int lock_type, const char *location)
{
    (void)location;
    if (lock_type == SMB_THREAD_LOCK)
        return pthread_mutex_lock(plock);
    if (lock_type == SMB_THREAD_UNLOCK)
        return pthread_mutex_unlock(plock);
    return EINVAL;
}

/* pthread key destructor: a thread ended; its value waits for the next thread. */
static void tls_node_release(void *v)
{
    struct tls_node *n = v;
    pthread_mutex_lock(&n->key->lock);
    n->next = n->key->free;
    n->key->free = n;
    pthread_mutex_unlock(&n->key->lock);
}

static int hook_create_tls(const char *keyname, void **ppkey, const char *location)
{
    (void)keyname;
    (void)location;
    size_t i = atomic_load(&n_tls_keys);
    if (i >= TLS_KEYS_MAX)
        return ENOMEM;
    struct tls_key *k = calloc(1, sizeof(*k));
    if (!k)
        return ENOMEM;
    int r = pthread_key_create(&k->key, tls_node_release);
    if (r != 0) {
        free(k);
        return r;
    }
    pthread_mutex_init(&k->lock, NULL);
    tls_keys[i] = k; /* Samba creates keys under its "once" mutex, one at a time */
    atomic_store(&n_tls_keys, i + 1);
    *ppkey = k;
    return 0;
}

static void hook_destroy_tls(void **ppkey, const char *location)
{
    /* Samba 4.17 never destroys its key; keeping ours is harmless (values may still be in use). */
    (void)ppkey;
    (void)location;
}

static struct tls_key *tls_key_of(void *pkey)
{
    size_t n = atomic_load(&n_tls_keys);
    for (size_t i = 0; i < n; i++)
        if (tls_keys[i] == pkey)
            return tls_keys[i];
    return NULL;
}

static int hook_set_tls(void *pkey, const void *pval, const char *location)
{
    (void)location;
    struct tls_key *k = tls_key_of(pkey);
    if (!k) {
        /* not reached: Samba sets a value only after get_tls found none, and hook_get_tls
         * answers every key that is not ours with a value */
        atomic_store(&tls_foreign, true);
        return EINVAL;
    }
    struct tls_node *n = pthread_getspecific(k->key);
    if (!n) {
        n = calloc(1, sizeof(*n));
        if (!n)
            return ENOMEM;
        n->key = k;
        int r = pthread_setspecific(k->key, n);
        if (r != 0) {
            free(n);
            return r;
        }
    }
    n->value = (void *)pval;
    return 0;
}

static void *hook_get_tls(void *pkey, const char *location)
{
    (void)location;
    if (!pkey)
        return NULL; /* before Samba created its key: nothing stored yet */
    struct tls_key *k = tls_key_of(pkey);
    if (!k) {
        /* Without hooks Samba keeps the value itself in the key variable (single-threaded
         * mode, set up before our hooks): answer as it would, and stop running in parallel. */
        atomic_store(&tls_foreign, true);
        return pkey;
    }
    struct tls_node *n = pthread_getspecific(k->key);
    if (!n) {
        pthread_mutex_lock(&k->lock);
        n = k->free;
        if (n)
            k->free = n->next;
        pthread_mutex_unlock(&k->lock);
        if (!n)
            return NULL;
        n->next = NULL;
        if (pthread_setspecific(k->key, n) != 0) {
            tls_node_release(n);
            return NULL;
        }
    }
    return n->value;
}

static const struct smb_thread_functions smb_thread_hooks = {
    .create_mutex = hook_create_mutex,
    .destroy_mutex = hook_destroy_mutex,
    .lock_mutex = hook_lock_mutex,
    .create_tls = hook_create_tls,
    .destroy_tls = hook_destroy_tls,
    .set_tls = hook_set_tls,
    .get_tls = hook_get_tls,
};

static void smb_api_load_once(void)
{
    void *h = dlopen("libsmbclient.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(smb_api_error, sizeof(smb_api_error),
                 "cannot load libsmbclient (install the libsmbclient package): %s", e ? e : "?");
        return;
    }
#define SMB_API_LOAD(name)                                                                         \
    if (!smb_api_error[0] && !(*(void **)&smb_api.name = dlsym(h, #name)))                       \
        snprintf(smb_api_error, sizeof(smb_api_error), "libsmbclient lacks %s", #name);
    SMB_API(SMB_API_LOAD)
#undef SMB_API_LOAD
    if (smb_api_error[0])
        return;
    /* Before any other call into the library, so that its first talloc stack is already per
     * thread. Found through libsmbclient's dependencies (libsamba-util). Without it every call
     * holds lib_lock exclusively. */
    int (*set_functions)(const struct smb_thread_functions *) = NULL;
    *(void **)&set_functions = dlsym(h, "smb_thread_set_functions");
    /* smbc_version() only formats a static string (no talloc), so it may come first. */
    const char *version = smb_api.smbc_version();
    if (!smb_hooks_version_known(version))
        snprintf(lib_threads_why, sizeof(lib_threads_why),
                 "libsmbclient %.40s is not of the series %s whose thread-hook layout is known",
                 version ? version : "(unknown)", SMB_HOOKS_KNOWN_SERIES);
    else if (!set_functions)
        snprintf(lib_threads_why, sizeof(lib_threads_why),
                 "libsmbclient lacks smb_thread_set_functions");
    else if (set_functions(&smb_thread_hooks) != 0)
        snprintf(lib_threads_why, sizeof(lib_threads_why), "Samba refused the thread hooks");
    else
        lib_threads = true;
}

bool smb_hooks_version_known(const char *version)
{
    static const char prefix[] = SMB_HOOKS_KNOWN_SERIES ".";
    if (!version || strncmp(version, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *p = version + sizeof(prefix) - 1;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '\0' || *p == '-' || *p == '+' || *p == '~' || *p == '.' || *p == ' ';
}

/* Loads libsmbclient once per process. Returns 0 or -ENOENT with err set. Any thread. */
static int smb_api_load(struct error *err)
{
    pthread_once(&smb_api_once, smb_api_load_once);
    if (smb_api_error[0])
        return error_set(err, -ENOENT, "%s", smb_api_error);
    return 0;
}


#define TMP_DIR ".snapsync-tmp"
#define VERIFY_BUF (1024 * 1024)
#define NAME_MAX_BYTES 255
#define URL_MAX 4096
#define STALE_FOREIGN_TMP_S (24 * 3600)
/* A share name no server has: tells a failed login from a share that refuses the user. */
#define NO_SUCH_SHARE "snapsync-no-such-share-7f3c"

struct smb {
    char host[256]; /* without the port */
    uint16_t port;  /* 0: libsmbclient's default (445, then 139) */
    char share[256];
    char path[1024]; /* folder inside the share, no leading or trailing '/'; may be "" */
    char workgroup[64];
    char username[256];
    char password[256];
    bool guest;
    bool organize_by_date;
    int timeout_ms;         /* unraid.timeout */
    atomic_bool hung;       /* a call timed out and no call has succeeded since */
    char hostname[64];      /* this machine, in temporary names */
    char base_url[URL_MAX]; /* smb://host/share[/path], encoded */
    char shown[URL_MAX];    /* smb://host[:port]/share[/path], for messages */
    pthread_mutex_t place_lock;
    struct smb_conn *main; /* prepare and probe (main thread) */
};

struct smb_conn {
    struct smb *smb;
    SMBCCTX *ctx;
    bool broken; /* failed like a dropped connection: rebuilt before the next file */
    uint8_t *buf;
    char made_dir[16]; /* the last date folder known to exist */
    /* temporaries an abort could not remove (connection gone): removed after reconnecting */
    char orphans[8][128];
    size_t n_orphans;
};

struct smb_file {
    struct smb_conn *conn;
    SMBCFILE *fh;
    char tmp_url[URL_MAX];
    char tmp_name[128];
    char name[NAME_MAX_BYTES + 1]; /* as stored on the share (mapped) */
    char date_path[16];
    int64_t mtime_ns; /* the card file's */
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
 * NAME_MAX_BYTES. */
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
        if (o + n > NAME_MAX_BYTES || o + n >= size)
            return -ENAMETOOLONG;
        memcpy(out + o, buf, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

/*
 * ---- calls into libsmbclient; they return 0 or a negative errno ----
 *
 * A call that takes a path may (re)connect: name resolution, Samba's name cache, loadparm and
 * credentials are process-wide and not all locked inside Samba, so such calls take turns
 * (path_lock), and context creation and freeing (debug and loadparm setup, module init) exclude
 * everything (lib_lock exclusive). A transfer on an open file (read, write, close) uses only that
 * file's context and connection, the thread's own talloc stack and a tevent context made for the
 * call (checked in the 4.17 binary: SMBC_read_ctx, SMBC_write_ctx and SMBC_close_ctx go straight
 * to cli_read, cli_writeall and cli_close on the connection the file was opened on, with no path
 * resolution), none of the state a path call writes; with the thread hooks it holds lib_lock
 * shared, and path calls too (plus path_lock). Transfers and path calls then share only reads of
 * Samba's debug level (Samba logs nothing at our level 0 on transfer paths, not even when the
 * server goes away). tests/integration/test_smb.py runs a backup of four workers under DRD,
 * which reports any two threads touching the same memory unordered.
 *
 * Why path calls must not exclude transfers: with lib_lock writer-first, every open, stat or
 * rename waited for the writes in flight on other lanes and held new ones back, so the link fell
 * idle for a round trip several times per file (5 % of a 1 Gbit/s upload; docs/performance.md).
 */

/* The thread hooks are in place and Samba uses them: calls may run in parallel. */
static bool lib_parallel(void)
{
    return lib_threads && !atomic_load(&tls_foreign);
}

static void lib_lock_all(void)
{
    pthread_rwlock_wrlock(&lib_lock);
}

/* For a read, write or close of an open file: shared with other transfers when the thread hooks
 * are in place, else exclusive. */
static void lib_lock_transfer(void)
{
    if (lib_parallel())
        pthread_rwlock_rdlock(&lib_lock);
    else
        pthread_rwlock_wrlock(&lib_lock);
}

static void lib_unlock(void)
{
    pthread_rwlock_unlock(&lib_lock);
}

/* For a call that takes a path: one at a time, alongside transfers when the thread hooks are in
 * place (lib_lock shared plus path_lock), else lib_lock exclusively. Returns what
 * lib_unlock_path() must release. */
static bool lib_lock_path(void)
{
    if (lib_parallel()) {
        pthread_rwlock_rdlock(&lib_lock);
        pthread_mutex_lock(&path_lock);
        return true;
    }
    pthread_rwlock_wrlock(&lib_lock);
    return false;
}

static void lib_unlock_path(bool with_path_lock)
{
    if (with_path_lock)
        pthread_mutex_unlock(&path_lock);
    pthread_rwlock_unlock(&lib_lock);
}

static bool is_connection_error(int e)
{
    return e == ECONNRESET || e == ECONNREFUSED || e == ECONNABORTED || e == EPIPE ||
           e == ENOTCONN || e == ETIMEDOUT || e == EHOSTUNREACH || e == ENETUNREACH ||
           e == ENETDOWN || e == EIO;
}

/* True when the socket address a is the server's: one of its addresses, on its port (445 or
 * 139 when none is set, libsmbclient's choice). */
static bool is_server(const struct sockaddr_storage *a, const struct addrinfo *ai, uint16_t port)
{
    uint16_t p;
    if (a->ss_family == AF_INET)
        p = ntohs(((const struct sockaddr_in *)a)->sin_port);
    else if (a->ss_family == AF_INET6)
        p = ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    else
        return false;
    if (port ? p != port : p != 445 && p != 139)
        return false;
    for (; ai; ai = ai->ai_next) {
        if (ai->ai_family != a->ss_family)
            continue;
        if (a->ss_family == AF_INET &&
            memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                   &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, sizeof(struct in_addr)) == 0)
            return true;
        if (a->ss_family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                   &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
                   sizeof(struct in6_addr)) == 0)
            return true;
    }
    return false;
}

/* Shuts down every TCP connection of this process to the server, found by their peer address
 * among our open descriptors: a call waiting on one fails at once. The descriptors stay open
 * (libsmbclient owns them), so none can be reused meanwhile. */
static void cut_connections(const struct smb *s, const char *why)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(s->host, NULL, &hints, &ai) != 0)
        return;
    DIR *d = opendir("/proc/self/fd");
    unsigned cut = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        struct stat st;
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        if (*end || end == de->d_name || fd < 0 || fd > INT_MAX || fd == dirfd(d) ||
            fstat((int)fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
            getpeername((int)fd, (struct sockaddr *)&peer, &len) < 0 ||
            !is_server(&peer, ai, s->port))
            continue;
        if (shutdown((int)fd, SHUT_RDWR) == 0)
            cut++;
    }
    if (d)
        closedir(d);
    freeaddrinfo(ai);
    log_debug("%s: %s: %u connection(s) to the server shut down", s->shown, why, cut);
}

/* Turns the errno a call left into our return, marking the context broken when it failed the way
 * a dropped connection does, and cutting every connection to a server that hangs. */
static int lib_result(struct smb_conn *c, int ok, int saved_errno)
{
    if (ok) {
        if (atomic_load_explicit(&c->smb->hung, memory_order_relaxed))
            atomic_store(&c->smb->hung, false);
        return 0;
    }
    int e = saved_errno ? saved_errno : EIO;
    if (is_connection_error(e))
        c->broken = true;
    /* libsmbclient gives up a call whose answer did not come in time with ETIMEDOUT, or drops the
     * connection and says ECONNABORTED */
    if ((e == ETIMEDOUT || e == ECONNABORTED) && !atomic_exchange(&c->smb->hung, true))
        cut_connections(c->smb, "a call timed out");
    return -e;
}

static int lib_stat(struct smb_conn *c, const char *url, struct stat *st)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionStat(c->ctx)(c->ctx, url, st);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

static int lib_mkdir(struct smb_conn *c, const char *url)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionMkdir(c->ctx)(c->ctx, url, 0755);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

static int lib_unlink(struct smb_conn *c, const char *url)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionUnlink(c->ctx)(c->ctx, url);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

/* Replaces an existing `to` (libsmbclient unlinks it): callers check first, under place_lock. */
static int lib_rename(struct smb_conn *c, const char *from, const char *to)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionRename(c->ctx)(c->ctx, from, c->ctx, to);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

/* Sets the access and modification time of url (microseconds on the wire). */
static int lib_utimes(struct smb_conn *c, const char *url, int64_t mtime_ns)
{
    int64_t sec = mtime_ns / 1000000000, usec = mtime_ns % 1000000000 / 1000;
    if (usec < 0) { /* before 1970: floor */
        sec--;
        usec += 1000000;
    }
    struct timeval tv[2] = {{.tv_sec = (time_t)sec, .tv_usec = (suseconds_t)usec},
                            {.tv_sec = (time_t)sec, .tv_usec = (suseconds_t)usec}};
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionUtimes(c->ctx)(c->ctx, url, tv);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

static int lib_open(struct smb_conn *c, const char *url, int flags, SMBCFILE **ret)
{
    bool pl = lib_lock_path();
    errno = 0;
    SMBCFILE *fh = smb_api.smbc_getFunctionOpen(c->ctx)(c->ctx, url, flags, 0644);
    int e = errno;
    lib_unlock_path(pl);
    if (fh)
        *ret = fh;
    return lib_result(c, fh != NULL, e);
}

static int lib_close(struct smb_conn *c, SMBCFILE *fh)
{
    lib_lock_transfer();
    errno = 0;
    int r = smb_api.smbc_getFunctionClose(c->ctx)(c->ctx, fh);
    int e = errno;
    lib_unlock();
    return lib_result(c, r == 0, e);
}

static int lib_write(struct smb_conn *c, SMBCFILE *fh, const void *buf, size_t len, size_t *ret)
{
    lib_lock_transfer();
    errno = 0;
    ssize_t n = smb_api.smbc_getFunctionWrite(c->ctx)(c->ctx, fh, buf, len);
    int e = errno;
    lib_unlock();
    if (n >= 0)
        *ret = (size_t)n;
    return lib_result(c, n >= 0, e);
}

static int lib_read(struct smb_conn *c, SMBCFILE *fh, void *buf, size_t len, size_t *ret)
{
    lib_lock_transfer();
    errno = 0;
    ssize_t n = smb_api.smbc_getFunctionRead(c->ctx)(c->ctx, fh, buf, len);
    int e = errno;
    lib_unlock();
    if (n >= 0)
        *ret = (size_t)n;
    return lib_result(c, n >= 0, e);
}

/* ---- contexts ---- */

static void auth_fn(SMBCCTX *ctx, const char *server, const char *share, char *workgroup,
                    int workgroup_len, char *username, int username_len, char *password,
                    int password_len)
{
    (void)server;
    (void)share;
    const struct smb *s = smb_api.smbc_getOptionUserData(ctx);
    if (!s || s->guest) {
        /* empty user and password: anonymous, which servers map to guest (not $USER) */
        if (username_len > 0)
            username[0] = '\0';
        if (password_len > 0)
            password[0] = '\0';
        return;
    }
    if (s->workgroup[0] && workgroup_len > 0)
        snprintf(workgroup, (size_t)workgroup_len, "%s", s->workgroup);
    if (username_len > 0)
        snprintf(username, (size_t)username_len, "%s", s->username);
    if (password_len > 0)
        snprintf(password, (size_t)password_len, "%s", s->password);
}

/* Samba's own diagnostics go to our debug log, never to stdout (where --json goes). They do not
 * hold passwords. */
static void log_fn(void *priv, int level, const char *msg)
{
    (void)priv;
    (void)level;
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    if (len > 0)
        log_debug("libsmbclient: %.*s", (int)len, msg);
}

static void ctx_free(SMBCCTX *ctx)
{
    if (!ctx)
        return;
    lib_lock_all();
    /* 1: close files and connections; fails only if files are still open (then force). */
    if (smb_api.smbc_free_context(ctx, 1) != 0)
        smb_api.smbc_free_context(ctx, 0);
    lib_unlock();
}

static int ctx_new(const struct smb *s, SMBCCTX **ret, struct error *err)
{
    lib_lock_all();
    SMBCCTX *ctx = smb_api.smbc_new_context();
    if (!ctx) {
        lib_unlock();
        return error_set(err, -ENOMEM, "cannot create an SMB context");
    }
    smb_api.smbc_setLogCallback(ctx, NULL, log_fn);
    smb_api.smbc_setDebug(ctx, 0);
    smb_api.smbc_setOptionDebugToStderr(ctx, 1);
    smb_api.smbc_setOptionUserData(ctx, (void *)s);
    smb_api.smbc_setFunctionAuthDataWithContext(ctx, auth_fn);
    smb_api.smbc_setOptionProtocols(ctx, "SMB2_02", "SMB3");
    /* encryption and signing when the server asks for them (it then refuses without) */
    smb_api.smbc_setOptionSmbEncryptionLevel(ctx, SMBC_ENCRYPTLEVEL_DEFAULT);
    smb_api.smbc_setOptionUseKerberos(ctx, 0);
    smb_api.smbc_setOptionFallbackAfterKerberos(ctx, 1);
    smb_api.smbc_setOptionUseCCache(ctx, 0);
    /* with credentials, a failed login must fail, not quietly become a guest session */
    smb_api.smbc_setOptionNoAutoAnonymousLogin(ctx, !s->guest);
    smb_api.smbc_setOptionCaseSensitive(ctx, 0);
    smb_api.smbc_setTimeout(ctx, s->timeout_ms);
    if (s->port)
        smb_api.smbc_setPort(ctx, s->port);
    SMBCCTX *ok = smb_api.smbc_init_context(ctx);
    int e = errno;
    if (!ok)
        smb_api.smbc_free_context(ctx, 0);
    lib_unlock();
    if (!ok)
        return error_set_errno(err, -(e ? e : EIO), "cannot initialise libsmbclient");
    *ret = ctx;
    return 0;
}

/* Frees the context of a conn that failed like a dropped connection and builds a fresh one. */
static int conn_revive(struct smb_conn *c, struct error *err)
{
    if (!c->broken && c->ctx)
        return 0;
    ctx_free(c->ctx);
    c->ctx = NULL;
    c->made_dir[0] = '\0';
    int r = ctx_new(c->smb, &c->ctx, err);
    if (r < 0)
        return r;
    c->broken = false;
    /* the server may still be down: keep what could not be reached for the next revive */
    size_t kept = 0;
    for (size_t i = 0; i < c->n_orphans; i++) {
        char url[URL_MAX];
        if (url_join(c->smb, url, sizeof(url), TMP_DIR, c->orphans[i], NULL) < 0)
            continue;
        int e = lib_unlink(c, url);
        if (e < 0 && is_connection_error(-e))
            memmove(c->orphans[kept++], c->orphans[i], sizeof(c->orphans[0]));
    }
    c->n_orphans = kept;
    return 0;
}

static void conn_destroy(struct smb_conn *c)
{
    if (!c)
        return;
    if (c->n_orphans > 0 && !atomic_load(&c->smb->hung)) {
        /* temporaries an abort could not remove while the server was away: one more try on a
         * fresh connection before this worker goes, so a finished run leaves none behind (not
         * while the server hangs: that would wait a timeout; the next prepare removes them) */
        struct error err;
        c->broken = true;
        if (conn_revive(c, &err) < 0)
            log_debug("%s: %s", c->smb->shown, err.msg);
    }
    ctx_free(c->ctx);
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
    int r = ctx_new(s, &c->ctx, err);
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
    return s->guest ? "guest" : s->username;
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
        if (is_connection_error(-r))
            return error_set_errno(err, r, "%s: connection to SMB server '%s' lost", what, s->host);
        return error_set_errno(err, r, "%s on %s", what, s->shown);
    }
}

/* Reaches the server, logs in and opens the share; the error says which of those failed. */
static int connect_check(struct smb_conn *c, struct error *err)
{
    const struct smb *s = c->smb;
    char url[URL_MAX];
    struct stat st;
    int n = snprintf(url, sizeof(url), "smb://%s/", s->host);
    if (n < 0 || (size_t)n >= sizeof(url) || url_append(url, sizeof(url), s->share, false) < 0)
        return error_set(err, -ENAMETOOLONG, "SMB share name too long");
    int r = lib_stat(c, url, &st);
    if (r == 0)
        return 0;
    if (r == -ENOENT)
        return error_set(err, -ENOENT, "SMB share '%s' does not exist on '%s'", s->share, s->host);
    if (r == -EACCES || r == -EPERM) {
        /* Denied before the share (login failed), or by the share? Ask for one that no server
         * has: after a good login the answer is "no such share". */
        snprintf(url, sizeof(url), "smb://%s/" NO_SUCH_SHARE, s->host);
        if (lib_stat(c, url, &st) == -ENOENT)
            return error_set(err, -EACCES, "SMB share '%s' on '%s': access denied for %s", s->share,
                             s->host, who(s));
        if (s->guest)
            return error_set(err, -EACCES,
                             "SMB server '%s' refused a guest login: set unraid.username and "
                             "UNRAID_PASSWORD",
                             s->host);
        return error_set(err, -EACCES,
                         "SMB authentication failed for user '%s' on '%s' (wrong user name or "
                         "password?)",
                         s->username, s->host);
    }
    if (r == -EINVAL || r == -EHOSTUNREACH || r == -ENETUNREACH)
        return error_set_errno(err, -EHOSTUNREACH,
                               "SMB server '%s' is unreachable (does the "
                               "name resolve?)",
                               s->host);
    if (is_connection_error(-r))
        return error_set_errno(err, r, "SMB server '%s' port %u is unreachable", s->host,
                               s->port ? s->port : 445);
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
        r = lib_mkdir(c, url);
        if (r == 0 || r == -EEXIST)
            continue;
        /* some servers deny mkdir of a folder that exists; it is fine if it is there */
        struct stat st;
        if (lib_stat(c, url, &st) == 0 && S_ISDIR(st.st_mode))
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
    int n = snprintf(url, sizeof(url), "smb://%s/", s->host);
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
        int r = lib_mkdir(c, url);
        struct stat st;
        if (r == 0 || r == -EEXIST || (lib_stat(c, url, &st) == 0 && S_ISDIR(st.st_mode)))
            continue;
        char what[1200];
        snprintf(what, sizeof(what), "cannot create folder '%s'", part);
        return share_error(s, err, r, what);
    }
    return 0;
}

/* ---- MD5 of a file on the share ---- */

static int md5_url(struct smb_conn *c, const char *url, uint64_t *ret_size, char ret_hex[33],
                   struct error *err)
{
    SMBCFILE *fh = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint64_t total = 0;
    int r;
    if (!md)
        return error_set(err, -ENOMEM, "out of memory");
    if (EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
        r = error_set(err, -EIO, "MD5 is not available");
        goto out;
    }
    r = lib_open(c, url, O_RDONLY, &fh);
    if (r < 0) {
        fh = NULL;
        error_set_errno(err, r, "cannot open it");
        goto out;
    }
    for (;;) {
        size_t n = 0;
        r = lib_read(c, fh, c->buf, VERIFY_BUF, &n);
        if (r < 0) {
            error_set_errno(err, r, "cannot read it");
            goto out;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(md, c->buf, n) != 1) {
            r = error_set(err, -EIO, "MD5 failed");
            goto out;
        }
        total += n;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != 16) {
        r = error_set(err, -EIO, "MD5 failed");
        goto out;
    }
    hasher_hex(digest, 16, ret_hex);
    *ret_size = total;
out:
    if (fh)
        (void)lib_close(c, fh);
    EVP_MD_CTX_free(md);
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
    explicit_bzero(s->password, sizeof(s->password));
    free(s);
}

static int smb_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                    char *label, size_t label_size, struct error *err)
{
    int lr = smb_api_load(err);
    if (lr < 0)
        return lr;
    struct smb *s = calloc(1, sizeof(*s));
    if (!s)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->place_lock, NULL);
    s->timeout_ms = cfg->unraid.timeout * 1000;
    int r = 0;
    const char *host = cfg->unraid.host ? cfg->unraid.host : "";
    const char *share = cfg->unraid.share ? cfg->unraid.share : "";
    const char *path = cfg->unraid.path ? cfg->unraid.path : "";
    const char *user = cfg->unraid.username ? cfg->unraid.username : "";
    const char *pass = cfg->unraid.password ? cfg->unraid.password : "";

    if (parse_host(host, s->host, sizeof(s->host), &s->port) < 0) {
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
    if (sep && (size_t)(sep - user) < sizeof(s->workgroup)) {
        snprintf(s->workgroup, sizeof(s->workgroup), "%.*s", (int)(sep - user), user);
        user = sep + 1;
    }
    if (strlen(user) >= sizeof(s->username) || strlen(pass) >= sizeof(s->password)) {
        r = error_set(err, -EINVAL, "unraid.username or password is too long");
        goto fail;
    }
    snprintf(s->username, sizeof(s->username), "%s", user);
    snprintf(s->password, sizeof(s->password), "%s", pass);
    s->guest = !user[0] && !pass[0];
    if (!user[0] && pass[0]) {
        r = error_set(err, -EINVAL, "unraid: a password is set but no username (UNRAID_USERNAME)");
        goto fail;
    }
    s->organize_by_date = cfg->unraid.organize_by_date;
    if (gethostname(s->hostname, sizeof(s->hostname)) < 0 || !s->hostname[0])
        snprintf(s->hostname, sizeof(s->hostname), "localhost");
    s->hostname[sizeof(s->hostname) - 1] = '\0';
    for (char *p = s->hostname; *p; p++) /* keep the temporary name parseable */
        if (*p == '/' || *p == '.' || *p == '\\' || *p == ':')
            *p = '_';

    int n = snprintf(s->base_url, sizeof(s->base_url), "smb://%s/", s->host);
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
    if (s->port)
        snprintf(port, sizeof(port), ":%u", s->port);
    snprintf(s->shown, sizeof(s->shown), "smb://%s%s/%s%s%s", s->host, port, s->share,
             s->path[0] ? "/" : "", s->path);
    snprintf(id, id_size, "smb://%s%s/%s%s%s", s->host, port, s->share, s->path[0] ? "/" : "",
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

/* Removes temporaries whose writer is gone: this host's by pid, other hosts' after a day. */
static void clean_stale(struct smb_conn *c)
{
    const struct smb *s = c->smb;
    char dir_url[URL_MAX];
    if (url_join(s, dir_url, sizeof(dir_url), TMP_DIR, NULL, NULL) < 0)
        return;
    /* names first (the listing holds the lock), then the removals */
    enum { MAX_STALE = 256 };
    char(*stale)[128] = calloc(MAX_STALE, sizeof(*stale));
    size_t n_stale = 0;
    if (!stale)
        return;
    time_t now = time(NULL);
    bool pl = lib_lock_path();
    SMBCFILE *dir = smb_api.smbc_getFunctionOpendir(c->ctx)(c->ctx, dir_url);
    if (dir) {
        struct smbc_dirent *de;
        while (n_stale < MAX_STALE && (de = smb_api.smbc_getFunctionReaddir(c->ctx)(c->ctx, dir))) {
            const char *name = de->name;
            size_t nl = strlen(name);
            if (de->smbc_type != SMBC_FILE || nl < 6 || nl >= 128 ||
                strcmp(name + nl - 5, ".part") != 0)
                continue;
            char *end = NULL;
            errno = 0;
            long pid = strtol(name, &end, 10);
            const char *host = end && *end == '.' ? strchr(end + 1, '.') : NULL;
            if (!host || errno || pid <= 0)
                continue;
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
                    smb_api.smbc_getFunctionStat(c->ctx)(c->ctx, url, &st) == 0)
                    is_stale = now - st.st_mtime > STALE_FOREIGN_TMP_S;
            }
            if (is_stale)
                memcpy(stale[n_stale++], name, nl + 1);
        }
        smb_api.smbc_getFunctionClosedir(c->ctx)(c->ctx, dir);
    }
    lib_unlock_path(pl);
    for (size_t i = 0; i < n_stale; i++) {
        char url[URL_MAX];
        if (url_join(s, url, sizeof(url), TMP_DIR, stale[i], NULL) == 0 && lib_unlink(c, url) == 0)
            log_debug("%s: removed the temporary '%s' of a run that died", s->shown, stale[i]);
    }
    free(stale);
}

static int smb_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    (void)session;
    struct smb *s = priv;
    int r = main_conn(s, err);
    if (r < 0)
        return r;
    struct smb_conn *c = s->main;
    if (lib_parallel())
        log_debug("%s: libsmbclient thread hooks in place: transfers run in parallel", s->shown);
    else
        log_debug("%s: libsmbclient calls are serialised (no thread hooks: %s)", s->shown,
                  lib_threads_why[0] ? lib_threads_why
                                     : "Samba set up its talloc stack before them");
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
    bool pl = lib_lock_path();
    int r = smb_api.smbc_getFunctionStatVFS(c->ctx)(c->ctx, c->smb->base_url, &sv);
    lib_unlock_path(pl);
    if (r != 0)
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
    SMBCFILE *fh = NULL;
    r = lib_open(c, url, O_WRONLY | O_CREAT | O_TRUNC, &fh);
    if (r < 0)
        return share_error(s, err, r, "cannot create a probe file");
    size_t n = 0;
    r = lib_write(c, fh, "snapsync", 8, &n);
    int rc = lib_close(c, fh);
    if (r == 0 && n != 8)
        r = -EIO;
    if (r == 0)
        r = rc;
    int ru = lib_unlink(c, url);
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

static int smb_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct smb_conn *c = conn;
    struct smb *s = c->smb;
    size_t name_len = strlen(item->name);
    if (name_len == 0 || name_len > NAME_MAX_BYTES || strchr(item->name, '/') ||
        strcmp(item->name, ".") == 0 || strcmp(item->name, "..") == 0)
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
    int r = map_name(item->name, f->name, sizeof(f->name));
    if (r < 0) {
        r = error_set(err, -ENAMETOOLONG,
                      "name too long for an SMB share once the characters Windows forbids are "
                      "mapped (more than %d bytes)",
                      NAME_MAX_BYTES);
        goto fail;
    }
    snprintf(f->date_path, sizeof(f->date_path), "%s", s->organize_by_date ? item->date_path : "");
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
    r = lib_open(c, f->tmp_url, O_WRONLY | O_CREAT | O_EXCL, &f->fh);
    if (r == -ENOENT) { /* the temporary folder went away (a clean-up on the server) */
        struct error ignored;
        if (mkdir_p(c, TMP_DIR, &ignored) == 0)
            r = lib_open(c, f->tmp_url, O_WRONLY | O_CREAT | O_EXCL, &f->fh);
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
        int r = lib_write(f->conn, f->fh, p, len, &n);
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
    if (atomic_load(&c->smb->hung))
        c->broken = true;
    if (f->fh && !atomic_load(&c->smb->hung))
        (void)lib_close(c, f->fh);
    int r = unlink_tmp && !c->broken ? lib_unlink(c, f->tmp_url) : 0;
    /* with the connection gone: after reconnecting (conn_revive), else by the next prepare */
    if (unlink_tmp && c->broken && r != -ENOENT &&
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

/* Is the file at url the same content as the copy (size, then MD5)? */
static int same_content(struct smb_file *f, const char *url, const struct hasher_digest *digest,
                        const struct stat *st, bool *ret_same, struct error *err)
{
    if (!S_ISREG(st->st_mode) || (uint64_t)st->st_size != f->written) {
        *ret_same = false;
        return 0;
    }
    char hex[33];
    uint64_t size = 0;
    int r = md5_url(f->conn, url, &size, hex, err);
    if (r < 0)
        return r;
    *ret_same = size == f->written && strcmp(hex, digest->md5_hex) == 0;
    return 0;
}

/* Moves the temporary to a free name in dir (a date path or ""), never replacing a file. The
 * name it got goes into name (NAME_MAX_BYTES + 1 bytes). */
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
                          f->date_path);
            break;
        }
        dest_candidate_name(f->name, k, name, NAME_MAX_BYTES + 1);
        if (url_join(s, url, sizeof(url), f->date_path, name, NULL) < 0) {
            r = error_set(err, -ENAMETOOLONG, "path too long");
            break;
        }
        struct stat st;
        r = lib_stat(c, url, &st);
        if (r == -ENOENT) {
            r = lib_rename(c, f->tmp_url, url);
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
            (void)lib_unlink(c, f->tmp_url);
            ret->existed = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->place_lock);
    if (r == 0)
        snprintf(ret->remote, sizeof(ret->remote), "%s/%s%s%s", s->shown, f->date_path,
                 f->date_path[0] ? "/" : "", name);
    return r;
}

/* Is the file at url exactly the len bytes of want? */
static int same_bytes(struct smb_conn *c, const char *url, const uint8_t *want, size_t len,
                      bool *ret_same, struct error *err)
{
    SMBCFILE *fh = NULL;
    int r = lib_open(c, url, O_RDONLY, &fh);
    if (r < 0)
        return share_error(c->smb, err, r, "cannot open it again");
    bool same = true;
    size_t off = 0;
    for (;;) {
        size_t n = 0;
        r = lib_read(c, fh, c->buf, VERIFY_BUF, &n);
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
    (void)lib_close(c, fh);
    if (r == 0)
        *ret_same = same && off == len;
    return r;
}

/* Copies the sidecar rel of the card next to the copy, named after final_name (as stored, see
 * sidecar.h), through a temporary given the sidecar's time, read back and compared when verify,
 * then moved if the name is free. A file that has the name already is left as it is (never
 * overwritten: it may be the user's edited XMP), and that is not an error. */
static int put_sidecar(struct smb_file *f, const char *rel, const char *final_name, bool verify,
                       struct error *err)
{
    struct smb_conn *c = f->conn;
    struct smb *s = c->smb;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t mtime_ns = 0;
    char name[NAME_MAX_BYTES + 1], tmp_name[128], tmp_url[URL_MAX], url[URL_MAX];
    SMBCFILE *fh = NULL;
    bool tmp_made = false;
    snprintf(tmp_name, sizeof(tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), s->hostname);
    if (sidecar_dest_name(rel, f->card_rel, final_name, name, sizeof(name)) < 0 ||
        url_join(s, url, sizeof(url), f->date_path, name, NULL) < 0 ||
        url_join(s, tmp_url, sizeof(tmp_url), TMP_DIR, tmp_name, NULL) < 0)
        return error_set(err, -ENAMETOOLONG, "the name for the sidecar '%s' is too long", rel);
    int r = sidecar_read(f->card_dir_fd, rel, &buf, &len, &mtime_ns, err);
    if (r < 0)
        return r;
    r = lib_open(c, tmp_url, O_WRONLY | O_CREAT | O_EXCL, &fh);
    if (r < 0) {
        fh = NULL;
        r = share_error(s, err, r, "cannot create a temporary file for a sidecar");
        goto out;
    }
    tmp_made = true;
    for (size_t off = 0; off < len;) {
        size_t n = 0;
        r = lib_write(c, fh, buf + off, len - off, &n);
        if (r == 0 && n == 0)
            r = -EIO;
        if (r < 0) {
            r = share_error(s, err, r, "cannot write a sidecar");
            goto out;
        }
        off += n;
    }
    r = lib_close(c, fh);
    fh = NULL;
    if (r == 0)
        r = lib_utimes(c, tmp_url, mtime_ns);
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
            r = error_set(err, -EIO, "verification failed: the copy of the sidecar '%s' on %s "
                                     "differs from the card",
                          rel, s->shown);
            goto out;
        }
    }
    pthread_mutex_lock(&s->place_lock);
    struct stat st;
    r = lib_stat(c, url, &st);
    if (r == -ENOENT) {
        r = lib_rename(c, tmp_url, url);
        if (r == 0)
            tmp_made = false;
        else
            share_error(s, err, r, "cannot move a sidecar into place");
    } else if (r < 0) {
        share_error(s, err, r, "cannot look at the destination folder");
    } /* else kept as it is; the temporary goes */
    pthread_mutex_unlock(&s->place_lock);
out:
    if (fh)
        (void)lib_close(c, fh);
    if (tmp_made && !atomic_load(&s->hung))
        (void)lib_unlink(c, tmp_url);
    free(buf);
    return r;
}

static int smb_finish(void *file, const struct hasher_digest *digest, bool verify,
                      struct dest_result *ret, struct error *err)
{
    struct smb_file *f = file;
    struct smb_conn *c = f->conn;
    struct smb *s = c->smb;
    int r = lib_close(c, f->fh);
    f->fh = NULL;
    if (r < 0) {
        r = share_error(s, err, r, "cannot close the copy");
        goto fail;
    }
    /* after the close, which would otherwise stamp its own time */
    r = lib_utimes(c, f->tmp_url, f->mtime_ns);
    if (r < 0) {
        r = share_error(s, err, r, "cannot set the modification time of the copy");
        goto fail;
    }
    if (verify) {
        char hex[33];
        uint64_t size = 0;
        r = md5_url(c, f->tmp_url, &size, hex, err);
        if (r < 0) {
            error_prefix(err, "cannot read the copy back from %s to verify it", s->shown);
            goto fail;
        }
        if (size != f->written || strcmp(hex, digest->md5_hex) != 0) {
            r = error_set(err, -EIO,
                          "verification failed: the copy on %s differs from the card (MD5 %s, "
                          "%llu bytes; expected %s, %llu bytes)",
                          s->shown, hex, (unsigned long long)size, digest->md5_hex,
                          (unsigned long long)f->written);
            goto fail;
        }
    }
    if (f->date_path[0] && strcmp(c->made_dir, f->date_path) != 0) {
        r = mkdir_p(c, f->date_path, err);
        if (r < 0)
            goto fail;
        snprintf(c->made_dir, sizeof(c->made_dir), "%s", f->date_path);
    }
    char name[NAME_MAX_BYTES + 1];
    r = place(f, digest, ret, name, err);
    if (r < 0)
        goto fail;
    /* The copy is in place: a sidecar that fails now fails the copy, which is retried and then
     * finds the copy the same and tries the sidecars again. */
    struct sidecar_set sidecars;
    sidecar_find(f->card_dir_fd, f->card_rel, false, &sidecars);
    for (size_t i = 0; i < sidecars.n; i++) {
        r = put_sidecar(f, sidecars.rel[i], name, verify, err);
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

/* The session ends while a call waits for a server that hangs: cut our connections to it. */
static void smb_interrupt(void *priv)
{
    struct smb *s = priv;
    atomic_store(&s->hung, true);
    cut_connections(s, "the session ends without the share");
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
};
