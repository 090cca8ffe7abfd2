/* SPDX-License-Identifier: MIT */
/*
 * The notification about one backup session (notify_msg.c): from a description of the session's
 * result, the words every channel sends: a subject line, a plain-text body, an HTML body and the
 * JSON object of the `json` webhook format (docs/api.md, "Notifications").
 *
 * Everything that came from a card (its label, the names of failed files) is untrusted: it is
 * made valid UTF-8, its control characters (CR and LF included) are replaced by '?', it is cut to
 * a ceiling, and in the HTML it is escaped. So the subject never holds a line break, and a card
 * named "<script>" is shown, never run. The failed files listed are the first
 * NOTIFY_FAILED_LIST_MAX; the rest is counted ("and 12 more").
 *
 * Threads: any; nothing is shared.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define NOTIFY_FAILED_LIST_MAX 20 /* failed files named in a message */
#define NOTIFY_LABEL_MAX 128      /* bytes of a card label or destination name kept */
#define NOTIFY_NAME_MAX 512       /* bytes of a failed file's name kept */
#define NOTIFY_DESTS_MAX 16       /* destinations listed */

enum notify_result {
    NOTIFY_COMPLETED,   /* every file is on every destination */
    NOTIFY_PARTIAL,     /* some files failed or a destination was left behind */
    NOTIFY_FAILED,      /* nothing could be backed up */
    NOTIFY_INTERRUPTED, /* the card was pulled or the service stopped */
    NOTIFY_EMPTY,       /* the card held nothing to back up */
};

/* One destination's state at the end of the session ("ok", "down", "3 files failed"). */
struct notify_dest {
    const char *name;  /* "unraid", "immich", ... */
    const char *state; /* short text */
};

/* What a notification is about. NOTIFY_KIND_SESSION (zero) is a backup session's result. */
enum notify_kind {
    NOTIFY_KIND_SESSION,   /* a backup session ended: the fields of struct notify_session */
    NOTIFY_KIND_DEST_DOWN, /* a destination down for a while, or back up: .down */
    NOTIFY_KIND_VERIFY,    /* a verification run found a problem: .verify */
};

/* A destination down for longer than notify.destination_down_minutes, or back up after such
 * an outage. Borrowed strings. */
struct notify_down {
    const char *dest;   /* its human name ("unraid: smb //nas/photos") (untrusted) */
    const char *reason; /* why it is down (the last error), "" when unknown (untrusted) */
    int64_t since;      /* when it went down, seconds since the epoch */
    int64_t minutes;    /* how long it has been (or was) down */
    bool back_up;       /* the outage ended: a short "back up" note */
};

/* A problem a verification run found: a copy missing or changed, or an extra file. */
struct notify_problem {
    const char *dest;    /* the destination's human name (untrusted) */
    const char *path;    /* where the copy or file is (untrusted) */
    const char *problem; /* "missing", "changed" or "extra" */
};

/* A verification run (`snapsync verify` or the scheduled scrub) that found problems. */
struct notify_verify {
    const char *scope; /* the run's scope ("all", "scrub", "session 12") (untrusted) */
    int64_t run_id;
    uint64_t checked, ok, missing, changed, extra, errors;
    const struct notify_problem *problems; /* the first NOTIFY_FAILED_LIST_MAX are listed; the
                                            * rest is counted from missing + changed + extra */
    size_t n_problems;
};

/* What happened in one session, or (kind) another notification. Everything borrowed for the
 * call only. For a kind other than NOTIFY_KIND_SESSION only that kind's struct and
 * dashboard_url are read. */
struct notify_session {
    enum notify_kind kind;
    const char *card; /* label (untrusted); NULL or "" reads "(no label)" */
    enum notify_result result;
    uint64_t copied;     /* files copied in this session */
    uint64_t already;    /* files already backed up before */
    uint64_t duplicates; /* files with the same content as another on the card */
    uint64_t failed;     /* files that failed; at least n_failed_files is assumed */
    uint64_t bytes;      /* bytes copied */
    double duration;     /* seconds */
    const struct notify_dest *dests;
    size_t n_dests;
    const char *const *failed_files; /* names of failed files (untrusted), any number */
    size_t n_failed_files;
    bool safe_to_remove;
    const char *dashboard_url;   /* NULL or "": no link */
    struct notify_down down;     /* NOTIFY_KIND_DEST_DOWN */
    struct notify_verify verify; /* NOTIFY_KIND_VERIFY */
};

