// The layers, the loss, the initializations and the models of the training system:
// - finite-difference gradients: every layer's backward (input and parameter gradients) against
//   central differences of L = sum(g * y) for a fixed random g, accumulated in double, with
//   h = 1e-2 on small inputs chosen away from kinks (ReLU at 0, ties in MaxPool2d);
// - forward values against naive double-precision loops (Linear, Conv2d, MaxPool2d, BatchNorm);
// - channels-last against channels-first: the same numbers, permuted;
// - state: running statistics, num_batches_tracked, Dropout's masks and random state;
// - argument errors: a bad shape throws std::invalid_argument naming the layer, expected and got;
// - a training step allocates nothing after the first batch.
// The PyTorch parity of whole networks is network_parity.py (with network_parity_dump.cpp).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/nn/init.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/models.hpp"

#include "nn/allocation_counter.hpp"  // the global operator new of this binary counts while armed

namespace bnorm::nn {
namespace {

// ---- helpers --------------------------------------------------------------------------------------

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
    Tensor t(std::move(shape));
    std::mt19937_64 rng(seed);
    for (int64_t i = 0; i < t.numel(); ++i) t.at(i) = lo + (hi - lo) * static_cast<float>(uniform01(rng));
    return t;
}

// Values at least `margin` away from zero, either sign: no ReLU kink within a finite-difference step.
Tensor away_from_zero(std::vector<int64_t> shape, uint64_t seed, float margin = 0.05f) {
    Tensor t = random_tensor(std::move(shape), seed, -1.0f, 1.0f);
    for (int64_t i = 0; i < t.numel(); ++i) t.at(i) = t.at(i) < 0 ? t.at(i) - margin : t.at(i) + margin;
    return t;
}

// Distinct values 0.05 apart in a random order: no ties in a max within a finite-difference step.
Tensor distinct_values(std::vector<int64_t> shape, uint64_t seed) {
    Tensor t(std::move(shape));
    std::vector<int64_t> order(static_cast<size_t>(t.numel()));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    for (int64_t i = 0; i < t.numel(); ++i) t.at(i) = 0.05f * static_cast<float>(order[static_cast<size_t>(i)]) - 1.0f;
    return t;
}

// Flat memory index of logical (n, c, h, w) in a 4-D tensor of either memory order.
int64_t offset(const Tensor& t, int64_t n, int64_t c, int64_t h, int64_t w) {
    const int64_t C = t.dim(1), H = t.dim(2), W = t.dim(3);
    return t.channels_last() ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

// The same logical tensor in the other memory order.
Tensor with_memory_order(const Tensor& t, bool channels_last) {
    Tensor out(t.shape());
    out.set_channels_last(channels_last);
    for (int64_t n = 0; n < t.dim(0); ++n)
        for (int64_t c = 0; c < t.dim(1); ++c)
            for (int64_t h = 0; h < t.dim(2); ++h)
                for (int64_t w = 0; w < t.dim(3); ++w) out.at(offset(out, n, c, h, w)) = t.at(offset(t, n, c, h, w));
    return out;
}

void expect_same_logical_values(const Tensor& a, const Tensor& b, float tolerance, const std::string& what) {
    ASSERT_EQ(a.shape(), b.shape()) << what;
    if (a.rank() != 4) {
        for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.at(i), b.at(i), tolerance) << what << " [" << i << "]";
        return;
    }
    for (int64_t n = 0; n < a.dim(0); ++n)
        for (int64_t c = 0; c < a.dim(1); ++c)
            for (int64_t h = 0; h < a.dim(2); ++h)
                for (int64_t w = 0; w < a.dim(3); ++w)
                    EXPECT_NEAR(a.at(offset(a, n, c, h, w)), b.at(offset(b, n, c, h, w)), tolerance)
                        << what << " at (" << n << ", " << c << ", " << h << ", " << w << ")";
}

struct GradCheck {
    double h = 1e-2;
    double rtol = 1e-2;
    double atol = 2e-3;
    std::function<void()> before_forward;  // e.g. rewind Dropout's engine so that every pass has one mask
};

double probe_loss(Layer& layer, const Tensor& x, const Tensor& g, const GradCheck& options) {
    if (options.before_forward) options.before_forward();
    const Tensor& y = layer.forward(x);
    double loss = 0.0;
    for (int64_t i = 0; i < y.numel(); ++i) loss += static_cast<double>(g.at(i)) * static_cast<double>(y.at(i));
    return loss;
}

// The analytic gradients of L = sum(g * y) with respect to x and to every parameter against central
// differences. x is taken by value: it is perturbed in place.
void expect_gradients_match(Layer& layer, Tensor x, const GradCheck& options = {}) {
    if (options.before_forward) options.before_forward();
    const Tensor& y = layer.forward(x);
    Tensor g = random_tensor(y.shape(), 1234);
    g.set_channels_last(y.channels_last());
    const Tensor grad_input = layer.backward(g);
    ASSERT_EQ(grad_input.shape(), x.shape());
    ASSERT_EQ(grad_input.channels_last(), x.channels_last());
    std::vector<Tensor> grad_parameters;
    for (const Parameter& p : layer.parameters()) grad_parameters.push_back(*p.grad);

    auto check = [&](Tensor& wrt, const Tensor& analytic, const std::string& what) {
        ASSERT_EQ(analytic.numel(), wrt.numel()) << what;
        for (int64_t i = 0; i < wrt.numel(); ++i) {
            const float saved = wrt.at(i);
            const float up_value = saved + static_cast<float>(options.h);
            const float down_value = saved - static_cast<float>(options.h);
            wrt.at(i) = up_value;
            const double up = probe_loss(layer, x, g, options);
            wrt.at(i) = down_value;
            const double down = probe_loss(layer, x, g, options);
            wrt.at(i) = saved;
            const double numeric = (up - down) / (static_cast<double>(up_value) - static_cast<double>(down_value));
            EXPECT_NEAR(analytic.at(i), numeric, options.atol + options.rtol * std::abs(numeric))
                << layer.type() << ": d loss / d " << what << "[" << i << "]";
        }
    };
    check(x, grad_input, "input");
    std::vector<Parameter> parameters = layer.parameters();
    for (size_t k = 0; k < parameters.size(); ++k) check(*parameters[k].value, grad_parameters[k], parameters[k].name);
}

// Runs f, expects std::invalid_argument whose message contains every one of `parts`.
void expect_invalid_argument(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        ADD_FAILURE() << "expected std::invalid_argument mentioning " << parts.front();
    } catch (const std::invalid_argument& e) {
        const std::string message = e.what();
        for (const std::string& part : parts)
            EXPECT_NE(message.find(part), std::string::npos) << message << " lacks " << part;
    }
}

