// optim.hpp: optimizers (SGD, Adam) with PyTorch's exact update rules, and learning-rate schedules
// (StepLR, CosineLR) as pure functions of the step.
//
//   bnorm::nn::SGD sgd(net.parameters(), /*lr=*/0.1, /*momentum=*/0.9);
//   bnorm::nn::CosineLR schedule(/*base_lr=*/0.1, /*total_steps=*/10000);
//   sgd.set_lr(schedule.lr_at(sgd.steps()));    // before each step: the lr this step uses
//   net.backward(grad_logits);                   // fills every parameter's grad
//   sgd.step();                                  // p -= lr * (momentum buffer); steps() += 1
//
// Checkpoints (checkpoint.hpp) save kind(), hyperparameters(), steps() and state(), and restore
// them with set_hyperparameters(), set_steps() and the state tensors.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

// One tensor of an optimizer's state, named as in a checkpoint: "optimizer.<parameter name>.<what>"
// (what = momentum_buffer, exp_avg, exp_avg_sq, as in PyTorch's optimizer state_dict).
struct OptimizerState {
    std::string name;
    Tensor* value;
};

// The optimizers' common interface. An optimizer keeps the Parameter handles it was given (the
// layers must outlive it); step() reads each parameter's grad and updates its value in place.
class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    virtual std::string kind() const = 0;  // "SGD", "Adam": checkpoints refuse a different kind
    // requires: every parameter's grad has as many elements as its value.
    virtual void step() = 0;

    double lr() const { return lr_; }
    // lr >= 0 (0 is allowed here, unlike the constructors, since a schedule may end at 0).
    // Throws std::invalid_argument naming "lr" otherwise.
    void set_lr(double lr);
    int64_t steps() const { return steps_; }  // the number of step() calls so far
    const std::vector<Parameter>& parameters() const { return params_; }

    // ---- for checkpoints ----
    // Every hyperparameter, lr included, as text that reads back exactly ("0.9", "true").
    virtual std::map<std::string, std::string> hyperparameters() const = 0;
    // Throws std::invalid_argument naming the hyperparameter when `values` lacks one of
    // hyperparameters()' keys, has another key, or holds a value the constructor would refuse;
    // changes nothing.
    virtual void check_hyperparameters(const std::map<std::string, std::string>& values) const = 0;
    // Checks as check_hyperparameters() does, then sets all of them (or none).
    virtual void set_hyperparameters(const std::map<std::string, std::string>& values) = 0;
    // Throws std::invalid_argument unless steps >= 0.
    void set_steps(int64_t steps);
    // The state tensors, each shaped as its parameter; the pointers stay valid for the optimizer's
    // lifetime, and a checkpoint writes through them on load.
    virtual std::vector<OptimizerState> state() = 0;

protected:
    Optimizer(std::vector<Parameter> params, double lr, const char* who);
    void check_grads(const char* who) const;

    std::vector<Parameter> params_;
    double lr_;
    int64_t steps_ = 0;
};

// torch.optim.SGD (dampening 0, maximize false):
//   d_p = grad + weight_decay * p
//   buf = momentum * buf + d_p        (buf = d_p on the first step: buf starts at zero, same thing)
//   d_p = nesterov ? d_p + momentum * buf : buf     (momentum > 0; with momentum == 0, d_p as is)
//   p   = p - lr * d_p
// State: "optimizer.<param>.momentum_buffer" for each parameter, kept (and saved) even when
// momentum is 0 so that a checkpoint's layout does not depend on the hyperparameters.
class SGD final : public Optimizer {
public:
    // Throws std::invalid_argument naming the argument unless lr > 0, momentum >= 0,
    // weight_decay >= 0 (all finite), and nesterov implies momentum > 0 (as PyTorch requires).
    SGD(std::vector<Parameter> params, double lr, double momentum = 0.0, double weight_decay = 0.0,
        bool nesterov = false);

    std::string kind() const override { return "SGD"; }
    void step() override;
    double momentum() const { return momentum_; }
    double weight_decay() const { return weight_decay_; }
    bool nesterov() const { return nesterov_; }

    std::map<std::string, std::string> hyperparameters() const override;
    void check_hyperparameters(const std::map<std::string, std::string>& values) const override;
    void set_hyperparameters(const std::map<std::string, std::string>& values) override;
    std::vector<OptimizerState> state() override;

private:
    double momentum_;
    double weight_decay_;
    bool nesterov_;
    std::vector<Tensor> momentum_buffer_;
};

// torch.optim.Adam (amsgrad false, L2 weight decay added to the gradient, not decoupled as AdamW):
//   t = steps() + 1;  g = grad + weight_decay * p
//   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State: "optimizer.<param>.exp_avg" (m) and "optimizer.<param>.exp_avg_sq" (v); t is steps().
class Adam final : public Optimizer {
public:
    // Throws std::invalid_argument naming the argument unless lr > 0, 0 <= beta1 < 1,
    // 0 <= beta2 < 1, eps > 0, weight_decay >= 0 (all finite).
    Adam(std::vector<Parameter> params, double lr, double beta1 = 0.9, double beta2 = 0.999,
         double eps = 1e-8, double weight_decay = 0.0);

    std::string kind() const override { return "Adam"; }
    void step() override;
    double beta1() const { return beta1_; }
    double beta2() const { return beta2_; }
    double eps() const { return eps_; }
    double weight_decay() const { return weight_decay_; }

    std::map<std::string, std::string> hyperparameters() const override;
    void check_hyperparameters(const std::map<std::string, std::string>& values) const override;
    void set_hyperparameters(const std::map<std::string, std::string>& values) override;
    std::vector<OptimizerState> state() override;

private:
    double beta1_;
    double beta2_;
    double eps_;
    double weight_decay_;
    std::vector<Tensor> exp_avg_;
    std::vector<Tensor> exp_avg_sq_;
};

// ---- learning-rate schedules ----------------------------------------------------------------
// lr_at(step) is the lr of the optimizer step that follows `step` completed steps, i.e. the value
// torch's scheduler gives after `step` calls of scheduler.step() (one per optimizer step).

// torch.optim.lr_scheduler.StepLR: base_lr * gamma^floor(step / step_size), computed as torch
// does (one multiplication per decay), so the values are bitwise torch's.
class StepLR {
public:
    // Throws std::invalid_argument naming the argument unless base_lr > 0, step_size >= 1,
    // gamma > 0 (all finite).
    StepLR(double base_lr, int64_t step_size, double gamma);
    double lr_at(int64_t step) const;  // step >= 0, else std::invalid_argument

private:
    double base_lr_;
    int64_t step_size_;
    double gamma_;
};

// torch.optim.lr_scheduler.CosineAnnealingLR(T_max = total_steps, eta_min = min_lr), closed form:
//   min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2
// (torch computes it recursively; the two agree to ~1e-15 relative). From total_steps on it stays
// at min_lr, where torch's would rise again: a run never trains past its schedule on purpose.
class CosineLR {
public:
    // Throws std::invalid_argument naming the argument unless base_lr > 0, total_steps >= 1,
    // 0 <= min_lr <= base_lr (all finite).
    CosineLR(double base_lr, int64_t total_steps, double min_lr = 0.0);
    double lr_at(int64_t step) const;  // step >= 0, else std::invalid_argument

private:
    double base_lr_;
    int64_t total_steps_;
    double min_lr_;
};

}  // namespace bnorm::nn
