/*
 * Backup engine.
 *
 * engine_backup() runs in the caller's thread: it identifies the card, prepares the destinations,
 * opens the session, scans, takes the fast path for files already done, then starts the workers
 * and reports progress until they finish.
 *
 * Each worker owns a database connection, a hasher, and per destination a "lane": a thread with
 * its own destination connection. The worker reads a file in ENGINE_CHUNK pieces into a ring of
 * ENGINE_CHUNKS buffers; every buffer is handed to all lanes and reused when the last lane has
 * written it, so a slow destination slows the reader (back-pressure) but memory never grows.
 * When the read ends the worker knows the hashes: a file whose content is already backed up is a
 * duplicate (lanes abort, temporaries go); otherwise lanes finish (commit + verify).
 */
#include "engine.h"

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

#include "card.h"
#include "dest.h"
#include "hasher.h"
#include "log.h"
#include "media.h"
#include "scanner.h"

enum lane_end { END_NONE, END_FINISH, END_ABORT };

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
    /* Two connections used in turn (file k on conns[k & 1]), so the writer and the finisher
     * never share one: a backend sees each connection used by one thread at a time. */
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
    struct lane_outcome out[2];
};

struct engine;

struct worker {
    struct engine *e;
    pthread_t thread;
    struct db *db;
    struct hasher *hasher;
    int src_dir_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint8_t *buf[ENGINE_CHUNKS];
    size_t len[ENGINE_CHUNKS];
    int refs[ENGINE_CHUNKS];
    uint64_t posted;
    uint64_t job;
    enum lane_end end;
    bool quit;
    bool verify;
    struct hasher_digest digest;
    struct dest_item item;
    struct lane lanes[DEST_MAX];
};

