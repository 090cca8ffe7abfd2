/* SPDX-License-Identifier: MIT */
/*
 * Destination dispatch: turns the config into a list of backends and forwards each call to the
 * backend's ops table. The only place that knows which backends exist. Every error a backend
 * returns passes here and has the configured secrets scrubbed from it (a server may echo the key
 * it refused), so no caller can log, store or serve one.
 */
#include "dest.h"
#include "s3_proto.h"
#include "sidecar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

extern const struct dest_ops dest_local_ops;
extern const struct dest_ops dest_local_folder_ops;
extern const struct dest_ops dest_smb_ops;
extern const struct dest_ops dest_immich_ops;
extern const struct dest_ops dest_s3_ops;
extern const struct dest_ops dest_rclone_ops;

struct dest {
    const struct dest_ops *ops;
    const struct config *cfg; /* outlives the destination */
    const char *section;      /* the config section it comes from */
    void *priv;
    char id[DEST_REMOTE_MAX];
    char label[DEST_REMOTE_MAX];
    struct pattern *folder_pat, *file_pat;
    struct pattern *album_pat; /* immich.album_pattern; NULL: none */
    bool paths;                /* names its copies with folder_pat and file_pat (not Immich) */
    bool md5;                  /* ... and they use {md5} */
};

struct dest_conn {
    struct dest *dest;
    void *priv;
};

#define VALUE_TEXT_MAX 256 /* bytes of a text value kept for a retarget (longer: cut) */

struct dest_file {
    struct dest *dest;
    void *priv;
    /* what dest_open handed the backend in its dest_item, valid until finish or abort */
    char folder[PATTERN_OUT_MAX];
    char target[DEST_NAME_MAX + 1];
    char album[PATTERN_OUT_MAX];
    /* d->md5: the values again at finish, with the content's MD5 */
    struct pattern_values v;
    char text[6][VALUE_TEXT_MAX]; /* name, make, model, lens, serial, card */
};

/* Compiles d's patterns (valid: config_load checked them). */
static int dest_patterns(struct dest *d, struct error *err)
{
    const char *folder, *file;
    config_dest_patterns(d->cfg, d->section, &folder, &file);
    int r = pattern_compile(folder, PATTERN_FOLDER, &d->folder_pat, err);
    if (r == 0)
        r = pattern_compile(file, PATTERN_FILE, &d->file_pat, err);
    if (r == 0 && strcmp(d->section, "immich") == 0 && d->cfg->immich.album_pattern[0])
        r = pattern_compile(d->cfg->immich.album_pattern, PATTERN_ALBUM, &d->album_pat, err);
    if (r < 0)
        return error_prefix(err, "%s: name pattern", d->section);
    d->paths = strcmp(d->section, "immich") != 0;
    d->md5 = d->paths && (pattern_uses_md5(d->folder_pat) || pattern_uses_md5(d->file_pat));
    if (d->md5 && !d->ops->retarget)
        return error_set(err, -EINVAL, "%s: {md5} cannot be used here", d->section);
    return 0;
}

static void dest_free(struct dest *d)
{
    pattern_free(d->folder_pat);
    pattern_free(d->file_pat);
    pattern_free(d->album_pat);
    free(d);
}

static int dest_new(const struct dest_ops *ops, const char *section, const struct config *cfg,
                    struct dest **ret, struct error *err)
{
    struct dest *d = calloc(1, sizeof(*d));
    if (!d)
        return error_set(err, -ENOMEM, "out of memory");
    d->ops = ops;
    d->cfg = cfg;
    d->section = section;
    int r = dest_patterns(d, err);
    if (r < 0) {
        dest_free(d);
        return r;
    }
    r = ops->init(cfg, &d->priv, d->id, sizeof(d->id), d->label, sizeof(d->label), err);
    if (r < 0) {
        config_scrub_secrets(cfg, err ? err->msg : NULL);
        dest_free(d);
        return r;
    }
    *ret = d;
    return 0;
}

