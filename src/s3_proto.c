/* SPDX-License-Identifier: MIT */
/*
 * Pure S3 protocol helpers (s3_proto.h). The XML replies are parsed into a libxml2 tree with the
 * network, entity substitution and DTD loading off and libxml2's own error printing silenced;
 * elements are matched by local name whatever their namespace (AWS puts its replies in
 * http://s3.amazonaws.com/doc/2006-03-01/, some servers none), only direct children of the root
 * are looked at, and a reply over S3_REPLY_MAX bytes is refused before parsing.
 */
#include "s3_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>

#include "hasher.h"
#include "xml.h"

#define LIST_UPLOADS_MAX 1000

/* The document of xml whose root is named root, or NULL. */
static xmlDocPtr xml_open(const char *xml, size_t len, const char *root, xmlNodePtr *ret_root)
{
    if (!xml || len == 0 || len > S3_REPLY_MAX)
        return NULL;
    xml_thread_setup();
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, "reply.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc)
        return NULL;
    xmlNodePtr r = xmlDocGetRootElement(doc);
    if (!r || strcmp((const char *)r->name, root) != 0) {
        xmlFreeDoc(doc);
        return NULL;
    }
    *ret_root = r;
    return doc;
}

/* The first element child of parent named name, or NULL. */
static xmlNodePtr child(xmlNodePtr parent, const char *name)
{
    for (xmlNodePtr n = parent->children; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0)
            return n;
    return NULL;
}

/* The text of parent's child name into out (printable ASCII, cut to size); false when absent or
 * longer than size - 1 when exact. */
static bool child_text(xmlNodePtr parent, const char *name, char *out, size_t size, bool exact)
{
    xmlNodePtr n = child(parent, name);
    if (!n)
        return false;
    xmlChar *t = xmlNodeGetContent(n);
    if (!t)
        return false;
    size_t len = strlen((const char *)t);
    bool ok = !exact || len < size;
    if (ok) {
        size_t k = 0;
        for (size_t i = 0; i < len && k + 1 < size; i++) {
            unsigned char c = t[i];
            out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        }
        out[k] = '\0';
    }
    xmlFree(t);
    return ok;
}

int s3_object_key(const char *prefix, const char *folder, const char *name, char *out, size_t size)
{
    if (!name || !name[0] || strchr(name, '/'))
        return -EINVAL;
    const char *p = prefix ? prefix : "";
    while (*p == '/')
        p++;
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    /* each component of the prefix must be a real folder name */
    for (size_t i = 0; i < plen;) {
        size_t j = i;
        while (j < plen && p[j] != '/')
            j++;
        size_t c = j - i;
        if (c == 0 || (c == 1 && p[i] == '.') || (c == 2 && p[i] == '.' && p[i + 1] == '.'))
            return -EINVAL;
        i = j + 1;
    }
    const char *d = folder ? folder : "";
    int n = snprintf(out, size, "%.*s%s%s%s%s", (int)plen, p, plen ? "/" : "", d, d[0] ? "/" : "",
                     name);
    if (n < 0 || (size_t)n >= size || n > S3_KEY_MAX)
        return -ENAMETOOLONG;
    return 0;
}

int s3_uri_encode(const char *key, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~' ||
                     *p == '/';
        if (k + (plain ? 1 : 3) >= size)
            return -ENAMETOOLONG;
        if (plain) {
            out[k++] = (char)*p;
        } else {
            out[k++] = '%';
            out[k++] = hex[*p >> 4];
            out[k++] = hex[*p & 15];
        }
    }
    if (k >= size)
        return -ENAMETOOLONG;
    out[k] = '\0';
    return 0;
}

void s3_multipart_etag(const uint8_t (*md5s)[16], size_t n, char out[S3_ETAG_MAX])
{
    uint8_t sum[16];
    unsigned int len = 0;
    EVP_Digest(md5s, n * 16, sum, &len, EVP_md5(), NULL);
    hasher_hex(sum, sizeof(sum), out);
    snprintf(out + 32, S3_ETAG_MAX - 32, "-%zu", n);
}

bool s3_etag_equal(const char *etag, const char *want)
{
    if (!etag || !want)
        return false;
    size_t len = strlen(etag);
    if (len >= 2 && etag[0] == '"' && etag[len - 1] == '"') {
        etag++;
        len -= 2;
    }
    return len == strlen(want) && strncasecmp(etag, want, len) == 0;
}

int s3_parse_error(const char *xml, size_t len, char *code, size_t code_size, char *msg,
                   size_t msg_size)
{
    xmlNodePtr root;
    xmlDocPtr doc = xml_open(xml, len, "Error", &root);
    if (!doc)
        return -EBADMSG;
    char c[S3_CODE_MAX];
    int r = child_text(root, "Code", c, sizeof(c), true) && c[0] ? 0 : -EBADMSG;
    if (r == 0) {
        snprintf(code, code_size, "%s", c);
        if (!child_text(root, "Message", msg, msg_size, false))
            msg[0] = '\0';
    }
    xmlFreeDoc(doc);
    return r;
}

