/* SPDX-License-Identifier: MIT */
/*
 * The notification outbox (outbox.h). A notification is stored as JSON holding the fields of
 * struct notify_session (cleaned as notify_msg cleans them), with one delivery row per channel
 * (db.h, "the notification outbox"). Delivery reads a channel's pending rows, rebuilds each
 * session from its JSON into storage borrowed from the parsed object, builds one message
 * (merged when there are several), sends it through the channel's sender and marks the rows in
 * one transaction. No transaction is held while a message is on the network.
 */
#include "outbox.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"

/* the session events are named as their results (notify_result_name) */
_Static_assert((int)OUTBOX_EMPTY == (int)NOTIFY_EMPTY, "session events follow the results");

const char *outbox_event_name(enum outbox_event e)
{
    switch (e) {
    case OUTBOX_DESTINATION_DOWN:
        return "destination_down";
    case OUTBOX_VERIFY_PROBLEM:
        return "verify_problem";
    default:
        return notify_result_name((enum notify_result)e);
    }
}

enum outbox_event outbox_event_of(enum notify_result r)
{
    switch (r) {
    case NOTIFY_PARTIAL:
        return OUTBOX_PARTIAL;
    case NOTIFY_FAILED:
        return OUTBOX_FAILED;
    case NOTIFY_INTERRUPTED:
        return OUTBOX_INTERRUPTED;
    case NOTIFY_EMPTY:
        return OUTBOX_EMPTY;
    case NOTIFY_COMPLETED:
    default:
        return OUTBOX_COMPLETED;
    }
}

int outbox_event_of_session(const struct notify_session *s)
{
    switch (s->kind) {
    case NOTIFY_KIND_SESSION:
        return notify_result_name(s->result) ? (int)outbox_event_of(s->result) : -EINVAL;
    case NOTIFY_KIND_DEST_DOWN:
        return OUTBOX_DESTINATION_DOWN;
    case NOTIFY_KIND_VERIFY:
        return OUTBOX_VERIFY_PROBLEM;
    default:
        return -EINVAL;
    }
}

int outbox_channel_key(enum outbox_kind kind, const char *url, char *buf, size_t size)
{
    if (!buf || size < sizeof("webhook:"))
        return -EINVAL;
    if (kind == OUTBOX_EMAIL) {
        snprintf(buf, size, "email");
        return 0;
    }
    if (kind != OUTBOX_WEBHOOK || !url || !*url)
        return -EINVAL;
    /* scheme://[userinfo@]host[:port][/path][?query][#fragment] */
    const char *p = strstr(url, "://");
    const char *auth = p ? p + 3 : url;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *q = auth; q < auth + auth_len; q++)
        if (*q == '@')
            at = q;
    const char *host = at ? at + 1 : auth;
    const char *path = auth + auth_len;
    size_t path_len = *path == '/' ? strcspn(path, "?#") : 0;
    snprintf(buf, size, "webhook:%.*s%.*s%.*s", (int)(auth - url), url,
             (int)(auth + auth_len - host), host, (int)path_len, path);
    return 0;
}

/* ---- the stored data ---- */

static const char *const verify_count_keys[] = {"checked", "ok",    "missing",
                                                "changed", "extra", "errors"};

static void add_str(struct json_object *o, const char *key, const char *s, size_t max)
{
    char *c = notify_clean(s, max);
    json_object_object_add(o, key, c ? json_object_new_string(c) : NULL);
    free(c);
}

static char *json_take(struct json_object *o)
{
    const char *j =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = j ? strdup(j) : NULL;
    json_object_put(o);
    return out;
}

/* The JSON stored for a destination down or a verification (kind "dest_down", "verify"), into
 * o, which it takes. */
