// Data sets: IDX files (real Fashion-MNIST, written gzipped and plain, and a battery of malformed
// ones) and BatchLoader (seeded order, coverage, resume by seek, scaling, batch sizes).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "bnorm/nn/data.hpp"
#include "nn/data_files.hpp"

namespace bnorm::nn {
namespace {

namespace fs = std::filesystem;
using test::Bytes;
using test::idx_images_bytes;
using test::idx_labels_bytes;
using test::ScratchDir;
using test::write_file;
using test::write_gzip_file;

// Requires `load` to throw DataError whose message holds every phrase.
void expect_data_error(const std::function<void()>& load, const std::vector<std::string>& phrases) {
    try {
        load();
    } catch (const DataError& error) {
        const std::string message = error.what();
        for (const std::string& phrase : phrases)
            EXPECT_NE(message.find(phrase), std::string::npos)
                << "the message lacks \"" << phrase << "\":\n  " << message;
        return;
    }
    ADD_FAILURE() << "expected a DataError, nothing was thrown";
}

// Pseudo-random bytes (a fixed LCG): incompressible enough that a cut gzip file ends mid-stream.
Bytes noise(size_t n, uint32_t state = 12345) {
    Bytes out(n);
    for (auto& byte : out) {
        state = state * 1664525u + 1013904223u;
        byte = static_cast<uint8_t>(state >> 24);
    }
    return out;
}

// ---- the real Fashion-MNIST -----------------------------------------------------------------

class RealFashionMnist : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!fs::exists(default_fashion_mnist_dir() / "train-images-idx3-ubyte.gz")) return;
        const auto start = std::chrono::steady_clock::now();
        train_ = new Dataset(load_fashion_mnist(default_fashion_mnist_dir(), true));
        const auto stop = std::chrono::steady_clock::now();
        std::cout << "[ info     ] loading the Fashion-MNIST training set took "
                  << std::chrono::duration<double, std::milli>(stop - start).count() << " ms\n";
        test_ = new Dataset(load_fashion_mnist(default_fashion_mnist_dir(), false));
    }
    static void TearDownTestSuite() {
        delete train_;
        delete test_;
        train_ = test_ = nullptr;
    }
    void SetUp() override {
        if (train_ == nullptr)
            GTEST_SKIP() << "Fashion-MNIST is not in " << default_fashion_mnist_dir()
                         << " (apt-get install dataset-fashion-mnist)";
    }
    static std::array<int64_t, 10> class_counts(const Dataset& data) {
        std::array<int64_t, 10> counts{};
        for (uint8_t label : data.labels) ++counts.at(label);
        return counts;
    }
    // count images of 28x28 and count / 10 of each of the 10 classes.
    static void expect_balanced_28x28(const Dataset& data, int64_t count) {
        EXPECT_EQ(data.count, count);
        EXPECT_EQ(data.rows, 28);
        EXPECT_EQ(data.cols, 28);
        EXPECT_EQ(data.pixels.size(), static_cast<size_t>(count * 28 * 28));
        ASSERT_EQ(data.labels.size(), static_cast<size_t>(count));
        for (int64_t per_class : class_counts(data)) EXPECT_EQ(per_class, count / 10);
    }
    static Dataset* train_;
    static Dataset* test_;
};
Dataset* RealFashionMnist::train_ = nullptr;
Dataset* RealFashionMnist::test_ = nullptr;

TEST_F(RealFashionMnist, train_set_has_60000_images_of_28x28_and_6000_of_each_class) {
    expect_balanced_28x28(*train_, 60000);
}

TEST_F(RealFashionMnist, test_set_has_10000_images_of_28x28_and_1000_of_each_class) {
    expect_balanced_28x28(*test_, 10000);
}

