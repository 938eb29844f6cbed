// test_checkpoint.cpp: atomic file writes; safetensors checkpoints: the layout, bitwise round trips
// (a resumed run continues exactly as an uninterrupted one), and a battery of damaged files, each
// refused with CheckpointError while the model and the optimizer stay bitwise untouched.
//
// The model is made of test-only layers (a Linear, a BatchNorm1d and a Dropout with the tensors,
// names and maths of PyTorch's), so these tests depend on no other part of src/nn.
//
// Run as `nn_checkpoint --write-fixture DIR`, the binary writes instead DIR/model.safetensors and
// DIR/expected.json for tests/nn/checkpoint_torch_load.py, which loads the checkpoint into torch.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "bnorm/nn/atomic_file.hpp"
#include "bnorm/nn/checkpoint.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/optim.hpp"

namespace bnorm::nn {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// ---- test-only layers with PyTorch's tensors and names ----------------------------------------

// y = x W^T + b;  x (N, in), W (out, in), b (out), y (N, out)
class TestLinear : public Layer {
public:
    TestLinear(int64_t in, int64_t out, std::mt19937_64& rng)
        : weight_({out, in}), bias_({out}), grad_weight_({out, in}), grad_bias_({out}) {
        std::normal_distribution<float> normal(0.0f, 0.7f);
        for (float& v : weight_.values()) v = normal(rng);
        for (float& v : bias_.values()) v = normal(rng);
    }
    std::string type() const override { return "Linear"; }
    const Tensor& forward(const Tensor& x) override {
        input_ = x;
        const int64_t n = x.dim(0), in = weight_.dim(1), out = weight_.dim(0);
        output_.resize({n, out});
        for (int64_t b = 0; b < n; ++b)
            for (int64_t o = 0; o < out; ++o) {
                float s = bias_.at(o);
                for (int64_t i = 0; i < in; ++i) s += weight_.at(o * in + i) * x.at(b * in + i);
                output_.at(b * out + o) = s;
            }
        return output_;
    }
    const Tensor& backward(const Tensor& gy) override {
        const int64_t n = input_.dim(0), in = weight_.dim(1), out = weight_.dim(0);
        grad_weight_.fill(0.0f);
        grad_bias_.fill(0.0f);
        grad_input_.resize({n, in});
        grad_input_.fill(0.0f);
        for (int64_t b = 0; b < n; ++b)
            for (int64_t o = 0; o < out; ++o) {
                const float g = gy.at(b * out + o);
                grad_bias_.at(o) += g;
                for (int64_t i = 0; i < in; ++i) {
                    grad_weight_.at(o * in + i) += g * input_.at(b * in + i);
                    grad_input_.at(b * in + i) += g * weight_.at(o * in + i);
                }
            }
        return grad_input_;
    }
    std::vector<Parameter> parameters() override {
        return {{"weight", &weight_, &grad_weight_}, {"bias", &bias_, &grad_bias_}};
    }

private:
    Tensor weight_, bias_, grad_weight_, grad_bias_, input_, output_, grad_input_;
};

// BatchNorm1d over (N, C): batch statistics in training (running_var updated with the unbiased
// variance, momentum 0.1), running statistics in evaluation.
class TestBatchNorm : public Layer {
public:
    explicit TestBatchNorm(int64_t c, std::mt19937_64& rng)
        : weight_({c}), bias_({c}), grad_weight_({c}), grad_bias_({c}), running_mean_({c}), running_var_({c}) {
        std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
        for (float& v : weight_.values()) v = uniform(rng);
        for (float& v : bias_.values()) v = uniform(rng) - 1.0f;
        running_mean_.fill(0.0f);
        running_var_.fill(1.0f);
    }
    std::string type() const override { return "BatchNorm1d"; }
    const Tensor& forward(const Tensor& x) override {
        const int64_t n = x.dim(0), c = weight_.dim(0);
        output_.resize({n, c});
        xhat_.resize({n, c});
        invstd_.resize({c});
        for (int64_t j = 0; j < c; ++j) {
            double mean = 0, var = 0;
            if (training_) {
                for (int64_t b = 0; b < n; ++b) mean += x.at(b * c + j);
                mean /= static_cast<double>(n);
                for (int64_t b = 0; b < n; ++b) var += (x.at(b * c + j) - mean) * (x.at(b * c + j) - mean);
                running_mean_.at(j) = static_cast<float>(0.9 * running_mean_.at(j) + 0.1 * mean);
                running_var_.at(j) = static_cast<float>(0.9 * running_var_.at(j) + 0.1 * var / static_cast<double>(n - 1));
                var /= static_cast<double>(n);
            } else {
                mean = running_mean_.at(j);
                var = running_var_.at(j);
            }
            invstd_.at(j) = static_cast<float>(1.0 / std::sqrt(var + 1e-5));
            for (int64_t b = 0; b < n; ++b) {
                xhat_.at(b * c + j) = static_cast<float>((x.at(b * c + j) - mean) * invstd_.at(j));
                output_.at(b * c + j) = weight_.at(j) * xhat_.at(b * c + j) + bias_.at(j);
            }
        }
        if (training_) ++num_batches_tracked_;
        return output_;
    }
    const Tensor& backward(const Tensor& gy) override {
        const int64_t n = xhat_.dim(0), c = weight_.dim(0);
        grad_input_.resize({n, c});
        for (int64_t j = 0; j < c; ++j) {
            double sum_gy = 0, sum_gy_xhat = 0;
            for (int64_t b = 0; b < n; ++b) {
                sum_gy += gy.at(b * c + j);
                sum_gy_xhat += gy.at(b * c + j) * xhat_.at(b * c + j);
            }
            grad_weight_.at(j) = static_cast<float>(sum_gy_xhat);
            grad_bias_.at(j) = static_cast<float>(sum_gy);
            const double scale = weight_.at(j) * invstd_.at(j) / static_cast<double>(n);
            for (int64_t b = 0; b < n; ++b)
                grad_input_.at(b * c + j) = static_cast<float>(
                    scale * (static_cast<double>(n) * gy.at(b * c + j) - sum_gy - xhat_.at(b * c + j) * sum_gy_xhat));
        }
        return grad_input_;
    }
    std::vector<Parameter> parameters() override {
        return {{"weight", &weight_, &grad_weight_}, {"bias", &bias_, &grad_bias_}};
    }
    std::vector<Buffer> buffers() override {
        return {{"running_mean", &running_mean_, nullptr},
                {"running_var", &running_var_, nullptr},
                {"num_batches_tracked", nullptr, &num_batches_tracked_}};
    }

private:
    Tensor weight_, bias_, grad_weight_, grad_bias_, running_mean_, running_var_, output_, xhat_, invstd_, grad_input_;
    int64_t num_batches_tracked_ = 0;
};

// Dropout(0.5): in training, keeps each value with probability 1/2 (scaled by 2), drawing from its
// own engine, which checkpoints carry as a random state.
class TestDropout : public Layer {
public:
    explicit TestDropout(uint64_t seed) : generator_(seed) {}
    std::string type() const override { return "Dropout"; }
    const Tensor& forward(const Tensor& x) override {
        output_.resize(x.shape());
        mask_.resize(x.shape());
        for (int64_t i = 0; i < x.numel(); ++i) {
            mask_.at(i) = training_ ? static_cast<float>(generator_() & 1) * 2.0f : 1.0f;
            output_.at(i) = x.at(i) * mask_.at(i);
        }
        return output_;
    }
    const Tensor& backward(const Tensor& gy) override {
        grad_input_.resize(gy.shape());
        for (int64_t i = 0; i < gy.numel(); ++i) grad_input_.at(i) = gy.at(i) * mask_.at(i);
        return grad_input_;
    }
    std::vector<RandomState> random_states() override { return {{"generator", &generator_}}; }

private:
    std::mt19937_64 generator_;
    Tensor output_, mask_, grad_input_;
};

// nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)) in PyTorch.
std::unique_ptr<Sequential> make_model(uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto model = std::make_unique<Sequential>();
    model->add(std::make_unique<TestLinear>(2, 3, rng));
    model->add(std::make_unique<TestBatchNorm>(3, rng));
    model->add(std::make_unique<TestDropout>(seed * 7 + 1));
    return model;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, Layer& model, double lr) {
    if (kind == "SGD") return std::make_unique<SGD>(model.parameters(), lr, 0.9, 1e-3, /*nesterov=*/true);
    return std::make_unique<Adam>(model.parameters(), lr, 0.8, 0.99, 1e-6, 1e-2);
}

// A training loop as the trainer runs it: the batch and the lr are functions of the step.
void train(Layer& model, Optimizer& optimizer, int steps) {
    const CosineLR schedule(0.05, 20, 0.001);
    for (int k = 0; k < steps; ++k) {
        const int64_t step = optimizer.steps();
        std::mt19937_64 data(static_cast<uint64_t>(step) + 77);
        std::normal_distribution<float> normal(0.5f, 2.0f);
        Tensor x({5, 2});
        for (float& v : x.values()) v = normal(data);
        optimizer.set_lr(schedule.lr_at(step));
        const Tensor& y = model.forward(x);
        model.backward(y);  // loss = sum(y^2) / 2
        optimizer.step();
    }
}

// Everything a checkpoint restores, as bits.
struct Snapshot {
    std::vector<std::pair<std::string, std::vector<uint32_t>>> tensors;
    std::vector<std::pair<std::string, int64_t>> counters;
    std::vector<std::string> engines;
    int64_t steps = -1;
    std::map<std::string, std::string> hyperparameters;
    bool operator==(const Snapshot&) const = default;
};

std::vector<uint32_t> bits(const Tensor& t) {
    std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
    if (!out.empty()) std::memcpy(out.data(), t.data(), out.size() * 4);
    return out;
}

Snapshot snapshot(Layer& model, Optimizer* optimizer) {
    Snapshot s;
    for (const Parameter& p : model.parameters()) s.tensors.emplace_back(p.name, bits(*p.value));
    for (const Buffer& b : model.buffers()) {
        if (b.f32 != nullptr) s.tensors.emplace_back(b.name, bits(*b.f32));
        else s.counters.emplace_back(b.name, *b.i64);
    }
    for (const RandomState& r : model.random_states()) {
        std::ostringstream text;
        text << *r.engine;
        s.engines.push_back(text.str());
    }
    if (optimizer != nullptr) {
        for (const OptimizerState& st : optimizer->state()) s.tensors.emplace_back(st.name, bits(*st.value));
        s.steps = optimizer->steps();
        s.hyperparameters = optimizer->hyperparameters();
    }
    return s;
}

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    fs::remove(path);  // a new file: rewriting one in place makes ext4 flush it (auto_da_alloc), slowly
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> directory_listing(const fs::path& directory) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(directory)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

// A scratch directory per test, removed afterwards.
class ScratchDirectory : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        // tmpfs when there is one: the damage tests write thousands of small files.
        std::error_code ec;
        const fs::path base = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                                  ? fs::path("/dev/shm")
                                  : fs::temp_directory_path();
        std::string name = "bnorm_nn_checkpoint_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name();
        std::replace(name.begin(), name.end(), '/', '_');  // parameterized tests: "Suite/Test/0"
        directory_ = base / name;
        fs::remove_all(directory_);
        fs::create_directories(directory_);
    }
    void TearDown() override {
        std::error_code ec;
        fs::permissions(directory_, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(directory_, ec);
    }
    fs::path directory_;
};