// ---- Linear ---------------------------------------------------------------------------------------

TEST(Linear, forward_is_x_times_weight_transposed_plus_bias) {
    Linear linear(5, 3);
    std::mt19937_64 rng(1);
    init_weight(linear.weight(), Init::gaussian(1.0f), rng);
    for (int64_t j = 0; j < 3; ++j) linear.bias().at(j) = 0.5f * static_cast<float>(j + 1);
    const Tensor x = random_tensor({4, 5}, 2);
    const Tensor& y = linear.forward(x);
    ASSERT_EQ(y.shape(), (std::vector<int64_t>{4, 3}));
    for (int64_t n = 0; n < 4; ++n)
        for (int64_t j = 0; j < 3; ++j) {
            double expected = linear.bias().at(j);
            for (int64_t i = 0; i < 5; ++i) expected += double(x.at(n * 5 + i)) * linear.weight().at(j * 5 + i);
            EXPECT_NEAR(y.at(n * 3 + j), expected, 1e-5);
        }
}

TEST(Linear, gradients_match_central_differences_with_and_without_bias) {
    for (bool bias : {true, false}) {
        SCOPED_TRACE(bias ? "bias" : "no bias");
        Linear linear(5, 3, bias);
        std::mt19937_64 rng(3);
        init_weight(linear.weight(), Init::gaussian(0.5f), rng);
        if (bias) linear.bias().at(1) = 0.3f;
        EXPECT_EQ(linear.parameters().size(), bias ? 2u : 1u);
        expect_gradients_match(linear, random_tensor({4, 5}, 4));
    }
}

TEST(Linear, bad_input_shape_names_layer_expected_and_got) {
    Linear linear(5, 3);
    expect_invalid_argument([&] { linear.forward(Tensor({4, 6})); }, {"Linear", "(N, 5)", "(4, 6)"});
    expect_invalid_argument([&] { linear.forward(Tensor({4, 5, 1})); }, {"Linear", "(N, 5)", "(4, 5, 1)"});
    const Tensor x({4, 5});
    linear.forward(x);
    expect_invalid_argument([&] { linear.backward(Tensor({4, 2})); }, {"Linear", "(4, 3)", "(4, 2)"});
}

// ---- Conv2d ---------------------------------------------------------------------------------------

// Direct convolution in double over a channels-first input.
std::vector<double> direct_convolution(const Tensor& x, Conv2d& conv, int64_t out_channels, int64_t k, int64_t stride,
                                       int64_t padding, int64_t out_h, int64_t out_w) {
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    std::vector<double> y(static_cast<size_t>(n * out_channels * out_h * out_w));
    for (int64_t b = 0; b < n; ++b)
        for (int64_t o = 0; o < out_channels; ++o)
            for (int64_t oh = 0; oh < out_h; ++oh)
                for (int64_t ow = 0; ow < out_w; ++ow) {
                    double sum = conv.bias().numel() ? conv.bias().at(o) : 0.0;
                    for (int64_t ch = 0; ch < c; ++ch)
                        for (int64_t kh = 0; kh < k; ++kh)
                            for (int64_t kw = 0; kw < k; ++kw) {
                                const int64_t ih = oh * stride - padding + kh, iw = ow * stride - padding + kw;
                                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                                sum += double(x.at(((b * c + ch) * h + ih) * w + iw)) *
                                       conv.weight().at(((o * c + ch) * k + kh) * k + kw);
                            }
                    y[static_cast<size_t>(((b * out_channels + o) * out_h + oh) * out_w + ow)] = sum;
                }
    return y;
}

