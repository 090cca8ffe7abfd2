/* SPDX-License-Identifier: MIT */
/*
 * Card walker. Depth first over openat()'d directory fds with O_NOFOLLOW, so the walk stays on
 * the card even if it holds symlinks to '/'. The walk keeps its own stack of folders (no
 * recursion): each folder is read whole when it is entered (files added, sub-folder names kept
 * on its frame), then its sub-folders are visited one by one. Frames near the root keep their
 * fd; deeper ones give it up after reading and their children are reopened by path from the
 * deepest frame that kept one, so any depth the path ceiling allows costs a bounded number of
 * fds. Entries are collected into a growing array (with a ceiling) and sorted at the end, so
 * runs over the same card see files in the same order. Whatever could not be listed or
 * examined becomes a named problem in the list.
 */
#include "scanner.h"

#include "sidecar.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCANNER_OPEN_FRAMES 64 /* frames that keep their folder's fd */

/* One folder on the way down. */
struct frame {
    int fd;          /* -1 once given up (deep frames) */
    size_t path_len; /* length of its relative path in the walk's path buffer */
    char **subdirs;  /* names of the sub-folders still to visit */
    size_t n_subdirs, next_subdir, cap_subdirs;
};

struct walk {
    struct scan_list *list;
    size_t cap;
    char *const *extensions;
    uint64_t min_size;
    size_t max_ignored;
    size_t n_folders;
    char *path; /* SCANNER_MAX_PATH bytes: the relative path of the current folder or entry */
};

