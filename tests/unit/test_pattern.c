/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pattern.c: every token's expansion, the cleaning of values from metadata,
 * defaults, and every validation error with its column.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pattern.h"

/* 2024-07-14 23:30:05 (floating) */
#define T 1721000000 /* 2024-07-14 23:33:20 UTC */

static const char MD5[] = "0123456789abcdef0123456789abcdef";

static struct pattern_values vals(void)
{
    return (struct pattern_values){.capture_time = T,
                                   .name = "IMG_0001.JPG",
                                   .make = "Canon",
                                   .model = "Canon EOS R6",
                                   .lens = "RF24-105mm F4 L IS USM",
                                   .serial = "012345678901",
                                   .card = "EOS_DIGITAL",
                                   .session = 42,
                                   .seq = 7,
                                   .md5 = MD5};
}

/* Expands text (of kind) with v and returns the result (static buffer). */
static const char *expand(const char *text, enum pattern_kind kind, const struct pattern_values *v)
{
    static char out[PATTERN_OUT_MAX];
    struct pattern *p = NULL;
    struct error err = {0};
    int r = pattern_compile(text, kind, &p, &err);
    if (r != 0)
        fail_msg("'%s' does not compile: %s", text, err.msg);
    r = pattern_expand(p, v, out, sizeof(out), &err);
    pattern_free(p);
    if (r != 0)
        fail_msg("'%s' does not expand: %s", text, err.msg);
    return out;
}

static void assert_expands(const char *text, const char *want)
{
    struct pattern_values v = vals();
    assert_string_equal(expand(text, PATTERN_FOLDER, &v), want);
}

static void test_time_tokens(void **state)
{
    (void)state;
    assert_expands("{year}/{month}/{day}", "2024/07/14");
    assert_expands("{hour}{minute}{second}", "233320");
    assert_expands("{date}", "2024-07-14");
    assert_expands("{year}/{date} Wedding", "2024/2024-07-14 Wedding");
}

static void test_name_tokens(void **state)
{
    (void)state;
    assert_expands("{name}{ext}", "IMG_0001.JPG");
    assert_expands("{name}{EXT}", "IMG_0001.JPG");
    struct pattern_values v = vals();
    v.name = "clip.mp4";
    assert_string_equal(expand("{name}_{EXT}", PATTERN_FILE, &v), "clip_.MP4");
    assert_string_equal(expand("{name}{ext}", PATTERN_FILE, &v), "clip.mp4");
    v.name = "README"; /* no extension: {ext} is empty, not "unknown" */
    assert_string_equal(expand("{name}{ext}", PATTERN_FILE, &v), "README");
    char lng[256]; /* a long name is kept whole */
    memset(lng, 'a', 251);
    memcpy(lng + 251, ".JPG", 5);
    v.name = lng;
    assert_string_equal(expand("{name}{ext}", PATTERN_FILE, &v), lng);
    v.name = "a.b.tar.CR3";
    assert_string_equal(expand("{name}-x{EXT}", PATTERN_FILE, &v), "a.b.tar-x.CR3");
    /* {ext} keeps the card's case (the default {name}{ext} renames nothing), {ext:lower} not */
    assert_string_equal(expand("{name}{ext:lower}", PATTERN_FILE, &v), "a.b.tar.cr3");
    v.name = "Clip.Mp4";
    assert_string_equal(expand("{ext}|{ext:lower}|{EXT}", PATTERN_FILE, &v), ".Mp4|.mp4|.MP4");
}

static void test_metadata_tokens(void **state)
{
    (void)state;
    assert_expands("{make}/{model}/{lens}/{serial}",
                   "Canon/Canon EOS R6/RF24-105mm F4 L IS USM/012345678901");
    assert_expands("{card}-{session}", "EOS_DIGITAL-42");
}

static void test_seq_md5(void **state)
{
    (void)state;
    assert_expands("{seq}", "7");
    assert_expands("{seq:4}", "0007");
    assert_expands("{seq:1}", "7");
    assert_expands("{md5}", MD5);
    assert_expands("{md5:8}", "01234567");
    assert_expands("{md5:1}", "0");
    struct pattern_values u = vals();
    u.md5 = PATTERN_MD5_UNKNOWN;
    assert_string_equal(expand("{name}_{md5:4}{ext}", PATTERN_FILE, &u), "IMG_0001_????.JPG");
    struct pattern_values v = vals();
    v.seq = 123456;
    assert_string_equal(expand("{seq:3}", PATTERN_FILE, &v), "123456");
}

