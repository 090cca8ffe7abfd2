/* SPDX-License-Identifier: MIT */
/*
 * Multi-buffer MD5. The compression function is written once (md5mb_kernel.inc) over a vector
 * of lanes and instantiated per instruction set: portable C (1 lane), SSE2 (4 lanes), AVX2 and
 * AVX-512VL (8 lanes, 256-bit vectors; AVX-512VL adds a rotate and three-input logic, which
 * shortens each step's dependency chain) on x86-64 through function target attributes, so the
 * file builds without -mavx2 and the CPU is asked at run time; NEON (4 lanes) on arm64, where it
 * is part of the base architecture.
 *
 * The chaining values live transposed, word j of lane l at st[j * MD5MB_LANES_MAX + l], so the
 * kernels load a word of every lane with one vector load. md5mb_run steps all lanes that have a
 * whole block; a lane without one is given a block of zeros and its state is put back after.
 * Tails under 64 bytes wait in the lane's buffer for its next bytes or its md5mb_final, which
 * pads them with the portable kernel.
 */
#include "md5mb.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define MD5MB_HAVE_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define MD5MB_HAVE_NEON 1
#endif

typedef void kernel_fn(uint32_t *st, size_t stride, const uint8_t *const *in, const size_t *adv,
                       size_t nblocks);

/* The portable kernel: one lane, plain 32-bit words. */
#define MB_NAME kernel_scalar
#define MB_ATTR
#define MB_LANES 1
#define MB_V uint32_t
#define MB_SET1(k) ((uint32_t)(k))
#define MB_ADD(x, y) ((uint32_t)((x) + (y)))
#define MB_F(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define MB_G(b, c, d) ((c) ^ ((d) & ((b) ^ (c))))
#define MB_H(b, c, d) ((b) ^ (c) ^ (d))
#define MB_I(b, c, d) ((c) ^ ((b) | ~(d)))
#define MB_ROTL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
#define MB_LOAD(p) (*(p))
#define MB_STORE(p, v) (*(p) = (v))
#define MB_OPAQUE(v) __asm__("" : "+r"(v))
#define MB_GSPLIT_AND(b, d) ((b) & (d))
#define MB_GSPLIT_ANDNOT(c, d) ((c) & ~(d))
#define MB_LOADW(w, in)                                                                            \
    for (int i_ = 0; i_ < 16; i_++) {                                                              \
        const uint8_t *q_ = in[0] + 4 * i_;                                                        \
        w[i_] = (uint32_t)q_[0] | (uint32_t)q_[1] << 8 | (uint32_t)q_[2] << 16 |                   \
                (uint32_t)q_[3] << 24;                                                             \
    }
#include "md5mb_kernel.inc"

#ifdef MD5MB_HAVE_X86
/* SSE2: 4 lanes. No rotate and no NOT: two shifts and an OR, an XOR with all ones. */
#define MB_NAME kernel_sse2
#define MB_ATTR
#define MB_LANES 4
#define MB_V __m128i
#define MB_SET1(k) _mm_set1_epi32((int)(k))
#define MB_ADD(x, y) _mm_add_epi32(x, y)
#define MB_F(b, c, d) _mm_xor_si128(d, _mm_and_si128(b, _mm_xor_si128(c, d)))
#define MB_G(b, c, d) _mm_xor_si128(c, _mm_and_si128(d, _mm_xor_si128(b, c)))
#define MB_H(b, c, d) _mm_xor_si128(b, _mm_xor_si128(c, d))
#define MB_I(b, c, d) _mm_xor_si128(c, _mm_or_si128(b, _mm_xor_si128(d, _mm_set1_epi32(-1))))
#define MB_ROTL(x, s) _mm_or_si128(_mm_slli_epi32(x, s), _mm_srli_epi32(x, 32 - (s)))
#define MB_GSPLIT_AND(b, d) _mm_and_si128(b, d)
#define MB_GSPLIT_ANDNOT(c, d) _mm_andnot_si128(d, c)
#define MB_OPAQUE(v) __asm__("" : "+x"(v))
#define MB_LOAD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define MB_STORE(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
/* four 16-byte rows (one per lane) transposed into four words of every lane, four times */
#define MB_LOADW(w, in)                                                                            \
    for (int q_ = 0; q_ < 4; q_++) {                                                               \
        __m128i x0 = MB_LOAD(in[0] + 16 * q_), x1 = MB_LOAD(in[1] + 16 * q_);                      \
        __m128i x2 = MB_LOAD(in[2] + 16 * q_), x3 = MB_LOAD(in[3] + 16 * q_);                      \
        __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpacklo_epi32(x2, x3);                  \
        __m128i t2 = _mm_unpackhi_epi32(x0, x1), t3 = _mm_unpackhi_epi32(x2, x3);                  \
        w[4 * q_] = _mm_unpacklo_epi64(t0, t1);                                                    \
        w[4 * q_ + 1] = _mm_unpackhi_epi64(t0, t1);                                                \
        w[4 * q_ + 2] = _mm_unpacklo_epi64(t2, t3);                                                \
        w[4 * q_ + 3] = _mm_unpackhi_epi64(t2, t3);                                                \
    }
