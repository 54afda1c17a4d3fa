/* Local response normalisation (§3.3) forward and backward in one pass each over the activation,
 * for channels-innermost (channels_last) fp32 and bf16 tensors on the CPU.
 *
 * Why C: LRN is memory-bound as torch ops. The GEMM form in lrn.py makes about 15 passes over the
 * activation forward and 12 backward (a², the window-sum GEMM, rsqrt, sqrt, the products, each
 * written out); here a block of pixels is loaded once into fp32 scratch that stays in L1/L2, the
 * window sums, s^(−β) and the result are computed there, and the result is written once: 1 read +
 * 1 write forward, 2 reads + 1 write backward, which recomputes s from the input instead of saving
 * s^(−β) and b/s (two more writes forward and reads backward; the recomputation measured cheaper,
 * benchmarks/RESULTS.md). torch.compile's CPU code for the same formulas was 3× slower than the
 * GEMM form; torch's C++ extension build needs ~1 min of compiling its headers, this file a second.
 *
 * Layout: every tensor is [rows, channels] in memory (rows = N·H·W pixels), channels split into
 * `groups` equal groups whose windows stay inside them (§3.2's towers). Conventions as torch's
 * LocalResponseNorm and lrn.py:
 *   s_i = k + α/n · Σ_{j ∈ W(i)} a_j²,  W(i) = [i − ⌊n/2⌋, i + ⌊(n−1)/2⌋], zero outside the group
 *   b_i = a_i · s_i^(−β)
 *   ∂L/∂a_j = g_j · s_j^(−β) + coef · a_j · Σ_{i: j ∈ W(i)} g_i · b_i / s_i,   coef = −2αβ/n
 * All arithmetic is fp32; bf16 values are widened on load and rounded to nearest even on store
 * (c10::BFloat16's rounding, NaN kept as NaN).
 *
 * With `relu`, the input is the ReLU's input: a = max(x, 0) is taken on load and ∂L/∂x is 0 where
 * the ReLU's output is ≤ 0 (torch's threshold_backward), NaN passing as NaN both ways. That is the
 * paper's ReLU → LRN (§3.3) in the same passes, saving the ReLU's own (1 read + 1 write forward,
 * 2 reads + 1 write backward over the same activation).
 */
#include <math.h>
#include <string.h>

#include "native_common.h"

typedef struct {
    span_t rows; /* pixels */
    const void *x, *g;
    void *out;
    int bf, relu;
    int64_t channels, groups, size;
    float alpha_n, beta, k, coef;
} job_t;

/* One value of a bf16 or fp32 tensor, widened to fp32, and stored back rounded. Always inlined
 * with a constant `bf`, so each loop below is compiled once per dtype and vectorised. */
