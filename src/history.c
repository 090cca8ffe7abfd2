/* SPDX-License-Identifier: MIT */
/* The ASC MHL history of a file destination (history.h). */
#include "history.h"

#include "jsonout.h"
#include "mhl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* SnapSync's own entries of a tree, which are no files of the history */
static const char *const ignore[] = {".snapsync-tmp", ".snapsync-tmp/"};

/* the sessions of this process take turns; other processes through the lock file */
static pthread_mutex_t seal_lock = PTHREAD_MUTEX_INITIALIZER;

bool history_enabled(const struct config *cfg, const struct dest *d)
{
    if (!dest_has_meta(d))
        return false;
    const char *section = dest_section(d);
    if (strcmp(section, "unraid") == 0)
        return cfg->unraid.mhl;
    if (strcmp(section, "local") == 0)
        return cfg->local.mhl;
    return false;
}

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_write(void *userdata, const void *p, size_t len)
{
    struct buf *b = userdata;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + len)
            cap *= 2;
        char *n = realloc(b->data, cap);
        if (!n)
            return -ENOMEM;
        b->data = n;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}

/* What one generation collects while the database lists the unlisted copies. */
struct collect {
    struct dest *d;
    struct mhl_writer *w;
    int64_t *ids; /* every unlisted copy, also those listed before (they get the number too) */
    size_t n, cap;
    size_t listed;
    char **sidecars; /* remotes of the unlisted sidecars (malloc'd), also those listed before */
    size_t n_sidecars, cap_sidecars;
    struct error *err;
};

/* Lists the copy or sidecar u in the generation. */
static int collect_entry(struct collect *c, const struct db_unsealed *u)
{
    char rel[4096];
    if (dest_rel_of(c->d, u->remote, rel, sizeof(rel)) < 0)
        return 0; /* a copy outside today's root (the root was moved): not of this tree (it is
                   * marked with the generation all the same, so it is not looked at again) */
    int64_t mtime = u->mtime_ns / 1000000000;
    if (u->mtime_ns < 0 && u->mtime_ns % 1000000000)
        mtime--;
    struct mhl_entry e = {.path = rel,
                          .size = (uint64_t)u->size,
                          .mtime = mtime,
                          .md5 = u->md5[0] ? u->md5 : NULL,
                          .sha1 = u->sha1[0] ? u->sha1 : NULL,
                          .xxh128 = u->xxh128[0] ? u->xxh128 : NULL,
                          .action = MHL_ACTION_ORIGINAL,
                          .hashdate = (time_t)u->verified_at};
    struct error eerr = {0};
    int r = mhl_writer_add(c->w, &e, &eerr);
    if (r == -EINVAL)
        return 0; /* a name XML cannot hold (not UTF-8): left out of the history, marked */
    if (r < 0)
        return error_set(c->err, r, "%s", eerr.msg);
    c->listed++;
    return 0;
}

static int collect_one(const struct db_unsealed *u, void *arg)
{
    struct collect *c = arg;
    if (c->n >= HISTORY_GENERATION_MAX)
        return 0; /* the rest in the next generation */
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        int64_t *n = realloc(c->ids, cap * sizeof(*n));
        if (!n)
            return error_set(c->err, -ENOMEM, "out of memory");
        c->ids = n;
        c->cap = cap;
    }
    c->ids[c->n++] = u->file_id;
    if (u->listed_before)
        return 0;
    return collect_entry(c, u);
}

/* A sidecar next to a copy (db_sidecars_unsealed: once per remote), as a file of its own. */
static int collect_sidecar(const struct db_unsealed *u, void *arg)
{
    struct collect *c = arg;
    if (c->n + c->n_sidecars >= HISTORY_GENERATION_MAX)
        return 0; /* the rest in the next generation */
    if (c->n_sidecars == c->cap_sidecars) {
        size_t cap = c->cap_sidecars ? c->cap_sidecars * 2 : 64;
        char **n = realloc(c->sidecars, cap * sizeof(*n));
        if (!n)
            return error_set(c->err, -ENOMEM, "out of memory");
        c->sidecars = n;
        c->cap_sidecars = cap;
    }
    char *remote = strdup(u->remote);
    if (!remote)
        return error_set(c->err, -ENOMEM, "out of memory");
    c->sidecars[c->n_sidecars++] = remote;
    if (u->listed_before)
        return 0;
    return collect_entry(c, u);
}

