/* SPDX-License-Identifier: MIT */
/*
 * The ASC MHL history of a file destination (docs/verification.md): at the end of a session,
 * every verified copy at the destination that no generation lists yet (the database knows which:
 * copies.mhl_generation) is listed in one new generation in "ascmhl/" at the destination's root,
 * with its size, modification time, MD5 and SHA-1, action "original", and the chain file gets
 * the generation's C4 ID. A session that crashed before this leaves its copies unlisted, and the
 * next session's end lists them.
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
