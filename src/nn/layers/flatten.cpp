// Flatten: (N, d1, d2, ...) -> (N, d1 d2 ...), the features in the logical order (C, H, W) whatever
// the memory order, as torch.flatten(x, 1).
//   forward:  a read-only view of the input (no copy), or for a channels-last (N, C, H, W) input the
//             permutation (N, H, W, C) -> (N, C, H, W)
//   backward: the inverse: dx is dy reshaped to the input's shape (a view), in the input's memory order
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
    if (!input_channels_last_) {
        output_.view(input, 0, {n, features});
        return output_;
    }
    detail::set_shape(output_, {n, features});
    const float* x = input.data();
    float* y = output_.data();
    const int64_t c = input.dim(1), pixels = input.dim(2) * input.dim(3);
    for (int64_t b = 0; b < n; ++b)
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t ch = 0; ch < c; ++ch) y[b * features + ch * pixels + p] = x[b * features + p * c + ch];
    return output_;
}

const Tensor& Flatten::backward(const Tensor& grad_output) {
    detail::check_grad_output("Flatten", !input_shape_.empty(), grad_output, output_);
    if (!input_channels_last_) {
        // Ranks 2 to 4 come here (the layers' tensors); a view takes its shape as a braced list.
        const std::vector<int64_t>& s = input_shape_;
        if (s.size() == 2) grad_input_.view(grad_output, 0, {s[0], s[1]});
        else if (s.size() == 3) grad_input_.view(grad_output, 0, {s[0], s[1], s[2]});
        else if (s.size() == 4) grad_input_.view(grad_output, 0, {s[0], s[1], s[2], s[3]});
        else {
            detail::set_shape(grad_input_, input_shape_);
            std::copy_n(grad_output.data(), grad_output.numel(), grad_input_.data());
        }
        return grad_input_;
    }
    detail::set_shape(grad_input_, input_shape_, input_channels_last_);
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    const int64_t n = input_shape_[0], c = input_shape_[1], pixels = input_shape_[2] * input_shape_[3],
                  features = c * pixels;
    for (int64_t b = 0; b < n; ++b)
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t ch = 0; ch < c; ++ch) dx[b * features + p * c + ch] = dy[b * features + ch * pixels + p];
    return grad_input_;
}

}  // namespace bnorm::nn
