// BatchLoader: batches of a Dataset in an order that depends only on (seed, epoch).
// Everything that decides the order is written here (splitmix64, the bounded draw, Fisher-Yates)
// or fully specified by the standard (std::mt19937_64), so it is the same on every platform;
// std::shuffle and std::uniform_int_distribution are implementation-defined and are not used.
#include <algorithm>
#include <random>
#include <string>
#include <utility>

#include "bnorm/nn/data.hpp"
#include "nn/math/vector_math.hpp"

namespace bnorm::nn {
namespace {

// The finalizer of splitmix64 (Steele, Lea, Flood 2014; Vigna's reference code): a bijection that
// spreads every input bit over the output, so nearby (seed, epoch) pairs give unrelated engines.
uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// Uniform in [0, n), n >= 1, unbiased: rejects the 2^64 mod n lowest raw values so that the values
// kept are a whole number of copies of [0, n) (the method of OpenBSD's arc4random_uniform).
uint64_t uniform_below(std::mt19937_64& engine, uint64_t n) {
    const uint64_t threshold = (0 - n) % n;  // = 2^64 mod n
    for (;;) {
        const uint64_t r = engine();
        if (r >= threshold) return r % n;
    }
}

// order = 0..n-1, then, when shuffle, the Fisher-Yates (Durstenfeld) shuffle for (seed, epoch).
void fill_order(std::vector<int64_t>& order, int64_t count, uint64_t seed, int64_t epoch, bool shuffle) {
    order.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = i;
    if (!shuffle) return;
    std::mt19937_64 engine(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)));
    for (int64_t i = count - 1; i > 0; --i) {
        const uint64_t j = uniform_below(engine, static_cast<uint64_t>(i) + 1);
        std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
}

}  // namespace

BatchLoader::BatchLoader(const Dataset& data, int64_t batch_size, uint64_t seed, bool shuffle, bool drop_last)
    : data_(&data), batch_size_(batch_size), seed_(seed), shuffle_(shuffle), drop_last_(drop_last) {
    if (batch_size < 1)
        throw bnorm::InvalidArgument("BatchLoader: batch_size = " + std::to_string(batch_size) +
                                     " must be at least 1");
    if (data.count < 1 || data.rows < 1 || data.cols < 1)
        throw bnorm::InvalidArgument("BatchLoader: the data set is empty (count, rows and cols must be at "
                                     "least 1); load it with load_idx or load_fashion_mnist");
    if (data.pixels.size() != static_cast<size_t>(data.count * data.rows * data.cols) ||
        data.labels.size() != static_cast<size_t>(data.count))
        throw bnorm::InvalidArgument("BatchLoader: the data set is inconsistent: " +
                                     std::to_string(data.pixels.size()) + " pixels and " +
                                     std::to_string(data.labels.size()) + " labels for " +
                                     std::to_string(data.count) + " images of " + std::to_string(data.rows) +
                                     "x" + std::to_string(data.cols));
    if (drop_last && batch_size > data.count)
        throw bnorm::InvalidArgument("BatchLoader: batch_size = " + std::to_string(batch_size) +
                                     " with drop_last leaves no batch from " + std::to_string(data.count) +
                                     " samples; use a smaller batch_size or drop_last = false");
    start_epoch(0);
}

void BatchLoader::start_epoch(int64_t epoch) {
    fill_order(order_, data_->count, seed_, epoch, shuffle_);
    epoch_ = epoch;
    position_ = 0;
}

int64_t BatchLoader::batches_per_epoch() const {
    return drop_last_ ? data_->count / batch_size_ : (data_->count + batch_size_ - 1) / batch_size_;
}

bool BatchLoader::next(Tensor& images, std::vector<int32_t>& labels) {
    const int64_t remaining = data_->count - position_;
    if (remaining == 0 || (drop_last_ && remaining < batch_size_)) {
        start_epoch(epoch_ + 1);
        return false;
    }
    const int64_t batch = std::min(batch_size_, remaining);
    const int64_t rows = data_->rows, cols = data_->cols, image_size = rows * cols;
    // Tensor::resize takes its shape by value: call it only when the shape changes, so that a
    // steady run of full batches allocates nothing.
    const std::vector<int64_t>& shape = images.shape();
    if (shape.size() != 4 || shape[0] != batch || shape[1] != 1 || shape[2] != rows || shape[3] != cols)
        images.resize({batch, 1, rows, cols});
    labels.resize(static_cast<size_t>(batch));

    float* out = images.data();
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t index = order_[static_cast<size_t>(position_ + b)];
        const uint8_t* pixels = data_->pixels.data() + index * image_size;
        float* image = out + b * image_size;
        math::bytes_to_unit(pixels, image, image_size);
        labels[static_cast<size_t>(b)] = data_->labels[static_cast<size_t>(index)];
    }
    position_ += batch;
    // The next batch's images are scattered over the data set (47 MB for Fashion-MNIST's training
    // images, beyond the L2 cache): ask for them now, so that they arrive while this batch trains.
    const int64_t next_end = std::min(data_->count, position_ + batch_size_);
    for (int64_t i = position_; i < next_end; ++i) {
        const uint8_t* pixels = data_->pixels.data() + order_[static_cast<size_t>(i)] * image_size;
        for (int64_t b = 0; b < image_size; b += 64) __builtin_prefetch(pixels + b);
    }
    return true;
}

void BatchLoader::seek(int64_t epoch, int64_t position) {
    if (epoch < 0 || position < 0 || position > data_->count)
        throw bnorm::InvalidArgument("BatchLoader::seek: (epoch " + std::to_string(epoch) + ", position " +
                                     std::to_string(position) + ") is out of range: requires epoch >= 0 and "
                                     "0 <= position <= " + std::to_string(data_->count) +
                                     " (the data set's count); was the checkpoint made with another data set?");
    if (epoch != epoch_) start_epoch(epoch);
    position_ = position;
}

std::vector<int64_t> BatchLoader::permutation(int64_t count, uint64_t seed, int64_t epoch) {
    if (count < 0 || epoch < 0)
        throw bnorm::InvalidArgument("BatchLoader::permutation: count and epoch must be non-negative");
    std::vector<int64_t> order;
    fill_order(order, count, seed, epoch, true);
    return order;
}

}  // namespace bnorm::nn