int dest_create_all(const struct config *cfg, struct dest ***ret, size_t *ret_n, struct error *err)
{
    struct dest **list = calloc(DEST_MAX, sizeof(*list));
    size_t n = 0;
    int r = 0;
    if (!list)
        return error_set(err, -ENOMEM, "out of memory");

    if (cfg->unraid.enabled) {
        const struct dest_ops *ops =
            cfg->unraid.protocol == CONFIG_PROTOCOL_SMB ? &dest_smb_ops : &dest_local_ops;
        r = dest_new(ops, "unraid", cfg, &list[n], err);
        if (r < 0)
            goto fail;
        n++;
    }
    if (cfg->local.enabled) {
        r = dest_new(&dest_local_folder_ops, "local", cfg, &list[n], err);
        if (r < 0)
            goto fail;
        n++;
    }
    if (cfg->immich.enabled) {
        r = dest_new(&dest_immich_ops, "immich", cfg, &list[n], err);
        if (r < 0)
            goto fail;
        n++;
    }
    if (cfg->s3.enabled) {
        r = dest_new(&dest_s3_ops, "s3", cfg, &list[n], err);
        if (r < 0)
            goto fail;
        n++;
    }
    if (cfg->rclone.enabled) {
        r = dest_new(&dest_rclone_ops, "rclone", cfg, &list[n], err);
        if (r < 0)
            goto fail;
        n++;
    }
    if (n == 0) {
        r = error_set(err, -ENODEV,
                      "no destination is enabled (enable unraid, local, immich, s3 or rclone)");
        goto fail;
    }
    *ret = list;
    *ret_n = n;
    return 0;
fail:
    dest_free_all(list, n);
    return r;
}

void dest_free_all(struct dest **dests, size_t n)
{
    if (!dests)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!dests[i])
            continue;
        dests[i]->ops->done(dests[i]->priv);
        dest_free(dests[i]);
    }
    free(dests);
}

const char *dest_id(const struct dest *d)
{
    return d->id;
}

const char *dest_label(const struct dest *d)
{
    return d->label;
}

const char *dest_section(const struct dest *d)
{
    return d->section;
}

const char *dest_kind(const struct dest *d)
{
    return d->ops->kind;
}

/* The sidecars of rel a destination with paths puts next to its copy at ret->where (in its
 * folder), under the copy's name with their extensions (sidecar_dest_name). */
static void target_sidecars(const struct sidecar_set *sc, const char *rel, const char *name,
                            struct dest_target *ret)
{
    char dir[DEST_REMOTE_MAX]; /* ret->where's folder */
    const char *slash = strrchr(ret->where, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - ret->where) : 0, ret->where);
    for (size_t i = 0; sc && i < sc->n && ret->n_sidecars < DEST_SIDECARS_MAX; i++) {
        char sname[SCANNER_MAX_PATH];
        struct dest_target_sidecar *t = &ret->sidecars[ret->n_sidecars];
        if (sidecar_dest_name(sc->rel[i], rel, name, sname, sizeof(sname)) < 0)
            continue;
        int n = snprintf(t->where, sizeof(t->where), "%s/%s", dir, sname);
        if (n > 0 && (size_t)n < sizeof(t->where)) {
            t->of = i;
            ret->n_sidecars++;
        }
    }
}

const struct pattern *dest_folder_pattern(const struct dest *d)
{
    return d->folder_pat;
}

const struct pattern *dest_file_pattern(const struct dest *d)
{
    return d->file_pat;
}

