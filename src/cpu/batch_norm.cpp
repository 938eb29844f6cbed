// batch_norm.cpp: the production CPU kernels (threads + loops the compiler vectorizes).
//
// Every operation is one or two reductions over fixed chunks followed by one elementwise pass:
//   forward training  = moments (count, mean, M2 per chunk, merged with Chan's formula) + affine
//   forward inference = affine with scale/shift from the running statistics
//   backward          = sums (sum dy, sum dy*(x - mean)) + elementwise dx
// Chunks depend only on the shape, partial results are merged in chunk order, so the results are
// bitwise independent of the thread count. Accumulation is in double; the variance is computed
// from deviations around each chunk's own mean (never E[x^2] - E[x]^2), so large offsets do not
// cancel.
//
// Two memory orders: "interleaved" ((rows, c) with rows = n*spatial: channels-last, or
// channels-first with spatial 1), vectorized across channels; and "planar" (channels-first,
// spatial > 1), where channel c is n runs of `spatial` contiguous values, vectorized along a run.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernels.hpp"
#include "core/threading.hpp"

namespace bnorm::detail {
namespace {

constexpr int64_t kChunkElements = 8192;  // ~32 KiB of float32: a chunk stays in L1/L2 between passes

// The split of a problem into chunks. Interleaved: chunk k is rows [k*rows, (k+1)*rows) across
// all channels. Planar: chunk k of channel c is plane positions [k*kChunkElements, ...) of c,
// where plane position i is sample i / spatial, position i % spatial.
struct Plan {
    Geometry g;
    bool interleaved;
    int64_t chunk_len;  // rows (interleaved) or plane positions (planar) per chunk
    int64_t chunks;     // chunks per channel

    explicit Plan(const Geometry& geometry) : g(geometry), interleaved(geometry.interleaved()) {
        const int64_t m = g.per_channel();
        chunk_len = interleaved ? std::max<int64_t>(1, kChunkElements / g.c) : kChunkElements;
        chunks = (m + chunk_len - 1) / chunk_len;
    }
    int64_t begin(int64_t k) const { return k * chunk_len; }
    int64_t end(int64_t k) const { return std::min(g.per_channel(), (k + 1) * chunk_len); }
    // Parallel tasks: one per chunk interleaved, one per (channel, chunk) planar.
    int64_t tasks() const { return interleaved ? chunks : chunks * g.c; }
};

// Calls run(offset, length) for each contiguous run of channel c's plane positions [i0, i1).
template <class Run>
void for_each_run(const Geometry& g, int64_t c, int64_t i0, int64_t i1, Run&& run) {
    for (int64_t i = i0; i < i1;) {
        const int64_t sample = i / g.spatial, position = i % g.spatial;
        const int64_t length = std::min(g.spatial - position, i1 - i);
        run((sample * g.c + c) * g.spatial + position, length);
        i += length;
    }
}

// A sum with kLanes independent accumulators, so that the compiler can vectorize it (a single
// accumulator is a chain of dependent additions it may not reorder). Element j of a run always
// goes to lane j % kLanes, so the result depends only on the runs, never on threads.
struct Lanes {
    static constexpr int kLanes = 8;
    double lane[kLanes] = {};

