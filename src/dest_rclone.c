/* SPDX-License-Identifier: MIT */
/*
 * Any rclone remote as a destination (`rclone.enabled`): Google Drive, OneDrive, Dropbox, B2,
 * SFTP, WebDAV ... through Debian's rclone binary rather than a client of our own. Each file
 * becomes <remote>/<folder>/<name> (the folder and name from the patterns, dest.c).
 *
 * One rclone process per file and step, no shell: `rclone rcat --size N <tmp>` is spawned at
 * open() and fed the chunks of SnapSync's single read of the card through a pipe (write()), so
 * the card is read once and memory stays a pipe buffer; the temporary is
 * <remote>/.snapsync-tmp/<host>-<pid>-<run>-<n>.part. finish() closes the pipe, waits for rcat,
 * asks `rclone lsjson --stat --hash-type md5 --hash-type sha1` for the temporary's size and hashes
 * and compares them with the engine's digest (MD5 where the backend has it, else SHA-1, else the
 * size alone: the backend keeps no hash we compute), then looks at the candidate final names (name,
 * name_1, ... as dest_candidate_name) with lsjson (the first one asked while the file streams):
 * a free one gets the temporary by a server-side `rclone moveto --ignore-existing` (which leaves
 * a file that appeared there meanwhile, and the temporary with it: the next name then), one
 * holding the same content counts as existed (the temporary is deleted), other content means the
 * next name.
 *
 * Why processes and not one `rclone rcd`: a process per step needs no port, no password for the
 * remote-control API and no state to lose when rclone dies; its exit code and stderr are the
 * error; and the data path (rcat's stdin) is the same streaming a rcd upload would be. The
 * price is a start and a connection per call (docs/destinations.md: small on local and S3
 * remotes, an SSH handshake on SFTP).
 *
 * The child gets nothing of ours: stdin the pipe or /dev/null, stdout a pipe or an anonymous
 * memory file, stderr an anonymous memory file read after its exit (the last lines, rclone's
 * time stamps cut, go into the error message; dest.c scrubs secrets), no other descriptor, the
 * default signal mask and dispositions, and an environment of PATH, HOME, TMPDIR, TZ, XDG_*
 * and RCLONE_* only (rclone can be configured through RCLONE_CONFIG_<REMOTE>_* variables). Every
 * call has a deadline; rclone's own --timeout/--contimeout bound a stalled transfer.
 *
 * interrupt() kills the rclone processes of the destination (a list under a lock; a process is
 * unlisted before it is reaped, so its pid cannot have been reused): their calls fail at once.
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
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "dest.h"

extern char **environ;

#define TMP_DIR ".snapsync-tmp"
#define ARGS_MAX 64
#define ENV_MAX 64
#define STDERR_SHOW 480            /* bytes of rclone's stderr an error quotes */
#define JSON_MAX (4 * 1024 * 1024) /* bytes of lsjson output read */
#define CANDIDATES_MAX 1000
#define STALE_AGE (24 * 3600)
#define STALE_MAX 1000 /* temporaries deleted by one prepare */
#define RUNNING_MAX 64 /* rclone processes interrupt() knows of */

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
    pthread_mutex_t lock;
    pid_t running[RUNNING_MAX]; /* not reaped while listed here: a pid cannot be reused */
};

struct rclone_conn {
    struct rclone *rc;
};

/* A running rclone. */
struct proc {
    struct rclone *rc;
    pid_t pid;
    int pidfd;
    int in;   /* write end of its stdin, -1 */
    int out;  /* its stdout: read end of a pipe, or a memory file, or -1 */
    int errf; /* its stderr: a memory file */
};

