/* Shared by the CPU kernels (lrn_kernel.c, maxpool_kernel.c, dropout_kernel.c): bf16 as
 * c10::BFloat16 converts it, and a job split over threads. */
#ifndef ALEXNET_NATIVE_COMMON_H
#define ALEXNET_NATIVE_COMMON_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

#define INLINE static inline __attribute__((always_inline))
#define MAX_THREADS 256

static inline float bf16_load(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, NaN kept as NaN (tested on the bits: the LRN build's -ffinite-math-only
 * lets the compiler drop f != f). */
static inline bf16 bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (bf16)((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
}

/* The first member of every job: its share [start, end) of the units of work. */
typedef struct {
    int64_t start, end;
} span_t;

/* Runs fn on copies of the job `proto` (`size` bytes, a span_t first), the units split evenly over
 * up to `threads` threads with at least `least` units each; one share runs on this thread, and a
 * share whose thread cannot start runs here too. 0, or 1 when a share failed (fn returned non-NULL)
 * or there was no memory for the jobs. */
static int run_split(void *(*fn)(void *), const void *proto, size_t size, int64_t units, int threads,
                     int64_t least) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (units < (int64_t)threads * least) threads = units >= least ? (int)(units / least) : 1;
    char *jobs = (char *)malloc(size * (size_t)threads);
    if (!jobs) return 1;
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    int failed = 0;
    for (int t = 0; t < threads; ++t) {
        span_t *span = (span_t *)memcpy(jobs + (size_t)t * size, proto, size);
        span->start = units * t / threads;
        span->end = units * (t + 1) / threads;
    }
    for (int t = 1; t < threads; ++t)
        started[t] = pthread_create(&tids[t], NULL, fn, jobs + (size_t)t * size) == 0;
    for (int t = 1; t < threads; ++t)
        if (!started[t]) failed |= fn(jobs + (size_t)t * size) != NULL;
    failed |= fn(jobs) != NULL;
    for (int t = 1; t < threads; ++t) {
        if (started[t]) {
            void *rc;
            pthread_join(tids[t], &rc);
            failed |= rc != NULL;
        }
    }
    free(jobs);
    return failed;
}

#endif