/* The highest generation number among the files of ascmhl/. */
static int note_seq(const char *name, void *arg)
{
    unsigned *max = arg;
    unsigned seq = mhl_generation_seq(name);
    if (seq > *max)
        *max = seq;
    return 0;
}

/* Takes the lock file next to the database (any SnapSync process of this machine). */
static int lock_file(const struct config *cfg, struct error *err)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s.mhl-lock", cfg->service.database_path);
    if (n < 0 || (size_t)n >= sizeof(path))
        return error_set(err, -ENAMETOOLONG, "database path too long for its lock file");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open the lock file '%s'", path);
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            int r = error_set_errno(err, -errno, "cannot lock '%s'", path);
            close(fd);
            return r;
        }
    }
    return fd;
}

/* Puts the generation document gen (whose C4 ID is c4) into d's history under the lock: the
 * generation file under the next free number (never replacing one), then the chain. *ret_g
 * names it. */
static int publish_locked(struct dest *d, time_t created, const struct buf *gen, const char *c4,
                          struct mhl_chain_gen *ret_g, struct error *err)
{
    struct buf chain_doc = {0};
    struct mhl_chain chain = {0};
    char *text = NULL;
    size_t len = 0;
    /* the chain as it is: missing is a new history, unreadable is left alone */
    int r = dest_meta_read(d, MHL_DIR "/" MHL_CHAIN_NAME, MHL_CHAIN_MAX_BYTES, &text, &len, err);
    if (r == 0) {
        r = mhl_chain_parse(text, len, &chain, err);
        if (r < 0) {
            error_prefix(err, "the ASC MHL history of %s is left as it is", dest_label(d));
            goto out;
        }
    } else if (r != -ENOENT) {
        goto out;
    }
    unsigned seq = mhl_chain_last_seq(&chain);
    r = dest_meta_list(d, MHL_DIR, note_seq, &seq, err);
    if (r < 0 && r != -ENOENT)
        goto out;

    struct mhl_chain_gen g = {0};
    for (int attempt = 0;; attempt++) {
        if (seq >= MHL_SEQ_MAX) {
            r = error_set(err, -EOVERFLOW, "the ASC MHL history of %s is full", dest_label(d));
            goto out;
        }
        g.seq = ++seq;
        r = mhl_generation_name(g.seq, dest_root_name(d), created, g.name, sizeof(g.name));
        if (r < 0) {
            error_set_errno(err, r, "cannot name generation %u", g.seq);
            goto out;
        }
        char rel[sizeof(MHL_DIR) + sizeof(g.name) + 1];
        snprintf(rel, sizeof(rel), MHL_DIR "/%s", g.name);
        r = dest_meta_write(d, rel, gen->data, gen->len, false, err);
        if (r != -EEXIST || attempt + 1 >= HISTORY_RETRIES)
            break; /* taken by another writer (another machine): the next number */
    }
    if (r < 0)
        goto out;
    snprintf(g.c4, sizeof(g.c4), "%s", c4);
    r = mhl_chain_append(&chain, &g);
    if (r < 0) {
        error_set_errno(err, r, "cannot add generation %u to the chain", g.seq);
        goto out;
    }
    r = mhl_chain_write(&chain, (struct mhl_sink){buf_write, &chain_doc}, err);
    if (r == 0)
        r = dest_meta_write(d, MHL_DIR "/" MHL_CHAIN_NAME, chain_doc.data, chain_doc.len, true,
                            err);
    if (r == 0)
        *ret_g = g;
out:
    free(chain_doc.data);
    free(text);
    mhl_chain_free(&chain);
    return r;
}

