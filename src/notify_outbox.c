/* SPDX-License-Identifier: MIT */
/*
 * The outbox wired to the configuration and to backup sessions: see notify_outbox.h.
 */
#include "notify_outbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dest.h"
#include "log.h"
#include "notify_channel.h"
#include "notify_hook.h"
#include "notify_mail.h"

#define SESSION_FILES_PAGE 1000
#define SESSION_FILES_PAGES_MAX 100 /* failed files are looked for among this many pages */

static struct notify_outbox_channels *channels_new(const struct config *cfg, struct error *err);

static void skip(struct notify_outbox_channels *ret, const char *what, const char *why)
{
    if (ret->n_skipped++ == 0)
        snprintf(ret->skipped, sizeof(ret->skipped), "%s: %s", what, why);
}

static bool key_taken(const struct notify_outbox_channels *ret, const char *key)
{
    for (size_t i = 0; i < ret->n; i++)
        if (strcmp(ret->keys[i], key) == 0)
            return true;
    return false;
}

static void add_email(const struct config *cfg, struct notify_outbox_channels *ret)
{
    struct outbox_channel *ch = &ret->ch[ret->n];
    *ch = (struct outbox_channel){
        .kind = OUTBOX_EMAIL,
        .mail = notify_channel_mail_server(cfg),
        .from = cfg->notify.email.from,
        .to = (const char *const *)cfg->notify.email.to,
        .n_to = cfg->notify.email.n_to,
    };
    if (notify_mail_security_parse(cfg->notify.email.security, &ch->mail.security) < 0 ||
        outbox_channel_key(OUTBOX_EMAIL, NULL, ret->keys[ret->n], OUTBOX_KEY_MAX) < 0) {
        skip(ret, "email", "notify.email.security is not known");
        return;
    }
    ch->key = ret->keys[ret->n];
    ret->n++;
}

static void add_webhook(const struct config_webhook *w, size_t i,
                        struct notify_outbox_channels *ret)
{
    char what[32];
    snprintf(what, sizeof(what), "webhook %zu", i + 1);
    if (ret->n >= OUTBOX_CHANNELS_MAX) {
        skip(ret, what, "too many channels");
        return;
    }
    struct outbox_channel *ch = &ret->ch[ret->n];
    char *key = ret->keys[ret->n];
    *ch = (struct outbox_channel){
        .kind = OUTBOX_WEBHOOK,
        .hook =
            {
                .url = w->url,
                .token = w->token,
                .ca_file = w->tls_ca_file,
                .connect_timeout = NOTIFY_CHANNEL_CONNECT_TIMEOUT,
                .timeout = NOTIFY_CHANNEL_TIMEOUT,
            },
    };
    if (notify_hook_format_parse(w->format, &ch->hook.format) < 0) {
        skip(ret, what, "its format is not known");
        return;
    }
    if (outbox_channel_key(OUTBOX_WEBHOOK, w->url, key, OUTBOX_KEY_MAX) < 0) {
        skip(ret, what, "its URL cannot name a channel");
        return;
    }
    if (key_taken(ret, key)) {
        skip(ret, what,
             "the same URL as an earlier webhook (without user info and query): "
             "left out, it would get every message twice");
        return;
    }
    ch->key = key;
    ret->n++;
}

void notify_outbox_channels(const struct config *cfg, struct notify_outbox_channels *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (cfg->notify.email.enabled)
        add_email(cfg, ret);
    for (size_t i = 0; i < cfg->notify.n_webhooks; i++)
        add_webhook(&cfg->notify.webhooks[i], i, ret);
}

static int result_of(enum db_session_status st, enum notify_result *ret)
{
    switch (st) {
    case DB_SESSION_COMPLETED:
        *ret = NOTIFY_COMPLETED;
        return 0;
    case DB_SESSION_PARTIAL:
        *ret = NOTIFY_PARTIAL;
        return 0;
    case DB_SESSION_FAILED:
        *ret = NOTIFY_FAILED;
        return 0;
    case DB_SESSION_INTERRUPTED:
        *ret = NOTIFY_INTERRUPTED;
        return 0;
    case DB_SESSION_EMPTY:
        *ret = NOTIFY_EMPTY;
        return 0;
    default:
        return -EINVAL;
    }
}

/* Writes the human names of the n destinations ids[i] into names[i] (NOTIFY_LABEL_MAX bytes
 * each), creating cfg's destinations once: see notify_outbox_dest_name. */