static bool system_folder(const char *name)
{
    static const char *const names[] = {
        "System Volume Information",
        "$RECYCLE.BIN",
        "RECYCLER",
        "LOST.DIR",
        "lost+found",
        "Android", /* phone cards: app data, not photos */
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

static void extension_of(const char *name, char ext[16])
{
    ext[0] = '\0';
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || strlen(dot + 1) >= 16)
        return;
    size_t i = 0;
    for (const char *p = dot + 1; *p; p++)
        ext[i++] = (char)tolower((unsigned char)*p);
    ext[i] = '\0';
}

static bool extension_wanted(char *const *extensions, const char *ext)
{
    if (!ext[0])
        return false;
    for (size_t i = 0; extensions && extensions[i]; i++)
        if (strcasecmp(extensions[i], ext) == 0)
            return true;
    return false;
}

/* Records a problem with rel (or "." for the root). Only -ENOMEM fails. */
static int add_problem(struct walk *w, const char *rel, enum scan_problem_kind kind, int error)
{
    struct scan_list *l = w->list;
    l->n_problems++;
    if (l->n_problems_named >= SCANNER_MAX_PROBLEMS)
        return 0;
    if (!l->problems) {
        l->problems = calloc(SCANNER_MAX_PROBLEMS, sizeof(*l->problems));
        if (!l->problems)
            return -ENOMEM;
    }
    char *copy = strdup(rel[0] ? rel : ".");
    if (!copy)
        return -ENOMEM;
    struct scan_problem *p = &l->problems[l->n_problems_named++];
    p->rel_path = copy;
    p->kind = kind;
    p->error = error;
    return 0;
}

/* Counts an ignored file and names it while fewer than max_ignored are. Only -ENOMEM fails. */
static int add_ignored(struct walk *w, const char *rel, const char ext[16], const struct stat *st,
                       enum scan_ignored_reason reason)
{
    struct scan_list *l = w->list;
    l->n_ignored++;
    if (l->n_ignored_named >= w->max_ignored)
        return 0;
    if (!l->ignored) {
        l->ignored = calloc(w->max_ignored, sizeof(*l->ignored));
        if (!l->ignored)
            return -ENOMEM;
    }
    char *copy = strdup(rel);
    if (!copy)
        return -ENOMEM;
    struct scan_ignored *ig = &l->ignored[l->n_ignored_named++];
    ig->rel_path = copy;
    memcpy(ig->ext, ext, 16);
    ig->size = (uint64_t)st->st_size;
    ig->reason = reason;
    return 0;
}

static int add_entry(struct walk *w, const char *rel, const char *name_in_rel, const char ext[16],
                     const struct stat *st)
{
    struct scan_list *l = w->list;
    if (l->n >= SCANNER_MAX_FILES)
        return add_problem(w, rel, SCAN_PROBLEM_FILES, EFBIG);
    if (l->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        struct scan_entry *e = realloc(l->entries, cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        l->entries = e;
        w->cap = cap;
    }
    char *copy = strdup(rel);
    if (!copy)
        return -ENOMEM;
    struct scan_entry *e = &l->entries[l->n++];
    e->rel_path = copy;
    e->name = copy + (name_in_rel - rel);
    memcpy(e->ext, ext, 16);
    e->size = (uint64_t)st->st_size;
    e->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    l->bytes += e->size;
    return 0;
}

static int frame_push_subdir(struct frame *f, const char *name)
{
    if (f->n_subdirs == f->cap_subdirs) {
        size_t cap = f->cap_subdirs ? f->cap_subdirs * 2 : 8;
        char **p = realloc(f->subdirs, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        f->subdirs = p;
        f->cap_subdirs = cap;
    }
    f->subdirs[f->n_subdirs] = strdup(name);
    if (!f->subdirs[f->n_subdirs])
        return -ENOMEM;
    f->n_subdirs++;
    return 0;
}

static void frame_done(struct frame *f)
{
    if (f->fd >= 0)
        close(f->fd);
    for (size_t i = 0; i < f->n_subdirs; i++)
        free(f->subdirs[i]);
    free(f->subdirs);
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

/* Appends name to the path of a folder (path_len bytes). Returns the new length, or 0 when it
 * would pass the ceiling (then the path is left as it was). */
static size_t path_append(char *path, size_t path_len, const char *name)
{
    size_t name_len = strlen(name);
    size_t sep = path_len ? 1 : 0;
    if (path_len + sep + name_len + 1 > SCANNER_MAX_PATH)
        return 0;
    if (sep)
        path[path_len] = '/';
    memcpy(path + path_len + sep, name, name_len + 1);
    return path_len + sep + name_len;
}

/* Reads the folder of frame f (its path in w->path): adds its wanted files, keeps its
 * sub-folders' names on f. Problems are recorded; only -ENOMEM fails. */
static int read_folder(struct walk *w, struct frame *f)
{
    char *path = w->path;
    size_t path_len = f->path_len;
    int fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0); /* closedir() closes it; f keeps its own */
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return add_problem(w, path, SCAN_PROBLEM_LIST, e);
    }
    int r = 0;
    struct dirent *de;
    while ((errno = 0, de = readdir(d))) {
        const char *name = de->d_name;
        if (name[0] == '.') /* ., .., hidden files, .Trashes, ._AppleDouble, .Spotlight-V100 */
            continue;
        size_t child_len = path_append(path, path_len, name);
        if (!child_len) {
            path[path_len] = '\0';
            r = add_problem(w, path, SCAN_PROBLEM_PATH, ENAMETOOLONG);
            if (r < 0)
                break;
            continue;
        }
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = add_problem(w, path, SCAN_PROBLEM_STAT, errno);
        } else if (S_ISLNK(st.st_mode)) {
            w->list->n_symlinks++;
        } else if (S_ISDIR(st.st_mode) && !system_folder(name)) {
            if (w->n_folders >= SCANNER_MAX_FOLDERS)
                r = add_problem(w, path, SCAN_PROBLEM_FOLDERS, EFBIG);
            else if ((r = frame_push_subdir(f, name)) == 0)
                w->n_folders++;
        } else if (S_ISREG(st.st_mode)) {
            char ext[16];
            extension_of(name, ext);
            if (!extension_wanted(w->extensions, ext))
                r = add_ignored(w, path, ext, &st, SCAN_IGNORED_EXTENSION);
            else if ((uint64_t)st.st_size < w->min_size)
                r = add_ignored(w, path, ext, &st, SCAN_IGNORED_SMALL);
            else
                r = add_entry(w, path, path + child_len - strlen(name), ext, &st);
        }
        path[path_len] = '\0';
        if (r < 0)
            break;
    }
    if (r == 0 && errno != 0)
        r = add_problem(w, path, SCAN_PROBLEM_READ, errno);
    closedir(d);
    return r;
}

/* Opens the folder whose path (w->path, child_len bytes) is a child of the top frame. */
static int open_child(struct walk *w, struct frame *frames, size_t depth, const char *name)
{
    const struct frame *top = &frames[depth - 1];
    if (top->fd >= 0) {
        int fd = openat(top->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
    /* the deepest frame that kept its fd, and the path below it */
    const struct frame *base = &frames[SCANNER_OPEN_FRAMES - 1];
    const char *rel = w->path + base->path_len + (base->path_len ? 1 : 0);
    return scanner_open_beneath(base->fd, rel, O_RDONLY | O_DIRECTORY);
}

static int walk(struct walk *w, int root_fd)
{
    struct frame *frames = calloc(SCANNER_MAX_DEPTH, sizeof(*frames));
    if (!frames) {
        close(root_fd);
        return -ENOMEM;
    }
    size_t depth = 1;
    frames[0].fd = root_fd;
    int r = read_folder(w, &frames[0]);
    while (r == 0 && depth > 0) {
        struct frame *top = &frames[depth - 1];
        if (top->next_subdir == top->n_subdirs) {
            frame_done(top);
            depth--;
            if (depth)
                w->path[frames[depth - 1].path_len] = '\0';
            continue;
        }
        const char *name = top->subdirs[top->next_subdir++];
        size_t child_len = path_append(w->path, top->path_len, name);
        if (!child_len) { /* read_folder checked the length: cannot happen, but stay safe */
            r = add_problem(w, w->path, SCAN_PROBLEM_PATH, ENAMETOOLONG);
            continue;
        }
        if (depth == SCANNER_MAX_DEPTH) { /* the path ceiling keeps depth below this */
            r = add_problem(w, w->path, SCAN_PROBLEM_PATH, ENAMETOOLONG);
            w->path[top->path_len] = '\0';
            continue;
        }
        int fd = open_child(w, frames, depth, name);
        if (fd < 0) {
            r = add_problem(w, w->path, SCAN_PROBLEM_LIST, -fd);
            w->path[top->path_len] = '\0';
            continue;
        }
        struct frame *f = &frames[depth++];
        f->fd = fd;
        f->path_len = child_len;
        r = read_folder(w, f);
        if (depth > SCANNER_OPEN_FRAMES) {
            close(f->fd);
            f->fd = -1;
        }
    }
    for (size_t i = 0; i < depth; i++)
        frame_done(&frames[i]);
    free(frames);
    return r;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct scan_entry *)a)->rel_path,
                  ((const struct scan_entry *)b)->rel_path);
}