int s3_parse_upload_id(const char *xml, size_t len, char id[S3_UPLOAD_ID_MAX], struct error *err)
{
    xmlNodePtr root;
    xmlDocPtr doc = xml_open(xml, len, "InitiateMultipartUploadResult", &root);
    if (!doc)
        return error_set(err, -EBADMSG, "not an InitiateMultipartUploadResult");
    char v[S3_UPLOAD_ID_MAX];
    bool ok = child_text(root, "UploadId", v, sizeof(v), true) && v[0];
    xmlFreeDoc(doc);
    if (!ok)
        return error_set(err, -EBADMSG, "no UploadId in the reply");
    memcpy(id, v, sizeof(v));
    return 0;
}

int s3_parse_complete(const char *xml, size_t len, char etag[S3_ETAG_MAX], struct error *err)
{
    xmlNodePtr root;
    xmlDocPtr doc = xml_open(xml, len, "CompleteMultipartUploadResult", &root);
    if (!doc) {
        char code[S3_CODE_MAX], msg[256];
        if (s3_parse_error(xml, len, code, sizeof(code), msg, sizeof(msg)) == 0)
            return error_set(err, -EBADMSG, "%s: %s", code, msg);
        return error_set(err, -EBADMSG, "not a CompleteMultipartUploadResult");
    }
    char v[S3_ETAG_MAX + 2];
    bool ok = child_text(root, "ETag", v, sizeof(v), true) && v[0];
    xmlFreeDoc(doc);
    if (!ok)
        return error_set(err, -EBADMSG, "no ETag in the reply");
    size_t l = strlen(v);
    const char *s = v;
    if (l >= 2 && v[0] == '"' && v[l - 1] == '"') {
        s++;
        l -= 2;
    }
    if (l >= S3_ETAG_MAX)
        return error_set(err, -EBADMSG, "ETag too long");
    memcpy(etag, s, l);
    etag[l] = '\0';
    return 0;
}

int s3_parse_list_uploads(const char *xml, size_t len,
                          int (*fn)(const char *key, const char *upload_id, const char *initiated,
                                    void *arg),
                          void *arg, bool *ret_truncated, char *next_key, char *next_id,
                          struct error *err)
{
    xmlNodePtr root;
    xmlDocPtr doc = xml_open(xml, len, "ListMultipartUploadsResult", &root);
    if (!doc)
        return error_set(err, -EBADMSG, "not a ListMultipartUploadsResult");
    int r = 0;
    char key[S3_KEY_MAX + 1], id[S3_UPLOAD_ID_MAX], when[40], trunc[8] = "";
    size_t seen = 0;
    for (xmlNodePtr n = root->children; n && r == 0; n = n->next) {
        if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, "Upload") != 0)
            continue;
        if (++seen > LIST_UPLOADS_MAX) {
            r = error_set(err, -EBADMSG, "more than %d uploads in one reply", LIST_UPLOADS_MAX);
            break;
        }
        if (child_text(n, "Key", key, sizeof(key), true) &&
            child_text(n, "UploadId", id, sizeof(id), true) && key[0] && id[0]) {
            if (!child_text(n, "Initiated", when, sizeof(when), false))
                when[0] = '\0';
            r = fn(key, id, when, arg);
        }
    }
    if (r == 0) {
        child_text(root, "IsTruncated", trunc, sizeof(trunc), false);
        *ret_truncated = strcmp(trunc, "true") == 0;
        if (!child_text(root, "NextKeyMarker", next_key, S3_KEY_MAX + 1, true))
            next_key[0] = '\0';
        if (!child_text(root, "NextUploadIdMarker", next_id, S3_UPLOAD_ID_MAX, true))
            next_id[0] = '\0';
    }
    xmlFreeDoc(doc);
    return r;
}

int s3_error_errno(long status, const char *code, const char **ret_hint)
{
    static const struct {
        const char *code;
        int err;
        const char *hint;
    } codes[] = {
        {"NoSuchBucket", -ENOENT, "the bucket does not exist; create it or fix s3.bucket"},
        {"AccessDenied", -EACCES, "the key may not do this; check the bucket's policy"},
        {"InvalidAccessKeyId", -EACCES, "the access key id is unknown; check S3_ACCESS_KEY_ID"},
        {"SignatureDoesNotMatch", -EACCES,
         "the secret key is wrong (S3_SECRET_ACCESS_KEY), or s3.region is not the bucket's"},
        {"AuthorizationHeaderMalformed", -EACCES, "s3.region may not be the bucket's region"},
        {"RequestTimeTooSkewed", -EACCES,
         "this machine's clock is off; set it right (NTP) and try again"},
        {"ExpiredToken", -EACCES, "the credentials have expired"},
        {"QuotaExceeded", -ENOSPC, "the storage quota is used up"},
        {"EntityTooLarge", -ENOSPC, "the server refuses objects this large"},
        {"SlowDown", -EAGAIN, "the server asks to slow down"},
        {"ServiceUnavailable", -EAGAIN, "the server is busy"},
        {"InternalError", -EIO, "the server failed"},
    };
    *ret_hint = "";
    for (size_t i = 0; code && i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i].code) == 0) {
            *ret_hint = codes[i].hint;
            return codes[i].err;
        }
    if (status == 401 || status == 403) {
        *ret_hint = "access denied; check the keys and the bucket's policy";
        return -EACCES;
    }
    if (status == 429 || status == 503)
        return -EAGAIN;
    if (status == 507) {
        *ret_hint = "the server is out of space";
        return -ENOSPC;
    }
    if (status >= 500)
        return -EIO;
    return -EINVAL;
}
