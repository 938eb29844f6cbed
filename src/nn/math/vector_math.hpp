// vector_math.hpp: the training system's elementwise hot loops, vectorized for the machine they
// run on (AVX-512, AVX2 or baseline x86-64, chosen once at load time by the dynamic linker through
// GCC's target_clones), with the same results on every one of them: each is a fixed sequence of
// IEEE operations on one element, never reassociated, so only the vector width differs.
//
//   bnorm::nn::math::bytes_to_unit(pixels, images, n);   // images[i] = pixels[i] / 255
//   bnorm::nn::math::sigmoid(x, y, n);                  // y[i] = 1 / (1 + exp(-x[i]))
#pragma once

#include <cstdint>

namespace bnorm::nn::math {

// out[i] = in[i] / 255 (the exact float32 quotient, as a scalar division gives).
void bytes_to_unit(const uint8_t* in, float* out, int64_t n);

// out[i] = 1 / (1 + exp(-in[i])), exp to within 2 ulp of the correctly rounded float32 exp
// (Cody-Waite range reduction, degree-6 polynomial on [-ln2/2, ln2/2]); in may equal out.
// NaN propagates; inputs beyond +-88 saturate to 1 or to exp(-88)-small values.
void sigmoid(const float* in, float* out, int64_t n);

// exp of one float, the same formula as sigmoid's: for tests and scalar callers.
float exp_approx(float x);

}  // namespace bnorm::nn::math
