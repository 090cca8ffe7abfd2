/* SPDX-License-Identifier: MIT */
/*
 * Notifications by e-mail (notify_mail.c): an RFC 5322 message (multipart/alternative, text and
 * HTML, optionally inside multipart/mixed with one attachment) and its delivery through
 * libcurl's SMTP client.
 *
 * The message: CRLF line ends, lines of at most 78 characters in the headers and 76 in the
 * bodies (quoted-printable; attachments base64), Date, Message-ID, MIME-Version, From, To,
 * Subject (RFC 2047 "=?UTF-8?B?...?=" encoded words, folded, when it is not short plain ASCII),
 * Auto-Submitted: auto-generated. Header injection is impossible: an address holding anything
 * but printable ASCII without spaces, or a subject with a control character (CR, LF, ...), is
 * refused with -EINVAL.
 *
 * Delivery: libcurl speaks SMTP and does the dot-stuffing itself (a body line starting with '.'
 * is sent as '..' and the message ends with CRLF.CRLF; smtp.c, "escape end of body"), so the
 * message is handed over as it is. TLS peers are always verified (system CAs or ca_file).
 * Credentials are never sent over a connection without TLS.
 *
 * Threads: any thread, one call at a time per argument set; nothing is shared but libcurl's
 * global initialisation (done once per process).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "error.h"

#define NOTIFY_MAIL_RCPT_MAX 16           /* recipients of one message */
#define NOTIFY_MAIL_ADDR_MAX 254          /* bytes of an address (RFC 5321) */
#define NOTIFY_MAIL_MAX (8 * 1024 * 1024) /* bytes of a whole message, attachment included */

enum notify_mail_security {
    NOTIFY_MAIL_STARTTLS, /* smtp:// then STARTTLS, required (port 587) */
    NOTIFY_MAIL_TLS,      /* smtps://, TLS from the first byte (port 465) */
    NOTIFY_MAIL_NONE,     /* plain SMTP (a relay on the same host); no credentials */
};

/* Parses "starttls", "tls", "none". 0, or -EINVAL. */
int notify_mail_security_parse(const char *name, enum notify_mail_security *ret);

/* One file to attach (the session's report, later). Borrowed for the call. */
struct notify_mail_attachment {
    const char *filename;     /* printable ASCII without quotes or backslashes */
    const char *content_type; /* "text/html", "application/pdf", ... */
    const void *data;
    size_t len;
};

struct notify_mail_content {
    const char *from;      /* addr-spec: "snapsync@example.com" */
    const char *const *to; /* addr-specs */
    size_t n_to;           /* 1..NOTIFY_MAIL_RCPT_MAX */
    const char *subject;   /* UTF-8, no control characters */
    const char *text;      /* plain-text part, UTF-8, LF or CRLF line ends */
    const char *html;      /* HTML part, or NULL for a text-only message */
    const struct notify_mail_attachment *attachment; /* or NULL */
    time_t date;                                     /* the Date header */
};

/* Whether s is an address we accept: 3..NOTIFY_MAIL_ADDR_MAX bytes of printable ASCII, one '@'
 * with something on both sides, none of space <>()[],;:\" (so it can go into a header and an
 * SMTP command as it is). Any thread. */
bool notify_mail_address_ok(const char *s);

/*
 * Formats the message c into *ret (NUL-terminated, *ret_len bytes without the NUL; the caller
 * frees it). Written on success only. Errors: -EINVAL (an address or the subject refused, no
 * recipient or too many, a bad attachment name or type; err names which), -EMSGSIZE (larger
 * than NOTIFY_MAIL_MAX), -ENOMEM.
 */
int notify_mail_format(const struct notify_mail_content *c, char **ret, size_t *ret_len,
                       struct error *err);

/* RFC 2047 form of a header value: s itself when it is printable ASCII of at most 60 bytes,
 * else "=?UTF-8?B?...?=" encoded words of at most 75 characters each, cut on character
 * boundaries and joined by `sep` (CRLF SP to fold a mail header, " " for an HTTP header). The
 * caller frees it; NULL when out of memory. Any thread. */
char *notify_mail_encode_words(const char *s, const char *sep);

struct notify_mail_server {
    const char *host; /* name or address (an IPv6 one without brackets) */
    int port;         /* 1..65535 */
    enum notify_mail_security security;
    const char *username; /* NULL or "": no AUTH */
    const char *password;
    const char *ca_file;  /* PEM CA bundle, NULL or "" for the system's */
    long connect_timeout; /* seconds, > 0 */
    long timeout;         /* seconds for the whole conversation, > 0 */
};

/*
 * Sends the formatted message (len bytes) from `from` to the n_to addresses `to` through srv.
 * Blocks for at most srv->timeout seconds.
 * Errors (err holds the server's last reply when there was one, never the password):
 * -EINVAL (a setting: host, port, an address, credentials without TLS, STARTTLS not offered),
 * -ECONNREFUSED (cannot connect or resolve), -ETIMEDOUT, -ECONNRESET (connection lost),
 * -EACCES (certificate not trusted; credentials refused), -EAGAIN (the server answered 4xx: try
 * later), -EBADMSG (the server answered 5xx: refused), -ENOMEM, -EIO (anything else).
 * notify_error_transient (notify_msg.h) tells the ones worth retrying.
 */
int notify_mail_send(const struct notify_mail_server *srv, const char *from, const char *const *to,
                     size_t n_to, const char *message, size_t len, struct error *err);
