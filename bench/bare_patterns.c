/* bare_patterns: each batch-normalization operation's memory traffic, moved with no arithmetic.
 *
 * For one problem (shape, layout, element size, threads) it times the access patterns that an
 * implementation of each operation can take, with one integer operation per 64-byte vector in
 * place of the arithmetic: a sum of the bytes read (vpsadbw) and y = source XOR a constant. The
 * fastest pattern of an operation is how fast this machine moves that operation's bytes in that
 * order, whatever the arithmetic: bench/run.py puts it beside bnorm, so that a row that misses
 * its target shows whether the bytes alone could have met it (docs/performance.md).
 *
 * The patterns (every output is written after all the inputs it depends on have been read):
 *   fwd-infer   one pass:     read x, write y.
 *   bwd-infer   one pass:     read x and dy, write dx (the sums over x and dy come with it).
 *   fwd-train   two passes:   read all of x (the statistics), then read x and write y, each pass
 *                             split among the threads in the same contiguous ranges; the second
 *                             pass either in the same order or last block (64 KB) first, so that
 *                             it starts on what the first pass left in the caches;
 *               per channel:  channels-first only: each thread takes a block of channels and,
 *                             for each, reads its N planes and then writes them (re-reading x
 *                             from whichever cache still holds it), in the same order or last
 *                             plane first.
 *   backward    the same two orders with x and dy read in the first pass, and x and dy read and
 *               dx written in the second.
 * Each in two variants: outputs written with non-temporal stores (where a run is whole, aligned
 * cache lines) and with ordinary stores. Like bench_kernels, every call reuses the same buffers,
 * so problems that fit in a cache stay there between calls.
 *
 * Usage:
 *   bare_patterns SHAPE LAYOUT ELEMENT_BYTES THREADS [REPEATS [MIN_TIME]]
 *       SHAPE NxCxHxW or NxC (e.g. 32x64x112x112, 256x1024); LAYOUT nchw, nhwc or nc;
 *       ELEMENT_BYTES 2, 4 or 8; REPEATS (default 3) repetitions of at least MIN_TIME seconds
 *       (default 0.05) per pattern, after a warm-up call; prints JSON: every pattern's median
 *       time in milliseconds and, per operation, the fastest.
 *   bare_patterns --check
 *       runs every pattern once on small problems and checks each output byte and the sums of
 *       the bytes read (the CTest test); exits 1 on a mismatch.
 * Needs AVX-512 (F, BW): elsewhere it says so, in the JSON's "error" or on stdout with --check,
 * and exits 0.
 */
#include <errno.h>
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw")))
#define INLINE static inline __attribute__((always_inline))

enum { KEY = 0x5a }; /* y = source ^ KEY, byte by byte */

typedef struct {
    size_t n, c, s, e;  /* samples, channels, spatial elements per plane, bytes per element */
    int channels_first; /* NCHW; otherwise channels last (NHWC or (N, C)) */
    int threads;
} Problem;

typedef struct {
    unsigned char *x, *dy, *y;
    size_t bytes; /* of each tensor */
} Tensors;

enum Op { FWD_TRAIN, BACKWARD, FWD_INFER, BWD_INFER, OPS };
enum Order { ONE_PASS, TWO_PASSES, PER_CHANNEL };
enum { REVERSE_BLOCK = 64 << 10 }; /* bytes per block of a reversed second pass */
static const char *op_names[OPS] = {"fwd-train", "backward", "fwd-infer", "bwd-infer"};
static const char *order_names[] = {"one pass", "two passes", "per channel"};

typedef struct {
    enum Op op;
    enum Order order;
    int stream;
    int reverse; /* the second pass (two passes, per channel) last block or plane first */
} Pattern;

static volatile uint64_t sink;

