/* Dropout (§4.2: p = 0.5 on the outputs of fc6 and fc7) forward and backward for contiguous fp32
 * and bf16 tensors on the CPU.
 *
 * Why: torch's CPU dropout draws its mask with bernoulli_, about 20 ns a value on 2 cores: 10.7 ms
 * forward + backward for one 128×4096 fc6 output in bf16, 23.5 ReLUs on the same tensor; 1.4 ms
 * here (benchmarks/layers.py). The mask comes from a counter-based hash of (seed, index), which
 * vectorises: each value is kept where the hash's 32 bits fall below keep · 2³², and the caller
 * draws the seed from torch's generator, so runs are reproducible and resumable as torch's are.
 * The forward writes the output and the mask (one byte a value); the backward reads them. As in
 * torch, a value is multiplied by 0 or by 1/(1 − p), so a NaN stays NaN where dropped; bf16
 * values are multiplied in fp32 and rounded to nearest even.
 */
#include "native_common.h"

/* A 32-bit integer hash with full avalanche ("lowbias32", C. Wellons): 32-bit multiplies and
 * shifts only, so every instruction set vectorises it. */
static inline uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

typedef struct {
    span_t values;
    const void *x;
    void *out;
    uint8_t *mask;
    int bf, backward;
    uint32_t s0, s1, threshold;
    float scale;
} job_t;

INLINE void forward_span(int bf, const job_t *j) {
    const void *restrict x = j->x;
    void *restrict out = j->out;
    uint8_t *restrict mask = j->mask;
    const uint32_t s0 = j->s0, s1 = j->s1, threshold = j->threshold;
    const float scale = j->scale;
    for (int64_t i = j->values.start, end = j->values.end; i < end; ++i) {
        const uint8_t keep = mix(mix((uint32_t)i + s0) ^ s1) < threshold;
        const float a = bf ? bf16_load(((const bf16 *)x)[i]) : ((const float *)x)[i];
        const float v = a * (keep ? scale : 0.0f);
        mask[i] = keep;
        if (bf)
            ((bf16 *)out)[i] = bf16_store(v);
        else
            ((float *)out)[i] = v;
    }
}

INLINE void backward_span(int bf, const job_t *j) {
    const void *restrict g = j->x;
    void *restrict out = j->out;
    const uint8_t *restrict mask = j->mask;
    const float scale = j->scale;
    for (int64_t i = j->values.start, end = j->values.end; i < end; ++i) {
        const float a = bf ? bf16_load(((const bf16 *)g)[i]) : ((const float *)g)[i];
        const float v = a * (mask[i] ? scale : 0.0f);
        if (bf)
            ((bf16 *)out)[i] = bf16_store(v);
        else
            ((float *)out)[i] = v;
    }
}

static void *work(void *arg) {
    const job_t *j = (const job_t *)arg;
    if (j->backward) {
        if (j->bf)
            backward_span(1, j);
        else
            backward_span(0, j);
    } else {
        if (j->bf)
            forward_span(1, j);
        else
            forward_span(0, j);
    }
    return NULL;
}

/* keep: the probability of keeping a value (1 − p), as threshold / 2³²; scale = 1 / (1 − p). */
int dropout_forward(int bf, const void *x, void *out, uint8_t *mask, int64_t n, uint64_t seed,
                    uint32_t threshold, float scale, int threads) {
    job_t j = {{0, 0}, x, out, mask, bf, 0, (uint32_t)seed, (uint32_t)(seed >> 32), threshold, scale};
    return run_split(work, &j, sizeof j, n, threads, 16384);
}

int dropout_backward(int bf, const void *g, const uint8_t *mask, void *grad_x, int64_t n, float scale,
                     int threads) {
    job_t j = {{0, 0}, g, grad_x, (uint8_t *)mask, bf, 1, 0, 0, 0, scale};
    return run_split(work, &j, sizeof j, n, threads, 16384);
}
