/* SPDX-License-Identifier: MIT */
/*
 * Error detail buffers. Everything is formatted into the fixed buffer in struct error; messages
 * longer than ERROR_MSG_MAX are truncated, never allocated.
 */
#include "error.h"

#include <stdio.h>
#include <string.h>

int error_set(struct error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int error_set_errno(struct error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof(err->msg))
            snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(-code));
        err->code = code;
    }
    return code;
}

int error_prefix(struct error *err, const char *fmt, ...)
{
    if (!err)
        return 0;
    char prefix[ERROR_MSG_MAX];
    char old[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
    return err->code;
}

void error_clear(struct error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
