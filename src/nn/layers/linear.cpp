// Linear: y = x W^T + b, through CBLAS.
//   x (N, in)   W "weight" (out, in)   b "bias" (out)   y (N, out)
//   forward:  y = x W^T + b
//   backward: dx = dy W (N, in)   dW = dy^T x (out, in)   db = sum over N of dy (out)
#include <cblas.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias)
    : in_features_(in_features), out_features_(out_features), has_bias_(bias) {
    if (in_features <= 0 || out_features <= 0)
        throw std::invalid_argument("Linear: in_features = " + std::to_string(in_features) + " and out_features = " +
                                    std::to_string(out_features) + " must both be at least 1");
    weight_.resize({out_features, in_features});
    weight_.fill(0.0f);
    grad_weight_.resize({out_features, in_features});
    grad_weight_.fill(0.0f);
    bias_.resize({has_bias_ ? out_features : 0});
    bias_.fill(0.0f);
    grad_bias_.resize({has_bias_ ? out_features : 0});
    grad_bias_.fill(0.0f);
}

std::vector<Parameter> Linear::parameters() {
    std::vector<Parameter> out{{"weight", &weight_, &grad_weight_}};
    if (has_bias_) out.push_back({"bias", &bias_, &grad_bias_});
    return out;
}

const Tensor& Linear::forward(const Tensor& input) {
    if (input.rank() != 2 || input.dim(1) != in_features_)
        detail::throw_bad_shape("Linear::forward", "(N, " + std::to_string(in_features_) + ")", input);
    const int64_t n = input.dim(0);
    detail::set_shape(output_, {n, out_features_});
    input_ = &input;
    if (n == 0) return output_;
    const auto rows = static_cast<int>(n), in = static_cast<int>(in_features_), out = static_cast<int>(out_features_);
    float beta = 0.0f;
    if (has_bias_) {
        for (int64_t i = 0; i < n; ++i) std::copy_n(bias_.data(), out_features_, output_.data() + i * out_features_);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, input.data(), in, weight_.data(), in,
                beta, output_.data(), out);
    return output_;
}

const Tensor& Linear::backward(const Tensor& grad_output) {
    detail::check_grad_output("Linear", input_ != nullptr, grad_output, output_);
    const Tensor& input = *input_;
    const int64_t n = input.dim(0);
    detail::set_shape(grad_input_, {n, in_features_});
    const auto rows = static_cast<int>(n), in = static_cast<int>(in_features_), out = static_cast<int>(out_features_);
    if (n == 0) {
        grad_weight_.fill(0.0f);
        grad_bias_.fill(0.0f);
        return grad_input_;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, rows, 1.0f, grad_output.data(), out, input.data(), in,
                0.0f, grad_weight_.data(), in);
    if (has_bias_) {
        float* db = grad_bias_.data();
        std::fill_n(db, out_features_, 0.0f);
        for (int64_t i = 0; i < n; ++i) {
            const float* dy = grad_output.data() + i * out_features_;
            for (int64_t j = 0; j < out_features_; ++j) db[j] += dy[j];
        }
    }
    if (input_grad_needed_)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, out, 1.0f, grad_output.data(), out,
                    weight_.data(), in, 0.0f, grad_input_.data(), in);
    return grad_input_;
}

}  // namespace bnorm::nn
