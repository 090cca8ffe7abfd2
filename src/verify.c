/* SPDX-License-Identifier: MIT */
/*
 * Checking stored copies again (verify.h). One loop: a page of copies from the database, each
 * checked on its destination (read back and hashed, or looked up by checksum), its verdict
 * recorded at once (so a crash loses at most the copy in hand), and on a destination with a
 * history the re-hashed files listed in a generation of checks written at the end.
 */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "hasher.h"
#include "history.h"

#define PROGRESS_EVERY_S 0.25
#define PACE_STEP_S 0.1 /* a throttling sleep is cut in steps so a cancel is seen soon */
#define DOWN_AFTER 3    /* errors in a row after which a destination is not asked again */

enum db_verify_result verify_compare(int64_t want_size, const char *want_hash, uint64_t got_size,
                                     const char *got_hash, const char *hash_name, char *detail,
                                     size_t detail_size)
{
    if (detail_size)
        detail[0] = '\0';
    if (want_size < 0 || got_size != (uint64_t)want_size) {
        snprintf(detail, detail_size, "size %" PRIu64 ", recorded %" PRId64, got_size, want_size);
        return DB_VERIFY_CHANGED;
    }
    if (!want_hash || !got_hash || strcasecmp(want_hash, got_hash) != 0) {
        snprintf(detail, detail_size, "%s %s, recorded %s", hash_name, got_hash ? got_hash : "-",
                 want_hash ? want_hash : "-");
        return DB_VERIFY_CHANGED;
    }
    return DB_VERIFY_OK;
}

