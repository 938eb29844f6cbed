// demo.cpp: `bnorm demo`, one forward and backward pass of a BatchNorm module on random data,
// printing what each step did.
#include "demo.hpp"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm::app {
namespace {

// Mean and biased variance of channel c of a channels-first or channels-last tensor: for printing.
std::pair<double, double> channel_moments(const std::vector<float>& v, const bnorm::Shape& s, int64_t c) {
    double sum = 0, sq = 0;
    const int64_t m = s.n * s.spatial;
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) {
            const int64_t i = s.layout == bnorm::Layout::channels_first ? (n * s.c + c) * s.spatial + p
                                                                        : (n * s.spatial + p) * s.c + c;
            sum += v[static_cast<size_t>(i)];
        }
    const double mean = sum / static_cast<double>(m);
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) {
            const int64_t i = s.layout == bnorm::Layout::channels_first ? (n * s.c + c) * s.spatial + p
                                                                        : (n * s.spatial + p) * s.c + c;
            sq += (v[static_cast<size_t>(i)] - mean) * (v[static_cast<size_t>(i)] - mean);
        }
    return {mean, sq / static_cast<double>(m)};
}

}  // namespace

int run_demo(const DemoSettings& d) {
    if (d.n * d.spatial < 2) {
        std::fprintf(stderr, "bnorm demo: --n times --spatial must be at least 2 (training needs 2 values per channel)\n");
        return 2;
    }
    const bnorm::Shape shape{d.n, d.c, d.spatial,
                             d.channels_last ? bnorm::Layout::channels_last : bnorm::Layout::channels_first};
    const auto numel = static_cast<size_t>(d.n * d.c * d.spatial);
    std::mt19937 rng(d.seed);
    std::vector<float> x(numel), y(numel), dy(numel), dx(numel);
    // Each channel gets its own offset and scale, so that normalization visibly does something.
    for (size_t i = 0; i < numel; ++i) {
        const int64_t c = d.channels_last ? static_cast<int64_t>(i) % d.c
                                          : (static_cast<int64_t>(i) / d.spatial) % d.c;
        x[i] = static_cast<float>(3.0 * static_cast<double>(c + 1)) +
               static_cast<float>(c + 1) * std::normal_distribution<float>(0.f, 1.f)(rng);
    }
    bnorm::BatchNorm<float> bn({.num_features = d.c});
    std::printf("bnorm %s demo: BatchNorm<float> over x of shape n=%lld c=%lld spatial=%lld (%s), %d thread(s)\n",
                bnorm::version(), static_cast<long long>(d.n), static_cast<long long>(d.c),
                static_cast<long long>(d.spatial), d.channels_last ? "channels-last" : "channels-first",
                bnorm::num_threads());

    bn.forward(shape, x, y);
    std::printf("\n1. training forward: each channel normalized with its batch mean and variance\n");
    std::printf("   %-8s %12s %12s %12s %12s %14s %14s\n", "channel", "x mean", "x var", "y mean", "y var",
                "running_mean", "running_var");
    for (int64_t c = 0; c < d.c; ++c) {
        const auto [xm, xv] = channel_moments(x, shape, c);
        const auto [ym, yv] = channel_moments(y, shape, c);
        std::printf("   %-8lld %12.5f %12.5f %12.2e %12.6f %14.5f %14.5f\n", static_cast<long long>(c), xm, xv,
                    ym, yv, static_cast<double>(bn.running_mean()[static_cast<size_t>(c)]),
                    static_cast<double>(bn.running_var()[static_cast<size_t>(c)]));
    }
    std::printf("   num_batches_tracked = %lld (running = 0.9*running + 0.1*batch, unbiased running_var)\n",
                static_cast<long long>(bn.num_batches_tracked()));

    // Loss L = 1/2 * sum(y - 1)^2, so dL/dy = y - 1.
    double loss = 0;
    for (size_t i = 0; i < numel; ++i) {
        dy[i] = y[i] - 1.0f;
        loss += 0.5 * static_cast<double>(dy[i]) * static_cast<double>(dy[i]);
    }
    bn.backward(shape, x, dy, dx);
    std::printf("\n2. backward of L = 1/2 sum (y - 1)^2 = %.4f\n", loss);
    std::printf("   %-8s %14s %14s %14s\n", "channel", "dL/dgamma", "dL/dbeta", "sum dL/dx");
    for (int64_t c = 0; c < d.c; ++c) {
        const auto [dxm, dxv] = channel_moments(dx, shape, c);
        (void)dxv;
        std::printf("   %-8lld %14.5f %14.5f %14.2e\n", static_cast<long long>(c),
                    static_cast<double>(bn.grad_weight()[static_cast<size_t>(c)]),
                    static_cast<double>(bn.grad_bias()[static_cast<size_t>(c)]),
                    dxm * static_cast<double>(d.n * d.spatial));
    }
    std::printf("   (sum dL/dx per channel is 0: shifting a channel's input does not change its output)\n");

    bn.eval();
    bn.forward(shape, x, y);
    std::printf("\n3. inference forward with the running statistics (after one batch they are still near 0 and 1)\n");
    for (int64_t c = 0; c < d.c; ++c) {
        const auto [ym, yv] = channel_moments(y, shape, c);
        std::printf("   channel %lld: y mean %.4f, y var %.4f\n", static_cast<long long>(c), ym, yv);
    }
    return 0;
}


void add_demo_options(CLI::App* demo, DemoSettings& d) {
    demo->add_option("--n", d.n, "batch size")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    demo->add_option("--c", d.c, "channels")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
    demo->add_option("--spatial", d.spatial, "spatial positions per channel (H*W)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    demo->add_flag("--channels-last", d.channels_last, "use the channels-last (NHWC) layout");
    demo->add_option("--seed", d.seed, "random seed");
}

}  // namespace bnorm::app
