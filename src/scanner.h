/*
 * Walks a mounted card (or any folder) and lists the candidate files: regular files whose
 * extension is wanted and whose size is at least min_size. Never follows a symlink (so nothing
 * outside the card is ever read), skips hidden entries and system folders (.Trashes,
 * System Volume Information, $RECYCLE.BIN, LOST.DIR, ...).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Ceilings: deeper trees, more files or longer paths are reported, not followed. */
#define SCANNER_MAX_DEPTH 32
#define SCANNER_MAX_FILES 1000000
#define SCANNER_MAX_PATH 4096

struct scan_entry {
    char *rel_path;   /* "DCIM/100CANON/IMG_0001.CR2", owned by the list */
    const char *name; /* points into rel_path: the last component */
    char ext[16];     /* lower case, without the dot; "" if none or too long */
    uint64_t size;
    int64_t mtime_ns;
};

struct scan_list {
    struct scan_entry *entries; /* sorted by rel_path */
    size_t n;
    uint64_t bytes;       /* sum of sizes */
    size_t n_ignored;     /* entries skipped by the filters (not counting hidden/system) */
    size_t n_symlinks;    /* symlinks seen and not followed */
    size_t n_unreadable;  /* folders that could not be opened (reported, not fatal) */
    size_t n_truncated;   /* entries beyond the ceilings */
};

/*
 * Scans root. extensions is a NULL-terminated list of lower-case extensions without dots.
 * Errors: -ENOENT/-ENOTDIR/-EACCES for root itself, -ENOMEM. Problems below root are counted in
 * the list, not fatal. *ret is the caller's (scan_list_free). Any thread.
 */
int scanner_scan(const char *root, char *const *extensions, uint64_t min_size,
                 struct scan_list **ret, struct error *err);

/* NULL-safe. */
void scan_list_free(struct scan_list *list);

/*
 * Opens rel_path below the folder dir_fd for reading, one component at a time with O_NOFOLLOW,
 * so no symlink anywhere in the path is followed. Returns the fd or a negative errno (-ELOOP
 * for a symlink).
 */
int scanner_open_beneath(int dir_fd, const char *rel_path, int flags);
