// split_reference.cpp: the reference kernels of the split operations (synchronized batch
// normalization), the oracle of src/cpu/split.cpp. Obvious loops over (channel, sample, position),
// double accumulation, two passes for the variance. Never optimize this file.
#include <cmath>
#include <vector>

#include "core/split_kernels.hpp"
#include "cpu/values.hpp"

namespace bnorm::detail {
namespace {

template <class T>
void local_statistics(const LocalStatisticsArgs<T>& a) {
    const Geometry& g = a.g;
    const double m = static_cast<double>(g.per_channel());
    for (int64_t c = 0; c < g.c; ++c) {
        double sum = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) sum += at(a.x, g, n, c, s);
        const double mean = m > 0 ? sum / m : 0.0;
        double squares = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double d = at(a.x, g, n, c, s) - mean;
                squares += d * d;
            }
        a.mean[c] = mean;
        a.m2[c] = squares;
    }
}

template <class T>
void normalize(const NormalizeArgs<T>& a) {
    const Geometry& g = a.g;
    const double total = static_cast<double>(a.total_count);
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = a.mean[c];
        const double var = a.m2[c] / total;
        const double invstd = 1.0 / std::sqrt(var + a.eps);
        const double gamma = param_or(a.weight, c, 1.0);
        const double beta = param_or(a.bias, c, 0.0);
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s)
                a.y[g.offset(n, c, s)] = static_cast<T>((at(a.x, g, n, c, s) - mean) * invstd * gamma + beta);
        if (a.save_mean) a.save_mean[c] = static_cast<T>(mean);
        if (a.save_invstd) a.save_invstd[c] = static_cast<T>(invstd);
        if (a.update.enabled) {
            const double f = a.update.factor;
            const double batch_var = a.update.unbiased ? a.m2[c] / (total - 1.0) : var;
            a.running_mean[c] = static_cast<T>((1.0 - f) * static_cast<double>(a.running_mean[c]) + f * mean);
            a.running_var[c] = static_cast<T>((1.0 - f) * static_cast<double>(a.running_var[c]) + f * batch_var);
        }
    }
}

template <class T>
void backward_reduce(const BackwardReduceArgs<T>& a) {
    const Geometry& g = a.g;
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = static_cast<double>(a.save_mean[c]);
        const double invstd = static_cast<double>(a.save_invstd[c]);
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double dy = at(a.dy, g, n, c, s);
                sum_dy += dy;
                sum_dy_xhat += dy * (at(a.x, g, n, c, s) - mean) * invstd;
            }
        a.sum_dy[c] = sum_dy;
        a.sum_dy_xhat[c] = sum_dy_xhat;
    }
}

// dx = gamma*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat), M the total count over all parts.
template <class T>
void backward_elementwise(const BackwardElementwiseArgs<T>& a) {
    const Geometry& g = a.g;
    const double total = static_cast<double>(a.total_count);
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = static_cast<double>(a.save_mean[c]);
        const double invstd = static_cast<double>(a.save_invstd[c]);
        const double gamma = param_or(a.weight, c, 1.0);
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                // Read both inputs before the write: dx may alias dy or x, element by element.
                const int64_t i = g.offset(n, c, s);
                const double xhat = (static_cast<double>(a.x[i]) - mean) * invstd;
                const double dy = static_cast<double>(a.dy[i]);
                a.dx[i] = static_cast<T>(gamma * invstd / total * (total * dy - a.sum_dy[c] - xhat * a.sum_dy_xhat[c]));
            }
    }
}

template <class T>
constexpr SplitKernelTable<T> table{local_statistics<T>, normalize<T>, backward_reduce<T>, backward_elementwise<T>};

}  // namespace

void merge_statistics_kernel(int64_t parts, int64_t c, const int64_t* counts, const double* means,
                             const double* m2s, int64_t* total_count, double* mean, double* m2) {
    for (int64_t ch = 0; ch < c; ++ch) {
        mean[ch] = 0.0;
        m2[ch] = 0.0;
    }
    int64_t count_a = 0;
    for (int64_t p = 0; p < parts; ++p) {
        const int64_t count_b = counts[p];
        if (count_b == 0) continue;
        const int64_t count = count_a + count_b;
        const double nb_over_n = static_cast<double>(count_b) / static_cast<double>(count);
        const double na_nb_over_n = static_cast<double>(count_a) * nb_over_n;
        for (int64_t ch = 0; ch < c; ++ch) {
            const double delta = means[p * c + ch] - mean[ch];
            mean[ch] += delta * nb_over_n;
            m2[ch] += m2s[p * c + ch] + delta * delta * na_nb_over_n;
        }
        count_a = count;
    }
    *total_count = count_a;
}

const SplitImplementation& split_reference_implementation() {
    static const SplitImplementation impl{"reference", table<float>, table<double>};
    return impl;
}

}  // namespace bnorm::detail
