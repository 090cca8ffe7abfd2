/* SPDX-License-Identifier: MIT */
/*
 * Destination health within one session (docs/design.md, "Destination health").
 *
 * A failure that concerns the whole destination (it cannot be reached, refuses the login, the
 * share, mount or disk is gone or full or read-only) or HEALTH_STREAK copies in a row failing
 * with a server or disk error (HTTP 5xx, a bad reply, a copy that does not verify) mark the
 * destination down. The pipeline then gives it no more files and keeps them pending for it,
 * while a prober thread asks it again, backing off from HEALTH_PROBE_FIRST_S to
 * HEALTH_PROBE_MAX_S; when it answers it is up again and its files are queued. Each transition is
 * logged once (never once per file).
 *
 * Threads: every function may be called from any thread, except health_free (the owner, once).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define HEALTH_STREAK 3          /* failed copies in a row that mark a destination down */
#define HEALTH_PROBE_FIRST_S 2.0 /* first probe of a down destination, after going down */
#define HEALTH_PROBE_MAX_S 60.0  /* the probe interval doubles up to this */
#define HEALTH_START_GRACE_S 5.0 /* how long a session waits for a destination to be prepared */
#define HEALTH_DEST_MAX 16

struct health;

struct health_ops {
    /* Asks destination i whether it works again; 0 when it does. Prober thread; may block up
     * to the destination's own timeouts. */
    int (*probe)(size_t i, void *userdata, struct error *err);
    /* Destination i is up again. Prober thread, with no lock of the health held. May be NULL. */
    void (*up)(size_t i, void *userdata);
    /* The health stops while a probe of destination i is in progress: make it return soon.
     * Called from health_free's thread. May be NULL. */
    void (*interrupt)(size_t i, void *userdata);
};

/* One destination's health, for progress reports. */
struct health_state {
    bool up;
    int error;                  /* negative errno that took it down; 0 while up */
    char reason[ERROR_MSG_MAX]; /* the message that took it down, "" while up */
    double down_for_s;          /* seconds since it went down; 0 while up */
    double next_probe_in_s;     /* seconds to its next probe; 0 while up */
    unsigned downs;             /* times it went down this session */
};

/*
 * Creates the health of n (1..HEALTH_DEST_MAX) destinations, none of them up yet, with one prober
 * thread each. labels[i] names destination i in the log ("smb //nas/photos"); labels and ops are
 * borrowed until health_free. Errors: -EINVAL, -ENOMEM, -EAGAIN (no thread).
 */
int health_new(size_t n, const char *const *labels, const struct health_ops *ops, void *userdata,
               struct health **ret, struct error *err);

/* Probes every destination at once (ops->probe) and waits until all have answered or grace
 * seconds have passed. A destination whose probe failed is down with its reason; one still
 * being probed is down ("no answer within N s") and comes up by itself when its probe succeeds.
 * The owner's thread, once. */
void health_start(struct health *h, double grace);

/* Stops the probers and frees. A probe in progress is interrupted (ops->interrupt) and waited
 * for: at most the destination's own timeout when it cannot be interrupted. NULL-safe. */
void health_free(struct health *h);

/* True when destination i is up. */
bool health_is_up(struct health *h, size_t i);

/* True when any destination is down. */
bool health_any_down(struct health *h);

/* Copies destination i's state into ret. */
void health_get(struct health *h, size_t i, struct health_state *ret);

/* True for errors that concern a whole destination rather than one file. */
bool health_error_is_dest_wide(int r);

/* True when destination i is down for an answer its server gave (full, read-only, access
 * denied, the share or folder gone): its server answers, so nothing that still talks to it
 * needs interrupting, and calls to it (removing a temporary) still work. */
bool health_down_but_answering(struct health *h, size_t i);

/*
 * Reports that the copy of file (any stable number: the file's id) to destination i failed with r
 * (a negative errno; -ECANCELED is ignored) and err's message. Marks it down when r concerns the
 * whole destination or ends a streak of HEALTH_STREAK failures (the attempts of one file count
 * once: its own retries deal with a file that fails alone). Returns true when the destination is
 * down after this report (the caller keeps the file pending for it instead of counting a failed
 * attempt).
 */
bool health_report_failure(struct health *h, size_t i, int64_t file, int r,
                           const struct error *err);

/* Reports a verified copy at destination i: ends its failure streak. */
void health_report_success(struct health *h, size_t i);
