/* SPDX-License-Identifier: MIT */
/*
 * Checking stored copies again (`snapsync verify`; docs/verification.md): every completed copy
 * the database records in a scope is compared with what the database says. File destinations
 * (local, NFS, SMB) are read back whole and hashed (MD5): the size and the MD5 must be the
 * recorded ones. Servers that keep their own checksums (Immich) are asked by the SHA-1 whether
 * they still have the content. Each copy ends ok, missing, changed, or error (it could not be
 * checked: not a verdict on the copy). After 3 errors in a row on one destination (a share or
 * server down) its other copies are not tried in this call, only counted as errors, so a dead
 * server does not cost a timeout per copy.
 *
 * A run over every copy (a zero scope but for dest_id) that went through to the end also lists
 * each destination that can list its files (dest_walk) and reports every file the database
 * does not know there (db_remote_known) as extra: left there by someone else, or a copy whose
 * record was lost. Extra files are counted (counts.extra) and named to on_problem (result
 * DB_VERIFY_EXTRA, file_id 0), but are not copies: no verdict is recorded for them.
 *
 * Each call of verify_run is one run in the database (verify_runs, one verify_results row per
 * copy checked) and, on a destination that keeps an ASC MHL history, adds a generation listing
 * each file it re-hashed as "verified" or "failed" (history.h).
 *
 * Made to be called in slices by a service (the scheduled scrub) as well as whole by the CLI:
 * - the copies checked longest ago come first (never checked first), and a copy that got a
 *   verdict gets the time of the check (copies.checked_at), so calling verify_run again with
 *   scope.checked_before set (now minus an interval) goes on where the last call stopped;
 * - opts.max_copies bounds a call, opts.cancel stops it between two chunks (1 MiB at most);
 *   a stopped or bounded call still records its run, its results and its history generation;
 * - memory is bounded whatever the number of copies: the database is walked a page at a time,
 *   a copy is read a chunk at a time, problems go to a callback, a history generation holds at
 *   most HISTORY_CHECKS_MAX files;
 * - opts.rate_bps throttles the reading (sleeping between chunks) so a NAS is not flooded.
 *
 * Threads: the thread that owns db, and the destinations' main-thread ops (dest.h): one thread
 * for the whole call. The callbacks run on it. Logs nothing.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "error.h"

#define VERIFY_PAGE 64 /* copies read from the database at a time */

/* Which copies a run looks at (all of them by default: zero the struct). */
struct verify_scope {
    int64_t session_id;     /* > 0: the files that session recorded an outcome for */
    int64_t since;          /* > 0: copies made at or after this time (seconds) */
    const char *dest_id;    /* non-NULL: only this destination (dest_id()) */
    int64_t checked_before; /* only copies last checked before this time; 0: no bound (each
                             * copy in scope is checked once by the call). A scrub passes now
                             * minus its interval, so copies checked since drop out; never a
                             * time after the call's start (copies it checks would stay in). */
    int64_t made_before;    /* > 0: only copies made (verified when copied) before this time: a
                             * scrub passes the same as checked_before, so a copy is due when
                             * both its making and its last check are older than the interval */
    const char *name;       /* non-NULL: the run's scope as recorded ("scrub"); else made from
                             * the fields above ("all", "session 12", "since ...") */
};

/* Progress after each copy and, during a long read, every quarter second at most. */
struct verify_progress {
    const struct db_verify_counts *counts;
    uint64_t bytes_read;
    double elapsed_s;
    const char *dest_label; /* the copy being checked, or "" */
    const char *remote;
};

/* A copy that is not ok. Strings borrowed for the callback. */
struct verify_problem {
    const char *dest_id;
    const char *dest_label;
    const char *remote;   /* where the copy was (a path, an SMB URL, an asset id) */
    const char *rel_path; /* the file's path on its card */
    int64_t file_id;
    enum db_verify_result result; /* missing, changed or error */
    const char *detail;           /* "size 10, recorded 2048", "no such file", the error */
};

struct verify_opts {
    double rate_bps;                 /* bytes read per second at most; 0 unlimited */
    const atomic_bool *cancel;       /* may be NULL; read between chunks and copies */
    int64_t max_copies;              /* copies checked by this call at most; 0 no bound */
    bool no_history;                 /* add no ASC MHL generation */
    struct db_verify_cursor *resume; /* may be NULL: where the walk is, kept by the caller
                                      * between calls so that copies that could not be checked
                                      * are not taken first by every slice; zero to start */
    void (*on_progress)(const struct verify_progress *p, void *userdata);
    void (*on_problem)(const struct verify_problem *p, void *userdata);
    void *userdata;
};

struct verify_summary {
    int64_t run_id;
    struct db_verify_counts counts;
    int64_t skipped; /* copies in scope at a destination the configuration no longer has, or
                      * one that cannot be checked */
    uint64_t bytes_read;
    double elapsed_s;
    enum db_verify_status status;
    bool complete;      /* no copy in scope is left unchecked (false after max_copies, cancel) */
    size_t generations; /* ASC MHL generations written */
    char history_error[ERROR_MSG_MAX]; /* a history that could not be written, "" when none */
    char extra_error[ERROR_MSG_MAX];   /* a destination whose files could not be listed for
                                        * extra files, "" when none */
};

/*
 * Checks the copies of scope at the n destinations dests (dest_create_all's; copies at other
 * destinations are counted as skipped), recording the run in db (a DB_READ_WRITE connection).
 * Fills *ret (also on failure, as far as it got). Returns 0 when the run was carried out,
 * whatever it found (ret->status says: clean, problems, interrupted, paused), or a negative
 * errno when it could not go on: the database's (the run is then recorded failed when it can
 * be), -EINVAL for a bad scope. A history that cannot be written is no failure of the run:
 * ret->history_error says why.
 */
int verify_run(const struct config *cfg, struct db *db, struct dest *const *dests, size_t n,
               const struct verify_scope *scope, const struct verify_opts *opts,
               struct verify_summary *ret, struct error *err);

/*
 * The verdict on a copy read back: ok when size and hash (hex, either case; hash_name says which
 * one, "MD5" or "XXH3-128") are the recorded ones, else changed with detail saying what differs
 * ("size 10, recorded 2048"; "XXH3-128 ..., recorded ..."). detail gets "" for ok. Pure; any
 * thread.
 */
enum db_verify_result verify_compare(int64_t want_size, const char *want_hash, uint64_t got_size,
                                     const char *got_hash, const char *hash_name, char *detail,
                                     size_t detail_size);

/* The scope's name as a run records it (verify_runs.scope): s->name, else "session 12",
 * "since 2026-01-02T03:04:05Z" or "all". Pure; any thread. */
void verify_scope_text(const struct verify_scope *s, char *out, size_t size);

/* The wait, in seconds, that keeps bytes read in elapsed_s seconds at rate_bps at most (0 when
 * there is none to wait, or rate_bps is 0). Pure. */
double verify_pace(uint64_t bytes, double elapsed_s, double rate_bps);
