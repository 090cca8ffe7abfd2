/* SPDX-License-Identifier: MIT */
/*
 * Card detection (see detector.h for the rules).
 *
 * Inside: one epoll instance holds the three sources (the libudev monitor socket, libmount's
 * monitor fd, a timerfd), so the owner waits on a single fd. Every card the detector knows is an
 * entry in a small fixed table, keyed by its device node (or, for a mount of something that is
 * not a block device, by its mount point). An entry outlives the mount: a card that was backed
 * up and unmounted stays known until its device goes away or its media changes, so a rescan
 * does not mount and back it up again.
 *
 * Events are handled idempotently (an add for a known device with the same UUID does nothing),
 * so the periodic rescan and duplicate events are harmless.
 *
 * Mounting tries libmount first; on "unknown filesystem type" it runs a FUSE program itself
 * (posix_spawn, waited for through a pidfd with a deadline, since the daemon it leaves behind
 * must inherit nothing of ours), then checks the mount's flags and fixes them by bind remount.
 */
#include "detector.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkid.h>
#include <libmount.h>
#include <libudev.h>

#include "log.h"

#define DETECTOR_CARDS_MAX 64
#define MOUNT_OPTIONS "ro,nosuid,nodev,noexec"
#define FUSE_MOUNT_TIMEOUT_MS 15000 /* a FUSE mounter still running then is killed */
#define HELPER_OUTPUT_MAX 1024      /* the last bytes a FUSE mounter printed, for errors */
#define UDEV_CONTROL "/run/udev/control"

enum { SRC_UDEV = 1, SRC_MOUNTS, SRC_TIMER };

struct entry {
    bool used;
    bool active;     /* reported through card_added, not yet through card_removed */
    bool from_mount; /* found in the mount table, not through a device: forgotten on unmount */
    char via[288];   /* how SnapSync mounted it when not by the kernel alone, for the log */
    struct detector_card card;
};

struct detector {
    const struct config *cfg;
    struct detector_callbacks cb;
    struct udev *udev;
    struct udev_monitor *mon;
    struct libmnt_monitor *mnt_mon;
    int epfd;
    int timerfd;
    const char *source;
    struct entry entries[DETECTOR_CARDS_MAX];
};

/* ---- rules ---- */

static bool name_matches(char *const *patterns, const char *name)
{
    for (size_t i = 0; patterns && patterns[i]; i++)
        if (fnmatch(patterns[i], name, 0) == 0)
            return true;
    return false;
}

bool detector_device_accepted(const struct config *cfg, const char *name, bool removable,
                              const char *bus)
{
    if (!name || !name[0] || name_matches(cfg->sd_card.ignore_devices, name))
        return false;
    if (removable || (bus && (strcmp(bus, "usb") == 0 || strcmp(bus, "mmc") == 0)))
        return true;
    return name_matches(cfg->sd_card.devices, name);
}

