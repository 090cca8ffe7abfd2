/* SPDX-License-Identifier: MIT */
/* Unit tests for the pure S3 pieces (s3_proto.h): object keys, their encoding, ETags, the XML
 * replies of AWS and other servers, hostile input, and the mapping of errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "s3_proto.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void test_object_key(void **state)
{
    (void)state;
    char k[S3_KEY_MAX + 1];
    assert_int_equal(
        s3_object_key("/backups/station1/", "2023/07/14", "IMG_0001.JPG", k, sizeof(k)), 0);
    assert_string_equal(k, "backups/station1/2023/07/14/IMG_0001.JPG");
    assert_int_equal(s3_object_key("", "", "a.jpg", k, sizeof(k)), 0);
    assert_string_equal(k, "a.jpg");
    assert_int_equal(s3_object_key(NULL, "2023/01/02", "a.jpg", k, sizeof(k)), 0);
    assert_string_equal(k, "2023/01/02/a.jpg");
    assert_int_equal(s3_object_key("p", NULL, "a.jpg", k, sizeof(k)), 0);
    assert_string_equal(k, "p/a.jpg");
    /* refused: a name with '/', an empty one, a prefix with empty, "." or ".." components */
    assert_int_equal(s3_object_key("p", NULL, "a/b", k, sizeof(k)), -EINVAL);
    assert_int_equal(s3_object_key("p", NULL, "", k, sizeof(k)), -EINVAL);
    assert_int_equal(s3_object_key("a//b", NULL, "x", k, sizeof(k)), -EINVAL);
    assert_int_equal(s3_object_key("a/../b", NULL, "x", k, sizeof(k)), -EINVAL);
    assert_int_equal(s3_object_key("./b", NULL, "x", k, sizeof(k)), -EINVAL);
    /* S3's ceiling of 1024 bytes, and the buffer's */
    char *long_prefix = malloc(1100);
    assert_non_null(long_prefix);
    memset(long_prefix, 'p', 1099);
    long_prefix[1099] = '\0';
    assert_int_equal(s3_object_key(long_prefix, NULL, "x", k, sizeof(k)), -ENAMETOOLONG);
    free(long_prefix);
    char small[8];
    assert_int_equal(s3_object_key("prefix", NULL, "x", small, sizeof(small)), -ENAMETOOLONG);
}

static void test_uri_encode(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(s3_uri_encode("a/b c+d%é~_.-", out, sizeof(out)), 0);
    assert_string_equal(out, "a/b%20c%2Bd%25%C3%A9~_.-");
    assert_int_equal(s3_uri_encode("abc", out, 4), 0);
    assert_int_equal(s3_uri_encode("abc", out, 3), -ENAMETOOLONG);
    assert_int_equal(s3_uri_encode(" ", out, 3), -ENAMETOOLONG);
}

static void test_etags(void **state)
{
    (void)state;
    /* the MD5s of "hello" and "world"; the ETag S3 gives the object of these two parts is the
     * MD5 of their 32 bytes, "-2" (computed with Python's hashlib) */
    const uint8_t md5s[2][16] = {
        {0x5d, 0x41, 0x40, 0x2a, 0xbc, 0x4b, 0x2a, 0x76, 0xb9, 0x71, 0x9d, 0x91, 0x10, 0x17, 0xc5,
         0x92},
        {0x7d, 0x79, 0x30, 0x37, 0xa0, 0x76, 0x01, 0x86, 0x57, 0x4b, 0x02, 0x82, 0xf2, 0xf4, 0x35,
         0xe7},
    };
    char etag[S3_ETAG_MAX];
    s3_multipart_etag(md5s, 2, etag);
    assert_string_equal(etag, "065947336a2f2a95ba8899f3675c3be6-2");
    assert_true(s3_etag_equal("\"065947336A2F2A95BA8899F3675C3BE6-2\"", etag));
    assert_true(s3_etag_equal(etag, etag));
    assert_false(s3_etag_equal("\"065947336a2f2a95ba8899f3675c3be6-3\"", etag));
    assert_false(s3_etag_equal("\"065947336a2f2a95ba8899f3675c3be6\"", etag));
    assert_false(s3_etag_equal(NULL, etag));
    assert_false(s3_etag_equal("\"", etag));
}