static char *other_to_json(struct json_object *o, const struct notify_session *s)
{
    add_str(o, "dashboard_url", s->dashboard_url, 2048);
    if (s->kind == NOTIFY_KIND_DEST_DOWN) {
        json_object_object_add(o, "kind", json_object_new_string("dest_down"));
        add_str(o, "dest", s->down.dest, NOTIFY_LABEL_MAX);
        add_str(o, "reason", s->down.reason, NOTIFY_NAME_MAX);
        json_object_object_add(o, "since", json_object_new_int64(s->down.since));
        json_object_object_add(o, "minutes", json_object_new_int64(s->down.minutes));
        json_object_object_add(o, "back_up", json_object_new_boolean(s->down.back_up));
        return json_take(o);
    }
    const struct notify_verify *v = &s->verify;
    struct json_object *list = json_object_new_array();
    if (!list) {
        json_object_put(o);
        return NULL;
    }
    json_object_object_add(o, "kind", json_object_new_string("verify"));
    add_str(o, "scope", v->scope, NOTIFY_LABEL_MAX);
    json_object_object_add(o, "run_id", json_object_new_int64(v->run_id));
    const uint64_t counts[] = {v->checked, v->ok, v->missing, v->changed, v->extra, v->errors};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        json_object_object_add(o, verify_count_keys[i], json_object_new_int64((int64_t)counts[i]));
    json_object_object_add(o, "problems", list);
    for (size_t i = 0; i < v->n_problems && i < NOTIFY_FAILED_LIST_MAX; i++) {
        struct json_object *p = json_object_new_object();
        if (!p || json_object_array_add(list, p) < 0) {
            json_object_put(p);
            json_object_put(o);
            return NULL;
        }
        add_str(p, "dest", v->problems[i].dest, NOTIFY_LABEL_MAX);
        add_str(p, "path", v->problems[i].path, NOTIFY_NAME_MAX);
        add_str(p, "problem", v->problems[i].problem, 16);
    }
    return json_take(o);
}

/* The JSON stored for s; the caller frees it. NULL when out of memory. */
static char *session_to_json(const struct notify_session *s)
{
    struct json_object *o = json_object_new_object();
    struct json_object *dests = json_object_new_array(), *files = json_object_new_array();
    char *out = NULL;
    if (!o || !dests || !files) {
        json_object_put(dests);
        json_object_put(files);
        goto out;
    }
    if (s->kind != NOTIFY_KIND_SESSION) {
        json_object_put(dests);
        json_object_put(files);
        return other_to_json(o, s);
    }
    uint64_t failed = s->failed > s->n_failed_files ? s->failed : s->n_failed_files;
    add_str(o, "card", s->card, NOTIFY_LABEL_MAX);
    json_object_object_add(o, "result", json_object_new_string(notify_result_name(s->result)));
    json_object_object_add(o, "copied", json_object_new_int64((int64_t)s->copied));
    json_object_object_add(o, "already", json_object_new_int64((int64_t)s->already));
    json_object_object_add(o, "duplicates", json_object_new_int64((int64_t)s->duplicates));
    json_object_object_add(o, "failed", json_object_new_int64((int64_t)failed));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)s->bytes));
    json_object_object_add(o, "duration", json_object_new_double(s->duration));
    json_object_object_add(o, "dests", dests);
    json_object_object_add(o, "failed_files", files);
    for (size_t i = 0; i < s->n_dests; i++) {
        struct json_object *d = json_object_new_object();
        if (!d || json_object_array_add(dests, d) < 0) {
            json_object_put(d);
            goto out;
        }
        add_str(d, "name", s->dests[i].name, NOTIFY_LABEL_MAX);
        add_str(d, "state", s->dests[i].state, NOTIFY_LABEL_MAX);
    }
    for (size_t i = 0; i < s->n_failed_files && i < NOTIFY_FAILED_LIST_MAX; i++) {
        char *c = notify_clean(s->failed_files[i], NOTIFY_NAME_MAX);
        struct json_object *f = c ? json_object_new_string(c) : NULL;
        free(c);
        if (!f || json_object_array_add(files, f) < 0) {
            json_object_put(f);
            goto out;
        }
    }
    json_object_object_add(o, "safe_to_remove", json_object_new_boolean(s->safe_to_remove));
    add_str(o, "dashboard_url", s->dashboard_url, 2048);
    const char *j =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    out = j ? strdup(j) : NULL;
