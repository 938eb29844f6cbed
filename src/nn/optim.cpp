// optim.cpp: SGD and Adam with torch.optim's update rules, and the learning-rate schedules.
//
// The updates compute in float32 with the hyperparameters rounded to float32, operation by
// operation as torch 1.13's single-tensor CPU paths do, so trajectories agree with torch to a few
// float32 roundings (tests/nn/optim_parity.py checks this).
#include "bnorm/nn/optim.hpp"

#include <charconv>
#include <cmath>
#include <numbers>
#include <set>
#include <stdexcept>
#include <system_error>

namespace bnorm::nn {
namespace {

std::string format_double(double value) {
    char text[64];
    auto [end, ec] = std::to_chars(text, text + sizeof text, value);  // shortest round-trip form
    if (ec != std::errc()) throw std::logic_error("format_double: to_chars failed");
    return std::string(text, end);
}


// The message is built only when the check fails: set_lr runs every training step, which must not
// allocate.
void require(bool ok, const std::string& who, const char* what, const char* rule, double got) {
    if (!ok) throw std::invalid_argument(who + ": " + what + " " + rule + " (got " + format_double(got) + ")");
}

void check_lr(const std::string& who, double lr, bool allow_zero) {
    require(std::isfinite(lr) && (allow_zero ? lr >= 0 : lr > 0), who, "lr",
            allow_zero ? "must be finite and >= 0" : "must be finite and > 0", lr);
}

void check_non_negative(const std::string& who, const char* name, double value) {
    require(std::isfinite(value) && value >= 0, who, name, "must be finite and >= 0", value);
}

void check_beta(const std::string& who, const char* name, double value) {
    require(std::isfinite(value) && value >= 0 && value < 1, who, name, "must be in [0, 1)", value);
}

// The keys of `values` must be exactly `expected`.
void check_keys(const std::string& who, const std::map<std::string, std::string>& values,
                const std::set<std::string>& expected) {
    for (const auto& key : expected)
        if (!values.contains(key)) throw std::invalid_argument(who + ": hyperparameter " + key + " is missing");
    for (const auto& [key, value] : values)
        if (!expected.contains(key)) throw std::invalid_argument(who + ": unknown hyperparameter " + key);
}

double parse_double(const std::string& who, const std::map<std::string, std::string>& values, const char* name) {
    const std::string& text = values.at(name);
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
        throw std::invalid_argument(who + ": hyperparameter " + name + " is not a number: \"" + text + "\"");
    return value;
}

bool parse_bool(const std::string& who, const std::map<std::string, std::string>& values, const char* name) {
    const std::string& text = values.at(name);
    if (text == "true") return true;
    if (text == "false") return false;
    throw std::invalid_argument(who + ": hyperparameter " + name + " must be true or false: \"" + text + "\"");
}

std::vector<Tensor> zeros_like(const std::vector<Parameter>& params) {
    std::vector<Tensor> out;
    out.reserve(params.size());
    for (const auto& p : params) {
        out.emplace_back(p.value->shape());
        out.back().fill(0.0f);
    }
    return out;
}

struct SgdHyperparameters {
    double lr, momentum, weight_decay;
    bool nesterov;
};

void check_sgd(const SgdHyperparameters& h, bool allow_zero_lr) {
    const std::string who = "SGD";
    check_lr(who, h.lr, allow_zero_lr);
    check_non_negative(who, "momentum", h.momentum);
    check_non_negative(who, "weight_decay", h.weight_decay);
    if (h.nesterov && !(h.momentum > 0)) throw std::invalid_argument(who + ": nesterov requires momentum > 0");
}

SgdHyperparameters parse_sgd(const std::map<std::string, std::string>& values) {
    const std::string who = "SGD";
    check_keys(who, values, {"lr", "momentum", "weight_decay", "nesterov"});
    SgdHyperparameters h{parse_double(who, values, "lr"), parse_double(who, values, "momentum"),
                         parse_double(who, values, "weight_decay"), parse_bool(who, values, "nesterov")};
    check_sgd(h, /*allow_zero_lr=*/true);
    return h;
}

struct AdamHyperparameters {
    double lr, beta1, beta2, eps, weight_decay;
};

void check_adam(const AdamHyperparameters& h, bool allow_zero_lr) {
    const std::string who = "Adam";
    check_lr(who, h.lr, allow_zero_lr);
    check_beta(who, "beta1", h.beta1);
    check_beta(who, "beta2", h.beta2);
    require(std::isfinite(h.eps) && h.eps > 0, who, "eps", "must be finite and > 0", h.eps);
    check_non_negative(who, "weight_decay", h.weight_decay);
}

AdamHyperparameters parse_adam(const std::map<std::string, std::string>& values) {
    const std::string who = "Adam";
    check_keys(who, values, {"lr", "beta1", "beta2", "eps", "weight_decay"});
    AdamHyperparameters h{parse_double(who, values, "lr"), parse_double(who, values, "beta1"),
                          parse_double(who, values, "beta2"), parse_double(who, values, "eps"),
                          parse_double(who, values, "weight_decay")};
    check_adam(h, /*allow_zero_lr=*/true);
    return h;
}

}  // namespace

// ---- Optimizer --------------------------------------------------------------------------------

Optimizer::Optimizer(std::vector<Parameter> params, double lr, const char* who)
    : params_(std::move(params)), lr_(lr) {
    check_lr(who, lr, /*allow_zero=*/false);
    std::set<std::string> names;
    for (const auto& p : params_) {
        if (p.value == nullptr || p.grad == nullptr)
            throw std::invalid_argument(std::string(who) + ": params: parameter \"" + p.name +
                                        "\" has no value or no grad tensor");
        if (!names.insert(p.name).second)
            throw std::invalid_argument(std::string(who) + ": params: the name \"" + p.name +
                                        "\" appears twice; checkpoints need unique names");
    }
}

void Optimizer::set_lr(double lr) {
    if (!(std::isfinite(lr) && lr >= 0)) check_lr(kind() + "::set_lr", lr, /*allow_zero=*/true);
    lr_ = lr;
}

void Optimizer::set_steps(int64_t steps) {
    if (steps < 0) throw std::invalid_argument(kind() + "::set_steps: steps must be >= 0 (got " + std::to_string(steps) + ")");
    steps_ = steps;
}

void Optimizer::check_grads(const char* who) const {
    for (const auto& p : params_)
        if (p.grad->numel() != p.value->numel())
            throw std::logic_error(std::string(who) + ": the grad of \"" + p.name + "\" has shape " +
                                   p.grad->shape_string() + ", its value " + p.value->shape_string() +
                                   "; call backward() before step()");
}

// ---- SGD --------------------------------------------------------------------------------------

SGD::SGD(std::vector<Parameter> params, double lr, double momentum, double weight_decay, bool nesterov)
    : Optimizer(std::move(params), lr, "SGD"),
      momentum_(momentum),
      weight_decay_(weight_decay),
      nesterov_(nesterov) {
    check_sgd({lr, momentum, weight_decay, nesterov}, /*allow_zero_lr=*/false);
    momentum_buffer_ = zeros_like(params_);
}

void SGD::step() {
    check_grads("SGD::step");
    const auto lr = static_cast<float>(lr_);
    const auto momentum = static_cast<float>(momentum_);
    const auto weight_decay = static_cast<float>(weight_decay_);
    for (size_t i = 0; i < params_.size(); ++i) {
        float* p = params_[i].value->data();
        const float* g = params_[i].grad->data();
        float* buf = momentum_buffer_[i].data();
        const int64_t n = params_[i].value->numel();
        for (int64_t j = 0; j < n; ++j) {
            float d_p = g[j];
            if (weight_decay_ != 0) d_p = d_p + weight_decay * p[j];
            if (momentum_ != 0) {
                buf[j] = buf[j] * momentum + d_p;
                d_p = nesterov_ ? d_p + momentum * buf[j] : buf[j];
            }
            p[j] = p[j] + (-lr) * d_p;
        }
    }
    ++steps_;
}

std::map<std::string, std::string> SGD::hyperparameters() const {
    return {{"lr", format_double(lr_)},
            {"momentum", format_double(momentum_)},
            {"weight_decay", format_double(weight_decay_)},
            {"nesterov", nesterov_ ? "true" : "false"}};
}

void SGD::check_hyperparameters(const std::map<std::string, std::string>& values) const { parse_sgd(values); }

void SGD::set_hyperparameters(const std::map<std::string, std::string>& values) {
    const SgdHyperparameters h = parse_sgd(values);
    lr_ = h.lr;
    momentum_ = h.momentum;
    weight_decay_ = h.weight_decay;
    nesterov_ = h.nesterov;
}

std::vector<OptimizerState> SGD::state() {
    std::vector<OptimizerState> out;
    for (size_t i = 0; i < params_.size(); ++i)
        out.push_back({"optimizer." + params_[i].name + ".momentum_buffer", &momentum_buffer_[i]});
    return out;
}

// ---- Adam -------------------------------------------------------------------------------------

Adam::Adam(std::vector<Parameter> params, double lr, double beta1, double beta2, double eps, double weight_decay)
    : Optimizer(std::move(params), lr, "Adam"), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay) {
    check_adam({lr, beta1, beta2, eps, weight_decay}, /*allow_zero_lr=*/false);
    exp_avg_ = zeros_like(params_);
    exp_avg_sq_ = zeros_like(params_);
}

