// Finite-difference gradient checks in float64: the analytic backward passes against central
// differences of the loss L = sum(g * y) for a fixed random g, with respect to x, gamma and beta,
// for the training forward (batch statistics, which depend on x) and the inference forward.
#include "common.hpp"

namespace bnorm::test {
namespace {

struct Case {
    Shape shape;
    bool training;
};

class GradCheck : public ::testing::TestWithParam<Case> {};

// The loss and the forward pass it is built on, as a function of (x, weight, bias).
double loss(const Case& k, const std::vector<double>& x, const std::vector<double>& weight,
            const std::vector<double>& bias, const std::vector<double>& g, const std::vector<double>& rm,
            const std::vector<double>& rv) {
    std::vector<double> y(x.size());
    if (k.training)
        forward_training<double>(k.shape, Options{.eps = 1e-3}, {.x = x, .y = y, .weight = weight, .bias = bias});
    else
        forward_inference<double>(k.shape, Options{.eps = 1e-3},
                                  {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm, .running_var = rv});
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += g[i] * y[i];
    return l;
}

TEST_P(GradCheck, analytic_gradients_match_central_differences) {
    const Case k = GetParam();
    const Shape& s = k.shape;
    auto x = random_vector<double>(numel(s), 1, 0.2, 1.5);
    auto weight = random_vector<double>(s.c, 2, 1.0, 0.4), bias = random_vector<double>(s.c, 3);
    const auto g = random_vector<double>(numel(s), 4);
    const auto rm = random_vector<double>(s.c, 5), rv = random_positive<double>(s.c, 6);

    std::vector<double> dx(x.size()), dw(weight.size()), db(bias.size());
    if (k.training) {
        std::vector<double> y(x.size()), sm(static_cast<size_t>(s.c)), si(static_cast<size_t>(s.c));
        forward_training<double>(s, Options{.eps = 1e-3}, {.x = x, .y = y, .weight = weight, .bias = bias,
                                                           .save_mean = sm, .save_invstd = si});
        backward<double>(s, {.dy = g, .x = x, .dx = dx, .weight = weight, .save_mean = sm, .save_invstd = si,
                             .dweight = dw, .dbias = db});
    } else {
        backward_inference<double>(s, Options{.eps = 1e-3}, {.dy = g, .x = x, .dx = dx, .weight = weight,
                                                             .running_mean = rm, .running_var = rv,
                                                             .dweight = dw, .dbias = db});
    }

    constexpr double h = 1e-6;
    auto check = [&](std::vector<double>& wrt, const std::vector<double>& analytic, const char* name) {
        for (size_t i = 0; i < wrt.size(); ++i) {
            const double saved = wrt[i];
            wrt[i] = saved + h;
            const double up = loss(k, x, weight, bias, g, rm, rv);
            wrt[i] = saved - h;
            const double down = loss(k, x, weight, bias, g, rm, rv);
            wrt[i] = saved;
            const double numeric = (up - down) / (2 * h);
            ASSERT_NEAR(analytic[i], numeric, 1e-6 * (1 + std::abs(numeric))) << name << "[" << i << "]";
        }
    };
    check(x, dx, "dx");
    check(weight, dw, "dweight");
    check(bias, db, "dbias");
}

std::vector<Case> cases() {
    std::vector<Case> out;
    for (bool training : {true, false})
        for (Layout layout : {Layout::channels_first, Layout::channels_last})
            for (Shape s : {Shape{2, 3, 1}, Shape{3, 2, 5}, Shape{4, 1, 3}, Shape{2, 4, 7}}) {
                s.layout = layout;
                out.push_back({s, training});
            }
    return out;
}

INSTANTIATE_TEST_SUITE_P(Float64, GradCheck, ::testing::ValuesIn(cases()), [](const auto& param_info) {
    return std::string(param_info.param.training ? "training_" : "inference_") + shape_name(param_info.param.shape);
});

}  // namespace
}  // namespace bnorm::test
