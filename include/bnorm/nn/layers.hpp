// layers.hpp: the layers of the training system, float32, batch first, as their torch.nn namesakes.
//
//   bnorm::nn::Sequential net;
//   net.add(std::make_unique<bnorm::nn::Flatten>());                  // (N, 1, 28, 28) -> (N, 784)
//   net.add(std::make_unique<bnorm::nn::Linear>(784, 100, false));    // "1.weight" (100, 784)
//   net.add(std::make_unique<bnorm::nn::BatchNorm1d>(100));           // "2.weight", "2.running_mean", ...
//   net.add(std::make_unique<bnorm::nn::Sigmoid>());
//
// Every layer owns its output and its input gradient and reuses them (Tensor::resize), so after the
// first batch of a given size a step allocates nothing. Contract shared by all layers:
//   requires: backward(g) follows forward(x) on the same batch, g has the shape of the output (and,
//             for 4-D tensors, its memory order), and x stays alive and unchanged until backward
//             (layers keep a pointer to it rather than a copy; in a Sequential that holds, because
//             x is the previous layer's output).
//   ensures:  backward returns dL/dx in x's shape and memory order and WRITES (not accumulates) the
//             parameter gradients.
// 4-D tensors are (N, C, H, W) in the logical order; Tensor::channels_last() says whether memory is
// (N, H, W, C). Elementwise layers, MaxPool2d and BatchNorm2d keep the input's memory order; Conv2d
// reads either and writes the order set by set_channels_last (as torch's
// model.to(memory_format=torch.channels_last)); Flatten reads either and flattens in the logical
// (C, H, W) order, as torch.flatten does. A bad shape throws std::invalid_argument naming the layer,
// the expected and the got shape.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bnorm/dist.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

// y = x W^T + b. x (N, in_features), W "weight" (out_features, in_features), b "bias" (out_features).
// Weight starts at zero: initialize it (init.hpp) before training.
class Linear : public Layer {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias = true);
    std::string type() const override { return "Linear"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;
    std::vector<Parameter> parameters() override;

    int64_t in_features() const { return in_features_; }
    int64_t out_features() const { return out_features_; }
    bool has_bias() const { return has_bias_; }
    Tensor& weight() { return weight_; }
    Tensor& bias() { return bias_; }  // empty (0 elements) without bias

private:
    int64_t in_features_, out_features_;
    bool has_bias_;
    Tensor weight_, bias_, grad_weight_, grad_bias_;
    const Tensor* input_ = nullptr;
    Tensor output_, grad_input_;
};

// 2-D convolution (cross-correlation, as torch) by im2col and one sgemm per image (channels-first
// output) or per batch (channels-last output). x (N, in_channels, H, W) -> (N, out_channels, H', W')
// with H' = (H + 2 padding - kernel) / stride + 1. "weight" (out, in, kernel, kernel), "bias" (out).
class Conv2d : public Layer {
public:
    Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
           int64_t padding = 0, bool bias = true);
    std::string type() const override { return "Conv2d"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;
    std::vector<Parameter> parameters() override;

    // The memory order of the output: (N, H', W', C) when on. The input may be in either order.
    void set_channels_last(bool on) { channels_last_ = on; }
    bool channels_last() const { return channels_last_; }
    Tensor& weight() { return weight_; }
    Tensor& bias() { return bias_; }

private:
    int64_t in_channels_, out_channels_, kernel_size_, stride_, padding_;
    bool has_bias_;
    bool channels_last_ = false;
    Tensor weight_, bias_, grad_weight_, grad_bias_;
    // columns_: (N * H' * W', in_channels * kernel * kernel), one row per output pixel, the columns
    // in the order of the weight's (in, kh, kw); grad_columns_ the same for dL/dcolumns.
    Tensor columns_, grad_columns_;
    std::vector<int64_t> input_shape_;
    bool input_channels_last_ = false;
    Tensor output_, grad_input_;
};