/* Does a wanted file that is no sidecar itself own the sidecar e (sidecar.h)? Its owner sorts
 * at or after "<dir>/<stem>" (the rel_path of e without its extension), among the entries that
 * start with it. */
static bool has_owner(const struct scan_list *list, const struct scan_entry *e)
{
    const char *dot = strrchr(e->name, '.');
    if (!dot || !sidecar_is_ext(dot + 1) || e->size > SIDECAR_MAX_BYTES)
        return false;
    size_t plen = (size_t)(dot - e->rel_path);
    size_t lo = 0, hi = list->n; /* first entry >= the prefix */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strncmp(list->entries[mid].rel_path, e->rel_path, plen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < list->n && strncmp(list->entries[i].rel_path, e->rel_path, plen) == 0;
         i++) {
        const char *odot = strrchr(list->entries[i].name, '.');
        if (&list->entries[i] != e && !(odot && sidecar_is_ext(odot + 1)) &&
            sidecar_belongs(e->rel_path, list->entries[i].rel_path))
            return true;
    }
    return false;
}

/* Leaves out the wanted files that travel as sidecars of another wanted file (a .wav voice memo
 * when wav is wanted), so they are not copied twice. Keeps the order. */
static void drop_sidecars(struct scan_list *list)
{
    bool *drop = list->n ? calloc(list->n, sizeof(*drop)) : NULL;
    if (!drop)
        return; /* out of memory: the files are copied twice rather than not at all */
    for (size_t i = 0; i < list->n; i++)
        drop[i] = has_owner(list, &list->entries[i]);
    size_t kept = 0;
    for (size_t i = 0; i < list->n; i++) {
        if (drop[i]) {
            list->bytes -= list->entries[i].size;
            list->n_sidecars++;
            free(list->entries[i].rel_path);
        } else {
            list->entries[kept++] = list->entries[i];
        }
    }
    list->n = kept;
    free(drop);
}

