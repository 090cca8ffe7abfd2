/* SPDX-License-Identifier: MIT */
/*
 * The notification channels of a configuration (notify_channel.c): notify.email and each entry of
 * notify.webhooks, numbered 0..notify_channel_count()-1 (e-mail first when enabled), and the
 * sending of one message through one of them with the settings of the config (timeouts, CA,
 * credentials). `snapsync notify-test` uses it; so will the outbox.
 *
 * Threads: any thread while cfg lives; one call per channel at a time.
 */
#pragma once

#include <stddef.h>

#include "config.h"
#include "error.h"
#include "notify_mail.h"
#include "notify_msg.h"

#define NOTIFY_CHANNEL_CONNECT_TIMEOUT 10 /* seconds to connect */
#define NOTIFY_CHANNEL_TIMEOUT 30         /* seconds for one whole delivery */

/* How many channels cfg enables: 1 for notify.email when enabled, plus one per webhook. */
size_t notify_channel_count(const struct config *cfg);

/* The SMTP server of notify.email with the channels' timeouts; its security is left zero for
 * the caller to parse (notify_mail_security_parse). Strings borrowed from cfg. */
struct notify_mail_server notify_channel_mail_server(const struct config *cfg);

/* A name for channel i, for messages and the CLI: "email", "webhook 1 (ntfy)". Written into buf
 * (truncated to size); "" when i is out of range. */
void notify_channel_name(const struct config *cfg, size_t i, char *buf, size_t size);

/* The dashboard link of messages: notify.dashboard_url, else the web UI's address
 * (service.web_ui_bind and web_ui_port; an address of every interface or localhost is replaced by
 * this host's name). Written into buf (truncated to size). */
void notify_channel_dashboard_url(const struct config *cfg, char *buf, size_t size);

/*
 * Sends m through channel i of cfg (for e-mail: formatted with notify_mail_format, dated now).
 * Blocks for at most NOTIFY_CHANNEL_TIMEOUT seconds.
 * Errors: those of notify_mail_format / notify_mail_send or notify_hook_send
 * (notify_error_transient tells which to retry); -ERANGE when i is out of range. err never holds a
 * secret.
 */
int notify_channel_send(const struct config *cfg, size_t i, const struct notify_msg *m,
                        struct error *err);

/* The sample session `snapsync notify-test` sends: a completed backup of a card labelled
 * "SNAPSYNC_TEST", with the configuration's destinations and dashboard link. Built into *ret
 * (release with notify_msg_done). Errors as notify_msg_build. */
int notify_channel_sample(const struct config *cfg, struct notify_msg *ret, struct error *err);
