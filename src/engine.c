/* SPDX-License-Identifier: MIT */
/*
 * Backup engine: the session.
 *
 * engine_backup() runs in the caller's thread: it identifies the card, prepares the destinations
 * (one that cannot be prepared is down, not fatal: its health is probed in the background),
 * opens the session, scans, takes the fast path for files already done, asks destinations that
 * can tell which files they already have, then starts the pipeline and reports progress until it
 * finishes. The session's status follows from the counts: interrupted when cancelled or the card
 * went away, completed when every file is backed up everywhere, partial when some are, failed
 * when none could be.
 *
 * Destination health is the session's: the pipeline reports each copy's failure to it, the
 * prober thread in health.c asks a down destination again (preparing it first if it never was),
 * and up() tells the pipeline to queue the files that wait for it.
 */
#include "engine.h"

#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "card.h"
#include "dest.h"
#include "health.h"
#include "history.h"
#include "log.h"
#include "monotime.h"
#include "media.h"
#include "pipeline.h"
#include "pair.h"
#include "scanner.h"
#include "sidecar.h"

struct engine {
    const struct config *cfg;
    const struct engine_options *opt;
    struct card_identity card;
    int64_t card_id;
    int64_t session_id;
    struct dest_session session;
    struct dest **dests;
    size_t n_dests;
    const char *dest_ids[DEST_MAX];
    const char *dest_labels[DEST_MAX];
    atomic_bool prepared[DEST_MAX]; /* dest_prepare succeeded this session */
    struct health *health;
    dev_t card_dev; /* st_dev of the card's root when the session started */
    bool card_gone; /* found gone before the pipeline ran */
    struct scan_list *scan;
    size_t *partner; /* of each scan entry, its RAW+JPEG partner or PAIR_NONE (pair.h) */
    uint64_t *seq;   /* of each scan entry, its {seq} (pair_seq) */
    size_t earlier;  /* files done whose copies are named by earlier name patterns */
    size_t *todo;    /* indexes into scan->entries still to back up */
    size_t n_todo;
    /* what the session itself decided (the fast path, the precheck) */
    struct db_totals totals;
    uint64_t bytes_skipped;
    uint64_t files_partly; /* failed, but copied to some destinations */
    char first_error[ERROR_MSG_MAX];
    /* progress rate */
    double t0, last_t, rate;
    uint64_t last_bytes;

    pthread_mutex_t lock; /* guards pipeline against the prober's up() */
    struct pipeline *pipeline;
};

static bool cancelled(const struct engine *e)
{
    return e->opt->cancel && atomic_load(e->opt->cancel);
}

static bool check_card_gone(struct engine *e)
{
    struct stat st;
    if (stat(e->card.root, &st) < 0 || st.st_dev != e->card_dev) {
        if (!e->card_gone)
            log_warning("'%s': the card is gone; the session stops and resumes when it is back",
                        e->card.root);
        e->card_gone = true;
    }
    return e->card_gone;
}

/* ---- destination health ---- */

/* Lists the session's verified copies at destination i in its ASC MHL history (history.h). A
 * failure is a warning: the copies are safe, and the next session's end lists them. */
static void seal_history(struct engine *e, struct db *db, size_t i)
{
    struct history_result hr;
    struct error herr = {0};
    if (history_seal(e->cfg, e->dests[i], db, e->session_id, e->card.label, time(NULL), &hr,
                     &herr) < 0)
        log_warning("%s: the ASC MHL history was not updated (the next backup tries again): %s",
                    e->dest_labels[i], herr.msg);
    else if (hr.generation)
        log_info("%s: %zu file(s) listed in ascmhl/%s", e->dest_labels[i], hr.listed, hr.name);
}

/* The prober asks a down destination again: it is prepared first if it never was this session
 * (it was down at the start), else probed (reach, log in, write and remove a probe file). */
static int probe_dest(size_t i, void *userdata, struct error *err)
{
    struct engine *e = userdata;
    if (!atomic_load(&e->prepared[i])) {
        int r = dest_prepare(e->dests[i], &e->session, err);
        if (r == 0)
            atomic_store(&e->prepared[i], true);
        return r;
    }
    char detail[256];
    return dest_probe(e->dests[i], detail, sizeof(detail), err);
}

static void dest_up(size_t i, void *userdata)
{
    struct engine *e = userdata;
    pthread_mutex_lock(&e->lock);
    pipeline_dest_up(e->pipeline, i);
    pthread_mutex_unlock(&e->lock);
}

/* The session ends while a probe waits for a server that hangs. */
static void interrupt_dest(size_t i, void *userdata)
{
    struct engine *e = userdata;
    dest_interrupt(e->dests[i]);
}

static const struct health_ops health_ops = {
    .probe = probe_dest, .up = dest_up, .interrupt = interrupt_dest};