static void dest_names(const struct config *cfg, const char *const *ids, size_t n,
                       char (*names)[NOTIFY_LABEL_MAX])
{
    struct dest **dests = NULL;
    size_t nd = 0;
    struct error err = {0};
    if (dest_create_all(cfg, &dests, &nd, &err) < 0)
        nd = 0;
    for (size_t k = 0; k < n; k++) {
        snprintf(names[k], NOTIFY_LABEL_MAX, "%s", ids[k] ? ids[k] : "");
        for (size_t i = 0; ids[k] && i < nd; i++) {
            if (strcmp(dest_id(dests[i]), ids[k]) != 0)
                continue;
            const char *sec = dest_section(dests[i]), *label = dest_label(dests[i]);
            size_t sl = strlen(sec);
            if (strncmp(label, sec, sl) == 0 && (label[sl] == ' ' || label[sl] == '\0'))
                snprintf(names[k], NOTIFY_LABEL_MAX, "%s", label);
            else
                snprintf(names[k], NOTIFY_LABEL_MAX, "%s: %s", sec, label);
            break;
        }
    }
    dest_free_all(dests, nd);
}

/* Each destination's state from the copies of the session's files. */
static int dests_of(const struct config *cfg, struct db *db, int64_t session_id,
                    struct notify_outbox_session *ret, struct error *err)
{
    struct db_dest_stats *st = NULL;
    size_t n = 0;
    int r = db_dest_stats(db, session_id, &st, &n, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && i < NOTIFY_DESTS_MAX; i++) {
        if (st[i].failed > 0)
            snprintf(ret->dest_states[i], sizeof(ret->dest_states[i]), "%" PRId64 " failed",
                     st[i].failed);
        else if (st[i].pending > 0)
            snprintf(ret->dest_states[i], sizeof(ret->dest_states[i]), "%" PRId64 " pending",
                     st[i].pending);
        else
            snprintf(ret->dest_states[i], sizeof(ret->dest_states[i]), "ok");
        ret->dests[i] =
            (struct notify_dest){.name = ret->dest_names[i], .state = ret->dest_states[i]};
        ret->s.n_dests++;
    }
    const char *ids[NOTIFY_DESTS_MAX];
    for (size_t i = 0; i < ret->s.n_dests; i++)
        ids[i] = st[i].dest;
    dest_names(cfg, ids, ret->s.n_dests, ret->dest_names);
    ret->s.dests = ret->dests;
    free(st);
    return 0;
}

/* The first NOTIFY_FAILED_LIST_MAX failed files of the session, in path order. */
static int failed_of(struct db *db, int64_t session_id, struct notify_outbox_session *ret,
                     struct error *err)
{
    size_t n = 0;
    for (int page = 0; page < SESSION_FILES_PAGES_MAX && n < NOTIFY_FAILED_LIST_MAX; page++) {
        struct db_session_file *f = NULL;
        size_t got = 0;
        int r = db_session_files(db, session_id, (int64_t)page * SESSION_FILES_PAGE,
                                 SESSION_FILES_PAGE, &f, &got, NULL, err);
        if (r < 0)
            return r;
        for (size_t i = 0; i < got && n < NOTIFY_FAILED_LIST_MAX; i++) {
            if (f[i].outcome != DB_OUTCOME_FAILED)
                continue;
            snprintf(ret->failed[n], sizeof(ret->failed[n]), "%s", f[i].file.rel_path);
            ret->failed_ptr[n] = ret->failed[n];
            n++;
        }
        free(f);
        if (got < SESSION_FILES_PAGE)
            break;
    }
    ret->s.failed_files = ret->failed_ptr;
    ret->s.n_failed_files = n;
    return 0;
}

