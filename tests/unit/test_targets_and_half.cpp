// The production kernels on every instruction set this machine has (Highway's AVX-512, AVX2 and
// baseline builds, forced one at a time), for every element type (float32, float64, bfloat16,
// float16), against the float64 reference; the 16-bit formats' conversions, exactly; float16
// inputs whose sum of squares overflows float16; thread-count independence for 16-bit data; problems
// large enough for the prefetching loops.
//
// Tolerances for 16-bit outputs come from the format: the production kernels compute in float32
// and round once, the reference computes in float64 and rounds once, so the two may differ by one
// unit in the last place of the format (2^-8 relative for bfloat16, 2^-11 for float16), plus
// float32 noise. Statistics and parameter gradients are float32 and get float32's tolerance.
#include <hwy/targets.h>

#include <bit>
#include <cstring>
#include <limits>

#include "common.hpp"

namespace bnorm::test {
namespace {

template <class S>
double element_tolerance() {
    if constexpr (std::is_same_v<S, bfloat16>) return 2.0 * 0.00390625;   // 2 ulp of bfloat16
    else if constexpr (std::is_same_v<S, float16>) return 2.0 * 0.00048828125;  // 2 ulp of float16
    else return tolerance<S>();
}

template <class S>
std::vector<S> to_storage(const std::vector<double>& v) {
    std::vector<S> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = detail::from_double<S>(v[i]);
    return out;
}

template <class S>
std::vector<double> widen(const std::vector<S>& v) {
    std::vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = detail::to_double(v[i]);
    return out;
}

template <class S>
const detail::KernelTable<S>& reference() {
    return detail::reference_implementation().table<S>();
}

// All four operations through the public API against the reference, for one shape.
template <class S>
void check_all_operations(const Shape& shape, double x_mean = 0.5, double x_spread = 2.0) {
    using P = param_t<S>;
    const int64_t C = shape.c, N = numel(shape);
    const auto g = geometry(shape);
    const double etol = element_tolerance<S>(), ptol = tolerance<P>() * 4;
    const auto x = to_storage<S>(random_vector<double>(N, 51, x_mean, x_spread));
    const auto dy = to_storage<S>(random_vector<double>(N, 52));
    const auto weight = random_vector<P>(C, 53, 1.0, 0.5), bias = random_vector<P>(C, 54);
    {
        SCOPED_TRACE("forward_training");
        std::vector<P> rm = random_vector<P>(C, 55), rv = random_positive<P>(C, 56), ref_rm = rm, ref_rv = rv;
        std::vector<S> y(static_cast<size_t>(N)), ref_y(y.size());
        std::vector<P> sm(static_cast<size_t>(C)), si(sm.size()), ref_sm(sm.size()), ref_si(sm.size());
        int64_t counter = 0;
        forward_training<S>(shape, Options{}, {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm,
                                               .running_var = rv, .num_batches_tracked = &counter, .save_mean = sm,
                                               .save_invstd = si});
        reference<S>().forward_training({g, 1e-5, {true, 0.1, true}, x.data(), weight.data(), bias.data(),
                                         ref_rm.data(), ref_rv.data(), ref_y.data(), ref_sm.data(), ref_si.data()});
        expect_near(widen(y), widen(ref_y), etol, "y");
        expect_near(sm, ref_sm, ptol, "save_mean");
        expect_near(si, ref_si, ptol, "save_invstd");
        expect_near(rm, ref_rm, ptol, "running_mean");
        expect_near(rv, ref_rv, ptol, "running_var");

        SCOPED_TRACE("backward");
        std::vector<S> dx(y.size()), ref_dx(y.size());
        std::vector<P> dw(sm.size()), db(sm.size()), ref_dw(sm.size()), ref_db(sm.size());
        backward<S>(shape, {.dy = dy, .x = x, .dx = dx, .weight = weight, .save_mean = ref_sm, .save_invstd = ref_si,
                            .dweight = dw, .dbias = db});
        reference<S>().backward({g, dy.data(), x.data(), weight.data(), ref_sm.data(), ref_si.data(), ref_dx.data(),
                                 ref_dw.data(), ref_db.data()});
        // dx is a difference of terms of the size of dy*gamma*invstd: compare relative to that.
        double dx_scale = 0;
        for (size_t i = 0; i < ref_dx.size(); ++i) dx_scale = std::max(dx_scale, std::abs(detail::to_double(ref_dx[i])));
        const double dx_tol = etol * std::max(1.0, dx_scale);
        expect_near(widen(dx), widen(ref_dx), dx_tol, "dx");
        expect_near(dw, ref_dw, ptol * static_cast<double>(N) / 100.0 + ptol, "dweight");
        expect_near(db, ref_db, ptol * static_cast<double>(N) / 100.0 + ptol, "dbias");
    }
    {
        SCOPED_TRACE("forward_inference");
        const auto rm = random_vector<P>(C, 57), rv = random_positive<P>(C, 58);
        std::vector<S> y(static_cast<size_t>(N)), ref_y(y.size());
        forward_inference<S>(shape, Options{}, {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm,
                                                .running_var = rv});
        reference<S>().forward_inference({g, 1e-5, x.data(), weight.data(), bias.data(), rm.data(), rv.data(),
                                          ref_y.data()});
        expect_near(widen(y), widen(ref_y), etol, "y");

        SCOPED_TRACE("backward_inference");
        std::vector<S> dx(y.size()), ref_dx(y.size());
        std::vector<P> dw(static_cast<size_t>(C)), db(dw.size()), ref_dw(dw.size()), ref_db(dw.size());
        backward_inference<S>(shape, Options{}, {.dy = dy, .x = x, .dx = dx, .weight = weight, .running_mean = rm,
                                                 .running_var = rv, .dweight = dw, .dbias = db});
        reference<S>().backward_inference({g, 1e-5, dy.data(), x.data(), weight.data(), rm.data(), rv.data(),
                                           ref_dx.data(), ref_dw.data(), ref_db.data()});
        expect_near(widen(dx), widen(ref_dx), etol, "dx");
        expect_near(dw, ref_dw, ptol * static_cast<double>(N) / 100.0 + ptol, "dweight");
        expect_near(db, ref_db, ptol * static_cast<double>(N) / 100.0 + ptol, "dbias");
    }
}

// C = 8 ... 256: rows of whole vectors on each target's lane count (the channels-last elementwise
// loops with the coefficients in registers: one block of 1 to 4 vectors, or tiles of rows in
// blocks of 4 and a last block of 1 to 3).
const Shape kShapes[] = {{2, 1, 1},  {3, 5, 7},   {2, 1, 20011}, {60, 100, 1}, {4, 64, 196},
                         {3, 17, 8193}, {2, 4097, 3}, {31, 2, 1},  {256, 33, 1}, {2, 3, 37},
                         {3, 8, 4},  {2, 12, 5},  {7, 16, 3},    {5, 32, 9},   {3, 48, 5},
                         {6, 80, 3}, {3, 112, 5}, {70, 256, 1}};

std::vector<Shape> shapes() { return in_both_layouts(kShapes); }

// The Highway targets compiled into libbnorm (src/cpu/batch_norm.cpp: AVX-512, AVX2 and the
// baseline, which is HWY_SCALAR with GCC < 12.3) that this machine supports, best first. A target
// the machine lacks is not run, and the test's name list shows which ran.
std::vector<int64_t> targets() {
    std::vector<int64_t> out;
    for (int64_t t : {int64_t{HWY_AVX3}, int64_t{HWY_AVX2}, int64_t{HWY_SCALAR}})
        if ((hwy::SupportedTargets() & t) != 0 || t == HWY_SCALAR) out.push_back(t);
    return out;
}

// Forces one target for the scope (Highway's test hook), then restores the machine's best.
class ForcedTarget {
public:
    explicit ForcedTarget(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
    ~ForcedTarget() { hwy::SetSupportedTargetsForTest(0); }
    ForcedTarget(const ForcedTarget&) = delete;
    ForcedTarget& operator=(const ForcedTarget&) = delete;
};

class EveryTarget : public ::testing::TestWithParam<int64_t> {};

TEST_P(EveryTarget, the_forced_target_is_the_one_that_runs) {
    ForcedTarget forced(GetParam());
    EXPECT_STREQ(detail::cpu_target_name(), hwy::TargetName(GetParam()));
}

template <class S>
void check_every_shape(int64_t target) {
    ForcedTarget forced(target);
    for (const Shape& s : shapes()) {
        SCOPED_TRACE(shape_name(s));
        check_all_operations<S>(s);
    }
}

TEST_P(EveryTarget, all_operations_match_reference_f32) { check_every_shape<float>(GetParam()); }
TEST_P(EveryTarget, all_operations_match_reference_f64) { check_every_shape<double>(GetParam()); }
TEST_P(EveryTarget, all_operations_match_reference_bf16) { check_every_shape<bfloat16>(GetParam()); }
TEST_P(EveryTarget, all_operations_match_reference_f16) { check_every_shape<float16>(GetParam()); }

// 4 to 16 MB per tensor, at least 64 samples, planes of 8 to 16 vectors: the channels-first
// training forward sums the statistics in memory order, in tasks of 8 samples, and writes the
// output in memory order, each thread's range last task first (in_order_moments); the training
// backward writes dx in that order too. (64, 256, 196) is 6.4 MB in 16-bit and 12.8 MB in float32
// (14x14 planes: 12.25 vectors on AVX-512, beyond 16 on AVX2), (64, 352, 100) 4.5 and 9 MB (12.5
// vectors on AVX2, under 8 on AVX-512), (1600, 4, 196) 5 MB in float32, fewer channels than
// threads. The training backward of all but (1600, 4, 196) is pipelined over groups of channels
// (pipelined_backward); (100, 70, 150), 4.2 MB in float32: groups of 6 channels whose pieces end
// mid-vector, the last group of 4.
TEST_P(EveryTarget, short_planes_beyond_the_caches_match_reference) {
    ForcedTarget forced(GetParam());
    const int previous = set_num_threads(2);
    for (const Shape& s : {Shape{64, 256, 196}, Shape{64, 352, 100}, Shape{1600, 4, 196}, Shape{100, 70, 150}}) {
        SCOPED_TRACE(shape_name(s));
        check_all_operations<float>(s);
        check_all_operations<bfloat16>(s);
        check_all_operations<float16>(s);
    }
    set_num_threads(previous);
}

// Values of about 50000 (float16 holds at most 65504): their squares, and their sum, overflow
// float16; the statistics, accumulated in float64, stay finite and right.
TEST_P(EveryTarget, float16_input_whose_sum_of_squares_overflows_float16_gives_finite_right_statistics) {
    ForcedTarget forced(GetParam());
    for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
        const Shape shape{16, 3, 50, layout};
        check_all_operations<float16>(shape, 50000.0, 2000.0);
        const int64_t N = numel(shape);
        const auto x = to_storage<float16>(random_vector<double>(N, 61, 50000.0, 2000.0));
        std::vector<float16> y(x.size());
        std::vector<float> sm(3), si(3);
        forward_training<float16>(shape, Options{}, {.x = x, .y = y, .save_mean = sm, .save_invstd = si});
        for (int c = 0; c < 3; ++c) {
            EXPECT_TRUE(std::isfinite(sm[c]) && std::isfinite(si[c]));
            EXPECT_NEAR(sm[c], 50000.0, 1000.0);
            EXPECT_NEAR(1.0 / si[c], 2000.0, 500.0);  // the standard deviation
        }
        for (const float16 v : y) EXPECT_TRUE(std::isfinite(to_float(v)));
    }
}

// Problems above 16 MB per tensor run the loops compiled with software prefetches (and stream
// their outputs): they must compute the same as the reference too. 17 MB per tensor, on the best
// target (the prefetches are hints and the arithmetic is the same code on every target).
template <class S>
void check_prefetched_problem() {
    const int64_t spatial = (int64_t{17} << 20) / (8 * 20 * static_cast<int64_t>(sizeof(S)));
    for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
        const Shape shape{8, 20, spatial, layout};
        SCOPED_TRACE(shape_name(shape));
        check_all_operations<S>(shape);
    }
    // Channels-last rows of whole vectors (32 channels: 2 or 4 vectors) take the elementwise loop
    // with the coefficients in registers.
    const Shape rows{8, 32, (int64_t{17} << 20) / (8 * 32 * static_cast<int64_t>(sizeof(S))), Layout::channels_last};
    SCOPED_TRACE(shape_name(rows));
    check_all_operations<S>(rows);
}
TEST(LargeProblems, prefetched_loops_match_reference_f32) { check_prefetched_problem<float>(); }
TEST(LargeProblems, prefetched_loops_match_reference_f64) { check_prefetched_problem<double>(); }
TEST(LargeProblems, prefetched_loops_match_reference_bf16) { check_prefetched_problem<bfloat16>(); }
TEST(LargeProblems, prefetched_loops_match_reference_f16) { check_prefetched_problem<float16>(); }

// Channels-first problems of 4 to 16 MB per tensor with planes under 4 KB run the training forward
// and backward as two passes over the whole array in memory order, the first reducing tasks of
// consecutive planes into partial sums merged per channel in task order. About 5 MB per tensor, on
// two threads: 14x14 planes and planes of 3000 bytes; 24 channels (14x14: 32 planes per task, so a
// task adds two planes of some channels into one sum; 3000 bytes: a plane per sum) and 3 channels
// (fewer than the tasks' planes, and than some thread counts).
template <class S>
void check_cached_two_pass_problem() {
    const int previous = set_num_threads(2);
    const int64_t bytes = static_cast<int64_t>(sizeof(S));
    for (const int64_t spatial : {int64_t{196}, 3000 / bytes})
        for (const int64_t c : {int64_t{24}, int64_t{3}}) {
            const int64_t n = (int64_t{5} << 20) / (c * spatial * bytes) + 1;
            const Shape shape{n, c, spatial, Layout::channels_first};
            SCOPED_TRACE(shape_name(shape));
            check_all_operations<S>(shape);
        }
    set_num_threads(previous);
}
TEST(LargeProblems, cached_two_pass_in_order_matches_reference_f32) { check_cached_two_pass_problem<float>(); }
TEST(LargeProblems, cached_two_pass_in_order_matches_reference_f64) { check_cached_two_pass_problem<double>(); }
TEST(LargeProblems, cached_two_pass_in_order_matches_reference_bf16) { check_cached_two_pass_problem<bfloat16>(); }
TEST(LargeProblems, cached_two_pass_in_order_matches_reference_f16) { check_cached_two_pass_problem<float16>(); }

std::string target_name(const ::testing::TestParamInfo<int64_t>& info) { return hwy::TargetName(info.param); }
INSTANTIATE_TEST_SUITE_P(Targets, EveryTarget, ::testing::ValuesIn(targets()), target_name);

// ---- the conversions --------------------------------------------------------------------------

// Round to nearest, ties to even, computed independently: the nearest of the two neighbours in
// the format, found by exhaustive comparison in double.
template <class S>
uint16_t nearest_bits(float v) {
    const double d = v;
    uint16_t best = 0;
    double best_error = std::numeric_limits<double>::infinity();
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const double c = detail::to_double(S{static_cast<uint16_t>(bits)});
        if (!std::isfinite(c)) continue;
        const double e = std::abs(c - d);
        if (e < best_error || (e == best_error && (bits & 1u) == 0 && (best & 1u) == 1)) {
            best_error = e;
            best = static_cast<uint16_t>(bits);
        }
    }
    return best;
}

