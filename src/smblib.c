/* SPDX-License-Identifier: MIT */
/*
 * libsmbclient at run time (smblib.h): loading, Samba's thread hooks, the locks around every
 * call, contexts, and the cutting of a hung server's connections.
 *
 * libsmbclient keeps process-wide state: a talloc stack every call uses, debug and loadparm
 * globals, a name cache. Debian's build does not export smbc_thread_posix(), so right after
 * loading the library we hand pthread-based thread hooks to libsamba-util's
 * smb_thread_set_functions() (which is all smbc_thread_posix() does); they make the talloc stack
 * per thread. A read-write lock, `lib_lock`, and a mutex, `path_lock`, keep the rest safe:
 * creating and freeing contexts holds lib_lock exclusively; every call that takes a path (it may
 * connect or reconnect: name resolution, credentials, loadparm) holds it shared plus path_lock,
 * so such calls take turns among themselves; reads, writes and closes of open files hold it
 * shared, so they run in parallel with each other and with path calls (the read-back of one file
 * overlaps the writes of the next, and opening or renaming one file never stops another's
 * transfer; see "calls into libsmbclient" below). The hooks' layout is Samba's private one, so
 * they are installed only on a libsmbclient whose smbc_version() is of the series that layout was
 * checked against (smblib_hooks_version_known). Without the hooks (another version, a library
 * lacking smb_thread_set_functions, or one whose talloc stack was set up before them) every call
 * holds lib_lock exclusively.
 *
 * A call that times out means the server hangs (frozen, smbd stopped): every other connection to
 * it would wait out its own timeout, one call after another, so all of this process's TCP
 * connections to that server are shut down at once (cut_connections) and whatever waits on them
 * fails now.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <libsmbclient.h>

#include "log.h"
#include "smblib.h"

struct smblib_ctx {
    struct smblib_server *srv;
    SMBCCTX *ctx;
    bool broken; /* failed like a dropped connection: to be rebuilt */
};

/*
 * libsmbclient is loaded (dlopen) only when an SMB destination is configured: linked directly,
 * its dependencies (Samba, Kerberos, LDAP, GnuTLS) add about 14 MiB to the memory of every run,
 * SMB or not. Each function is taken by name with the type the header declares.
 */
/* clang-format off */
#define SMB_API(X)                           \
    X(smbc_free_context)                     \
    X(smbc_getFunctionClose)                 \
    X(smbc_getFunctionClosedir)              \
    X(smbc_getFunctionMkdir)                 \
    X(smbc_getFunctionOpen)                  \
    X(smbc_getFunctionOpendir)               \
    X(smbc_getFunctionRead)                  \
    X(smbc_getFunctionReaddir)               \
    X(smbc_getFunctionRename)                \
    X(smbc_getFunctionStat)                  \
    X(smbc_getFunctionStatVFS)               \
    X(smbc_getFunctionUnlink)                \
    X(smbc_getFunctionUtimes)                \
    X(smbc_getFunctionWrite)                 \
    X(smbc_getOptionUserData)                \
    X(smbc_init_context)                     \
    X(smbc_new_context)                      \
    X(smbc_setDebug)                         \
    X(smbc_setFunctionAuthDataWithContext)   \
    X(smbc_setLogCallback)                   \
    X(smbc_setOptionCaseSensitive)           \
    X(smbc_setOptionDebugToStderr)           \
    X(smbc_setOptionFallbackAfterKerberos)   \
    X(smbc_setOptionNoAutoAnonymousLogin)    \
    X(smbc_setOptionProtocols)               \
    X(smbc_setOptionSmbEncryptionLevel)      \
    X(smbc_setOptionUseCCache)               \
    X(smbc_setOptionUseKerberos)             \
    X(smbc_setOptionUserData)                \
    X(smbc_setPort)                          \
    X(smbc_setTimeout)                       \
    X(smbc_version)
