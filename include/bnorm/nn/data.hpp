// data.hpp: data sets of the training system: IDX files (MNIST, Fashion-MNIST), gzipped or plain,
// and a BatchLoader whose shuffled order depends only on (seed, epoch), for bitwise resume.
//
//   bnorm::nn::Dataset train = bnorm::nn::load_fashion_mnist(bnorm::nn::default_fashion_mnist_dir(), true);
//   bnorm::nn::BatchLoader loader(train, 64, /*seed=*/42, /*shuffle=*/true);
//   bnorm::nn::Tensor images; std::vector<int32_t> labels;
//   while (loader.next(images, labels)) { /* images: (B, 1, 28, 28) in [0, 1] */ }
//   int64_t epoch = loader.epoch(), position = loader.position();  // save; later: seek(epoch, position)
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

// A data file that is missing, unreadable or malformed. The message names the file, says what is
// wrong and how to fix it. (A bnorm::Error, hence a std::runtime_error.)
class DataError : public bnorm::Error {
public:
    explicit DataError(const std::string& message) : bnorm::Error(BNORM_EINVAL, message) {}
};

// count images of rows x cols uint8 pixels, row-major, image after image, and one label per image.
struct Dataset {
    int64_t count = 0;
    int64_t rows = 0;
    int64_t cols = 0;
    std::vector<uint8_t> pixels;  // count * rows * cols
    std::vector<uint8_t> labels;  // count, each in 0..num_classes-1
};

// Reads an IDX images file (magic 0x00000803: uint8, dimensions count, rows, cols) and an IDX labels
// file (magic 0x00000801: uint8, dimension count), each gzipped or plain (zlib tells them apart).
// requires: 1 <= count, 1 <= rows, cols <= 4096, count * rows * cols <= 1e9; the data exactly as
//           long as the header says: a file with bytes after its data is rejected (its header is
//           then probably wrong); bytes after the END of a gzip stream are ignored, as gunzip does;
//           the same count in both files; every label in 0..num_classes-1.
// ensures:  memory grows with the data actually read, never with a header's claim alone.
// throws:   DataError naming the file and the problem.
Dataset load_idx(const std::filesystem::path& images, const std::filesystem::path& labels,
                 int num_classes = 10);

// Fashion-MNIST (or MNIST) in dir: train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz when
// train, else t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; each name without .gz is
// read instead when the .gz is absent. 10 classes.
Dataset load_fashion_mnist(const std::filesystem::path& dir, bool train);

// /usr/share/datasets/fashion-mnist, where Debian's dataset-fashion-mnist package puts it.
std::filesystem::path default_fashion_mnist_dir();

// Cuts a Dataset into batches, epoch after epoch. Epoch e visits every sample once, in the order
// permutation(seed, e) when shuffle (a Fisher-Yates shuffle driven by std::mt19937_64 seeded from
// splitmix64(splitmix64(seed) ^ e), with an unbiased bounded draw: the same order on every
// platform and standard library), else in index order.
// The data set must outlive the loader and stay unchanged.
class BatchLoader {
public:
    // throws bnorm::InvalidArgument for batch_size < 1, an empty or inconsistent data set, or
    // drop_last with batch_size > count (no batch at all).
    BatchLoader(const Dataset& data, int64_t batch_size, uint64_t seed, bool shuffle,
                bool drop_last = false);

    // Fills images as (B, 1, rows, cols) with pixel / 255.0f (no other normalization) and labels
    // with B labels, B = batch_size except for the last batch of an epoch (fewer samples; skipped
    // when drop_last), and returns true. At the end of an epoch returns false, leaves images and
    // labels unchanged and moves to position 0 of the next epoch. Reuses the storage of images and
    // labels: after the first full batch, it allocates only when B changes (the tensor's shape).
    bool next(Tensor& images, std::vector<int32_t>& labels);

    // The epoch and the position in its order (samples already returned) of the next batch.
    int64_t epoch() const { return epoch_; }
    int64_t position() const { return position_; }

    // Restores a state saved as (epoch(), position()): the batches that follow are bitwise those
    // that followed when it was saved. requires: epoch >= 0, 0 <= position <= count.
    void seek(int64_t epoch, int64_t position);

    int64_t batch_size() const { return batch_size_; }
    int64_t batches_per_epoch() const;
    // The order of the current epoch: order()[position()] is the next sample's index.
    const std::vector<int64_t>& order() const { return order_; }

    // The order of epoch `epoch` for a data set of `count` samples (exposed for tests and tools).
    static std::vector<int64_t> permutation(int64_t count, uint64_t seed, int64_t epoch);

private:
    void start_epoch(int64_t epoch);

    const Dataset* data_;
    int64_t batch_size_;
    uint64_t seed_;
    bool shuffle_;
    bool drop_last_;
    int64_t epoch_ = 0;
    int64_t position_ = 0;
    std::vector<int64_t> order_;
};

}  // namespace bnorm::nn
