// split_api.cpp: the C++ API of the split operations: check span sizes, then call the checked ops
// (core/split_ops.hpp). shape.n may be 0 here (a process with no samples of the batch).
#include <string>
#include <type_traits>

#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"
#include "core/split_ops.hpp"

namespace bnorm {
namespace {

template <class T>
bnorm_desc part_desc(const char* op, const Shape& s) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    if (s.layout != Layout::channels_first && s.layout != Layout::channels_last)
        throw InvalidArgument(std::string(op) + ": shape.layout = " + std::to_string(static_cast<int>(s.layout)) +
                              " is not a layout; use Layout::channels_first or Layout::channels_last");
    return bnorm_desc{std::is_same_v<T, double> ? BNORM_F64 : BNORM_F32,
                      s.layout == Layout::channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST, s.n, s.c,
                      s.spatial};
}

// Checks a span's size once the shape is valid (otherwise the ops report the shape itself).
struct Expect {
    const char* op;
    bool valid;
    int64_t numel, c;

    Expect(const char* name, const Shape& s) : op(name), numel(0), c(s.c) {
        valid = s.n >= 0 && s.c > 0 && s.spatial > 0 && !__builtin_mul_overflow(s.n, s.c, &numel) &&
                !__builtin_mul_overflow(numel, s.spatial, &numel);
    }
    template <class Span>
    void size(const char* name, const Span& span, bool per_channel, bool optional) const {
        if (!valid || (optional && span.empty())) return;
        const int64_t want = per_channel ? c : numel;
        if (static_cast<int64_t>(span.size()) != want)
            throw InvalidArgument(std::string(op) + ": " + name + " has " + std::to_string(span.size()) +
                                  " elements; it needs " + std::to_string(want) +
                                  (per_channel ? " (one per channel, shape.c)" : " (shape.n * shape.c * shape.spatial)") +
                                  (optional ? " or none (an empty span)" : ""));
    }
};

template <class Span>
auto ptr(const Span& s) { return s.empty() ? nullptr : s.data(); }

}  // namespace

template <class T>
void local_statistics(const Shape& shape, std::span<const T> x, int64_t& count, std::span<double> mean,
                      std::span<double> m2) {
    constexpr const char* op = "bnorm::local_statistics";
    const Expect e(op, shape);
    e.size("x", x, false, false);
    e.size("mean", mean, true, false);
    e.size("m2", m2, true, false);
    const bnorm_desc d = part_desc<T>(op, shape);
    detail::local_statistics(op, &d, ptr(x), &count, ptr(mean), ptr(m2));
}

void merge_statistics(int64_t channels, std::span<const int64_t> counts, std::span<const double> means,
                      std::span<const double> m2s, int64_t& total_count, std::span<double> mean,
                      std::span<double> m2) {
    constexpr const char* op = "bnorm::merge_statistics";
    const auto parts = static_cast<int64_t>(counts.size());
    if (channels >= 1 && parts >= 1) {
        const auto want = static_cast<size_t>(parts * channels);
        if (means.size() != want || m2s.size() != want)
            throw InvalidArgument(std::string(op) + ": means and m2s have " + std::to_string(means.size()) + " and " +
                                  std::to_string(m2s.size()) + " elements; each needs counts.size() * channels = " +
                                  std::to_string(want));
        if (mean.size() != static_cast<size_t>(channels) || m2.size() != static_cast<size_t>(channels))
            throw InvalidArgument(std::string(op) + ": mean and m2 need " + std::to_string(channels) +
                                  " elements each (one per channel)");
    }
    detail::merge_statistics(op, parts, channels, ptr(counts), ptr(means), ptr(m2s), &total_count, ptr(mean), ptr(m2));
}

template <class T>
void normalize_with_statistics(const Shape& shape, const Options& options, const NormalizeArgs<T>& a) {
    constexpr const char* op = "bnorm::normalize_with_statistics";
    const Expect e(op, shape);
    e.size("x", a.x, false, false);
    e.size("y", a.y, false, false);
    e.size("mean", a.mean, true, false);
    e.size("m2", a.m2, true, false);
    e.size("weight", a.weight, true, true);
    e.size("bias", a.bias, true, true);
    e.size("running_mean", a.running_mean, true, true);
    e.size("running_var", a.running_var, true, true);
    e.size("save_mean", a.save_mean, true, true);
    e.size("save_invstd", a.save_invstd, true, true);
    const bnorm_desc d = part_desc<T>(op, shape);
    const bnorm_options o = detail::to_c_options(options);
    detail::normalize_with_statistics(op, &d, &o, ptr(a.x), ptr(a.weight), ptr(a.bias), a.total_count, ptr(a.mean),
                                      ptr(a.m2), ptr(a.running_mean), ptr(a.running_var), a.num_batches_tracked,
                                      ptr(a.y), ptr(a.save_mean), ptr(a.save_invstd));
}

template <class T>
void backward_reduce(const Shape& shape, const BackwardReduceArgs<T>& a) {
    constexpr const char* op = "bnorm::backward_reduce";
    const Expect e(op, shape);
    e.size("dy", a.dy, false, false);
    e.size("x", a.x, false, false);
    e.size("save_mean", a.save_mean, true, false);
    e.size("save_invstd", a.save_invstd, true, false);
    e.size("sum_dy", a.sum_dy, true, false);
    e.size("sum_dy_xhat", a.sum_dy_xhat, true, false);
    const bnorm_desc d = part_desc<T>(op, shape);
    detail::backward_reduce(op, &d, ptr(a.dy), ptr(a.x), ptr(a.save_mean), ptr(a.save_invstd), ptr(a.sum_dy),
                            ptr(a.sum_dy_xhat));
}

template <class T>
void backward_elementwise(const Shape& shape, const BackwardElementwiseArgs<T>& a) {
    constexpr const char* op = "bnorm::backward_elementwise";
    const Expect e(op, shape);
    e.size("dy", a.dy, false, false);
    e.size("x", a.x, false, false);
    e.size("dx", a.dx, false, false);
    e.size("sum_dy", a.sum_dy, true, false);
    e.size("sum_dy_xhat", a.sum_dy_xhat, true, false);
    e.size("weight", a.weight, true, true);
    e.size("save_mean", a.save_mean, true, false);
    e.size("save_invstd", a.save_invstd, true, false);
    const bnorm_desc d = part_desc<T>(op, shape);
    detail::backward_elementwise(op, &d, ptr(a.dy), ptr(a.x), ptr(a.weight), ptr(a.save_mean), ptr(a.save_invstd),
                                 a.total_count, ptr(a.sum_dy), ptr(a.sum_dy_xhat), ptr(a.dx));
}

#define BNORM_INSTANTIATE(T)                                                                                   \
    template void local_statistics<T>(const Shape&, std::span<const T>, int64_t&, std::span<double>,             \
                                      std::span<double>);                                                      \
    template void normalize_with_statistics<T>(const Shape&, const Options&, const NormalizeArgs<T>&);          \
    template void backward_reduce<T>(const Shape&, const BackwardReduceArgs<T>&);                              \
    template void backward_elementwise<T>(const Shape&, const BackwardElementwiseArgs<T>&);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm
