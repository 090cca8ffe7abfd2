/* SPDX-License-Identifier: MIT */
#include "pair.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "media.h"

bool pair_is_raw_ext(const char *ext)
{
    return media_kind_from_ext(ext) == MEDIA_KIND_RAW;
}

bool pair_is_jpeg_ext(const char *ext)
{
    static const char *const jpeg[] = {"jpg", "jpeg", "jpe", "heic", "heif", "hif"};
    for (size_t i = 0; i < sizeof(jpeg) / sizeof(jpeg[0]); i++)
        if (strcmp(ext, jpeg[i]) == 0)
            return true;
    return false;
}

struct member {
    const char *rel; /* the entry's rel_path */
    size_t stem;     /* length of rel without ".ext" */
    size_t index;    /* in the scan list */
};

/* By folder and name without the extension, ignoring case; then by index (a total order). */
static int member_cmp(const void *pa, const void *pb)
{
    const struct member *a = pa, *b = pb;
    size_t n = a->stem < b->stem ? a->stem : b->stem;
    int c = strncasecmp(a->rel, b->rel, n);
    if (c == 0 && a->stem != b->stem)
        c = a->stem < b->stem ? -1 : 1;
    if (c == 0)
        c = a->index < b->index ? -1 : a->index > b->index;
    return c;
}

static bool same_stem(const struct member *a, const struct member *b)
{
    return a->stem == b->stem && strncasecmp(a->rel, b->rel, a->stem) == 0;
}

int pair_index(const struct scan_list *l, size_t **ret_partner, struct error *err)
{
    size_t *partner = malloc((l->n ? l->n : 1) * sizeof(*partner));
    struct member *m = malloc((l->n ? l->n : 1) * sizeof(*m));
    if (!partner || !m) {
        free(partner);
        free(m);
        return error_set(err, -ENOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) {
        const struct scan_entry *se = &l->entries[i];
        partner[i] = PAIR_NONE;
        if (!pair_is_raw_ext(se->ext) && !pair_is_jpeg_ext(se->ext))
            continue;
        /* scan entries with an extension have their dot in the last component */
        const char *dot = strrchr(se->name, '.');
        if (!dot)
            continue;
        m[n++] = (struct member){se->rel_path, (size_t)(dot - se->rel_path), i};
    }
    qsort(m, n, sizeof(*m), member_cmp);
    for (size_t g = 0; g < n;) {
        size_t end = g + 1;
        while (end < n && same_stem(&m[g], &m[end]))
            end++;
        if (end - g == 2) {
            const char *x = l->entries[m[g].index].ext, *y = l->entries[m[g + 1].index].ext;
            if ((pair_is_raw_ext(x) && pair_is_jpeg_ext(y)) ||
                (pair_is_jpeg_ext(x) && pair_is_raw_ext(y))) {
                partner[m[g].index] = m[g + 1].index;
                partner[m[g + 1].index] = m[g].index;
            }
        }
        g = end;
    }
    free(m);
    *ret_partner = partner;
    return 0;
}

int pair_probe_fd(int fd, const struct scan_entry *se, struct media_info *ret)
{
    struct error merr;
    memset(ret, 0, sizeof(*ret));
    int r = media_probe_fd(fd, se->size, se->ext, ret, &merr);
    if (r != 0 && r != -ENODATA) {
        memset(ret, 0, sizeof(*ret));
        return r;
    }
    if (r != 0)
        ret->capture_time = 0;
    char *text[] = {ret->make, ret->model, ret->lens, ret->serial};
    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        text[i][MEDIA_TEXT_MAX - 1] = '\0';
    return r;
}

int pair_probe_info(int card_dir_fd, const struct scan_entry *se, struct media_info *ret)
{
    int fd = scanner_open_beneath(card_dir_fd, se->rel_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(ret, 0, sizeof(*ret));
        return fd;
    }
    int r = pair_probe_fd(fd, se, ret);
    close(fd);
    return r;
}

int64_t pair_probe(int card_dir_fd, const struct scan_entry *se)
{
    struct media_info mi;
    return pair_probe_info(card_dir_fd, se, &mi) == 0 && mi.capture_time > 0 ? mi.capture_time : 0;
}

void pair_share_camera(struct media_info *mi, const struct media_info *partner)
{
    char *mine[] = {mi->make, mi->model, mi->lens, mi->serial};
    const char *theirs[] = {partner->make, partner->model, partner->lens, partner->serial};
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
        if (!mine[i][0])
            memcpy(mine[i], theirs[i], MEDIA_TEXT_MAX);
}

bool pair_camera_missing(const struct media_info *mi)
{
    return !mi->make[0] || !mi->model[0] || !mi->lens[0] || !mi->serial[0];
}

int pair_seq(const struct scan_list *l, const size_t *partner, uint64_t **ret_seq,
             struct error *err)
{
    uint64_t *seq = calloc(l->n ? l->n : 1, sizeof(*seq));
    if (!seq)
        return error_set(err, -ENOMEM, "out of memory");
    uint64_t next = 1;
    for (size_t i = 0; i < l->n; i++) {
        size_t p = partner ? partner[i] : PAIR_NONE;
        seq[i] = p != PAIR_NONE && p < i ? seq[p] : next++;
    }
    *ret_seq = seq;
    return 0;
}

int64_t pair_partner_capture(struct db *db, int64_t card_id, int card_dir_fd,
                             const struct scan_entry *partner)
{
    if (db) {
        struct db_file_key key = {card_id, partner->rel_path, (int64_t)partner->size,
                                  partner->mtime_ns};
        struct db_file f;
        struct error derr;
        if (db_file_find(db, &key, &f, &derr) == 0 && f.capture_time > 0)
            return f.capture_time;
    }
    return pair_probe(card_dir_fd, partner);
}
