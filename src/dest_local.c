/* SPDX-License-Identifier: MIT */
/*
 * Local or NFS-mounted folder destination (`unraid.protocol: local | nfs`, and the `local` section,
 * a second folder next to unraid: dest_local_folder_ops).
 *
 * A copy is written to <root>/.snapsync-tmp/<pid>.<seq>.<host>.part, fsync'd, read back from disk
 * (the page cache dropped first) and compared by MD5, then moved to <root>/<folder>/<name> (dest.c
 * expands the patterns) with a rename that refuses to replace (renameat2 RENAME_NOREPLACE, falling
 * back to link+unlink, then to check-then-rename on filesystems that have neither). When the name
 * is taken, the file there is compared: same content means done, different content means the next
 * free name "<stem>_N.<ext>". Temporaries of processes that died (kill -9, power loss) are removed
 * by the next prepare.
 *
 * What a copy carries besides its bytes, set on the temporary so the final name never shows
 * anything else: the card file's modification time (futimens, to the nanosecond where the
 * filesystem keeps it; the access time gets the same value), the configured owner and group
 * (fchown) and file_mode (fchmod), whatever the process umask. Folders SnapSync creates (the
 * destination itself, YYYY/MM/DD) are made 0700, then given the owner and dir_mode; folders that
 * exist are left as they are, and so is .snapsync-tmp (0700, the service's own). A mode, owner or
 * time that cannot be set fails the copy (as a non-root service cannot give files away).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <libmount.h>

#include "dest.h"
#include "fileio.h"
#include "sidecar.h"

#define TMP_DIR ".snapsync-tmp"
#define VERIFY_BUF (1024 * 1024)
#define VERIFY_ALIGN 4096 /* of the read-back buffer: O_DIRECT's alignment on any block size */
#define STALE_FOREIGN_TMP_S (24 * 3600)
#define WRITEBACK_STEP (8 * 1024 * 1024)

struct local {
    char root[PATH_MAX];        /* absolute: mount_point[/path] */
    char mount_point[PATH_MAX]; /* absolute */
    bool nfs;
    char host[64];
    mode_t file_mode;
    mode_t dir_mode;
    uid_t uid;             /* (uid_t)-1: unchanged */
    gid_t gid;             /* (gid_t)-1: unchanged */
    char owner_shown[600]; /* "owner 'nobody', group 'users'", for messages; "" when unchanged */
};

struct local_conn {
    struct local *local;
    uint8_t *buf; /* verify buffer, one per worker */
};

struct local_file {
    struct local_conn *conn;
    int fd;
    int tmp_dir_fd;
    char tmp_name[128];
    char name[DEST_NAME_MAX + 1];
    char folder[PATTERN_OUT_MAX]; /* below the root, from the folder pattern; "" none */
    int64_t mtime_ns;             /* the card file's */
    uint64_t written;
    uint64_t flushed; /* writeback started up to here */
    int card_dir_fd;  /* the card, for the sidecars (borrowed) */
    char *card_rel;   /* the file's path on the card */
};

static atomic_uint tmp_seq;

/* Joins a relative path onto the working directory and drops trailing slashes. */
static int absolute_path(const char *in, char *out, size_t size)
{
    char cwd[PATH_MAX];
    int n;
    if (in[0] == '/') {
        n = snprintf(out, size, "%s", in);
    } else {
        if (!getcwd(cwd, sizeof(cwd)))
            return -errno;
        const char *rel = in;
        while (rel[0] == '.' && rel[1] == '/')
            rel += 2;
        n = strcmp(rel, ".") == 0 ? snprintf(out, size, "%s", cwd)
                                  : snprintf(out, size, "%s/%s", cwd, rel);
    }
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    for (size_t len = strlen(out); len > 1 && out[len - 1] == '/'; len--)
        out[len - 1] = '\0';
    return 0;
}

/* The configured permissions, for the copies and the folders SnapSync creates. */
static void perms_init(struct local *l, const struct config_perms *p)
{
    l->file_mode = (mode_t)p->file_mode;
    l->dir_mode = (mode_t)p->dir_mode;
    l->uid = p->uid >= 0 ? (uid_t)p->uid : (uid_t)-1;
    l->gid = p->gid >= 0 ? (gid_t)p->gid : (gid_t)-1;
    bool owner = p->uid >= 0, group = p->gid >= 0;
    snprintf(l->owner_shown, sizeof(l->owner_shown), "%s%.255s%s%s%s%.255s%s",
             owner ? "owner '" : "", owner ? p->owner : "", owner ? "'" : "",
             owner && group ? ", " : "", group ? "group '" : "", group ? p->group : "",
             group ? "'" : "");
}

