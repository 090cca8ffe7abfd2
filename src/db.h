/* SPDX-License-Identifier: MIT */
/*
 * The database: SQLite in WAL mode, the only module that speaks SQL. Holds cards, sessions,
 * files and per-destination copies (docs/database.md has the data model).
 *
 * Threads: a struct db is one connection and belongs to one thread at a time. Each worker opens
 * its own; WAL and a busy timeout let the CLI read while a backup writes.
 *
 * Times are seconds since the epoch (UTC) unless named *_ns. Strings returned inside structs
 * are fixed arrays (truncated if longer), so nothing returned needs freeing except the arrays
 * that functions say are the caller's.
 *
 * Errors every function may return besides those it lists: -EINVAL (a bad argument, or an id
 * that a foreign key needs and that does not exist), -EBUSY (locked for more than the busy
 * timeout), -EBADMSG (corrupt file), -ENOSPC, -EROFS (a write on a DB_READ_ONLY connection),
 * -ENOMEM, -EIO. Functions that change one row by id return -ENOENT when there is no such row.
 * Strings that identify something are refused with -ENAMETOOLONG rather than cut (rel_path and
 * remote beyond 4095 bytes, a card uuid beyond 127); free text (labels, sources, errors) is
 * stored cut to 4096 bytes.
 * docs/database.md describes the schema, the states and the migration policy.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define DB_SCHEMA_VERSION 9

enum db_mode {
    DB_READ_WRITE, /* creates the file and its folder if needed, migrates the schema */
    DB_READ_ONLY,  /* the file must exist with a schema this build knows; no migration */
    /* DB_READ_ONLY that leaves no trace (the dry run): when no other connection has the file
     * open (no -shm) and no write-ahead log is left, it is read immutable, so SQLite creates no
     * -wal or -shm next to it. A writer that starts meanwhile may make a read fail (-EBADMSG,
     * -EIO); never a write. */
    DB_READ_NO_TRACE,
};

/* Per-file states (files.state). */
enum db_file_state {
    DB_FILE_NEW,
    DB_FILE_SCANNING, /* being read and hashed */
    DB_FILE_BACKING_UP,
    DB_FILE_VERIFYING,
    DB_FILE_COMPLETED,
    DB_FILE_FAILED,
};

/* Per-destination copy states (copies.state). */
enum db_copy_state {
    DB_COPY_PENDING,
    DB_COPY_COPYING,
    DB_COPY_VERIFYING,
    DB_COPY_COMPLETED,
    DB_COPY_FAILED,
};

/* Session states (sessions.status). */
enum db_session_status {
    DB_SESSION_SCANNING,
    DB_SESSION_BACKING_UP,
    DB_SESSION_COMPLETED,   /* every file backed up (or already was) */
    DB_SESSION_PARTIAL,     /* some files failed, others done */
    DB_SESSION_FAILED,      /* nothing could be done (destination unusable, card unreadable) */
    DB_SESSION_INTERRUPTED, /* the process stopped or the card went away mid-session */
    DB_SESSION_EMPTY,       /* the source holds no wanted file, and all of it could be read */
};

/* What a session did with one file (session_files.outcome). */
enum db_outcome {
    DB_OUTCOME_COPIED,
    DB_OUTCOME_SKIPPED,   /* already completed everywhere (fast path or same file at target) */
    DB_OUTCOME_DUPLICATE, /* same content already backed up from another path or card */
    DB_OUTCOME_FAILED,
};

const char *db_file_state_to_string(enum db_file_state s);
const char *db_copy_state_to_string(enum db_copy_state s);
const char *db_session_status_to_string(enum db_session_status s);
const char *db_outcome_to_string(enum db_outcome o);
/* Each returns 0 or -EINVAL. */
int db_session_status_from_string(const char *s, enum db_session_status *ret);

struct db;

/*
 * Opens (and in DB_READ_WRITE mode creates and migrates) the database at path. Sets WAL, a busy
 * timeout of 10 s, foreign keys on. Safe when several processes create or migrate the same new
 * file at once: the schema is checked and migrated under one write lock, and the switch to WAL
 * is retried while another holds a lock, within the busy timeout (then -EBUSY).
 * DB_READ_ONLY on a read-only filesystem reads the file as it is (immutable when no
 * write-ahead log is left; see docs/database.md).
 * Errors: -ENOENT (read-only and the file is missing; only then), -EACCES (no permission, or
 * read-only and the folder of a WAL database cannot be written to create its -shm), -EROFS
 * (read-write on a read-only filesystem, or read-only with a write-ahead log left there that
 * cannot be read without its -shm), -EBADMSG (not a database or corrupt: "database 'x' is
 * corrupt or not a SnapSync database"), -EPROTO (schema newer than this build: "created by a
 * newer SnapSync"), -EBUSY, -EIO. Messages name the file. *ret is the caller's, closed with
 * db_close(). Any thread; the result then belongs to that thread.
 */
int db_open(const char *path, enum db_mode mode, struct db **ret, struct error *err);

/* Closes; NULL-safe. */
void db_close(struct db *db);

