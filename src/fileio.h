/* SPDX-License-Identifier: MIT */
/*
 * Reading a small file whole (a configuration, a sidecar, the ASC MHL chain): one loop for the
 * short reads, EINTR and the ceiling. Pure I/O; nothing logs. Any thread.
 */
#pragma once

#include <stddef.h>

/* Reads fd from its current offset to the end into *ret_buf (malloc'd, the caller's, with a NUL
 * after the *ret_len bytes, so text can be used as a string). Errors: -EFBIG when there are more
 * than max bytes (what was read is discarded), -ENOMEM, read's errno. Works on files that grow
 * or shrink while read: the bytes up to the end seen count. */
int fileio_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len);