out:
    json_object_put(o);
    return out;
}

/* A session rebuilt from its JSON; its strings are borrowed from root. */
struct stored {
    struct json_object *root;
    struct notify_session s;
    struct notify_dest dests[NOTIFY_DESTS_MAX];
    const char *files[NOTIFY_FAILED_LIST_MAX];
    struct notify_problem problems[NOTIFY_FAILED_LIST_MAX];
};

static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return "";
    return json_object_get_string(v);
}

static uint64_t get_u64(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    int64_t n = json_object_get_int64(v);
    return n > 0 ? (uint64_t)n : 0;
}

static struct json_object *get_array(struct json_object *o, const char *key, size_t max)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_array) ||
        json_object_array_length(v) > max)
        return NULL;
    return v;
}

static void stored_done(struct stored *st)
{
    json_object_put(st->root);
    st->root = NULL;
}

/* A destination down or a verification from o (other_to_json's). 0, or -EBADMSG. */
static int other_parse(struct stored *st, struct json_object *o, const char *kind)
{
    struct notify_session *s = &st->s;
    struct json_object *v;
    s->dashboard_url = get_str(o, "dashboard_url");
    if (strcmp(kind, "dest_down") == 0) {
        s->kind = NOTIFY_KIND_DEST_DOWN;
        s->down.dest = get_str(o, "dest");
        s->down.reason = get_str(o, "reason");
        s->down.since = (int64_t)get_u64(o, "since");
        s->down.minutes = (int64_t)get_u64(o, "minutes");
        s->down.back_up = json_object_object_get_ex(o, "back_up", &v) && json_object_get_boolean(v);
        return 0;
    }
    struct json_object *list = get_array(o, "problems", NOTIFY_FAILED_LIST_MAX);
    if (strcmp(kind, "verify") != 0 || !list)
        return -EBADMSG;
    s->kind = NOTIFY_KIND_VERIFY;
    s->verify.scope = get_str(o, "scope");
    s->verify.run_id = (int64_t)get_u64(o, "run_id");
    uint64_t *counts[] = {&s->verify.checked, &s->verify.ok,    &s->verify.missing,
                          &s->verify.changed, &s->verify.extra, &s->verify.errors};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        *counts[i] = get_u64(o, verify_count_keys[i]);
    s->verify.n_problems = json_object_array_length(list);
    for (size_t i = 0; i < s->verify.n_problems; i++) {
        struct json_object *p = json_object_array_get_idx(list, i);
        st->problems[i] =
            (struct notify_problem){get_str(p, "dest"), get_str(p, "path"), get_str(p, "problem")};
    }
    s->verify.problems = st->problems;
    return 0;
}

/* 0, or -EBADMSG when data is not what session_to_json writes. */
static int stored_parse(struct stored *st, const char *data)
{
    memset(st, 0, sizeof(*st));
    struct json_object *o = json_tokener_parse(data);
    st->root = o;
    if (!o || !json_object_is_type(o, json_type_object))
        return -EBADMSG;
    struct notify_session *s = &st->s;
    const char *kind = get_str(o, "kind");
    if (kind[0])
        return other_parse(st, o, kind);
    if (notify_result_parse(get_str(o, "result"), &s->result) < 0)
        return -EBADMSG;
    struct json_object *dests = get_array(o, "dests", NOTIFY_DESTS_MAX);
    struct json_object *files = get_array(o, "failed_files", NOTIFY_FAILED_LIST_MAX);
    if (!dests || !files)
        return -EBADMSG;
    s->card = get_str(o, "card");
    s->copied = get_u64(o, "copied");
    s->already = get_u64(o, "already");
    s->duplicates = get_u64(o, "duplicates");
    s->failed = get_u64(o, "failed");
    s->bytes = get_u64(o, "bytes");
    struct json_object *v;
    s->duration = json_object_object_get_ex(o, "duration", &v) ? json_object_get_double(v) : 0;
    s->n_dests = json_object_array_length(dests);
    for (size_t i = 0; i < s->n_dests; i++) {
        struct json_object *d = json_object_array_get_idx(dests, i);
        st->dests[i].name = get_str(d, "name");
        st->dests[i].state = get_str(d, "state");
    }
    s->dests = st->dests;
    s->n_failed_files = json_object_array_length(files);
    for (size_t i = 0; i < s->n_failed_files; i++) {
        struct json_object *f = json_object_array_get_idx(files, i);
        st->files[i] = json_object_is_type(f, json_type_string) ? json_object_get_string(f) : "";
    }
    s->failed_files = st->files;
    s->safe_to_remove =
        json_object_object_get_ex(o, "safe_to_remove", &v) && json_object_get_boolean(v);
    s->dashboard_url = get_str(o, "dashboard_url");
    return 0;
}

