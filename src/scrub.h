/* SPDX-License-Identifier: MIT */
/*
 * The scheduled scrub (docs/verification.md, "Scheduled scrub"). With
 * backup.verify_interval_days set, the service checks again, while no card is being backed up,
 * every copy whose making and last check are both older than that many days: a slice at a time
 * (a verification run with the scope "scrub", verify.h), in a thread of its own at idle I/O
 * priority and the lowest CPU priority, at most backup.verify_rate MB/s, stopped between two
 * chunks when a card goes in. A later slice goes on with the copies checked longest ago, so a
 * stopped scrub resumes where it was.
 *
 * The functions open their own database connection and destinations. One slice at a time per
 * process; the caller's thread (scrub_slice lowers that thread's priorities for good: call it
 * from a thread of its own). They log nothing but what on_problem is given.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "error.h"
#include "verify.h"

#define SCRUB_SLICE_COPIES 2000 /* copies one slice checks at most */
#define SCRUB_SCOPE "scrub"     /* verify_runs.scope of the scrub's runs */

/* The time before which a copy must have been made and last checked to be due at now: now minus
 * the interval; 0 when the scrub is off (interval 0). Pure. */
int64_t scrub_cutoff(const struct config *cfg, time_t now);

struct scrub_slice {
    bool nothing_due; /* no copy was due: nothing was checked and no run recorded */
    struct verify_summary sum;
};

/*
 * Runs one slice at now: when a copy is due, at most SCRUB_SLICE_COPIES of them are checked in
 * a verification run. cursor (the caller's, zeroed for a new pass) keeps the place between
 * slices, so copies that could not be checked (a share that is down) are not taken first by
 * every slice. cancel (may be NULL) stops the slice between two chunks. on_problem (may be
 * NULL) is called for each copy that is not ok, on this thread. Returns 0 (ret says what was
 * found), or a negative errno: the database's, the configuration's destinations' (-ENODEV with
 * none enabled), -EINVAL when the scrub is off.
 */
int scrub_slice(const struct config *cfg, time_t now, const atomic_bool *cancel,
                struct db_verify_cursor *cursor,
                void (*on_problem)(const struct verify_problem *p, void *userdata), void *userdata,
                struct scrub_slice *ret, struct error *err);
