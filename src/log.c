/*
 * Logging: one mutex around one fputs per line, so lines from worker threads never interleave.
 * The formatted message goes through an escaper because it usually quotes names from a card.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int threshold = LOG_LEVEL_INFO; /* changed on SIGHUP while threads log */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*hook_before)(void *); /* under log_lock; see log_set_line_hooks */
static void (*hook_after)(void *);
static void *hook_userdata;
static void (*scrubber)(char *, void *); /* under log_lock; see log_set_scrubber */
static void *scrubber_userdata;

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
        {"debug", LOG_LEVEL_DEBUG},     {"info", LOG_LEVEL_INFO},   {"warning", LOG_LEVEL_WARNING},
        {"warn", LOG_LEVEL_WARNING},    {"error", LOG_LEVEL_ERROR},
    };
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *ret = names[i].level;
            return 0;
        }
    return -EINVAL;
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

    char line[sizeof(raw) * 4 + 64];
    size_t n = 0;
    const char *ts = getenv("SNAPSYNC_LOG_TIMESTAMPS");
    if (ts && strcmp(ts, "1") == 0) {
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        localtime_r(&now.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S ", &tm);
    }
    int k = snprintf(line + n, sizeof(line) - n, "%s: ", prefix[level]);
    if (k > 0)
        n += (size_t)k;
    for (const unsigned char *p = (const unsigned char *)raw; *p && n + 5 < sizeof(line); p++) {
        if (*p < 0x20 || *p == 0x7f) {
            n += (size_t)snprintf(line + n, sizeof(line) - n, "\\x%02x", *p);
        } else {
            line[n++] = (char)*p;
        }
    }
    line[n++] = '\n';
    line[n] = '\0';

    pthread_mutex_lock(&log_lock);
    if (scrubber)
        scrubber(line, scrubber_userdata);
    if (hook_before)
        hook_before(hook_userdata);
    fputs(line, stderr);
    fflush(stderr);
    if (hook_after)
        hook_after(hook_userdata);
    pthread_mutex_unlock(&log_lock);
}