/* A destination at mount_point[/path]; nfs: the folder must be a mount point. */
static int local_init_at(const char *mount_point, const char *path, bool nfs,
                         const struct config_perms *perms, const char *key, void **ret_priv,
                         char *id, size_t id_size, char *label, size_t label_size,
                         struct error *err)
{
    struct local *l = calloc(1, sizeof(*l));
    if (!l)
        return error_set(err, -ENOMEM, "out of memory");
    int r = absolute_path(mount_point, l->mount_point, sizeof(l->mount_point));
    if (r < 0) {
        free(l);
        return error_set_errno(err, r, "%s '%s'", key, mount_point);
    }
    const char *sub = path ? path : "";
    while (*sub == '/')
        sub++;
    int n = sub[0] ? snprintf(l->root, sizeof(l->root), "%s/%s", l->mount_point, sub)
                   : snprintf(l->root, sizeof(l->root), "%s", l->mount_point);
    if (n < 0 || (size_t)n >= sizeof(l->root) - 64) {
        free(l);
        return error_set(err, -ENAMETOOLONG, "%s: destination path too long", key);
    }
    for (size_t len = strlen(l->root); len > 1 && l->root[len - 1] == '/'; len--)
        l->root[len - 1] = '\0';
    l->nfs = nfs;
    perms_init(l, perms);
    if (gethostname(l->host, sizeof(l->host)) < 0 || !l->host[0])
        snprintf(l->host, sizeof(l->host), "localhost");
    l->host[sizeof(l->host) - 1] = '\0';
    for (char *p = l->host; *p; p++) /* keep the temp name parseable */
        if (*p == '/' || *p == '.')
            *p = '_';
    snprintf(id, id_size, "local:%s", l->root);
    snprintf(label, label_size, "%s %s", l->nfs ? "nfs" : "local", l->root);
    *ret_priv = l;
    return 0;
}

/* unraid with protocol local or nfs */
static int local_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                      char *label, size_t label_size, struct error *err)
{
    return local_init_at(cfg->unraid.mount_point, cfg->unraid.path,
                         cfg->unraid.protocol == CONFIG_PROTOCOL_NFS, &cfg->unraid.perms,
                         "unraid.mount_point", ret_priv, id, id_size, label, label_size, err);
}

/* the local section: a second folder next to unraid */
static int local_folder_init(const struct config *cfg, void **ret_priv, char *id, size_t id_size,
                             char *label, size_t label_size, struct error *err)
{
    return local_init_at(cfg->local.path, NULL, false, &cfg->local.perms, "local.path", ret_priv,
                         id, id_size, label, label_size, err);
}

static void local_done(void *priv)
{
    free(priv);
}

static bool is_mount_point(const char *path)
{
    bool found = false;
    struct libmnt_table *tb = mnt_new_table();
    if (tb && mnt_table_parse_mtab(tb, NULL) == 0) {
        struct libmnt_fs *fs = mnt_table_find_target(tb, path, MNT_ITER_BACKWARD);
        found = fs && mnt_fs_get_target(fs) && strcmp(mnt_fs_get_target(fs), path) == 0;
    }
    mnt_unref_table(tb);
    return found;
}

/* Gives fd (the temporary of a copy, or a folder SnapSync just created; `what` names it in
 * messages) the configured owner and group, then `mode` whatever the umask: after the owner,
 * because chown may clear the set-group-ID bit. A refusal (EPERM: not root) is returned as
 * -EACCES, a permission problem that a retry would not change. */
static int apply_perms(const struct local *l, int fd, mode_t mode, const char *what,
                       struct error *err)
{
    int r = 0;
    if ((l->uid != (uid_t)-1 || l->gid != (gid_t)-1) && fchown(fd, l->uid, l->gid) < 0)
        r = error_set_errno(err, -errno, "cannot set %s on %s", l->owner_shown, what);
    else if (fchmod(fd, mode) < 0)
        r = error_set_errno(err, -errno, "cannot set mode %04o on %s", (unsigned)mode, what);
    if (r == -EPERM) {
        r = -EACCES;
        if (err)
            err->code = r;
    }
    return r;
}

/* Writes the len bytes at buf to fd from its offset, over short writes and EINTR. Errors: -ENOSPC
 * (the disk or the quota is full: "destination disk ... is full"), write's errno with "cannot
 * write <what>'<name>'". */
static int write_whole(const struct local *l, int fd, const void *buf, size_t len, const char *what,
                       const char *name, struct error *err)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ENOSPC || errno == EDQUOT
                       ? error_set(err, -ENOSPC, "destination disk '%s' is full", l->root)
                       : error_set_errno(err, -errno, "cannot write %s'%s'", what, name);
        off += (size_t)n;
    }
    return 0;
}

/* Creates folder `path`: 0700 (so it is never more open than configured, whatever the umask),
 * then the configured owner and dir_mode. Returns 0, -EEXIST when it exists (left as it is), or
 * another negative errno with err set. */
static int make_dir(const struct local *l, const char *path, struct error *err)
{
    if (mkdir(path, 0700) < 0)
        return errno == EEXIST ? -EEXIST
                               : error_set_errno(err, -errno, "cannot create folder '%s'", path);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int r = error_set_errno(err, -errno, "cannot open the new folder '%s'", path);
        rmdir(path);
        return r;
    }
    char what[PATH_MAX + 16];
    snprintf(what, sizeof(what), "folder '%s'", path);
    int r = apply_perms(l, fd, l->dir_mode, what, err);
    close(fd);
    if (r < 0)
        rmdir(path); /* empty unless another lane wrote there meanwhile: then it stays */
    return r;
}

