/* SPDX-License-Identifier: MIT */
#include "sidecar.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Kinds in lookup order; the XMP one first (Immich takes it). */
static const char *const kinds[][2] = {{"xmp", "XMP"}, {"thm", "THM"}, {"wav", "WAV"}};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

bool sidecar_is_ext(const char *ext)
{
    for (size_t k = 0; k < N_KINDS; k++)
        if (strcmp(ext, kinds[k][0]) == 0 || strcmp(ext, kinds[k][1]) == 0)
            return true;
    return false;
}

/* Length of rel without its extension (the dot of the last component), or all of it. */
static size_t stem_len(const char *rel)
{
    const char *dot = strrchr(rel, '.');
    const char *slash = strrchr(rel, '/');
    return dot && (!slash || dot > slash) ? (size_t)(dot - rel) : strlen(rel);
}

static bool usable(int dir_fd, const char *rel)
{
    int fd = scanner_open_beneath(dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= SIDECAR_MAX_BYTES;
    close(fd);
    return ok;
}

void sidecar_find(int card_dir_fd, const char *rel, bool xmp_only, struct sidecar_set *ret)
{
    ret->n = 0;
    size_t stem = stem_len(rel);
    for (size_t k = 0; k < (xmp_only ? 1 : N_KINDS); k++) {
        bool found = false;
        /* "<name>.xmp" (darktable, Lightroom for RAW+JPEG) before "<stem>.xmp" */
        for (int whole = k == 0; whole >= 0 && !found; whole--)
            for (size_t c = 0; c < 2 && !found; c++) {
                char *buf = ret->rel[ret->n];
                int n =
                    whole ? snprintf(buf, SCANNER_MAX_PATH, "%s.%s", rel, kinds[k][c])
                          : snprintf(buf, SCANNER_MAX_PATH, "%.*s.%s", (int)stem, rel, kinds[k][c]);
                if (n < 0 || n >= SCANNER_MAX_PATH || strcmp(buf, rel) == 0)
                    continue;
                found = usable(card_dir_fd, buf);
            }
        if (found)
            ret->n++;
    }
}

bool sidecar_belongs(const char *sidecar_rel, const char *rel)
{
    size_t sstem = stem_len(sidecar_rel);
    const char *ext = sidecar_rel + sstem;
    if (!*ext || !sidecar_is_ext(ext + 1) || strcmp(sidecar_rel, rel) == 0)
        return false;
    bool xmp = strcasecmp(ext + 1, "xmp") == 0;
    if (xmp && strlen(rel) == sstem && strncmp(rel, sidecar_rel, sstem) == 0)
        return true; /* "<name>.xmp" */
    size_t stem = stem_len(rel);
    return stem == sstem && strncmp(rel, sidecar_rel, stem) == 0;
}

int sidecar_read(int card_dir_fd, const char *rel, uint8_t **ret_buf, size_t *ret_len,
                 int64_t *ret_mtime_ns, struct error *err)
{
    uint8_t *buf = NULL;
    int r = 0;
    int fd = scanner_open_beneath(card_dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set_errno(err, fd, "cannot open the sidecar '%s'", rel);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = error_set_errno(err, -errno, "cannot examine the sidecar '%s'", rel);
        goto out;
    }
    if (st.st_size > SIDECAR_MAX_BYTES) {
        r = error_set(err, -EFBIG, "the sidecar '%s' is larger than %u bytes", rel,
                      SIDECAR_MAX_BYTES);
        goto out;
    }
    size_t len = 0;
    char *text = NULL;
    r = fileio_read_fd(fd, SIDECAR_MAX_BYTES, &text, &len);
    buf = (uint8_t *)text;
    if (r == 0 && len != (size_t)st.st_size)
        r = error_set(err, -EAGAIN, "the sidecar '%s' changed while it was read", rel);
    else if (r == -EFBIG)
        error_set(err, r, "the sidecar '%s' is larger than %u bytes", rel, SIDECAR_MAX_BYTES);
    else if (r < 0)
        error_set_errno(err, r, "cannot read the sidecar '%s'", rel);
    if (r < 0)
        goto out;
    *ret_buf = buf;
    buf = NULL;
    *ret_len = len;
    *ret_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
out:
    free(buf);
    close(fd);
    return r;
}

int sidecar_dest_name(const char *sidecar_rel, const char *rel, const char *final_name, char *out,
                      size_t size)
{
    const char *ext = sidecar_rel + stem_len(sidecar_rel); /* ".xmp" */
    size_t rlen = strlen(rel);
    bool whole = strncmp(sidecar_rel, rel, rlen) == 0 && sidecar_rel + rlen == ext;
    size_t keep = whole ? strlen(final_name) : stem_len(final_name);
    int n = snprintf(out, size, "%.*s%s", (int)keep, final_name, ext);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
