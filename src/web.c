/* SPDX-License-Identifier: MIT */
/*
 * The web dashboard: libmicrohttpd serving the page (compiled in from web/ by
 * cmake/embed_assets.cmake), a JSON API and server-sent events. docs/api.md is the contract.
 *
 * Inside: libmicrohttpd runs one thread per connection, so a handler may block on the database
 * and an event stream may wait on a condition variable. Three kinds of state:
 *   - the status document (what /api/status returns and /api/events pushes) is built by one
 *     sampler thread once a second from its own read-only database connection, plus the live
 *     states the service hands in; requests only copy the cached text, so a slow disk never
 *     stalls the page and many viewers cost one query set;
 *   - the health document is built by a health thread that probes each destination and the
 *     broker every WEB_HEALTH_INTERVAL_S; /api/health returns the last result at once;
 *   - other reads (sessions, files, stats) run in the request's thread on a read-only
 *     connection opened for the request; actions open a read-write one for their transaction.
 * Everything the server answers carries nosniff, a strict Content-Security-Policy and an exact
 * Content-Type. Requests are bounded by libmicrohttpd (header memory, idle time, connections)
 * and by the handler (bodies, ids, query numbers); anything unexpected is a 4xx.
 */
#include "web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "db.h"
#include "dest.h"
#include "jsonout.h"
#include "log.h"
#include "mqtt.h"
#include "report.h"
#include "status.h"
#include "web_assets.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define WEB_BODY_MAX 1024             /* action bodies are empty or a tiny JSON object */
#define WEB_HEADER_MEMORY (32 * 1024) /* per connection: request line + headers */
#define WEB_PER_IP_MAX 16             /* connections from one address: a quarter of the total */
#define WEB_HEAD_DEADLINE_S 10.0      /* total time for a request's head (and action body) */
#define WEB_STACK_SIZE (512 * 1024)
#define WEB_ACTIVE_MAX 8      /* running sessions shown */
#define WEB_HISTORY 60        /* throughput chart points per session, one a second */
#define WEB_RATE_WINDOW_S 5.0 /* the rate from the database: bytes done over this window */
#define WEB_KEEPALIVE_S 15    /* an event stream with nothing new sends a comment */
#define WEB_LIST_DEFAULT 20
#define WEB_LIST_MAX 1000
#define WEB_FILES_PAGE 100
#define WEB_LAST_PROBLEMS 10 /* problems of the last session in the status document */

/* The session report is one self-contained page: its inline style is all it may use. */
#define REPORT_CSP                                                                                 \
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "         \
    "frame-ancestors 'self'"

#define CSP                                                                                        \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "               \
    "frame-ancestors 'self'"

struct asset {
    const char *path;
    const char *type;
    const unsigned char *data;
    const size_t *len;
};

/* The only files served: a fixed table, so no request names anything on disk. */
static const struct asset assets[] = {
    {"/", "text/html; charset=utf-8", web_asset_index_html, &web_asset_index_html_len},
    {"/index.html", "text/html; charset=utf-8", web_asset_index_html, &web_asset_index_html_len},
    {"/app.js", "text/javascript; charset=utf-8", web_asset_app_js, &web_asset_app_js_len},
    {"/style.css", "text/css; charset=utf-8", web_asset_style_css, &web_asset_style_css_len},
    {"/favicon.svg", "image/svg+xml", web_asset_favicon_svg, &web_asset_favicon_svg_len},
    {"/icon.svg", "image/svg+xml", web_asset_icon_svg, &web_asset_icon_svg_len},
    {"/icon-192.png", "image/png", web_asset_icon_192_png, &web_asset_icon_192_png_len},
    {"/icon-512.png", "image/png", web_asset_icon_512_png, &web_asset_icon_512_png_len},
    {"/manifest.webmanifest", "application/manifest+json", web_asset_manifest_webmanifest,
     &web_asset_manifest_webmanifest_len},
};

/* One running session as the sampler follows it: samples for the rate, points for the chart. */
struct track {
    int64_t session_id;
    bool seen; /* in the last sample */
    double sample_t[16];
    int64_t sample_bytes[16];
    size_t n_samples;
    double chart_t[WEB_HISTORY];
    double chart_bps[WEB_HISTORY];
    size_t n_chart;
};

struct live {
    double at; /* monotonic seconds; 0: unused */
    struct status_live s;
};

/* An open connection as the guard sees it: its socket and when its current request began. */
struct conn_slot {
    bool used;
    bool answered; /* the current request was answered: its head is no longer timed */
    int fd;
    double since;
};

struct web {
    const struct config *cfg;
    struct web_actions actions;
    bool has_actions;
    int port;
    struct sockaddr_storage addr;
    char shown_addr[64];
    char *token; /* "" none */
    struct MHD_Daemon *daemon;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t changed;
    bool stopping;
    bool threads_started;
    char *status_json; /* the current status document */
    uint64_t status_version;
    char *health_json;
    int streams;
    struct live live[WEB_ACTIVE_MAX];
    struct track tracks[WEB_ACTIVE_MAX];
    double last_live_push;
    bool wake_sampler;

    pthread_t sampler;
    pthread_t health;

    /* The head deadline: its own lock, so a slow status build never delays a connection. */
    pthread_mutex_t guard_lock; /* everything below */
    pthread_cond_t guard_wake;
    bool guard_stopping;
    bool guard_started;
    struct conn_slot conns[WEB_CONNECTIONS_MAX];
    pthread_t guard;
};

/* Per request, kept by libmicrohttpd between the calls of one request. */
struct request {
    char body[WEB_BODY_MAX + 1];
    size_t len;
    bool too_big;
};

/* Per /api/events stream. */
struct stream {
    struct web *w;
    uint64_t version; /* of the last state sent */
    double last_sent;
    char *pending; /* text not yet handed to libmicrohttpd */
    size_t len, off;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- responses ---- */

/* Sends resp with the headers every answer carries, its Content-Security-Policy being csp. */
static enum MHD_Result send_response_csp(struct MHD_Connection *conn, unsigned status,
                                         struct MHD_Response *resp, const char *type,
                                         const char *csp)
{
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "X-Frame-Options", "SAMEORIGIN");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    if (!MHD_get_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, unsigned status,
                                     struct MHD_Response *resp, const char *type)
{
    return send_response_csp(conn, status, resp, type, CSP);
}

/* Sends text (copied). */
static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *type,
                                 const char *text, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    return send_response(conn, status, resp, type);
}

/* Sends a JSON document and drops the reference. */
static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_object *o)
{
    if (!o)
        return MHD_NO;
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    enum MHD_Result r = send_text(conn, status, "application/json", s, len);
    json_object_put(o);
    return r;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *fmt,
                                  ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *fmt,
                                  ...)
{
    char msg[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", jsonout_string(msg));
    return send_json(conn, status, o);
}

static enum MHD_Result send_method_not_allowed(struct MHD_Connection *conn, const char *allow)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string("method not allowed"));
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)s, MHD_RESPMEM_MUST_COPY);
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result r = send_response(conn, MHD_HTTP_METHOD_NOT_ALLOWED, resp, "application/json");
    json_object_put(o);
    return r;
}

