/* SPDX-License-Identifier: MIT */
/*
 * The worker pipeline of one session: a pool of backup.concurrent_files workers takes the files
 * to back up, reads each one once in chunks, hashes it (MD5 + SHA-1), and tees every chunk to one
 * lane per destination through a small ring of buffers (back-pressure, bounded memory). Each copy
 * is committed and verified by the lane's finisher while the worker reads the next file, and the
 * outcome is recorded in the database.
 *
 * Failures: a copy that fails for a reason of the whole destination marks it down (health.h); the
 * file waits for it and is queued again when it comes back. Other failures are retried after the
 * main pass, backing off (backup.retry_delay, doubled per attempt, backup.max_retries), never by
 * sleeping in a worker. A file that changes while it is read is discarded and retried. When the
 * card goes away or the session is cancelled, in-flight files are abandoned (temporaries
 * removed) and left pending.
 *
 * The session (engine.c) decides what to do; the pipeline does it and counts.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "error.h"
#include "health.h"
#include "scanner.h"

/* Chunk size and buffers per worker: memory is PIPELINE_CHUNK x PIPELINE_CHUNKS x workers. */
#define PIPELINE_CHUNK (1024 * 1024)
#define PIPELINE_CHUNKS 4
#define PIPELINE_WORKERS_MAX 64

/* What the session hands the pipeline; everything is borrowed until pipeline_free. */
struct pipeline_env {
    const struct config *cfg;
    const char *card_root; /* the card's folder */
    dev_t card_dev;        /* its st_dev when the session started: a change means it is gone */
    int64_t card_id;
    int64_t session_id;
    struct dest *const *dests;
    const char *const *dest_ids;
    size_t n_dests; /* 1..DEST_MAX */
    struct health *health;
    const struct scan_list *scan;
    const size_t *partner;  /* of each scan entry, its RAW+JPEG partner or PAIR_NONE (pair.h) */
    const uint64_t *seq;    /* of each scan entry, its {seq} (pair_seq); NULL: its index + 1 */
    const char *card_label; /* {card} (pattern.h); "" none */
    const size_t *todo;     /* indexes into scan->entries, backed up in this order */
    size_t n_todo;
    const atomic_bool *cancel; /* may be NULL */
};

/* Counts of the files the pipeline decided (files_total and bytes_total stay 0). */
struct pipeline_stats {
    struct db_totals totals;
    uint64_t bytes_read;    /* from the card, all attempts */
    uint64_t bytes_skipped; /* of files found complete everywhere when their turn came */
    uint64_t files_waiting; /* waiting for a destination that is down */
    uint64_t files_retrying;
    uint64_t files_partly; /* failed files that were copied to some destinations */
    bool card_gone;
    char current[256];               /* a file being read, "" when none */
    char first_error[ERROR_MSG_MAX]; /* the first file that failed, "" when none */
};

struct pipeline;

/*
 * Starts the workers on env's to-do list. Errors: -ENOMEM, -EAGAIN (no thread), the errors of
 * db_open and dest_conn_new, -ECANCELED when the card is gone. *ret is the caller's
 * (pipeline_free), also when some workers could not start (the others carry on): then err holds
 * why. The caller's thread.
 */
int pipeline_start(const struct pipeline_env *env, struct pipeline **ret, struct error *err);

/* Waits up to seconds (monotonic) for the pipeline to finish; true when it has. Files waiting
 * for a down destination are given up backup.destination_wait seconds after nothing else is
 * left to do (they stay pending there and count as failed). The caller's thread. */
bool pipeline_wait(struct pipeline *p, double seconds);

/* A snapshot of the counts. Any thread. */
void pipeline_stats(struct pipeline *p, struct pipeline_stats *ret);

/* Destination dest is up again: the files waiting for it are queued. Any thread. */
void pipeline_dest_up(struct pipeline *p, size_t dest);

/* Stops the workers (abandoning files in flight if the pipeline has not finished) and frees.
 * NULL-safe. The caller's thread. */
void pipeline_free(struct pipeline *p);
