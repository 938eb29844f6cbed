/* memory_ceilings: what one core of this machine can move in the access patterns of the kernels,
 * the figures behind the design notes in docs/performance.md. Each kernel runs over 100 MB float
 * arrays (far beyond the caches) on one thread; the median of 9 runs, in GB/s of bytes counted as
 * noted (reads + writes):
 *   copy NT                 y = x, non-temporal stores (STREAM copy)              2 per element
 *   read, 1 chain / 4       sum of x with one accumulator / four                  1
 *   stats f64 widening      sum and sum of squares, each float widened to double   1
 *   stats f32 1 / 4 chains  sum and sum of squares in float, one / four chains     1
 *   triad NT                y = a + k*b, non-temporal stores                        3
 *   bwd-infer-like NT       y = k*dy with sum dy and sum dy*(x - m), float, NT     3
 *   grad sums, 2 reads      sum dy and sum dy*(x - m), float, 4 chains each          2
 *                           (the backward's first pass; its second is "triad NT")
 *   write NT                y = 0, non-temporal stores                              1
 * Usage: memory_ceilings (AVX-512 only: it says so and exits 0 elsewhere).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define N ((size_t)100 << 20 >> 2) /* floats per array: 100 MB */

static float *a, *b, *c;
static volatile float sink;

enum { COPY, READ1, READ4, STATS64, STATS1, STATS4, TRIAD, BWD, GRAD, WRITE, KINDS };
static const char *names[KINDS] = {"copy NT",          "read, 1 chain",  "read, 4 chains",
                                   "stats f64 widening", "stats f32, 1 chain", "stats f32, 4 chains",
                                   "triad NT",         "bwd-infer-like NT", "grad sums, 2 reads",
                                   "write NT"};
static const double bytes_per_element[KINDS] = {2, 1, 1, 1, 1, 1, 3, 3, 2, 1};