struct rclone_file {
    struct rclone *rc;
    struct proc p;
    struct proc look;             /* lsjson of final0, running beside the upload; pid -1: none */
    char final0[DEST_REMOTE_MAX]; /* the first candidate final name */
    char name[DEST_NAME_MAX + 1];
    char dir[PATTERN_OUT_MAX]; /* below the root, from the folder pattern; "" none */
    char tmp[DEST_REMOTE_MAX];
    uint64_t size, sent;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- processes ---- */

static void proc_init(struct proc *p, struct rclone *rc)
{
    p->rc = rc;
    p->pid = -1;
    p->pidfd = p->in = p->out = p->errf = -1;
}

/* Lists or unlists pid as running (interrupt kills those listed). */
static void running_set(struct rclone *rc, pid_t pid, bool on)
{
    pthread_mutex_lock(&rc->lock);
    for (size_t i = 0; i < RUNNING_MAX; i++)
        if (rc->running[i] == (on ? 0 : pid)) {
            rc->running[i] = on ? pid : 0;
            break;
        }
    pthread_mutex_unlock(&rc->lock);
}

/* Reaps p's process (unlisted first); *ret_status its wait status. */
static void proc_reap(struct proc *p, int *ret_status)
{
    int status = 0;
    running_set(p->rc, p->pid, false);
    while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
        ;
    p->pid = -1;
    if (ret_status)
        *ret_status = status;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The environment rclone gets: no secrets of ours. Pointers into environ. */
static void child_env(char **envp, size_t max)
{
    static char path[] = "PATH=/usr/local/bin:/usr/bin:/bin";
    static const char *const keep[] = {"HOME=", "TMPDIR=", "XDG_", "RCLONE_", "TZ="};
    size_t n = 0;
    envp[n++] = path;
    for (char **e = environ; e && *e && n + 1 < max; e++)
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
            if (strncmp(*e, keep[i], strlen(keep[i])) == 0) {
                envp[n++] = *e;
                break;
            }
    envp[n] = NULL;
}

/*
 * Starts rclone with cmd (the subcommand and its arguments, NULL-terminated) and the common
 * options. with_stdin: p->in gets a pipe to its stdin (else /dev/null). out_pipe: its stdout is
 * a pipe (streamed), else a memory file read after the exit.
 */
static int proc_start(struct rclone *rc, const char *const *cmd, bool with_stdin, bool out_pipe,
                      struct proc *p, struct error *err)
{
    const char *argv[ARGS_MAX + 1];
    size_t n = 0;
    argv[n++] = rc->program;
    /* options before the command: its arguments follow "--" */
    if (rc->config[0]) {
        argv[n++] = "--config";
        argv[n++] = rc->config;
    }
    argv[n++] = "--timeout";
    argv[n++] = rc->timeout_arg;
    argv[n++] = "--contimeout";
    argv[n++] = rc->timeout_arg;
    argv[n++] = "--ask-password=false";
    for (size_t i = 0; i < rc->n_extra && n < ARGS_MAX / 2; i++)
        argv[n++] = rc->extra[i];
    for (const char *const *c = cmd; *c && n < ARGS_MAX; c++)
        argv[n++] = *c;
    argv[n] = NULL;
    char *envp[ENV_MAX];
    child_env(envp, ENV_MAX);

    proc_init(p, rc);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, r = 0;
    p->errf = memfd_create("rclone-stderr", MFD_CLOEXEC);
    if (p->errf < 0)
        return error_set_errno(err, -errno, "memfd_create");
    if (with_stdin && pipe2(in, O_CLOEXEC) < 0) {
        r = error_set_errno(err, -errno, "pipe");
        goto fail;
    }
    if (out_pipe) {
        if (pipe2(out, O_CLOEXEC) < 0) {
            r = error_set_errno(err, -errno, "pipe");
            goto fail;
        }
    } else {
        out[0] = memfd_create("rclone-stdout", MFD_CLOEXEC);
        out[1] = out[0] >= 0 ? dup(out[0]) : -1;
        if (out[1] < 0) {
            r = error_set_errno(err, -errno, "memfd_create");
            goto fail;
        }
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int e = posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    if (e == 0)
        e = posix_spawn_file_actions_adddup2(&fa, p->errf, STDERR_FILENO);
    if (e == 0)
        e = with_stdin
                ? posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO)
                : posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (e == 0)
        e = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    if (e == 0)
        e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (e == 0)
        e = posix_spawnattr_setsigmask(&attr, &none);
    if (e == 0)
        e = posix_spawnattr_setsigdefault(&attr, &all);
    if (e == 0)
        e = posix_spawn(&p->pid, rc->program, &fa, &attr, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (e != 0) {
        p->pid = -1;
        r = error_set_errno(err, -e, "cannot run '%s'", rc->program);
        goto fail;
    }
    running_set(rc, p->pid, true);
    p->pidfd = pidfd_open(p->pid, 0);
    close_fd(&in[0]);
    close_fd(&out[1]);
    p->in = in[1];
    p->out = out[0];
    return 0;
fail:
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&p->errf);
    return r;
}

/* Waits until the process exits, at most until deadline (monotonic ms), then kills it.
 * *ret_code: its exit code (128 + signal when killed by one). -ETIMEDOUT when killed here. */
static int proc_wait(struct proc *p, int64_t deadline, int *ret_code)
{
    close_fd(&p->in);
    int r = 0;
    while (p->pidfd >= 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            kill(p->pid, SIGKILL);
            r = -ETIMEDOUT;
            break;
        }
        struct pollfd pf = {.fd = p->pidfd, .events = POLLIN};
        int k = poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (k > 0)
            break;
        if (k < 0 && errno != EINTR) {
            kill(p->pid, SIGKILL);
            r = -errno;
            break;
        }
    }
    int status = 0;
    proc_reap(p, &status);
    close_fd(&p->pidfd);
    if (r == 0)
        *ret_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

/* Frees what p holds; a process still running is killed and reaped. */
static void proc_done(struct proc *p)
{
    close_fd(&p->in);
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        proc_reap(p, NULL);
    }
    p->pid = -1;
    close_fd(&p->pidfd);
    close_fd(&p->out);
    close_fd(&p->errf);
}

/* What rclone said on stderr: its last lines, time stamps cut, joined by "; ". */
static void stderr_text(const struct proc *p, char *out, size_t size)
{
    char buf[4096];
    out[0] = '\0';
    off_t end = p->errf >= 0 ? lseek(p->errf, 0, SEEK_END) : -1;
    if (end <= 0)
        return;
    off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(p->errf, buf, sizeof(buf) - 1, from);
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
        if (!*line)
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

/* The error of a call that exited with code: -ENOENT for rclone's "not found" codes. */
static int rclone_failure(const struct proc *p, int code, const char *what, struct error *err)
{
    char text[STDERR_SHOW];
    stderr_text(p, text, sizeof(text));
    int r = code == 3 || code == 4 ? -ENOENT : -EIO;
    return error_set(err, r, "%s: rclone exited with %d%s%s", what, code, text[0] ? ": " : "",
                     text);
}

/* Waits for p (started with its stdout in a memory file) to end, deadline_s seconds at most, and
 * frees it; on success *ret_out (may be NULL) gets its stdout, malloc'd and NUL-terminated, at
 * most JSON_MAX bytes. */
static int proc_collect(struct proc *p_, int deadline_s, const char *what, char **ret_out,
                        struct error *err)
{
    struct proc p = *p_;
    int code = 0;
    proc_init(p_, p.rc);
    int r = proc_wait(&p, now_ms() + (int64_t)deadline_s * 1000, &code);
    if (r == -ETIMEDOUT) {
        r = error_set(err, r, "%s: rclone did not finish in %d s", what, deadline_s);
        goto out;
    }
    if (r < 0) {
        r = error_set_errno(err, r, "%s: waiting for rclone", what);
        goto out;
    }
    if (code != 0) {
        r = rclone_failure(&p, code, what, err);
        goto out;
    }
    if (ret_out) {
        off_t len = lseek(p.out, 0, SEEK_END);
        if (len < 0 || len > JSON_MAX) {
            r = error_set(err, -EFBIG, "%s: rclone's answer is too long", what);
            goto out;
        }
        char *buf = malloc((size_t)len + 1);
        if (!buf) {
            r = error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        ssize_t k = len ? pread(p.out, buf, (size_t)len, 0) : 0;
        if (k != (ssize_t)len) {
            free(buf);
            r = error_set(err, -EIO, "%s: reading rclone's answer", what);
            goto out;
        }
        buf[len] = '\0';
        *ret_out = buf;
    }
out:
    proc_done(&p);
    return r;
}

/* Runs cmd to its end: proc_collect's. */
static int run(struct rclone *rc, const char *const *cmd, int deadline_s, const char *what,
               char **ret_out, struct error *err)
{
    struct proc p;
    int r = proc_start(rc, cmd, false, false, &p, err);
    if (r < 0)
        return error_prefix(err, "%s", what);
    return proc_collect(&p, deadline_s, what, ret_out, err);
}

/* Seconds a control call (lsjson, moveto, delete) may take: a server-side move of a large file
 * may be a copy on backends without moves. */
static int control_deadline(const struct rclone *rc)
{
    return rc->timeout_s * 10 < 120 ? 120 : rc->timeout_s * 10;
}

/* Seconds rclone may take no data (rcat) or give none (cat) before it is given up: long, since
 * a backend uploads a chunk it has read before it reads on (B2's are 96 MiB: minutes on a slow
 * uplink); a stalled network is rclone's own --timeout to notice, which ends it. */
static int stall_limit(const struct rclone *rc)
{
    return rc->timeout_s * 10 < 600 ? 600 : rc->timeout_s * 10;
}

/* root + "/" + rel into out. */
static int join(const struct rclone *rc, const char *rel, char *out, size_t size)
{
    size_t rl = strlen(rc->root);
    bool bare = rl > 0 && (rc->root[rl - 1] == ':' || rc->root[rl - 1] == '/');
    int n = snprintf(out, size, "%s%s%s", rc->root, bare || !rel[0] ? "" : "/", rel);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* ---- what lsjson says ---- */

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

/* Starts lsjson --stat of path (with hashes when hashes) as p. */
static int stat_start(struct rclone *rc, const char *path, bool hashes, struct proc *p,
                      struct error *err)
{
    const char *with[] = {"lsjson", "--stat", "--hash-type", "md5", "--hash-type",
                          "sha1",   "--",     path,          NULL};
    const char *without[] = {"lsjson", "--stat", "--", path, NULL};
    int r = proc_start(rc, hashes ? with : without, false, false, p, err);
    return r < 0 ? error_prefix(err, "looking at '%s'", path) : 0;
}

/* The answer of stat_start's p about path (p is freed): -ENOENT when nothing is there. */
static int stat_finish(struct proc *p, const char *path, struct object_info *ret, struct error *err)
{
    char what[DEST_REMOTE_MAX + 32], *out = NULL;
    snprintf(what, sizeof(what), "looking at '%s'", path);
    int r = proc_collect(p, control_deadline(p->rc), what, &out, err);
    if (r < 0)
        return r;
    json_object *o = json_tokener_parse(out);
    free(out);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return error_set(err, -EBADMSG, "%s: rclone's answer is not JSON", what);
    }
    /* bucket-based remotes (S3, B2, ...) answer for a path that names nothing with a folder
     * without a name (any prefix may be a folder there) */
    json_object *name;
    bool nameless = !json_object_object_get_ex(o, "Name", &name) ||
                    !json_object_is_type(name, json_type_string) ||
                    !json_object_get_string(name)[0];
    info_of(o, ret);
    json_object_put(o);
    if (nameless && ret->is_dir)
        return error_set(err, -ENOENT, "%s: nothing there", what);
    return 0;
}

/* lsjson --stat of path (with hashes when hashes): -ENOENT when nothing is there. */
static int stat_path(struct rclone *rc, const char *path, bool hashes, struct object_info *ret,
                     struct error *err)
{
    struct proc p;
    int r = stat_start(rc, path, hashes, &p, err);
    return r < 0 ? r : stat_finish(&p, path, ret, err);
}

/* Deletes one file, as a best effort. */
static void delete_quietly(struct rclone *rc, const char *path)
{
    const char *cmd[] = {"deletefile", "--", path, NULL};
    struct error e;
    run(rc, cmd, control_deadline(rc), "delete", NULL, &e);
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
    pthread_mutex_destroy(&rc->lock);
    free(rc);
}

/* Kills the rclone processes of this destination: their calls fail now. Any thread. */
static void rclone_interrupt(void *priv)
{
    struct rclone *rc = priv;
    pthread_mutex_lock(&rc->lock);
    for (size_t i = 0; i < RUNNING_MAX; i++)
        if (rc->running[i] > 0)
            kill(rc->running[i], SIGKILL);
    pthread_mutex_unlock(&rc->lock);
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
        if (a[0] != '-' || !printable(a))
            return error_set(err, -EINVAL,
                             "rclone.extra_args: '%.48s' is not an option (one \"--name=value\" "
                             "per item)",
                             a);
    }
    if (cfg->rclone.n_extra_args > ARGS_MAX / 2 - 8)
        return error_set(err, -EINVAL, "rclone.extra_args: at most %d items", ARGS_MAX / 2 - 8);
    struct rclone *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&rc->lock, NULL);
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
    char dir[DEST_REMOTE_MAX], *out = NULL;
    int r = join(rc, TMP_DIR, dir, sizeof(dir));
    if (r < 0)
        return error_set(err, r, "rclone.remote too long");
    const char *cmd[] = {"lsjson", "--files-only", "--", dir, NULL};
    r = run(rc, cmd, control_deadline(rc), "listing the temporaries", &out, err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    json_object *list = json_tokener_parse(out);
    free(out);
    if (!list || !json_object_is_type(list, json_type_array)) {
        json_object_put(list);
        return error_set(err, -EBADMSG, "listing the temporaries: rclone's answer is not JSON");
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
            delete_quietly(rc, path);
            deleted++;
        }
    }
    json_object_put(list);
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
    const char *cmd[] = {"mkdir", "--", dir, NULL};
    int r = run(rc, cmd, control_deadline(rc), what, NULL, err);
    if (r < 0)
        return r;
    return clean_temporaries(rc, err);
}

/* Streams len bytes at buf into p's stdin. */
static int feed(struct rclone *rc, struct proc *p, const void *buf, size_t len, struct error *err)
{
    const uint8_t *b = buf;
    int64_t deadline = now_ms() + (int64_t)stall_limit(rc) * 1000;
    while (len > 0) {
        ssize_t k = write(p->in, b, len);
        if (k > 0) {
            b += k;
            len -= (size_t)k;
            deadline = now_ms() + (int64_t)stall_limit(rc) * 1000;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN) {
            int64_t left = deadline - now_ms();
            struct pollfd pf = {.fd = p->in, .events = POLLOUT};
            if (left <= 0 || poll(&pf, 1, (int)left) == 0)
                return error_set(err, -ETIMEDOUT, "rclone took no data for %d s", stall_limit(rc));
            continue;
        }
        return k < 0 ? -errno : -EIO;
    }
    return 0;
}

/* Uploads a small probe through rcat to tmp. */
static int put_small(struct rclone *rc, const char *tmp, const void *buf, size_t len,
                     struct error *err)
{
    char size[24], what[DEST_REMOTE_MAX + 32];
    snprintf(size, sizeof(size), "%zu", len);
    snprintf(what, sizeof(what), "writing '%s'", tmp);
    const char *cmd[] = {"rcat", "--size", size, "--", tmp, NULL};
    struct proc p;
    int code = 0;
    int r = proc_start(rc, cmd, true, false, &p, err);
    if (r < 0)
        return error_prefix(err, "%s", what);
    fcntl(p.in, F_SETFL, O_NONBLOCK);
    int w = feed(rc, &p, buf, len, err);
    r = proc_wait(&p, now_ms() + (int64_t)control_deadline(rc) * 1000, &code);
    if (r < 0)
        r = error_set_errno(err, r, "%s", what);
    else if (code != 0)
        r = rclone_failure(&p, code, what, err);
    else if (w < 0)
        r = error_set_errno(err, w, "%s", what);
    proc_done(&p);
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
    r = stat_path(rc, tmp, false, &info, err);
    if (r == 0 && info.size != sizeof(body) - 1)
        r = error_set(err, -EIO, "the probe '%s' has %" PRIu64 " bytes, %zu written", tmp,
                      info.size, sizeof(body) - 1);
    if (r < 0)
        goto out;
    const char *del[] = {"deletefile", "--", tmp, NULL};
    r = run(rc, del, control_deadline(rc), "deleting the probe", NULL, err);
    if (r == 0)
        snprintf(detail, detail_size, "rclone remote '%s': a probe file written and deleted",
                 rc->root);
    return r;
out:
    delete_quietly(rc, tmp);
    return r;
}

static int rclone_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct rclone_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->rc = priv;
    *ret_conn = c;
    return 0;
}