/* Runs fn inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if fn fails). Returns fn's result or a
 * negative errno from SQLite. When fn fails, err is left as it was: fn reports its own detail
 * (typically through a struct error passed in userdata, which may be err itself). Called inside
 * another db_transaction, it nests through a savepoint. */
int db_transaction(struct db *db, int (*fn)(struct db *db, void *userdata), void *userdata,
                   struct error *err);

/* ---- cards ---- */

/* Finds the card by uuid or creates it; updates label and last_seen. */
int db_card_upsert(struct db *db, const char *uuid, const char *label, int64_t *ret_card_id,
                   struct error *err);

/* The id of the card with this uuid, without changing anything (read-only connections);
 * -ENOENT when unknown. */
int db_card_find(struct db *db, const char *uuid, int64_t *ret_card_id, struct error *err);

/* ---- sessions ---- */

struct db_totals {
    int64_t files_total; /* candidates found by the scan */
    int64_t bytes_total;
    int64_t files_copied;
    int64_t files_skipped;
    int64_t files_duplicate;
    int64_t files_failed;
    int64_t bytes_copied;  /* bytes of files copied in this session (counted once per file) */
    int64_t scan_problems; /* entries of the source that could not be listed or examined (the
                            * first DB_PROBLEMS_MAX are named by db_session_problem_add) */
};

struct db_session {
    int64_t id;
    int64_t card_id;
    char card_uuid[128];
    char card_label[128];
    char source[1024]; /* the folder or mount point backed up */
    int64_t started_at;
    int64_t ended_at; /* 0 while running */
    int64_t pid;      /* process that ran it */
    enum db_session_status status;
    struct db_totals totals;
    char error[512];
    bool safe_to_remove; /* the service unmounted the card after the session */
};

/* Starts a session (status scanning, started_at now, pid getpid()). card_id 0: a session without
 * a card (a plain folder). */
int db_session_begin(struct db *db, int64_t card_id, const char *source, int64_t *ret_id,
                     struct error *err);

/* Updates status and totals of a running session (called for progress, cheap). totals NULL:
 * only the status; the totals in the row stay (a caller that records its files with
 * db_file_record lets the row count, and must pass NULL here and to db_session_end, else its
 * own counts overwrite the row's). */
int db_session_update(struct db *db, int64_t id, enum db_session_status status,
                      const struct db_totals *totals, struct error *err);

/* Sets what the scan of session id found (files_total, bytes_total) and nothing else. */
int db_session_set_found(struct db *db, int64_t id, int64_t files_total, int64_t bytes_total,
                         struct error *err);

/* Ends a session: final status, totals (NULL: those in the row stay, see db_session_update),
 * ended_at now, error (NULL for none). */
int db_session_end(struct db *db, int64_t id, enum db_session_status status,
                   const struct db_totals *totals, const char *error, struct error *err);

/* Records that the card of session id was unmounted after it (safe true), so it can be pulled. */
int db_session_set_safe_to_remove(struct db *db, int64_t id, bool safe, struct error *err);

/*
 * True while the process that ran session s still runs it: s is scanning or backing_up and
 * - its pid is this process's, and this process began it (db_session_begin, through any
 *   connection) and has not ended it; or
 * - its pid is another live process (kill(pid, 0) does not fail with ESRCH) that started no
 *   later than s began (started_at, 2 s of slack): a process that started after the session
 *   cannot have run it, even though it now has the pid of the one that did (pids are reused,
 *   above all after a reboot). The start comes from /proc/<pid>/stat; when /proc cannot tell,
 *   the pid alone decides. A wall clock stepped forward between the session's start and this
 *   call (NTP on a board without a clock) can make another process's session look dead.
 * Any thread.
 */
bool db_session_alive(const struct db_session *s);

/* What db_repair_stale changed. */
struct db_repair {
    int64_t sessions; /* sessions marked interrupted */
    int64_t files;    /* files put back to new */
    int64_t copies;   /* copies put back to pending */
};

/*
 * Repairs what a process that died mid-session left behind, in one transaction:
 * - sessions still scanning/backing_up that are not db_session_alive become interrupted, with
 *   ended_at now and error "the process running this session stopped" (unless one was set);
 * - then files in scanning, backing_up or verifying become new with last_error "interrupted",
 *   and copies in copying or verifying become pending (error cleared, verified_at 0, remote
 *   kept), so the next backup of their card does them again -- except those of a card that a
 *   session still running (so alive) is backing up: a live session owns its card's rows. A
 *   running session without a card (a plain folder) could own any file, so while one runs no
 *   file or copy is touched.
 * Call it before a session starts and when the service starts (its own sessions of this
 * process are alive, so parallel sessions leave each other alone). *ret (may be NULL): the
 * counts. Needs a DB_READ_WRITE connection (-EROFS otherwise).
 */
int db_repair_stale(struct db *db, struct db_repair *ret, struct error *err);

/* db_repair_stale, returning only the number of sessions it interrupted (ret_count may be
 * NULL). Kept for the engine, which calls it before each session. */
