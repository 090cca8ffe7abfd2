/* SPDX-License-Identifier: MIT */
/* Reading a small file whole (fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
    struct stat st;
    size_t cap = 4096;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
    char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (;;) {
        if (len == cap) { /* larger than it said: grow up to one byte past max */
            if (cap > max) {
                free(buf);
                return -EFBIG;
            }
            cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            char *bigger = realloc(buf, cap + 1);
            if (!bigger) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            free(buf);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > max) {
        free(buf);
        return -EFBIG;
    }
    buf[len] = '\0';
    *ret_buf = buf;
    *ret_len = len;
    return 0;
}
