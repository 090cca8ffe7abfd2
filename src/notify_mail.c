/* SPDX-License-Identifier: MIT */
/*
 * E-mail notifications (notify_mail.h). The message is written into a memory stream: headers
 * (the subject as RFC 2047 encoded words when needed), then the MIME parts, bodies in
 * quoted-printable with LF turned into CRLF, an attachment in base64 (OpenSSL's encoder, 57
 * bytes into each 76-character line). Message-ID and the boundary take random bytes from
 * getrandom, so a boundary cannot occur in a quoted-printable or base64 body anyway.
 *
 * Sending is one blocking curl_easy_perform on a handle made for it, the message read from
 * memory by the read callback. The debug callback keeps the server's last reply line (only
 * what the server sent: what we send holds the credentials), which goes into the error message
 * and, through its code, decides between -EAGAIN (4xx) and -EBADMSG (5xx).
 */
#include "notify_mail.h"

#include "notify_msg.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define WORD_INPUT_MAX                                                                             \
    39 /* bytes of text in one encoded word: 52 base64 + 12 = 64 chars,                            \
        * so "Subject: " and the first word fit in 78 */

int notify_mail_security_parse(const char *name, enum notify_mail_security *ret)
{
    static const char *const names[] = {[NOTIFY_MAIL_STARTTLS] = "starttls",
                                        [NOTIFY_MAIL_TLS] = "tls",
                                        [NOTIFY_MAIL_NONE] = "none"};
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i]) == 0) {
            *ret = (enum notify_mail_security)i;
            return 0;
        }
    return -EINVAL;
}

bool notify_mail_address_ok(const char *s)
{
    if (!s)
        return false;
    size_t len = strnlen(s, NOTIFY_MAIL_ADDR_MAX + 1);
    if (len < 3 || len > NOTIFY_MAIL_ADDR_MAX)
        return false;
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@'))
        return false;
    for (const char *p = s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("<>()[],;:\\\"", *p))
            return false;
    return true;
}

static bool is_plain(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || (unsigned char)s[n] < 0x20 || (unsigned char)s[n] >= 0x7f)
            return false;
    return true;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Bytes of the UTF-8 character starting with lead byte c (1 for anything else). */
static size_t char_len(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

char *notify_mail_encode_words(const char *s, const char *sep)
{
    if (is_plain(s, 60))
        return strdup(s);
    size_t len = strlen(s), seplen = strlen(sep);
    size_t words = len / 30 + 2; /* a word holds at least 36 bytes: cut by 4-byte characters */
    size_t cap = words * (12 + 52 + seplen) + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        while (i + n < len) {
            size_t k = char_len((unsigned char)s[i + n]);
            if (n + k > WORD_INPUT_MAX)
                break;
            n += k > len - i - n ? len - i - n : k;
        }
        if (o)
            o += (size_t)snprintf(out + o, cap - o, "%s", sep);
        o += (size_t)snprintf(out + o, cap - o, "=?UTF-8?B?");
        o +=
            (size_t)EVP_EncodeBlock((unsigned char *)out + o, (const unsigned char *)s + i, (int)n);
        o += (size_t)snprintf(out + o, cap - o, "?=");
        i += n;
    }
    out[o] = '\0';
    return out;
}

/* Writes s as quoted-printable: LF or CRLF become CRLF, lines at most 76 characters. Returns the
 * length of the last line, 0 when s ended with a line end. */
static size_t write_qp(FILE *f, const char *s)
{
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\n') {
            fputs("\r\n", f);
            col = 0;
            continue;
        }
        bool at_eol = p[1] == '\n' || (p[1] == '\r' && p[2] == '\n') || !p[1];
        bool literal =
            (*p >= 33 && *p <= 126 && *p != '=') || ((*p == ' ' || *p == '\t') && !at_eol);
        size_t w = literal ? 1 : 3;
        if (col + w > 75) { /* room for the '=' of a soft line break */
            fputs("=\r\n", f);
            col = 0;
        }
        if (literal)
            fputc(*p, f);
        else
            fprintf(f, "=%02X", *p);
        col += w;
    }
    return col;
}

