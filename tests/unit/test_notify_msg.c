/* SPDX-License-Identifier: MIT */
/* Unit tests for notify_msg.c: the words of a session notification, its escaping of untrusted
 * names, the failed-file list's ceiling and the JSON object of the json webhook. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "jsonout.h"
#include "notify_msg.h"

static const struct notify_dest dests[] = {{"unraid", "ok"}, {"immich", "down"}};

static struct notify_session sample(void)
{
    return (struct notify_session){
        .card = "EOS_DIGITAL",
        .result = NOTIFY_COMPLETED,
        .copied = 120,
        .already = 30,
        .duplicates = 2,
        .bytes = 3500000000ULL,
        .duration = 754,
        .dests = dests,
        .n_dests = 2,
        .safe_to_remove = true,
        .dashboard_url = "http://pi.local:8080/",
    };
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_completed(void **state)
{
    (void)state;
    struct notify_session s = sample();
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_string_equal(m.subject, "SnapSync: EOS_DIGITAL: backed up, safe to remove");
    assert_non_null(strstr(m.text, "Copied: 120\n"));
    assert_non_null(strstr(m.text, "Already backed up: 30\n"));
    assert_non_null(strstr(m.text, "Duplicates: 2\n"));
    assert_non_null(strstr(m.text, "Failed: 0\n"));
    assert_non_null(strstr(m.text, "Size: 3.5 GB\n"));
    assert_non_null(strstr(m.text, "Duration: 12 min 34 s\n"));
    assert_non_null(strstr(m.text, "  immich: down\n"));
    assert_non_null(strstr(m.text, "Safe to remove the card: yes\n"));
    assert_non_null(strstr(m.text, "Dashboard: http://pi.local:8080/\n"));
    assert_null(strstr(m.text, "Failed files"));
    assert_non_null(strstr(m.html, "<a href=\"http://pi.local:8080/\">"));
    assert_string_equal(m.click, "http://pi.local:8080/");
    assert_int_equal(m.priority, 3);
    assert_string_equal(m.tags, "white_check_mark");
    notify_msg_done(&m);
    notify_msg_done(&m); /* zeroed: a second call is harmless */
    notify_msg_done(NULL);
}

/* A hostile card label: markup, quotes, a line break that would start a new mail header, a byte
 * that is not UTF-8. */
static void test_untrusted_label(void **state)
{
    (void)state;
    struct notify_session s = sample();
    s.card = "<script>alert('x')</script>&\"\r\nBcc: evil@example.com\xff";
    const char *files[] = {"DCIM/<b>IMG_1.JPG", "DCIM/a\nb.JPG"};
    s.failed_files = files;
    s.n_failed_files = 2;
    s.failed = 2;
    s.result = NOTIFY_PARTIAL;
    s.safe_to_remove = false;
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_null(strpbrk(m.subject, "\r\n"));
    assert_non_null(strstr(m.subject, "??Bcc: evil@example.com\xef\xbf\xbd"));
    assert_non_null(strstr(m.subject, "partly backed up, 2 files failed"));
    assert_true(jsonout_utf8_valid(m.subject, strlen(m.subject)));
    assert_null(strstr(m.html, "<script>"));
    assert_null(strstr(m.html, "<b>"));
    assert_non_null(strstr(m.html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    assert_non_null(strstr(m.html, "<li>DCIM/&lt;b&gt;IMG_1.JPG</li>"));
    assert_non_null(strstr(m.text, "  DCIM/a?b.JPG\n")); /* a name's LF cannot fake a line */
    assert_int_equal(m.priority, 4);
    struct json_object *o = json_tokener_parse(m.json), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "card", &v));
    assert_string_equal(json_object_get_string(v),
                        "<script>alert('x')</script>&\"??Bcc: evil@example.com\xef\xbf\xbd");
    json_object_put(o);
    notify_msg_done(&m);
}

/* 25 failed files: the first 20 are named, the rest counted; a failed count larger than the
 * names given counts those too. */