TEST(Conv2d, forward_matches_direct_convolution_with_stride_2_and_padding_1) {
    Conv2d conv(2, 3, 3, /*stride=*/2, /*padding=*/1);
    std::mt19937_64 rng(5);
    init_weight(conv.weight(), Init::gaussian(1.0f), rng);
    for (int64_t o = 0; o < 3; ++o) conv.bias().at(o) = 0.1f * static_cast<float>(o + 1);
    const Tensor x = random_tensor({2, 2, 7, 6}, 6);
    const Tensor& y = conv.forward(x);
    ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 4, 3}));
    EXPECT_FALSE(y.channels_last());
    const std::vector<double> expected = direct_convolution(x, conv, 3, 3, 2, 1, 4, 3);
    for (int64_t i = 0; i < y.numel(); ++i) EXPECT_NEAR(y.at(i), expected[static_cast<size_t>(i)], 1e-5) << i;
}

TEST(Conv2d, gradients_match_central_differences_in_every_memory_order) {
    for (bool input_channels_last : {false, true})
        for (bool output_channels_last : {false, true})
            for (bool bias : {true, false}) {
                SCOPED_TRACE(std::string("input ") + (input_channels_last ? "NHWC" : "NCHW") + ", output " +
                             (output_channels_last ? "NHWC" : "NCHW") + (bias ? ", bias" : ", no bias"));
                Conv2d conv(2, 3, 3, /*stride=*/2, /*padding=*/1, bias);
                conv.set_channels_last(output_channels_last);
                std::mt19937_64 rng(7);
                init_weight(conv.weight(), Init::gaussian(0.5f), rng);
                expect_gradients_match(conv, with_memory_order(random_tensor({2, 2, 5, 5}, 8), input_channels_last));
            }
}

TEST(Conv2d, every_memory_order_computes_the_same_numbers) {
    const Tensor x = random_tensor({3, 4, 6, 5}, 9);
    const Tensor g = random_tensor({3, 5, 6, 5}, 10);
    Conv2d reference(4, 5, 3, 1, 1);
    std::mt19937_64 rng(11);
    init_weight(reference.weight(), Init::he(), rng);
    reference.bias().at(2) = 0.25f;
    const Tensor expected_y = reference.forward(x);
    const Tensor expected_dx = reference.backward(g);
    for (bool input_channels_last : {false, true})
        for (bool output_channels_last : {false, true}) {
            SCOPED_TRACE(std::string("input ") + (input_channels_last ? "NHWC" : "NCHW") + ", output " +
                         (output_channels_last ? "NHWC" : "NCHW"));
            Conv2d conv(4, 5, 3, 1, 1);
            conv.set_channels_last(output_channels_last);
            conv.weight() = reference.weight();
            conv.bias() = reference.bias();
            const Tensor& y = conv.forward(with_memory_order(x, input_channels_last));
            EXPECT_EQ(y.channels_last(), output_channels_last);
            expect_same_logical_values(y, expected_y, 1e-5f, "output");
            const Tensor& dx = conv.backward(with_memory_order(g, output_channels_last));
            EXPECT_EQ(dx.channels_last(), input_channels_last);
            expect_same_logical_values(dx, expected_dx, 1e-5f, "grad_input");
            std::vector<Parameter> p = conv.parameters(), q = reference.parameters();
            for (size_t k = 0; k < p.size(); ++k) expect_same_logical_values(*p[k].grad, *q[k].grad, 1e-4f, p[k].name);
        }
}

TEST(Conv2d, bad_input_shape_names_layer_expected_and_got) {
    Conv2d conv(2, 3, 3);
    expect_invalid_argument([&] { conv.forward(Tensor({1, 3, 5, 5})); }, {"Conv2d", "(N, 2, H, W)", "(1, 3, 5, 5)"});
    expect_invalid_argument([&] { conv.forward(Tensor({1, 2, 2, 5})); }, {"Conv2d", "H, W >= 3", "(1, 2, 2, 5)"});
    expect_invalid_argument([&] { conv.forward(Tensor({2, 50})); }, {"Conv2d", "(2, 50)"});
}

// ---- MaxPool2d ------------------------------------------------------------------------------------

TEST(MaxPool2d, forward_takes_window_maxima_in_floor_mode) {
    MaxPool2d pool(2);
    const Tensor x = random_tensor({2, 3, 5, 4}, 12);
    const Tensor& y = pool.forward(x);
    ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 2, 2}));
    for (int64_t b = 0; b < 2; ++b)
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t oh = 0; oh < 2; ++oh)
                for (int64_t ow = 0; ow < 2; ++ow) {
                    float best = -1e30f;
                    for (int64_t kh = 0; kh < 2; ++kh)
                        for (int64_t kw = 0; kw < 2; ++kw)
                            best = std::max(best, x.at(offset(x, b, c, 2 * oh + kh, 2 * ow + kw)));
                    EXPECT_EQ(y.at(offset(y, b, c, oh, ow)), best);
                }
}

TEST(MaxPool2d, gradients_match_central_differences_in_both_memory_orders_and_overlapping_windows) {
    for (bool channels_last : {false, true}) {
        SCOPED_TRACE(channels_last ? "NHWC" : "NCHW");
        MaxPool2d pool(2);
        expect_gradients_match(pool, with_memory_order(distinct_values({2, 3, 5, 4}, 13), channels_last));
        MaxPool2d overlapping(3, 2);
        expect_gradients_match(overlapping, with_memory_order(distinct_values({1, 2, 7, 5}, 14), channels_last));
    }
}