int dest_expand(const struct dest *d, const struct pattern_values *v, char *folder,
                size_t folder_size, char *name, size_t name_size, struct error *err)
{
    char fo[PATTERN_OUT_MAX], na[PATTERN_OUT_MAX];
    int r = pattern_expand(d->folder_pat, v, fo, sizeof(fo), err);
    if (r < 0)
        return error_prefix(err, "folder_pattern '%s'", pattern_text(d->folder_pat));
    r = pattern_expand(d->file_pat, v, na, sizeof(na), err);
    if (r < 0)
        return error_prefix(err, "file_pattern '%s'", pattern_text(d->file_pat));
    if (!dest_name_valid(na))
        return error_set(err, -ENAMETOOLONG, "file_pattern '%s' gives a name longer than %d bytes",
                         pattern_text(d->file_pat), DEST_NAME_MAX);
    if (strlen(fo) >= folder_size || strlen(na) >= name_size)
        return error_set(err, -ENAMETOOLONG, "the folder or name the patterns give is too long");
    memcpy(folder, fo, strlen(fo) + 1);
    memcpy(name, na, strlen(na) + 1);
    return 0;
}

void dest_target(const struct dest *d, const struct pattern_values *v, const char *rel,
                 const struct sidecar_set *sidecars, struct dest_target *ret)
{
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->where, sizeof(ret->where), "%s", d->id);
    bool local = d->ops == &dest_local_ops || d->ops == &dest_local_folder_ops;
    bool paths =
        local || d->ops == &dest_smb_ops || d->ops == &dest_s3_ops || d->ops == &dest_rclone_ops;
    if (!paths) {
        /* Immich takes the XMP alone, sent with the asset (sidecar_find puts it first) */
        const char *dot = sidecars && sidecars->n ? strrchr(sidecars->rel[0], '.') : NULL;
        if (dot && strcasecmp(dot + 1, "xmp") == 0) {
            snprintf(ret->sidecars[0].where, sizeof(ret->sidecars[0].where), "%s", d->id);
            ret->n_sidecars = 1;
        }
        return;
    }
    struct pattern_values pv = *v;
    if (!pv.md5)
        pv.md5 = PATTERN_MD5_UNKNOWN;
    char folder[PATTERN_OUT_MAX], name[DEST_NAME_MAX + 1];
    struct error err;
    if (dest_expand(d, &pv, folder, sizeof(folder), name, sizeof(name), &err) < 0) {
        snprintf(ret->problem, sizeof(ret->problem), "%s", err.msg);
        return;
    }
    const char *slash = folder[0] ? "/" : "";
    int n = -1;
    if (d->ops == &dest_s3_ops) { /* the object's URL; whether the key is taken asks the server */
        char key[S3_KEY_MAX + 1];
        if (s3_object_key(d->cfg->s3.prefix, folder, name, key, sizeof(key)) == 0)
            n = snprintf(ret->where, sizeof(ret->where), "s3://%s/%s", d->cfg->s3.bucket, key);
    } else if (d->ops == &dest_rclone_ops) { /* remote:folder/name; whether taken asks rclone */
        const char *root = d->id + strlen("rclone:");
        size_t rl = strlen(root);
        bool bare = rl > 0 && (root[rl - 1] == ':' || root[rl - 1] == '/');
        n = snprintf(ret->where, sizeof(ret->where), "%s%s%s%s%s", root, bare ? "" : "/", folder,
                     slash, name);
    } else {
        /* a local id is "local:<root>", an SMB one the smb:// URL of its folder */
        const char *root = local ? d->id + strlen("local:") : d->id;
        n = snprintf(ret->where, sizeof(ret->where), "%s/%s%s%s", root, folder, slash, name);
    }
    ret->has_path = n > 0 && (size_t)n < sizeof(ret->where);
    if (!ret->has_path) {
        snprintf(ret->where, sizeof(ret->where), "%s", d->id);
        snprintf(ret->problem, sizeof(ret->problem), "the path is too long");
        return;
    }
    if (d->ops == &dest_s3_ops || d->ops == &dest_rclone_ops)
        return; /* no sidecars there */
    struct stat st;
    ret->taken = local && lstat(ret->where, &st) == 0;
    target_sidecars(sidecars, rel, name, ret);
}

