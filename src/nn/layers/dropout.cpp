// Dropout: inverted dropout in training, the identity in evaluation. Any shape and memory order.
//   training, p > 0: mask[i] = 0 with probability p, else 1 / (1 - p); y = x * mask; dx = dy * mask
//   otherwise:       y = x; dx = dy
// The mask draws one engine value per element in memory order (the top 24 bits as a fraction u in
// [0, 1), dropped when u < p), so it depends on the seed and the order of the calls only.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {

Dropout::Dropout(double p, uint64_t seed) : p_(p), engine_(seed) {
    if (!(p >= 0.0 && p <= 1.0))
        throw std::invalid_argument("Dropout: p = " + std::to_string(p) + " must be in [0, 1]");
}

const Tensor& Dropout::forward(const Tensor& input) {
    detail::set_shape(output_, input.shape(), input.channels_last());
    masked_ = training_ && p_ > 0.0;
    const float* x = input.data();
    float* y = output_.data();
    if (!masked_) {
        std::copy_n(x, input.numel(), y);
        return output_;
    }
    detail::set_shape(mask_, input.shape());
    const float keep_scale = p_ < 1.0 ? static_cast<float>(1.0 / (1.0 - p_)) : 0.0f;
    float* mask = mask_.data();
    for (int64_t i = 0; i < input.numel(); ++i) {
        const double u = static_cast<double>(engine_() >> 40) * 0x1.0p-24;
        mask[i] = u < p_ ? 0.0f : keep_scale;
        y[i] = x[i] * mask[i];
    }
    return output_;
}

const Tensor& Dropout::backward(const Tensor& grad_output) {
    detail::check_grad_output("Dropout", !output_.shape().empty(), grad_output, output_);
    detail::set_shape(grad_input_, output_.shape(), output_.channels_last());
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    if (!masked_) {
        std::copy_n(dy, output_.numel(), dx);
        return grad_input_;
    }
    const float* mask = mask_.data();
    for (int64_t i = 0; i < output_.numel(); ++i) dx[i] = dy[i] * mask[i];
    return grad_input_;
}

}  // namespace bnorm::nn