/* ---- progress ---- */

/* Adds to t the counts a pipeline keeps (files copied, skipped, duplicate, failed; bytes
 * copied); the scan's counts are the engine's own. */
static void add_pipeline_counts(struct db_totals *t, const struct db_totals *pipeline)
{
    t->files_copied += pipeline->files_copied;
    t->files_skipped += pipeline->files_skipped;
    t->files_duplicate += pipeline->files_duplicate;
    t->files_failed += pipeline->files_failed;
    t->bytes_copied += pipeline->bytes_copied;
}

/* The one place a progress report is put together. */
static void progress_snapshot(struct engine *e, enum db_session_status st,
                              struct engine_progress *p)
{
    struct pipeline_stats ps = {0};
    pthread_mutex_lock(&e->lock);
    if (e->pipeline)
        pipeline_stats(e->pipeline, &ps);
    pthread_mutex_unlock(&e->lock);
    memset(p, 0, sizeof(*p));
    p->session_id = e->session_id;
    p->status = st;
    p->totals = e->totals;
    add_pipeline_counts(&p->totals, &ps.totals);
    p->files_done = (uint64_t)(p->totals.files_copied + p->totals.files_skipped +
                               p->totals.files_duplicate + p->totals.files_failed);
    p->bytes_done = ps.bytes_read + ps.bytes_skipped + e->bytes_skipped;
    p->files_waiting = ps.files_waiting;
    snprintf(p->current_file, sizeof(p->current_file), "%s", ps.current);
    snprintf(p->card_label, sizeof(p->card_label), "%s", e->card.label);
    p->n_dests = e->n_dests < 8 ? e->n_dests : 8;
    for (size_t i = 0; i < p->n_dests; i++) {
        snprintf(p->dests[i].kind, sizeof(p->dests[i].kind), "%s", dest_kind(e->dests[i]));
        snprintf(p->dests[i].section, sizeof(p->dests[i].section), "%s", dest_section(e->dests[i]));
        snprintf(p->dests[i].id, sizeof(p->dests[i].id), "%s", e->dest_ids[i]);
        struct health_state hs = {.up = true};
        if (e->health)
            health_get(e->health, i, &hs);
        p->dests[i].usable = hs.up;
        snprintf(p->dests[i].problem, sizeof(p->dests[i].problem), "%s", hs.reason);
    }
    double t = monotime_now();
    if (t - e->last_t >= 0.5) {
        double inst = (double)(ps.bytes_read - e->last_bytes) / (t - e->last_t);
        e->rate = e->rate > 0 ? 0.7 * e->rate + 0.3 * inst : inst;
        e->last_t = t;
        e->last_bytes = ps.bytes_read;
    }
    p->elapsed_s = t - e->t0;
    p->rate_bps = e->rate;
    if (st != DB_SESSION_SCANNING && st != DB_SESSION_BACKING_UP) {
        p->rate_bps = p->elapsed_s > 0 ? (double)ps.bytes_read / p->elapsed_s : 0;
        snprintf(p->error, sizeof(p->error), "%s", e->first_error);
    }
}

static void report_progress(struct engine *e, enum db_session_status st,
                            struct engine_progress *ret)
{
    struct engine_progress p;
    progress_snapshot(e, st, &p);
    if (e->opt->on_progress)
        e->opt->on_progress(&p, e->opt->userdata);
    if (ret)
        *ret = p;
}

/* name without a "_N" a collision gave it ("IMG_0001_2.JPG" -> "IMG_0001.JPG") into out. */
static void strip_collision(const char *name, char *out, size_t size)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        dot = name + strlen(name);
    const char *u = dot;
    while (u > name && u[-1] >= '0' && u[-1] <= '9')
        u--;
    if (u < dot && u - 1 > name && u[-1] == '_')
        snprintf(out, size, "%.*s%s", (int)(u - 1 - name), name, dot);
    else
        snprintf(out, size, "%s", name);
}

/* True when the copy of se (recorded as f) at remote on destination d cannot have been named by
 * d's present patterns: it was named under earlier ones and stays there (the copy is found by
 * its content, not by its name). Only destinations that tell a copy's path below their root
 * (dest_rel_of) are asked; values the database does not keep (the camera, the session) match
 * anything (pattern_glob). */