static void test_error_reply(void **state)
{
    (void)state;
    char code[S3_CODE_MAX], msg[64];
    assert_int_equal(
        s3_parse_error(S("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket"
                         "</Code><Message>The specified bucket does not exist</Message>"
                         "<BucketName>x</BucketName></Error>"),
                       code, sizeof(code), msg, sizeof(msg)),
        0);
    assert_string_equal(code, "NoSuchBucket");
    assert_string_equal(msg, "The specified bucket does not exist");
    /* a message cut to its buffer, control characters replaced, no message at all */
    char tiny[8];
    assert_int_equal(s3_parse_error(S("<Error><Code>A</Code><Message>line\none two three"
                                      "</Message></Error>"),
                                    code, sizeof(code), tiny, sizeof(tiny)),
                     0);
    assert_string_equal(tiny, "line?on");
    assert_int_equal(s3_parse_error(S("<Error><Code>SlowDown</Code></Error>"), code, sizeof(code),
                                    msg, sizeof(msg)),
                     0);
    assert_string_equal(msg, "");
    /* not an S3 error: HTML of a proxy, no code, broken XML, an entity that must not load */
    assert_int_equal(
        s3_parse_error(S("<html><body>502</body></html>"), code, sizeof(code), msg, sizeof(msg)),
        -EBADMSG);
    assert_int_equal(s3_parse_error(S("<Error><Message>m</Message></Error>"), code, sizeof(code),
                                    msg, sizeof(msg)),
                     -EBADMSG);
    assert_int_equal(s3_parse_error(S("<Error><Code>x"), code, sizeof(code), msg, sizeof(msg)),
                     -EBADMSG);
    assert_int_equal(s3_parse_error(S("<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                                      "<Error><Code>&x;</Code></Error>"),
                                    code, sizeof(code), msg, sizeof(msg)),
                     -EBADMSG);
    assert_int_equal(s3_parse_error("", 0, code, sizeof(code), msg, sizeof(msg)), -EBADMSG);
}

static void test_upload_replies(void **state)
{
    (void)state;
    struct error err;
    char id[S3_UPLOAD_ID_MAX], etag[S3_ETAG_MAX];
    assert_int_equal(
        s3_parse_upload_id(S("<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/"
                             "2006-03-01/\"><Bucket>b</Bucket><Key>k</Key><UploadId>VXBsb2FkIElE"
                             "</UploadId></InitiateMultipartUploadResult>"),
                           id, &err),
        0);
    assert_string_equal(id, "VXBsb2FkIElE");
    assert_int_equal(s3_parse_upload_id(S("<InitiateMultipartUploadResult/>"), id, &err), -EBADMSG);
    assert_int_equal(
        s3_parse_complete(S("<CompleteMultipartUploadResult><Location>l</Location><ETag>"
                            "&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag>"
                            "</CompleteMultipartUploadResult>"),
                          etag, &err),
        0);
    assert_string_equal(etag, "3858f62230ac3c915f300c664312c11f-9");
    /* S3 may answer 200 and then an error, after the parts were joined */
    assert_int_equal(s3_parse_complete(S("<Error><Code>InternalError</Code><Message>We "
                                         "encountered an internal error.</Message></Error>"),
                                       etag, &err),
                     -EBADMSG);
    assert_non_null(strstr(err.msg, "InternalError"));
    assert_int_equal(s3_parse_complete(S("<CompleteMultipartUploadResult><ETag>"
                                         "0123456789012345678901234567890123456789012345678901"
                                         "</ETag></CompleteMultipartUploadResult>"),
                                       etag, &err),
                     -EBADMSG);
}

struct seen {
    char keys[4][64];
    char whens[4][40];
    size_t n;
};

static int on_upload(const char *key, const char *upload_id, const char *initiated, void *arg)
{
    struct seen *s = arg;
    assert_true(upload_id[0] != '\0');
    if (s->n < 4) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", key);
        snprintf(s->whens[s->n], sizeof(s->whens[0]), "%s", initiated);
    }
    s->n++;
    return 0;
}

