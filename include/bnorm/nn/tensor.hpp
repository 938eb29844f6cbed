// tensor.hpp: the float32 tensor of the training system: a shape and contiguous values.
//
//   bnorm::nn::Tensor x({60, 784});          // zeros
//   x.at(3) = 0.5f;                          // flat index
//   x.resize({32, 1, 28, 28});               // reuses the allocation when it is large enough
//   std::span<float> v = x.values();
//   int64_t n = x.dim(0);
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace bnorm::nn {

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::vector<int64_t> shape) { resize(std::move(shape)); }

    // Sets the shape; the values are unspecified unless the number of elements is unchanged.
    // Never shrinks the allocation, so a layer's buffers stop allocating after the first batch.
    void resize(std::vector<int64_t> shape);
    void fill(float value);

    const std::vector<int64_t>& shape() const { return shape_; }
    int64_t dim(size_t i) const { return shape_.at(i); }
    size_t rank() const { return shape_.size(); }
    int64_t numel() const { return numel_; }
    std::string shape_string() const;  // "(60, 784)"

    // Memory order of a 4-D (N, C, H, W) tensor: channels-first by default, or channels-last.
    bool channels_last() const { return channels_last_; }
    void set_channels_last(bool on) { channels_last_ = on; }

    float* data() { return values_.data(); }
    const float* data() const { return values_.data(); }
    std::span<float> values() { return {values_.data(), static_cast<size_t>(numel_)}; }
    std::span<const float> values() const { return {values_.data(), static_cast<size_t>(numel_)}; }
    float& at(int64_t i) { return values_[static_cast<size_t>(i)]; }
    float at(int64_t i) const { return values_[static_cast<size_t>(i)]; }

private:
    std::vector<int64_t> shape_;
    int64_t numel_ = 0;
    bool channels_last_ = false;
    std::vector<float> values_;
};

}  // namespace bnorm::nn