// Sets RLIMIT_FSIZE (SIGXFSZ ignored, so write() fails with EFBIG) for the scope: a disk that
// fills up in the middle of a write.
class FileSizeLimit {
public:
    explicit FileSizeLimit(rlim_t bytes) {
        getrlimit(RLIMIT_FSIZE, &old_);
        old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limit = old_;
        limit.rlim_cur = bytes;
        setrlimit(RLIMIT_FSIZE, &limit);
    }
    ~FileSizeLimit() {
        setrlimit(RLIMIT_FSIZE, &old_);
        std::signal(SIGXFSZ, old_handler_);
    }

private:
    rlimit old_{};
    void (*old_handler_)(int);
};

std::span<const std::byte> as_bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

// ---- atomic writes ----------------------------------------------------------------------------

using AtomicFile = ScratchDirectory;

TEST_F(AtomicFile, writes_a_new_file_then_replaces_it_leaving_no_temporary_file) {
    const fs::path target = directory_ / "out.bin";
    write_file_atomically(target, as_bytes("first content"));
    EXPECT_EQ(read_bytes(target), "first content");
    write_file_atomically(target, as_bytes("second"));
    EXPECT_EQ(read_bytes(target), "second");
    write_file_atomically(target, as_bytes(""));
    EXPECT_EQ(read_bytes(target), "");
    EXPECT_EQ(directory_listing(directory_), std::vector<std::string>{"out.bin"});
}

