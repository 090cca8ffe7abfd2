/* SPDX-License-Identifier: MIT */
/*
 * Destinations: the small interface every backend implements (dest_local.c, dest_smb.c,
 * dest_immich.c, dest_s3.c, dest_rclone.c; each one file with one `const struct dest_ops` table,
 * and a new kind is one more such file). Nothing outside dest.c asks which kind of destination it
 * has.
 *
 * Life cycle: dest_create_all() from the config; per session dest_prepare(); per worker and
 * destination dest_conn_new() (backends keep connection state there: an SMB context, a CURL
 * handle); per file dest_open() -> dest_write()* -> dest_finish() (commit + verify) or
 * dest_abort().
 *
 * Threads: a conn is used by one thread at a time, never by two at once; it may move between
 * threads (the engine's writer opens and writes a file, its finisher then finishes it) with the
 * engine's lock in between. The engine keeps two conns per worker and destination so that
 * verifying one file overlaps copying the next. One file of a conn is open at a time.
 *
 * Promises every backend keeps (docs/design.md): a partial file never has its final name; an
 * existing file with different content is never overwritten (a unique new name is chosen); a copy
 * is reported done only after it was verified when verification is on. Destinations with paths
 * copy the file's sidecars (sidecar.h) next to it under its final name at finish.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "hasher.h"
#include "pattern.h"

#define DEST_MAX 8
#define DEST_REMOTE_MAX 1024
#define DEST_NAME_MAX 255   /* bytes of one file name at a destination */
#define DEST_SIDECARS_MAX 3 /* sidecars of one copy: sidecar.h's SIDECAR_MAX */

/* The session a destination works for (albums per session, names in logs). */
struct dest_session {
    int64_t id;
    const char *card_uuid;
    const char *card_label;
    int64_t started_at; /* seconds since the epoch */
};

/* What a destination is told about one file. */
struct dest_item {
    const char *rel_path; /* path on the card */
    const char *name;     /* base name on the card */
    uint64_t size;
    int64_t mtime_ns;
    int64_t capture_time; /* floating local time (media.h) */
    int32_t utc_offset;   /* seconds east of UTC of capture_time, when has_offset */
    bool has_offset;      /* the file said its zone; else capture_time is the local zone's */
    /* The file's values for the name patterns (pattern.h), the caller's; its md5 is ignored
     * (dest_open and dest_finish set it). */
    const struct pattern_values *values;
    /* Set by dest_open for the backend from the destination's patterns (callers leave them
     * NULL): the folder below the root ("" none; '/'-separated, no empty, "." or ".."
     * component), the copy's file name (a dest_name_valid name, before the backend's own rules
     * and "_N"), and the album (immich.album_pattern; NULL: the backend's album_mode). */
    const char *folder;
    const char *target;
    const char *album;
    const char *kind; /* "photo", "raw", "video", "unknown" */
    /* SHA-1 (hex) when already known before this read (an earlier attempt or session hashed
     * the file), else "". The content read now is hashed again and checked at finish. */
    const char *sha1_known;
    /* The XMP sidecar next to the file on the card ("IMG_0001.xmp"), relative to card_dir_fd, or
     * NULL. Destinations read it themselves through scanner_open_beneath (it is small). */
    const char *sidecar_rel;
    /* The card folder, open until the file's finish or abort returned: file destinations look
     * up and copy all the file's sidecars (sidecar.h) from it at finish. */
    int card_dir_fd;
};

/* Answer of the optional precheck for one item. */
struct dest_precheck {
    bool present; /* the destination already has this content: no upload needed */
    char remote[DEST_REMOTE_MAX];
};

/* A sidecar a file destination has next to a copy (dest_result). */
struct dest_sidecar {
    char remote[DEST_REMOTE_MAX]; /* where it is, in the form of dest_result.remote */
    uint64_t size;
    int64_t mtime_ns; /* the card sidecar's, which the copy carries */
    char md5[33];     /* hex of the bytes at remote */
    char sha1[41];
};