int db_sessions_interrupt_stale(struct db *db, int64_t *ret_count, struct error *err);

/* The most recent sessions, newest first, at most limit (1..10000). *ret is a malloc'd array
 * the caller frees with free(); *ret_n its length (0 and NULL when none). */
int db_sessions_list(struct db *db, int limit, struct db_session **ret, size_t *ret_n,
                     struct error *err);

/* One session by id; -ENOENT if none. */
int db_session_get(struct db *db, int64_t id, struct db_session *ret, struct error *err);

#define DB_PROBLEMS_MAX 100 /* problems named per session */

/* An entry of a session's source that could not be listed or examined. */
struct db_problem {
    char path[4096]; /* relative to the source, "." for the source itself */
    char error[512]; /* what failed: "cannot examine it: Input/output error" */
};

/*
 * Names one problem of session_id, after those already named. Beyond DB_PROBLEMS_MAX problems
 * for the session the call stores nothing and returns 0: the count of all of them is
 * totals.scan_problems. path and error are free text (cut to 4096 bytes). -EINVAL when there
 * is no such session.
 */
int db_session_problem_add(struct db *db, int64_t session_id, const char *path, const char *error,
                           struct error *err);

/* The problems named for session_id, in the order they were added, at most DB_PROBLEMS_MAX.
 * *ret is the caller's (free()); *ret_n its length (0 and NULL when none, also for an unknown
 * session). */
int db_session_problems(struct db *db, int64_t session_id, struct db_problem **ret, size_t *ret_n,
                        struct error *err);

/* Records what session_id did with file_id (insert or replace). */
int db_session_file_set(struct db *db, int64_t session_id, int64_t file_id, enum db_outcome o,
                        struct error *err);

/* ---- files ---- */

/* Identity of a file on a card: (card, relative path, size, mtime). */
struct db_file_key {
    int64_t card_id;
    const char *rel_path;
    int64_t size;
    int64_t mtime_ns;
};

struct db_file {
    int64_t id;
    int64_t card_id;
    char rel_path[1024];
    int64_t size;
    int64_t mtime_ns;
    char md5[33];         /* hex, "" until hashed */
    char sha1[41];        /* hex, "" until hashed */
    char xxh128[33];      /* hex (XXH3-128, canonical), "" until hashed or when not recorded */
    int64_t capture_time; /* floating local time, see media.h; 0 unknown */
    char kind[16];
    enum db_file_state state;
    int attempts;
    char last_error[512];
    int64_t duplicate_of; /* file id with the same content, 0 if none */
};

/*
 * Fast path: true when the file with this key exists and has a completed copy for every one of
 * the n destination names. One indexed query; no other work. n is 1..16 and every name non-empty
 * and shorter than 256 bytes, else -EINVAL; a name given twice counts once.
 */
int db_file_done(struct db *db, const struct db_file_key *key, const char *const *dests, size_t n,
                 bool *ret_done, struct error *err);

/* Finds the file with this key or inserts it (state new). ret_file may be NULL. */
int db_file_get_or_create(struct db *db, const struct db_file_key *key, int64_t *ret_id,
                          struct db_file *ret_file, struct error *err);

/* Finds the file with this key without creating it (works on a read-only database). -ENOENT
 * when there is none. */
int db_file_find(struct db *db, const struct db_file_key *key, struct db_file *ret,
                 struct error *err);

/* Sets state and last_error (NULL clears it); when state is DB_FILE_SCANNING, attempts += 1. */
int db_file_set_state(struct db *db, int64_t file_id, enum db_file_state state, const char *error,
                      struct error *err);

/* Stores hashes (hex of exact length, either case; stored lower-case), capture time and kind
 * ("photo", "raw", "video", "unknown"). sha1 (40 hex digits) and xxh128 (32) may be NULL: not
 * computed this time; the file keeps the one it had when its MD5 is the same, else has none. A
 * hash of the wrong length or not hex: -EINVAL. */
int db_file_set_meta(struct db *db, int64_t file_id, const char *md5, const char *sha1,
                     const char *xxh128, int64_t capture_time, const char *kind, struct error *err);

/* Marks file_id as a duplicate of original_id (state completed). */
int db_file_set_duplicate(struct db *db, int64_t file_id, int64_t original_id, struct error *err);

/*
 * Dedup: finds another file (id != exclude_id) with the same md5 AND the same sha1 or the same
 * xxh128 that has a completed copy for every one of the n destinations. *ret_file_id is its id,
 * or 0 when none. Hashes are hex of exact length (either case); sha1 or xxh128 may be NULL, not
 * both; n and names as for db_file_done (-EINVAL otherwise).
 */
int db_hash_backed_up(struct db *db, const char *md5, const char *sha1, const char *xxh128,
                      int64_t exclude_id, const char *const *dests, size_t n, int64_t *ret_file_id,
                      struct error *err);

/* Files in state failed, newest first, at most limit. Array is the caller's (free()). */
int db_files_failed(struct db *db, int limit, struct db_file **ret, size_t *ret_n,
                    struct error *err);