struct engine {
    const struct config *cfg;
    const struct engine_options *opt;
    struct card_identity card;
    int64_t card_id;
    int64_t session_id;
    struct dest **dests;
    size_t n_dests;
    const char *dest_ids[DEST_MAX];
    bool dest_ok[DEST_MAX];
    char dest_error[DEST_MAX][ERROR_MSG_MAX];
    dev_t card_dev;       /* st_dev of the card's root when the session started */
    atomic_bool card_gone;
    struct scan_list *scan;
    size_t *todo; /* indexes into scan->entries still to back up */
    size_t n_todo;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    size_t next_todo;
    size_t workers_running;
    struct db_totals totals;
    uint64_t bytes_read;
    uint64_t bytes_skipped;
    char current[256];
    char first_error[ERROR_MSG_MAX];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool cancelled(const struct engine *e)
{
    return (e->opt->cancel && *e->opt->cancel) || atomic_load(&e->card_gone);
}

/* After an error reading the card: is the card still there? A card pulled out (device gone,
 * filesystem unmounted) ends the session as interrupted instead of failing its files. */
static bool check_card_gone(struct engine *e)
{
    struct stat st;
    if (stat(e->card.root, &st) < 0 || st.st_dev != e->card_dev) {
        if (!atomic_exchange(&e->card_gone, true))
            log_warning("'%s': the card is gone; the session stops and resumes when it is back",
                        e->card.root);
        return true;
    }
    return false;
}

/* Keeps the first failure of the session for its record; rel may be NULL. */
static void note_error(struct engine *e, const char *rel, const char *msg)
{
    pthread_mutex_lock(&e->lock);
    if (!e->first_error[0] && rel)
        snprintf(e->first_error, sizeof(e->first_error), "'%s': %s", rel, msg);
    else if (!e->first_error[0])
        snprintf(e->first_error, sizeof(e->first_error), "%s", msg);
    pthread_mutex_unlock(&e->lock);
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

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    struct worker *w = l->w;
    uint64_t seen = 0;

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
        /* the finisher may still be committing file k-2 on this connection */
        while (l->conn_busy[slot] && !w->quit)
            pthread_cond_wait(&w->cond, &w->lock);
        l->conn_busy[slot] = true;
        pthread_mutex_unlock(&w->lock);

        struct dest_file *file = NULL;
        struct error err = {0};
        int r = w->quit ? error_set(&err, -ECANCELED, "stopping")
                        : dest_open(l->conns[slot], &item, &file, &err);

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
                size_t idx = l->next % ENGINE_CHUNKS;
                bool write = !l->failed;
                pthread_mutex_unlock(&w->lock);
                if (write)
                    r = dest_write(file, w->buf[idx], w->len[idx], &err);
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
            int result = l->failed ? l->wresult : -ECANCELED;
            struct error ferr = l->werr;
            pthread_mutex_unlock(&w->lock);
            dest_abort(file);
            pthread_mutex_lock(&w->lock);
            lane_set_outcome(l, slot, result, &ferr, NULL);
            l->conn_busy[slot] = false;
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
        } else {
            r = dest_finish(file, &digest, verify, &res, &err);
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

static long fd_read_at(void *ctx, uint64_t offset, void *buf, size_t len)
{
    ssize_t n;
    do
        n = pread(*(int *)ctx, buf, len, (off_t)offset);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (long)n;
}

/* Finds a sidecar of se on the card: "<name>.xmp" or "<stem>.xmp", either case. Writes its
 * relative path into buf and returns buf, or NULL when there is none. */
static const char *find_sidecar(int dir_fd, const char *rel, char *buf, size_t size)
{
    const char *dot = strrchr(rel, '.');
    const char *slash = strrchr(rel, '/');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - rel) : strlen(rel);
    static const char *const exts[] = {"xmp", "XMP"};
    for (int whole = 1; whole >= 0; whole--)
        for (size_t i = 0; i < 2; i++) {
            int n = whole ? snprintf(buf, size, "%s.%s", rel, exts[i])
                          : snprintf(buf, size, "%.*s.%s", (int)stem, rel, exts[i]);
            if (n < 0 || (size_t)n >= size)
                continue;
            int fd = scanner_open_beneath(dir_fd, buf, O_RDONLY);
            if (fd >= 0) {
                struct stat st;
                bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
                close(fd);
                if (ok)
                    return buf;
            }
        }
    return NULL;
}

/* Reads the file once, feeding the lanes in need[]. Returns when every writer is done with it;
 * the outcomes come later from collect(*ret_job) (0 when no lane was started). Returns 0, or a
 * negative errno for a failure of the card side (open, read), which fails all lanes of this
 * attempt. *ret_dup is the id of the file with the same content already backed up (0 if none). */
static int stream_file(struct worker *w, const struct scan_entry *se, int64_t file_id,
                       const char *sha1_known, const bool need[DEST_MAX], int64_t *ret_dup,
                       uint64_t *ret_job, struct error *err)
{
    struct engine *e = w->e;
    int r = 0, fd = -1;
    char date_path[16];
    *ret_dup = 0;

    *ret_job = 0;
    fd = scanner_open_beneath(w->src_dir_fd, se->rel_path, O_RDONLY);
    if (fd < 0)
        return check_card_gone(e) ? error_set(err, -ECANCELED, "the card is gone")
                                  : error_set_errno(err, fd, "cannot open it on the card");
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    struct media_info mi;
    struct media_reader rd = {.read_at = fd_read_at, .ctx = &fd, .size = se->size};
    struct error merr;
    int64_t capture;
    const char *kind;
    int32_t utc_offset = 0;
    bool has_offset = false;
    if (media_probe(&rd, se->ext, &mi, &merr) == 0 && mi.capture_time > 0) {
        capture = mi.capture_time;
        kind = media_kind_to_string(mi.kind);
        utc_offset = mi.utc_offset;
        has_offset = mi.has_offset;
    } else {
        capture = media_floating_time(se->mtime_ns / 1000000000);
        kind = media_kind_to_string(media_kind_from_ext(se->ext));
    }
    media_date_path(capture, date_path, sizeof(date_path));
    char sidecar[SCANNER_MAX_PATH];
    const char *sidecar_rel = find_sidecar(w->src_dir_fd, se->rel_path, sidecar, sizeof(sidecar));

    db_file_set_state(w->db, file_id, DB_FILE_BACKING_UP, NULL, NULL);

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
        .date_path = date_path,
        .kind = kind,
        .sha1_known = sha1_known ? sha1_known : "",
        .sidecar_rel = sidecar_rel,
        .card_dir_fd = w->src_dir_fd,
    };
    int n_active = 0;
    unsigned slot = (unsigned)((w->job + 1) & 1);
    for (size_t i = 0; i < e->n_dests; i++) {
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
    for (int i = 0; i < ENGINE_CHUNKS; i++)
        w->refs[i] = 0;
    w->posted = 0;
    w->end = END_NONE;
    w->verify = e->cfg->backup.verify_checksums;
    w->job++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);

    enum lane_end end = END_ABORT;
    hasher_reset(w->hasher, NULL);
    for (;;) {
        if (cancelled(e)) {
            r = error_set(err, -ECANCELED, "interrupted");
            break;
        }
        size_t idx = w->posted % ENGINE_CHUNKS;
        pthread_mutex_lock(&w->lock);
        while (w->refs[idx] > 0)
            pthread_cond_wait(&w->cond, &w->lock);
        int alive = 0;
        for (size_t i = 0; i < e->n_dests; i++)
            alive += w->lanes[i].active && !w->lanes[i].failed;
        pthread_mutex_unlock(&w->lock);
        if (alive == 0) /* every destination failed this file: stop reading */
            break;

        ssize_t n = read(fd, w->buf[idx], ENGINE_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int saved = -errno;
            r = check_card_gone(e) ? error_set(err, -ECANCELED, "the card is gone")
                                   : error_set_errno(err, saved, "cannot read it from the card");
            break;
        }
        if (n == 0) {
            r = hasher_final(w->hasher, &w->digest, err);
            if (r < 0)
                break;
            end = END_FINISH;
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
        pthread_mutex_lock(&e->lock);
        e->bytes_read += (uint64_t)n;
        pthread_mutex_unlock(&e->lock);
    }
    close(fd);

    if (end == END_FINISH) {
        db_file_set_meta(w->db, file_id, w->digest.md5_hex, w->digest.sha1_hex, capture, kind,
                         NULL);
        int64_t dup = 0;
        if (db_hash_backed_up(w->db, w->digest.md5_hex, w->digest.sha1_hex, file_id, e->dest_ids,
                              e->n_dests, &dup, NULL) == 0 &&
            dup > 0) {
            *ret_dup = dup;
            end = END_ABORT;
        } else {
            db_file_set_state(w->db, file_id, DB_FILE_VERIFYING, NULL, NULL);
        }
    }

    /* Wait only until every writer is done with the file: commit and verification go on in
     * the finishers while this worker reads the next file. */
    pthread_mutex_lock(&w->lock);
    w->end = end;
    pthread_cond_broadcast(&w->cond);
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < e->n_dests; i++)
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
    for (size_t i = 0; i < w->e->n_dests; i++) {
        struct lane *l = &w->lanes[i];
        while (!l->out[slot].finished)
            pthread_cond_wait(&w->cond, &w->lock);
        out[i] = l->out[slot];
    }
    pthread_mutex_unlock(&w->lock);
}