static void test_list_uploads(void **state)
{
    (void)state;
    struct error err;
    struct seen s;
    memset(&s, 0, sizeof(s));
    bool more = false;
    char next_key[S3_KEY_MAX + 1], next_id[S3_UPLOAD_ID_MAX];
    assert_int_equal(
        s3_parse_list_uploads(
            S("<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
              "<Bucket>b</Bucket><KeyMarker></KeyMarker><NextKeyMarker>p/b.mp4</NextKeyMarker>"
              "<NextUploadIdMarker>id2</NextUploadIdMarker><IsTruncated>true</IsTruncated>"
              "<Upload><Key>p/a.mp4</Key><UploadId>id1</UploadId>"
              "<Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>"
              "<Upload><Key>p/b.mp4</Key><UploadId>id2</UploadId></Upload>"
              "<Upload><Key>no id</Key></Upload></ListMultipartUploadsResult>"),
            on_upload, &s, &more, next_key, next_id, &err),
        0);
    assert_int_equal(s.n, 2); /* the one without an id is skipped */
    assert_string_equal(s.keys[0], "p/a.mp4");
    assert_string_equal(s.whens[0], "2010-11-10T20:48:33.000Z");
    assert_string_equal(s.whens[1], "");
    assert_true(more);
    assert_string_equal(next_key, "p/b.mp4");
    assert_string_equal(next_id, "id2");
    memset(&s, 0, sizeof(s));
    assert_int_equal(s3_parse_list_uploads(S("<ListMultipartUploadsResult>"
                                             "<IsTruncated>false</IsTruncated>"
                                             "</ListMultipartUploadsResult>"),
                                           on_upload, &s, &more, next_key, next_id, &err),
                     0);
    assert_false(more);
    assert_int_equal(s.n, 0);
    assert_string_equal(next_key, "");
    assert_int_equal(s3_parse_list_uploads(S("<Error><Code>NotImplemented</Code></Error>"),
                                           on_upload, &s, &more, next_key, next_id, &err),
                     -EBADMSG);
}

static void test_error_errno(void **state)
{
    (void)state;
    const char *hint;
    assert_int_equal(s3_error_errno(404, "NoSuchBucket", &hint), -ENOENT);
    assert_non_null(strstr(hint, "bucket does not exist"));
    assert_int_equal(s3_error_errno(403, "RequestTimeTooSkewed", &hint), -EACCES);
    assert_non_null(strstr(hint, "clock"));
    assert_int_equal(s3_error_errno(403, "SignatureDoesNotMatch", &hint), -EACCES);
    assert_non_null(strstr(hint, "S3_SECRET_ACCESS_KEY"));
    assert_int_equal(s3_error_errno(403, "InvalidAccessKeyId", &hint), -EACCES);
    assert_int_equal(s3_error_errno(403, "", &hint), -EACCES);
    assert_int_equal(s3_error_errno(400, "EntityTooLarge", &hint), -ENOSPC);
    assert_int_equal(s3_error_errno(403, "QuotaExceeded", &hint), -ENOSPC);
    assert_int_equal(s3_error_errno(503, "SlowDown", &hint), -EAGAIN);
    assert_int_equal(s3_error_errno(500, "", &hint), -EIO);
    assert_string_equal(hint, "");
    assert_int_equal(s3_error_errno(400, "InvalidArgument", &hint), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_key),     cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_etags),          cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_upload_replies), cmocka_unit_test(test_list_uploads),
        cmocka_unit_test(test_error_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
