// Numerical properties the contract promises beyond agreeing with the reference: robustness to
// large offsets, exact behaviour on constant channels, the paper's scale invariance, results that
// do not depend on the thread count, and in-place operation.
#include <cstring>
#include <span>

#include "common.hpp"

namespace bnorm::test {
namespace {

// Exact mean and biased variance of channel c, in long double with two passes: the yardstick for
// the robustness cases (independent of both kernels).
template <class T>
std::pair<long double, long double> exact_moments(const std::vector<T>& x, const Shape& s, int64_t c) {
    const detail::Geometry g = geometry(s);
    long double sum = 0, sq = 0;
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) sum += static_cast<long double>(x[static_cast<size_t>(g.offset(n, c, p))]);
    const long double m = static_cast<long double>(s.n * s.spatial), mean = sum / m;
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) {
            const long double d = static_cast<long double>(x[static_cast<size_t>(g.offset(n, c, p))]) - mean;
            sq += d * d;
        }
    return {mean, sq / m};
}

// Runs forward_training with eps = 0 and returns the variance it used: 1/save_invstd^2.
template <class T>
std::vector<double> batch_variance(const Shape& s, const std::vector<T>& x) {
    std::vector<T> y(x.size()), sm(static_cast<size_t>(s.c)), si(static_cast<size_t>(s.c));
    forward_training<T>(s, Options{.eps = 0.0}, {.x = x, .y = y, .save_mean = sm, .save_invstd = si});
    std::vector<double> var;
    for (T v : si) var.push_back(1.0 / (static_cast<double>(v) * static_cast<double>(v)));
    return var;
}

template <class T>
void check_large_offset(double offset, double noise, Layout layout) {
    // Several channels, a channel longer than one chunk so that chunk merging is exercised too.
    const Shape s{16, 3, 4099, layout};
    auto x = random_vector<T>(numel(s), 7, 0.0, noise);
    for (auto& v : x) v = static_cast<T>(offset + static_cast<double>(v));
    const auto var = batch_variance<T>(s, x);
    for (int64_t c = 0; c < s.c; ++c) {
        const double want = static_cast<double>(exact_moments(x, s, c).second);
        EXPECT_NEAR(var[static_cast<size_t>(c)] / want, 1.0, 1e-4) << "channel " << c << ": variance "
                                                                  << var[static_cast<size_t>(c)] << ", exact " << want;
    }
}

TEST(Robustness, variance_of_1e6_plus_noise_1e_3_f64_channels_first) { check_large_offset<double>(1e6, 1e-3, Layout::channels_first); }
TEST(Robustness, variance_of_1e6_plus_noise_1e_3_f64_channels_last) { check_large_offset<double>(1e6, 1e-3, Layout::channels_last); }
TEST(Robustness, variance_of_1e4_plus_noise_1_f32_channels_first) { check_large_offset<float>(1e4, 1.0, Layout::channels_first); }
TEST(Robustness, variance_of_1e4_plus_noise_1_f32_channels_last) { check_large_offset<float>(1e4, 1.0, Layout::channels_last); }

// Float accumulation must not lose the variance when the values a sum is shifted by are far from
// the rest: here every 256th value of a plane (the first of a channels-first block of 16 vectors,
// and of every chunk) is an outlier 1e3 away from data whose own spread is 1e-2, so that every
// block's shift is the worst value it could be.
template <class T>
void check_outlier_shifts(Layout layout) {
    const Shape s{16, 3, 4099, layout};
    auto x = random_vector<T>(numel(s), 11, 0.0, 1e-2);
    const detail::Geometry g = geometry(s);
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t c = 0; c < s.c; ++c)
            for (int64_t p = 0; p < s.spatial; p += 256) x[static_cast<size_t>(g.offset(n, c, p))] = T(1e3);
    const auto var = batch_variance<T>(s, x);
    for (int64_t c = 0; c < s.c; ++c) {
        const double want = static_cast<double>(exact_moments(x, s, c).second);
        EXPECT_NEAR(var[static_cast<size_t>(c)] / want, 1.0, 1e-5) << "channel " << c;
    }
}

