/* SPDX-License-Identifier: MIT */
/*
 * Destination health.
 *
 * One mutex guards the per-destination records; a condition variable on the monotonic clock (a
 * Pi sets its wall clock by NTP after boot) wakes a destination's prober when the destination
 * goes down and when its next probe is due, and wakes health_start when a first probe returns.
 * Probers call ops->probe without the lock, so reports from the workers never wait for a probe
 * that hangs until a timeout.
 */
#include "health.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "monotime.h"

enum dest_state {
    ST_STARTING, /* the first probe has not returned yet */
    ST_UP,
    ST_DOWN,
};

struct health;

struct dest_health {
    struct health *h;
    size_t index;
    const char *label;
    enum dest_state state;
    bool start;   /* health_start asked for the first probe */
    bool settled; /* the first probe returned */
    bool thread_started;
    pthread_t thread;
    int error;
    char reason[ERROR_MSG_MAX];
    unsigned streak;     /* failed copies in a row */
    int64_t streak_file; /* the file that failed last */
    unsigned downs;
    unsigned probes; /* failed probes since it went down */
    bool probing;    /* ops->probe is running */
    double down_at;
    double next_probe;
};

struct health {
    size_t n;
    int64_t session; /* the creator's log session, for the probers' lines */
    const struct health_ops *ops;
    void *userdata;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool quit;
    struct dest_health d[HEALTH_DEST_MAX];
};

static double probe_interval(const struct dest_health *d)
{
    double s = HEALTH_PROBE_FIRST_S;
    /* a destination that keeps going down is asked less often, as one that does not answer */
    for (unsigned i = 1; i < d->probes + d->downs && s < HEALTH_PROBE_MAX_S; i++)
        s *= 2;
    return s < HEALTH_PROBE_MAX_S ? s : HEALTH_PROBE_MAX_S;
}

bool health_error_is_dest_wide(int r)
{
    switch (-r) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENOTCONN:
    case EPIPE:
    case EACCES:
    case EPERM:
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case ENODEV:
    case ENXIO:
    case ESTALE:
    case ENOMEDIUM:
    case EKEYREJECTED:
    case EKEYEXPIRED:
        return true;
    default:
        return false;
    }
}

/* Errors that, repeated, tell of a failing server or disk (HTTP 5xx, a bad reply, a copy that does
 * not verify). */
static bool streak_counts(int r)
{
    return r == -EIO || r == -EAGAIN || r == -EPROTO || r == -EBADMSG || r == -EREMOTEIO;
}

/* With h->lock held. */
static void mark_down(struct health *h, struct dest_health *d, int r, const char *msg)
{
    if (d->state == ST_DOWN)
        return;
    d->state = ST_DOWN;
    d->error = r;
    snprintf(d->reason, sizeof(d->reason), "%s", msg && msg[0] ? msg : strerror(-r));
    d->downs++;
    d->probes = 0;
    d->streak = 0;
    d->down_at = monotime_now();
    d->next_probe = d->down_at + probe_interval(d);
    log_error("%s: destination down: %s; its files wait and it is asked again in %.0f s", d->label,
              d->reason, d->next_probe - d->down_at);
    pthread_cond_broadcast(&h->cond);
}

/* With h->lock held: the probe of d returned r. */
static void probe_done(struct health *h, struct dest_health *d, int r, const struct error *err)
{
    bool first = !d->settled;
    d->settled = true;
    if (r == 0) {
        bool was_down = d->state == ST_DOWN;
        double was = monotime_now() - d->down_at;
        d->state = ST_UP;
        d->error = 0;
        d->reason[0] = '\0';
        d->streak = 0;
        if (was_down) {
            log_info("%s: destination back after %.0f s; its waiting files are queued", d->label,
                     was);
            if (h->ops->up) {
                pthread_mutex_unlock(&h->lock);
                h->ops->up(d->index, h->userdata);
                pthread_mutex_lock(&h->lock);
            }
        }
    } else if (first && d->state == ST_STARTING) {
        mark_down(h, d, r, err->msg);
    } else {
        d->probes++;
        d->error = r;
        if (err->msg[0])
            snprintf(d->reason, sizeof(d->reason), "%s", err->msg);
        d->next_probe = monotime_now() + probe_interval(d);
        log_debug("%s: still down: %s; next try in %.0f s", d->label, d->reason,
                  d->next_probe - monotime_now());
    }
    pthread_cond_broadcast(&h->cond);
}

