// Weight initializations. fan_in / fan_out as torch.nn.init._calculate_fan_in_and_fan_out.
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "bnorm/nn/init.hpp"

namespace bnorm::nn {

Init Init::parse(std::string_view name) {
    if (name == "gaussian") return gaussian(0.1f);
    if (name == "he") return he();
    if (name == "xavier") return xavier();
    throw std::invalid_argument("init: unknown initialization \"" + std::string(name) +
                                "\"; use gaussian, he or xavier");
}

std::string Init::name() const {
    switch (kind) {
        case Kind::gaussian: {
            std::string s = std::to_string(std);
            while (s.size() > 1 && s.back() == '0') s.pop_back();
            return "gaussian(" + s + ")";
        }
        case Kind::he_normal: return "he";
        case Kind::xavier_uniform: return "xavier";
    }
    return "unknown";
}

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double standard_normal(std::mt19937_64& rng) {
    const double u1 = 1.0 - uniform01(rng);  // (0, 1]: the logarithm stays finite
    const double u2 = uniform01(rng);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void init_weight(Tensor& weight, const Init& init, std::mt19937_64& rng) {
    if (weight.rank() < 2)
        throw std::invalid_argument("init_weight: expected a weight of shape (out, in, ...), got " +
                                    weight.shape_string());
    double receptive = 1.0;
    for (size_t i = 2; i < weight.rank(); ++i) receptive *= static_cast<double>(weight.dim(i));
    const double fan_in = static_cast<double>(weight.dim(1)) * receptive;
    const double fan_out = static_cast<double>(weight.dim(0)) * receptive;
    float* w = weight.data();
    switch (init.kind) {
        case Init::Kind::gaussian:
        case Init::Kind::he_normal: {
            const double sigma = init.kind == Init::Kind::gaussian ? init.std : std::sqrt(2.0 / fan_in);
            if (!(sigma >= 0.0))
                throw std::invalid_argument("init_weight: std = " + std::to_string(sigma) + " must be >= 0");
            for (int64_t i = 0; i < weight.numel(); ++i) w[i] = static_cast<float>(sigma * standard_normal(rng));
            break;
        }
        case Init::Kind::xavier_uniform: {
            const double bound = std::sqrt(6.0 / (fan_in + fan_out));
            for (int64_t i = 0; i < weight.numel(); ++i)
                w[i] = static_cast<float>(bound * (2.0 * uniform01(rng) - 1.0));
            break;
        }
    }
}

}  // namespace bnorm::nn