TEST(Robustness, variance_with_outlying_shift_values_f32_channels_first) { check_outlier_shifts<float>(Layout::channels_first); }
TEST(Robustness, variance_with_outlying_shift_values_f32_channels_last) { check_outlier_shifts<float>(Layout::channels_last); }

// The same for short channels-first planes (at most 16 vectors: 14x14, 7x7), which are summed in
// float across several planes before the sums move into double (kRunsPerFlush): the first value of
// every plane, and so of every such block, and the first value of every chunk (8192 values of a
// channel) are outliers. 64 samples of 196 values: a chunk ends inside sample 41's plane.
template <class T>
void check_short_plane_outliers(int64_t spatial, int64_t channels = 3) {
    const Shape s{64, channels, spatial, Layout::channels_first};
    auto x = random_vector<T>(numel(s), 13, 0.0, 1e-2);
    const detail::Geometry g = geometry(s);
    for (int64_t c = 0; c < s.c; ++c) {
        for (int64_t n = 0; n < s.n; ++n) x[static_cast<size_t>(g.offset(n, c, 0))] = T(1e3);
        for (int64_t i = 0; i < s.n * spatial; i += 8192) x[static_cast<size_t>(g.offset(i / spatial, c, i % spatial))] = T(1e3);
    }
    const auto var = batch_variance<T>(s, x);
    for (int64_t c = 0; c < s.c; ++c) {
        const double want = static_cast<double>(exact_moments(x, s, c).second);
        EXPECT_NEAR(var[static_cast<size_t>(c)] / want, 1.0, 1e-5) << "channel " << c;
    }
}

// One outlier, the first value of each channel (the shift of its first chunk and block), among
// values whose spread is 1e-2: the variance is the outlier's and the rest's, both to be kept.
template <class T>
void check_short_plane_first_outlier(int64_t spatial, int64_t channels = 3) {
    const Shape s{64, channels, spatial, Layout::channels_first};
    auto x = random_vector<T>(numel(s), 17, 0.0, 1e-2);
    const detail::Geometry g = geometry(s);
    for (int64_t c = 0; c < s.c; ++c) x[static_cast<size_t>(g.offset(0, c, 0))] = T(1e2);
    const auto var = batch_variance<T>(s, x);
    for (int64_t c = 0; c < s.c; ++c) {
        const double want = static_cast<double>(exact_moments(x, s, c).second);
        EXPECT_NEAR(var[static_cast<size_t>(c)] / want, 1.0, 1e-5) << "channel " << c;
    }
}

TEST(Robustness, variance_with_outlying_shift_values_f32_short_planes) {
    check_short_plane_outliers<float>(196);
    check_short_plane_outliers<float>(49);
    check_short_plane_outliers<float>(16);
}
TEST(Robustness, variance_with_one_outlier_first_f32_short_planes) {
    check_short_plane_first_outlier<float>(196);
    check_short_plane_first_outlier<float>(49);
}
// Over 4 MB (4.7-5.3 MB in float32) with 64 samples, the statistics of short planes of at least 8
// vectors are summed in memory order, in tasks of 8 samples, each with its own shift per channel
// (in_order_moments, on AVX-512): planes of 196, 130 and 256 values.
constexpr std::pair<int64_t, int64_t> kInOrderPlanes[] = {{196, 96}, {130, 160}, {256, 72}};
TEST(Robustness, variance_with_outlying_shift_values_f32_short_planes_in_memory_order) {
    for (const auto& [spatial, channels] : kInOrderPlanes) check_short_plane_outliers<float>(spatial, channels);
}
TEST(Robustness, variance_with_one_outlier_first_f32_short_planes_in_memory_order) {
    for (const auto& [spatial, channels] : kInOrderPlanes) check_short_plane_first_outlier<float>(spatial, channels);
}
TEST(Robustness, variance_of_1e4_plus_noise_1_f32_short_planes) {
    for (const auto& [spatial, channels] :
         {std::pair<int64_t, int64_t>{196, 3}, {49, 3}, {16, 3}, kInOrderPlanes[0], kInOrderPlanes[1], kInOrderPlanes[2]}) {
        const Shape s{64, channels, spatial, Layout::channels_first};
        auto x = random_vector<float>(numel(s), 19, 0.0, 1.0);
        for (auto& v : x) v = static_cast<float>(1e4 + static_cast<double>(v));
        const auto var = batch_variance<float>(s, x);
        for (int64_t c = 0; c < s.c; ++c) {
            const double want = static_cast<double>(exact_moments(x, s, c).second);
            EXPECT_NEAR(var[static_cast<size_t>(c)] / want, 1.0, 1e-4) << "spatial " << spatial << ", channel " << c;
        }
    }
}