struct dest_result {
    char remote[DEST_REMOTE_MAX]; /* where the copy is: a path, a URL, an asset id */
    bool existed; /* the same content was already there under that name; nothing was added */
    /* The sidecars of the file (sidecar.h) that are next to the copy with the card's content:
     * placed by this finish, or found there with the same bytes (a copy that existed, a RAW and
     * a JPEG sharing one XMP). A file already there with other bytes (the user's edited XMP) is
     * not reported. Destinations without paths (Immich) report none. */
    struct dest_sidecar sidecars[DEST_SIDECARS_MAX];
    size_t n_sidecars;
};

#define DEST_READ_CHUNK (1024 * 1024) /* bytes handed to a read_copy callback at most */

/* What a server that keeps its own checksums says about one copy (dest_lookup_copy). */
struct dest_lookup {
    bool present;                 /* it has the content, not in its trash */
    bool trashed;                 /* it has the content, in its trash (present is false) */
    char remote[DEST_REMOTE_MAX]; /* where it has it now (an asset id; may differ from the
                                   * recorded one when the content was uploaded again) */
};

struct dest;
struct dest_conn;
struct dest_file;

/* The table a backend fills. Private state hangs off the void pointers. */
struct dest_ops {
    const char *kind; /* "local" */
    /* The backend uses the SHA-1 of what it stores (Immich; rclone remotes whose backend has
     * SHA-1 and no MD5). The card's reader computes SHA-1
     * only when a destination of the session needs it (docs/design.md, "Hashes"). */
    bool needs_sha1;
    /* Reads its settings from cfg; sets *ret_priv, and the stable id and human label. */
    int (*init)(const struct config *cfg, void **ret_priv, char *id, size_t id_size, char *label,
                size_t label_size, struct error *err);
    void (*done)(void *priv);
    /* Once per session before any file: checks the target, cleans temporaries left by dead runs. */
    int (*prepare)(void *priv, const struct dest_session *session, struct error *err);
    /* Optional (NULL): asks in bulk which items (all with sha1_known) the destination already
     * has, so they are not sent again. Fills ret[i] for each of the n items. Main thread, after
     * prepare; the backend may use its own connection. */
    int (*precheck)(void *priv, const struct dest_item *items, size_t n, struct dest_precheck *ret,
                    struct error *err);
    /* Optional (NULL): once at the end of a session (flush album additions, ...). */
    int (*end_session)(void *priv, struct error *err);
    /* For test-connection: reach, authenticate, create and delete a probe file. */
    int (*probe)(void *priv, char *detail, size_t detail_size, struct error *err);
    /* Optional (NULL): makes calls in progress on this destination (a prepare or probe waiting
     * for a server that hangs) fail soon, because the session ends without it. Any thread. */
    void (*interrupt)(void *priv);
    int (*conn_new)(void *priv, void **ret_conn, struct error *err);
    void (*conn_free)(void *conn);
    int (*open)(void *conn, const struct dest_item *item, void **ret_file, struct error *err);
    int (*write)(void *file, const void *buf, size_t len, struct error *err);
    /* Commits the temporary into place and verifies it against digest (when verify). Consumes
     * file, whatever the result. */
    int (*finish)(void *file, const struct hasher_digest *digest, bool verify,
                  struct dest_result *ret, struct error *err);
    /* Removes the temporary. Consumes file. */
    void (*abort)(void *file);
    /* Optional (NULL: {md5} is refused for this destination at load): called by dest_finish
     * before finish when the destination's patterns use {md5}, with the folder and target
     * (dest_item) expanded with the content's MD5, which replace the ones open had (expanded
     * with PATTERN_MD5_UNKNOWN). Errors: -ENAMETOOLONG, -EINVAL; the file is still to be
     * finished or aborted. */
    int (*retarget)(void *file, const char *folder, const char *target, struct error *err);

