/* SPDX-License-Identifier: MIT */
/*
 * The backup engine: one session over one folder (a mounted card). Identifies the card, prepares
 * the destinations and watches their health (health.h), scans, skips what is already done (fast
 * path, no read), then hands the rest to the worker pipeline (pipeline.h), reports progress, and
 * closes the session with its status. The dry run only scans and classifies.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "error.h"

#define ENGINE_DRY_IGNORED_MAX 10000 /* ignored files a dry run names */

struct engine_progress {
    int64_t session_id;
    enum db_session_status status;
    struct db_totals totals;
    uint64_t files_done;    /* copied + skipped + duplicate + failed */
    uint64_t bytes_done;    /* bytes read from the card so far plus bytes of skipped files */
    uint64_t files_waiting; /* files waiting for a destination that is down */
    double elapsed_s;
    double rate_bps; /* bytes/s read recently */
    char current_file[256];
    char card_label[128];
    size_t n_dests;
    struct {
        char kind[16];            /* dest_kind(): "local", "smb", "immich" */
        char section[16];         /* dest_section(): "unraid", "local", "immich" */
        char id[DEST_REMOTE_MAX]; /* dest_id(), as the database names it */
        bool usable;              /* up: prepared and not down */
        char problem[256];        /* why it is down, "" while up */
    } dests[8];
    char error[256]; /* the session's first failure, in the final report only; "" when none */
};

/* What a dry run says would happen to one file. */
enum engine_verdict {
    ENGINE_VERDICT_NEW,        /* would be read and copied */
    ENGINE_VERDICT_DONE,       /* already backed up to every destination (fast path, not read) */
    ENGINE_VERDICT_DUPLICATE,  /* its content, known from an earlier read, is already backed up */
    ENGINE_VERDICT_IGNORED,    /* left out by the filters (extension, size) */
    ENGINE_VERDICT_UNREADABLE, /* could not be listed or examined: files under it go unseen */
};

struct engine_dry_target {
    char where[DEST_REMOTE_MAX]; /* the path it would get (or has), or the destination */
    bool recorded;               /* where the database says a copy already is */
    bool taken;                  /* the name is taken there: the copy may get a name "_N" */
    char problem[256];           /* why the name patterns give the file no path there; "" */
    size_t n_sidecars;           /* NEW files: where the sidecars this destination carries go
                                  * (their "of" indexes engine_dry_file.sidecars); else 0 */
    struct dest_target_sidecar sidecars[DEST_SIDECARS_MAX];
};

struct engine_dry_file {
    const char *rel_path; /* on the card; borrowed for the call */
    uint64_t size;
    enum engine_verdict verdict;
    char why[256];           /* IGNORED, UNREADABLE: why; else "" */
    char duplicate_of[1024]; /* DUPLICATE, and DONE when an earlier run found it one: the card
                              * path of the backed-up file with the same content; else "" */
    char date_path[16];      /* "YYYY/MM/DD", the date folder; "" for IGNORED and UNREADABLE */
    bool date_from_metadata; /* read from the file's metadata, else from its modification time */
    size_t n_sidecars;       /* the card files that travel with this one (sidecar.h) */
    const char *sidecars[DEST_SIDECARS_MAX]; /* their paths on the card; borrowed for the call */
    size_t n_targets; /* one per destination (engine_progress.dests order); 0 when none */
    struct engine_dry_target targets[DEST_MAX];
};

/* "new", "done", "duplicate", "ignored", "unreadable". */
const char *engine_verdict_to_string(enum engine_verdict v);

struct engine_options {
    bool dry_run; /* scan and classify only: nothing is written anywhere, not even the DB */
    /* Dry run only, may be NULL: called from the calling thread once for each file the scan
     * found (in path order), then each ignored file (the first ENGINE_DRY_IGNORED_MAX; the rest
     * are only counted in the log; a sidecar of a file found is named with that file, never as
     * ignored), then each entry that could not be read. f is borrowed for
     * the call. Finding where a file would go reads its metadata (a few KB), never its content. */
    void (*on_dry_file)(const struct engine_dry_file *f, void *userdata);
    /* Called from the calling thread about 5 times a second and once at the end. */
    void (*on_progress)(const struct engine_progress *p, void *userdata);
    /* Called from the calling thread once the session exists in the database. May be NULL. */
    void (*on_session_started)(int64_t session_id, void *userdata);
    void *userdata;
    /* Set (from a signal handler, another thread) to stop: in-flight files are abandoned, their
     * temporaries removed, and the session ends as interrupted. May be NULL. */
    const atomic_bool *cancel;
};

struct engine_report {
    int64_t session_id; /* 0 in a dry run */
    enum db_session_status status;
    struct db_totals totals;
    double duration_s;
    char card_uuid[128];
    char card_label[128];
    char error[ERROR_MSG_MAX]; /* a destination that was down, else the first failure; "" */
    size_t dests_down;         /* destinations down when the session ended */
};

/*
 * The status a session ends with, from its counts (t->files_total, files_failed, files_copied,
 * files_skipped, files_duplicate, scan_problems), files_partly (failed files copied to some
 * destinations but not all) and whether it was interrupted (cancelled, or the card went away):
 * - interrupted wins over everything;
 * - no failed file and no scan problem: empty when the scan found no file, else completed;
 * - an entry the scan could not list or examine hides files nobody saw: never completed nor
 *   empty, partial (also with no file failed);
 * - failed only when files failed and nothing at all was done (none copied, skipped, duplicate
 *   or partly copied), else partial.
 * Never returns scanning or backing_up. Pure; any thread.
 */
enum db_session_status engine_final_status(const struct db_totals *t, uint64_t files_partly,
                                           bool interrupted);

/* True for the statuses after which nothing on the card is left without a copy (completed,
 * empty): the only ones after which the card may be unmounted and called safe to remove. Pure. */
bool engine_status_nothing_left(enum db_session_status st);

/*
 * Backs up the folder at path as one session. Returns 0 when the session ran (look at
 * ret->status and ret->totals.files_failed for the outcome: completed and empty are the only
 * statuses after which nothing on the card is left without a copy; an entry the scan could not
 * list or examine makes the session partial, named in the log and in the session's problems), or a
 * negative errno when it could not start (path unreadable, database unusable, no destination):
 * -ENOENT, -EACCES, -EBADMSG, -ENODEV, -ENOTSUP, ... ret is written whenever the session started.
 * Any thread; several sessions (cards) may run at once, each in its own thread. A card that
 * disappears during the session (its folder gone or no longer the same filesystem) ends it as
 * interrupted, like a cancel.
 */
int engine_backup(const struct config *cfg, const char *path, const struct engine_options *opt,
                  struct engine_report *ret, struct error *err);
