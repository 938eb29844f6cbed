// Santurkar et al.'s measurements: they restore the network exactly, and they measure what they
// say (no change at step size 0; a real change otherwise).
#include <gtest/gtest.h>

#include "bnorm/nn/analysis.hpp"
#include "bnorm/nn/models.hpp"

namespace bnorm::nn {
namespace {

struct Batch {
    Tensor images{std::vector<int64_t>{16, 1, 28, 28}};
    std::vector<int32_t> labels;
    Batch() {
        for (int64_t i = 0; i < images.numel(); ++i) images.at(i) = static_cast<float>((i * 2654435761u) % 256) / 255.0f;
        for (int32_t i = 0; i < 16; ++i) labels.push_back(i % 10);
    }
};

std::vector<float> state(Sequential& net) {
    std::vector<float> out;
    for (const Parameter& p : net.parameters()) out.insert(out.end(), p.value->values().begin(), p.value->values().end());
    for (const Buffer& b : net.buffers()) {
        if (b.f32) out.insert(out.end(), b.f32->values().begin(), b.f32->values().end());
        if (b.i64) out.push_back(static_cast<float>(*b.i64));
    }
    for (const RandomState& r : net.random_states()) out.push_back(static_cast<float>((*r.engine)() % 1000));
    return out;
}

TEST(Analysis, measurements_leave_parameters_buffers_and_random_engines_untouched) {
    for (bool bn : {false, true}) {
        Batch batch;
        auto a = mlp(bn, 7, Init::gaussian(0.1f), 0.2);
        auto b = mlp(bn, 7, Init::gaussian(0.1f), 0.2);
        measure_gradient_shift(*a, batch.images, batch.labels, 0.5);
        measure_smoothness(*a, batch.images, batch.labels, {0.1, 1.0});
        EXPECT_EQ(state(*a), state(*b)) << "bn = " << bn;
    }
}

TEST(Analysis, gradient_shift_is_zero_at_learning_rate_zero_and_positive_otherwise) {
    Batch batch;
    auto net = mlp(true, 3);
    const auto none = measure_gradient_shift(*net, batch.images, batch.labels, 0.0);
    ASSERT_EQ(none.size(), 3u) << "every Linear weight after the first";
    for (const auto& g : none) {
        EXPECT_EQ(g.l2, 0.0) << g.layer;
        EXPECT_NEAR(g.cosine, 1.0, 1e-9) << g.layer;
    }
    for (const auto& g : measure_gradient_shift(*net, batch.images, batch.labels, 1.0)) {
        EXPECT_GT(g.l2, 0.0) << g.layer;
        EXPECT_LE(std::abs(g.cosine), 1.0 + 1e-9) << g.layer;
    }
}

TEST(Analysis, smoothness_at_step_zero_is_the_current_loss_with_no_gradient_change) {
    Batch batch;
    auto net = mlp(false, 4);
    const Smoothness s = measure_smoothness(*net, batch.images, batch.labels, {0.0, 0.05});
    ASSERT_EQ(s.loss.size(), 2u);
    EXPECT_EQ(s.gradient_change[0], 0.0);
    EXPECT_GT(s.gradient_change[1], 0.0);
    EXPECT_LT(s.loss[1], s.loss[0]) << "a small step along the negative gradient lowers the loss";
}

}  // namespace
}  // namespace bnorm::nn
