/* SPDX-License-Identifier: MIT */
/*
 * The human side of an error: functions return 0 or a negative errno, and fill a caller-provided
 * struct error with the detail, only on failure. Nothing is allocated on the error path.
 */
#pragma once

#include <stdarg.h>

#define ERROR_MSG_MAX 512

struct error {
    int code;                /* the negative errno the function returned */
    char msg[ERROR_MSG_MAX]; /* "cannot open 'DCIM/IMG_0001.JPG': Input/output error" */
};

/* Formats the message into err (if not NULL) and returns code (a negative errno), so callers can
 * write `return error_set(err, -EIO, "...", ...)`. Any thread. */
int error_set(struct error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like error_set, appending ": <strerror(-code)>". */
int error_set_errno(struct error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with "<prefix>: ". Returns err->code. */
int error_prefix(struct error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears err (code 0, empty message). NULL-safe. */
void error_clear(struct error *err);
