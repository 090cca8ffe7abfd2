/* SPDX-License-Identifier: MIT */
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

/* Ceilings. A path of n folders holds at least 2n - 1 bytes, so the path ceiling bounds the
 * depth (SCANNER_MAX_DEPTH); the walk keeps its own stack, so no depth strains a thread's stack. */
#define SCANNER_MAX_PATH 4096 /* bytes of a relative path, with its NUL */
#define SCANNER_MAX_DEPTH (SCANNER_MAX_PATH / 2)
#define SCANNER_MAX_FILES 1000000   /* wanted files */
#define SCANNER_MAX_FOLDERS 1000000 /* folders walked */
#define SCANNER_MAX_PROBLEMS 100    /* problems named in a list; more are only counted */
#define SCANNER_MAX_IGNORED 10000   /* ignored files a scan may be asked to name */

struct scan_entry {
    char *rel_path;   /* "DCIM/100CANON/IMG_0001.CR2", owned by the list */
    const char *name; /* points into rel_path: the last component */
    char ext[16];     /* lower case, without the dot; "" if none or too long */
    uint64_t size;
    int64_t mtime_ns;
};

/* What could not be done for an entry of the card. Each one means files may have gone unseen. */
enum scan_problem_kind {
    SCAN_PROBLEM_LIST,    /* a folder could not be opened */
    SCAN_PROBLEM_READ,    /* reading a folder's entries failed part way */
    SCAN_PROBLEM_STAT,    /* an entry could not be examined (its inode could not be read) */
    SCAN_PROBLEM_PATH,    /* a name inside a folder makes a path longer than the ceiling */
    SCAN_PROBLEM_FILES,   /* a wanted file beyond SCANNER_MAX_FILES */
    SCAN_PROBLEM_FOLDERS, /* a folder beyond SCANNER_MAX_FOLDERS */
};

struct scan_problem {
    char *rel_path; /* the entry, "." for the root; for SCAN_PROBLEM_PATH the folder holding the
                     * name. Owned by the list. */
    enum scan_problem_kind kind;
    int error; /* positive errno (ENAMETOOLONG, EFBIG for the ceilings) */
};

/* Why a regular file is not a candidate. */
enum scan_ignored_reason {
    SCAN_IGNORED_EXTENSION, /* its extension is not a wanted one (or it has none) */
    SCAN_IGNORED_SMALL,     /* smaller than min_size */
};

/* A file the filters left out, named only when the scan was asked to (scanner_scan_naming). */
struct scan_ignored {
    char *rel_path; /* owned by the list */
    char ext[16];   /* as in scan_entry */
    uint64_t size;
    enum scan_ignored_reason reason;
};

struct scan_list {
    struct scan_entry *entries; /* sorted by rel_path */
    size_t n;
    uint64_t bytes;               /* sum of sizes */
    size_t n_ignored;             /* entries skipped by the filters (not counting hidden/system) */
    struct scan_ignored *ignored; /* the first max_ignored of them in walk order, or NULL */
    size_t n_ignored_named;
    size_t n_sidecars; /* wanted files left out because they travel with another (sidecar.h) */
    size_t n_symlinks; /* symlinks seen and not followed (a notice, not a problem) */
    struct scan_problem *problems; /* the first SCANNER_MAX_PROBLEMS met, in walk order */
    size_t n_problems_named;
    size_t n_problems; /* all problems, named or not */
};

/*
 * Scans root. extensions is a NULL-terminated list of lower-case extensions without dots.
 * Errors: -ENOENT/-ENOTDIR/-EACCES for root itself, -ENOMEM. Everything below root that could
 * not be listed or examined, and every ceiling hit, is a problem in the list, not an error.
 * Holds at most about 64 folders open at once (deeper ones are reopened by path, one component
 * at a time with O_NOFOLLOW). *ret is the caller's (scan_list_free). Any thread.
 */
int scanner_scan(const char *root, char *const *extensions, uint64_t min_size,
                 struct scan_list **ret, struct error *err);

/*
 * scanner_scan, also naming the first max_ignored (at most SCANNER_MAX_IGNORED, else -EINVAL)
 * files the filters left out, with why, in list->ignored; the others are only counted. For the
 * dry run, which shows what happens to each file. Any thread.
 */
int scanner_scan_naming(const char *root, char *const *extensions, uint64_t min_size,
                        size_t max_ignored, struct scan_list **ret, struct error *err);

/* "cannot examine it: Input/output error", for a log line or a record after the quoted path.
 * Always NUL-terminates buf. */
void scan_problem_describe(const struct scan_problem *p, char *buf, size_t size);

/* NULL-safe. */
void scan_list_free(struct scan_list *list);

/*
 * Opens rel_path below the folder dir_fd for reading, one component at a time with O_NOFOLLOW,
 * so no symlink anywhere in the path is followed. Returns the fd or a negative errno (-ELOOP
 * for a symlink).
 */
int scanner_open_beneath(int dir_fd, const char *rel_path, int flags);