/* A database error as the API shows it: what was asked for does not exist, or 500/503. */
static enum MHD_Result send_db_error(struct MHD_Connection *conn, int r, const struct error *err)
{
    if (r == -ENOENT)
        return send_error(conn, MHD_HTTP_NOT_FOUND, "%s", err->msg[0] ? err->msg : "not found");
    if (r == -EBUSY)
        return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err->msg);
    return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", err->msg);
}

/* ---- the database ---- */

/* A read-only connection for one request, closed with db_close when it is answered. Not pooled:
 * a connection kept open was seen to go on reading an old snapshot after other connections of
 * the same process closed the database, and opening one costs well under a millisecond. */
static int request_db_open(struct web *w, struct db **ret, struct error *err)
{
    return status_db_open(w->cfg, ret, err);
}

/* ---- JSON of database rows ---- */

/* Adds "scan_problem_entries": the first max (at most DB_PROBLEMS_MAX) entries of the source
 * of session s that could not be read, as [{"path", "error"}]. Empty when it had none or the
 * database cannot say. */
static void add_scan_problems(json_object *o, const struct config *cfg, struct db *db,
                              const struct db_session *s, size_t max)
{
    struct db_problem *p = NULL;
    size_t n = 0;
    if (s->totals.scan_problems > 0 && db_session_problems(db, s->id, &p, &n, NULL) < 0)
        n = 0;
    json_object_object_add(o, "scan_problem_entries", status_problems_json(cfg, p, n, max));
    free(p);
}

static json_object *file_json(const struct config *cfg, const struct db_file *f)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(f->id));
    jsonout_add_path(o, "path", f->rel_path);
    json_object_object_add(o, "size", json_object_new_int64(f->size));
    json_object_object_add(o, "kind", json_object_new_string(f->kind[0] ? f->kind : "unknown"));
    json_object_object_add(o, "state", json_object_new_string(db_file_state_to_string(f->state)));
    json_object_object_add(o, "attempts", json_object_new_int(f->attempts));
    json_object_object_add(o, "capture_time",
                           f->capture_time ? json_object_new_int64(f->capture_time) : NULL);
    json_object_object_add(o, "md5", jsonout_string_or_null(f->md5));
    json_object_object_add(o, "duplicate_of",
                           f->duplicate_of ? json_object_new_int64(f->duplicate_of) : NULL);
    json_object_object_add(o, "error", jsonout_error(cfg, f->last_error));
    return o;
}

/* ---- the sampler: the status document ---- */

static struct track *track_for(struct web *w, int64_t session_id)
{
    struct track *free_slot = NULL;
    for (size_t i = 0; i < WEB_ACTIVE_MAX; i++) {
        if (w->tracks[i].session_id == session_id)
            return &w->tracks[i];
        if (!free_slot && w->tracks[i].session_id == 0)
            free_slot = &w->tracks[i];
    }
    if (free_slot) {
        memset(free_slot, 0, sizeof(*free_slot));
        free_slot->session_id = session_id;
    }
    return free_slot;
}

/* Adds a sample; returns the rate over the last WEB_RATE_WINDOW_S seconds. */
static double track_sample(struct track *t, double now, int64_t bytes)
{
    size_t cap = ARRAY_SIZE(t->sample_t);
    if (t->n_samples == cap) {
        memmove(t->sample_t, t->sample_t + 1, (cap - 1) * sizeof(t->sample_t[0]));
        memmove(t->sample_bytes, t->sample_bytes + 1, (cap - 1) * sizeof(t->sample_bytes[0]));
        t->n_samples--;
    }
    t->sample_t[t->n_samples] = now;
    t->sample_bytes[t->n_samples] = bytes;
    t->n_samples++;
    size_t first = 0;
    while (first + 1 < t->n_samples && now - t->sample_t[first + 1] >= WEB_RATE_WINDOW_S)
        first++;
    double dt = now - t->sample_t[first];
    if (dt < 0.5)
        return 0;
    int64_t db = bytes - t->sample_bytes[first];
    return db > 0 ? (double)db / dt : 0;
}

static void track_chart(struct track *t, double now, double bps)
{
    if (t->n_chart && now - t->chart_t[t->n_chart - 1] < 0.9)
        return; /* one point a second, however often the state changes */
    if (t->n_chart == WEB_HISTORY) {
        memmove(t->chart_t, t->chart_t + 1, (WEB_HISTORY - 1) * sizeof(t->chart_t[0]));
        memmove(t->chart_bps, t->chart_bps + 1, (WEB_HISTORY - 1) * sizeof(t->chart_bps[0]));
        t->n_chart--;
    }
    t->chart_t[t->n_chart] = now;
    t->chart_bps[t->n_chart] = bps;
    t->n_chart++;
}

/* One running session for the status document; called with w->lock held. */
static json_object *active_json(struct web *w, struct db *db, const struct db_session *s,
                                double now)
{
    struct error err = {0};
    int64_t files_done = 0, bytes_done = 0;
    db_session_done(db, s->id, &files_done, &bytes_done, &err);
    struct db_file cur;
    bool has_cur = s->card_id > 0 && db_card_current_file(db, s->card_id, &cur, &err) == 0;
    struct db_dest_stats *ds = NULL;
    size_t n_ds = 0;
    db_dest_stats(db, s->id, &ds, &n_ds, &err);

    struct track *t = track_for(w, s->id);
    double rate = t ? track_sample(t, now, bytes_done) : 0;
    const char *current = has_cur ? cur.rel_path : "";
    const struct live *lv = NULL;
    for (size_t i = 0; i < WEB_ACTIVE_MAX; i++)
        if (w->live[i].at > 0 && w->live[i].s.session_id == s->id &&
            now - w->live[i].at < WEB_LIVE_TTL_S)
            lv = &w->live[i];
    if (lv) {
        if (lv->s.bytes_done > bytes_done)
            bytes_done = lv->s.bytes_done;
        rate = lv->s.rate_bps;
        current = lv->s.current_file;
    }
    if (t) {
        t->seen = true;
        track_chart(t, now, rate);
    }

    json_object *o = status_session_json(w->cfg, s);
    int64_t total = s->totals.bytes_total;
    double progress = status_progress(s->status == DB_SESSION_SCANNING, files_done,
                                      s->totals.files_total, bytes_done, total);
    double eta = 0;
    bool has_eta = status_eta(bytes_done, total, rate, &eta);
    json_object_object_add(o, "files_done", json_object_new_int64(files_done));
    json_object_object_add(o, "bytes_done", json_object_new_int64(bytes_done));
    json_object_object_add(o, "progress", json_object_new_double(progress));
    json_object_object_add(o, "rate_bps", json_object_new_double(rate));
    json_object_object_add(o, "eta_s", has_eta ? json_object_new_double(eta) : NULL);
    jsonout_add_path(o, "current_file", current);
    json_object *hist = json_object_new_array();
    for (size_t i = 0; t && i < t->n_chart; i++) {
        json_object *p = json_object_new_array();
        json_object_array_add(p, json_object_new_double(t->chart_t[i] - now));
        json_object_array_add(p, json_object_new_double(t->chart_bps[i]));
        json_object_array_add(hist, p);
    }
    json_object_object_add(o, "history", hist);
    json_object *dests = status_dests_json(w->cfg, ds, n_ds);
    for (size_t i = 0; lv && i < lv->s.n_dests && i < STATUS_DEST_MAX; i++) {
        /* the session's own view: a destination it found down, and why (one entry each, also
         * before any of its files has an outcome: those that wait for it have none yet) */
        json_object *d = NULL, *name;
        for (size_t k = 0; !d && k < json_object_array_length(dests); k++) {
            json_object *x = json_object_array_get_idx(dests, k);
            if (json_object_object_get_ex(x, "name", &name) &&
                strcmp(json_object_get_string(name), lv->s.dests[i].id) == 0)
                d = x;
        }
        if (!d) {
            struct db_dest_stats none = {0};
            snprintf(none.dest, sizeof(none.dest), "%s", lv->s.dests[i].id);
            json_object *one = status_dests_json(w->cfg, &none, 1);
            d = json_object_get(json_object_array_get_idx(one, 0));
            json_object_put(one);
            json_object_array_add(dests, d);
        }
        json_object_object_add(d, "down", json_object_new_boolean(!lv->s.dests[i].reachable));
        json_object_object_add(d, "problem", jsonout_error(w->cfg, lv->s.dests[i].problem));
    }
    json_object_object_add(o, "destinations", dests);
    free(ds);
    return o;
}