TEST_F(AtomicFile, write_failing_midway_keeps_the_old_content_and_removes_the_temporary_file) {
    const fs::path target = directory_ / "out.bin";
    write_file_atomically(target, as_bytes("old content"));
    const std::string big(1 << 20, 'x');
    try {
        FileSizeLimit limit(64 * 1024);
        write_file_atomically(target, as_bytes(big));
        ADD_FAILURE() << "a write past RLIMIT_FSIZE succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EFBIG) << e.what();
        EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(std::strerror(EFBIG)), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_bytes(target), "old content");
    EXPECT_EQ(directory_listing(directory_), std::vector<std::string>{"out.bin"});
}

TEST_F(AtomicFile, rename_failing_onto_a_directory_keeps_it_and_removes_the_temporary_file) {
    const fs::path target = directory_ / "taken";
    fs::create_directories(target / "inside");
    EXPECT_THROW(write_file_atomically(target, as_bytes("data")), std::system_error);
    EXPECT_TRUE(fs::is_directory(target / "inside"));
    EXPECT_EQ(directory_listing(directory_), std::vector<std::string>{"taken"});
}

TEST_F(AtomicFile, parent_that_is_a_regular_file_throws_naming_the_path_and_changes_nothing) {
    const fs::path parent = directory_ / "plain_file";
    write_bytes(parent, "I am a file");
    const fs::path target = parent / "out.bin";
    try {
        write_file_atomically(target, as_bytes("data"));
        ADD_FAILURE() << "no throw";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOTDIR) << e.what();
        EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_bytes(parent), "I am a file");
    EXPECT_EQ(directory_listing(directory_), std::vector<std::string>{"plain_file"});
}

// ---- checkpoint layout and round trips --------------------------------------------------------

using Checkpoint = ScratchDirectory;