INLINE float ld(int bf, const void *p, int64_t i) {
    return bf ? bf16_load(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

INLINE void st(int bf, void *p, int64_t i, float v) {
    if (bf)
        ((bf16 *)p)[i] = bf16_store(v);
    else
        ((float *)p)[i] = v;
}

/* Whether ReLU passes x on: x > 0 or NaN (torch's relu keeps NaN, and its backward passes NaN's
 * gradient). Decided on the bits, because the fast-math flags this file is built with (native.py)
 * let the compiler assume no NaN in float comparisons. */
INLINE int passes(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t magnitude = u & 0x7fffffffu;
    return magnitude > 0x7f800000u || (!(u >> 31) && magnitude != 0);
}

/* The value LRN sees: x, or ReLU's max(x, 0) in the fused form. */
INLINE float input(int bf, int relu, const void *p, int64_t i) {
    const float x = ld(bf, p, i);
    return relu && !passes(x) ? 0.0f : x;
}

/* Window sums over the channels of a block of n values (whole pixels, channels innermost):
 * acc[i] = Σ_{d = lo … hi} mid[i+d], a term counting only where channel i+d is in i's group. `mid`
 * has `half` zeros either side of the block, and each offset d ≠ 0 adds mid[i+d]·mask_d[i] over
 * the whole block, mask_d[i] being 1 where that neighbour is in the group and 0 where it is not:
 * long loops over the block instead of short ones per pixel and group. */
static void window_sums(const float *restrict mid, float *restrict acc, const float *restrict masks, int64_t n,
                        int64_t stride, int64_t half, int64_t lo, int64_t hi) {
    const float *restrict at[5] = {NULL};
    for (int64_t d = -2; d <= 2; ++d)
        if (d >= -half && d <= half) at[d + 2] = masks + (d + half) * stride;
    if (lo == -2 && hi == 2) { /* size 5, the paper's: every offset in one loop, the sum in registers */
        const float *restrict m0 = at[0], *restrict m1 = at[1], *restrict m3 = at[3], *restrict m4 = at[4];
        for (int64_t i = 0; i < n; ++i)
            acc[i] = mid[i] + mid[i - 2] * m0[i] + mid[i - 1] * m1[i] + mid[i + 1] * m3[i] + mid[i + 2] * m4[i];
        return;
    }
    if (lo == -1 && hi == 1) {
        const float *restrict m1 = at[1], *restrict m3 = at[3];
        for (int64_t i = 0; i < n; ++i) acc[i] = mid[i] + mid[i - 1] * m1[i] + mid[i + 1] * m3[i];
        return;
    }
    for (int64_t i = 0; i < n; ++i) acc[i] = mid[i];
    for (int64_t d = lo; d <= hi; ++d) {
        if (d == 0) continue;
        const float *restrict mask = masks + (d + half) * stride, *restrict shifted = mid + d;
        for (int64_t i = 0; i < n; ++i) acc[i] += shifted[i] * mask[i];
    }
}

/* Rows are worked on in blocks of about BLOCK values (a few pixels' channels, contiguous in memory):
 * long loops for the elementwise work, and fp32 scratch (~45 KB) that stays in L1/L2. */
#define BLOCK 1024

typedef struct {
    float *buf, *prod, *acc, *s0, *s1, *s2, *s3, *masks;
    int64_t rows, half; /* pixels per block; ⌊size/2⌋, the farthest offset of either window */
} scratch_t;

/* Zeroed once, so the products' padding stays 0; the masks of offsets −half … half, tiled over a
 * block (a block starts at a pixel, so a value's channel is i mod channels). */
static int scratch(scratch_t *t, const job_t *j) {
    const int64_t m = j->channels / j->groups;
    t->rows = j->channels >= BLOCK ? 1 : BLOCK / j->channels;
    t->half = j->size / 2;
    const int64_t n = t->rows * j->channels, offsets = 2 * t->half + 1;
    t->buf = (float *)calloc((size_t)(n + 2 * t->half + (5 + offsets) * n), sizeof(float));
    if (!t->buf) return 1;
    t->prod = t->buf;
    t->acc = t->prod + n + 2 * t->half;
    t->s0 = t->acc + n;
    t->s1 = t->s0 + n;
    t->s2 = t->s1 + n;
    t->s3 = t->s2 + n;
    t->masks = t->s3 + n;
    for (int64_t d = -t->half; d <= t->half; ++d) {
        float *restrict mask = t->masks + (d + t->half) * n;
        for (int64_t g = 0; g < t->rows * j->groups; ++g)
            for (int64_t c = 0; c < m; ++c) mask[g * m + c] = c + d >= 0 && c + d < m ? 1.0f : 0.0f;
    }
    return 0;
}

/* s^(−3/4) = rsqrt(s) · sqrt(rsqrt(s)), which vectorises where pow does not; 1/s = rsqrt(s)². */
INLINE float inv_34(float s, float *rinv) {
    const float rs = 1.0f / sqrtf(s);
    *rinv = rs * rs;
    return rs * sqrtf(rs);
}

INLINE float inv_pow(float s, float beta, float *rinv) {
    *rinv = 1.0f / s;
    return powf(s, -beta);
}

/* One block of n values: x → out. */
INLINE void forward_block(int bf, int relu, const void *restrict x, void *restrict out, const scratch_t *t,
                          int64_t n, const job_t *j) {
    float *restrict a = t->s0, *restrict mid = t->prod + t->half, *restrict acc = t->acc, rinv;
    const float alpha_n = j->alpha_n, beta = j->beta, k = j->k;
    for (int64_t i = 0; i < n; ++i) {
        a[i] = input(bf, relu, x, i);
        mid[i] = a[i] * a[i];
    }
    window_sums(mid, acc, t->masks, n, t->rows * j->channels, t->half, -(j->size / 2), (j->size - 1) / 2);
    if (beta == 0.75f)
        for (int64_t i = 0; i < n; ++i) st(bf, out, i, a[i] * inv_34(k + alpha_n * acc[i], &rinv));
    else
        for (int64_t i = 0; i < n; ++i) st(bf, out, i, a[i] * inv_pow(k + alpha_n * acc[i], beta, &rinv));
}

/* One block: (g, x) → ∂L/∂x. s is recomputed from x (the forward saves nothing but its input): two
 * reads and one write here instead of four and one, and one write forward instead of three, for
 * arithmetic that costs less than the memory passes it saves (benchmarks/RESULTS.md). */
INLINE void backward_block(int bf, int relu, const void *restrict g, const void *restrict x,
                           void *restrict out, const scratch_t *t, int64_t n, const job_t *j) {
    float *restrict a = t->s0, *restrict gr = t->s1, *restrict p = t->s2, *restrict mid = t->prod + t->half;
    float *restrict acc = t->acc;
    const float alpha_n = j->alpha_n, beta = j->beta, k = j->k, coef = j->coef;
    for (int64_t i = 0; i < n; ++i) {
        a[i] = input(bf, relu, x, i);
        mid[i] = a[i] * a[i];
    }
    window_sums(mid, acc, t->masks, n, t->rows * j->channels, t->half, -(j->size / 2), (j->size - 1) / 2);
    /* mid ← g · b/s = g · a · s^(−β) · s^(−1), the terms of the second sum */
    if (beta == 0.75f)
        for (int64_t i = 0; i < n; ++i) {
            float rinv;
            p[i] = inv_34(k + alpha_n * acc[i], &rinv);
            gr[i] = ld(bf, g, i);
            mid[i] = gr[i] * a[i] * p[i] * rinv;
        }
    else
        for (int64_t i = 0; i < n; ++i) {
            float rinv;
            p[i] = inv_pow(k + alpha_n * acc[i], beta, &rinv);
            gr[i] = ld(bf, g, i);
            mid[i] = gr[i] * a[i] * p[i] * rinv;
        }
    /* Σ over the i whose window holds c: i ∈ [c − ⌊(n−1)/2⌋, c + ⌊n/2⌋], the window mirrored */
    window_sums(mid, acc, t->masks, n, t->rows * j->channels, t->half, -((j->size - 1) / 2), j->size / 2);
    for (int64_t i = 0; i < n; ++i) {
        const float v = gr[i] * p[i] + coef * a[i] * acc[i];
        st(bf, out, i, relu && !passes(a[i]) ? 0.0f : v); /* ReLU's backward: 0 where its output a ≤ 0 */
    }
}

static void *forward_rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const size_t e = j->bf ? sizeof(bf16) : sizeof(float);
    scratch_t t;
    if (scratch(&t, j)) return (void *)1;
    for (int64_t r = j->rows.start; r < j->rows.end; r += t.rows) {
        const int64_t n = (r + t.rows <= j->rows.end ? t.rows : j->rows.end - r) * j->channels;
        const size_t at = (size_t)(r * j->channels) * e;
        const char *x = (const char *)j->x + at;
        char *out = (char *)j->out + at;
        if (j->bf)
            j->relu ? forward_block(1, 1, x, out, &t, n, j) : forward_block(1, 0, x, out, &t, n, j);
        else
            j->relu ? forward_block(0, 1, x, out, &t, n, j) : forward_block(0, 0, x, out, &t, n, j);
    }
    free(t.buf);
    return NULL;
}

static void *backward_rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const size_t e = j->bf ? sizeof(bf16) : sizeof(float);
    scratch_t t;
    if (scratch(&t, j)) return (void *)1;
    for (int64_t r = j->rows.start; r < j->rows.end; r += t.rows) {
        const int64_t n = (r + t.rows <= j->rows.end ? t.rows : j->rows.end - r) * j->channels;
        const size_t at = (size_t)(r * j->channels) * e;
        const char *g = (const char *)j->g + at, *x = (const char *)j->x + at;
        char *out = (char *)j->out + at;
        if (j->bf)
            j->relu ? backward_block(1, 1, g, x, out, &t, n, j) : backward_block(1, 0, g, x, out, &t, n, j);
        else
            j->relu ? backward_block(0, 1, g, x, out, &t, n, j) : backward_block(0, 0, g, x, out, &t, n, j);
    }
    free(t.buf);
    return NULL;
}

int lrn_forward(int bf, int relu, const void *x, void *out, int64_t rows, int64_t channels,
                int64_t groups, int64_t size, float alpha_n, float beta, float k, int threads) {
    job_t j = {{0, 0}, x, NULL, out, bf, relu, channels, groups, size, alpha_n, beta, k, 0.0f};
    return run_split(forward_rows, &j, sizeof j, rows, threads, 64);
}

int lrn_backward(int bf, int relu, const void *g, const void *x, void *grad_x, int64_t rows,
                 int64_t channels, int64_t groups, int64_t size, float alpha_n, float beta, float k,
                 float coef, int threads) {
    job_t j = {{0, 0}, x, g, grad_x, bf, relu, channels, groups, size, alpha_n, beta, k, coef};
    return run_split(backward_rows, &j, sizeof j, rows, threads, 64);
}
