/* SPDX-License-Identifier: MIT */
/* Unit tests for the Immich reply parsers (immich_reply.h): 2.x and 3.x shapes, hostile input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "immich_reply.h"

#define S(lit) (lit), (sizeof(lit) - 1)
#define UUID "48cff54c-fe0c-4260-8390-23c80d77c2ee"

static void test_version(void **state)
{
    (void)state;
    int v[3] = {0};
    struct error err;
    assert_int_equal(immich_parse_version(S("{\"major\":3,\"minor\":1,\"patch\":0,"
                                            "\"prerelease\":null}"),
                                          v, &err),
                     0);
    assert_int_equal(v[0], 3);
    assert_int_equal(v[1], 1);
    assert_int_equal(immich_parse_version(S("{\"major\":2,\"minor\":7,\"patch\":5}"), v, &err),
                     0); /* 2.x has no prerelease */
    assert_int_equal(v[2], 5);
    assert_int_equal(immich_parse_version(S("{\"major\":\"3\",\"minor\":1,\"patch\":0}"), v, &err),
                     -EBADMSG);
    assert_int_equal(immich_parse_version(S("{\"major\":3} trailing"), v, &err), -EBADMSG);
    assert_int_equal(immich_parse_version(S(""), v, &err), -EBADMSG);
}

static void test_upload(void **state)
{
    (void)state;
    char id[IMMICH_ID_MAX] = "";
    bool dup = true;
    struct error err;
    assert_int_equal(
        immich_parse_upload(S("{\"id\":\"" UUID "\",\"status\":\"created\"}"), id, &dup, &err), 0);
    assert_string_equal(id, UUID);
    assert_false(dup);
    assert_int_equal(
        immich_parse_upload(S("{\"id\":\"" UUID "\",\"status\":\"duplicate\"}"), id, &dup, &err),
        0);
    assert_true(dup);
    /* an id that would escape the URL path, an unknown status, a truncated reply */
    assert_int_equal(
        immich_parse_upload(S("{\"id\":\"../x\",\"status\":\"created\"}"), id, &dup, &err),
        -EBADMSG);
    assert_int_equal(
        immich_parse_upload(S("{\"id\":\"" UUID "\",\"status\":\"replaced\"}"), id, &dup, &err),
        -EBADMSG);
    assert_int_equal(immich_parse_upload(S("{\"id\": \"oops"), id, &dup, &err), -EBADMSG);
}

static void test_asset_and_key(void **state)
{
    (void)state;
    char sum[64];
    bool trashed = false;
    unsigned perms = 0;
    char name[8];
    struct error err;
    assert_int_equal(immich_parse_asset(S("{\"checksum\":\"qvTGHdzF6KLavt4PO0gs2a6pQ00=\","
                                          "\"isTrashed\":true}"),
                                        sum, &trashed, &err),
                     0);
    assert_string_equal(sum, "qvTGHdzF6KLavt4PO0gs2a6pQ00=");
    assert_true(trashed);
    assert_int_equal(immich_parse_api_key(S("{\"name\":\"a long key name\",\"permissions\":"
                                            "[\"asset.upload\",\"album.read\",7]}"),
                                          &perms, name, sizeof(name), &err),
                     0);
    assert_int_equal(perms, IMMICH_PERM_UPLOAD | IMMICH_PERM_ALBUM_READ);
    assert_string_equal(name, "a long "); /* truncated, terminated */
    assert_int_equal(immich_parse_api_key(S("{\"permissions\":[\"all\"]}"), &perms, NULL, 0, &err),
                     0);
    assert_int_equal(perms, IMMICH_PERM_ALL);
}

static void test_bulk_check(void **state)
{
    (void)state;
    struct dest_precheck res[3];
    struct error err;
    memset(res, 0, sizeof(res));
    assert_int_equal(
        immich_parse_bulk_check(
            S("{\"results\":[{\"id\":\"0\",\"action\":\"reject\",\"reason\":\"duplicate\","
              "\"assetId\":\"" UUID "\",\"isTrashed\":false},{\"id\":\"1\",\"action\":\"accept\"},"
              "{\"id\":\"2\",\"action\":\"reject\",\"assetId\":\"" UUID "\",\"isTrashed\":true}]}"),
            3, res, &err),
        0);
    assert_true(res[0].present);
    assert_string_equal(res[0].remote, UUID);
    assert_false(res[1].present);
    assert_false(res[2].present); /* in the trash: uploaded again, verification tells */
    memset(res, 0, sizeof(res));
    assert_int_equal(immich_parse_bulk_check(S("{\"results\":[{\"id\":\"0\",\"action\":"
                                               "\"reject\",\"assetId\":\"" UUID "\"},{\"id\":"
                                               "\"3\",\"action\":\"accept\"}]}"),
                                             3, res, &err),
                     -EBADMSG);
    assert_false(res[0].present); /* nothing written on failure */
}

static void test_album_and_message(void **state)
{
    (void)state;
    char id[IMMICH_ID_MAX] = "";
    bool found = false;
    struct error err;
    assert_int_equal(immich_parse_album(S("[{\"albumName\":\"a\",\"id\":\"1111\"},{\"albumName\":"
                                          "\"2023-07-14\",\"id\":\"" UUID "\"}]"),
                                        "2023-07-14", id, &found, &err),
                     0);
    assert_true(found);
    assert_string_equal(id, UUID);
    assert_int_equal(immich_parse_album(S("[]"), "x", id, &found, &err), 0);
    assert_false(found);
    char msg[64];
    immich_reply_message(S("{\"message\":[\"a must be\",\"b\"],\"statusCode\":400}"), msg,
                         sizeof(msg));
    assert_string_equal(msg, "a must be; b");
    immich_reply_message(S("{\"message\":\"Quota has been exceeded!\"}"), msg, sizeof(msg));
    assert_string_equal(msg, "Quota has been exceeded!");
    immich_reply_message(S("<html>\r\n502 Bad Gateway</html>"), msg, sizeof(msg));
    assert_string_equal(msg, "<html>??502 Bad Gateway</html>");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),           cmocka_unit_test(test_upload),
        cmocka_unit_test(test_asset_and_key),     cmocka_unit_test(test_bulk_check),
        cmocka_unit_test(test_album_and_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