static bool earlier_pattern(const struct engine *e, size_t d, const struct scan_entry *se,
                            const struct db_file *f, const char *remote)
{
    char rel[DEST_REMOTE_MAX], folder[DEST_REMOTE_MAX], base[DEST_NAME_MAX + 1];
    char fg[2 * PATTERN_OUT_MAX], ng[2 * PATTERN_OUT_MAX];
    struct pattern_values v = {.capture_time = f->capture_time,
                               .name = se->name,
                               .card = e->card.label,
                               .md5 = f->md5[0] ? f->md5 : NULL};
    if (dest_rel_of(e->dests[d], remote, rel, sizeof(rel)) < 0 ||
        pattern_glob(dest_folder_pattern(e->dests[d]), &v, fg, sizeof(fg)) < 0 ||
        pattern_glob(dest_file_pattern(e->dests[d]), &v, ng, sizeof(ng)) < 0)
        return false;
    const char *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    snprintf(folder, sizeof(folder), "%.*s", slash ? (int)(slash - rel) : 0, rel);
    if (fnmatch(fg, folder, FNM_PATHNAME) != 0)
        return true;
    strip_collision(name, base, sizeof(base));
    return fnmatch(ng, name, FNM_PATHNAME) != 0 && fnmatch(ng, base, FNM_PATHNAME) != 0;
}

/* Counts into e->earlier the done file se (key) when one of its copies is where earlier name
 * patterns put it. */