static void test_failed_files_truncated(void **state)
{
    (void)state;
    char names[25][32];
    const char *files[25];
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof(names[i]), "DCIM/IMG_%04d.CR2", i);
        files[i] = names[i];
    }
    struct notify_session s = sample();
    s.result = NOTIFY_PARTIAL;
    s.failed_files = files;
    s.n_failed_files = 25;
    s.failed = 30;
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_non_null(strstr(m.text, "DCIM/IMG_0019.CR2\n"));
    assert_null(strstr(m.text, "DCIM/IMG_0020.CR2"));
    assert_non_null(strstr(m.text, "  ... and 10 more\n"));
    assert_non_null(strstr(m.text, "Failed: 30\n"));
    assert_int_equal(count(m.html, "<li>DCIM/IMG_"), 20);
    assert_non_null(strstr(m.html, "<li>... and 10 more</li>"));
    struct json_object *o = json_tokener_parse(m.json), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "failed_files", &v));
    assert_int_equal(json_object_array_length(v), 20);
    assert_true(json_object_object_get_ex(o, "failed_files_more", &v));
    assert_int_equal(json_object_get_int64(v), 10);
    json_object_put(o);
    notify_msg_done(&m);
}

static void test_json_object(void **state)
{
    (void)state;
    struct notify_session s = sample();
    s.dashboard_url = NULL;
    s.card = NULL;
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    struct json_object *o = json_tokener_parse(m.json), *v, *c;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "event", &v));
    assert_string_equal(json_object_get_string(v), "session");
    assert_true(json_object_object_get_ex(o, "result", &v));
    assert_string_equal(json_object_get_string(v), "completed");
    assert_true(json_object_object_get_ex(o, "card", &v));
    assert_string_equal(json_object_get_string(v), "(no label)");
    assert_true(json_object_object_get_ex(o, "counts", &c));
    assert_true(json_object_object_get_ex(c, "already_backed_up", &v));
    assert_int_equal(json_object_get_int64(v), 30);
    assert_true(json_object_object_get_ex(o, "bytes", &v));
    assert_int_equal(json_object_get_int64(v), 3500000000LL);
    assert_true(json_object_object_get_ex(o, "destinations", &v));
    assert_int_equal(json_object_array_length(v), 2);
    assert_true(json_object_object_get_ex(o, "safe_to_remove", &v));
    assert_true(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(o, "dashboard_url", &v));
    assert_null(v);
    assert_true(json_object_object_get_ex(o, "title", &v));
    assert_string_equal(json_object_get_string(v), m.subject);
    json_object_put(o);
    assert_string_equal(m.click, "");
    assert_null(strstr(m.html, "<a href"));
    notify_msg_done(&m);
}

static void test_results_and_errors(void **state)
{
    (void)state;
    static const char *const heads[] = {"backed up, safe to remove", "partly backed up",
                                        "backup failed", "backup interrupted",
                                        "nothing to back up"};
    for (int r = NOTIFY_COMPLETED; r <= NOTIFY_EMPTY; r++) {
        struct notify_session s = sample();
        s.result = (enum notify_result)r;
        struct notify_msg m;
        struct error err;
        assert_int_equal(notify_msg_build(&s, &m, &err), 0);
        assert_non_null(strstr(m.subject, heads[r]));
        enum notify_result back;
        assert_int_equal(notify_result_parse(notify_result_name(s.result), &back), 0);
        assert_int_equal(back, r);
        notify_msg_done(&m);
    }
    enum notify_result back;
    assert_int_equal(notify_result_parse("done", &back), -EINVAL);
    struct notify_session s = sample();
    s.result = (enum notify_result)42;
    struct notify_msg m = {0};
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), -EINVAL);
    assert_null(m.subject);
    s = sample();
    s.n_dests = NOTIFY_DESTS_MAX + 1;
    assert_int_equal(notify_msg_build(&s, &m, &err), -EINVAL);
    assert_true(notify_error_transient(-ETIMEDOUT));
    assert_true(notify_error_transient(-EAGAIN));
    assert_true(notify_error_transient(-ECONNREFUSED));
    assert_false(notify_error_transient(-EACCES));
    assert_false(notify_error_transient(-EBADMSG));
    assert_false(notify_error_transient(-EINVAL));
}

/* notify_clean: the ceiling cuts on a character boundary, never leaving half a character. */
/* Several results in one message: counted in the subject, each result's part in order, the
 * names escaped in the HTML, the json webhook's results array, the most urgent priority. */