TEST_F(Checkpoint, file_is_safetensors_with_pytorch_names_dtypes_shapes_and_contiguous_offsets) {
    auto model = make_model(1);
    auto sgd = make_optimizer("SGD", *model, 0.1);
    train(*model, *sgd, 3);
    const fs::path path = directory_ / "ckpt.safetensors";
    save_checkpoint(path, *model, sgd.get(), {{"step", "3"}, {"model", "toy"}});

    const std::string file = read_bytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
    EXPECT_EQ(n % 8, 0u) << "header padded to a multiple of 8";
    EXPECT_EQ(file[8], '{');
    const Json header = Json::parse(file.substr(8, n));

    const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>> expected = {
        {"0.weight", "F32", {3, 2}},
        {"0.bias", "F32", {3}},
        {"1.weight", "F32", {3}},
        {"1.bias", "F32", {3}},
        {"1.running_mean", "F32", {3}},
        {"1.running_var", "F32", {3}},
        {"1.num_batches_tracked", "I64", {}},
        {"optimizer.0.weight.momentum_buffer", "F32", {3, 2}},
        {"optimizer.0.bias.momentum_buffer", "F32", {3}},
        {"optimizer.1.weight.momentum_buffer", "F32", {3}},
        {"optimizer.1.bias.momentum_buffer", "F32", {3}},
    };
    ASSERT_EQ(header.size(), expected.size() + 1);
    uint64_t offset = 0;
    for (const auto& [name, dtype, shape] : expected) {
        ASSERT_TRUE(header.contains(name)) << name;
        EXPECT_EQ(header[name]["dtype"], dtype) << name;
        EXPECT_EQ(header[name]["shape"].get<std::vector<int64_t>>(), shape) << name;
        const auto offsets = header[name]["data_offsets"].get<std::vector<uint64_t>>();
        EXPECT_EQ(offsets[0], offset) << name << ": contiguous, in header order";
        offset = offsets[1];
    }
    EXPECT_EQ(8 + n + offset, file.size()) << "no trailing data";
    int64_t counter = 0;
    std::memcpy(&counter, file.data() + 8 + n + header["1.num_batches_tracked"]["data_offsets"][0].get<uint64_t>(), 8);
    EXPECT_EQ(counter, 3);

    const auto& meta = header["__metadata__"];
    EXPECT_EQ(meta["format"], "bnorm.checkpoint.v1");
    EXPECT_EQ(meta["optimizer"], "SGD");
    EXPECT_EQ(meta["optimizer.steps"], "3");
    EXPECT_EQ(meta["optimizer.momentum"], "0.9");
    EXPECT_EQ(meta["optimizer.nesterov"], "true");
    EXPECT_EQ(meta["step"], "3");
    EXPECT_TRUE(meta.contains("random_state.2.generator"));

    const SafetensorsHeader parsed = read_safetensors_header(path);
    ASSERT_EQ(parsed.tensors.size(), expected.size());
    EXPECT_EQ(parsed.tensors[0].name, "0.weight");
    EXPECT_EQ(parsed.data_start, 8 + n);
    EXPECT_EQ(parsed.metadata.at("model"), "toy");
}

class CheckpointRoundTrip : public ScratchDirectory, public ::testing::WithParamInterface<std::string> {};

TEST_P(CheckpointRoundTrip, restores_parameters_buffers_optimizer_and_rng_bitwise) {
    auto model = make_model(1);
    auto optimizer = make_optimizer(GetParam(), *model, 0.05);
    train(*model, *optimizer, 4);
    const fs::path path = directory_ / "ckpt.safetensors";
    const std::map<std::string, std::string> metadata = {{"step", "4"}, {"epoch", "0"}, {"seed", "1"}, {"note", "héllo"}};
    save_checkpoint(path, *model, optimizer.get(), metadata);

    auto restored = make_model(99);
    auto restored_optimizer = make_optimizer(GetParam(), *restored, 0.3);
    ASSERT_FALSE(snapshot(*restored, restored_optimizer.get()) == snapshot(*model, optimizer.get()));
    EXPECT_EQ(load_checkpoint(path, *restored, restored_optimizer.get()), metadata);
    EXPECT_TRUE(snapshot(*restored, restored_optimizer.get()) == snapshot(*model, optimizer.get()));
    EXPECT_EQ(restored_optimizer->lr(), optimizer->lr());
}

TEST_P(CheckpointRoundTrip, resumed_training_equals_uninterrupted_training_bitwise) {
    auto model = make_model(1);
    auto optimizer = make_optimizer(GetParam(), *model, 0.05);
    train(*model, *optimizer, 4);
    const fs::path path = directory_ / "ckpt.safetensors";
    save_checkpoint(path, *model, optimizer.get(), {});
    train(*model, *optimizer, 6);

    auto resumed = make_model(2);
    auto resumed_optimizer = make_optimizer(GetParam(), *resumed, 0.05);
    train(*resumed, *resumed_optimizer, 1);  // some other state, overwritten by the load
    load_checkpoint(path, *resumed, resumed_optimizer.get());
    train(*resumed, *resumed_optimizer, 6);
    EXPECT_EQ(resumed_optimizer->steps(), 10);
    EXPECT_TRUE(snapshot(*resumed, resumed_optimizer.get()) == snapshot(*model, optimizer.get()));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, CheckpointRoundTrip, ::testing::Values("SGD", "Adam"));