/* ---- copies (file x destination) ---- */

struct db_copy {
    int64_t file_id;
    char dest[256];
    enum db_copy_state state;
    char remote[1024];   /* path at the destination, or a remote id */
    int64_t verified_at; /* 0 if not verified */
    char error[512];
};

/* Inserts or updates the copy of file_id at dest. remote and error may be NULL (kept as is for
 * remote, cleared for error). Completed sets verified_at now; any other state resets it to 0. */
int db_copy_set(struct db *db, int64_t file_id, const char *dest, enum db_copy_state state,
                const char *remote, const char *error, struct error *err);

/* The copy of file_id at dest; -ENOENT if none. */
int db_copy_get(struct db *db, int64_t file_id, const char *dest, struct db_copy *ret,
                struct error *err);

/* ---- one file's outcome, in one transaction ---- */

#define DB_RECORD_COPIES_MAX 16

#define DB_RECORD_SIDECARS_MAX (3 * DB_RECORD_COPIES_MAX) /* sidecars in one db_file_record */

/* A sidecar a destination placed next to a completed copy (dest.h's dest_sidecar). */
struct db_sidecar {
    const char *dest;   /* the copy's destination: one of the record's completed copies */
    const char *remote; /* where it is, non-empty, at most 4095 bytes */
    int64_t size;
    int64_t mtime_ns;
    const char *md5; /* hex, non-empty */
    const char *sha1;
};

/* One destination's copy in a db_file_record: as db_copy_set takes it. */
struct db_record_copy {
    const char *dest;         /* destination id, non-empty, shorter than 256 bytes */
    enum db_copy_state state; /* completed sets verified_at now; any other state resets it */
    const char *remote;       /* NULL keeps the stored one; at most 4095 bytes */
    const char *error;        /* NULL clears it */
};

/* What became of one file. The strings are borrowed for the call. */
struct db_file_record {
    int64_t file_id;
    enum db_file_state state; /* the file's state after this (completed, failed, or new for a
                               * file whose work was interrupted); attempts is not changed */
    const char *last_error;   /* NULL clears it */
    int64_t duplicate_of;     /* > 0: the file has the same content as that file (state must
                               * be completed; last_error is cleared), as db_file_set_duplicate */
    struct db_record_copy copies[DB_RECORD_COPIES_MAX]; /* the copies to set, in order */
    size_t n_copies;                                    /* 0..DB_RECORD_COPIES_MAX */
    enum db_outcome outcome; /* what session_id did with the file (unused when it is 0) */
    /* the sidecars next to the completed copies, stored in sidecar_copies after the copies (a
     * row already there for the same file, dest and remote is updated: its mhl_generation is
     * kept when size and hashes are the same, else reset to 0); may be NULL when n is 0 */
    const struct db_sidecar *sidecars;
    size_t n_sidecars; /* 0..DB_RECORD_SIDECARS_MAX */
};

/*
 * Records one file's outcome in ONE transaction, so a crash, a full disk or any error leaves
 * either all of it or none of it:
 * - the file's state and last_error (or duplicate_of);
 * - each of the n_copies copies, as db_copy_set, then the n_sidecars sidecars;
 * - when session_id > 0: the outcome in session_files, and the session's counters in its row,
 *   counted in SQL: the counter of the outcome (files_copied, files_skipped, files_duplicate,
 *   files_failed) + 1, and for copied bytes_copied + the file's size. When session_id already
 *   had an outcome for this file, that one's counts are taken back first, so the counters are
 *   always exactly what session_files says. A caller using this must let the row count: pass
 *   NULL totals to db_session_update and db_session_end, and db_session_set_found for what the
 *   scan found. session_id 0: no outcome, no counters (a file whose work was interrupted).
 * Begins with BEGIN IMMEDIATE (a savepoint inside a caller's db_transaction) and commits, or
 * rolls everything back on any failure. Errors: -EINVAL (a bad record: a state, outcome or
 * copy state out of range, more than DB_RECORD_COPIES_MAX copies or DB_RECORD_SIDECARS_MAX
 * sidecars, a sidecar without remote or hashes or whose dest is no completed copy of the
 * record, a bad destination name,
 * duplicate_of equal to file_id or with a state other than completed), -ENAMETOOLONG (remote),
 * -ENOENT (no such file or session; nothing recorded), -ENOSPC (the disk holding the database
 * is full: nothing recorded, the caller may retry later), -EBUSY, -EROFS, -EIO. err names the
 * file id and what failed. The connection's thread.
 */
int db_file_record(struct db *db, int64_t session_id, const struct db_file_record *rec,
                   struct error *err);

/* ---- statistics ---- */

struct db_stats {
    int64_t sessions;
    int64_t cards;
    int64_t files; /* distinct files known */
    int64_t files_completed;
    int64_t files_failed;
    int64_t files_duplicate;
    int64_t bytes_completed; /* sum of sizes of completed, non-duplicate files */
};

int db_stats_get(struct db *db, struct db_stats *ret, struct error *err);

