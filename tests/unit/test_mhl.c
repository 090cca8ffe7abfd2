/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for mhl.c: C4 IDs against vectors computed independently (Python's hashlib and
 * big integers; the empty string's ID is the one the C4 specification publishes), generation
 * and chain documents validated against the official ASC MHL schemas (tests/fixtures/ascmhl,
 * through libxml2's schema validator), and the chain parser against hostile documents.
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
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include "mhl.h"

struct membuf {
    char *data;
    size_t len;
    size_t fail_after; /* the sink fails with -ENOSPC once this many bytes are in (0: never) */
};

static int mem_write(void *userdata, const void *buf, size_t len)
{
    struct membuf *m = userdata;
    if (m->fail_after && m->len + len > m->fail_after)
        return -ENOSPC;
    char *p = realloc(m->data, m->len + len + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p + m->len, buf, len);
    m->data = p;
    m->len += len;
    m->data[m->len] = '\0';
    return 0;
}

static struct mhl_sink sink_of(struct membuf *m)
{
    return (struct mhl_sink){mem_write, m};
}

/* Validates the document in m against the schema file name in tests/fixtures/ascmhl. */
static bool schema_valid(const struct membuf *m, const char *schema)
{
    const char *src = getenv("SNAPSYNC_SOURCE_DIR");
    if (!src)
        src = SNAPSYNC_TEST_SOURCE_DIR;
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/fixtures/ascmhl/%s", src, schema);
    xmlSchemaParserCtxtPtr pc = xmlSchemaNewParserCtxt(path);
    assert_non_null(pc);
    xmlSchemaPtr s = xmlSchemaParse(pc);
    assert_non_null(s);
    xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(s);
    xmlDocPtr doc = xmlReadMemory(m->data, (int)m->len, "doc.xml", NULL, XML_PARSE_NONET);
    assert_non_null(doc);
    int r = xmlSchemaValidateDoc(vc, doc);
    xmlFreeDoc(doc);
    xmlSchemaFreeValidCtxt(vc);
    xmlSchemaFree(s);
    xmlSchemaFreeParserCtxt(pc);
    return r == 0;
}

static void test_c4_vectors(void **state)
{
    (void)state;
    char c4[MHL_C4_LEN + 1];
    assert_int_equal(mhl_c4("", 0, c4), 0);
    assert_string_equal(
        c4, "c459dsjfscH38cYeXXYogktxf4Cd9ibshE3BHUo6a58hBXmRQdZrAkZzsWcbWtDg5oQstpDuni4"
            "Hirj75GEmTc1sFT");
    assert_int_equal(mhl_c4("foo", 3, c4), 0);
    assert_string_equal(
        c4, "c45xZeXwMSpqXjpDumcHMA6mhoAmGHkUo7r9WmN2UgSEQzj9KjgseaQdkEJ11fGb5S1WEENcV3q"
            "8RFWwEeVpC7Fjk2");
    char a1000[1000];
    memset(a1000, 'a', sizeof(a1000));
    assert_int_equal(mhl_c4(a1000, sizeof(a1000), c4), 0);
    assert_string_equal(
        c4, "c435HSTFdxChJ5XECUm4E5TAwX16mLM5RQH99jnxPQ9hVwDdnZqf9ikUzrxBGZxQ1G3a14D5HC6"
            "ufeW2NYCgj4TLEz");
    /* the smallest and largest digests: all '1' digits, and the padding rule */
    unsigned char zero[64] = {0}, ones[64];
    memset(ones, 0xff, sizeof(ones));
    mhl_c4_from_sha512(zero, c4);
    assert_int_equal(strlen(c4), MHL_C4_LEN);
    assert_int_equal(strspn(c4 + 2, "1"), 88);
    mhl_c4_from_sha512(ones, c4);
    assert_int_equal(strlen(c4), MHL_C4_LEN);
    assert_true(c4[2] != '1'); /* 2^512 - 1 needs all 88 digits */
}

static void test_generation_names(void **state)
{
    (void)state;
    char name[MHL_NAME_MAX];
    assert_int_equal(mhl_generation_name(3, "camera-backups", 1796335788, name, sizeof(name)), 0);
    assert_string_equal(name, "0003_camera-backups_2026-12-03_220948Z.mhl");
    assert_int_equal(mhl_generation_seq(name), 3);
    assert_int_equal(mhl_generation_name(12345, "b", 0, name, sizeof(name)), 0);
    assert_string_equal(name, "12345_b_1970-01-01_000000Z.mhl");
    assert_int_equal(mhl_generation_seq(name), 12345);
    assert_int_equal(mhl_generation_name(0, "b", 0, name, sizeof(name)), -EINVAL);
    assert_int_equal(mhl_generation_name(1, "a/b", 0, name, sizeof(name)), -EINVAL);
    assert_int_equal(mhl_generation_name(1, "..", 0, name, sizeof(name)), -EINVAL);
    assert_int_equal(mhl_generation_name(1, "", 0, name, sizeof(name)), -EINVAL);
    assert_int_equal(mhl_generation_name(1, "root", 0, name, 20), -ENAMETOOLONG);

    assert_int_equal(mhl_generation_seq("0001.mhl"), 1);
    assert_int_equal(mhl_generation_seq("0001_x.mhl"), 1);
    assert_int_equal(mhl_generation_seq("001_x.mhl"), 0);
    assert_int_equal(mhl_generation_seq("0001_x.mhl.tmp"), 0);
    assert_int_equal(mhl_generation_seq(".0001_x.mhl"), 0);
    assert_int_equal(mhl_generation_seq("0001x.mhl"), 0);
    assert_int_equal(mhl_generation_seq(MHL_CHAIN_NAME), 0);
    assert_int_equal(mhl_generation_seq("99999999999_x.mhl"), 0);
}

static const char *const ignore[] = {".snapsync-*"};

static struct mhl_creator creator(void)
{
    return (struct mhl_creator){.created = 1796335788,
                                .hostname = "pi & <card reader>",
                                .tool_version = "0.1.0",
                                .comment = "session 7, card EOS_DIGITAL",
                                .process = MHL_PROCESS_TRANSFER,
                                .ignore = ignore,
                                .n_ignore = 1};
}

static const char md5[] = "9e107d9d372bb6826bd81d3542a419d6";
static const char sha1[] = "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12";

static void test_generation_is_valid_and_its_c4_is_of_its_bytes(void **state)
{
    (void)state;
    struct membuf m = {0};
    struct error err;
    struct mhl_writer *w;
    struct mhl_creator c = creator();
    assert_int_equal(mhl_writer_begin(&w, &c, sink_of(&m), &err), 0);
    struct mhl_entry e = {.path = "2026/12/04/IMG_0001.CR3",
                          .size = 25123456,
                          .mtime = 1796300000,
                          .md5 = md5,
                          .sha1 = sha1,
                          .action = MHL_ACTION_ORIGINAL,
                          .hashdate = 1796335700};
    assert_int_equal(mhl_writer_add(w, &e, &err), 0);
    e.path = "2026/12/04/Caf\xc3\xa9 & <Bar>.jpg"; /* UTF-8 and XML's special characters */
    e.sha1 = NULL;
    e.action = MHL_ACTION_VERIFIED;
    assert_int_equal(mhl_writer_add(w, &e, &err), 0);
    e.path = "unknown-date/clip.mp4";
    e.md5 = NULL;
    e.xxh128 = "0123456789abcdef0123456789abcdef";
    e.action = MHL_ACTION_FAILED;
    assert_int_equal(mhl_writer_add(w, &e, &err), 0);
    char c4[MHL_C4_LEN + 1];
    assert_int_equal(mhl_writer_end(w, c4, &err), 0);

    assert_true(schema_valid(&m, "ASCMHL.xsd"));
    char want[MHL_C4_LEN + 1];
    assert_int_equal(mhl_c4(m.data, m.len, want), 0);
    assert_string_equal(c4, want);
    assert_non_null(strstr(m.data, "<hashlist version=\"2.0\" xmlns=\"urn:ASC:MHL:v2.0\">"));
    assert_non_null(strstr(m.data, "<tool version=\"0.1.0\">SnapSync</tool>"));
    assert_non_null(strstr(m.data, "<hostname>pi &amp; &lt;card reader&gt;</hostname>"));
    assert_non_null(strstr(m.data, "<process>transfer</process>"));
    assert_non_null(strstr(m.data, "<pattern>ascmhl</pattern>"));
    assert_non_null(strstr(m.data, "<pattern>ascmhl/</pattern>"));
    assert_non_null(strstr(m.data, "<pattern>.snapsync-*</pattern>"));
    assert_non_null(strstr(m.data,
                           "<path size=\"25123456\" lastmodificationdate=\"2026-12-03T12:13:20Z\">"
                           "2026/12/04/IMG_0001.CR3</path>"));
    assert_non_null(strstr(m.data, "<md5 action=\"original\" hashdate=\"2026-12-03T22:08:20Z\">"));
    assert_non_null(strstr(m.data, "Caf\xc3\xa9 &amp; &lt;Bar&gt;.jpg</path>"));
    assert_non_null(strstr(m.data, "<md5 action=\"verified\""));
    assert_non_null(strstr(m.data, "<xxh128 action=\"failed\""));
    free(m.data);
}

static void test_empty_generation_is_valid(void **state)
{
    (void)state;
    struct membuf m = {0};
    struct mhl_writer *w;
    struct mhl_creator c = creator();
    c.comment = NULL;
    c.n_ignore = 0;
    c.process = MHL_PROCESS_IN_PLACE;
    assert_int_equal(mhl_writer_begin(&w, &c, sink_of(&m), NULL), 0);
    char c4[MHL_C4_LEN + 1];
    assert_int_equal(mhl_writer_end(w, c4, NULL), 0);
    assert_true(schema_valid(&m, "ASCMHL.xsd"));
    assert_non_null(strstr(m.data, "<process>in-place</process>"));
    free(m.data);
}

static void test_entries_that_cannot_be_written(void **state)
{
    (void)state;
    struct membuf m = {0};
    struct error err;
    struct mhl_writer *w;
    struct mhl_creator c = creator();
    assert_int_equal(mhl_writer_begin(&w, &c, sink_of(&m), &err), 0);
    const char *bad_paths[] = {NULL,        "",     "/etc/passwd", "a/../b",
                               "./a",       "a//b", "a/",          "caf\xe9.jpg",
                               "a\x01.jpg", "..",   "a/./b"};
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        struct mhl_entry e = {
            .path = bad_paths[i], .size = 1, .mtime = 1, .md5 = md5, .hashdate = 1};
        assert_int_equal(mhl_writer_add(w, &e, &err), -EINVAL);
    }
    struct mhl_entry e = {.path = "a.jpg", .size = 1, .mtime = 1, .hashdate = 1};
    assert_int_equal(mhl_writer_add(w, &e, &err), -EINVAL); /* no hash */
    e.md5 = "9E107D9D372BB6826BD81D3542A419D6";             /* upper case */
    assert_int_equal(mhl_writer_add(w, &e, &err), -EINVAL);
    e.md5 = "9e107d9d";
    assert_int_equal(mhl_writer_add(w, &e, &err), -EINVAL);
    e.md5 = md5;
    e.mtime = INT64_MAX;
    assert_int_equal(mhl_writer_add(w, &e, &err), -EINVAL);
    /* refused entries leave the document valid */
    char c4[MHL_C4_LEN + 1];
    assert_int_equal(mhl_writer_end(w, c4, &err), 0);
    assert_true(schema_valid(&m, "ASCMHL.xsd"));
    free(m.data);

    c.hostname = NULL;
    assert_int_equal(mhl_writer_begin(&w, &c, sink_of(&m), &err), -EINVAL);
    assert_null(w);
}

/* a full share: the sink's error comes back, and nothing leaks */
static void test_sink_failure_is_reported(void **state)
{
    (void)state;
    struct error err;
    struct mhl_creator c = creator();
    for (size_t limit = 1; limit < 12000; limit = limit * 3 + 7) {
        struct membuf m = {.fail_after = limit};
        struct mhl_writer *w;
        int r = mhl_writer_begin(&w, &c, sink_of(&m), &err);
        for (int i = 0; r == 0 && i < 40; i++) {
            struct mhl_entry e = {.path = "2026/12/04/IMG_0001.JPG",
                                  .size = 1,
                                  .mtime = 1,
                                  .md5 = md5,
                                  .sha1 = sha1,
                                  .hashdate = 1};
            r = mhl_writer_add(w, &e, &err);
            if (r < 0)
                mhl_writer_free(w);
        }
        char c4[MHL_C4_LEN + 1];
        if (r == 0)
            r = mhl_writer_end(w, c4, &err);
        assert_int_equal(r, -ENOSPC);
        assert_int_equal(err.code, -ENOSPC);
        free(m.data);
    }
}

static void test_chain_round_trip_and_schema(void **state)
{
    (void)state;
    struct mhl_chain c = {0};
    struct mhl_chain_gen g = {.seq = 1};
    snprintf(g.name, sizeof(g.name), "0001_camera-backups_2026-12-03_220948Z.mhl");
    assert_int_equal(mhl_c4("one", 3, g.c4), 0);
    assert_int_equal(mhl_chain_append(&c, &g), 0);
    g.seq = 2;
    snprintf(g.name, sizeof(g.name), "0002_camera-backups_2026-12-04_052948Z.mhl");
    assert_int_equal(mhl_c4("two", 3, g.c4), 0);
    assert_int_equal(mhl_chain_append(&c, &g), 0);
    assert_int_equal(mhl_chain_append(&c, &g), -EINVAL); /* not above the last */
    assert_int_equal(mhl_chain_last_seq(&c), 2);

    struct membuf m = {0};
    struct error err;
    assert_int_equal(mhl_chain_write(&c, sink_of(&m), &err), 0);
    assert_true(schema_valid(&m, "ASCMHLDirectory.xsd"));
    struct mhl_chain back;
    assert_int_equal(mhl_chain_parse(m.data, m.len, &back, &err), 0);
    assert_int_equal(back.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(back.gens[i].seq, c.gens[i].seq);
        assert_string_equal(back.gens[i].name, c.gens[i].name);
        assert_string_equal(back.gens[i].c4, c.gens[i].c4);
    }
    mhl_chain_free(&back);
    mhl_chain_free(&c);
    mhl_chain_free(&c); /* twice is fine */
    free(m.data);
}

/* as the reference tool writes it: indented, generations out of order are sorted */
static void test_chain_of_the_reference_tool(void **state)
{
    (void)state;
    char c4a[MHL_C4_LEN + 1], c4b[MHL_C4_LEN + 1];
    assert_int_equal(mhl_c4("a", 1, c4a), 0);
    assert_int_equal(mhl_c4("b", 1, c4b), 0);
    char doc[2048];
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
             "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\">\n"
             "  <!-- a comment -->\n"
             "  <hashlist sequencenr=\"2\">\n    <path>0002_r_2026-01-02_000000Z.mhl</path>\n"
             "    <c4>%s</c4>\n  </hashlist>\n"
             "  <hashlist sequencenr=\"1\">\n    <path> 0001_r_2026-01-01_000000Z.mhl </path>\n"
             "    <c4>%s</c4>\n  </hashlist>\n"
             "</ascmhldirectory>\n",
             c4b, c4a);
    struct mhl_chain c;
    struct error err;
    assert_int_equal(mhl_chain_parse(doc, strlen(doc), &c, &err), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.gens[0].seq, 1);
    assert_string_equal(c.gens[0].name, "0001_r_2026-01-01_000000Z.mhl");
    assert_string_equal(c.gens[0].c4, c4a);
    assert_int_equal(c.gens[1].seq, 2);
    assert_string_equal(c.gens[1].c4, c4b);
    mhl_chain_free(&c);

    const char empty[] = "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"/>";
    assert_int_equal(mhl_chain_parse(empty, strlen(empty), &c, &err), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(mhl_chain_last_seq(&c), 0);
    mhl_chain_free(&c);
}

static void test_hostile_chains_are_refused(void **state)
{
    (void)state;
    char c4[MHL_C4_LEN + 1];
    assert_int_equal(mhl_c4("a", 1, c4), 0);
    const char *const templates[] = {
        "not xml at all",
        "<ascmhldirectory><hashlist sequencenr=\"1\"><path>x.mhl</path><c4>%s</c4></hashlist>"
        "</ascmhldirectory>", /* no namespace */
        "<hashlist xmlns=\"urn:ASC:MHL:v2.0\" version=\"2.0\"/>",
        "<!DOCTYPE a [<!ENTITY e \"x\"><!ENTITY f \"&e;&e;&e;&e;\">]>"
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"/>",
        "<!DOCTYPE a SYSTEM \"http://127.0.0.1:1/x.dtd\"><ascmhldirectory "
        "xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"/>",
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist><path>x.mhl</path>"
        "<c4>%s</c4></hashlist></ascmhldirectory>", /* no sequencenr */
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"-1\">"
        "<path>x.mhl</path><c4>%s</c4></hashlist></ascmhldirectory>",
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"1x\">"
        "<path>x.mhl</path><c4>%s</c4></hashlist></ascmhldirectory>",
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"1\">"
        "<path>../x.mhl</path><c4>%s</c4></hashlist></ascmhldirectory>",
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"1\">"
        "<path>x.mhl</path><c4>c4notbase58!%s</c4></hashlist></ascmhldirectory>",
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"1\">"
        "<path>x.mhl</path><c4>%s</c4></hashlist><hashlist sequencenr=\"1\"><path>y.mhl</path>"
        "<c4>%s</c4></hashlist></ascmhldirectory>", /* the same generation twice */
        "<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\"><hashlist sequencenr=\"1\">"
        "<path><b>x</b></path><c4>%s</c4></hashlist></ascmhldirectory>",
    };
    for (size_t i = 0; i < sizeof(templates) / sizeof(templates[0]); i++) {
        char doc[4096];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(doc, sizeof(doc), templates[i], c4, c4);
#pragma GCC diagnostic pop
        struct mhl_chain c;
        struct error err;
        assert_int_equal(mhl_chain_parse(doc, strlen(doc), &c, &err), -EBADMSG);
        assert_null(c.gens);
        assert_true(strlen(err.msg) > 0);
    }
    struct mhl_chain c;
    assert_int_equal(mhl_chain_parse("x", MHL_CHAIN_MAX_BYTES + 1, &c, NULL), -EFBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c4_vectors),
        cmocka_unit_test(test_generation_names),
        cmocka_unit_test(test_generation_is_valid_and_its_c4_is_of_its_bytes),
        cmocka_unit_test(test_empty_generation_is_valid),
        cmocka_unit_test(test_entries_that_cannot_be_written),
        cmocka_unit_test(test_sink_failure_is_reported),
        cmocka_unit_test(test_chain_round_trip_and_schema),
        cmocka_unit_test(test_chain_of_the_reference_tool),
        cmocka_unit_test(test_hostile_chains_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
