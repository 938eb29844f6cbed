// Elementwise activations, any shape, the output in the input's shape and memory order.
//   ReLU:    y = max(x, 0)          dx = dy * [y > 0]   (the gradient at 0 is 0, as torch)
//   Sigmoid: y = 1 / (1 + e^-x)     dx = dy * y (1 - y)
//   Tanh:    y = tanh(x)            dx = dy * (1 - y^2)
#include <cmath>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"
#include "nn/math/vector_math.hpp"

namespace bnorm::nn {
namespace {

void shape_like(Tensor& out, const Tensor& like) {
    detail::set_shape(out, like.shape(), like.channels_last());
}

}  // namespace

const Tensor& ReLU::forward(const Tensor& input) {
    shape_like(output_, input);
    const float* x = input.data();
    float* y = output_.data();
    for (int64_t i = 0; i < input.numel(); ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return output_;
}

const Tensor& ReLU::backward(const Tensor& grad_output) {
    detail::check_grad_output("ReLU", !output_.shape().empty(), grad_output, output_);
    shape_like(grad_input_, output_);
    const float* y = output_.data();
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    for (int64_t i = 0; i < output_.numel(); ++i) {
        const float g = dy[i];  // loaded unconditionally, so that the select vectorizes without branches
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
    return grad_input_;
}

const Tensor& Sigmoid::forward(const Tensor& input) {
    shape_like(output_, input);
    const float* x = input.data();
    float* y = output_.data();
    math::sigmoid(x, y, input.numel());
    return output_;
}

const Tensor& Sigmoid::backward(const Tensor& grad_output) {
    detail::check_grad_output("Sigmoid", !output_.shape().empty(), grad_output, output_);
    shape_like(grad_input_, output_);
    const float* y = output_.data();
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    for (int64_t i = 0; i < output_.numel(); ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    return grad_input_;
}

const Tensor& Tanh::forward(const Tensor& input) {
    shape_like(output_, input);
    const float* x = input.data();
    float* y = output_.data();
    for (int64_t i = 0; i < input.numel(); ++i) y[i] = std::tanh(x[i]);
    return output_;
}

const Tensor& Tanh::backward(const Tensor& grad_output) {
    detail::check_grad_output("Tanh", !output_.shape().empty(), grad_output, output_);
    shape_like(grad_input_, output_);
    const float* y = output_.data();
    const float* dy = grad_output.data();
    float* dx = grad_input_.data();
    for (int64_t i = 0; i < output_.numel(); ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    return grad_input_;
}

}  // namespace bnorm::nn
