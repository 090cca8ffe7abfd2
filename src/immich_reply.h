/* SPDX-License-Identifier: MIT */
/*
 * Parsers of Immich server replies (immich_reply.c), used by the Immich destination
 * (dest_immich.c, reached only through its ops table `dest_immich_ops`): pure functions over a
 * server's bytes, a file of their own so the fuzz target and unit tests drive them alone.
 *
 * Every parser takes untrusted bytes (buf, len; no NUL needed), bounds its JSON depth, writes its
 * outputs only on success and returns 0, or -EBADMSG (err says what was wrong). Any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "dest.h"
#include "error.h"

#define IMMICH_ID_MAX 64 /* an asset or album id (uuid, 36 chars) with room */

/* Permissions SnapSync needs, as bits of immich_parse_api_key's ret_perms. */
#define IMMICH_PERM_UPLOAD 0x01u       /* asset.upload */
#define IMMICH_PERM_READ 0x02u         /* asset.read */
#define IMMICH_PERM_ALBUM_READ 0x04u   /* album.read */
#define IMMICH_PERM_ALBUM_CREATE 0x08u /* album.create */
#define IMMICH_PERM_ALBUM_ADD 0x10u    /* albumAsset.create */
#define IMMICH_PERM_ALL 0x1fu

/* GET /api/server/version: {major, minor, patch, prerelease?}. */
int immich_parse_version(const char *buf, size_t len, int ret[3], struct error *err);

/* POST /api/assets reply {id, status}: *ret_duplicate is status "duplicate" (else "created"). */
int immich_parse_upload(const char *buf, size_t len, char ret_id[IMMICH_ID_MAX],
                        bool *ret_duplicate, struct error *err);

/* GET /api/assets/{id}: the base64 SHA-1 in "checksum" (ret_checksum gets at most 63 chars) and
 * isTrashed. */
int immich_parse_asset(const char *buf, size_t len, char ret_checksum[64], bool *ret_trashed,
                       struct error *err);

/* GET /api/api-keys/me: the key's name (truncated to name_size) and the IMMICH_PERM_* bits it
 * grants ("all" grants every one). */
int immich_parse_api_key(const char *buf, size_t len, unsigned *ret_perms, char *ret_name,
                         size_t name_size, struct error *err);

/* POST /api/assets/bulk-upload-check reply for a request whose item ids were "0".."n-1": sets
 * ret[i].present and .remote for each id the server rejects as a duplicate not in the trash.
 * Ids out of range are -EBADMSG. ret must hold n items (only present ones are written). */
int immich_parse_bulk_check(const char *buf, size_t len, size_t n, struct dest_precheck *ret,
                            struct error *err);

/* An album reply: an AlbumResponseDto object (createAlbum) or an array of them (getAllAlbums).
 * Looks for the first album named name (any name for an object); *ret_found false when none.
 * ret_id is written only when found. */
int immich_parse_album(const char *buf, size_t len, const char *name, char ret_id[IMMICH_ID_MAX],
                       bool *ret_found, struct error *err);

/* The human message of an error reply: "message" as a string or an array of strings (2.x), else
 * the start of the body; control characters and non-ASCII bytes replaced, never fails. */
void immich_reply_message(const char *buf, size_t len, char *out, size_t size);

/* Copies len bytes of in to out (size bytes, NUL-terminated, cut to fit), bytes outside printable
 * ASCII as '?': for text from a server put into a message. */
void immich_printable(const char *in, size_t len, char *out, size_t size);
