/* SPDX-License-Identifier: MIT */
/*
 * Card identity: realpath, then the mount table entry whose target is exactly that folder. A
 * mount whose source is a block device gives the filesystem UUID (libblkid); anything else, or
 * a subfolder of a mount, is identified by its path.
 */
#include "card.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <blkid.h>
#include <libmount.h>
#include <openssl/evp.h>

#include "hasher.h"

static void fs_identity(const char *root, struct card_identity *id)
{
    struct libmnt_table *tb = mnt_new_table();
    if (!tb)
        return;
    if (mnt_table_parse_mtab(tb, NULL) != 0)
        goto out;
    struct libmnt_fs *fs = mnt_table_find_target(tb, root, MNT_ITER_BACKWARD);
    if (!fs || !mnt_fs_get_target(fs) || strcmp(mnt_fs_get_target(fs), root) != 0)
        goto out;
    const char *src = mnt_fs_get_srcpath(fs);
    struct stat st;
    if (!src || stat(src, &st) < 0 || !S_ISBLK(st.st_mode))
        goto out;
    blkid_cache cache = NULL;
    if (blkid_get_cache(&cache, "/dev/null") != 0)
        goto out;
    char *uuid = blkid_get_tag_value(cache, "UUID", src);
    char *label = blkid_get_tag_value(cache, "LABEL", src);
    if (uuid && uuid[0]) {
        snprintf(id->uuid, sizeof(id->uuid), "fs:%s", uuid);
        snprintf(id->device, sizeof(id->device), "%s", src);
        if (label && label[0])
            snprintf(id->label, sizeof(id->label), "%s", label);
    }
    free(uuid);
    free(label);
    blkid_put_cache(cache);
out:
    mnt_unref_table(tb);
}

int card_identify(const char *path, struct card_identity *ret, struct error *err)
{
    struct card_identity id = {0};
    char real[PATH_MAX];
    if (!realpath(path, real))
        return error_set_errno(err, -errno, "cannot open '%s'", path);
    struct stat st;
    if (stat(real, &st) < 0)
        return error_set_errno(err, -errno, "cannot open '%s'", path);
    if (!S_ISDIR(st.st_mode))
        return error_set(err, -ENOTDIR, "'%s' is not a folder", path);
    snprintf(id.root, sizeof(id.root), "%s", real);

    const char *base = strrchr(real, '/');
    snprintf(id.label, sizeof(id.label), "%s", base && base[1] ? base + 1 : real);

    fs_identity(real, &id);
    if (!id.uuid[0]) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        if (EVP_Digest(real, strlen(real), md, &len, EVP_sha1(), NULL) != 1)
            return error_set(err, -EIO, "hashing failed (OpenSSL)");
        hasher_hex(md, 8, hex);
        snprintf(id.uuid, sizeof(id.uuid), "dir:%s", hex);
    }
    *ret = id;
    return 0;
}