/* ---- queue ---- */

int outbox_queue(struct db *db, const struct notify_session *s, enum outbox_event event,
                 int64_t session_id, const struct outbox_channel *channels, size_t n, int64_t now,
                 int64_t *ret_id, struct error *err)
{
    const char *keys[OUTBOX_CHANNELS_MAX];
    if (!db || !s || outbox_event_of_session(s) != (int)event)
        return error_set(err, -EINVAL, "invalid notification event");
    if (s->n_dests > NOTIFY_DESTS_MAX)
        return error_set(err, -EINVAL, "more than %d destinations", NOTIFY_DESTS_MAX);
    if (!channels || n < 1 || n > OUTBOX_CHANNELS_MAX)
        return error_set(err, -EINVAL, "a notification needs 1 to %d channels",
                         OUTBOX_CHANNELS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!channels[i].key || !*channels[i].key)
            return error_set(err, -EINVAL, "a notification channel without a key");
        keys[i] = channels[i].key;
    }
    char *data = session_to_json(s);
    if (!data)
        return error_set(err, -ENOMEM, "cannot queue a notification: out of memory");
    int r = db_notification_add(db, now, outbox_event_name(event), session_id, data, keys, n,
                                ret_id, err);
    free(data);
    return r;
}

/* ---- deliver ---- */

int outbox_send(const struct outbox_channel *ch, const struct notify_msg *m, struct error *err)
{
    if (ch->kind == OUTBOX_WEBHOOK)
        return notify_hook_send(&ch->hook, m, err);
    struct notify_mail_attachment att = {
        .filename = m->attachment_name,
        .content_type = "text/html",
        .data = m->attachment,
        .len = m->attachment_len,
    };
    struct notify_mail_content c = {
        .attachment = m->attachment ? &att : NULL,
        .from = ch->from,
        .to = ch->to,
        .n_to = ch->n_to,
        .subject = m->subject,
        .text = m->text,
        .html = m->html,
        .date = time(NULL),
    };
    char *message = NULL;
    size_t len = 0;
    int r = notify_mail_format(&c, &message, &len, err);
    if (r == 0)
        r = notify_mail_send(&ch->mail, ch->from, ch->to, ch->n_to, message, len, err);
    free(message);
    return r;
}

/* Replaces each occurrence of secret in msg by "***" (in place, the message only shrinks or
 * keeps its length since secrets shorter than 3 bytes are left alone). */
static void scrub(char *msg, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n < 3)
        return;
    char *p;
    while ((p = strstr(msg, secret)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + n, strlen(p + n) + 1);
    }
}

void outbox_scrub(const struct outbox_channel *ch, char *msg)
{
    scrub(msg, ch->mail.password);
    scrub(msg, ch->hook.token);
}

static int64_t backoff(int64_t attempt)
{
    int64_t b = OUTBOX_BACKOFF_MIN;
    for (int64_t i = 1; i < attempt && b < OUTBOX_BACKOFF_MAX; i++)
        b *= 2;
    return b < OUTBOX_BACKOFF_MAX ? b : OUTBOX_BACKOFF_MAX;
}

