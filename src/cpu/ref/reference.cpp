// reference.cpp: the reference kernels, the oracle that every other kernel is tested against.
// Obvious loops over (channel, sample, position), everything accumulated in double, two passes
// for the variance. Never optimize this file: its only virtue is being easy to check by eye.
#include <cmath>
#include <vector>

#include "core/kernels.hpp"

namespace bnorm::detail {
namespace {

template <class T>
double at(const T* p, const Geometry& g, int64_t n, int64_t c, int64_t s) {
    return static_cast<double>(p[g.offset(n, c, s)]);
}

template <class T>
double param_or(const T* p, int64_t c, double fallback) {
    return p ? static_cast<double>(p[c]) : fallback;
}

template <class T>
void forward_training(const ForwardTrainingArgs<T>& a) {
    const Geometry& g = a.g;
    const double m = static_cast<double>(g.per_channel());
    for (int64_t c = 0; c < g.c; ++c) {
        double sum = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) sum += at(a.x, g, n, c, s);
        const double mean = sum / m;
        double squares = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double d = at(a.x, g, n, c, s) - mean;
                squares += d * d;
            }
        const double var = squares / m;
        const double invstd = 1.0 / std::sqrt(var + a.eps);
        const double gamma = param_or(a.weight, c, 1.0);
        const double beta = param_or(a.bias, c, 0.0);
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s)
                a.y[g.offset(n, c, s)] =
                    static_cast<T>((at(a.x, g, n, c, s) - mean) * invstd * gamma + beta);
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
}

template <class T>
void forward_inference(const ForwardInferenceArgs<T>& a) {
    const Geometry& g = a.g;
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = static_cast<double>(a.running_mean[c]);
        const double invstd = 1.0 / std::sqrt(static_cast<double>(a.running_var[c]) + a.eps);
        const double gamma = param_or(a.weight, c, 1.0);
        const double beta = param_or(a.bias, c, 0.0);
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s)
                a.y[g.offset(n, c, s)] =
                    static_cast<T>((at(a.x, g, n, c, s) - mean) * invstd * gamma + beta);
    }
}

// dx = gamma*invstd/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)), xhat = (x - mean)*invstd.
template <class T>
void backward(const BackwardArgs<T>& a) {
    const Geometry& g = a.g;
    const double m = static_cast<double>(g.per_channel());
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = static_cast<double>(a.save_mean[c]);
        const double invstd = static_cast<double>(a.save_invstd[c]);
        const double gamma = param_or(a.weight, c, 1.0);
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double dy = at(a.dy, g, n, c, s);
                sum_dy += dy;
                sum_dy_xhat += dy * (at(a.x, g, n, c, s) - mean) * invstd;
            }
        std::vector<double> dx(static_cast<size_t>(g.per_channel()));
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double xhat = (at(a.x, g, n, c, s) - mean) * invstd;
                dx[static_cast<size_t>(n * g.spatial + s)] =
                    gamma * invstd / m * (m * at(a.dy, g, n, c, s) - sum_dy - xhat * sum_dy_xhat);
            }
        // Written after all reads of the channel, so that dx may alias dy or x.
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s)
                a.dx[g.offset(n, c, s)] = static_cast<T>(dx[static_cast<size_t>(n * g.spatial + s)]);
        if (a.dweight) a.dweight[c] = static_cast<T>(sum_dy_xhat);
        if (a.dbias) a.dbias[c] = static_cast<T>(sum_dy);
    }
}

template <class T>
void backward_inference(const BackwardInferenceArgs<T>& a) {
    const Geometry& g = a.g;
    for (int64_t c = 0; c < g.c; ++c) {
        const double mean = static_cast<double>(a.running_mean[c]);
        const double invstd = 1.0 / std::sqrt(static_cast<double>(a.running_var[c]) + a.eps);
        const double gamma = param_or(a.weight, c, 1.0);
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t s = 0; s < g.spatial; ++s) {
                const double dy = at(a.dy, g, n, c, s);
                sum_dy += dy;
                sum_dy_xhat += dy * (at(a.x, g, n, c, s) - mean) * invstd;
                a.dx[g.offset(n, c, s)] = static_cast<T>(gamma * invstd * dy);
            }
        if (a.dweight) a.dweight[c] = static_cast<T>(sum_dy_xhat);
        if (a.dbias) a.dbias[c] = static_cast<T>(sum_dy);
    }
}

template <class T>
constexpr KernelTable<T> table{forward_training<T>, forward_inference<T>, backward<T>,
                               backward_inference<T>};

bool accepts(DType dtype, const Geometry&) { return dtype == DType::f32 || dtype == DType::f64; }

}  // namespace

const Implementation& reference_implementation() {
    static const Implementation impl{"reference", accepts, table<float>, table<double>};
    return impl;
}

}  // namespace bnorm::detail