int notify_outbox_session_from_report(const struct config *cfg, struct db *db,
                                      const struct engine_report *rep,
                                      struct notify_outbox_session *ret, struct error *err)
{
    enum notify_result result;
    if (rep->session_id <= 0 || result_of(rep->status, &result) < 0)
        return error_set(err, -EINVAL, "session %" PRId64 " has no result to notify",
                         rep->session_id);
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->card, sizeof(ret->card), "%s", rep->card_label);
    notify_channel_dashboard_url(cfg, ret->url, sizeof(ret->url));
    const struct db_totals *t = &rep->totals;
    ret->s = (struct notify_session){
        .card = ret->card,
        .result = result,
        .copied = (uint64_t)t->files_copied,
        .already = (uint64_t)t->files_skipped,
        .duplicates = (uint64_t)t->files_duplicate,
        .failed = (uint64_t)t->files_failed,
        .bytes = (uint64_t)t->bytes_copied,
        .duration = rep->duration_s,
        .safe_to_remove = engine_status_nothing_left(rep->status),
        .dashboard_url = ret->url,
    };
    int r = dests_of(cfg, db, rep->session_id, ret, err);
    if (r == 0)
        r = failed_of(db, rep->session_id, ret, err);
    if (r == 0 && ret->s.failed < ret->s.n_failed_files)
        ret->s.failed = ret->s.n_failed_files;
    return r;
}

int notify_outbox_queue(const struct config *cfg, struct db *db, struct notify_session *s,
                        int64_t session_id, int64_t now, bool *ret_queued, struct error *err)
{
    char url[512];
    int r = 0;
    if (ret_queued)
        *ret_queued = false;
    int ev = outbox_event_of_session(s);
    if (ev < 0)
        return error_set(err, -EINVAL, "a notification of no known event");
    if (notify_channel_count(cfg) == 0 ||
        !config_notify_event_wanted(cfg, outbox_event_name((enum outbox_event)ev)))
        return 0;
    struct notify_outbox_channels *chs = channels_new(cfg, err);
    if (!chs)
        return -ENOMEM;
    if (chs->n == 0)
        goto out;
    if (!s->dashboard_url || !s->dashboard_url[0]) {
        notify_channel_dashboard_url(cfg, url, sizeof(url));
        s->dashboard_url = url;
    }
    r = outbox_queue(db, s, (enum outbox_event)ev, session_id, chs->ch, chs->n, now, NULL, err);
    if (r == 0 && ret_queued)
        *ret_queued = true;
out:
    free(chs);
    return r;
}

int notify_outbox_queue_report(const struct config *cfg, struct db *db,
                               const struct engine_report *rep, int safe_to_remove, int64_t now,
                               bool *ret_queued, struct error *err)
{
    enum notify_result result;
    if (ret_queued)
        *ret_queued = false;
    if (result_of(rep->status, &result) < 0)
        return error_set(err, -EINVAL, "session %" PRId64 " has no result to notify",
                         rep->session_id);
    if (notify_channel_count(cfg) == 0 ||
        !config_notify_event_wanted(cfg, outbox_event_name(outbox_event_of(result))))
        return 0;
    struct notify_outbox_session *ns = malloc(sizeof(*ns));
    if (!ns)
        return error_set(err, -ENOMEM, "out of memory");
    int r = notify_outbox_session_from_report(cfg, db, rep, ns, err);
    if (r == 0) {
        if (safe_to_remove >= 0)
            ns->s.safe_to_remove = safe_to_remove != 0;
        r = notify_outbox_queue(cfg, db, &ns->s, rep->session_id, now, ret_queued, err);
    }
    free(ns);
    return r;
}

void notify_outbox_problem_add(struct notify_outbox_problems *ps, const struct verify_problem *p)
{
    const char *what = p->result == DB_VERIFY_MISSING   ? "missing"
                       : p->result == DB_VERIFY_CHANGED ? "changed"
                       : p->result == DB_VERIFY_EXTRA   ? "extra"
                                                        : NULL;
    if (!what || ps->n >= NOTIFY_FAILED_LIST_MAX)
        return;
    size_t i = ps->n++;
    snprintf(ps->dest[i], sizeof(ps->dest[i]), "%s", p->dest_label ? p->dest_label : "");
    snprintf(ps->id[i], sizeof(ps->id[i]), "%s", p->dest_id ? p->dest_id : "");
    snprintf(ps->path[i], sizeof(ps->path[i]), "%s",
             p->remote && p->remote[0] ? p->remote
             : p->rel_path             ? p->rel_path
                                       : "");
    ps->p[i] = (struct notify_problem){ps->dest[i], ps->path[i], what};
}

