/* SPDX-License-Identifier: MIT */
/* Unit tests for report.c: a real database in a temporary folder with a session of three files
 * (one copied to two destinations, one with a hostile name, one without any copy); each format
 * checked for its content and its escaping, the JSON parsed back with json-c; an unknown
 * session, the newest session, and a stream that cannot be written. */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "db.h"
#include "jsonout.h"
#include "report.h"

#define MD5_1 "0123456789abcdef0123456789abcdef"
#define SHA1_1 "0123456789abcdef0123456789abcdef01234567"
#define MD5_2 "fedcba9876543210fedcba9876543210"
#define SHA1_2 "fedcba9876543210fedcba9876543210fedcba98"
/* a name a card may hold: markup, quotes, a byte that is not UTF-8, a control character */
#define BAD_NAME "DCIM/<script>alert(1)</script>&\"'\xff\x01.JPG"
#define BAD_LABEL "EOS<script>&\"'"

static char tmp_dir[PATH_MAX];
static char db_path[PATH_MAX];
static int64_t session_id;

static int64_t add_file(struct db *db, int64_t card, const char *path, int64_t size,
                        const char *md5, const char *sha1)
{
    struct error err = {0};
    struct db_file_key key = {card, path, size, INT64_C(1714560000000000000)};
    int64_t id = 0;
    assert_int_equal(db_file_get_or_create(db, &key, &id, NULL, &err), 0);
    if (md5)
        assert_int_equal(db_file_set_meta(db, id, md5, sha1, NULL, 1714564800, "photo", &err), 0);
    return id;
}

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755); /* the build's test-tmp may not exist yet */
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/test_report.XXXXXX", base);
    if (access(base, W_OK) != 0 || !mkdtemp(tmp_dir))
        return -1;
    snprintf(db_path, sizeof(db_path), "%s/snapsync.db", tmp_dir);

    struct db *db = NULL;
    struct error err = {0};
    int64_t card = 0, f1, f2, f3;
    assert_int_equal(db_open(db_path, DB_READ_WRITE, &db, &err), 0);
    assert_int_equal(db_card_upsert(db, "1234-ABCD", BAD_LABEL, &card, &err), 0);
    assert_int_equal(db_session_begin(db, card, "/media/card", &session_id, &err), 0);
    assert_int_equal(db_session_set_found(db, session_id, 3, 6000, &err), 0);
    f1 = add_file(db, card, "DCIM/100CANON/IMG_0001.JPG", 1000, MD5_1, SHA1_1);
    f2 = add_file(db, card, BAD_NAME, 2000, MD5_2, SHA1_2);
    f3 = add_file(db, card, "DCIM/100CANON/IMG_0003.JPG", 3000, NULL, NULL);

    struct db_file_record rec = {
        .file_id = f1, .state = DB_FILE_COMPLETED, .outcome = DB_OUTCOME_COPIED, .n_copies = 2};
    rec.copies[0] = (struct db_record_copy){"local:/srv/backup", DB_COPY_COMPLETED,
                                            "2024/05/01/IMG_0001.JPG", NULL};
    rec.copies[1] = (struct db_record_copy){"immich", DB_COPY_FAILED, NULL, "server said <no>"};
    assert_int_equal(db_file_record(db, session_id, &rec, &err), 0);
    rec = (struct db_file_record){
        .file_id = f2, .state = DB_FILE_COMPLETED, .outcome = DB_OUTCOME_COPIED, .n_copies = 1};
    rec.copies[0] = (struct db_record_copy){"local:/srv/backup", DB_COPY_COMPLETED,
                                            "2024/05/01/<b>&\xfe.JPG", NULL};
    assert_int_equal(db_file_record(db, session_id, &rec, &err), 0);
    rec = (struct db_file_record){.file_id = f3,
                                  .state = DB_FILE_FAILED,
                                  .last_error = "cannot read it: Input/output error",
                                  .outcome = DB_OUTCOME_FAILED};
    assert_int_equal(db_file_record(db, session_id, &rec, &err), 0);
    int64_t sealed[] = {f1};
    assert_int_equal(db_copies_seal(db, "local:/srv/backup", sealed, 1, 3, &err), 0);
    assert_int_equal(db_session_end(db, session_id, DB_SESSION_PARTIAL, NULL, NULL, &err), 0);
    db_close(db);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[PATH_MAX + 32];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", db_path, suffix[i]);
        unlink(p);
    }
    rmdir(tmp_dir);
    return 0;
}