/* ---- the web dashboard's queries (src/web.c) ----
 * Read a few times a second at most, so these prepare their statement per call instead of
 * taking slots in the connection's cache. */

#define DB_DEST_STATS_MAX 64 /* destinations reported per db_dest_stats call */

/* Copies at one destination. */
struct db_dest_stats {
    char dest[256];    /* the destination id, as in copies.dest */
    int64_t completed; /* verified copies */
    int64_t failed;
    int64_t pending;         /* pending, copying or verifying */
    int64_t bytes_completed; /* sizes of the files with a verified copy here */
    char last_error[512];    /* error of the most recently failed copy, "" when none */
};

/*
 * Copies per destination, sorted by destination id: of the files session_id recorded an outcome
 * for, or of every file when session_id is 0. At most DB_DEST_STATS_MAX. *ret is the caller's
 * (free()); *ret_n its length (0 and NULL when none).
 */
int db_dest_stats(struct db *db, int64_t session_id, struct db_dest_stats **ret, size_t *ret_n,
                  struct error *err);

/* How many files session_id recorded an outcome for, and their sizes added up: the work done so
 * far whatever the outcome (copied, skipped, duplicate, failed). 0 and 0 for an unknown id. */
int db_session_done(struct db *db, int64_t session_id, int64_t *ret_files, int64_t *ret_bytes,
                    struct error *err);

/* The file of card_id that most recently entered scanning, backing_up or verifying: what a
 * running session works on. -ENOENT when none is. */
int db_card_current_file(struct db *db, int64_t card_id, struct db_file *ret, struct error *err);

/* One file by id; -ENOENT if none. */
int db_file_get(struct db *db, int64_t id, struct db_file *ret, struct error *err);

struct db_session_file {
    struct db_file file;
    enum db_outcome outcome;
};

/*
 * The files session_id recorded an outcome for, sorted by path then id, skipping offset (>= 0)
 * and returning at most limit (1..1000). *ret_total (may be NULL) is how many there are in all.
 * *ret is the caller's (free()); *ret_n its length (0 and NULL when none).
 */
int db_session_files(struct db *db, int64_t session_id, int64_t offset, int limit,
                     struct db_session_file **ret, size_t *ret_n, int64_t *ret_total,
                     struct error *err);

/* Every copy of file_id (one per destination), sorted by destination id, at most
 * DB_DEST_STATS_MAX. *ret is the caller's (free()); *ret_n its length (0 and NULL when none). */
int db_file_copies(struct db *db, int64_t file_id, struct db_copy **ret, size_t *ret_n,
                   struct error *err);

/*
 * Marks a failed file for retry, in one transaction: its failed copies become pending (error
 * cleared) and the file, if failed, becomes new with its last error cleared, so it leaves the
 * failed list. The next backup of its card copies it again (it would anyway: only completed
 * copies are skipped), so this records the wish and tells the user it was heard.
 * *ret_count (may be NULL): 1 when the file was failed, 0 when there was nothing to retry.
 * -ENOENT when there is no such file. Needs a DB_READ_WRITE connection.
 */
int db_file_retry(struct db *db, int64_t file_id, int64_t *ret_count, struct error *err);

/* The same for every file that failed in session_id and is still failed. *ret_count (may be
 * NULL): how many files were marked. -ENOENT when there is no such session. */
int db_session_retry(struct db *db, int64_t session_id, int64_t *ret_count, struct error *err);

/* ---- the ASC MHL history (history.h) ---- */

/* A completed copy not yet listed in its destination's history. */
struct db_unsealed {
    int64_t file_id;
    char remote[4096]; /* where the copy is (a path the destination knows) */
    int64_t verified_at;
    int64_t size;
    int64_t mtime_ns; /* the card file's, which the copy carries */
    char md5[33];
    char sha1[41];
    char xxh128[33];    /* "" when not recorded (sidecars, files copied before schema 9) */
    bool listed_before; /* an earlier copy at the same remote is listed (same content found
                         * in place): not a new file of the history */
};

/* Calls fn for each completed copy at dest whose mhl_generation is 0, ordered by remote, one row
 * at a time (memory stays bounded). fn returns 0 to go on or a negative errno, which ends the walk
 * and is returned. Errors: SQLite's mapped. */
int db_copies_unsealed(struct db *db, const char *dest,
                       int (*fn)(const struct db_unsealed *u, void *arg), void *arg,
                       struct error *err);

/* Records that the copies of the n files at dest are listed in generation (>= 1) of its history,
 * in one transaction. */
int db_copies_seal(struct db *db, const char *dest, const int64_t *file_ids, size_t n,
                   int64_t generation, struct error *err);

/* db_copies_unsealed for the sidecars at dest (sidecar_copies): each remote that has a row with
 * mhl_generation 0 whose copy is completed, once whatever the number of copies it belongs to (a
 * RAW and a JPEG sharing one XMP), with the values of the row of the smallest file_id and its
 * copy's verified_at; listed_before: a generation lists that remote already (for another copy,
 * or other bytes before). Ordered by remote, one row at a time. Errors: SQLite's mapped. */