TEST(Conversions, every_float16_and_bfloat16_widens_exactly_and_rounds_back_to_itself) {
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const float16 h{static_cast<uint16_t>(bits)};
        const bfloat16 b{static_cast<uint16_t>(bits)};
        const float fh = to_float(h), fb = to_float(b);
        if (std::isnan(fh)) EXPECT_TRUE(std::isnan(to_float(to_float16(fh))));
        else EXPECT_EQ(to_float16(fh).bits, bits) << std::hex << bits;
        if (std::isnan(fb)) EXPECT_TRUE(std::isnan(to_float(to_bfloat16(fb))));
        else EXPECT_EQ(to_bfloat16(fb).bits, bits) << std::hex << bits;
    }
    EXPECT_EQ(to_float(float16{0x3c00}), 1.0f);
    EXPECT_EQ(to_float(float16{0x7bff}), 65504.0f);
    EXPECT_EQ(to_float(float16{0x0001}), 5.9604644775390625e-08f);  // the smallest subnormal
    EXPECT_EQ(to_float(bfloat16{0x3f80}), 1.0f);
}

TEST(Conversions, rounding_is_to_nearest_even_including_ties_subnormals_and_overflow) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> exponent(-26.0f, 15.99f);  // within float16's finite range
    std::vector<float> values{0.5f * 5.9604644775390625e-08f,  // a tie between 0 and the smallest subnormal
                              1.5f * 5.9604644775390625e-08f,  // a tie between subnormals 1 and 2
                              65504.0f, 65519.0f, 1.0f + 1.0f / 2048.0f, 1.0f + 3.0f / 2048.0f, 6.103515625e-05f,
                              6.0975551605224609e-05f, -2.5f, 1e-30f};
    for (int i = 0; i < 300; ++i)
        values.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(exponent(rng)));
    // Compared as values: a negative number that rounds to zero gives -0, the search +0.
    for (float v : values) {
        EXPECT_EQ(to_float(to_float16(v)), to_float(float16{nearest_bits<float16>(v)})) << v;
        EXPECT_EQ(to_float(to_bfloat16(v)), to_float(bfloat16{nearest_bits<bfloat16>(v)})) << v;
    }
    EXPECT_TRUE(std::isinf(to_float(to_float16(65520.0f))));  // the boundary ties to the even infinity
    EXPECT_TRUE(std::isinf(to_float(to_float16(1e6f))));
    EXPECT_TRUE(std::isinf(to_float(to_bfloat16(std::numeric_limits<float>::max()))));
    EXPECT_TRUE(std::isnan(to_float(to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
    EXPECT_TRUE(std::isnan(to_float(to_float16(std::numeric_limits<float>::quiet_NaN()))));
}

// The kernels' vectorized stores round like the scalar conversions: a forward pass with gamma 1,
// beta 0 and running statistics (0, 1 - eps) is y = x exactly in float32, so storing float32
// values through inference reproduces to_float16/to_bfloat16 of them.
template <class S>
void check_store_rounding(int64_t target) {
    ForcedTarget forced(target);
    const Shape shape{1, 1, 4099};
    std::vector<float> exact;
    std::mt19937 rng(9);
    std::uniform_real_distribution<float> exponent(-20.0f, 15.0f);
    for (int64_t i = 0; i < shape.spatial; ++i) exact.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(exponent(rng)));
    // Inputs as 16-bit values cannot hold these floats; so instead scale: y = x*scale with x = 1.
    std::vector<S> x(exact.size(), detail::from_double<S>(1.0)), y(exact.size());
    for (size_t i = 0; i < exact.size(); ++i) {
        const Shape one{1, 1, 1};
        const std::vector<float> rm{0.0f}, rv{1.0f}, w{exact[i]};
        forward_inference<S>(one, Options{.eps = 0.0},
                             {.x = std::span(x).subspan(i, 1), .y = std::span(y).subspan(i, 1), .weight = w,
                              .running_mean = rm, .running_var = rv});
        const S want = std::is_same_v<S, float16> ? S{to_float16(exact[i]).bits} : S{to_bfloat16(exact[i]).bits};
        ASSERT_EQ(y[i].bits, want.bits) << exact[i];
    }
}
TEST_P(EveryTarget, vector_stores_round_like_the_scalar_conversions_f16) { check_store_rounding<float16>(GetParam()); }
TEST_P(EveryTarget, vector_stores_round_like_the_scalar_conversions_bf16) { check_store_rounding<bfloat16>(GetParam()); }

// A long run through the vector path (not one element at a time): the values 1..4099 scaled by a
// weight that is not a power of two, compared with the scalar conversion of the float32 product.
template <class S>
void check_vector_store_rounding(int64_t target) {
    ForcedTarget forced(target);
    for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
        const Shape shape{1, 1, 4099, layout};
        std::vector<S> x(static_cast<size_t>(shape.spatial)), y(x.size());
        for (size_t i = 0; i < x.size(); ++i) x[i] = detail::from_double<S>(static_cast<double>(i % 251) - 125.0);
        const std::vector<float> rm{0.0f}, rv{1.0f}, w{0.7071067811865476f};
        forward_inference<S>(shape, Options{.eps = 0.0}, {.x = x, .y = y, .weight = w, .running_mean = rm, .running_var = rv});
        for (size_t i = 0; i < x.size(); ++i) {
            const float product = static_cast<float>(detail::to_double(x[i])) * w[0];
            const uint16_t want = std::is_same_v<S, float16> ? to_float16(product).bits : to_bfloat16(product).bits;
            ASSERT_EQ(y[i].bits, want) << i;
        }
    }
}
TEST_P(EveryTarget, long_runs_round_like_the_scalar_conversions_f16) { check_vector_store_rounding<float16>(GetParam()); }
TEST_P(EveryTarget, long_runs_round_like_the_scalar_conversions_bf16) { check_vector_store_rounding<bfloat16>(GetParam()); }

