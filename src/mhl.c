/* SPDX-License-Identifier: MIT */
/*
 * ASC MHL v2.0 documents (mhl.h). A generation is written through libxml2's text writer onto an
 * output buffer whose callback hashes every byte (SHA-512, for the C4 ID) before it reaches the
 * sink, so the ID is of exactly the bytes on the share. A chain is read with libxml2's parser
 * without network, DTD or entity substitution (a document with a DOCTYPE is refused).
 */
#include "mhl.h"

#include "utf8.h"
#include "xml.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <openssl/evp.h>

#define MHL_NS "urn:ASC:MHL:v2.0"
#define MHL_DIRECTORY_NS "urn:ASC:MHL:DIRECTORY:v2.0"
#define MHL_TOOL "SnapSync"

static const char base58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

void mhl_c4_from_sha512(const unsigned char digest[64], char out[MHL_C4_LEN + 1])
{
    unsigned char num[64];
    memcpy(num, digest, sizeof(num));
    out[0] = 'c';
    out[1] = '4';
    /* 88 digits, least significant first: divide the 512-bit number by 58 each time */
    for (int pos = MHL_C4_LEN - 1; pos >= 2; pos--) {
        unsigned rem = 0;
        for (size_t i = 0; i < sizeof(num); i++) {
            unsigned cur = (rem << 8) | num[i];
            num[i] = (unsigned char)(cur / 58);
            rem = cur % 58;
        }
        out[pos] = base58[rem];
    }
    out[MHL_C4_LEN] = '\0';
}

int mhl_c4(const void *buf, size_t len, char out[MHL_C4_LEN + 1])
{
    unsigned char digest[64];
    unsigned int dlen = 0;
    if (!EVP_Digest(buf, len, digest, &dlen, EVP_sha512(), NULL) || dlen != sizeof(digest))
        return -ENOMEM;
    mhl_c4_from_sha512(digest, out);
    return 0;
}

static bool is_component(const char *s, size_t len)
{
    if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    return memchr(s, '/', len) == NULL;
}

int mhl_generation_name(unsigned seq, const char *root_name, time_t t, char *out, size_t size)
{
    struct tm tm;
    if (seq == 0 || seq > MHL_SEQ_MAX || !root_name ||
        !is_component(root_name, strlen(root_name)) || !gmtime_r(&t, &tm))
        return -EINVAL;
    int k =
        snprintf(out, size, "%04u_%s_%04d-%02d-%02d_%02d%02d%02dZ.mhl", seq, root_name,
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (k < 0 || (size_t)k >= size)
        return -ENAMETOOLONG;
    return 0;
}

unsigned mhl_generation_seq(const char *name)
{
    size_t len = strlen(name);
    if (len < 8 || strcmp(name + len - 4, ".mhl") != 0)
        return 0;
    size_t digits = 0;
    unsigned long long seq = 0;
    while (name[digits] >= '0' && name[digits] <= '9') {
        seq = seq * 10 + (unsigned)(name[digits] - '0');
        if (seq > MHL_SEQ_MAX)
            return 0;
        digits++;
    }
    if (digits < 4 || (name[digits] != '_' && strcmp(name + digits, ".mhl") != 0))
        return 0;
    return (unsigned)seq;
}

static bool valid_utf8(const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len((const unsigned char *)s + i, len - i);
        if (k == 0 || (k == 1 && (unsigned char)s[i] < 0x20 && s[i] != '\t'))
            return false; /* XML 1.0 has no other control characters */
        i += k;
    }
    return true;
}