void Adam::step() {
    check_grads("Adam::step");
    const auto t = static_cast<double>(steps_ + 1);
    // Scalars in double as torch's Python code computes them, then rounded to float32 where
    // torch passes them to a float32 kernel.
    const double bias_correction1 = 1 - std::pow(beta1_, t);
    const double bias_correction2 = 1 - std::pow(beta2_, t);
    const double step_size = lr_ / bias_correction1;
    const auto bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const auto neg_step_size = static_cast<float>(-step_size);
    const auto beta1 = static_cast<float>(beta1_);
    const auto beta2 = static_cast<float>(beta2_);
    const auto one_minus_beta1 = static_cast<float>(1 - beta1_);
    const auto one_minus_beta2 = static_cast<float>(1 - beta2_);
    const auto eps = static_cast<float>(eps_);
    const auto weight_decay = static_cast<float>(weight_decay_);
    for (size_t i = 0; i < params_.size(); ++i) {
        float* p = params_[i].value->data();
        const float* grad = params_[i].grad->data();
        float* m = exp_avg_[i].data();
        float* v = exp_avg_sq_[i].data();
        const int64_t n = params_[i].value->numel();
        for (int64_t j = 0; j < n; ++j) {
            float g = grad[j];
            if (weight_decay_ != 0) g = g + weight_decay * p[j];
            m[j] = m[j] * beta1 + one_minus_beta1 * g;
            v[j] = v[j] * beta2 + one_minus_beta2 * g * g;
            const float denom = std::sqrt(v[j]) / bias_correction2_sqrt + eps;
            p[j] = p[j] + neg_step_size * (m[j] / denom);
        }
    }
    ++steps_;
}