static void write_base64(FILE *f, const unsigned char *data, size_t len)
{
    unsigned char line[80];
    for (size_t i = 0; i < len; i += 57) {
        int n = EVP_EncodeBlock(line, data + i, (int)(len - i < 57 ? len - i : 57));
        fwrite(line, 1, (size_t)n, f);
        fputs("\r\n", f);
    }
}

static void write_date(FILE *f, time_t t)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!localtime_r(&t, &tm))
        gmtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    fprintf(f, "Date: %s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld\r\n", days[tm.tm_wday % 7],
            tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
            sign, off / 60, off % 60);
}

static int random_hex(char *out, size_t bytes)
{
    unsigned char buf[16];
    if (bytes > sizeof(buf) || getrandom(buf, bytes, 0) != (ssize_t)bytes)
        return -EIO;
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", buf[i]);
    return 0;
}

static bool attachment_ok(const struct notify_mail_attachment *a)
{
    if (!a->filename || !a->content_type || !a->filename[0] || !is_plain(a->filename, 100) ||
        strpbrk(a->filename, "\"\\") || !a->content_type[0] || !is_plain(a->content_type, 100) ||
        strpbrk(a->content_type, "\"\\ ;") || !strchr(a->content_type, '/'))
        return false;
    return a->data || a->len == 0;
}

static int check_content(const struct notify_mail_content *c, struct error *err)
{
    if (!notify_mail_address_ok(c->from))
        return error_set(err, -EINVAL, "notify.email.from: not an e-mail address we accept");
    if (c->n_to == 0 || c->n_to > NOTIFY_MAIL_RCPT_MAX)
        return error_set(err, -EINVAL, "notify.email.to: between 1 and %d addresses",
                         NOTIFY_MAIL_RCPT_MAX);
    for (size_t i = 0; i < c->n_to; i++)
        if (!notify_mail_address_ok(c->to[i]))
            return error_set(err, -EINVAL,
                             "notify.email.to: address %zu is not an e-mail address we accept",
                             i + 1);
    if (!c->subject || has_control(c->subject))
        return error_set(err, -EINVAL, "the subject holds a control character");
    if (!c->text)
        return error_set(err, -EINVAL, "the message has no text");
    if (c->attachment && !attachment_ok(c->attachment))
        return error_set(err, -EINVAL, "the attachment's name or type is not acceptable");
    if (c->attachment && c->attachment->len > NOTIFY_MAIL_MAX)
        return error_set(err, -EMSGSIZE, "the attachment is larger than %d bytes", NOTIFY_MAIL_MAX);
    return 0;
}

