/* SPDX-License-Identifier: MIT */
/*
 * Card mounting (see cardmount.h for the contract).
 *
 * Inside: cardmount_mount makes the folder, tries libmount, and on "unknown filesystem type"
 * runs a FUSE program itself (posix_spawn, waited for through a pidfd with a deadline, since the
 * daemon it leaves behind must inherit nothing of ours), then checks the mount's flags and fixes
 * them by bind remount. No state lives between calls.
 */
#include "cardmount.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libmount.h>

#include "log.h"

#define MOUNT_OPTIONS "ro,nosuid,nodev,noexec"
#define FUSE_MOUNT_TIMEOUT_MS 15000 /* a FUSE mounter still running then is killed */
#define HELPER_OUTPUT_MAX 1024      /* the last bytes a FUSE mounter printed, for errors */

void cardmount_folder_name(const char *label, const char *uuid, const char *fallback, char *buf,
                           size_t size)
{
    const char *src = label && label[0] ? label : uuid && uuid[0] ? uuid : fallback;
    size_t n = 0;
    for (const char *c = src ? src : ""; *c && n + 1 < size; c++) {
        char ch = *c;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || (ch == '.' && n > 0);
        buf[n++] = ok ? ch : '_';
    }
    if (n == 0 && size > 4)
        n = (size_t)snprintf(buf, size, "card");
    if (size)
        buf[n < size ? n : size - 1] = '\0';
}

/* ---- folders ---- */

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        if (c == '\0')
            return 0;
        *p = c;
    }
}

static bool is_mount_point(const char *path)
{
    char parent[PATH_MAX];
    struct stat a, b;
    if (snprintf(parent, sizeof(parent), "%s/..", path) >= (int)sizeof(parent))
        return false;
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* ---- mounting ---- */

/*
 * FUSE mounters for filesystems whose kernel driver may be missing (a kernel built without vfat
 * or exfat). They are used only after libmount answered "unknown filesystem type" without
 * running a helper of its own: libmount prefers a /sbin/mount.<type> when one exists (ntfs-3g
 * installs mount.ntfs, for one), but Debian's exfat-fuse no longer installs mount.exfat, and
 * fusefat has no mount.vfat at all. Each runs as `PROGRAM -o OPTIONS DEVICE FOLDER`, the syntax
 * all of them share, with the device opened read-only ("ro"). Which of nosuid, nodev and noexec
 * a mounter honours differs (mount.exfat-fuse passes on only "ro"), so enforce_mount_flags checks
 * the result and sets what is missing.
 */
struct fuse_mounter {
    const char *fstype;  /* libblkid's name */
    const char *program; /* looked up in program_dirs */
    const char *package; /* the Debian package that installs it */
    bool fsname;         /* add fsname=DEVICE, so the mount table names the device as source */
    uint64_t max_bytes;  /* larger filesystems are refused (0: no limit) */
    const char *caveat;  /* logged as a warning whenever it is used */
};

static const struct fuse_mounter fuse_mounters[] = {
    {.fstype = "exfat", .program = "mount.exfat-fuse", .package = "exfat-fuse"},
    /* fusefat 0.1a reads no directory stored past 2 GiB (its folders look empty): a bigger card
     * would be "backed up" with files missing, so it is refused instead. */
    {.fstype = "vfat",
     .program = "fusefat",
     .package = "fusefat",
     .fsname = true,
     .max_bytes = UINT64_C(2) << 30,
     .caveat = "fusefat reports modification times one month late: files without a capture date "
               "in their metadata are filed under the wrong month"},
    {.fstype = "ntfs", .program = "ntfs-3g", .package = "ntfs-3g"},
};

/* Root-owned system folders only: never $PATH. */
static const char *const program_dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                           "/usr/bin",        "/sbin",          "/bin"};

static bool find_program(const char *name, char *buf, size_t size)
{
    for (size_t i = 0; i < sizeof(program_dirs) / sizeof(program_dirs[0]); i++) {
        struct stat st;
        int n = snprintf(buf, size, "%s/%s", program_dirs[i], name);
        if (n > 0 && (size_t)n < size && stat(buf, &st) == 0 && S_ISREG(st.st_mode) &&
            access(buf, X_OK) == 0)
            return true;
    }
    return false;
}