/* A built message; every string is the owner's, freed by notify_msg_done. */
struct notify_msg {
    char *subject;    /* one line, valid UTF-8, no control characters */
    char *text;       /* plain text, LF line ends */
    char *html;       /* a whole HTML document, LF line ends */
    char *json;       /* the `json` webhook object, compact */
    char *click;      /* the dashboard URL or "" */
    int priority;     /* ntfy/Gotify scale 1..5: 3 completed/empty/back up, 4 partial/interrupted/
                       * destination down/verify problem, 5 failed */
    const char *tags; /* ntfy tags (static): "white_check_mark", "warning", "x", "rotating_light",
                       * "mag", ... */
    /* a file for the mail to attach (the session's report, added by the outbox at delivery),
     * or NULL; its name printable ASCII, its type "text/html" */
    char *attachment;
    size_t attachment_len;
    char attachment_name[64];
};

/* The result's name as the API says it: "completed", "partial", "failed", "interrupted",
 * "empty"; NULL for a value out of range. */
const char *notify_result_name(enum notify_result r);

/* Parses a result name as notify_result_name writes it. 0, or -EINVAL. */
int notify_result_parse(const char *name, enum notify_result *ret);

/* Builds the message about s into *ret (written on success only; release it with
 * notify_msg_done). By s->kind: a session's result; "SnapSync: destination <name> down for N
 * min" (JSON event "destination_down", or "destination_up" for a back-up note); "SnapSync:
 * verification found N problems" (JSON event "verify_problem", its counts and the first
 * NOTIFY_FAILED_LIST_MAX problems). 0, or -EINVAL (kind or result out of range, more than
 * NOTIFY_DESTS_MAX destinations), -ENOMEM. */
int notify_msg_build(const struct notify_session *s, struct notify_msg *ret, struct error *err);

#define NOTIFY_MERGED_MAX 20 /* results merged into one message */

/*
 * Builds one message about the n (1..NOTIFY_MERGED_MAX) sessions, for a channel that may send
 * only one message a while (the outbox's rate limit). n == 1 is notify_msg_build. Otherwise:
 * the subject says how many and which results ("SnapSync: 3 results: 2 completed, 1 failed"),
 * the text and HTML hold an introduction then each session's part as notify_msg_build writes
 * it, in the order given; the JSON is {"event": "sessions", "count", "title", "message",
 * "results": [each session's object as notify_msg_build writes it]}; priority and tags are the
 * most urgent session's, click the first dashboard URL. *ret as for notify_msg_build. 0, or
 * -EINVAL (n out of range, a session notify_msg_build refuses), -ENOMEM. Any thread.
 */
int notify_msg_build_merged(const struct notify_session *sessions, size_t n, struct notify_msg *ret,
                            struct error *err);

/* Frees the strings of m and zeroes it. NULL-safe; safe on a zeroed struct. */
void notify_msg_done(struct notify_msg *m);

/* A newly allocated copy of the first max bytes at most of s, made valid UTF-8 (invalid bytes
 * U+FFFD), control characters (below 0x20 and 0x7f) replaced by '?', cut on a character
 * boundary. NULL when out of memory; s NULL reads "". The caller frees it. */
char *notify_clean(const char *s, size_t max);

/*
 * Whether a channel's error (notify_mail_send, notify_hook_send) is worth retrying later:
 * true for -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EAGAIN (HTTP 5xx, 408, 429; SMTP 4xx),
 * -ENOMEM and -EIO (an unknown failure is retried rather than dropped); false for the permanent
 * ones: -EACCES (refused credentials: HTTP 401/403, SMTP 535; an untrusted certificate),
 * -EBADMSG (the server refused the message: HTTP 4xx, SMTP 5xx), -EINVAL (a setting is wrong)
 * and anything else. Any thread.
 */
bool notify_error_transient(int code);
