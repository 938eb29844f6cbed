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
    view_ = nullptr;
    if (values_.size() < static_cast<size_t>(n)) values_.resize(static_cast<size_t>(n));
}

void Tensor::view(const Tensor& source, int64_t offset, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) throw std::invalid_argument("Tensor::view: negative dimension in the shape");
        n *= d;
    }
    if (offset < 0 || offset + n > source.numel())
        throw std::invalid_argument("Tensor::view: values [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                    ") are outside the source's " + std::to_string(source.numel()));
    const float* values = source.data() + offset;
    // Compare shapes before assigning, so that a view of an unchanged shape allocates nothing.
    if (!std::equal(shape_.begin(), shape_.end(), shape.begin(), shape.end())) shape_.assign(shape);
    numel_ = n;
    channels_last_ = false;
    view_ = values;
}

void Tensor::fill(float value) { std::fill_n(owned(), numel_, value); }

void Tensor::throw_read_only() {
    throw std::logic_error("Tensor: this tensor is a read-only view of another; resize() it to write");
}

std::string Tensor::shape_string() const {
    std::string s = "(";
    for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
    return s + ")";
}

}  // namespace bnorm::nn
