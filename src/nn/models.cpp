// The experiments' networks; the layer lists are in models.hpp.
#include "bnorm/nn/models.hpp"

#include <random>

#include "bnorm/nn/layers.hpp"

namespace bnorm::nn {
namespace {

// Separates the Dropout seeds from the weights' stream (the 64-bit golden ratio, as splitmix64).
constexpr uint64_t dropout_seed_offset = 0x9E3779B97F4A7C15ull;

}  // namespace

std::unique_ptr<Sequential> mlp(bool batch_norm, uint64_t seed, Init init, double dropout) {
    std::mt19937_64 rng(seed), dropout_rng(seed ^ dropout_seed_offset);
    auto net = std::make_unique<Sequential>();
    net->add(std::make_unique<Flatten>());
    int64_t in = 784;
    for (int hidden = 0; hidden < 3; ++hidden) {
        auto linear = std::make_unique<Linear>(in, 100, /*bias=*/!batch_norm);
        init_weight(linear->weight(), init, rng);
        net->add(std::move(linear));
        if (batch_norm) net->add(std::make_unique<BatchNorm1d>(100));
        net->add(std::make_unique<Sigmoid>());
        if (dropout > 0.0) net->add(std::make_unique<Dropout>(dropout, dropout_rng()));
        in = 100;
    }
    auto output = std::make_unique<Linear>(100, 10);
    init_weight(output->weight(), init, rng);
    net->add(std::move(output));
    return net;
}

std::unique_ptr<Sequential> cnn(bool batch_norm, uint64_t seed, bool channels_last) {
    std::mt19937_64 rng(seed);
    auto net = std::make_unique<Sequential>();
    int64_t in = 1;
    for (int64_t channels : {32, 64}) {
        auto conv = std::make_unique<Conv2d>(in, channels, 3, /*stride=*/1, /*padding=*/1, /*bias=*/!batch_norm);
        conv->set_channels_last(channels_last);
        init_weight(conv->weight(), Init::he(), rng);
        net->add(std::move(conv));
        if (batch_norm) net->add(std::make_unique<BatchNorm2d>(channels));
        net->add(std::make_unique<ReLU>());
        net->add(std::make_unique<MaxPool2d>(2));
        in = channels;
    }
    net->add(std::make_unique<Flatten>());
    auto hidden = std::make_unique<Linear>(64 * 7 * 7, 128);
    init_weight(hidden->weight(), Init::he(), rng);
    net->add(std::move(hidden));
    net->add(std::make_unique<ReLU>());
    auto output = std::make_unique<Linear>(128, 10);
    init_weight(output->weight(), Init::he(), rng);
    net->add(std::move(output));
    return net;
}

}  // namespace bnorm::nn