static bool retryable(int r)
{
    return r != -ENOSPC && r != -ECANCELED && r != -EINVAL && r != -ENAMETOOLONG &&
           r != -EROFS && r != -EACCES;
}

/* Waits before a retry; false when cancelled meanwhile. Sleeping here is a delay, not a way
 * to wait for an event: the wait ends early on cancel. */
static bool retry_wait(struct engine *e, int attempt)
{
    double delay = e->cfg->backup.retry_delay * pow(2.0, attempt);
    if (delay > 300)
        delay = 300;
    double until = now_s() + delay;
    while (now_s() < until) {
        if (cancelled(e))
            return false;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return !cancelled(e);
}

static void count_outcome(struct engine *e, enum db_outcome o, uint64_t size)
{
    pthread_mutex_lock(&e->lock);
    switch (o) {
    case DB_OUTCOME_COPIED:
        e->totals.files_copied++;
        e->totals.bytes_copied += (int64_t)size;
        break;
    case DB_OUTCOME_SKIPPED:
        e->totals.files_skipped++;
        break;
    case DB_OUTCOME_DUPLICATE:
        e->totals.files_duplicate++;
        break;
    case DB_OUTCOME_FAILED:
        e->totals.files_failed++;
        break;
    }
    pthread_mutex_unlock(&e->lock);
}

/* One file in a worker, from its first attempt to its recorded outcome. A worker holds two:
 * the one being read and the one being finished. */
struct pending {
    const struct scan_entry *se;
    int64_t file_id;
    struct db_file known;
    bool need[DEST_MAX];
    size_t n_need;
    int attempt;
    bool any_new;
    bool dest_unusable; /* a destination could not be used this session: the file is not done */
    /* the attempt in flight */
    bool in_flight;
    uint64_t job;
    int stream_r;
    struct error err;
    int64_t dup;
    bool hashed; /* digest below holds this file's hashes from a complete read */
    struct hasher_digest digest;
    struct lane_outcome out[DEST_MAX];
    /* the verdict */
    bool decided;
    enum db_outcome outcome;
    char last_error[ERROR_MSG_MAX];
};

static void attempt_start(struct worker *w, struct pending *p)
{
    struct engine *e = w->e;
    db_file_set_state(w->db, p->file_id, DB_FILE_SCANNING, NULL, NULL);
    for (size_t i = 0; i < e->n_dests; i++)
        if (p->need[i])
            db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_COPYING, NULL, NULL, NULL);
    error_clear(&p->err);
    p->dup = 0;
    p->stream_r = stream_file(w, p->se, p->file_id, p->known.sha1, p->need, &p->dup, &p->job,
                              &p->err);
    /* w->digest is the next file's once the worker moves on: keep ours for the retries, which
     * can then send the checksum up front */
    if (p->stream_r == 0 && p->job) {
        p->digest = w->digest;
        p->hashed = true;
    }
    p->in_flight = p->job != 0;
    if (!p->in_flight)
        memset(p->out, 0, sizeof(p->out));
}

static void attempt_collect(struct worker *w, struct pending *p)
{
    if (p->in_flight) {
        collect(w, p->job, p->out);
        p->in_flight = false;
    }
}

static void pending_start(struct worker *w, const struct scan_entry *se, struct pending *p)
{
    struct engine *e = w->e;
    struct error err = {0};
    memset(p, 0, sizeof(*p));
    p->se = se;
    p->outcome = DB_OUTCOME_FAILED;

    pthread_mutex_lock(&e->lock);
    snprintf(e->current, sizeof(e->current), "%s", se->rel_path);
    pthread_mutex_unlock(&e->lock);

    struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
    if (db_file_get_or_create(w->db, &key, &p->file_id, &p->known, &err) < 0) {
        snprintf(p->last_error, sizeof(p->last_error), "%s", err.msg);
        p->decided = true;
        return;
    }
    for (size_t i = 0; i < e->n_dests; i++) {
        struct db_copy c;
        p->need[i] = !(db_copy_get(w->db, p->file_id, e->dest_ids[i], &c, NULL) == 0 &&
                       c.state == DB_COPY_COMPLETED);
        if (p->need[i] && !e->dest_ok[i]) { /* destination unusable this session */
            db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_FAILED, NULL,
                        e->dest_error[i], NULL);
            snprintf(p->last_error, sizeof(p->last_error), "%s: %s", dest_label(e->dests[i]),
                     e->dest_error[i]);
            p->need[i] = false;
            p->dest_unusable = true;
        }
        p->n_need += p->need[i];
    }
    if (p->n_need == 0) {
        p->outcome = p->dest_unusable ? DB_OUTCOME_FAILED : DB_OUTCOME_SKIPPED;
        p->decided = true;
        return;
    }
    attempt_start(w, p);
}

