// vector_math.cpp: see vector_math.hpp. Every loop body is branch-free arithmetic on one element,
// which GCC vectorizes at the width of the clone that runs.
#include "nn/math/vector_math.hpp"

#include <bit>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define BNORM_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BNORM_VECTOR_CLONES
#endif

namespace bnorm::nn::math {
namespace {

// exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k*ln2 with ln2 split in a high part exact in
// float (so k*ln2_hi is exact) and a low part (Cody & Waite 1980). exp(r) on |r| <= ln2/2 is
// 1 + r + r^2*P(r) with P the degree-5 minimax fit of (exp(r) - 1 - r)/r^2 (the coefficients of
// Moshier's Cephes expf). Rounding uses the 1.5*2^23 trick, exact for |x/ln2| < 2^22.
inline float exp_body(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;
    constexpr float kLn2Lo = -2.12194440e-4f;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
    x = x > -87.0f ? x : -87.0f;  // NaN becomes -87 here: the float-to-int conversion below needs a number
    x = x < 88.0f ? x : 88.0f;
    const float k = (x * kLog2e + kRound) - kRound;
    const float r = (x - k * kLn2Hi) - k * kLn2Lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = (p * r) * r + r + 1.0f;
    // 2^k for k in [-126, 127]: the exponent field alone.
    const float two_k = std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
    return e * two_k;
}

}  // namespace

BNORM_VECTOR_CLONES
void bytes_to_unit(const uint8_t* in, float* out, int64_t n) {
    // The double product rounds to the same float as the float quotient v/255: v/255 is never within
    // 2^-32 (relative) of a float rounding boundary, and the product is within 2^-53 of v/255. A
    // multiply is several times cheaper than a division; the tests check all 256 values.
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(in[i]) * (1.0 / 255.0));
}

BNORM_VECTOR_CLONES
void sigmoid(const float* in, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float x = in[i];
        const float y = 1.0f / (1.0f + exp_body(-x));
        out[i] = x == x ? y : x;  // NaN in, NaN out
    }
}

float exp_approx(float x) { return x == x ? exp_body(x) : x; }

}  // namespace bnorm::nn::math