static void rclone_conn_free(void *conn)
{
    free(conn);
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
    proc_done(&f->look); /* it asked about the name open had: finish asks again */
    proc_init(&f->look, f->rc);
    snprintf(f->name, sizeof(f->name), "%s", target);
    if ((size_t)snprintf(f->dir, sizeof(f->dir), "%s", folder) >= sizeof(f->dir))
        return error_set(err, -ENAMETOOLONG, "the path of '%s' is too long", target);
    return candidate_path(f, 0, f->final0, sizeof(f->final0), err);
}

static int rclone_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct rclone *rc = ((struct rclone_conn *)conn)->rc;
    if (!dest_name_valid(item->target))
        return error_set(err, -EINVAL, "unusable file name");
    struct rclone_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    proc_init(&f->p, rc);
    proc_init(&f->look, rc);
    f->rc = rc;
    f->size = item->size;
    snprintf(f->name, sizeof(f->name), "%s", item->target);
    snprintf(f->dir, sizeof(f->dir), "%s", item->folder);
    int r = candidate_path(f, 0, f->final0, sizeof(f->final0), err);
    if (r < 0) {
        free(f);
        return r;
    }
    r = temp_path(rc, "", f->tmp, sizeof(f->tmp));
    if (r < 0) {
        free(f);
        return error_set(err, r, "rclone.remote too long");
    }
    /* what is at the name is asked while the file streams: one call less to wait for at the
     * end (when it cannot start, finish asks itself) */
    struct error e;
    if (stat_start(rc, f->final0, true, &f->look, &e) < 0)
        proc_init(&f->look, rc);
    char size[24];
    snprintf(size, sizeof(size), "%" PRIu64, item->size);
    const char *cmd[] = {"rcat", "--size", size, "--", f->tmp, NULL};
    r = proc_start(rc, cmd, true, false, &f->p, err);
    if (r < 0) {
        proc_done(&f->look);
        free(f);
        return error_prefix(err, "uploading '%s'", item->name);
    }
    fcntl(f->p.in, F_SETFL, O_NONBLOCK);
    *ret_file = f;
    return 0;
}