#include "md5mb_kernel.inc"

/* 8 lanes in 256-bit vectors: eight 32-byte rows transposed into eight words, twice. */
#define MD5MB_LOADW256(w, in)                                                                      \
    for (int h_ = 0; h_ < 2; h_++) {                                                               \
        __m256i x_[8], t_[8], u_[8];                                                               \
        for (int l_ = 0; l_ < 8; l_++)                                                             \
            x_[l_] = _mm256_loadu_si256((const __m256i *)(const void *)(in[l_] + 32 * h_));        \
        for (int l_ = 0; l_ < 8; l_ += 2) {                                                        \
            t_[l_] = _mm256_unpacklo_epi32(x_[l_], x_[l_ + 1]);                                    \
            t_[l_ + 1] = _mm256_unpackhi_epi32(x_[l_], x_[l_ + 1]);                                \
        }                                                                                          \
        for (int l_ = 0; l_ < 8; l_ += 4) {                                                        \
            u_[l_] = _mm256_unpacklo_epi64(t_[l_], t_[l_ + 2]);                                    \
            u_[l_ + 1] = _mm256_unpackhi_epi64(t_[l_], t_[l_ + 2]);                                \
            u_[l_ + 2] = _mm256_unpacklo_epi64(t_[l_ + 1], t_[l_ + 3]);                            \
            u_[l_ + 3] = _mm256_unpackhi_epi64(t_[l_ + 1], t_[l_ + 3]);                            \
        }                                                                                          \
        for (int j_ = 0; j_ < 4; j_++) {                                                           \
            w[8 * h_ + j_] = _mm256_permute2x128_si256(u_[j_], u_[j_ + 4], 0x20);                  \
            w[8 * h_ + j_ + 4] = _mm256_permute2x128_si256(u_[j_], u_[j_ + 4], 0x31);              \
        }                                                                                          \
    }

#define MB_NAME kernel_avx2
#define MB_ATTR __attribute__((target("avx2")))
#define MB_LANES 8
#define MB_V __m256i
#define MB_SET1(k) _mm256_set1_epi32((int)(k))
#define MB_ADD(x, y) _mm256_add_epi32(x, y)
#define MB_F(b, c, d) _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
#define MB_G(b, c, d) _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)))
#define MB_H(b, c, d) _mm256_xor_si256(b, _mm256_xor_si256(c, d))
#define MB_I(b, c, d)                                                                              \
    _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, _mm256_set1_epi32(-1))))
#define MB_ROTL(x, s) _mm256_or_si256(_mm256_slli_epi32(x, s), _mm256_srli_epi32(x, 32 - (s)))
#define MB_GSPLIT_AND(b, d) _mm256_and_si256(b, d)
#define MB_GSPLIT_ANDNOT(c, d) _mm256_andnot_si256(d, c)
#define MB_OPAQUE(v) __asm__("" : "+x"(v))
#define MB_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define MB_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define MB_LOADW(w, in) MD5MB_LOADW256(w, in)
#include "md5mb_kernel.inc"

