/* SPDX-License-Identifier: MIT */
/*
 * Worker pipeline.
 *
 * Each worker owns a database connection, a hasher, and per destination a "lane": a writer
 * thread and a finisher thread with two destination connections. The worker reads a file in
 * PIPELINE_CHUNK pieces into a ring of PIPELINE_CHUNKS buffers; every buffer is handed to all
 * lanes and reused when the last lane has written it, so a slow destination slows the reader
 * (back-pressure) but memory never grows. When the read ends the worker knows the hashes: a file
 * whose content is already backed up is a duplicate (lanes abort, temporaries go); otherwise the
 * lanes' finishers commit and verify it while the worker reads the next file.
 *
 * Files come from three places, in this order: the session's to-do list (the main pass), the
 * retry queue (files whose attempt failed, each due at its own time), and the waiting list
 * (files that still need a destination that is down), which moves to the retry queue when the
 * destination is back, or is given up backup.destination_wait seconds after nothing else is
 * left. A worker never blocks for a file while it holds one that is not yet decided, so a retry
 * it would queue is never waited for.
 */
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hasher.h"
#include "log.h"
#include "monotime.h"
#include "media.h"
#include "pair.h"
#include "sidecar.h"

enum lane_end { END_NONE, END_FINISH, END_ABORT };

/* A file between attempts: in the retry queue or waiting for a destination. */
struct task {
    size_t index; /* into scan->entries */
    int attempt;  /* attempts made that failed for a reason of the file */
    bool any_new; /* an earlier attempt added a copy somewhere */
    bool give_up; /* waited for a destination long enough: record it as not done */
    double not_before;
    struct task *next;
};

struct worker;

/* The outcome of one destination for one file. */
struct lane_outcome {
    bool active;   /* the destination took part */
    bool finished; /* result below is valid */
    int result;
    struct error err;
    struct dest_result res;
};

/*
 * A lane is one destination inside one worker: a writer thread that writes the chunks of the
 * current file, and a finisher thread that commits and verifies the previous one, so the
 * read-back of file k overlaps the copy of file k+1. Results land in out[job & 1].
 */
struct lane {
    struct worker *w;
    struct dest *dest;
    size_t index; /* the destination's index in the session */
    /* Two connections used in turn (file k on conns[k & 1]), so the writer and the finisher
     * never share one: a backend sees each connection used by one thread at a time. Made by the
     * writer thread when it first needs one. */
    struct dest_conn *conns[2];
    bool conn_busy[2]; /* guarded by w->lock: a file of this connection is open */
    pthread_t thread;
    pthread_t fin_thread;
    bool started;
    bool fin_started;
    /* guarded by w->lock */
    bool active;   /* takes part in the current file */
    bool failed;   /* open or a write failed: drains chunks without writing */
    bool handed;   /* the writer is done with the current file */
    uint64_t next; /* next chunk to write */
    int wresult;   /* failure of open/write for the current file */
    struct error werr;
    /* finisher mailbox: one file waiting to be finished */
    bool fin_queued;
    struct dest_file *fin_file;
    struct hasher_digest fin_digest;
    bool fin_verify;
    unsigned fin_slot;
    int64_t fin_file_id;
    struct lane_outcome out[2];
};

struct worker {
    struct pipeline *p;
    pthread_t thread;
    bool started;
    struct db *db;
    struct hasher *hasher;
    int src_dir_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* backup.parallel false: lanes take turns for each write and finish */
    pthread_mutex_t serial;
    bool serialise;
    uint8_t *buf[PIPELINE_CHUNKS];
    size_t len[PIPELINE_CHUNKS];
    int refs[PIPELINE_CHUNKS];
    uint64_t posted;
    uint64_t job;
    enum lane_end end;
    bool quit;
    bool verify;
    struct hasher_digest digest;
    struct dest_item item;
    struct media_info mi;         /* item's metadata (item.values point into it) */
    struct pattern_values values; /* item's */
    int64_t file_id;              /* of item */
    struct lane lanes[DEST_MAX];
};

struct pipeline {
    struct pipeline_env env;
    bool sha1; /* a destination needs SHA-1 (dest_needs_sha1): the reader computes it */
    atomic_bool card_gone;
    atomic_bool stop;         /* pipeline_free before the end */
    pthread_cond_t done_cond; /* CLOCK_MONOTONIC; workers_running reached 0 */

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* CLOCK_MONOTONIC; the queues changed */
    size_t next_todo;
    struct task *retry_head, *retry_tail;
    struct task *waiting_head;
    size_t n_retry, n_waiting;
    size_t holding;    /* files taken by workers, not yet decided or queued */
    double give_up_at; /* set when only waiting files remain */
    size_t workers_running;
    struct pipeline_stats stats;
    struct worker *workers[PIPELINE_WORKERS_MAX];
    int n_workers;
};

static bool cancelled(const struct pipeline *p)
{
    return (p->env.cancel && atomic_load(p->env.cancel)) || atomic_load(&p->card_gone) ||
           atomic_load(&p->stop);
}

/* After an error reading the card: is the card still there? A card pulled out (device gone,
 * filesystem unmounted) ends the session as interrupted instead of failing its files. */
static bool check_card_gone(struct pipeline *p)
{
    struct stat st;
    if (stat(p->env.card_root, &st) < 0 || st.st_dev != p->env.card_dev) {
        if (!atomic_exchange(&p->card_gone, true))
            log_warning("'%s': the card is gone; the session stops and resumes when it is back",
                        p->env.card_root);
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        return true;
    }
    return false;
}

/* ---- lanes ---- */

static void lane_set_outcome(struct lane *l, unsigned slot, int result, const struct error *err,
                             const struct dest_result *res)
{
    struct lane_outcome *o = &l->out[slot];
    o->result = result;
    if (result < 0 && err)
        o->err = *err;
    if (res)
        o->res = *res;
    o->finished = true;
}

static void serial_lock(struct worker *w)
{
    if (w->serialise)
        pthread_mutex_lock(&w->serial);
}