int db_sidecars_unsealed(struct db *db, const char *dest,
                         int (*fn)(const struct db_unsealed *u, void *arg), void *arg,
                         struct error *err);

/* db_copies_seal, and in the same transaction marks every unlisted sidecar row at dest whose
 * remote is one of the n_sidecars in sidecar_remotes with generation. -EINVAL for generation
 * < 1; SQLite's mapped (nothing marked then). */
int db_history_seal(struct db *db, const char *dest, const int64_t *file_ids, size_t n,
                    const char *const *sidecar_remotes, size_t n_sidecars, int64_t generation,
                    struct error *err);

/* ---- the per-session report (report.h) ---- */

/* One file of a session with one of its copies (or none). */
struct db_report_row {
    struct db_session_file sf; /* the file and what the session did with it */
    bool has_copy;             /* false: the file has no copy at any destination */
    struct db_copy copy;       /* its state now (not when the session ended) */
    int64_t mhl_generation;    /* the ASC MHL generation listing the copy, 0 none */
};

/*
 * Calls fn for each file session_id recorded an outcome for, once per copy of it (ordered by
 * path, file id, then destination; once with has_copy false for a file without any copy), one
 * row at a time from one statement, so memory stays bounded whatever the number of files. fn
 * returns 0 to go on or a negative errno, which ends the walk and is returned as it is. An
 * unknown session has no rows (0, fn never called). Errors: SQLite's mapped. The connection's
 * thread.
 */
int db_session_report_rows(struct db *db, int64_t session_id,
                           int (*fn)(const struct db_report_row *row, void *arg), void *arg,
                           struct error *err);

/* ---- verification runs (`snapsync verify`, verify.h; schema 5) ----
 * A run re-reads stored copies and compares them with what the database recorded. Each copy
 * remembers when a run last checked it (copies.checked_at) and what it found, so a run (or a
 * scheduled scrub, a slice at a time) takes the copies checked longest ago first. */

/* What a check found for one copy (verify_results.result, copies.check_result). */
enum db_verify_result {
    DB_VERIFY_OK,      /* there, same size and hash */
    DB_VERIFY_MISSING, /* not there (no file, no asset, or in the server's trash) */
    DB_VERIFY_CHANGED, /* there with another size or hash */
    DB_VERIFY_ERROR,   /* could not be checked (server unreachable, read error): not a verdict */
    DB_VERIFY_EXTRA,   /* a file at a destination that no copy or sidecar recorded there is:
                        * never a copy's verdict (db_verify_result_add refuses it), a finding of
                        * the run (db_verify_extra_add) */
};

/* A run's state (verify_runs.status). */
enum db_verify_status {
    DB_VERIFY_RUNNING,
    DB_VERIFY_CLEAN,       /* every copy checked was ok */
    DB_VERIFY_PROBLEMS,    /* some copy missing, changed or not checkable */
    DB_VERIFY_FAILED,      /* the run could not go on (the database, a destination unusable) */
    DB_VERIFY_INTERRUPTED, /* stopped (a signal, a card inserted) before the end */
    DB_VERIFY_PAUSED,      /* a slice ended with copies left (verify.h's max_copies) */
};

const char *db_verify_result_to_string(enum db_verify_result r);
const char *db_verify_status_to_string(enum db_verify_status s);

struct db_verify_counts {
    int64_t checked; /* ok + missing + changed + errors */
    int64_t ok;
    int64_t missing;
    int64_t changed;
    int64_t errors;
    int64_t extra; /* files found at a destination that the database does not know there (not
                    * in checked: no copy was checked) */
};

/* Starts a run: a verify_runs row with started_at now, status running, pid getpid(). scope is
 * free text ("all", "session 12", "since 2026-01-01"), dest_filter the destination id or "" for
 * all. *ret_id its id. Runs left running by a process that is gone (killed, a power cut) are
 * first marked interrupted. Needs a DB_READ_WRITE connection. */
int db_verify_run_begin(struct db *db, const char *scope, const char *dest_filter, int64_t *ret_id,
                        struct error *err);

/* Ends (or updates, with status running or paused) run id: its counts (extra too), status and
 * ended_at now. -ENOENT when there is no such run; -EINVAL for a status out of range or negative
 * counts. */
int db_verify_run_end(struct db *db, int64_t id, const struct db_verify_counts *counts,
                      enum db_verify_status status, struct error *err);

/* Which copies a run looks at: completed copies with a remote and a recorded MD5 and SHA-1, and
 * those a run found missing or changed (failed since, until made again). */
struct db_verify_filter {
    int64_t session_id;     /* > 0: only files session_id recorded an outcome for */
    int64_t since;          /* > 0: only copies made (copies.verified_at) at or after since */
    const char *dest;       /* non-NULL: only copies at this destination id */
    int64_t checked_before; /* only copies whose checked_at is before this (0 = never
                             * checked; INT64_MAX for every copy) */
    int64_t run_id;         /* > 0: copies this run has a result for are left out, so a walk
                             * that records each copy it is given ends */
    int64_t made_before;    /* > 0: only copies made (copies.verified_at) before this */
};

