/* SPDX-License-Identifier: MIT */
/*
 * libsmbclient loaded at run time (dlopen), made safe for threads: Samba's thread hooks, the
 * locks around every call, and the cutting of a hung server's connections. It knows nothing of
 * destinations, names or temporaries (dest_smb.c does); it turns libsmbclient's calls into
 * calls that return 0 or a negative errno, on one context per thread.
 *
 * Loading: smblib_load() opens libsmbclient.so.0 once per process, takes every function the
 * other calls need by name, and hands Samba pthread-based thread hooks (its talloc stack becomes
 * per thread) when smbc_version() is of SMBLIB_HOOKS_KNOWN_SERIES. Nothing else here may be
 * called before smblib_load() returned 0.
 *
 * Locks (private to smblib.c): creating and freeing a context excludes every other call; a call
 * that takes a path (stat, mkdir, unlink, rename, utimes, open, a listing, statvfs; it may
 * connect) runs alone among path calls; a read, write or close of an open file runs in parallel
 * with other transfers and with a path call. Without the hooks (smblib_parallel() false) every
 * call excludes every other. A call blocks for one SMB round trip at most, bounded by the
 * server's timeout_ms.
 *
 * Threads: a struct smblib_ctx is used by one thread at a time (it may move between threads with
 * a lock in between); contexts of the same server may be used by different threads at once.
 *
 * Errors: the calls return 0 or the negative errno libsmbclient left (-EIO when it left none).
 * A call that fails like a dropped connection (smblib_is_connection_error) marks its context
 * broken: free it and build a new one. A call that times out (-ETIMEDOUT, -ECONNABORTED) marks
 * the server hung and shuts down every TCP connection of this process to it, so that calls
 * waiting on other contexts fail now instead of each waiting out its own timeout; the next call
 * that succeeds clears the mark. The module logs at debug level only (Samba's own diagnostics,
 * connections cut).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "error.h"

/* The Samba release series whose private thread-hook layout smblib.c was checked against. */
#define SMBLIB_HOOKS_KNOWN_SERIES "4.17"

/*
 * One SMB server and the credentials to log in with, shared by its contexts. The caller fills
 * the fields before the first smblib_ctx_new() and changes none of them afterwards; the
 * struct must outlive its contexts (they keep its address for the auth callback). The caller
 * wipes the password when done. `hung` is smblib's: read it with smblib_hung().
 */
struct smblib_server {
    char host[256]; /* name or address, without the port */
    uint16_t port;  /* 0: libsmbclient's default (445, then 139) */
    char workgroup[64];
    char username[256];
    char password[256]; /* secret: never logged */
    bool guest;         /* empty user and password: anonymous, which servers map to guest */
    int timeout_ms;     /* of each call */
    atomic_bool hung;   /* a call timed out and no call has succeeded since */
};

/* One libsmbclient context of a server, with its connections (opaque). */
struct smblib_ctx;

/* A file open on a context (libsmbclient's SMBCFILE, opaque). */
struct smblib_file;

/*
 * Loads libsmbclient once per process (later calls return the first one's answer) and installs
 * the thread hooks when it can. Returns 0, or -ENOENT with err set ("cannot load libsmbclient
 * (install the libsmbclient package): ...", or a function it lacks). Any thread.
 */
int smblib_load(struct error *err);

/*
 * True when the thread hooks are in place and Samba uses them, so that transfers run in
 * parallel. When false, ret_why (if not NULL) gets why, for the log: a borrowed static string.
 * After smblib_load(); any thread.
 */
bool smblib_parallel(const char **ret_why);

/*
 * True when `version`, as libsmbclient's smbc_version() reports it ("4.17.12-Debian"), is a
 * release of SMBLIB_HOOKS_KNOWN_SERIES: "4.17." followed by a patch number, then the end or a
 * vendor suffix not starting with a digit. Any other version (4.18, 5.0, "4.170.1", "", NULL) is
 * not: the layout of struct smb_thread_functions is Samba's own, not a published interface, so
 * smblib.c then holds its lock exclusively around every call instead of installing the hooks.
 * Pure; any thread.
 */
bool smblib_hooks_version_known(const char *version);

