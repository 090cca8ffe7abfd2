/* SPDX-License-Identifier: MIT */
/* Unit tests for jsonout.c: UTF-8 validation, U+FFFD replacement and the _hex twin of paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "jsonout.h"

static bool valid(const char *s)
{
    return jsonout_utf8_valid(s, strlen(s));
}

static void test_valid_and_invalid(void **state)
{
    (void)state;
    assert_true(valid(""));
    assert_true(valid("IMG_0001.JPG"));
    assert_true(valid("caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x93\xb7")); /* é € 📷 */
    assert_true(valid("\xf4\x8f\xbf\xbf"));                          /* U+10FFFF */
    assert_false(valid("IMG_\xff.JPG"));                             /* never in UTF-8 */
    assert_false(valid("\xc3"));                                     /* cut short */
    assert_false(valid("\xc0\xaf"));                                 /* overlong '/' */
    assert_false(valid("\xe0\x80\xaf"));                             /* overlong */
    assert_false(valid("\xed\xa0\x80"));                             /* a surrogate */
    assert_false(valid("\xf4\x90\x80\x80"));                         /* above U+10FFFF */
    assert_false(valid("\x80"));                                     /* lone continuation */
    assert_true(jsonout_utf8_valid(NULL, 0));
}

static void test_sanitize(void **state)
{
    (void)state;
    char *s = jsonout_utf8_sanitize("a\xff"
                                    "b\xc3");
    assert_string_equal(s, "a\xef\xbf\xbd"
                           "b\xef\xbf\xbd");
    free(s);
    s = jsonout_utf8_sanitize("caf\xc3\xa9");
    assert_string_equal(s, "caf\xc3\xa9");
    free(s);
    s = jsonout_utf8_sanitize("\xed\xa0\x80");
    assert_string_equal(s, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(valid(s));
    free(s);
    assert_null(jsonout_utf8_sanitize(NULL));
}

static void test_string(void **state)
{
    (void)state;
    json_object *o = jsonout_string("IMG_\xfe\xff.JPG");
    assert_string_equal(json_object_get_string(o), "IMG_\xef\xbf\xbd\xef\xbf\xbd.JPG");
    json_object_put(o);
    assert_null(jsonout_string(NULL));
    assert_null(jsonout_string_or_null(""));
    o = jsonout_string_or_null("x");
    assert_string_equal(json_object_get_string(o), "x");
    json_object_put(o);
}

static void test_add_path(void **state)
{
    (void)state;
    json_object *o = json_object_new_object();
    jsonout_add_path(o, "path", "DCIM/\xff\x01.JPG");
    jsonout_add_path(o, "ok", "DCIM/caf\xc3\xa9.JPG");
    jsonout_add_path(o, "none", NULL);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "path", &v));
    assert_string_equal(json_object_get_string(v), "DCIM/\xef\xbf\xbd\x01.JPG");
    assert_true(json_object_object_get_ex(o, "path_hex", &v));
    assert_string_equal(json_object_get_string(v), "4443494d2fff012e4a5047");
    assert_true(json_object_object_get_ex(o, "ok", &v));
    assert_string_equal(json_object_get_string(v), "DCIM/caf\xc3\xa9.JPG");
    assert_false(json_object_object_get_ex(o, "ok_hex", &v));
    assert_true(json_object_object_get_ex(o, "none", &v));
    assert_null(v);
    assert_false(json_object_object_get_ex(o, "none_hex", &v));
    /* the serialised document is valid UTF-8 as a whole */
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    assert_true(valid(text));
    json_object_put(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_invalid),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_add_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