static void test_merged(void **state)
{
    (void)state;
    struct notify_session s[3] = {sample(), sample(), sample()};
    s[1].card = "<script>";
    s[1].result = NOTIFY_FAILED;
    s[1].safe_to_remove = false;
    s[2].card = "THIRD";
    struct notify_msg m = {0};
    struct error err = {0};
    assert_int_equal(notify_msg_build_merged(s, 3, &m, &err), 0);
    assert_string_equal(m.subject, "SnapSync: 3 results: 2 completed, 1 failed");
    assert_non_null(strstr(m.text, "3 backup results since the last message.\n"));
    const char *a = strstr(m.text, "Card EOS_DIGITAL: backed up");
    const char *b = strstr(m.text, "Card <script>: backup failed");
    const char *c = strstr(m.text, "Card THIRD: backed up");
    assert_true(a && b && c && a < b && b < c);
    assert_null(strstr(m.html, "<script>"));
    assert_non_null(strstr(m.html, "&lt;script&gt;"));
    assert_int_equal(count(m.html, "<html>"), 1);
    assert_int_equal(count(m.html, "<hr>"), 3);
    assert_int_equal(m.priority, 5);
    assert_string_equal(m.tags, "x");
    assert_string_equal(m.click, "http://pi.local:8080/");
    struct json_object *o = json_tokener_parse(m.json), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "event", &v));
    assert_string_equal(json_object_get_string(v), "sessions");
    assert_true(json_object_object_get_ex(o, "count", &v));
    assert_int_equal(json_object_get_int(v), 3);
    assert_true(json_object_object_get_ex(o, "results", &v));
    assert_int_equal(json_object_array_length(v), 3);
    struct json_object *card;
    assert_true(json_object_object_get_ex(json_object_array_get_idx(v, 1), "card", &card));
    assert_string_equal(json_object_get_string(card), "<script>");
    json_object_put(o);
    notify_msg_done(&m);

    /* one is the single message; none or too many are refused */
    struct notify_msg one = {0}, single = {0};
    assert_int_equal(notify_msg_build_merged(s, 1, &one, NULL), 0);
    assert_int_equal(notify_msg_build(&s[0], &single, NULL), 0);
    assert_string_equal(one.subject, single.subject);
    assert_string_equal(one.json, single.json);
    notify_msg_done(&one);
    notify_msg_done(&single);
    assert_int_equal(notify_msg_build_merged(s, 0, &m, &err), -EINVAL);
    assert_int_equal(notify_msg_build_merged(s, NOTIFY_MERGED_MAX + 1, &m, &err), -EINVAL);
    s[2].result = (enum notify_result)42;
    assert_int_equal(notify_msg_build_merged(s, 3, &m, &err), -EINVAL);
    assert_null(m.subject);
}

/* A destination down for a while: its label (cleaned), how long, the reason, the JSON object;
 * the back-up note. */
static void test_dest_down(void **state)
{
    (void)state;
    struct notify_session s = {
        .kind = NOTIFY_KIND_DEST_DOWN,
        .down = {.dest = "unraid: smb //nas/photos\r\nBcc: x",
                 .reason = "cannot connect",
                 .since = 1800000000,
                 .minutes = 35},
        .dashboard_url = "http://pi.local:8080/",
    };
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_string_equal(m.subject, "SnapSync: destination unraid: smb //nas/photos??Bcc: x down "
                                   "for 35 min");
    assert_non_null(strstr(m.text, "has been down for 35 min, since 2027-01-15T08:00:00Z"));
    assert_non_null(strstr(m.text, "Reason: cannot connect\n"));
    assert_non_null(strstr(m.text, "Dashboard: http://pi.local:8080/\n"));
    assert_non_null(strstr(m.html, "Down since"));
    assert_int_equal(m.priority, 4);
    assert_string_equal(m.tags, "rotating_light");
    struct json_object *o = json_tokener_parse(m.json), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "event", &v));
    assert_string_equal(json_object_get_string(v), "destination_down");
    assert_true(json_object_object_get_ex(o, "destination", &v));
    assert_string_equal(json_object_get_string(v), "unraid: smb //nas/photos??Bcc: x");
    assert_true(json_object_object_get_ex(o, "down_minutes", &v));
    assert_int_equal(json_object_get_int64(v), 35);
    assert_true(json_object_object_get_ex(o, "down_since", &v));
    assert_string_equal(json_object_get_string(v), "2027-01-15T08:00:00Z");
    json_object_put(o);
    notify_msg_done(&m);

    s.down.back_up = true;
    s.down.minutes = 50;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_string_equal(m.subject,
                        "SnapSync: destination unraid: smb //nas/photos??Bcc: x back up");
    assert_non_null(strstr(m.text, "is back up after 50 min down"));
    assert_int_equal(m.priority, 3);
    o = json_tokener_parse(m.json);
    assert_true(json_object_object_get_ex(o, "event", &v));
    assert_string_equal(json_object_get_string(v), "destination_up");
    json_object_put(o);
    notify_msg_done(&m);
}

/* A verification with problems: counts, the first NOTIFY_FAILED_LIST_MAX problems and how many
 * more, escaped in the HTML, the JSON object. */