__attribute__((target("avx512f"))) static double run(int kind) {
    const double t0 = omp_get_wtime();
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, t1 = s0, t2 = s0, t3 = s0, t4 = s0;
    const __m512 k = _mm512_set1_ps(1.5f), m = _mm512_set1_ps(0.1f);
    switch (kind) {
    case COPY:
        for (size_t i = 0; i < N; i += 16) _mm512_stream_ps(a + i, _mm512_load_ps(b + i));
        break;
    case READ1:
        for (size_t i = 0; i < N; i += 16) s0 = _mm512_add_ps(s0, _mm512_load_ps(b + i));
        break;
    case READ4:
        for (size_t i = 0; i < N; i += 64) {
            s0 = _mm512_add_ps(s0, _mm512_load_ps(b + i));
            s1 = _mm512_add_ps(s1, _mm512_load_ps(b + i + 16));
            s2 = _mm512_add_ps(s2, _mm512_load_ps(b + i + 32));
            s3 = _mm512_add_ps(s3, _mm512_load_ps(b + i + 48));
        }
        break;
    case STATS64: {
        __m512d d0 = _mm512_setzero_pd(), d1 = d0, e0 = d0, e1 = d0;
        const __m512d sh = _mm512_set1_pd(0.3);
        for (size_t i = 0; i < N; i += 16) {
            const __m512 v = _mm512_load_ps(b + i);
            const __m512d lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), sh);
            const __m512d hi = _mm512_sub_pd(
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), sh);
            d0 = _mm512_add_pd(d0, lo);
            e0 = _mm512_fmadd_pd(lo, lo, e0);
            d1 = _mm512_add_pd(d1, hi);
            e1 = _mm512_fmadd_pd(hi, hi, e1);
        }
        s0 = _mm512_castpd_ps(_mm512_add_pd(_mm512_add_pd(d0, d1), _mm512_add_pd(e0, e1)));
        break;
    }
    case STATS1:
        for (size_t i = 0; i < N; i += 16) {
            const __m512 v = _mm512_sub_ps(_mm512_load_ps(b + i), m);
            s0 = _mm512_add_ps(s0, v);
            t1 = _mm512_fmadd_ps(v, v, t1);
        }
        break;
    case STATS4:
        for (size_t i = 0; i < N; i += 64) {
            const __m512 v0 = _mm512_sub_ps(_mm512_load_ps(b + i), m), v1 = _mm512_sub_ps(_mm512_load_ps(b + i + 16), m);
            const __m512 v2 = _mm512_sub_ps(_mm512_load_ps(b + i + 32), m), v3 = _mm512_sub_ps(_mm512_load_ps(b + i + 48), m);
            s0 = _mm512_add_ps(s0, v0);
            t1 = _mm512_fmadd_ps(v0, v0, t1);
            s1 = _mm512_add_ps(s1, v1);
            t2 = _mm512_fmadd_ps(v1, v1, t2);
            s2 = _mm512_add_ps(s2, v2);
            t3 = _mm512_fmadd_ps(v2, v2, t3);
            s3 = _mm512_add_ps(s3, v3);
            t4 = _mm512_fmadd_ps(v3, v3, t4);
        }
        break;
    case TRIAD:
        for (size_t i = 0; i < N; i += 16)
            _mm512_stream_ps(a + i, _mm512_fmadd_ps(_mm512_load_ps(c + i), k, _mm512_load_ps(b + i)));
        break;
    case BWD:
        for (size_t i = 0; i < N; i += 16) {
            const __m512 g = _mm512_load_ps(b + i), x = _mm512_load_ps(c + i);
            s0 = _mm512_add_ps(s0, g);
            t1 = _mm512_fmadd_ps(g, _mm512_sub_ps(x, m), t1);
            _mm512_stream_ps(a + i, _mm512_mul_ps(g, k));
        }
        break;
    case GRAD:
        for (size_t i = 0; i < N; i += 64) {
            const __m512 g0 = _mm512_load_ps(b + i), g1 = _mm512_load_ps(b + i + 16);
            const __m512 g2 = _mm512_load_ps(b + i + 32), g3 = _mm512_load_ps(b + i + 48);
            s0 = _mm512_add_ps(s0, g0);
            t1 = _mm512_fmadd_ps(g0, _mm512_sub_ps(_mm512_load_ps(c + i), m), t1);
            s1 = _mm512_add_ps(s1, g1);
            t2 = _mm512_fmadd_ps(g1, _mm512_sub_ps(_mm512_load_ps(c + i + 16), m), t2);
            s2 = _mm512_add_ps(s2, g2);
            t3 = _mm512_fmadd_ps(g2, _mm512_sub_ps(_mm512_load_ps(c + i + 32), m), t3);
            s3 = _mm512_add_ps(s3, g3);
            t4 = _mm512_fmadd_ps(g3, _mm512_sub_ps(_mm512_load_ps(c + i + 48), m), t4);
        }
        break;
    case WRITE:
        for (size_t i = 0; i < N; i += 16) _mm512_stream_ps(a + i, _mm512_setzero_ps());
        break;
    }
    _mm_sfence();
    const double t = omp_get_wtime() - t0;
    float r[16];
    _mm512_storeu_ps(r, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                                      _mm512_add_ps(_mm512_add_ps(t1, t2), _mm512_add_ps(t3, t4))));
    sink = r[0]; /* the sums are used */
    return t;
}

static int by_value(const void *x, const void *y) {
    const double p = *(const double *)x, q = *(const double *)y;
    return (p > q) - (p < q);
}

int main(void) {
    if (!__builtin_cpu_supports("avx512f")) {
        puts("memory_ceilings: this machine has no AVX-512; nothing measured");
        return 0;
    }
    a = aligned_alloc(64, N * sizeof(float));
    b = aligned_alloc(64, N * sizeof(float));
    c = aligned_alloc(64, N * sizeof(float));
    if (!a || !b || !c) {
        fputs("memory_ceilings: cannot allocate 3 x 100 MB\n", stderr);
        return 1;
    }
    for (size_t i = 0; i < N; i++) a[i] = 0, b[i] = (float)(i & 7), c[i] = (float)(i & 3);
    for (int kind = 0; kind < KINDS; kind++) {
        double runs[9];
        run(kind); /* warm-up */
        for (int r = 0; r < 9; r++) runs[r] = bytes_per_element[kind] * (double)(N * sizeof(float)) / run(kind) / 1e9;
        qsort(runs, 9, sizeof(double), by_value);
        printf("%-22s %6.1f GB/s\n", names[kind], runs[4]);
    }
    free(a), free(b), free(c);
    return 0;
}