/* AVX-512VL on 256-bit vectors: each round function is one vpternlogd (the immediate is its
 * truth table over b = 0xf0, c = 0xcc, d = 0xaa) and the rotation one vprold. */
#define MB_NAME kernel_avx512
#define MB_ATTR __attribute__((target("avx2,avx512f,avx512vl")))
#define MB_LANES 8
#define MB_V __m256i
#define MB_SET1(k) _mm256_set1_epi32((int)(k))
#define MB_ADD(x, y) _mm256_add_epi32(x, y)
#define MB_F(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xca)
#define MB_G(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xe4)
#define MB_H(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x96)
#define MB_I(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x39)
#define MB_ROTL(x, s) _mm256_rol_epi32(x, s)
#define MB_OPAQUE(v) __asm__("" : "+v"(v))
#define MB_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define MB_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define MB_LOADW(w, in) MD5MB_LOADW256(w, in)
#include "md5mb_kernel.inc"
#endif

#ifdef MD5MB_HAVE_NEON
/* NEON: 4 lanes. BSL is F and G in one instruction, ORN is I's b | ~d, SRI inserts the rotation's
 * right shift into the left one. */
#define MB_NAME kernel_neon
#define MB_ATTR
#define MB_LANES 4
#define MB_V uint32x4_t
#define MB_SET1(k) vdupq_n_u32((uint32_t)(k))
#define MB_ADD(x, y) vaddq_u32(x, y)
#define MB_F(b, c, d) vbslq_u32(b, c, d)
#define MB_G(b, c, d) vbslq_u32(d, b, c)
#define MB_H(b, c, d) veorq_u32(b, veorq_u32(c, d))
#define MB_I(b, c, d) veorq_u32(c, vornq_u32(b, d))
#define MB_ROTL(x, s) vsriq_n_u32(vshlq_n_u32(x, s), x, 32 - (s))
#define MB_OPAQUE(v) __asm__("" : "+w"(v))
#define MB_LOAD(p) vld1q_u32(p)
#define MB_STORE(p, v) vst1q_u32(p, v)
#define MB_LOADW(w, in)                                                                            \
    for (int q_ = 0; q_ < 4; q_++) {                                                               \
        uint32x4x2_t p01 = vtrnq_u32(vreinterpretq_u32_u8(vld1q_u8(in[0] + 16 * q_)),              \
                                     vreinterpretq_u32_u8(vld1q_u8(in[1] + 16 * q_)));             \
        uint32x4x2_t p23 = vtrnq_u32(vreinterpretq_u32_u8(vld1q_u8(in[2] + 16 * q_)),              \
                                     vreinterpretq_u32_u8(vld1q_u8(in[3] + 16 * q_)));             \
        w[4 * q_] = vcombine_u32(vget_low_u32(p01.val[0]), vget_low_u32(p23.val[0]));              \
        w[4 * q_ + 1] = vcombine_u32(vget_low_u32(p01.val[1]), vget_low_u32(p23.val[1]));          \
        w[4 * q_ + 2] = vcombine_u32(vget_high_u32(p01.val[0]), vget_high_u32(p23.val[0]));        \
        w[4 * q_ + 3] = vcombine_u32(vget_high_u32(p01.val[1]), vget_high_u32(p23.val[1]));        \
    }
#include "md5mb_kernel.inc"
#endif

struct lane {
    const uint8_t *data; /* fed, not yet consumed */
    size_t len;
    bool fed;
    uint64_t total; /* bytes fed since the reset */
    size_t buffered;
    uint8_t buf[64];
};

struct md5mb {
    enum md5mb_kind kind;
    unsigned lanes;
    kernel_fn *kernel;
    uint32_t st[4 * MD5MB_LANES_MAX]; /* word j of lane l at st[j * MD5MB_LANES_MAX + l] */
    struct lane lane[MD5MB_LANES_MAX];
};

static const uint8_t zero_block[64];

