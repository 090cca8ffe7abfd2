/* SPDX-License-Identifier: MIT */
/*
 * Any rclone remote as a destination (`rclone.enabled`): Google Drive, OneDrive, Dropbox, B2,
 * SFTP, WebDAV ... through Debian's rclone binary rather than a client of our own. Each file
 * becomes <remote>/<folder>/<name> (the folder and name from the patterns, dest.c).
 *
 * One long-lived `rclone rcd` per destination (per SnapSync process: started at the first call,
 * normally prepare, stopped at done), driven through its remote-control HTTP API on loopback
 * with libcurl (http.c): no process per file, and rclone keeps its connections to the service
 * between files. open() offers the file on a feed (feed.h: SnapSync's own HTTP server on
 * 127.0.0.1, a random path per file) and starts an operations/copyfile from
 * `:http,url='http://127.0.0.1:<port>/':<path>` to
 * <remote>/.snapsync-tmp/<host>-<pid>-<run>-<n>.part; write() hands each chunk of SnapSync's single
 * read of the card to rclone's GET of it. So the card is read once, memory is the chunk being sent,
 * and rclone knows the size before the first byte (HEAD): its backends send the file as they would
 * a local one (S3 one PUT below its upload cutoff; OneDrive and WebDAV, which have no streaming
 * upload, without spooling it to a temporary file; operations/uploadfile gave rclone a stream of
 * unknown length). No parallel ranged reads (MultiThreadStreams 0): the feed is read once, from its
 * start; and a read-ahead of 1 MiB (BufferSize, 16 MiB per transfer by default): the stream is in
 * memory already (measured: the rcd's peak RSS 95 -> 59 MiB, no slower). finish() takes rclone's
 * answer (which it sends once the copy is complete), asks operations/stat with md5 and sha1 hashes
 * for the temporary's size and hashes and compares them with the engine's digest (MD5 where the
 * backend has it, else SHA-1, else the size alone: the backend keeps no hash we compute), then
 * looks at the candidate final names (name, name_1, ... as dest_candidate_name) with
 * operations/stat: a free one gets the temporary by a server-side operations/movefile with
 * `_config: {"IgnoreExisting": true}` (which leaves a file that appeared there meanwhile, and the
 * temporary with it: the temporary still there afterwards means the next name; movefile alone
 * replaces), one holding the same content counts as existed (the temporary is deleted), other
 * content means the next name.
 *
 * The rcd listens on 127.0.0.1, a port the kernel picks (read from its "Serving remote control
 * on" notice; rclone 1.60 has no unix socket for it), with a user and password drawn at random
 * when it starts and given to it in its environment (RCLONE_RC_USER, RCLONE_RC_PASS), never on
 * its command line; `--rc-serve` lets read_copy GET a copy back in ranges. The child gets
 * nothing of ours: stdin and stdout /dev/null, stderr an anonymous memory file (its last lines,
 * rclone's time stamps cut, explain a start or an end that went wrong), no other descriptor, the
 * default signal mask and dispositions, PR_SET_PDEATHSIG SIGKILL (it dies with the thread that
 * forked it, a thread of ours that lives exactly as long as the rcd: so with SnapSync, even when
 * SnapSync is killed), and an environment of PATH, HOME,
 * TMPDIR, TZ, XDG_* and RCLONE_* (but RCLONE_RC_* other than ours) only.
 *
 * Every call checks the rcd first: one that exited is reaped and a new one started (a call in
 * flight when it died fails, saying how it ended). interrupt() kills it: calls in flight fail at
 * once. Errors are rclone's own words from the API's {"error": ...}; a 404 (nothing there) is
 * -ENOENT. Deadlines: control calls have ten times `timeout` (at least two minutes) in all; an
 * upload or read that moves no byte for ten times `timeout` (at least ten minutes) is given up;
 * rclone's own --timeout/--contimeout bound a stalled transfer to the service.
 *
 * prepare() makes the temporary folder (which proves the remote is reachable and the
 * credentials work) and deletes temporaries of this host whose process is gone, and anyone's
 * older than a day.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "dest.h"
#include "feed.h"
#include "http.h"

extern char **environ;

#define TMP_DIR ".snapsync-tmp"
#define ARGS_MAX 64
#define ENV_MAX 64
#define STDERR_SHOW 480            /* bytes of rclone's stderr an error quotes */
#define JSON_MAX (4 * 1024 * 1024) /* bytes of an rc answer read */
#define CANDIDATES_MAX 1000
#define STALE_AGE (24 * 3600)
#define STALE_MAX 1000   /* temporaries deleted by one prepare */
#define RCD_START_S 30   /* seconds the rcd may take to listen */
#define RCD_STOP_MS 3000 /* after SIGTERM at done, before SIGKILL */
#define CONNECT_S 10     /* to the rcd on loopback */
#define URL_MAX (3 * DEST_REMOTE_MAX + 128)
#define MOVING_MAX 64 /* final names being moved into at once by this process */

/* Where the rcd is: a copy taken under the lock for one call. */
struct rcd_endpoint {
    char base[48];  /* "http://127.0.0.1:<port>" */
    char auth[128]; /* "Authorization: Basic ..." */
    pid_t pid;
};

struct rclone {
    char program[PATH_MAX];
    char root[DEST_REMOTE_MAX]; /* "gdrive:Photos", no trailing '/' unless it ends in ':' */
    char config[PATH_MAX];      /* "" rclone's default */
    char host[64];              /* this machine, for temporary names */
    char run[9];                /* hex, random per process: a pid reused after a restart */
    char timeout_arg[32];       /* "60s" */
    const char *const *extra;   /* the config's, which outlives us */
    size_t n_extra;
    int timeout_s;
    atomic_uint counter;
    struct http *main;    /* prepare, probe, read_copy: the main thread */
    pthread_mutex_t lock; /* the rcd: */
    pid_t pid;            /* -1 none; not reaped while set, so the pid cannot be reused */
    int pidfd, errf;      /* its pidfd, its stderr (a memory file) */
    pthread_t holder;     /* the thread that started it, alive while it runs (holder_main) */
    struct rcd_endpoint ep;
    char env_user[64], env_pass[64]; /* "RCLONE_RC_USER=..." for its environment */
    pid_t gone_pid;                  /* the last rcd reaped, and how it ended */
    char gone[STDERR_SHOW + 64];
    /* final names (their hash) a finish of ours is looking at and moving into: rclone looks
     * at the destination and then moves, and two of our moves to one name at the same time
     * would both find it free (a rename replaces) */
    pthread_cond_t moved;
    uint64_t moving[MOVING_MAX]; /* under lock, 0 free */
    struct feed_server *feeds;   /* under lock: where rclone reads the files from, NULL none yet */
    char source_fs[64];          /* ":http,url='http://127.0.0.1:<port>/':" */
};

struct rclone_conn {
    struct rclone *rc;
    struct http *ctl; /* stat, move, delete */
    struct http *up;  /* the upload of the open file */
};