    /* Optional, all five or none (NULL: the destination keeps no ASC MHL history, history.h):
     * SnapSync's own small files below the destination's root (ascmhl/). rel is relative to the
     * root, '/'-separated, without "." or ".." components. Main thread, after prepare, between
     * the files (the backend uses its own connection). */
    /* Reads rel whole into *ret_buf (malloc'd, the caller's, NUL-terminated past *ret_len).
     * Errors: -ENOENT, -EFBIG beyond max bytes, the backend's. */
    int (*meta_read)(void *priv, const char *rel, size_t max, char **ret_buf, size_t *ret_len,
                     struct error *err);
    /* Calls fn(name, arg) for each regular file in the folder rel_dir (not "." or ".."); fn
     * returns 0 to go on. Errors: -ENOENT (no such folder), fn's, the backend's. */
    int (*meta_list)(void *priv, const char *rel_dir, int (*fn)(const char *name, void *arg),
                     void *arg, struct error *err);
    /* Writes len bytes at buf as rel, creating its folder: a temporary first, flushed to disk,
     * then put in place by rename, so a reader sees the old file or the whole new one. replace
     * false: an existing rel is kept and -EEXIST returned. */
    int (*meta_write)(void *priv, const char *rel, const void *buf, size_t len, bool replace,
                      struct error *err);
    /* The path relative to the root of a copy at remote (a dest_result.remote of this backend):
     * 0, -EINVAL when remote is not below the root, -ENAMETOOLONG. */
    int (*rel_of)(void *priv, const char *remote, char *out, size_t size);
    /* The name of the root folder ("camera-backups"; the share's name when it is the root). */
    const char *(*root_name)(void *priv);

    /* Checking a stored copy again (`snapsync verify`, verify.h). A backend has one of the two;
     * NULL for the other. Both run on the main thread, with or without a prepare before, using
     * the backend's own connection. */
    /* Files: reads the copy at remote (a dest_result.remote of this backend) from its start to
     * its end, calling fn(buf, len, arg) for each chunk (at most DEST_READ_CHUNK bytes, in
     * order); fn returns 0 to go on or a negative errno, which ends the read and is returned.
     * Memory is one chunk whatever the size. Errors: -ENOENT (no file there), -EINVAL (remote
     * is not below the root, or not a regular file), fn's, the backend's. */
    int (*read_copy)(void *priv, const char *remote,
                     int (*fn)(const void *buf, size_t len, void *arg), void *arg,
                     struct error *err);
    /* Servers that keep their own checksums (Immich): asks whether the server still has the
     * content whose SHA-1 is sha1_hex (40 lower-case hex digits), stored as remote. */
    int (*lookup_copy)(void *priv, const char *remote, const char *sha1_hex,
                       struct dest_lookup *ret, struct error *err);
    /* Optional (NULL: `snapsync verify` looks for no extra files there): calls fn(remote, arg)
     * for each file below the root (remote in the form of dest_result.remote; anything that is
     * not a folder counts as a file), in no particular order, leaving out what
     * dest_walk_skip() says. Folders are gone into at most DEST_WALK_DEPTH deep (deeper ones:
     * -ELOOP). fn returns 0 to go on, or a negative errno, which ends the walk and is returned.
     * Memory: the names of the folders on the way down. Main thread, the backend's own
     * connection. Errors: fn's, the backend's. */
    int (*walk)(void *priv, int (*fn)(const char *remote, void *arg), void *arg, struct error *err);
};

/*
 * Creates every destination the config enables, in a stable order. Errors: -ENOTSUP for a
 * destination this build does not have, -EINVAL, -ENOMEM. *ret is a malloc'd array of *ret_n
 * destinations, the caller's (dest_free_all). With none enabled: -ENODEV ("no destination is
 * enabled").
 */
int dest_create_all(const struct config *cfg, struct dest ***ret, size_t *ret_n, struct error *err);

/* Frees n destinations and the array; NULL-safe. */
void dest_free_all(struct dest **dests, size_t n);

/* Stable id for the database ("local:/srv/photos"); changes only when the target does. */
const char *dest_id(const struct dest *d);
/* Short human label ("local /srv/photos"). */
const char *dest_label(const struct dest *d);
/* The config section it comes from: "unraid", "local", "immich", "s3" or "rclone". */
const char *dest_section(const struct dest *d);
/* Backend kind ("local"). */
const char *dest_kind(const struct dest *d);

