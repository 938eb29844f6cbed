// bnorm.hpp: the C++20 API of libbnorm, batch normalization for deep neural networks.
//
// Functions for the four operations on contiguous tensors given as std::span, and a BatchNorm
// module that owns gamma, beta, the running statistics and the batch counter. Errors are
// exceptions derived from bnorm::Error whose message names the bad argument and the fix.
//
//   bnorm::Shape shape{.n = 32, .c = 64, .spatial = 28 * 28};          // NCHW, H*W = 784
//   bnorm::BatchNorm<float> bn({.num_features = 64});
//   bn.forward(shape, x, y);                                          // training mode: batch stats
//   bn.backward(shape, x, dy, dx);                                    // fills bn.grad_weight()/grad_bias()
//   bn.eval(); bn.forward(shape, x, y);                               // running statistics
//
// The semantics, with formulas and the PyTorch/ONNX mapping, are in docs/semantics.md.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bnorm/bnorm.h"

namespace bnorm {

// ---- errors ---------------------------------------------------------------------------------
class Error : public std::runtime_error {
public:
    Error(bnorm_status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    bnorm_status status() const noexcept { return status_; }

private:
    bnorm_status status_;
};
// A bad argument: the message says which and how to fix it.
class InvalidArgument : public Error {
public:
    explicit InvalidArgument(const std::string& message) : Error(BNORM_EINVAL, message) {}
};
// A valid request that this build cannot serve (for example a data type not implemented yet).
class Unsupported : public Error {
public:
    explicit Unsupported(const std::string& message) : Error(BNORM_EUNSUPPORTED, message) {}
};

// ---- descriptors ----------------------------------------------------------------------------
enum class Layout { channels_first = BNORM_CHANNELS_FIRST, channels_last = BNORM_CHANNELS_LAST };

// (n, c, spatial) with spatial the product of the spatial sizes (1 for (N, C) input, H*W for
// images, D*H*W for volumes). channels_first is (N, C, spatial...), channels_last (N, spatial..., C).
struct Shape {
    int64_t n = 0;
    int64_t c = 0;
    int64_t spatial = 1;
    Layout layout = Layout::channels_first;
};

struct Options {
    double eps = 1e-5;                       // added to the variance; >= 0
    std::optional<double> momentum = 0.1;    // weight of the new batch; nullopt: cumulative average
    bool running_var_unbiased = true;        // running_var gets var*m/(m-1) (PyTorch); false: ONNX
};

// ---- 16-bit floating-point data ----------------------------------------------------------------
// bfloat16 and float16 (IEEE 754 binary16) values, held as their bits. They are the element types
// of x, y, dy and dx only: with them, weight, bias, the running and saved statistics and the
// parameter gradients are float (param_t), and every operation computes and accumulates in float32
// (block sums gathered in float64; the mixed-precision contract: see docs/semantics.md).
struct bfloat16 {
    uint16_t bits = 0;
};
struct float16 {
    uint16_t bits = 0;
};

inline float to_float(bfloat16 v) { return std::bit_cast<float>(static_cast<uint32_t>(v.bits) << 16); }
// Round to nearest, ties to even; NaN stays a (quiet) NaN.
inline bfloat16 to_bfloat16(float v) {
    const uint32_t u = std::bit_cast<uint32_t>(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
    return bfloat16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline float to_float(float16 v) {
    const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
    const uint32_t exponent = (v.bits >> 10) & 0x1fu, mantissa = v.bits & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}
// Round to nearest, ties to even; beyond the largest float16 (65504, up to the rounding boundary
// 65520) gives infinity; NaN stays a (quiet) NaN.
inline float16 to_float16(float v) {
    const uint32_t u = std::bit_cast<uint32_t>(v);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return float16{static_cast<uint16_t>(sign | 0x7e00u)};
    if (a >= 0x477ff000u) return float16{static_cast<uint16_t>(sign | 0x7c00u)};
    if (a < 0x38800000u) {  // below 2^-14: subnormal or zero; |v| * 2^24 < 1024 is exact
        const float scaled = std::bit_cast<float>(a) * 16777216.0f;
        uint32_t q = static_cast<uint32_t>(scaled);
        const float rest = scaled - static_cast<float>(q);
        if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;  // q = 1024 is the smallest normal: right
        return float16{static_cast<uint16_t>(sign | q)};
    }
    const uint32_t mantissa = a & 0x7fffffu;
    uint32_t h = (((a >> 23) - 112) << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return float16{static_cast<uint16_t>(sign | h)};
}

// The type of the parameters and statistics that go with data of type T.
template <class T>
using param_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// ---- operations ------------------------------------------------------------------------------
// T is float, double, bfloat16 or float16; P = param_t<T> (double for double data, else float).
// Every tensor is contiguous; an empty span means "none".
template <class T>
struct ForwardTrainingArgs {
    using P = param_t<T>;
    std::span<const T> x;                    // required, n*c*spatial
    std::span<T> y;                          // required, n*c*spatial; may be the same memory as x
    std::span<const P> weight = {};          // c or none (gamma = 1)
    std::span<const P> bias = {};            // c or none (beta = 0)
    std::span<P> running_mean = {};          // c or none (statistics not tracked); with running_var
    std::span<P> running_var = {};           // c or none
    int64_t* num_batches_tracked = nullptr;  // incremented when tracked; required for cumulative average
    std::span<P> save_mean = {};             // c or none
    std::span<P> save_invstd = {};           // c or none
};

template <class T>
struct ForwardInferenceArgs {
    using P = param_t<T>;
    std::span<const T> x;
    std::span<T> y;
    std::span<const P> weight = {};
    std::span<const P> bias = {};
    std::span<const P> running_mean = {};    // required
    std::span<const P> running_var = {};     // required
};

template <class T>
struct BackwardArgs {
    using P = param_t<T>;
    std::span<const T> dy;
    std::span<const T> x;
    std::span<T> dx;                         // may be the same memory as dy or x
    std::span<const P> weight = {};
    std::span<const P> save_mean = {};       // required: from forward_training
    std::span<const P> save_invstd = {};     // required: from forward_training
    std::span<P> dweight = {};               // c or none (not computed)
    std::span<P> dbias = {};                 // c or none (not computed)
};

template <class T>
struct BackwardInferenceArgs {
    using P = param_t<T>;
    std::span<const T> dy;
    std::span<const T> x;
    std::span<T> dx;
    std::span<const P> weight = {};
    std::span<const P> running_mean = {};    // required
    std::span<const P> running_var = {};     // required
    std::span<P> dweight = {};
    std::span<P> dbias = {};
};

template <class T>
void forward_training(const Shape& shape, const Options& options, const ForwardTrainingArgs<T>& args);
template <class T>
void forward_inference(const Shape& shape, const Options& options, const ForwardInferenceArgs<T>& args);
template <class T>
void backward(const Shape& shape, const BackwardArgs<T>& args);
template <class T>
void backward_inference(const Shape& shape, const Options& options, const BackwardInferenceArgs<T>& args);

int set_num_threads(int n);  // n <= 0: default (BNORM_NUM_THREADS, else the cores); returns the previous
int num_threads();
const char* version();

// ---- the module -----------------------------------------------------------------------------
// Owns gamma (weight, initialized to 1), beta (bias, 0), running_mean (0), running_var (1) and
// num_batches_tracked (0), like torch.nn.BatchNorm{1,2,3}d. In training mode forward() uses the
// batch statistics and updates the running ones (when tracked); in evaluation mode it uses the
// running statistics, or the batch statistics without updating anything when they are not tracked.
// backward() must follow forward() on the same input and shape; it writes (not accumulates) the
// gradients of this batch into grad_weight() and grad_bias().
template <class T>
class BatchNorm {
public:
    struct Config {
        int64_t num_features = 0;
        double eps = 1e-5;
        std::optional<double> momentum = 0.1;
        bool affine = true;
        bool track_running_stats = true;
        bool running_var_unbiased = true;
    };

    explicit BatchNorm(const Config& config);

    void forward(const Shape& shape, std::span<const T> x, std::span<T> y);
    void backward(const Shape& shape, std::span<const T> x, std::span<const T> dy, std::span<T> dx);

    void train(bool on = true) { training_ = on; }
    void eval() { training_ = false; }
    bool training() const { return training_; }

    const Config& config() const { return config_; }
    std::span<T> weight() { return weight_; }          // empty when not affine
    std::span<T> bias() { return bias_; }
    std::span<const T> grad_weight() const { return grad_weight_; }
    std::span<const T> grad_bias() const { return grad_bias_; }
    std::span<T> running_mean() { return running_mean_; }  // empty when not tracked
    std::span<T> running_var() { return running_var_; }
    int64_t num_batches_tracked() const { return num_batches_tracked_; }
    void set_num_batches_tracked(int64_t count);
    void reset_running_stats();  // running_mean 0, running_var 1, num_batches_tracked 0

private:
    Options options() const;
    void check_channels(const char* op, const Shape& shape) const;

    Config config_;
    bool training_ = true;
    std::vector<T> weight_, bias_, grad_weight_, grad_bias_, running_mean_, running_var_;
    int64_t num_batches_tracked_ = 0;
    // What the last forward() did, for backward(): which statistics and the shape it saw.
    std::vector<T> save_mean_, save_invstd_;
    enum class Saved { nothing, batch_statistics, running_statistics } saved_ = Saved::nothing;
    Shape saved_shape_{};
};

extern template class BatchNorm<float>;
extern template class BatchNorm<double>;

// ---- split operations: the parts of synchronized batch normalization (bnorm.h has the contract;
// docs/distributed.md the design). Statistics are double for both T; shape.n may be 0. ---------
template <class T>
void local_statistics(const Shape& shape, std::span<const T> x, int64_t& count, std::span<double> mean,
                      std::span<double> m2);

// means and m2s are (counts.size(), channels), row-major; merged in index order (deterministic).
void merge_statistics(int64_t channels, std::span<const int64_t> counts, std::span<const double> means,
                      std::span<const double> m2s, int64_t& total_count, std::span<double> mean,
                      std::span<double> m2);

template <class T>
struct NormalizeArgs {
    std::span<const T> x;                    // n*c*spatial (none when n is 0)
    std::span<T> y;                          // n*c*spatial; may be x
    int64_t total_count = 0;                 // values per channel over all parts, >= 2
    std::span<const double> mean = {};       // c, required
    std::span<const double> m2 = {};         // c, required
    std::span<const T> weight = {};
    std::span<const T> bias = {};
    std::span<T> running_mean = {};
    std::span<T> running_var = {};
    int64_t* num_batches_tracked = nullptr;
    std::span<T> save_mean = {};
    std::span<T> save_invstd = {};
};
template <class T>
void normalize_with_statistics(const Shape& shape, const Options& options, const NormalizeArgs<T>& args);

template <class T>
struct BackwardReduceArgs {
    std::span<const T> dy;
    std::span<const T> x;
    std::span<const T> save_mean;            // c, required
    std::span<const T> save_invstd;          // c, required
    std::span<double> sum_dy;                // c, required
    std::span<double> sum_dy_xhat;           // c, required
};
template <class T>
void backward_reduce(const Shape& shape, const BackwardReduceArgs<T>& args);

template <class T>
struct BackwardElementwiseArgs {
    std::span<const T> dy;
    std::span<const T> x;
    std::span<T> dx;                         // may be dy or x
    int64_t total_count = 0;
    std::span<const double> sum_dy = {};     // c, over all parts
    std::span<const double> sum_dy_xhat = {};
    std::span<const T> weight = {};
    std::span<const T> save_mean = {};
    std::span<const T> save_invstd = {};
};
template <class T>
void backward_elementwise(const Shape& shape, const BackwardElementwiseArgs<T>& args);

}  // namespace bnorm