/* The report of id in format f, as a malloc'd string; *ret_r gets report_write's result. */
static char *render(int64_t id, enum report_format f, int *ret_r, struct error *err)
{
    struct db *db = NULL;
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(db_open(db_path, DB_READ_ONLY, &db, err), 0);
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    *ret_r = report_write(db, NULL, id, f, out, err);
    fclose(out);
    db_close(db);
    return buf;
}

static char *render_ok(enum report_format f)
{
    struct error err = {0};
    int r = -1;
    char *s = render(session_id, f, &r, &err);
    if (r != 0)
        fail_msg("report_write: %d %s", r, err.msg);
    assert_true(jsonout_utf8_valid(s, strlen(s)));
    return s;
}

static void test_formats(void **state)
{
    (void)state;
    enum report_format f;
    assert_int_equal(report_format_from_string("html", &f), 0);
    assert_int_equal(f, REPORT_HTML);
    assert_int_equal(report_format_from_string("json", &f), 0);
    assert_int_equal(f, REPORT_JSON);
    assert_int_equal(report_format_from_string("text", &f), 0);
    assert_int_equal(f, REPORT_TEXT);
    assert_int_equal(report_format_from_string("HTML", &f), -EINVAL);
    assert_int_equal(report_format_from_string("pdf", &f), -EINVAL);
    assert_int_equal(report_format_from_string(NULL, &f), -EINVAL);
    assert_string_equal(report_content_type(REPORT_JSON), "application/json");
    assert_string_equal(report_content_type(REPORT_HTML), "text/html; charset=utf-8");
    assert_string_equal(report_format_to_string(REPORT_TEXT), "text");
}

static void test_text(void **state)
{
    (void)state;
    char *s = render_ok(REPORT_TEXT);
    assert_non_null(strstr(s, "session "));
    assert_non_null(strstr(s, "1234-ABCD"));
    assert_non_null(strstr(s, "Result:    partial"));
    assert_non_null(strstr(s, "DCIM/100CANON/IMG_0001.JPG\n  size:     1000 bytes"));
    assert_non_null(strstr(s, "md5:      " MD5_1));
    assert_non_null(strstr(s, "sha1:     " SHA1_1));
    assert_non_null(strstr(s, "captured: 2024-05-01 12:00:00"));
    assert_non_null(strstr(s, "local:/srv/backup: 2024/05/01/IMG_0001.JPG\n      verified "));
    assert_non_null(strstr(s, "ASC MHL generation 3"));
    assert_non_null(strstr(s, "immich: (no path)\n      not verified (failed): server said <no>"));
    /* the hostile name: its bytes shown, the control character and the bad byte escaped */
    assert_non_null(strstr(s, "DCIM/<script>alert(1)</script>&\"'\\xFF\\x01.JPG"));
    assert_null(strchr(s, '\x01'));
    assert_non_null(strstr(s, "IMG_0003.JPG\n  size:     3000 bytes\n  captured: unknown"));
    assert_non_null(strstr(s, "error:    cannot read it: Input/output error\n  no copy\n"));
    assert_non_null(strstr(s, "3 files listed."));
    free(s);
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("no key '%s' in %s", key, json_object_to_json_string(o));
    return v;
}

