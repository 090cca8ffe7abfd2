/* SPDX-License-Identifier: MIT */
/*
 * Notifications by webhook (notify_hook.c), one POST over the http module (http.h):
 *
 * - `json`: the message's JSON object (notify_msg.h, docs/api.md "Notifications") to the URL,
 *   Content-Type application/json; a token goes as `Authorization: Bearer <token>`.
 * - `ntfy`: the plain-text body to the topic URL ("https://ntfy.sh/my-topic") with the headers
 *   Title (RFC 2047 encoded when not plain ASCII, which ntfy decodes), Priority (1..5), Tags and
 *   Click (the dashboard URL); a token as `Authorization: Bearer <token>`.
 * - `gotify`: JSON {title, message, priority (Gotify's 0..10), extras: client::display
 *   text/plain, client::notification click url} to <url>/message (the URL of the server, or
 *   already ending in /message); the token (an application token) as `X-Gotify-Key`.
 *
 * A 2xx reply is success. Anything else is an error quoting the status and the server's message
 * (its JSON "error"/"message"/"errorDescription", or the start of its body). The token is never
 * part of an error message. A token or URL holding a control character is refused, so no header
 * can be injected.
 *
 * Threads: any; each call makes and frees its own http handle.
 */
#pragma once

#include "error.h"
#include "notify_msg.h"

enum notify_hook_format { NOTIFY_HOOK_JSON, NOTIFY_HOOK_NTFY, NOTIFY_HOOK_GOTIFY };

#define NOTIFY_HOOK_URL_MAX 2048
#define NOTIFY_HOOK_TOKEN_MAX 512
#define NOTIFY_HOOK_REPLY_MAX (64 * 1024) /* bytes of a reply read */

/* Parses "json", "ntfy", "gotify". 0, or -EINVAL. */
int notify_hook_format_parse(const char *name, enum notify_hook_format *ret);

/* The format's name, NULL when out of range. */
const char *notify_hook_format_name(enum notify_hook_format f);

struct notify_hook {
    const char *url; /* http:// or https:// */
    enum notify_hook_format format;
    const char *token;    /* NULL or "": none */
    const char *ca_file;  /* PEM CA bundle for https, NULL or "" for the system's */
    long connect_timeout; /* seconds, > 0 */
    long timeout;         /* seconds for the whole request, > 0 */
};

/*
 * Sends m through hook h. Blocks for at most h->timeout seconds.
 * Errors: -EINVAL (URL or token refused, a format out of range; or the http module's bad URL),
 * -ECONNREFUSED, -ETIMEDOUT, -ECONNRESET (from http.h), -EAGAIN (HTTP 5xx, 408, 429: try later),
 * -EACCES (HTTP 401, 403; an untrusted certificate), -EBADMSG (any other status: the server
 * refused the request; or its reply was too large), -ENOMEM, -EIO.
 * notify_error_transient (notify_msg.h) tells the ones worth retrying.
 */
int notify_hook_send(const struct notify_hook *h, const struct notify_msg *m, struct error *err);
