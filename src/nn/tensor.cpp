#include "bnorm/nn/tensor.hpp"

#include <algorithm>
#include <stdexcept>

namespace bnorm::nn {

void Tensor::resize(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) throw std::invalid_argument("Tensor::resize: negative dimension in the shape");
        n *= d;
    }
    shape_ = std::move(shape);
    numel_ = n;
    if (values_.size() < static_cast<size_t>(n)) values_.resize(static_cast<size_t>(n));
}

void Tensor::fill(float value) { std::fill(values_.begin(), values_.begin() + numel_, value); }

std::string Tensor::shape_string() const {
    std::string s = "(";
    for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
    return s + ")";
}

}  // namespace bnorm::nn
