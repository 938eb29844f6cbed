// layer.hpp: the interface of every layer of the training system, and Sequential.
//
//   bnorm::nn::Sequential net;
//   net.add(std::make_unique<bnorm::nn::Linear>(784, 100));
//   net.add(std::make_unique<bnorm::nn::Sigmoid>());
//   const Tensor& logits = net.forward(images);      // training mode by default
//   net.backward(grad_logits);                       // fills every parameter's grad
//   for (auto& p : net.parameters()) ...             // names as PyTorch: "0.weight", "2.running_mean"
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

// A trainable tensor and its gradient, named as in PyTorch's state_dict ("weight", "bias"; in a
// Sequential "3.weight").
struct Parameter {
    std::string name;
    Tensor* value;
    Tensor* grad;
};

// Non-trainable state that a checkpoint carries (running_mean, running_var as float32;
// num_batches_tracked as int64): exactly one of f32 and i64 is set.
struct Buffer {
    std::string name;
    Tensor* f32 = nullptr;
    int64_t* i64 = nullptr;
};

// A random engine a layer draws from (Dropout's masks): checkpoints save and restore its state
// so that a resumed run continues bitwise identically.
struct RandomState {
    std::string name;
    std::mt19937_64* engine;
};

// A layer owns its parameters, its output and its input gradient.
// forward(input) computes and returns the output (valid until the next forward), keeping what
// backward needs; backward(grad_output) must follow forward on the same batch, returns
// dL/dinput and WRITES (does not accumulate) the gradients of its parameters.
// Kernels are called through libbnorm's public API and BLAS; a layer never prints.
class Layer {
public:
    virtual ~Layer() = default;
    virtual std::string type() const = 0;  // "Linear", "BatchNorm1d", ...: for messages and summaries
    virtual const Tensor& forward(const Tensor& input) = 0;
    virtual const Tensor& backward(const Tensor& grad_output) = 0;
    virtual std::vector<Parameter> parameters() { return {}; }
    virtual std::vector<Buffer> buffers() { return {}; }
    virtual std::vector<RandomState> random_states() { return {}; }
    virtual void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }

    // Whether backward() must compute dL/dinput (the default). Nothing consumes the gradient of a
    // network's input, so a trainer turns it off on the network; backward() then returns a tensor
    // of the input's shape whose values are unspecified. Linear and Conv2d skip that work.
    virtual void set_input_grad_needed(bool on) { input_grad_needed_ = on; }
    bool input_grad_needed() const { return input_grad_needed_; }

protected:
    bool training_ = true;
    bool input_grad_needed_ = true;
};

class Sequential : public Layer {
public:
    void add(std::unique_ptr<Layer> layer);
    size_t size() const { return layers_.size(); }
    Layer& operator[](size_t i) { return *layers_.at(i); }

    std::string type() const override { return "Sequential"; }
    const Tensor& forward(const Tensor& input) override;
    const Tensor& backward(const Tensor& grad_output) override;
    std::vector<Parameter> parameters() override;  // "<index>.<name>"
    std::vector<Buffer> buffers() override;        // "<index>.<name>"
    std::vector<RandomState> random_states() override;
    void set_training(bool on) override;
    // Off: backward() stops at the first layer with parameters, which skips its input gradient;
    // the layers before it (Flatten, ...) are not differentiated at all.
    void set_input_grad_needed(bool on) override;

private:
    std::vector<std::unique_ptr<Layer>> layers_;
    size_t first_with_parameters_ = 0;  // layers_.size() while none has parameters
};

}  // namespace bnorm::nn