TEST(MaxPool2d, channels_last_computes_the_same_numbers_in_its_order) {
    const Tensor x = random_tensor({2, 3, 6, 6}, 15), g = random_tensor({2, 3, 3, 3}, 16);
    MaxPool2d first(2), last(2);
    const Tensor& y_first = first.forward(x);
    const Tensor& y_last = last.forward(with_memory_order(x, true));
    EXPECT_TRUE(y_last.channels_last());
    expect_same_logical_values(y_last, y_first, 0.0f, "output");
    const Tensor& dx_last = last.backward(with_memory_order(g, true));
    EXPECT_TRUE(dx_last.channels_last());
    expect_same_logical_values(dx_last, first.backward(g), 0.0f, "grad_input");
}

TEST(MaxPool2d, bad_input_shape_names_layer_expected_and_got) {
    MaxPool2d pool(2);
    expect_invalid_argument([&] { pool.forward(Tensor({2, 3, 1, 4})); }, {"MaxPool2d", "H, W >= 2", "(2, 3, 1, 4)"});
    expect_invalid_argument([&] { pool.forward(Tensor({2, 12})); }, {"MaxPool2d", "(N, C, H, W)", "(2, 12)"});
}

// ---- activations, Flatten -------------------------------------------------------------------------

TEST(Activations, relu_sigmoid_tanh_gradients_match_central_differences) {
    ReLU relu;
    Sigmoid sigmoid;
    Tanh tanh_layer;
    expect_gradients_match(relu, away_from_zero({3, 7}, 17));
    expect_gradients_match(sigmoid, random_tensor({3, 7}, 18, -4.0f, 4.0f));
    expect_gradients_match(tanh_layer, random_tensor({3, 7}, 19, -2.0f, 2.0f));
    expect_gradients_match(relu, with_memory_order(away_from_zero({2, 3, 2, 2}, 20), true));
}

TEST(Activations, forward_values_and_memory_order) {
    Tensor x = with_memory_order(random_tensor({2, 3, 2, 2}, 21, -3.0f, 3.0f), true);
    ReLU relu;
    Sigmoid sigmoid;
    Tanh tanh_layer;
    const Tensor& r = relu.forward(x);
    const Tensor& s = sigmoid.forward(x);
    const Tensor& t = tanh_layer.forward(x);
    EXPECT_TRUE(r.channels_last() && s.channels_last() && t.channels_last());
    for (int64_t i = 0; i < x.numel(); ++i) {
        EXPECT_EQ(r.at(i), std::max(x.at(i), 0.0f));
        EXPECT_NEAR(s.at(i), 1.0 / (1.0 + std::exp(-double(x.at(i)))), 1e-6);
        EXPECT_NEAR(t.at(i), std::tanh(double(x.at(i))), 1e-6);
    }
}

TEST(Flatten, channels_last_input_flattens_in_logical_order_and_back) {
    const Tensor x = random_tensor({2, 3, 2, 4}, 22);
    Flatten first, last;
    const Tensor& y_first = first.forward(x);
    ASSERT_EQ(y_first.shape(), (std::vector<int64_t>{2, 24}));
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y_first.at(i), x.at(i));
    const Tensor& y_last = last.forward(with_memory_order(x, true));
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y_last.at(i), x.at(i)) << i;
    expect_gradients_match(last, with_memory_order(x, true));
    expect_gradients_match(first, random_tensor({3, 2, 5}, 23));
    expect_invalid_argument([&] { first.forward(Tensor({7})); }, {"Flatten", "(N, d1, ...)", "(7)"});
}

TEST(Flatten, channels_first_forward_and_backward_are_read_only_views_without_copies) {
    const Tensor x = random_tensor({3, 2, 2, 5}, 24);
    Flatten flatten;
    const Tensor& y = flatten.forward(x);
    EXPECT_TRUE(y.is_view());
    EXPECT_EQ(y.data(), x.data());
    EXPECT_EQ(y.shape(), (std::vector<int64_t>{3, 20}));
    const Tensor g = random_tensor({3, 20}, 25);
    const Tensor& dx = flatten.backward(g);
    EXPECT_EQ(dx.data(), g.data());
    EXPECT_EQ(dx.shape(), x.shape());
    // A view refuses writes; resize makes it an owning tensor again.
    Tensor v;
    v.view(x, 5, {2, 5});
    EXPECT_EQ(std::as_const(v).at(0), x.at(5));
    EXPECT_THROW(v.data(), std::logic_error);
    EXPECT_THROW(v.fill(1.0f), std::logic_error);
    EXPECT_THROW(v.view(x, 55, {2, 5}), std::invalid_argument);
    v.resize({2, 5});
    EXPECT_FALSE(v.is_view());
    v.fill(2.0f);
    EXPECT_EQ(v.at(9), 2.0f);
    // Flattening a channels-last input after a channels-first one writes into its own storage again.
    const Tensor& z = flatten.forward(with_memory_order(x, true));
    EXPECT_FALSE(z.is_view());
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(z.at(i), x.at(i)) << i;
}

// ---- Dropout --------------------------------------------------------------------------------------

TEST(Dropout, gradients_match_central_differences_with_a_fixed_mask) {
    Dropout dropout(0.3, 24);
    std::mt19937_64* engine = dropout.random_states().at(0).engine;
    const std::mt19937_64 start = *engine;
    expect_gradients_match(dropout, random_tensor({4, 9}, 25), {.before_forward = [&] { *engine = start; }});
}