/* mkdir -p below (and including) path; existing folders are fine and left as they are. */
static int mkdir_p(const struct local *l, const char *path, struct error *err)
{
    char buf[PATH_MAX];
    int n = snprintf(buf, sizeof(buf), "%s", path);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return error_set(err, -ENAMETOOLONG, "folder name too long: '%s'", path);
    int r;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        r = make_dir(l, buf, err);
        if (r < 0 && r != -EEXIST)
            return r;
        *p = '/';
    }
    r = make_dir(l, buf, err);
    if (r < 0 && r != -EEXIST)
        return r;
    struct stat st;
    if (stat(buf, &st) < 0)
        return error_set_errno(err, -errno, "cannot create folder '%s'", buf);
    return S_ISDIR(st.st_mode) ? 0
                               : error_set_errno(err, -ENOTDIR, "cannot create folder '%s'", buf);
}

/* Removes temporaries whose writer is gone: ours by pid, other hosts' after a day. */
static void clean_stale(const struct local *l, int tmp_fd)
{
    DIR *d = fdopendir(dup(tmp_fd));
    if (!d)
        return;
    struct dirent *de;
    time_t now = time(NULL);
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *end = NULL;
        errno = 0;
        long pid = strtol(de->d_name, &end, 10);
        const char *host = end && *end == '.' ? strchr(end + 1, '.') : NULL;
        bool stale = false;
        if (!host || errno || pid <= 0) {
            stale = true; /* not ours to understand; only reached for names we never write */
        } else {
            host++;
            size_t hl = strlen(l->host);
            bool same_host = strncmp(host, l->host, hl) == 0 && strcmp(host + hl, ".part") == 0;
            if (same_host) {
                stale = (pid_t)pid != getpid() && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
            } else {
                struct stat st;
                stale = fstatat(tmp_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                        now - st.st_mtime > STALE_FOREIGN_TMP_S;
            }
        }
        if (stale)
            unlinkat(tmp_fd, de->d_name, 0);
    }
    closedir(d);
}

static int local_prepare(void *priv, const struct dest_session *session, struct error *err)
{
    (void)session;
    struct local *l = priv;
    if (l->nfs) {
        struct stat st;
        if (stat(l->mount_point, &st) < 0 || !S_ISDIR(st.st_mode) ||
            !is_mount_point(l->mount_point))
            return error_set(err, -ENXIO,
                             "unraid.mount_point '%s' is not a mount point: refusing to write "
                             "to the local disk (is the NFS share mounted?)",
                             l->mount_point);
    }
    int r = mkdir_p(l, l->root, err);
    if (r < 0)
        return r;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/" TMP_DIR, l->root);
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return error_set_errno(err, -errno, "cannot create '%s'", tmp);
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open '%s'", tmp);
    if (faccessat(fd, ".", W_OK, AT_EACCESS) < 0) {
        r = error_set_errno(err, -errno, "destination '%s' is not writable", l->root);
        close(fd);
        return r;
    }
    clean_stale(l, fd);
    close(fd);
    return 0;
}

static int local_probe(void *priv, char *detail, size_t detail_size, struct error *err)
{
    struct local *l = priv;
    int r = local_prepare(priv, NULL, err);
    if (r < 0)
        return r;
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/" TMP_DIR "/%ld.probe.%s.part", l->root, (long)getpid(),
             l->host);
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot create a file in '%s'", l->root);
    bool ok = write(fd, "snapsync", 8) == 8 && fsync(fd) == 0;
    r = ok ? 0 : error_set_errno(err, -errno, "cannot write to '%s'", l->root);
    close(fd);
    unlink(probe);
    if (r < 0)
        return r;
    struct statvfs sv;
    if (statvfs(l->root, &sv) == 0)
        snprintf(detail, detail_size, "%s writable, %.1f GiB free", l->root,
                 (double)sv.f_bavail * (double)sv.f_frsize / (1024.0 * 1024 * 1024));
    else
        snprintf(detail, detail_size, "%s writable", l->root);
    return 0;
}

static int local_conn_new(void *priv, void **ret_conn, struct error *err)
{
    struct local_conn *c = calloc(1, sizeof(*c));
    if (c) /* aligned for O_DIRECT reads (local_finish) */
        c->buf = aligned_alloc(VERIFY_ALIGN, VERIFY_BUF);
    if (!c || !c->buf) {
        free(c);
        return error_set(err, -ENOMEM, "out of memory");
    }
    c->local = priv;
    *ret_conn = c;
    return 0;
}

static void local_conn_free(void *conn)
{
    struct local_conn *c = conn;
    if (!c)
        return;
    free(c->buf);
    free(c);
}

static void local_file_free(struct local_file *f, bool unlink_tmp)
{
    if (f->fd >= 0)
        close(f->fd);
    if (unlink_tmp && f->tmp_dir_fd >= 0)
        unlinkat(f->tmp_dir_fd, f->tmp_name, 0);
    if (f->tmp_dir_fd >= 0)
        close(f->tmp_dir_fd);
    free(f->card_rel);
    free(f);
}