struct rclone_file {
    struct rclone *rc;
    struct rclone_conn *conn;
    struct rcd_endpoint ep;       /* the rcd the upload goes to */
    char final0[DEST_REMOTE_MAX]; /* the first candidate final name */
    char name[DEST_NAME_MAX + 1];
    char dir[PATTERN_OUT_MAX]; /* below the root, from the folder pattern; "" none */
    char tmp[DEST_REMOTE_MAX];
    struct feed *feed;   /* where rclone reads the file from */
    char *request;       /* the operations/copyfile call, sent from open() to finish() */
    uint64_t size, sent; /* bytes handed to write() */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Seconds a control call (stat, move, delete) may take: a server-side move of a large file
 * may be a copy on backends without moves. */
static int control_deadline(const struct rclone *rc)
{
    return rc->timeout_s * 10 < 120 ? 120 : rc->timeout_s * 10;
}

/* Seconds an upload or read may move no byte before it is given up: long, since a backend
 * uploads a chunk it has read before it reads on (B2's are 96 MiB: minutes on a slow uplink); a
 * stalled network is rclone's own --timeout to notice, which fails the call. */
static int stall_limit(const struct rclone *rc)
{
    return rc->timeout_s * 10 < 600 ? 600 : rc->timeout_s * 10;
}

/* ---- the rcd process ---- */

/* The environment rclone gets: no secrets of ours, no RCLONE_RC_* but the two of rc. Pointers
 * into environ and rc. */
static void child_env(struct rclone *rc, char **envp, size_t max)
{
    static char path[] = "PATH=/usr/local/bin:/usr/bin:/bin";
    static const char *const keep[] = {"HOME=", "TMPDIR=", "XDG_", "RCLONE_", "TZ="};
    size_t n = 0;
    envp[n++] = path;
    envp[n++] = rc->env_user;
    envp[n++] = rc->env_pass;
    for (char **e = environ; e && *e && n + 1 < max; e++) {
        if (strncmp(*e, "RCLONE_RC_", 10) == 0)
            continue;
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
            if (strncmp(*e, keep[i], strlen(keep[i])) == 0) {
                envp[n++] = *e;
                break;
            }
    }
    envp[n] = NULL;
}

/* What rclone said on stderr (fd): its last lines, time stamps cut, joined by "; ". */
static void stderr_text(int fd, char *out, size_t size)
{
    char buf[4096];
    out[0] = '\0';
    off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    if (end <= 0)
        return;
    off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    if (n <= 0)
        return;
    buf[n] = '\0';
    size_t len = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* "2026/12/04 14:14:23 ERROR : ..." */
        if (strlen(line) > 20 && line[4] == '/' && line[7] == '/' && line[10] == ' ' &&
            line[13] == ':')
            line += 20;
        for (char *c = line; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = ' ';
        if (!*line || strstr(line, "Serving remote control on"))
            continue;
        int k = snprintf(out + len, size - len, "%s%s", len ? "; " : "", line);
        if (k < 0 || (size_t)k >= size - len) {
            /* keep the newest: start again from this line */
            snprintf(out, size, "%s", line);
            len = strlen(out);
            continue;
        }
        len += (size_t)k;
    }
}

/* Reaps the rcd (lock held; it has exited or was killed) and remembers how it ended. */
static void rcd_reap(struct rclone *rc)
{
    int status = 0;
    while (waitpid(rc->pid, &status, 0) < 0 && errno == EINTR)
        ;
    char how[48], text[STDERR_SHOW];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof(how), "was killed by signal %d",
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    stderr_text(rc->errf, text, sizeof(text));
    snprintf(rc->gone, sizeof(rc->gone), "%s%s%s", how, text[0] ? ": " : "", text);
    rc->gone_pid = rc->pid;
    rc->pid = -1;
    pthread_join(rc->holder, NULL); /* it ends with the rcd */
    close_fd(&rc->pidfd);
    close_fd(&rc->errf);
    explicit_bzero(&rc->ep, sizeof(rc->ep));
}

/* In the child between fork and exec: async-signal-safe calls only (the parent has threads). */
static void child_exec(const char *program, char *const *argv, char *const *envp, int devnull,
                       int errf, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* the parent died before prctl */
        _exit(127);
    if (dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
        dup2(errf, STDERR_FILENO) < 0)
        _exit(127);
    close_range(STDERR_FILENO + 1, ~0U, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &sa, NULL); /* SIGKILL, SIGSTOP and glibc's own refuse: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(program, argv, envp);
    _exit(127);
}

/* What the thread that starts the rcd gets, and gives back. */
struct spawn {
    const char *program;
    char *const *argv, *const *envp;
    int devnull, errf;
    pid_t parent;
    pthread_mutex_t m;
    pthread_cond_t c;
    bool ready; /* under m: */
    pid_t pid;
    int err; /* fork's errno */
};

/* Forks the rcd and lives until it exits: PR_SET_PDEATHSIG fires when the thread that forked
 * ends, and the threads calling us (the engine's workers) may end before SnapSync does. */
static void *holder_main(void *arg)
{
    struct spawn *sp = arg;
    pid_t pid = fork();
    if (pid == 0)
        child_exec(sp->program, sp->argv, sp->envp, sp->devnull, sp->errf, sp->parent);
    int e = pid < 0 ? errno : 0;
    int fd = pid > 0 ? pidfd_open(pid, 0) : -1;
    pthread_mutex_lock(&sp->m);
    sp->pid = pid;
    sp->err = e;
    sp->ready = true;
    pthread_cond_signal(&sp->c);
    pthread_mutex_unlock(&sp->m); /* sp is the starter's again */
    if (fd >= 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        while (poll(&pf, 1, -1) < 0 && errno == EINTR)
            ;
        close(fd);
    } else if (pid > 0) {
        siginfo_t info;
        while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR)
            ;
    }
    return NULL;
}

/* The port of the "Serving remote control on http://127.0.0.1:<port>/" notice, 0 before it. */
static int announced_port(int errf)
{
    static const char notice[] = "Serving remote control on http://127.0.0.1:";
    char buf[16384];
    ssize_t n = pread(errf, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strstr(buf, notice);
    if (!p)
        return 0;
    char *end;
    long port = strtol(p + sizeof(notice) - 1, &end, 10);
    return *end == '/' && port > 0 && port < 65536 ? (int)port : 0;
}

/* Starts the rcd and waits until it listens (lock held). */
static int rcd_start(struct rclone *rc, struct error *err)
{
    uint8_t rnd[32];
    char user[33], pass[33], cred[80], b64[112];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return error_set_errno(err, -errno, "getrandom");
    hasher_hex(rnd, 16, user);
    hasher_hex(rnd + 16, 16, pass);
    snprintf(rc->env_user, sizeof(rc->env_user), "RCLONE_RC_USER=%s", user);
    snprintf(rc->env_pass, sizeof(rc->env_pass), "RCLONE_RC_PASS=%s", pass);
    int cl = snprintf(cred, sizeof(cred), "%s:%s", user, pass);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)cred, cl);
    snprintf(rc->ep.auth, sizeof(rc->ep.auth), "Authorization: Basic %s", b64);
    explicit_bzero(rnd, sizeof(rnd));
    explicit_bzero(pass, sizeof(pass));
    explicit_bzero(cred, sizeof(cred));
    explicit_bzero(b64, sizeof(b64));

