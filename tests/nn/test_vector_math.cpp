// The training system's vectorized elementwise loops (src/nn/math) against double-precision
// references: exp within 2 ulp on a dense sweep of its range, sigmoid within 4 ulp, saturation,
// NaN propagation, in-place use, and the pixel scaling bit-identical to a scalar division.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nn/math/vector_math.hpp"

namespace bnorm::nn::math {
namespace {

// Distance in units in the last place of the float nearest to `exact`.
double ulps(float got, double exact) {
    const float nearest = static_cast<float>(exact);
    const double ulp = std::nextafter(std::fabs(nearest), std::numeric_limits<float>::infinity()) - std::fabs(nearest);
    return std::fabs(static_cast<double>(got) - exact) / ulp;
}

TEST(VectorMath, exp_is_within_2_ulp_over_its_whole_normal_range) {
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.000731f) worst = std::max(worst, ulps(exp_approx(x), std::exp(double(x))));
    for (float x : {-1e-30f, 0.0f, 1e-30f, 0.5f, -0.5f, 0.34657359f, -0.34657359f})
        worst = std::max(worst, ulps(exp_approx(x), std::exp(double(x))));
    EXPECT_LE(worst, 2.0);
    EXPECT_EQ(exp_approx(0.0f), 1.0f);
}

TEST(VectorMath, sigmoid_is_within_4_ulp_saturates_and_propagates_nan) {
    std::vector<float> x;
    for (float v = -87.0f; v <= 87.0f; v += 0.00173f) x.push_back(v);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    x.insert(x.end(), {0.0f, -0.0f, 1e-8f, 200.0f, -200.0f, inf, -inf, nan});
    std::vector<float> y(x.size());
    sigmoid(x.data(), y.data(), static_cast<int64_t>(x.size()));
    double worst = 0;
    for (size_t i = 0; i + 8 < x.size(); ++i)
        worst = std::max(worst, ulps(y[i], 1.0 / (1.0 + std::exp(-double(x[i])))));
    EXPECT_LE(worst, 4.0);
    const size_t k = x.size() - 8;
    EXPECT_EQ(y[k], 0.5f);
    EXPECT_EQ(y[k + 1], 0.5f);
    EXPECT_EQ(y[k + 3], 1.0f);
    EXPECT_GE(y[k + 4], 0.0f);
    EXPECT_LT(y[k + 4], 1e-37f);
    EXPECT_EQ(y[k + 5], 1.0f);
    EXPECT_LT(y[k + 6], 1e-37f);
    EXPECT_TRUE(std::isnan(y[k + 7]));
}

TEST(VectorMath, sigmoid_in_place_equals_out_of_place_for_every_length_up_to_70) {
    for (int64_t n = 0; n <= 70; ++n) {
        std::vector<float> x(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = 0.37f * static_cast<float>(i) - 11.0f;
        std::vector<float> y(x.size()), z = x;
        sigmoid(x.data(), y.data(), n);
        sigmoid(z.data(), z.data(), n);
        EXPECT_EQ(y, z) << "n = " << n;
        for (int64_t i = 0; i < n; ++i)  // the tail (beyond a vector's width) is computed too
            EXPECT_NEAR(y[static_cast<size_t>(i)], 1.0 / (1.0 + std::exp(-double(x[static_cast<size_t>(i)]))), 1e-6);
    }
}

TEST(VectorMath, bytes_to_unit_is_the_exact_quotient_by_255_for_every_byte) {
    std::vector<uint8_t> in(256 * 3 + 5);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7);
    std::vector<float> out(in.size());
    bytes_to_unit(in.data(), out.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i)
        EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(static_cast<float>(in[i]) / 255.0f)) << i;
}

}  // namespace
}  // namespace bnorm::nn::math
