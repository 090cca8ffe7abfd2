/* SPDX-License-Identifier: MIT */
/*
 * Webhook notifications (notify_hook.h). Each format is a function that turns the message into
 * a request body and header lines; the POST, the status and the server's message are shared.
 * Every header line is checked for control characters before it goes to libcurl, which would
 * send a CR or LF in a value as it is.
 */
#include "notify_hook.h"

#include "http.h"
#include "notify_mail.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const format_names[] = {
    [NOTIFY_HOOK_JSON] = "json", [NOTIFY_HOOK_NTFY] = "ntfy", [NOTIFY_HOOK_GOTIFY] = "gotify"};
#define N_FORMATS (sizeof(format_names) / sizeof(format_names[0]))

#define HEADERS_MAX 8
#define HEADER_MAX (NOTIFY_HOOK_TOKEN_MAX + 2048)

int notify_hook_format_parse(const char *name, enum notify_hook_format *ret)
{
    for (size_t i = 0; name && i < N_FORMATS; i++)
        if (strcmp(name, format_names[i]) == 0) {
            *ret = (enum notify_hook_format)i;
            return 0;
        }
    return -EINVAL;
}

const char *notify_hook_format_name(enum notify_hook_format f)
{
    return (unsigned)f < N_FORMATS ? format_names[f] : NULL;
}

/* A request being put together: its body and header lines, owned here. */
struct request {
    char url[NOTIFY_HOOK_URL_MAX + 16];
    char *body;
    char *headers[HEADERS_MAX + 1];
    size_t n_headers;
};

static void request_done(struct request *q)
{
    free(q->body);
    for (size_t i = 0; i < q->n_headers; i++)
        free(q->headers[i]);
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Adds the header "name: value"; value must be printable ASCII (checked by the callers for what
 * came from the user, by construction for the rest). */
static int add_header(struct request *q, const char *name, const char *value)
{
    if (q->n_headers >= HEADERS_MAX || !printable(value))
        return -EINVAL;
    size_t n = strlen(name) + 2 + strlen(value) + 1;
    char *line = malloc(n);
    if (!line)
        return -ENOMEM;
    snprintf(line, n, "%s: %s", name, value);
    q->headers[q->n_headers++] = line;
    return 0;
}

static int add_bearer(struct request *q, const char *token)
{
    if (!token || !token[0])
        return 0;
    size_t n = strlen("Bearer ") + strlen(token) + 1;
    char *v = malloc(n);
    if (!v)
        return -ENOMEM;
    snprintf(v, n, "Bearer %s", token);
    int r = add_header(q, "Authorization", v);
    free(v);
    return r;
}

static int build_json(struct request *q, const struct notify_hook *h, const struct notify_msg *m)
{
    if (!(q->body = strdup(m->json)))
        return -ENOMEM;
    int r = add_header(q, "Content-Type", "application/json");
    return r < 0 ? r : add_bearer(q, h->token);
}

static int build_ntfy(struct request *q, const struct notify_hook *h, const struct notify_msg *m)
{
    if (!(q->body = strdup(m->text)))
        return -ENOMEM;
    char *title = notify_mail_encode_words(m->subject, " ");
    if (!title)
        return -ENOMEM;
    char prio[8];
    snprintf(prio, sizeof(prio), "%d", m->priority);
    int r = add_header(q, "Content-Type", "text/plain; charset=utf-8");
    if (r == 0)
        r = add_header(q, "Title", title);
    if (r == 0)
        r = add_header(q, "Priority", prio);
    if (r == 0)
        r = add_header(q, "Tags", m->tags);
    if (r == 0 && m->click[0] && printable(m->click))
        r = add_header(q, "Click", m->click);
    if (r == 0)
        r = add_bearer(q, h->token);
    free(title);
    return r;
}

static int build_gotify(struct request *q, const struct notify_hook *h, const struct notify_msg *m)
{
    size_t n = strlen(h->url);
    while (n > 0 && h->url[n - 1] == '/')
        n--;
    bool has = n >= 8 && strncmp(h->url + n - 8, "/message", 8) == 0;
    snprintf(q->url, sizeof(q->url), "%.*s%s", (int)n, h->url, has ? "" : "/message");
    /* Gotify's scale: 4..7 normal, 8..10 high (shown as a heads-up on Android) */
    int prio = m->priority >= 5 ? 8 : m->priority == 4 ? 6 : 4;
    struct json_object *o = json_object_new_object(), *extras = json_object_new_object(),
                       *display = json_object_new_object(), *note = json_object_new_object(),
                       *click = json_object_new_object();
    int r = -ENOMEM;
    if (!o || !extras || !display || !note || !click) {
        json_object_put(extras);
        json_object_put(display);
        json_object_put(note);
        json_object_put(click);
        goto out;
    }
    json_object_object_add(o, "title", json_object_new_string(m->subject));
    json_object_object_add(o, "message", json_object_new_string(m->text));
    json_object_object_add(o, "priority", json_object_new_int(prio));
    json_object_object_add(display, "contentType", json_object_new_string("text/plain"));
    json_object_object_add(extras, "client::display", display);
    if (m->click[0]) {
        json_object_object_add(click, "url", json_object_new_string(m->click));
        json_object_object_add(note, "click", click);
    } else {
        json_object_put(click);
    }
    json_object_object_add(extras, "client::notification", note);
    json_object_object_add(o, "extras", extras);
    const char *j =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!j || !(q->body = strdup(j)))
        goto out;
    r = add_header(q, "Content-Type", "application/json");
    if (r == 0 && h->token && h->token[0])
        r = add_header(q, "X-Gotify-Key", h->token);
out:
    json_object_put(o);
    return r;
}