    const char *argv[ARGS_MAX + 1];
    size_t n = 0;
    argv[n++] = rc->program;
    if (rc->config[0]) {
        argv[n++] = "--config";
        argv[n++] = rc->config;
    }
    argv[n++] = "--timeout";
    argv[n++] = rc->timeout_arg;
    argv[n++] = "--contimeout";
    argv[n++] = rc->timeout_arg;
    argv[n++] = "--ask-password=false";
    for (size_t i = 0; i < rc->n_extra && n < ARGS_MAX - 8; i++)
        argv[n++] = rc->extra[i];
    argv[n++] = "rcd";
    argv[n++] = "--rc-addr=127.0.0.1:0";
    argv[n++] = "--rc-serve";
    /* the upload of a large file over a slow uplink reads its request for hours: our own stall
     * limit is the bound */
    argv[n++] = "--rc-server-read-timeout=0s";
    argv[n++] = "--rc-server-write-timeout=0s";
    argv[n] = NULL;
    char *envp[ENV_MAX];
    child_env(rc, envp, ENV_MAX);

    int r = 0, devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    rc->errf = memfd_create("rclone-rcd-stderr", MFD_CLOEXEC);
    if (devnull < 0 || rc->errf < 0) {
        r = error_set_errno(err, -errno, "starting rclone rcd");
        goto fail;
    }
    struct spawn sp = {.program = rc->program,
                       .argv = (char *const *)argv,
                       .envp = envp,
                       .devnull = devnull,
                       .errf = rc->errf,
                       .parent = getpid(),
                       .pid = -1};
    pthread_mutex_init(&sp.m, NULL);
    pthread_cond_init(&sp.c, NULL);
    int e = pthread_create(&rc->holder, NULL, holder_main, &sp);
    pthread_mutex_lock(&sp.m);
    while (e == 0 && !sp.ready)
        pthread_cond_wait(&sp.c, &sp.m);
    pthread_mutex_unlock(&sp.m);
    pthread_cond_destroy(&sp.c);
    pthread_mutex_destroy(&sp.m);
    rc->pid = sp.pid;
    if (e != 0 || rc->pid < 0) {
        if (e == 0)
            pthread_join(rc->holder, NULL);
        r = error_set_errno(err, e ? -e : -sp.err, "cannot run '%s'", rc->program);
        goto fail;
    }
    close_fd(&devnull);
    rc->pidfd = pidfd_open(rc->pid, 0);
    if (rc->pidfd < 0) {
        r = error_set_errno(err, -errno, "pidfd_open");
        kill(rc->pid, SIGKILL);
        rcd_reap(rc);
        return r;
    }
    int64_t deadline = now_ms() + RCD_START_S * 1000;
    int port;
    while ((port = announced_port(rc->errf)) == 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            kill(rc->pid, SIGKILL);
            rcd_reap(rc);
            return error_set(err, -ETIMEDOUT,
                             "rclone rcd did not say where it listens in %d s (a -q or "
                             "--log-level above NOTICE in rclone.extra_args hides it)",
                             RCD_START_S);
        }
        /* its notice is polled for: a memory file does not wake poll() */
        struct pollfd pf = {.fd = rc->pidfd, .events = POLLIN};
        if (poll(&pf, 1, left < 20 ? (int)left : 20) > 0) {
            rcd_reap(rc);
            return error_set(err, -EIO, "rclone rcd %s", rc->gone);
        }
    }
    snprintf(rc->ep.base, sizeof(rc->ep.base), "http://127.0.0.1:%d", port);
    rc->ep.pid = rc->pid;
    return 0;
fail:
    close_fd(&devnull);
    close_fd(&rc->errf);
    rc->pid = -1;
    explicit_bzero(&rc->ep, sizeof(rc->ep));
    return r;
}

/* The rcd to call, started (again) when there is none or it exited: *ret its endpoint. */
static int rcd_ensure(struct rclone *rc, struct rcd_endpoint *ret, struct error *err)
{
    pthread_mutex_lock(&rc->lock);
    if (rc->pid > 0) {
        struct pollfd pf = {.fd = rc->pidfd, .events = POLLIN};
        if (poll(&pf, 1, 0) > 0)
            rcd_reap(rc);
    }
    int r = rc->pid > 0 ? 0 : rcd_start(rc, err);
    if (r == 0)
        *ret = rc->ep;
    pthread_mutex_unlock(&rc->lock);
    return r;
}

/* Whether the rcd at ep has ended (reaped now if it just did; a connection it reset or refused
 * comes just before its exit, so it is given a moment); *gone (may be NULL) how. */
static bool rcd_gone_how(struct rclone *rc, const struct rcd_endpoint *ep, char *gone, size_t size)
{
    pthread_mutex_lock(&rc->lock);
    if (rc->pid == ep->pid && rc->pid > 0) {
        struct pollfd pf = {.fd = rc->pidfd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0)
            rcd_reap(rc);
    }
    bool is_gone = rc->gone_pid == ep->pid;
    if (gone)
        snprintf(gone, size, "%s", is_gone ? rc->gone : "");
    pthread_mutex_unlock(&rc->lock);
    return is_gone;
}

static bool rcd_gone(struct rclone *rc, const struct rcd_endpoint *ep)
{
    return rcd_gone_how(rc, ep, NULL, 0);
}

/* The error of a call to the rcd at ep that failed with r (http.c's, in err): when the rcd
 * ended, how. */
static int rcd_lost(struct rclone *rc, const struct rcd_endpoint *ep, int r, const char *what,
                    struct error *err)
{
    char gone[sizeof(rc->gone)];
    if (rcd_gone_how(rc, ep, gone, sizeof(gone)) && gone[0])
        return error_set(err, -EIO, "%s: rclone rcd (pid %ld) %s; the next call starts another",
                         what, (long)ep->pid, gone);
    error_prefix(err, "%s", what);
    return r;
}

/* Stops the rcd: SIGTERM, SIGKILL when it is still there after RCD_STOP_MS. */
static void rcd_stop(struct rclone *rc)
{
    pthread_mutex_lock(&rc->lock);
    if (rc->pid > 0) {
        kill(rc->pid, SIGTERM);
        struct pollfd pf = {.fd = rc->pidfd, .events = POLLIN};
        if (poll(&pf, 1, RCD_STOP_MS) <= 0)
            kill(rc->pid, SIGKILL);
        rcd_reap(rc);
    }
    explicit_bzero(rc->env_pass, sizeof(rc->env_pass));
    pthread_mutex_unlock(&rc->lock);
}

/* ---- final names being moved into ---- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

/* Waits until no other finish of ours is at the name path, then holds it: a hash collision or
 * a full table only makes one wait for another. */
static void name_claim(struct rclone *rc, const char *path)
{
    uint64_t h = name_hash(path);
    pthread_mutex_lock(&rc->lock);
    for (;;) {
        size_t free_slot = MOVING_MAX;
        bool busy = false;
        for (size_t i = 0; i < MOVING_MAX; i++) {
            busy = busy || rc->moving[i] == h;
            if (!rc->moving[i] && free_slot == MOVING_MAX)
                free_slot = i;
        }
        if (!busy && free_slot < MOVING_MAX) {
            rc->moving[free_slot] = h;
            break;
        }
        pthread_cond_wait(&rc->moved, &rc->lock);
    }
    pthread_mutex_unlock(&rc->lock);
}

static void name_release(struct rclone *rc, const char *path)
{
    uint64_t h = name_hash(path);
    pthread_mutex_lock(&rc->lock);
    for (size_t i = 0; i < MOVING_MAX; i++)
        if (rc->moving[i] == h) {
            rc->moving[i] = 0;
            break;
        }
    pthread_cond_broadcast(&rc->moved);
    pthread_mutex_unlock(&rc->lock);
}

