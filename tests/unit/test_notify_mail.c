/* SPDX-License-Identifier: MIT */
/* Unit tests for notify_mail.c: the RFC 5322 message (CRLF lines, line lengths, RFC 2047
 * subject, quoted-printable, the attachment) and the refusal of header injection. Sending is
 * tested against a real SMTP server in tests/integration/test_notify.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "notify_mail.h"

static const char *const to2[] = {"a@example.com", "b@example.org"};

static struct notify_mail_content content(void)
{
    return (struct notify_mail_content){
        .from = "snapsync@pi.example.net",
        .to = to2,
        .n_to = 2,
        .subject = "SnapSync: EOS: backed up",
        .text = "Card EOS: backed up.\n\nCopied: 3\n",
        .html = "<p>Card EOS</p>\n",
        .date = 1700000000,
    };
}

static char *format(const struct notify_mail_content *c)
{
    char *msg = NULL;
    size_t len = 0;
    struct error err;
    int r = notify_mail_format(c, &msg, &len, &err);
    if (r < 0)
        fail_msg("notify_mail_format: %d %s", r, err.msg);
    assert_int_equal(strlen(msg), len);
    return msg;
}

/* Every line ends in CRLF, none is longer than 78 characters. */
static void assert_lines_ok(const char *msg)
{
    size_t col = 0;
    for (const char *p = msg; *p; p++) {
        if (*p == '\n') {
            assert_true(p > msg && p[-1] == '\r');
            col = 0;
        } else if (*p == '\r') {
            assert_int_equal(p[1], '\n');
        } else {
            col++;
            assert_true(col <= 78);
        }
    }
}