TEST(Dropout, drops_about_p_scales_the_rest_by_one_over_one_minus_p_and_is_identity_in_eval) {
    Dropout dropout(0.25, 26);
    Tensor x({100, 100});
    x.fill(2.0f);
    const Tensor& y = dropout.forward(x);
    int64_t dropped = 0;
    for (int64_t i = 0; i < y.numel(); ++i) {
        if (y.at(i) == 0.0f) ++dropped;
        else EXPECT_FLOAT_EQ(y.at(i), 2.0f / 0.75f);
    }
    EXPECT_NEAR(static_cast<double>(dropped) / 10000.0, 0.25, 0.02);
    dropout.set_training(false);
    const Tensor& z = dropout.forward(x);
    for (int64_t i = 0; i < z.numel(); ++i) ASSERT_EQ(z.at(i), 2.0f);
    const Tensor& dz = dropout.backward(x);
    for (int64_t i = 0; i < dz.numel(); ++i) ASSERT_EQ(dz.at(i), 2.0f);
}

std::vector<float> values_of(const Tensor& t) { return {t.values().begin(), t.values().end()}; }

TEST(Dropout, masks_follow_the_seed_and_the_exposed_random_state) {
    const Tensor x = random_tensor({8, 16}, 27);
    Dropout a(0.5, 28), b(0.5, 28), c(0.5, 29);
    ASSERT_EQ(a.random_states().size(), 1u);
    EXPECT_EQ(a.random_states()[0].name, "rng");
    const std::vector<float> ya = values_of(a.forward(x));
    EXPECT_EQ(ya, values_of(b.forward(x))) << "the same seed gives the same first mask";
    EXPECT_NE(ya, values_of(c.forward(x))) << "another seed, another mask";
    EXPECT_NE(ya, values_of(a.forward(x))) << "the next mask differs from the first";
    // Saving the engine and restoring it replays the next mask (what a checkpoint relies on).
    const std::mt19937_64 saved = *a.random_states()[0].engine;
    const std::vector<float> next = values_of(a.forward(x));
    *a.random_states()[0].engine = saved;
    EXPECT_EQ(next, values_of(a.forward(x)));
    EXPECT_THROW(Dropout(1.5, 0), std::invalid_argument);
}

// ---- BatchNorm1d / BatchNorm2d --------------------------------------------------------------------

void randomize_batch_norm_state(BatchNorm& bn, uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int64_t c = 0; c < bn.num_features(); ++c) {
        bn.weight().at(c) = static_cast<float>(0.5 + uniform01(rng));
        bn.bias().at(c) = static_cast<float>(uniform01(rng) - 0.5);
        bn.running_mean().at(c) = static_cast<float>(uniform01(rng) - 0.5);
        bn.running_var().at(c) = static_cast<float>(0.5 + uniform01(rng));
    }
}

TEST(BatchNorm1d, gradients_match_central_differences_in_training_and_evaluation) {
    for (bool training : {true, false}) {
        SCOPED_TRACE(training ? "training" : "evaluation");
        BatchNorm1d bn(3);
        randomize_batch_norm_state(bn, 30);
        bn.set_training(training);
        expect_gradients_match(bn, random_tensor({5, 3}, 31, -1.0f, 2.0f));
        BatchNorm1d bn_sequence(2);
        randomize_batch_norm_state(bn_sequence, 32);
        bn_sequence.set_training(training);
        expect_gradients_match(bn_sequence, random_tensor({3, 2, 4}, 33));
    }
}

TEST(BatchNorm2d, gradients_match_central_differences_in_training_and_evaluation_in_both_memory_orders) {
    for (bool training : {true, false})
        for (bool channels_last : {false, true}) {
            SCOPED_TRACE(std::string(training ? "training" : "evaluation") + (channels_last ? ", NHWC" : ", NCHW"));
            BatchNorm2d bn(3);
            randomize_batch_norm_state(bn, 34);
            bn.set_training(training);
            expect_gradients_match(bn, with_memory_order(random_tensor({2, 3, 3, 2}, 35, -1.0f, 2.0f), channels_last));
        }
}

TEST(BatchNorm2d, training_normalizes_with_batch_statistics_and_updates_running_statistics) {
    BatchNorm2d bn(2, 1e-5, 0.1);
    const Tensor x = random_tensor({3, 2, 2, 3}, 36, 0.0f, 4.0f);
    const Tensor& y = bn.forward(x);
    const int64_t m = 3 * 2 * 3;
    for (int64_t c = 0; c < 2; ++c) {
        double sum = 0, sum_sq = 0;
        for (int64_t n = 0; n < 3; ++n)
            for (int64_t p = 0; p < 6; ++p) sum += x.at((n * 2 + c) * 6 + p);
        const double mean = sum / m;
        for (int64_t n = 0; n < 3; ++n)
            for (int64_t p = 0; p < 6; ++p) sum_sq += std::pow(x.at((n * 2 + c) * 6 + p) - mean, 2);
        const double var = sum_sq / m;
        for (int64_t n = 0; n < 3; ++n)
            for (int64_t p = 0; p < 6; ++p) {
                const int64_t i = (n * 2 + c) * 6 + p;
                EXPECT_NEAR(y.at(i), (x.at(i) - mean) / std::sqrt(var + 1e-5), 1e-5);
            }
        EXPECT_NEAR(bn.running_mean().at(c), 0.1 * mean, 1e-6);
        EXPECT_NEAR(bn.running_var().at(c), 0.9 + 0.1 * var * m / (m - 1), 1e-6) << "unbiased variance, as torch";
    }
    EXPECT_EQ(bn.num_batches_tracked(), 1);
    bn.forward(x);
    EXPECT_EQ(bn.num_batches_tracked(), 2);
    std::vector<Buffer> buffers = bn.buffers();
    ASSERT_EQ(buffers.size(), 3u);
    EXPECT_EQ(buffers[0].name, "running_mean");
    EXPECT_EQ(buffers[1].name, "running_var");
    EXPECT_EQ(buffers[2].name, "num_batches_tracked");
    ASSERT_NE(buffers[2].i64, nullptr);
    EXPECT_EQ(*buffers[2].i64, 2);
}

