// init.hpp: weight initializations for Linear and Conv2d weights; biases start (and stay) at zero.
//
//   std::mt19937_64 rng(seed);
//   bnorm::nn::Linear fc(784, 100);
//   bnorm::nn::init_weight(fc.weight(), bnorm::nn::Init::gaussian(0.1f), rng);   // N(0, 0.1^2)
//   bnorm::nn::init_weight(conv.weight(), bnorm::nn::Init::he(), rng);          // N(0, 2 / fan_in)
//   bnorm::nn::Init init = bnorm::nn::Init::parse("xavier");                    // from a config string
//
// For a weight of shape (out, in, k...), fan_in = in * prod(k...) and fan_out = out * prod(k...), as
// torch.nn.init computes them. The draws are our own (53-bit uniforms from the engine, Box-Muller for
// normals), so a seed gives the same weights on every platform and standard library.
#pragma once

#include <random>
#include <string>
#include <string_view>

#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

struct Init {
    enum class Kind {
        gaussian,        // N(0, std^2)
        he_normal,       // N(0, 2 / fan_in): kaiming_normal_(mode="fan_in", nonlinearity="relu")
        xavier_uniform,  // U(-a, a), a = sqrt(6 / (fan_in + fan_out)): xavier_uniform_(gain=1)
    };
    Kind kind = Kind::gaussian;
    float std = 0.1f;  // gaussian only

    static Init gaussian(float std) { return {Kind::gaussian, std}; }
    static Init he() { return {Kind::he_normal, 0.0f}; }
    static Init xavier() { return {Kind::xavier_uniform, 0.0f}; }
    // "gaussian" (std 0.1, the paper's MLP), "he", "xavier"; std::invalid_argument otherwise.
    static Init parse(std::string_view name);
    std::string name() const;  // "gaussian(0.1)", "he", "xavier"
};

// Overwrites weight (at least 2-D: (out, in, ...)) with draws from rng as init says.
void init_weight(Tensor& weight, const Init& init, std::mt19937_64& rng);

// The building blocks, exposed for tests: uniform in [0, 1) from 53 bits of one draw, and a
// standard normal from two uniforms (Box-Muller, the cosine branch only).
double uniform01(std::mt19937_64& rng);
double standard_normal(std::mt19937_64& rng);

}  // namespace bnorm::nn
