/* SPDX-License-Identifier: MIT */
/*
 * `snapsync start`: the service. One loop thread owns all state and waits in epoll on signals
 * (signalfd), the card detector, a watchdog timer and an eventfd through which backup workers
 * post their completions. Each card gets its own worker thread running one engine_backup
 * session, so two cards in two readers are backed up at the same time.
 *
 *   - a card appears (inserted, present at start, mounted by someone else): a session starts;
 *   - it goes away during its session: that session's cancel flag is set, so it ends
 *     `interrupted` with everything unverified left to do, and reinserting resumes it;
 *   - a session completes on a card SnapSync mounted: the card is unmounted (unless
 *     sd_card.unmount_when_done is false) and the session is marked safe to remove;
 *   - SIGTERM / SIGINT: no new sessions, running ones are cancelled and awaited, cards SnapSync
 *     mounted are unmounted, then service_run returns 0;
 *   - SIGHUP: the configuration is loaded again; running sessions finish with the one they
 *     started with. service.log_level applies from the next start.
 *
 * Under systemd (Type=notify) it sends READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.
 */
#pragma once

#include "config.h"
#include "error.h"

/*
 * Runs the service until SIGTERM or SIGINT. cfg is the configuration the caller loaded (borrowed;
 * valid until this returns); config_path is what --config said (NULL for the usual search), used
 * again on SIGHUP. Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in every
 * thread it starts). Returns 0 after a graceful stop, or a negative errno when the service could
 * not start: -EIO (no device events, no mount table monitor), -ENOMEM, -EMFILE.
 * Main thread, once at a time.
 */
int service_run(const char *config_path, const struct config *cfg, struct error *err);