/* A relative, '/'-separated path without empty, "." or ".." components, valid UTF-8. */
static bool valid_rel_path(const char *path)
{
    if (!path || !*path || !valid_utf8(path))
        return false;
    for (const char *p = path;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (!is_component(p, len))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

static bool valid_hex(const char *s, size_t len)
{
    if (!s)
        return true;
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static int xs_datetime(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if ((int64_t)tt != t || !gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 1 ||
        tm.tm_year + 1900 > 9999)
        return -EINVAL;
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return 0;
}

/* A document being written: libxml2's writer over an output buffer whose callback lands here. */
struct xml_out {
    xmlTextWriterPtr tw;
    EVP_MD_CTX *sha;
    struct mhl_sink sink;
    int sink_err; /* the sink's first error */
    bool failed;
};

static int out_write(void *context, const char *buffer, int len)
{
    struct xml_out *o = context;
    if (o->sink_err)
        return -1;
    if (len <= 0)
        return 0;
    if (!EVP_DigestUpdate(o->sha, buffer, (size_t)len)) {
        o->sink_err = -ENOMEM;
        return -1;
    }
    int r = o->sink.write(o->sink.userdata, buffer, (size_t)len);
    if (r < 0) {
        o->sink_err = r;
        return -1;
    }
    return len;
}

static int out_open(struct xml_out *o, struct mhl_sink sink, struct error *err)
{
    xml_thread_setup();
    memset(o, 0, sizeof(*o));
    o->sink = sink;
    o->sha = EVP_MD_CTX_new();
    if (!o->sha || !EVP_DigestInit_ex(o->sha, EVP_sha512(), NULL))
        goto nomem;
    xmlOutputBufferPtr buf = xmlOutputBufferCreateIO(out_write, NULL, o, NULL);
    if (!buf)
        goto nomem;
    o->tw = xmlNewTextWriter(buf); /* owns buf from here, also on failure */
    if (!o->tw)
        goto nomem;
    if (xmlTextWriterSetIndent(o->tw, 1) < 0 ||
        xmlTextWriterSetIndentString(o->tw, BAD_CAST "  ") < 0 ||
        xmlTextWriterStartDocument(o->tw, "1.0", "UTF-8", NULL) < 0)
        goto nomem;
    return 0;
nomem:
    EVP_MD_CTX_free(o->sha);
    o->sha = NULL;
    if (o->tw)
        xmlFreeTextWriter(o->tw);
    o->tw = NULL;
    return error_set(err, o->sink_err ? o->sink_err : -ENOMEM, "cannot start an ASC MHL document");
}

/* The error after a writer call failed: the sink's, or -ENOMEM for libxml2's own. */
static int out_failed(struct xml_out *o, struct error *err, const char *what)
{
    o->failed = true;
    int code = o->sink_err ? o->sink_err : -ENOMEM;
    return error_set_errno(err, code, "cannot write %s", what);
}

static void out_free(struct xml_out *o)
{
    if (o->tw) {
        o->sink_err = o->sink_err ? o->sink_err : -ECANCELED; /* nothing more to the sink */
        xmlFreeTextWriter(o->tw);
    }
    o->tw = NULL;
    EVP_MD_CTX_free(o->sha);
    o->sha = NULL;
}

/* Ends the document, flushes everything and fills c4 (when not NULL). Frees o either way. */
static int out_close(struct xml_out *o, char *c4, struct error *err, const char *what)
{
    int r = 0;
    if (o->failed || xmlTextWriterEndDocument(o->tw) < 0 || xmlTextWriterFlush(o->tw) < 0) {
        r = out_failed(o, err, what);
        out_free(o);
        return r;
    }
    xmlFreeTextWriter(o->tw); /* closes the buffer: its last bytes reach out_write */
    o->tw = NULL;
    if (o->sink_err) {
        r = error_set_errno(err, o->sink_err, "cannot write %s", what);
    } else if (c4) {
        unsigned char digest[64];
        unsigned int dlen = 0;
        if (!EVP_DigestFinal_ex(o->sha, digest, &dlen) || dlen != sizeof(digest))
            r = error_set(err, -ENOMEM, "cannot hash %s", what);
        else
            mhl_c4_from_sha512(digest, c4);
    }
    out_free(o);
    return r;
}

#define W(call)                                                                                    \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            goto fail;                                                                             \
    } while (0)

struct mhl_writer {
    struct xml_out out;
    bool in_hashes; /* <hashes> is open: it is written only around at least one <hash> */
};

static const char *action_name(enum mhl_action a)
{
    switch (a) {
    case MHL_ACTION_VERIFIED:
        return "verified";
    case MHL_ACTION_FAILED:
        return "failed";
    case MHL_ACTION_ORIGINAL:
        break;
    }
    return "original";
}

int mhl_writer_begin(struct mhl_writer **ret, const struct mhl_creator *c, struct mhl_sink sink,
                     struct error *err)
{
    *ret = NULL;
    char created[32];
    if (!c->hostname || !c->tool_version || !valid_utf8(c->hostname) ||
        !valid_utf8(c->tool_version) || (c->comment && !valid_utf8(c->comment)) ||
        xs_datetime(c->created, created) < 0)
        return error_set(err, -EINVAL, "ASC MHL generation: invalid creator information");
    for (size_t i = 0; i < c->n_ignore; i++)
        if (!c->ignore[i] || !*c->ignore[i] || !valid_utf8(c->ignore[i]))
            return error_set(err, -EINVAL, "ASC MHL generation: invalid ignore pattern");
    struct mhl_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return error_set(err, -ENOMEM, "out of memory");
    int r = out_open(&w->out, sink, err);
    if (r < 0) {
        free(w);
        return r;
    }
    xmlTextWriterPtr tw = w->out.tw;
    W(xmlTextWriterStartElement(tw, BAD_CAST "hashlist"));
    W(xmlTextWriterWriteAttribute(tw, BAD_CAST "version", BAD_CAST "2.0"));
    W(xmlTextWriterWriteAttribute(tw, BAD_CAST "xmlns", BAD_CAST MHL_NS));
    W(xmlTextWriterStartElement(tw, BAD_CAST "creatorinfo"));
    W(xmlTextWriterWriteElement(tw, BAD_CAST "creationdate", BAD_CAST created));
    W(xmlTextWriterWriteElement(tw, BAD_CAST "hostname", BAD_CAST c->hostname));
    W(xmlTextWriterStartElement(tw, BAD_CAST "tool"));
    W(xmlTextWriterWriteAttribute(tw, BAD_CAST "version", BAD_CAST c->tool_version));
    W(xmlTextWriterWriteString(tw, BAD_CAST MHL_TOOL));
    W(xmlTextWriterEndElement(tw));
    if (c->comment)
        W(xmlTextWriterWriteElement(tw, BAD_CAST "comment", BAD_CAST c->comment));
    W(xmlTextWriterEndElement(tw)); /* creatorinfo */
    W(xmlTextWriterStartElement(tw, BAD_CAST "processinfo"));
    W(xmlTextWriterWriteElement(
        tw, BAD_CAST "process",
        BAD_CAST(c->process == MHL_PROCESS_TRANSFER ? "transfer" : "in-place")));
    W(xmlTextWriterStartElement(tw, BAD_CAST "ignore"));
    W(xmlTextWriterWriteElement(tw, BAD_CAST "pattern", BAD_CAST MHL_DIR));
    W(xmlTextWriterWriteElement(tw, BAD_CAST "pattern", BAD_CAST MHL_DIR "/"));
    for (size_t i = 0; i < c->n_ignore; i++)
        W(xmlTextWriterWriteElement(tw, BAD_CAST "pattern", BAD_CAST c->ignore[i]));
    W(xmlTextWriterEndElement(tw)); /* ignore */
    W(xmlTextWriterEndElement(tw)); /* processinfo */
    *ret = w;
    return 0;
fail:
    r = out_failed(&w->out, err, "the ASC MHL generation's header");
    mhl_writer_free(w);
    return r;
}

int mhl_writer_add(struct mhl_writer *w, const struct mhl_entry *e, struct error *err)
{
    if (w->out.failed)
        return error_set(err, -EINVAL, "ASC MHL generation: writer failed before");
    char mtime[32], hashdate[32];
    if (!valid_rel_path(e->path))
        return error_set(err, -EINVAL, "ASC MHL generation: path '%s' is not a relative UTF-8 path",
                         e->path ? e->path : "(null)");
    if ((!e->md5 && !e->sha1 && !e->xxh128) || !valid_hex(e->md5, 32) || !valid_hex(e->sha1, 40) ||
        !valid_hex(e->xxh128, 32) || xs_datetime(e->mtime, mtime) < 0 ||
        xs_datetime(e->hashdate, hashdate) < 0 || e->size > INT64_MAX)
        return error_set(err, -EINVAL, "ASC MHL generation: invalid hashes or dates for '%s'",
                         e->path);
    xmlTextWriterPtr tw = w->out.tw;
    const char *action = action_name(e->action);
    if (!w->in_hashes) {
        W(xmlTextWriterStartElement(tw, BAD_CAST "hashes"));
        w->in_hashes = true;
    }
    const struct {
        const char *tag;
        const char *hex;
    } hashes[] = {{"md5", e->md5}, {"sha1", e->sha1}, {"xxh128", e->xxh128}}; /* schema order */
    W(xmlTextWriterStartElement(tw, BAD_CAST "hash"));
    W(xmlTextWriterStartElement(tw, BAD_CAST "path"));
    W(xmlTextWriterWriteFormatAttribute(tw, BAD_CAST "size", "%" PRIu64, e->size));
    W(xmlTextWriterWriteAttribute(tw, BAD_CAST "lastmodificationdate", BAD_CAST mtime));
    W(xmlTextWriterWriteString(tw, BAD_CAST e->path));
    W(xmlTextWriterEndElement(tw));
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (!hashes[i].hex)
            continue;
        W(xmlTextWriterStartElement(tw, BAD_CAST hashes[i].tag));
        W(xmlTextWriterWriteAttribute(tw, BAD_CAST "action", BAD_CAST action));
        W(xmlTextWriterWriteAttribute(tw, BAD_CAST "hashdate", BAD_CAST hashdate));
        W(xmlTextWriterWriteString(tw, BAD_CAST hashes[i].hex));
        W(xmlTextWriterEndElement(tw));
    }
    W(xmlTextWriterEndElement(tw)); /* hash */
    return 0;
fail:
    return out_failed(&w->out, err, "an ASC MHL generation");
}

int mhl_writer_end(struct mhl_writer *w, char c4_out[MHL_C4_LEN + 1], struct error *err)
{
    if (!w->out.failed && w->in_hashes && xmlTextWriterEndElement(w->out.tw) < 0)
        out_failed(&w->out, NULL, "an ASC MHL generation");
    int r = out_close(&w->out, c4_out, err, "an ASC MHL generation");
    free(w);
    return r;
}

void mhl_writer_free(struct mhl_writer *w)
{
    if (!w)
        return;
    out_free(&w->out);
    free(w);
}

/* ---- the chain ---- */

static bool is_element(const xmlNode *n, const char *name, const char *ns)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0 && n->ns &&
           n->ns->href && strcmp((const char *)n->ns->href, ns) == 0;
}