int notify_outbox_queue_verify(const struct config *cfg, struct db *db,
                               const struct verify_summary *sum, const char *scope,
                               const struct notify_outbox_problems *ps, int64_t now,
                               bool *ret_queued, struct error *err)
{
    const struct db_verify_counts *k = &sum->counts;
    if (ret_queued)
        *ret_queued = false;
    if (k->missing + k->changed + k->extra <= 0)
        return 0;
    struct notify_session s = {
        .kind = NOTIFY_KIND_VERIFY,
        .verify =
            {
                .scope = scope,
                .run_id = sum->run_id,
                .checked = (uint64_t)k->checked,
                .ok = (uint64_t)k->ok,
                .missing = (uint64_t)k->missing,
                .changed = (uint64_t)k->changed,
                .extra = (uint64_t)k->extra,
                .errors = (uint64_t)k->errors,
            },
    };
    /* the destinations named as the session messages name them (the label when cfg no longer
     * has the destination) */
    struct named {
        struct notify_problem p[NOTIFY_FAILED_LIST_MAX];
        char names[NOTIFY_FAILED_LIST_MAX][NOTIFY_LABEL_MAX];
    } *nm = ps && ps->n ? malloc(sizeof(*nm)) : NULL;
    if (nm) {
        const char *ids[NOTIFY_FAILED_LIST_MAX];
        for (size_t i = 0; i < ps->n; i++)
            ids[i] = ps->id[i];
        dest_names(cfg, ids, ps->n, nm->names);
        for (size_t i = 0; i < ps->n; i++) {
            nm->p[i] = ps->p[i];
            if (strcmp(nm->names[i], ps->id[i]) != 0)
                nm->p[i].dest = nm->names[i];
        }
        s.verify.problems = nm->p;
        s.verify.n_problems = ps->n;
    } else if (ps) {
        s.verify.problems = ps->p;
        s.verify.n_problems = ps->n;
    }
    int r = notify_outbox_queue(cfg, db, &s, 0, now, ret_queued, err);
    free(nm);
    return r;
}

void notify_outbox_dest_name(const struct config *cfg, const char *id, char *buf, size_t size)
{
    char name[1][NOTIFY_LABEL_MAX];
    if (size == 0)
        return;
    dest_names(cfg, &id, 1, name);
    snprintf(buf, size, "%s", name[0]);
}

static int send_logged(const struct outbox_channel *ch, const struct notify_msg *m,
                       struct error *err)
{
    int r = outbox_send(ch, m, err);
    if (r < 0)
        outbox_scrub(ch, err->msg); /* the log scrubs too, but with the running config's secrets */
    if (r == 0)
        log_info("notification '%s' sent on %s", m->subject, ch->key);
    else
        log_warning("notification '%s' not sent on %s: %s (%s)", m->subject, ch->key, err->msg,
                    notify_error_transient(r) ? "will be retried" : "given up");
    return r;
}

/* cfg's channels, newly allocated (free()); NULL when out of memory, err filled. */
static struct notify_outbox_channels *channels_new(const struct config *cfg, struct error *err)
{
    struct notify_outbox_channels *c = malloc(sizeof(*c));
    if (c)
        notify_outbox_channels(cfg, c);
    else
        error_set(err, -ENOMEM, "out of memory");
    return c;
}

int notify_outbox_deliver(const struct config *cfg, struct db *db, int64_t now,
                          const atomic_bool *cancel, struct outbox_result *ret, struct error *err)
{
    struct notify_outbox_channels *c = channels_new(cfg, err);
    int r = 0;
    if (!c)
        return -ENOMEM;
    for (size_t i = 0; i < c->n; i++)
        c->ch[i].send = send_logged;
    if (c->n > 0)
        r = outbox_deliver(db, c->ch, c->n, now, cancel, ret, err);
    else if (ret)
        *ret = (struct outbox_result){0};
    free(c);
    return r;
}

int notify_outbox_next_due(const struct config *cfg, struct db *db, int64_t *ret_at,
                           struct error *err)
{
    struct notify_outbox_channels *c = channels_new(cfg, err);
    int r = 0;
    if (!c)
        return -ENOMEM;
    if (c->n > 0)
        r = outbox_next_due(db, c->ch, c->n, ret_at, err);
    else
        *ret_at = 0;
    free(c);
    return r;
}

int notify_outbox_forget_others(const struct config *cfg, struct db *db, int64_t *ret_count,
                                struct error *err)
{
    struct notify_outbox_channels *c = channels_new(cfg, err);
    if (!c)
        return -ENOMEM;
    int r = outbox_forget_others(db, c->ch, c->n, ret_count, err);
    free(c);
    return r;
}
