/* SPDX-License-Identifier: MIT */
/*
 * Micro-benchmark of MD5 over 1, 2, 4 and 8 concurrent streams in one thread: OpenSSL's MD5
 * (one stream after the other, as the hasher does today) against md5mb's kinds (src/md5mb.h:
 * the streams in SIMD lanes). Each stream is fed 1 MiB chunks, as the pipeline's workers read
 * them, from a buffer that stays in cache (the pipeline hashes a chunk just read). Prints, per
 * kind and stream count, the aggregate MB/s and the CPU seconds per GB (10^9 bytes) of the
 * process, medians of interleaved rounds.
 *
 *   build/md5mb_bench [MiB per stream and round, default 64] [rounds, default 5]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "md5mb.h"

#define CHUNK (1u << 20)
#define MAX_STREAMS 8

static const unsigned stream_counts[] = {1, 2, 4, 8};
#define N_COUNTS (sizeof(stream_counts) / sizeof(stream_counts[0]))

/* index 0 stands for OpenSSL (its MD5MB_AUTO is not used); then the md5mb kinds */
static const enum md5mb_kind kinds[] = {MD5MB_AUTO, MD5MB_SCALAR, MD5MB_SSE2,
                                        MD5MB_AVX2, MD5MB_AVX512, MD5MB_NEON};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

static double now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned char sink; /* keeps the digests alive */

/* Hashes `streams` streams of `chunks` chunks each; returns the CPU seconds (and *wall). */
static double run_openssl(uint8_t *const *buf, unsigned streams, unsigned chunks, double *wall)
{
    EVP_MD_CTX *ctx[MAX_STREAMS];
    for (unsigned s = 0; s < streams; s++) {
        ctx[s] = EVP_MD_CTX_new();
        if (!ctx[s] || EVP_DigestInit_ex(ctx[s], EVP_md5(), NULL) != 1)
            abort();
    }
    double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    for (unsigned i = 0; i < chunks; i++)
        for (unsigned s = 0; s < streams; s++)
            if (EVP_DigestUpdate(ctx[s], buf[s], CHUNK) != 1)
                abort();
    for (unsigned s = 0; s < streams; s++) {
        unsigned char d[16];
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(ctx[s], d, &n) != 1)
            abort();
        sink ^= d[0];
        EVP_MD_CTX_free(ctx[s]);
    }
    *wall = now(CLOCK_MONOTONIC) - w0;
    return now(CLOCK_PROCESS_CPUTIME_ID) - c0;
}

/* The streams in the lanes of as few md5mb of kind as hold them, stepped together. */
static double run_md5mb(enum md5mb_kind kind, uint8_t *const *buf, unsigned streams,
                        unsigned chunks, double *wall)
{
    struct md5mb *m[MAX_STREAMS] = {0};
    if (md5mb_new(&m[0], kind, NULL) < 0)
        abort();
    unsigned lanes = md5mb_lanes(m[0]), groups = (streams + lanes - 1) / lanes;
    for (unsigned g = 1; g < groups; g++)
        if (md5mb_new(&m[g], kind, NULL) < 0)
            abort();
    double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    for (unsigned i = 0; i < chunks; i++) {
        for (unsigned s = 0; s < streams; s++)
            md5mb_feed(m[s / lanes], s % lanes, buf[s], CHUNK);
        for (unsigned g = 0; g < groups; g++)
            md5mb_run(m[g]);
    }
    for (unsigned s = 0; s < streams; s++) {
        uint8_t d[16];
        md5mb_final(m[s / lanes], s % lanes, d);
        sink ^= d[0];
    }
    *wall = now(CLOCK_MONOTONIC) - w0;
    for (unsigned g = 0; g < groups; g++)
        md5mb_free(m[g]);
    return now(CLOCK_PROCESS_CPUTIME_ID) - c0;
}

int main(int argc, char **argv)
{
    unsigned mib = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 64;
    unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 5;
    if (mib == 0 || mib > 4096 || rounds == 0 || rounds > 99) {
        fprintf(stderr, "usage: %s [MiB per stream 1..4096] [rounds 1..99]\n", argv[0]);
        return 2;
    }
    uint8_t *buf[MAX_STREAMS];
    for (unsigned s = 0; s < MAX_STREAMS; s++) {
        buf[s] = malloc(CHUNK);
        if (!buf[s])
            return 1;
        for (size_t i = 0; i < CHUNK; i++)
            buf[s][i] = (uint8_t)(i * 131 + s * 7 + (i >> 11));
    }
    /* cpu[k][c][r], wall[k][c][r]: kind k (0 = OpenSSL), stream count c, round r */
    static double cpu[N_KINDS][N_COUNTS][99], wall[N_KINDS][N_COUNTS][99];
    for (unsigned r = 0; r < rounds; r++)
        for (unsigned c = 0; c < N_COUNTS; c++)
            for (unsigned k = 0; k < N_KINDS; k++) {
                /* each round starts one kind further along, so drift spreads over all kinds */
                unsigned kk = (k + r) % N_KINDS;
                if (kk > 0 && !md5mb_supported(kinds[kk]))
                    continue;
                cpu[kk][c][r] =
                    kk == 0 ? run_openssl(buf, stream_counts[c], mib, &wall[kk][c][r])
                            : run_md5mb(kinds[kk], buf, stream_counts[c], mib, &wall[kk][c][r]);
            }
    printf("| MD5 | lanes | streams | aggregate MB/s | CPU s per GB | x OpenSSL's CPU |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    double base[N_COUNTS] = {0};
    for (unsigned k = 0; k < N_KINDS; k++) {
        if (k > 0 && !md5mb_supported(kinds[k]))
            continue;
        unsigned lanes = 1;
        if (k > 0) {
            struct md5mb *m = NULL;
            if (md5mb_new(&m, kinds[k], NULL) == 0)
                lanes = md5mb_lanes(m);
            md5mb_free(m);
        }
        for (unsigned c = 0; c < N_COUNTS; c++) {
            qsort(cpu[k][c], rounds, sizeof(double), cmp_double);
            qsort(wall[k][c], rounds, sizeof(double), cmp_double);
            double bytes = (double)stream_counts[c] * mib * CHUNK;
            double cpu_gb = cpu[k][c][rounds / 2] / (bytes / 1e9);
            if (k == 0)
                base[c] = cpu_gb;
            printf("| %s | %u | %u | %.0f | %.3f | %.2f |\n",
                   k == 0 ? "OpenSSL" : md5mb_kind_name(kinds[k]), lanes, stream_counts[c],
                   bytes / 1e6 / wall[k][c][rounds / 2], cpu_gb, cpu_gb / base[c]);
        }
    }
    for (unsigned s = 0; s < MAX_STREAMS; s++)
        free(buf[s]);
    return sink == 0x5a ? 0 : 0;
}
