/* stream_copy: the memory-bandwidth ceiling that bench/run.py holds bnorm against. STREAM's "copy"
 * kernel (a[i] = b[i]) on float arrays far larger than the caches, with non-temporal stores (so
 * no read-for-ownership of the destination), split evenly over T OpenMP threads; it counts read +
 * write bytes, as STREAM does, and prints the median of the repeats as JSON:
 *
 *   stream_copy [MB per array, default 400] [repeats, default 11] [thread counts..., default 1 2]
 *   {"mb": 400, "repeats": 11, "results": [{"threads": 1, "gbps": 20.9, "runs": [...]}, ...]}
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((target("avx512f"))) static void copy_avx512(float *d, const float *s, size_t n) {
    size_t i = 0;
    for (; i < n && ((size_t)(d + i) & 63); i++) d[i] = s[i];
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(d + i, _mm512_loadu_ps(s + i));
    for (; i < n; i++) d[i] = s[i];
}

static void copy_sse(float *d, const float *s, size_t n) {
    size_t i = 0;
    for (; i < n && ((size_t)(d + i) & 15); i++) d[i] = s[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(d + i, _mm_loadu_ps(s + i));
    for (; i < n; i++) d[i] = s[i];
}

/* Returns seconds for one copy of n floats over `threads` threads. */
static double copy_once(float *d, const float *s, size_t n, int threads, int avx512) {
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
        const size_t k = (size_t)omp_get_thread_num(), t = (size_t)omp_get_num_threads();
        const size_t a = n * k / t, b = n * (k + 1) / t;
        if (avx512)
            copy_avx512(d + a, s + a, b - a);
        else
            copy_sse(d + a, s + a, b - a);
        _mm_sfence();
    }
    return omp_get_wtime() - t0;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 400;
    const int repeats = argc > 2 ? atoi(argv[2]) : 11;
    if (mb == 0 || repeats < 1 || repeats > 1000) {
        fprintf(stderr, "usage: stream_copy [MB per array] [repeats] [thread counts...]\n");
        return 2;
    }
    const size_t n = mb * ((size_t)1 << 20) / sizeof(float);
    float *s = aligned_alloc(64, n * sizeof(float)), *d = aligned_alloc(64, n * sizeof(float));
    if (!s || !d) {
        fprintf(stderr, "stream_copy: cannot allocate 2 x %zu MB\n", mb);
        return 1;
    }
    for (size_t i = 0; i < n; i++) s[i] = (float)(i & 1023), d[i] = 0; /* touch every page once */
    const int avx512 = __builtin_cpu_supports("avx512f");
    double *runs = malloc((size_t)repeats * sizeof(double)), *sorted = malloc((size_t)repeats * sizeof(double));
    printf("{\"mb\": %zu, \"repeats\": %d, \"stores\": \"%s non-temporal\", \"results\": [", mb, repeats,
           avx512 ? "avx512" : "sse");
    const int default_threads[] = {1, 2};
    const int nthreads = argc > 3 ? argc - 3 : 2;
    for (int k = 0; k < nthreads; k++) {
        const int threads = argc > 3 ? atoi(argv[3 + k]) : default_threads[k];
        if (threads < 1) return 2;
        copy_once(d, s, n, threads, avx512); /* warm-up */
        for (int r = 0; r < repeats; r++) runs[r] = 2.0 * (double)(n * sizeof(float)) / copy_once(d, s, n, threads, avx512) / 1e9;
        memcpy(sorted, runs, (size_t)repeats * sizeof(double));
        qsort(sorted, (size_t)repeats, sizeof(double), by_value);
        printf("%s{\"threads\": %d, \"gbps\": %.2f, \"runs\": [", k ? ", " : "", threads, sorted[repeats / 2]);
        for (int r = 0; r < repeats; r++) printf("%s%.2f", r ? ", " : "", runs[r]);
        printf("]}");
    }
    printf("]}\n");
    if (d[n / 2] != s[n / 2]) return 1; /* the copy happened */
    free(runs), free(sorted), free(s), free(d);
    return 0;
}