/* The sum of the bytes of [p, p + len), and of [q, q + len) when two. */
TARGET INLINE uint64_t read_run(const unsigned char *p, const unsigned char *q, size_t len, int two) {
    const __m512i z = _mm512_setzero_si512();
    __m512i a0 = z, a1 = z;
    size_t i = 0;
    for (; i + 128 <= len; i += 128) {
        a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(_mm512_loadu_si512(p + i), z));
        a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_loadu_si512(p + i + 64), z));
        if (two) {
            a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(_mm512_loadu_si512(q + i), z));
            a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_loadu_si512(q + i + 64), z));
        }
    }
    for (; i < len; i += 64) {
        const size_t rest = len - i;
        const __mmask64 m = rest >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << rest) - 1);
        a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, p + i), z));
        if (two) a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, q + i), z));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(a0, a1));
}

/* y = src ^ KEY over [0, len), reading other too when two; returns the sum of the bytes read.
 * Non-temporal stores when stream and the run is whole, aligned cache lines. */
TARGET INLINE uint64_t write_run(unsigned char *y, const unsigned char *src, const unsigned char *other,
                                 size_t len, int two, int stream) {
    const __m512i z = _mm512_setzero_si512(), key = _mm512_set1_epi8((char)KEY);
    __m512i a0 = z, a1 = z;
    const int nt = stream && ((uintptr_t)y % 64 == 0) && len % 64 == 0;
    size_t i = 0;
    for (; i + 64 <= len; i += 64) {
        const __m512i v = _mm512_loadu_si512(src + i);
        a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(v, z));
        if (two) a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_loadu_si512(other + i), z));
        if (nt) _mm512_stream_si512((void *)(y + i), _mm512_xor_si512(v, key));
        else _mm512_storeu_si512(y + i, _mm512_xor_si512(v, key));
    }
    if (i < len) {
        const __mmask64 m = ((__mmask64)1 << (len - i)) - 1;
        const __m512i v = _mm512_maskz_loadu_epi8(m, src + i);
        a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(v, z));
        if (two) a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, other + i), z));
        _mm512_mask_storeu_epi8(y + i, m, _mm512_xor_si512(v, key));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(a0, a1));
}

/* The start of part `part` of `parts` of [0, bytes), on a cache-line boundary. */
static size_t split(size_t bytes, int part, int parts) {
    if (part >= parts) return bytes;
    const size_t at = (size_t)((double)bytes * part / parts) / 64 * 64;
    return at < bytes ? at : bytes;
}

/* Runs one pattern once; returns the sum of all the bytes it read. */
TARGET static uint64_t run(const Problem *pb, const Tensors *t, Pattern pt) {
    const int two = pt.op == BACKWARD || pt.op == BWD_INFER; /* inputs x and dy */
    const unsigned char *src = two ? t->dy : t->x;           /* the output is src ^ KEY */
    uint64_t total = 0;
#pragma omp parallel num_threads(pb->threads) reduction(+ : total)
    {
        const int id = omp_get_thread_num(), parts = omp_get_num_threads();
        if (pt.order == PER_CHANNEL) {
            const size_t plane = pb->s * pb->e;
            const size_t c0 = pb->c * (size_t)id / (size_t)parts, c1 = pb->c * (size_t)(id + 1) / (size_t)parts;
            for (size_t c = c0; c < c1; c++) {
                for (size_t n = 0; n < pb->n; n++) {
                    const size_t at = (n * pb->c + c) * plane;
                    total += read_run(t->x + at, t->dy + at, plane, two);
                }
                for (size_t k = 0; k < pb->n; k++) {
                    const size_t n = pt.reverse ? pb->n - 1 - k : k;
                    const size_t at = (n * pb->c + c) * plane;
                    total += write_run(t->y + at, src + at, t->x + at, plane, two, pt.stream);
                }
            }
        } else {
            const size_t lo = split(t->bytes, id, parts), hi = split(t->bytes, id + 1, parts);
            if (pt.order == TWO_PASSES) {
                total += read_run(t->x + lo, t->dy + lo, hi - lo, two);
#pragma omp barrier
            }
            if (pt.reverse) {
                /* blocks of REVERSE_BLOCK from the range's end, each in order (the first one short) */
                for (size_t end = hi; end > lo;) {
                    const size_t begin = end - lo > REVERSE_BLOCK ? end - REVERSE_BLOCK : lo;
                    total += write_run(t->y + begin, src + begin, t->x + begin, end - begin, two, pt.stream);
                    end = begin;
                }
            } else {
                total += write_run(t->y + lo, src + lo, t->x + lo, hi - lo, two, pt.stream);
            }
        }
        _mm_sfence();
    }
    return total;
}

