/* SPDX-License-Identifier: MIT */
/*
 * The outbox wired to a configuration and a backup session (notify_outbox.c): the outbox's
 * channels from notify.email and notify.webhooks, and a session's notification built from its
 * engine report and the database and queued for the channels that want its event; likewise a
 * verification run's problems (verify_problem) and a destination down (destination_down).
 *
 * Threads: any; a call uses only the db connection given (one thread's).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "engine.h"
#include "error.h"
#include "notify_msg.h"
#include "outbox.h"
#include "verify.h"

/* The outbox channels of a configuration. Borrows cfg's strings: lives no longer than cfg. */
struct notify_outbox_channels {
    struct outbox_channel ch[OUTBOX_CHANNELS_MAX];
    char keys[OUTBOX_CHANNELS_MAX][OUTBOX_KEY_MAX];
    size_t n;
    /* channels left out (the same key as an earlier one, a setting that does not parse): how
     * many, and why the first was, for the caller to log (no secret) */
    size_t n_skipped;
    char skipped[256];
};

/* Fills *ret from cfg: e-mail first when enabled, then each webhook, with the timeouts of
 * notify_channel.h. A channel whose key an earlier one has is skipped (ret->n_skipped). Always
 * succeeds; ret->n 0 when no channel is configured. */
void notify_outbox_channels(const struct config *cfg, struct notify_outbox_channels *ret);

/* A session's notification data; s borrows the other fields. Large: allocate it. */
struct notify_outbox_session {
    struct notify_session s;
    struct notify_dest dests[NOTIFY_DESTS_MAX];
    char dest_names[NOTIFY_DESTS_MAX][NOTIFY_LABEL_MAX];
    char dest_states[NOTIFY_DESTS_MAX][64];
    const char *failed_ptr[NOTIFY_FAILED_LIST_MAX];
    char failed[NOTIFY_FAILED_LIST_MAX][1024];
    char card[128];
    char url[512];
};

/*
 * Builds *ret about the session of rep (rep->session_id > 0, a final status): card label, result,
 * counts, bytes, duration, each destination's state from its copies ("ok", "3 failed",
 * "2 pending"), the first NOTIFY_FAILED_LIST_MAX failed files and their total, safe to remove
 * (engine_status_nothing_left; a caller that knows better overwrites it), the dashboard link.
 * Errors: -EINVAL (no session, a status that is not a result), the db's.
 */
int notify_outbox_session_from_report(const struct config *cfg, struct db *db,
                                      const struct engine_report *rep,
                                      struct notify_outbox_session *ret, struct error *err);

/*
 * Queues the notification of the session of rep at time now for cfg's channels, unless its
 * result is not in notify.events or no channel is configured (*ret_queued false, 0 returned).
 * safe_to_remove: -1 as notify_outbox_session_from_report says, else 0 or 1. *ret_queued may be
 * NULL. Never touches the network. Errors as notify_outbox_session_from_report and outbox_queue,
 * -ENOMEM.
 */
int notify_outbox_queue_report(const struct config *cfg, struct db *db,
                               const struct engine_report *rep, int safe_to_remove, int64_t now,
                               bool *ret_queued, struct error *err);

/*
 * Delivers what is due at time now on cfg's channels (outbox_deliver with cancel, may be NULL)
 * and logs one line per message sent or not sent, with the channel's key and the error (never a
 * secret: the key has none, the error is scrubbed, and so is every log line). The one function
 * of this module that logs, so that the service and `snapsync backup` say the same. *ret (may be
 * NULL) as outbox_deliver. Nothing to do (no channel): 0. Errors as outbox_deliver, -ENOMEM.
 * Blocks on the network, each send bounded by the channel timeouts.
 */
int notify_outbox_deliver(const struct config *cfg, struct db *db, int64_t now,
                          const atomic_bool *cancel, struct outbox_result *ret, struct error *err);

/* outbox_next_due for cfg's channels: *ret_at 0 when nothing is pending or no channel. */
int notify_outbox_next_due(const struct config *cfg, struct db *db, int64_t *ret_at,
                           struct error *err);

/* outbox_forget_others for cfg's channels (all of them). *ret_count (may be NULL): how many. */
int notify_outbox_forget_others(const struct config *cfg, struct db *db, int64_t *ret_count,
                                struct error *err);

/* Writes the human name of the destination the database calls id ("local:/srv/photos") into
 * buf: "<section>: <label>" ("unraid: smb //nas/photos"), or the label alone when it starts with
 * the section ("local /srv/photos"), from cfg's destinations; id itself when cfg has no such
 * destination. Never fails (buf "" only for size 0). */
void notify_outbox_dest_name(const struct config *cfg, const char *id, char *buf, size_t size);

/*
 * Queues the notification s (any kind; session_id its session's row or 0) at time now for cfg's
 * channels, unless its event is not in notify.events or no channel is configured (*ret_queued
 * false, 0 returned). A NULL or empty s->dashboard_url gets the configured one. *ret_queued may
 * be NULL. Never touches the network. Errors as outbox_queue, -ENOMEM.
 */
int notify_outbox_queue(const struct config *cfg, struct db *db, struct notify_session *s,
                        int64_t session_id, int64_t now, bool *ret_queued, struct error *err);

/* The problems of a verification run, gathered from its on_problem callback: the first
 * NOTIFY_FAILED_LIST_MAX copies missing or changed and extra files (errors, which are no
 * verdict on a copy, are left out). Zero it to start. Fixed size: no allocation. */
struct notify_outbox_problems {
    struct notify_problem p[NOTIFY_FAILED_LIST_MAX];
    char dest[NOTIFY_FAILED_LIST_MAX][NOTIFY_LABEL_MAX];
    char path[NOTIFY_FAILED_LIST_MAX][NOTIFY_NAME_MAX];
    char id[NOTIFY_FAILED_LIST_MAX][DEST_REMOTE_MAX]; /* the destination's id */
    size_t n;
};

/* Adds p to ps when it is a missing or changed copy or an extra file and ps is not full. Its
 * destination is named by p->dest_label here; notify_outbox_queue_verify names it as the
 * session messages do (notify_outbox_dest_name). */
void notify_outbox_problem_add(struct notify_outbox_problems *ps, const struct verify_problem *p);

/*
 * Queues the verify_problem notification of the run sum (scope its name: "all", "scrub", ...)
 * with the problems ps (may be NULL) when the run found a copy missing or changed or an extra
 * file, as notify_outbox_queue does; a run with none queues nothing (*ret_queued false, 0).
 */
int notify_outbox_queue_verify(const struct config *cfg, struct db *db,
                               const struct verify_summary *sum, const char *scope,
                               const struct notify_outbox_problems *ps, int64_t now,
                               bool *ret_queued, struct error *err);
