// Sequential: names, and that turning off the input gradient changes no parameter gradient.
#include <gtest/gtest.h>

#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/models.hpp"

namespace bnorm::nn {
namespace {

std::vector<std::vector<float>> gradients_of_one_step(Sequential& net, bool input_grad_needed) {
    net.set_input_grad_needed(input_grad_needed);
    Tensor images({8, 1, 28, 28});
    for (int64_t i = 0; i < images.numel(); ++i) images.at(i) = static_cast<float>((i * 7919) % 256) / 255.0f;
    const std::vector<int32_t> labels{0, 1, 2, 3, 4, 5, 6, 7};
    Tensor grad;
    softmax_cross_entropy(net.forward(images), labels, grad);
    net.backward(grad);
    std::vector<std::vector<float>> out;
    for (const Parameter& p : net.parameters()) out.emplace_back(p.grad->values().begin(), p.grad->values().end());
    return out;
}

TEST(Sequential, skipping_the_input_gradient_leaves_every_parameter_gradient_unchanged) {
    for (bool bn : {false, true}) {
        auto mlp_net = mlp(bn, 3);
        EXPECT_EQ(gradients_of_one_step(*mlp_net, true), gradients_of_one_step(*mlp_net, false)) << "mlp bn=" << bn;
        auto cnn_net = cnn(bn, 3);
        EXPECT_EQ(gradients_of_one_step(*cnn_net, true), gradients_of_one_step(*cnn_net, false)) << "cnn bn=" << bn;
    }
}

TEST(Sequential, input_gradient_is_computed_again_when_turned_back_on) {
    auto net = mlp(true, 5);
    gradients_of_one_step(*net, false);
    EXPECT_FALSE((*net)[1].input_grad_needed()) << "the first Linear skips its input gradient";
    net->set_input_grad_needed(true);
    EXPECT_TRUE((*net)[1].input_grad_needed());
    EXPECT_TRUE((*net)[0].input_grad_needed());
}

TEST(Sequential, parameters_are_named_by_index_as_in_pytorch) {
    auto net = mlp(true, 1);
    const auto params = net->parameters();
    ASSERT_FALSE(params.empty());
    EXPECT_EQ(params.front().name, "1.weight");
    bool found_counter = false;
    for (const Buffer& b : net->buffers()) found_counter |= b.name == "2.num_batches_tracked" && b.i64 != nullptr;
    EXPECT_TRUE(found_counter);
}

}  // namespace
}  // namespace bnorm::nn
