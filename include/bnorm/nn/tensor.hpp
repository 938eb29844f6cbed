// tensor.hpp: the float32 tensor of the training system: a shape and contiguous values.
//
//   bnorm::nn::Tensor x({60, 784});          // zeros
//   x.at(3) = 0.5f;                          // flat index
//   x.resize({32, 1, 28, 28});               // reuses the allocation when it is large enough
//   std::span<float> v = x.values();
//   int64_t n = x.dim(0);
//   bnorm::nn::Tensor flat; flat.view(x, 0, {32, 784});   // read-only, no copy
//
// A view shows another tensor's values under another shape without copying them: it is
// read-only (the mutable accessors throw std::logic_error) and valid while the viewed tensor is
// neither resized nor destroyed; resize() turns it back into an owning tensor.
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

    // requires: offset >= 0 and offset + product(shape) <= source.numel().
    // ensures: this shows source's values [offset, offset + product(shape)) with `shape`,
    // channels-first; the view's own allocation is kept for a later resize(). Allocates nothing
    // when the shape is unchanged.
    void view(const Tensor& source, int64_t offset, std::initializer_list<int64_t> shape);
    bool is_view() const { return view_ != nullptr; }

    const std::vector<int64_t>& shape() const { return shape_; }
    int64_t dim(size_t i) const { return shape_.at(i); }
    size_t rank() const { return shape_.size(); }
    int64_t numel() const { return numel_; }
    std::string shape_string() const;  // "(60, 784)"

    // Memory order of a 4-D (N, C, H, W) tensor: channels-first by default, or channels-last.
    bool channels_last() const { return channels_last_; }
    void set_channels_last(bool on) { channels_last_ = on; }

    float* data() { return owned(); }
    const float* data() const { return view_ ? view_ : values_.data(); }
    std::span<float> values() { return {owned(), static_cast<size_t>(numel_)}; }
    std::span<const float> values() const { return {data(), static_cast<size_t>(numel_)}; }
    float& at(int64_t i) { return owned()[i]; }
    float at(int64_t i) const { return data()[i]; }

private:
    float* owned() {
        if (view_) throw_read_only();
        return values_.data();
    }
    [[noreturn]] static void throw_read_only();

    const float* view_ = nullptr;
    std::vector<int64_t> shape_;
    int64_t numel_ = 0;
    bool channels_last_ = false;
    std::vector<float> values_;
};

}  // namespace bnorm::nn