static int local_retarget(void *file, const char *folder, const char *target, struct error *err)
{
    struct local_file *f = file;
    if (!dest_name_valid(target))
        return error_set(err, -EINVAL, "unusable file name");
    snprintf(f->name, sizeof(f->name), "%s", target);
    if ((size_t)snprintf(f->folder, sizeof(f->folder), "%s", folder) >= sizeof(f->folder))
        return error_set(err, -ENAMETOOLONG, "destination path too long");
    return 0;
}

static int local_open(void *conn, const struct dest_item *item, void **ret_file, struct error *err)
{
    struct local_conn *c = conn;
    struct local *l = c->local;
    if (!dest_name_valid(item->target))
        return error_set(err, -EINVAL, "unusable file name");
    size_t name_len = strlen(item->target);

    struct local_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->fd = -1;
    f->conn = c;
    f->card_dir_fd = item->card_dir_fd;
    f->card_rel = strdup(item->rel_path);
    if (!f->card_rel) {
        free(f);
        return error_set(err, -ENOMEM, "out of memory");
    }
    memcpy(f->name, item->target, name_len + 1);
    snprintf(f->folder, sizeof(f->folder), "%s", item->folder);

    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/" TMP_DIR, l->root);
    f->tmp_dir_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->tmp_dir_fd < 0) {
        int r = error_set_errno(err, -errno, "cannot open '%s'", tmp);
        free(f->card_rel);
        free(f);
        return r;
    }
    snprintf(f->tmp_name, sizeof(f->tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), l->host);
    f->mtime_ns = item->mtime_ns;
    /* 0600 until the configured owner and mode are applied, here, before any byte is written,
     * so that a refused chown fails the copy at once */
    f->fd = openat(f->tmp_dir_fd, f->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f->fd < 0) {
        int r = error_set_errno(err, -errno, "cannot create a temporary file in '%s'", tmp);
        close(f->tmp_dir_fd);
        free(f->card_rel);
        free(f);
        return r;
    }
    int r = apply_perms(l, f->fd, l->file_mode, "the copy", err);
    if (r < 0) {
        local_file_free(f, true);
        return r;
    }
    /* Tell the filesystem the final size so it can allocate contiguously; failure is fine. */
    if (item->size > 0)
        (void)posix_fallocate(f->fd, 0, (off_t)item->size);
    *ret_file = f;
    return 0;
}

static int local_write(void *file, const void *buf, size_t len, struct error *err)
{
    struct local_file *f = file;
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(f->fd, p, len, (off_t)f->written);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOSPC || errno == EDQUOT)
                return error_set(err, -ENOSPC, "destination disk '%s' is full",
                                 f->conn->local->root);
            return error_set_errno(err, -errno, "write to '%s' failed", f->conn->local->root);
        }
        p += n;
        len -= (size_t)n;
        f->written += (uint64_t)n;
    }
    /* Start writeback as we go, so the fsync at the end waits for the tail only and the disk
     * writes while the card is read. Asynchronous; an error shows up at fsync. */
    if (f->written - f->flushed >= WRITEBACK_STEP) {
        (void)sync_file_range(f->fd, (off_t)f->flushed, (off_t)(f->written - f->flushed),
                              SYNC_FILE_RANGE_WRITE);
        f->flushed = f->written;
    }
    return 0;
}

static void local_abort(void *file)
{
    if (file)
        local_file_free(file, true);
}

/* Is the file `name` in dir_fd the same content as the copy (size and XXH3-128)? */
static int same_content(struct local_file *f, int dir_fd, const char *name,
                        const struct hasher_digest *digest, bool *ret_same, struct error *err)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) { /* vanished meanwhile: try the name again */
            *ret_same = false;
            return -EAGAIN;
        }
        return error_set_errno(err, -errno, "cannot read existing '%s'", name);
    }
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0) {
        r = error_set_errno(err, -errno, "cannot stat existing '%s'", name);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != f->written) {
        *ret_same = false;
        goto out;
    }
    char hex[33];
    r = hasher_xxh128_fd(fd, f->conn->buf, VERIFY_BUF, hex, err);
    if (r < 0) {
        error_prefix(err, "cannot read existing '%s'", name);
        goto out;
    }
    *ret_same = strcmp(hex, digest->xxh128_hex) == 0;
out:
    close(fd);
    return r;
}

/* Moves the temporary tmp_name of tmp_dir_fd to `name` in dir_fd without ever replacing an
 * existing file.
 * Returns 0, -EEXIST when the name is taken, or another negative errno. */
static int place_noreplace(int tmp_dir_fd, const char *tmp_name, int dir_fd, const char *name)
{
    if (renameat2(tmp_dir_fd, tmp_name, dir_fd, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EEXIST)
        return -EEXIST;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -errno;
    /* NFS and some others lack RENAME_NOREPLACE: a hard link fails on an existing name. */
    if (linkat(tmp_dir_fd, tmp_name, dir_fd, name, 0) == 0) {
        unlinkat(tmp_dir_fd, tmp_name, 0);
        return 0;
    }
    if (errno == EEXIST)
        return -EEXIST;
    if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP && errno != EMLINK)
        return -errno;
    /* vfat/exfat: no hard links either. We own this folder's new names, so check then rename. */
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return -EEXIST;
    if (renameat(tmp_dir_fd, tmp_name, dir_fd, name) < 0)
        return -errno;
    return 0;
}