static void test_json(void **state)
{
    (void)state;
    char *s = render_ok(REPORT_JSON);
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, s, (int)strlen(s));
    assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
    json_tokener_free(tok);
    assert_non_null(o);
    assert_int_equal(json_object_get_int(get(o, "report_version")), REPORT_FORMAT_VERSION);
    json_object *ses = get(o, "session");
    assert_int_equal(json_object_get_int64(get(ses, "id")), session_id);
    assert_string_equal(json_object_get_string(get(ses, "card_label")), BAD_LABEL);
    assert_string_equal(json_object_get_string(get(ses, "card_uuid")), "1234-ABCD");
    assert_string_equal(json_object_get_string(get(ses, "status")), "partial");
    assert_int_equal(json_object_get_int64(get(ses, "files_copied")), 2);
    assert_int_equal(json_object_get_int64(get(ses, "files_failed")), 1);
    assert_int_equal(json_object_get_int64(get(o, "files_listed")), 3);
    json_object *files = get(o, "files");
    assert_int_equal(json_object_array_length(files), 3);

    /* sorted by path: '<' (0x3c) sorts after '1' (0x31) */
    json_object *f1 = json_object_array_get_idx(files, 0);
    assert_string_equal(json_object_get_string(get(f1, "path")), "DCIM/100CANON/IMG_0001.JPG");
    assert_int_equal(json_object_get_int64(get(f1, "size")), 1000);
    assert_string_equal(json_object_get_string(get(f1, "md5")), MD5_1);
    assert_string_equal(json_object_get_string(get(f1, "sha1")), SHA1_1);
    assert_string_equal(json_object_get_string(get(f1, "capture_date")), "2024-05-01T12:00:00");
    assert_string_equal(json_object_get_string(get(f1, "outcome")), "copied");
    json_object *copies = get(f1, "copies");
    assert_int_equal(json_object_array_length(copies), 2);
    json_object *c0 = json_object_array_get_idx(copies, 0),
                *c1 = json_object_array_get_idx(copies, 1);
    assert_string_equal(json_object_get_string(get(c0, "destination")), "immich");
    assert_false(json_object_get_boolean(get(c0, "verified")));
    assert_null(get(c0, "verified_at"));
    assert_null(get(c0, "mhl_generation"));
    assert_string_equal(json_object_get_string(get(c0, "error")), "server said <no>");
    assert_string_equal(json_object_get_string(get(c1, "destination")), "local:/srv/backup");
    assert_string_equal(json_object_get_string(get(c1, "remote")), "2024/05/01/IMG_0001.JPG");
    assert_true(json_object_get_boolean(get(c1, "verified")));
    assert_true(json_object_get_int64(get(c1, "verified_at")) > 0);
    assert_int_equal(json_object_get_int64(get(c1, "mhl_generation")), 3);

    json_object *f3 = json_object_array_get_idx(files, 1);
    assert_string_equal(json_object_get_string(get(f3, "path")), "DCIM/100CANON/IMG_0003.JPG");
    assert_null(get(f3, "md5"));
    assert_null(get(f3, "capture_date"));
    assert_int_equal(json_object_array_length(get(f3, "copies")), 0);

    /* the hostile name: made valid UTF-8, the exact bytes in path_hex */
    json_object *f2 = json_object_array_get_idx(files, 2);
    assert_string_equal(json_object_get_string(get(f2, "path")),
                        "DCIM/<script>alert(1)</script>&\"'\xef\xbf\xbd\x01.JPG");
    char hex[2 * sizeof(BAD_NAME)] = "";
    for (size_t i = 0; i < sizeof(BAD_NAME) - 1; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)BAD_NAME[i]);
    assert_string_equal(json_object_get_string(get(f2, "path_hex")), hex);
    json_object *rc = json_object_array_get_idx(get(f2, "copies"), 0);
    assert_non_null(get(rc, "remote_hex"));
    json_object_put(o);
    free(s);
}