TEST(BatchNorm2d, evaluation_uses_running_statistics_and_updates_nothing) {
    BatchNorm2d bn(2);
    randomize_batch_norm_state(bn, 37);
    bn.set_training(false);
    const Tensor running_mean = bn.running_mean(), running_var = bn.running_var();
    const Tensor x = random_tensor({2, 2, 2, 2}, 38);
    const Tensor& y = bn.forward(x);
    for (int64_t n = 0; n < 2; ++n)
        for (int64_t c = 0; c < 2; ++c)
            for (int64_t p = 0; p < 4; ++p) {
                const int64_t i = (n * 2 + c) * 4 + p;
                const double expected = (x.at(i) - running_mean.at(c)) / std::sqrt(running_var.at(c) + 1e-5) *
                                            bn.weight().at(c) + bn.bias().at(c);
                EXPECT_NEAR(y.at(i), expected, 1e-5);
            }
    for (int64_t c = 0; c < 2; ++c) {
        EXPECT_EQ(bn.running_mean().at(c), running_mean.at(c));
        EXPECT_EQ(bn.running_var().at(c), running_var.at(c));
    }
    EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST(BatchNorm2d, channels_last_computes_the_same_numbers_in_its_order) {
    const Tensor x = random_tensor({4, 5, 3, 3}, 39), g = random_tensor({4, 5, 3, 3}, 40);
    BatchNorm2d first(5), last(5);
    randomize_batch_norm_state(first, 41);
    randomize_batch_norm_state(last, 41);
    const Tensor x_last = with_memory_order(x, true);  // kept alive: backward reads the input
    const Tensor& y_last = last.forward(x_last);
    EXPECT_TRUE(y_last.channels_last());
    expect_same_logical_values(y_last, first.forward(x), 1e-5f, "output");
    const Tensor& dx_last = last.backward(with_memory_order(g, true));
    EXPECT_TRUE(dx_last.channels_last());
    expect_same_logical_values(dx_last, first.backward(g), 1e-5f, "grad_input");
    expect_same_logical_values(last.running_mean(), first.running_mean(), 1e-6f, "running_mean");
    expect_same_logical_values(last.running_var(), first.running_var(), 1e-6f, "running_var");
    std::vector<Parameter> p = last.parameters(), q = first.parameters();
    for (size_t k = 0; k < p.size(); ++k) expect_same_logical_values(*p[k].grad, *q[k].grad, 1e-5f, p[k].name);
}

TEST(BatchNorm, bad_input_shape_names_layer_expected_and_got) {
    BatchNorm1d bn1(4);
    BatchNorm2d bn2(3);
    expect_invalid_argument([&] { bn1.forward(Tensor({8, 5})); }, {"BatchNorm1d", "(N, 4)", "(8, 5)"});
    expect_invalid_argument([&] { bn1.forward(Tensor({8, 4, 2, 2})); }, {"BatchNorm1d", "(N, 4)", "(8, 4, 2, 2)"});
    expect_invalid_argument([&] { bn2.forward(Tensor({8, 4, 2, 2})); },
                            {"BatchNorm2d", "(N, 3, H, W)", "(8, 4, 2, 2)"});
    expect_invalid_argument([&] { bn2.forward(Tensor({8, 3})); }, {"BatchNorm2d", "(N, 3, H, W)", "(8, 3)"});
    const Tensor x = random_tensor({4, 3, 2, 2}, 42);
    bn2.forward(x);
    Tensor wrong_order = random_tensor({4, 3, 2, 2}, 43);
    wrong_order.set_channels_last(true);
    expect_invalid_argument([&] { bn2.backward(wrong_order); }, {"BatchNorm2d", "channels-last", "channels-first"});
    EXPECT_THROW(BatchNorm1d(0), std::invalid_argument);
    BatchNorm1d fresh(4);
    EXPECT_THROW(fresh.backward(Tensor({8, 4})), std::logic_error) << "backward before any forward";
}

// ---- loss -----------------------------------------------------------------------------------------

TEST(Loss, softmax_cross_entropy_matches_hand_computed_value) {
    Tensor logits({2, 3});
    const float values[] = {1.0f, 2.0f, 3.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < 6; ++i) logits.at(i) = values[i];
    const std::vector<int32_t> labels{2, 0};
    Tensor grad;
    const double loss = softmax_cross_entropy(logits, labels, grad);
    const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    EXPECT_NEAR(loss, ((lse - 3.0) + std::log(3.0)) / 2.0, 1e-12);
    EXPECT_NEAR(grad.at(2), (std::exp(3.0 - lse) - 1.0) / 2.0, 1e-7);
    EXPECT_NEAR(grad.at(3), (1.0 / 3.0 - 1.0) / 2.0, 1e-7);
    EXPECT_NEAR(grad.at(4), (1.0 / 3.0) / 2.0, 1e-7);
    EXPECT_DOUBLE_EQ(softmax_cross_entropy(logits, labels), loss);
}

TEST(Loss, gradient_matches_central_differences) {
    Tensor logits = random_tensor({5, 7}, 44, -3.0f, 3.0f);
    const std::vector<int32_t> labels{0, 6, 3, 3, 1};
    Tensor grad;
    softmax_cross_entropy(logits, labels, grad);
    const Tensor analytic = grad;
    for (int64_t i = 0; i < logits.numel(); ++i) {
        const float saved = logits.at(i);
        logits.at(i) = saved + 1e-2f;
        const double up = softmax_cross_entropy(logits, labels);
        logits.at(i) = saved - 1e-2f;
        const double down = softmax_cross_entropy(logits, labels);
        logits.at(i) = saved;
        const double numeric = (up - down) / ((saved + 1e-2f) - (saved - 1e-2f));
        EXPECT_NEAR(analytic.at(i), numeric, 1e-4 + 1e-3 * std::abs(numeric)) << i;
    }
}

TEST(Loss, huge_logits_stay_finite_log_sum_exp) {
    Tensor logits({2, 3});
    const float values[] = {1e4f, -1e4f, 0.0f, 500.0f, 500.0f, 500.0f};
    for (int64_t i = 0; i < 6; ++i) logits.at(i) = values[i];
    const std::vector<int32_t> labels{0, 1};
    Tensor grad;
    const double loss = softmax_cross_entropy(logits, labels, grad);
    EXPECT_NEAR(loss, std::log(3.0) / 2.0, 1e-9);
    for (int64_t i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(grad.at(i)));
    EXPECT_NEAR(grad.at(0), 0.0, 1e-7);
}

TEST(Loss, count_correct_counts_argmax_equal_to_label) {
    Tensor logits({3, 3});
    const float values[] = {0.1f, 0.9f, 0.0f, 2.0f, 1.0f, 0.0f, 0.0f, 0.0f, 5.0f};
    for (int64_t i = 0; i < 9; ++i) logits.at(i) = values[i];
    EXPECT_EQ(count_correct(logits, std::vector<int32_t>{1, 0, 2}), 3);
    EXPECT_EQ(count_correct(logits, std::vector<int32_t>{1, 1, 0}), 1);
}

TEST(Loss, bad_labels_and_shapes_throw_invalid_argument) {
    Tensor logits({2, 3}), grad;
    expect_invalid_argument([&] { softmax_cross_entropy(logits, std::vector<int32_t>{0, 3}, grad); },
                            {"softmax_cross_entropy", "label 3", "[0, 3)"});
    expect_invalid_argument([&] { softmax_cross_entropy(logits, std::vector<int32_t>{0}, grad); },
                            {"softmax_cross_entropy", "expected 2 labels", "got 1"});
    expect_invalid_argument([&] { count_correct(Tensor({2, 3, 1}), std::vector<int32_t>{0, 0}); },
                            {"count_correct", "(N, K)", "(2, 3, 1)"});
}

// ---- init -----------------------------------------------------------------------------------------

double sample_std(const Tensor& t) {
    double sum = 0, sum_sq = 0;
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.at(i);
    const double mean = sum / static_cast<double>(t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) sum_sq += (t.at(i) - mean) * (t.at(i) - mean);
    return std::sqrt(sum_sq / static_cast<double>(t.numel()));
}

TEST(Init, gaussian_he_and_xavier_have_their_spread_and_follow_the_seed) {
    Tensor w({200, 100});
    std::mt19937_64 rng(45);
    init_weight(w, Init::gaussian(0.1f), rng);
    EXPECT_NEAR(sample_std(w), 0.1, 0.002);
    Tensor conv({64, 32, 3, 3});
    init_weight(conv, Init::he(), rng);
    EXPECT_NEAR(sample_std(conv), std::sqrt(2.0 / (32 * 9)), 0.002);
    init_weight(w, Init::xavier(), rng);
    const double bound = std::sqrt(6.0 / 300.0);
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < w.numel(); ++i) lo = std::min(lo, w.at(i)), hi = std::max(hi, w.at(i));
    EXPECT_LE(hi, bound);
    EXPECT_GE(lo, -bound);
    EXPECT_GT(hi, 0.98 * bound);
    EXPECT_NEAR(sample_std(w), bound / std::sqrt(3.0), 0.002);
    Tensor a({10, 10}), b({10, 10});
    std::mt19937_64 r1(7), r2(7);
    init_weight(a, Init::he(), r1);
    init_weight(b, Init::he(), r2);
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.at(i), b.at(i));
    EXPECT_EQ(Init::parse("he").kind, Init::Kind::he_normal);
    EXPECT_EQ(Init::parse("xavier").kind, Init::Kind::xavier_uniform);
    EXPECT_EQ(Init::parse("gaussian").std, 0.1f);
    EXPECT_THROW(Init::parse("orthogonal"), std::invalid_argument);
}