static void serial_unlock(struct worker *w)
{
    if (w->serialise)
        pthread_mutex_unlock(&w->serial);
}

/* A lane does not start or go on talking to a destination that is down: with a server that
 * hangs, each call would wait out its timeout. Any thread of the lane. */
static int lane_check_up(struct lane *l, struct error *err)
{
    return health_is_up(l->w->p->env.health, l->index)
               ? 0
               : error_set(err, -EHOSTDOWN, "the destination is down");
}

/* Tells the health of a failure as soon as the lane sees it, so the other lanes and workers stop
 * using a destination that is gone before this file's outcome is even collected. */
static void lane_report(struct lane *l, int64_t file_id, int r, const struct error *err)
{
    if (r != -EHOSTDOWN && r != -ECANCELED)
        health_report_failure(l->w->p->env.health, l->index, file_id, r, err);
}

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    struct worker *w = l->w;
    uint64_t seen = 0;
    log_set_session(w->p->env.session_id);

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->quit && w->job == seen)
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->quit)
            break;
        seen = w->job;
        unsigned slot = (unsigned)(seen & 1);
        if (!l->active)
            continue;
        struct dest_item item = w->item;
        int64_t file_id = w->file_id;
        /* the finisher may still be committing file k-2 on this connection */
        while (l->conn_busy[slot] && !w->quit)
            pthread_cond_wait(&w->cond, &w->lock);
        l->conn_busy[slot] = true;
        pthread_mutex_unlock(&w->lock);

        struct dest_file *file = NULL;
        struct error err = {0};
        int r = w->quit ? error_set(&err, -ECANCELED, "stopping") : lane_check_up(l, &err);
        /* made on first use, so a destination that is down from the start (its prober may hold
         * the library's locks while a call waits out its timeout) never delays a worker */
        if (r == 0 && !l->conns[slot])
            r = dest_conn_new(l->dest, &l->conns[slot], &err);
        if (r == 0)
            r = dest_open(l->conns[slot], &item, &file, &err);
        if (r < 0)
            lane_report(l, file_id, r, &err);

        pthread_mutex_lock(&w->lock);
        if (r < 0) {
            l->failed = true;
            l->wresult = r;
            l->werr = err;
        }
        for (;;) {
            while (l->next >= w->posted && w->end == END_NONE && !w->quit)
                pthread_cond_wait(&w->cond, &w->lock);
            if (l->next < w->posted) {
                size_t idx = l->next % PIPELINE_CHUNKS;
                bool write = !l->failed;
                pthread_mutex_unlock(&w->lock);
                if (write) {
                    serial_lock(w);
                    r = lane_check_up(l, &err);
                    if (r == 0)
                        r = dest_write(file, w->buf[idx], w->len[idx], &err);
                    serial_unlock(w);
                    if (r < 0)
                        lane_report(l, file_id, r, &err);
                }
                pthread_mutex_lock(&w->lock);
                if (write && r < 0) {
                    l->failed = true;
                    l->wresult = r;
                    l->werr = err;
                }
                w->refs[idx]--;
                l->next++;
                pthread_cond_broadcast(&w->cond);
                continue;
            }
            break;
        }
        enum lane_end end = w->quit ? END_ABORT : w->end;
        if (l->failed || end != END_FINISH) {
            /* The outcome is known: the worker goes on while the temporary is removed, which
             * can take a timeout when the server hangs. The connection stays busy until then,
             * so the next file on it waits, and the worker's teardown joins this thread. */
            int result = l->failed ? l->wresult : -ECANCELED;
            struct error ferr = l->werr;
            lane_set_outcome(l, slot, result, &ferr, NULL);
            l->handed = true;
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->lock);
            dest_abort(file);
            pthread_mutex_lock(&w->lock);
            l->conn_busy[slot] = false;
            pthread_cond_broadcast(&w->cond);
            continue;
        } else {
            /* hand the file to the finisher; wait while it still holds an earlier one */
            while (l->fin_queued && !w->quit)
                pthread_cond_wait(&w->cond, &w->lock);
            if (w->quit) {
                pthread_mutex_unlock(&w->lock);
                dest_abort(file);
                pthread_mutex_lock(&w->lock);
                lane_set_outcome(l, slot, -ECANCELED, NULL, NULL);
                l->conn_busy[slot] = false;
            } else {
                l->fin_file = file;
                l->fin_digest = w->digest;
                l->fin_verify = w->verify;
                l->fin_slot = slot;
                l->fin_file_id = file_id;
                l->fin_queued = true;
            }
        }
        l->handed = true;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void *finisher_main(void *arg)
{
    struct lane *l = arg;
    struct worker *w = l->w;
    log_set_session(w->p->env.session_id);

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!l->fin_queued && !w->quit)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!l->fin_queued)
            break; /* quit with nothing queued */
        struct dest_file *file = l->fin_file;
        struct hasher_digest digest = l->fin_digest;
        bool verify = l->fin_verify;
        unsigned slot = l->fin_slot;
        int64_t file_id = l->fin_file_id;
        bool quit = w->quit;
        l->fin_queued = false;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);

        struct dest_result res = {0};
        struct error err = {0};
        int r;
        if (quit) {
            dest_abort(file);
            r = -ECANCELED;
        } else if ((r = lane_check_up(l, &err)) < 0) {
            dest_abort(file);
        } else {
            serial_lock(w);
            r = dest_finish(file, &digest, verify, &res, &err);
            serial_unlock(w);
            if (r < 0)
                lane_report(l, file_id, r, &err);
        }

        pthread_mutex_lock(&w->lock);
        lane_set_outcome(l, slot, r, &err, &res);
        l->conn_busy[slot] = false;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- one file ---- */

/* Finds the XMP sidecar of se on the card, for Immich (sidecar.h; the file destinations find
 * theirs). Writes its relative path into buf and returns buf, or NULL when there is none. */
static const char *find_sidecar(int dir_fd, const char *rel, char *buf, size_t size)
{
    struct sidecar_set set;
    sidecar_find(dir_fd, rel, true, &set);
    if (set.n == 0 || (size_t)snprintf(buf, size, "%s", set.rel[0]) >= size)
        return NULL;
    return buf;
}