TEST_F(Checkpoint, loads_the_model_alone_without_an_optimizer) {
    auto model = make_model(1);
    auto sgd = make_optimizer("SGD", *model, 0.1);
    train(*model, *sgd, 2);
    const fs::path path = directory_ / "ckpt.safetensors";
    save_checkpoint(path, *model, sgd.get(), {});
    auto evaluated = make_model(5);
    load_checkpoint(path, *evaluated, nullptr);
    EXPECT_TRUE(snapshot(*evaluated, nullptr) == snapshot(*model, nullptr));
}

TEST_F(Checkpoint, refuses_an_optimizer_when_the_file_has_none_or_another_kind) {
    auto model = make_model(1);
    const fs::path without = directory_ / "without.safetensors", adam_file = directory_ / "adam.safetensors";
    save_checkpoint(without, *model, nullptr, {});
    auto adam = make_optimizer("Adam", *model, 0.1);
    save_checkpoint(adam_file, *model, adam.get(), {});
    auto sgd = make_optimizer("SGD", *model, 0.1);
    const Snapshot before = snapshot(*model, sgd.get());
    EXPECT_THROW(load_checkpoint(without, *model, sgd.get()), CheckpointError);
    EXPECT_THROW(load_checkpoint(adam_file, *model, sgd.get()), CheckpointError);
    EXPECT_TRUE(snapshot(*model, sgd.get()) == before);
}

TEST_F(Checkpoint, save_refuses_reserved_or_non_utf8_metadata_and_writes_nothing) {
    auto model = make_model(1);
    const fs::path path = directory_ / "ckpt.safetensors";
    for (const char* key : {"format", "optimizer", "optimizer.lr", "random_state.2.generator"})
        EXPECT_THROW(save_checkpoint(path, *model, nullptr, {{key, "x"}}), CheckpointError) << key;
    EXPECT_THROW(save_checkpoint(path, *model, nullptr, {{"note", "\xff\xfe"}}), CheckpointError);
    EXPECT_FALSE(fs::exists(path));
}

TEST_F(Checkpoint, failed_save_keeps_the_previous_checkpoint_loadable) {
    auto model = make_model(1);
    auto sgd = make_optimizer("SGD", *model, 0.1);
    const fs::path path = directory_ / "ckpt.safetensors";
    save_checkpoint(path, *model, sgd.get(), {{"step", "0"}});
    const std::string old = read_bytes(path);
    train(*model, *sgd, 2);
    try {
        FileSizeLimit limit(old.size() / 2);
        save_checkpoint(path, *model, sgd.get(), {{"step", "2"}});
        ADD_FAILURE() << "a save past RLIMIT_FSIZE succeeded";
    } catch (const CheckpointError& e) {
        EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_bytes(path), old);
    EXPECT_EQ(directory_listing(directory_), std::vector<std::string>{"ckpt.safetensors"});
    EXPECT_EQ(load_checkpoint(path, *model, sgd.get()).at("step"), "0");
}

TEST_F(Checkpoint, missing_file_and_directory_are_refused_naming_the_path) {
    auto model = make_model(1);
    for (const fs::path& path : {directory_ / "absent.safetensors", directory_}) {
        try {
            load_checkpoint(path, *model, nullptr);
            ADD_FAILURE() << "no throw for " << path;
        } catch (const CheckpointError& e) {
            EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
        }
    }
}

// ---- damaged checkpoints ----------------------------------------------------------------------

// A checkpoint file taken apart: its header JSON and its data section.
struct Parts {
    Json header;
    std::string data;
};

Parts split(const std::string& file) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
    return {Json::parse(file.substr(8, n)), file.substr(8 + n)};
}

std::string with_length(std::string file, uint64_t n) {
    for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return file;
}

std::string assemble_text(std::string text, const std::string& data) {
    text.append((8 - text.size() % 8) % 8, ' ');
    return with_length(std::string(8, '\0') + text + data, text.size());
}

std::string assemble(const Parts& parts) { return assemble_text(parts.header.dump(), parts.data); }

// Removes a tensor and its bytes, moving the later tensors' offsets down.
void remove_tensor(Parts& parts, const std::string& name) {
    const auto begin = parts.header[name]["data_offsets"][0].get<uint64_t>();
    const auto end = parts.header[name]["data_offsets"][1].get<uint64_t>();
    parts.header.erase(name);
    parts.data.erase(begin, end - begin);
    for (auto& [key, entry] : parts.header.items())
        if (key != "__metadata__" && entry["data_offsets"][0].get<uint64_t>() >= end)
            entry["data_offsets"] = {entry["data_offsets"][0].get<uint64_t>() - (end - begin),
                                     entry["data_offsets"][1].get<uint64_t>() - (end - begin)};
}