int scanner_scan(const char *root, char *const *extensions, uint64_t min_size,
                 struct scan_list **ret, struct error *err)
{
    return scanner_scan_naming(root, extensions, min_size, 0, ret, err);
}

int scanner_scan_naming(const char *root, char *const *extensions, uint64_t min_size,
                        size_t max_ignored, struct scan_list **ret, struct error *err)
{
    if (max_ignored > SCANNER_MAX_IGNORED)
        return error_set(err, -EINVAL, "too many ignored files to name");
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open '%s'", root);

    struct scan_list *list = calloc(1, sizeof(*list));
    char *path = malloc(SCANNER_MAX_PATH);
    if (!list || !path) {
        close(fd);
        free(list);
        free(path);
        return error_set(err, -ENOMEM, "out of memory");
    }
    path[0] = '\0';
    struct walk w = {.list = list,
                     .extensions = extensions,
                     .min_size = min_size,
                     .max_ignored = max_ignored,
                     .path = path};
    int r = walk(&w, fd); /* takes fd */
    free(path);
    if (r < 0) {
        scan_list_free(list);
        return error_set(err, r, "out of memory while scanning '%s'", root);
    }
    if (list->n > 1)
        qsort(list->entries, list->n, sizeof(list->entries[0]), entry_cmp);
    drop_sidecars(list);
    *ret = list;
    return 0;
}

void scan_list_free(struct scan_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++)
        free(list->entries[i].rel_path);
    free(list->entries);
    for (size_t i = 0; i < list->n_problems_named; i++)
        free(list->problems[i].rel_path);
    free(list->problems);
    for (size_t i = 0; i < list->n_ignored_named; i++)
        free(list->ignored[i].rel_path);
    free(list->ignored);
    free(list);
}

void scan_problem_describe(const struct scan_problem *p, char *buf, size_t size)
{
    switch (p->kind) {
    case SCAN_PROBLEM_LIST:
        snprintf(buf, size, "cannot list the folder: %s", strerror(p->error));
        break;
    case SCAN_PROBLEM_READ:
        snprintf(buf, size, "cannot read the folder's entries: %s", strerror(p->error));
        break;
    case SCAN_PROBLEM_STAT:
        snprintf(buf, size, "cannot examine it: %s", strerror(p->error));
        break;
    case SCAN_PROBLEM_PATH:
        snprintf(buf, size, "path too long: a name inside it makes a path longer than %d bytes",
                 SCANNER_MAX_PATH - 1);
        break;
    case SCAN_PROBLEM_FILES:
        snprintf(buf, size, "too many files: more than %d wanted files on the card",
                 SCANNER_MAX_FILES);
        break;
    case SCAN_PROBLEM_FOLDERS:
        snprintf(buf, size, "too many folders: more than %d folders on the card",
                 SCANNER_MAX_FOLDERS);
        break;
    default:
        snprintf(buf, size, "cannot read it: %s", strerror(p->error));
        break;
    }
}

int scanner_open_beneath(int dir_fd, const char *rel_path, int flags)
{
    if (!rel_path[0] || rel_path[0] == '/' || strlen(rel_path) >= SCANNER_MAX_PATH)
        return -EINVAL;
    char comp[256];
    int cur = dir_fd;
    const char *p = rel_path;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len >= sizeof(comp) || (len == 2 && p[0] == '.' && p[1] == '.')) {
            if (cur != dir_fd)
                close(cur);
            return -EINVAL;
        }
        memcpy(comp, p, len);
        comp[len] = '\0';
        int fl = slash ? (O_RDONLY | O_DIRECTORY) : flags;
        int fd = openat(cur, comp, fl | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        if (cur != dir_fd)
            close(cur);
        if (fd < 0)
            return -saved;
        if (!slash)
            return fd;
        cur = fd;
        p = slash + 1;
    }
}