// ---- models ---------------------------------------------------------------------------------------

std::vector<std::string> names_and_shapes(Sequential& net) {
    std::vector<std::string> out;
    for (const Parameter& p : net.parameters()) out.push_back(p.name + " " + p.value->shape_string());
    for (const Buffer& b : net.buffers()) {
        std::string line = b.name;
        line.append(1, ' ');
        line.append(b.f32 ? b.f32->shape_string() : std::string("i64"));
        out.push_back(line);
    }
    return out;
}

TEST(Models, mlp_has_the_documented_torch_names_and_shapes) {
    auto plain = mlp(false, 1);
    EXPECT_EQ(plain->size(), 8u);
    EXPECT_EQ(names_and_shapes(*plain),
              (std::vector<std::string>{"1.weight (100, 784)", "1.bias (100)", "3.weight (100, 100)", "3.bias (100)",
                                        "5.weight (100, 100)", "5.bias (100)", "7.weight (10, 100)", "7.bias (10)"}));
    auto bn = mlp(true, 1);
    EXPECT_EQ(bn->size(), 11u);
    EXPECT_EQ(names_and_shapes(*bn),
              (std::vector<std::string>{"1.weight (100, 784)", "2.weight (100)", "2.bias (100)", "4.weight (100, 100)",
                                        "5.weight (100)", "5.bias (100)", "7.weight (100, 100)", "8.weight (100)",
                                        "8.bias (100)", "10.weight (10, 100)", "10.bias (10)", "2.running_mean (100)",
                                        "2.running_var (100)", "2.num_batches_tracked i64", "5.running_mean (100)",
                                        "5.running_var (100)", "5.num_batches_tracked i64", "8.running_mean (100)",
                                        "8.running_var (100)", "8.num_batches_tracked i64"}));
    EXPECT_EQ((*bn)[8].type(), "BatchNorm1d");
    EXPECT_EQ((*bn)[9].type(), "Sigmoid");
    // The same seed gives the same weights, with or without BN in between; N(0, 0.1^2) by default.
    EXPECT_EQ(plain->parameters()[0].value->at(123), bn->parameters()[0].value->at(123));
    EXPECT_NEAR(sample_std(*bn->parameters()[0].value), 0.1, 0.002);
    auto dropout = mlp(false, 1, Init::gaussian(0.1f), 0.2);
    EXPECT_EQ(dropout->size(), 11u);
    EXPECT_EQ((*dropout)[3].type(), "Dropout");
    EXPECT_EQ(dropout->random_states().size(), 3u);
    EXPECT_EQ(dropout->random_states()[0].name, "3.rng");
}

