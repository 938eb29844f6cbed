// MaxPool2d: the maximum over kernel x kernel windows taken every `stride` pixels, no padding.
//   x (N, C, H, W) -> y (N, C, H', W'), H' = (H - k) / stride + 1, both in the input's memory order
//   forward:  y[n, c, oh, ow] = max over the window at (oh stride, ow stride); argmax keeps where
//             (the first maximum in row-major window order, as torch's CPU kernel)
//   backward: dx = 0, then dx[argmax[i]] += dy[i] for every output element i
#include <stdexcept>
#include <string>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {

MaxPool2d::MaxPool2d(int64_t kernel_size, std::optional<int64_t> stride)
    : kernel_size_(kernel_size), stride_(stride.value_or(kernel_size)) {
    if (kernel_size <= 0 || stride_ <= 0)
        throw std::invalid_argument("MaxPool2d: kernel_size = " + std::to_string(kernel_size) + " and stride = " +
                                    std::to_string(stride_) + " must both be at least 1");
}

const Tensor& MaxPool2d::forward(const Tensor& input) {
    const int64_t k = kernel_size_;
    if (input.rank() != 4 || input.dim(2) < k || input.dim(3) < k)
        detail::throw_bad_shape("MaxPool2d::forward", "(N, C, H, W) with H, W >= " + std::to_string(k), input);
    const int64_t n = input.dim(0), c = input.dim(1), h = input.dim(2), w = input.dim(3);
    const int64_t out_h = (h - k) / stride_ + 1, out_w = (w - k) / stride_ + 1;
    const bool channels_last = input.channels_last();
    input_shape_ = input.shape();
    detail::set_shape(output_, {n, c, out_h, out_w}, channels_last);
    argmax_.resize(static_cast<size_t>(output_.numel()));

    // Element strides of (n, c, h, w) in the input and in the output.
    const int64_t in_n = c * h * w, in_c = channels_last ? 1 : h * w, in_h = channels_last ? w * c : w,
                  in_w = channels_last ? c : 1;
    const int64_t out_n = c * out_h * out_w, out_c = channels_last ? 1 : out_h * out_w,
                  out_row = channels_last ? out_w * c : out_w, out_col = channels_last ? c : 1;
    const float* x = input.data();
    float* y = output_.data();
    for (int64_t b = 0; b < n; ++b)
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t oh = 0; oh < out_h; ++oh)
                for (int64_t ow = 0; ow < out_w; ++ow) {
                    const int64_t base = b * in_n + ch * in_c + oh * stride_ * in_h + ow * stride_ * in_w;
                    int64_t best = base;
                    for (int64_t kh = 0; kh < k; ++kh)
                        for (int64_t kw = 0; kw < k; ++kw) {
                            const int64_t at = base + kh * in_h + kw * in_w;
                            if (x[at] > x[best]) best = at;
                        }
                    const int64_t i = b * out_n + ch * out_c + oh * out_row + ow * out_col;
                    y[i] = x[best];
                    argmax_[static_cast<size_t>(i)] = best;
                }
    return output_;
}

const Tensor& MaxPool2d::backward(const Tensor& grad_output) {
    detail::check_grad_output("MaxPool2d", !input_shape_.empty(), grad_output, output_);
    detail::set_shape(grad_input_, input_shape_, output_.channels_last());
    grad_input_.fill(0.0f);
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    for (int64_t i = 0; i < output_.numel(); ++i) dx[argmax_[static_cast<size_t>(i)]] += dy[i];
    return grad_input_;
}

}  // namespace bnorm::nn
