/* SPDX-License-Identifier: MIT */
/*
 * SMB destination (dest_smb.c): the backend is reached only through its ops table `dest_smb_ops`
 * (dest.c). This header is the contract of the pure pieces exposed so unit tests can drive them.
 */
#pragma once

#include <stdbool.h>

/* The Samba release series whose private thread-hook layout dest_smb.c was checked against. */
#define SMB_HOOKS_KNOWN_SERIES "4.17"

/*
 * True when `version`, as libsmbclient's smbc_version() reports it ("4.17.12-Debian"), is a
 * release of SMB_HOOKS_KNOWN_SERIES: "4.17." followed by a patch number, then the end or a vendor
 * suffix not starting with a digit. Any other version (4.18, 5.0, "4.170.1", "", NULL) is not:
 * the layout of struct smb_thread_functions is Samba's own, not a published interface, so
 * dest_smb.c then holds its library lock exclusively around every call instead of installing the
 * hooks. Pure; any thread.
 */
bool smb_hooks_version_known(const char *version);