// Expected values computed from the files with python3 (gzip + numpy), independently of this code.
TEST_F(RealFashionMnist, first_labels_and_pixel_sums_match_numpy) {
    const std::vector<uint8_t> train_first(train_->labels.begin(), train_->labels.begin() + 10);
    const std::vector<uint8_t> test_first(test_->labels.begin(), test_->labels.begin() + 10);
    EXPECT_EQ(train_first, (std::vector<uint8_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
    EXPECT_EQ(test_first, (std::vector<uint8_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));
    const uint64_t total = std::accumulate(train_->pixels.begin(), train_->pixels.end(), uint64_t{0});
    const uint64_t first = std::accumulate(train_->pixels.begin(), train_->pixels.begin() + 784, uint64_t{0});
    EXPECT_EQ(total, 3431114169u);
    EXPECT_EQ(first, 76247u);
}

TEST_F(RealFashionMnist, gzipped_and_plain_copies_load_identically) {
    const uint32_t n = 100;
    const Bytes pixels(train_->pixels.begin(), train_->pixels.begin() + n * 784);
    const Bytes labels(train_->labels.begin(), train_->labels.begin() + n);
    ScratchDir gz_dir("gz"), plain_dir("plain");
    write_gzip_file(gz_dir.path() / "train-images-idx3-ubyte.gz", idx_images_bytes(n, 28, 28, pixels));
    write_gzip_file(gz_dir.path() / "train-labels-idx1-ubyte.gz", idx_labels_bytes(n, labels));
    write_file(plain_dir.path() / "train-images-idx3-ubyte", idx_images_bytes(n, 28, 28, pixels));
    write_file(plain_dir.path() / "train-labels-idx1-ubyte", idx_labels_bytes(n, labels));
    const Dataset from_gz = load_fashion_mnist(gz_dir.path(), true);
    const Dataset from_plain = load_fashion_mnist(plain_dir.path(), true);
    for (const Dataset* data : {&from_gz, &from_plain}) {
        EXPECT_EQ(data->count, n);
        EXPECT_EQ(data->rows, 28);
        EXPECT_EQ(data->cols, 28);
        EXPECT_EQ(data->pixels, pixels);
        EXPECT_EQ(data->labels, labels);
    }
}

TEST_F(RealFashionMnist, loader_over_the_train_set_yields_every_class_6000_times_in_0_1) {
    BatchLoader loader(*train_, 256, 1, true);
    Tensor images;
    std::vector<int32_t> labels;
    std::array<int64_t, 10> counts{};
    float low = 1.0f, high = 0.0f;
    while (loader.next(images, labels)) {
        ASSERT_EQ(images.rank(), 4u);
        EXPECT_EQ(images.dim(1), 1);
        EXPECT_EQ(images.dim(2), 28);
        EXPECT_EQ(images.dim(3), 28);
        for (int32_t label : labels) ++counts.at(static_cast<size_t>(label));
        const auto [lo, hi] = std::minmax_element(images.values().begin(), images.values().end());
        low = std::min(low, *lo);
        high = std::max(high, *hi);
    }
    for (int64_t count : counts) EXPECT_EQ(count, 6000);
    EXPECT_EQ(low, 0.0f);
    EXPECT_EQ(high, 1.0f);
}

// ---- files: which one is read ---------------------------------------------------------------

TEST(FashionMnistFiles, gzipped_file_is_preferred_over_a_plain_one_of_the_same_name) {
    ScratchDir dir("prefer");
    write_gzip_file(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images_bytes(1, 1, 2, {7, 8}));
    write_gzip_file(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels_bytes(1, {3}));
    write_file(dir.path() / "t10k-images-idx3-ubyte", idx_images_bytes(1, 1, 2, {1, 2}));
    write_file(dir.path() / "t10k-labels-idx1-ubyte", idx_labels_bytes(1, {4}));
    const Dataset data = load_fashion_mnist(dir.path(), false);
    EXPECT_EQ(data.pixels, (Bytes{7, 8}));
    EXPECT_EQ(data.labels, (Bytes{3}));
}

TEST(FashionMnistFiles, empty_directory_names_both_candidates_and_the_fixes) {
    ScratchDir dir("empty");
    expect_data_error([&] { load_fashion_mnist(dir.path(), true); },
                      {(dir.path() / "train-images-idx3-ubyte.gz").string(),
                       (dir.path() / "train-images-idx3-ubyte").string(), "no such file",
                       "apt-get install dataset-fashion-mnist", "--data DIR"});
}

TEST(FashionMnistFiles, missing_directory_is_named_with_the_fixes) {
    const fs::path missing = "/nonexistent/bnorm-fashion-mnist";
    expect_data_error([&] { load_fashion_mnist(missing, true); },
                      {"data directory " + missing.string(), "does not exist",
                       "apt-get install dataset-fashion-mnist", "--data DIR"});
}

// ---- malformed files: each one a DataError naming the file and the problem --------------------

// A valid pair (3 images of 2x3, labels 0 1 2) that each test damages in one way.
class MalformedIdx : public ::testing::Test {
protected:
    MalformedIdx() {
        write_file(images_, idx_images_bytes(3, 2, 3, pixels_));
        write_file(labels_, idx_labels_bytes(3, {0, 1, 2}));
    }
    Dataset load() const { return load_idx(images_, labels_); }
    // Expects a DataError from load() whose message names `file` and holds every phrase.
    void expect_rejected(const fs::path& file, std::vector<std::string> phrases) const {
        phrases.push_back("data file " + file.string());
        expect_data_error([this] { load(); }, phrases);
    }

    ScratchDir dir_{"malformed"};
    fs::path images_ = dir_.path() / "images-idx3-ubyte";
    fs::path labels_ = dir_.path() / "labels-idx1-ubyte";
    Bytes pixels_ = Bytes{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170};
};

TEST_F(MalformedIdx, the_valid_pair_loads) {
    const Dataset data = load();
    EXPECT_EQ(data.count, 3);
    EXPECT_EQ(data.rows, 2);
    EXPECT_EQ(data.cols, 3);
    EXPECT_EQ(data.pixels, pixels_);
    EXPECT_EQ(data.labels, (Bytes{0, 1, 2}));
}

TEST_F(MalformedIdx, empty_file_is_rejected_as_empty) {
    write_file(images_, {});
    expect_rejected(images_, {"is empty (0 bytes)", "expected an IDX images file"});
}

TEST_F(MalformedIdx, three_byte_file_is_rejected_as_too_short) {
    write_file(images_, {0, 0, 8});
    expect_rejected(images_, {"too short for an IDX header: 3 bytes"});
}

TEST_F(MalformedIdx, header_cut_after_the_magic_is_rejected_as_truncated_header) {
    write_file(images_, {0, 0, 8, 3, 0, 0, 0, 3, 0, 0});
    expect_rejected(images_, {"truncated header: got 10 of its 16 bytes"});
}

TEST_F(MalformedIdx, non_idx_magic_is_rejected_showing_found_and_expected) {
    write_file(images_, {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    expect_rejected(images_, {"wrong magic number 0x504b0304", "expected 0x00000803", "not an IDX file"});
}

TEST_F(MalformedIdx, labels_file_given_as_images_is_rejected_with_a_swap_hint) {
    write_file(images_, idx_labels_bytes(3, {0, 1, 2}));
    expect_rejected(images_, {"wrong magic number 0x00000801 (IDX, uint8, 1 dimension)",
                              "expected 0x00000803 (IDX, uint8, 3 dimensions)",
                              "a labels file given as the images file", "swap the two paths"});
}

TEST_F(MalformedIdx, images_file_given_as_labels_is_rejected_with_a_swap_hint) {
    write_file(labels_, idx_images_bytes(3, 2, 3, pixels_));
    expect_rejected(labels_, {"wrong magic number 0x00000803", "expected 0x00000801",
                              "an images file given as the labels file"});
}

TEST_F(MalformedIdx, float32_idx_images_are_rejected_as_unsupported_type) {
    write_file(images_, idx_images_bytes(1, 1, 1, {0, 0, 0, 0}, 0x00000d03));
    expect_rejected(images_, {"0x00000d03 (IDX, float32, 3 dimensions)", "only uint8 IDX images files"});
}

TEST_F(MalformedIdx, doubly_gzipped_file_is_rejected_with_a_gunzip_hint) {
    write_gzip_file(images_, test::gzip_bytes(idx_images_bytes(3, 2, 3, pixels_)));
    expect_rejected(images_, {"wrong magic number 0x1f8b", "gzipped twice"});
}

TEST_F(MalformedIdx, header_claiming_more_images_than_present_is_rejected_as_truncated) {
    write_file(images_, idx_images_bytes(10, 2, 3, pixels_));
    expect_rejected(images_, {"truncated: expected 60 bytes of data (10 images of 2x3)", "got 18"});
}

TEST_F(MalformedIdx, header_without_any_data_is_rejected_as_truncated) {
    write_file(images_, idx_images_bytes(5, 28, 28, {}));
    expect_rejected(images_, {"truncated: expected 3920 bytes", "got 0"});
}

TEST_F(MalformedIdx, header_claiming_2_to_the_31_images_is_rejected_before_reading) {
    write_file(images_, idx_images_bytes(0x80000000u, 28, 28, pixels_));
    expect_rejected(images_, {"2147483648 images of 28x28", "over the limit of 1000000000"});
}

// Within the limit but far beyond the file: memory follows the data read (a few KiB here), and
// the error reports what was there.
TEST_F(MalformedIdx, header_claiming_a_billion_pixels_of_a_tiny_file_is_rejected_as_truncated) {
    write_file(images_, idx_images_bytes(1'000'000, 1000, 1, pixels_));
    expect_rejected(images_, {"truncated: expected 1000000000 bytes", "got 18"});
}

TEST_F(MalformedIdx, zero_images_are_rejected_as_empty_data_set) {
    write_file(images_, idx_images_bytes(0, 2, 3, {}));
    expect_rejected(images_, {"header says 0 images"});
}

TEST_F(MalformedIdx, rows_0_is_rejected_as_out_of_range) {
    write_file(images_, idx_images_bytes(3, 0, 3, pixels_));
    expect_rejected(images_, {"rows = 0, out of range 1..4096"});
}

TEST_F(MalformedIdx, rows_100000_is_rejected_as_out_of_range) {
    write_file(images_, idx_images_bytes(3, 100000, 3, pixels_));
    expect_rejected(images_, {"rows = 100000, out of range 1..4096"});
}

TEST_F(MalformedIdx, cols_4097_is_rejected_as_out_of_range) {
    write_file(images_, idx_images_bytes(3, 2, 4097, pixels_));
    expect_rejected(images_, {"cols = 4097, out of range 1..4096"});
}

TEST_F(MalformedIdx, gzip_header_followed_by_garbage_is_rejected_as_corrupt) {
    Bytes bytes{0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03};
    const Bytes garbage = noise(200);
    bytes.insert(bytes.end(), garbage.begin(), garbage.end());
    write_file(images_, bytes);
    expect_rejected(images_, {"corrupt gzip data (zlib: ", "download it again"});
}

TEST_F(MalformedIdx, gzip_file_cut_in_the_middle_is_rejected_as_truncated) {
    const Bytes gz = test::gzip_bytes(idx_images_bytes(50, 28, 28, noise(50 * 28 * 28)));
    write_file(images_, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
    expect_rejected(images_, {"the gzip stream ends early after ", " of the 39216 bytes its header declares",
                              "truncated"});
}

TEST_F(MalformedIdx, gzip_file_with_a_wrong_checksum_is_rejected_as_corrupt) {
    Bytes gz = test::gzip_bytes(idx_images_bytes(3, 2, 3, pixels_));
    gz[gz.size() - 8] ^= 0xff;  // the CRC-32 of the trailer
    write_file(images_, gz);
    expect_rejected(images_, {"corrupt gzip data (zlib: incorrect data check)"});
}

TEST_F(MalformedIdx, valid_gzip_of_a_truncated_idx_file_is_rejected_as_truncated) {
    write_gzip_file(images_, idx_images_bytes(4, 2, 3, pixels_));
    expect_rejected(images_, {"truncated: expected 24 bytes", "got 18"});
}

TEST_F(MalformedIdx, truncated_labels_file_is_rejected_as_truncated) {
    write_file(labels_, idx_labels_bytes(3, {0, 1}));
    expect_rejected(labels_, {"truncated: expected 3 bytes of data (3 labels)", "got 2"});
}

TEST_F(MalformedIdx, labels_count_differing_from_images_count_names_both_files) {
    write_file(labels_, idx_labels_bytes(2, {0, 1}));
    expect_data_error([this] { load(); }, {images_.string(), labels_.string(), "holds 3 images",
                                           "holds 2 labels", "pair train-images with train-labels"});
}

TEST_F(MalformedIdx, label_10_is_rejected_as_out_of_range_for_10_classes) {
    write_file(labels_, idx_labels_bytes(3, {0, 10, 2}));
    expect_rejected(labels_, {"label 10 at index 1 is out of range 0..9 for 10-class data"});
}

TEST_F(MalformedIdx, missing_images_file_suggests_installing_the_package_or_data_dir) {
    fs::remove(images_);
    expect_rejected(images_, {"no such file", "apt-get install dataset-fashion-mnist", "--data DIR"});
}

TEST_F(MalformedIdx, missing_labels_file_is_named) {
    fs::remove(labels_);
    expect_rejected(labels_, {"no such file"});
}

TEST_F(MalformedIdx, directory_given_as_file_is_rejected_as_a_directory) {
    fs::remove(images_);
    fs::create_directory(images_);
    expect_rejected(images_, {"is a directory, not a file"});
}

// A pipe would block a reader forever if nobody writes to it: it is refused, not read.
TEST_F(MalformedIdx, fifo_given_as_file_is_rejected_without_blocking) {
    fs::remove(images_);
    ASSERT_EQ(::mkfifo(images_.c_str(), 0600), 0);
    expect_rejected(images_, {"is not a regular file"});
}

TEST_F(MalformedIdx, unreadable_file_is_rejected_with_a_permissions_hint) {
    if (::geteuid() == 0) GTEST_SKIP() << "running as root: file permissions do not stop reading";
    fs::permissions(images_, fs::perms::none);
    expect_rejected(images_, {"cannot be opened", "check its permissions"});
}

// Bytes after the data that the header declares mean a wrong count or a damaged file: rejected.
TEST_F(MalformedIdx, trailing_bytes_after_the_images_data_are_rejected) {
    Bytes bytes = idx_images_bytes(3, 2, 3, pixels_);
    bytes.insert(bytes.end(), {1, 2, 3, 4, 5});
    write_file(images_, bytes);
    expect_rejected(images_, {"5 extra bytes after the 18 bytes of data (3 images of 2x3)"});
}

TEST_F(MalformedIdx, trailing_bytes_inside_a_gzipped_labels_file_are_rejected) {
    write_gzip_file(labels_, idx_labels_bytes(3, {0, 1, 2, 7}));
    expect_rejected(labels_, {"1 extra bytes after the 3 bytes of data (3 labels)"});
}

// Junk after the end of a gzip stream is not data: zlib ignores it, as gunzip does.
TEST_F(MalformedIdx, junk_after_the_end_of_the_gzip_stream_is_ignored) {
    Bytes gz = test::gzip_bytes(idx_images_bytes(3, 2, 3, pixels_));
    gz.insert(gz.end(), {'j', 'u', 'n', 'k'});
    write_file(images_, gz);
    EXPECT_EQ(load().pixels, pixels_);
}

TEST_F(MalformedIdx, num_classes_bounds_the_labels) {
    write_file(labels_, idx_labels_bytes(3, {0, 1, 2}));
    EXPECT_NO_THROW(load_idx(images_, labels_, 3));
    try {
        load_idx(images_, labels_, 2);
        ADD_FAILURE() << "label 2 accepted with 2 classes";
    } catch (const DataError& error) {
        EXPECT_NE(std::string(error.what()).find("label 2 at index 2 is out of range 0..1"), std::string::npos)
            << error.what();
    }
}

// ---- BatchLoader ----------------------------------------------------------------------------

// count images of 2x3 whose first two pixels encode the index (low byte, high byte); label i % 10.
Dataset indexed_dataset(int64_t count) {
    Dataset data;
    data.count = count;
    data.rows = 2;
    data.cols = 3;
    for (int64_t i = 0; i < count; ++i) {
        const Bytes image{static_cast<uint8_t>(i & 255), static_cast<uint8_t>(i >> 8), 0, 255,
                          static_cast<uint8_t>((i * 7) & 255), 128};
        data.pixels.insert(data.pixels.end(), image.begin(), image.end());
        data.labels.push_back(static_cast<uint8_t>(i % 10));
    }
    return data;
}

int64_t decode_index(const Tensor& images, int64_t b) {
    const float* image = images.data() + b * 6;
    return std::lround(image[0] * 255.0f) + 256 * std::lround(image[1] * 255.0f);
}

// The sample indices of one epoch, batch after batch, and the batch sizes; checks the labels.
struct Epoch {
    std::vector<int64_t> indices;
    std::vector<int64_t> batch_sizes;
};
Epoch run_epoch(BatchLoader& loader, const Dataset& data) {
    Epoch epoch;
    Tensor images;
    std::vector<int32_t> labels;
    while (loader.next(images, labels)) {
        epoch.batch_sizes.push_back(images.dim(0));
        EXPECT_EQ(labels.size(), static_cast<size_t>(images.dim(0)));
        for (int64_t b = 0; b < images.dim(0); ++b) {
            const int64_t index = decode_index(images, b);
            epoch.indices.push_back(index);
            EXPECT_EQ(labels[static_cast<size_t>(b)], data.labels.at(static_cast<size_t>(index)));
        }
    }
    return epoch;
}

TEST(BatchLoader, same_seed_gives_the_same_order_in_every_epoch) {
    const Dataset data = indexed_dataset(1009);
    BatchLoader a(data, 32, 42, true), b(data, 32, 42, true);
    for (int epoch = 0; epoch < 3; ++epoch) EXPECT_EQ(run_epoch(a, data).indices, run_epoch(b, data).indices);
}

TEST(BatchLoader, different_seeds_give_different_orders) {
    const Dataset data = indexed_dataset(1009);
    BatchLoader a(data, 32, 42, true), b(data, 32, 43, true);
    EXPECT_NE(run_epoch(a, data).indices, run_epoch(b, data).indices);
}

TEST(BatchLoader, consecutive_epochs_have_different_orders) {
    const Dataset data = indexed_dataset(1009);
    BatchLoader loader(data, 32, 42, true);
    const Epoch first = run_epoch(loader, data);
    EXPECT_NE(first.indices, run_epoch(loader, data).indices);
}

TEST(BatchLoader, every_sample_appears_exactly_once_per_epoch) {
    const Dataset data = indexed_dataset(1009);
    BatchLoader loader(data, 32, 7, true);
    std::vector<int64_t> all(1009);
    std::iota(all.begin(), all.end(), 0);
    for (int epoch = 0; epoch < 3; ++epoch) {
        std::vector<int64_t> seen = run_epoch(loader, data).indices;
        std::sort(seen.begin(), seen.end());
        EXPECT_EQ(seen, all) << "epoch " << epoch;
    }
}

TEST(BatchLoader, without_shuffle_the_order_is_the_index_order) {
    const Dataset data = indexed_dataset(100);
    BatchLoader loader(data, 7, 42, false);
    std::vector<int64_t> all(100);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(run_epoch(loader, data).indices, all);
    EXPECT_EQ(run_epoch(loader, data).indices, all);
}

TEST(BatchLoader, last_partial_batch_holds_the_remainder_then_the_next_epoch_starts) {
    const Dataset data = indexed_dataset(1009);  // 31 * 32 + 17
    BatchLoader loader(data, 32, 42, true);
    EXPECT_EQ(loader.batches_per_epoch(), 32);
    const Epoch epoch = run_epoch(loader, data);
    ASSERT_EQ(epoch.batch_sizes.size(), 32u);
    EXPECT_EQ(std::count(epoch.batch_sizes.begin(), epoch.batch_sizes.end(), 32), 31);
    EXPECT_EQ(epoch.batch_sizes.back(), 17);
    EXPECT_EQ(loader.epoch(), 1);
    EXPECT_EQ(loader.position(), 0);
}

TEST(BatchLoader, drop_last_skips_the_partial_batch) {
    const Dataset data = indexed_dataset(1009);
    BatchLoader loader(data, 32, 42, true, /*drop_last=*/true);
    EXPECT_EQ(loader.batches_per_epoch(), 31);
    const Epoch epoch = run_epoch(loader, data);
    EXPECT_EQ(epoch.batch_sizes, std::vector<int64_t>(31, 32));
    std::vector<int64_t> seen = epoch.indices;
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "a sample came twice";
    EXPECT_EQ(loader.epoch(), 1);
}

TEST(BatchLoader, batch_size_equal_to_count_gives_one_batch_per_epoch) {
    const Dataset data = indexed_dataset(13);
    BatchLoader loader(data, 13, 42, true, true);
    EXPECT_EQ(run_epoch(loader, data).batch_sizes, std::vector<int64_t>{13});
    EXPECT_EQ(run_epoch(loader, data).batch_sizes, std::vector<int64_t>{13});
}

// A batch as it came out, with the loader's state before it: what a checkpoint would have saved.
struct Recorded {
    int64_t epoch, position;
    std::vector<float> images;
    std::vector<int32_t> labels;
};

std::vector<Recorded> record(BatchLoader& loader, int calls) {
    std::vector<Recorded> out;
    Tensor images;
    std::vector<int32_t> labels;
    for (int i = 0; i < calls; ++i) {
        Recorded r{loader.epoch(), loader.position(), {}, {}};
        if (loader.next(images, labels)) {
            r.images.assign(images.values().begin(), images.values().end());
            r.labels = labels;
        }
        out.push_back(std::move(r));
    }
    return out;
}

bool bitwise_equal(const Recorded& a, const Recorded& b) {
    return a.epoch == b.epoch && a.position == b.position && a.labels == b.labels &&
           a.images.size() == b.images.size() &&
           (a.images.empty() ||  // memcmp requires non-null pointers, even for 0 bytes
            std::memcmp(a.images.data(), b.images.data(), a.images.size() * sizeof(float)) == 0);
}

TEST(BatchLoader, seek_to_a_saved_state_reproduces_the_remaining_batches_bitwise) {
    const Dataset data = indexed_dataset(101);  // 4 batches of 25 + 1, then the end-of-epoch call
    BatchLoader reference(data, 25, 99, true);
    const std::vector<Recorded> run = record(reference, 18);  // three epochs and more
    for (size_t k : {0u, 1u, 3u, 4u, 5u, 6u, 9u, 13u, 17u}) {
        BatchLoader resumed(data, 25, 99, true);
        resumed.seek(run[k].epoch, run[k].position);
        const std::vector<Recorded> rest = record(resumed, static_cast<int>(run.size() - k));
        for (size_t i = 0; i < rest.size(); ++i)
            EXPECT_TRUE(bitwise_equal(rest[i], run[k + i]))
                << "resumed at call " << k << " (epoch " << run[k].epoch << ", position " << run[k].position
                << "): call " << k + i << " differs";
    }
}

TEST(BatchLoader, seek_to_an_unaligned_position_continues_from_that_sample) {
    const Dataset data = indexed_dataset(50);
    BatchLoader loader(data, 8, 5, true);
    loader.seek(2, 45);
    const std::vector<int64_t> order = BatchLoader::permutation(50, 5, 2);
    EXPECT_EQ(loader.order(), order);
    const Epoch rest = run_epoch(loader, data);
    EXPECT_EQ(rest.indices, std::vector<int64_t>(order.begin() + 45, order.end()));
    EXPECT_EQ(loader.epoch(), 3);
}

TEST(BatchLoader, seek_rejects_states_outside_the_data_set) {
    const Dataset data = indexed_dataset(50);
    BatchLoader loader(data, 8, 5, true);
    EXPECT_THROW(loader.seek(-1, 0), bnorm::InvalidArgument);
    EXPECT_THROW(loader.seek(0, -1), bnorm::InvalidArgument);
    EXPECT_THROW(loader.seek(0, 51), bnorm::InvalidArgument);
    EXPECT_NO_THROW(loader.seek(0, 50));
    Tensor images;
    std::vector<int32_t> labels;
    EXPECT_FALSE(loader.next(images, labels));
    EXPECT_EQ(loader.epoch(), 1);
}

TEST(BatchLoader, pixels_are_scaled_by_exactly_1_over_255_and_nothing_else) {
    Dataset data;
    data.count = 1;
    data.rows = 16;
    data.cols = 16;
    for (int v = 0; v < 256; ++v) data.pixels.push_back(static_cast<uint8_t>(v));
    data.labels = {4};
    BatchLoader loader(data, 1, 0, false);
    Tensor images;
    std::vector<int32_t> labels;
    ASSERT_TRUE(loader.next(images, labels));
    EXPECT_EQ(images.shape(), (std::vector<int64_t>{1, 1, 16, 16}));
    EXPECT_EQ(labels, std::vector<int32_t>{4});
    for (int v = 0; v < 256; ++v) {
        EXPECT_EQ(images.at(v), static_cast<float>(v) / 255.0f) << "pixel " << v;
        EXPECT_GE(images.at(v), 0.0f);
        EXPECT_LE(images.at(v), 1.0f);
    }
    EXPECT_EQ(images.at(0), 0.0f);
    EXPECT_EQ(images.at(255), 1.0f);
}

TEST(BatchLoader, images_have_shape_batch_1_rows_cols_and_full_batches_reuse_the_storage) {
    const Dataset data = indexed_dataset(64);
    BatchLoader loader(data, 16, 3, true);
    Tensor images;
    std::vector<int32_t> labels;
    ASSERT_TRUE(loader.next(images, labels));
    EXPECT_EQ(images.shape(), (std::vector<int64_t>{16, 1, 2, 3}));
    const float* storage = images.data();
    const int32_t* label_storage = labels.data();
    for (int call = 0; call < 12; ++call) {  // across epoch ends too
        if (!loader.next(images, labels)) continue;
        EXPECT_EQ(images.data(), storage);
        EXPECT_EQ(labels.data(), label_storage);
        EXPECT_EQ(images.shape(), (std::vector<int64_t>{16, 1, 2, 3}));
    }
}

// Golden orders computed by an independent Python implementation of std::mt19937_64 (checked
// against the standard's 10000th value) and of this file's splitmix64 + bounded draw +
// Fisher-Yates: the order is fixed by the specification, not by a standard library.
TEST(BatchLoader, permutation_matches_the_independent_python_reference) {
    EXPECT_EQ(BatchLoader::permutation(10, 42, 0), (std::vector<int64_t>{2, 0, 4, 7, 8, 3, 5, 1, 9, 6}));
    EXPECT_EQ(BatchLoader::permutation(10, 42, 1), (std::vector<int64_t>{2, 8, 7, 3, 6, 4, 0, 9, 5, 1}));
    EXPECT_EQ(BatchLoader::permutation(10, 7, 0), (std::vector<int64_t>{5, 6, 2, 8, 4, 9, 7, 3, 1, 0}));
    EXPECT_EQ(BatchLoader::permutation(20, 0, 3),
              (std::vector<int64_t>{9, 3, 18, 7, 2, 4, 6, 17, 11, 12, 14, 5, 10, 0, 13, 8, 15, 1, 19, 16}));
}

// Each of the 6 orders of 3 samples should come 1/6 of the time; a biased shuffle (swapping with
// any of the n positions, say) gives 4/27 and 5/27, far outside these bounds (~5.5 sigma).
TEST(BatchLoader, shuffle_is_uniform_over_the_orders_of_3_samples) {
    std::map<std::vector<int64_t>, int> counts;
    const int epochs = 60000;
    for (int epoch = 0; epoch < epochs; ++epoch) ++counts[BatchLoader::permutation(3, 2024, epoch)];
    ASSERT_EQ(counts.size(), 6u);
    for (const auto& [order, count] : counts) {
        EXPECT_GT(count, 10000 - 500);
        EXPECT_LT(count, 10000 + 500);
    }
}

TEST(BatchLoader, constructor_rejects_bad_arguments) {
    const Dataset data = indexed_dataset(10);
    EXPECT_THROW(BatchLoader(data, 0, 1, true), bnorm::InvalidArgument);
    EXPECT_THROW(BatchLoader(data, 11, 1, true, /*drop_last=*/true), bnorm::InvalidArgument);
    EXPECT_NO_THROW(BatchLoader(data, 11, 1, true, false));
    Dataset inconsistent = data;
    inconsistent.labels.pop_back();
    EXPECT_THROW(BatchLoader(inconsistent, 2, 1, true), bnorm::InvalidArgument);
    EXPECT_THROW(BatchLoader(Dataset{}, 2, 1, true), bnorm::InvalidArgument);
}

}  // namespace
}  // namespace bnorm::nn