/* Checks a database write of an attempt: a failure fails the attempt (its copies are not kept). */
static int db_step(int r, const struct error *dberr, struct error *err)
{
    return r < 0 ? error_set(err, r, "cannot record it in the database: %s", dberr->msg) : 0;
}

static int64_t mtime_ns_of(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static bool same_version(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reads the file once, feeding the lanes in need[]. Returns when every writer is done with it;
 * the outcomes come later from collect(*ret_job) (0 when no lane was started). Returns 0, or a
 * negative errno for a failure of the card side (open, read, a file that changed while it was
 * read: -EAGAIN), which fails all lanes of this attempt and leaves no copy. *ret_dup is the id
 * of the file with the same content already backed up (0 if none). */
static int stream_file(struct worker *w, const struct scan_entry *se, int64_t file_id,
                       const char *sha1_known, const bool need[DEST_MAX], int64_t *ret_dup,
                       uint64_t *ret_job, struct error *err)
{
    struct pipeline *p = w->p;
    int r = 0, fd = -1;
    *ret_dup = 0;

    *ret_job = 0;
    fd = scanner_open_beneath(w->src_dir_fd, se->rel_path, O_RDONLY);
    if (fd < 0)
        return check_card_gone(p) ? error_set(err, -ECANCELED, "the card is gone")
                                  : error_set_errno(err, fd, "cannot open it on the card");
    struct stat before;
    if (fstat(fd, &before) < 0) {
        r = error_set_errno(err, -errno, "cannot examine it on the card");
        close(fd);
        return r;
    }
    if ((uint64_t)before.st_size != se->size || mtime_ns_of(&before) != se->mtime_ns) {
        close(fd);
        return error_set(err, -EAGAIN,
                         "changed on the card since it was scanned (size %llu, now %lld bytes)",
                         (unsigned long long)se->size, (long long)before.st_size);
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    int64_t own = 0; /* the capture time the file itself says: the one the database records */
    int64_t capture; /* the one its date folder is chosen by */
    const char *kind;
    int32_t utc_offset = 0;
    bool has_offset = false;
    size_t entry = (size_t)(se - p->env.scan->entries);
    size_t partner = p->env.partner ? p->env.partner[entry] : PAIR_NONE;
    struct media_info *mi = &w->mi; /* the lanes are done with the previous file's */
    if (pair_probe_fd(fd, se, mi) == 0 && mi->capture_time > 0) {
        capture = own = mi->capture_time;
        kind = media_kind_to_string(mi->kind);
        utc_offset = mi->utc_offset;
        has_offset = mi->has_offset;
    } else {
        /* A RAW+JPEG pair shares the date the other one has (pair.h). Its partner's date is read
         * here, before this file is routed, from the database (when a read of it in this or an
         * earlier session recorded one) or from its head on the card: whichever of the two is
         * read first, by whichever worker, both find the same date without waiting for each
         * other; the cost is one small read for a dateless file that has a partner. */
        capture = partner == PAIR_NONE ? 0
                                       : pair_partner_capture(w->db, p->env.card_id, w->src_dir_fd,
                                                              &p->env.scan->entries[partner]);
        if (capture <= 0)
            capture = media_floating_time(se->mtime_ns / 1000000000);
        kind = media_kind_to_string(media_kind_from_ext(se->ext));
    }
    /* and its camera, for the name patterns: the same small read of the partner's head */
    if (partner != PAIR_NONE && pair_camera_missing(mi)) {
        struct media_info pm;
        pair_probe_info(w->src_dir_fd, &p->env.scan->entries[partner], &pm);
        pair_share_camera(mi, &pm);
    }
    w->values = (struct pattern_values){
        .capture_time = capture,
        .name = se->name,
        .make = mi->make,
        .model = mi->model,
        .lens = mi->lens,
        .serial = mi->serial,
        .card = p->env.card_label,
        .session = p->env.session_id,
        .seq = p->env.seq ? p->env.seq[entry] : entry + 1,
    };
    char sidecar[SCANNER_MAX_PATH];
    const char *sidecar_rel = find_sidecar(w->src_dir_fd, se->rel_path, sidecar, sizeof(sidecar));

    struct error dberr = {0};
    r = db_step(db_file_set_state(w->db, file_id, DB_FILE_BACKING_UP, NULL, &dberr), &dberr, err);
    if (r < 0) {
        close(fd);
        return r;
    }

    /* start the job on the lanes */
    pthread_mutex_lock(&w->lock);
    w->item = (struct dest_item){
        .rel_path = se->rel_path,
        .name = se->name,
        .size = se->size,
        .mtime_ns = se->mtime_ns,
        .capture_time = capture,
        .utc_offset = utc_offset,
        .has_offset = has_offset,
        .values = &w->values,
        .kind = kind,
        .sha1_known = sha1_known ? sha1_known : "",
        .sidecar_rel = sidecar_rel,
        .card_dir_fd = w->src_dir_fd,
    };
    w->file_id = file_id;
    int n_active = 0;
    unsigned slot = (unsigned)((w->job + 1) & 1);
    for (size_t i = 0; i < p->env.n_dests; i++) {
        struct lane *l = &w->lanes[i];
        l->active = need[i];
        l->handed = !need[i];
        l->failed = false;
        l->next = 0;
        l->wresult = 0;
        error_clear(&l->werr);
        l->out[slot] = (struct lane_outcome){.active = need[i], .finished = !need[i]};
        n_active += need[i];
    }
    for (int i = 0; i < PIPELINE_CHUNKS; i++)
        w->refs[i] = 0;
    w->posted = 0;
    w->end = END_NONE;
    w->verify = p->env.cfg->backup.verify_checksums;
    w->job++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);

    enum lane_end end = END_ABORT;
    uint64_t total = 0;
    r = hasher_set_sha1(w->hasher, p->sha1, err);
    for (; r == 0;) {
        if (cancelled(p)) {
            r = error_set(err, -ECANCELED, "interrupted");
            break;
        }
        size_t idx = w->posted % PIPELINE_CHUNKS;
        pthread_mutex_lock(&w->lock);
        while (w->refs[idx] > 0)
            pthread_cond_wait(&w->cond, &w->lock);
        int alive = 0;
        for (size_t i = 0; i < p->env.n_dests; i++)
            alive += w->lanes[i].active && !w->lanes[i].failed;
        pthread_mutex_unlock(&w->lock);
        if (alive == 0) /* every destination failed this file: stop reading */
            break;

        ssize_t n = read(fd, w->buf[idx], PIPELINE_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int saved = -errno;
            r = check_card_gone(p) ? error_set(err, -ECANCELED, "the card is gone")
                                   : error_set_errno(err, saved, "cannot read it from the card");
            break;
        }
        if (n == 0) {
            /* The copy is kept only when the whole file was read as scanned: a file that shrank,
             * grew or was rewritten meanwhile would leave a fragment or a mix of versions. */
            struct stat after;
            if (fstat(fd, &after) < 0) {
                r = error_set_errno(err, -errno, "cannot examine it on the card");
                break;
            }
            if (total != se->size || !same_version(&before, &after)) {
                r = error_set(err, -EAGAIN,
                              "changed on the card while it was read (%llu bytes scanned, %llu "
                              "read, %lld now); the copy was discarded",
                              (unsigned long long)se->size, (unsigned long long)total,
                              (long long)after.st_size);
                break;
            }
            r = hasher_final(w->hasher, &w->digest, err);
            if (r < 0)
                break;
            end = END_FINISH;
            break;
        }
        total += (uint64_t)n;
        if (total > se->size) {
            r = error_set(err, -EAGAIN,
                          "grew on the card while it was read (%llu bytes scanned); the copy "
                          "was discarded",
                          (unsigned long long)se->size);
            break;
        }
        r = hasher_update(w->hasher, w->buf[idx], (size_t)n, err);
        if (r < 0)
            break;
        pthread_mutex_lock(&w->lock);
        w->len[idx] = (size_t)n;
        w->refs[idx] = n_active;
        w->posted++;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_lock(&p->lock);
        p->stats.bytes_read += (uint64_t)n;
        pthread_mutex_unlock(&p->lock);
    }
    /* read once: its pages need not stay in memory (a retry reads it again from the card) */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);

    if (end == END_FINISH) {
        int64_t dup = 0;
        r = db_step(db_file_set_meta(w->db, file_id, w->digest.md5_hex,
                                     w->digest.sha1_hex[0] ? w->digest.sha1_hex : NULL,
                                     w->digest.xxh128_hex, own, kind, &dberr),
                    &dberr, err);
        if (r == 0)
            r = db_step(db_hash_backed_up(w->db, w->digest.md5_hex,
                                          w->digest.sha1_hex[0] ? w->digest.sha1_hex : NULL,
                                          w->digest.xxh128_hex, file_id, p->env.dest_ids,
                                          p->env.n_dests, &dup, &dberr),
                        &dberr, err);
        if (r == 0 && dup > 0)
            *ret_dup = dup;
        else if (r == 0)
            r = db_step(db_file_set_state(w->db, file_id, DB_FILE_VERIFYING, NULL, &dberr), &dberr,
                        err);
        if (r < 0 || dup > 0)
            end = END_ABORT; /* a duplicate, or its hashes are not recorded: no copy is kept */
    }

    /* Wait only until every writer is done with the file: commit and verification go on in
     * the finishers while this worker reads the next file. */
    pthread_mutex_lock(&w->lock);
    w->end = end;
    pthread_cond_broadcast(&w->cond);
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < p->env.n_dests; i++)
            all = all && w->lanes[i].handed;
        if (all)
            break;
        pthread_cond_wait(&w->cond, &w->lock);
    }
    *ret_job = w->job;
    pthread_mutex_unlock(&w->lock);
    return r;
}