/* Builds the status document; called with w->lock held (the database reads are short). */
static char *status_build(struct web *w, struct db *db, const char *db_problem, bool missing)
{
    double now = mono_now();
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(w->cfg->service.name));
    json_object_object_add(o, "version", json_object_new_string(SNAPSYNC_VERSION));
    json_object_object_add(o, "mode", json_object_new_string(w->has_actions ? "service" : "web"));
    json_object_object_add(o, "time", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(o, "token_required", json_object_new_boolean(w->token[0] != '\0'));

    struct db_session *list = NULL;
    size_t n = 0;
    struct db_stats st = {0};
    struct error err = {0};
    const char *problem = db_problem;
    if (db && (status_sessions_list(db, WEB_LIST_DEFAULT, &list, &n, &err) < 0 ||
               db_stats_get(db, &st, &err) < 0))
        problem = err.msg;

    for (size_t i = 0; i < WEB_ACTIVE_MAX; i++)
        w->tracks[i].seen = false;
    json_object *active = json_object_new_array();
    const struct db_session *last = NULL;
    for (size_t i = 0; i < n; i++) {
        if (status_session_running(&list[i])) {
            if (json_object_array_length(active) < WEB_ACTIVE_MAX)
                json_object_array_add(active, active_json(w, db, &list[i], now));
        } else if (!last) {
            last = &list[i];
        }
    }
    for (size_t i = 0; i < WEB_ACTIVE_MAX; i++)
        if (!w->tracks[i].seen)
            w->tracks[i].session_id = 0;

    json_object_object_add(o, "state", json_object_new_string(status_state(list, n)));
    json_object_object_add(o, "database",
                           json_object_new_string(!problem  ? "ok"
                                                  : missing ? "missing"
                                                            : "unavailable"));
    json_object_object_add(o, "database_error", jsonout_error(w->cfg, problem));
    json_object_object_add(o, "active", active);
    json_object *last_json = last ? status_session_json(w->cfg, last) : NULL;
    if (last_json)
        add_scan_problems(last_json, w->cfg, db, last, WEB_LAST_PROBLEMS);
    json_object_object_add(o, "last", last_json);
    json_object_object_add(o, "stats", status_totals_json(&st));
    struct status_notifications notes;
    struct error nerr = {0};
    json_object_object_add(o, "notifications",
                           db && status_notifications_get(db, &notes, &nerr) == 0
                               ? status_notifications_json(w->cfg, &notes)
                               : NULL);
    char *text = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    free(list);
    return text;
}

static void *sampler_main(void *arg)
{
    struct web *w = arg;
    struct db *db = NULL;
    char problem[ERROR_MSG_MAX];
    bool missing = false;

    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->lock);
        struct error err = {0};
        problem[0] = '\0';
        if (!db) {
            int r = status_db_open(w->cfg, &db, &err);
            missing = r == -ENOENT;
            if (r < 0)
                snprintf(problem, sizeof(problem), "%s", err.msg);
        }
        pthread_mutex_lock(&w->lock);
        char *text = status_build(w, db, problem[0] ? problem : NULL, missing);
        if (text) {
            free(w->status_json);
            w->status_json = text;
            w->status_version++;
            pthread_cond_broadcast(&w->changed);
        }
        /* A fresh connection each time: the file may have been created, replaced or repaired,
         * and a connection kept open in a process whose other connections close the database
         * was seen to keep reading an old snapshot. Opening costs well under a millisecond. */
        db_close(db);
        db = NULL;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        while (!w->stopping && !w->wake_sampler &&
               pthread_cond_timedwait(&w->changed, &w->lock, &ts) != ETIMEDOUT)
            ;
        w->wake_sampler = false;
    }
    pthread_mutex_unlock(&w->lock);
    db_close(db);
    return NULL;
}

void web_set_live_state(struct web *w, const struct status_live *s)
{
    if (!w || !s || s->session_id <= 0)
        return;
    double now = mono_now();
    pthread_mutex_lock(&w->lock);
    struct live *slot = NULL, *oldest = &w->live[0];
    for (size_t i = 0; i < WEB_ACTIVE_MAX; i++) {
        if (w->live[i].at > 0 && w->live[i].s.session_id == s->session_id)
            slot = &w->live[i];
        if (w->live[i].at < oldest->at)
            oldest = &w->live[i];
    }
    if (!slot)
        slot = oldest;
    slot->s = *s;
    slot->s.current_file[sizeof(slot->s.current_file) - 1] = '\0';
    slot->at = now;
    /* at most about five pushes a second, whatever the caller's rate */
    if (now - w->last_live_push >= 0.2) {
        w->last_live_push = now;
        w->wake_sampler = true;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->lock);
}

/* ---- health ---- */

static json_object *health_probe(const struct web *w)
{
    const struct config *cfg = w->cfg;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "checked_at", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(o, "interval_s", json_object_new_int(WEB_HEALTH_INTERVAL_S));
    json_object *dests = json_object_new_array();
    struct dest **list = NULL;
    size_t n = 0;
    struct error err = {0};
    if (dest_create_all(cfg, &list, &n, &err) < 0) {
        json_object_object_add(o, "error", jsonout_error(cfg, err.msg));
    } else {
        for (size_t i = 0; i < n; i++) {
            char detail[512] = "";
            error_clear(&err);
            bool ok = dest_probe(list[i], detail, sizeof(detail), &err) == 0;
            json_object *d = json_object_new_object();
            json_object_object_add(d, "name", json_object_new_string(dest_id(list[i])));
            json_object_object_add(d, "label", json_object_new_string(dest_label(list[i])));
            json_object_object_add(d, "kind", json_object_new_string(dest_kind(list[i])));
            json_object_object_add(d, "ok", json_object_new_boolean(ok));
            json_object_object_add(d, "detail", jsonout_error(cfg, ok ? detail : err.msg));
            json_object_array_add(dests, d);
        }
        dest_free_all(list, n);
    }
    json_object_object_add(o, "destinations", dests);
    json_object *m = json_object_new_object();
    json_object_object_add(m, "enabled", json_object_new_boolean(cfg->mqtt.enabled));
    if (cfg->mqtt.enabled) {
        char detail[512] = "";
        error_clear(&err);
        bool ok = mqtt_probe(cfg, 5, detail, sizeof(detail), &err) == 0;
        json_object_object_add(m, "ok", json_object_new_boolean(ok));
        json_object_object_add(m, "detail", jsonout_error(cfg, ok ? detail : err.msg));
    }
    json_object_object_add(o, "mqtt", m);
    return o;
}