/* Applies the outcomes of the collected attempt. Returns true when another attempt is due. */
static bool attempt_apply(struct worker *w, struct pending *p)
{
    struct engine *e = w->e;
    const struct scan_entry *se = p->se;

    if (p->stream_r == -ECANCELED) {
        db_file_set_state(w->db, p->file_id, DB_FILE_NEW, "interrupted", NULL);
        for (size_t i = 0; i < e->n_dests; i++)
            if (p->need[i])
                db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_PENDING, NULL, NULL, NULL);
        p->decided = false; /* not counted: the session ends as interrupted */
        return false;
    }
    if (p->stream_r == 0 && p->dup > 0) {
        for (size_t i = 0; i < e->n_dests; i++) {
            struct db_copy orig;
            if (!p->need[i])
                continue;
            const char *remote =
                db_copy_get(w->db, p->dup, e->dest_ids[i], &orig, NULL) == 0 ? orig.remote : NULL;
            db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_COMPLETED, remote, NULL, NULL);
        }
        db_file_set_duplicate(w->db, p->file_id, p->dup, NULL);
        p->outcome = p->any_new ? DB_OUTCOME_COPIED : DB_OUTCOME_DUPLICATE;
        log_info("'%s': same content already backed up, not copied again", se->rel_path);
        p->last_error[0] = '\0';
        p->decided = true;
        return false;
    }
    bool may_retry = p->stream_r == 0 || retryable(p->stream_r);
    if (p->stream_r < 0) {
        snprintf(p->last_error, sizeof(p->last_error), "%s", p->err.msg);
        for (size_t i = 0; i < e->n_dests; i++)
            if (p->need[i])
                db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_FAILED, NULL, p->err.msg,
                            NULL);
    } else {
        for (size_t i = 0; i < e->n_dests; i++) {
            const struct lane_outcome *o = &p->out[i];
            if (!p->need[i])
                continue;
            if (o->result == 0) {
                db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_COMPLETED, o->res.remote,
                            NULL, NULL);
                if (!o->res.existed)
                    p->any_new = true;
                p->need[i] = false;
                p->n_need--;
            } else {
                snprintf(p->last_error, sizeof(p->last_error), "%s: %s",
                         dest_label(e->dests[i]), o->err.msg);
                db_copy_set(w->db, p->file_id, e->dest_ids[i], DB_COPY_FAILED, NULL, o->err.msg,
                            NULL);
                if (!retryable(o->result))
                    may_retry = false;
            }
        }
    }
    if (p->n_need == 0 && p->dest_unusable) {
        /* copied where it could be; the unusable destination still lacks it */
        p->outcome = DB_OUTCOME_FAILED;
        p->decided = true;
        return false;
    }
    if (p->n_need == 0) {
        p->outcome = p->any_new ? DB_OUTCOME_COPIED : DB_OUTCOME_SKIPPED;
        p->last_error[0] = '\0';
        p->decided = true;
        return false;
    }
    if (!may_retry || p->attempt >= e->cfg->backup.max_retries) {
        p->outcome = DB_OUTCOME_FAILED;
        p->decided = true;
        return false;
    }
    return true;
}

static void pending_record(struct worker *w, struct pending *p)
{
    struct engine *e = w->e;
    const struct scan_entry *se = p->se;
    if (p->outcome == DB_OUTCOME_FAILED) {
        if (!p->last_error[0])
            snprintf(p->last_error, sizeof(p->last_error), "failed");
        log_error("'%s': %s", se->rel_path, p->last_error);
        note_error(e, se->rel_path, p->last_error);
        if (p->file_id)
            db_file_set_state(w->db, p->file_id, DB_FILE_FAILED, p->last_error, NULL);
    } else if (p->outcome != DB_OUTCOME_DUPLICATE && p->file_id) {
        db_file_set_state(w->db, p->file_id, DB_FILE_COMPLETED, NULL, NULL);
    }
    if (p->file_id)
        db_session_file_set(w->db, e->session_id, p->file_id, p->outcome, NULL);
    count_outcome(e, p->outcome, se->size);
}

/* Collects p's attempt, retries it as long as it is due (collecting `other`, the file read
 * meanwhile, first so that its outcome slot is safe), and records the verdict. */