// Max over kernel x kernel windows, no padding, floor mode; the gradient goes to the first maximum.
// (N, C, H, W) -> (N, C, (H - kernel) / stride + 1, (W - kernel) / stride + 1).
class MaxPool2d : public Layer {
public:
    explicit MaxPool2d(int64_t kernel_size, std::optional<int64_t> stride = std::nullopt);
    std::string type() const override { return "MaxPool2d"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;

private:
    int64_t kernel_size_, stride_;
    std::vector<int64_t> argmax_;  // per output element, the flat index of its maximum in the input
    std::vector<int64_t> input_shape_;
    Tensor output_, grad_input_;
};

// Elementwise activations; any shape; backward uses the saved output (ReLU: the saved input).
class ReLU : public Layer {
public:
    std::string type() const override { return "ReLU"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;

private:
    Tensor output_, grad_input_;
};

class Sigmoid : public Layer {
public:
    std::string type() const override { return "Sigmoid"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;

private:
    Tensor output_, grad_input_;
};

class Tanh : public Layer {
public:
    std::string type() const override { return "Tanh"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;

private:
    Tensor output_, grad_input_;
};

// Training: zeroes each element with probability p and scales the others by 1 / (1 - p) (inverted
// dropout, as torch); evaluation: the identity. The masks come from a std::mt19937_64 seeded with
// `seed` and exposed as random state "rng", so a checkpoint can resume it. An element is dropped
// when the top 24 bits of one engine draw, as a fraction in [0, 1), are below p: one draw per element,
// in memory order.
class Dropout : public Layer {
public:
    explicit Dropout(double p = 0.5, uint64_t seed = 0);
    std::string type() const override { return "Dropout"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;
    std::vector<RandomState> random_states() override { return {{"rng", &engine_}}; }
    double p() const { return p_; }

private:
    double p_;
    std::mt19937_64 engine_;
    bool masked_ = false;  // whether the last forward applied a mask (training and p > 0)
    Tensor mask_;          // 0 or 1 / (1 - p) per element
    Tensor output_, grad_input_;
};

// (N, d1, d2, ...) -> (N, d1 * d2 * ...), in the logical order whatever the memory order.
class Flatten : public Layer {
public:
    std::string type() const override { return "Flatten"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;

private:
    std::vector<int64_t> input_shape_;
    bool input_channels_last_ = false;
    Tensor output_, grad_input_;
};

// Batch normalization (Ioffe & Szegedy 2015) through libbnorm's public ops, as torch.nn.BatchNorm*d:
// training mode normalizes with the batch statistics and updates running_mean and running_var
// (unbiased variance) with `momentum` (nullopt: cumulative average) and counts num_batches_tracked;
// evaluation mode uses the running statistics. "weight" (gamma, starts at 1) and "bias" (beta, 0)
// when affine; buffers "running_mean" (0), "running_var" (1) float32 and "num_batches_tracked" int64.
// The common part of BatchNorm1d and BatchNorm2d, which differ only in the input ranks they accept.
class BatchNorm : public Layer {
public:
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;
    std::vector<Parameter> parameters() override;
    std::vector<Buffer> buffers() override;

    int64_t num_features() const { return num_features_; }
    double eps() const { return eps_; }
    std::optional<double> momentum() const { return momentum_; }
    Tensor& weight() { return weight_; }
    Tensor& bias() { return bias_; }
    Tensor& running_mean() { return running_mean_; }
    Tensor& running_var() { return running_var_; }
    int64_t num_batches_tracked() const { return num_batches_tracked_; }

    // Synchronized batch normalization (bnorm/dist.hpp): with a communicator, training mode uses
    // the statistics of the whole batch split over its processes; forward and backward are then
    // collective (every process calls them, also with 0 samples) and grad_weight/grad_bias are this
    // process's part. nullptr (the default): this process's batch only.
    void set_communicator(Communicator* comm) { comm_ = comm; }
    double communication_seconds() const { return sync_.communication_seconds; }

protected:
    BatchNorm(int64_t num_features, double eps, std::optional<double> momentum, bool affine);
    virtual void check_input(const Tensor& input) const = 0;  // throws std::invalid_argument

private:
    int64_t num_features_;
    double eps_;
    std::optional<double> momentum_;
    bool affine_;
    Tensor weight_, bias_, grad_weight_, grad_bias_, running_mean_, running_var_;
    int64_t num_batches_tracked_ = 0;
    Tensor save_mean_, save_invstd_;
    bool used_batch_statistics_ = false;  // what the last forward did, for backward
    const Tensor* input_ = nullptr;
    Tensor output_, grad_input_;
    Communicator* comm_ = nullptr;
    SyncState sync_;
};

// (N, C) or (N, C, L) input, channels first.
class BatchNorm1d : public BatchNorm {
public:
    explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, std::optional<double> momentum = 0.1,
                         bool affine = true)
        : BatchNorm(num_features, eps, momentum, affine) {}
    std::string type() const override { return "BatchNorm1d"; }

protected:
    void check_input(const Tensor& input) const override;
};

// (N, C, H, W) input in either memory order; the output has the input's.
class BatchNorm2d : public BatchNorm {
public:
    explicit BatchNorm2d(int64_t num_channels, double eps = 1e-5, std::optional<double> momentum = 0.1,
                         bool affine = true)
        : BatchNorm(num_channels, eps, momentum, affine) {}
    std::string type() const override { return "BatchNorm2d"; }

protected:
    void check_input(const Tensor& input) const override;
};

}  // namespace bnorm::nn
