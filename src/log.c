/* SPDX-License-Identifier: MIT */
/*
 * Logging: one mutex around one fputs per line, so lines from worker threads never interleave.
 * The formatted message goes through an escaper because it usually quotes names from a card:
 * control characters and bytes that are not UTF-8 become \xHH, so every line is valid UTF-8 text.
 * When stderr is the journal's stream (systemd says so in $JOURNAL_STREAM), lines go through
 * sd_journal_sendv instead, so they keep their priority and session; stderr is the fallback when
 * that fails.
 */
#include "log.h"

#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

/* "<timestamp> <level>: " and every byte of a 2047-byte message escaped as \xHH, and "\n" */
#define LOG_LINE_MAX (2048 * 4 + 64)

static atomic_int threshold = LOG_LEVEL_INFO; /* changed on SIGHUP while threads log */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*hook_before)(void *); /* under log_lock; see log_set_line_hooks */
static void (*hook_after)(void *);
static void *hook_userdata;
static void (*scrubber)(char *, void *); /* under log_lock; see log_set_scrubber */
static void *scrubber_userdata;
static _Thread_local int64_t session_id; /* see log_set_session */
/* The journal's writer; a unit test (which includes this file) puts its own here. */
static int (*journal_sendv)(const struct iovec *iov, int n) = sd_journal_sendv;

int64_t log_get_session(void)
{
    return session_id;
}

void log_set_session(int64_t id)
{
    session_id = id;
}

/* Whether stderr is the stream systemd connected to the journal: $JOURNAL_STREAM holds its
 * "<device>:<inode>", which stops matching once stderr is redirected elsewhere (a child's
 * `2>file`), as sd_journal_stream_fd(3) recommends checking. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    if (!js || !*js)
        return false;
    char *end;
    errno = 0;
    unsigned long long dev = strtoull(js, &end, 10);
    if (errno || end == js || *end != ':')
        return false;
    const char *ino_s = end + 1;
    unsigned long long ino = strtoull(ino_s, &end, 10);
    if (errno || end == ino_s || *end)
        return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* snprintf's length, clamped to what fits in a buffer of size (its output is cut there). */
static size_t fitted(int k, size_t size)
{
    return k < 0 ? 0 : (size_t)k < size ? (size_t)k : size - 1;
}

/* Sends msg (without its newline) at level's syslog priority, with the thread's session. Returns
 * what the writer returns: 0 or a negative errno. */
static int journal_write(enum log_level level, const char *msg, size_t len)
{
    static const char *const priority[] = {"PRIORITY=7", "PRIORITY=6", "PRIORITY=4", "PRIORITY=3"};
    char message[sizeof("MESSAGE=") + LOG_LINE_MAX];
    char ident[64];
    char session[sizeof("SNAPSYNC_SESSION=") + 24];
    struct iovec iov[4];
    int n = 0;
    int k = snprintf(message, sizeof(message), "MESSAGE=%.*s", (int)len, msg);
    iov[n++] = (struct iovec){message, fitted(k, sizeof(message))};
    iov[n++] = (struct iovec){(void *)priority[level], strlen(priority[level])};
    k = snprintf(ident, sizeof(ident), "SYSLOG_IDENTIFIER=%s", program_invocation_short_name);
    iov[n++] = (struct iovec){ident, fitted(k, sizeof(ident))};
    if (session_id > 0) {
        k = snprintf(session, sizeof(session), "SNAPSYNC_SESSION=%" PRId64, session_id);
        iov[n++] = (struct iovec){session, fitted(k, sizeof(session))};
    }
    return journal_sendv(iov, n);
}

void log_set_level(enum log_level level)
{
    atomic_store(&threshold, (int)level);
}

void log_set_line_hooks(void (*before)(void *), void (*after)(void *), void *userdata)
{
    pthread_mutex_lock(&log_lock);
    hook_before = before;
    hook_after = after;
    hook_userdata = userdata;
    pthread_mutex_unlock(&log_lock);
}

void log_set_scrubber(void (*fn)(char *line, void *userdata), void *userdata)
{
    pthread_mutex_lock(&log_lock);
    scrubber = fn;
    scrubber_userdata = userdata;
    pthread_mutex_unlock(&log_lock);
}

void log_run_locked(void (*fn)(void *), void *userdata)
{
    pthread_mutex_lock(&log_lock);
    fn(userdata);
    pthread_mutex_unlock(&log_lock);
}

int log_level_from_string(const char *s, enum log_level *ret)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {
        {"debug", LOG_LEVEL_DEBUG},  {"info", LOG_LEVEL_INFO},   {"warning", LOG_LEVEL_WARNING},
        {"warn", LOG_LEVEL_WARNING}, {"error", LOG_LEVEL_ERROR},
    };
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *ret = names[i].level;
            return 0;
        }
    return -EINVAL;
}

void log_library(const char *who, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_debug("%s: %s", who, line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const prefix[] = {"debug", "info", "warning", "error"};
    if ((int)level < atomic_load(&threshold))
        return;

    char raw[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);

    char line[LOG_LINE_MAX];
    size_t n = 0;
    /* the journal has its own time on every entry */
    bool journal = stderr_is_journal();
    const char *ts = getenv("SNAPSYNC_LOG_TIMESTAMPS");
    if (!journal && ts && strcmp(ts, "1") == 0) {
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        localtime_r(&now.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S ", &tm);
    }
    int k = snprintf(line + n, sizeof(line) - n, "%s: ", prefix[level]);
    if (k > 0)
        n += (size_t)k;
    const unsigned char *p = (const unsigned char *)raw;
    size_t rlen = strlen(raw);
    for (size_t i = 0; i < rlen && n + 5 < sizeof(line);) {
        size_t seq = p[i] < 0x20 || p[i] == 0x7f ? 0 : utf8_seq_len(p + i, rlen - i);
        if (seq == 0) {
            /* a control character, or a byte of a name that is not UTF-8 (which journalctl
             * would show only as "[blob data]") */
            n += (size_t)snprintf(line + n, sizeof(line) - n, "\\x%02x", p[i]);
            i++;
        } else if (n + seq + 5 < sizeof(line)) {
            memcpy(line + n, p + i, seq);
            n += seq;
            i += seq;
        } else {
            break;
        }
    }
    line[n++] = '\n';
    line[n] = '\0';

    pthread_mutex_lock(&log_lock);
    if (scrubber)
        scrubber(line, scrubber_userdata);
    if (hook_before)
        hook_before(hook_userdata);
    size_t len = strlen(line);
    if (!journal || journal_write(level, line, len && line[len - 1] == '\n' ? len - 1 : len) < 0) {
        fputs(line, stderr);
        fflush(stderr);
    }
    if (hook_after)
        hook_after(hook_userdata);
    pthread_mutex_unlock(&log_lock);
}