double verify_pace(uint64_t bytes, double elapsed_s, double rate_bps)
{
    if (rate_bps <= 0)
        return 0;
    double due = (double)bytes / rate_bps;
    return due > elapsed_s ? due - elapsed_s : 0;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One destination as the run sees it. */
struct vdest {
    struct dest *d;
    struct history_gen *gen; /* started at the first file to list; NULL without a history */
    bool history;            /* cfg keeps one there */
    bool history_failed;
    int errors_in_a_row; /* DOWN_AFTER: the rest of its copies are not tried (each would wait
                          * for the server's timeout), only counted as errors */
    char last_error[ERROR_MSG_MAX];
};

struct run {
    const struct config *cfg;
    struct db *db;
    const struct verify_opts *o;
    struct verify_summary *sum;
    struct vdest v[DEST_MAX];
    size_t n;
    struct hasher *h;        /* MD5, for a copy recorded without XXH3-128 */
    struct hasher_xxh128 *x; /* XXH3-128, for a copy recorded with it */
    bool by_xxh;             /* the copy being read is hashed by x */
    double start_s, last_progress_s;
    uint64_t copy_bytes; /* of the copy being read */
    const char *cur_label, *cur_remote;
};

static bool cancelled(const struct run *r)
{
    return r->o->cancel && atomic_load(r->o->cancel);
}

static void progress(struct run *r, bool force)
{
    if (!r->o->on_progress)
        return;
    double now = mono_s();
    if (!force && now - r->last_progress_s < PROGRESS_EVERY_S)
        return;
    r->last_progress_s = now;
    struct verify_progress p = {.counts = &r->sum->counts,
                                .bytes_read = r->sum->bytes_read,
                                .elapsed_s = now - r->start_s,
                                .dest_label = r->cur_label ? r->cur_label : "",
                                .remote = r->cur_remote ? r->cur_remote : ""};
    r->o->on_progress(&p, r->o->userdata);
}

/* Throttles to rate_bps, in short sleeps that look at the cancel flag. */
static int pace(struct run *r)
{
    for (;;) {
        if (cancelled(r))
            return -ECANCELED;
        double wait = verify_pace(r->sum->bytes_read, mono_s() - r->start_s, r->o->rate_bps);
        if (wait <= 0)
            return 0;
        if (wait > PACE_STEP_S)
            wait = PACE_STEP_S;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static int on_chunk(const void *buf, size_t len, void *arg)
{
    struct run *r = arg;
    struct error err = {0};
    if (r->by_xxh) {
        hasher_xxh128_update(r->x, buf, len);
    } else {
        int e = hasher_update(r->h, buf, len, &err);
        if (e < 0)
            return e;
    }
    r->copy_bytes += len;
    r->sum->bytes_read += len;
    progress(r, false);
    return pace(r);
}

/* Reads a copy back: the verdict, or -ECANCELED. err gets the detail of an error verdict. A copy
 * recorded with its XXH3-128 (every file hashed since schema 9) is compared by it, a fraction of
 * MD5's CPU (docs/performance.md) for the same certainty about an accidental change; older
 * records and sidecars by MD5. got gets the hash computed, the other ones "". */
static int check_read(struct run *r, struct vdest *vd, const struct db_verify_copy *c,
                      enum db_verify_result *ret, char *detail, size_t detail_size,
                      struct hasher_digest *got)
{
    struct error err = {0};
    r->copy_bytes = 0;
    r->by_xxh = c->xxh128[0] != '\0';
    int e = 0;
    if (r->by_xxh) {
        hasher_xxh128_free(r->x);
        r->x = NULL;
        e = hasher_xxh128_new(&r->x, &err);
    } else {
        e = hasher_set_sha1(r->h, false, &err); /* compared by MD5; SHA-1 is no use here */
    }
    if (e == 0)
        e = dest_read_copy(vd->d, c->remote, on_chunk, r, &err);
    if (e == -ECANCELED)
        return e;
    if (e == -ENOENT) {
        snprintf(detail, detail_size, "no such file");
        *ret = DB_VERIFY_MISSING;
        return 0;
    }
    if (e == 0 && r->by_xxh)
        hasher_xxh128_final(r->x, got->xxh128_hex);
    else if (e == 0)
        e = hasher_final(r->h, got, &err);
    if (e < 0) {
        snprintf(detail, detail_size, "%s", err.msg[0] ? err.msg : strerror(-e));
        *ret = DB_VERIFY_ERROR;
        return 0;
    }
    *ret = r->by_xxh ? verify_compare(c->size, c->xxh128, r->copy_bytes, got->xxh128_hex,
                                      "XXH3-128", detail, detail_size)
                     : verify_compare(c->size, c->md5, r->copy_bytes, got->md5_hex, "MD5", detail,
                                      detail_size);
    return 0;
}

static void check_lookup(struct vdest *vd, const struct db_verify_copy *c,
                         enum db_verify_result *ret, char *detail, size_t detail_size)
{
    struct error err = {0};
    struct dest_lookup l = {0};
    detail[0] = '\0';
    if (!c->sha1[0]) { /* not computed: no destination of its session needed it */
        snprintf(detail, detail_size, "no SHA-1 recorded to look the copy up by");
        *ret = DB_VERIFY_ERROR;
        return;
    }
    int e = dest_lookup_copy(vd->d, c->remote, c->sha1, &l, &err);
    if (e < 0) {
        snprintf(detail, detail_size, "%s", err.msg[0] ? err.msg : strerror(-e));
        *ret = DB_VERIFY_ERROR;
    } else if (l.present) {
        if (strcmp(l.remote, c->remote) != 0)
            snprintf(detail, detail_size, "the content is now %s", l.remote);
        *ret = DB_VERIFY_OK;
    } else {
        snprintf(detail, detail_size, "%s",
                 l.trashed ? "in the server's trash" : "not on the server");
        *ret = DB_VERIFY_MISSING;
    }
}

/* Lists a re-hashed copy in its destination's generation of checks. A copy no generation
 * lists yet is history_seal's to list (as original). */
static void history_note(struct run *r, struct vdest *vd, const struct db_verify_copy *c, bool ok,
                         const struct hasher_digest *got)
{
    if (!vd->history || vd->history_failed || c->mhl_generation <= 0 || r->o->no_history)
        return;
    struct error err = {0};
    int e = 0;
    if (!vd->gen) {
        char comment[128];
        snprintf(comment, sizeof(comment), "SnapSync verify run %" PRId64, r->sum->run_id);
        e = history_gen_new(r->cfg, vd->d, comment, time(NULL), &vd->gen, &err);
    }
    struct history_check hc = {.remote = c->remote,
                               .size = ok ? (uint64_t)c->size : r->copy_bytes,
                               .mtime_ns = c->mtime_ns,
                               /* the hash computed again (check_read), no other: a verified
                                * entry says that hash was recomputed and matched */
                               .md5 = r->by_xxh ? NULL : got->md5_hex,
                               .xxh128 = r->by_xxh ? got->xxh128_hex : NULL,
                               .ok = ok,
                               .at = time(NULL)};
    if (e == 0)
        e = history_gen_add(vd->gen, &hc, &err);
    if (e < 0) {
        vd->history_failed = true;
        if (!r->sum->history_error[0])
            snprintf(r->sum->history_error, sizeof(r->sum->history_error), "%s: %s",
                     dest_label(vd->d), err.msg);
    }
}

static struct vdest *find_dest(struct run *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(dest_id(r->v[i].d), id) == 0)
            return &r->v[i];
    return NULL;
}

/* Checks one copy and records it. Returns 0, -ECANCELED, or the database's error. */
static int check_one(struct run *r, const struct db_verify_copy *c, struct error *err)
{
    struct vdest *vd = find_dest(r, c->dest);
    enum dest_check_kind kind = vd ? dest_check_kind(vd->d) : DEST_CHECK_NONE;
    if (kind == DEST_CHECK_NONE) {
        r->sum->skipped++;
        return 0;
    }
    r->cur_label = dest_label(vd->d);
    r->cur_remote = c->remote;
    enum db_verify_result res;
    char detail[ERROR_MSG_MAX + 64];
    struct hasher_digest got = {0};
    if (vd->errors_in_a_row >= DOWN_AFTER) {
        snprintf(detail, sizeof(detail), "not tried: %d checks in a row failed (%s)", DOWN_AFTER,
                 vd->last_error);
        res = DB_VERIFY_ERROR;
    } else if (kind == DEST_CHECK_READ) {
        int e = check_read(r, vd, c, &res, detail, sizeof(detail), &got);
        if (e < 0)
            return e;
        if (res == DB_VERIFY_OK || res == DB_VERIFY_CHANGED)
            history_note(r, vd, c, res == DB_VERIFY_OK, &got);
    } else {
        check_lookup(vd, c, &res, detail, sizeof(detail));
    }
    if (res != DB_VERIFY_ERROR) {
        vd->errors_in_a_row = 0;
    } else if (vd->errors_in_a_row < DOWN_AFTER) {
        vd->errors_in_a_row++;
        snprintf(vd->last_error, sizeof(vd->last_error), "%.*s", (int)sizeof(vd->last_error) - 1,
                 detail);
    }
    int e = db_verify_result_add(r->db, r->sum->run_id, c->file_id, c->dest, res,
                                 detail[0] ? detail : NULL, (int64_t)time(NULL),
                                 dest_check_kind(vd->d) == DEST_CHECK_READ, err);
    if (e < 0)
        return e;
    struct db_verify_counts *k = &r->sum->counts;
    k->checked++;
    k->ok += res == DB_VERIFY_OK;
    k->missing += res == DB_VERIFY_MISSING;
    k->changed += res == DB_VERIFY_CHANGED;
    k->errors += res == DB_VERIFY_ERROR;
    if (res != DB_VERIFY_OK && r->o->on_problem) {
        struct verify_problem p = {.dest_id = c->dest,
                                   .dest_label = dest_label(vd->d),
                                   .remote = c->remote,
                                   .rel_path = c->rel_path,
                                   .file_id = c->file_id,
                                   .result = res,
                                   .detail = detail};
        r->o->on_problem(&p, r->o->userdata);
    }
    progress(r, true);
    return 0;
}

void verify_scope_text(const struct verify_scope *s, char *out, size_t size)
{
    if (s->name) {
        snprintf(out, size, "%s", s->name);
    } else if (s->session_id > 0) {
        snprintf(out, size, "session %" PRId64, s->session_id);
    } else if (s->since > 0) {
        time_t t = (time_t)s->since;
        struct tm tm;
        char when[32] = "?";
        if (gmtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(out, size, "since %s", when);
    } else {
        snprintf(out, size, "all");
    }
}

/* Writes the generations of checks; the first failure goes to history_error. */
static void history_finish(struct run *r)
{
    for (size_t i = 0; i < r->n; i++) {
        struct vdest *vd = &r->v[i];
        if (!vd->gen)
            continue;
        struct error err = {0};
        if (!vd->history_failed && history_gen_commit(vd->gen, NULL, &err) < 0 &&
            !r->sum->history_error[0])
            snprintf(r->sum->history_error, sizeof(r->sum->history_error), "%s: %s",
                     dest_label(vd->d), err.msg);
        r->sum->generations += history_gen_written(vd->gen);
        history_gen_free(vd->gen);
        vd->gen = NULL;
    }
}

/* ---- extra files ---- */

struct extra_walk {
    struct run *r;
    struct vdest *vd;
    struct error *err; /* the database's error, which ends the run */
    bool db_failed;
};

static int on_file(const char *remote, void *arg)
{
    struct extra_walk *x = arg;
    struct run *r = x->r;
    if (cancelled(r))
        return -ECANCELED;
    r->cur_remote = remote;
    progress(r, false);
    bool known = false;
    const char *id = dest_id(x->vd->d);
    int e = db_remote_known(r->db, id, remote, &known, x->err);
    if (e == 0 && !known) {
        r->sum->counts.extra++;
        e = db_verify_extra_add(r->db, r->sum->run_id, id, remote, x->err);
        if (e == 0 && r->o->on_problem) {
            struct verify_problem p = {.dest_id = id,
                                       .dest_label = dest_label(x->vd->d),
                                       .remote = remote,
                                       .rel_path = "",
                                       .result = DB_VERIFY_EXTRA,
                                       .detail = "no copy or sidecar is recorded there"};
            r->o->on_problem(&p, r->o->userdata);
        }
    }
    if (e < 0)
        x->db_failed = true;
    return e;
}

/* Lists each destination in scope that can list its files for files the database does not
 * know. Returns 0, -ECANCELED, or the database's error; a destination that cannot be listed
 * goes to extra_error. */
static int find_extras(struct run *r, const struct verify_scope *scope, struct error *err)
{
    for (size_t i = 0; i < r->n; i++) {
        struct vdest *vd = &r->v[i];
        if (!dest_can_walk(vd->d) || (scope->dest_id && strcmp(scope->dest_id, dest_id(vd->d))))
            continue;
        r->cur_label = dest_label(vd->d);
        struct extra_walk x = {.r = r, .vd = vd, .err = err};
        struct error werr = {0};
        int e = dest_walk(vd->d, on_file, &x, &werr);
        if (e == -ECANCELED || x.db_failed)
            return e;
        if (e < 0 && !r->sum->extra_error[0])
            snprintf(r->sum->extra_error, sizeof(r->sum->extra_error), "%s: %s", dest_label(vd->d),
                     werr.msg);
    }
    return 0;
}

static bool whole_scope(const struct verify_scope *s)
{
    return s->session_id == 0 && s->since == 0 && s->checked_before == 0 && s->made_before == 0 &&
           !s->name;
}

int verify_run(const struct config *cfg, struct db *db, struct dest *const *dests, size_t n,
               const struct verify_scope *scope, const struct verify_opts *opts,
               struct verify_summary *ret, struct error *err)
{
    memset(ret, 0, sizeof(*ret));
    ret->status = DB_VERIFY_FAILED;
    if (!cfg || !db || (!dests && n) || n > DEST_MAX || !scope || !opts || opts->max_copies < 0 ||
        opts->rate_bps < 0 || scope->session_id < 0 || scope->since < 0 || scope->made_before < 0)
        return error_set(err, -EINVAL, "invalid verification scope");
    struct run r = {.cfg = cfg, .db = db, .o = opts, .sum = ret, .n = n};
    for (size_t i = 0; i < n; i++)
        r.v[i] = (struct vdest){.d = dests[i], .history = history_enabled(cfg, dests[i])};
    struct db_verify_copy *page = calloc(VERIFY_PAGE, sizeof(*page));
    int e = page ? hasher_new(&r.h, err) : error_set(err, -ENOMEM, "out of memory");
    char text[64];
    verify_scope_text(scope, text, sizeof(text));
    if (e == 0)
        e = db_verify_run_begin(db, text, scope->dest_id, &ret->run_id, err);
    if (e < 0)
        goto out;
    r.start_s = mono_s();
    struct db_verify_filter f = {.session_id = scope->session_id,
                                 .since = scope->since,
                                 .dest = scope->dest_id,
                                 .checked_before =
                                     scope->checked_before > 0 ? scope->checked_before : INT64_MAX,
                                 .run_id = ret->run_id,
                                 .made_before = scope->made_before};
    struct db_verify_cursor local = {0};
    struct db_verify_cursor *cur = opts->resume ? opts->resume : &local;
    bool stopped = false, bounded = false;
    while (e == 0 && !stopped) {
        size_t got = 0, want = VERIFY_PAGE;
        if (opts->max_copies > 0) {
            int64_t left = opts->max_copies - ret->counts.checked;
            if (left <= 0) {
                bounded = true;
                break;
            }
            if ((int64_t)want > left)
                want = (size_t)left;
        }
        struct db_verify_cursor before = *cur;
        e = db_verify_copies_page(db, &f, cur, page, want, &got, err);
        if (e < 0 || got == 0)
            break;
        for (size_t i = 0; i < got && e == 0; i++) {
            if (!cancelled(&r)) {
                e = check_one(&r, &page[i], err);
                if (e != -ECANCELED)
                    continue;
                e = 0; /* the copy in hand is looked at again by the next run */
            }
            /* stopped before page[i]: the walk resumes there, not after the whole page */
            stopped = true;
            if (i == 0) {
                *cur = before;
            } else {
                cur->started = true;
                cur->checked_at = page[i - 1].checked_at;
                cur->file_id = page[i - 1].file_id;
                snprintf(cur->dest, sizeof(cur->dest), "%s", page[i - 1].dest);
            }
            break;
        }
    }
    if (e == 0 && !stopped && !bounded && whole_scope(scope)) {
        e = find_extras(&r, scope, err);
        if (e == -ECANCELED) {
            e = 0;
            stopped = true;
        }
    }
    r.cur_label = r.cur_remote = NULL;
    ret->elapsed_s = mono_s() - r.start_s;
    history_finish(&r);
    if (e < 0) {
        ret->status = DB_VERIFY_FAILED;
    } else if (stopped) {
        ret->status = DB_VERIFY_INTERRUPTED;
    } else {
        ret->complete = !bounded;
        const struct db_verify_counts *k = &ret->counts;
        ret->status = bounded                                              ? DB_VERIFY_PAUSED
                      : k->missing + k->changed + k->errors + k->extra > 0 ? DB_VERIFY_PROBLEMS
                                                                           : DB_VERIFY_CLEAN;
    }
    if (bounded && ret->counts.missing + ret->counts.changed + ret->counts.errors > 0)
        ret->status = DB_VERIFY_PROBLEMS; /* a slice that found something says so */
    struct error end_err = {0};
    int e2 = db_verify_run_end(db, ret->run_id, &ret->counts, ret->status, e < 0 ? &end_err : err);
    if (e == 0)
        e = e2;
    progress(&r, true);
out:
    hasher_free(r.h);
    hasher_xxh128_free(r.x);
    free(page);
    return e;
}
