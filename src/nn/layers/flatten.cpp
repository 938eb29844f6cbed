// Flatten: (N, d1, d2, ...) -> (N, d1 d2 ...), the features in the logical order (C, H, W) whatever
// the memory order, as torch.flatten(x, 1).
//   forward:  a copy, or for a channels-last (N, C, H, W) input the permutation (N, H, W, C) -> (N, C, H, W)
//   backward: the inverse: dx is dy reshaped to the input's shape, in the input's memory order
#include <algorithm>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {

const Tensor& Flatten::forward(const Tensor& input) {
    if (input.rank() < 2) detail::throw_bad_shape("Flatten::forward", "(N, d1, ...) with at least 2 dimensions", input);
    const int64_t n = input.dim(0);
    int64_t features = 1;
    for (size_t i = 1; i < input.rank(); ++i) features *= input.dim(i);
    input_shape_ = input.shape();
    input_channels_last_ = input.rank() == 4 && input.channels_last();
    detail::set_shape(output_, {n, features});
    const float* x = input.data();
    float* y = output_.data();
    if (!input_channels_last_) {
        std::copy_n(x, input.numel(), y);
        return output_;
    }
    const int64_t c = input.dim(1), pixels = input.dim(2) * input.dim(3);
    for (int64_t b = 0; b < n; ++b)
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t ch = 0; ch < c; ++ch) y[b * features + ch * pixels + p] = x[b * features + p * c + ch];
    return output_;
}

const Tensor& Flatten::backward(const Tensor& grad_output) {
    detail::check_grad_output("Flatten", !input_shape_.empty(), grad_output, output_);
    detail::set_shape(grad_input_, input_shape_, input_channels_last_);
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    if (!input_channels_last_) {
        std::copy_n(dy, grad_output.numel(), dx);
        return grad_input_;
    }
    const int64_t n = input_shape_[0], c = input_shape_[1], pixels = input_shape_[2] * input_shape_[3],
                  features = c * pixels;
    for (int64_t b = 0; b < n; ++b)
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t ch = 0; ch < c; ++ch) dx[b * features + p * c + ch] = dy[b * features + ch * pixels + p];
    return grad_input_;
}

}  // namespace bnorm::nn