void add_tensor(Parts& parts, const std::string& name, const std::string& dtype, std::vector<int64_t> shape, size_t bytes) {
    parts.header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {parts.data.size(), parts.data.size() + bytes}}};
    parts.data.append(bytes, '\x01');
}

struct Damage {
    std::string what;
    std::string file;
    std::string message;  // a part of the error message
};

class DamagedCheckpoint : public ScratchDirectory {
protected:
    void SetUp() override {
        ScratchDirectory::SetUp();
        model_ = make_model(1);
        optimizer_ = make_optimizer("SGD", *model_, 0.05);
        train(*model_, *optimizer_, 3);
        save_checkpoint(directory_ / "good.safetensors", *model_, optimizer_.get(), {{"step", "3"}, {"model", "toy"}});
        good_ = read_bytes(directory_ / "good.safetensors");
        train(*model_, *optimizer_, 2);  // the live state differs from the file's
    }

    // Loads `file`; true if refused with a CheckpointError naming the file (and containing
    // `message`) with model and optimizer untouched; false if it loaded. Fails the test otherwise.
    bool refused(const std::string& what, const std::string& file, const std::string& message = "") {
        const fs::path path = directory_ / "damaged.safetensors";
        write_bytes(path, file);
        const Snapshot before = snapshot(*model_, optimizer_.get());
        try {
            load_checkpoint(path, *model_, optimizer_.get());
        } catch (const CheckpointError& e) {
            const std::string text = e.what();
            EXPECT_NE(text.find(path.string()), std::string::npos) << what << ": " << text;
            EXPECT_NE(text.find(message), std::string::npos) << what << ": \"" << text << "\" lacks \"" << message << "\"";
            EXPECT_TRUE(snapshot(*model_, optimizer_.get()) == before) << what << ": model or optimizer changed";
            return true;
        } catch (const std::exception& e) {
            ADD_FAILURE() << what << ": not a CheckpointError: " << e.what();
            return true;
        }
        return false;
    }

    std::unique_ptr<Sequential> model_;
    std::unique_ptr<Optimizer> optimizer_;
    std::string good_;
};

TEST_F(DamagedCheckpoint, the_undamaged_file_loads) { EXPECT_FALSE(refused("good", good_)); }

