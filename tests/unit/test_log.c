/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for log.c: which way a line goes (journald when $JOURNAL_STREAM names stderr, stderr
 * otherwise) and what it carries. Each case runs in a forked child whose stderr is a memfd or a
 * socket, so the environment and stderr it changes stay its own. journald itself does not run
 * here: the child's journal writer is the test's, which writes the fields it gets to a memfd
 * the parent reads. The test includes log.c to reach that static writer.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.c"

static int journal_fd = -1; /* the child's record of what it sent to the journal */
static int journal_answer;  /* what the fake writer returns */

/* Records one entry as its fields, one a line, then "--". */
static int fake_sendv(const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++) {
        if (write(journal_fd, iov[i].iov_base, iov[i].iov_len) < 0)
            return -EIO;
        if (write(journal_fd, "\n", 1) < 0)
            return -EIO;
    }
    if (write(journal_fd, "--\n", 3) < 0)
        return -EIO;
    return journal_answer;
}

enum stream { STREAM_NONE, STREAM_MATCHES, STREAM_OTHER };

/* Runs body in a child with stderr on err_fd and $JOURNAL_STREAM as told, and waits for it. */
static void run_child(int err_fd, enum stream stream, void (*body)(void))
{
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(err_fd, STDERR_FILENO) < 0)
            _exit(10);
        struct stat st;
        if (fstat(STDERR_FILENO, &st) < 0)
            _exit(11);
        char js[64];
        snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino + (stream == STREAM_OTHER));
        if (stream == STREAM_NONE)
            unsetenv("JOURNAL_STREAM");
        else
            setenv("JOURNAL_STREAM", js, 1);
        journal_sendv = fake_sendv;
        body();
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* What fd holds from its start, NUL-terminated in buf. */
static const char *contents(int fd, char *buf, size_t size)
{
    ssize_t n = pread(fd, buf, size - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static int new_memfd(const char *name)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static void scrub_secret(char *line, void *userdata)
{
    (void)userdata;
    char *p = strstr(line, "hunter2");
    if (p) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + 7, strlen(p + 7) + 1);
    }
}

static int hook_calls;
static void count_hook(void *userdata)
{
    (void)userdata;
    hook_calls++;
}

static void log_some(void)
{
    log_set_level(LOG_LEVEL_DEBUG);
    log_set_scrubber(scrub_secret, NULL);
    log_set_session(42);
    log_error("cannot open '%s': pw hunter2", "a\nb");
    log_set_session(0);
    log_warning("warned");
    log_info("told");
    log_debug("detail");
    log_set_scrubber(NULL, NULL);
}

static const char journal_of_some[] =
    "MESSAGE=error: cannot open 'a\\x0ab': pw ***\nPRIORITY=3\nSYSLOG_IDENTIFIER=test_log\n"
    "SNAPSYNC_SESSION=42\n--\n"
    "MESSAGE=warning: warned\nPRIORITY=4\nSYSLOG_IDENTIFIER=test_log\n--\n"
    "MESSAGE=info: told\nPRIORITY=6\nSYSLOG_IDENTIFIER=test_log\n--\n"
    "MESSAGE=debug: detail\nPRIORITY=7\nSYSLOG_IDENTIFIER=test_log\n--\n";

static const char stderr_of_some[] = "error: cannot open 'a\\x0ab': pw ***\n"
                                     "warning: warned\n"
                                     "info: told\n"
                                     "debug: detail\n";

/* Runs log_some with stderr on a memfd, the journal answering answer, and checks both. */
static void check_some(enum stream stream, int answer, const char *want_stderr,
                       const char *want_journal)
{
    char buf[4096];
    int err_fd = new_memfd("stderr");
    journal_fd = new_memfd("journal");
    journal_answer = answer;
    run_child(err_fd, stream, log_some);
    assert_string_equal(contents(err_fd, buf, sizeof(buf)), want_stderr);
    assert_string_equal(contents(journal_fd, buf, sizeof(buf)), want_journal);
    close(err_fd);
    close(journal_fd);
}

