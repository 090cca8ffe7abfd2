/* SPDX-License-Identifier: MIT */
/*
 * Levelled logging to stderr; under systemd, when stderr is the journal's stream, straight to
 * journald with each line's priority and session (field SNAPSYNC_SESSION). Lines from outside (file
 * names, server messages) are escaped so a crafted name cannot forge log lines. Never log a
 * secret: pass them through nothing here (the scrubber the CLI and the service install is the
 * net under that rule, for secrets that arrive from elsewhere, like a server that echoes them).
 */
#pragma once

#include <stdarg.h>

#include <stdint.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, LOG_LEVEL_ERROR };

/* Sets the threshold; messages below it are dropped. Any thread. */
void log_set_level(enum log_level level);

/* Parses "debug", "info", "warning"/"warn", "error" (case-insensitive). Returns 0 or -EINVAL. */
int log_level_from_string(const char *s, enum log_level *ret);

/* Writes one line "<level>: <message>" to stderr, with control characters and every byte that is
 * not part of well-formed UTF-8 in the formatted message escaped as \xHH (a line is always valid
 * UTF-8; a cut message never ends inside a character). With SNAPSYNC_LOG_TIMESTAMPS=1 in the
 * environment lines are prefixed with an ISO-8601 time. When stderr is the journal's stream
 * ($JOURNAL_STREAM names stderr's device and inode, as systemd sets it), the same line (scrubbed,
 * without its time and newline) goes to journald instead as MESSAGE, with PRIORITY 3/4/6/7 for
 * error/warning/info/debug, SYSLOG_IDENTIFIER and, when the thread has one, SNAPSYNC_SESSION; if
 * journald refuses it, it goes to stderr as usual. Thread-safe. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A library's own message (libmicrohttpd's logger callback, for one), as a debug line
 * "<who>: <text>" without its trailing newlines. */
void log_library(const char *who, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Tags the calling thread's later lines with session id (SNAPSYNC_SESSION in the journal); 0
 * clears it. Only the thread's own lines: each thread of a session sets it for itself. */
void log_set_session(int64_t id);

/* The calling thread's session id (0 when none), for a thread that starts helpers of its own. */
int64_t log_get_session(void);

/*
 * Lets one owner of the terminal (the CLI's live progress line) keep a line of its own below the
 * log: before() runs just before each log line is written and after() just after, both under the
 * log's lock, with userdata. NULL hooks remove them. Call from one thread while no other thread
 * logs (before the threads start and after they end); the hooks themselves must not log.
 */
void log_set_line_hooks(void (*before)(void *), void (*after)(void *), void *userdata);

/* Runs fn(userdata) under the log's lock, so what it writes to stderr never lands inside a log
 * line (nor between the hooks). fn must not log. Any thread. */
void log_run_locked(void (*fn)(void *), void *userdata);

/*
 * Installs fn(line, userdata) as the scrubber of every log line: it runs on the formatted line
 * (NUL-terminated, newline included) under the log's lock just before the line is written, and
 * may change it in place as long as it does not grow it (it replaces secrets with "***": see
 * config_scrub_secrets). NULL removes it. Any thread: the swap happens under the log's lock, so
 * once it returns no line uses the old userdata any more and its owner may free it. fn must not
 * log.
 */
void log_set_scrubber(void (*fn)(char *line, void *userdata), void *userdata);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