static void *prober_main(void *arg)
{
    struct dest_health *d = arg;
    struct health *h = d->h;
    log_set_session(h->session);
    pthread_mutex_lock(&h->lock);
    while (!h->quit) {
        bool due = d->settled ? d->state == ST_DOWN && d->next_probe <= monotime_now() : d->start;
        if (!due) {
            if (d->settled && d->state == ST_DOWN) {
                struct timespec ts = monotime_timespec(d->next_probe);
                pthread_cond_timedwait(&h->cond, &h->lock, &ts);
            } else {
                pthread_cond_wait(&h->cond, &h->lock);
            }
            continue;
        }
        d->probing = true;
        pthread_mutex_unlock(&h->lock);
        struct error err = {0};
        int r = h->ops->probe(d->index, h->userdata, &err);
        pthread_mutex_lock(&h->lock);
        d->probing = false;
        probe_done(h, d, r, &err);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int health_new(size_t n, const char *const *labels, const struct health_ops *ops, void *userdata,
               struct health **ret, struct error *err)
{
    if (n == 0 || n > HEALTH_DEST_MAX || !ops || !ops->probe)
        return error_set(err, -EINVAL, "bad destination health arguments");
    struct health *h = calloc(1, sizeof(*h));
    if (!h)
        return error_set(err, -ENOMEM, "out of memory");
    h->n = n;
    h->session = log_get_session();
    h->ops = ops;
    h->userdata = userdata;
    pthread_mutex_init(&h->lock, NULL);
    monotime_cond_init(&h->cond);
    for (size_t i = 0; i < n; i++) {
        struct dest_health *d = &h->d[i];
        d->h = h;
        d->index = i;
        d->label = labels[i];
        d->state = ST_STARTING;
        int pr = pthread_create(&d->thread, NULL, prober_main, d);
        if (pr != 0) {
            health_free(h);
            return error_set_errno(err, -pr, "cannot start a destination prober");
        }
        d->thread_started = true;
    }
    *ret = h;
    return 0;
}

void health_start(struct health *h, double grace)
{
    double until = monotime_now() + grace;
    struct timespec ts = monotime_timespec(until);
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n; i++)
        h->d[i].start = true;
    pthread_cond_broadcast(&h->cond);
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < h->n; i++)
            all = all && h->d[i].settled;
        if (all || pthread_cond_timedwait(&h->cond, &h->lock, &ts) != 0)
            break;
    }
    for (size_t i = 0; i < h->n; i++) {
        if (h->d[i].state != ST_STARTING)
            continue;
        char msg[128];
        snprintf(msg, sizeof(msg), "no answer within %g s", grace);
        mark_down(h, &h->d[i], -ETIMEDOUT, msg);
    }
    pthread_mutex_unlock(&h->lock);
}

void health_free(struct health *h)
{
    if (!h)
        return;
    bool probing[HEALTH_DEST_MAX] = {false};
    pthread_mutex_lock(&h->lock);
    h->quit = true;
    pthread_cond_broadcast(&h->cond);
    for (size_t i = 0; i < h->n; i++)
        probing[i] = h->d[i].probing;
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < h->n; i++)
        if (probing[i] && h->ops->interrupt)
            h->ops->interrupt(i, h->userdata);
    for (size_t i = 0; i < h->n; i++)
        if (h->d[i].thread_started)
            pthread_join(h->d[i].thread, NULL);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

bool health_down_but_answering(struct health *h, size_t i)
{
    pthread_mutex_lock(&h->lock);
    bool down = h->d[i].state != ST_UP;
    int e = -h->d[i].error;
    pthread_mutex_unlock(&h->lock);
    return down && (e == ENOSPC || e == EDQUOT || e == EROFS || e == EACCES || e == EPERM ||
                    e == ENOENT || e == ENOTDIR || e == EKEYREJECTED || e == EKEYEXPIRED);
}

bool health_is_up(struct health *h, size_t i)
{
    pthread_mutex_lock(&h->lock);
    bool up = i < h->n && h->d[i].state == ST_UP;
    pthread_mutex_unlock(&h->lock);
    return up;
}

bool health_any_down(struct health *h)
{
    bool any = false;
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n; i++)
        any = any || h->d[i].state != ST_UP;
    pthread_mutex_unlock(&h->lock);
    return any;
}

void health_get(struct health *h, size_t i, struct health_state *ret)
{
    memset(ret, 0, sizeof(*ret));
    pthread_mutex_lock(&h->lock);
    if (i < h->n) {
        const struct dest_health *d = &h->d[i];
        double t = monotime_now();
        ret->up = d->state == ST_UP;
        if (d->state == ST_DOWN) {
            ret->error = d->error;
            snprintf(ret->reason, sizeof(ret->reason), "%s", d->reason);
            ret->down_for_s = t - d->down_at;
            ret->next_probe_in_s = d->next_probe > t ? d->next_probe - t : 0;
        } else if (d->state == ST_STARTING) {
            snprintf(ret->reason, sizeof(ret->reason), "being prepared");
        }
        ret->downs = d->downs;
    }
    pthread_mutex_unlock(&h->lock);
}

bool health_report_failure(struct health *h, size_t i, int64_t file, int r, const struct error *err)
{
    if (i >= h->n)
        return false;
    pthread_mutex_lock(&h->lock);
    struct dest_health *d = &h->d[i];
    if (d->state == ST_UP && r != -ECANCELED) {
        if (d->streak == 0 || d->streak_file != file)
            d->streak++;
        d->streak_file = file;
        if (health_error_is_dest_wide(r)) {
            mark_down(h, d, r, err ? err->msg : NULL);
        } else if (!streak_counts(r)) {
            d->streak = 0; /* a problem of that file (its name, its size), not of the destination */
        } else if (d->streak >= HEALTH_STREAK) {
            char msg[ERROR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%u copies failed in a row, the last: %.400s", d->streak,
                     err && err->msg[0] ? err->msg : strerror(-r));
            mark_down(h, d, r, msg);
        }
    }
    bool down = d->state != ST_UP;
    pthread_mutex_unlock(&h->lock);
    return down;
}

void health_report_success(struct health *h, size_t i)
{
    if (i >= h->n)
        return;
    pthread_mutex_lock(&h->lock);
    h->d[i].streak = 0;
    pthread_mutex_unlock(&h->lock);
}