/* Gives fd the modification (and access) time mtime_ns. Returns 0 or -1 with errno. */
static int set_mtime(int fd, int64_t mtime_ns)
{
    int64_t sec = mtime_ns / 1000000000, nsec = mtime_ns % 1000000000;
    if (nsec < 0) { /* before 1970: floor, as the kernel keeps it */
        sec--;
        nsec += 1000000000;
    }
    struct timespec times[2] = {{.tv_sec = (time_t)sec, .tv_nsec = (long)nsec},
                                {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec}};
    return futimens(fd, times);
}

/* Is the file name in dir_fd exactly the len bytes of want? Reads through scratch. */
static int same_bytes(int dir_fd, const char *name, const uint8_t *want, size_t len,
                      uint8_t *scratch, bool *ret_same, struct error *err)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot reopen '%s'", name);
    bool same = true;
    size_t off = 0;
    for (;;) {
        ssize_t n = read(fd, scratch, VERIFY_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = error_set_errno(err, -errno, "cannot read '%s' back", name);
            close(fd);
            return r;
        }
        if (n == 0)
            break;
        if ((size_t)n > len - off || memcmp(scratch, want + off, (size_t)n) != 0) {
            same = false;
            break;
        }
        off += (size_t)n;
    }
    close(fd);
    *ret_same = same && off == len;
    return 0;
}

/* Copies the sidecar rel of the card next to the copy, named after final_name (sidecar.h), in
 * dir_fd (the folder dir): a temporary with the configured owner, mode and the sidecar's time,
 * fsync'd, read back and compared when verify, then moved with a rename that never replaces. A
 * file that has the name already is left as it is (never overwritten: it may be the user's
 * edited XMP), and that is not an error. Adds it to ret when the file at its name has the card's
 * bytes (placed now, or found the same). */
static int put_sidecar(struct local_file *f, int dir_fd, const char *dir, const char *rel,
                       const char *final_name, bool verify, struct dest_result *ret,
                       struct error *err)
{
    struct local *l = f->conn->local;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t mtime_ns = 0;
    char name[DEST_NAME_MAX + 1], tmp_name[128];
    int fd = -1, r;
    bool tmp_made = false;
    if (sidecar_dest_name(rel, f->card_rel, final_name, name, sizeof(name)) < 0)
        return error_set(err, -ENAMETOOLONG, "the name for the sidecar '%s' is too long", rel);
    r = sidecar_read(f->card_dir_fd, rel, &buf, &len, &mtime_ns, err);
    if (r < 0)
        return r;
    snprintf(tmp_name, sizeof(tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), l->host);
    fd = openat(f->tmp_dir_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = error_set_errno(err, -errno, "cannot create a temporary file for the sidecar '%s'",
                            rel);
        goto out;
    }
    tmp_made = true;
    r = apply_perms(l, fd, l->file_mode, "the sidecar copy", err);
    if (r < 0)
        goto out;
    r = write_whole(l, fd, buf, len, "the sidecar ", rel, err);
    if (r < 0)
        goto out;
    if (set_mtime(fd, mtime_ns) < 0 || fsync(fd) < 0) {
        r = error_set_errno(err, -errno, "cannot flush the sidecar '%s' to disk", rel);
        goto out;
    }
    if (verify) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        bool same = false;
        r = same_bytes(f->tmp_dir_fd, tmp_name, buf, len, f->conn->buf, &same, err);
        if (r < 0)
            goto out;
        if (!same) {
            r = error_set(err, -EIO,
                          "verification failed: the copy of the sidecar '%s' differs "
                          "from the card",
                          rel);
            goto out;
        }
    }
    r = place_noreplace(f->tmp_dir_fd, tmp_name, dir_fd, name);
    bool ours = r == 0;
    if (r == 0) {
        tmp_made = false;
    } else if (r == -EEXIST) {
        /* kept as it is; the temporary goes. Listed when it is the card's (a RAW and a JPEG
         * sharing one XMP, a copy found in place); unreadable or other bytes: not ours */
        struct error ignored = {0};
        r = 0;
        if (same_bytes(dir_fd, name, buf, len, f->conn->buf, &ours, &ignored) < 0)
            ours = false;
    } else {
        error_set_errno(err, r, "cannot move the sidecar '%s' into '%s'", rel, dir);
    }
    if (r == 0 && ours) {
        char remote[DEST_REMOTE_MAX];
        if ((size_t)snprintf(remote, sizeof(remote), "%s/%s", dir, name) < sizeof(remote))
            r = dest_sidecar_add(ret, remote, buf, len, mtime_ns, err);
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlinkat(f->tmp_dir_fd, tmp_name, 0);
    free(buf);
    return r;
}

/* XXH3-128 of the temporary, read from the disk. O_DIRECT: from the disk into the buffer, no
 * copy through the page cache (about a third of the kernel's time in a verified backup:
 * docs/performance.md); where the filesystem refuses it (open or read: -EINVAL), an ordinary
 * read of the pages the caller dropped. */