/* r, with err's message scrubbed of secrets when r is an error. */
static int scrubbed(const struct dest *d, int r, struct error *err)
{
    if (r < 0 && err)
        config_scrub_secrets(d->cfg, err->msg);
    return r;
}

int dest_prepare(struct dest *d, const struct dest_session *session, struct error *err)
{
    return scrubbed(d, d->ops->prepare(d->priv, session, err), err);
}

bool dest_has_precheck(const struct dest *d)
{
    return d->ops->precheck != NULL;
}

int dest_precheck(struct dest *d, const struct dest_item *items, size_t n,
                  struct dest_precheck *ret, struct error *err)
{
    return d->ops->precheck ? scrubbed(d, d->ops->precheck(d->priv, items, n, ret, err), err) : 0;
}

int dest_end_session(struct dest *d, struct error *err)
{
    return d->ops->end_session ? scrubbed(d, d->ops->end_session(d->priv, err), err) : 0;
}

bool dest_has_meta(const struct dest *d)
{
    const struct dest_ops *o = d->ops;
    return o->meta_read && o->meta_list && o->meta_write && o->rel_of && o->root_name;
}

int dest_meta_read(struct dest *d, const char *rel, size_t max, char **ret_buf, size_t *ret_len,
                   struct error *err)
{
    if (!dest_has_meta(d))
        return error_set(err, -ENOTSUP, "%s keeps no files of its own", d->label);
    return scrubbed(d, d->ops->meta_read(d->priv, rel, max, ret_buf, ret_len, err), err);
}

int dest_meta_list(struct dest *d, const char *rel_dir, int (*fn)(const char *name, void *arg),
                   void *arg, struct error *err)
{
    if (!dest_has_meta(d))
        return error_set(err, -ENOTSUP, "%s keeps no files of its own", d->label);
    return scrubbed(d, d->ops->meta_list(d->priv, rel_dir, fn, arg, err), err);
}

int dest_meta_write(struct dest *d, const char *rel, const void *buf, size_t len, bool replace,
                    struct error *err)
{
    if (!dest_has_meta(d))
        return error_set(err, -ENOTSUP, "%s keeps no files of its own", d->label);
    return scrubbed(d, d->ops->meta_write(d->priv, rel, buf, len, replace, err), err);
}

int dest_rel_of(const struct dest *d, const char *remote, char *out, size_t size)
{
    return dest_has_meta(d) ? d->ops->rel_of(d->priv, remote, out, size) : -ENOTSUP;
}

const char *dest_root_name(const struct dest *d)
{
    return dest_has_meta(d) ? d->ops->root_name(d->priv) : "";
}

bool dest_needs_sha1(const struct dest *d)
{
    return d->ops->needs_sha1;
}

enum dest_check_kind dest_check_kind(const struct dest *d)
{
    if (d->ops->read_copy)
        return DEST_CHECK_READ;
    return d->ops->lookup_copy ? DEST_CHECK_LOOKUP : DEST_CHECK_NONE;
}

int dest_read_copy(struct dest *d, const char *remote,
                   int (*fn)(const void *buf, size_t len, void *arg), void *arg, struct error *err)
{
    if (!d->ops->read_copy)
        return error_set(err, -ENOTSUP, "%s cannot read its copies back", d->label);
    return scrubbed(d, d->ops->read_copy(d->priv, remote, fn, arg, err), err);
}

bool dest_can_walk(const struct dest *d)
{
    return d->ops->walk != NULL;
}

int dest_walk(struct dest *d, int (*fn)(const char *remote, void *arg), void *arg,
              struct error *err)
{
    if (!d->ops->walk)
        return error_set(err, -ENOTSUP, "%s cannot list its files", d->label);
    return scrubbed(d, d->ops->walk(d->priv, fn, arg, err), err);
}