static void *health_main(void *arg)
{
    struct web *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->lock);
        json_object *o = health_probe(w);
        char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        pthread_mutex_lock(&w->lock);
        if (text) {
            free(w->health_json);
            w->health_json = text;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += WEB_HEALTH_INTERVAL_S;
        while (!w->stopping && pthread_cond_timedwait(&w->changed, &w->lock, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- request parsing ---- */

/* A positive id of at most 18 digits, nothing else. */
static bool parse_id(const char *s, size_t len, int64_t *ret)
{
    if (len == 0 || len > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v <= 0)
        return false;
    *ret = v;
    return true;
}

/* Query number: absent gives def; otherwise digits only within lo..hi, else false. */
static bool query_number(struct MHD_Connection *conn, const char *name, int64_t def, int64_t lo,
                         int64_t hi, int64_t *ret)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v) {
        *ret = def;
        return true;
    }
    int64_t n = 0;
    size_t len = strlen(v);
    if (strcmp(v, "0") == 0 && lo == 0) {
        *ret = 0;
        return true;
    }
    if (!parse_id(v, len, &n) || n < lo || n > hi)
        return false;
    *ret = n;
    return true;
}

/* "/api/sessions/12/retry" with prefix "/api/sessions/" and suffix "/retry": the id. */
static bool match_id(const char *url, const char *prefix, const char *suffix, int64_t *ret)
{
    size_t lp = strlen(prefix), ls = strlen(suffix), lu = strlen(url);
    if (lu <= lp + ls || strncmp(url, prefix, lp) != 0 || strcmp(url + lu - ls, suffix) != 0)
        return false;
    return parse_id(url + lp, lu - lp - ls, ret);
}

static bool token_ok(const struct web *w, struct MHD_Connection *conn)
{
    if (!w->token[0])
        return true;
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *given = h + 7;
    size_t lg = strlen(given), lt = strlen(w->token);
    /* constant time in the token's length: no early exit on the first difference */
    unsigned char diff = lg != lt;
    for (size_t i = 0; i < lt; i++)
        diff |= (unsigned char)(w->token[i] ^ (i < lg ? given[i] : 0));
    return diff == 0;
}

/* The name in a Host header without its port and trailing dot, in buf; false when it does not
 * fit. "[::1]:8080" gives "::1". */
static bool host_name(const char *host, char *buf, size_t size)
{
    size_t len;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return false;
        host++;
        len = (size_t)(end - host);
    } else {
        const char *colon = strchr(host, ':');
        len = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (len && host[len - 1] == '.')
        len--;
    if (len == 0 || len >= size)
        return false;
    memcpy(buf, host, len);
    buf[len] = '\0';
    return true;
}

/* True when a page that reached us under this Host name can only be ours: an IP literal,
 * localhost, this machine's own name (and its .local), or a name the configuration lists. Any
 * other name may be a DNS-rebinding site that points its own name at us. */
static bool host_trusted(const struct web *w, const char *host)
{
    char name[256];
    unsigned char addr[sizeof(struct in6_addr)];
    if (!host || !host_name(host, name, sizeof(name)))
        return false;
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1 ||
        strcasecmp(name, "localhost") == 0)
        return true;
    for (size_t i = 0; i < w->cfg->service.n_web_ui_hosts; i++)
        if (strcasecmp(name, w->cfg->service.web_ui_hosts[i]) == 0)
            return true;
    char self[256];
    if (gethostname(self, sizeof(self)) != 0)
        return false;
    self[sizeof(self) - 1] = '\0';
    size_t short_len = strcspn(self, ".");
    size_t ln = strlen(name);
    if (strcasecmp(name, self) == 0 || (ln == short_len && strncasecmp(name, self, short_len) == 0))
        return true;
    return ln == short_len + 6 && strncasecmp(name, self, short_len) == 0 &&
           strcasecmp(name + short_len, ".local") == 0;
}

/* Cross-site checks for actions: 0 when the request may go on, else the HTTP status to send
 * with the reason in *why. */
static unsigned action_refused(const struct web *w, struct MHD_Connection *conn, const char **why)
{
    const char *site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0) {
        *why = "cross-site request refused";
        return MHD_HTTP_FORBIDDEN;
    }
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (origin) {
        const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
        const char *rest = strncmp(origin, "http://", 7) == 0    ? origin + 7
                           : strncmp(origin, "https://", 8) == 0 ? origin + 8
                                                                 : NULL;
        if (!host || !rest || strcasecmp(rest, host) != 0) {
            *why = "cross-origin request refused";
            return MHD_HTTP_FORBIDDEN;
        }
    }
    /* With a token a rebinding page cannot act: it does not have the token. */
    if (!w->token[0] && !host_trusted(w, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                     MHD_HTTP_HEADER_HOST))) {
        *why = "actions without a token are taken only from an address, localhost, this machine's "
               "name or service.web_ui_hosts";
        return MHD_HTTP_FORBIDDEN;
    }
    /* application/json cannot be sent cross-site without a preflight, which we never allow */
    const char *type =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    size_t lt = strlen("application/json");
    if (!type || strncasecmp(type, "application/json", lt) != 0 ||
        (type[lt] != '\0' && type[lt] != ';' && type[lt] != ' ')) {
        *why = "actions need Content-Type: application/json";
        return MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }
    return 0;
}

/* The body of an action: empty or one JSON object. */
static bool body_ok(const struct request *rq)
{
    size_t i = 0;
    while (i < rq->len && strchr(" \t\r\n", rq->body[i]))
        i++;
    if (i == rq->len)
        return true;
    struct json_tokener *tok = json_tokener_new_ex(8);
    if (!tok)
        return false;
    json_object *o = json_tokener_parse_ex(tok, rq->body, (int)rq->len);
    bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
              json_object_is_type(o, json_type_object) &&
              json_tokener_get_parse_end(tok) == rq->len;
    if (ok && json_tokener_get_parse_end(tok) < rq->len)
        ok = false;
    json_object_put(o);
    json_tokener_free(tok);
    return ok;
}

/* ---- reads ---- */

/* A copy of the JSON document *doc, one of the sampler's (NULL when there is none yet or no
 * memory), taken under w's lock. */
static char *sampled_json(struct web *w, char *const *doc)
{
    pthread_mutex_lock(&w->lock);
    char *text = *doc ? strdup(*doc) : NULL;
    pthread_mutex_unlock(&w->lock);
    return text;
}

/* Answers 200 with the JSON document text and frees it. */
static enum MHD_Result send_sampled(struct MHD_Connection *conn, char *text)
{
    enum MHD_Result r = send_text(conn, MHD_HTTP_OK, "application/json", text, strlen(text));
    free(text);
    return r;
}

