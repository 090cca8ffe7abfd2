/* SPDX-License-Identifier: MIT */
/*
 * Identity of what is being backed up. A card is known by its filesystem UUID when the folder is
 * the mount point of a block device (so the same card is recognised in any reader, at any mount
 * point); any other folder by a stable id derived from its absolute path.
 */
#pragma once

#include "error.h"

struct card_identity {
    char uuid[128];   /* "fs:1234-ABCD" or "dir:<16 hex of SHA-1 of the real path>" */
    char label[128];  /* filesystem label, else the folder's base name */
    char root[4096];  /* real path of the folder */
    char device[256]; /* "/dev/sdb1" when it is a mount of a block device, else "" */
};

/*
 * Identifies the folder at path. Reads the mount table (libmount) and, for a mounted block
 * device, its UUID and LABEL (libblkid; cached values are fine). Errors: -ENOENT, -ENOTDIR,
 * -EACCES for path. ret is written only on success. Any thread.
 */
int card_identify(const char *path, struct card_identity *ret, struct error *err);
