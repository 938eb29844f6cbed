/* ab_pair: a paired A/B of two builds of libbnorm on one case, in one process.
 *
 *   ab_pair A.so B.so SHAPE LAYOUT DTYPE OP THREADS CALLS [RUNS]
 *     SHAPE   NxCxHxW or NxC (e.g. 64x256x14x14, 256x1024)
 *     LAYOUT  nchw, nhwc or nc;  DTYPE f32, bf16 or f16
 *     OP      fwd-train, backward, fwd-infer or bwd-infer
 *     THREADS the kernels' threads (bnorm_set_num_threads), CALLS the timed calls of each library
 *     RUNS    calls in a row of one library, of which the last is timed (default 2)
 *
 * Both libraries are loaded (dlopen, RTLD_LOCAL: each resolves its own symbols) and called in
 * turn on the same buffers, A then B, then B then A, and so on; each timed call comes after RUNS - 1
 * untimed calls of the same library. On this project's shared hosts, whose speed changes from
 * second to second, the ratio of the two calls of a pair varies far less than either time, and
 * bench/ab.sh (each library a whole process after the other) needs many rounds to see a 5% change.
 * RUNS > 1 matters: a kernel's time depends on what the previous calls left in the caches and the
 * prefetchers, and a call of one library right after the other's measures that mixture (an access
 * order took 7.4-8.3 ms after itself and 11.3 ms after another order, 8x32x256x256 float32
 * backward). Prints, per library, the lowest, lower quartile and median time in ms, and the
 * median and quartiles of the ratio B/A over the pairs; then whether one call of each, from the
 * same inputs and parameters, gives bitwise the same outputs (y or dx, and every per-channel value:
 * running and saved statistics, dgamma, dbeta). Exits 2 on bad arguments, 1 when a call fails.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bnorm/bnorm.h"

typedef bnorm_status (*forward_training_fn)(const bnorm_desc*, const bnorm_options*, const void*, const void*,
                                            const void*, void*, void*, int64_t*, void*, void*, void*);
typedef bnorm_status (*forward_inference_fn)(const bnorm_desc*, const bnorm_options*, const void*, const void*,
                                             const void*, const void*, const void*, void*);
typedef bnorm_status (*backward_fn)(const bnorm_desc*, const void*, const void*, const void*, const void*,
                                    const void*, void*, void*, void*);
typedef bnorm_status (*backward_inference_fn)(const bnorm_desc*, const bnorm_options*, const void*, const void*,
                                              const void*, const void*, const void*, void*, void*, void*);
typedef int (*set_threads_fn)(int);
typedef const char* (*last_error_fn)(void);

typedef struct {
    forward_training_fn forward_training;
    forward_inference_fn forward_inference;
    backward_fn backward;
    backward_inference_fn backward_inference;
    set_threads_fn set_num_threads;
    last_error_fn last_error;
} Library;

enum Op { FWD_TRAIN, BACKWARD, FWD_INFER, BWD_INFER };

static int usage(const char* why) {
    fprintf(stderr,
            "ab_pair: %s\nusage: ab_pair A.so B.so SHAPE LAYOUT DTYPE OP THREADS CALLS [RUNS]\n"
            "  SHAPE NxCxHxW or NxC; LAYOUT nchw, nhwc or nc; DTYPE f32, bf16 or f16;\n"
            "  OP fwd-train, backward, fwd-infer or bwd-infer; THREADS, CALLS, RUNS positive integers\n",
            why);
    return 2;
}

static int positive(const char* s, long* out) {
    char* end = NULL;
    const long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v <= 0 || v > 1000000) return 0;
    *out = v;
    return 1;
}

static int load(const char* path, Library* l) {
    void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "ab_pair: cannot load %s: %s\n", path, dlerror());
        return 0;
    }
    /* Function pointers from dlsym: through memcpy, which ISO C allows from a void pointer. */
    void* p[6] = {dlsym(h, "bnorm_forward_training"), dlsym(h, "bnorm_forward_inference"), dlsym(h, "bnorm_backward"),
                  dlsym(h, "bnorm_backward_inference"), dlsym(h, "bnorm_set_num_threads"), dlsym(h, "bnorm_last_error")};
    for (int i = 0; i < 6; ++i)
        if (!p[i]) {
            fprintf(stderr, "ab_pair: %s is not a libbnorm (a bnorm_ function is missing)\n", path);
            return 0;
        }
    memcpy(&l->forward_training, &p[0], sizeof p[0]);
    memcpy(&l->forward_inference, &p[1], sizeof p[1]);
    memcpy(&l->backward, &p[2], sizeof p[2]);
    memcpy(&l->backward_inference, &p[3], sizeof p[3]);
    memcpy(&l->set_num_threads, &p[4], sizeof p[4]);
    memcpy(&l->last_error, &p[5], sizeof p[5]);
    return 1;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int compare(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* float to IEEE binary16 bits, round to nearest even (the values here are normal and small). */
static uint16_t to_half(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    const uint32_t sign = (b >> 16) & 0x8000u;
    const int32_t exponent = (int32_t)((b >> 23) & 0xff) - 127 + 15;
    uint32_t mantissa = b & 0x7fffffu;
    if (exponent <= 0) return (uint16_t)sign; /* below float16's normal range: zero (not generated) */
    uint32_t h = ((uint32_t)exponent << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
}

static void put(unsigned char* p, size_t i, bnorm_dtype dtype, float v) {
    if (dtype == BNORM_F32) {
        memcpy(p + 4 * i, &v, 4);
    } else if (dtype == BNORM_BF16) {
        uint32_t b;
        memcpy(&b, &v, 4);
        b += 0x7fffu + ((b >> 16) & 1u);
        const uint16_t h = (uint16_t)(b >> 16);
        memcpy(p + 2 * i, &h, 2);
    } else {
        const uint16_t h = to_half(v);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* The parameters of one call: gamma, beta, running mean and variance, saved mean and inverse
 * standard deviation (inputs of the backward passes), dgamma, dbeta; c floats each. */
typedef struct {
    float *gamma, *beta, *mean, *var, *save_mean, *save_invstd, *dgamma, *dbeta;
} Params;

static Params params_at(float* p, size_t c) {
    const Params r = {p, p + c, p + 2 * c, p + 3 * c, p + 4 * c, p + 5 * c, p + 6 * c, p + 7 * c};
    return r;
}

static void reset(float* p, size_t c) {
    const Params q = params_at(p, c);
    memset(p, 0, 8 * c * sizeof(float));
    for (size_t i = 0; i < c; ++i) {
        q.gamma[i] = 1.1f;
        q.beta[i] = 0.1f;
        q.mean[i] = q.save_mean[i] = 0.5f;
        q.var[i] = 1.3f;
        q.save_invstd[i] = 0.9f;
    }
}

static bnorm_status call(const Library* l, enum Op op, const bnorm_desc* desc, const void* x, const void* dy,
                         void* out, const Params* q) {
    const bnorm_options options = {1e-5, 0.1, 1};
    switch (op) {
        case FWD_TRAIN:
            return l->forward_training(desc, &options, x, q->gamma, q->beta, q->mean, q->var, NULL, out, q->save_mean,
                                       q->save_invstd);
        case FWD_INFER: return l->forward_inference(desc, &options, x, q->gamma, q->beta, q->mean, q->var, out);
        case BACKWARD: return l->backward(desc, dy, x, q->gamma, q->save_mean, q->save_invstd, out, q->dgamma, q->dbeta);
        default:
            return l->backward_inference(desc, &options, dy, x, q->gamma, q->mean, q->var, out, q->dgamma, q->dbeta);
    }
}

int main(int argc, char** argv) {
    if (argc < 9 || argc > 10) return usage("expected 8 or 9 arguments");
    long dims[4] = {1, 1, 1, 1}, threads, calls, runs = 2;
    int ndims = 0;
    for (const char* s = argv[3]; ndims < 4;) {
        char* end = NULL;
        const long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > (1L << 30)) return usage("SHAPE: positive sizes separated by 'x', e.g. 64x256x14x14");
        dims[ndims++] = v;
        if (*end == '\0') break;
        if (*end != 'x') return usage("SHAPE: positive sizes separated by 'x', e.g. 64x256x14x14");
        s = end + 1;
    }
    if (ndims != 2 && ndims != 4) return usage("SHAPE: NxC or NxCxHxW");
    bnorm_layout layout;
    if (!strcmp(argv[4], "nchw")) layout = BNORM_CHANNELS_FIRST;
    else if (!strcmp(argv[4], "nhwc") || !strcmp(argv[4], "nc")) layout = BNORM_CHANNELS_LAST;
    else return usage("LAYOUT: nchw, nhwc or nc");
    if ((ndims == 2) != !strcmp(argv[4], "nc")) return usage("LAYOUT: nc for an NxC shape, nchw or nhwc for NxCxHxW");
    bnorm_dtype dtype;
    if (!strcmp(argv[5], "f32")) dtype = BNORM_F32;
    else if (!strcmp(argv[5], "bf16")) dtype = BNORM_BF16;
    else if (!strcmp(argv[5], "f16")) dtype = BNORM_F16;
    else return usage("DTYPE: f32, bf16 or f16");
    enum Op op;
    if (!strcmp(argv[6], "fwd-train")) op = FWD_TRAIN;
    else if (!strcmp(argv[6], "backward")) op = BACKWARD;
    else if (!strcmp(argv[6], "fwd-infer")) op = FWD_INFER;
    else if (!strcmp(argv[6], "bwd-infer")) op = BWD_INFER;
    else return usage("OP: fwd-train, backward, fwd-infer or bwd-infer");
    if (!positive(argv[7], &threads)) return usage("THREADS: a positive integer");
    if (!positive(argv[8], &calls)) return usage("CALLS: a positive integer");
    if (argc == 10 && !positive(argv[9], &runs)) return usage("RUNS: a positive integer");

    Library lib[2];
    if (!load(argv[1], &lib[0]) || !load(argv[2], &lib[1])) return 2;
    const bnorm_desc desc = {dtype, layout, dims[0], dims[1], dims[2] * dims[3]};
    const size_t n = (size_t)(desc.n * desc.c * desc.spatial), element = dtype == BNORM_F32 ? 4 : 2;
    const size_t bytes = (n * element + 63) / 64 * 64, c = (size_t)desc.c;
    unsigned char* x = aligned_alloc(64, bytes);
    unsigned char* dy = aligned_alloc(64, bytes);
    unsigned char* out = aligned_alloc(64, bytes);
    unsigned char* out_b = aligned_alloc(64, bytes);
    float* params = malloc(8 * c * sizeof(float));
    float* params_b = malloc(8 * c * sizeof(float));
    double* times[2] = {malloc((size_t)calls * sizeof(double)), malloc((size_t)calls * sizeof(double))};
    double* ratio = malloc((size_t)calls * sizeof(double));
    if (!x || !dy || !out || !out_b || !params || !params_b || !times[0] || !times[1] || !ratio) {
        fprintf(stderr, "ab_pair: out of memory for %zu-byte tensors\n", bytes);
        return 2;
    }
    uint32_t state = 1;
    for (size_t i = 0; i < n; ++i) {
        state = state * 1664525u + 1013904223u;
        put(x, i, dtype, (float)((state >> 8) & 0xffffu) / 65536.0f * 4.0f - 1.5f);
        state = state * 1664525u + 1013904223u;
        put(dy, i, dtype, (float)((state >> 8) & 0xffffu) / 65536.0f * 2.0f - 1.0f);
    }
    memset(out, 0, bytes);
    memset(out_b, 0, bytes);
    reset(params, c);
    const Params q = params_at(params, c);
    for (int k = 0; k < 2; ++k) lib[k].set_num_threads((int)threads);
    for (long r = -1; r < calls; ++r) /* r = -1: a warm-up pair */
        for (int turn = 0; turn < 2; ++turn) {
            const int k = (r & 1) ? 1 - turn : turn;
            double start = 0;
            for (long run = 0; run < runs; ++run) {
                start = now_ms();
                if (call(&lib[k], op, &desc, x, dy, out, &q) != BNORM_OK) {
                    fprintf(stderr, "ab_pair: %s failed: %s\n", argv[1 + k], lib[k].last_error());
                    return 1;
                }
            }
            if (r >= 0) times[k][r] = now_ms() - start;
        }
    for (long r = 0; r < calls; ++r) ratio[r] = times[1][r] / times[0][r];
    qsort(ratio, (size_t)calls, sizeof(double), compare);
    for (int k = 0; k < 2; ++k) {
        qsort(times[k], (size_t)calls, sizeof(double), compare);
        printf("%s: lowest %.4f, lower quartile %.4f, median %.4f ms\n", k ? "B" : "A", times[k][0],
               times[k][calls / 4], times[k][calls / 2]);
    }
    printf("B/A: median %.3f (quartiles %.3f, %.3f) over %ld pairs\n", ratio[calls / 2], ratio[calls / 4],
           ratio[3 * calls / 4], calls);
    /* One more call of each from the same parameters: whether the two builds agree bitwise. */
    float* const call_params[2] = {params, params_b};
    unsigned char* const call_out[2] = {out, out_b};
    for (int k = 0; k < 2; ++k) {
        reset(call_params[k], c);
        const Params qk = params_at(call_params[k], c);
        if (call(&lib[k], op, &desc, x, dy, call_out[k], &qk) != BNORM_OK) {
            fprintf(stderr, "ab_pair: %s failed: %s\n", argv[1 + k], lib[k].last_error());
            return 1;
        }
    }
    size_t differ = 0, differ_params = 0;
    for (size_t i = 0; i < n; ++i) differ += memcmp(out + i * element, out_b + i * element, element) != 0;
    for (size_t i = 0; i < 8 * c; ++i) differ_params += memcmp(params + i, params_b + i, sizeof(float)) != 0;
    if (differ == 0 && differ_params == 0)
        printf("outputs: bitwise equal\n");
    else
        printf("outputs: differ in %zu of %zu elements and %zu of %zu per-channel values\n", differ, n, differ_params,
               8 * c);
    free(x);
    free(dy);
    free(out);
    free(out_b);
    free(params);
    free(params_b);
    free(times[0]);
    free(times[1]);
    free(ratio);
    return 0;
}
