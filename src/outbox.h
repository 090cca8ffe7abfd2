/* SPDX-License-Identifier: MIT */
/*
 * The notification outbox (outbox.c): a notification is first written to SQLite
 * (outbox_queue, which never touches the network), then delivered channel by channel
 * (outbox_deliver) with retries across restarts:
 *
 * - The message is rebuilt at delivery from the data stored with the notification (the fields
 *   of struct notify_session), so a process restarted between queue and delivery still sends it.
 * - A transient error (notify_error_transient) leaves the delivery pending, tried again after
 *   OUTBOX_BACKOFF_MIN seconds doubling with each attempt up to OUTBOX_BACKOFF_MAX; one still
 *   failing OUTBOX_GIVE_UP seconds after it was queued is given up (failed, with its last
 *   error). A permanent error fails it at once.
 * - Rate limit: at most one message per channel every OUTBOX_RATE seconds. The deliveries
 *   pending for a channel when it may send (at most NOTIFY_MERGED_MAX, oldest first) go as one
 *   message (notify_msg_build_merged) and are marked together.
 * - Once: the deliveries a message carries are claimed in a write transaction before it is sent
 *   (held OUTBOX_LEASE seconds), so two processes delivering at once (the service and a one-off
 *   `snapsync backup`) never both send them; a process dying mid-send leaves them to be retried
 *   when the lease ends.
 * - The mail of one session's result (not a merged one) gets the session's HTML report
 *   (report.h) attached when it is at most OUTBOX_REPORT_MAX bytes; the report is read from
 *   the database at delivery.
 * - Secrets: a channel's key (the column stored) never holds its token or password; those come
 *   from the channels passed at delivery, and are scrubbed from any error stored.
 *
 * Threads: any; a call uses only the db connection given (one thread's, see db.h). outbox_deliver
 * blocks on the network (each send bounded by the channel's timeouts), so a service calls it
 * from a worker with its own connection.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "error.h"
#include "notify_hook.h"
#include "notify_mail.h"
#include "notify_msg.h"

#define OUTBOX_RATE 60             /* seconds between two messages on one channel */
#define OUTBOX_BACKOFF_MIN 60      /* seconds before the first retry */
#define OUTBOX_BACKOFF_MAX 3600    /* seconds between retries, at most */
#define OUTBOX_GIVE_UP (24 * 3600) /* seconds after queueing when a delivery is given up */
/* seconds a delivery being sent is held from other processes; longer than any channel's
 * timeout, so a send still running is never duplicated */
#define OUTBOX_LEASE 900
/* bytes of a session's report attached to its mail at most (a larger one is left out); the
 * whole mail, base64 and all, stays below NOTIFY_MAIL_MAX */
#define OUTBOX_REPORT_MAX (4 * 1024 * 1024)
#define OUTBOX_CHANNELS_MAX DB_CHANNELS_MAX
#define OUTBOX_KEY_MAX DB_CHANNEL_MAX

/* What a notification is about (notifications.event). */
enum outbox_event {
    OUTBOX_COMPLETED, /* the five session results, as enum notify_result */
    OUTBOX_PARTIAL,
    OUTBOX_FAILED,
    OUTBOX_INTERRUPTED,
    OUTBOX_EMPTY,
    OUTBOX_DESTINATION_DOWN, /* a notification of kind NOTIFY_KIND_DEST_DOWN (or back up) */
    OUTBOX_VERIFY_PROBLEM,   /* a notification of kind NOTIFY_KIND_VERIFY */
};

/* "completed", ..., "destination_down", "verify_problem"; NULL out of range. */
const char *outbox_event_name(enum outbox_event e);

/* The event of a session's result. */
enum outbox_event outbox_event_of(enum notify_result r);

/* The event of a notification (s->kind, and s->result for a session), as an int: an enum
 * outbox_event, or -EINVAL for a kind or result out of range. */
int outbox_event_of_session(const struct notify_session *s);

enum outbox_kind { OUTBOX_EMAIL, OUTBOX_WEBHOOK };

struct outbox_channel;

/* Sends m on channel ch: 0, or a negative errno as notify_mail_send / notify_hook_send return,
 * err filled. */
typedef int outbox_send_fn(const struct outbox_channel *ch, const struct notify_msg *m,
                           struct error *err);

/* One channel, as the config describes it. Everything borrowed for the call. Its timeouts
 * (mail.timeout, hook.timeout) must stay well below OUTBOX_LEASE. */
struct outbox_channel {
    /* the key its deliveries are stored under: "email", "webhook:<url without credentials or
     * query>" (outbox_channel_key makes it); never a secret */
    const char *key;
    enum outbox_kind kind;
    struct notify_mail_server mail; /* OUTBOX_EMAIL */
    const char *from;
    const char *const *to;
    size_t n_to;
    struct notify_hook hook; /* OUTBOX_WEBHOOK */
    outbox_send_fn *send;    /* NULL: notify_mail_send or notify_hook_send by kind */
};