enum { MAX_PATTERNS = 8 };

/* The patterns that implement op on this problem (at most MAX_PATTERNS). */
static int patterns(const Problem *pb, enum Op op, Pattern *out) {
    int k = 0;
    for (int stream = 1; stream >= 0; stream--) {
        if (op == FWD_INFER || op == BWD_INFER) {
            out[k++] = (Pattern){op, ONE_PASS, stream, 0};
            continue;
        }
        for (int reverse = 0; reverse <= 1; reverse++) {
            out[k++] = (Pattern){op, TWO_PASSES, stream, reverse};
            if (pb->channels_first) out[k++] = (Pattern){op, PER_CHANNEL, stream, reverse};
        }
    }
    return k;
}

static int by_value(const void *a, const void *b) {
    const double p = *(const double *)a, q = *(const double *)b;
    return (p > q) - (p < q);
}

/* The median over repeats of the mean time of one call, in ms, each repetition at least min_time. */
static double time_pattern(const Problem *pb, const Tensors *t, Pattern pt, int repeats, double min_time) {
    double t0 = omp_get_wtime();
    sink += run(pb, t, pt); /* warm-up */
    const double once = omp_get_wtime() - t0;
    long iters = (long)(min_time / (once > 1e-7 ? once : 1e-7)) + 1;
    if (iters > 100000) iters = 100000;
    double *ms = malloc(sizeof(double) * (size_t)repeats);
    if (!ms) return -1;
    for (int r = 0; r < repeats; r++) {
        t0 = omp_get_wtime();
        for (long i = 0; i < iters; i++) sink += run(pb, t, pt);
        ms[r] = (omp_get_wtime() - t0) * 1e3 / (double)iters;
    }
    qsort(ms, (size_t)repeats, sizeof(double), by_value);
    const double median = repeats % 2 ? ms[repeats / 2] : (ms[repeats / 2 - 1] + ms[repeats / 2]) / 2;
    free(ms);
    return median;
}

/* Allocates and fills the three tensors, each thread touching first what it will work on. */
static int alloc_tensors(const Problem *pb, Tensors *t) {
    t->bytes = pb->n * pb->c * pb->s * pb->e;
    const size_t padded = (t->bytes + 63) / 64 * 64;
    t->x = aligned_alloc(64, padded);
    t->dy = aligned_alloc(64, padded);
    t->y = aligned_alloc(64, padded);
    if (!t->x || !t->dy || !t->y) return -1;
#pragma omp parallel num_threads(pb->threads)
    {
        const int id = omp_get_thread_num(), parts = omp_get_num_threads();
        for (size_t i = split(t->bytes, id, parts); i < split(t->bytes, id + 1, parts); i++) {
            t->x[i] = (unsigned char)(i * 7 + 3);
            t->dy[i] = (unsigned char)(i * 13 + 1);
            t->y[i] = 0;
        }
    }
    return 0;
}

static void free_tensors(Tensors *t) {
    free(t->x), free(t->dy), free(t->y);
    t->x = t->dy = t->y = NULL;
}

/* Parses a positive size_t; 0 on error. */
static size_t parse_size(const char *s, char **end) {
    if (*s < '0' || *s > '9') return 0;
    errno = 0;
    const unsigned long long v = strtoull(s, end, 10);
    return errno ? 0 : (size_t)v;
}