/* rcat's end, after a failed write or at finish: 0 when it exited well. */
static int rcat_end(struct rclone_file *f, struct error *err)
{
    int code = 0;
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "uploading '%s'", f->tmp);
    int r = proc_wait(&f->p, now_ms() + (int64_t)control_deadline(f->rc) * 1000, &code);
    if (r < 0)
        return error_set_errno(err, r, "%s", what);
    if (code != 0)
        return rclone_failure(&f->p, code, what, err);
    return 0;
}

static int rclone_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct rclone_file *f = file;
    if (f->sent + len > f->size)
        return error_set(err, -EIO, "the file grew while it was read (%" PRIu64 " bytes expected)",
                         f->size);
    int r = feed(f->rc, &f->p, buf, len, err);
    if (r == -EPIPE || r == -EIO) { /* rclone gave up: its exit says why */
        int e = rcat_end(f, err);
        return e < 0 ? e : error_set(err, -EIO, "rclone stopped reading '%s'", f->tmp);
    }
    if (r < 0)
        return r;
    f->sent += len;
    return 0;
}

static void file_free(struct rclone_file *f, bool delete_tmp)
{
    proc_done(&f->p);
    proc_done(&f->look);
    if (delete_tmp)
        delete_quietly(f->rc, f->tmp);
    free(f);
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
    r = rcat_end(f, err);
    if (r < 0)
        goto out;
    struct object_info info;
    r = stat_path(rc, f->tmp, verify, &info, err);
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
        struct object_info there;
        if (k == 0 && f->look.pid > 0) /* asked while the file streamed */
            r = stat_finish(&f->look, final, &there, err);
        else
            r = stat_path(rc, final, true, &there, err);
        if (r == 0) {
            if (same_content(&there, f->size, digest)) {
                existed = true;
                goto result;
            }
            continue;
        }
        if (r != -ENOENT)
            goto out;
        /* --ignore-existing: rclone leaves a file that appeared at final since it was looked
         * at, and the temporary with it (moveto replaces files otherwise, --immutable or not);
         * the temporary being gone afterwards is what says it moved */
        const char *cmd[] = {"moveto", "--ignore-existing", "--", f->tmp, final, NULL};
        char what[DEST_REMOTE_MAX + 32];
        snprintf(what, sizeof(what), "moving into place '%s'", final);
        r = run(rc, cmd, control_deadline(rc), what, NULL, err);
        if (r < 0)
            goto out;
        r = stat_path(rc, f->tmp, false, &there, err);
        if (r == -ENOENT) {
            /* the content was verified as the temporary; a move is a rename on the server, or
             * rclone's own copy, which it checks by hash, then a delete */
            tmp_left = false;
            goto result;
        }
        if (r < 0)
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

static int rclone_read_copy(void *priv, const char *remote,
                            int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                            struct error *err)
{
    struct rclone *rc = priv;
    char prefix[DEST_REMOTE_MAX];
    if (join(rc, "", prefix, sizeof(prefix)) < 0)
        return error_set(err, -EINVAL, "not below the remote");
    size_t pl = strlen(prefix);
    bool bare = pl > 0 && (prefix[pl - 1] == ':' || prefix[pl - 1] == '/');
    if (strncmp(remote, prefix, pl) != 0 || (!bare && remote[pl] != '/') || strstr(remote, "/../"))
        return error_set(err, -EINVAL, "'%s' is not below '%s'", remote, rc->root);
    char what[DEST_REMOTE_MAX + 32];
    snprintf(what, sizeof(what), "reading '%s'", remote);
    const char *cmd[] = {"cat", "--", remote, NULL};
    struct proc p;
    int code = 0;
    uint8_t *buf = malloc(DEST_READ_CHUNK);
    if (!buf)
        return error_set(err, -ENOMEM, "out of memory");
    int r = proc_start(rc, cmd, false, true, &p, err);
    if (r < 0) {
        free(buf);
        return error_prefix(err, "%s", what);
    }
    size_t have = 0;
    int cb = 0;
    for (;;) {
        struct pollfd pf = {.fd = p.out, .events = POLLIN};
        int k = poll(&pf, 1, stall_limit(rc) * 1000);
        if (k == 0) {
            r = error_set(err, -ETIMEDOUT, "%s: no data for %d s", what, stall_limit(rc));
            goto out;
        }
        if (k < 0 && errno == EINTR)
            continue;
        ssize_t n = read(p.out, buf + have, DEST_READ_CHUNK - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = error_set_errno(err, -errno, "%s", what);
            goto out;
        }
        have += (size_t)n;
        if (have == DEST_READ_CHUNK || (n == 0 && have > 0)) {
            cb = fn(buf, have, arg);
            have = 0;
            if (cb < 0)
                break;
        }
        if (n == 0)
            break;
    }
    close_fd(&p.out);
    r = proc_wait(&p, now_ms() + (int64_t)control_deadline(rc) * 1000, &code);
    if (cb < 0) {
        r = cb;
        goto out;
    }
    if (r < 0)
        r = error_set_errno(err, r, "%s", what);
    else if (code != 0)
        r = rclone_failure(&p, code, what, err);
out:
    proc_done(&p);
    free(buf);
    return r;
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