static int seal_locked(struct dest *d, struct db *db, const struct mhl_creator *creator,
                       struct history_result *ret, struct error *err)
{
    struct buf gen = {0};
    struct collect c = {.d = d, .err = err};
    struct mhl_chain_gen g = {0};
    int r = mhl_writer_begin(&c.w, creator, (struct mhl_sink){buf_write, &gen}, err);
    if (r < 0)
        goto out;
    r = db_copies_unsealed(db, dest_id(d), collect_one, &c, err);
    if (r == 0)
        r = db_sidecars_unsealed(db, dest_id(d), collect_sidecar, &c, err);
    if (r < 0)
        goto out;
    if (c.n == 0 && c.n_sidecars == 0)
        goto out; /* nothing to list: no generation */
    char c4[MHL_C4_LEN + 1];
    r = mhl_writer_end(c.w, c4, err);
    c.w = NULL;
    if (r == 0)
        r = publish_locked(d, creator->created, &gen, c4, &g, err);
    if (r == 0)
        r = db_history_seal(db, dest_id(d), c.ids, c.n, (const char *const *)c.sidecars,
                            c.n_sidecars, g.seq, err);
    if (r == 0) {
        ret->generation = g.seq;
        ret->listed = c.listed;
        snprintf(ret->name, sizeof(ret->name), "%s", g.name);
    }
out:
    mhl_writer_free(c.w);
    free(c.ids);
    for (size_t i = 0; i < c.n_sidecars; i++)
        free(c.sidecars[i]);
    free(c.sidecars);
    free(gen.data);
    return r;
}

static void host_name(char host[256])
{
    memset(host, 0, 256);
    if (gethostname(host, 255) < 0 || !host[0])
        snprintf(host, 256, "localhost");
}

int history_seal(const struct config *cfg, struct dest *d, struct db *db, int64_t session_id,
                 const char *card_label, time_t now, struct history_result *ret, struct error *err)
{
    memset(ret, 0, sizeof(*ret));
    if (!history_enabled(cfg, d))
        return 0;
    char host[256];
    host_name(host);
    char comment[64 + 4096]; /* whole: a cut label could end inside a character */
    bool label_ok =
        card_label && card_label[0] && jsonout_utf8_valid(card_label, strlen(card_label));
    snprintf(comment, sizeof(comment), "SnapSync session %lld, card %s", (long long)session_id,
             label_ok ? card_label : "(no label)");
    struct mhl_creator creator = {.created = now,
                                  .hostname = host,
                                  .tool_version = SNAPSYNC_VERSION,
                                  .comment = comment,
                                  .process = MHL_PROCESS_TRANSFER,
                                  .ignore = ignore,
                                  .n_ignore = sizeof(ignore) / sizeof(ignore[0])};
    pthread_mutex_lock(&seal_lock);
    int fd = lock_file(cfg, err);
    int r = fd;
    if (fd >= 0) {
        r = seal_locked(d, db, &creator, ret, err);
        close(fd);
    }
    pthread_mutex_unlock(&seal_lock);
    return r;
}

/* ---- generations of checks (`snapsync verify`) ---- */

struct history_gen {
    const struct config *cfg;
    struct dest *d;
    struct mhl_creator creator;
    char host[256];
    char comment[256];
    struct buf doc;
    struct mhl_writer *w;
    size_t n; /* entries in the generation being built */
    struct history_result last;
    size_t written; /* generations written */
};

static int gen_start(struct history_gen *g, struct error *err)
{
    g->doc.len = 0;
    g->n = 0;
    return mhl_writer_begin(&g->w, &g->creator, (struct mhl_sink){buf_write, &g->doc}, err);
}