static void test_headers_and_parts(void **state)
{
    (void)state;
    struct notify_mail_content c = content();
    char *msg = format(&c);
    assert_lines_ok(msg);
    assert_non_null(strstr(msg, "\r\nFrom: snapsync@pi.example.net\r\n"));
    assert_non_null(strstr(msg, "\r\nTo: a@example.com,\r\n b@example.org\r\n"));
    assert_non_null(strstr(msg, "\r\nSubject: SnapSync: EOS: backed up\r\n"));
    assert_non_null(strstr(msg, "\r\nMessage-ID: <"));
    assert_non_null(strstr(msg, "@pi.example.net>\r\n"));
    assert_non_null(strstr(msg, "\r\nMIME-Version: 1.0\r\n"));
    assert_true(strncmp(msg, "Date: ", 6) == 0);
    assert_non_null(strstr(msg, " Nov 2023 "));
    assert_non_null(strstr(msg, "Content-Type: multipart/alternative; boundary=\""));
    assert_non_null(strstr(msg, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(msg, "Content-Type: text/html; charset=utf-8\r\n"));
    /* the CRLF before a boundary belongs to the boundary: the body's own last line end stays */
    assert_non_null(strstr(msg, "Card EOS: backed up.\r\n\r\nCopied: 3\r\n\r\n--=_a"));
    assert_non_null(strstr(msg, "<p>Card EOS</p>\r\n\r\n--=_a"));
    /* the headers end before the first part */
    assert_true(strstr(msg, "\r\n\r\n") < strstr(msg, "Content-Type: text/plain"));
    free(msg);

    c.html = NULL;
    msg = format(&c);
    assert_null(strstr(msg, "multipart"));
    assert_non_null(strstr(msg, "Content-Transfer-Encoding: quoted-printable\r\n\r\nCard EOS"));
    free(msg);
}

/* A UTF-8 subject becomes encoded words that decode back to it, folded within 78 columns. */
static void test_encoded_subject(void **state)
{
    (void)state;
    const char *subject = "SnapSync: Caf\xc3\xa9 \xf0\x9f\x93\xb7 Hochzeit M\xc3\xbcller 2024: "
                          "backed up, safe to remove \xe2\x9c\x93 and a long tail to fold";
    struct notify_mail_content c = content();
    c.subject = subject;
    char *msg = format(&c);
    assert_lines_ok(msg);
    const char *p = strstr(msg, "\r\nSubject: ") + 11;
    const char *end = strstr(p, "\r\nMessage-ID");
    assert_non_null(end);
    char decoded[512] = "";
    size_t o = 0;
    int words = 0;
    while (p < end) {
        assert_true(strncmp(p, "=?UTF-8?B?", 10) == 0);
        p += 10;
        const char *q = strstr(p, "?=");
        assert_true(q && q < end);
        unsigned char buf[128];
        int n = EVP_DecodeBlock(buf, (const unsigned char *)p, (int)(q - p));
        assert_true(n > 0);
        while (q - p >= 1 && q[-1] == '=') { /* padding decodes to zero bytes */
            n--;
            q--;
        }
        memcpy(decoded + o, buf, (size_t)n);
        o += (size_t)n;
        p = strstr(p, "?=") + 2;
        words++;
        if (p < end) {
            assert_true(strncmp(p, "\r\n ", 3) == 0);
            p += 3;
        }
    }
    decoded[o] = '\0';
    assert_string_equal(decoded, subject);
    assert_true(words >= 2);
    free(msg);

    char *plain = notify_mail_encode_words("short and plain", " ");
    assert_string_equal(plain, "short and plain");
    free(plain);
    char *http = notify_mail_encode_words("\xc3\xa9t\xc3\xa9", " ");
    assert_string_equal(http, "=?UTF-8?B?w6l0w6k=?=");
    free(http);
}

/* Quoted-printable: '=' and bytes above ASCII encoded, a space before a line end encoded, long
 * lines broken softly, a lone '.' line left for libcurl's dot-stuffing. */
static void test_quoted_printable(void **state)
{
    (void)state;
    char text[400];
    memset(text, 'x', 200);
    snprintf(text + 200, sizeof(text) - 200, "\na=b caf\xc3\xa9 \n.\n");
    struct notify_mail_content c = content();
    c.text = text;
    c.html = NULL;
    char *msg = format(&c);
    assert_lines_ok(msg);
    assert_non_null(strstr(msg, "=\r\nxxx"));
    assert_non_null(strstr(msg, "\r\na=3Db caf=C3=A9=20\r\n.\r\n"));
    free(msg);
}

/* CR or LF in the subject or an address would start a header of the sender's choosing. */
static void test_no_header_injection(void **state)
{
    (void)state;
    struct error err;
    char *msg = NULL;
    size_t len = 0;
    struct notify_mail_content c = content();
    c.subject = "hello\r\nBcc: victim@example.com";
    assert_int_equal(notify_mail_format(&c, &msg, &len, &err), -EINVAL);
    c.subject = "hello\nBcc: victim@example.com";
    assert_int_equal(notify_mail_format(&c, &msg, &len, &err), -EINVAL);
    c = content();
    c.from = "a@example.com\r\nBcc: victim@example.com";
    assert_int_equal(notify_mail_format(&c, &msg, &len, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "notify.email.from"));
    const char *bad_to[] = {"a@example.com>\r\nRCPT TO:<victim@example.com"};
    c = content();
    c.to = bad_to;
    c.n_to = 1;
    assert_int_equal(notify_mail_format(&c, &msg, &len, &err), -EINVAL);
    c.n_to = 0;
    assert_int_equal(notify_mail_format(&c, &msg, &len, &err), -EINVAL);
    assert_null(msg);

    assert_true(notify_mail_address_ok("user+tag@sub.example.com"));
    assert_false(notify_mail_address_ok("no-at-sign"));
    assert_false(notify_mail_address_ok("@example.com"));
    assert_false(notify_mail_address_ok("a@"));
    assert_false(notify_mail_address_ok("a b@example.com"));
    assert_false(notify_mail_address_ok("a@b@example.com"));
    assert_false(notify_mail_address_ok("Name <a@example.com>"));
    assert_false(notify_mail_address_ok(NULL));

    /* sending checks the same before connecting, and never sends credentials in the clear */
    const char *to[] = {"a@example.com"};
    struct notify_mail_server srv = {.host = "127.0.0.1",
                                     .port = 25,
                                     .security = NOTIFY_MAIL_NONE,
                                     .username = "u",
                                     .password = "secret",
                                     .connect_timeout = 1,
                                     .timeout = 1};
    assert_int_equal(notify_mail_send(&srv, "s@example.com", to, 1, "x", 1, &err), -EINVAL);
    assert_null(strstr(err.msg, "secret"));
    srv.username = NULL;
    srv.host = "evil.example.com/path";
    assert_int_equal(notify_mail_send(&srv, "s@example.com", to, 1, "x", 1, &err), -EINVAL);
    srv.host = "127.0.0.1";
    assert_int_equal(notify_mail_send(&srv, "s\n@example.com", to, 1, "x", 1, &err), -EINVAL);
    enum notify_mail_security sec;
    assert_int_equal(notify_mail_security_parse("tls", &sec), 0);
    assert_int_equal(sec, NOTIFY_MAIL_TLS);
    assert_int_equal(notify_mail_security_parse("ssl", &sec), -EINVAL);
}

static void test_attachment(void **state)
{
    (void)state;
    struct notify_mail_attachment a = {.filename = "report.html",
                                       .content_type = "text/html",
                                       .data = "<h1>report</h1>",
                                       .len = 15};
    struct notify_mail_content c = content();
    c.attachment = &a;
    char *msg = format(&c);
    assert_lines_ok(msg);
    assert_non_null(strstr(msg, "Content-Type: multipart/mixed; boundary=\""));
    assert_non_null(strstr(msg, "Content-Type: multipart/alternative; boundary=\""));
    assert_non_null(strstr(msg, "Content-Disposition: attachment; filename=\"report.html\"\r\n"));
    assert_non_null(strstr(msg, "\r\n\r\nPGgxPnJlcG9ydDwvaDE+\r\n"));
    assert_true(strstr(msg, "multipart/mixed") < strstr(msg, "multipart/alternative"));
    free(msg);

    struct error err;
    char *out = NULL;
    size_t len;
    a.filename = "evil\"\r\nX: y";
    assert_int_equal(notify_mail_format(&c, &out, &len, &err), -EINVAL);
    a.filename = "report.html";
    a.content_type = "text/html\r\nX: y";
    assert_int_equal(notify_mail_format(&c, &out, &len, &err), -EINVAL);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_and_parts), cmocka_unit_test(test_encoded_subject),
        cmocka_unit_test(test_quoted_printable),  cmocka_unit_test(test_no_header_injection),
        cmocka_unit_test(test_attachment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