TEST_F(DamagedCheckpoint, each_damage_is_refused_with_a_message_and_nothing_changes) {
    const Parts good = split(good_);
    const uint64_t n = good_.size() - good.data.size() - 8;
    auto edit = [&](auto change) {
        Parts p = good;
        change(p);
        return assemble(p);
    };
    auto flip = [&](size_t at, char to) {
        std::string f = good_;
        f[at] = to;
        return f;
    };
    std::string random_state = good.header["__metadata__"]["random_state.2.generator"];
    const std::vector<Damage> damages = {
        {"empty file", "", "too short"},
        {"7 bytes", good_.substr(0, 7), "too short"},
        {"header length 0", with_length(good_, 0), "header length is 0"},
        {"header length 2^63", with_length(good_, uint64_t{1} << 63), "absurd"},
        {"header length 100 MB + 1", with_length(good_, 100'000'001), "absurd"},
        {"header length = file size", with_length(good_, good_.size()), "larger than the rest of the file"},
        {"truncated in the header", good_.substr(0, 8 + n / 2), "larger than the rest of the file"},
        {"truncated at the data", good_.substr(0, 8 + n), "out of range"},
        {"truncated by one byte", good_.substr(0, good_.size() - 1), "out of range"},
        {"trailing data", good_ + std::string(4, '\0'), "trailing data"},
        {"header length 8 short", with_length(good_, n - 8), "not valid JSON"},
        {"header length 8 long", with_length(good_, n + 8), "not valid JSON"},
        {"first byte { flipped to [", flip(8, '['), "not valid JSON"},
        {"closing quote flipped", flip(good_.find("\":{", 8), 'x'), "not valid JSON"},
        {"invalid JSON", assemble_text("{\"0.weight\": ", good.data), "not valid JSON"},
        {"invalid UTF-8 in the header", assemble_text("{\"\xff\": 1}", good.data), "not valid JSON"},
        {"JSON array", assemble_text("[1, 2]", good.data), "not an object"},
        {"JSON string", assemble_text("\"weights\"", good.data), "not an object"},
        {"entry not an object", edit([](Parts& p) { p.header["0.bias"] = 5; }), "entry is not an object"},
        {"entry with an unknown field", edit([](Parts& p) { p.header["0.bias"]["scale"] = 2; }), "unknown field"},
        {"dtype F16", edit([](Parts& p) { p.header["0.bias"]["dtype"] = "F16"; }), "\"F16\" is not supported"},
        {"dtype missing", edit([](Parts& p) { p.header["0.bias"].erase("dtype"); }), "has no dtype"},
        {"dtype a number", edit([](Parts& p) { p.header["0.bias"]["dtype"] = 4; }), "dtype is not a string"},
        {"counter as F32 (same bytes)", edit([](Parts& p) {
             p.header["1.num_batches_tracked"]["dtype"] = "F32";
             p.header["1.num_batches_tracked"]["shape"] = {2};
         }), "is F32, the model expects I64"},
        {"weight as I64 (same bytes)", edit([](Parts& p) {
             p.header["0.weight"]["dtype"] = "I64";
             p.header["0.weight"]["shape"] = {3};
         }), "is I64, the model expects F32"},
        {"shape transposed", edit([](Parts& p) { p.header["0.weight"]["shape"] = {2, 3}; }),
         "tensor 0.weight has shape (2, 3), the model expects (3, 2)"},
        {"shape flattened", edit([](Parts& p) { p.header["0.weight"]["shape"] = {6}; }), "has shape (6)"},
        {"shape negative", edit([](Parts& p) { p.header["0.weight"]["shape"] = {-3, -2}; }), "non-negative integer"},
        {"shape not an array", edit([](Parts& p) { p.header["0.weight"]["shape"] = 6; }), "shape is missing or not an array"},
        {"shape missing", edit([](Parts& p) { p.header["0.weight"].erase("shape"); }), "shape is missing"},
        {"shape of floats", edit([](Parts& p) { p.header["0.weight"]["shape"] = {3.0, 2.0}; }), "non-negative integer"},
        {"shape absurd", edit([](Parts& p) { p.header["0.weight"]["shape"] = {uint64_t{1} << 62, uint64_t{1} << 62}; }),
         "too large"},
        {"offsets past the end", edit([](Parts& p) { p.header["0.weight"]["data_offsets"] = {0, 1u << 30}; }), "out of range"},
        {"offsets overlapping", edit([](Parts& p) { p.header["0.bias"]["data_offsets"] = {0, 12}; }), "overlap"},
        {"offsets as strings", edit([](Parts& p) { p.header["0.bias"]["data_offsets"] = {"24", "36"}; }),
         "non-negative integer"},
        {"offsets negative", edit([](Parts& p) { p.header["0.bias"]["data_offsets"] = {-12, 0}; }), "non-negative integer"},
        {"three offsets", edit([](Parts& p) { p.header["0.bias"]["data_offsets"] = {24, 30, 36}; }), "[begin, end]"},
        {"offsets missing", edit([](Parts& p) { p.header["0.bias"].erase("data_offsets"); }), "[begin, end]"},
        {"offsets reversed", edit([](Parts& p) { p.header["0.bias"]["data_offsets"] = {36, 24}; }), "end before they begin"},
        {"offsets not matching the shape", edit([](Parts& p) { p.header["0.weight"]["data_offsets"] = {0, 20}; }), "needs 24"},
        {"a gap between tensors", edit([](Parts& p) {
             const std::string last = "optimizer.1.bias.momentum_buffer";
             auto& offsets = p.header[last]["data_offsets"];
             offsets = {offsets[0].get<uint64_t>() + 4, offsets[1].get<uint64_t>() + 4};
             p.data += std::string(4, '\0');
         }), "belong to no tensor"},
        {"tensor missing", edit([](Parts& p) { remove_tensor(p, "1.running_var"); }), "missing tensors: 1.running_var"},
        {"counter missing", edit([](Parts& p) { remove_tensor(p, "1.num_batches_tracked"); }), "1.num_batches_tracked"},
        {"optimizer state missing", edit([](Parts& p) { remove_tensor(p, "optimizer.0.weight.momentum_buffer"); }),
         "missing tensors: optimizer.0.weight.momentum_buffer"},
        {"extra tensor", edit([](Parts& p) { add_tensor(p, "3.weight", "F32", {1}, 4); }),
         "tensors that the model does not have: 3.weight"},
        {"extra optimizer tensor", edit([](Parts& p) { add_tensor(p, "optimizer.9.weight.exp_avg", "F32", {2}, 8); }),
         "does not have: optimizer.9.weight.exp_avg"},
        {"__metadata__ not an object", edit([](Parts& p) { p.header["__metadata__"] = "v1"; }), "__metadata__"},
        {"metadata value not a string", edit([](Parts& p) { p.header["__metadata__"]["step"] = 3; }), "not a string"},
        {"format missing", edit([](Parts& p) { p.header["__metadata__"].erase("format"); }), "format"},
        {"format of another version", edit([](Parts& p) { p.header["__metadata__"]["format"] = "bnorm.checkpoint.v0"; }),
         "format"},
        {"random state missing", edit([](Parts& p) { p.header["__metadata__"].erase("random_state.2.generator"); }),
         "random_state.2.generator"},
        {"random state not numbers", edit([](Parts& p) { p.header["__metadata__"]["random_state.2.generator"] = "hello"; }),
         "not a std::mt19937_64 state"},
        {"random state cut short", edit([&](Parts& p) {
             p.header["__metadata__"]["random_state.2.generator"] = random_state.substr(0, random_state.size() / 2);
         }), "not a std::mt19937_64 state"},
        {"random state with text after it", edit([&](Parts& p) {
             p.header["__metadata__"]["random_state.2.generator"] = random_state + " 17";
         }), "text after"},
        {"random state of an unknown engine", edit([&](Parts& p) { p.header["__metadata__"]["random_state.5.noise"] = random_state; }),
         "no random engine"},
        {"optimizer kind Adam", edit([](Parts& p) { p.header["__metadata__"]["optimizer"] = "Adam"; }), "optimizer is Adam"},
        {"optimizer kind missing", edit([](Parts& p) { p.header["__metadata__"].erase("optimizer"); }), "no optimizer state"},
        {"optimizer steps negative", edit([](Parts& p) { p.header["__metadata__"]["optimizer.steps"] = "-3"; }),
         "optimizer.steps"},
        {"optimizer steps not a number", edit([](Parts& p) { p.header["__metadata__"]["optimizer.steps"] = "3 steps"; }),
         "optimizer.steps"},
        {"optimizer steps missing", edit([](Parts& p) { p.header["__metadata__"].erase("optimizer.steps"); }),
         "optimizer.steps"},
        {"momentum negative", edit([](Parts& p) { p.header["__metadata__"]["optimizer.momentum"] = "-0.9"; }), "momentum"},
        {"lr not a number", edit([](Parts& p) { p.header["__metadata__"]["optimizer.lr"] = "fast"; }), "lr"},
        {"lr missing", edit([](Parts& p) { p.header["__metadata__"].erase("optimizer.lr"); }), "lr"},
        {"unknown hyperparameter", edit([](Parts& p) { p.header["__metadata__"]["optimizer.dampening"] = "0"; }),
         "dampening"},
    };
    EXPECT_GE(damages.size(), 25u);
    for (const Damage& d : damages) EXPECT_TRUE(refused(d.what, d.file, d.message)) << d.what << ": loaded";
}