/* Where a walk is: after the last copy returned, in the order (checked_at, file_id, dest).
 * Zero it (started false) to start; db_verify_copies_page moves it. Copies left behind it
 * unmarked (a check that could not be made) are not returned again by the same walk. */
struct db_verify_cursor {
    bool started;
    int64_t checked_at;
    int64_t file_id;
    char dest[256];
};

/* One copy to check, with what the database recorded. */
struct db_verify_copy {
    int64_t file_id;
    char dest[256];
    char remote[4096];
    char rel_path[1024]; /* on the card */
    int64_t size;
    int64_t mtime_ns; /* the card file's, which the copy carries */
    char md5[33];
    char sha1[41];          /* "" when not computed (docs/design.md, "Hashes") */
    char xxh128[33];        /* "" when not recorded */
    int64_t checked_at;     /* last check, 0 never */
    int64_t mhl_generation; /* the history generation listing it, 0 none (history.h) */
};

#define DB_VERIFY_PAGE_MAX 256 /* copies per db_verify_copies_page call */

/*
 * The next copies of filter f after *cursor, checked longest ago first (never checked first),
 * at most max (1..DB_VERIFY_PAGE_MAX), into the caller's array ret; *ret_n how many (0: the
 * walk is over). Moves *cursor past them. One bounded query; holds no read transaction after
 * it returns.
 */
int db_verify_copies_page(struct db *db, const struct db_verify_filter *f,
                          struct db_verify_cursor *cursor, struct db_verify_copy *ret, size_t max,
                          size_t *ret_n, struct error *err);

/*
 * Records what run_id found for the copy (file_id, dest) at time at, in one transaction: a
 * verify_results row (replacing one the run had for that copy), and unless result is
 * DB_VERIFY_ERROR the copy's checked_at = at and check_result. With fail_lost (a destination
 * that is SnapSync's own tree: a folder, a share) a copy found missing or changed
 * becomes failed (error "verification run N found it missing: detail"), so that it no longer
 * counts as a backup (db_file_done, db_hash_backed_up) and the next backup makes it again; such
 * a copy is still checked by later runs (db_verify_copies_page), and one found ok again (put
 * back by hand) is completed again. Without fail_lost (Immich, whose library its user curates:
 * an asset deleted there is not uploaded again) only the verdict is recorded. A
 * copy set completed again by db_copy_set starts over: checked_at 0, no check_result, no
 * ASC MHL generation. detail (free text, may be NULL) says what differs ("size 1000, recorded
 * 2048"). -ENOENT when the run or the copy does not exist.
 */
int db_verify_result_add(struct db *db, int64_t run_id, int64_t file_id, const char *dest,
                         enum db_verify_result result, const char *detail, int64_t at,
                         bool fail_lost, struct error *err);

/* A run as verify_runs records it. A run recorded running whose process is gone (pid and
 * start time, as db_session_alive decides; this process's own runs are alive) is returned
 * interrupted. */
struct db_verify_run {
    int64_t id;
    int64_t started_at;
    int64_t ended_at; /* 0 while running (a paused slice has its end) */
    char scope[64];   /* "all", "session 12", "scrub", ... (truncated) */
    char dest_filter[256];
    struct db_verify_counts counts;
    enum db_verify_status status;
};

/* The newest run (the highest id) into *ret. -ENOENT when there is none. One query. */
int db_verify_run_last(struct db *db, struct db_verify_run *ret, struct error *err);

/* Whether the database records a file at remote on destination dest: a copy there (in any
 * state: a copy found changed is still SnapSync's file) or a sidecar placed next to one.
 * *ret true when it does. One indexed query. */
int db_remote_known(struct db *db, const char *dest, const char *remote, bool *ret,
                    struct error *err);

#define DB_VERIFY_EXTRAS_MAX 1000 /* extra files a run names (verify_extras); counts all */

/* Records that run_id found remote at dest that the database does not know (db_remote_known):
 * a verify_extras row while the run names fewer than DB_VERIFY_EXTRAS_MAX (more are only
 * counted, by db_verify_run_end's counts.extra). */
int db_verify_extra_add(struct db *db, int64_t run_id, const char *dest, const char *remote,
                        struct error *err);

/* An open problem: a copy whose last check (copies.check_result) found it missing or changed
 * (completed, or failed by that check: db_verify_result_add), and that was not made again since
 * (checked_at >= verified_at). */
struct db_verify_open {
    int64_t file_id;
    char dest[256];
    char remote[4096];            /* where the copy is (a path, an SMB URL, an asset id) */
    char rel_path[1024];          /* the file's path on its card */
    enum db_verify_result result; /* missing or changed */
    char detail[256];             /* what the check found ("size 10, recorded 2048"), "" none */
    int64_t checked_at;
};

#define DB_VERIFY_OPEN_MAX 1000 /* open problems per db_verify_open_list call */