/* The sending of a channel whose send is NULL: notify_hook_send (OUTBOX_WEBHOOK), or the message
 * formatted with notify_mail_format (dated now) and notify_mail_send (OUTBOX_EMAIL). For a send
 * function that wraps it (to log each result). Errors as those. Blocks on the network. */
int outbox_send(const struct outbox_channel *ch, const struct notify_msg *m, struct error *err);

/* Replaces ch's password and token in msg (a NUL-terminated error text) by "***", in place (it
 * only shrinks). What outbox_deliver does to every error it keeps; for a send function that logs
 * one. Any thread. */
void outbox_scrub(const struct outbox_channel *ch, char *msg);

/* Writes the key of a channel into buf (size bytes; OUTBOX_KEY_MAX is enough): "email" for
 * OUTBOX_EMAIL; for OUTBOX_WEBHOOK "webhook:" and the url without its user info, query and
 * fragment (where tokens hide), cut to fit. 0, or -EINVAL (no url for a webhook, kind out of
 * range, size too small). Any thread. */
int outbox_channel_key(enum outbox_kind kind, const char *url, char *buf, size_t size);

/*
 * Queues the notification of event about session s (session_id its row, 0 for none) for the n
 * (1..OUTBOX_CHANNELS_MAX) channels, at time now: one notification and a pending delivery per
 * channel, written in one transaction, due at once. Only the data of s (cleaned as notify_msg
 * cleans it, the failed names or verification problems cut to NOTIFY_FAILED_LIST_MAX, their
 * total kept) and the channels' keys are stored. s may be of any kind (a destination down, a
 * verification); event must be outbox_event_of_session(s). Never blocks on the network.
 * *ret_id (may be NULL): the notification's id. Errors: -EINVAL (s NULL, an event other than
 * s's, a channel without a key, n out of range, more than NOTIFY_DESTS_MAX destinations),
 * -ENOMEM, and the db's errors.
 */
int outbox_queue(struct db *db, const struct notify_session *s, enum outbox_event event,
                 int64_t session_id, const struct outbox_channel *channels, size_t n, int64_t now,
                 int64_t *ret_id, struct error *err);

/* What one outbox_deliver call did. */
struct outbox_result {
    size_t messages;  /* messages sent (a merged one counts once) */
    size_t sent;      /* deliveries marked sent */
    size_t retry;     /* deliveries left pending after a transient error */
    size_t failed;    /* deliveries given up */
    int64_t next_due; /* outbox_next_due after the call: 0 when nothing is pending */
};

/*
 * Sends what is due at time now on each of the n channels (0..OUTBOX_CHANNELS_MAX), in order,
 * one message per channel at most (merging what is pending, see above), and marks the
 * deliveries: sent; pending with the next attempt's time (transient error); failed (permanent
 * error, or queued OUTBOX_GIVE_UP seconds ago or more). A delivery whose stored data cannot be
 * rebuilt fails at once. Deliveries of a channel not in channels stay as they are. Checks
 * *cancel (may be NULL) before each channel. *ret (may be NULL) says what was done.
 * Returns 0 when every channel was handled (a failed send is not an error of the call),
 * -ECANCELED when cancel was set (what was sent is marked), or the db's errors.
 */
int outbox_deliver(struct db *db, const struct outbox_channel *channels, size_t n, int64_t now,
                   const atomic_bool *cancel, struct outbox_result *ret, struct error *err);

/* When outbox_deliver next has something to do on the n channels: the earliest time at which a
 * channel has a due pending delivery and may send (its last message OUTBOX_RATE seconds ago);
 * *ret_at 0 when nothing is pending. For a service's timer. */
int outbox_next_due(struct db *db, const struct outbox_channel *channels, size_t n, int64_t *ret_at,
                    struct error *err);

/* The failed deliveries for `status` and the dashboard, most recent first, at most limit
 * (1..1000): their channel key, event, time queued, attempts and last error (no secret).
 * *ret is the caller's (db_deliveries_free); *ret_n its length. */
int outbox_failed_list(struct db *db, int limit, struct db_delivery **ret, size_t *ret_n,
                       struct error *err);

/* The number of deliveries pending on any channel. */
int outbox_pending_count(struct db *db, int64_t *ret, struct error *err);

/* Gives up the pending deliveries of every channel that is not one of the n channels (a channel
 * removed from the config, or whose URL changed): failed with the error "the channel is no
 * longer configured", so they leave the pending count and show in outbox_failed_list. Call it
 * with all the configured channels (the service at start and after a reload); never with a
 * subset. *ret_count (may be NULL): how many. */
int outbox_forget_others(struct db *db, const struct outbox_channel *channels, size_t n,
                         int64_t *ret_count, struct error *err);
