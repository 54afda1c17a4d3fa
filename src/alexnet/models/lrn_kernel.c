/* Local response normalisation (§3.3) forward and backward in one pass each over the activation,
 * for channels-innermost (channels_last) fp32 and bf16 tensors on the CPU.
 *
 * Why C: LRN is memory-bound. The GEMM form in lrn.py makes about 15 passes over the activation
 * forward and 12 backward (a², the window-sum GEMM, rsqrt, sqrt, the products, each written out);
 * here each row of C channels (one pixel) is loaded once into fp32 scratch that stays in L1, its
 * window sums, s^(−β), the output and what the backward needs are computed there, and each result
 * is written once: 1 read + 3 writes forward, 4 reads + 1 write backward. torch.compile's CPU code
 * for the same formulas was 3× slower than the GEMM form (benchmarks/RESULTS.md); torch's C++
 * extension build needs ~1 min of compiling its headers, this file about a second.
 *
 * Layout: every tensor is [rows, channels] in memory (rows = N·H·W pixels), channels split into
 * `groups` equal groups whose windows stay inside them (§3.2's towers). Conventions as torch's
 * LocalResponseNorm and lrn.py:
 *   s_i = k + α/n · Σ_{j ∈ W(i)} a_j²,  W(i) = [i − ⌊n/2⌋, i + ⌊(n−1)/2⌋], zero outside the group
 *   b_i = a_i · s_i^(−β);   saved for the backward: inv_i = s_i^(−β), xr_i = b_i / s_i
 *   ∂L/∂a_j = g_j · inv_j + coef · a_j · Σ_{i: j ∈ W(i)} g_i · xr_i,   coef = −2αβ/n
 * All arithmetic is fp32; bf16 values are widened on load and rounded to nearest even on store
 * (c10::BFloat16's rounding, NaN kept as NaN).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_load(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline bf16 bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    /* NaN tested on the bits: the build's -ffinite-math-only lets the compiler drop f != f */
    return (bf16)((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
}

typedef struct {
    const void *x, *g, *inv, *xr;
    void *out, *inv_out, *xr_out;
    int bf;
    int64_t row0, row1, channels, groups, size;
    float alpha_n, beta, k, coef;
} job_t;

/* Widen n values of a bf16 or fp32 tensor into fp32 scratch, and round them back. */
static void widen(int bf, const void *src, float *restrict dst, int64_t n) {
    if (bf) {
        const bf16 *restrict s = (const bf16 *)src;
        for (int64_t c = 0; c < n; ++c) dst[c] = bf16_load(s[c]);
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

static void narrow(int bf, const float *restrict src, void *dst, int64_t n) {
    if (bf) {
        bf16 *restrict d = (bf16 *)dst;
        for (int64_t c = 0; c < n; ++c) d[c] = bf16_store(src[c]);
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

/* The block's groups, each zero-padded in `pad` (a stride of m + size − 1), squared (or multiplied)
 * from a and b, and summed over their windows into acc: acc[c] = Σ_{d < size} pad[c + d]. */
static void window_sums(const float *restrict a, const float *restrict b, float *restrict pad,
                        float *restrict acc, int64_t segments, int64_t m, int64_t size, int64_t before) {
    const int64_t stride = m + size - 1;
    for (int64_t s = 0; s < segments; ++s) {
        float *restrict row = pad + s * stride + before;
        const float *restrict as = a + s * m, *restrict bs = b + s * m;
        for (int64_t c = 0; c < m; ++c) row[c] = as[c] * bs[c];
    }
    for (int64_t s = 0; s < segments; ++s) {
        const float *restrict row = pad + s * stride;
        float *restrict sum = acc + s * m;
        for (int64_t c = 0; c < m; ++c) sum[c] = row[c];
        for (int64_t d = 1; d < size; ++d)
            for (int64_t c = 0; c < m; ++c) sum[c] += row[c + d];
    }
}

/* Rows are worked on in blocks of about BLOCK values (a few pixels' channels, contiguous in memory):
 * long loops for the elementwise work, and fp32 scratch (six blocks, ~30 KB) that stays in L1/L2. */
#define BLOCK 1024

typedef struct {
    float *buf, *pad, *acc, *s0, *s1, *s2, *s3;
    int64_t rows; /* per block */
} scratch_t;

/* Zeroed once, so the padding stays 0: only the inside of each group's padded row is written. */
static int scratch(scratch_t *t, const job_t *j) {
    const int64_t m = j->channels / j->groups;
    t->rows = j->channels >= BLOCK ? 1 : BLOCK / j->channels;
    const int64_t n = t->rows * j->channels, padded = t->rows * j->groups * (m + j->size - 1);
    t->buf = (float *)calloc((size_t)(padded + 5 * n), sizeof(float));
    if (!t->buf) return 1;
    t->pad = t->buf;
    t->acc = t->pad + padded;
    t->s0 = t->acc + n;
    t->s1 = t->s0 + n;
    t->s2 = t->s1 + n;
    t->s3 = t->s2 + n;
    return 0;
}

static inline size_t elem(int bf) { return bf ? sizeof(bf16) : sizeof(float); }

static void *forward_rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t m = j->channels / j->groups;
    const size_t e = elem(j->bf);
    scratch_t t;
    if (scratch(&t, j)) return (void *)1;
    float *restrict acc = t.acc, *restrict a = t.s0, *restrict b = t.s1, *restrict p = t.s2, *restrict q = t.s3;
    const float alpha_n = j->alpha_n, beta = j->beta, k = j->k;
    for (int64_t r = j->row0; r < j->row1; r += t.rows) {
        const int64_t rows = r + t.rows <= j->row1 ? t.rows : j->row1 - r, n = rows * j->channels;
        const size_t at = (size_t)(r * j->channels) * e;
        widen(j->bf, (const char *)j->x + at, a, n);
        window_sums(a, a, t.pad, acc, rows * j->groups, m, j->size, j->size / 2);
        if (beta == 0.75f) { /* s^(−3/4) = rsqrt(s) · sqrt(rsqrt(s)): vectorises, pow does not */
            for (int64_t c = 0; c < n; ++c) {
                float rs = 1.0f / sqrtf(k + alpha_n * acc[c]), inv = rs * sqrtf(rs);
                p[c] = inv;
                b[c] = a[c] * inv;
                q[c] = b[c] * (rs * rs); /* b / s, with 1/s = rs², one division fewer */
            }
        } else {
            for (int64_t c = 0; c < n; ++c) {
                float s = k + alpha_n * acc[c], inv = powf(s, -beta);
                p[c] = inv;
                b[c] = a[c] * inv;
                q[c] = b[c] / s;
            }
        }
        narrow(j->bf, b, (char *)j->out + at, n);
        narrow(j->bf, p, (char *)j->inv_out + at, n);
        narrow(j->bf, q, (char *)j->xr_out + at, n);
    }
    free(t.buf);
    return NULL;
}

static void *backward_rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t m = j->channels / j->groups;
    const size_t e = elem(j->bf);
    scratch_t t;
    if (scratch(&t, j)) return (void *)1;
    float *restrict acc = t.acc, *restrict gr = t.s0, *restrict a = t.s1, *restrict p = t.s2, *restrict q = t.s3;
    const float coef = j->coef;
    for (int64_t r = j->row0; r < j->row1; r += t.rows) {
        const int64_t rows = r + t.rows <= j->row1 ? t.rows : j->row1 - r, n = rows * j->channels;
        const size_t at = (size_t)(r * j->channels) * e;
        widen(j->bf, (const char *)j->g + at, gr, n);
        widen(j->bf, (const char *)j->xr + at, q, n);
        /* Σ over the i whose window holds c: i ∈ [c − ⌊(n−1)/2⌋, c + ⌊n/2⌋], the window mirrored */
        window_sums(gr, q, t.pad, acc, rows * j->groups, m, j->size, (j->size - 1) / 2);
        widen(j->bf, (const char *)j->x + at, a, n);
        widen(j->bf, (const char *)j->inv + at, p, n);
        for (int64_t c = 0; c < n; ++c) q[c] = gr[c] * p[c] + coef * a[c] * acc[c];
        narrow(j->bf, q, (char *)j->out + at, n);
    }
    free(t.buf);
    return NULL;
}

/* Rows split evenly over `threads` threads (the caller passes torch.get_num_threads()); returns 0,
 * or 1 when a thread or its scratch could not be had (the caller then takes the GEMM form). */
static int run(void *(*fn)(void *), job_t proto, int64_t rows, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (rows < (int64_t)threads * 64) threads = rows >= 64 ? (int)(rows / 64) : 1;
    job_t jobs[256];
    pthread_t tids[256];
    int started[256] = {0};
    int failed = 0;
    for (int t = 0; t < threads; ++t) {
        jobs[t] = proto;
        jobs[t].row0 = rows * t / threads;
        jobs[t].row1 = rows * (t + 1) / threads;
    }
    for (int t = 1; t < threads; ++t) started[t] = pthread_create(&tids[t], NULL, fn, &jobs[t]) == 0;
    for (int t = 1; t < threads; ++t)
        if (!started[t]) failed |= fn(&jobs[t]) != NULL; /* no thread: do its share here */
    failed |= fn(&jobs[0]) != NULL;
    for (int t = 1; t < threads; ++t) {
        if (started[t]) {
            void *rc;
            pthread_join(tids[t], &rc);
            failed |= rc != NULL;
        }
    }
    return failed;
}

int lrn_forward(int bf, const void *x, void *out, void *inv, void *xr, int64_t rows, int64_t channels,
                int64_t groups, int64_t size, float alpha_n, float beta, float k, int threads) {
    job_t j = {x, NULL, NULL, NULL, out, inv, xr, bf, 0, 0, channels, groups, size, alpha_n, beta, k, 0.0f};
    return run(forward_rows, j, rows, threads);
}

int lrn_backward(int bf, const void *g, const void *x, const void *inv, const void *xr, void *grad_x,
                 int64_t rows, int64_t channels, int64_t groups, int64_t size, float coef, int threads) {
    job_t j = {x, g, inv, xr, grad_x, NULL, NULL, bf, 0, 0, channels, groups, size, 0.0f, 0.0f, 0.0f, coef};
    return run(backward_rows, j, rows, threads);
}