/*
 * Creates a context for srv (SMB2_02..SMB3, encryption when the server asks, no Kerberos, no
 * anonymous fallback when credentials are set, srv->timeout_ms per call); it connects on its
 * first call. *ret is the caller's, freed with smblib_ctx_free(). Returns 0, -ENOMEM, or the
 * negative errno of a failed initialisation, with err set. Any thread.
 */
int smblib_ctx_new(struct smblib_server *srv, struct smblib_ctx **ret, struct error *err);

/* Closes the context's files and connections and frees it. NULL is accepted. Any thread. */
void smblib_ctx_free(struct smblib_ctx *c);

/* True when a call on c failed like a dropped connection (or smblib_ctx_set_broken was called):
 * it must be freed and rebuilt before the next file. True for NULL. */
bool smblib_ctx_broken(const struct smblib_ctx *c);

/* Marks c broken (its connection is not to be trusted: the server hangs). NULL is accepted. */
void smblib_ctx_set_broken(struct smblib_ctx *c);

/* True when a call to srv timed out and none has succeeded since. Any thread. */
bool smblib_hung(const struct smblib_server *srv);

/*
 * Marks srv hung and shuts down every TCP connection of this process to it (found by peer
 * address among our descriptors, which stay open: libsmbclient owns them), so that a call
 * waiting on one fails now. `why` goes into the debug log. Any thread.
 */
void smblib_interrupt(struct smblib_server *srv, const char *why);

/* True when the positive errno e is how a dropped or unreachable connection fails. Pure. */
bool smblib_is_connection_error(int e);

/*
 * Calls that take a URL ("smb://host/share/path", percent-encoded by the caller). Each returns 0
 * or a negative errno (see the top). smblib_rename replaces an existing `to` (libsmbclient
 * unlinks it): callers that must not overwrite check first. smblib_utimes sets the access and
 * modification time to mtime_ns (microseconds on the wire). smblib_open's *ret (written only on
 * success) is closed with smblib_close on the same context.
 */
int smblib_stat(struct smblib_ctx *c, const char *url, struct stat *st);
int smblib_mkdir(struct smblib_ctx *c, const char *url);
int smblib_unlink(struct smblib_ctx *c, const char *url);
int smblib_rename(struct smblib_ctx *c, const char *from, const char *to);
int smblib_utimes(struct smblib_ctx *c, const char *url, int64_t mtime_ns);
int smblib_open(struct smblib_ctx *c, const char *url, int flags, struct smblib_file **ret);

/* Transfers on an open file; *ret (written only on success) is the count of bytes moved. */
int smblib_close(struct smblib_ctx *c, struct smblib_file *fh);
int smblib_write(struct smblib_ctx *c, struct smblib_file *fh, const void *buf, size_t len,
                 size_t *ret);
int smblib_read(struct smblib_ctx *c, struct smblib_file *fh, void *buf, size_t len, size_t *ret);

/*
 * Free space of the share or folder at url, as libsmbclient reports it (bytes per sector in
 * f_bsize, sectors per allocation unit in f_frsize). Returns 0 or -EIO; a failure does not mark
 * the context broken (the answer is informative only).
 */
int smblib_statvfs(struct smblib_ctx *c, const char *url, struct statvfs *ret);

/*
 * Lists the regular files of the folder at dir_url, calling fn(arg, c, name) for each until it
 * returns false. The listing holds the path lock, so fn may call no smblib function but
 * smblib_list_stat(). A folder that cannot be opened is listed as an empty one.
 */
void smblib_list(struct smblib_ctx *c, const char *dir_url,
                 bool (*fn)(void *arg, struct smblib_ctx *c, const char *name), void *arg);

/*
 * Lists the regular files and the folders (not "." and "..") of the folder at dir_url, calling
 * fn(arg, name, is_dir) for each until it returns false. The listing holds the path lock, so fn
 * may call no smblib function. Returns 0, or a negative errno when the folder cannot be opened.
 */
int smblib_list_entries(struct smblib_ctx *c, const char *dir_url,
                        bool (*fn)(void *arg, const char *name, bool is_dir), void *arg);

/* stat of url from within a smblib_list() callback: 0 or -EIO; a failure does not mark the
 * context broken. */
int smblib_list_stat(struct smblib_ctx *c, const char *url, struct stat *st);