static enum MHD_Result get_status(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    char *text = sampled_json(w, &w->status_json);
    if (!text)
        return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting, try again");
    return send_sampled(conn, text);
}

static enum MHD_Result get_health(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    char *text = sampled_json(w, &w->health_json);
    if (!text) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "checked_at", NULL);
        json_object_object_add(o, "checking", json_object_new_boolean(true));
        json_object_object_add(o, "destinations", json_object_new_array());
        return send_json(conn, MHD_HTTP_OK, o);
    }
    return send_sampled(conn, text);
}

static enum MHD_Result get_sessions(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    int64_t limit;
    if (!query_number(conn, "limit", WEB_LIST_DEFAULT, 1, WEB_LIST_MAX, &limit))
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "limit must be a number from 1 to %d",
                          WEB_LIST_MAX);
    struct db *db = NULL;
    struct error err = {0};
    int r = request_db_open(w, &db, &err);
    if (r == -ENOENT)
        return send_json(conn, MHD_HTTP_OK, json_object_new_array());
    if (r < 0)
        return send_db_error(conn, r, &err);
    struct db_session *list = NULL;
    size_t n = 0;
    r = status_sessions_list(db, (int)limit, &list, &n, &err);
    db_close(db);
    if (r < 0)
        return send_db_error(conn, r, &err);
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, status_session_json(w->cfg, &list[i]));
    free(list);
    return send_json(conn, MHD_HTTP_OK, a);
}

static json_object *copies_json(const struct config *cfg, struct db *db, int64_t file_id)
{
    struct db_copy *c = NULL;
    size_t n = 0;
    json_object *a = json_object_new_array();
    if (db_file_copies(db, file_id, &c, &n, NULL) < 0)
        return a;
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "destination", jsonout_string(c[i].dest));
        json_object_object_add(o, "state",
                               json_object_new_string(db_copy_state_to_string(c[i].state)));
        jsonout_add_path(o, "remote", c[i].remote[0] ? c[i].remote : NULL);
        json_object_object_add(o, "verified_at",
                               c[i].verified_at ? json_object_new_int64(c[i].verified_at) : NULL);
        json_object_object_add(o, "error", jsonout_error(cfg, c[i].error));
        json_object_array_add(a, o);
    }
    free(c);
    return a;
}

static enum MHD_Result get_session(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    int64_t offset, limit;
    if (!query_number(conn, "offset", 0, 0, INT64_C(1) << 40, &offset) ||
        !query_number(conn, "limit", WEB_FILES_PAGE, 1, WEB_LIST_MAX, &limit))
        return send_error(conn, MHD_HTTP_BAD_REQUEST,
                          "offset must be 0 or more and limit a number from 1 to %d", WEB_LIST_MAX);
    struct db *db = NULL;
    struct error err = {0};
    int r = request_db_open(w, &db, &err);
    if (r < 0)
        return send_db_error(conn, r, &err);
    struct db_session s;
    struct db_session_file *files = NULL;
    struct db_dest_stats *ds = NULL;
    size_t n = 0, n_ds = 0;
    int64_t total = 0;
    r = status_session_get(db, id, &s, &err);
    if (r == 0)
        r = db_session_files(db, id, offset, (int)limit, &files, &n, &total, &err);
    if (r == 0)
        r = db_dest_stats(db, id, &ds, &n_ds, &err);
    if (r < 0) {
        db_close(db);
        free(files);
        return send_db_error(conn, r, &err);
    }
    json_object *o = status_session_json(w->cfg, &s);
    add_scan_problems(o, w->cfg, db, &s, DB_PROBLEMS_MAX);
    json_object_object_add(o, "destinations", status_dests_json(w->cfg, ds, n_ds));
    json_object *fa = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *f = file_json(w->cfg, &files[i].file);
        json_object_object_add(f, "outcome",
                               json_object_new_string(db_outcome_to_string(files[i].outcome)));
        json_object_object_add(f, "copies", copies_json(w->cfg, db, files[i].file.id));
        json_object_array_add(fa, f);
    }
    db_close(db);
    free(files);
    free(ds);
    json_object *page = json_object_new_object();
    json_object_object_add(page, "offset", json_object_new_int64(offset));
    json_object_object_add(page, "limit", json_object_new_int64(limit));
    json_object_object_add(page, "total", json_object_new_int64(total));
    json_object_object_add(o, "files_page", page);
    json_object_object_add(o, "files", fa);
    return send_json(conn, MHD_HTTP_OK, o);
}

/* The last verification run and the open problems, a page at a time (docs/api.md,
 * "Verification"). No database yet: never verified. */
static enum MHD_Result get_verification(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    int64_t offset, limit;
    if (!query_number(conn, "offset", 0, 0, INT64_C(1) << 40, &offset) ||
        !query_number(conn, "limit", STATUS_VERIFY_LIST_DEFAULT, 1, DB_VERIFY_OPEN_MAX, &limit))
        return send_error(conn, MHD_HTTP_BAD_REQUEST,
                          "offset must be 0 or more and limit a number from 1 to %d",
                          DB_VERIFY_OPEN_MAX);
    struct db *db = NULL;
    struct error err = {0};
    struct status_verification *v = calloc(1, sizeof(*v)); /* ~11 KB: not on this stack */
    struct db_verify_open *open = NULL;
    size_t n = 0;
    int64_t total = 0;
    if (!v)
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    int r = request_db_open(w, &db, &err);
    if (r == 0) {
        r = status_verification_get(db, v, &err);
        if (r == 0)
            r = db_verify_open_list(db, offset, (int)limit, &open, &n, &total, &err);
        db_close(db);
    }
    if (r < 0 && r != -ENOENT) {
        free(v);
        return send_db_error(conn, r, &err);
    }
    json_object *o = status_verification_json(v);
    free(v);
    /* the page's own count, read with it */
    json_object_object_add(o, "problems_total", json_object_new_int64(total));
    json_object *page = json_object_new_object();
    json_object_object_add(page, "offset", json_object_new_int64(offset));
    json_object_object_add(page, "limit", json_object_new_int64(limit));
    json_object_object_add(page, "total", json_object_new_int64(total));
    json_object_object_add(o, "problems_page", page);
    json_object_object_add(o, "problems", status_verify_problems_json(w->cfg, open, n));
    free(open);
    return send_json(conn, MHD_HTTP_OK, o);
}

/* The report of session id (report.h), written to an unlinked temporary file and sent from it,
 * so memory stays bounded whatever the number of files. */
