/* bnorm.h: the stable C ABI of libbnorm, batch normalization for deep neural networks.
 *
 * For FFI users (Python ctypes, Rust, Julia) and C programs. Every entry point takes pointers to
 * contiguous buffers described by a bnorm_desc. The data buffers (x, y, dy, dx) hold elements of
 * desc->dtype: float, double, bfloat16 or IEEE float16 (the 16-bit ones as uint16_t bit patterns).
 * Parameter and statistics buffers (weight, bias, running_mean, running_var, save_mean,
 * save_invstd, dweight, dbias) have c elements and are double when desc->dtype is BNORM_F64, float
 * otherwise (also for BNORM_BF16 and BNORM_F16: the mixed-precision contract, with all arithmetic
 * and accumulation in float32, block sums gathered in float64). NULL is accepted where an argument is optional.
 *
 *   bnorm_desc d = {BNORM_F32, BNORM_CHANNELS_FIRST, 32, 64, 28 * 28};  // N, C, H*W
 *   bnorm_options o = {1e-5, 0.1, 1};                                   // PyTorch defaults
 *   if (bnorm_forward_training(&d, &o, x, gamma, beta, rmean, rvar, &nbt, y, smean, sinvstd))
 *       fprintf(stderr, "%s\n", bnorm_last_error());
 *   bnorm_backward(&d, dy, x, gamma, smean, sinvstd, dx, dgamma, dbeta);
 *
 * Semantics (docs/semantics.md has the formulas): for each channel c over its m = n*spatial values,
 * training forward normalizes with the batch mean and biased variance, saves mean and
 * invstd = 1/sqrt(var + eps), and, when running_mean/running_var are given, updates them with
 * running = (1 - momentum)*running + momentum*batch (momentum NaN: cumulative average, weight
 * 1/num_batches_tracked after incrementing it). running_var receives the unbiased variance
 * var*m/(m-1) when running_var_unbiased is 1 (PyTorch), the biased one when 0 (ONNX).
 *
 * Errors: every entry point validates all arguments before writing anything. On failure it
 * returns a non-zero bnorm_status, writes nothing to any output, and bnorm_last_error() returns a
 * message (thread-local, valid until the next failing call on the same thread) naming the bad
 * argument and how to fix it. In-place use (y == x; dx == dy or dx == x) is allowed; other overlaps
 * are not.
 */
#ifndef BNORM_BNORM_H
#define BNORM_BNORM_H

#include <stdint.h>

#if defined(_WIN32)
#define BNORM_API __declspec(dllexport)
#else
#define BNORM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BNORM_OK = 0,
    BNORM_EINVAL = 1,      /* a bad argument: bnorm_last_error() says which and how to fix it */
    BNORM_EUNSUPPORTED = 2, /* a valid request that this build cannot serve */
    BNORM_ENOMEM = 3,
    BNORM_EINTERNAL = 4
} bnorm_status;

typedef enum { BNORM_F32 = 0, BNORM_F64 = 1, BNORM_BF16 = 2, BNORM_F16 = 3 } bnorm_dtype;

/* channels-first: (n, c, spatial...), channels-last: (n, spatial..., c); both contiguous. */
typedef enum { BNORM_CHANNELS_FIRST = 0, BNORM_CHANNELS_LAST = 1 } bnorm_layout;

typedef struct {
    bnorm_dtype dtype;
    bnorm_layout layout;
    int64_t n, c, spatial; /* spatial: product of the spatial sizes, 1 for (N, C) input */
} bnorm_desc;

typedef struct {
    double eps;               /* >= 0, added to the variance */
    double momentum;          /* weight of the new batch; NaN: cumulative average (PyTorch momentum=None) */
    int running_var_unbiased; /* 1: running_var gets var*m/(m-1) (PyTorch), 0: biased var (ONNX-15) */
} bnorm_options;

/* Training forward. Required: desc, options, x, y. Optional: weight, bias (gamma = 1, beta = 0),
 * running_mean + running_var (together; NULL: statistics not tracked, nothing is updated),
 * num_batches_tracked (incremented when statistics are tracked; required when they are tracked
 * and momentum is NaN),
 * save_mean, save_invstd. Requires m = n*spatial >= 2. */
BNORM_API bnorm_status bnorm_forward_training(const bnorm_desc* desc, const bnorm_options* options,
                                              const void* x, const void* weight, const void* bias,
                                              void* running_mean, void* running_var,
                                              int64_t* num_batches_tracked, void* y,
                                              void* save_mean, void* save_invstd);

/* Inference forward with the running statistics (required): y = x*scale + shift per channel,
 * scale = gamma/sqrt(running_var + eps), shift = beta - running_mean*scale. options->momentum is unused. */
BNORM_API bnorm_status bnorm_forward_inference(const bnorm_desc* desc, const bnorm_options* options,
                                               const void* x, const void* weight, const void* bias,
                                               const void* running_mean, const void* running_var,
                                               void* y);

/* Backward of the training forward. Required: dy, x, save_mean, save_invstd, dx.
 * Optional: weight (gamma = 1), dweight, dbias (not computed when NULL). */