static int read_back(struct local_file *f, char hex[33], struct error *err)
{
    int r = -EINVAL;
    for (int direct = 1; r == -EINVAL && direct >= 0; direct--) {
        int rfd =
            openat(f->tmp_dir_fd, f->tmp_name, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
        if (rfd < 0) {
            r = errno == EINVAL && direct
                    ? -EINVAL
                    : error_set_errno(err, -errno, "cannot reopen the copy to verify it");
            continue;
        }
        r = hasher_xxh128_fd(rfd, f->conn->buf, VERIFY_BUF, hex, err);
        close(rfd);
    }
    return r;
}

static int local_finish(void *file, const struct hasher_digest *digest, bool verify,
                        struct dest_result *ret, struct error *err)
{
    struct local_file *f = file;
    struct local *l = f->conn->local;
    int r = 0, dir_fd = -1;
    char dir[PATH_MAX];

    /* posix_fallocate may have reserved more than was written (a file that shrank). */
    if (ftruncate(f->fd, (off_t)f->written) < 0) {
        r = error_set_errno(err, -errno, "cannot flush the copy to disk");
        goto out;
    }
    /* After the last write, before the fsync that makes it durable with the data. */
    if (set_mtime(f->fd, f->mtime_ns) < 0) {
        r = error_set_errno(err, -errno, "cannot set the modification time of the copy");
        goto out;
    }
    if (fsync(f->fd) < 0) {
        r = errno == ENOSPC ? error_set(err, -ENOSPC, "destination disk '%s' is full", l->root)
                            : error_set_errno(err, -errno, "cannot flush the copy to disk");
        goto out;
    }
    /* The copy is durable: its pages need not stay in memory (with verification, a read-back
     * without O_DIRECT must also come from the disk). Left cached, a card's worth of them makes
     * every later write take fresh pages: 4.08 against 2.80 CPU s/GB without verification at
     * full scale (docs/performance.md). */
    (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);
    if (verify) {
        char hex[33];
        r = read_back(f, hex, err);
        if (r < 0) {
            error_prefix(err, "cannot read the copy back to verify it");
            goto out;
        }
        if (strcmp(hex, digest->xxh128_hex) != 0) {
            r = error_set(err, -EIO,
                          "verification failed: the copy differs from the card "
                          "(XXH3-128 %s, expected %s)",
                          hex, digest->xxh128_hex);
            goto out;
        }
    }

    int n = f->folder[0] ? snprintf(dir, sizeof(dir), "%s/%s", l->root, f->folder)
                         : snprintf(dir, sizeof(dir), "%s", l->root);
    if (n < 0 || (size_t)n >= sizeof(dir)) {
        r = error_set(err, -ENAMETOOLONG, "destination path too long");
        goto out;
    }
    r = mkdir_p(l, dir, err);
    if (r < 0)
        goto out;
    dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        r = error_set_errno(err, -errno, "cannot open folder '%s'", dir);
        goto out;
    }

    char name[DEST_NAME_MAX + 1];
    bool existed = false;
    for (unsigned k = 0;; k++) {
        if (k > 9999) {
            r = error_set(err, -EEXIST, "no free name for '%s' in '%s'", f->name, dir);
            goto out;
        }
        dest_candidate_name(f->name, k, name, sizeof(name));
        r = place_noreplace(f->tmp_dir_fd, f->tmp_name, dir_fd, name);
        if (r == 0)
            break;
        if (r != -EEXIST) {
            error_set_errno(err, r, "cannot move the copy into '%s'", dir);
            goto out;
        }
        bool same = false;
        r = same_content(f, dir_fd, name, digest, &same, err);
        if (r == -EAGAIN) {
            k--; /* the name was freed meanwhile: try it again */
            continue;
        }
        if (r < 0)
            goto out;
        if (same) {
            unlinkat(f->tmp_dir_fd, f->tmp_name, 0);
            existed = true;
            break;
        }
    }
    /* The copy is in place: a sidecar that fails now fails the copy, which is retried and then
     * finds the copy the same and tries the sidecars again. */
    struct sidecar_set sidecars;
    sidecar_find(f->card_dir_fd, f->card_rel, false, &sidecars);
    ret->n_sidecars = 0;
    for (size_t i = 0; i < sidecars.n; i++) {
        r = put_sidecar(f, dir_fd, dir, sidecars.rel[i], name, verify, ret, err);
        if (r < 0)
            goto out;
    }
    if ((!existed || sidecars.n > 0) && fsync(dir_fd) < 0) {
        r = error_set_errno(err, -errno, "cannot flush folder '%s'", dir);
        goto out;
    }
    snprintf(ret->remote, sizeof(ret->remote), "%s/%s", dir, name);
    ret->existed = existed;
    close(dir_fd);
    local_file_free(f, false);
    return 0;
out:
    if (dir_fd >= 0)
        close(dir_fd);
    local_file_free(f, true);
    return r;
}

/* ---- SnapSync's own files below the root (ascmhl/, dest.h) ---- */

