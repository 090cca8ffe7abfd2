/* SPDX-License-Identifier: MIT */
/*
 * The pure parts of the S3 protocol (s3_proto.c), kept apart from the transfers of dest_s3.c so
 * that they can be unit tested and fuzzed: object keys, their URL encoding, ETags, and the XML
 * replies of S3-compatible servers, read with libxml2 (no network, no entities, bounded).
 *
 * Every function is pure and may be called from any thread. Parsers take a reply of len bytes
 * (not NUL-terminated), return 0 or -EBADMSG (not the expected XML), write outputs only on
 * success, NUL-terminated and cut to their size, with bytes outside printable ASCII replaced.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define S3_REPLY_MAX (1024 * 1024) /* the largest XML reply parsed */
#define S3_CODE_MAX 64             /* an error code ("NoSuchBucket") */
#define S3_UPLOAD_ID_MAX 1024      /* a multipart upload id */
#define S3_ETAG_MAX 48             /* "<32 hex>-<parts>" without quotes */
#define S3_KEY_MAX 1024            /* bytes of an object key (S3's own limit) */
#define S3_PARTS_MAX 10000         /* parts of one multipart upload (S3's own limit) */

/*
 * The object key of a file: prefix (leading and trailing '/' dropped, "" for none), then
 * folder (from the folder pattern, "YYYY/MM/DD"; NULL or "" for none), then name, joined by '/'. 0,
 * or -EINVAL (name empty or holding '/'; prefix holding "//", "." or ".." components),
 * -ENAMETOOLONG (more than S3_KEY_MAX bytes or size).
 */
int s3_object_key(const char *prefix, const char *folder, const char *name, char *out, size_t size);

/* key percent-encoded for a URL path and SigV4's canonical URI: every byte but A-Z a-z 0-9
 * '-' '.' '_' '~' and '/' as %XX. 0, or -ENAMETOOLONG when it does not fit in size. */
int s3_uri_encode(const char *key, char *out, size_t size);

/* The ETag S3 gives a multipart object of n parts whose binary MD5s are md5s: hex MD5 of their
 * concatenation, "-n". out holds S3_ETAG_MAX bytes. */
void s3_multipart_etag(const uint8_t (*md5s)[16], size_t n, char out[S3_ETAG_MAX]);

/* True when the ETag header value etag (quoted or not, any case) is want ("<hex>" or
 * "<hex>-<n>"). NULL etag: false. */
bool s3_etag_equal(const char *etag, const char *want);

/*
 * An error reply (<Error><Code/><Message/></Error>): its code and message. 0 or -EBADMSG (not
 * such a document; the caller then names the HTTP status alone).
 */
int s3_parse_error(const char *xml, size_t len, char *code, size_t code_size, char *msg,
                   size_t msg_size);

/* InitiateMultipartUploadResult: its UploadId (S3_UPLOAD_ID_MAX bytes). 0 or -EBADMSG. */
int s3_parse_upload_id(const char *xml, size_t len, char id[S3_UPLOAD_ID_MAX], struct error *err);

/* CompleteMultipartUploadResult: its ETag (unquoted, S3_ETAG_MAX bytes). -EBADMSG also for an
 * <Error> document, which S3 may send with status 200 after the parts were joined. */
int s3_parse_complete(const char *xml, size_t len, char etag[S3_ETAG_MAX], struct error *err);

/*
 * ListMultipartUploadsResult: calls fn(key, upload_id, initiated, arg) for each <Upload> (at
 * most 1000; a key or id too long is skipped; initiated is the ISO-8601 time or ""); fn returns 0
 * to go on, else that is returned. *ret_truncated is IsTruncated; next_key and next_id (S3_KEY_MAX
 * + 1 and S3_UPLOAD_ID_MAX bytes) the markers of the next page, "" when absent. 0, -EBADMSG or fn's
 * error.
 */
int s3_parse_list_uploads(const char *xml, size_t len,
                          int (*fn)(const char *key, const char *upload_id, const char *initiated,
                                    void *arg),
                          void *arg, bool *ret_truncated, char *next_key, char *next_id,
                          struct error *err);

/*
 * The errno of a failed S3 request and a hint for the user, from its HTTP status and error code
 * (code "" when the reply had none): -EACCES access denied, bad keys, a signature refused (hint:
 * the clock may be off for RequestTimeTooSkewed), -ENOENT bucket missing, -ENOSPC quota or too
 * large, -EAGAIN slow down / 429 / 503, -EIO other 5xx, -EINVAL other 4xx. *ret_hint is a static
 * string ("" for none).
 */
int s3_error_errno(long status, const char *code, const char **ret_hint);