/* The text of element n, trimmed of white space, into out (size bytes). False when it holds
 * anything but text or does not fit. */
static bool element_text(const xmlNode *n, char *out, size_t size)
{
    size_t len = 0;
    for (const xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_COMMENT_NODE)
            continue;
        if (c->type != XML_TEXT_NODE || !c->content)
            return false;
        size_t k = strlen((const char *)c->content);
        if (len + k >= size)
            return false;
        memcpy(out + len, c->content, k);
        len += k;
    }
    out[len] = '\0';
    size_t start = strspn(out, " \t\r\n");
    while (len > start && strchr(" \t\r\n", out[len - 1]))
        len--;
    memmove(out, out + start, len - start);
    out[len - start] = '\0';
    return true;
}

static bool valid_c4(const char *s)
{
    if (strlen(s) != MHL_C4_LEN || s[0] != 'c' || s[1] != '4')
        return false;
    for (size_t i = 2; i < MHL_C4_LEN; i++)
        if (!strchr(base58, s[i]) || !s[i])
            return false;
    return true;
}

static int parse_gen(const xmlNode *h, struct mhl_chain_gen *g, struct error *err)
{
    memset(g, 0, sizeof(*g));
    xmlChar *seq = xmlGetNoNsProp(h, BAD_CAST "sequencenr");
    char *end = NULL;
    unsigned long v = 0;
    if (seq) {
        errno = 0;
        v = strtoul((const char *)seq, &end, 10);
        if (errno || end == (char *)seq || *end || v == 0 || v > MHL_SEQ_MAX ||
            ((const char *)seq)[0] == '-')
            v = 0;
    }
    xmlFree(seq);
    if (v == 0)
        return error_set(err, -EBADMSG, "line %ld: a generation without a valid sequencenr",
                         (long)xmlGetLineNo(h));
    g->seq = (unsigned)v;
    bool have_name = false, have_c4 = false;
    for (const xmlNode *c = h->children; c; c = c->next) {
        if (is_element(c, "path", MHL_DIRECTORY_NS)) {
            have_name = element_text(c, g->name, sizeof(g->name)) &&
                        is_component(g->name, strlen(g->name)) && valid_utf8(g->name);
        } else if (is_element(c, "c4", MHL_DIRECTORY_NS)) {
            have_c4 = element_text(c, g->c4, sizeof(g->c4)) && valid_c4(g->c4);
        }
    }
    if (!have_name || !have_c4)
        return error_set(err, -EBADMSG, "line %ld: generation %u without a valid file name and C4",
                         (long)xmlGetLineNo(h), g->seq);
    return 0;
}