static void test_journal_stream_file_goes_to_journal(void **state)
{
    (void)state;
    check_some(STREAM_MATCHES, 0, "", journal_of_some);
}

static void hooks_and_timestamps(void)
{
    setenv("SNAPSYNC_LOG_TIMESTAMPS", "1", 1);
    log_set_line_hooks(count_hook, count_hook, NULL);
    log_error("x");
    log_set_line_hooks(NULL, NULL, NULL);
    if (hook_calls != 2)
        _exit(20);
}

static void test_journal_stream_socket_goes_to_journal(void **state)
{
    (void)state;
    char buf[4096];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    journal_fd = new_memfd("journal");
    journal_answer = 0;
    run_child(sv[0], STREAM_MATCHES, hooks_and_timestamps);
    /* the journal stamps its own time: no timestamp in the message */
    assert_string_equal(contents(journal_fd, buf, sizeof(buf)),
                        "MESSAGE=error: x\nPRIORITY=3\nSYSLOG_IDENTIFIER=test_log\n--\n");
    close(sv[0]);
    assert_int_equal(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), 0); /* EOF, nothing written */
    close(sv[1]);
    close(journal_fd);
}

/* stderr redirected away from the journal's stream (a child's 2>file) */
static void test_other_stream_stays_on_stderr(void **state)
{
    (void)state;
    check_some(STREAM_OTHER, 0, stderr_of_some, "");
}

/* byte for byte what it was before the journal */
static void test_no_journal_stream_is_plain_stderr(void **state)
{
    (void)state;
    check_some(STREAM_NONE, 0, stderr_of_some, "");
}

static void test_refused_by_journal_falls_back_to_stderr(void **state)
{
    (void)state;
    check_some(STREAM_MATCHES, -ECONNREFUSED, stderr_of_some, journal_of_some);
}

static void log_names(void)
{
    /* valid UTF-8 (é, €, an emoji) kept; a Latin-1 byte, a stray continuation byte, an overlong
     * '/', a surrogate and a sequence cut short escaped byte by byte */
    log_error(
        "name '%s'",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xb7 \xe9t\xe9 \x80 \xc0\xaf \xed\xa0\x80 \xe2\x82");
    /* a message longer than a line: the cut never splits the 2-byte character */
    char big[3000];
    size_t n = 0;
    big[n++] = 'x';
    while (n + 2 < sizeof(big)) {
        big[n++] = '\xc3';
        big[n++] = '\xa9';
    }
    big[n] = '\0';
    log_error("%s", big);
}

/* every line is valid UTF-8: journalctl shows a line with other bytes only as "[blob data]" */
static void test_names_not_utf8_are_escaped(void **state)
{
    (void)state;
    static char buf[16384];
    int err_fd = new_memfd("stderr");
    run_child(err_fd, STREAM_NONE, log_names);
    const char *out = contents(err_fd, buf, sizeof(buf));
    const char *want = "error: name 'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xb7 \\xe9t\\xe9 \\x80 "
                       "\\xc0\\xaf \\xed\\xa0\\x80 \\xe2\\x82'\n";
    assert_memory_equal(out, want, strlen(want));
    const char *second = out + strlen(want);
    const char *end = strchr(second, '\n');
    assert_non_null(end);
    assert_true(end - second > 2000);
    assert_true(utf8_seq_len((const unsigned char *)second, (size_t)(end - second)) == 1);
    for (const char *q = second + strlen("error: x"); q < end;) {
        size_t k = utf8_seq_len((const unsigned char *)q, (size_t)(end - q));
        assert_int_equal(k, 2); /* only whole é, up to the newline */
        q += k;
    }
    close(err_fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal_stream_file_goes_to_journal),
        cmocka_unit_test(test_journal_stream_socket_goes_to_journal),
        cmocka_unit_test(test_other_stream_stays_on_stderr),
        cmocka_unit_test(test_no_journal_stream_is_plain_stderr),
        cmocka_unit_test(test_refused_by_journal_falls_back_to_stderr),
        cmocka_unit_test(test_names_not_utf8_are_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
