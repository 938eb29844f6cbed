// analysis.hpp: the measurements of Santurkar et al. 2018 ("How does batch normalization help
// optimization?"), section 2.2 and 3.1, on a Sequential network and one batch. Each restores the
// network exactly (parameters, running statistics, counters), so measuring changes no training.
//
//   auto shift = bnorm::nn::measure_gradient_shift(net, images, labels, 0.5);
//   for (const auto& s : shift) std::printf("%s: l2 %g cos %g\n", s.layer.c_str(), s.l2, s.cosine);
//   auto smooth = bnorm::nn::measure_smoothness(net, images, labels, {0.05, 0.5, 1, 2, 4});
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

// "Internal covariate shift" as a change of gradients: G = dL/dW of one layer's weight on the
// batch; G' = the same gradient after every layer BEFORE it took one SGD step of size lr on the
// same batch. Reported: ||G - G'||_2 and cos(G, G') for every weight parameter but the first.
struct GradientShift {
    std::string layer;  // the parameter's name, e.g. "4.weight"
    double l2;
    double cosine;
};
std::vector<GradientShift> measure_gradient_shift(Sequential& net, const Tensor& images,
                                                  std::span<const int32_t> labels, double lr);

// Loss landscape along the gradient g at the current parameters θ, for each step size η:
// the loss L(θ − ηg) and the gradient predictiveness ||∇L(θ) − ∇L(θ − ηg)||_2.
struct Smoothness {
    std::vector<double> step, loss, gradient_change;
};
Smoothness measure_smoothness(Sequential& net, const Tensor& images, std::span<const int32_t> labels,
                              const std::vector<double>& steps);

}  // namespace bnorm::nn