// A constant channel has variance exactly 0: invstd = 1/sqrt(eps), y = beta exactly, the unbiased
// running variance moves towards exactly 0, and the gradient with respect to x is exactly 0
// (x_hat is 0 everywhere).
template <class T>
void check_constant_channel(Layout layout) {
    const Shape s{5, 2, 33, layout};
    std::vector<T> x(static_cast<size_t>(numel(s)));
    const detail::Geometry g = geometry(s);
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) {
            x[static_cast<size_t>(g.offset(n, 0, p))] = T(3.25);
            x[static_cast<size_t>(g.offset(n, 1, p))] = T(-1e3);
        }
    const std::vector<T> weight{T(2), T(3)}, bias{T(0.5), T(-7)};
    std::vector<T> y(x.size()), sm(2), si(2), rm{T(0), T(0)}, rv{T(1), T(1)};
    forward_training<T>(s, Options{.eps = 1e-5, .momentum = 1.0},
                        {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm, .running_var = rv,
                         .save_mean = sm, .save_invstd = si});
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t p = 0; p < s.spatial; ++p) {
            ASSERT_EQ(y[static_cast<size_t>(g.offset(n, 0, p))], T(0.5));
            ASSERT_EQ(y[static_cast<size_t>(g.offset(n, 1, p))], T(-7));
        }
    EXPECT_EQ(sm[0], T(3.25));
    EXPECT_EQ(sm[1], T(-1e3));
    EXPECT_EQ(si[0], static_cast<T>(1.0 / std::sqrt(1e-5)));
    EXPECT_EQ(rv[0], T(0));
    EXPECT_EQ(rv[1], T(0));
    const auto dy = random_vector<T>(numel(s), 3);
    std::vector<T> dx(x.size()), dw(2), db(2);
    backward<T>(s, {.dy = dy, .x = x, .dx = dx, .weight = weight, .save_mean = sm, .save_invstd = si,
                    .dweight = dw, .dbias = db});
    // dx = gamma*invstd*(dy - mean(dy)) for a constant channel: compare with that, not with 0.
    for (int64_t c = 0; c < s.c; ++c) {
        double mean_dy = 0;
        for (int64_t n = 0; n < s.n; ++n)
            for (int64_t p = 0; p < s.spatial; ++p) mean_dy += static_cast<double>(dy[static_cast<size_t>(g.offset(n, c, p))]);
        mean_dy /= static_cast<double>(s.n * s.spatial);
        for (int64_t n = 0; n < s.n; ++n)
            for (int64_t p = 0; p < s.spatial; ++p) {
                const size_t i = static_cast<size_t>(g.offset(n, c, p));
                const double want = static_cast<double>(weight[static_cast<size_t>(c)]) *
                                    static_cast<double>(si[static_cast<size_t>(c)]) *
                                    (static_cast<double>(dy[i]) - mean_dy);
                ASSERT_NEAR(static_cast<double>(dx[i]), want, tolerance<T>() * (1 + std::abs(want)) * 100);
            }
        EXPECT_EQ(dw[static_cast<size_t>(c)], T(0)) << "x_hat is exactly 0, so dweight is exactly 0";
    }
}

TEST(ConstantChannel, variance_is_exactly_zero_and_y_is_beta_f32_nchw) { check_constant_channel<float>(Layout::channels_first); }
TEST(ConstantChannel, variance_is_exactly_zero_and_y_is_beta_f64_nhwc) { check_constant_channel<double>(Layout::channels_last); }

