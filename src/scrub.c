/* SPDX-License-Identifier: MIT */
/* The scheduled scrub (scrub.h). */
#include "scrub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dest.h"

/* linux/ioprio.h's values (the header is not part of every libc's kernel headers) */
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_IDLE 3
#define IOPRIO_CLASS_SHIFT 13

int64_t scrub_cutoff(const struct config *cfg, time_t now)
{
    int days = cfg->backup.verify_interval_days;
    if (days <= 0)
        return 0;
    int64_t cutoff = (int64_t)now - (int64_t)days * 86400;
    return cutoff > 0 ? cutoff : 0;
}

/* Idle I/O class (the disk serves the scrub only when nobody else asks) and nice 19, for the
 * calling thread only: on Linux both are per thread. Best effort: a kernel or container that
 * refuses leaves the thread as it was, and the rate limit still holds. */
static void lower_priority(void)
{
    pid_t tid = gettid();
    (void)syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, (int)tid,
                  IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT);
    (void)setpriority(PRIO_PROCESS, (id_t)tid, 19);
}

/* Is a copy due (made and last checked before cutoff)? One bounded query. */
static int any_due(struct db *db, int64_t cutoff, bool *ret, struct error *err)
{
    struct db_verify_filter f = {.checked_before = cutoff, .made_before = cutoff};
    struct db_verify_cursor cur = {0};
    struct db_verify_copy *one = calloc(1, sizeof(*one));
    if (!one)
        return error_set(err, -ENOMEM, "out of memory");
    size_t n = 0;
    int r = db_verify_copies_page(db, &f, &cur, one, 1, &n, err);
    free(one);
    *ret = r == 0 && n > 0;
    return r;
}

int scrub_slice(const struct config *cfg, time_t now, const atomic_bool *cancel,
                struct db_verify_cursor *cursor,
                void (*on_problem)(const struct verify_problem *p, void *userdata), void *userdata,
                struct scrub_slice *ret, struct error *err)
{
    memset(ret, 0, sizeof(*ret));
    int64_t cutoff = scrub_cutoff(cfg, now);
    if (cutoff <= 0)
        return error_set(err, -EINVAL, "the scrub is off (backup.verify_interval_days is 0)");
    lower_priority();

    struct db *db = NULL;
    struct dest **dests = NULL;
    size_t n = 0;
    bool due = false;
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, err);
    if (r == 0)
        r = any_due(db, cutoff, &due, err);
    if (r < 0 || !due) {
        ret->nothing_due = r == 0;
        goto out;
    }
    r = dest_create_all(cfg, &dests, &n, err);
    if (r < 0)
        goto out;
    struct verify_scope scope = {
        .checked_before = cutoff, .made_before = cutoff, .name = SCRUB_SCOPE};
    struct verify_opts opts = {.rate_bps = cfg->backup.verify_rate * 1e6,
                               .cancel = cancel,
                               .max_copies = SCRUB_SLICE_COPIES,
                               .resume = cursor,
                               .on_problem = on_problem,
                               .userdata = userdata};
    r = verify_run(cfg, db, dests, n, &scope, &opts, &ret->sum, err);
out:
    dest_free_all(dests, n);
    db_close(db);
    return r;
}
