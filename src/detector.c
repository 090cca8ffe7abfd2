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
 * Mounting (libmount, the FUSE fallbacks, the flags) is cardmount.c's: the detector decides
 * what is a card, asks cardmount_mount to mount it, and remembers that it did.
 */
#include "detector.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <blkid.h>
#include <libmount.h>
#include <libudev.h>

#include "cardmount.h"
#include "log.h"

#define DETECTOR_CARDS_MAX 64
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
        if (cardmount_unmount(e->card.mount_point, true, &err) < 0 && err.code != -EINVAL)
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
    struct cardmount m;
    if (cardmount_mount(e->card.device, e->card.fstype, e->card.label, e->card.uuid,
                        d->cfg->sd_card.mount_base, &m, &err) < 0) {
        /* stays known (inactive) so a rescan does not retry in a loop; a new event does */
        log_error("%s", err.msg);
        return;
    }
    snprintf(e->card.mount_point, sizeof(e->card.mount_point), "%s", m.target);
    snprintf(e->via, sizeof(e->via), "%s", m.via);
    e->card.mounted_by_us = true;
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
        int r = cardmount_unmount(e->card.mount_point, false, &err);
        if (r == -EBUSY)
            r = cardmount_unmount(e->card.mount_point, true, &err);
        if (r < 0 && r != -EINVAL)
            log_warning("%s", err.msg);
        else
            log_info("unmounted '%s'", e->card.mount_point);
        rmdir(e->card.mount_point);
        e->card.mounted_by_us = false;
        e->card.mount_point[0] = '\0';
    }
}