// Ioffe & Szegedy, section 3.3: BN((a*W)u) = BN(Wu) for a > 0; with eps = 0 the outputs agree to
// rounding and the gradient with respect to the layer input scales by 1/a.
template <class T>
void check_scale_invariance(Layout layout) {
    const Shape s{8, 6, 25, layout};
    const auto x = random_vector<T>(numel(s), 5, 0.3, 1.7);
    const auto weight = random_vector<T>(s.c, 6, 1, 0.3), bias = random_vector<T>(s.c, 7);
    const auto dy = random_vector<T>(numel(s), 8);
    for (double a : {0.01, 3.0, 1000.0}) {
        SCOPED_TRACE("a = " + std::to_string(a));
        std::vector<T> ax(x.size());
        for (size_t i = 0; i < x.size(); ++i) ax[i] = static_cast<T>(a * static_cast<double>(x[i]));
        std::vector<T> y1(x.size()), y2(x.size()), sm1(6), si1(6), sm2(6), si2(6);
        forward_training<T>(s, Options{.eps = 0.0}, {.x = x, .y = y1, .weight = weight, .bias = bias, .save_mean = sm1, .save_invstd = si1});
        forward_training<T>(s, Options{.eps = 0.0}, {.x = ax, .y = y2, .weight = weight, .bias = bias, .save_mean = sm2, .save_invstd = si2});
        expect_near(y2, y1, tolerance<T>() * 10, "BN(a*x) vs BN(x)");
        std::vector<T> dx1(x.size()), dx2(x.size());
        backward<T>(s, {.dy = dy, .x = x, .dx = dx1, .weight = weight, .save_mean = sm1, .save_invstd = si1});
        backward<T>(s, {.dy = dy, .x = ax, .dx = dx2, .weight = weight, .save_mean = sm2, .save_invstd = si2});
        for (auto& v : dx2) v = static_cast<T>(a * static_cast<double>(v));
        expect_near(dx2, dx1, tolerance<T>() * 10, "a * dBN(a*x)/d(a*x) vs dBN(x)/dx");
    }
}

TEST(ScaleInvariance, bn_of_scaled_input_equals_bn_of_input_f64_nchw) { check_scale_invariance<double>(Layout::channels_first); }
TEST(ScaleInvariance, bn_of_scaled_input_equals_bn_of_input_f32_nhwc) { check_scale_invariance<float>(Layout::channels_last); }

// Every output of every operation, bitwise, for 1, 2, 3 and 7 threads; shapes large enough that
// the kernels really split the work over threads.
// 16-bit outputs are compared as their bits.
template <class T>
constexpr bool kHalf = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;
template <class T>
using Stored = std::conditional_t<kHalf<T>, uint16_t, T>;

template <class T>
std::vector<T> random_data(int64_t size, uint32_t seed, double mean = 0.0, double stddev = 1.0) {
    if constexpr (kHalf<T>) {
        std::vector<T> out;
        for (float v : random_vector<float>(size, seed, mean, stddev))
            if constexpr (std::is_same_v<T, bfloat16>) out.push_back(to_bfloat16(v));
            else out.push_back(to_float16(v));
        return out;
    } else {
        return random_vector<T>(size, seed, mean, stddev);
    }
}

template <class T, class P = T>
struct Outputs {
    std::vector<Stored<T>> y, y_inference, dx, dx_inference;
    std::vector<P> save_mean, save_invstd, running_mean, running_var, dweight, dbias, dweight_inference,
        dbias_inference;
    bool operator==(const Outputs&) const = default;
};

