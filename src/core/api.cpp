// api.cpp: the C++ API's functions: check span sizes, then call the checked ops.
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"
#include "core/threading.hpp"
#include "core/version.hpp"

namespace bnorm {
namespace {

template <class T>
constexpr bnorm_dtype dtype_of() {
    if constexpr (std::is_same_v<T, float>) return BNORM_F32;
    else if constexpr (std::is_same_v<T, double>) return BNORM_F64;
    else if constexpr (std::is_same_v<T, bfloat16>) return BNORM_BF16;
    else {
        static_assert(std::is_same_v<T, float16>, "T is float, double, bfloat16 or float16");
        return BNORM_F16;
    }
}

template <class T>
bnorm_desc to_desc(const char* op, const Shape& s) {
    // Checked here, before the conversion: an out-of-range value is not a bnorm_layout.
    if (s.layout != Layout::channels_first && s.layout != Layout::channels_last)
        throw InvalidArgument(std::string(op) + ": shape.layout = " + std::to_string(static_cast<int>(s.layout)) +
                              " is not a layout; use Layout::channels_first or Layout::channels_last");
    return bnorm_desc{dtype_of<T>(),
                      s.layout == Layout::channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST, s.n, s.c,
                      s.spatial};
}

// Element counts the spans must have; computed only after the shape itself is known to be valid
// (the ops check it again and name it), so a bad shape is reported as a bad shape.
struct Sizes {
    bool valid;
    int64_t numel, c;
};

Sizes sizes(const Shape& s) {
    int64_t numel = 0;
    const bool valid = s.n > 0 && s.c > 0 && s.spatial > 0 &&
                       !__builtin_mul_overflow(s.n, s.c, &numel) &&
                       !__builtin_mul_overflow(numel, s.spatial, &numel);
    return Sizes{valid, numel, s.c};
}

template <class Span>
void expect_size(const char* op, const Sizes& z, const char* name, const Span& span, bool per_channel,
                 bool optional) {
    if (!z.valid || (optional && span.empty())) return;
    const int64_t want = per_channel ? z.c : z.numel;
    if (static_cast<int64_t>(span.size()) != want)
        throw InvalidArgument(std::string(op) + ": " + name + " has " + std::to_string(span.size()) +
                              " elements; it needs " + std::to_string(want) +
                              (per_channel ? " (one per channel, shape.c)" : " (shape.n * shape.c * shape.spatial)") +
                              (optional ? " or none (an empty span)" : ""));
}

template <class Span>
auto ptr(const Span& s) { return s.empty() ? nullptr : s.data(); }

}  // namespace

template <class T>
void forward_training(const Shape& shape, const Options& options, const ForwardTrainingArgs<T>& a) {
    constexpr const char* op = "bnorm::forward_training";
    const Sizes z = sizes(shape);
    expect_size(op, z, "x", a.x, false, false);
    expect_size(op, z, "y", a.y, false, false);
    expect_size(op, z, "weight", a.weight, true, true);
    expect_size(op, z, "bias", a.bias, true, true);
    expect_size(op, z, "running_mean", a.running_mean, true, true);
    expect_size(op, z, "running_var", a.running_var, true, true);
    expect_size(op, z, "save_mean", a.save_mean, true, true);
    expect_size(op, z, "save_invstd", a.save_invstd, true, true);
    const bnorm_desc d = to_desc<T>(op, shape);
    const bnorm_options o = detail::to_c_options(options);
    detail::forward_training(op, &d, &o, ptr(a.x), ptr(a.weight), ptr(a.bias), ptr(a.running_mean),
                             ptr(a.running_var), a.num_batches_tracked, ptr(a.y), ptr(a.save_mean),
                             ptr(a.save_invstd));
}

template <class T>
void forward_inference(const Shape& shape, const Options& options, const ForwardInferenceArgs<T>& a) {
    constexpr const char* op = "bnorm::forward_inference";
    const Sizes z = sizes(shape);
    expect_size(op, z, "x", a.x, false, false);
    expect_size(op, z, "y", a.y, false, false);
    expect_size(op, z, "weight", a.weight, true, true);
    expect_size(op, z, "bias", a.bias, true, true);
    expect_size(op, z, "running_mean", a.running_mean, true, false);
    expect_size(op, z, "running_var", a.running_var, true, false);
    const bnorm_desc d = to_desc<T>(op, shape);
    const bnorm_options o = detail::to_c_options(options);
    detail::forward_inference(op, &d, &o, ptr(a.x), ptr(a.weight), ptr(a.bias), ptr(a.running_mean),
                              ptr(a.running_var), ptr(a.y));
}

template <class T>
void backward(const Shape& shape, const BackwardArgs<T>& a) {
    constexpr const char* op = "bnorm::backward";
    const Sizes z = sizes(shape);
    expect_size(op, z, "dy", a.dy, false, false);
    expect_size(op, z, "x", a.x, false, false);
    expect_size(op, z, "dx", a.dx, false, false);
    expect_size(op, z, "weight", a.weight, true, true);
    expect_size(op, z, "save_mean", a.save_mean, true, false);
    expect_size(op, z, "save_invstd", a.save_invstd, true, false);
    expect_size(op, z, "dweight", a.dweight, true, true);
    expect_size(op, z, "dbias", a.dbias, true, true);
    const bnorm_desc d = to_desc<T>(op, shape);
    detail::backward(op, &d, ptr(a.dy), ptr(a.x), ptr(a.weight), ptr(a.save_mean), ptr(a.save_invstd),
                     ptr(a.dx), ptr(a.dweight), ptr(a.dbias));
}

template <class T>
void backward_inference(const Shape& shape, const Options& options, const BackwardInferenceArgs<T>& a) {
    constexpr const char* op = "bnorm::backward_inference";
    const Sizes z = sizes(shape);
    expect_size(op, z, "dy", a.dy, false, false);
    expect_size(op, z, "x", a.x, false, false);
    expect_size(op, z, "dx", a.dx, false, false);
    expect_size(op, z, "weight", a.weight, true, true);
    expect_size(op, z, "running_mean", a.running_mean, true, false);
    expect_size(op, z, "running_var", a.running_var, true, false);
    expect_size(op, z, "dweight", a.dweight, true, true);
    expect_size(op, z, "dbias", a.dbias, true, true);
    const bnorm_desc d = to_desc<T>(op, shape);
    const bnorm_options o = detail::to_c_options(options);
    detail::backward_inference(op, &d, &o, ptr(a.dy), ptr(a.x), ptr(a.weight), ptr(a.running_mean),
                               ptr(a.running_var), ptr(a.dx), ptr(a.dweight), ptr(a.dbias));
}

int set_num_threads(int n) { return detail::set_num_threads(n); }
int num_threads() { return detail::num_threads(); }
const char* version() { return BNORM_VERSION_STRING; }

#define BNORM_INSTANTIATE(T)                                                                        \
    template void forward_training<T>(const Shape&, const Options&, const ForwardTrainingArgs<T>&);   \
    template void forward_inference<T>(const Shape&, const Options&, const ForwardInferenceArgs<T>&); \
    template void backward<T>(const Shape&, const BackwardArgs<T>&);                                  \
    template void backward_inference<T>(const Shape&, const Options&, const BackwardInferenceArgs<T>&);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
BNORM_INSTANTIATE(bfloat16)
BNORM_INSTANTIATE(float16)
#undef BNORM_INSTANTIATE

}  // namespace bnorm