/* Waits for the finishers of job and copies its outcomes into out (one per destination). */
static void collect(struct worker *w, uint64_t job, struct lane_outcome out[DEST_MAX])
{
    unsigned slot = (unsigned)(job & 1);
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->p->env.n_dests; i++) {
        struct lane *l = &w->lanes[i];
        while (!l->out[slot].finished)
            pthread_cond_wait(&w->cond, &w->lock);
        out[i] = l->out[slot];
    }
    pthread_mutex_unlock(&w->lock);
}

static bool retryable(int r)
{
    return r != -ENOSPC && r != -ECANCELED && r != -EINVAL && r != -ENAMETOOLONG && r != -EROFS &&
           r != -EACCES;
}

/* ---- queues ---- */

/* Appends q to the retry queue. With p->lock held. */
static void retry_append(struct pipeline *p, struct task *q)
{
    q->next = NULL;
    if (p->retry_tail)
        p->retry_tail->next = q;
    else
        p->retry_head = q;
    p->retry_tail = q;
    p->n_retry++;
}

/* Moves every waiting file to the retry queue, due now; give_up marks them to be recorded as not
 * done. With p->lock held. */
static void waiting_to_retry(struct pipeline *p, bool give_up)
{
    while (p->waiting_head) {
        struct task *q = p->waiting_head;
        p->waiting_head = q->next;
        p->n_waiting--;
        q->give_up = give_up;
        q->not_before = 0;
        retry_append(p, q);
    }
}

/* Takes the next file to work on into *t. Without block, returns false at once when none is due;
 * with block, waits for one, and returns false only when the pipeline is finished or stopped. */
static bool take_task(struct pipeline *p, struct task *t, bool block)
{
    bool got = false;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (cancelled(p))
            break;
        if (p->next_todo < p->env.n_todo) {
            *t = (struct task){.index = p->env.todo[p->next_todo++]};
            got = true;
            break;
        }
        double t_now = monotime_now(), wake = 0;
        struct task **pp = &p->retry_head, *prev = NULL;
        for (; *pp; prev = *pp, pp = &(*pp)->next) {
            struct task *q = *pp;
            if (q->not_before <= t_now) {
                *pp = q->next;
                if (p->retry_tail == q)
                    p->retry_tail = prev;
                p->n_retry--;
                *t = *q;
                t->next = NULL;
                free(q);
                got = true;
                break;
            }
            if (wake == 0 || q->not_before < wake)
                wake = q->not_before;
        }
        if (got || !block)
            break;
        if (p->holding == 0 && p->n_retry == 0) {
            if (p->n_waiting == 0)
                break; /* finished */
            if (p->give_up_at == 0) {
                p->give_up_at = t_now + p->env.cfg->backup.destination_wait;
                log_info("%zu files wait for a destination that is down; waiting up to %.0f s "
                         "for it (backup.destination_wait)",
                         p->n_waiting, p->env.cfg->backup.destination_wait);
            }
            if (t_now >= p->give_up_at) {
                /* the waiting files go through the workers once more, to be recorded */
                waiting_to_retry(p, true);
                continue;
            }
            if (wake == 0 || p->give_up_at < wake)
                wake = p->give_up_at;
        }
        if (wake == 0) {
            pthread_cond_wait(&p->cond, &p->lock);
        } else {
            struct timespec ts = monotime_timespec(wake);
            pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        }
    }
    if (got)
        p->holding++;
    pthread_mutex_unlock(&p->lock);
    return got;
}

/* Puts t back: into the retry queue (waiting false) or the waiting list. Returns false when out of
 * memory. Releases the worker's hold on the file. */
static bool queue_task(struct pipeline *p, const struct task *t, bool waiting)
{
    struct task *q = malloc(sizeof(*q));
    pthread_mutex_lock(&p->lock);
    if (q) {
        *q = *t;
        q->next = NULL;
        if (waiting) {
            q->next = p->waiting_head;
            p->waiting_head = q;
            p->n_waiting++;
        } else {
            retry_append(p, q);
        }
    }
    p->holding--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return q != NULL;
}

