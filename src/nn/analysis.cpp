// analysis.cpp: Santurkar et al.'s measurements. The network is evaluated in training mode (batch
// statistics), as during training; every forward pass in training mode also moves the running
// statistics, so the whole state is saved first and restored at the end.
#include "bnorm/nn/analysis.hpp"

#include <cmath>
#include <stdexcept>

#include "bnorm/nn/loss.hpp"

namespace bnorm::nn {
namespace {

// Everything a forward/backward pass or a parameter step can change.
struct Snapshot {
    std::vector<std::vector<float>> parameters, buffers;
    std::vector<int64_t> counters;
    std::vector<std::mt19937_64> engines;  // Dropout draws masks in every training forward
};

Snapshot take(Sequential& net) {
    Snapshot s;
    for (const Parameter& p : net.parameters()) s.parameters.emplace_back(p.value->values().begin(), p.value->values().end());
    for (const Buffer& b : net.buffers()) {
        if (b.f32) s.buffers.emplace_back(b.f32->values().begin(), b.f32->values().end());
        if (b.i64) s.counters.push_back(*b.i64);
    }
    for (const RandomState& r : net.random_states()) s.engines.push_back(*r.engine);
    return s;
}

void restore(Sequential& net, const Snapshot& s) {
    size_t i = 0, j = 0, k = 0;
    for (const Parameter& p : net.parameters()) std::copy(s.parameters[i].begin(), s.parameters[i].end(), p.value->data()), ++i;
    for (const Buffer& b : net.buffers()) {
        if (b.f32) std::copy(s.buffers[j].begin(), s.buffers[j].end(), b.f32->data()), ++j;
        if (b.i64) *b.i64 = s.counters[k++];
    }
    size_t e = 0;
    for (const RandomState& r : net.random_states()) *r.engine = s.engines[e++];
}

// One forward and backward pass: the loss, with every parameter's gradient filled in.
double loss_and_gradients(Sequential& net, const Tensor& images, std::span<const int32_t> labels) {
    Tensor grad;
    const double loss = softmax_cross_entropy(net.forward(images), labels, grad);
    net.backward(grad);
    return loss;
}

std::vector<std::vector<float>> gradients(Sequential& net) {
    std::vector<std::vector<float>> g;
    for (const Parameter& p : net.parameters()) g.emplace_back(p.grad->values().begin(), p.grad->values().end());
    return g;
}

}  // namespace

std::vector<GradientShift> measure_gradient_shift(Sequential& net, const Tensor& images,
                                                  std::span<const int32_t> labels, double lr) {
    const bool was_training = net.training();
    net.set_training(true);
    const Snapshot saved = take(net);
    loss_and_gradients(net, images, labels);
    const auto before = gradients(net);
    const auto params = net.parameters();
    std::vector<GradientShift> out;
    for (size_t target = 0; target < params.size(); ++target) {
        const std::string& name = params[target].name;
        if (name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0 || params[target].value->rank() != 2) continue;
        if (target == 0) continue;  // no layer before the first
        restore(net, saved);
        // Every parameter of the layers before the target takes one SGD step on its gradient.
        for (size_t p = 0; p < target; ++p) {
            float* v = params[p].value->data();
            for (size_t e = 0; e < before[p].size(); ++e) v[e] -= static_cast<float>(lr) * before[p][e];
        }
        loss_and_gradients(net, images, labels);
        const std::span<const float> after = params[target].grad->values();
        double diff = 0, dot = 0, norm_a = 0, norm_b = 0;
        for (size_t e = 0; e < after.size(); ++e) {
            const double a = before[target][e], b = after[e];
            diff += (a - b) * (a - b);
            dot += a * b;
            norm_a += a * a;
            norm_b += b * b;
        }
        out.push_back({name, std::sqrt(diff), dot / std::sqrt(norm_a * norm_b + 1e-300)});
    }
    restore(net, saved);
    net.set_training(was_training);
    return out;
}

Smoothness measure_smoothness(Sequential& net, const Tensor& images, std::span<const int32_t> labels,
                              const std::vector<double>& steps) {
    const bool was_training = net.training();
    net.set_training(true);
    const Snapshot saved = take(net);
    loss_and_gradients(net, images, labels);
    const auto g = gradients(net);
    const auto params = net.parameters();
    Smoothness out;
    for (double eta : steps) {
        restore(net, saved);
        for (size_t p = 0; p < params.size(); ++p) {
            float* v = params[p].value->data();
            for (size_t e = 0; e < g[p].size(); ++e) v[e] -= static_cast<float>(eta) * g[p][e];
        }
        const double loss = loss_and_gradients(net, images, labels);
        double change = 0;
        for (size_t p = 0; p < params.size(); ++p) {
            const std::span<const float> now = params[p].grad->values();
            for (size_t e = 0; e < now.size(); ++e) change += (now[e] - g[p][e]) * (now[e] - g[p][e]);
        }
        out.step.push_back(eta);
        out.loss.push_back(loss);
        out.gradient_change.push_back(std::sqrt(change));
    }
    restore(net, saved);
    net.set_training(was_training);
    return out;
}

}  // namespace bnorm::nn