    template <class Value>
    void add(int64_t length, Value&& value) {
        int64_t j = 0;
        for (; j + kLanes <= length; j += kLanes)
            for (int l = 0; l < kLanes; ++l) lane[l] += value(j + l);
        for (; j < length; ++j) lane[j % kLanes] += value(j);
    }
    double total() const {
        return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
};

// Scratch memory of the calling thread, reused across calls: no allocation once warmed up.
double* workspace(size_t doubles) {
    thread_local std::vector<double> buffer;
    if (buffer.size() < doubles) buffer.resize(doubles);
    return buffer.data();
}

// Moments of every (chunk, channel): mean[k*c + ch] and m2[k*c + ch] (sum of squared deviations).
template <class T>
void chunk_moments(const Plan& p, const T* x, double* mean, double* m2) {
    const int64_t C = p.g.c;
    parallel_for(p.tasks(), p.g.numel(), [&](int64_t task) {
        if (p.interleaved) {
            const int64_t k = task, r0 = p.begin(k), r1 = p.end(k);
            double* mu = mean + k * C;
            double* sq = m2 + k * C;
            std::fill(mu, mu + C, 0.0);
            std::fill(sq, sq + C, 0.0);
            for (int64_t r = r0; r < r1; ++r) {
                const T* row = x + r * C;
                for (int64_t c = 0; c < C; ++c) mu[c] += static_cast<double>(row[c]);
            }
            const double count = static_cast<double>(r1 - r0);
            for (int64_t c = 0; c < C; ++c) mu[c] /= count;
            // Deviations around the chunk mean; m2 is corrected below by (sum of deviations)^2/count,
            // which removes the rounding error of the mean itself (the "corrected two-pass" formula).
            for (int64_t c0 = 0; c0 < C; c0 += 256) {
                const int64_t c1 = std::min(C, c0 + 256);
                double correction[256] = {};
                for (int64_t r = r0; r < r1; ++r) {
                    const T* row = x + r * C;
                    for (int64_t c = c0; c < c1; ++c) {
                        const double d = static_cast<double>(row[c]) - mu[c];
                        sq[c] += d * d;
                        correction[c - c0] += d;
                    }
                }
                for (int64_t c = c0; c < c1; ++c)
                    sq[c] -= correction[c - c0] * correction[c - c0] / count;
            }
        } else {
            const int64_t c = task / p.chunks, k = task % p.chunks;
            const int64_t i0 = p.begin(k), i1 = p.end(k);
            Lanes sum;
            for_each_run(p.g, c, i0, i1, [&](int64_t offset, int64_t length) {
                const T* v = x + offset;
                sum.add(length, [&](int64_t j) { return static_cast<double>(v[j]); });
            });
            const double count = static_cast<double>(i1 - i0);
            const double mu = sum.total() / count;
            Lanes sq, correction;
            for_each_run(p.g, c, i0, i1, [&](int64_t offset, int64_t length) {
                const T* v = x + offset;
                sq.add(length, [&](int64_t j) {
                    const double d = static_cast<double>(v[j]) - mu;
                    return d * d;
                });
                correction.add(length, [&](int64_t j) { return static_cast<double>(v[j]) - mu; });
            });
            const double dev = correction.total();
            mean[k * C + c] = mu;
            m2[k * C + c] = sq.total() - dev * dev / count;
        }
    });
}

// Merges the chunk moments of each channel in chunk order with Chan et al.'s parallel formula;
// leaves the result in mean[0..c) and m2[0..c).
void merge_moments(const Plan& p, double* mean, double* m2) {
    const int64_t C = p.g.c;
    double count_a = static_cast<double>(p.end(0) - p.begin(0));
    for (int64_t k = 1; k < p.chunks; ++k) {
        const double count_b = static_cast<double>(p.end(k) - p.begin(k));
        const double count = count_a + count_b;
        const double* mean_b = mean + k * C;
        const double* m2_b = m2 + k * C;
        for (int64_t c = 0; c < C; ++c) {
            const double delta = mean_b[c] - mean[c];
            mean[c] += delta * (count_b / count);
            m2[c] += m2_b[c] + delta * delta * (count_a * count_b / count);
        }
        count_a = count;
    }
}

// Per (chunk, channel): sum_dy[k*c + ch] = sum dy, sum_dy_centered[...] = sum dy*(x - center[ch]).
template <class T>
void chunk_backward_sums(const Plan& p, const T* dy, const T* x, const double* center,
                         double* sum_dy, double* sum_dy_centered) {
    const int64_t C = p.g.c;
    parallel_for(p.tasks(), 2 * p.g.numel(), [&](int64_t task) {
        if (p.interleaved) {
            const int64_t k = task;
            double* s0 = sum_dy + k * C;
            double* s1 = sum_dy_centered + k * C;
            std::fill(s0, s0 + C, 0.0);
            std::fill(s1, s1 + C, 0.0);
            for (int64_t r = p.begin(k); r < p.end(k); ++r) {
                const T* g = dy + r * C;
                const T* v = x + r * C;
                for (int64_t c = 0; c < C; ++c) {
                    const double d = static_cast<double>(g[c]);
                    s0[c] += d;
                    s1[c] += d * (static_cast<double>(v[c]) - center[c]);
                }
            }
        } else {
            const int64_t c = task / p.chunks, k = task % p.chunks;
            Lanes s0, s1;
            const double mu = center[c];
            for_each_run(p.g, c, p.begin(k), p.end(k), [&](int64_t offset, int64_t length) {
                const T* g = dy + offset;
                const T* v = x + offset;
                s0.add(length, [&](int64_t j) { return static_cast<double>(g[j]); });
                s1.add(length, [&](int64_t j) { return static_cast<double>(g[j]) * (static_cast<double>(v[j]) - mu); });
            });
            sum_dy[k * C + c] = s0.total();
            sum_dy_centered[k * C + c] = s1.total();
        }
    });
}

// Adds the chunk sums of each channel in chunk order into sums[0..c).
void merge_sums(const Plan& p, double* sums) {
    const int64_t C = p.g.c;
    for (int64_t k = 1; k < p.chunks; ++k)
        for (int64_t c = 0; c < C; ++c) sums[c] += sums[k * C + c];
}

// out = (x - center[ch])*scale[ch] + shift[ch], or, with dy: out = dy*scale + (x - center)*slope + shift.
// The per-channel coefficients are in the element type, so the inner loop is one or two FMAs.
template <class T, bool kWithGradient>
void elementwise(const Plan& p, const T* x, const T* dy, const T* center, const T* scale,
                 const T* slope, const T* shift, T* out) {
    const int64_t C = p.g.c;
    parallel_for(p.tasks(), p.g.numel(), [&](int64_t task) {
        if (p.interleaved) {
            for (int64_t r = p.begin(task); r < p.end(task); ++r) {
                const T* v = x + r * C;
                T* o = out + r * C;
                if constexpr (kWithGradient) {
                    const T* g = dy + r * C;
                    for (int64_t c = 0; c < C; ++c)
                        o[c] = g[c] * scale[c] + (v[c] - center[c]) * slope[c] + shift[c];
                } else {
                    for (int64_t c = 0; c < C; ++c) o[c] = (v[c] - center[c]) * scale[c] + shift[c];
                }
            }
        } else {
            const int64_t c = task / p.chunks, k = task % p.chunks;
            const T mu = center[c], a = scale[c], b = shift[c];
            const T s = kWithGradient ? slope[c] : T(0);
            for_each_run(p.g, c, p.begin(k), p.end(k), [&](int64_t offset, int64_t length) {
                const T* v = x + offset;
                T* o = out + offset;
                if constexpr (kWithGradient) {
                    const T* g = dy + offset;
                    for (int64_t j = 0; j < length; ++j) o[j] = g[j] * a + (v[j] - mu) * s + b;
                } else {
                    for (int64_t j = 0; j < length; ++j) o[j] = (v[j] - mu) * a + b;
                }
            });
        }
    });
}

template <class T>
double param_or(const T* p, int64_t c, double fallback) {
    return p ? static_cast<double>(p[c]) : fallback;
}

// Workspace layout of one call: `per_chunk` arrays of chunks*c doubles, then 4 arrays of c
// coefficients of type T (stored in double-sized slots so that any T fits).
struct Scratch {
    double* chunk_a;
    double* chunk_b;
    double* center;
    double* coefficient;  // 4*c slots for T-typed coefficients