static void pending_finish(struct worker *w, struct pending *p, struct pending *other)
{
    struct engine *e = w->e;
    while (!p->decided) {
        attempt_collect(w, p);
        if (!attempt_apply(w, p)) {
            if (!p->decided)
                return; /* interrupted */
            break;
        }
        log_warning("'%s': %s, will retry (%d of %d)", p->se->rel_path, p->last_error,
                    p->attempt + 1, e->cfg->backup.max_retries);
        if (other)
            attempt_collect(w, other);
        if (!retry_wait(e, p->attempt))
            return;
        p->attempt++;
        if (p->hashed)
            snprintf(p->known.sha1, sizeof(p->known.sha1), "%s", p->digest.sha1_hex);
        attempt_start(w, p);
    }
    pending_record(w, p);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct engine *e = w->e;
    struct pending *slots = calloc(2, sizeof(*slots));
    struct pending *cur = slots, *prev = slots ? slots + 1 : NULL;
    bool have_prev = false;
    for (; slots;) {
        size_t k = (size_t)-1;
        if (!cancelled(e)) {
            pthread_mutex_lock(&e->lock);
            if (e->next_todo < e->n_todo)
                k = e->todo[e->next_todo++];
            pthread_mutex_unlock(&e->lock);
        }
        bool got = k != (size_t)-1;
        if (got)
            pending_start(w, &e->scan->entries[k], cur);
        if (have_prev)
            pending_finish(w, prev, got ? cur : NULL);
        have_prev = false;
        if (!got)
            break;
        struct pending *t = prev;
        prev = cur;
        cur = t;
        have_prev = true;
    }
    if (!slots)
        note_error(e, NULL, "out of memory");
    free(slots);
    pthread_mutex_lock(&e->lock);
    e->workers_running--;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
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
    for (int i = 0; i < ENGINE_CHUNKS; i++)
        free(w->buf[i]);
    if (w->src_dir_fd >= 0)
        close(w->src_dir_fd);
    hasher_free(w->hasher);
    db_close(w->db);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static int worker_new(struct engine *e, struct worker **ret, struct error *err)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return error_set(err, -ENOMEM, "out of memory");
    w->e = e;
    w->src_dir_fd = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    int r = db_open(e->cfg->service.database_path, DB_READ_WRITE, &w->db, err);
    if (r < 0)
        goto fail;
    r = hasher_new(&w->hasher, err);
    if (r < 0)
        goto fail;
    for (int i = 0; i < ENGINE_CHUNKS; i++)
        if (!(w->buf[i] = malloc(ENGINE_CHUNK))) {
            r = error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
    w->src_dir_fd = open(e->card.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->src_dir_fd < 0) {
        int saved = -errno;
        r = check_card_gone(e) ? error_set(err, -ECANCELED, "the card is gone")
                               : error_set_errno(err, saved, "cannot open '%s'", e->card.root);
        goto fail;
    }
    for (size_t i = 0; i < e->n_dests; i++) {
        struct lane *l = &w->lanes[i];
        l->w = w;
        l->dest = e->dests[i];
        l->handed = true;
        for (int k = 0; k < 2; k++) {
            r = dest_conn_new(e->dests[i], &l->conns[k], err);
            if (r < 0)
                goto fail;
        }
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

static void progress_snapshot(struct engine *e, double t0, double *last_t, uint64_t *last_bytes,
                              double *rate, struct engine_progress *p, enum db_session_status st)
{
    double t = now_s();
    pthread_mutex_lock(&e->lock);
    p->session_id = e->session_id;
    p->status = st;
    p->totals = e->totals;
    p->files_done = (uint64_t)(e->totals.files_copied + e->totals.files_skipped +
                               e->totals.files_duplicate + e->totals.files_failed);
    p->bytes_done = e->bytes_read + e->bytes_skipped;
    snprintf(p->current_file, sizeof(p->current_file), "%s", e->current);
    snprintf(p->card_label, sizeof(p->card_label), "%s", e->card.label);
    p->n_dests = e->n_dests < 8 ? e->n_dests : 8;
    for (size_t i = 0; i < p->n_dests; i++) {
        snprintf(p->dests[i].kind, sizeof(p->dests[i].kind), "%s", dest_kind(e->dests[i]));
        p->dests[i].usable = e->dest_ok[i];
    }
    uint64_t bytes = e->bytes_read;
    pthread_mutex_unlock(&e->lock);
    if (t - *last_t >= 0.5) {
        double inst = (double)(bytes - *last_bytes) / (t - *last_t);
        *rate = *rate > 0 ? 0.7 * *rate + 0.3 * inst : inst;
        *last_t = t;
        *last_bytes = bytes;
    }
    p->elapsed_s = t - t0;
    p->rate_bps = *rate;
}

static void report_progress(struct engine *e, const struct engine_progress *p)
{
    if (e->opt->on_progress)
        e->opt->on_progress(p, e->opt->userdata);
}

/* Fast path and the to-do list. In a dry run db may be NULL (no database yet). */
static int classify(struct engine *e, struct db *db, struct error *err)
{
    e->todo = calloc(e->scan->n ? e->scan->n : 1, sizeof(*e->todo));
    if (!e->todo)
        return error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < e->scan->n; i++) {
        const struct scan_entry *se = &e->scan->entries[i];
        struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
        bool done = false;
        if (db) {
            int r = db_file_done(db, &key, e->dest_ids, e->n_dests, &done, err);
            if (r < 0)
                return r;
        }
        if (!done) {
            e->todo[e->n_todo++] = i;
            continue;
        }
        e->totals.files_skipped++;
        e->bytes_skipped += se->size;
        if (!e->opt->dry_run) {
            int64_t id = 0;
            int r = db_file_get_or_create(db, &key, &id, NULL, err);
            if (r == 0)
                r = db_session_file_set(db, e->session_id, id, DB_OUTCOME_SKIPPED, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

struct classify_args {
    struct engine *e;
    struct error *err;
};

static int classify_tx(struct db *db, void *userdata)
{
    struct classify_args *a = userdata;
    return classify(a->e, db, a->err);
}

/* Asks destinations that can tell (Immich's bulk check) which of the files to do, whose SHA-1
 * is known from an earlier read, they already have. Those are recorded as completed there
 * without reading the card; a file then complete everywhere leaves the to-do list as skipped. */
static int precheck_pass(struct engine *e, struct db *db, struct error *err)
{
    size_t with = 0;
    for (size_t d = 0; d < e->n_dests; d++)
        with += e->dest_ok[d] && dest_has_precheck(e->dests[d]);
    if (with == 0 || e->n_todo == 0)
        return 0;

    struct dest_item *items = calloc(e->n_todo, sizeof(*items));
    char(*sha1)[41] = calloc(e->n_todo, sizeof(*sha1));
    char(*dates)[16] = calloc(e->n_todo, sizeof(*dates));
    int64_t *ids = calloc(e->n_todo, sizeof(*ids));
    size_t *pos = calloc(e->n_todo, sizeof(*pos));
    struct dest_precheck *res = calloc(e->n_todo, sizeof(*res));
    int r = 0;
    if (!items || !sha1 || !dates || !ids || !pos || !res) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    size_t n = 0;
    for (size_t k = 0; k < e->n_todo; k++) {
        const struct scan_entry *se = &e->scan->entries[e->todo[k]];
        struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
        struct db_file f;
        r = db_file_get_or_create(db, &key, &ids[n], &f, err);
        if (r < 0)
            goto out;
        if (!f.sha1[0])
            continue;
        snprintf(sha1[n], sizeof(sha1[n]), "%s", f.sha1);
        /* the capture time is known from the read that produced the hash */
        int64_t capture =
            f.capture_time > 0 ? f.capture_time : media_floating_time(se->mtime_ns / 1000000000);
        media_date_path(capture, dates[n], sizeof(dates[n]));
        items[n] = (struct dest_item){.rel_path = se->rel_path, .name = se->name, .size = se->size,
                                      .mtime_ns = se->mtime_ns, .capture_time = capture,
                                      .date_path = dates[n], .kind = f.kind,
                                      .sha1_known = sha1[n], .card_dir_fd = -1};
        pos[n++] = k;
    }
    for (size_t d = 0; d < e->n_dests && n > 0; d++) {
        if (!e->dest_ok[d] || !dest_has_precheck(e->dests[d]))
            continue;
        memset(res, 0, n * sizeof(*res));
        struct error perr;
        if (dest_precheck(e->dests[d], items, n, res, &perr) < 0) {
            log_warning("%s: cannot check which files it already has: %s; uploading them",
                        dest_label(e->dests[d]), perr.msg);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (res[i].present)
                db_copy_set(db, ids[i], e->dest_ids[d], DB_COPY_COMPLETED, res[i].remote, NULL,
                            NULL);
    }
    /* files now complete everywhere leave the list */
    for (size_t i = 0; i < n; i++) {
        const struct scan_entry *se = &e->scan->entries[e->todo[pos[i]]];
        struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
        bool done = false;
        if (db_file_done(db, &key, e->dest_ids, e->n_dests, &done, NULL) == 0 && done) {
            db_file_set_state(db, ids[i], DB_FILE_COMPLETED, NULL, NULL);
            db_session_file_set(db, e->session_id, ids[i], DB_OUTCOME_SKIPPED, NULL);
            e->totals.files_skipped++;
            e->bytes_skipped += se->size;
            e->todo[pos[i]] = (size_t)-1;
        }
    }
    size_t kept = 0;
    for (size_t k = 0; k < e->n_todo; k++)
        if (e->todo[k] != (size_t)-1)
            e->todo[kept++] = e->todo[k];
    e->n_todo = kept;
out:
    free(items);
    free(sha1);
    free(dates);
    free(ids);
    free(pos);
    free(res);
    return r;
}

/* An entry the scan could not list or examine hides files nobody saw: never complete. */
static enum db_session_status final_status(const struct engine *e, bool interrupted)
{
    if (interrupted)
        return DB_SESSION_INTERRUPTED;
    if (e->totals.files_failed == 0 && e->totals.scan_problems == 0)
        return e->totals.files_total == 0 ? DB_SESSION_EMPTY : DB_SESSION_COMPLETED;
    if (e->totals.files_failed == 0 ||
        e->totals.files_copied + e->totals.files_skipped + e->totals.files_duplicate > 0)
        return DB_SESSION_PARTIAL;
    return DB_SESSION_FAILED;
}

static int run_workers(struct engine *e, struct db *db, double t0, struct error *err)
{
    int n_workers = e->cfg->backup.concurrent_files;
    if ((size_t)n_workers > e->n_todo)
        n_workers = (int)e->n_todo;
    struct worker *workers[64] = {0};
    int r = 0, started = 0;
    for (; started < n_workers; started++) {
        r = worker_new(e, &workers[started], err);
        if (r < 0)
            break;
        pthread_mutex_lock(&e->lock);
        e->workers_running++;
        pthread_mutex_unlock(&e->lock);
        int pr = pthread_create(&workers[started]->thread, NULL, worker_main, workers[started]);
        if (pr != 0) {
            pthread_mutex_lock(&e->lock);
            e->workers_running--;
            pthread_mutex_unlock(&e->lock);
            worker_free(workers[started]);
            workers[started] = NULL;
            r = error_set_errno(err, -pr, "cannot start a worker thread");
            break;
        }
    }

    double last_t = t0, rate = 0, last_db = t0;
    uint64_t last_bytes = 0;
    pthread_mutex_lock(&e->lock);
    while (e->workers_running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&e->cond, &e->lock, &ts);
        pthread_mutex_unlock(&e->lock);
        struct engine_progress p = {0};
        progress_snapshot(e, t0, &last_t, &last_bytes, &rate, &p, DB_SESSION_BACKING_UP);
        report_progress(e, &p);
        if (now_s() - last_db >= 1.0) {
            db_session_update(db, e->session_id, DB_SESSION_BACKING_UP, &p.totals, NULL);
            last_db = now_s();
        }
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);

    for (int i = 0; i < started; i++) {
        if (!workers[i])
            continue;
        pthread_join(workers[i]->thread, NULL);
        worker_free(workers[i]);
    }
    /* the card went away before a worker could start: the session is interrupted, not failed */
    return r == -ECANCELED ? 0 : r;
}

/* path, or when it has size bytes or more its start and its end in buf: for a log line or a
 * session's error (the session's problems keep all of it). */
static const char *short_path(const char *path, char *buf, size_t size)
{
    size_t len = strlen(path);
    if (len < size)
        return path;
    int half = (int)(size - 4) / 2;
    snprintf(buf, size, "%.*s...%s", half, path, path + len - (size_t)half);
    return buf;
}

/* Names what the scan could not list or examine: in the log, in the session's record (db NULL
 * in a dry run) and as its first error. The files under those entries were never seen. */
static void record_scan_problems(struct engine *e, struct db *db)
{
    const struct scan_list *l = e->scan;
    if (l->n_symlinks)
        log_info("'%s': %zu symlinks not followed", e->card.root, l->n_symlinks);
    e->totals.scan_problems = (int64_t)l->n_problems;
    for (size_t i = 0; i < l->n_problems_named; i++) {
        const char *rel = l->problems[i].rel_path;
        char what[ERROR_MSG_MAX], shown[480];
        scan_problem_describe(&l->problems[i], what, sizeof(what));
        log_error("'%s': %s", short_path(rel, shown, sizeof(shown)), what);
        struct error derr;
        if (db && db_session_problem_add(db, e->session_id, rel, what, &derr) < 0)
            log_warning("%s", derr.msg);
        if (i == 0) {
            char first[ERROR_MSG_MAX];
            snprintf(first, sizeof(first), "%s (%zu %s of the card could not be read)", what,
                     l->n_problems, l->n_problems == 1 ? "entry" : "entries");
            note_error(e, short_path(rel, shown, 200), first);
        }
    }
    if (l->n_problems)
        log_error("'%s': %zu %s could not be listed or examined (%zu named above): the files "
                  "under %s are not backed up, so the session is partial",
                  e->card.root, l->n_problems, l->n_problems == 1 ? "entry" : "entries",
                  l->n_problems_named, l->n_problems == 1 ? "it" : "them");
    else if (l->n == 0)
        log_warning("'%s': no photos or videos found (no file with a wanted extension of at "
                    "least %llu bytes)",
                    e->card.root, (unsigned long long)e->cfg->files.min_size);
}

int engine_backup(const struct config *cfg, const char *path, const struct engine_options *opt,
                  struct engine_report *ret, struct error *err)
{
    struct engine e = {.cfg = cfg, .opt = opt};
    struct db *db = NULL;
    int r;
    double t0 = now_s();
    pthread_mutex_init(&e.lock, NULL);
    pthread_cond_init(&e.cond, NULL);

    r = card_identify(path, &e.card, err);
    if (r < 0)
        goto out;
    struct stat root_st;
    if (stat(e.card.root, &root_st) < 0) {
        r = error_set_errno(err, -errno, "cannot open '%s'", path);
        goto out;
    }
    e.card_dev = root_st.st_dev;
    r = dest_create_all(cfg, &e.dests, &e.n_dests, err);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < e.n_dests; i++)
        e.dest_ids[i] = dest_id(e.dests[i]);

    if (opt->dry_run) {
        r = db_open(cfg->service.database_path, DB_READ_ONLY, &db, err);
        if (r == -ENOENT) {
            db = NULL;
            r = 0;
        }
        if (r < 0)
            goto out;
        if (db) {
            /* the card may be unknown: then nothing is done yet */
            r = db_card_find(db, e.card.uuid, &e.card_id, NULL);
            if (r < 0)
                e.card_id = -1;
            r = 0;
        }
    } else {
        r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, err);
        if (r < 0)
            goto out;
        db_sessions_interrupt_stale(db, NULL, NULL);
        r = db_card_upsert(db, e.card.uuid, e.card.label, &e.card_id, err);
        if (r < 0)
            goto out;
        r = db_session_begin(db, e.card_id, e.card.root, &e.session_id, err);
        if (r < 0)
            goto out;
        if (opt->on_session_started)
            opt->on_session_started(e.session_id, opt->userdata);
        struct dest_session session = {
            .id = e.session_id,
            .card_uuid = e.card.uuid,
            .card_label = e.card.label,
            .started_at = (int64_t)time(NULL),
        };
        for (size_t i = 0; i < e.n_dests; i++) {
            struct error derr;
            e.dest_ok[i] = dest_prepare(e.dests[i], &session, &derr) == 0;
            if (!e.dest_ok[i]) {
                snprintf(e.dest_error[i], sizeof(e.dest_error[i]), "%s", derr.msg);
                log_error("%s: %s", dest_label(e.dests[i]), derr.msg);
                note_error(&e, NULL, derr.msg);
            }
        }
    }

    if (!opt->dry_run) {
        struct engine_progress p = {0};
        double lt = t0, rate = 0;
        uint64_t lb = 0;
        progress_snapshot(&e, t0, &lt, &lb, &rate, &p, DB_SESSION_SCANNING);
        report_progress(&e, &p);
    }
    log_info("scanning '%s' (card %s)", e.card.root, e.card.uuid);
    r = scanner_scan(e.card.root, cfg->files.extensions, cfg->files.min_size, &e.scan, err);
    if (r < 0 && !opt->dry_run && check_card_gone(&e))
        r = 0; /* pulled before the scan: interrupted, not failed */
    if (r < 0 && opt->dry_run)
        goto out;
    if (r < 0 || !e.scan)
        goto end_session;
    record_scan_problems(&e, opt->dry_run ? NULL : db);
    e.totals.files_total = (int64_t)e.scan->n;
    e.totals.bytes_total = (int64_t)e.scan->bytes;

    if (opt->dry_run) {
        r = classify(&e, e.card_id > 0 ? db : NULL, err);
        if (r < 0)
            goto out;
        e.totals.files_copied = (int64_t)e.n_todo; /* would be copied */
        for (size_t i = 0; i < e.n_todo; i++)
            e.totals.bytes_copied += (int64_t)e.scan->entries[e.todo[i]].size;
        goto out;
    }

    struct classify_args ca = {&e, err};
    r = db_transaction(db, classify_tx, &ca, err);
    if (r < 0)
        goto end_session;
    r = precheck_pass(&e, db, err);
    if (r < 0)
        goto end_session;
    db_session_update(db, e.session_id, DB_SESSION_BACKING_UP, &e.totals, NULL);
    {
        struct engine_progress p = {0};
        double lt = t0, rate = 0;
        uint64_t lb = 0;
        progress_snapshot(&e, t0, &lt, &lb, &rate, &p, DB_SESSION_BACKING_UP);
        report_progress(&e, &p);
    }
    log_info("%zu files (%.1f MB), %lld already backed up, %zu to back up", e.scan->n,
             (double)e.scan->bytes / 1e6, (long long)e.totals.files_skipped, e.n_todo);

    if (e.n_todo > 0)
        r = run_workers(&e, db, t0, err);

end_session:
    for (size_t i = 0; i < e.n_dests; i++) {
        struct error derr;
        if (e.dest_ok[i] && dest_end_session(e.dests[i], &derr) < 0) {
            log_error("%s: %s", dest_label(e.dests[i]), derr.msg);
            note_error(&e, NULL, derr.msg);
        }
    }
    bool interrupted = cancelled(&e);
    enum db_session_status st = r < 0 ? DB_SESSION_FAILED : final_status(&e, interrupted);
    if (r < 0 && !e.first_error[0])
        snprintf(e.first_error, sizeof(e.first_error), "%s", err->msg);
    db_session_end(db, e.session_id, st, &e.totals, e.first_error[0] ? e.first_error : NULL,
                   NULL);
    if (r < 0)
        goto out;
    ret->status = st;

out:
    if (r == 0 || e.session_id) {
        ret->session_id = e.session_id;
        if (r == 0 && opt->dry_run)
            ret->status = final_status(&e, false);
        else if (r < 0)
            ret->status = DB_SESSION_FAILED;
        ret->totals = e.totals;
        ret->duration_s = now_s() - t0;
        snprintf(ret->card_uuid, sizeof(ret->card_uuid), "%s", e.card.uuid);
        snprintf(ret->card_label, sizeof(ret->card_label), "%s", e.card.label);
        snprintf(ret->error, sizeof(ret->error), "%s", e.first_error);
        struct engine_progress p = {0};
        double lt = t0, rate = 0;
        uint64_t lb = 0;
        progress_snapshot(&e, t0, &lt, &lb, &rate, &p, ret->status);
        p.rate_bps = ret->duration_s > 0 ? (double)e.bytes_read / ret->duration_s : 0;
        snprintf(p.error, sizeof(p.error), "%s", e.first_error);
        report_progress(&e, &p);
    }
    scan_list_free(e.scan);
    free(e.todo);
    dest_free_all(e.dests, e.n_dests);
    db_close(db);
    pthread_cond_destroy(&e.cond);
    pthread_mutex_destroy(&e.lock);
    return r;
}