// Storage for `size` elements starting `offset` elements past a 64-byte boundary (std::vector's
// own alignment is only malloc's: the kernels' streamed stores need vector-aligned outputs).
template <class T>
struct Placed {
    std::vector<T> storage;
    std::span<T> span;
    Placed(int64_t size, size_t offset) : storage(static_cast<size_t>(size) + offset + 64) {
        const auto address = reinterpret_cast<uintptr_t>(storage.data());
        const size_t first = ((64 - address % 64) % 64) / sizeof(T) + offset;
        span = std::span<T>(storage.data() + first, static_cast<size_t>(size));
    }
    Placed(const std::vector<T>& values, size_t offset) : Placed(static_cast<int64_t>(values.size()), offset) {
        std::copy(values.begin(), values.end(), span.begin());
    }
    std::vector<Stored<T>> values() const {
        std::vector<Stored<T>> out;
        for (const T& v : span)
            if constexpr (kHalf<T>) out.push_back(v.bits);
            else out.push_back(v);
        return out;
    }
};

// All four operations, with every tensor `offset` elements past a 64-byte boundary.
template <class T, class P = T>
Outputs<T, P> run_all(const Shape& s, int threads, size_t offset = 0) {
    const int previous = set_num_threads(threads);
    const int64_t C = s.c, N = numel(s);
    const Placed<T> x(random_data<T>(N, 1, 0.5, 2), offset), dy(random_data<T>(N, 2), offset);
    Placed<T> y(N, offset), y_inference(N, offset), dx(N, offset), dx_inference(N, offset);
    const auto weight = random_vector<P>(C, 3), bias = random_vector<P>(C, 4);
    Outputs<T, P> o;
    for (auto* v : {&o.save_mean, &o.save_invstd, &o.dweight, &o.dbias, &o.dweight_inference, &o.dbias_inference})
        v->resize(static_cast<size_t>(C));
    o.running_mean = random_vector<P>(C, 5);
    o.running_var = random_positive<P>(C, 6);
    int64_t counter = 0;
    forward_training<T>(s, Options{}, {.x = x.span, .y = y.span, .weight = weight, .bias = bias,
                                       .running_mean = o.running_mean, .running_var = o.running_var,
                                       .num_batches_tracked = &counter, .save_mean = o.save_mean,
                                       .save_invstd = o.save_invstd});
    forward_inference<T>(s, Options{}, {.x = x.span, .y = y_inference.span, .weight = weight, .bias = bias,
                                        .running_mean = o.running_mean, .running_var = o.running_var});
    backward<T>(s, {.dy = dy.span, .x = x.span, .dx = dx.span, .weight = weight, .save_mean = o.save_mean,
                    .save_invstd = o.save_invstd, .dweight = o.dweight, .dbias = o.dbias});
    backward_inference<T>(s, Options{}, {.dy = dy.span, .x = x.span, .dx = dx_inference.span, .weight = weight,
                                         .running_mean = o.running_mean, .running_var = o.running_var,
                                         .dweight = o.dweight_inference, .dbias = o.dbias_inference});
    o.y = y.values();
    o.y_inference = y_inference.values();
    o.dx = dx.values();
    o.dx_inference = dx_inference.values();
    set_num_threads(previous);
    return o;
}

// (64, 40, 49) and (32, 48, 7): short planes, whose channels-first tasks take groups of channels
// (as many as the thread count leaves: one thread's groups are the largest); (7, 5, 200) and
// (64, 37, 301): planes that the channels-first passes walk in memory order, in vectors aligned to
// the array (tasks of 32 or 27 planes: 27 x 301 values end mid-vector; 7 x 5 x 200 values end the
// array mid-vector), (7, 5, 200) with fewer channels than a task's planes; (300, 7, 17): planes
// of just over a vector. (112, 56, 196) and (1600, 4, 196): over 4 MB with short planes (4.9 and
// 5 MB in float32), whose channels-first training passes run in memory order, the second with
// fewer channels than some thread counts; (56, 256, 196): 11.2 MB per tensor in float32, whose
// walks in memory order stream their outputs (the passes' tensors together over 20 MB). The
// training backward of (112, 56, 196), (56, 256, 196) and (100, 70, 150) is pipelined over groups of
// channels, each thread over a range of groups (pipelined_backward); (100, 70, 150), 4.2 MB in
// float32: groups of 6 channels whose pieces end mid-vector, the last group of 4.
const Shape kThreadShapes[] = {{4, 3, 70001},   {64, 37, 301}, {1024, 257, 1},  {5, 1, 65536},   {64, 40, 49},
                               {32, 48, 7},     {7, 5, 200},   {300, 7, 17},    {112, 56, 196},  {1600, 4, 196},
                               {56, 256, 196},  {100, 70, 150}};

