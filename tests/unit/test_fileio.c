/* SPDX-License-Identifier: MIT */
/* Unit tests for fileio.c: a file read whole, the ceiling, a source whose size is unknown. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "fileio.h"

static int file_with(size_t n, char c)
{
    int fd = memfd_create("fileio", MFD_CLOEXEC);
    assert_true(fd >= 0);
    char *data = malloc(n ? n : 1);
    assert_non_null(data);
    memset(data, c, n);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    free(data);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void test_whole_file_and_ceiling(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 4095, 4096, 4097, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        int fd = file_with(sizes[i], 'x');
        char *buf = NULL;
        size_t len = 99;
        assert_int_equal(fileio_read_fd(fd, 100000, &buf, &len), 0);
        assert_int_equal(len, sizes[i]);
        assert_int_equal(buf[len], '\0');
        assert_true(len == 0 || (buf[0] == 'x' && buf[len - 1] == 'x'));
        free(buf);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        buf = NULL;
        assert_int_equal(fileio_read_fd(fd, sizes[i] ? sizes[i] - 1 : 0, &buf, &len),
                         sizes[i] ? -EFBIG : 0);
        free(buf);
        close(fd);
    }
}

/* a pipe has no size: the buffer grows, up to the ceiling */
static void test_unknown_size(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 20000; n += 5000) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        char chunk[5000];
        memset(chunk, 'y', sizeof(chunk));
        for (size_t off = 0; off < n; off += sizeof(chunk))
            assert_int_equal(write(p[1], chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
        close(p[1]);
        char *buf = NULL;
        size_t len = 0;
        int r = fileio_read_fd(p[0], 12000, &buf, &len);
        if (n <= 12000) {
            assert_int_equal(r, 0);
            assert_int_equal(len, n);
        } else {
            assert_int_equal(r, -EFBIG);
        }
        free(buf);
        close(p[0]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_file_and_ceiling),
        cmocka_unit_test(test_unknown_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
