/*
 * Card walker. Recursion over openat()'d directory fds with O_NOFOLLOW, so the walk stays on the
 * card even if it holds symlinks to '/'. Entries are collected into a growing array (with a
 * ceiling) and sorted at the end, so runs over the same card see files in the same order.
 */
#include "scanner.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct walk {
    struct scan_list *list;
    size_t cap;
    char *const *extensions;
    uint64_t min_size;
};

static bool system_folder(const char *name)
{
    static const char *const names[] = {
        "System Volume Information", "$RECYCLE.BIN", "RECYCLER", "LOST.DIR", "lost+found",
        "Android",  /* phone cards: app data, not photos */
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

static int add_entry(struct walk *w, const char *rel, const char *name_in_rel, const char ext[16],
                     const struct stat *st)
{
    struct scan_list *l = w->list;
    if (l->n >= SCANNER_MAX_FILES) {
        l->n_truncated++;
        return 0;
    }
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

/* path holds the relative path of dir_fd ("" for root) with room for SCANNER_MAX_PATH bytes. */
static int walk_dir(struct walk *w, int dir_fd, char *path, size_t path_len, int depth)
{
    DIR *d = fdopendir(dir_fd);
    if (!d) {
        close(dir_fd);
        w->list->n_unreadable++;
        return 0;
    }
    int r = 0;
    struct dirent *de;
    while ((errno = 0, de = readdir(d))) {
        const char *name = de->d_name;
        if (name[0] == '.') /* ., .., hidden files, .Trashes, ._AppleDouble, .Spotlight-V100 */
            continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            w->list->n_unreadable++;
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            w->list->n_symlinks++;
            continue;
        }
        size_t name_len = strlen(name);
        if (path_len + name_len + 2 > SCANNER_MAX_PATH) {
            w->list->n_truncated++;
            continue;
        }
        size_t sep = path_len ? 1 : 0;
        if (sep)
            path[path_len] = '/';
        memcpy(path + path_len + sep, name, name_len + 1);
        size_t child_len = path_len + sep + name_len;

        if (S_ISDIR(st.st_mode)) {
            if (system_folder(name))
                goto next;
            if (depth + 1 >= SCANNER_MAX_DEPTH) {
                w->list->n_truncated++;
                goto next;
            }
            int fd = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                w->list->n_unreadable++;
                goto next;
            }
            r = walk_dir(w, fd, path, child_len, depth + 1);
            if (r < 0)
                break;
        } else if (S_ISREG(st.st_mode)) {
            char ext[16];
            extension_of(name, ext);
            if (!extension_wanted(w->extensions, ext) || (uint64_t)st.st_size < w->min_size) {
                w->list->n_ignored++;
                goto next;
            }
            r = add_entry(w, path, path + path_len + sep, ext, &st);
            if (r < 0)
                break;
        }
    next:
        path[path_len] = '\0';
    }
    if (r == 0 && errno != 0)
        w->list->n_unreadable++;
    closedir(d);
    return r;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct scan_entry *)a)->rel_path, ((const struct scan_entry *)b)->rel_path);
}

int scanner_scan(const char *root, char *const *extensions, uint64_t min_size,
                 struct scan_list **ret, struct error *err)
{
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
    struct walk w = {.list = list, .extensions = extensions, .min_size = min_size};
    int r = walk_dir(&w, fd, path, 0, 0); /* takes fd */
    free(path);
    if (r < 0) {
        scan_list_free(list);
        return error_set(err, r, "out of memory while scanning '%s'", root);
    }
    if (list->n > 1)
        qsort(list->entries, list->n, sizeof(list->entries[0]), entry_cmp);
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
    free(list);
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