template <class T, class P = T>
void check_thread_independence() {
    for (const Shape& s : in_both_layouts(kThreadShapes)) {
        SCOPED_TRACE(shape_name(s));
        const Outputs<T, P> one = run_all<T, P>(s, 1);
        for (int threads : {2, 3, 7})
            EXPECT_TRUE((run_all<T, P>(s, threads) == one)) << threads << " threads differ from 1";
    }
}

TEST(Threads, results_are_bitwise_identical_for_any_thread_count_f32) { check_thread_independence<float>(); }
TEST(Threads, results_are_bitwise_identical_for_any_thread_count_f64) { check_thread_independence<double>(); }
TEST(Threads, results_are_bitwise_identical_for_any_thread_count_bf16) {
    check_thread_independence<bfloat16, float>();
}
TEST(Threads, results_are_bitwise_identical_for_any_thread_count_f16) { check_thread_independence<float16, float>(); }

// Results do not depend on where the buffers lie: every tensor one element off a 64-byte boundary
// (outputs then not streamed, and the memory-order walks' vectors unaligned to the addresses)
// gives bitwise the same numbers as aligned tensors.
template <class T, class P = T>
void check_alignment_independence() {
    for (const Shape& s : in_both_layouts(kThreadShapes)) {
        SCOPED_TRACE(shape_name(s));
        EXPECT_TRUE((run_all<T, P>(s, 2, 1) == run_all<T, P>(s, 2, 0))) << "unaligned buffers differ";
    }
}
TEST(Alignment, results_do_not_depend_on_buffer_alignment_f32) { check_alignment_independence<float>(); }
TEST(Alignment, results_do_not_depend_on_buffer_alignment_bf16) { check_alignment_independence<bfloat16, float>(); }

// 16-bit channels-first problems beyond the prefetch bound (over 16 MB per tensor) run the training
// backward's two passes over the whole array in memory order (backward_planes_in_order): one task
// per plane of 60 KB (FlatGradients), partial sums merged per channel in plane order. 17 MB per
// tensor: bitwise the same for 1, 2 and 3 threads, and with every tensor one element off a 64-byte
// boundary (the reference comparison of this path is in test_targets_and_half.cpp).
template <class T>
void check_large_16bit_backward() {
    const Shape s{8, 36, (int64_t{17} << 20) / (8 * 36 * 2), Layout::channels_first};
    SCOPED_TRACE(shape_name(s));
    const Outputs<T, float> one = run_all<T, float>(s, 1);
    for (int threads : {2, 3})
        EXPECT_TRUE((run_all<T, float>(s, threads) == one)) << threads << " threads differ from 1";
    EXPECT_TRUE((run_all<T, float>(s, 2, 1) == one)) << "unaligned buffers differ";
}
TEST(Threads, large_16bit_backward_in_memory_order_is_independent_of_threads_bf16) {
    check_large_16bit_backward<bfloat16>();
}
TEST(Threads, large_16bit_backward_in_memory_order_is_independent_of_threads_f16) {
    check_large_16bit_backward<float16>();
}

TEST(Threads, set_num_threads_returns_previous_and_nonpositive_restores_default) {
    const int original = set_num_threads(5);
    EXPECT_EQ(set_num_threads(2), 5);
    EXPECT_EQ(num_threads(), 2);
    set_num_threads(0);
    EXPECT_GE(num_threads(), 1);
    set_num_threads(original);
}