static void test_verify_problem(void **state)
{
    (void)state;
    struct notify_problem probs[NOTIFY_FAILED_LIST_MAX + 5];
    char paths[NOTIFY_FAILED_LIST_MAX + 5][64];
    for (size_t i = 0; i < NOTIFY_FAILED_LIST_MAX + 5; i++) {
        snprintf(paths[i], sizeof(paths[i]), "/srv/photos/<IMG_%04zu>.CR2", i);
        probs[i] =
            (struct notify_problem){"local: /srv/photos", paths[i], i == 0 ? "changed" : "missing"};
    }
    struct notify_session s = {
        .kind = NOTIFY_KIND_VERIFY,
        .verify = {.scope = "all",
                   .run_id = 7,
                   .checked = 100,
                   .ok = 70,
                   .missing = 29,
                   .changed = 1,
                   .extra = 3,
                   .errors = 0,
                   .problems = probs,
                   .n_problems = NOTIFY_FAILED_LIST_MAX + 5},
    };
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&s, &m, &err), 0);
    assert_string_equal(m.subject, "SnapSync: verification found 33 problems");
    assert_non_null(strstr(m.text, "Verification run 7 (all)"));
    assert_non_null(strstr(m.text, "Missing: 29\nChanged: 1\nExtra files: 3\n"));
    assert_non_null(strstr(m.text, "  changed: local: /srv/photos: /srv/photos/<IMG_0000>.CR2\n"));
    assert_null(strstr(m.text, "IMG_0020"));
    assert_non_null(strstr(m.text, "... and 13 more\n"));
    assert_null(strstr(m.html, "<IMG_"));
    assert_non_null(strstr(m.html, "&lt;IMG_0019&gt;"));
    assert_int_equal(m.priority, 4);
    assert_string_equal(m.tags, "mag");
    struct json_object *o = json_tokener_parse(m.json), *v, *c;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "event", &v));
    assert_string_equal(json_object_get_string(v), "verify_problem");
    assert_true(json_object_object_get_ex(o, "counts", &c));
    assert_true(json_object_object_get_ex(c, "missing", &v));
    assert_int_equal(json_object_get_int64(v), 29);
    assert_true(json_object_object_get_ex(o, "problems", &v));
    assert_int_equal(json_object_array_length(v), NOTIFY_FAILED_LIST_MAX);
    struct json_object *p = json_object_array_get_idx(v, 0), *f;
    assert_true(json_object_object_get_ex(p, "problem", &f));
    assert_string_equal(json_object_get_string(f), "changed");
    assert_true(json_object_object_get_ex(o, "problems_more", &v));
    assert_int_equal(json_object_get_int64(v), 13);
    json_object_put(o);
    notify_msg_done(&m);

    /* merged with a session result */
    struct notify_session both[2] = {sample(), s};
    assert_int_equal(notify_msg_build_merged(both, 2, &m, &err), 0);
    assert_string_equal(m.subject, "SnapSync: 2 results: 1 completed, 1 verification problem");
    assert_non_null(strstr(m.text, "2 notifications since the last message."));
    assert_non_null(strstr(m.html, "&lt;IMG_0001&gt;"));
    assert_int_equal(m.priority, 4);
    notify_msg_done(&m);

    s.kind = (enum notify_kind)9;
    assert_int_equal(notify_msg_build(&s, &m, &err), -EINVAL);
}

static void test_clean(void **state)
{
    (void)state;
    char *s = notify_clean("ab\xc3\xa9", 3); /* "abé" cut inside the é */
    assert_string_equal(s, "ab");
    free(s);
    s = notify_clean("a\tb\x7f\xff", 100);
    assert_string_equal(s, "a?b?\xef\xbf\xbd");
    free(s);
    s = notify_clean(NULL, 10);
    assert_string_equal(s, "");
    free(s);
    char label[300];
    memset(label, 'x', sizeof(label) - 1);
    label[sizeof(label) - 1] = '\0';
    struct notify_session ss = sample();
    ss.card = label;
    struct notify_msg m;
    struct error err;
    assert_int_equal(notify_msg_build(&ss, &m, &err), 0);
    assert_true(strlen(m.subject) < NOTIFY_LABEL_MAX + 64);
    notify_msg_done(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completed),
        cmocka_unit_test(test_untrusted_label),
        cmocka_unit_test(test_failed_files_truncated),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_results_and_errors),
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_merged),
        cmocka_unit_test(test_dest_down),
        cmocka_unit_test(test_verify_problem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
