// c_api.cpp: the C ABI shim. Turns exceptions into bnorm_status plus a thread-local message.
#include <new>
#include <string>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"
#include "core/split_ops.hpp"
#include "core/threading.hpp"
#include "core/version.hpp"

namespace {

thread_local std::string last_error;

template <class F>
bnorm_status guarded(const char* op, F&& f) noexcept {
    try {
        f();
        return BNORM_OK;
    } catch (const bnorm::Error& e) {
        last_error = e.what();
        return e.status();
    } catch (const std::bad_alloc&) {
        last_error = std::string(op) + ": out of memory for the workspace; use smaller tensors";
        return BNORM_ENOMEM;
    } catch (const std::exception& e) {
        last_error = std::string(op) + ": internal error: " + e.what();
        return BNORM_EINTERNAL;
    } catch (...) {
        last_error = std::string(op) + ": internal error";
        return BNORM_EINTERNAL;
    }
}

}  // namespace

extern "C" {

bnorm_status bnorm_forward_training(const bnorm_desc* desc, const bnorm_options* options,
                                    const void* x, const void* weight, const void* bias,
                                    void* running_mean, void* running_var,
                                    int64_t* num_batches_tracked, void* y, void* save_mean,
                                    void* save_invstd) {
    constexpr const char* op = "bnorm_forward_training";
    return guarded(op, [&] {
        bnorm::detail::forward_training(op, desc, options, x, weight, bias, running_mean, running_var,
                                        num_batches_tracked, y, save_mean, save_invstd);
    });
}

bnorm_status bnorm_forward_inference(const bnorm_desc* desc, const bnorm_options* options,
                                     const void* x, const void* weight, const void* bias,
                                     const void* running_mean, const void* running_var, void* y) {
    constexpr const char* op = "bnorm_forward_inference";
    return guarded(op, [&] {
        bnorm::detail::forward_inference(op, desc, options, x, weight, bias, running_mean, running_var, y);
    });
}

bnorm_status bnorm_backward(const bnorm_desc* desc, const void* dy, const void* x,
                            const void* weight, const void* save_mean, const void* save_invstd,
                            void* dx, void* dweight, void* dbias) {
    constexpr const char* op = "bnorm_backward";
    return guarded(op, [&] {
        bnorm::detail::backward(op, desc, dy, x, weight, save_mean, save_invstd, dx, dweight, dbias);
    });
}

bnorm_status bnorm_backward_inference(const bnorm_desc* desc, const bnorm_options* options,
                                      const void* dy, const void* x, const void* weight,
                                      const void* running_mean, const void* running_var, void* dx,
                                      void* dweight, void* dbias) {
    constexpr const char* op = "bnorm_backward_inference";
    return guarded(op, [&] {
        bnorm::detail::backward_inference(op, desc, options, dy, x, weight, running_mean, running_var,
                                          dx, dweight, dbias);
    });
}

const char* bnorm_last_error(void) { return last_error.c_str(); }

int bnorm_set_num_threads(int n) { return bnorm::detail::set_num_threads(n); }

const char* bnorm_version(void) { return BNORM_VERSION_STRING; }

}  // extern "C"

// ---- the split operations of synchronized batch normalization (core/split_ops.hpp) -----------
extern "C" {

bnorm_status bnorm_local_statistics(const bnorm_desc* desc, const void* x, int64_t* count, double* mean,
                                    double* m2) {
    constexpr const char* op = "bnorm_local_statistics";
    return guarded(op, [&] { bnorm::detail::local_statistics(op, desc, x, count, mean, m2); });
}

bnorm_status bnorm_merge_statistics(int64_t parts, int64_t c, const int64_t* counts, const double* means,
                                    const double* m2s, int64_t* total_count, double* mean, double* m2) {
    constexpr const char* op = "bnorm_merge_statistics";
    return guarded(op, [&] { bnorm::detail::merge_statistics(op, parts, c, counts, means, m2s, total_count, mean, m2); });
}

bnorm_status bnorm_normalize_with_statistics(const bnorm_desc* desc, const bnorm_options* options, const void* x,
                                             const void* weight, const void* bias, int64_t total_count,
                                             const double* mean, const double* m2, void* running_mean,
                                             void* running_var, int64_t* num_batches_tracked, void* y,
                                             void* save_mean, void* save_invstd) {
    constexpr const char* op = "bnorm_normalize_with_statistics";
    return guarded(op, [&] {
        bnorm::detail::normalize_with_statistics(op, desc, options, x, weight, bias, total_count, mean, m2, running_mean,
                                                 running_var, num_batches_tracked, y, save_mean, save_invstd);
    });
}

bnorm_status bnorm_backward_reduce(const bnorm_desc* desc, const void* dy, const void* x, const void* save_mean,
                                   const void* save_invstd, double* sum_dy, double* sum_dy_xhat) {
    constexpr const char* op = "bnorm_backward_reduce";
    return guarded(op, [&] { bnorm::detail::backward_reduce(op, desc, dy, x, save_mean, save_invstd, sum_dy, sum_dy_xhat); });
}

bnorm_status bnorm_backward_elementwise(const bnorm_desc* desc, const void* dy, const void* x, const void* weight,
                                        const void* save_mean, const void* save_invstd, int64_t total_count,
                                        const double* sum_dy, const double* sum_dy_xhat, void* dx) {
    constexpr const char* op = "bnorm_backward_elementwise";
    return guarded(op, [&] {
        bnorm::detail::backward_elementwise(op, desc, dy, x, weight, save_mean, save_invstd, total_count, sum_dy,
                                            sum_dy_xhat, dx);
    });
}

}  // extern "C"