// In place: y = x and dx = dy give the same numbers as separate buffers.
template <class T>
void check_in_place(Layout layout, Shape s = Shape{6, 5, 1111}) {
    s.layout = layout;
    const auto x = random_vector<T>(numel(s), 9, 1, 3), dy = random_vector<T>(numel(s), 10);
    const auto weight = random_vector<T>(s.c, 11);
    std::vector<T> y(x.size()), sm(static_cast<size_t>(s.c)), si(sm.size()), dx(x.size());
    forward_training<T>(s, Options{}, {.x = x, .y = y, .weight = weight, .save_mean = sm, .save_invstd = si});
    backward<T>(s, {.dy = dy, .x = x, .dx = dx, .weight = weight, .save_mean = sm, .save_invstd = si});
    std::vector<T> inout = x;
    forward_training<T>(s, Options{}, {.x = inout, .y = inout, .weight = weight});
    EXPECT_TRUE(inout == y) << "forward in place differs";
    std::vector<T> grad = dy;
    backward<T>(s, {.dy = grad, .x = x, .dx = grad, .weight = weight, .save_mean = sm, .save_invstd = si});
    EXPECT_TRUE(grad == dx) << "backward with dx = dy differs";
    std::vector<T> input = x;
    backward<T>(s, {.dy = dy, .x = input, .dx = input, .weight = weight, .save_mean = sm, .save_invstd = si});
    EXPECT_TRUE(input == dx) << "backward with dx = x differs";
    // Inference mode: y = x, and dx = dy or dx = x with the parameter gradients.
    const auto rm = random_vector<T>(s.c, 12), rv = random_positive<T>(s.c, 13);
    std::vector<T> yi(x.size()), dxi(x.size()), dw(sm.size()), db(sm.size()), dw2(sm.size()), db2(sm.size());
    forward_inference<T>(s, Options{}, {.x = x, .y = yi, .weight = weight, .running_mean = rm, .running_var = rv});
    inout = x;
    forward_inference<T>(s, Options{}, {.x = inout, .y = inout, .weight = weight, .running_mean = rm, .running_var = rv});
    EXPECT_TRUE(inout == yi) << "forward inference in place differs";
    backward_inference<T>(s, Options{}, {.dy = dy, .x = x, .dx = dxi, .weight = weight, .running_mean = rm,
                                         .running_var = rv, .dweight = dw, .dbias = db});
    grad = dy;
    backward_inference<T>(s, Options{}, {.dy = grad, .x = x, .dx = grad, .weight = weight, .running_mean = rm,
                                         .running_var = rv, .dweight = dw2, .dbias = db2});
    EXPECT_TRUE(grad == dxi && dw2 == dw && db2 == db) << "backward in inference mode with dx = dy differs";
    input = x;
    backward_inference<T>(s, Options{}, {.dy = dy, .x = input, .dx = input, .weight = weight, .running_mean = rm,
                                         .running_var = rv, .dweight = dw2, .dbias = db2});
    EXPECT_TRUE(input == dxi && dw2 == dw && db2 == db) << "backward in inference mode with dx = x differs";
}

TEST(InPlace, forward_and_backward_in_place_match_separate_buffers_f32_nchw) { check_in_place<float>(Layout::channels_first); }
TEST(InPlace, forward_and_backward_in_place_match_separate_buffers_f64_nhwc) { check_in_place<double>(Layout::channels_last); }
// Over 4 MB with short planes (4.9 MB): the channels-first training passes write in memory order
// after every channel's statistics (on two threads: the path needs as many channels as threads).
TEST(InPlace, forward_and_backward_in_place_match_separate_buffers_f32_nchw_in_order) {
    const int previous = set_num_threads(2);
    check_in_place<float>(Layout::channels_first, Shape{112, 56, 196});
    set_num_threads(previous);
}
// Planes walked in memory order in vectors aligned to the array (a vector that starts in one plane
// and ends in the next is written after both planes' values are read), with tasks that end
// mid-vector (27 planes of 301 values) and an array that ends mid-vector (7 x 5 x 200).
TEST(InPlace, forward_and_backward_in_place_match_separate_buffers_f32_nchw_planes_in_vectors) {
    const int previous = set_num_threads(2);
    for (const Shape& s : {Shape{64, 37, 301}, Shape{7, 5, 200}, Shape{300, 7, 17}, Shape{100, 70, 150}}) {
        SCOPED_TRACE(shape_name(s));
        check_in_place<float>(Layout::channels_first, s);
    }
    set_num_threads(previous);
}

}  // namespace
}  // namespace bnorm::test