TEST_F(DamagedCheckpoint, every_truncation_is_refused_and_nothing_changes) {
    for (size_t size = 0; size < good_.size(); ++size)
        EXPECT_TRUE(refused("truncated to " + std::to_string(size), good_.substr(0, size))) << size << " bytes loaded";
}

// A byte flipped in the header either breaks it (refused, nothing changed) or keeps it valid (a
// digit of a random state, a letter of the caller's metadata): never a crash, never another error.
TEST_F(DamagedCheckpoint, every_header_byte_flip_is_refused_or_loads_and_never_crashes) {
    const uint64_t n = good_.size() - split(good_).data.size() - 8;
    size_t refusals = 0;
    for (size_t at = 0; at < 8 + n; ++at)
        for (int mask : {0x01, 0x20, 0x80}) {
            std::string file = good_;
            file[at] = static_cast<char>(static_cast<unsigned char>(file[at]) ^ static_cast<unsigned>(mask));
            refusals += refused("byte " + std::to_string(at) + " ^ " + std::to_string(mask), file) ? 1 : 0;
        }
    EXPECT_GT(refusals, 3 * (8 + n) / 2) << "most flips must break the header";
}

// ---- the fixture for checkpoint_torch_load.py -------------------------------------------------

int write_fixture(const fs::path& directory) {
    auto model = make_model(3);
    auto sgd = make_optimizer("SGD", *model, 0.05);
    train(*model, *sgd, 3);
    fs::create_directories(directory);
    save_checkpoint(directory / "model.safetensors", *model, sgd.get(), {{"model", "toy"}, {"step", "3"}});

    nlohmann::json expected;
    for (const Parameter& p : model->parameters())
        expected["state_dict"][p.name] = std::vector<float>(p.value->values().begin(), p.value->values().end());
    for (const Buffer& b : model->buffers()) {
        if (b.f32 != nullptr) expected["state_dict"][b.name] = std::vector<float>(b.f32->values().begin(), b.f32->values().end());
        else expected["state_dict"][b.name] = *b.i64;
    }
    // The evaluation-mode output on a fixed input: torch's modules must compute the same.
    Tensor x({4, 2});
    for (int64_t i = 0; i < x.numel(); ++i) x.at(i) = 0.25f * static_cast<float>(i) - 1.0f;
    model->set_training(false);
    const Tensor& y = model->forward(x);
    expected["input"] = std::vector<float>(x.values().begin(), x.values().end());
    expected["output"] = std::vector<float>(y.values().begin(), y.values().end());
    expected["metadata"] = {{"model", "toy"}, {"step", "3"}};
    std::ofstream out(directory / "expected.json");
    out << expected.dump() << '\n';
    out.close();
    if (!out) {
        std::cerr << "nn_checkpoint: cannot write " << (directory / "expected.json") << '\n';
        return 1;
    }
    return 0;
}

}  // namespace
}  // namespace bnorm::nn

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--write-fixture") {
        try {
            return bnorm::nn::write_fixture(argv[2]);
        } catch (const std::exception& e) {
            std::cerr << "nn_checkpoint --write-fixture: " << e.what() << '\n';
            return 1;
        }
    }
    testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