/* ---- calls ---- */

/* root + "/" + rel into out. */
static int join(const struct rclone *rc, const char *rel, char *out, size_t size)
{
    size_t rl = strlen(rc->root);
    bool bare = rl > 0 && (rc->root[rl - 1] == ':' || rc->root[rl - 1] == '/');
    int n = snprintf(out, size, "%s%s%s", rc->root, bare || !rel[0] ? "" : "/", rel);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* The part of path (a join() of rc) below the root, or NULL when it is not below it. */
static const char *rel_in(const struct rclone *rc, const char *path)
{
    size_t rl = strlen(rc->root);
    bool bare = rl > 0 && (rc->root[rl - 1] == ':' || rc->root[rl - 1] == '/');
    if (strncmp(path, rc->root, rl) != 0)
        return NULL;
    if (bare || !path[rl])
        return path + rl;
    return path[rl] == '/' ? path + rl + 1 : NULL;
}

/* Percent-encodes s into out (for a URL path or query value): unreserved characters, '/' and
 * ':' stay. -ENAMETOOLONG when it does not fit. */
static int pct(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9') || strchr("-._~/:", *c);
        if (n + (plain ? 1 : 3) >= size)
            return -ENAMETOOLONG;
        if (plain) {
            out[n++] = (char)*c;
        } else {
            out[n++] = '%';
            out[n++] = hex[*c >> 4];
            out[n++] = hex[*c & 15];
        }
    }
    out[n] = '\0';
    return 0;
}

/* The outcome of a finished rc request on h with HTTP status: 0 and *ret_out (NULL: dropped)
 * the answer; -ENOENT for rclone's 404 (nothing there), -EIO else, in rclone's words. */
static int rc_reply(struct http *h, long status, json_object **ret_out, const char *what,
                    struct error *err)
{
    json_object *o = http_reply_len(h) ? json_tokener_parse(http_reply(h)) : NULL, *v;
    if (status == 200 && o && json_object_is_type(o, json_type_object)) {
        if (ret_out)
            *ret_out = o;
        else
            json_object_put(o);
        return 0;
    }
    char msg[STDERR_SHOW];
    if (o && json_object_object_get_ex(o, "error", &v) && json_object_is_type(v, json_type_string))
        snprintf(msg, sizeof(msg), "%s", json_object_get_string(v));
    else
        snprintf(msg, sizeof(msg), "HTTP %ld %.200s", status, http_reply(h));
    json_object_put(o);
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    if (status == 200)
        return error_set(err, -EBADMSG, "%s: rclone's answer is not JSON", what);
    return error_set(err, status == 404 ? -ENOENT : -EIO, "%s: rclone: %s", what, msg);
}

/* Calls the rc method ("operations/stat") with the JSON object in (consumed) on h: rc_reply's. */
static int rc_call(struct rclone *rc, struct http *h, const char *method, json_object *in,
                   json_object **ret_out, const char *what, struct error *err)
{
    struct rcd_endpoint ep;
    const char *body = json_object_to_json_string_ext(in, JSON_C_TO_STRING_PLAIN);
    long status = 0;
    int r = 0;
    /* a call that could not connect never reached rclone: once the rcd that refused it is
     * found gone, the call is made again on a new one */
    for (int attempt = 0; attempt < 2; attempt++) {
        r = rcd_ensure(rc, &ep, err);
        if (r < 0) {
            json_object_put(in);
            return error_prefix(err, "%s", what);
        }
        char url[96];
        snprintf(url, sizeof(url), "%s/%s", ep.base, method);
        const char *headers[] = {ep.auth, "Content-Type: application/json", "Expect:", NULL};
        struct http_request req = {
            .method = "POST",
            .url = url,
            .headers = headers,
            .body = body,
            .body_len = strlen(body),
            .reply_max = JSON_MAX,
        };
        r = http_run(h, &req, &status, err);
        explicit_bzero(ep.auth, sizeof(ep.auth));
        if (r != -ECONNREFUSED || !rcd_gone(rc, &ep))
            break;
    }
    json_object_put(in);
    if (r < 0 && r != -EBADMSG)
        return rcd_lost(rc, &ep, r, what, err);
    if (r < 0)
        return error_set(err, r, "%s: rclone's answer is too long", what);
    return rc_reply(h, status, ret_out, what, err);
}

/* ---- what operations/stat and operations/list say ---- */
struct object_info {
    bool is_dir;
    uint64_t size;
    char md5[33], sha1[41]; /* "" when the backend has none */
    int64_t mtime;          /* seconds since the epoch, 0 when unknown */
};

static void copy_hash(json_object *hashes, const char *key, char *out, size_t size)
{
    json_object *v;
    out[0] = '\0';
    if (hashes && json_object_object_get_ex(hashes, key, &v) &&
        json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        if (strlen(s) == size - 1)
            snprintf(out, size, "%s", s);
    }
}

static void info_of(json_object *o, struct object_info *ret)
{
    json_object *v;
    memset(ret, 0, sizeof(*ret));
    if (json_object_object_get_ex(o, "IsDir", &v))
        ret->is_dir = json_object_get_boolean(v);
    if (json_object_object_get_ex(o, "Size", &v))
        ret->size = (uint64_t)json_object_get_int64(v);
    json_object *hashes = NULL;
    json_object_object_get_ex(o, "Hashes", &hashes);
    copy_hash(hashes, "md5", ret->md5, sizeof(ret->md5));
    copy_hash(hashes, "sha1", ret->sha1, sizeof(ret->sha1));
    if (json_object_object_get_ex(o, "ModTime", &v) && json_object_is_type(v, json_type_string)) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        if (strptime(json_object_get_string(v), "%Y-%m-%dT%H:%M:%S", &tm))
            ret->mtime = timegm(&tm);
    }
}

/* A new {"fs": root, "remote": rel} for a call about path (a join() of rc); NULL when path is
 * not below the root or out of memory. */
static json_object *args_for(const struct rclone *rc, const char *path)
{
    const char *rel = rel_in(rc, path);
    json_object *in = rel ? json_object_new_object() : NULL;
    if (in) {
        json_object_object_add(in, "fs", json_object_new_string(rc->root));
        json_object_object_add(in, "remote", json_object_new_string(rel));
    }
    return in;
}

/* operations/stat of path (with hashes when hashes) on h: -ENOENT when nothing is there. */
static int stat_path(struct rclone *rc, struct http *h, const char *path, bool hashes,
                     struct object_info *ret, struct error *err)
{
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "looking at '%s'", path);
    json_object *in = args_for(rc, path), *opt = json_object_new_object(), *out = NULL, *item;
    if (!in || !opt) {
        json_object_put(in);
        json_object_put(opt);
        return error_set(err, -ENOMEM, "%s: out of memory", what);
    }
    json_object_object_add(opt, "noMimeType", json_object_new_boolean(true));
    if (hashes) {
        json_object *types = json_object_new_array();
        json_object_array_add(types, json_object_new_string("md5"));
        json_object_array_add(types, json_object_new_string("sha1"));
        json_object_object_add(opt, "showHash", json_object_new_boolean(true));
        json_object_object_add(opt, "hashTypes", types);
    }
    json_object_object_add(in, "opt", opt);
    int r = rc_call(rc, h, "operations/stat", in, &out, what, err);
    if (r < 0)
        return r;
    if (!json_object_object_get_ex(out, "item", &item) ||
        !json_object_is_type(item, json_type_object)) {
        json_object_put(out);
        return error_set(err, -ENOENT, "%s: nothing there", what);
    }
    /* bucket-based remotes (S3, B2, ...) may answer for a path that names nothing with a folder
     * without a name (any prefix may be a folder there) */
    json_object *name;
    bool nameless = !json_object_object_get_ex(item, "Name", &name) ||
                    !json_object_is_type(name, json_type_string) ||
                    !json_object_get_string(name)[0];
    info_of(item, ret);
    json_object_put(out);
    if (nameless && ret->is_dir)
        return error_set(err, -ENOENT, "%s: nothing there", what);
    return 0;
}

