/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for smblib.c's pure pieces: the gate that installs Samba's private thread hooks
 * only on a libsmbclient of the series their layout was checked against. The installed library
 * (Debian 12's) must pass it; anything else must not.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "smblib.h"

static void test_installed_version_is_known(void **state)
{
    (void)state;
    void *h = dlopen("libsmbclient.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fail_msg("libsmbclient is not installed (scripts/deps.sh installs it): %s", dlerror());
    const char *(*version)(void) = NULL;
    *(void **)&version = dlsym(h, "smbc_version");
    assert_non_null(version);
    const char *v = version();
    if (!smblib_hooks_version_known(v))
        fail_msg("the installed libsmbclient %s is refused: check the thread-hook layout "
                 "(src/smblib.c) against it and update SMBLIB_HOOKS_KNOWN_SERIES",
                 v);
    dlclose(h);
}

static void test_versions(void **state)
{
    (void)state;
    static const char *const known[] = {"4.17.12-Debian", "4.17.0",         "4.17.12",
                                        "4.17.2+dfsg",    "4.17.12-Ubuntu", "4.17.99~rc1"};
    static const char *const unknown[] = {
        "4.18.0", "4.16.11-Debian", "4.19.5-Debian", "5.17.0", "4.170.1", "4.17",     "4.17.",
        "4.17.x", "14.17.1",        " 4.17.1",       "4.1.17", "",        "4.17.12a", "3.6.25"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (!smblib_hooks_version_known(known[i]))
            fail_msg("'%s' refused", known[i]);
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        if (smblib_hooks_version_known(unknown[i]))
            fail_msg("'%s' accepted", unknown[i]);
    assert_false(smblib_hooks_version_known(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_installed_version_is_known),
        cmocka_unit_test(test_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