    template <class T>
    T* coefficients(int64_t i, int64_t c) const {
        return reinterpret_cast<T*>(coefficient) + i * c;
    }
};

Scratch make_scratch(const Plan& p) {
    const size_t per_chunk = static_cast<size_t>(p.chunks * p.g.c);
    const size_t c = static_cast<size_t>(p.g.c);
    double* base = workspace(2 * per_chunk + 5 * c);
    return Scratch{base, base + per_chunk, base + 2 * per_chunk, base + 2 * per_chunk + c};
}

template <class T>
void forward_training(const ForwardTrainingArgs<T>& a) {
    const Plan p(a.g);
    const Scratch w = make_scratch(p);
    chunk_moments(p, a.x, w.chunk_a, w.chunk_b);
    merge_moments(p, w.chunk_a, w.chunk_b);
    const int64_t C = a.g.c;
    const double m = static_cast<double>(a.g.per_channel());
    T* center = w.coefficients<T>(0, C);
    T* scale = w.coefficients<T>(1, C);
    T* shift = w.coefficients<T>(2, C);
    for (int64_t c = 0; c < C; ++c) {
        const double mean = w.chunk_a[c];
        const double var = w.chunk_b[c] / m;
        const double invstd = 1.0 / std::sqrt(var + a.eps);
        center[c] = static_cast<T>(mean);
        scale[c] = static_cast<T>(param_or(a.weight, c, 1.0) * invstd);
        shift[c] = static_cast<T>(param_or(a.bias, c, 0.0));
        if (a.save_mean) a.save_mean[c] = static_cast<T>(mean);
        if (a.save_invstd) a.save_invstd[c] = static_cast<T>(invstd);
        if (a.update.enabled) {
            const double f = a.update.factor;
            const double batch_var = a.update.unbiased ? var * m / (m - 1.0) : var;
            a.running_mean[c] =
                static_cast<T>((1.0 - f) * static_cast<double>(a.running_mean[c]) + f * mean);
            a.running_var[c] =
                static_cast<T>((1.0 - f) * static_cast<double>(a.running_var[c]) + f * batch_var);
        }
    }
    elementwise<T, false>(p, a.x, nullptr, center, scale, nullptr, shift, a.y);
}

// y = x*scale + shift with scale = gamma/sqrt(running_var + eps), shift = beta - running_mean*scale.
template <class T>
void forward_inference(const ForwardInferenceArgs<T>& a) {
    const Plan p(a.g);
    const Scratch w = make_scratch(p);
    const int64_t C = a.g.c;
    T* center = w.coefficients<T>(0, C);
    T* scale = w.coefficients<T>(1, C);
    T* shift = w.coefficients<T>(2, C);
    for (int64_t c = 0; c < C; ++c) {
        const double s =
            param_or(a.weight, c, 1.0) / std::sqrt(static_cast<double>(a.running_var[c]) + a.eps);
        center[c] = T(0);
        scale[c] = static_cast<T>(s);
        shift[c] = static_cast<T>(param_or(a.bias, c, 0.0) - static_cast<double>(a.running_mean[c]) * s);
    }
    elementwise<T, false>(p, a.x, nullptr, center, scale, nullptr, shift, a.y);
}

// dx = gamma*invstd/m*(m*dy - sum_dy - xhat*sum_dy_xhat)
//    = dy*(gamma*invstd) + (x - mean)*(-gamma*invstd^3*sum_dy_centered/m) + (-gamma*invstd*sum_dy/m)
// with sum_dy_xhat = invstd*sum_dy_centered, sum_dy_centered = sum dy*(x - mean).
template <class T>
void backward(const BackwardArgs<T>& a) {
    const Plan p(a.g);
    const Scratch w = make_scratch(p);
    const int64_t C = a.g.c;
    for (int64_t c = 0; c < C; ++c) w.center[c] = static_cast<double>(a.save_mean[c]);
    chunk_backward_sums(p, a.dy, a.x, w.center, w.chunk_a, w.chunk_b);
    merge_sums(p, w.chunk_a);
    merge_sums(p, w.chunk_b);
    const double m = static_cast<double>(a.g.per_channel());
    T* center = w.coefficients<T>(0, C);
    T* scale = w.coefficients<T>(1, C);
    T* slope = w.coefficients<T>(2, C);
    T* shift = w.coefficients<T>(3, C);
    for (int64_t c = 0; c < C; ++c) {
        const double invstd = static_cast<double>(a.save_invstd[c]);
        const double gamma_invstd = param_or(a.weight, c, 1.0) * invstd;
        const double sum_dy = w.chunk_a[c], sum_dy_centered = w.chunk_b[c];
        center[c] = a.save_mean[c];
        scale[c] = static_cast<T>(gamma_invstd);
        slope[c] = static_cast<T>(-gamma_invstd * invstd * invstd * sum_dy_centered / m);
        shift[c] = static_cast<T>(-gamma_invstd * sum_dy / m);
        if (a.dweight) a.dweight[c] = static_cast<T>(sum_dy_centered * invstd);
        if (a.dbias) a.dbias[c] = static_cast<T>(sum_dy);
    }
    elementwise<T, true>(p, a.x, a.dy, center, scale, slope, shift, a.dx);
}

// dx = gamma*dy/sqrt(running_var + eps); dweight, dbias as in training, around running_mean.
template <class T>
void backward_inference(const BackwardInferenceArgs<T>& a) {
    const Plan p(a.g);
    const Scratch w = make_scratch(p);
    const int64_t C = a.g.c;
    for (int64_t c = 0; c < C; ++c) w.center[c] = static_cast<double>(a.running_mean[c]);
    // The sums read dx's inputs, so they run before dx is written (dx may alias dy or x).
    if (a.dweight || a.dbias) {
        chunk_backward_sums(p, a.dy, a.x, w.center, w.chunk_a, w.chunk_b);
        merge_sums(p, w.chunk_a);
        merge_sums(p, w.chunk_b);
    }
    T* scale = w.coefficients<T>(0, C);
    T* zero = w.coefficients<T>(1, C);
    for (int64_t c = 0; c < C; ++c) {
        const double invstd = 1.0 / std::sqrt(static_cast<double>(a.running_var[c]) + a.eps);
        scale[c] = static_cast<T>(param_or(a.weight, c, 1.0) * invstd);
        zero[c] = T(0);
        if (a.dweight) a.dweight[c] = static_cast<T>(w.chunk_b[c] * invstd);
        if (a.dbias) a.dbias[c] = static_cast<T>(w.chunk_a[c]);
    }
    // dx = dy*scale: the affine pass applied to dy with center 0 and shift 0.
    elementwise<T, false>(p, a.dy, nullptr, zero, scale, nullptr, zero, a.dx);
}

template <class T>
constexpr KernelTable<T> table{forward_training<T>, forward_inference<T>, backward<T>,
                               backward_inference<T>};

bool accepts(DType dtype, const Geometry&) { return dtype == DType::f32 || dtype == DType::f64; }

}  // namespace

const Implementation& cpu_implementation() {
    static const Implementation impl{"cpu", accepts, table<float>, table<double>};
    return impl;
}

}  // namespace bnorm::detail