static void test_html(void **state)
{
    (void)state;
    char *s = render_ok(REPORT_HTML);
    assert_true(strncmp(s, "<!DOCTYPE html>", 15) == 0);
    assert_non_null(strstr(s, "</html>\n"));
    assert_null(strcasestr(s, "<script"));
    assert_null(strcasestr(s, "<link"));
    assert_null(strcasestr(s, "src="));
    assert_null(strcasestr(s, "url("));
    assert_null(strchr(s, '\x01'));
    assert_non_null(strstr(s, "EOS&lt;script&gt;&amp;&quot;&#39;"));
    assert_non_null(
        strstr(s, "DCIM/&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;\\xFF\\x01.JPG"));
    assert_non_null(strstr(s, "2024/05/01/&lt;b&gt;&amp;\\xFE.JPG"));
    assert_non_null(strstr(s, "server said &lt;no&gt;"));
    assert_non_null(strstr(s, MD5_1));
    assert_non_null(strstr(s, SHA1_2));
    assert_non_null(strstr(s, "ASC MHL generation 3"));
    assert_non_null(strstr(s, "@page{size:A4"));
    assert_non_null(strstr(s, "@media print"));
    assert_non_null(strstr(s, "<thead>"));
    assert_non_null(strstr(s, "thead{display:table-header-group}"));
    assert_non_null(strstr(s, "3 files listed."));
    /* every file's body is closed: as many <tbody> as </tbody> */
    size_t open = 0, close = 0;
    for (const char *p = s; (p = strstr(p, "<tbody>")); p++)
        open++;
    for (const char *p = s; (p = strstr(p, "</tbody>")); p++)
        close++;
    assert_int_equal(open, 3);
    assert_int_equal(close, 3);
    free(s);
}

static void test_unknown_and_last(void **state)
{
    (void)state;
    struct error err = {0};
    int r = 0;
    char *s = render(999, REPORT_JSON, &r, &err);
    assert_int_equal(r, -ENOENT);
    assert_string_equal(err.msg, "no session 999");
    assert_string_equal(s, ""); /* nothing written */
    free(s);

    struct db *db = NULL;
    int64_t id = 0;
    assert_int_equal(db_open(db_path, DB_READ_ONLY, &db, &err), 0);
    assert_int_equal(report_last_session(db, &id, &err), 0);
    assert_int_equal(id, session_id);
    db_close(db);
}

static void test_write_error(void **state)
{
    (void)state;
    struct db *db = NULL;
    struct error err = {0};
    FILE *out = fopen("/dev/full", "w");
    if (!out)
        fail_msg("this test writes to /dev/full");
    assert_int_equal(db_open(db_path, DB_READ_ONLY, &db, &err), 0);
    assert_int_equal(report_write(db, NULL, session_id, REPORT_HTML, out, &err), -EIO);
    assert_non_null(strstr(err.msg, "cannot write the report"));
    fclose(out);
    db_close(db);
}

/* A session that recorded no file (a plain folder, no card): every format says so and stays
 * well-formed; it is now the newest. */
static void test_empty_session(void **state)
{
    (void)state;
    struct db *db = NULL;
    struct error err = {0};
    int64_t id = 0, last = 0;
    assert_int_equal(db_open(db_path, DB_READ_WRITE, &db, &err), 0);
    assert_int_equal(db_session_begin(db, 0, "/srv/empty", &id, &err), 0);
    assert_int_equal(db_session_end(db, id, DB_SESSION_EMPTY, NULL, NULL, &err), 0);
    assert_int_equal(report_last_session(db, &last, &err), 0);
    assert_int_equal(last, id);
    db_close(db);

    int r = -1;
    char *s = render(id, REPORT_JSON, &r, &err);
    assert_int_equal(r, 0);
    json_object *o = json_tokener_parse(s);
    assert_non_null(o);
    assert_int_equal(json_object_array_length(get(o, "files")), 0);
    assert_int_equal(json_object_get_int64(get(o, "files_listed")), 0);
    assert_string_equal(json_object_get_string(get(get(o, "session"), "status")), "empty");
    json_object_put(o);
    free(s);
    s = render(id, REPORT_HTML, &r, &err);
    assert_int_equal(r, 0);
    assert_non_null(strstr(s, "No file was recorded in this session."));
    assert_non_null(strstr(s, "none (a folder)"));
    free(s);
    s = render(id, REPORT_TEXT, &r, &err);
    assert_int_equal(r, 0);
    assert_non_null(strstr(s, "Result:    empty"));
    assert_non_null(strstr(s, "0 files listed."));
    free(s);
}