bool md5mb_supported(enum md5mb_kind kind)
{
    switch (kind) {
    case MD5MB_AUTO:
    case MD5MB_SCALAR:
        return true;
#ifdef MD5MB_HAVE_X86
    case MD5MB_SSE2:
        return true;
    case MD5MB_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case MD5MB_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512vl");
#endif
#ifdef MD5MB_HAVE_NEON
    case MD5MB_NEON:
        return true;
#endif
    default:
        return false;
    }
}

enum md5mb_kind md5mb_best(void)
{
    static const enum md5mb_kind order[] = {MD5MB_AVX512, MD5MB_AVX2, MD5MB_SSE2, MD5MB_NEON};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (md5mb_supported(order[i]))
            return order[i];
    return MD5MB_SCALAR;
}

const char *md5mb_kind_name(enum md5mb_kind kind)
{
    switch (kind) {
    case MD5MB_AUTO:
        return "auto";
    case MD5MB_SCALAR:
        return "scalar";
    case MD5MB_SSE2:
        return "sse2";
    case MD5MB_AVX2:
        return "avx2";
    case MD5MB_AVX512:
        return "avx512";
    case MD5MB_NEON:
        return "neon";
    }
    return "?";
}

static void lane_start(struct md5mb *m, unsigned l)
{
    static const uint32_t iv[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    for (int j = 0; j < 4; j++)
        m->st[j * MD5MB_LANES_MAX + l] = iv[j];
    m->lane[l] = (struct lane){0};
}

int md5mb_new(struct md5mb **ret, enum md5mb_kind kind, struct error *err)
{
    if (kind == MD5MB_AUTO)
        kind = md5mb_best();
    if (!md5mb_supported(kind))
        return error_set(err, -ENOTSUP, "MD5 in %s lanes: not on this CPU", md5mb_kind_name(kind));
    struct md5mb *m = calloc(1, sizeof(*m));
    if (!m)
        return error_set(err, -ENOMEM, "out of memory");
    m->kind = kind;
    switch (kind) {
#ifdef MD5MB_HAVE_X86
    case MD5MB_SSE2:
        m->lanes = 4;
        m->kernel = kernel_sse2;
        break;
    case MD5MB_AVX2:
        m->lanes = 8;
        m->kernel = kernel_avx2;
        break;
    case MD5MB_AVX512:
        m->lanes = 8;
        m->kernel = kernel_avx512;
        break;
#endif
#ifdef MD5MB_HAVE_NEON
    case MD5MB_NEON:
        m->lanes = 4;
        m->kernel = kernel_neon;
        break;
#endif
    default:
        m->lanes = 1;
        m->kernel = kernel_scalar;
        break;
    }
    for (unsigned l = 0; l < m->lanes; l++)
        lane_start(m, l);
    *ret = m;
    return 0;
}

void md5mb_free(struct md5mb *m)
{
    free(m);
}

enum md5mb_kind md5mb_kind(const struct md5mb *m)
{
    return m->kind;
}

unsigned md5mb_lanes(const struct md5mb *m)
{
    return m->lanes;
}

void md5mb_reset(struct md5mb *m, unsigned lane)
{
    assert(lane < m->lanes);
    lane_start(m, lane);
}

void md5mb_feed(struct md5mb *m, unsigned lane, const void *data, size_t len)
{
    assert(lane < m->lanes);
    struct lane *L = &m->lane[lane];
    assert(!L->fed);
    L->data = data;
    L->len = len;
    L->fed = true;
    L->total += len;
}

bool md5mb_pending(const struct md5mb *m, unsigned lane)
{
    return lane < m->lanes && m->lane[lane].fed;
}

/* Moves fed bytes into a lane's partly filled buffer (one that holds 1..63 bytes). */
static void top_up(struct lane *L)
{
    if (L->buffered == 0 || L->buffered == sizeof(L->buf) || L->len == 0)
        return;
    size_t take = sizeof(L->buf) - L->buffered;
    if (take > L->len)
        take = L->len;
    memcpy(L->buf + L->buffered, L->data, take);
    L->buffered += take;
    L->data += take;
    L->len -= take;
}

/* Keeps the rest of what was fed (under a block, the buffer empty or holding the start of it). */
static void keep_tail(struct lane *L)
{
    assert(L->buffered + L->len < sizeof(L->buf));
    if (L->len > 0)
        memcpy(L->buf + L->buffered, L->data, L->len);
    L->buffered += L->len;
    L->data = NULL;
    L->len = 0;
    L->fed = false;
}

/* nblocks blocks at p through lane l alone, with the portable kernel. */
static void compress_one(struct md5mb *m, unsigned l, const uint8_t *p, size_t nblocks)
{
    static const size_t adv[1] = {64};
    const uint8_t *in[1] = {p};
    kernel_scalar(m->st + l, MD5MB_LANES_MAX, in, adv, nblocks);
}

void md5mb_run(struct md5mb *m)
{
    for (;;) {
        const uint8_t *in[MD5MB_LANES_MAX];
        size_t adv[MD5MB_LANES_MAX];
        unsigned active = 0;
        size_t nblocks = SIZE_MAX;
        for (unsigned l = 0; l < m->lanes; l++) {
            struct lane *L = &m->lane[l];
            top_up(L);
            in[l] = zero_block;
            adv[l] = 0;
            if (L->buffered == sizeof(L->buf)) {
                in[l] = L->buf;
                nblocks = 1;
            } else if (L->buffered == 0 && L->len >= 64) {
                in[l] = L->data;
                if (L->len / 64 < nblocks)
                    nblocks = L->len / 64;
            } else {
                continue;
            }
            adv[l] = 64;
            active |= 1u << l;
        }
        if (!active)
            break;
        uint32_t saved[4 * MD5MB_LANES_MAX];
        memcpy(saved, m->st, sizeof(saved));
        m->kernel(m->st, MD5MB_LANES_MAX, in, adv, nblocks);
        for (unsigned l = 0; l < m->lanes; l++) {
            struct lane *L = &m->lane[l];
            if (!(active & (1u << l))) {
                for (int j = 0; j < 4; j++)
                    m->st[j * MD5MB_LANES_MAX + l] = saved[j * MD5MB_LANES_MAX + l];
            } else if (in[l] == L->buf) {
                L->buffered = 0;
            } else {
                L->data += 64 * nblocks;
                L->len -= 64 * nblocks;
            }
        }
    }
    for (unsigned l = 0; l < m->lanes; l++)
        if (m->lane[l].fed)
            keep_tail(&m->lane[l]);
}

void md5mb_run_lane(struct md5mb *m, unsigned lane)
{
    assert(lane < m->lanes);
    struct lane *L = &m->lane[lane];
    if (!L->fed)
        return;
    top_up(L);
    if (L->buffered == sizeof(L->buf)) {
        compress_one(m, lane, L->buf, 1);
        L->buffered = 0;
    }
    if (L->buffered == 0 && L->len >= 64) {
        size_t n = L->len / 64;
        compress_one(m, lane, L->data, n);
        L->data += 64 * n;
        L->len -= 64 * n;
    }
    keep_tail(L);
}

void md5mb_final(struct md5mb *m, unsigned lane, uint8_t ret[16])
{
    assert(lane < m->lanes);
    struct lane *L = &m->lane[lane];
    md5mb_run_lane(m, lane);
    /* RFC 1321 3.1-3.2: a 1 bit, zeros up to 56 bytes mod 64, the length in bits (LE 64-bit) */
    uint64_t bits = L->total * 8;
    L->buf[L->buffered++] = 0x80;
    if (L->buffered > 56) {
        memset(L->buf + L->buffered, 0, sizeof(L->buf) - L->buffered);
        compress_one(m, lane, L->buf, 1);
        L->buffered = 0;
    }
    memset(L->buf + L->buffered, 0, 56 - L->buffered);
    for (int i = 0; i < 8; i++)
        L->buf[56 + i] = (uint8_t)(bits >> (8 * i));
    compress_one(m, lane, L->buf, 1);
    for (int j = 0; j < 4; j++) {
        uint32_t v = m->st[j * MD5MB_LANES_MAX + lane];
        for (int i = 0; i < 4; i++)
            ret[4 * j + i] = (uint8_t)(v >> (8 * i));
    }
    lane_start(m, lane);
}
