/* SPDX-License-Identifier: MIT */
/*
 * Destination outages across sessions: see outage.h. A fixed table of records under one lock.
 */
#include "outage.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record {
    bool used;
    bool told; /* the down message was handed out */
    bool up;   /* seen up again after it was told */
    int64_t since, up_at;
    char id[OUTAGE_ID_MAX];
    char reason[OUTAGE_REASON_MAX];
};

struct outage {
    pthread_mutex_t lock;
    struct record r[OUTAGE_DESTS_MAX];
};

int outage_new(struct outage **ret, struct error *err)
{
    struct outage *o = calloc(1, sizeof(*o));
    if (!o)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&o->lock, NULL);
    *ret = o;
    return 0;
}

void outage_free(struct outage *o)
{
    if (!o)
        return;
    pthread_mutex_destroy(&o->lock);
    free(o);
}

static struct record *find(struct outage *o, const char *id)
{
    for (size_t i = 0; i < OUTAGE_DESTS_MAX; i++)
        if (o->r[i].used && strncmp(o->r[i].id, id, sizeof(o->r[i].id) - 1) == 0)
            return &o->r[i];
    return NULL;
}

void outage_observe(struct outage *o, const char *id, bool up, const char *reason, int64_t now)
{
    if (!o || !id || !id[0])
        return;
    pthread_mutex_lock(&o->lock);
    struct record *r = find(o, id);
    if (up) {
        if (r && r->told && !r->up) {
            r->up = true; /* the back-up note is due */
            r->up_at = now;
        } else if (r && !r->told) {
            memset(r, 0, sizeof(*r)); /* back before the threshold: no message */
        }
        goto out;
    }
    if (r && r->up) /* down again before its back-up note went: the same outage goes on */
        r->up = false;
    if (!r) {
        for (size_t i = 0; i < OUTAGE_DESTS_MAX && !r; i++)
            if (!o->r[i].used)
                r = &o->r[i];
        if (!r)
            goto out;
        *r = (struct record){.used = true, .since = now};
        snprintf(r->id, sizeof(r->id), "%s", id);
    }
    if (reason && reason[0])
        snprintf(r->reason, sizeof(r->reason), "%s", reason);
out:
    pthread_mutex_unlock(&o->lock);
}

int outage_take(struct outage *o, int64_t now, int64_t threshold, struct outage_event *ret)
{
    int found = 0;
    if (!o)
        return 0;
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < OUTAGE_DESTS_MAX && !found; i++) {
        struct record *r = &o->r[i];
        if (!r->used || (!r->up && (r->told || now - r->since < threshold)))
            continue;
        int64_t end = r->up ? r->up_at : now;
        *ret = (struct outage_event){
            .since = r->since, .minutes = (end - r->since) / 60, .back_up = r->up};
        snprintf(ret->id, sizeof(ret->id), "%s", r->id);
        snprintf(ret->reason, sizeof(ret->reason), "%s", r->reason);
        if (r->up)
            memset(r, 0, sizeof(*r));
        else
            r->told = true;
        found = 1;
    }
    pthread_mutex_unlock(&o->lock);
    return found;
}

int64_t outage_next_due(struct outage *o, int64_t now, int64_t threshold)
{
    int64_t next = 0;
    if (!o)
        return 0;
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < OUTAGE_DESTS_MAX; i++) {
        const struct record *r = &o->r[i];
        if (!r->used || (r->told && !r->up))
            continue;
        int64_t at = r->up ? now : r->since + threshold;
        if (next == 0 || at < next)
            next = at;
    }
    pthread_mutex_unlock(&o->lock);
    return next;
}
