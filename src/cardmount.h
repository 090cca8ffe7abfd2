/* SPDX-License-Identifier: MIT */
/*
 * Card mounting: mounts a card's block device read-only in a folder of its own, and unmounts it.
 * The detector (detector.c) decides what is a card; this module only mounts what it is given.
 *
 * Where: a fresh folder under a base folder (sd_card.mount_base), named after the label, else the
 * UUID, else the device's name (cardmount_folder_name), with "_2" ... "_99" appended when the
 * name is taken. The base folder is created when missing (0755). An empty folder left behind by
 * an earlier run is reused; a folder that is a mount point never is.
 *
 * How: with libmount first (the kernel's driver, or a /sbin/mount.<type> helper when libmount
 * finds one), options "ro,nosuid,nodev,noexec". When the kernel has no driver for the type and
 * libmount ran no helper (ENODEV, "unknown filesystem type"), a FUSE program from a table in
 * cardmount.c (mount.exfat-fuse, fusefat, ntfs-3g), looked up in root-owned system folders only
 * (never $PATH), mounts it with the same options.
 *
 * Flags: whatever mounted the card, the mount's flags are read back (statvfs) and must include
 * read-only, nosuid, nodev and noexec; what a mounter left out is set with a bind remount and
 * checked again. A mount that stays writable or executable is undone and refused (-EPERM), so a
 * card is never reported mounted without all four.
 *
 * Helper processes: a FUSE program is started with posix_spawn with stdin /dev/null, its output
 * captured (its last KiB, for the error message), no other descriptor, the
 * default signal mask and dispositions, and an environment of PATH and TZ only. cardmount_mount
 * waits for it to exit (through a pidfd) and reaps it itself, at most 15 s, then kills and reaps
 * it: no child of this module outlives the call. The FUSE daemon the program leaves behind is
 * not our child (it daemonises) and lives until the unmount.
 *
 * Logging: the FUSE fallback is logged when it is taken (info: which program, why), with its
 * known caveat (warning) and the program's output (debug), because that mount can take seconds
 * and the service's log must say what runs; everything else goes to the caller through err.
 *
 * Threads: no state is kept between calls; every function may be called from any thread.
 * cardmount_mount spawns and waits for a child process, so it blocks for up to 15 s.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Where and how cardmount_mount mounted a card. */
struct cardmount {
    char target[4096]; /* the folder the card is mounted on */
    char via[288];     /* how, when not by the kernel alone ("through FUSE ('/usr/bin/...')",
                        * "by libmount's helper mount.ntfs"), for the log; "" otherwise */
};

/*
 * Mounts the block device device (fstype as libblkid named it, "" when unknown) read-only,
 * nosuid, nodev and noexec in a new folder under base named after label, else uuid, else the
 * device's name (either may be NULL or ""). On success *ret says where and how; the caller owns
 * the mount and unmounts it with cardmount_unmount. On failure nothing stays mounted and the
 * folder made for it is removed.
 * Errors: -ENAMETOOLONG, or what mkdir said (cannot create base); -EEXIST (no free folder name);
 * -ENOMEM; -ENODEV (no driver, and no FUSE program for the type or it is not installed: err names
 * the Debian package); -EFBIG (too big for the only FUSE program there is); -ETIMEDOUT (the FUSE
 * program did not finish); -EIO (the FUSE program failed or mounted nothing, or libmount failed
 * before the mount system call); -EPERM (the flags still miss after the bind remount); or the
 * errno of the mount system call, of the bind remount or of statvfs (-EACCES, -EINVAL, ...).
 */
int cardmount_mount(const char *device, const char *fstype, const char *label, const char *uuid,
                    const char *base, struct cardmount *ret, struct error *err);

/*
 * Unmounts mount_point (libmount) and removes the empty folder; with lazy, detaches it even when
 * busy (umount -l). Errors: -EBUSY (files open, not lazy), -EINVAL (not a mount point), -EPERM,
 * -ENOMEM, -EIO.
 */
int cardmount_unmount(const char *mount_point, bool lazy, struct error *err);

/* Writes into buf a folder name for a card: the label, else the UUID, else fallback, with
 * anything but letters, digits, '.', '-' and '_' replaced by '_' and no leading '.'; "card" when
 * all three are empty. */
void cardmount_folder_name(const char *label, const char *uuid, const char *fallback, char *buf,
                           size_t size);
