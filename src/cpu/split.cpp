// split.cpp: the production CPU kernels of the split operations (synchronized batch normalization).
//
// Each operation splits its part of the batch into blocks fixed by the shape alone (never by the
// thread count), reduces every block in double, and combines the blocks in block order, so the
// results are bitwise independent of the thread count:
//   local statistics = block (mean, M2) by the corrected two-pass formula, merged with Chan's formula
//   backward reduce  = block sums of dy and dy*(x - mean), added in block order
//   normalize, backward elementwise = one pass with per-channel coefficients
// Channels-last (and (N, C)) data are walked row by row, the inner loop across channels; planar
// channels-first data channel by channel along contiguous runs of `spatial` values.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/split_kernels.hpp"
#include "core/threading.hpp"
#include "cpu/values.hpp"

namespace bnorm::detail {
namespace {

constexpr int64_t kBlockValues = 8192;

// Blocks of a part: interleaved, block b is rows [b*rows, ...) of every channel (one task each);
// planar, block b of channel c is its plane positions [b*kBlockValues, ...) (one task per pair).
struct Blocks {
    Geometry g;
    bool rows_major;
    int64_t size;   // rows or plane positions per block
    int64_t count;  // blocks per channel

    explicit Blocks(const Geometry& geometry) : g(geometry), rows_major(geometry.interleaved()) {
        size = rows_major ? std::max<int64_t>(1, kBlockValues / g.c) : kBlockValues;
        count = (g.per_channel() + size - 1) / size;
    }
    int64_t first(int64_t b) const { return b * size; }
    int64_t last(int64_t b) const { return std::min(g.per_channel(), (b + 1) * size); }
    int64_t tasks() const { return rows_major ? count : count * g.c; }
};

// Calls f(pointer offset, length) for the contiguous runs of channel c's plane positions [i0, i1).
template <class F>
void planar_runs(const Geometry& g, int64_t c, int64_t i0, int64_t i1, F&& f) {
    while (i0 < i1) {
        const int64_t sample = i0 / g.spatial, position = i0 % g.spatial;
        const int64_t length = std::min(g.spatial - position, i1 - i0);
        f((sample * g.c + c) * g.spatial + position, length);
        i0 += length;
    }
}

double* scratch(size_t doubles) {
    thread_local std::vector<double> buffer;
    if (buffer.size() < doubles) buffer.resize(doubles);
    return buffer.data();
}

template <class T>
void local_statistics(const LocalStatisticsArgs<T>& a) {
    const Geometry& g = a.g;
    const int64_t C = g.c;
    if (g.per_channel() == 0) {
        std::fill(a.mean, a.mean + C, 0.0);
        std::fill(a.m2, a.m2 + C, 0.0);
        return;
    }
    const Blocks b(g);
    double* block_mean = scratch(static_cast<size_t>(2 * b.count * C));
    double* block_m2 = block_mean + b.count * C;
    parallel_for(b.tasks(), g.numel(), [&](int64_t task) {
        if (b.rows_major) {
            const int64_t r0 = b.first(task), r1 = b.last(task);
            double* mu = block_mean + task * C;
            double* sq = block_m2 + task * C;
            std::fill(mu, mu + C, 0.0);
            std::fill(sq, sq + C, 0.0);
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = 0; c < C; ++c) mu[c] += static_cast<double>(a.x[r * C + c]);
            const double n = static_cast<double>(r1 - r0);
            for (int64_t c = 0; c < C; ++c) mu[c] /= n;
            // Second pass around the block mean; each channel's sum of deviations corrects M2 for
            // the rounding of the mean (Chan, Golub & LeVeque's corrected two-pass algorithm).
            for (int64_t c = 0; c < C; ++c) {
                double squares = 0.0, deviations = 0.0;
                for (int64_t r = r0; r < r1; ++r) {
                    const double d = static_cast<double>(a.x[r * C + c]) - mu[c];
                    squares += d * d;
                    deviations += d;
                }
                sq[c] = squares - deviations * deviations / n;
            }
        } else {
            const int64_t c = task / b.count, k = task % b.count;
            const int64_t i0 = b.first(k), i1 = b.last(k);
            double sum[4] = {};
            planar_runs(g, c, i0, i1, [&](int64_t offset, int64_t length) {
                const T* v = a.x + offset;
                int64_t j = 0;
                for (; j + 4 <= length; j += 4)
                    for (int l = 0; l < 4; ++l) sum[l] += static_cast<double>(v[j + l]);
                for (; j < length; ++j) sum[0] += static_cast<double>(v[j]);
            });
            const double n = static_cast<double>(i1 - i0);
            const double mu = ((sum[0] + sum[1]) + (sum[2] + sum[3])) / n;
            double squares[4] = {}, deviations[4] = {};
            planar_runs(g, c, i0, i1, [&](int64_t offset, int64_t length) {
                const T* v = a.x + offset;
                int64_t j = 0;
                for (; j + 4 <= length; j += 4)
                    for (int l = 0; l < 4; ++l) {
                        const double d = static_cast<double>(v[j + l]) - mu;
                        squares[l] += d * d;
                        deviations[l] += d;
                    }
                for (; j < length; ++j) {
                    const double d = static_cast<double>(v[j]) - mu;
                    squares[0] += d * d;
                    deviations[0] += d;
                }
            });
            const double dev = (deviations[0] + deviations[1]) + (deviations[2] + deviations[3]);
            block_mean[k * C + c] = mu;
            block_m2[k * C + c] = (squares[0] + squares[1]) + (squares[2] + squares[3]) - dev * dev / n;
        }
    });
    // Blocks merged in block order, with the same formula as the merge across processes.
    thread_local std::vector<int64_t> counts;
    counts.resize(static_cast<size_t>(b.count));
    for (int64_t k = 0; k < b.count; ++k) counts[static_cast<size_t>(k)] = b.last(k) - b.first(k);
    int64_t total = 0;
    merge_statistics_kernel(b.count, C, counts.data(), block_mean, block_m2, &total, a.mean, a.m2);
}

template <class T>
void backward_reduce(const BackwardReduceArgs<T>& a) {
    const Geometry& g = a.g;
    const int64_t C = g.c;
    std::fill(a.sum_dy, a.sum_dy + C, 0.0);
    std::fill(a.sum_dy_xhat, a.sum_dy_xhat + C, 0.0);
    if (g.per_channel() == 0) return;
    const Blocks b(g);
    double* block_dy = scratch(static_cast<size_t>(2 * b.count * C));
    double* block_dy_centered = block_dy + b.count * C;
    parallel_for(b.tasks(), 2 * g.numel(), [&](int64_t task) {
        if (b.rows_major) {
            double* s0 = block_dy + task * C;
            double* s1 = block_dy_centered + task * C;
            std::fill(s0, s0 + C, 0.0);
            std::fill(s1, s1 + C, 0.0);
            for (int64_t r = b.first(task); r < b.last(task); ++r)
                for (int64_t c = 0; c < C; ++c) {
                    const double d = static_cast<double>(a.dy[r * C + c]);
                    s0[c] += d;
                    s1[c] += d * (static_cast<double>(a.x[r * C + c]) - static_cast<double>(a.save_mean[c]));
                }
        } else {
            const int64_t c = task / b.count, k = task % b.count;
            const double mu = static_cast<double>(a.save_mean[c]);
            double s0[4] = {}, s1[4] = {};
            planar_runs(g, c, b.first(k), b.last(k), [&](int64_t offset, int64_t length) {
                const T* d = a.dy + offset;
                const T* v = a.x + offset;
                for (int64_t j = 0; j < length; ++j) {
                    const double e = static_cast<double>(d[j]);
                    s0[j & 3] += e;
                    s1[j & 3] += e * (static_cast<double>(v[j]) - mu);
                }
            });
            block_dy[k * C + c] = (s0[0] + s0[1]) + (s0[2] + s0[3]);
            block_dy_centered[k * C + c] = (s1[0] + s1[1]) + (s1[2] + s1[3]);
        }
    });
    for (int64_t k = 0; k < b.count; ++k)
        for (int64_t c = 0; c < C; ++c) {
            a.sum_dy[c] += block_dy[k * C + c];
            a.sum_dy_xhat[c] += block_dy_centered[k * C + c];
        }
    for (int64_t c = 0; c < C; ++c) a.sum_dy_xhat[c] *= static_cast<double>(a.save_invstd[c]);
}

// out = in*scale + (x - center)*slope + shift per channel (scale = 0 when there is no `in`):
// normalize is (x - mean)*gamma*invstd + beta, backward elementwise
// dy*gamma*invstd + (x - mean)*(-gamma*invstd^2*sum_dy_xhat/M) - gamma*invstd*sum_dy/M.
template <class T>
void affine_pass(const Geometry& g, const T* in, const T* x, const T* center, const T* scale, const T* slope,
                 const T* shift, T* out) {
    if (g.per_channel() == 0) return;
    const Blocks b(g);
    const int64_t C = g.c;
    parallel_for(b.tasks(), g.numel(), [&](int64_t task) {
        if (b.rows_major) {
            for (int64_t r = b.first(task); r < b.last(task); ++r) {
                const T* v = x + r * C;
                T* o = out + r * C;
                if (in) {
                    const T* d = in + r * C;
                    for (int64_t c = 0; c < C; ++c) o[c] = d[c] * scale[c] + (v[c] - center[c]) * slope[c] + shift[c];
                } else {
                    for (int64_t c = 0; c < C; ++c) o[c] = (v[c] - center[c]) * slope[c] + shift[c];
                }
            }
        } else {
            const int64_t c = task / b.count, k = task % b.count;
            const T mu = center[c], a = in ? scale[c] : T(0), s = slope[c], t = shift[c];
            planar_runs(g, c, b.first(k), b.last(k), [&](int64_t offset, int64_t length) {
                const T* v = x + offset;
                T* o = out + offset;
                if (in) {
                    const T* d = in + offset;
                    for (int64_t j = 0; j < length; ++j) o[j] = d[j] * a + (v[j] - mu) * s + t;
                } else {
                    for (int64_t j = 0; j < length; ++j) o[j] = (v[j] - mu) * s + t;
                }
            });
        }
    });
}

// Per-channel coefficients of the pass, four arrays of c values of type T, reused across calls.
template <class T>
T* coefficients(int64_t c) {
    thread_local std::vector<T> buffer;
    if (buffer.size() < static_cast<size_t>(4 * c)) buffer.resize(static_cast<size_t>(4 * c));
    return buffer.data();
}

template <class T>
void normalize(const NormalizeArgs<T>& a) {
    const int64_t C = a.g.c;
    const double total = static_cast<double>(a.total_count);
    T* center = coefficients<T>(C);
    T* slope = center + C;
    T* shift = center + 2 * C;
    for (int64_t c = 0; c < C; ++c) {
        const double var = a.m2[c] / total;
        const double invstd = 1.0 / std::sqrt(var + a.eps);
        center[c] = static_cast<T>(a.mean[c]);
        slope[c] = static_cast<T>(param_or(a.weight, c, 1.0) * invstd);
        shift[c] = static_cast<T>(param_or(a.bias, c, 0.0));
        if (a.save_mean) a.save_mean[c] = static_cast<T>(a.mean[c]);
        if (a.save_invstd) a.save_invstd[c] = static_cast<T>(invstd);
        if (a.update.enabled) {
            const double f = a.update.factor;
            const double batch_var = a.update.unbiased ? a.m2[c] / (total - 1.0) : var;
            a.running_mean[c] = static_cast<T>((1.0 - f) * static_cast<double>(a.running_mean[c]) + f * a.mean[c]);
            a.running_var[c] = static_cast<T>((1.0 - f) * static_cast<double>(a.running_var[c]) + f * batch_var);
        }
    }
    affine_pass<T>(a.g, nullptr, a.x, center, nullptr, slope, shift, a.y);
}

template <class T>
void backward_elementwise(const BackwardElementwiseArgs<T>& a) {
    const int64_t C = a.g.c;
    const double total = static_cast<double>(a.total_count);
    T* center = coefficients<T>(C);
    T* scale = center + C;
    T* slope = center + 2 * C;
    T* shift = center + 3 * C;
    for (int64_t c = 0; c < C; ++c) {
        const double invstd = static_cast<double>(a.save_invstd[c]);
        const double gamma_invstd = param_or(a.weight, c, 1.0) * invstd;
        center[c] = a.save_mean[c];
        scale[c] = static_cast<T>(gamma_invstd);
        slope[c] = static_cast<T>(-gamma_invstd * invstd * a.sum_dy_xhat[c] / total);
        shift[c] = static_cast<T>(-gamma_invstd * a.sum_dy[c] / total);
    }
    affine_pass<T>(a.g, a.dy, a.x, center, scale, slope, shift, a.dx);
}

template <class T>
constexpr SplitKernelTable<T> table{local_statistics<T>, normalize<T>, backward_reduce<T>, backward_elementwise<T>};

}  // namespace

const SplitImplementation& split_cpu_implementation() {
    static const SplitImplementation impl{"cpu", table<float>, table<double>};
    return impl;
}

}  // namespace bnorm::detail