bool dest_walk_skip(unsigned depth, const char *name)
{
    static const char *const own[] = {".snapsync-tmp", "ascmhl"};
    static const char *const clutter[] = {".DS_Store",  "Thumbs.db", "desktop.ini",
                                          ".directory", "@eaDir",    ".AppleDouble",
                                          "#recycle",   ".recycle",  "#snapshot"};
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return true;
    if (depth == 0)
        for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
            if (strcmp(name, own[i]) == 0)
                return true;
    for (size_t i = 0; i < sizeof(clutter) / sizeof(clutter[0]); i++)
        if (strcmp(name, clutter[i]) == 0)
            return true;
    return strncmp(name, "._", 2) == 0 || strncmp(name, ".Trash-", 7) == 0;
}

int dest_lookup_copy(struct dest *d, const char *remote, const char *sha1_hex,
                     struct dest_lookup *ret, struct error *err)
{
    if (!d->ops->lookup_copy)
        return error_set(err, -ENOTSUP, "%s cannot look its copies up", d->label);
    return scrubbed(d, d->ops->lookup_copy(d->priv, remote, sha1_hex, ret, err), err);
}

int dest_probe(struct dest *d, char *detail, size_t detail_size, struct error *err)
{
    int r = scrubbed(d, d->ops->probe(d->priv, detail, detail_size, err), err);
    if (r >= 0 && detail && detail_size)
        config_scrub_secrets(d->cfg, detail);
    return r;
}

void dest_interrupt(struct dest *d)
{
    if (d->ops->interrupt)
        d->ops->interrupt(d->priv);
}

int dest_conn_new(struct dest *d, struct dest_conn **ret, struct error *err)
{
    struct dest_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return error_set(err, -ENOMEM, "out of memory");
    c->dest = d;
    int r = scrubbed(d, d->ops->conn_new(d->priv, &c->priv, err), err);
    if (r < 0) {
        free(c);
        return r;
    }
    *ret = c;
    return 0;
}

void dest_conn_free(struct dest_conn *c)
{
    if (!c)
        return;
    c->dest->ops->conn_free(c->priv);
    free(c);
}

/* Keeps a copy of v in f for the expansion at finish. */
static void values_keep(struct dest_file *f, const struct pattern_values *v)
{
    const char *src[6] = {v->name, v->make, v->model, v->lens, v->serial, v->card};
    const char **dst[6] = {&f->v.name, &f->v.make,   &f->v.model,
                           &f->v.lens, &f->v.serial, &f->v.card};
    f->v = *v;
    for (size_t i = 0; i < 6; i++) {
        snprintf(f->text[i], sizeof(f->text[i]), "%s", src[i] ? src[i] : "");
        *dst[i] = f->text[i];
    }
}

int dest_open(struct dest_conn *c, const struct dest_item *item, struct dest_file **ret,
              struct error *err)
{
    struct dest *d = c->dest;
    if (!dest_name_valid(item->name))
        return error_set(err, -EINVAL, "unusable file name");
    struct dest_file *f = calloc(1, sizeof(*f));
    if (!f)
        return error_set(err, -ENOMEM, "out of memory");
    f->dest = d;
    struct pattern_values v = {.capture_time = item->capture_time, .name = item->name};
    if (item->values)
        v = *item->values;
    v.md5 = PATTERN_MD5_UNKNOWN;
    struct dest_item it = *item;
    int r = 0;
    if (d->paths)
        r = dest_expand(d, &v, f->folder, sizeof(f->folder), f->target, sizeof(f->target), err);
    else /* Immich keeps the card's name */
        snprintf(f->target, sizeof(f->target), "%s", item->name);
    if (r == 0 && d->album_pat) {
        r = pattern_expand(d->album_pat, &v, f->album, sizeof(f->album), err);
        if (r < 0)
            error_prefix(err, "album_pattern '%s'", pattern_text(d->album_pat));
    }
    if (r < 0) {
        free(f);
        return r;
    }
    if (d->md5)
        values_keep(f, &v);
    it.folder = f->folder;
    it.target = f->target;
    it.album = d->album_pat ? f->album : NULL;
    r = scrubbed(d, d->ops->open(c->priv, &it, &f->priv, err), err);
    if (r < 0) {
        free(f);
        return r;
    }
    *ret = f;
    return 0;
}