std::map<std::string, std::string> Adam::hyperparameters() const {
    return {{"lr", format_double(lr_)},
            {"beta1", format_double(beta1_)},
            {"beta2", format_double(beta2_)},
            {"eps", format_double(eps_)},
            {"weight_decay", format_double(weight_decay_)}};
}

void Adam::check_hyperparameters(const std::map<std::string, std::string>& values) const { parse_adam(values); }

void Adam::set_hyperparameters(const std::map<std::string, std::string>& values) {
    const AdamHyperparameters h = parse_adam(values);
    lr_ = h.lr;
    beta1_ = h.beta1;
    beta2_ = h.beta2;
    eps_ = h.eps;
    weight_decay_ = h.weight_decay;
}

std::vector<OptimizerState> Adam::state() {
    std::vector<OptimizerState> out;
    for (size_t i = 0; i < params_.size(); ++i) {
        out.push_back({"optimizer." + params_[i].name + ".exp_avg", &exp_avg_[i]});
        out.push_back({"optimizer." + params_[i].name + ".exp_avg_sq", &exp_avg_sq_[i]});
    }
    return out;
}

// ---- schedules --------------------------------------------------------------------------------

StepLR::StepLR(double base_lr, int64_t step_size, double gamma)
    : base_lr_(base_lr), step_size_(step_size), gamma_(gamma) {
    check_lr("StepLR", base_lr, /*allow_zero=*/false);
    if (step_size < 1)
        throw std::invalid_argument("StepLR: step_size must be >= 1 (got " + std::to_string(step_size) + ")");
    require(std::isfinite(gamma) && gamma > 0, "StepLR", "gamma", "must be finite and > 0", gamma);
}

double StepLR::lr_at(int64_t step) const {
    if (step < 0) throw std::invalid_argument("StepLR::lr_at: step must be >= 0 (got " + std::to_string(step) + ")");
    double lr = base_lr_;
    for (int64_t decays = step / step_size_; decays > 0 && lr != 0; --decays) lr *= gamma_;
    return lr;
}

CosineLR::CosineLR(double base_lr, int64_t total_steps, double min_lr)
    : base_lr_(base_lr), total_steps_(total_steps), min_lr_(min_lr) {
    check_lr("CosineLR", base_lr, /*allow_zero=*/false);
    if (total_steps < 1)
        throw std::invalid_argument("CosineLR: total_steps must be >= 1 (got " + std::to_string(total_steps) + ")");
    require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= base_lr, "CosineLR", "min_lr", "must be in [0, base_lr]",
            min_lr);
}

double CosineLR::lr_at(int64_t step) const {
    if (step < 0) throw std::invalid_argument("CosineLR::lr_at: step must be >= 0 (got " + std::to_string(step) + ")");
    if (step >= total_steps_) return min_lr_;
    const double angle = std::numbers::pi * static_cast<double>(step) / static_cast<double>(total_steps_);
    return min_lr_ + (base_lr_ - min_lr_) * (1 + std::cos(angle)) / 2;
}

}  // namespace bnorm::nn
