/* SPDX-License-Identifier: MIT */
/*
 * Card detection: notices SD cards as they come and go, mounts them read-only, and tells its
 * owner through two callbacks. Sources:
 *   - block-device events from libudev (the "udev" source when a udev daemon runs, else the
 *     kernel's own uevents), add / change (media change in a reader that stays plugged in) /
 *     remove;
 *   - the mount table (libmount's monitor): cards mounted by someone else, and anything mounted
 *     beneath sd_card.mount_points;
 *   - a timer every sd_card.poll_interval seconds that asks readers without media to check for
 *     some (as udisks does) and picks up devices whose event was missed.
 *
 * A card is a partition, or a whole disk without a partition table, of a removable, USB or MMC
 * device (or one named by sd_card.devices, never one named by sd_card.ignore_devices) that
 * carries a filesystem (libblkid). Unless it is mounted already, the detector has cardmount.h
 * mount it read-only, nosuid, nodev, noexec under sd_card.mount_base (the kernel's driver, a
 * libmount helper or a FUSE program; the four flags checked and enforced) before the card is
 * reported, and unmounts what it mounted when the card goes away.
 *
 * Threads: a struct detector belongs to one thread (the service's loop thread). A card reported
 * with mounted_by_us is unmounted with cardmount_unmount, from any thread, by whoever is done
 * with it; the detector notices through the mount table.
 */
#pragma once

#include <stdbool.h>

#include "config.h"
#include "error.h"

struct detector;

struct detector_card {
    char device[256];       /* "/dev/sdb1", "" for a mount whose source is not a block device */
    char uuid[128];         /* filesystem UUID, "" when unknown */
    char label[128];        /* filesystem label, "" when none */
    char fstype[32];        /* "vfat", "exfat", "ext4", ... "" when unknown */
    char mount_point[4096]; /* where the card is mounted */
    bool mounted_by_us;     /* SnapSync mounted it (and unmounts it) */
};

struct detector_callbacks {
    /* A card is present and mounted at card->mount_point. */
    void (*card_added)(const struct detector_card *card, void *userdata);
    /* A card reported by card_added went away: device removed, media changed, or its mount
     * vanished (someone unmounted it, or SnapSync did after the backup). */
    void (*card_removed)(const struct detector_card *card, void *userdata);
    void *userdata;
};

/*
 * Sets up the event sources from cfg->sd_card; cfg is borrowed and must stay valid until
 * detector_free or the next detector_reconfigure. Does not look
 * at what is present yet: call detector_scan for that. *ret is the caller's (detector_free).
 * Errors: -ENOMEM, -EIO (no netlink socket, no mount monitor: err says which), -EACCES.
 */
int detector_new(const struct config *cfg, const struct detector_callbacks *cb,
                 struct detector **ret, struct error *err);

/* Frees everything; NULL-safe. Does not unmount (see detector_unmount_all). */
void detector_free(struct detector *d);

/* One file descriptor (an epoll instance of the detector's own sources) that becomes readable
 * when detector_process has something to do. Owned by the detector. */
int detector_fd(const struct detector *d);

/* Which source was picked: "udev" or "kernel". */
const char *detector_source(const struct detector *d);

/* Handles every pending event of every source, calling the callbacks. Returns 0 (problems with
 * one device are logged, not returned) or -ENOMEM. */
int detector_process(struct detector *d);

/* Looks at every block device and the mount table now and reports the cards present as if just
 * inserted. Cards already reported are not reported again. Returns 0 or -ENOMEM. */
int detector_scan(struct detector *d);

/* Applies a new configuration (rules, mount folder, poll interval) without forgetting the cards
 * already handled; call detector_scan next to pick up what the new rules accept. cfg is borrowed
 * as for detector_new. Errors: -ENOMEM, -EIO (timer). */
int detector_reconfigure(struct detector *d, const struct config *cfg, struct error *err);

/* Unmounts every card SnapSync mounted that is still mounted (lazily when busy) and removes
 * its folder. For shutdown. */
void detector_unmount_all(struct detector *d);

/*
 * The rules, exposed for tests: whether the device named name (kernel name, "sdb1", "loop0p1")
 * is taken as a card reader. removable: its disk's sysfs `removable`; bus: "usb", "mmc" or "".
 * sd_card.ignore_devices wins over everything; sd_card.devices adds names.
 */
bool detector_device_accepted(const struct config *cfg, const char *name, bool removable,
                              const char *bus);