void detector_folder_name(const char *label, const char *uuid, const char *fallback, char *buf,
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

/* ---- helpers ---- */

static bool is_beneath(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return strncmp(path, dir, n) == 0 && path[n] == '/' && path[n + 1] != '\0';
}

static bool is_within(const char *path, const char *dir)
{
    return strcmp(path, dir) == 0 || is_beneath(path, dir);
}

static struct entry *find_device(struct detector *d, const char *devnode)
{
    for (size_t i = 0; i < DETECTOR_CARDS_MAX; i++)
        if (d->entries[i].used && d->entries[i].card.device[0] &&
            strcmp(d->entries[i].card.device, devnode) == 0)
            return &d->entries[i];
    return NULL;
}

static struct entry *find_mount(struct detector *d, const char *target)
{
    for (size_t i = 0; i < DETECTOR_CARDS_MAX; i++)
        if (d->entries[i].used && strcmp(d->entries[i].card.mount_point, target) == 0)
            return &d->entries[i];
    return NULL;
}

static struct entry *new_entry(struct detector *d)
{
    for (size_t i = 0; i < DETECTOR_CARDS_MAX; i++)
        if (!d->entries[i].used) {
            memset(&d->entries[i], 0, sizeof(d->entries[i]));
            d->entries[i].used = true;
            return &d->entries[i];
        }
    log_warning("more than %d cards at once; ignoring the newest", DETECTOR_CARDS_MAX);
    return NULL;
}

/* Reports the card gone (if it was reported), unmounts what we mounted, forgets the entry. */
static void drop_entry(struct detector *d, struct entry *e, const char *why)
{
    log_info("card '%s' (%s) %s", e->card.label[0] ? e->card.label : e->card.uuid,
             e->card.device[0] ? e->card.device : e->card.mount_point, why);
    if (e->active) {
        e->active = false;
        if (d->cb.card_removed)
            d->cb.card_removed(&e->card, d->cb.userdata);
    }
    if (e->card.mounted_by_us && e->card.mount_point[0]) {
        struct error err = {0};
        if (detector_unmount(e->card.mount_point, true, &err) < 0 && err.code != -EINVAL)
            log_warning("%s", err.msg);
        rmdir(e->card.mount_point);
    }
    e->used = false;
}

static void report(struct detector *d, struct entry *e)
{
    e->active = true;
    log_info("card '%s' (%s, %s, UUID %s) at '%s'%s%s%s", e->card.label,
             e->card.device[0] ? e->card.device : "no device",
             e->card.fstype[0] ? e->card.fstype : "?", e->card.uuid[0] ? e->card.uuid : "-",
             e->card.mount_point, e->card.mounted_by_us ? ", mounted read-only" : "",
             e->card.mounted_by_us && e->via[0] ? " " : "", e->card.mounted_by_us ? e->via : "");
    if (d->cb.card_added)
        d->cb.card_added(&e->card, d->cb.userdata);
}

struct probe {
    bool filesystem;
    char type[32], uuid[128], label[128];
};

/* Filesystem of a block device, with libblkid (low-level probe, so never a stale cache). */
static int probe_device(const char *devnode, struct probe *ret)
{
    struct probe p = {0};
    blkid_probe pr = blkid_new_probe_from_filename(devnode);
    if (!pr)
        return -errno ? -errno : -EIO;
    blkid_probe_enable_superblocks(pr, 1);
    blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID |
                                              BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
    int rc = blkid_do_safeprobe(pr);
    if (rc == 0) {
        const char *v = NULL;
        if (blkid_probe_lookup_value(pr, "USAGE", &v, NULL) == 0 && strcmp(v, "filesystem") == 0)
            p.filesystem = true;
        if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
            snprintf(p.type, sizeof(p.type), "%s", v);
        if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
            snprintf(p.uuid, sizeof(p.uuid), "%s", v);
        if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
            snprintf(p.label, sizeof(p.label), "%s", v);
    }
    blkid_free_probe(pr);
    *ret = p;
    return 0;
}

static struct libmnt_table *mount_table(void)
{
    struct libmnt_table *tb = mnt_new_table();
    if (tb && mnt_table_parse_mtab(tb, NULL) != 0) {
        mnt_unref_table(tb);
        tb = NULL;
    }
    return tb;
}

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

/* Mounts e's card on target with a FUSE mounter, after the kernel refused its type (why). */
static int mount_fuse(struct entry *e, const char *target, const char *why, struct error *err)
{
    const char *dev = e->card.device, *type = e->card.fstype;
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
    char *argv[] = {path, dash_o, opts, e->card.device, (char *)target, NULL};
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
    snprintf(e->via, sizeof(e->via), "through FUSE ('%s')", path);
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

/* Mounts the card of e read-only in a fresh folder under sd_card.mount_base: with libmount (the
 * kernel's driver, or a /sbin/mount.<type> helper), else through a FUSE mounter. */
static int mount_card(struct detector *d, struct entry *e, struct error *err)
{
    const char *base = d->cfg->sd_card.mount_base;
    char name[128], target[PATH_MAX];
    const char *dev_base = strrchr(e->card.device, '/');
    detector_folder_name(e->card.label, e->card.uuid, dev_base ? dev_base + 1 : "card", name,
                         sizeof(name));
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
    if (mnt_context_set_source(cx, e->card.device) == 0 &&
        mnt_context_set_target(cx, target) == 0 &&
        (!e->card.fstype[0] || mnt_context_set_fstype(cx, e->card.fstype) == 0) &&
        mnt_context_set_options(cx, MOUNT_OPTIONS) == 0)
        rc = mnt_context_mount(cx);
    e->via[0] = '\0';
    r = 0;
    if (rc != 0 || mnt_context_get_status(cx) != 1) {
        char msg[256] = "";
        mnt_context_get_excode(cx, rc, msg, sizeof(msg));
        int code = mnt_context_syscall_called(cx) && mnt_context_get_syscall_errno(cx)
                       ? -mnt_context_get_syscall_errno(cx)
                       : -EIO;
        /* ENODEV: the kernel has no driver for this type, and libmount found no helper */
        if (code == -ENODEV && !mnt_context_helper_executed(cx) && e->card.fstype[0])
            r = mount_fuse(e, target, msg[0] ? msg : "unknown filesystem type", err);
        else
            r = error_set(err, code, "cannot mount '%s' (%s) on '%s': %s", e->card.device,
                          e->card.fstype[0] ? e->card.fstype : "?", target,
                          msg[0] ? msg : "failed");
    } else if (mnt_context_helper_executed(cx)) {
        snprintf(e->via, sizeof(e->via), "by libmount's helper mount.%s", e->card.fstype);
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
    snprintf(e->card.mount_point, sizeof(e->card.mount_point), "%s", target);
    e->card.mounted_by_us = true;
    return 0;
}

int detector_unmount(const char *mount_point, bool lazy, struct error *err)
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

/* ---- devices ---- */

static const char *device_bus(struct udev_device *dev)
{
    for (struct udev_device *p = udev_device_get_parent(dev); p; p = udev_device_get_parent(p)) {
        const char *sub = udev_device_get_subsystem(p);
        if (sub && strcmp(sub, "usb") == 0)
            return "usb";
        if (sub && strcmp(sub, "mmc") == 0)
            return "mmc";
    }
    return "";
}

static bool sysattr_is(struct udev_device *dev, const char *attr, const char *value)
{
    const char *v = dev ? udev_device_get_sysattr_value(dev, attr) : NULL;
    return v && strcmp(v, value) == 0;
}

static uint64_t sysattr_u64(struct udev_device *dev, const char *attr)
{
    const char *v = udev_device_get_sysattr_value(dev, attr);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    return errno || end == v ? 0 : (uint64_t)n;
}

/* The mount of the block device devnode in tb, or NULL. A FUSE mount other than fuseblk has a
 * device number of its own, and shows the device only as its source (when it does). */
static struct libmnt_fs *find_device_mount(struct libmnt_table *tb, const char *devnode)
{
    struct stat st;
    if (!tb || stat(devnode, &st) < 0 || !S_ISBLK(st.st_mode))
        return NULL;
    struct libmnt_fs *fs = mnt_table_find_devno(tb, st.st_rdev, MNT_ITER_FORWARD);
    return fs ? fs : mnt_table_find_srcpath(tb, devnode, MNT_ITER_FORWARD);
}

/* action: "add", "change", "remove", or "scan" (a device present at a rescan). */
static void handle_device(struct detector *d, struct udev_device *dev, const char *action)
{
    const char *sysname = udev_device_get_sysname(dev);
    const char *devnode = udev_device_get_devnode(dev);
    const char *devtype = udev_device_get_devtype(dev);
    bool scan = strcmp(action, "scan") == 0;
    if (!sysname || !devnode || !devtype)
        return;
    struct entry *e = find_device(d, devnode);
    if (strcmp(action, "remove") == 0) {
        if (e)
            drop_entry(d, e, "removed");
        return;
    }
    bool is_disk = strcmp(devtype, "disk") == 0;
    struct udev_device *disk =
        is_disk ? dev : udev_device_get_parent_with_subsystem_devtype(dev, "block", "disk");
    bool removable = sysattr_is(disk, "removable", "1");
    if (!detector_device_accepted(d->cfg, sysname, removable, device_bus(dev))) {
        if (e && !e->from_mount)
            drop_entry(d, e, "no longer accepted");
        return;
    }
    if (sysattr_u64(dev, "size") == 0) {
        if (e)
            drop_entry(d, e, "removed (no media)");
        return;
    }
    if (e && scan)
        return; /* known: the events keep it current */

    struct probe p;
    int r = probe_device(devnode, &p);
    if (r < 0 || !p.filesystem) {
        if (e)
            drop_entry(d, e, "removed (no filesystem now)");
        if (scan)
            log_debug("'%s': no filesystem", devnode);
        else if (r < 0)
            log_info("'%s': cannot probe: %s", devnode, strerror(-r));
        else
            log_info("'%s': no filesystem, not a card%s%s", devnode, p.type[0] ? ": " : "", p.type);
        return;
    }
    if (e) {
        if (strcmp(e->card.uuid, p.uuid) == 0)
            return;
        drop_entry(d, e, "changed");
    }
    e = new_entry(d);
    if (!e)
        return;
    snprintf(e->card.device, sizeof(e->card.device), "%s", devnode);
    snprintf(e->card.uuid, sizeof(e->card.uuid), "%s", p.uuid);
    snprintf(e->card.label, sizeof(e->card.label), "%s", p.label);
    snprintf(e->card.fstype, sizeof(e->card.fstype), "%s", p.type);

    struct libmnt_table *tb = mount_table();
    struct libmnt_fs *fs = find_device_mount(tb, devnode);
    if (fs && mnt_fs_get_target(fs)) {
        snprintf(e->card.mount_point, sizeof(e->card.mount_point), "%s", mnt_fs_get_target(fs));
        mnt_unref_table(tb);
        report(d, e);
        return;
    }
    mnt_unref_table(tb);
    struct error err = {0};
    if (mount_card(d, e, &err) < 0) {
        /* stays known (inactive) so a rescan does not retry in a loop; a new event does */
        log_error("%s", err.msg);
        return;
    }
    report(d, e);
}

/* Readers that stay plugged in may announce new media with nothing at all: opening the device
 * makes the kernel check for media and send a change event if some appeared. */
static void poke_reader(struct udev_device *dev)
{
    const char *devnode = udev_device_get_devnode(dev);
    int fd = devnode ? open(devnode, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    if (fd >= 0)
        close(fd);
}

static int scan_devices(struct detector *d, bool poke)
{
    struct udev_enumerate *en = udev_enumerate_new(d->udev);
    if (!en)
        return -ENOMEM;
    int r = 0;
    if (udev_enumerate_add_match_subsystem(en, "block") < 0 ||
        udev_enumerate_scan_devices(en) < 0) {
        r = -ENOMEM;
        goto out;
    }
    struct udev_list_entry *le;
    udev_list_entry_foreach(le, udev_enumerate_get_list_entry(en))
    {
        struct udev_device *dev =
            udev_device_new_from_syspath(d->udev, udev_list_entry_get_name(le));
        if (!dev)
            continue;
        const char *devtype = udev_device_get_devtype(dev);
        if (poke && devtype && strcmp(devtype, "disk") == 0 && sysattr_is(dev, "removable", "1") &&
            sysattr_u64(dev, "size") == 0 &&
            detector_device_accepted(d->cfg, udev_device_get_sysname(dev), true, ""))
            poke_reader(dev);
        else
            handle_device(d, dev, "scan");
        udev_device_unref(dev);
    }
out:
    udev_enumerate_unref(en);
    return r;
}

/* ---- the mount table ---- */

/* Mounts never taken as cards: ours, and those holding the destination or the database. */
static bool mount_excluded(const struct detector *d, const char *target)
{
    const struct config *cfg = d->cfg;
    if (strcmp(target, "/") == 0 || is_within(target, cfg->sd_card.mount_base))
        return true;
    if (cfg->unraid.mount_point && cfg->unraid.mount_point[0] &&
        is_within(cfg->unraid.mount_point, target))
        return true;
    return cfg->service.database_path && is_within(cfg->service.database_path, target);
}

static bool device_accepted_by_devno(struct detector *d, dev_t devno)
{
    struct udev_device *dev = udev_device_new_from_devnum(d->udev, 'b', devno);
    if (!dev)
        return false;
    const char *devtype = udev_device_get_devtype(dev);
    struct udev_device *disk =
        devtype && strcmp(devtype, "disk") == 0
            ? dev
            : udev_device_get_parent_with_subsystem_devtype(dev, "block", "disk");
    bool ok = detector_device_accepted(d->cfg, udev_device_get_sysname(dev),
                                       sysattr_is(disk, "removable", "1"), device_bus(dev));
    udev_device_unref(dev);
    return ok;
}

static void process_mounts(struct detector *d)
{
    struct libmnt_table *tb = mount_table();
    if (!tb) {
        log_warning("cannot read the mount table");
        return;
    }
    /* gone */
    for (size_t i = 0; i < DETECTOR_CARDS_MAX; i++) {
        struct entry *e = &d->entries[i];
        if (!e->used || !e->card.mount_point[0] ||
            mnt_table_find_target(tb, e->card.mount_point, MNT_ITER_BACKWARD))
            continue;
        if (e->active) {
            log_info("card '%s' unmounted from '%s'", e->card.label, e->card.mount_point);
            e->active = false;
            if (d->cb.card_removed)
                d->cb.card_removed(&e->card, d->cb.userdata);
        }
        if (e->card.mounted_by_us)
            rmdir(e->card.mount_point);
        e->card.mounted_by_us = false;
        e->card.mount_point[0] = '\0';
        if (e->from_mount)
            e->used = false;
    }
    /* new */
    struct libmnt_iter *it = mnt_new_iter(MNT_ITER_FORWARD);
    struct libmnt_fs *fs;
    while (it && mnt_table_next_fs(tb, it, &fs) == 0) {
        const char *target = mnt_fs_get_target(fs);
        const char *src = mnt_fs_get_srcpath(fs);
        if (!target || mount_excluded(d, target) || find_mount(d, target))
            continue;
        struct stat st;
        bool blk = src && stat(src, &st) == 0 && S_ISBLK(st.st_mode);
        if (blk && find_device(d, src))
            continue;
        bool watched = false;
        for (size_t j = 0; j < d->cfg->sd_card.n_mount_points && !watched; j++)
            watched = is_beneath(target, d->cfg->sd_card.mount_points[j]);
        if (!watched && !(blk && device_accepted_by_devno(d, st.st_rdev)))
            continue;
        struct entry *e = new_entry(d);
        if (!e)
            break;
        e->from_mount = true;
        snprintf(e->card.mount_point, sizeof(e->card.mount_point), "%s", target);
        const char *fstype = mnt_fs_get_fstype(fs);
        snprintf(e->card.fstype, sizeof(e->card.fstype), "%s", fstype ? fstype : "");
        struct probe p;
        if (blk) {
            snprintf(e->card.device, sizeof(e->card.device), "%s", src);
            if (probe_device(src, &p) == 0) {
                snprintf(e->card.uuid, sizeof(e->card.uuid), "%s", p.uuid);
                snprintf(e->card.label, sizeof(e->card.label), "%s", p.label);
                if (p.type[0]) /* "exfat" rather than the "fuseblk" of a FUSE mount */
                    snprintf(e->card.fstype, sizeof(e->card.fstype), "%s", p.type);
            }
        }
        if (!e->card.label[0]) {
            const char *b = strrchr(target, '/');
            snprintf(e->card.label, sizeof(e->card.label), "%s", b ? b + 1 : target);
        }
        report(d, e);
    }
    mnt_free_iter(it);
    mnt_unref_table(tb);
}

/* ---- life cycle ---- */

static int arm_timer(struct detector *d)
{
    int s = d->cfg->sd_card.poll_interval;
    struct itimerspec its = {.it_interval = {s, 0}, .it_value = {s, 0}};
    return timerfd_settime(d->timerfd, 0, &its, NULL) < 0 ? -errno : 0;
}

static int epoll_add(int epfd, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int detector_new(const struct config *cfg, const struct detector_callbacks *cb,
                 struct detector **ret, struct error *err)
{
    int r;
    struct detector *d = calloc(1, sizeof(*d));
    if (!d)
        return error_set(err, -ENOMEM, "out of memory");
    d->cfg = cfg;
    d->cb = *cb;
    d->epfd = -1;
    d->timerfd = -1;

    d->udev = udev_new();
    if (!d->udev) {
        r = error_set(err, -ENOMEM, "cannot initialise libudev");
        goto fail;
    }
    /* Without a udev daemon nothing is sent on the "udev" group: listen to the kernel. */
    d->source = access(UDEV_CONTROL, F_OK) == 0 ? "udev" : "kernel";
    d->mon = udev_monitor_new_from_netlink(d->udev, d->source);
    if (!d->mon || udev_monitor_filter_add_match_subsystem_devtype(d->mon, "block", NULL) < 0 ||
        udev_monitor_enable_receiving(d->mon) < 0) {
        r = error_set(err, -EIO, "cannot listen to block device events (%s source)", d->source);
        goto fail;
    }
    d->mnt_mon = mnt_new_monitor();
    if (!d->mnt_mon || mnt_monitor_enable_kernel(d->mnt_mon, 1) < 0 ||
        mnt_monitor_get_fd(d->mnt_mon) < 0) {
        r = error_set(err, -EIO, "cannot watch the mount table");
        goto fail;
    }
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (d->epfd < 0 || d->timerfd < 0) {
        r = error_set_errno(err, -errno, "cannot create the detector's event sources");
        goto fail;
    }
    r = epoll_add(d->epfd, udev_monitor_get_fd(d->mon), SRC_UDEV);
    if (r == 0)
        r = epoll_add(d->epfd, mnt_monitor_get_fd(d->mnt_mon), SRC_MOUNTS);
    if (r == 0)
        r = epoll_add(d->epfd, d->timerfd, SRC_TIMER);
    if (r == 0)
        r = arm_timer(d);
    if (r < 0) {
        error_set_errno(err, r, "cannot set up the detector's event sources");
        goto fail;
    }
    *ret = d;
    return 0;
fail:
    detector_free(d);
    return r;
}

void detector_free(struct detector *d)
{
    if (!d)
        return;
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->timerfd >= 0)
        close(d->timerfd);
    mnt_unref_monitor(d->mnt_mon);
    udev_monitor_unref(d->mon);
    udev_unref(d->udev);
    free(d);
}

int detector_fd(const struct detector *d)
{
    return d->epfd;
}

const char *detector_source(const struct detector *d)
{
    return d->source;
}

int detector_process(struct detector *d)
{
    struct epoll_event evs[4];
    int n = epoll_wait(d->epfd, evs, 4, 0);
    bool mounts = false, timer = false;
    for (int i = 0; i < n; i++) {
        switch (evs[i].data.u32) {
        case SRC_UDEV: {
            struct udev_device *dev;
            while ((dev = udev_monitor_receive_device(d->mon))) {
                const char *action = udev_device_get_action(dev);
                handle_device(d, dev, action ? action : "change");
                udev_device_unref(dev);
            }
            break;
        }
        case SRC_MOUNTS:
            mnt_monitor_event_cleanup(d->mnt_mon);
            mounts = true;
            break;
        case SRC_TIMER: {
            uint64_t ticks;
            if (read(d->timerfd, &ticks, sizeof(ticks)) > 0)
                timer = true;
            break;
        }
        }
    }
    if (timer) {
        int r = scan_devices(d, true);
        if (r < 0)
            return r;
        mounts = true;
    }
    if (mounts)
        process_mounts(d);
    return 0;
}

int detector_scan(struct detector *d)
{
    int r = scan_devices(d, false);
    if (r < 0)
        return r;
    process_mounts(d);
    return 0;
}

int detector_reconfigure(struct detector *d, const struct config *cfg, struct error *err)
{
    d->cfg = cfg;
    int r = arm_timer(d);
    if (r < 0)
        return error_set_errno(err, r, "cannot set the poll timer");
    return 0;
}

void detector_unmount_all(struct detector *d)
{
    for (size_t i = 0; i < DETECTOR_CARDS_MAX; i++) {
        struct entry *e = &d->entries[i];
        if (!e->used || !e->card.mounted_by_us || !e->card.mount_point[0])
            continue;
        struct error err = {0};
        int r = detector_unmount(e->card.mount_point, false, &err);
        if (r == -EBUSY)
            r = detector_unmount(e->card.mount_point, true, &err);
        if (r < 0 && r != -EINVAL)
            log_warning("%s", err.msg);
        else
            log_info("unmounted '%s'", e->card.mount_point);
        rmdir(e->card.mount_point);
        e->card.mounted_by_us = false;
        e->card.mount_point[0] = '\0';
    }
}
