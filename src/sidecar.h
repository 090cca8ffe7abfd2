/* SPDX-License-Identifier: MIT */
/*
 * Sidecars: small files on the card that belong to a photo or video and travel with it instead of
 * being backed up as files of their own (docs/design.md, "Sidecars").
 *
 * The list, for a card file "DIR/IMG_0001.JPG", looked up in this order, one file per kind:
 *   - XMP metadata: "DIR/IMG_0001.JPG.xmp", then "DIR/IMG_0001.xmp" (.xmp or .XMP)
 *   - THM thumbnails of videos: "DIR/IMG_0001.thm" (.thm or .THM)
 *   - WAV voice memos: "DIR/IMG_0001.wav" (.wav or .WAV)
 * each a regular file of at most SIDECAR_MAX_BYTES (a bigger one is no sidecar: it is backed up
 * on its own when its extension is wanted). GoPro .lrv proxies are not sidecars: they are videos
 * of hundreds of megabytes that nothing needs next to the original.
 *
 * Pure functions and reads of the card; nothing logs. Any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "scanner.h"

#define SIDECAR_MAX 3                         /* sidecars of one file: one per kind */
#define SIDECAR_MAX_BYTES (16u * 1024 * 1024) /* bytes of one sidecar, read whole */

struct sidecar_set {
    size_t n;
    char rel[SIDECAR_MAX][SCANNER_MAX_PATH]; /* relative to the card folder */
};

/* True when ext (without the dot, as written on the card) names a sidecar kind: "xmp", "XMP",
 * "thm", "THM", "wav", "WAV". Mixed case is not looked up, so it is no sidecar either. */
bool sidecar_is_ext(const char *ext);

/* Finds the sidecars of the card file rel below card_dir_fd (the list above; xmp_only: the XMP
 * one only, for Immich, which takes XMP alone). Fills *ret (n may be 0). Never fails: a candidate
 * that cannot be opened is no sidecar. */
void sidecar_find(int card_dir_fd, const char *rel, bool xmp_only, struct sidecar_set *ret);

/* True when the card file sidecar_rel is one that sidecar_find would find for the card file rel
 * (by name; its size is not looked at): for the scanner, which leaves such files out. */
bool sidecar_belongs(const char *sidecar_rel, const char *rel);

/* Reads the sidecar rel below card_dir_fd whole. *ret_buf (malloc'd, the caller's; non-NULL even
 * when empty) holds *ret_len bytes; *ret_mtime_ns is its modification time. Errors: -EFBIG beyond
 * SIDECAR_MAX_BYTES, -ENOMEM, an errno of open or read; err says which file. */
int sidecar_read(int card_dir_fd, const char *rel, uint8_t **ret_buf, size_t *ret_len,
                 int64_t *ret_mtime_ns, struct error *err);

/* The name of the sidecar sidecar_rel of the card file rel at a destination where that file got
 * the name final_name (possibly renamed "IMG_0001_1.JPG"): final_name + ".xmp" for the
 * "IMG_0001.JPG.xmp" form, else final_name's stem + the sidecar's extension ("IMG_0001_1.xmp").
 * Returns 0, or -ENAMETOOLONG when it does not fit size. */
int sidecar_dest_name(const char *sidecar_rel, const char *rel, const char *final_name, char *out,
                      size_t size);
