// bnorm_case.hpp: one benchmark case run through libbnorm's C ABI, with its buffers. Used by
// bench_kernels (timed) and by bench_onednn (bnorm float32 as the reference oneDNN is checked
// against).
#pragma once

#include <bnorm/bnorm.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "cases.hpp"

namespace bench {

class BnormCase {
public:
    // dtype: what bnorm computes in; values_dtype: what the inputs are rounded to first (the
    // reference of a bf16 case is bnorm float32 on the same, bf16-representable, values).
    BnormCase(const Shape& s, Layout l, Op o, DType dtype, DType values_dtype)
        : op_(o), p_(s.c), sm_(s.c), si_(s.c), dg_(s.c), db_(s.c) {
        desc_ = {static_cast<bnorm_dtype>(dtype), l == Layout::nhwc ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST,
                 s.n, s.c, s.spatial()};
        opts_ = {kEps, kMomentum, 1};
        x_ = values(s, l, dtype, values_dtype, false);
        out_ = Buffer(dtype, s.count());
        if (is_backward(o)) dy_ = values(s, l, dtype, values_dtype, true);
        // The saved statistics that the training backward needs come from one training forward.
        if (o == Op::backward) {
            std::vector<float> rm = p_.running_mean, rv = p_.running_var;
            status_ = bnorm_forward_training(&desc_, &opts_, x_.data(), p_.gamma.data(), p_.beta.data(), rm.data(),
                                             rv.data(), nullptr, out_.data(), sm_.data(), si_.data());
        }
        if (status_ == BNORM_OK) status_ = run();  // warm-up, and the status to report
        if (status_ != BNORM_OK) error_ = bnorm_last_error();
    }

    bnorm_status run() {
        switch (op_) {
            case Op::fwd_train:
                return bnorm_forward_training(&desc_, &opts_, x_.data(), p_.gamma.data(), p_.beta.data(),
                                              p_.running_mean.data(), p_.running_var.data(), nullptr, out_.data(),
                                              sm_.data(), si_.data());
            case Op::fwd_infer:
                return bnorm_forward_inference(&desc_, &opts_, x_.data(), p_.gamma.data(), p_.beta.data(),
                                               p_.running_mean.data(), p_.running_var.data(), out_.data());
            case Op::backward:
                return bnorm_backward(&desc_, dy_.data(), x_.data(), p_.gamma.data(), sm_.data(), si_.data(),
                                      out_.data(), dg_.data(), db_.data());
            case Op::bwd_infer:
                return bnorm_backward_inference(&desc_, &opts_, dy_.data(), x_.data(), p_.gamma.data(),
                                                p_.running_mean.data(), p_.running_var.data(), out_.data(),
                                                dg_.data(), db_.data());
        }
        return BNORM_EINTERNAL;
    }

    bnorm_status status() const { return status_; }
    const std::string& error() const { return error_; }
    const Buffer& out() const { return out_; }  // y or dx of the last run
    const std::vector<float>& dgamma() const { return dg_; }
    const std::vector<float>& dbeta() const { return db_; }

private:
    static Buffer values(const Shape& s, Layout l, DType dtype, DType values_dtype, bool is_dy) {
        Buffer b(values_dtype, s.count());
        if (is_dy)
            fill_dy(b);
        else
            fill_x(b, s, l);
        return dtype == values_dtype ? std::move(b) : b.to_f32();
    }

    Op op_;
    bnorm_desc desc_{};
    bnorm_options opts_{};
    Params p_;
    Buffer x_, dy_, out_;
    std::vector<float> sm_, si_, dg_, db_;
    bnorm_status status_ = BNORM_OK;
    std::string error_;
};

// Status text for the JSON label when a case cannot run.
inline std::string unsupported_message(bnorm_status s, const std::string& error) {
    return std::string(s == BNORM_EUNSUPPORTED ? "unsupported: " : "error: ") + error;
}

}  // namespace bench