/* When channel key may next send (0: nothing pending). */
static int channel_due(struct db *db, const char *key, int64_t *ret_at, struct error *err)
{
    int64_t pending = 0, next_at = 0, last_sent = 0;
    int r = db_delivery_channel(db, key, &pending, &next_at, &last_sent, err);
    if (r < 0)
        return r;
    int64_t at = 0;
    if (pending > 0) {
        at = next_at;
        if (last_sent > 0 && last_sent + OUTBOX_RATE > at)
            at = last_sent + OUTBOX_RATE;
    }
    *ret_at = at;
    return 0;
}

/* A channel's pending deliveries taken for one message. */
struct claim {
    const char *key;
    int64_t now;
    struct db_delivery *rows;
    size_t n;
    struct error *err;
};

/* In one write transaction: when the channel may send now, takes its pending deliveries and
 * holds them for OUTBOX_LEASE seconds, so that another process delivering at the same time
 * (the service and `snapsync backup`) finds them not due and sends nothing twice. A process
 * that dies while sending leaves them to be tried again when the lease ends. */
static int claim_tx(struct db *db, void *userdata)
{
    struct claim *c = userdata;
    int64_t due, ids[NOTIFY_MERGED_MAX];
    int r = channel_due(db, c->key, &due, c->err);
    if (r < 0 || due == 0 || due > c->now)
        return r;
    r = db_deliveries_pending(db, c->key, NOTIFY_MERGED_MAX, &c->rows, &c->n, c->err);
    for (size_t i = 0; r == 0 && i < c->n; i++)
        ids[i] = c->rows[i].notification_id;
    if (r == 0 && c->n > 0)
        r = db_deliveries_hold(db, c->key, ids, c->n, c->now + OUTBOX_LEASE, c->err);
    if (r < 0) {
        db_deliveries_free(c->rows, c->n);
        c->rows = NULL;
        c->n = 0;
    }
    return r;
}

/* Attaches the HTML report of session_id to m when it fits in OUTBOX_REPORT_MAX bytes (the
 * report is written into a fixed buffer: a larger one fails and is left out, memory stays
 * bounded). Nothing attached on any failure: the message goes without it. */
static void attach_report(struct db *db, int64_t session_id, struct notify_msg *m)
{
    char *buf = malloc(OUTBOX_REPORT_MAX);
    FILE *f = buf ? fmemopen(buf, OUTBOX_REPORT_MAX, "w") : NULL;
    if (!f) {
        free(buf);
        return;
    }
    int r = report_write(db, NULL, session_id, REPORT_HTML, f, NULL);
    long len = r == 0 && fflush(f) == 0 ? ftell(f) : -1;
    fclose(f);
    if (len <= 0 || len >= OUTBOX_REPORT_MAX) { /* full: the report was cut */
        free(buf);
        return;
    }
    m->attachment = buf;
    m->attachment_len = (size_t)len;
    snprintf(m->attachment_name, sizeof(m->attachment_name), "snapsync-session-%lld.html",
             (long long)session_id);
}