/*
 * The open problems, newest check first (then by file id and destination), from offset on:
 * at most limit (1..DB_VERIFY_OPEN_MAX) into a new array *ret (the caller's to free; NULL when
 * none), *ret_n how many, and *ret_total how many there are in all. Count and page are read in
 * one read transaction when db is not already in one. limit 0 with ret NULL: only the total.
 * -EINVAL for a limit or offset out of range.
 */
int db_verify_open_list(struct db *db, int64_t offset, int limit, struct db_verify_open **ret,
                        size_t *ret_n, int64_t *ret_total, struct error *err);

/* ---- the notification outbox (outbox.h is its user) ---- */

#define DB_NOTIFY_DATA_MAX (256 * 1024) /* bytes of a notification's data (JSON) */
#define DB_CHANNEL_MAX 256              /* bytes of a channel key, NUL included */
#define DB_CHANNELS_MAX 16              /* channels of one notification */

/* A delivery's state (deliveries.state). */
enum db_delivery_state {
    DB_DELIVERY_PENDING, /* not yet sent; tried again at next_at */
    DB_DELIVERY_SENT,
    DB_DELIVERY_FAILED, /* given up: a permanent error, or retried for too long */
};

const char *db_delivery_state_to_string(enum db_delivery_state s);

/*
 * Queues a notification in one transaction: a notifications row (created_at, event: a short
 * name such as "completed", session_id or 0 for none, data: the JSON its message is rebuilt
 * from, at most DB_NOTIFY_DATA_MAX bytes) and for each of the n (1..DB_CHANNELS_MAX) channel
 * keys (non-empty, shorter than DB_CHANNEL_MAX; no key twice) a pending delivery with attempts
 * 0 and next_at created_at. *ret_id (may be NULL): the notification's id. -EINVAL for a bad
 * argument or a session_id that does not exist; -EMSGSIZE for data too large.
 */
int db_notification_add(struct db *db, int64_t created_at, const char *event, int64_t session_id,
                        const char *data, const char *const *channels, size_t n, int64_t *ret_id,
                        struct error *err);

/* One delivery with its notification. */
struct db_delivery {
    int64_t notification_id;
    char channel[DB_CHANNEL_MAX];
    char event[32];
    int64_t session_id; /* 0 none */
    int64_t created_at;
    enum db_delivery_state state;
    int64_t attempts;
    int64_t next_at;
    int64_t sent_at; /* 0 unless sent */
    char last_error[512];
    char *data; /* the notification's JSON (db_deliveries_pending only; else NULL) */
};

/* Frees an array of n deliveries returned by the functions below, with their data. NULL-safe. */
void db_deliveries_free(struct db_delivery *rows, size_t n);

/* The pending deliveries of channel, oldest notification first, at most limit (1..1000), with
 * their data. *ret is the caller's (db_deliveries_free); *ret_n its length (0 and NULL when
 * none). */
int db_deliveries_pending(struct db *db, const char *channel, int limit, struct db_delivery **ret,
                          size_t *ret_n, struct error *err);

/* What the outbox needs to know about channel: *ret_pending how many of its deliveries are
 * pending, *ret_next_at the earliest next_at among them (0 when none), *ret_last_sent the
 * latest sent_at of its deliveries (0 when none was sent). Each output may be NULL. */
int db_delivery_channel(struct db *db, const char *channel, int64_t *ret_pending,
                        int64_t *ret_next_at, int64_t *ret_last_sent, struct error *err);

/* How the deliveries of one send attempt end: marked by db_deliveries_mark. */
struct db_delivery_mark {
    int64_t notification_id;
    enum db_delivery_state state;
    int64_t next_at;        /* pending: when to try again */
    const char *last_error; /* NULL clears it; free text */
};

/* Marks the n (1..1000) deliveries of channel in one transaction: attempts += 1, state,
 * next_at, last_error as given, sent_at = at when sent. -ENOENT (nothing changed) when one of
 * them does not exist. */
int db_deliveries_mark(struct db *db, const char *channel, const struct db_delivery_mark *marks,
                       size_t n, int64_t at, struct error *err);

/* The failed deliveries, most recent notification first, at most limit (1..1000), without
 * data. *ret is the caller's (db_deliveries_free); *ret_n its length. */
int db_deliveries_failed(struct db *db, int limit, struct db_delivery **ret, size_t *ret_n,
                         struct error *err);

/* How many deliveries are pending, on any channel. */
int db_deliveries_pending_count(struct db *db, int64_t *ret, struct error *err);

/* Gives up the pending deliveries whose channel is none of the n (0..DB_CHANNELS_MAX) keys in
 * keep (a channel removed from the config): failed, with last_error `error`, attempts kept.
 * *ret_count (may be NULL): how many. */
int db_deliveries_abandon(struct db *db, const char *const *keep, size_t n, const char *error,
                          int64_t *ret_count, struct error *err);

/* Sets next_at = until on the n (1..1000) pending deliveries of channel with these notification
 * ids, in one transaction, and nothing else: a claim, so that another process finds nothing
 * due while this one sends (db_deliveries_mark then says how it went). */
int db_deliveries_hold(struct db *db, const char *channel, const int64_t *ids, size_t n,
                       int64_t until, struct error *err);