/* The server's own words from an error reply: a JSON "errorDescription", "error" or "message"
 * (Gotify, ntfy and most others), else the start of the body; cleaned of control characters. */
static void server_message(const char *body, size_t len, char *out, size_t size)
{
    static const char *const keys[] = {"errorDescription", "error", "message"};
    out[0] = '\0';
    struct json_object *o = len ? json_tokener_parse(body) : NULL, *v;
    for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++)
        if (json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, keys[i], &v) &&
            json_object_is_type(v, json_type_string)) {
            body = json_object_get_string(v);
            break;
        }
    char *clean = notify_clean(body, 200);
    if (clean)
        snprintf(out, size, "%s", clean);
    free(clean);
    json_object_put(o);
}

static int status_error(long status, const struct http *http, struct error *err)
{
    char msg[256];
    server_message(http_reply(http), http_reply_len(http), msg, sizeof(msg));
    const char *sep = msg[0] ? ": " : "";
    if (status >= 500 || status == 408 || status == 429)
        return error_set(err, -EAGAIN, "the webhook answered HTTP %ld%s%s, will retry", status, sep,
                         msg);
    if (status == 401 || status == 403)
        return error_set(err, -EACCES,
                         "the webhook refused the token (HTTP %ld%s%s; notify.webhooks token)",
                         status, sep, msg);
    return error_set(err, -EBADMSG, "the webhook refused the notification: HTTP %ld%s%s", status,
                     sep, msg);
}

int notify_hook_send(const struct notify_hook *h, const struct notify_msg *m, struct error *err)
{
    static int (*const builders[])(struct request *, const struct notify_hook *,
                                   const struct notify_msg *) = {
        [NOTIFY_HOOK_JSON] = build_json,
        [NOTIFY_HOOK_NTFY] = build_ntfy,
        [NOTIFY_HOOK_GOTIFY] = build_gotify,
    };
    if (!notify_hook_format_name(h->format))
        return error_set(err, -EINVAL, "notify.webhooks: unknown format %d", (int)h->format);
    if (!h->url || strlen(h->url) > NOTIFY_HOOK_URL_MAX || !printable(h->url) ||
        (strncmp(h->url, "http://", 7) != 0 && strncmp(h->url, "https://", 8) != 0))
        return error_set(err, -EINVAL, "notify.webhooks url: not an http:// or https:// URL");
    if (h->token && (strlen(h->token) > NOTIFY_HOOK_TOKEN_MAX || !printable(h->token)))
        return error_set(err, -EINVAL,
                         "notify.webhooks token: longer than %d bytes or holds a character "
                         "that cannot go into an HTTP header",
                         NOTIFY_HOOK_TOKEN_MAX);
    struct request q = {0};
    struct http *http = NULL;
    snprintf(q.url, sizeof(q.url), "%s", h->url);
    int r = builders[h->format](&q, h, m);
    if (r < 0) {
        error_set(err, r, "cannot build the %s webhook request%s", format_names[h->format],
                  r == -ENOMEM ? ": out of memory" : "");
        goto out;
    }
    struct http_options opts = {
        .name = "the webhook",
        .section = "notify.webhooks",
        .ca_file = h->ca_file,
        .connect_timeout = h->connect_timeout,
        .stall_timeout = h->timeout,
        .total_timeout = h->timeout,
    };
    if ((r = http_new(&opts, &http, err)) < 0)
        goto out;
    struct http_request req = {
        .method = "POST",
        .url = q.url,
        .headers = (const char *const *)q.headers,
        .body = q.body,
        .body_len = strlen(q.body),
        .reply_max = NOTIFY_HOOK_REPLY_MAX,
    };
    long status = 0;
    if ((r = http_run(http, &req, &status, err)) < 0) {
        if (r == -EBADMSG) /* a reply over the ceiling: the server did answer; not worth retrying */
            error_prefix(err, "the webhook's reply");
        goto out;
    }
    if (status < 200 || status > 299)
        r = status_error(status, http, err);
out:
    http_free(http);
    request_done(&q);
    return r;
}