// Every bfloat16 value (zeros, subnormals, infinities, NaNs) through the vector path, times weights
// that keep it, shrink it into float32's subnormals, or round it: the vector stores (which on
// AVX512-BF16 machines use vcvtneps2bf16 for one vector and vcvtne2ps2bf16 for two, both of which
// flush subnormals) give the scalar conversion. Three paths: a long plane (one run, two vectors to
// a store), short planes in memory order (vectors aligned to the array) and channels-last rows of
// 64 channels (column blocks of four vectors, two to a store).
TEST_P(EveryTarget, every_bfloat16_times_weights_rounds_like_the_scalar_conversion) {
    ForcedTarget forced(GetParam());
    for (const Shape shape : {Shape{1, 1, 65536}, Shape{64, 32, 32}, Shape{1024, 64, 1, Layout::channels_last}}) {
        SCOPED_TRACE(shape_name(shape));
        std::vector<bfloat16> x(65536), y(x.size());
        std::vector<float> xf(x.size()), yf(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
            x[i] = bfloat16{static_cast<uint16_t>(i)};
            xf[i] = to_float(x[i]);
        }
        const auto C = static_cast<size_t>(shape.c);
        for (float weight : {1.0f, 0.7071067811865476f, std::exp2(-20.0f), std::exp2(-120.0f), 3.0e38f}) {
            const std::vector<float> rm(C, 0.0f), rv(C, 1.0f), w(C, weight);
            // The same arithmetic in float32 on this target gives the values before rounding.
            forward_inference<float>(shape, Options{.eps = 0.0},
                                     {.x = xf, .y = yf, .weight = w, .running_mean = rm, .running_var = rv});
            forward_inference<bfloat16>(shape, Options{.eps = 0.0},
                                        {.x = x, .y = y, .weight = w, .running_mean = rm, .running_var = rv});
            for (size_t i = 0; i < x.size(); ++i) {
                if (std::isnan(yf[i])) {
                    ASSERT_TRUE(std::isnan(to_float(y[i]))) << std::hex << i << " x " << weight;
                } else {
                    ASSERT_EQ(y[i].bits, to_bfloat16(yf[i]).bits) << std::hex << i << " x " << weight << ": " << yf[i];
                }
            }
        }
    }
}

