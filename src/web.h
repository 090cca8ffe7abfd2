/* SPDX-License-Identifier: MIT */
/*
 * The web dashboard and its JSON API (libmicrohttpd), docs/api.md lists the endpoints.
 *
 * Runs alone (`snapsync web`) or inside the service. Either way the state it shows comes from
 * the database, read through its own read-only connections (WAL: readers never block a backup):
 * the engine writes a running session's totals every second, so a backup run by another process
 * shows up live. The service can add what the database does not hold (sub-second progress, the
 * rate and the file being read) through web_set_live_state(), and the actions the web cannot do
 * alone (eject) through struct web_actions.
 *
 * Threads: libmicrohttpd runs one thread per connection (at most WEB_CONNECTIONS_MAX) plus its
 * listener; one sampler thread reads the live state from the database every second and builds
 * the status document that /api/status and /api/events serve; one health thread probes the
 * destinations and the MQTT broker every WEB_HEALTH_INTERVAL_S. Nothing a request does waits for
 * a destination.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "status.h"

#define WEB_CONNECTIONS_MAX 64 /* open connections; more are refused at accept */
#define WEB_STREAMS_MAX 16     /* /api/events streams at once; more get 503 */
#define WEB_TIMEOUT_S 10       /* a connection idle (or a request trickling in) this long closes */
#define WEB_HEALTH_INTERVAL_S 60 /* seconds between health probes */
#define WEB_LIVE_TTL_S 3         /* seconds a web_set_live_state() state overrides the database */

/* What only the service can do; a NULL member answers 503 ("no SnapSync service is running"). */
struct web_actions {
    /* Unmounts the card(s) SnapSync mounted so they can be pulled. Returns 0 or a negative errno
     * with err set; err's message is shown to the user, so it must hold no secret. Called from
     * a connection thread. */
    int (*eject)(void *userdata, struct error *err);
    /* Files were marked for retry in the database (ids: the file or the session); the service may
     * back up their card now if it is present. Called from a connection thread, after the
     * database change committed. */
    void (*retried)(void *userdata);
    void *userdata;
};

struct web;

/*
 * Prepares the server from cfg->service (web_ui_port, web_ui_bind, web_ui_token, name,
 * database_path) and the destinations of cfg (health). port_override >= 0 replaces
 * web_ui_port (0: a port the OS picks; web_port() tells which). actions may be NULL (alone).
 * cfg is borrowed and must stay valid until web_free(). Nothing listens yet.
 * Errors: -EINVAL (err: "service.web_ui_bind: '...' is not an IPv4 or IPv6 address"),
 * -ENOMEM. *ret is the caller's (web_free). Main thread.
 */
int web_new(const struct config *cfg, int port_override, const struct web_actions *actions,
            struct web **ret, struct error *err);

/* Listens and starts the threads. Errors: -EADDRINUSE (err names the address), -EACCES (a port
 * below 1024 without the right), -EIO. Main thread, once. */
int web_start(struct web *w, struct error *err);

/* The port listened on (after web_start), else 0. */
int web_port(const struct web *w);

/*
 * The in-process hook for the service: the live state of one running session (the same struct
 * Home Assistant gets; session_id says which). Overrides what the database says about that
 * session's progress, rate, ETA and current file for a few seconds (WEB_LIVE_TTL_S), and is
 * pushed to /api/events at once, at most about five times a second. Copies s; never blocks on
 * anything but a mutex held for a copy. Any thread.
 */
void web_set_live_state(struct web *w, const struct status_live *s);

/* Stops listening, ends the streams and joins every thread. NULL-safe; idempotent. */
void web_stop(struct web *w);

/* Stops first if needed, then frees. NULL-safe. */
void web_free(struct web *w);