int dest_prepare(struct dest *d, const struct dest_session *session, struct error *err);
/* True when the backend has a precheck. */
bool dest_has_precheck(const struct dest *d);
/* Returns 0 without touching ret when the backend has none. */
int dest_precheck(struct dest *d, const struct dest_item *items, size_t n,
                  struct dest_precheck *ret, struct error *err);
int dest_end_session(struct dest *d, struct error *err);
int dest_probe(struct dest *d, char *detail, size_t detail_size, struct error *err);
/* Does nothing when the backend has no interrupt. Any thread. */
void dest_interrupt(struct dest *d);

/* The destination's own small files (the ops above); false when the backend has none. */
bool dest_has_meta(const struct dest *d);
int dest_meta_read(struct dest *d, const char *rel, size_t max, char **ret_buf, size_t *ret_len,
                   struct error *err);
int dest_meta_list(struct dest *d, const char *rel_dir, int (*fn)(const char *name, void *arg),
                   void *arg, struct error *err);
int dest_meta_write(struct dest *d, const char *rel, const void *buf, size_t len, bool replace,
                    struct error *err);
int dest_rel_of(const struct dest *d, const char *remote, char *out, size_t size);
const char *dest_root_name(const struct dest *d);

/* True when d's backend uses SHA-1 (dest_ops.needs_sha1). */
bool dest_needs_sha1(const struct dest *d);

/* How a stored copy can be checked again (verify.h): by reading its bytes (files), by asking the
 * server for its checksum, or not at all. */
enum dest_check_kind { DEST_CHECK_NONE, DEST_CHECK_READ, DEST_CHECK_LOOKUP };
enum dest_check_kind dest_check_kind(const struct dest *d);
/* The ops above; -ENOTSUP when the backend has not that one. Main thread. */
int dest_read_copy(struct dest *d, const char *remote,
                   int (*fn)(const void *buf, size_t len, void *arg), void *arg, struct error *err);
int dest_lookup_copy(struct dest *d, const char *remote, const char *sha1_hex,
                     struct dest_lookup *ret, struct error *err);
/* True when the backend can list its files (dest_ops.walk). */
bool dest_can_walk(const struct dest *d);
/* dest_ops.walk; -ENOTSUP when the backend cannot. Main thread. */
int dest_walk(struct dest *d, int (*fn)(const char *remote, void *arg), void *arg,
              struct error *err);

/* Per worker and destination; see the note on threads at the top. */
int dest_conn_new(struct dest *d, struct dest_conn **ret, struct error *err);
void dest_conn_free(struct dest_conn *c);

int dest_open(struct dest_conn *c, const struct dest_item *item, struct dest_file **ret,
              struct error *err);
int dest_write(struct dest_file *f, const void *buf, size_t len, struct error *err);
/* Consumes f. */
int dest_finish(struct dest_file *f, const struct hasher_digest *digest, bool verify,
                struct dest_result *ret, struct error *err);
/* Consumes f; NULL-safe. */
void dest_abort(struct dest_file *f);

struct sidecar_set;

/* Where one sidecar of a file would go, for the dry run. */
struct dest_target_sidecar {
    size_t of;                   /* its index in the sidecar set given to dest_target */
    char where[DEST_REMOTE_MAX]; /* next to the file, under the file's name with the sidecar's
                                  * extension (sidecar_dest_name); for Immich its id */
};

/* Where a file would go, for the dry run. */
struct dest_target {
    char where[DEST_REMOTE_MAX]; /* "/srv/photos/2024/05/01/IMG_0001.JPG", "smb://nas/photos/...";
                                  * for a destination without paths (Immich) its id */
    bool has_path;               /* where names a file path (else the destination itself) */
    bool taken;                  /* a file already has that name: the copy may be found the same
                                  * or get a name "_N"; looked up on local folders only */
    char problem[ERROR_MSG_MAX]; /* why the patterns give no path for the file; "" */
    size_t n_sidecars;           /* the sidecars d carries with the file: all of them to a file
                                  * destination, the XMP alone to Immich, none to S3 or rclone */
    struct dest_target_sidecar sidecars[DEST_SIDECARS_MAX];
};