/* root + "/" + rel into out, rel checked by dest_rel_valid. */
static int meta_path(const struct local *l, const char *rel, char *out, size_t size)
{
    if (!dest_rel_valid(rel))
        return -EINVAL;
    int n = snprintf(out, size, "%s/%s", l->root, rel);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* 0 when fd (opened as path) is a regular file; -EINVAL when it is something else, fstat's
 * errno. */
static int check_regular(int fd, const char *path, struct error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return error_set_errno(err, -errno, "cannot examine '%s'", path);
    if (!S_ISREG(st.st_mode))
        return error_set(err, -EINVAL, "'%s' is not a regular file", path);
    return 0;
}

static int local_meta_read(void *priv, const char *rel, size_t max, char **ret_buf, size_t *ret_len,
                           struct error *err)
{
    struct local *l = priv;
    char path[PATH_MAX];
    int r = meta_path(l, rel, path, sizeof(path));
    if (r < 0)
        return error_set_errno(err, r, "'%s'", rel);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open '%s'", path);
    r = check_regular(fd, path, err);
    if (r < 0)
        goto out;
    r = fileio_read_fd(fd, max, ret_buf, ret_len);
    if (r == -EFBIG)
        error_set(err, r, "'%s' is larger than %zu bytes", path, max);
    else if (r < 0)
        error_set_errno(err, r, "cannot read '%s'", path);
out:
    close(fd);
    return r;
}

static int local_meta_list(void *priv, const char *rel_dir, int (*fn)(const char *name, void *arg),
                           void *arg, struct error *err)
{
    struct local *l = priv;
    char path[PATH_MAX];
    int r = meta_path(l, rel_dir, path, sizeof(path));
    if (r < 0)
        return error_set_errno(err, r, "'%s'", rel_dir);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open folder '%s'", path);
    DIR *d = fdopendir(fd);
    if (!d) {
        r = error_set_errno(err, -errno, "cannot list folder '%s'", path);
        close(fd);
        return r;
    }
    struct dirent *de;
    errno = 0;
    while (r == 0 && (de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            r = fn(de->d_name, arg);
        errno = 0;
    }
    if (r == 0 && errno)
        r = error_set_errno(err, -errno, "cannot list folder '%s'", path);
    closedir(d);
    return r;
}

static int local_meta_write(void *priv, const char *rel, const void *buf, size_t len, bool replace,
                            struct error *err)
{
    struct local *l = priv;
    char path[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX], tmp_name[128];
    int r = meta_path(l, rel, path, sizeof(path));
    if (r < 0)
        return error_set_errno(err, r, "'%s'", rel);
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    const char *name = slash + 1;
    r = mkdir_p(l, dir, err);
    if (r < 0)
        return r;
    snprintf(tmp, sizeof(tmp), "%s/" TMP_DIR, l->root);
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return error_set_errno(err, -errno, "cannot create '%s'", tmp);
    int tmp_dir_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int fd = -1;
    bool tmp_made = false;
    if (tmp_dir_fd < 0 || dir_fd < 0) {
        r = error_set_errno(err, -errno, "cannot open folder '%s'", tmp_dir_fd < 0 ? tmp : dir);
        goto out;
    }
    snprintf(tmp_name, sizeof(tmp_name), "%ld.%u.%s.part", (long)getpid(),
             atomic_fetch_add(&tmp_seq, 1), l->host);
    fd = openat(tmp_dir_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = error_set_errno(err, -errno, "cannot create a temporary file for '%s'", path);
        goto out;
    }
    tmp_made = true;
    r = apply_perms(l, fd, l->file_mode, path, err);
    if (r < 0)
        goto out;
    r = write_whole(l, fd, buf, len, "", path, err);
    if (r < 0)
        goto out;
    if (fsync(fd) < 0) {
        r = error_set_errno(err, -errno, "cannot flush '%s' to disk", path);
        goto out;
    }
    if (replace) {
        r = renameat(tmp_dir_fd, tmp_name, dir_fd, name) < 0 ? -errno : 0;
    } else {
        r = place_noreplace(tmp_dir_fd, tmp_name, dir_fd, name);
        if (r == -EEXIST) {
            r = error_set(err, -EEXIST, "'%s' exists already", path);
            goto out;
        }
    }
    if (r < 0) {
        error_set_errno(err, r, "cannot move '%s' into place", path);
        goto out;
    }
    tmp_made = false;
    if (fsync(dir_fd) < 0)
        r = error_set_errno(err, -errno, "cannot flush folder '%s' to disk", dir);
out:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlinkat(tmp_dir_fd, tmp_name, 0);
    if (tmp_dir_fd >= 0)
        close(tmp_dir_fd);
    if (dir_fd >= 0)
        close(dir_fd);
    return r;
}

static int local_rel_of(void *priv, const char *remote, char *out, size_t size)
{
    struct local *l = priv;
    size_t n = strlen(l->root);
    if (strncmp(remote, l->root, n) != 0 || remote[n] != '/' || !remote[n + 1])
        return -EINVAL;
    int k = snprintf(out, size, "%s", remote + n + 1);
    return k < 0 || (size_t)k >= size ? -ENAMETOOLONG : 0;
}

/* ---- reading a copy back (`snapsync verify`) ---- */

static int local_read_copy(void *priv, const char *remote,
                           int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                           struct error *err)
{
    struct local *l = priv;
    char rel[PATH_MAX], path[PATH_MAX];
    if (local_rel_of(l, remote, rel, sizeof(rel)) < 0 || meta_path(l, rel, path, sizeof(path)) < 0)
        return error_set(err, -EINVAL, "'%s' is not below %s", remote, l->root);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return error_set_errno(err, errno == ELOOP ? -EINVAL : -errno, "cannot open '%s'", path);
    uint8_t *buf = NULL;
    int r = check_regular(fd, path, err);
    if (r < 0)
        goto out;
    buf = malloc(DEST_READ_CHUNK);
    if (!buf) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, DEST_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = error_set_errno(err, -errno, "cannot read '%s'", path);
            goto out;
        }
        if (n == 0)
            break;
        r = fn(buf, (size_t)n, arg);
        if (r < 0)
            goto out;
    }
out:
    free(buf);
    close(fd);
    return r;
}