static void write_part(FILE *f, const char *boundary, const char *type, const char *body)
{
    fprintf(f,
            "--%s\r\nContent-Type: %s; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            boundary, type);
    write_qp(f, body);
    fputs("\r\n", f); /* the CRLF before the next boundary belongs to it, not to the body */
}

int notify_mail_format(const struct notify_mail_content *c, char **ret, size_t *ret_len,
                       struct error *err)
{
    int r = check_content(c, err);
    if (r < 0)
        return r;
    char id[25], alt[25], mixed[25];
    if (random_hex(id, 12) < 0 || random_hex(alt, 12) < 0 || random_hex(mixed, 12) < 0)
        return error_set(err, -EIO, "cannot get random bytes for the message");
    char *subject = notify_mail_encode_words(c->subject, "\r\n ");
    char *text = NULL;
    size_t len = 0;
    FILE *f = subject ? open_memstream(&text, &len) : NULL;
    if (!f) {
        free(subject);
        return error_set(err, -ENOMEM, "out of memory");
    }
    write_date(f, c->date);
    fprintf(f, "From: %s\r\nTo: ", c->from);
    for (size_t i = 0; i < c->n_to; i++)
        fprintf(f, "%s%s", i ? ",\r\n " : "", c->to[i]);
    fprintf(f, "\r\nSubject: %s\r\n", subject);
    fprintf(f, "Message-ID: <%s.%lld@%s>\r\n", id, (long long)c->date, strchr(c->from, '@') + 1);
    fputs("MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n", f);
    if (c->attachment)
        fprintf(f,
                "Content-Type: multipart/mixed; boundary=\"=_m%s\"\r\n\r\n"
                "This is a message in MIME format.\r\n\r\n--=_m%s\r\n",
                mixed, mixed);
    char boundary[32];
    snprintf(boundary, sizeof(boundary), "=_a%s", alt);
    if (c->html) {
        fprintf(f, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
        if (!c->attachment)
            fputs("This is a message in MIME format.\r\n\r\n", f);
        write_part(f, boundary, "text/plain", c->text);
        write_part(f, boundary, "text/html", c->html);
        fprintf(f, "--%s--\r\n", boundary);
    } else {
        fputs("Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
              f);
        if (write_qp(f, c->text))
            fputs("\r\n", f);
    }
    if (c->attachment) {
        const struct notify_mail_attachment *a = c->attachment;
        fprintf(f,
                "--=_m%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\n"
                "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n",
                mixed, a->content_type, a->filename);
        write_base64(f, a->data, a->len);
        fprintf(f, "--=_m%s--\r\n", mixed);
    }
    free(subject);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(text);
        return error_set(err, -ENOMEM, "out of memory");
    }
    if (len > NOTIFY_MAIL_MAX) {
        free(text);
        return error_set(err, -EMSGSIZE, "the message is larger than %d bytes", NOTIFY_MAIL_MAX);
    }
    *ret = text;
    *ret_len = len;
    return 0;
}

/* ---- sending ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct upload {
    const char *data;
    size_t len, pos;
    char reply[256]; /* the server's first 4xx or 5xx reply line, else its last one */
    bool failed;     /* reply holds a 4xx or 5xx (the QUIT's 221 after it must not hide it) */
};

static size_t on_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nitems;
    if (n > u->len - u->pos)
        n = u->len - u->pos;
    memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static int on_debug(CURL *e, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)e;
    struct upload *u = arg;
    if (type != CURLINFO_HEADER_IN || size == 0)
        return 0; /* what we send (credentials included) is never kept */
    char line[sizeof(u->reply)];
    size_t n = size < sizeof(line) - 1 ? size : sizeof(line) - 1;
    memcpy(line, data, n);
    line[n] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (u->failed)
        return 0;
    u->failed = line[0] == '4' || line[0] == '5';
    char *clean = notify_clean(line, sizeof(line) - 1);
    if (clean) {
        snprintf(u->reply, sizeof(u->reply), "%s", clean);
        free(clean);
    }
    return 0;
}

static bool host_ok(const char *h)
{
    if (!h || !h[0] || strlen(h) > 253)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == ':' || *p == '_'))
            return false;
    return true;
}

/* The error for a failed conversation: curl's result, the last reply and its code. */
static int send_error(CURLcode res, long code, const struct upload *u, const char *errbuf,
                      const struct notify_mail_server *srv, struct error *err)
{
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(res);
    const char *reply = u->reply[0] ? u->reply : "(no reply)";
    switch (res) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return error_set(err, -ECONNREFUSED, "cannot reach the mail server %s:%d: %s", srv->host,
                         srv->port, detail);
    case CURLE_OPERATION_TIMEDOUT:
        return error_set(err, -ETIMEDOUT, "the mail server %s:%d timed out: %s", srv->host,
                         srv->port, detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        return error_set(err, -EACCES,
                         "TLS: the mail server's certificate is not trusted (a self-signed "
                         "server needs its CA in notify.email.tls_ca_file): %s",
                         detail);
    case CURLE_SSL_CONNECT_ERROR:
        return error_set(err, -EACCES,
                         "TLS with the mail server failed (is notify.email.security "
                         "right for port %d?): %s",
                         srv->port, detail);
    case CURLE_USE_SSL_FAILED:
        return error_set(err, -EINVAL,
                         "the mail server does not offer STARTTLS (notify.email.security): %s",
                         reply);
    case CURLE_LOGIN_DENIED:
        return error_set(err, -EACCES,
                         "the mail server refused the credentials "
                         "(notify.email.username, SMTP_PASSWORD): %s",
                         reply);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UPLOAD_FAILED:
    default:
        if (code >= 400 && code < 500)
            return error_set(err, -EAGAIN, "the mail server answered %s, will retry", reply);
        if (code >= 500)
            return error_set(err, code == 530 || code == 535 ? -EACCES : -EBADMSG,
                             "the mail server refused the message: %s", reply);
        if (res == CURLE_SEND_ERROR || res == CURLE_RECV_ERROR || res == CURLE_GOT_NOTHING)
            return error_set(err, -ECONNRESET, "connection to the mail server lost: %s", detail);
        return error_set(err, -EIO, "sending the mail failed: %s (%s)", detail, reply);
    }
}