/* Appends what fd has now to out (size > 1), keeping the last bytes. Returns true at EOF. */
static bool drain_output(int fd, char *out, size_t size, size_t *len)
{
    char buf[512];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof(buf));
        if (k == 0)
            return true;
        if (k < 0)
            return errno != EAGAIN && errno != EINTR;
        for (ssize_t i = 0; i < k; i++) {
            if (*len + 1 >= size) {
                memmove(out, out + size / 2, *len - size / 2);
                *len -= size / 2;
            }
            out[(*len)++] = buf[i];
        }
        out[*len] = '\0';
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Runs argv (argv[0] an absolute path) and waits until it exits, at most FUSE_MOUNT_TIMEOUT_MS,
 * then kills it. The FUSE daemon it leaves behind lives on, so it gets nothing of ours: stdin
 * /dev/null, stdout and stderr into out (the last bytes, NUL-terminated), no other descriptor,
 * the default signal mask and dispositions (the service blocks SIGTERM and others for its
 * signalfd), and of the environment (which may hold secrets) only a PATH and TZ (exfat-fuse
 * reads a timestamp without a UTC offset as local time). *ret_status: the wait status.
 * Errors: -ETIMEDOUT (killed), or what posix_spawn, pipe2 or waitpid said.
 */
static int run_helper(char *const argv[], int *ret_status, char *out, size_t size)
{
    char path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", tz[256];
    char *envp[3] = {path, NULL, NULL};
    const char *tzv = getenv("TZ");
    if (tzv && snprintf(tz, sizeof(tz), "TZ=%s", tzv) < (int)sizeof(tz))
        envp[1] = tz;
    out[0] = '\0';

    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* dup2 first: with our stdin closed, the pipe may be fd 0 */
    int r = posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
    if (r == 0)
        r = posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
    if (r == 0)
        r = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (r == 0)
        r = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    if (r == 0)
        r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (r == 0)
        r = posix_spawnattr_setsigmask(&attr, &none);
    if (r == 0)
        r = posix_spawnattr_setsigdefault(&attr, &all);
    pid_t pid = -1;
    if (r == 0)
        r = posix_spawn(&pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(p[1]);
    if (r != 0) {
        close(p[0]);
        return -r;
    }

    /* without a pidfd (kernel before 5.3) the end of the output stands for the exit */
    int pidfd = pidfd_open(pid, 0);
    int64_t deadline = now_ms() + FUSE_MOUNT_TIMEOUT_MS;
    size_t len = 0;
    bool eof = false, exited = false;
    int status = 0;
    r = 0;
    while (!exited) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            r = -ETIMEDOUT;
            break;
        }
        if (eof && pidfd < 0)
            break;
        struct pollfd fds[2] = {{.fd = eof ? -1 : p[0], .events = POLLIN},
                                {.fd = pidfd, .events = POLLIN}};
        if (poll(fds, 2, (int)left) < 0 && errno != EINTR) {
            kill(pid, SIGKILL);
            r = -errno;
            break;
        }
        if (fds[0].revents)
            eof = drain_output(p[0], out, size, &len);
        if (fds[1].revents)
            exited = true;
    }
    if (waitpid(pid, &status, 0) < 0 && r == 0)
        r = -errno;
    if (!eof)
        drain_output(p[0], out, size, &len);
    if (pidfd >= 0)
        close(pidfd);
    close(p[0]);
    if (r == 0)
        *ret_status = status;
    return r;
}

/* The last non-empty line of a helper's output, trailing white space cut (in place). */
static const char *last_line(char *out)
{
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = '\0';
    const char *nl = strrchr(out, '\n');
    return nl ? nl + 1 : out;
}