/* operations/deletefile of path on h. */
static int delete_path(struct rclone *rc, struct http *h, const char *path, const char *what,
                       struct error *err)
{
    json_object *in = args_for(rc, path);
    if (!in)
        return error_set(err, -ENOMEM, "%s: out of memory", what);
    return rc_call(rc, h, "operations/deletefile", in, NULL, what, err);
}

/* Deletes one file, as a best effort. */
static void delete_quietly(struct rclone *rc, struct http *h, const char *path)
{
    struct error e;
    delete_path(rc, h, path, "delete", &e);
}

/* The object holds this content: MD5 (or SHA-1 when the backend has no MD5) and size. false
 * when the backend has neither hash. */
static bool same_content(const struct object_info *o, uint64_t size, const struct hasher_digest *d)
{
    if (o->is_dir || o->size != size)
        return false;
    if (o->md5[0])
        return strcasecmp(o->md5, d->md5_hex) == 0;
    if (o->sha1[0])
        return d->sha1_hex[0] && strcasecmp(o->sha1, d->sha1_hex) == 0;
    return false;
}

/* ---- ops ---- */

static void rclone_done(void *priv)
{
    struct rclone *rc = priv;
    if (!rc)
        return;
    rcd_stop(rc);
    feed_server_stop(rc->feeds);
    http_free(rc->main);
    pthread_cond_destroy(&rc->moved);
    pthread_mutex_destroy(&rc->lock);
    free(rc);
}

/* Kills the rcd: the calls in flight fail now (the next call starts another). Any thread. */
static void rclone_interrupt(void *priv)
{
    struct rclone *rc = priv;
    pthread_mutex_lock(&rc->lock);
    if (rc->pid > 0)
        kill(rc->pid, SIGKILL);
    pthread_mutex_unlock(&rc->lock);
}

/* A handle for calls to the rcd: control calls have control_deadline in all, transfers
 * stall_limit without a byte moving. */
static int new_handle(const struct rclone *rc, bool transfer, struct http **ret, struct error *err)
{
    struct http_options o = {
        .name = "rclone rcd",
        .section = "rclone",
        .connect_timeout = CONNECT_S,
        .stall_timeout = transfer ? stall_limit(rc) : control_deadline(rc),
        .total_timeout = transfer ? 0 : control_deadline(rc),
        /* the rcd's password must not go to a proxy of the environment */
        .no_proxy = true,
    };
    return http_new(&o, ret, err);
}

static bool find_program(const char *name, char *buf, size_t size)
{
    static const char *const dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        int n = snprintf(buf, size, "%s/%s", dirs[i], name);
        if (n > 0 && (size_t)n < size && access(buf, X_OK) == 0)
            return true;
    }
    return false;
}

static bool printable(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int rclone_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                       char *label, size_t label_size, struct error *err)
{
    const char *remote = cfg->rclone.remote ? cfg->rclone.remote : "";
    size_t len = strlen(remote);
    /* "name:path", ":backend:path", or an absolute folder (rclone's local backend) */
    if (len == 0 || len > DEST_REMOTE_MAX / 2 || !printable(remote) || remote[0] == '-' ||
        (!strchr(remote, ':') && remote[0] != '/'))
        return error_set(err, -EINVAL,
                         "rclone.remote: a remote and folder as rclone names them "
                         "(\"gdrive:Photos\")");
    for (size_t i = 0; i < cfg->rclone.n_extra_args; i++) {
        const char *a = cfg->rclone.extra_args[i];
        if (a[0] != '-' || !printable(a) || strncmp(a, "--rc", 4) == 0)
            return error_set(err, -EINVAL,
                             "rclone.extra_args: '%.48s' is not an option (one \"--name=value\" "
                             "per item; --rc-* are SnapSync's)",
                             a);
    }
    if (cfg->rclone.n_extra_args > ARGS_MAX / 2 - 8)
        return error_set(err, -EINVAL, "rclone.extra_args: at most %d items", ARGS_MAX / 2 - 8);
    struct rclone *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&rc->lock, NULL);
    pthread_cond_init(&rc->moved, NULL);
    rc->pid = -1;
    rc->pidfd = rc->errf = -1;
    if (!find_program("rclone", rc->program, sizeof(rc->program))) {
        rclone_done(rc);
        return error_set(err, -ENOENT,
                         "rclone is not installed: install the Debian package rclone");
    }
    while (len > 1 && remote[len - 1] == '/' && remote[len - 2] != ':')
        len--;
    snprintf(rc->root, sizeof(rc->root), "%.*s", (int)len, remote);
    snprintf(rc->config, sizeof(rc->config), "%s",
             cfg->rclone.config_file ? cfg->rclone.config_file : "");
    rc->timeout_s = cfg->rclone.timeout > 0 ? cfg->rclone.timeout : 60;
    snprintf(rc->timeout_arg, sizeof(rc->timeout_arg), "%ds", rc->timeout_s);
    rc->extra = (const char *const *)cfg->rclone.extra_args;
    rc->n_extra = cfg->rclone.n_extra_args;
    int r = new_handle(rc, false, &rc->main, err);
    if (r < 0) {
        rclone_done(rc);
        return r;
    }
    char host[HOST_NAME_MAX + 1] = "";
    if (gethostname(host, sizeof(host)) < 0 || !host[0])
        snprintf(host, sizeof(host), "host");
    host[sizeof(host) - 1] = '\0';
    size_t h = 0;
    for (const char *c = host; *c && h + 1 < sizeof(rc->host); c++)
        rc->host[h++] =
            (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", *c) && *c)
                ? *c
                : '_';
    rc->host[h] = '\0';
    uint32_t token = 0;
    if (getrandom(&token, sizeof(token), 0) != sizeof(token))
        token = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    snprintf(rc->run, sizeof(rc->run), "%08" PRIx32, token);
    snprintf(id, id_size, "rclone:%s", rc->root);
    snprintf(label, label_size, "rclone %s", rc->root);
    *ret_priv = rc;
    return 0;
}

/* A new temporary's path: <root>/.snapsync-tmp/<host>-<pid>-<run>-<what><n>.part */
static int temp_path(struct rclone *rc, const char *what, char *out, size_t size)
{
    char rel[128];
    unsigned n = atomic_fetch_add(&rc->counter, 1);
    snprintf(rel, sizeof(rel), TMP_DIR "/%s-%ld-%s-%s%u.part", rc->host, (long)getpid(), rc->run,
             what, n);
    return join(rc, rel, out, size);
}