static void test_absent_and_defaults(void **state)
{
    (void)state;
    struct pattern_values v = vals();
    v.make = NULL;
    v.model = "";
    v.lens = "   ";
    v.serial = NULL;
    v.card = NULL;
    assert_string_equal(expand("{make}/{model}/{lens}/{serial}/{card}", PATTERN_FOLDER, &v),
                        "unknown/unknown/unknown/unknown/unknown");
    assert_string_equal(expand("{model|nocamera}", PATTERN_FOLDER, &v), "nocamera");
    assert_string_equal(expand("{model|no camera }", PATTERN_FOLDER, &v), "no camera");
    v = vals();
    assert_string_equal(expand("{model|nocamera}", PATTERN_FOLDER, &v), "Canon EOS R6");
    v.name = "README";
    assert_string_equal(expand("{name}{ext|.bin}", PATTERN_FILE, &v), "README.bin");
}

static void test_cleaning(void **state)
{
    (void)state;
    struct pattern_values v = vals();
    v.model = "EOS/R6\\II";
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "EOS_R6_II");
    v.model = "..";
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "unknown");
    v.model = " .hidden. ";
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "hidden");
    v.model = "A\x01\x1f\x7f"
              "B\tC";
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "ABC");
    v.model = "Caf\xc3\xa9 \xff\xfe"; /* valid UTF-8 kept, invalid bytes mapped */
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "Caf\xc3\xa9 __");
    v.model = "<>:\"|?*"; /* left to the SMB backend's mapping */
    assert_string_equal(expand("{model}", PATTERN_FOLDER, &v), "<>:\"|?*");
    char big[300];
    memset(big, 'x', sizeof(big) - 3);
    big[PATTERN_VALUE_MAX - 2] = '\xc3'; /* a 2-byte sequence across the cut */
    big[PATTERN_VALUE_MAX - 1] = '\xa9';
    big[sizeof(big) - 3] = '\0';
    v.model = big;
    const char *o = expand("{model}", PATTERN_FOLDER, &v);
    assert_int_equal(strlen(o), PATTERN_VALUE_MAX - 2);
}

static void test_folder_empty_and_results(void **state)
{
    (void)state;
    assert_expands("", "");
    struct pattern *p = NULL;
    struct error err = {0};
    char out[PATTERN_OUT_MAX];
    struct pattern_values v = vals();
    /* a name of "." after expansion */
    v.name = "..JPG"; /* {name} is "." */
    assert_int_equal(pattern_compile("{name}", PATTERN_FILE, &p, &err), 0);
    assert_int_equal(pattern_expand(p, &v, out, sizeof(out), &err), -EINVAL);
    assert_non_null(strstr(err.msg, "'.'"));
    pattern_free(p);
    /* the caller's buffer */
    assert_int_equal(pattern_compile("{date}", PATTERN_FOLDER, &p, &err), 0);
    assert_int_equal(pattern_expand(p, &v, out, 10, &err), -ENAMETOOLONG);
    assert_int_equal(pattern_expand(p, &v, out, 11, &err), 0);
    assert_string_equal(out, "2024-07-14");
    /* md5 unknown */
    pattern_free(p);
    assert_int_equal(pattern_compile("{md5:8}", PATTERN_FILE, &p, &err), 0);
    assert_true(pattern_uses_md5(p));
    v.md5 = NULL;
    assert_int_equal(pattern_expand(p, &v, out, sizeof(out), &err), -EINVAL);
    v.md5 = "XYZ";
    assert_int_equal(pattern_expand(p, &v, out, sizeof(out), &err), -EINVAL);
    pattern_free(p);
    /* a component longer than 255 bytes */
    assert_int_equal(pattern_compile("{model}{model}{model}{model}{model}", PATTERN_FILE, &p, &err),
                     0);
    char m[PATTERN_VALUE_MAX];
    memset(m, 'm', sizeof(m) - 1);
    m[sizeof(m) - 1] = '\0';
    v.model = m;
    assert_int_equal(pattern_expand(p, &v, out, sizeof(out), &err), -ENAMETOOLONG);
    assert_false(pattern_uses_md5(p));
    assert_string_equal(pattern_text(p), "{model}{model}{model}{model}{model}");
    pattern_free(p);
    pattern_free(NULL);
}

/* text (of kind) is refused with a message holding want. */
static void assert_refused(const char *text, enum pattern_kind kind, const char *want)
{
    struct pattern *p = (struct pattern *)1;
    struct error err = {0};
    int r = pattern_compile(text, kind, &p, &err);
    if (r != -EINVAL || !strstr(err.msg, want))
        fail_msg("'%s': %d '%s', wanted '%s'", text, r, err.msg, want);
    assert_ptr_equal(p, (struct pattern *)1);
}