int notify_mail_send(const struct notify_mail_server *srv, const char *from, const char *const *to,
                     size_t n_to, const char *message, size_t len, struct error *err)
{
    if (!host_ok(srv->host))
        return error_set(err, -EINVAL, "notify.email.host: not a host name or address");
    if (srv->port < 1 || srv->port > 65535)
        return error_set(err, -EINVAL, "notify.email.port: out of 1..65535");
    bool auth = srv->username && srv->username[0];
    if (auth && srv->security == NOTIFY_MAIL_NONE)
        return error_set(err, -EINVAL,
                         "notify.email: credentials are never sent without TLS "
                         "(security starttls or tls)");
    if (auth && (has_control(srv->username) || !srv->password || has_control(srv->password)))
        return error_set(err, -EINVAL,
                         "notify.email: the user name or password holds a "
                         "control character or is missing");
    if (!notify_mail_address_ok(from))
        return error_set(err, -EINVAL, "notify.email.from: not an e-mail address we accept");
    if (n_to == 0 || n_to > NOTIFY_MAIL_RCPT_MAX)
        return error_set(err, -EINVAL, "notify.email.to: between 1 and %d addresses",
                         NOTIFY_MAIL_RCPT_MAX);
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return error_set(err, -EIO, "cannot initialise libcurl: %s",
                         curl_easy_strerror(curl_init_result));

    int r = 0;
    struct curl_slist *rcpt = NULL;
    struct upload u = {.data = message, .len = len};
    char errbuf[CURL_ERROR_SIZE] = "";
    char url[300], addr[NOTIFY_MAIL_ADDR_MAX + 3];
    CURL *e = curl_easy_init();
    if (!e) {
        r = error_set(err, -ENOMEM, "cannot create a CURL handle");
        goto out;
    }
    for (size_t i = 0; i < n_to; i++) {
        if (!notify_mail_address_ok(to[i])) {
            r = error_set(err, -EINVAL, "notify.email.to: address %zu is not acceptable", i + 1);
            goto out;
        }
        snprintf(addr, sizeof(addr), "<%s>", to[i]);
        struct curl_slist *t = curl_slist_append(rcpt, addr);
        if (!t) {
            r = error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        rcpt = t;
    }
    bool v6 = strchr(srv->host, ':') != NULL;
    snprintf(url, sizeof(url), "%s://%s%s%s:%d",
             srv->security == NOTIFY_MAIL_TLS ? "smtps" : "smtp", v6 ? "[" : "", srv->host,
             v6 ? "]" : "", srv->port);
    snprintf(addr, sizeof(addr), "<%s>", from);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USE_SSL,
                     srv->security == NOTIFY_MAIL_STARTTLS ? (long)CURLUSESSL_ALL
                                                           : (long)CURLUSESSL_NONE);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (srv->ca_file && srv->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, srv->ca_file);
    if (auth) {
        curl_easy_setopt(e, CURLOPT_USERNAME, srv->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, srv->password);
    }
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, addr);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, &u);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, srv->connect_timeout);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, srv->timeout);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, &u);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L); /* feeds on_debug, which prints nothing */
    CURLcode res = curl_easy_perform(e);
    if (res != CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        r = send_error(res, code, &u, errbuf, srv, err);
    }
out:
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(e);
    return r;
}