/* A temporary to delete: this host's of a process that is gone (or of an earlier process with
 * our pid: a restarted container), or anyone's older than a day. */
static bool stale(const struct rclone *rc, const char *name, int64_t mtime)
{
    size_t hl = strlen(rc->host);
    if (mtime > 0 && time(NULL) - mtime > STALE_AGE)
        return true;
    if (strncmp(name, rc->host, hl) != 0 || name[hl] != '-')
        return false;
    char *end;
    errno = 0;
    long pid = strtol(name + hl + 1, &end, 10);
    if (errno || end == name + hl + 1 || *end != '-' || pid <= 0 || strlen(end) < 10 ||
        end[9] != '-')
        return false;
    if (pid == (long)getpid())
        return strncmp(end + 1, rc->run, 8) != 0;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int clean_temporaries(struct rclone *rc, struct error *err)
{
    char dir[DEST_REMOTE_MAX];
    int r = join(rc, TMP_DIR, dir, sizeof(dir));
    if (r < 0)
        return error_set(err, r, "rclone.remote too long");
    json_object *in = args_for(rc, dir), *opt = json_object_new_object(), *out = NULL, *list;
    if (!in || !opt) {
        json_object_put(in);
        json_object_put(opt);
        return error_set(err, -ENOMEM, "out of memory");
    }
    json_object_object_add(opt, "filesOnly", json_object_new_boolean(true));
    json_object_object_add(opt, "noMimeType", json_object_new_boolean(true));
    json_object_object_add(in, "opt", opt);
    r = rc_call(rc, rc->main, "operations/list", in, &out, "listing the temporaries", err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (!json_object_object_get_ex(out, "list", &list) ||
        !json_object_is_type(list, json_type_array)) {
        json_object_put(out);
        return error_set(err, -EBADMSG, "listing the temporaries: rclone's answer has no list");
    }
    size_t n = json_object_array_length(list), deleted = 0;
    for (size_t i = 0; i < n && deleted < STALE_MAX; i++) {
        json_object *o = json_object_array_get_idx(list, i), *v;
        if (!json_object_object_get_ex(o, "Name", &v) || !json_object_is_type(v, json_type_string))
            continue;
        const char *name = json_object_get_string(v);
        struct object_info info;
        info_of(o, &info);
        char rel[DEST_NAME_MAX + 32], path[DEST_REMOTE_MAX];
        if (!dest_name_valid(name) || !stale(rc, name, info.mtime))
            continue;
        snprintf(rel, sizeof(rel), TMP_DIR "/%s", name);
        if (join(rc, rel, path, sizeof(path)) == 0) {
            delete_quietly(rc, rc->main, path);
            deleted++;
        }
    }
    json_object_put(out);
    return 0;
}

static int rclone_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    (void)session;
    struct rclone *rc = priv;
    char dir[DEST_REMOTE_MAX], what[DEST_REMOTE_MAX + 32];
    if (join(rc, TMP_DIR, dir, sizeof(dir)) < 0)
        return error_set(err, -ENAMETOOLONG, "rclone.remote too long");
    snprintf(what, sizeof(what), "rclone remote '%s'", rc->root);
    json_object *in = args_for(rc, dir);
    if (!in)
        return error_set(err, -ENOMEM, "out of memory");
    int r = rc_call(rc, rc->main, "operations/mkdir", in, NULL, what, err);
    if (r < 0)
        return r;
    return clean_temporaries(rc, err);
}

/* The server rclone reads the files from, started on first use; *ret_fs its source for
 * operations/copyfile. */
static int feeds_ensure(struct rclone *rc, char *ret_fs, size_t size, struct error *err)
{
    int r = 0;
    pthread_mutex_lock(&rc->lock);
    if (!rc->feeds) {
        /* a reader idle between requests for longer than rclone's own timeout is gone */
        r = feed_server_start((unsigned)stall_limit(rc), &rc->feeds, err);
        if (r == 0)
            snprintf(rc->source_fs, sizeof(rc->source_fs),
                     ":http,url='http://127.0.0.1:%d/':", feed_server_port(rc->feeds));
    }
    snprintf(ret_fs, size, "%s", rc->source_fs);
    pthread_mutex_unlock(&rc->lock);
    return r;
}

static void wake_up(void *arg)
{
    http_wakeup(arg);
}

/* {"srcFs": <the feeds>, "srcRemote": <feed>, "dstFs": <root>, "dstRemote": <tmp>, "_config":
 * {"MultiThreadStreams": 0, "BufferSize": 1 MiB}}: operations/copyfile's arguments for a copy from
 * feed to tmp (a temporary's path): one GET from the start (no ranges in parallel), a small
 * read-ahead. NULL when out of memory. */
static json_object *copy_args(const struct rclone *rc, const struct feed *feed, const char *tmp,
                              const char *source_fs)
{
    json_object *in = json_object_new_object(), *cfg = json_object_new_object();
    const char *dst = rel_in(rc, tmp);
    if (!in || !cfg || !dst) {
        json_object_put(cfg);
        json_object_put(in);
        return NULL;
    }
    json_object_object_add(in, "srcFs", json_object_new_string(source_fs));
    json_object_object_add(in, "srcRemote", json_object_new_string(feed_path(feed)));
    json_object_object_add(in, "dstFs", json_object_new_string(rc->root));
    json_object_object_add(in, "dstRemote", json_object_new_string(dst));
    json_object_object_add(cfg, "MultiThreadStreams", json_object_new_int(0));
    json_object_object_add(cfg, "BufferSize", json_object_new_int64(1 << 20));
    json_object_object_add(in, "_config", cfg);
    return in;
}

/* Copies a small probe in memory to tmp (a temporary's path), the way files go (a feed): the
 * whole of it is on offer before rclone is called, so one synchronous call does it. */
static int put_small(struct rclone *rc, const char *tmp, const void *buf, size_t len,
                     struct error *err)
{
    char source_fs[sizeof(rc->source_fs)], what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "writing '%s'", tmp);
    struct feed *feed = NULL;
    int r = feeds_ensure(rc, source_fs, sizeof(source_fs), err);
    if (r == 0)
        r = feed_new(rc->feeds, len, 0, NULL, NULL, &feed, err);
    if (r < 0)
        return error_prefix(err, "%s", what);
    feed_offer(feed, buf, len);
    json_object *in = copy_args(rc, feed, tmp, source_fs);
    r = in ? rc_call(rc, rc->main, "operations/copyfile", in, NULL, what, err)
           : error_set(err, -ENOMEM, "%s: out of memory", what);
    if (r == 0 && feed_withdraw(feed) != len)
        r = error_set(err, -EIO, "%s: rclone answered before it had read it all", what);
    feed_free(feed);
    return r;
}