static void test_validation(void **state)
{
    (void)state;
    assert_refused("{year}/{mnth}", PATTERN_FOLDER, "column 8: unknown token '{mnth}'");
    assert_refused("{Year}", PATTERN_FOLDER, "unknown token");
    assert_refused("{}", PATTERN_FOLDER, "column 1: unknown token '{}'");
    assert_refused("{year", PATTERN_FOLDER, "column 1: '{' without '}'");
    assert_refused("{year{month}}", PATTERN_FOLDER, "column 1: '{' without '}'");
    assert_refused("year}", PATTERN_FOLDER, "column 5: '}' without '{'");
    assert_refused("{seq:x}", PATTERN_FILE, "column 5: bad width");
    assert_refused("{seq:0}", PATTERN_FILE, "bad width");
    assert_refused("{seq:10}", PATTERN_FILE, "bad width");
    assert_refused("{ext:upper}", PATTERN_FILE, "bad width");
    assert_refused("{EXT:lower}", PATTERN_FILE, "bad width");
    assert_refused("{seq:}", PATTERN_FILE, "bad width");
    assert_refused("{md5:33}", PATTERN_FILE, "bad width");
    assert_refused("{year:4}", PATTERN_FILE, "this token takes none");
    assert_refused("{model|}", PATTERN_FOLDER, "column 7: empty default");
    assert_refused("{model|a/b}", PATTERN_FOLDER, "cannot hold '/'");
    assert_refused("{model|..}", PATTERN_FOLDER, "cannot hold '..'");
    assert_refused("{year}/../etc", PATTERN_FOLDER, "column 8: '..' is not allowed");
    assert_refused("..", PATTERN_FOLDER, "'..' is not allowed");
    assert_refused("{name}..{ext}", PATTERN_FILE, "'..' is not allowed");
    assert_refused("/srv/{year}", PATTERN_FOLDER, "column 1: absolute path");
    assert_refused("{year}//{month}", PATTERN_FOLDER, "column 8: empty folder name");
    assert_refused("{year}/", PATTERN_FOLDER, "column 7: empty folder name");
    assert_refused("{year}/./x", PATTERN_FOLDER, "column 8: a folder named '.'");
    assert_refused(".", PATTERN_FOLDER, "a folder named '.'");
    assert_refused("", PATTERN_FILE, "column 1: empty name");
    assert_refused("", PATTERN_ALBUM, "empty name");
    assert_refused("{year}/{name}{ext}", PATTERN_FILE, "column 7: a file pattern cannot hold '/'");
    assert_refused("a/b", PATTERN_ALBUM, "an album pattern cannot hold '/'");
    assert_refused("a\tb", PATTERN_FOLDER, "column 2: control character");
    assert_refused("a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", PATTERN_FOLDER,
                   "column 32: more than 16 folder levels");
    char big[PATTERN_TEXT_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_refused(big, PATTERN_FOLDER, "longer than");
    char many[PATTERN_TEXT_MAX];
    for (int i = 0; i < 40; i++) /* 80 parts in 240 bytes */
        memcpy(many + 6 * i, "{day}-", 7);
    assert_refused(many, PATTERN_FOLDER, "too many");
    /* fine */
    struct pattern *p = NULL;
    struct error err = {0};
    assert_int_equal(pattern_compile("{year}/{date} .x/{model|no cam}", PATTERN_FOLDER, &p, &err),
                     0);
    pattern_free(p);
    assert_int_equal(pattern_compile(NULL, PATTERN_FOLDER, &p, &err), 0);
    assert_string_equal(pattern_text(p), "");
    pattern_free(p);
}

static void test_glob(void **state)
{
    (void)state;
    struct pattern *p = NULL;
    struct error err;
    char g[PATTERN_OUT_MAX * 2];
    struct pattern_values v = vals();
    v.md5 = NULL;
    assert_int_equal(pattern_compile("{year}/{date} {model|x}/{card}", PATTERN_FOLDER, &p, &err),
                     0);
    assert_int_equal(pattern_glob(p, &v, g, sizeof(g)), 0);
    assert_string_equal(g, "2024/2024-07-14 */EOS_DIGITAL");
    assert_int_equal(pattern_glob(p, &v, g, 10), -ENAMETOOLONG);
    v.capture_time = 0; /* not known: any date */
    assert_int_equal(pattern_glob(p, &v, g, sizeof(g)), 0);
    assert_string_equal(g, "*/* */EOS_DIGITAL");
    pattern_free(p);
    assert_int_equal(pattern_compile("[{name}]_{seq:4}_{md5:8}*{ext}", PATTERN_FILE, &p, &err), 0);
    v.name = "A?B.JPG";
    assert_int_equal(pattern_glob(p, &v, g, sizeof(g)), 0);
    assert_string_equal(g, "\\[A\\?B]_*_*\\*.JPG");
    v.md5 = MD5;
    assert_int_equal(pattern_glob(p, &v, g, sizeof(g)), 0);
    assert_string_equal(g, "\\[A\\?B]_*_01234567\\*.JPG");
    pattern_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_tokens),
        cmocka_unit_test(test_name_tokens),
        cmocka_unit_test(test_metadata_tokens),
        cmocka_unit_test(test_seq_md5),
        cmocka_unit_test(test_absent_and_defaults),
        cmocka_unit_test(test_cleaning),
        cmocka_unit_test(test_folder_empty_and_results),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_glob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
