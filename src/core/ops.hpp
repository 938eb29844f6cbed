// ops.hpp: the checked operations. Both public interfaces (the C ABI in c_api.cpp, the C++ API in
// api.cpp) call these. Each validates every argument first (throwing bnorm::InvalidArgument or
// bnorm::Unsupported whose message starts with `op`, names the argument and says how to fix it),
// then dispatches to the first implementation that accepts the problem. Nothing is written to
// any output unless every check passes.
#pragma once

#include <cstdint>

#include <limits>

#include "bnorm/bnorm.hpp"

namespace bnorm::detail {

void forward_training(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                      const void* x, const void* weight, const void* bias, void* running_mean,
                      void* running_var, int64_t* num_batches_tracked, void* y, void* save_mean,
                      void* save_invstd);

void forward_inference(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                       const void* x, const void* weight, const void* bias,
                       const void* running_mean, const void* running_var, void* y);

void backward(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
              const void* weight, const void* save_mean, const void* save_invstd, void* dx,
              void* dweight, void* dbias);

void backward_inference(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                        const void* dy, const void* x, const void* weight,
                        const void* running_mean, const void* running_var, void* dx,
                        void* dweight, void* dbias);

// The C options of the C++ Options (momentum nullopt: NaN, the cumulative average).
inline bnorm_options to_c_options(const Options& o) {
    return bnorm_options{o.eps, o.momentum ? *o.momentum : std::numeric_limits<double>::quiet_NaN(),
                         o.running_var_unbiased ? 1 : 0};
}

// Validates options on their own (eps, momentum, running_var_unbiased): for the module's constructor.
void check_options(const char* op, const bnorm_options* options);

}  // namespace bnorm::detail
