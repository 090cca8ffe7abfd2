/* SPDX-License-Identifier: MIT */
/*
 * RAW+JPEG pairs: a camera set to RAW+JPEG writes two files of one shot, "IMG_0001.CR3" and
 * "IMG_0001.JPG". When only one of them carries a capture date, both go to the date folder of
 * that one, instead of the other falling back to its modification time and landing on another
 * day (docs/design.md, "RAW+JPEG pairs").
 *
 * A pair is exactly two files of the scan list in one folder whose names without the extension
 * are equal ignoring case ("DSC_0001.NEF" + "dsc_0001.jpg"): one RAW (an extension
 * media_kind_from_ext calls MEDIA_KIND_RAW: cr2, cr3, crw, nef, nrw, arw, sr2, srf, dng, orf,
 * rw2, rwl, pef, raf, srw, 3fr, erf, kdc, dcr, mef, mos, iiq, x3f) and one JPEG or HEIF (jpg, jpeg,
 * jpe, heic, heif, hif). A name shared by more such files (a RAW with a JPEG and a HEIF) makes
 * no pair: which date belongs with which would be a guess. Other files of the same name (a .MOV,
 * sidecars) are not part of it.
 *
 * Pure functions and reads of the card and of the database; nothing logs. Any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "error.h"
#include "media.h"
#include "scanner.h"

#define PAIR_NONE SIZE_MAX /* an entry of no pair */

/* True when ext (lower case, without the dot, as in scan_entry) can be the RAW side of a pair,
 * resp. the JPEG/HEIF side. */
bool pair_is_raw_ext(const char *ext);
bool pair_is_jpeg_ext(const char *ext);

/* The partner of each entry of l: (*ret_partner)[i] is the index in l->entries of the other
 * file of entry i's pair, or PAIR_NONE. *ret_partner (l->n entries, malloc'd, non-NULL even for
 * an empty list) is the caller's to free. Errors: -ENOMEM. */
int pair_index(const struct scan_list *l, size_t **ret_partner, struct error *err);

/* The capture time (floating, media.h) in the metadata of the card file se below card_dir_fd,
 * read with media_probe_fd (at most MEDIA_PROBE_MAX_BYTES, the file's head in practice); 0 when
 * it has none or cannot be opened or read. */
int64_t pair_probe(int card_dir_fd, const struct scan_entry *se);

/* The metadata of the card file se, open as fd (media_probe_fd): *ret is always written, all
 * zero when the probe failed; with -ENODATA (no capture date) capture_time 0 and the rest as the
 * probe found it (make, model, lens, serial: "" when absent). Returns media_probe's result. */
int pair_probe_fd(int fd, const struct scan_entry *se, struct media_info *ret);

/* pair_probe_fd on the card file se below card_dir_fd; also the open's negative errno. */
int pair_probe_info(int card_dir_fd, const struct scan_entry *se, struct media_info *ret);

/* A pair shares its metadata for the name patterns (pattern.h): each of mi's make, model, lens
 * and serial that is empty is taken from partner's. */
void pair_share_camera(struct media_info *mi, const struct media_info *partner);

/* True when one of mi's make, model, lens, serial is empty (its partner may have it). */
bool pair_camera_missing(const struct media_info *mi);

/* The {seq} of each entry of l (pattern.h): numbers from 1 in l's order (the session's file
 * list), the second file of a pair (partner, pair_index's; NULL: no pairs) taking the first's.
 * *ret_seq (l->n numbers, malloc'd, non-NULL) is the caller's. Errors: -ENOMEM. */
int pair_seq(const struct scan_list *l, const size_t *partner, uint64_t **ret_seq,
             struct error *err);

/* The capture time of the file partner (the other file of a pair) from its own metadata: the one
 * db records for this version of it (recorded by the read that hashed it, in this or an earlier
 * session; db may be NULL), else pair_probe; 0 when it has none. */
int64_t pair_partner_capture(struct db *db, int64_t card_id, int card_dir_fd,
                             const struct scan_entry *partner);