static int rclone_probe(void *priv, char *detail, size_t detail_size, struct error *err)
{
    struct rclone *rc = priv;
    static const char body[] = "SnapSync test-connection probe\n";
    char tmp[DEST_REMOTE_MAX];
    int r = rclone_prepare(priv, NULL, err);
    if (r < 0)
        return r;
    if (temp_path(rc, "probe", tmp, sizeof(tmp)) < 0)
        return error_set(err, -ENAMETOOLONG, "rclone.remote too long");
    r = put_small(rc, tmp, body, sizeof(body) - 1, err);
    if (r < 0)
        goto out;
    struct object_info info;
    r = stat_path(rc, rc->main, tmp, false, &info, err);
    if (r == 0 && info.size != sizeof(body) - 1)
        r = error_set(err, -EIO, "the probe '%s' has %" PRIu64 " bytes, %zu written", tmp,
                      info.size, sizeof(body) - 1);
    if (r < 0)
        goto out;
    r = delete_path(rc, rc->main, tmp, "deleting the probe", err);
    if (r == 0)
        snprintf(detail, detail_size, "rclone remote '%s': a probe file written and deleted",
                 rc->root);
    return r;
out:
    delete_quietly(rc, rc->main, tmp);
    return r;
}

static void rclone_conn_free(void *conn)
{
    struct rclone_conn *c = conn;
    if (!c)
        return;
    http_free(c->ctl);
    http_free(c->up);
    free(c);
}

static int rclone_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct rclone_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->rc = priv;
    int r = new_handle(c->rc, false, &c->ctl, err);
    if (r == 0)
        r = new_handle(c->rc, true, &c->up, err);
    if (r < 0) {
        rclone_conn_free(c);
        return r;
    }
    *ret_conn = c;
    return 0;
}

/* Where candidate k of f's name is: <root>/<date>/<name or name_k>. */
static int candidate_path(const struct rclone_file *f, unsigned k, char *out, size_t size,
                          struct error *err)
{
    char name[DEST_NAME_MAX + 1], rel[DEST_REMOTE_MAX];
    dest_candidate_name(f->name, k, name, sizeof(name));
    int n = snprintf(rel, sizeof(rel), "%s%s%s", f->dir, f->dir[0] ? "/" : "", name);
    if (n < 0 || (size_t)n >= sizeof(rel) || join(f->rc, rel, out, size) < 0)
        return error_set(err, -ENAMETOOLONG, "the path of '%s' is too long", name);
    return 0;
}

static int rclone_retarget(void *file, const char *folder, const char *target, struct error *err)
{
    struct rclone_file *f = file;
    if (!dest_name_valid(target))
        return error_set(err, -EINVAL, "unusable file name");
    snprintf(f->name, sizeof(f->name), "%s", target);
    if ((size_t)snprintf(f->dir, sizeof(f->dir), "%s", folder) >= sizeof(f->dir))
        return error_set(err, -ENAMETOOLONG, "the path of '%s' is too long", target);
    return candidate_path(f, 0, f->final0, sizeof(f->final0), err);
}

static void file_free(struct rclone_file *f, bool delete_tmp)
{
    http_end(f->conn->up);
    feed_free(f->feed);
    if (delete_tmp)
        delete_quietly(f->rc, f->conn->ctl, f->tmp);
    explicit_bzero(f->ep.auth, sizeof(f->ep.auth)); /* the secret */
    free(f->request);
    free(f);
}

static int rclone_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct rclone_conn *c = conn;
    struct rclone *rc = c->rc;
    if (!dest_name_valid(item->target))
        return error_set(err, -EINVAL, "unusable file name");
    struct rclone_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->rc = rc;
    f->conn = c;
    f->size = item->size;
    snprintf(f->name, sizeof(f->name), "%s", item->target);
    snprintf(f->dir, sizeof(f->dir), "%s", item->folder);
    char source_fs[sizeof(rc->source_fs)], url[96];
    int r = candidate_path(f, 0, f->final0, sizeof(f->final0), err);
    if (r < 0)
        goto fail;
    r = temp_path(rc, "", f->tmp, sizeof(f->tmp));
    if (r < 0) {
        error_set(err, r, "rclone.remote too long");
        goto fail;
    }
    r = feeds_ensure(rc, source_fs, sizeof(source_fs), err);
    if (r == 0)
        r = feed_new(rc->feeds, item->size, item->mtime_ns / 1000000000, wake_up, c->up, &f->feed,
                     err);
    json_object *in = r == 0 ? copy_args(rc, f->feed, f->tmp, source_fs) : NULL;
    if (in)
        f->request = strdup(json_object_to_json_string_ext(in, JSON_C_TO_STRING_PLAIN));
    json_object_put(in);
    if (r == 0 && !f->request)
        r = error_set(err, -ENOMEM, "out of memory");
    if (r == 0)
        r = rcd_ensure(rc, &f->ep, err);
    if (r < 0) {
        error_prefix(err, "uploading '%s'", item->name);
        goto fail;
    }
    snprintf(url, sizeof(url), "%s/operations/copyfile", f->ep.base);
    const char *headers[] = {f->ep.auth, "Content-Type: application/json", "Expect:", NULL};
    struct http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = f->request,
        .body_len = strlen(f->request),
        .reply_max = JSON_MAX,
    };
    r = http_start(c->up, &req, err);
    if (r < 0)
        goto fail;
    *ret_file = f;
    return 0;
fail:
    file_free(f, false);
    return r;
}

static bool chunk_taken(void *arg)
{
    struct rclone_file *f = arg;
    return feed_taken(f->feed) || http_reply_complete(f->conn->up);
}

/* The upload's outcome once its call ended (or rclone answered early). */
static int upload_result(struct rclone_file *f, struct error *err)
{
    struct http *x = f->conn->up;
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "uploading '%s'", f->tmp);
    http_end(x);
    int r = http_error(x, err);
    if (r < 0 && r != -EBADMSG && !http_reply_complete(x))
        return rcd_lost(f->rc, &f->ep, r, what, err);
    r = rc_reply(x, http_status(x), NULL, what, err);
    if (r == 0 && feed_delivered(f->feed) != f->size)
        r = error_set(err, -EIO, "%s: rclone answered before it had read the whole file", what);
    return r;
}

static int rclone_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct rclone_file *f = file;
    struct http *x = f->conn->up;
    if (f->sent + len > f->size)
        return error_set(err, -EIO, "the file grew while it was read (%" PRIu64 " bytes expected)",
                         f->size);
    if (http_done(x))
        return upload_result(f, err);
    feed_offer(f->feed, buf, len);
    http_resume(x); /* waiting for the card is not a stall */
    int r = http_drive(x, chunk_taken, f, err);
    uint64_t given = feed_withdraw(f->feed); /* buf is the caller's again */
    if (r < 0)
        return r;
    f->sent += len;
    if (given == f->sent && (given == f->size || (!http_done(x) && !http_reply_complete(x))))
        return 0; /* taken; at the end rclone may answer at once: finish() reads it */
    /* rclone answered, or stopped reading: its answer says why */
    if (!http_done(x)) {
        http_resume(x);
        r = http_drive(x, NULL, NULL, err);
        if (r < 0)
            return r;
    }
    r = upload_result(f, err);
    return r < 0 ? r : error_set(err, -EIO, "rclone ended the upload of '%s' early", f->tmp);
}

/* The verified temporary of f to final, when final is free (0); when final holds the same
 * content, 0 and *ret_existed (the temporary stays, to be deleted); -EEXIST when it holds other
 * content (or appeared meanwhile: the temporary stays). The caller holds the name. */