BNORM_API bnorm_status bnorm_backward(const bnorm_desc* desc, const void* dy, const void* x,
                                      const void* weight, const void* save_mean,
                                      const void* save_invstd, void* dx, void* dweight, void* dbias);

/* Backward of the inference forward (frozen statistics). Required: dy, x, running_mean,
 * running_var, dx. Optional: weight, dweight, dbias. */
BNORM_API bnorm_status bnorm_backward_inference(const bnorm_desc* desc, const bnorm_options* options,
                                                const void* dy, const void* x, const void* weight,
                                                const void* running_mean, const void* running_var,
                                                void* dx, void* dweight, void* dbias);

/* The message of the last failing call on this thread ("" if none). */
BNORM_API const char* bnorm_last_error(void);

/* Sets the number of threads of the CPU kernels and returns the previous value. n <= 0 restores
 * the default: BNORM_NUM_THREADS from the environment if it is a positive integer, else the
 * number of cores. Results are bitwise identical for every thread count. */
BNORM_API int bnorm_set_num_threads(int n);

/* The library's version, "MAJOR.MINOR.PATCH". */
BNORM_API const char* bnorm_version(void);

/* ---- split operations: the parts of synchronized batch normalization ------------------------
 * Any transport (MPI, NCCL, sockets) can build batch normalization over a batch split across
 * processes from these five calls (docs/distributed.md):
 *
 *   bnorm_local_statistics(&d, x, &count, mean, m2);              // this process's part, n may be 0
 *   ... allgather (count, mean, m2) of every process ...
 *   bnorm_merge_statistics(parts, c, counts, means, m2s, &total, gmean, gm2);
 *   bnorm_normalize_with_statistics(&d, &o, x, gamma, beta, total, gmean, gm2, rmean, rvar, &nbt,
 *                                   y, smean, sinvstd);
 *   bnorm_backward_reduce(&d, dy, x, smean, sinvstd, sum_dy, sum_dy_xhat);  // then allreduce (sum)
 *   bnorm_backward_elementwise(&d, dy, x, gamma, smean, sinvstd, total, sum_dy, sum_dy_xhat, dx);
 *
 * Statistics are always double, whatever desc->dtype: count (values per channel, n*spatial),
 * mean and m2 (the sum of squared deviations from the mean) per channel. desc->n may be 0 in all
 * five (a process with no samples still joins the collectives). */

/* count = n*spatial; mean[c], m2[c] of this part (0 and 0 when count is 0). Required: desc, x
 * (may be NULL when n is 0), count, mean, m2 (c doubles each). */
BNORM_API bnorm_status bnorm_local_statistics(const bnorm_desc* desc, const void* x, int64_t* count,
                                              double* mean, double* m2);

/* Merges `parts` statistics of c channels in the order 0, 1, ..., parts-1 with Chan, Golub &
 * LeVeque's pairwise formula (deterministic: the same inputs give the same bits). means and m2s are
 * (parts, c), row-major; counts has parts entries >= 0 (parts with count 0 are skipped). Writes
 * total_count (the sum of counts) and mean, m2 (c each; 0 when the total is 0). */
BNORM_API bnorm_status bnorm_merge_statistics(int64_t parts, int64_t c, const int64_t* counts,
                                              const double* means, const double* m2s,
                                              int64_t* total_count, double* mean, double* m2);

/* The training forward with given (global) statistics: var = m2/total_count, y, save_mean,
 * save_invstd as bnorm_forward_training, and the running statistics updated as there with the
 * unbiased variance m2/(total_count - 1) (or the biased one, options->running_var_unbiased = 0).
 * Requires total_count >= 2 and total_count >= desc->n*desc->spatial. */
BNORM_API bnorm_status bnorm_normalize_with_statistics(
    const bnorm_desc* desc, const bnorm_options* options, const void* x, const void* weight,
    const void* bias, int64_t total_count, const double* mean, const double* m2, void* running_mean,
    void* running_var, int64_t* num_batches_tracked, void* y, void* save_mean, void* save_invstd);

/* This part's backward sums per channel: sum_dy[c] = sum dy, sum_dy_xhat[c] = sum dy*xhat with
 * xhat = (x - save_mean)*save_invstd. Summed over the parts they give dbias and dweight. */
BNORM_API bnorm_status bnorm_backward_reduce(const bnorm_desc* desc, const void* dy, const void* x,
                                             const void* save_mean, const void* save_invstd,
                                             double* sum_dy, double* sum_dy_xhat);

/* dx = gamma*invstd/M*(M*dy - sum_dy - xhat*sum_dy_xhat) with M = total_count and the sums over
 * all parts. dx may be dy or x (in place). Optional: weight (gamma = 1). */
BNORM_API bnorm_status bnorm_backward_elementwise(const bnorm_desc* desc, const void* dy, const void* x,
                                                  const void* weight, const void* save_mean,
                                                  const void* save_invstd, int64_t total_count,
                                                  const double* sum_dy, const double* sum_dy_xhat,
                                                  void* dx);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_BNORM_H */