// ---- threads -------------------------------------------------------------------------------------

template <class S>
std::vector<uint16_t> training_outputs(const Shape& shape, int threads) {
    const int previous = set_num_threads(threads);
    const auto x = to_storage<S>(random_vector<double>(numel(shape), 71, 1.0, 3.0));
    const auto dy = to_storage<S>(random_vector<double>(numel(shape), 72));
    std::vector<S> y(x.size()), dx(x.size());
    std::vector<float> sm(static_cast<size_t>(shape.c)), si(sm.size()), dw(sm.size()), db(sm.size());
    forward_training<S>(shape, Options{}, {.x = x, .y = y, .save_mean = sm, .save_invstd = si});
    backward<S>(shape, {.dy = dy, .x = x, .dx = dx, .save_mean = sm, .save_invstd = si, .dweight = dw, .dbias = db});
    set_num_threads(previous);
    std::vector<uint16_t> out;
    for (const S& v : y) out.push_back(v.bits);
    for (const S& v : dx) out.push_back(v.bits);
    for (const auto* vec : {&sm, &si, &dw, &db})
        for (float v : *vec) {
            const uint32_t b = std::bit_cast<uint32_t>(v);
            out.push_back(static_cast<uint16_t>(b));
            out.push_back(static_cast<uint16_t>(b >> 16));
        }
    return out;
}

TEST(Threads, sixteen_bit_results_are_bitwise_identical_for_any_thread_count) {
    for (Layout layout : {Layout::channels_first, Layout::channels_last})
        // (64, 40, 160) channels-last: four chunks of 256 KiB of rows, merged across threads.
        // (224, 56, 196) channels-first: 4.9 MB with 14x14 planes, whose training passes run the
        // statistics in groups of channels and the second pass in memory order.
        for (const Shape base : {Shape{8, 3, 9000}, Shape{64, 40, 49}, Shape{64, 40, 160}, Shape{32, 48, 7},
                                 Shape{5000, 24, 1}, Shape{224, 56, 196}}) {
            Shape s = base;
            s.layout = layout;
            SCOPED_TRACE(shape_name(s));
            const auto one_bf16 = training_outputs<bfloat16>(s, 1);
            const auto one_f16 = training_outputs<float16>(s, 1);
            for (int threads : {2, 3, 7}) {
                EXPECT_TRUE(training_outputs<bfloat16>(s, threads) == one_bf16) << threads << " threads";
                EXPECT_TRUE(training_outputs<float16>(s, threads) == one_f16) << threads << " threads";
            }
        }
}

}  // namespace
}  // namespace bnorm::test