static int deliver_channel(struct db *db, const struct outbox_channel *ch, int64_t now,
                           struct outbox_result *res, struct error *err)
{
    struct db_delivery *rows = NULL;
    size_t n = 0, k = 0;
    struct stored st[NOTIFY_MERGED_MAX];
    struct notify_session sessions[NOTIFY_MERGED_MAX];
    struct db_delivery_mark marks[NOTIFY_MERGED_MAX];
    struct notify_msg m = {0};
    struct error send_err = {0};
    struct claim c = {ch->key, now, NULL, 0, err};
    int r = db_transaction(db, claim_tx, &c, err);
    if (r < 0)
        return r;
    rows = c.rows;
    n = c.n;
    for (size_t i = 0; i < n; i++) {
        marks[i] = (struct db_delivery_mark){rows[i].notification_id, DB_DELIVERY_FAILED, 0,
                                             "cannot rebuild the stored notification"};
        if (stored_parse(&st[k], rows[i].data) == 0) {
            sessions[k] = st[k].s;
            marks[i].state = DB_DELIVERY_PENDING; /* decided below */
            k++;
        } else {
            stored_done(&st[k]);
        }
    }
    int sent = -EBADMSG;
    if (k > 0) {
        sent = notify_msg_build_merged(sessions, k, &m, &send_err);
        if (sent == 0 && ch->kind == OUTBOX_EMAIL && n == 1 && k == 1 &&
            sessions[0].kind == NOTIFY_KIND_SESSION && rows[0].session_id > 0)
            attach_report(db, rows[0].session_id, &m);
        if (sent == 0)
            sent = (ch->send ? ch->send : outbox_send)(ch, &m, &send_err);
        outbox_scrub(ch, send_err.msg);
        if (sent == 0)
            res->messages++;
    }
    for (size_t i = 0; i < n; i++) {
        struct db_delivery_mark *mk = &marks[i];
        if (mk->state != DB_DELIVERY_PENDING) {
            res->failed++;
            continue;
        }
        if (sent == 0) {
            mk->state = DB_DELIVERY_SENT;
            mk->last_error = NULL;
            res->sent++;
            continue;
        }
        mk->last_error = send_err.msg;
        if (!notify_error_transient(sent) || now - rows[i].created_at >= OUTBOX_GIVE_UP) {
            mk->state = DB_DELIVERY_FAILED;
            res->failed++;
        } else {
            mk->next_at = now + backoff(rows[i].attempts + 1);
            res->retry++;
        }
    }
    if (n > 0)
        r = db_deliveries_mark(db, ch->key, marks, n, now, err);
    for (size_t i = 0; i < k; i++)
        stored_done(&st[i]);
    notify_msg_done(&m);
    db_deliveries_free(rows, n);
    return r;
}

int outbox_deliver(struct db *db, const struct outbox_channel *channels, size_t n, int64_t now,
                   const atomic_bool *cancel, struct outbox_result *ret, struct error *err)
{
    struct outbox_result res = {0};
    int r = 0;
    if (!db || (n && !channels) || n > OUTBOX_CHANNELS_MAX)
        return error_set(err, -EINVAL, "invalid notification channels");
    for (size_t i = 0; i < n && r == 0; i++) {
        if (cancel && atomic_load(cancel)) {
            r = error_set(err, -ECANCELED, "notification delivery cancelled");
            break;
        }
        if (!channels[i].key || !*channels[i].key)
            r = error_set(err, -EINVAL, "a notification channel without a key");
        else
            r = deliver_channel(db, &channels[i], now, &res, err);
    }
    if (r == 0)
        r = outbox_next_due(db, channels, n, &res.next_due, err);
    if (ret)
        *ret = res;
    return r;
}

int outbox_next_due(struct db *db, const struct outbox_channel *channels, size_t n, int64_t *ret_at,
                    struct error *err)
{
    int64_t next = 0;
    if (!db || !ret_at || (n && !channels))
        return error_set(err, -EINVAL, "invalid notification channels");
    for (size_t i = 0; i < n; i++) {
        int64_t at;
        if (!channels[i].key || !*channels[i].key)
            continue;
        int r = channel_due(db, channels[i].key, &at, err);
        if (r < 0)
            return r;
        if (at > 0 && (next == 0 || at < next))
            next = at;
    }
    *ret_at = next;
    return 0;
}

int outbox_failed_list(struct db *db, int limit, struct db_delivery **ret, size_t *ret_n,
                       struct error *err)
{
    return db_deliveries_failed(db, limit, ret, ret_n, err);
}

int outbox_pending_count(struct db *db, int64_t *ret, struct error *err)
{
    return db_deliveries_pending_count(db, ret, err);
}

int outbox_forget_others(struct db *db, const struct outbox_channel *channels, size_t n,
                         int64_t *ret_count, struct error *err)
{
    const char *keys[OUTBOX_CHANNELS_MAX];
    if ((n && !channels) || n > OUTBOX_CHANNELS_MAX)
        return error_set(err, -EINVAL, "invalid notification channels");
    for (size_t i = 0; i < n; i++)
        keys[i] = channels[i].key;
    return db_deliveries_abandon(db, keys, n, "the channel is no longer configured", ret_count,
                                 err);
}
