/* SPDX-License-Identifier: MIT */
/*
 * The notification channels of a configuration: maps notify.email and notify.webhooks (config.h)
 * onto the settings of notify_mail.h and notify_hook.h and sends one message through one of
 * them. Nothing is kept between calls; each send makes its own connection.
 */
#include "notify_channel.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mqtt.h"
#include "notify_hook.h"
#include "notify_mail.h"

static bool email_on(const struct config *cfg)
{
    return cfg->notify.email.enabled;
}

size_t notify_channel_count(const struct config *cfg)
{
    return (email_on(cfg) ? 1 : 0) + cfg->notify.n_webhooks;
}

void notify_channel_name(const struct config *cfg, size_t i, char *buf, size_t size)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    if (email_on(cfg) && i == 0) {
        snprintf(buf, size, "email");
        return;
    }
    i -= email_on(cfg) ? 1 : 0;
    if (i < cfg->notify.n_webhooks)
        snprintf(buf, size, "webhook %zu (%s)", i + 1, cfg->notify.webhooks[i].format);
}

void notify_channel_dashboard_url(const struct config *cfg, char *buf, size_t size)
{
    static const char *const anywhere[] = {"0.0.0.0", "::", "localhost"};
    const char *bind = cfg->service.web_ui_bind;
    char host[256];
    if (*cfg->notify.dashboard_url) {
        snprintf(buf, size, "%s", cfg->notify.dashboard_url);
        return;
    }
    for (size_t i = 0; i < sizeof(anywhere) / sizeof(anywhere[0]); i++) {
        if (strcmp(bind, anywhere[i]) != 0 || gethostname(host, sizeof(host)) != 0)
            continue;
        host[sizeof(host) - 1] = '\0';
        snprintf(buf, size, "http://%s:%d/", host, cfg->service.web_ui_port);
        return;
    }
    mqtt_dashboard_url(cfg, buf, size);
}

struct notify_mail_server notify_channel_mail_server(const struct config *cfg)
{
    return (struct notify_mail_server){
        .host = cfg->notify.email.host,
        .port = config_notify_email_port(cfg),
        .username = cfg->notify.email.username,
        .password = cfg->notify.email.password,
        .ca_file = cfg->notify.email.tls_ca_file,
        .connect_timeout = NOTIFY_CHANNEL_CONNECT_TIMEOUT,
        .timeout = NOTIFY_CHANNEL_TIMEOUT,
    };
}

static int send_mail(const struct config *cfg, const struct notify_msg *m, struct error *err)
{
    struct notify_mail_content c = {
        .from = cfg->notify.email.from,
        .to = (const char *const *)cfg->notify.email.to,
        .n_to = cfg->notify.email.n_to,
        .subject = m->subject,
        .text = m->text,
        .html = m->html,
        .date = time(NULL),
    };
    struct notify_mail_server srv = notify_channel_mail_server(cfg);
    char *text = NULL;
    size_t len = 0;
    int r = notify_mail_security_parse(cfg->notify.email.security, &srv.security);
    if (r < 0)
        return error_set(err, r, "notify.email.security: '%s' is not known",
                         cfg->notify.email.security);
    r = notify_mail_format(&c, &text, &len, err);
    if (r < 0)
        return r;
    r = notify_mail_send(&srv, c.from, c.to, c.n_to, text, len, err);
    free(text);
    return r;
}

int notify_channel_send(const struct config *cfg, size_t i, const struct notify_msg *m,
                        struct error *err)
{
    if (i >= notify_channel_count(cfg))
        return error_set(err, -ERANGE, "no notification channel %zu", i + 1);
    if (email_on(cfg) && i == 0)
        return send_mail(cfg, m, err);
    const struct config_webhook *w = &cfg->notify.webhooks[i - (email_on(cfg) ? 1 : 0)];
    struct notify_hook h = {
        .url = w->url,
        .token = w->token,
        .ca_file = w->tls_ca_file,
        .connect_timeout = NOTIFY_CHANNEL_CONNECT_TIMEOUT,
        .timeout = NOTIFY_CHANNEL_TIMEOUT,
    };
    int r = notify_hook_format_parse(w->format, &h.format);
    if (r < 0)
        return error_set(err, r, "notify.webhooks: format '%s' is not known", w->format);
    return notify_hook_send(&h, m, err);
}

int notify_channel_sample(const struct config *cfg, struct notify_msg *ret, struct error *err)
{
    struct notify_dest dests[3];
    size_t n = 0;
    char url[512];
    if (cfg->unraid.enabled)
        dests[n++] = (struct notify_dest){.name = "unraid", .state = "ok"};
    if (cfg->local.enabled)
        dests[n++] = (struct notify_dest){.name = "local", .state = "ok"};
    if (cfg->immich.enabled)
        dests[n++] = (struct notify_dest){.name = "immich", .state = "ok"};
    notify_channel_dashboard_url(cfg, url, sizeof(url));
    struct notify_session s = {
        .card = "SNAPSYNC_TEST",
        .result = NOTIFY_COMPLETED,
        .copied = 42,
        .already = 7,
        .duplicates = 1,
        .bytes = UINT64_C(1234567890),
        .duration = 95,
        .dests = dests,
        .n_dests = n,
        .safe_to_remove = true,
        .dashboard_url = url,
    };
    return notify_msg_build(&s, ret, err);
}
