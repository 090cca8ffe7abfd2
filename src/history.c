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
    struct error *err;
};

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

static int seal_locked(struct dest *d, struct db *db, const struct mhl_creator *creator,
                       struct history_result *ret, struct error *err)
{
    struct buf gen = {0}, chain_doc = {0};
    struct mhl_chain chain = {0};
    struct collect c = {.d = d, .err = err};
    char *text = NULL;
    size_t len = 0;
    int r = mhl_writer_begin(&c.w, creator, (struct mhl_sink){buf_write, &gen}, err);
    if (r < 0)
        goto out;
    r = db_copies_unsealed(db, dest_id(d), collect_one, &c, err);
    if (r < 0)
        goto out;
    if (c.n == 0)
        goto out; /* nothing to list: no generation */
    char c4[MHL_C4_LEN + 1];
    r = mhl_writer_end(c.w, c4, err);
    c.w = NULL;
    if (r < 0)
        goto out;

    /* the chain as it is: missing is a new history, unreadable is left alone */
    r = dest_meta_read(d, MHL_DIR "/" MHL_CHAIN_NAME, MHL_CHAIN_MAX_BYTES, &text, &len, err);
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
        r = mhl_generation_name(g.seq, dest_root_name(d), creator->created, g.name, sizeof(g.name));
        if (r < 0) {
            error_set_errno(err, r, "cannot name generation %u", g.seq);
            goto out;
        }
        char rel[sizeof(MHL_DIR) + sizeof(g.name) + 1];
        snprintf(rel, sizeof(rel), MHL_DIR "/%s", g.name);
        r = dest_meta_write(d, rel, gen.data, gen.len, false, err);
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
        r = db_copies_seal(db, dest_id(d), c.ids, c.n, g.seq, err);
    if (r == 0) {
        ret->generation = g.seq;
        ret->listed = c.listed;
        snprintf(ret->name, sizeof(ret->name), "%s", g.name);
    }
out:
    mhl_writer_free(c.w);
    free(c.ids);
    free(gen.data);
    free(chain_doc.data);
    free(text);
    mhl_chain_free(&chain);
    return r;
}

int history_seal(const struct config *cfg, struct dest *d, struct db *db, int64_t session_id,
                 const char *card_label, time_t now, struct history_result *ret, struct error *err)
{
    memset(ret, 0, sizeof(*ret));
    if (!history_enabled(cfg, d))
        return 0;
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
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