static enum MHD_Result get_session_report(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    const char *name = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "format");
    enum report_format f = REPORT_JSON;
    if (name && report_format_from_string(name, &f) < 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "format is json, html or text");
    struct db *db = NULL;
    struct error err = {0};
    int r = request_db_open(w, &db, &err);
    if (r == -ENOENT)
        return send_error(conn, MHD_HTTP_NOT_FOUND, "no session %" PRId64, id);
    if (r < 0)
        return send_db_error(conn, r, &err);
    FILE *tmp = tmpfile();
    if (!tmp)
        r = error_set_errno(&err, -errno, "cannot create a temporary file for the report");
    if (r == 0)
        r = report_write(db, w->cfg, id, f, tmp, &err);
    db_close(db);
    off_t size = r == 0 ? ftello(tmp) : -1;
    int fd = size >= 0 ? dup(fileno(tmp)) : -1;
    if (tmp)
        fclose(tmp);
    if (r < 0)
        return send_db_error(conn, r, &err);
    struct MHD_Response *resp =
        fd >= 0 ? MHD_create_response_from_fd64((uint64_t)size, fd) : NULL; /* owns fd */
    if (!resp) {
        if (fd >= 0)
            close(fd);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot send the report");
    }
    char disposition[96];
    snprintf(disposition, sizeof(disposition),
             "inline; filename=\"snapsync-session-%" PRId64 ".%s\"", id,
             f == REPORT_TEXT ? "txt" : report_format_to_string(f));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disposition);
    return send_response_csp(conn, MHD_HTTP_OK, resp, report_content_type(f), REPORT_CSP);
}

static enum MHD_Result get_stats(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    struct db *db = NULL;
    struct error err = {0};
    struct db_stats st = {0};
    struct db_dest_stats *ds = NULL;
    size_t n_ds = 0;
    int r = request_db_open(w, &db, &err);
    if (r == 0) {
        r = db_stats_get(db, &st, &err);
        if (r == 0)
            r = db_dest_stats(db, 0, &ds, &n_ds, &err);
        db_close(db);
    }
    if (r < 0 && r != -ENOENT)
        return send_db_error(conn, r, &err);
    json_object *o = status_totals_json(&st);
    json_object_object_add(o, "destinations", status_dests_json(w->cfg, ds, n_ds));
    free(ds);
    return send_json(conn, MHD_HTTP_OK, o);
}

static enum MHD_Result get_files(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    const char *status = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "status");
    int64_t limit;
    if (!status || strcmp(status, "failed") != 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "status=failed is the list offered");
    if (!query_number(conn, "limit", 100, 1, WEB_LIST_MAX, &limit))
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "limit must be a number from 1 to %d",
                          WEB_LIST_MAX);
    struct db *db = NULL;
    struct error err = {0};
    int r = request_db_open(w, &db, &err);
    if (r == -ENOENT)
        return send_json(conn, MHD_HTTP_OK, json_object_new_array());
    if (r < 0)
        return send_db_error(conn, r, &err);
    struct db_file *files = NULL;
    size_t n = 0;
    r = db_files_failed(db, (int)limit, &files, &n, &err);
    if (r < 0) {
        db_close(db);
        return send_db_error(conn, r, &err);
    }
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *f = file_json(w->cfg, &files[i]);
        json_object_object_add(f, "copies", copies_json(w->cfg, db, files[i].id));
        json_object_array_add(a, f);
    }
    db_close(db);
    free(files);
    return send_json(conn, MHD_HTTP_OK, a);
}

/* ---- server-sent events ---- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct stream *s = cls;
    struct web *w = s->w;

    if (s->off == s->len) {
        free(s->pending);
        s->pending = NULL;
        s->len = s->off = 0;
        pthread_mutex_lock(&w->lock);
        /* one thread per connection: this stream's thread may wait here */
        while (!w->stopping && s->version == w->status_version &&
               mono_now() - s->last_sent < WEB_KEEPALIVE_S) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&w->changed, &w->lock, &ts);
        }
        if (w->stopping) {
            pthread_mutex_unlock(&w->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        char *text = NULL;
        if (s->version != w->status_version && w->status_json) {
            size_t n = strlen(w->status_json) + 32;
            text = malloc(n);
            if (text)
                s->len = (size_t)snprintf(text, n, "event: state\ndata: %s\n\n", w->status_json);
            s->version = w->status_version;
        } else {
            text = strdup(": keepalive\n\n");
            s->len = text ? strlen(text) : 0;
        }
        pthread_mutex_unlock(&w->lock);
        if (!text)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        s->pending = text;
        s->last_sent = mono_now();
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->pending + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *s = cls;
    pthread_mutex_lock(&s->w->lock);
    s->w->streams--;
    pthread_mutex_unlock(&s->w->lock);
    free(s->pending);
    free(s);
}

static enum MHD_Result get_events(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    pthread_mutex_lock(&w->lock);
    bool full = w->streams >= WEB_STREAMS_MAX;
    if (!full)
        w->streams++;
    pthread_mutex_unlock(&w->lock);
    if (full)
        return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "too many event streams");
    struct stream *s = calloc(1, sizeof(*s));
    if (s) {
        s->w = w;
        /* the first call sends the current state at once, then a retry hint rides along */
        s->pending = strdup("retry: 5000\n\n");
        s->len = s->pending ? strlen(s->pending) : 0;
        s->last_sent = mono_now();
    }
    struct MHD_Response *resp = s ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                      stream_read, s, stream_free)
                                  : NULL;
    if (!resp) {
        if (s)
            stream_free(s);
        else {
            pthread_mutex_lock(&w->lock);
            w->streams--;
            pthread_mutex_unlock(&w->lock);
        }
        return MHD_NO;
    }
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return send_response(conn, MHD_HTTP_OK, resp, "text/event-stream");
}

/* ---- actions ---- */

static enum MHD_Result post_retry(struct web *w, struct MHD_Connection *conn, bool session,
                                  int64_t id)
{
    struct db *ro = NULL, *db = NULL;
    struct error err = {0};
    /* look first through a read-only connection: a missing database must stay missing */
    int r = request_db_open(w, &ro, &err);
    if (r < 0)
        return send_db_error(conn, r == -ENOENT ? -ENOENT : r, &err);
    db_close(ro);
    r = db_open(w->cfg->service.database_path, DB_READ_WRITE, &db, &err);
    int64_t count = 0;
    if (r == 0)
        r = session ? db_session_retry(db, id, &count, &err) : db_file_retry(db, id, &count, &err);
    db_close(db);
    if (r < 0)
        return send_db_error(conn, r, &err);
    log_info("web: %s %" PRId64 ": %" PRId64 " file(s) marked for retry",
             session ? "session" : "file", id, count);
    if (count > 0 && w->actions.retried)
        w->actions.retried(w->actions.userdata);
    pthread_mutex_lock(&w->lock);
    w->wake_sampler = true;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(true));
    json_object_object_add(o, "marked", json_object_new_int64(count));
    json_object_object_add(o, "service", json_object_new_boolean(w->actions.retried != NULL));
    return send_json(conn, MHD_HTTP_OK, o);
}

static enum MHD_Result post_eject(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    (void)id;
    if (!w->actions.eject)
        return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "no SnapSync service is running here: ejecting needs 'snapsync start'");
    struct error err = {0};
    int r = w->actions.eject(w->actions.userdata, &err);
    if (r < 0)
        return send_error(conn, r == -ENOENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_CONFLICT, "%s",
                          err.msg[0] ? err.msg : "cannot eject");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(true));
    return send_json(conn, MHD_HTTP_OK, o);
}

/* ---- routing ---- */

static enum MHD_Result post_retry_file(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    return post_retry(w, conn, false, id);
}