/* SHAPE: NxCxHxW or NxC. Returns 0 on success. */
static int parse_shape(const char *text, Problem *pb) {
    size_t dims[4];
    int k = 0;
    const char *s = text;
    for (;;) {
        char *end;
        const size_t v = parse_size(s, &end);
        if (v == 0 || k == 4) return -1;
        dims[k++] = v;
        if (*end == '\0') break;
        if (*end != 'x') return -1;
        s = end + 1;
    }
    if (k != 2 && k != 4) return -1;
    pb->n = dims[0], pb->c = dims[1], pb->s = k == 4 ? dims[2] * dims[3] : 1;
    if (k == 4 && dims[2] != 0 && pb->s / dims[2] != dims[3]) return -1;
    return 0;
}

static int usage(const char *why) {
    fprintf(stderr,
            "bare_patterns: %s\n"
            "usage: bare_patterns SHAPE LAYOUT ELEMENT_BYTES THREADS [REPEATS [MIN_TIME]]\n"
            "       (SHAPE NxCxHxW or NxC; LAYOUT nchw, nhwc or nc; ELEMENT_BYTES 2, 4 or 8)\n"
            "       bare_patterns --check\n",
            why);
    return 2;
}

/* --check: every pattern on small problems; each output byte and the sums of the bytes read. */
TARGET static int check(void) {
    static const struct {
        size_t n, c, h, w, e;
        int channels_first;
    } cases[] = {
        {2, 3, 5, 7, 2, 1},  /* planes of 70 bytes: masked tails, no streaming */
        {3, 5, 4, 4, 4, 1},  /* planes of 64 bytes: whole lines, streamed */
        {2, 4, 9, 9, 4, 0},  /* channels last */
        {7, 5, 1, 1, 4, 0},  /* (N, C) */
        {2, 3, 50, 50, 2, 1},
        {4, 3, 100, 101, 4, 1}, /* reversed second passes of several 64 KB blocks, a short one */
        {2, 4, 90, 91, 4, 0},
        {1, 1, 1, 1, 8, 1},
    };
    int failures = 0, checked = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int threads = 1; threads <= 3; threads++) {
            Problem pb = {cases[k].n, cases[k].c, cases[k].h * cases[k].w, cases[k].e, cases[k].channels_first,
                          threads};
            Tensors t;
            if (alloc_tensors(&pb, &t)) {
                fputs("bare_patterns: out of memory\n", stderr);
                return 1;
            }
            uint64_t sum_x = 0, sum_dy = 0;
            for (size_t i = 0; i < t.bytes; i++) sum_x += t.x[i], sum_dy += t.dy[i];
            for (int op = 0; op < OPS; op++) {
                Pattern ps[MAX_PATTERNS];
                const int count = patterns(&pb, (enum Op)op, ps);
                for (int p = 0; p < count; p++) {
                    memset(t.y, 0, t.bytes);
                    const uint64_t got = run(&pb, &t, ps[p]);
                    const int two = op == BACKWARD || op == BWD_INFER;
                    const int passes = op == FWD_TRAIN || op == BACKWARD ? 2 : 1;
                    const uint64_t want = (uint64_t)passes * (sum_x + (two ? sum_dy : 0));
                    const unsigned char *src = two ? t.dy : t.x;
                    size_t bad = t.bytes;
                    for (size_t i = 0; i < t.bytes && bad == t.bytes; i++)
                        if (t.y[i] != (unsigned char)(src[i] ^ KEY)) bad = i;
                    checked++;
                    if (got != want || bad != t.bytes) {
                        failures++;
                        fprintf(stderr,
                                "bare_patterns --check: %zux%zux%zux%zu %s, %zu-byte elements, %d thread(s), %s, %s%s, "
                                "%s: sum of bytes read %llu, expected %llu; first wrong output byte %zu of %zu\n",
                                cases[k].n, cases[k].c, cases[k].h, cases[k].w,
                                cases[k].channels_first ? "channels first" : "channels last", cases[k].e, threads,
                                op_names[op], order_names[ps[p].order], ps[p].reverse ? " reversed" : "",
                                ps[p].stream ? "streamed" : "stored",
                                (unsigned long long)got, (unsigned long long)want, bad, t.bytes);
                    }
                }
            }
            free_tensors(&t);
        }
    }
    printf("bare_patterns --check: %d of %d patterns right\n", checked - failures, checked);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (argc == 2 && strcmp(argv[1], "--check") == 0) {
        if (!avx512) {
            puts("bare_patterns --check: skipped: this machine has no AVX-512 (F, BW), which the patterns need");
            return 0;
        }
        return check();
    }
    if (argc < 5 || argc > 7) return usage("expected 4 to 6 arguments");
    Problem pb = {0};
    if (parse_shape(argv[1], &pb)) return usage("SHAPE: expected NxCxHxW or NxC with positive sizes, e.g. 32x64x112x112");
    if (strcmp(argv[2], "nchw") == 0) pb.channels_first = 1;
    else if (strcmp(argv[2], "nhwc") == 0 || strcmp(argv[2], "nc") == 0) pb.channels_first = 0;
    else return usage("LAYOUT: expected nchw, nhwc or nc");
    char *end;
    pb.e = parse_size(argv[3], &end);
    if (*end || (pb.e != 2 && pb.e != 4 && pb.e != 8)) return usage("ELEMENT_BYTES: expected 2, 4 or 8");
    const size_t threads = parse_size(argv[4], &end);
    if (*end || threads == 0 || threads > 1024) return usage("THREADS: expected 1 to 1024");
    pb.threads = (int)threads;
    size_t repeats = 3;
    if (argc > 5) {
        repeats = parse_size(argv[5], &end);
        if (*end || repeats == 0 || repeats > 1000) return usage("REPEATS: expected 1 to 1000");
    }
    double min_time = 0.05;
    if (argc > 6) {
        min_time = strtod(argv[6], &end);
        if (*end || !(min_time >= 0 && min_time <= 60)) return usage("MIN_TIME: expected seconds from 0 to 60");
    }
    const double elements = (double)pb.n * (double)pb.c * (double)pb.s;
    if (elements * (double)pb.e > 8e9) return usage("SHAPE: more than 8 GB per tensor");

    printf("{\"shape\": \"%s\", \"layout\": \"%s\", \"element_bytes\": %zu, \"threads\": %d, ", argv[1], argv[2],
           pb.e, pb.threads);
    if (!avx512) {
        puts("\"error\": \"this machine has no AVX-512 (F, BW), which the patterns need\"}");
        return 0;
    }
    Tensors t;
    if (alloc_tensors(&pb, &t)) {
        fputs("bare_patterns: cannot allocate the three tensors\n", stderr);
        return 1;
    }
    printf("\"patterns\": [");
    double best[OPS];
    int best_at[OPS];
    Pattern best_pattern[OPS];
    int first = 1;
    for (int op = 0; op < OPS; op++) {
        Pattern ps[MAX_PATTERNS];
        const int count = patterns(&pb, (enum Op)op, ps);
        best[op] = -1, best_at[op] = -1;
        for (int p = 0; p < count; p++) {
            const double ms = time_pattern(&pb, &t, ps[p], (int)repeats, min_time);
            if (ms < 0) {
                fputs("bare_patterns: out of memory\n", stderr);
                return 1;
            }
            printf("%s\n  {\"op\": \"%s\", \"order\": \"%s%s\", \"stores\": \"%s\", \"ms\": %.6g}",
                   first ? "" : ",", op_names[op], order_names[ps[p].order], ps[p].reverse ? ", reversed" : "",
                   ps[p].stream ? "streamed" : "ordinary", ms);
            first = 0;
            if (best_at[op] < 0 || ms < best[op]) best[op] = ms, best_at[op] = p, best_pattern[op] = ps[p];
        }
    }
    printf("],\n\"ops\": {");
    for (int op = 0; op < OPS; op++)
        printf("%s\n  \"%s\": {\"ms\": %.6g, \"order\": \"%s%s\", \"stores\": \"%s\"}", op ? "," : "",
               op_names[op], best[op], order_names[best_pattern[op].order],
               best_pattern[op].reverse ? ", reversed" : "", best_pattern[op].stream ? "streamed" : "ordinary");
    puts("}}");
    free_tensors(&t);
    return 0;
}
