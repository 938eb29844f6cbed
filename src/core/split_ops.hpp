// split_ops.hpp: the checked split operations of synchronized batch normalization (bnorm.h,
// "split operations"). Both public interfaces call these; each validates every argument first
// (throwing bnorm::InvalidArgument or bnorm::Unsupported whose message starts with `op`, names
// the argument and says how to fix it), then dispatches. Nothing is written unless all checks pass.
#pragma once

#include <cstdint>

#include "bnorm/bnorm.h"

namespace bnorm::detail {

void local_statistics(const char* op, const bnorm_desc* desc, const void* x, int64_t* count, double* mean,
                      double* m2);

void merge_statistics(const char* op, int64_t parts, int64_t c, const int64_t* counts, const double* means,
                      const double* m2s, int64_t* total_count, double* mean, double* m2);

void normalize_with_statistics(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                               const void* x, const void* weight, const void* bias, int64_t total_count,
                               const double* mean, const double* m2, void* running_mean, void* running_var,
                               int64_t* num_batches_tracked, void* y, void* save_mean, void* save_invstd);

void backward_reduce(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
                     const void* save_mean, const void* save_invstd, double* sum_dy, double* sum_dy_xhat);

void backward_elementwise(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
                          const void* weight, const void* save_mean, const void* save_invstd,
                          int64_t total_count, const double* sum_dy, const double* sum_dy_xhat, void* dx);

}  // namespace bnorm::detail