static int device_bytes(const char *devnode, uint64_t *ret)
{
    int fd = open(devnode, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    uint64_t n = 0;
    int r = ioctl(fd, BLKGETSIZE64, &n) < 0 ? -errno : 0;
    close(fd);
    if (r == 0)
        *ret = n;
    return r;
}

/* Mounts dev (of type) on target with a FUSE mounter, after the kernel refused the type (why).
 * ret_via: how, for the log. */
static int mount_fuse(const char *dev, const char *type, const char *target, const char *why,
                      char *ret_via, size_t via_size, struct error *err)
{
    const struct fuse_mounter *m = NULL;
    for (size_t i = 0; i < sizeof(fuse_mounters) / sizeof(fuse_mounters[0]) && !m; i++)
        if (strcmp(fuse_mounters[i].fstype, type) == 0)
            m = &fuse_mounters[i];
    if (!m)
        return error_set(err, -ENODEV,
                         "cannot mount '%s' (%s): %s, and SnapSync knows no FUSE program for %s",
                         dev, type, why, type);
    char path[PATH_MAX];
    if (!find_program(m->program, path, sizeof(path)))
        return error_set(err, -ENODEV,
                         "cannot mount '%s' (%s): the kernel has no %s driver (%s) and %s is not "
                         "installed: install the Debian package %s",
                         dev, type, type, why, m->program, m->package);
    uint64_t bytes = 0;
    if (m->max_bytes && device_bytes(dev, &bytes) == 0 && bytes > m->max_bytes)
        return error_set(err, -EFBIG,
                         "cannot mount '%s' (%s): the kernel has no %s driver (%s), and %s misses "
                         "files on filesystems over %" PRIu64 " MiB (this one has %" PRIu64
                         " MiB): use a kernel with the %s driver",
                         dev, type, type, why, m->program, m->max_bytes >> 20, bytes >> 20, type);

    char opts[512];
    int n = snprintf(opts, sizeof(opts), "%s", MOUNT_OPTIONS);
    /* a comma would end the option early; without fsname the mount is still fine */
    if (m->fsname && !strpbrk(dev, ",\\") && n > 0 && (size_t)n < sizeof(opts))
        snprintf(opts + n, sizeof(opts) - (size_t)n, ",fsname=%s,subtype=%s", dev, m->program);
    log_info("'%s': the kernel has no %s driver (%s): mounting it through FUSE with '%s'", dev,
             type, why, path);
    if (m->caveat)
        log_warning("'%s': %s", dev, m->caveat);

    char dash_o[] = "-o";
    char *argv[] = {path, dash_o, opts, (char *)dev, (char *)target, NULL};
    char out[HELPER_OUTPUT_MAX];
    int status = 0;
    int r = run_helper(argv, &status, out, sizeof(out));
    if (out[0])
        log_debug("'%s' printed: %s", path, out);
    if (r < 0) {
        umount2(target, MNT_DETACH); /* in case it got as far as mounting */
        if (r == -ETIMEDOUT)
            return error_set(err, r, "cannot mount '%s' (%s): '%s' did not finish in %d s", dev,
                             type, path, FUSE_MOUNT_TIMEOUT_MS / 1000);
        return error_set_errno(err, r, "cannot mount '%s' (%s): cannot run '%s'", dev, type, path);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        const char *said = last_line(out);
        umount2(target, MNT_DETACH);
        if (WIFSIGNALED(status))
            return error_set(err, -EIO, "cannot mount '%s' (%s): '%s' was killed by signal %d%s%s",
                             dev, type, path, WTERMSIG(status), said[0] ? ": " : "", said);
        return error_set(err, -EIO, "cannot mount '%s' (%s): '%s' exited with status %d%s%s", dev,
                         type, path, WEXITSTATUS(status), said[0] ? ": " : "", said);
    }
    if (!is_mount_point(target))
        return error_set(err, -EIO, "cannot mount '%s' (%s): '%s' succeeded but mounted nothing",
                         dev, type, path);
    snprintf(ret_via, via_size, "through FUSE ('%s')", path);
    return 0;
}

/*
 * Whatever mounted the card (the kernel, a libmount helper, a FUSE mounter), the mount must be
 * read-only, nosuid, nodev and noexec. Mounters honour different subsets of these options, so
 * check, and set what is missing with a bind remount (which changes this mount point's flags
 * only, for any filesystem).
 */
static int enforce_mount_flags(const char *target, struct error *err)
{
    const unsigned long want = ST_RDONLY | ST_NOSUID | ST_NODEV | ST_NOEXEC;
    struct statvfs sv;
    if (statvfs(target, &sv) < 0)
        return error_set_errno(err, -errno, "cannot check the mount on '%s'", target);
    if ((sv.f_flag & want) == want)
        return 0;
    if (mount(NULL, target, NULL,
              MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 ||
        statvfs(target, &sv) < 0)
        return error_set_errno(err, -errno, "cannot make the mount on '%s' " MOUNT_OPTIONS, target);
    if ((sv.f_flag & want) != want)
        return error_set(err, -EPERM, "the mount on '%s' stays writable or executable", target);
    return 0;
}

/* With libmount (the kernel's driver, or a /sbin/mount.<type> helper), else through a FUSE
 * mounter. */
int cardmount_mount(const char *device, const char *fstype, const char *label, const char *uuid,
                    const char *base, struct cardmount *ret, struct error *err)
{
    struct cardmount m = {0};
    char name[128], target[PATH_MAX];
    const char *dev_base = strrchr(device, '/');
    if (!fstype)
        fstype = "";
    cardmount_folder_name(label, uuid, dev_base ? dev_base + 1 : "card", name, sizeof(name));
    int r = mkdir_p(base, 0755);
    if (r < 0)
        return error_set_errno(err, r, "cannot create '%s'", base);
    bool made = false;
    for (int i = 1; i < 100 && !made; i++) {
        if (i == 1)
            snprintf(target, sizeof(target), "%s/%s", base, name);
        else
            snprintf(target, sizeof(target), "%s/%s_%d", base, name, i);
        if (mkdir(target, 0755) == 0)
            made = true;
        else if (errno == EEXIST && !is_mount_point(target) && rmdir(target) == 0 &&
                 mkdir(target, 0755) == 0)
            made = true; /* an empty folder left behind */
    }
    if (!made)
        return error_set(err, -EEXIST, "no free folder for '%s' in '%s'", name, base);

    struct libmnt_context *cx = mnt_new_context();
    if (!cx) {
        rmdir(target);
        return error_set(err, -ENOMEM, "out of memory");
    }
    int rc = -EINVAL;
    if (mnt_context_set_source(cx, device) == 0 && mnt_context_set_target(cx, target) == 0 &&
        (!fstype[0] || mnt_context_set_fstype(cx, fstype) == 0) &&
        mnt_context_set_options(cx, MOUNT_OPTIONS) == 0)
        rc = mnt_context_mount(cx);
    r = 0;
    if (rc != 0 || mnt_context_get_status(cx) != 1) {
        char msg[256] = "";
        mnt_context_get_excode(cx, rc, msg, sizeof(msg));
        int code = mnt_context_syscall_called(cx) && mnt_context_get_syscall_errno(cx)
                       ? -mnt_context_get_syscall_errno(cx)
                       : -EIO;
        /* ENODEV: the kernel has no driver for this type, and libmount found no helper */
        if (code == -ENODEV && !mnt_context_helper_executed(cx) && fstype[0])
            r = mount_fuse(device, fstype, target, msg[0] ? msg : "unknown filesystem type", m.via,
                           sizeof(m.via), err);
        else
            r = error_set(err, code, "cannot mount '%s' (%s) on '%s': %s", device,
                          fstype[0] ? fstype : "?", target, msg[0] ? msg : "failed");
    } else if (mnt_context_helper_executed(cx)) {
        snprintf(m.via, sizeof(m.via), "by libmount's helper mount.%s", fstype);
    }
    mnt_free_context(cx);
    if (r == 0) {
        r = enforce_mount_flags(target, err);
        if (r < 0)
            umount2(target, MNT_DETACH);
    }
    if (r < 0) {
        rmdir(target);
        return r;
    }
    snprintf(m.target, sizeof(m.target), "%s", target);
    *ret = m;
    return 0;
}

int cardmount_unmount(const char *mount_point, bool lazy, struct error *err)
{
    struct libmnt_context *cx = mnt_new_context();
    if (!cx)
        return error_set(err, -ENOMEM, "out of memory");
    int rc = mnt_context_set_target(cx, mount_point);
    if (rc == 0 && lazy)
        rc = mnt_context_enable_lazy(cx, 1);
    if (rc == 0)
        rc = mnt_context_umount(cx);
    int r = 0;
    if (rc != 0 || mnt_context_get_status(cx) != 1) {
        char msg[256] = "";
        mnt_context_get_excode(cx, rc, msg, sizeof(msg));
        if (mnt_context_syscall_called(cx) && mnt_context_get_syscall_errno(cx))
            r = -mnt_context_get_syscall_errno(cx);
        else if (!is_mount_point(mount_point))
            r = -EINVAL;
        else
            r = -EIO;
        error_set(err, r, "cannot unmount '%s': %s", mount_point, msg[0] ? msg : "failed");
    }
    mnt_free_context(cx);
    if (r == 0)
        rmdir(mount_point);
    return r;
}