static void count_earlier(struct engine *e, struct db *db, const struct scan_entry *se,
                          const struct db_file_key *key)
{
    struct db_file f;
    struct error derr;
    if (db_file_find(db, key, &f, &derr) < 0 || f.duplicate_of > 0)
        return;
    for (size_t d = 0; d < e->n_dests; d++) {
        struct db_copy c;
        if (db_copy_get(db, f.id, e->dest_ids[d], &c, &derr) == 0 && c.remote[0] &&
            earlier_pattern(e, d, se, &f, c.remote)) {
            e->earlier++;
            return;
        }
    }
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
        count_earlier(e, db, se, &key);
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

/* Classifies in one transaction; when it fails (and rolls back), the counts it had changed are
 * undone too. */
static int classify_recorded(struct engine *e, struct db *db, struct error *err)
{
    struct db_totals totals = e->totals;
    uint64_t skipped = e->bytes_skipped;
    struct classify_args ca = {e, err};
    int r = db_transaction(db, classify_tx, &ca, err);
    if (r < 0) {
        e->totals = totals;
        e->bytes_skipped = skipped;
        free(e->todo);
        e->todo = NULL;
        e->n_todo = 0;
    }
    return r;
}

/* Asks destinations that can tell (Immich's bulk check) which of the files to do, whose SHA-1
 * is known from an earlier read, they already have. Those are recorded as completed there
 * without reading the card; a file then complete everywhere leaves the to-do list as skipped. */
static int precheck_pass(struct engine *e, struct db *db, struct error *err)
{
    size_t with = 0;
    for (size_t d = 0; d < e->n_dests; d++)
        with += health_is_up(e->health, d) && dest_has_precheck(e->dests[d]);
    if (with == 0 || e->n_todo == 0)
        return 0;

    struct dest_item *items = calloc(e->n_todo, sizeof(*items));
    char(*sha1)[41] = calloc(e->n_todo, sizeof(*sha1));
    struct pattern_values *vals = calloc(e->n_todo, sizeof(*vals));
    int64_t *ids = calloc(e->n_todo, sizeof(*ids));
    size_t *pos = calloc(e->n_todo, sizeof(*pos));
    struct dest_precheck *res = calloc(e->n_todo, sizeof(*res));
    int r = 0;
    if (!items || !sha1 || !vals || !ids || !pos || !res) {
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
        vals[n] = (struct pattern_values){.capture_time = capture,
                                          .name = se->name,
                                          .card = e->card.label,
                                          .session = e->session_id,
                                          .seq = e->seq[e->todo[k]]};
        items[n] = (struct dest_item){.rel_path = se->rel_path,
                                      .name = se->name,
                                      .size = se->size,
                                      .mtime_ns = se->mtime_ns,
                                      .capture_time = capture,
                                      .values = &vals[n],
                                      .kind = f.kind,
                                      .sha1_known = sha1[n],
                                      .card_dir_fd = -1};
        pos[n++] = k;
    }
    for (size_t d = 0; d < e->n_dests && n > 0; d++) {
        if (!health_is_up(e->health, d) || !dest_has_precheck(e->dests[d]))
            continue;
        memset(res, 0, n * sizeof(*res));
        struct error perr;
        if (dest_precheck(e->dests[d], items, n, res, &perr) < 0) {
            log_warning("%s: cannot check which files it already has: %s; uploading them",
                        dest_label(e->dests[d]), perr.msg);
            continue;
        }
        for (size_t i = 0; i < n && r == 0; i++)
            if (res[i].present)
                r = db_copy_set(db, ids[i], e->dest_ids[d], DB_COPY_COMPLETED, res[i].remote, NULL,
                                err);
        if (r < 0)
            goto out;
    }
    /* files now complete everywhere leave the list, each recorded in one transaction */
    for (size_t i = 0; i < n; i++) {
        const struct scan_entry *se = &e->scan->entries[e->todo[pos[i]]];
        struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
        bool done = false;
        r = db_file_done(db, &key, e->dest_ids, e->n_dests, &done, err);
        if (r < 0)
            goto out;
        if (done) {
            struct db_file_record rec = {
                .file_id = ids[i], .state = DB_FILE_COMPLETED, .outcome = DB_OUTCOME_SKIPPED};
            r = db_file_record(db, e->session_id, &rec, err);
            if (r < 0)
                goto out;
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
    free(vals);
    free(ids);
    free(pos);
    free(res);
    return r;
}

enum db_session_status engine_final_status(const struct db_totals *t, uint64_t files_partly,
                                           bool interrupted)
{
    if (interrupted)
        return DB_SESSION_INTERRUPTED;
    if (t->files_failed == 0 && t->scan_problems == 0)
        return t->files_total == 0 ? DB_SESSION_EMPTY : DB_SESSION_COMPLETED;
    if (t->files_failed == 0 || files_partly > 0 ||
        t->files_copied + t->files_skipped + t->files_duplicate > 0)
        return DB_SESSION_PARTIAL;
    return DB_SESSION_FAILED;
}

bool engine_status_nothing_left(enum db_session_status st)
{
    return st == DB_SESSION_COMPLETED || st == DB_SESSION_EMPTY;
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
        if (i == 0 && !e->first_error[0])
            snprintf(e->first_error, sizeof(e->first_error),
                     "'%s': %.300s (%zu %s of the card could not be read)",
                     short_path(rel, shown, 120), what, l->n_problems,
                     l->n_problems == 1 ? "entry" : "entries");
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

/* Runs the pipeline over the to-do list, reporting progress about 5 times a second and saving
 * the counts in the session about once a second. Returns 0, or the error that kept every worker
 * from starting. */
static int run_pipeline(struct engine *e, struct db *db, struct error *err)
{
    struct pipeline_env env = {
        .cfg = e->cfg,
        .card_root = e->card.root,
        .card_dev = e->card_dev,
        .card_id = e->card_id,
        .session_id = e->session_id,
        .dests = e->dests,
        .dest_ids = e->dest_ids,
        .n_dests = e->n_dests,
        .health = e->health,
        .scan = e->scan,
        .partner = e->partner,
        .seq = e->seq,
        .card_label = e->card.label,
        .todo = e->todo,
        .n_todo = e->n_todo,
        .cancel = e->opt->cancel,
    };
    struct pipeline *p = NULL;
    int r = pipeline_start(&env, &p, err);
    pthread_mutex_lock(&e->lock);
    e->pipeline = p;
    pthread_mutex_unlock(&e->lock);
    if (r < 0)
        log_error("%s", err->msg);

    double last_db = monotime_now();
    while (p && !pipeline_wait(p, 0.2)) {
        struct engine_progress prog;
        report_progress(e, DB_SESSION_BACKING_UP, &prog);
        if (monotime_now() - last_db >= 1.0) {
            /* the counts are saved again at the end: a failure here only delays what status
             * shows meanwhile */
            struct error derr;
            if (db_session_update(db, e->session_id, DB_SESSION_BACKING_UP, &prog.totals, &derr) <
                0)
                log_debug("cannot save the session's progress: %s", derr.msg);
            last_db = monotime_now();
        }
    }
    if (p) {
        struct pipeline_stats ps;
        pipeline_stats(p, &ps);
        add_pipeline_counts(&e->totals, &ps.totals);
        e->bytes_skipped += ps.bytes_skipped;
        e->files_partly = ps.files_partly;
        e->last_bytes = ps.bytes_read; /* the final rate below counts what was read */
        if (ps.card_gone)
            e->card_gone = true;
        if (!e->first_error[0])
            snprintf(e->first_error, sizeof(e->first_error), "%s", ps.first_error);
    }
    /* what still talks to a destination that is down (a temporary being removed from a server
     * that hangs) fails now instead of waiting out its timeout; not one whose server answers
     * (a full share): the removal of a temporary there works and must not be cut */
    for (size_t i = 0; p && i < e->n_dests; i++)
        if (!health_is_up(e->health, i) && !health_down_but_answering(e->health, i))
            dest_interrupt(e->dests[i]);
    /* no up() may reach the pipeline once it is gone */
    pthread_mutex_lock(&e->lock);
    e->pipeline = NULL;
    pthread_mutex_unlock(&e->lock);
    pipeline_free(p);
    /* the card went away before a worker could start: the session is interrupted, not failed */
    return r == -ECANCELED || (r < 0 && p && e->totals.files_copied + e->totals.files_failed > 0)
               ? 0
               : r;
}

/* Names the destinations still down at the end in the session's error (they say more than the
 * first of the files that wait for them). Returns how many are down. */
static size_t summarise_health(struct engine *e)
{
    size_t down = 0;
    char msg[ERROR_MSG_MAX] = "";
    for (size_t i = 0; i < e->n_dests; i++) {
        struct health_state hs;
        health_get(e->health, i, &hs);
        if (hs.up)
            continue;
        if (down++ == 0)
            snprintf(msg, sizeof(msg), "%s is down (%s): its copies wait for the next run",
                     e->dest_labels[i], hs.reason);
    }
    if (down > 0) {
        log_error("%s", msg);
        snprintf(e->first_error, sizeof(e->first_error), "%s", msg);
    }
    return down;
}

/* ---- the dry run ---- */

struct dry {
    struct engine *e;
    struct db *db; /* NULL: no database, or the card is unknown to it */
    int root_fd;
    struct sidecar_set sidecars; /* of the file being looked at */
    char **carried;              /* every sidecar found, strdup'd; sorted once the list is done */
    size_t n_carried, cap_carried;
    struct media_info mi;         /* of the file being looked at */
    struct pattern_values values; /* of the file being looked at (into mi) */
};

const char *engine_verdict_to_string(enum engine_verdict v)
{
    switch (v) {
    case ENGINE_VERDICT_NEW:
        return "new";
    case ENGINE_VERDICT_DONE:
        return "done";
    case ENGINE_VERDICT_DUPLICATE:
        return "duplicate";
    case ENGINE_VERDICT_IGNORED:
        return "ignored";
    case ENGINE_VERDICT_UNREADABLE:
        return "unreadable";
    }
    return "unknown";
}

/* The pattern values (pattern.h) as the pipeline will fill them, into x->values: the capture
 * date from the metadata (recorded when an earlier read hashed it, else read: media_probe reads
 * a few KB), else the one of its RAW+JPEG partner (pair.h), else the modification time; the
 * camera from the metadata, a pair's missing fields from its partner; md5 when an earlier read
 * recorded it. */
static void dry_values(struct dry *x, const struct scan_entry *se, const struct db_file *known,
                       struct engine_dry_file *f)
{
    struct engine *e = x->e;
    size_t idx = (size_t)(se - e->scan->entries);
    size_t partner = e->partner[idx];
    pair_probe_info(x->root_fd, se, &x->mi);
    int64_t capture = known->capture_time > 0  ? known->capture_time
                      : x->mi.capture_time > 0 ? x->mi.capture_time
                                               : 0;
    if (capture <= 0 && partner != PAIR_NONE)
        capture = pair_partner_capture(x->db, e->card_id, x->root_fd, &e->scan->entries[partner]);
    f->date_from_metadata = capture > 0;
    if (!capture)
        capture = media_floating_time(se->mtime_ns / 1000000000);
    if (partner != PAIR_NONE && pair_camera_missing(&x->mi)) {
        struct media_info pm;
        pair_probe_info(x->root_fd, &e->scan->entries[partner], &pm);
        pair_share_camera(&x->mi, &pm);
    }
    media_date_path(capture, f->date_path, sizeof(f->date_path));
    x->values = (struct pattern_values){
        .capture_time = capture,
        .name = se->name,
        .make = x->mi.make,
        .model = x->mi.model,
        .lens = x->mi.lens,
        .serial = x->mi.serial,
        .card = e->card.label,
        .session = e->session_id,
        .seq = e->seq[idx],
        .md5 = known->md5[0] ? known->md5 : NULL,
    };
}

/* The copy of file_id the database records as completed at destination d, if any. */
static bool dry_recorded(struct dry *x, int64_t file_id, size_t d, struct engine_dry_target *t)
{
    struct db_copy c;
    struct error derr;
    if (!x->db || file_id <= 0 || db_copy_get(x->db, file_id, x->e->dest_ids[d], &c, &derr) < 0 ||
        c.state != DB_COPY_COMPLETED)
        return false;
    snprintf(t->where, sizeof(t->where), "%s", c.remote[0] ? c.remote : x->e->dest_ids[d]);
    t->recorded = true;
    return true;
}

/* The sidecars that travel with se (sidecar.h), into f and x->carried. At most SIDECAR_MAX for
 * each file the scan found, so bounded by the scan's own ceiling. */
static int dry_sidecars(struct dry *x, const struct scan_entry *se, struct engine_dry_file *f,
                        struct error *err)
{
    sidecar_find(x->root_fd, se->rel_path, false, &x->sidecars);
    for (size_t i = 0; i < x->sidecars.n && i < DEST_SIDECARS_MAX; i++) {
        if (x->n_carried == x->cap_carried) {
            size_t cap = x->cap_carried ? 2 * x->cap_carried : 64;
            char **grown = realloc(x->carried, cap * sizeof(*grown));
            if (!grown)
                return error_set(err, -ENOMEM, "out of memory");
            x->carried = grown;
            x->cap_carried = cap;
        }
        x->carried[x->n_carried] = strdup(x->sidecars.rel[i]);
        if (!x->carried[x->n_carried])
            return error_set(err, -ENOMEM, "out of memory");
        x->n_carried++;
        f->sidecars[f->n_sidecars++] = x->sidecars.rel[i];
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The verdict on one file the scan found and where it goes (or went) on each destination. */
static int dry_file(struct dry *x, const struct scan_entry *se, struct engine_dry_file *f,
                    struct error *err)
{
    struct engine *e = x->e;
    memset(f, 0, sizeof(*f));
    f->rel_path = se->rel_path;
    f->size = se->size;
    f->verdict = ENGINE_VERDICT_NEW;
    f->n_targets = e->n_dests;
    int sr = dry_sidecars(x, se, f, err);
    if (sr < 0)
        return sr;
    struct db_file known = {0};
    if (x->db) {
        struct db_file_key key = {e->card_id, se->rel_path, (int64_t)se->size, se->mtime_ns};
        bool done = false;
        int r = db_file_done(x->db, &key, e->dest_ids, e->n_dests, &done, err);
        if (r == 0)
            r = db_file_find(x->db, &key, &known, err);
        if (r == -ENOENT)
            r = 0; /* never seen: new */
        else if (r == 0 && done)
            f->verdict = ENGINE_VERDICT_DONE;
        if (r < 0)
            return r;
    }
    /* the same content is already backed up: decidable only with the hashes of an earlier read */
    int64_t original = 0;
    if (f->verdict == ENGINE_VERDICT_NEW && known.md5[0] && (known.sha1[0] || known.xxh128[0])) {
        int r = db_hash_backed_up(x->db, known.md5, known.sha1[0] ? known.sha1 : NULL,
                                  known.xxh128[0] ? known.xxh128 : NULL, known.id, e->dest_ids,
                                  e->n_dests, &original, err);
        if (r < 0)
            return r;
        if (original > 0)
            f->verdict = ENGINE_VERDICT_DUPLICATE;
    } else if (f->verdict == ENGINE_VERDICT_DONE) {
        original = known.duplicate_of; /* found a duplicate by an earlier run, or 0 */
    }
    struct db_file of;
    if (original > 0 && db_file_get(x->db, original, &of, NULL) == 0)
        snprintf(f->duplicate_of, sizeof(f->duplicate_of), "%s", of.rel_path);
    dry_values(x, se, &known, f);
    for (size_t d = 0; d < e->n_dests; d++) {
        struct engine_dry_target *t = &f->targets[d];
        if (dry_recorded(x, known.id, d, t) ||
            (f->verdict == ENGINE_VERDICT_DUPLICATE && dry_recorded(x, original, d, t)))
            continue;
        struct dest_target dt;
        dest_target(e->dests[d], &x->values, se->rel_path, &x->sidecars, &dt);
        snprintf(t->where, sizeof(t->where), "%s", dt.where);
        t->taken = dt.taken;
        snprintf(t->problem, sizeof(t->problem), "%s", dt.problem);
        if (f->verdict == ENGINE_VERDICT_NEW) {
            t->n_sidecars = dt.n_sidecars;
            memcpy(t->sidecars, dt.sidecars, dt.n_sidecars * sizeof(dt.sidecars[0]));
        }
    }
    return 0;
}

/* The ignored files (but the sidecars found with a file, x->carried) and the entries the scan
 * could not read, each with why. */
static void dry_others(struct dry *x)
{
    struct engine *e = x->e;
    const struct scan_list *l = e->scan;
    struct engine_dry_file *f = malloc(sizeof(*f));
    if (!f)
        return;
    if (x->n_carried)
        qsort(x->carried, x->n_carried, sizeof(*x->carried), cmp_str);
    for (size_t i = 0; i < l->n_ignored_named; i++) {
        const struct scan_ignored *ig = &l->ignored[i];
        if (x->n_carried &&
            bsearch(&ig->rel_path, x->carried, x->n_carried, sizeof(*x->carried), cmp_str))
            continue; /* travels with its file */
        memset(f, 0, sizeof(*f));
        f->rel_path = ig->rel_path;
        f->size = ig->size;
        f->verdict = ENGINE_VERDICT_IGNORED;
        if (ig->reason == SCAN_IGNORED_SMALL)
            snprintf(f->why, sizeof(f->why), "smaller than files.min_size (%llu bytes)",
                     (unsigned long long)e->cfg->files.min_size);
        else if (ig->ext[0])
            snprintf(f->why, sizeof(f->why), "extension .%s is not in files.extensions", ig->ext);
        else
            snprintf(f->why, sizeof(f->why), "no extension");
        e->opt->on_dry_file(f, e->opt->userdata);
    }
    if (l->n_ignored > l->n_ignored_named)
        log_info("'%s': %zu more ignored files not named", e->card.root,
                 l->n_ignored - l->n_ignored_named);
    for (size_t i = 0; i < l->n_problems_named; i++) {
        memset(f, 0, sizeof(*f));
        f->rel_path = l->problems[i].rel_path;
        f->verdict = ENGINE_VERDICT_UNREADABLE;
        scan_problem_describe(&l->problems[i], f->why, sizeof(f->why));
        e->opt->on_dry_file(f, e->opt->userdata);
    }
    free(f);
}

/* The dry run: scan and classify against the database if there is one, opened read-only (none
 * is created); reads only the metadata of the files to copy; nothing is written anywhere. */
static int dry_run(struct engine *e, struct error *err)
{
    struct db *db = NULL;
    struct engine_dry_file *f = NULL;
    struct dry *x = NULL;
    int root_fd = -1;
    int r = db_open(e->cfg->service.database_path, DB_READ_NO_TRACE, &db, err);
    if (r == -ENOENT) {
        db = NULL;
        r = 0;
    }
    if (r < 0)
        return r;
    /* the card may be unknown: then nothing is done yet */
    if (db && db_card_find(db, e->card.uuid, &e->card_id, NULL) < 0)
        e->card_id = -1;
    log_info("scanning '%s' (card %s)", e->card.root, e->card.uuid);
    r = scanner_scan_naming(e->card.root, e->cfg->files.extensions, e->cfg->files.min_size,
                            e->opt->on_dry_file ? ENGINE_DRY_IGNORED_MAX : 0, &e->scan, err);
    if (r < 0)
        goto out;
    record_scan_problems(e, NULL);
    r = pair_index(e->scan, &e->partner, err);
    if (r == 0)
        r = pair_seq(e->scan, e->partner, &e->seq, err);
    if (r < 0)
        goto out;
    e->totals.files_total = (int64_t)e->scan->n;
    e->totals.bytes_total = (int64_t)e->scan->bytes;
    f = malloc(sizeof(*f));
    root_fd = open(e->card.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!f || root_fd < 0) {
        r = !f ? error_set(err, -ENOMEM, "out of memory")
               : error_set_errno(err, -errno, "cannot open '%s'", e->card.root);
        goto out;
    }
    x = calloc(1, sizeof(*x));
    if (!x) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    *x = (struct dry){.e = e, .db = e->card_id > 0 ? db : NULL, .root_fd = root_fd};
    for (size_t i = 0; i < e->scan->n && !cancelled(e); i++) {
        const struct scan_entry *se = &e->scan->entries[i];
        r = dry_file(x, se, f, err);
        if (r < 0)
            goto out;
        if (f->verdict == ENGINE_VERDICT_DONE) {
            e->totals.files_skipped++;
        } else if (f->verdict == ENGINE_VERDICT_DUPLICATE) {
            e->totals.files_duplicate++;
        } else {
            e->totals.files_copied++; /* would be copied */
            e->totals.bytes_copied += (int64_t)se->size;
        }
        if (e->opt->on_dry_file)
            e->opt->on_dry_file(f, e->opt->userdata);
    }
    if (e->opt->on_dry_file)
        dry_others(x);
out:
    if (root_fd >= 0)
        close(root_fd);
    for (size_t i = 0; x && i < x->n_carried; i++)
        free(x->carried[i]);
    if (x)
        free(x->carried);
    free(x);
    free(f);
    db_close(db);
    return r;
}

/* Opens the session and prepares the destinations; one that cannot be prepared is down. */
static int session_open(struct engine *e, struct db *db, struct error *err)
{
    struct error derr;
    if (db_sessions_interrupt_stale(db, NULL, &derr) < 0)
        log_warning("cannot repair what an earlier run left: %s", derr.msg);
    int r = db_card_upsert(db, e->card.uuid, e->card.label, &e->card_id, err);
    if (r < 0)
        return r;
    r = db_session_begin(db, e->card_id, e->card.root, &e->session_id, err);
    if (r < 0)
        return r;
    log_set_session(e->session_id); /* this thread's lines; the pipeline's threads set their own */
    if (e->opt->on_session_started)
        e->opt->on_session_started(e->session_id, e->opt->userdata);
    e->session = (struct dest_session){
        .id = e->session_id,
        .card_uuid = e->card.uuid,
        .card_label = e->card.label,
        .started_at = (int64_t)time(NULL),
    };
    r = health_new(e->n_dests, e->dest_labels, &health_ops, e, &e->health, err);
    if (r < 0)
        return r;
    /* every destination is prepared on its own prober thread: one that hangs until its timeout
     * is down after the grace period, and the others start */
    health_start(e->health, HEALTH_START_GRACE_S);
    return 0;
}

int engine_backup(const struct config *cfg, const char *path, const struct engine_options *opt,
                  struct engine_report *ret, struct error *err)
{
    struct engine e = {.cfg = cfg, .opt = opt};
    struct db *db = NULL;
    int r;
    e.t0 = e.last_t = monotime_now();
    pthread_mutex_init(&e.lock, NULL);

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
    for (size_t i = 0; i < e.n_dests; i++) {
        e.dest_ids[i] = dest_id(e.dests[i]);
        e.dest_labels[i] = dest_label(e.dests[i]);
    }

    if (opt->dry_run) {
        r = dry_run(&e, err);
        if (r == 0) {
            ret->session_id = 0;
            ret->status = engine_final_status(&e.totals, 0, false);
        }
        goto report;
    }

    r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, err);
    if (r < 0)
        goto out;
    r = session_open(&e, db, err);
    if (r < 0)
        goto end_session;

    report_progress(&e, DB_SESSION_SCANNING, NULL);
    log_info("scanning '%s' (card %s)", e.card.root, e.card.uuid);
    r = scanner_scan(e.card.root, cfg->files.extensions, cfg->files.min_size, &e.scan, err);
    if (r < 0 && check_card_gone(&e))
        r = 0; /* pulled before the scan: interrupted, not failed */
    if (r < 0 || !e.scan)
        goto end_session;
    record_scan_problems(&e, db);
    r = pair_index(e.scan, &e.partner, err);
    if (r == 0)
        r = pair_seq(e.scan, e.partner, &e.seq, err);
    if (r < 0)
        goto end_session;
    e.totals.files_total = (int64_t)e.scan->n;
    e.totals.bytes_total = (int64_t)e.scan->bytes;

    r = classify_recorded(&e, db, err);
    if (r < 0)
        goto end_session;
    r = precheck_pass(&e, db, err);
    if (r < 0)
        goto end_session;
    r = db_session_update(db, e.session_id, DB_SESSION_BACKING_UP, &e.totals, err);
    if (r < 0)
        goto end_session;
    report_progress(&e, DB_SESSION_BACKING_UP, NULL);
    log_info("%zu files (%.1f MB), %lld already backed up, %zu to back up", e.scan->n,
             (double)e.scan->bytes / 1e6, (long long)e.totals.files_skipped, e.n_todo);
    if (e.earlier > 0)
        log_info("%zu files are already backed up under an earlier folder_pattern or "
                 "file_pattern; they stay where they are and are not copied again",
                 e.earlier);

    if (e.n_todo > 0)
        r = run_pipeline(&e, db, err);

end_session:
    if (e.health) {
        for (size_t i = 0; i < e.n_dests; i++) {
            struct error derr;
            if (atomic_load(&e.prepared[i]) && health_is_up(e.health, i) &&
                dest_end_session(e.dests[i], &derr) < 0) {
                log_error("%s: %s", e.dest_labels[i], derr.msg);
                if (!e.first_error[0])
                    snprintf(e.first_error, sizeof(e.first_error), "%s", derr.msg);
            }
            if (db && atomic_load(&e.prepared[i]) && health_is_up(e.health, i))
                seal_history(&e, db, i);
        }
        ret->dests_down = summarise_health(&e);
    }
    bool interrupted = cancelled(&e) || e.card_gone;
    enum db_session_status st =
        r < 0 ? DB_SESSION_FAILED : engine_final_status(&e.totals, e.files_partly, interrupted);
    if (r < 0 && !e.first_error[0])
        snprintf(e.first_error, sizeof(e.first_error), "%s", err->msg);
    struct error enderr;
    if (e.session_id && db_session_end(db, e.session_id, st, &e.totals,
                                       e.first_error[0] ? e.first_error : NULL, &enderr) < 0) {
        /* the session row keeps saying it runs: the next run marks it interrupted */
        log_error("cannot record the end of the session: %s", enderr.msg);
        if (r == 0)
            r = error_set(err, enderr.code, "cannot record the end of the session: %s", enderr.msg);
        st = DB_SESSION_FAILED;
    }
    ret->status = st;

report:
    if (r == 0 || e.session_id) {
        ret->session_id = e.session_id;
        ret->totals = e.totals;
        ret->duration_s = monotime_now() - e.t0;
        snprintf(ret->card_uuid, sizeof(ret->card_uuid), "%s", e.card.uuid);
        snprintf(ret->card_label, sizeof(ret->card_label), "%s", e.card.label);
        snprintf(ret->error, sizeof(ret->error), "%s", e.first_error);
        report_progress(&e, ret->status, NULL);
    }
out:
    health_free(e.health);
    scan_list_free(e.scan);
    free(e.partner);
    free(e.seq);
    free(e.todo);
    dest_free_all(e.dests, e.n_dests);
    db_close(db);
    pthread_mutex_destroy(&e.lock);
    log_set_session(0);
    return r;
}