static enum MHD_Result post_retry_session(struct web *w, struct MHD_Connection *conn, int64_t id)
{
    return post_retry(w, conn, true, id);
}

/* One API endpoint (docs/api.md). The dashboard's own files are the other table, assets[]. */
struct route {
    const char *method; /* GET (which answers HEAD too, unless get_only) or POST */
    const char *path;   /* the whole path, or what comes before the id when suffix is set */
    const char *suffix; /* NULL: path is exact; else the path is <path><id><suffix> */
    enum MHD_Result (*handler)(struct web *w, struct MHD_Connection *conn, int64_t id);
    bool needs_token; /* an action: Host and Origin checked, the token when one is set, a body
                       * that is empty or a JSON object (action_refused, token_ok, body_ok) */
    bool get_only;    /* no HEAD (an event stream) */
};

static const struct route routes[] = {
    {MHD_HTTP_METHOD_GET, "/api/status", NULL, get_status, false, false},
    {MHD_HTTP_METHOD_GET, "/api/health", NULL, get_health, false, false},
    {MHD_HTTP_METHOD_GET, "/api/sessions", NULL, get_sessions, false, false},
    {MHD_HTTP_METHOD_GET, "/api/sessions/", "", get_session, false, false},
    {MHD_HTTP_METHOD_GET, "/api/sessions/", "/report", get_session_report, false, false},
    {MHD_HTTP_METHOD_GET, "/api/stats", NULL, get_stats, false, false},
    {MHD_HTTP_METHOD_GET, "/api/files", NULL, get_files, false, false},
    {MHD_HTTP_METHOD_GET, "/api/verification", NULL, get_verification, false, false},
    {MHD_HTTP_METHOD_GET, "/api/events", NULL, get_events, false, true},
    {MHD_HTTP_METHOD_POST, "/api/files/", "/retry", post_retry_file, true, false},
    {MHD_HTTP_METHOD_POST, "/api/sessions/", "/retry", post_retry_session, true, false},
    {MHD_HTTP_METHOD_POST, "/api/cards/eject", NULL, post_eject, true, false},
};

/* The route of url (and its id, 0 when it has none), or NULL. */
static const struct route *route_find(const char *url, int64_t *id)
{
    *id = 0;
    for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
        const struct route *rt = &routes[i];
        if (rt->suffix ? match_id(url, rt->path, rt->suffix, id) : strcmp(url, rt->path) == 0)
            return rt;
    }
    return NULL;
}

static const struct asset *asset_find(const char *url)
{
    for (size_t i = 0; i < ARRAY_SIZE(assets); i++)
        if (strcmp(url, assets[i].path) == 0)
            return &assets[i];
    return NULL;
}

/* The answer to a method a known path does not take (rt NULL: one of the page's files). */
static enum MHD_Result not_allowed(struct MHD_Connection *conn, const struct route *rt)
{
    if (rt && strcmp(rt->method, MHD_HTTP_METHOD_POST) == 0)
        return send_method_not_allowed(conn, "POST");
    return send_method_not_allowed(conn, rt && rt->get_only ? "GET" : "GET, HEAD");
}

/* Anything but GET, HEAD and POST, or a POST to a path that takes none: 405 or 404. */
static enum MHD_Result route_other(struct MHD_Connection *conn, const char *url)
{
    int64_t id;
    const struct route *rt = route_find(url, &id);
    if (rt || asset_find(url))
        return not_allowed(conn, rt);
    return send_error(conn, MHD_HTTP_NOT_FOUND, "not found");
}

static enum MHD_Result route_get(struct web *w, struct MHD_Connection *conn, const char *url,
                                 bool head)
{
    const struct asset *a = asset_find(url);
    if (a) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(*a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        return send_response(conn, MHD_HTTP_OK, resp, a->type);
    }
    int64_t id;
    const struct route *rt = route_find(url, &id);
    if (!rt)
        return send_error(conn, MHD_HTTP_NOT_FOUND, "not found");
    if (strcmp(rt->method, MHD_HTTP_METHOD_GET) != 0 || (head && rt->get_only))
        return not_allowed(conn, rt);
    return rt->handler(w, conn, id);
}

/* The action route of url, or NULL when url takes no POST. */
static const struct route *action_find(const char *url, int64_t *id)
{
    const struct route *rt = route_find(url, id);
    return rt && strcmp(rt->method, MHD_HTTP_METHOD_POST) == 0 ? rt : NULL;
}

static enum MHD_Result route_post(struct web *w, struct MHD_Connection *conn, const char *url,
                                  const struct request *rq)
{
    int64_t id;
    const struct route *rt = action_find(url, &id);
    if (!rt)
        return route_other(conn, url);
    if (rt->needs_token) {
        const char *why = NULL;
        unsigned refused = action_refused(w, conn, &why);
        if (refused)
            return send_error(conn, refused, "%s", why);
        if (!token_ok(w, conn)) {
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                strlen("{\"error\":\"this action needs the access token\"}"),
                (void *)"{\"error\":\"this action needs the access token\"}",
                MHD_RESPMEM_PERSISTENT);
            if (resp)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
            return send_response(conn, MHD_HTTP_UNAUTHORIZED, resp, "application/json");
        }
    }
    if (rq->too_big)
        return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the body is limited to %d bytes",
                          WEB_BODY_MAX);
    if (!body_ok(rq))
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "the body must be empty or a JSON object");
    return rt->handler(w, conn, id);
}

/* ---- connection guard ---- */

struct framing {
    const char *length; /* the first Content-Length */
    bool lengths_differ;
    bool chunked;
};

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->length && strcmp(f->length, value ? value : "") != 0)
            f->lengths_differ = true;
        if (!f->length)
            f->length = value ? value : "";
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->chunked = true;
    }
    return MHD_YES;
}

/* A body whose length two headers tell differently is how requests get smuggled past a proxy:
 * two Content-Length values, or Content-Length next to Transfer-Encoding, are refused. */
static bool framing_ambiguous(struct MHD_Connection *conn)
{
    struct framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_header, &f);
    return f.lengths_differ || (f.length && f.chunked);
}

/* The current request of conn was answered (its head no longer runs against the deadline), or a
 * new one begins on a kept-alive connection (its clock starts now). */
static void conn_mark(struct web *w, struct MHD_Connection *conn, bool answered)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_slot *slot = ci ? ci->socket_context : NULL;
    if (!slot)
        return;
    pthread_mutex_lock(&w->guard_lock);
    slot->answered = answered;
    if (!answered)
        slot->since = mono_now();
    pthread_mutex_unlock(&w->guard_lock);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct web *w = cls;
    pthread_mutex_lock(&w->guard_lock);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        for (size_t i = 0; ci && i < WEB_CONNECTIONS_MAX; i++)
            if (!w->conns[i].used) {
                w->conns[i] =
                    (struct conn_slot){.used = true, .fd = ci->connect_fd, .since = mono_now()};
                *socket_context = &w->conns[i];
                break;
            }
    } else if (*socket_context) {
        /* libmicrohttpd closes the socket after this, so the guard never touches a reused fd */
        ((struct conn_slot *)*socket_context)->used = false;
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&w->guard_lock);
}

