/* SPDX-License-Identifier: MIT */
/*
 * ASC MHL v2.0 (the Media Hash List of the American Society of Cinematographers): the history
 * SnapSync keeps in "ascmhl/" at the root of a file destination, so anyone can prove with
 * independent tools that a copy is complete and unchanged (docs/verification.md).
 *
 * A history is a folder of generation files, "NNNN_<root>_<YYYY-MM-DD>_<HHMMSS>Z.mhl", each one
 * document <hashlist xmlns="urn:ASC:MHL:v2.0">, never rewritten, and one chain file
 * "ascmhl_chain.xml" listing every generation with the C4 ID of its bytes. This module makes the
 * bytes (a generation is streamed to a sink, a chain document is built whole) and reads a chain;
 * the destinations put them on the share, atomically (temporary name + rename).
 *
 * XML is written and read with libxml2 (no network, no entities, no DTD). Pure functions and
 * caller-provided sinks; nothing logs. Any thread; a writer belongs to one thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "error.h"

#define MHL_DIR "ascmhl"
#define MHL_CHAIN_NAME "ascmhl_chain.xml"
#define MHL_C4_LEN 90                   /* "c4" + 88 base-58 digits */
#define MHL_NAME_MAX 256                /* a generation's file name, NUL included */
#define MHL_CHAIN_MAX_BYTES (16u << 20) /* a chain file read whole: ~100k generations */
#define MHL_CHAIN_MAX_GENERATIONS 100000u
#define MHL_SEQ_MAX 999999999u /* a generation number */

/* The C4 ID of the SHA-512 digest of some bytes: the digest read as one big-endian number,
 * written in base 58 (alphabet 1-9A-HJ-NP-Za-km-z), left-padded with '1' to 88 digits, after
 * "c4". out holds MHL_C4_LEN + 1 bytes. */
void mhl_c4_from_sha512(const unsigned char digest[64], char out[MHL_C4_LEN + 1]);

/* The C4 ID of len bytes at buf. Returns 0, or -ENOMEM when OpenSSL cannot allocate. */
int mhl_c4(const void *buf, size_t len, char out[MHL_C4_LEN + 1]);

/* The file name of generation seq (1..MHL_SEQ_MAX) of a history whose root folder is named
 * root_name, created at t (written in UTC): "0003_camera-backups_2026-12-03_220948Z.mhl".
 * root_name must be one path component (no '/', not empty, not "." or ".."). Returns 0, -EINVAL
 * or -ENAMETOOLONG (out holds size bytes; MHL_NAME_MAX is always enough for a 200-byte root). */
int mhl_generation_name(unsigned seq, const char *root_name, time_t t, char *out, size_t size);

/* The generation number a file name in ascmhl/ stands for: its leading 4 or more digits, then
 * '_' or ".mhl", and the name ends in ".mhl". Returns it (1..MHL_SEQ_MAX), or 0 when name is no
 * generation file (a temporary, the chain, something else). */
unsigned mhl_generation_seq(const char *name);

/* Where the bytes of a document go. write returns 0 or a negative errno, which ends the writer. */
struct mhl_sink {
    int (*write)(void *userdata, const void *buf, size_t len);
    void *userdata;
};

enum mhl_process { MHL_PROCESS_IN_PLACE, MHL_PROCESS_TRANSFER };
enum mhl_action { MHL_ACTION_ORIGINAL, MHL_ACTION_VERIFIED, MHL_ACTION_FAILED };

struct mhl_creator {
    time_t created;           /* creationdate */
    const char *hostname;     /* not NULL */
    const char *tool_version; /* "0.1.0"; the tool's name is "SnapSync" */
    const char *comment;      /* optional (NULL): e.g. "session 12, card EOS_DIGITAL" */
    enum mhl_process process;
    const char *const *ignore; /* patterns (gitignore-like, as the reference tool reads them);
                                * "ascmhl" and "ascmhl/" are always written first */
    size_t n_ignore;
};

/* One file of a generation. Paths are relative to the history's root, '/'-separated, valid
 * UTF-8, without "." or ".." components (checked: -EINVAL). Hashes are lower-case hex, or NULL
 * when not recorded; at least one of them is given. */
struct mhl_entry {
    const char *path;
    uint64_t size;
    int64_t mtime;      /* lastmodificationdate, seconds since the epoch (written in UTC) */
    const char *md5;    /* 32 hex digits */
    const char *sha1;   /* 40 */
    const char *xxh128; /* 32 */
    enum mhl_action action;
    time_t hashdate;
};

struct mhl_writer;

/* Starts a generation document: the XML declaration, <hashlist>, creatorinfo and processinfo go
 * to sink at once. *ret is the caller's, freed by mhl_writer_end or mhl_writer_free. Errors:
 * -EINVAL (a NULL field, an ignore pattern that is not UTF-8), -ENOMEM, the sink's. */
int mhl_writer_begin(struct mhl_writer **ret, const struct mhl_creator *c, struct mhl_sink sink,
                     struct error *err);

/* Appends one <hash>. Memory stays bounded whatever the number of entries (each is written to the
 * sink as it comes). Errors: -EINVAL (entry checks above), the sink's; after an error the writer
 * only accepts mhl_writer_free. */
int mhl_writer_add(struct mhl_writer *w, const struct mhl_entry *e, struct error *err);

/* Ends the document, flushes it to the sink, fills c4_out (MHL_C4_LEN + 1 bytes) with the C4 ID
 * of every byte written, and frees w (also on failure). A generation with no entry is valid
 * (hashes are optional). Errors: the sink's, -ENOMEM. */
int mhl_writer_end(struct mhl_writer *w, char c4_out[MHL_C4_LEN + 1], struct error *err);

/* Frees an unfinished writer (nothing more reaches the sink). NULL-safe. */
void mhl_writer_free(struct mhl_writer *w);

struct mhl_chain_gen {
    unsigned seq;
    char name[MHL_NAME_MAX];
    char c4[MHL_C4_LEN + 1];
};

struct mhl_chain {
    struct mhl_chain_gen *gens; /* in sequence order */
    size_t n;
};

/* Parses the chain document of len bytes at buf (at most MHL_CHAIN_MAX_BYTES; untrusted: it was
 * on a share). Fills *ret (the caller's; free with mhl_chain_free) with every <hashlist>, sorted
 * by sequencenr. Errors: -EBADMSG (not XML, not an <ascmhldirectory> of urn:ASC:MHL:DIRECTORY:v2.0,
 * a generation without a valid sequencenr, name or c4, a sequence number twice), -EFBIG (too
 * big, too many generations), -ENOMEM; err says what and where. */
int mhl_chain_parse(const char *buf, size_t len, struct mhl_chain *ret, struct error *err);

/* Appends generation g to c (its seq must be above every one in c: -EINVAL). -ENOMEM. */
int mhl_chain_append(struct mhl_chain *c, const struct mhl_chain_gen *g);

/* The highest sequence number in c, 0 when empty. */
unsigned mhl_chain_last_seq(const struct mhl_chain *c);

/* Writes c as a whole chain document to sink. Errors: the sink's, -ENOMEM. */
int mhl_chain_write(const struct mhl_chain *c, struct mhl_sink sink, struct error *err);

/* Frees what c holds and empties it. NULL-safe. */
void mhl_chain_free(struct mhl_chain *c);