int dest_write(struct dest_file *f, const void *buf, size_t len, struct error *err)
{
    return scrubbed(f->dest, f->dest->ops->write(f->priv, buf, len, err), err);
}

int dest_finish(struct dest_file *f, const struct hasher_digest *digest, bool verify,
                struct dest_result *ret, struct error *err)
{
    if (f->dest->md5) { /* the name waited for the content's MD5 */
        f->v.md5 = digest->md5_hex;
        int r = dest_expand(f->dest, &f->v, f->folder, sizeof(f->folder), f->target,
                            sizeof(f->target), err);
        if (r == 0)
            r = scrubbed(f->dest, f->dest->ops->retarget(f->priv, f->folder, f->target, err), err);
        if (r < 0) {
            f->dest->ops->abort(f->priv);
            free(f);
            return r;
        }
    }
    int r = scrubbed(f->dest, f->dest->ops->finish(f->priv, digest, verify, ret, err), err);
    free(f);
    return r;
}

void dest_abort(struct dest_file *f)
{
    if (!f)
        return;
    f->dest->ops->abort(f->priv);
    free(f);
}

bool dest_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t len = strnlen(name, DEST_NAME_MAX + 1);
    return len > 0 && len <= DEST_NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

bool dest_rel_valid(const char *rel)
{
    if (!rel || !*rel || rel[0] == '/')
        return false;
    for (const char *p = rel; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += len;
        if (*p == '/')
            p++;
    }
    return true;
}

void dest_candidate_name(const char *name, unsigned k, char *out, size_t size)
{
    if (k == 0) {
        snprintf(out, size, "%s", name);
        return;
    }
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        dot = name + strlen(name);
    char suffix[32];
    int sl = snprintf(suffix, sizeof(suffix), "_%u", k);
    size_t ext_len = strlen(dot);
    size_t stem_len = (size_t)(dot - name);
    size_t room = DEST_NAME_MAX > (size_t)sl + ext_len ? DEST_NAME_MAX - (size_t)sl - ext_len : 0;
    if (stem_len > room) {
        stem_len = room;
        /* do not cut a UTF-8 sequence in half */
        while (stem_len > 0 && ((unsigned char)name[stem_len] & 0xC0) == 0x80)
            stem_len--;
    }
    snprintf(out, size, "%.*s%s%s", (int)stem_len, name, suffix, dot);
}

_Static_assert(DEST_SIDECARS_MAX == SIDECAR_MAX, "a copy reports each of its sidecars");

int dest_sidecar_add(struct dest_result *res, const char *remote, const void *buf, size_t len,
                     int64_t mtime_ns, struct error *err)
{
    if (res->n_sidecars >= DEST_SIDECARS_MAX)
        return error_set(err, -EOVERFLOW, "more than %d sidecars for one copy", DEST_SIDECARS_MAX);
    struct dest_sidecar *s = &res->sidecars[res->n_sidecars];
    if ((size_t)snprintf(s->remote, sizeof(s->remote), "%s", remote) >= sizeof(s->remote))
        return error_set(err, -ENAMETOOLONG, "the path of a sidecar is too long");
    struct hasher *h = NULL;
    struct hasher_digest d;
    int r = hasher_new(&h, err);
    if (r == 0)
        r = hasher_update(h, buf, len, err);
    if (r == 0)
        r = hasher_final(h, &d, err);
    hasher_free(h);
    if (r < 0)
        return r;
    s->size = len;
    s->mtime_ns = mtime_ns;
    memcpy(s->md5, d.md5_hex, sizeof(s->md5));
    memcpy(s->sha1, d.sha1_hex, sizeof(s->sha1));
    res->n_sidecars++;
    return 0;
}