#define MANY_FILES 3000

static int add_many(struct db *db, void *arg)
{
    int64_t sid = *(int64_t *)arg;
    struct error err = {0};
    char path[64], remote[64];
    for (int i = 0; i < MANY_FILES; i++) {
        snprintf(path, sizeof(path), "DCIM/100MANY/IMG_%05d.JPG", i);
        snprintf(remote, sizeof(remote), "2024/05/01/IMG_%05d.JPG", i);
        int64_t id = add_file(db, 1, path, 1000 + i, MD5_1, SHA1_1);
        struct db_file_record rec = {
            .file_id = id, .state = DB_FILE_COMPLETED, .outcome = DB_OUTCOME_COPIED, .n_copies = 1};
        rec.copies[0] =
            (struct db_record_copy){"local:/srv/backup", DB_COPY_COMPLETED, remote, NULL};
        if (db_file_record(db, sid, &rec, &err) < 0)
            return -EIO;
    }
    return 0;
}

/* What the counting stream saw: bytes written, and the most heap in use at any write. */
static size_t counted_bytes, heap_peak;

static ssize_t count_write(void *cookie, const char *buf, size_t size)
{
    (void)cookie;
    (void)buf;
    counted_bytes += size;
    struct mallinfo2 mi = mallinfo2();
    if (mi.uordblks > heap_peak)
        heap_peak = mi.uordblks;
    return (ssize_t)size;
}

/* Thousands of files: every one listed once, in order, and the heap in use while the report is
 * written does not grow with them (mallinfo2 sees glibc's heap; under a sanitizer or valgrind,
 * which bring their own allocator, it reads 0 and only the listing is checked). */
static void test_many_files_bounded(void **state)
{
    (void)state;
    struct db *db = NULL;
    struct error err = {0};
    int64_t sid = 0;
    assert_int_equal(db_open(db_path, DB_READ_WRITE, &db, &err), 0);
    assert_int_equal(db_session_begin(db, 1, "/media/many", &sid, &err), 0);
    assert_int_equal(db_transaction(db, add_many, &sid, &err), 0);
    assert_int_equal(db_session_end(db, sid, DB_SESSION_COMPLETED, NULL, NULL, &err), 0);

    cookie_io_functions_t io = {.write = count_write};
    FILE *out = fopencookie(NULL, "w", io);
    assert_non_null(out);
    setvbuf(out, NULL, _IOFBF, 4096);
    counted_bytes = 0;
    size_t before = mallinfo2().uordblks;
    heap_peak = before;
    assert_int_equal(report_write(db, NULL, sid, REPORT_JSON, out, &err), 0);
    fclose(out);
    assert_true(counted_bytes > (size_t)MANY_FILES * 300); /* the whole listing went out */
    assert_true(heap_peak - before < 512 * 1024);

    int r = -1;
    db_close(db);
    char *s = render(sid, REPORT_JSON, &r, &err);
    assert_int_equal(r, 0);
    json_object *o = json_tokener_parse(s);
    assert_non_null(o);
    json_object *files = get(o, "files");
    assert_int_equal(json_object_array_length(files), MANY_FILES);
    for (int i = 0; i < MANY_FILES; i += 999) {
        char want[64];
        snprintf(want, sizeof(want), "DCIM/100MANY/IMG_%05d.JPG", i);
        assert_string_equal(
            json_object_get_string(get(json_object_array_get_idx(files, i), "path")), want);
    }
    json_object_put(o);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_html),
        cmocka_unit_test(test_unknown_and_last),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_empty_session),
        cmocka_unit_test(test_many_files_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
