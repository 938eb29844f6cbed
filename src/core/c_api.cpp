// c_api.cpp: the C ABI shim. Turns exceptions into bnorm_status plus a thread-local message.
#include <new>
#include <string>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"
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