/* Once a second: a connection whose request has not been answered WEB_HEAD_DEADLINE_S after it
 * began is shut down, however steadily it trickles bytes (libmicrohttpd's own timeout counts only
 * silence). Its connection thread then sees the end of the stream and closes it. */
static void *guard_main(void *arg)
{
    struct web *w = arg;
    pthread_mutex_lock(&w->guard_lock);
    while (!w->guard_stopping) {
        double now = mono_now();
        for (size_t i = 0; i < WEB_CONNECTIONS_MAX; i++) {
            struct conn_slot *c = &w->conns[i];
            if (c->used && !c->answered && now - c->since > WEB_HEAD_DEADLINE_S) {
                shutdown(c->fd, SHUT_RDWR);
                c->answered = true; /* once */
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        while (!w->guard_stopping &&
               pthread_cond_timedwait(&w->guard_wake, &w->guard_lock, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&w->guard_lock);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct web *w = cls;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;

    if (!post) {
        if (!*con_cls) {
            /* the first call carries only the headers; a body is ignored, and answered now */
            *con_cls = (void *)1;
            conn_mark(w, conn, true);
            if (framing_ambiguous(conn))
                return send_error(conn, MHD_HTTP_BAD_REQUEST, "ambiguous body length");
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if ((cl && strcmp(cl, "0") != 0) ||
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                            MHD_HTTP_HEADER_TRANSFER_ENCODING))
                return send_error(conn, MHD_HTTP_BAD_REQUEST, "this request takes no body");
            if (get || head)
                return route_get(w, conn, url, head);
            return route_other(conn, url);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    struct request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        if (framing_ambiguous(conn)) {
            conn_mark(w, conn, true);
            return send_error(conn, MHD_HTTP_BAD_REQUEST, "ambiguous body length");
        }
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t n = 0;
        if (cl && strcmp(cl, "0") != 0 && (!parse_id(cl, strlen(cl), &n) || n > WEB_BODY_MAX))
            rq->too_big = true;
        int64_t id;
        if (!action_find(url, &id))
            return route_other(conn, url);
        if (rq->too_big) /* answered before reading the body; the connection then closes */
            return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the body is limited to %d bytes",
                              WEB_BODY_MAX);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (rq->len + n > WEB_BODY_MAX)
            rq->too_big = true;
        else {
            memcpy(rq->body + rq->len, upload_data, n);
            rq->len += n;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    conn_mark(w, conn, true);
    return route_post(w, conn, url, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    conn_mark(cls, conn, false); /* the next request on this connection starts its clock */
    if (*con_cls && *con_cls != (void *)1)
        free(*con_cls);
    *con_cls = NULL;
}

/* No percent-decoding: every route and query value is plain ASCII, so "%2e%2e" or "%00" stay as
 * sent and match nothing (404) instead of turning into dots or cutting the path short. */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

/* libmicrohttpd's own messages; the format comes from the library. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_library("web", fmt, ap);
}

/* ---- life cycle ---- */

int web_new(const struct config *cfg, int port_override, const struct web_actions *actions,
            struct web **ret, struct error *err)
{
    if (!cfg || !ret || port_override > 65535)
        return error_set(err, -EINVAL, "invalid web server settings");
    struct web *w = calloc(1, sizeof(*w));
    if (!w)
        return error_set_errno(err, -ENOMEM, "cannot start the web server");
    w->cfg = cfg;
    w->port = port_override >= 0 ? port_override : cfg->service.web_ui_port;
    const char *bind = cfg->service.web_ui_bind ? cfg->service.web_ui_bind : "0.0.0.0";
    if (strcmp(bind, "localhost") == 0)
        bind = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&w->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&w->addr;
    if (inet_pton(AF_INET, bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)w->port);
        snprintf(w->shown_addr, sizeof(w->shown_addr), "%s", bind);
    } else if (inet_pton(AF_INET6, bind, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)w->port);
        snprintf(w->shown_addr, sizeof(w->shown_addr), "[%s]", bind);
    } else {
        free(w);
        return error_set(err, -EINVAL,
                         "service.web_ui_bind: '%.64s' is not an IPv4 or IPv6 address", bind);
    }
    w->token = strdup(cfg->service.web_ui_token ? cfg->service.web_ui_token : "");
    if (!w->token) {
        free(w);
        return error_set_errno(err, -ENOMEM, "cannot start the web server");
    }
    if (actions) {
        w->actions = *actions;
        w->has_actions = true;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&w->changed, &ca);
    pthread_cond_init(&w->guard_wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->guard_lock, NULL);
    *ret = w;
    return 0;
}

int web_start(struct web *w, struct error *err)
{
    if (!w || w->daemon)
        return error_set(err, -EINVAL, "the web server is already running");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (w->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    w->daemon = MHD_start_daemon(
        flags, (uint16_t)w->port, NULL, NULL, on_request, w, MHD_OPTION_SOCK_ADDR, &w->addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)WEB_CONNECTIONS_MAX,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)WEB_PER_IP_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)WEB_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)WEB_HEADER_MEMORY,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)WEB_STACK_SIZE, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, w, MHD_OPTION_NOTIFY_CONNECTION, on_connection, w, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, w, MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, w, MHD_OPTION_STRICT_FOR_CLIENT,
        1, MHD_OPTION_END);
    if (!w->daemon) {
        int e = errno ? errno : EIO;
        return error_set_errno(err, e == EADDRINUSE || e == EACCES ? -e : -EIO,
                               "cannot listen on %s:%d", w->shown_addr, w->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        w->port = info->port;

    /* the threads in order; when one cannot start, those started are told to stop and joined */
    int r = pthread_create(&w->sampler, NULL, sampler_main, w);
    int started = r == 0;
    if (r == 0 && (r = pthread_create(&w->health, NULL, health_main, w)) == 0)
        started++;
    if (r == 0 && (r = pthread_create(&w->guard, NULL, guard_main, w)) == 0)
        started++;
    if (r != 0 && started > 0) {
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->sampler, NULL);
        if (started > 1)
            pthread_join(w->health, NULL);
    }
    if (r != 0) {
        MHD_stop_daemon(w->daemon);
        w->daemon = NULL;
        return error_set_errno(err, -r, "cannot start the web server's threads");
    }
    w->threads_started = true;
    log_info("web dashboard on http://%s:%d/", w->shown_addr, w->port);
    return 0;
}

int web_port(const struct web *w)
{
    return w && w->daemon ? w->port : 0;
}

void web_stop(struct web *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    if (w->daemon) {
        /* event streams see stopping and end, so every connection thread returns */
        MHD_stop_daemon(w->daemon);
        w->daemon = NULL;
    }
    if (w->threads_started) {
        pthread_mutex_lock(&w->guard_lock);
        w->guard_stopping = true;
        pthread_cond_broadcast(&w->guard_wake);
        pthread_mutex_unlock(&w->guard_lock);
        pthread_join(w->sampler, NULL);
        pthread_join(w->health, NULL);
        pthread_join(w->guard, NULL);
        w->threads_started = false;
    }
}

void web_free(struct web *w)
{
    if (!w)
        return;
    web_stop(w);
    free(w->status_json);
    free(w->health_json);
    free(w->token);
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->guard_wake);
    pthread_mutex_destroy(&w->guard_lock);
    free(w);
}
