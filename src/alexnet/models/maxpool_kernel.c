/* Max-pooling (§3.4's overlapping 3×3 pools with stride 2, and any k×k / stride s without padding,
 * k ≤ 16) forward and backward for channels-innermost (channels_last) fp32 and bf16 tensors on the CPU.
 *
 * Why: torch's CPU max_pool2d writes an int64 index per output value forward (four times the
 * output's bytes in bf16, and its own allocation) and its backward zero-fills the input gradient,
 * then reads those indices and scatters. Here the forward keeps, per output value, the position of
 * the maximum inside its window in one byte, and the backward adds each output's gradient at that
 * position into one image's input gradient in fp32 scratch that stays in L2, then writes it once.
 *
 * The same choices as torch's kernel, so the results are torch's: a window's maximum is its first
 * greatest value in row-major order, a NaN beats everything (the last NaN of a window wins, as
 * torch's `val > max || isnan(val)` update has it), and an input position's gradient is the sum
 * of the gradients of the windows whose maximum it is, added in the order of the output positions:
 * equal to torch's bit for bit in fp32 (tests/test_maxpool.py). bf16 values are compared and
 * summed in fp32 and rounded once (nearest even), where torch rounds after each addition: the
 * gradient of a value that is the maximum of two to four overlapping windows is the correctly
 * rounded sum, and can differ from torch's by its rounding. Built without the fast-math flags of
 * the LRN kernel: with them the compiler may assume no NaN and turn the comparisons into max
 * instructions that lose torch's NaN rule.
 */
#include "native_common.h"

INLINE float ld(int bf, const void *p, int64_t i) {
    return bf ? bf16_load(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

typedef struct {
    span_t units; /* forward: output rows (image, row); backward: images */
    const void *x, *g;
    void *out;
    uint8_t *at; /* each output value's position in its window, row-major (k² ≤ 256) */
    float *acc;  /* backward: one image's input gradient in fp32 */
    int bf;
    int64_t height, width, channels, out_h, out_w, kernel, stride;
} job_t;

/* The maximum over one window for every channel, into m (and its position in the window into at):
 * the window's values read in row-major order, with torch's update rule. */
INLINE void window_max(int bf, const void *x, int64_t base, const job_t *j, float *restrict m,
                       int32_t *restrict at) {
    const int64_t C = j->channels;
    for (int64_t c = 0; c < C; ++c) {
        m[c] = ld(bf, x, base + c);
        at[c] = 0;
    }
    for (int64_t kh = 0; kh < j->kernel; ++kh)
        for (int64_t kw = kh == 0 ? 1 : 0; kw < j->kernel; ++kw) {
            const int64_t from = base + (kh * j->width + kw) * C;
            const int32_t here = (int32_t)(kh * j->kernel + kw);
            for (int64_t c = 0; c < C; ++c) {
                const float v = ld(bf, x, from + c);
                const int take = v > m[c] || v != v;
                m[c] = take ? v : m[c];
                at[c] = take ? here : at[c];
            }
        }
}

INLINE void forward_rows(int bf, const job_t *j, float *restrict m, int32_t *restrict at) {
    const int64_t C = j->channels;
    for (int64_t u = j->units.start; u < j->units.end; ++u) {
        const int64_t n = u / j->out_h, oh = u % j->out_h;
        for (int64_t ow = 0; ow < j->out_w; ++ow) {
            const int64_t base = ((n * j->height + oh * j->stride) * j->width + ow * j->stride) * C;
            window_max(bf, j->x, base, j, m, at);
            const int64_t o = ((n * j->out_h + oh) * j->out_w + ow) * C;
            if (bf)
                for (int64_t c = 0; c < C; ++c) ((bf16 *)j->out)[o + c] = bf16_store(m[c]);
            else
                memcpy((float *)j->out + o, m, (size_t)C * sizeof(float));
            uint8_t *restrict to = j->at + o;
            for (int64_t c = 0; c < C; ++c) to[c] = (uint8_t)at[c];
        }
    }
}

/* Each output's gradient to the position the forward found, summed per image in fp32. */
INLINE void backward_images(int bf, const job_t *j) {
    const int64_t C = j->channels, image = j->height * j->width * C;
    float *restrict acc = j->acc;
    for (int64_t n = j->units.start; n < j->units.end; ++n) {
        memset(acc, 0, (size_t)image * sizeof(float));
        for (int64_t oh = 0; oh < j->out_h; ++oh)
            for (int64_t ow = 0; ow < j->out_w; ++ow) {
                const int64_t corner = (oh * j->stride * j->width + ow * j->stride) * C;
                const int64_t o = ((n * j->out_h + oh) * j->out_w + ow) * C;
                const uint8_t *restrict at = j->at + o;
                for (int64_t kh = 0; kh < j->kernel; ++kh)
                    for (int64_t kw = 0; kw < j->kernel; ++kw) {
                        float *restrict to = acc + corner + (kh * j->width + kw) * C;
                        const uint8_t here = (uint8_t)(kh * j->kernel + kw);
                        for (int64_t c = 0; c < C; ++c) to[c] += at[c] == here ? ld(bf, j->g, o + c) : 0.0f;
                    }
            }
        if (bf)
            for (int64_t i = 0; i < image; ++i) ((bf16 *)j->out)[n * image + i] = bf16_store(acc[i]);
        else
            memcpy((float *)j->out + n * image, acc, (size_t)image * sizeof(float));
    }
}

static void *forward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    float *m = (float *)malloc((size_t)j->channels * sizeof(float));
    int32_t *at = (int32_t *)malloc((size_t)j->channels * sizeof(int32_t));
    int failed = !m || !at;
    if (!failed) {
        if (j->bf)
            forward_rows(1, j, m, at);
        else
            forward_rows(0, j, m, at);
    }
    free(m);
    free(at);
    return failed ? (void *)1 : NULL;
}

static void *backward_job(void *arg) {
    job_t j = *(const job_t *)arg;
    j.acc = (float *)malloc((size_t)(j.height * j.width * j.channels) * sizeof(float));
    if (!j.acc) return (void *)1;
    if (j.bf)
        backward_images(1, &j);
    else
        backward_images(0, &j);
    free(j.acc);
    return NULL;
}

int maxpool_forward(int bf, const void *x, void *out, uint8_t *at, int64_t batch, int64_t height,
                    int64_t width, int64_t channels, int64_t kernel, int64_t stride, int threads) {
    const int64_t out_h = (height - kernel) / stride + 1, out_w = (width - kernel) / stride + 1;
    job_t j = {{0, 0}, x, NULL, out, at, NULL, bf, height, width, channels, out_h, out_w, kernel, stride};
    return run_split(forward_job, &j, sizeof j, batch * out_h, threads, 1);
}

int maxpool_backward(int bf, const void *g, const uint8_t *at, void *grad_x, int64_t batch, int64_t height,
                     int64_t width, int64_t channels, int64_t kernel, int64_t stride, int threads) {
    const int64_t out_h = (height - kernel) / stride + 1, out_w = (width - kernel) / stride + 1;
    job_t j = {{0, 0}, NULL, g, grad_x, (uint8_t *)at, NULL, bf, height, width, channels, out_h, out_w, kernel,
               stride};
    return run_split(backward_job, &j, sizeof j, batch, threads, 1);
}