/* clang-format on */

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
    if (!smb_api_error[0] && !(*(void **)&smb_api.name = dlsym(h, #name)))                         \
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
    if (!smblib_hooks_version_known(version))
        snprintf(lib_threads_why, sizeof(lib_threads_why),
                 "libsmbclient %.40s is not of the series %s whose thread-hook layout is known",
                 version ? version : "(unknown)", SMBLIB_HOOKS_KNOWN_SERIES);
    else if (!set_functions)
        snprintf(lib_threads_why, sizeof(lib_threads_why),
                 "libsmbclient lacks smb_thread_set_functions");
    else if (set_functions(&smb_thread_hooks) != 0)
        snprintf(lib_threads_why, sizeof(lib_threads_why), "Samba refused the thread hooks");
    else
        lib_threads = true;
}

bool smblib_hooks_version_known(const char *version)
{
    static const char prefix[] = SMBLIB_HOOKS_KNOWN_SERIES ".";
    if (!version || strncmp(version, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *p = version + sizeof(prefix) - 1;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '\0' || *p == '-' || *p == '+' || *p == '~' || *p == '.' || *p == ' ';
}

int smblib_load(struct error *err)
{
    pthread_once(&smb_api_once, smb_api_load_once);
    if (smb_api_error[0])
        return error_set(err, -ENOENT, "%s", smb_api_error);
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

bool smblib_parallel(const char **ret_why)
{
    bool parallel = lib_parallel();
    if (!parallel && ret_why)
        *ret_why =
            lib_threads_why[0] ? lib_threads_why : "Samba set up its talloc stack before them";
    return parallel;
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

bool smblib_is_connection_error(int e)
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
        if (a->ss_family == AF_INET && memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                                              &((const struct sockaddr_in *)ai->ai_addr)->sin_addr,
                                              sizeof(struct in_addr)) == 0)
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
static void cut_connections(const struct smblib_server *s, const char *why)
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
    log_debug("smb://%s: %s: %u connection(s) to the server shut down", s->host, why, cut);
}

/* Turns the errno a call left into our return, marking the context broken when it failed the way
 * a dropped connection does, and cutting every connection to a server that hangs. */
static int lib_result(struct smblib_ctx *c, int ok, int saved_errno)
{
    if (ok) {
        if (atomic_load_explicit(&c->srv->hung, memory_order_relaxed))
            atomic_store(&c->srv->hung, false);
        return 0;
    }
    int e = saved_errno ? saved_errno : EIO;
    if (smblib_is_connection_error(e))
        c->broken = true;
    /* libsmbclient gives up a call whose answer did not come in time with ETIMEDOUT, or drops the
     * connection and says ECONNABORTED */
    if ((e == ETIMEDOUT || e == ECONNABORTED) && !atomic_exchange(&c->srv->hung, true))
        cut_connections(c->srv, "a call timed out");
    return -e;
}

int smblib_stat(struct smblib_ctx *c, const char *url, struct stat *st)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionStat(c->ctx)(c->ctx, url, st);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

int smblib_mkdir(struct smblib_ctx *c, const char *url)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionMkdir(c->ctx)(c->ctx, url, 0755);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

int smblib_unlink(struct smblib_ctx *c, const char *url)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionUnlink(c->ctx)(c->ctx, url);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

int smblib_rename(struct smblib_ctx *c, const char *from, const char *to)
{
    bool pl = lib_lock_path();
    errno = 0;
    int r = smb_api.smbc_getFunctionRename(c->ctx)(c->ctx, from, c->ctx, to);
    int e = errno;
    lib_unlock_path(pl);
    return lib_result(c, r == 0, e);
}

int smblib_utimes(struct smblib_ctx *c, const char *url, int64_t mtime_ns)
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

int smblib_open(struct smblib_ctx *c, const char *url, int flags, struct smblib_file **ret)
{
    bool pl = lib_lock_path();
    errno = 0;
    SMBCFILE *fh = smb_api.smbc_getFunctionOpen(c->ctx)(c->ctx, url, flags, 0644);
    int e = errno;
    lib_unlock_path(pl);
    if (fh)
        *ret = (struct smblib_file *)fh;
    return lib_result(c, fh != NULL, e);
}

int smblib_close(struct smblib_ctx *c, struct smblib_file *fh)
{
    lib_lock_transfer();
    errno = 0;
    int r = smb_api.smbc_getFunctionClose(c->ctx)(c->ctx, (SMBCFILE *)fh);
    int e = errno;
    lib_unlock();
    return lib_result(c, r == 0, e);
}

int smblib_write(struct smblib_ctx *c, struct smblib_file *fh, const void *buf, size_t len,
                 size_t *ret)
{
    lib_lock_transfer();
    errno = 0;
    ssize_t n = smb_api.smbc_getFunctionWrite(c->ctx)(c->ctx, (SMBCFILE *)fh, buf, len);
    int e = errno;
    lib_unlock();
    if (n >= 0)
        *ret = (size_t)n;
    return lib_result(c, n >= 0, e);
}

int smblib_read(struct smblib_ctx *c, struct smblib_file *fh, void *buf, size_t len, size_t *ret)
{
    lib_lock_transfer();
    errno = 0;
    ssize_t n = smb_api.smbc_getFunctionRead(c->ctx)(c->ctx, (SMBCFILE *)fh, buf, len);
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
    const struct smblib_server *s = smb_api.smbc_getOptionUserData(ctx);
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

static int ctx_new(const struct smblib_server *s, SMBCCTX **ret, struct error *err)
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

int smblib_ctx_new(struct smblib_server *srv, struct smblib_ctx **ret, struct error *err)
{
    struct smblib_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->srv = srv;
    int r = ctx_new(srv, &c->ctx, err);
    if (r < 0) {
        free(c);
        return r;
    }
    *ret = c;
    return 0;
}

void smblib_ctx_free(struct smblib_ctx *c)
{
    if (!c)
        return;
    ctx_free(c->ctx);
    free(c);
}

bool smblib_ctx_broken(const struct smblib_ctx *c)
{
    return !c || c->broken;
}

void smblib_ctx_set_broken(struct smblib_ctx *c)
{
    if (c)
        c->broken = true;
}

bool smblib_hung(const struct smblib_server *srv)
{
    return atomic_load(&srv->hung);
}

void smblib_interrupt(struct smblib_server *srv, const char *why)
{
    atomic_store(&srv->hung, true);
    cut_connections(srv, why);
}

int smblib_statvfs(struct smblib_ctx *c, const char *url, struct statvfs *ret)
{
    bool pl = lib_lock_path();
    /* the prototype lacks const; libsmbclient only reads the URL */
    int r = smb_api.smbc_getFunctionStatVFS(c->ctx)(c->ctx, (char *)url, ret);
    lib_unlock_path(pl);
    return r == 0 ? 0 : -EIO;
}

void smblib_list(struct smblib_ctx *c, const char *dir_url,
                 bool (*fn)(void *arg, struct smblib_ctx *c, const char *name), void *arg)
{
    bool pl = lib_lock_path();
    SMBCFILE *dir = smb_api.smbc_getFunctionOpendir(c->ctx)(c->ctx, dir_url);
    if (dir) {
        struct smbc_dirent *de;
        while ((de = smb_api.smbc_getFunctionReaddir(c->ctx)(c->ctx, dir)))
            if (de->smbc_type == SMBC_FILE && !fn(arg, c, de->name))
                break;
        smb_api.smbc_getFunctionClosedir(c->ctx)(c->ctx, dir);
    }
    lib_unlock_path(pl);
}

int smblib_list_entries(struct smblib_ctx *c, const char *dir_url,
                        bool (*fn)(void *arg, const char *name, bool is_dir), void *arg)
{
    bool pl = lib_lock_path();
    errno = 0;
    SMBCFILE *dir = smb_api.smbc_getFunctionOpendir(c->ctx)(c->ctx, dir_url);
    int e = errno;
    if (dir) {
        struct smbc_dirent *de;
        while ((de = smb_api.smbc_getFunctionReaddir(c->ctx)(c->ctx, dir))) {
            bool is_dir = de->smbc_type == SMBC_DIR;
            if ((de->smbc_type != SMBC_FILE && !is_dir) || strcmp(de->name, ".") == 0 ||
                strcmp(de->name, "..") == 0)
                continue;
            if (!fn(arg, de->name, is_dir))
                break;
        }
        smb_api.smbc_getFunctionClosedir(c->ctx)(c->ctx, dir);
    }
    lib_unlock_path(pl);
    return dir ? 0 : lib_result(c, 0, e);
}

int smblib_list_stat(struct smblib_ctx *c, const char *url, struct stat *st)
{
    return smb_api.smbc_getFunctionStat(c->ctx)(c->ctx, url, st) == 0 ? 0 : -EIO;
}