static int move_into(struct rclone_file *f, const char *final, const struct hasher_digest *digest,
                     bool *ret_existed, struct error *err)
{
    struct rclone *rc = f->rc;
    struct http *ctl = f->conn->ctl;
    struct object_info there;
    int r = stat_path(rc, ctl, final, true, &there, err);
    if (r == 0) {
        *ret_existed = same_content(&there, f->size, digest);
        return *ret_existed ? 0 : -EEXIST;
    }
    if (r != -ENOENT)
        return r;
    /* IgnoreExisting: rclone leaves a file that appeared at final since it was looked at (another
     * station's), and the temporary with it (movefile replaces files otherwise); the temporary
     * being gone afterwards is what says it moved */
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "moving into place '%s'", final);
    json_object *in = json_object_new_object(), *cfg = json_object_new_object();
    const char *src = rel_in(rc, f->tmp), *dst = rel_in(rc, final);
    if (!in || !cfg || !src || !dst) {
        json_object_put(in);
        json_object_put(cfg);
        return error_set(err, -ENOMEM, "%s: out of memory", what);
    }
    json_object_object_add(in, "srcFs", json_object_new_string(rc->root));
    json_object_object_add(in, "srcRemote", json_object_new_string(src));
    json_object_object_add(in, "dstFs", json_object_new_string(rc->root));
    json_object_object_add(in, "dstRemote", json_object_new_string(dst));
    json_object_object_add(cfg, "IgnoreExisting", json_object_new_boolean(true));
    json_object_object_add(in, "_config", cfg);
    r = rc_call(rc, ctl, "operations/movefile", in, NULL, what, err);
    if (r < 0)
        return r;
    r = stat_path(rc, ctl, f->tmp, false, &there, err);
    /* moved: the content was verified as the temporary; a move is a rename on the server, or
     * rclone's own copy, which it checks by hash, then a delete */
    if (r == -ENOENT)
        return 0;
    return r < 0 ? r : -EEXIST;
}

static int rclone_finish(void *file, const struct hasher_digest *digest, bool verify,
                         struct dest_result *ret, struct error *err)
{
    struct rclone_file *f = file;
    struct rclone *rc = f->rc;
    bool tmp_left = true, existed = false;
    char final[DEST_REMOTE_MAX] = "";
    int r = 0;
    if (f->sent != f->size) {
        r = error_set(err, -EIO, "read %" PRIu64 " of %" PRIu64 " bytes", f->sent, f->size);
        goto out;
    }
    if (!http_done(f->conn->up)) {
        http_resume(f->conn->up);
        r = http_drive(f->conn->up, NULL, NULL, err);
        if (r < 0)
            goto out;
    }
    r = upload_result(f, err);
    if (r < 0)
        goto out;
    struct object_info info;
    r = stat_path(rc, f->conn->ctl, f->tmp, verify, &info, err);
    if (r < 0)
        goto out;
    if (info.size != f->size) {
        r = error_set(err, -EIO, "verify '%s': %" PRIu64 " bytes there, %" PRIu64 " sent", f->tmp,
                      info.size, f->size);
        goto out;
    }
    if (verify && (info.md5[0] || info.sha1[0]) && !same_content(&info, f->size, digest)) {
        r = error_set(err, -EIO, "verify '%s': the remote's %s %s is not the %s of what was read",
                      f->tmp, info.md5[0] ? "MD5" : "SHA-1", info.md5[0] ? info.md5 : info.sha1,
                      info.md5[0] ? digest->md5_hex : digest->sha1_hex);
        goto out;
    }
    for (unsigned k = 0; k < CANDIDATES_MAX; k++) {
        r = candidate_path(f, k, final, sizeof(final), err);
        if (r < 0)
            goto out;
        name_claim(rc, final);
        r = move_into(f, final, digest, &existed, err);
        name_release(rc, final);
        if (r == 0) {
            tmp_left = existed;
            goto result;
        }
        if (r != -EEXIST)
            goto out;
    }
    r = error_set(err, -EEXIST, "'%s' and %d other names are taken", f->name, CANDIDATES_MAX - 1);
    goto out;
result:
    snprintf(ret->remote, sizeof(ret->remote), "%s", final);
    ret->existed = existed;
    r = 0;
out:
    file_free(f, tmp_left);
    return r;
}

static void rclone_abort(void *file)
{
    struct rclone_file *f = file;
    if (f)
        file_free(f, true);
}

/* Reads remote back through the rcd's --rc-serve, DEST_READ_CHUNK bytes per ranged GET. */
static int rclone_read_copy(void *priv, const char *remote,
                            int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                            struct error *err)
{
    struct rclone *rc = priv;
    const char *rel = rel_in(rc, remote);
    if (!rel || !rel[0] || strstr(remote, "/../") || strchr(rc->root, ']'))
        return error_set(err, -EINVAL, "'%s' is not below '%s'", remote, rc->root);
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "reading '%s'", remote);
    struct object_info info;
    int r = stat_path(rc, rc->main, remote, false, &info, err);
    if (r < 0)
        return r;
    if (info.is_dir)
        return error_set(err, -EINVAL, "%s: a folder", what);
    char fs[URL_MAX], path[URL_MAX], url[2 * URL_MAX + 64], range[64];
    if (pct(rc->root, fs, sizeof(fs)) < 0 || pct(rel, path, sizeof(path)) < 0)
        return error_set(err, -ENAMETOOLONG, "%s: the path is too long", what);
    for (uint64_t off = 0; off < info.size;) {
        struct rcd_endpoint ep;
        r = rcd_ensure(rc, &ep, err);
        if (r < 0)
            return error_prefix(err, "%s", what);
        uint64_t want = info.size - off < DEST_READ_CHUNK ? info.size - off : DEST_READ_CHUNK;
        snprintf(url, sizeof(url), "%s/%%5B%s%%5D/%s", ep.base, fs, path);
        snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64, off, off + want - 1);
        const char *headers[] = {ep.auth, range, NULL};
        struct http_request req = {
            .method = "GET", .url = url, .headers = headers, .reply_max = DEST_READ_CHUNK};
        long status = 0;
        r = http_run(rc->main, &req, &status, err);
        if (r < 0 && r != -EBADMSG)
            r = rcd_lost(rc, &ep, r, what, err);
        else if (r < 0 || (status != 206 && status != 200))
            r = rc_reply(rc->main, status == 200 ? 500 : status, NULL, what, err);
        else if (http_reply_len(rc->main) != want)
            r = error_set(err, -EIO,
                          "%s: %zu bytes at %" PRIu64 ", %" PRIu64 " asked (it changed?)", what,
                          http_reply_len(rc->main), off, want);
        explicit_bzero(&ep, sizeof(ep));
        if (r < 0)
            return r;
        r = fn(http_reply(rc->main), want, arg);
        if (r < 0)
            return r;
        off += want;
    }
    return 0;
}

const struct dest_ops dest_rclone_ops = {
    .kind = "rclone",
    /* backends with SHA-1 and no MD5 (B2, pCloud ...) are verified by it (same_content) */
    .needs_sha1 = true,
    .init = rclone_init,
    .done = rclone_done,
    .prepare = rclone_prepare,
    .probe = rclone_probe,
    .interrupt = rclone_interrupt,
    .conn_new = rclone_conn_new,
    .conn_free = rclone_conn_free,
    .open = rclone_open,
    .write = rclone_write,
    .finish = rclone_finish,
    .abort = rclone_abort,
    .retarget = rclone_retarget,
    .read_copy = rclone_read_copy,
};
