// bnorm::BatchNorm, the module: initial state, train/eval behaviour, running statistics with each
// momentum kind, untracked statistics, and that its passes equal the functional operations.
#include "common.hpp"

namespace bnorm::test {
namespace {

TEST(Module, starts_with_gamma_1_beta_0_running_mean_0_running_var_1_counter_0) {
    BatchNorm<float> bn({.num_features = 3});
    EXPECT_TRUE(bn.training());
    for (size_t c = 0; c < 3; ++c) {
        EXPECT_EQ(bn.weight()[c], 1.f);
        EXPECT_EQ(bn.bias()[c], 0.f);
        EXPECT_EQ(bn.running_mean()[c], 0.f);
        EXPECT_EQ(bn.running_var()[c], 1.f);
    }
    EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST(Module, training_forward_and_backward_equal_the_functional_ops_and_update_running_stats) {
    const Shape s{4, 3, 10, Layout::channels_last};
    BatchNorm<double> bn({.num_features = 3, .momentum = 0.25});
    const auto w = random_vector<double>(3, 1), b = random_vector<double>(3, 2);
    std::copy(w.begin(), w.end(), bn.weight().begin());
    std::copy(b.begin(), b.end(), bn.bias().begin());
    const auto x = random_vector<double>(numel(s), 3, 1, 2), dy = random_vector<double>(numel(s), 4);
    std::vector<double> y(x.size()), dx(x.size());
    bn.forward(s, x, y);
    bn.backward(s, x, dy, dx);

    std::vector<double> ry(x.size()), rdx(x.size()), rm{0, 0, 0}, rv{1, 1, 1}, sm(3), si(3), dw(3), db(3);
    int64_t counter = 0;
    forward_training<double>(s, Options{.momentum = 0.25},
                             {.x = x, .y = ry, .weight = w, .bias = b, .running_mean = rm, .running_var = rv,
                              .num_batches_tracked = &counter, .save_mean = sm, .save_invstd = si});
    backward<double>(s, {.dy = dy, .x = x, .dx = rdx, .weight = w, .save_mean = sm, .save_invstd = si, .dweight = dw, .dbias = db});
    EXPECT_EQ(y, ry);
    EXPECT_EQ(dx, rdx);
    EXPECT_EQ(std::vector<double>(bn.running_mean().begin(), bn.running_mean().end()), rm);
    EXPECT_EQ(std::vector<double>(bn.running_var().begin(), bn.running_var().end()), rv);
    EXPECT_EQ(std::vector<double>(bn.grad_weight().begin(), bn.grad_weight().end()), dw);
    EXPECT_EQ(std::vector<double>(bn.grad_bias().begin(), bn.grad_bias().end()), db);
    EXPECT_EQ(bn.num_batches_tracked(), 1);
    EXPECT_NE(rm[0], 0.0) << "the running mean moved";
}

// PyTorch's test_batchnorm_simple_average: with momentum=None, two batches give running
// statistics equal to the plain mean of the two batches' statistics.
TEST(Module, cumulative_average_of_two_batches_is_the_mean_of_their_statistics) {
    const Shape s{6, 2, 5};
    BatchNorm<double> bn({.num_features = 2, .momentum = std::nullopt});
    const auto x1 = random_vector<double>(numel(s), 5, 2, 1), x2 = random_vector<double>(numel(s), 6, -1, 3);
    std::vector<double> y(x1.size());
    bn.forward(s, x1, y);
    bn.forward(s, x2, y);
    EXPECT_EQ(bn.num_batches_tracked(), 2);
    const detail::Geometry g = geometry(s);
    for (int64_t c = 0; c < 2; ++c) {
        double mean[2] = {0, 0}, var[2] = {0, 0};
        const std::vector<double>* xs[2] = {&x1, &x2};
        const double m = static_cast<double>(s.n * s.spatial);
        for (int k = 0; k < 2; ++k) {
            for (int64_t n = 0; n < s.n; ++n)
                for (int64_t p = 0; p < s.spatial; ++p) mean[k] += (*xs[k])[static_cast<size_t>(g.offset(n, c, p))] / m;
            for (int64_t n = 0; n < s.n; ++n)
                for (int64_t p = 0; p < s.spatial; ++p) {
                    const double d = (*xs[k])[static_cast<size_t>(g.offset(n, c, p))] - mean[k];
                    var[k] += d * d / (m - 1);
                }
        }
        EXPECT_NEAR(bn.running_mean()[static_cast<size_t>(c)], (mean[0] + mean[1]) / 2, 1e-12);
        EXPECT_NEAR(bn.running_var()[static_cast<size_t>(c)], (var[0] + var[1]) / 2, 1e-12);
    }
    bn.reset_running_stats();
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    EXPECT_EQ(bn.running_mean()[0], 0.0);
    EXPECT_EQ(bn.running_var()[1], 1.0);
}

TEST(Module, eval_uses_running_statistics_and_changes_nothing) {
    const Shape s{3, 2, 4};
    BatchNorm<float> bn({.num_features = 2});
    bn.running_mean()[0] = 1.5f;
    bn.running_var()[1] = 4.f;
    bn.eval();
    const auto x = random_vector<float>(numel(s), 7), dy = random_vector<float>(numel(s), 8);
    std::vector<float> y(x.size()), ry(x.size()), dx(x.size()), rdx(x.size());
    bn.forward(s, x, y);
    bn.backward(s, x, dy, dx);
    const std::vector<float> rm{1.5f, 0.f}, rv{1.f, 4.f}, w{1.f, 1.f};
    forward_inference<float>(s, Options{}, {.x = x, .y = ry, .running_mean = rm, .running_var = rv});
    backward_inference<float>(s, Options{}, {.dy = dy, .x = x, .dx = rdx, .weight = w, .running_mean = rm, .running_var = rv});
    EXPECT_EQ(y, ry);
    EXPECT_EQ(dx, rdx);
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    EXPECT_EQ(bn.running_mean()[0], 1.5f);
}

// track_running_stats=False: no buffers, and evaluation mode still normalizes with the batch.
TEST(Module, untracked_statistics_use_the_batch_in_eval_and_update_nothing) {
    const Shape s{5, 2, 3};
    BatchNorm<double> bn({.num_features = 2, .affine = false, .track_running_stats = false});
    EXPECT_TRUE(bn.running_mean().empty());
    EXPECT_TRUE(bn.weight().empty());
    bn.eval();
    const auto x = random_vector<double>(numel(s), 9, 4, 2);
    std::vector<double> y(x.size()), ry(x.size());
    bn.forward(s, x, y);
    forward_training<double>(s, Options{}, {.x = x, .y = ry});
    EXPECT_EQ(y, ry);
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    std::vector<double> dx(x.size());
    bn.backward(s, x, x, dx);  // any dy: non-affine modules have no parameter gradients
    EXPECT_TRUE(bn.grad_weight().empty());
}

}  // namespace
}  // namespace bnorm::test