static int gen_cmp(const void *a, const void *b)
{
    unsigned x = ((const struct mhl_chain_gen *)a)->seq, y = ((const struct mhl_chain_gen *)b)->seq;
    return x < y ? -1 : x > y;
}

int mhl_chain_parse(const char *buf, size_t len, struct mhl_chain *ret, struct error *err)
{
    memset(ret, 0, sizeof(*ret));
    if (len > MHL_CHAIN_MAX_BYTES)
        return error_set(err, -EFBIG, "%s is larger than %u bytes", MHL_CHAIN_NAME,
                         MHL_CHAIN_MAX_BYTES);
    xml_thread_setup();
    int r = 0;
    size_t cap = 0;
    xmlDocPtr doc = NULL;
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt)
        return error_set(err, -ENOMEM, "out of memory");
    doc = xmlCtxtReadMemory(ctxt, buf, (int)len, MHL_CHAIN_NAME, NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        char msg[160] = "unreadable";
        if (e && e->message)
            snprintf(msg, sizeof(msg), "%s", e->message);
        msg[strcspn(msg, "\r\n")] = '\0';
        r = error_set(err, -EBADMSG, "%s is not XML (line %d: %s)", MHL_CHAIN_NAME, e ? e->line : 0,
                      msg);
        goto out;
    }
    if (doc->intSubset || doc->extSubset) {
        r = error_set(err, -EBADMSG, "%s has a DOCTYPE, which a chain never has", MHL_CHAIN_NAME);
        goto out;
    }
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!root || !is_element(root, "ascmhldirectory", MHL_DIRECTORY_NS)) {
        r = error_set(err, -EBADMSG, "%s is not an ASC MHL chain (<ascmhldirectory xmlns=\"%s\">)",
                      MHL_CHAIN_NAME, MHL_DIRECTORY_NS);
        goto out;
    }
    for (xmlNodePtr h = root->children; h; h = h->next) {
        if (!is_element(h, "hashlist", MHL_DIRECTORY_NS))
            continue;
        if (ret->n >= MHL_CHAIN_MAX_GENERATIONS) {
            r = error_set(err, -EFBIG, "%s lists more than %u generations", MHL_CHAIN_NAME,
                          MHL_CHAIN_MAX_GENERATIONS);
            goto out;
        }
        struct mhl_chain_gen g;
        r = parse_gen(h, &g, err);
        if (r < 0) {
            error_prefix(err, "%s", MHL_CHAIN_NAME);
            goto out;
        }
        if (ret->n == cap) {
            cap = cap ? cap * 2 : 8;
            struct mhl_chain_gen *p = realloc(ret->gens, cap * sizeof(*p));
            if (!p) {
                r = error_set(err, -ENOMEM, "out of memory");
                goto out;
            }
            ret->gens = p;
        }
        ret->gens[ret->n++] = g;
    }
    if (ret->n)
        qsort(ret->gens, ret->n, sizeof(*ret->gens), gen_cmp);
    for (size_t i = 1; i < ret->n; i++)
        if (ret->gens[i].seq == ret->gens[i - 1].seq) {
            r = error_set(err, -EBADMSG, "%s lists generation %u twice", MHL_CHAIN_NAME,
                          ret->gens[i].seq);
            goto out;
        }