static void release_task(struct pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    p->holding--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void pipeline_dest_up(struct pipeline *p, size_t dest)
{
    (void)dest; /* each file finds out itself which destinations it still needs */
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    waiting_to_retry(p, false);
    p->give_up_at = 0;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* ---- one file's attempts ---- */

static void note_error(struct pipeline *p, const char *rel, const char *msg)
{
    pthread_mutex_lock(&p->lock);
    if (!p->stats.first_error[0])
        snprintf(p->stats.first_error, sizeof(p->stats.first_error), "'%s': %s", rel, msg);
    pthread_mutex_unlock(&p->lock);
}

static void count_outcome(struct pipeline *p, enum db_outcome o, uint64_t size)
{
    pthread_mutex_lock(&p->lock);
    switch (o) {
    case DB_OUTCOME_COPIED:
        p->stats.totals.files_copied++;
        p->stats.totals.bytes_copied += (int64_t)size;
        break;
    case DB_OUTCOME_SKIPPED:
        p->stats.totals.files_skipped++;
        p->stats.bytes_skipped += size;
        break;
    case DB_OUTCOME_DUPLICATE:
        p->stats.totals.files_duplicate++;
        break;
    case DB_OUTCOME_FAILED:
        p->stats.totals.files_failed++;
        break;
    }
    pthread_mutex_unlock(&p->lock);
}

enum verdict {
    V_NONE,        /* attempt in flight */
    V_DONE,        /* outcome below is final: record it */
    V_RETRY,       /* failed for a reason of the file: queue another attempt */
    V_WAIT,        /* copies wait for destinations that are down */
    V_INTERRUPTED, /* the session stops: left pending, not counted */
};

_Static_assert(DB_RECORD_SIDECARS_MAX >= DEST_SIDECARS_MAX * DB_RECORD_COPIES_MAX,
               "the database takes every sidecar");

/* One file in a worker, from taking it to its verdict. A worker holds two: the one being read
 * and the one being finished. */
struct pending {
    struct task task;
    const struct scan_entry *se;
    int64_t file_id;
    struct db_file known;
    bool need[DEST_MAX]; /* copies made by this attempt */
    bool wait[DEST_MAX]; /* copies waiting for a destination that is down */
    size_t n_need;
    /* the attempt in flight */
    bool in_flight;
    uint64_t job;
    int stream_r;
    struct error err;
    int64_t dup;
    struct lane_outcome out[DEST_MAX];
    /* the copies to record with the verdict, in the same transaction */
    struct {
        bool set;
        enum db_copy_state state;
        char remote[DEST_REMOTE_MAX];                    /* "" keeps the stored one */
        char error[ERROR_MSG_MAX];                       /* "" clears it */
        struct dest_sidecar sidecars[DEST_SIDECARS_MAX]; /* next to a completed copy */
        size_t n_sidecars;
    } copy[DEST_MAX];
    /* the verdict */
    enum verdict verdict;
    enum db_outcome outcome;
    bool quiet; /* not done only because a destination is down: said once for all files */
    char last_error[ERROR_MSG_MAX];
};

static void set_copy(struct pending *f, size_t i, enum db_copy_state state, const char *remote,
                     const char *error)
{
    f->copy[i].set = true;
    f->copy[i].state = state;
    snprintf(f->copy[i].remote, sizeof(f->copy[i].remote), "%s", remote ? remote : "");
    snprintf(f->copy[i].error, sizeof(f->copy[i].error), "%s", error ? error : "");
    f->copy[i].n_sidecars = 0;
}

/* Writes f's state, its copies and (with session_id > 0) its outcome and the session's counts in
 * one transaction. Returns 0 or the negative errno of the database (logged here, with the file). */
static int record(struct worker *w, struct pending *f, enum db_file_state state,
                  const char *last_error, int64_t session_id)
{
    struct pipeline *p = w->p;
    struct db_file_record rec = {
        .file_id = f->file_id,
        .state = state,
        .last_error = last_error && last_error[0] ? last_error : NULL,
        .duplicate_of = state == DB_FILE_COMPLETED ? f->dup : 0,
        .outcome = f->outcome,
    };
    struct db_sidecar side[DB_RECORD_SIDECARS_MAX];
    size_t n_side = 0;
    for (size_t i = 0; i < p->env.n_dests && rec.n_copies < DB_RECORD_COPIES_MAX; i++) {
        if (!f->copy[i].set)
            continue;
        rec.copies[rec.n_copies++] = (struct db_record_copy){
            .dest = p->env.dest_ids[i],
            .state = f->copy[i].state,
            .remote = f->copy[i].remote[0] ? f->copy[i].remote : NULL,
            .error = f->copy[i].error[0] ? f->copy[i].error : NULL,
        };
        for (size_t k = 0; k < f->copy[i].n_sidecars && n_side < DB_RECORD_SIDECARS_MAX; k++) {
            const struct dest_sidecar *sc = &f->copy[i].sidecars[k];
            side[n_side++] = (struct db_sidecar){
                .dest = p->env.dest_ids[i],
                .remote = sc->remote,
                .size = (int64_t)sc->size,
                .mtime_ns = sc->mtime_ns,
                .md5 = sc->md5,
                .sha1 = sc->sha1,
            };
        }
    }
    rec.sidecars = side;
    rec.n_sidecars = n_side;
    struct error err = {0};
    int r = f->file_id ? db_file_record(w->db, session_id, &rec, &err) : 0;
    if (r < 0)
        log_error("'%s': cannot record it in the database: %s", f->se->rel_path, err.msg);
    return r;
}

static void attempt_start(struct worker *w, struct pending *f)
{
    struct pipeline *p = w->p;
    struct error dberr = {0};
    error_clear(&f->err);
    f->dup = 0;
    f->job = 0;
    f->stream_r = db_step(db_file_set_state(w->db, f->file_id, DB_FILE_SCANNING, NULL, &dberr),
                          &dberr, &f->err);
    for (size_t i = 0; i < p->env.n_dests && f->stream_r == 0; i++)
        if (f->need[i])
            f->stream_r = db_step(db_copy_set(w->db, f->file_id, p->env.dest_ids[i],
                                              DB_COPY_COPYING, NULL, NULL, &dberr),
                                  &dberr, &f->err);
    if (f->stream_r == 0)
        f->stream_r =
            stream_file(w, f->se, f->file_id, f->known.sha1, f->need, &f->dup, &f->job, &f->err);
    f->in_flight = f->job != 0;
    if (!f->in_flight)
        memset(f->out, 0, sizeof(f->out));
}

static void waiting_reason(struct pipeline *p, const struct pending *f, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < p->env.n_dests; i++) {
        if (!f->wait[i])
            continue;
        struct health_state hs;
        health_get(p->env.health, i, &hs);
        snprintf(buf, size, "not copied to %s: the destination is down (%s)",
                 dest_label(p->env.dests[i]), hs.reason[0] ? hs.reason : "not answering");
        return;
    }
}

static void pending_start(struct worker *w, const struct task *t, struct pending *f)
{
    struct pipeline *p = w->p;
    struct error err = {0};
    memset(f, 0, sizeof(*f));
    f->task = *t;
    f->se = &p->env.scan->entries[t->index];
    f->outcome = DB_OUTCOME_FAILED;

    pthread_mutex_lock(&p->lock);
    snprintf(p->stats.current, sizeof(p->stats.current), "%s", f->se->rel_path);
    pthread_mutex_unlock(&p->lock);

    struct db_file_key key = {p->env.card_id, f->se->rel_path, (int64_t)f->se->size,
                              f->se->mtime_ns};
    if (db_file_get_or_create(w->db, &key, &f->file_id, &f->known, &err) < 0) {
        snprintf(f->last_error, sizeof(f->last_error), "cannot record it in the database: %s",
                 err.msg);
        f->verdict = V_DONE;
        return;
    }
    size_t n_wait = 0;
    for (size_t i = 0; i < p->env.n_dests; i++) {
        struct db_copy c;
        int r = db_copy_get(w->db, f->file_id, p->env.dest_ids[i], &c, &err);
        if (r < 0 && r != -ENOENT) {
            snprintf(f->last_error, sizeof(f->last_error), "cannot read it from the database: %s",
                     err.msg);
            f->verdict = V_DONE;
            return;
        }
        if (r == 0 && c.state == DB_COPY_COMPLETED)
            continue;
        if (!health_is_up(p->env.health, i)) {
            f->wait[i] = true;
            n_wait++;
            set_copy(f, i, DB_COPY_PENDING, NULL, "waiting for the destination");
            continue;
        }
        f->need[i] = true;
        f->n_need++;
    }
    if (n_wait > 0 && (t->give_up || f->n_need == 0)) {
        if (t->give_up) {
            waiting_reason(p, f, f->last_error, sizeof(f->last_error));
            f->quiet = true;
            f->outcome = DB_OUTCOME_FAILED;
            f->verdict = V_DONE;
        } else {
            f->verdict = V_WAIT;
        }
        return;
    }
    if (f->n_need == 0) {
        f->outcome = t->any_new ? DB_OUTCOME_COPIED : DB_OUTCOME_SKIPPED;
        f->verdict = V_DONE;
        return;
    }
    attempt_start(w, f);
}

/* Applies the outcomes of the collected attempt and sets f->verdict. */
static void attempt_apply(struct worker *w, struct pending *f)
{
    struct pipeline *p = w->p;
    const struct scan_entry *se = f->se;

    if (f->stream_r == -ECANCELED) {
        for (size_t i = 0; i < p->env.n_dests; i++)
            if (f->need[i])
                set_copy(f, i, DB_COPY_PENDING, NULL, NULL);
        f->verdict = V_INTERRUPTED;
        return;
    }
    if (f->stream_r == 0 && f->dup > 0) {
        /* the original is complete at every destination, the down ones included */
        for (size_t i = 0; i < p->env.n_dests; i++) {
            struct db_copy orig;
            if (!f->need[i] && !f->wait[i])
                continue;
            bool known = db_copy_get(w->db, f->dup, p->env.dest_ids[i], &orig, NULL) == 0;
            set_copy(f, i, DB_COPY_COMPLETED, known ? orig.remote : NULL, NULL);
        }
        f->outcome = f->task.any_new ? DB_OUTCOME_COPIED : DB_OUTCOME_DUPLICATE;
        log_info("'%s': same content already backed up, not copied again", se->rel_path);
        f->last_error[0] = '\0';
        f->verdict = V_DONE;
        return;
    }
    bool file_failed = false, may_retry = true, waits = false;
    if (f->stream_r < 0) {
        file_failed = true;
        may_retry = retryable(f->stream_r);
        snprintf(f->last_error, sizeof(f->last_error), "%s", f->err.msg);
        for (size_t i = 0; i < p->env.n_dests; i++)
            if (f->need[i])
                set_copy(f, i, DB_COPY_FAILED, NULL, f->err.msg);
    } else {
        for (size_t i = 0; i < p->env.n_dests; i++) {
            const struct lane_outcome *o = &f->out[i];
            if (!f->need[i])
                continue;
            if (o->result == 0) {
                health_report_success(p->env.health, i);
                set_copy(f, i, DB_COPY_COMPLETED, o->res.remote, NULL);
                f->copy[i].n_sidecars = o->res.n_sidecars;
                memcpy(f->copy[i].sidecars, o->res.sidecars, sizeof(f->copy[i].sidecars));
                if (!o->res.existed)
                    f->task.any_new = true;
            } else if (health_report_failure(p->env.health, i, f->file_id, o->result, &o->err)) {
                f->wait[i] = true;
                set_copy(f, i, DB_COPY_PENDING, NULL, o->err.msg);
            } else {
                file_failed = true;
                if (!retryable(o->result))
                    may_retry = false;
                snprintf(f->last_error, sizeof(f->last_error), "%s: %s",
                         dest_label(p->env.dests[i]), o->err.msg);
                set_copy(f, i, DB_COPY_FAILED, NULL, o->err.msg);
            }
        }
    }
    for (size_t i = 0; i < p->env.n_dests; i++)
        waits = waits || f->wait[i];
    if (file_failed && may_retry && f->task.attempt < p->env.cfg->backup.max_retries) {
        f->verdict = V_RETRY;
    } else if (file_failed) {
        f->outcome = DB_OUTCOME_FAILED;
        f->verdict = V_DONE;
    } else if (waits) {
        f->verdict = V_WAIT;
    } else {
        f->outcome = f->task.any_new ? DB_OUTCOME_COPIED : DB_OUTCOME_SKIPPED;
        f->last_error[0] = '\0';
        f->verdict = V_DONE;
    }
}

/* Records the file's outcome in the session and counts it. */
static void pending_record(struct worker *w, struct pending *f)
{
    struct pipeline *p = w->p;
    const struct scan_entry *se = f->se;
    if (f->outcome != DB_OUTCOME_FAILED &&
        record(w, f, DB_FILE_COMPLETED, NULL, p->env.session_id) < 0) {
        /* the copies are verified, but unknown to the database: the next run finds them there */
        f->outcome = DB_OUTCOME_FAILED;
        snprintf(f->last_error, sizeof(f->last_error), "cannot record it in the database");
    } else if (f->outcome == DB_OUTCOME_FAILED) {
        if (!f->last_error[0])
            snprintf(f->last_error, sizeof(f->last_error), "failed");
        record(w, f, DB_FILE_FAILED, f->last_error, p->env.session_id);
    }
    if (f->outcome == DB_OUTCOME_FAILED) {
        if (f->quiet)
            log_debug("'%s': %s", se->rel_path, f->last_error);
        else
            log_error("'%s': %s", se->rel_path, f->last_error);
        note_error(p, se->rel_path, f->last_error);
        if (f->task.any_new) {
            pthread_mutex_lock(&p->lock);
            p->stats.files_partly++;
            pthread_mutex_unlock(&p->lock);
        }
    }
    count_outcome(p, f->outcome, se->size);
}

/* Collects f's attempt, and records or queues it as its verdict says. */
static void pending_finish(struct worker *w, struct pending *f)
{
    struct pipeline *p = w->p;
    if (f->verdict == V_NONE) {
        if (f->in_flight) {
            collect(w, f->job, f->out);
            f->in_flight = false;
        }
        attempt_apply(w, f);
    }
    switch (f->verdict) {
    case V_RETRY: {
        double delay = p->env.cfg->backup.retry_delay * pow(2.0, f->task.attempt);
        if (delay > 300)
            delay = 300;
        log_warning("'%s': %s, will retry in %.0f s (%d of %d)", f->se->rel_path, f->last_error,
                    delay, f->task.attempt + 1, p->env.cfg->backup.max_retries);
        record(w, f, DB_FILE_NEW, f->last_error, 0);
        f->task.attempt++;
        f->task.not_before = monotime_now() + delay;
        if (queue_task(p, &f->task, false))
            return;
        snprintf(f->last_error, sizeof(f->last_error), "out of memory");
        f->outcome = DB_OUTCOME_FAILED;
        break;
    }
    case V_WAIT:
        record(w, f, DB_FILE_NEW, "waiting for a destination", 0);
        if (queue_task(p, &f->task, true))
            return;
        snprintf(f->last_error, sizeof(f->last_error), "out of memory");
        f->outcome = DB_OUTCOME_FAILED;
        break;
    case V_INTERRUPTED:
        record(w, f, DB_FILE_NEW, "interrupted", 0);
        release_task(p);
        return;
    default:
        break;
    }
    pending_record(w, f);
    release_task(p);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pipeline *p = w->p;
    log_set_session(p->env.session_id);
    struct pending *slots = calloc(2, sizeof(*slots));
    struct pending *cur = slots, *prev = slots ? slots + 1 : NULL;
    bool have_prev = false;
    while (slots) {
        struct task t;
        bool got = take_task(p, &t, false);
        if (!got && have_prev) {
            /* nothing due now: decide the file in hand first, it may queue a retry */
            pending_finish(w, prev);
            have_prev = false;
        }
        if (!got)
            got = take_task(p, &t, true);
        if (got)
            pending_start(w, &t, cur);
        if (have_prev)
            pending_finish(w, prev);
        have_prev = false;
        if (!got)
            break;
        struct pending *swap = prev;
        prev = cur;
        cur = swap;
        have_prev = true;
    }
    if (!slots) {
        pthread_mutex_lock(&p->lock);
        if (!p->stats.first_error[0])
            snprintf(p->stats.first_error, sizeof(p->stats.first_error), "out of memory");
        pthread_mutex_unlock(&p->lock);
    }
    free(slots);
    pthread_mutex_lock(&p->lock);
    p->workers_running--;
    pthread_cond_broadcast(&p->done_cond);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void worker_free(struct worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < DEST_MAX; i++) {
        if (w->lanes[i].started)
            pthread_join(w->lanes[i].thread, NULL);
        if (w->lanes[i].fin_started)
            pthread_join(w->lanes[i].fin_thread, NULL);
        dest_conn_free(w->lanes[i].conns[0]);
        dest_conn_free(w->lanes[i].conns[1]);
    }
    for (int i = 0; i < PIPELINE_CHUNKS; i++)
        free(w->buf[i]);
    if (w->src_dir_fd >= 0)
        close(w->src_dir_fd);
    hasher_free(w->hasher);
    db_close(w->db);
    pthread_mutex_destroy(&w->serial);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static int worker_new(struct pipeline *p, struct worker **ret, struct error *err)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return error_set(err, -ENOMEM, "out of memory");
    w->p = p;
    w->src_dir_fd = -1;
    w->serialise = !p->env.cfg->backup.parallel;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->serial, NULL);
    pthread_cond_init(&w->cond, NULL);
    int r = db_open(p->env.cfg->service.database_path, DB_READ_WRITE, &w->db, err);
    if (r < 0)
        goto fail;
    r = hasher_new(&w->hasher, err);
    if (r < 0)
        goto fail;
    for (int i = 0; i < PIPELINE_CHUNKS; i++)
        if (!(w->buf[i] = malloc(PIPELINE_CHUNK))) {
            r = error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
    w->src_dir_fd = open(p->env.card_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->src_dir_fd < 0) {
        int saved = -errno;
        r = check_card_gone(p) ? error_set(err, -ECANCELED, "the card is gone")
                               : error_set_errno(err, saved, "cannot open '%s'", p->env.card_root);
        goto fail;
    }
    for (size_t i = 0; i < p->env.n_dests; i++) {
        struct lane *l = &w->lanes[i];
        l->w = w;
        l->dest = p->env.dests[i];
        l->index = i;
        l->handed = true;
        r = -pthread_create(&l->thread, NULL, lane_main, l);
        if (r < 0) {
            error_set_errno(err, r, "cannot start a thread");
            goto fail;
        }
        l->started = true;
        r = -pthread_create(&l->fin_thread, NULL, finisher_main, l);
        if (r < 0) {
            error_set_errno(err, r, "cannot start a thread");
            goto fail;
        }
        l->fin_started = true;
    }
    *ret = w;
    return 0;
fail:
    worker_free(w);
    return r;
}

/* ---- the pipeline ---- */

int pipeline_start(const struct pipeline_env *env, struct pipeline **ret, struct error *err)
{
    if (env->n_dests == 0 || env->n_dests > DEST_MAX)
        return error_set(err, -EINVAL, "bad number of destinations");
    struct pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return error_set(err, -ENOMEM, "out of memory");
    p->env = *env;
    for (size_t i = 0; i < env->n_dests; i++)
        p->sha1 = p->sha1 || dest_needs_sha1(env->dests[i]);
    pthread_mutex_init(&p->lock, NULL);
    monotime_cond_init(&p->cond);
    monotime_cond_init(&p->done_cond);

    int n = env->cfg->backup.concurrent_files;
    if (n > PIPELINE_WORKERS_MAX)
        n = PIPELINE_WORKERS_MAX;
    if ((size_t)n > env->n_todo)
        n = (int)env->n_todo;
    int r = 0;
    for (int i = 0; i < n; i++) {
        struct worker *w = NULL;
        r = worker_new(p, &w, err);
        if (r < 0)
            break;
        pthread_mutex_lock(&p->lock);
        p->workers_running++;
        p->workers[p->n_workers++] = w;
        pthread_mutex_unlock(&p->lock);
        int pr = pthread_create(&w->thread, NULL, worker_main, w);
        if (pr != 0) {
            pthread_mutex_lock(&p->lock);
            p->workers_running--;
            pthread_mutex_unlock(&p->lock);
            r = error_set_errno(err, -pr, "cannot start a worker thread");
            break;
        }
        w->started = true;
    }
    *ret = p;
    return r;
}

bool pipeline_wait(struct pipeline *p, double seconds)
{
    struct timespec ts = monotime_timespec(monotime_now() + seconds);
    pthread_mutex_lock(&p->lock);
    /* a cancel is a flag set from a signal handler: wake the workers waiting for files */
    if (cancelled(p))
        pthread_cond_broadcast(&p->cond);
    while (p->workers_running > 0)
        if (pthread_cond_timedwait(&p->done_cond, &p->lock, &ts) != 0)
            break;
    bool done = p->workers_running == 0;
    pthread_mutex_unlock(&p->lock);
    return done;
}

void pipeline_stats(struct pipeline *p, struct pipeline_stats *ret)
{
    pthread_mutex_lock(&p->lock);
    *ret = p->stats;
    ret->files_waiting = p->n_waiting;
    ret->files_retrying = p->n_retry;
    ret->card_gone = atomic_load(&p->card_gone);
    pthread_mutex_unlock(&p->lock);
}

void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_workers; i++) {
        if (p->workers[i]->started)
            pthread_join(p->workers[i]->thread, NULL);
        worker_free(p->workers[i]);
    }
    struct task *lists[2] = {p->retry_head, p->waiting_head};
    for (int k = 0; k < 2; k++)
        while (lists[k]) {
            struct task *q = lists[k];
            lists[k] = q->next;
            free(q);
        }
    pthread_cond_destroy(&p->done_cond);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
