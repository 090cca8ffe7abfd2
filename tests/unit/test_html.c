/* SPDX-License-Identifier: MIT */
/* Unit tests for html.c: the five entities, every other byte as it is, NULL writes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "html.h"

/* html_escape(s) into a new string (the caller frees it). */
static char *escaped(const char *s)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    html_escape(f, s);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void test_entity(void **state)
{
    (void)state;
    assert_string_equal(html_entity('&'), "&amp;");
    assert_string_equal(html_entity('<'), "&lt;");
    assert_string_equal(html_entity('>'), "&gt;");
    assert_string_equal(html_entity('"'), "&quot;");
    assert_string_equal(html_entity('\''), "&#39;");
    for (int c = 1; c < 256; c++)
        if (!strchr("&<>\"'", c))
            assert_null(html_entity((char)c));
}

static void test_escape(void **state)
{
    (void)state;
    char *s = escaped("<a href=\"x\">Tom's & \xc3\xa9\x01</a>");
    assert_string_equal(s, "&lt;a href=&quot;x&quot;&gt;Tom&#39;s &amp; \xc3\xa9\x01&lt;/a&gt;");
    free(s);
    s = escaped(NULL);
    assert_string_equal(s, "");
    free(s);
    s = escaped("");
    assert_string_equal(s, "");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entity),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
