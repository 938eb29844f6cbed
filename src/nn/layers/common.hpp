// common.hpp: what the layers share: argument checks, so that every message has the same form
// ("<Layer>::<call>: expected <shape>, got <shape>"), and shape setting that allocates nothing
// when the shape is unchanged (Tensor::resize takes its shape as a std::vector by value).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn::detail {

[[noreturn]] inline void throw_bad_shape(const std::string& where, const std::string& expected, const Tensor& got) {
    throw std::invalid_argument(where + ": expected input of shape " + expected + ", got " + got.shape_string());
}

// requires: a forward pass saw `output`; grad_output has its shape and, for 4-D, its memory order.
inline void check_grad_output(const std::string& layer, bool forwarded, const Tensor& grad_output,
                              const Tensor& output) {
    if (!forwarded) throw std::logic_error(layer + "::backward: no forward pass to differentiate; call forward first");
    if (grad_output.shape() != output.shape())
        throw std::invalid_argument(layer + "::backward: expected grad_output of shape " + output.shape_string() +
                                    " (the output's), got " + grad_output.shape_string());
    auto order = [](const Tensor& t) { return std::string(t.channels_last() ? "channels-last" : "channels-first"); };
    if (output.rank() == 4 && grad_output.channels_last() != output.channels_last())
        throw std::invalid_argument(layer + "::backward: grad_output is " + order(grad_output) + " but the output was " +
                                    order(output) + "; pass it in the output's memory order");
}

// Gives t this shape and memory order, as an owning (writable) tensor; calls Tensor::resize (which
// allocates a shape vector) only when the shape differs or t is a view, so a step with an
// unchanged batch size allocates nothing.
inline void set_shape(Tensor& t, std::initializer_list<int64_t> shape, bool channels_last = false) {
    if (t.is_view() || !std::equal(t.shape().begin(), t.shape().end(), shape.begin(), shape.end()))
        t.resize(std::vector<int64_t>(shape));
    t.set_channels_last(channels_last);
}
inline void set_shape(Tensor& t, const std::vector<int64_t>& shape, bool channels_last = false) {
    if (t.is_view() || t.shape() != shape) t.resize(shape);
    t.set_channels_last(channels_last);
}

// BLAS takes int sizes; a tensor too large for them is refused rather than silently wrapped.
inline int blas_int(int64_t value, const char* layer) {
    if (value > INT_MAX)
        throw std::invalid_argument(std::string(layer) + ": a matrix dimension of " + std::to_string(value) +
                                    " exceeds what BLAS takes (" + std::to_string(INT_MAX) + "); use smaller batches");
    return static_cast<int>(value);
}

}  // namespace bnorm::nn::detail