out:
    if (r < 0)
        mhl_chain_free(ret);
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return r;
}

unsigned mhl_chain_last_seq(const struct mhl_chain *c)
{
    return c->n ? c->gens[c->n - 1].seq : 0;
}

int mhl_chain_append(struct mhl_chain *c, const struct mhl_chain_gen *g)
{
    if (g->seq == 0 || g->seq <= mhl_chain_last_seq(c))
        return -EINVAL;
    struct mhl_chain_gen *p = realloc(c->gens, (c->n + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    c->gens = p;
    c->gens[c->n++] = *g;
    return 0;
}

int mhl_chain_write(const struct mhl_chain *c, struct mhl_sink sink, struct error *err)
{
    struct xml_out o;
    int r = out_open(&o, sink, err);
    if (r < 0)
        return r;
    xmlTextWriterPtr tw = o.tw;
    W(xmlTextWriterStartElement(tw, BAD_CAST "ascmhldirectory"));
    W(xmlTextWriterWriteAttribute(tw, BAD_CAST "xmlns", BAD_CAST MHL_DIRECTORY_NS));
    for (size_t i = 0; i < c->n; i++) {
        W(xmlTextWriterStartElement(tw, BAD_CAST "hashlist"));
        W(xmlTextWriterWriteFormatAttribute(tw, BAD_CAST "sequencenr", "%u", c->gens[i].seq));
        W(xmlTextWriterWriteElement(tw, BAD_CAST "path", BAD_CAST c->gens[i].name));
        W(xmlTextWriterWriteElement(tw, BAD_CAST "c4", BAD_CAST c->gens[i].c4));
        W(xmlTextWriterEndElement(tw));
    }
    W(xmlTextWriterEndElement(tw));
    return out_close(&o, NULL, err, MHL_CHAIN_NAME);
fail:
    r = out_failed(&o, err, MHL_CHAIN_NAME);
    out_free(&o);
    return r;
}

void mhl_chain_free(struct mhl_chain *c)
{
    if (!c)
        return;
    free(c->gens);
    c->gens = NULL;
    c->n = 0;
}
