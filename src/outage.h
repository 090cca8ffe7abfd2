/* SPDX-License-Identifier: MIT */
/*
 * Destination outages across sessions, for the destination_down notification
 * (docs/notifications.md). A session's health (health.h) knows a destination is down only while
 * the session runs; the service feeds what each session sees (outage_observe) into one outage
 * record per destination that outlives the sessions, so that a destination still down in the
 * next session, or while the service is idle, is one outage: one message when it has been down
 * for the threshold, and one short "back up" note when a later session finds it up again. A
 * destination seen down and up again before the threshold gives no message.
 *
 * "Down" is as last seen: while no session runs nobody asks the destination, so an outage goes
 * on until a session finds it up. The record lives in memory: a restarted service starts afresh.
 *
 * Threads: every function may be called from any thread (one lock inside), except outage_free
 * (the owner, once).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define OUTAGE_DESTS_MAX 16 /* destinations followed; more are ignored */
#define OUTAGE_ID_MAX 512   /* bytes of a destination id kept */
#define OUTAGE_REASON_MAX 256

struct outage;

/* A notification outage_take hands out. */
struct outage_event {
    char id[OUTAGE_ID_MAX];         /* the destination, as the database names it */
    char reason[OUTAGE_REASON_MAX]; /* the last reason seen, "" when none */
    int64_t since;                  /* when it was first seen down */
    int64_t minutes;                /* down until now (or until it came back) */
    bool back_up;                   /* the outage ended */
};

/* A new, empty record. -ENOMEM. */
int outage_new(struct outage **ret, struct error *err);

/* Frees. NULL-safe. */
void outage_free(struct outage *o);

/* Destination id was seen at now: up, or down (reason may be NULL). A destination seen down is
 * down since the first time it was seen so, until it is seen up. */
void outage_observe(struct outage *o, const char *id, bool up, const char *reason, int64_t now);

/*
 * The next notification due at now, with threshold seconds (> 0) as the down time that makes an
 * outage worth one: a destination down for threshold seconds or more and not yet told about
 * (ret->back_up false; told about from now on), or one told about that has been seen up again
 * (ret->back_up true; its record ends). 1 when ret was filled, 0 when nothing is due.
 */
int outage_take(struct outage *o, int64_t now, int64_t threshold, struct outage_event *ret);

/* When outage_take next has something to hand out: now for a back-up note, the time an untold
 * outage reaches threshold; 0 when nothing is pending. For a timer. */
int64_t outage_next_due(struct outage *o, int64_t now, int64_t threshold);