TEST(Models, cnn_has_the_documented_names_and_maps_images_to_ten_logits_in_both_memory_orders) {
    auto net = cnn(true, 2);
    EXPECT_EQ(net->size(), 12u);
    std::vector<std::string> names;
    for (const Parameter& p : net->parameters()) names.push_back(p.name + " " + p.value->shape_string());
    EXPECT_EQ(names, (std::vector<std::string>{"0.weight (32, 1, 3, 3)", "1.weight (32)", "1.bias (32)",
                                               "4.weight (64, 32, 3, 3)", "5.weight (64)", "5.bias (64)",
                                               "9.weight (128, 3136)", "9.bias (128)", "11.weight (10, 128)",
                                               "11.bias (10)"}));
    auto last = cnn(true, 2, /*channels_last=*/true);
    const Tensor x = random_tensor({3, 1, 28, 28}, 46, 0.0f, 1.0f);
    const Tensor logits = net->forward(x);
    ASSERT_EQ(logits.shape(), (std::vector<int64_t>{3, 10}));
    EXPECT_TRUE((*last)[1].forward((*last)[0].forward(x)).channels_last());
    expect_same_logical_values(last->forward(x), logits, 1e-4f, "logits");
    auto plain = cnn(false, 2);
    EXPECT_EQ(plain->size(), 10u);
    EXPECT_EQ(plain->parameters()[1].name, "0.bias");
}

TEST(Models, sgd_on_a_fixed_batch_lowers_the_loss_of_the_bn_mlp) {
    auto net = mlp(true, 3);
    const Tensor x = random_tensor({20, 1, 28, 28}, 47, 0.0f, 1.0f);
    std::vector<int32_t> labels(20);
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 10);
    Tensor grad;
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
        last = softmax_cross_entropy(net->forward(x), labels, grad);
        if (step == 0) first = last;
        net->backward(grad);
        for (const Parameter& p : net->parameters())
            for (int64_t i = 0; i < p.value->numel(); ++i) p.value->at(i) -= 0.5f * p.grad->at(i);
    }
    EXPECT_LT(last, 0.5 * first);
}

TEST(Models, a_training_step_allocates_nothing_after_the_first_batch) {
    for (bool use_cnn : {false, true}) {
        SCOPED_TRACE(use_cnn ? "cnn with BN, channels-last" : "mlp with BN");
        auto net = use_cnn ? cnn(true, 4, true) : mlp(true, 4);
        const Tensor x = random_tensor({6, 1, 28, 28}, 48, 0.0f, 1.0f);
        const std::vector<int32_t> labels{0, 1, 2, 3, 4, 5};
        Tensor grad;
        auto step = [&] {
            softmax_cross_entropy(net->forward(x), labels, grad);
            net->backward(grad);
        };
        step();
        allocations = 0;
        counting_allocations = true;
        step();
        step();
        counting_allocations = false;
        EXPECT_EQ(allocations.load(), 0);
    }
}

}  // namespace
}  // namespace bnorm::nn