int history_gen_new(const struct config *cfg, struct dest *d, const char *comment, time_t now,
                    struct history_gen **ret, struct error *err)
{
    if (!history_enabled(cfg, d))
        return error_set(err, -ENOTSUP, "%s keeps no ASC MHL history", dest_label(d));
    struct history_gen *g = calloc(1, sizeof(*g));
    if (!g)
        return error_set(err, -ENOMEM, "out of memory");
    g->cfg = cfg;
    g->d = d;
    host_name(g->host);
    bool ok = comment && jsonout_utf8_valid(comment, strlen(comment));
    snprintf(g->comment, sizeof(g->comment), "%s", ok ? comment : "SnapSync verify");
    if (!jsonout_utf8_valid(g->comment, strlen(g->comment))) /* cut inside a character */
        snprintf(g->comment, sizeof(g->comment), "SnapSync verify");
    g->creator = (struct mhl_creator){.created = now,
                                      .hostname = g->host,
                                      .tool_version = SNAPSYNC_VERSION,
                                      .comment = g->comment,
                                      .process = MHL_PROCESS_IN_PLACE,
                                      .ignore = ignore,
                                      .n_ignore = sizeof(ignore) / sizeof(ignore[0])};
    int r = gen_start(g, err);
    if (r < 0) {
        history_gen_free(g);
        return r;
    }
    *ret = g;
    return 0;
}

/* Ends the document being built and puts it in the history under the lock (as history_seal:
 * generation, then chain). Nothing is written for an empty one. */
static int gen_flush(struct history_gen *g, struct error *err)
{
    if (g->n == 0)
        return 0;
    char c4[MHL_C4_LEN + 1];
    int r = mhl_writer_end(g->w, c4, err);
    g->w = NULL;
    if (r < 0)
        return r;
    struct mhl_chain_gen cg = {0};
    pthread_mutex_lock(&seal_lock);
    int fd = lock_file(g->cfg, err);
    r = fd;
    if (fd >= 0) {
        r = publish_locked(g->d, g->creator.created, &g->doc, c4, &cg, err);
        close(fd);
    }
    pthread_mutex_unlock(&seal_lock);
    if (r < 0)
        return r;
    g->last.generation = cg.seq;
    g->last.listed = g->n;
    snprintf(g->last.name, sizeof(g->last.name), "%s", cg.name);
    g->written++;
    g->n = 0;
    return 0;
}

int history_gen_add(struct history_gen *g, const struct history_check *c, struct error *err)
{
    if (!g->w)
        return error_set(err, -EINVAL, "the generation was not started again after an error");
    char rel[4096];
    if (dest_rel_of(g->d, c->remote, rel, sizeof(rel)) < 0)
        return 0; /* outside today's root: not of this tree */
    int64_t mtime = c->mtime_ns / 1000000000;
    if (c->mtime_ns < 0 && c->mtime_ns % 1000000000)
        mtime--;
    struct mhl_entry e = {.path = rel,
                          .size = c->size,
                          .mtime = mtime,
                          .md5 = c->md5 && c->md5[0] ? c->md5 : NULL,
                          .sha1 = c->sha1 && c->sha1[0] ? c->sha1 : NULL,
                          .xxh128 = c->xxh128 && c->xxh128[0] ? c->xxh128 : NULL,
                          .action = c->ok ? MHL_ACTION_VERIFIED : MHL_ACTION_FAILED,
                          .hashdate = c->at};
    struct error eerr = {0};
    int r = mhl_writer_add(g->w, &e, &eerr);
    if (r == -EINVAL)
        return 0; /* a name XML cannot hold: never listed as original either */
    if (r < 0)
        return error_set(err, r, "%s", eerr.msg);
    if (++g->n < HISTORY_CHECKS_MAX)
        return 0;
    r = gen_flush(g, err);
    if (r == 0)
        r = gen_start(g, err);
    return r;
}

int history_gen_commit(struct history_gen *g, struct history_result *ret, struct error *err)
{
    int r = gen_flush(g, err);
    if (r == 0 && ret)
        *ret = g->last;
    return r;
}

size_t history_gen_written(const struct history_gen *g)
{
    return g ? g->written : 0;
}

void history_gen_free(struct history_gen *g)
{
    if (!g)
        return;
    mhl_writer_free(g->w);
    free(g->doc.data);
    free(g);
}