/* ---- listing the tree (`snapsync verify`'s extra files) ---- */

struct local_walk {
    int (*fn)(const char *remote, void *arg);
    void *arg;
    char path[PATH_MAX]; /* the remote of the folder being listed, then of each entry */
    struct error *err;
};

/* Lists the folder dir_fd (consumed) at w->path (len bytes), depth folders below the root. */
static int walk_dir(struct local_walk *w, int dir_fd, size_t len, unsigned depth)
{
    DIR *d = fdopendir(dir_fd);
    if (!d) {
        int r = error_set_errno(w->err, -errno, "cannot list folder '%s'", w->path);
        close(dir_fd);
        return r;
    }
    int r = 0;
    struct dirent *de;
    errno = 0;
    while (r == 0 && (de = readdir(d))) {
        if (dest_walk_skip(depth, de->d_name)) {
            errno = 0;
            continue;
        }
        int k = snprintf(w->path + len, sizeof(w->path) - len, "/%s", de->d_name);
        if (k < 0 || (size_t)k >= sizeof(w->path) - len) {
            w->path[len] = '\0';
            r = error_set(w->err, -ENAMETOOLONG, "a name in '%s' is too long", w->path);
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = errno == ENOENT ? 0
                                : error_set_errno(w->err, -errno, "cannot examine '%s'", w->path);
        } else if (!S_ISDIR(st.st_mode)) {
            r = w->fn(w->path, w->arg);
        } else if (depth + 1 >= DEST_WALK_DEPTH) {
            r = error_set(w->err, -ELOOP, "'%s' is more than %d folders deep", w->path,
                          DEST_WALK_DEPTH);
        } else {
            int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                r = errno == ENOENT
                        ? 0
                        : error_set_errno(w->err, -errno, "cannot open folder '%s'", w->path);
            else
                r = walk_dir(w, fd, len + (size_t)k, depth + 1);
        }
        w->path[len] = '\0';
        errno = 0;
    }
    if (r == 0 && errno)
        r = error_set_errno(w->err, -errno, "cannot list folder '%s'", w->path);
    closedir(d);
    return r;
}

static int local_walk(void *priv, int (*fn)(const char *remote, void *arg), void *arg,
                      struct error *err)
{
    struct local *l = priv;
    struct local_walk *w = malloc(sizeof(*w));
    if (!w)
        return error_set(err, -ENOMEM, "out of memory");
    *w = (struct local_walk){.fn = fn, .arg = arg, .err = err};
    int r = 0;
    size_t len = (size_t)snprintf(w->path, sizeof(w->path), "%s", l->root);
    int fd = len < sizeof(w->path) ? open(l->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd < 0)
        r = error_set_errno(err, len < sizeof(w->path) ? -errno : -ENAMETOOLONG,
                            "cannot open folder '%s'", l->root);
    else
        r = walk_dir(w, fd, len, 0);
    free(w);
    return r;
}

static const char *local_root_name(void *priv)
{
    struct local *l = priv;
    const char *slash = strrchr(l->root, '/');
    return slash && slash[1] ? slash + 1 : "root";
}

/* The backend's table, configured from the `unraid` section (nfs, local) or the `local` one. */
#define LOCAL_OPS(init_fn)                                                                         \
    {                                                                                              \
        .kind = "local", .init = (init_fn), .done = local_done, .prepare = local_prepare,          \
        .probe = local_probe, .conn_new = local_conn_new, .conn_free = local_conn_free,            \
        .open = local_open, .write = local_write, .finish = local_finish, .abort = local_abort,    \
        .retarget = local_retarget, .meta_read = local_meta_read, .meta_list = local_meta_list,    \
        .meta_write = local_meta_write, .rel_of = local_rel_of, .root_name = local_root_name,      \
        .read_copy = local_read_copy, .walk = local_walk,                                          \
    }

const struct dest_ops dest_local_ops = LOCAL_OPS(local_init);
const struct dest_ops dest_local_folder_ops = LOCAL_OPS(local_folder_init);
