/* SPDX-License-Identifier: MIT */
/*
 * The ASC MHL history of a file destination (docs/verification.md): at the end of a session,
 * every verified copy at the destination that no generation lists yet (the database knows which:
 * copies.mhl_generation) is listed in one new generation in "ascmhl/" at the destination's root,
 * with its size, modification time, MD5 and SHA-1, action "original", and the chain file gets
 * the generation's C4 ID. The sidecars the destination placed next to those copies
 * (sidecar_copies, db_sidecars_unsealed) are listed the same way, each destination path once. A
 * session that crashed before this leaves its copies unlisted, and the next session's end lists
 * them.
 *
 * Order, so that a failure anywhere leaves a consistent history: the generation file is written
 * (temporary + rename, never replacing one), then the chain (temporary + rename), then the
 * database marks the copies. A generation written but not chained (a crash in between) is not
 * part of the history for a reader that checks the chain; its copies stay unlisted in the
 * database and the next generation lists them again. An unreadable chain is never overwritten:
 * the history is then left alone and the error reported.
 *
 * Two SnapSync processes of this machine (two cards at once) take turns: a lock file next to the
 * database. Other machines writing the same share are not coordinated (documented).
 *
 * Main thread of a session (it uses the destination's meta ops and the session's database
 * connection). Logs nothing; the engine logs what it returns.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "error.h"

/* Files of a generation, at most: a session with more lists the rest in the next generation. */
#define HISTORY_GENERATION_MAX 200000
#define HISTORY_RETRIES 8 /* generation numbers tried when another writer took one */

struct history_result {
    unsigned generation; /* the generation written, 0 when there was nothing to list */
    size_t listed;       /* files in it */
    char name[256];      /* its file name in ascmhl/ */
};

/* True when cfg keeps a history on d: a destination with its own files (dest_has_meta) whose
 * section's "mhl" key is on. */
bool history_enabled(const struct config *cfg, const struct dest *d);

/* Lists d's unlisted copies in a new generation (see the top). session_id and card_label go
 * into the generation's comment; now is its creation time. Returns 0 (ret says what was
 * written; nothing when nothing was unlisted), or a negative errno: the destination's (its
 * message names the file), -EBADMSG for an unreadable ascmhl_chain.xml, SQLite's. */
int history_seal(const struct config *cfg, struct dest *d, struct db *db, int64_t session_id,
                 const char *card_label, time_t now, struct history_result *ret, struct error *err);

/* ---- generations of checks (`snapsync verify`, verify.h) ----
 * A verification adds one generation (process "in-place") in which each file it re-hashed is
 * listed with action "verified" (the content is what the history says) or "failed" (it is not:
 * the hashes are those of the bytes found), written in history_seal's order under the same
 * locks. A file that is gone is not listed (there is nothing to hash); a copy no generation
 * lists yet is left to history_seal, which lists it as "original". Memory stays bounded: a
 * generation holds at most HISTORY_CHECKS_MAX files and the next ones go into another. */

#define HISTORY_CHECKS_MAX 20000 /* files per generation of checks */

struct history_gen;

/* One re-hashed copy. Strings borrowed for the call. */
struct history_check {
    const char *remote; /* where the copy is (a dest_result.remote) */
    uint64_t size;      /* as found */
    int64_t mtime_ns;   /* the card file's, which the copy carries */
    const char *md5;    /* hex as found (NULL: not computed) */
    const char *sha1;
    const char *xxh128;
    bool ok; /* verified, else failed */
    time_t at;
};

/* Starts a generation of checks for d, dated now, with comment (UTF-8; "SnapSync verify" when
 * not). *ret is the caller's (history_gen_free). -ENOTSUP when cfg keeps no history on d
 * (history_enabled), -ENOMEM. Main thread, like history_seal. */
int history_gen_new(const struct config *cfg, struct dest *d, const char *comment, time_t now,
                    struct history_gen **ret, struct error *err);

/* Lists one checked copy. A copy outside the root or with a name XML cannot hold is left out
 * (0). When the generation is full it is written (history_gen_commit's errors) and the next
 * copies go into a new one. After an error only history_gen_free is of use. */
int history_gen_add(struct history_gen *g, const struct history_check *c, struct error *err);

/* Writes what is listed and not yet written as a generation (nothing when nothing is). ret (may
 * be NULL) names the last generation written (generation 0 when none). Errors as
 * history_seal's. g stays the caller's. */
int history_gen_commit(struct history_gen *g, struct history_result *ret, struct error *err);

/* Generations g wrote so far. */
size_t history_gen_written(const struct history_gen *g);

/* NULL-safe; writes nothing. */
void history_gen_free(struct history_gen *g);