/*
 * Where the card file rel with the pattern values v (v->name its base name; v->md5 NULL when
 * not known: {md5} shows as '?'s) would go on d: root + the folder and file name its patterns
 * give (the backend's own character mapping and "_N" apart); and where each of its sidecars
 * (sidecar_find's set for rel, may be NULL) that d carries would go. Writes nothing and asks no
 * server; on a local or NFS folder it looks (lstat) whether the name is taken. The exact name
 * the copy (and so its sidecars) gets when it is taken is decided at copy time. When the
 * patterns cannot be expanded, where is the destination's id, has_path false, and problem says
 * why. Any thread.
 */
void dest_target(const struct dest *d, const struct pattern_values *v, const char *rel,
                 const struct sidecar_set *sidecars, struct dest_target *ret);

/*
 * The folder (folder_size bytes) and file name (name_size bytes) the patterns of d give for v
 * (v->md5 as pattern_expand takes it), as dest_open hands them to the backend in dest_item.
 * Errors: pattern_expand's; outputs written only on success. Any thread.
 */
int dest_expand(const struct dest *d, const struct pattern_values *v, char *folder,
                size_t folder_size, char *name, size_t name_size, struct error *err);

/* The folder and file patterns of d (borrowed; never NULL). */
const struct pattern *dest_folder_pattern(const struct dest *d);
const struct pattern *dest_file_pattern(const struct dest *d);

/*
 * For backends: true when name can be one file name at every destination: 1 to DEST_NAME_MAX
 * bytes, no '/', not "." or "..". Every backend refuses other names (-EINVAL, "unusable file
 * name") before its own rules, which come on top: dest_smb.c maps the characters SMB forbids and a
 * trailing dot or space, and refuses a name that no longer fits once mapped. NULL is not valid.
 * Pure; any thread.
 */
bool dest_name_valid(const char *name);

#define DEST_WALK_DEPTH 32 /* folders below the root a walk goes into */

/*
 * For backends' walk: true when the entry name of the folder at depth (0: the root) is not to be
 * reported or gone into: SnapSync's own folders at the root (its temporaries ".snapsync-tmp",
 * the ASC MHL history "ascmhl"), and what file browsers and NAS systems leave in folders they
 * show (".DS_Store", "._*", "Thumbs.db", "desktop.ini", ".directory", "@eaDir", ".AppleDouble",
 * "#recycle", ".recycle", "#snapshot", ".Trash-*"), and "." and "..". Pure; any thread.
 */
bool dest_walk_skip(unsigned depth, const char *name);

/*
 * For backends' meta operations: true when rel is a path relative to the root as dest_ops says:
 * not empty, no leading '/', no empty, "." or ".." component ("a//b" is refused, a trailing '/'
 * is not). Component lengths are the backend's to check. NULL is not valid. Pure; any thread.
 */
bool dest_rel_valid(const char *rel);

/* For backends: candidate name k for a file named name when the name is taken: k == 0 is name
 * itself, else "<stem>_<k>.<ext>", the stem shortened (never inside a UTF-8 sequence) so that the
 * result fits in DEST_NAME_MAX bytes. out gets at most size bytes. */
void dest_candidate_name(const char *name, unsigned k, char *out, size_t size);

/* For backends: adds to res the sidecar at remote whose bytes are the len at buf (hashed here:
 * MD5 and SHA-1) and whose time is mtime_ns. Errors: -EOVERFLOW (DEST_SIDECARS_MAX reported
 * already), -ENAMETOOLONG (remote), -ENOMEM; res is not changed then. Any thread. */
int dest_sidecar_add(struct dest_result *res, const char *remote, const void *buf, size_t len,
                     int64_t mtime_ns, struct error *err);
