// The split operations of synchronized batch normalization, in one process: the production
// kernels against their reference twins on odd shapes (C = 1, N = 2, primes, empty parts, a channel
// longer than a block, more channels than a block row), a batch cut into uneven parts (some empty)
// giving the whole batch's forward and backward, the merge's robustness to a large offset, thread
// independence, and the errors.
#include <cstring>
#include <numeric>

#include "common.hpp"
#include "core/split_kernels.hpp"
#include "core/split_ops.hpp"

namespace bnorm::test {
namespace {

std::vector<Shape> odd_shapes() {
    std::vector<Shape> shapes;
    for (Layout l : {Layout::channels_first, Layout::channels_last})
        for (Shape s : {Shape{0, 3, 5}, Shape{1, 1, 1}, Shape{2, 1, 1}, Shape{2, 7, 1}, Shape{3, 1, 13},
                        Shape{13, 5, 31}, Shape{3, 2, 4099}, Shape{29, 300, 1}, Shape{0, 1, 1}}) {
            s.layout = l;
            shapes.push_back(s);
        }
    return shapes;
}

template <class T>
const detail::SplitKernelTable<T>& reference_split() {
    if constexpr (std::is_same_v<T, double>) return detail::split_reference_implementation().f64;
    else return detail::split_reference_implementation().f32;
}

template <class T>
void production_matches_reference(const Shape& s) {
    SCOPED_TRACE(shape_name(s));
    const auto c = static_cast<size_t>(s.c);
    const auto x = random_vector<T>(numel(s), 11, 3.0, 2.0);
    const auto dy = random_vector<T>(numel(s), 12);
    const auto gamma = random_positive<T>(s.c, 13);
    const auto beta = random_vector<T>(s.c, 14);
    const detail::Geometry g = geometry(s);
    const double tol = tolerance<T>();

    // local statistics
    std::vector<double> mean(c), m2(c), ref_mean(c), ref_m2(c);
    int64_t count = -1;
    local_statistics<T>(s, x, count, mean, m2);
    EXPECT_EQ(count, s.n * s.spatial);
    reference_split<T>().local_statistics({g, x.data(), ref_mean.data(), ref_m2.data()});
    expect_near(mean, ref_mean, 1e-12, "mean");
    expect_near(m2, ref_m2, 1e-11, "m2");

    // normalize with statistics of a larger (made-up) batch of which this is a part
    const int64_t total = count + 5;
    for (size_t i = 0; i < c; ++i) m2[i] += 1.0 + static_cast<double>(i);
    std::vector<T> y(x.size()), ref_y(x.size()), rm(c, T(0.5)), rv(c, T(2)), ref_rm = rm, ref_rv = rv;
    std::vector<T> sm(c), si(c), ref_sm(c), ref_si(c);
    int64_t batches = 3;
    normalize_with_statistics<T>(s, Options{.momentum = 0.1},
                                 {.x = x, .y = y, .total_count = total, .mean = mean, .m2 = m2, .weight = gamma,
                                  .bias = beta, .running_mean = rm, .running_var = rv, .num_batches_tracked = &batches,
                                  .save_mean = sm, .save_invstd = si});
    EXPECT_EQ(batches, 4);
    reference_split<T>().normalize({g, 1e-5, {true, 0.1, true}, total, mean.data(), m2.data(), x.data(), gamma.data(),
                                    beta.data(), ref_rm.data(), ref_rv.data(), ref_y.data(), ref_sm.data(), ref_si.data()});
    expect_near(y, ref_y, tol, "y");
    expect_near(rm, ref_rm, tol, "running_mean");
    expect_near(rv, ref_rv, tol, "running_var");
    expect_near(si, ref_si, tol, "save_invstd");

    // backward reduce and elementwise, with made-up global sums
    std::vector<double> sdy(c), sdx(c), ref_sdy(c), ref_sdx(c);
    backward_reduce<T>(s, {.dy = dy, .x = x, .save_mean = sm, .save_invstd = si, .sum_dy = sdy, .sum_dy_xhat = sdx});
    reference_split<T>().backward_reduce({g, dy.data(), x.data(), sm.data(), si.data(), ref_sdy.data(), ref_sdx.data()});
    expect_near(sdy, ref_sdy, 1e-10, "sum_dy");
    expect_near(sdx, ref_sdx, 1e-10, "sum_dy_xhat");
    for (size_t i = 0; i < c; ++i) {
        sdy[i] += 0.25;
        sdx[i] -= 0.5;
    }
    std::vector<T> dx(x.size()), ref_dx(x.size());
    backward_elementwise<T>(s, {.dy = dy, .x = x, .dx = dx, .total_count = total, .sum_dy = sdy, .sum_dy_xhat = sdx,
                                .weight = gamma, .save_mean = sm, .save_invstd = si});
    reference_split<T>().backward_elementwise({g, total, sdy.data(), sdx.data(), dy.data(), x.data(), gamma.data(),
                                               sm.data(), si.data(), ref_dx.data()});
    expect_near(dx, ref_dx, tol, "dx");
}

TEST(SplitOps, production_matches_reference_odd_shapes_f32) {
    for (const Shape& s : odd_shapes()) production_matches_reference<float>(s);
}
TEST(SplitOps, production_matches_reference_odd_shapes_f64) {
    for (const Shape& s : odd_shapes()) production_matches_reference<double>(s);
}

// Copies samples [n0, n1) of x (shape s) into a part of shape {n1 - n0, c, spatial}.
template <class T>
std::vector<T> samples(const std::vector<T>& x, const Shape& s, int64_t n0, int64_t n1) {
    const int64_t per_sample = s.c * s.spatial;  // both layouts keep a sample contiguous
    return std::vector<T>(x.begin() + n0 * per_sample, x.begin() + n1 * per_sample);
}

// The whole batch's forward_training and backward, from uneven parts (some empty) through the
// split operations: what SyncBatchNorm does across processes.
template <class T>
void parts_give_the_whole_batch(Layout layout) {
    const Shape whole{23, 4, 7, layout};
    const std::vector<int64_t> cuts = {0, 0, 1, 1, 12, 21, 23};  // parts of 0, 1, 0, 11, 9, 2 samples
    const auto c = static_cast<size_t>(whole.c);
    const auto x = random_vector<T>(numel(whole), 21, -2.0, 3.0);
    const auto dy = random_vector<T>(numel(whole), 22);
    const auto gamma = random_positive<T>(whole.c, 23);
    const auto beta = random_vector<T>(whole.c, 24);
    const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;

    std::vector<T> y(x.size()), rm(c, T(0)), rv(c, T(1)), sm(c), si(c), dx(x.size()), dw(c), db(c);
    int64_t batches = 0;
    forward_training<T>(whole, Options{}, {.x = x, .y = y, .weight = gamma, .bias = beta, .running_mean = rm,
                                           .running_var = rv, .num_batches_tracked = &batches, .save_mean = sm,
                                           .save_invstd = si});
    backward<T>(whole, {.dy = dy, .x = x, .dx = dx, .weight = gamma, .save_mean = sm, .save_invstd = si, .dweight = dw,
                        .dbias = db});

    const size_t parts = cuts.size() - 1;
    std::vector<int64_t> counts(parts);
    std::vector<double> means(parts * c), m2s(parts * c);
    for (size_t p = 0; p < parts; ++p) {
        const Shape s{cuts[p + 1] - cuts[p], whole.c, whole.spatial, layout};
        const auto xp = samples(x, whole, cuts[p], cuts[p + 1]);
        local_statistics<T>(s, xp, counts[p], {means.data() + p * c, c}, {m2s.data() + p * c, c});
    }
    int64_t total = 0;
    std::vector<double> mean(c), m2(c);
    merge_statistics(whole.c, counts, means, m2s, total, mean, m2);
    ASSERT_EQ(total, whole.n * whole.spatial);

    std::vector<T> part_y, part_dx, prm(c, T(0)), prv(c, T(1)), psm(c), psi(c);
    std::vector<double> sum_dy(c, 0.0), sum_dy_xhat(c, 0.0);
    int64_t part_batches = 0;
    for (size_t p = 0; p < parts; ++p) {
        const Shape s{cuts[p + 1] - cuts[p], whole.c, whole.spatial, layout};
        const auto xp = samples(x, whole, cuts[p], cuts[p + 1]);
        std::vector<T> yp(xp.size());
        // Every part updates its own copy of the running statistics; they must all agree.
        std::vector<T> rmp(c, T(0)), rvp(c, T(1));
        int64_t bp = 0;
        normalize_with_statistics<T>(s, Options{}, {.x = xp, .y = yp, .total_count = total, .mean = mean, .m2 = m2,
                                                    .weight = gamma, .bias = beta, .running_mean = rmp,
                                                    .running_var = rvp, .num_batches_tracked = &bp,
                                                    .save_mean = psm, .save_invstd = psi});
        part_y.insert(part_y.end(), yp.begin(), yp.end());
        prm = rmp;
        prv = rvp;
        part_batches = bp;
        const auto dyp = samples(dy, whole, cuts[p], cuts[p + 1]);
        std::vector<double> a(c), b(c);
        backward_reduce<T>(s, {.dy = dyp, .x = xp, .save_mean = psm, .save_invstd = psi, .sum_dy = a, .sum_dy_xhat = b});
        for (size_t i = 0; i < c; ++i) {
            sum_dy[i] += a[i];
            sum_dy_xhat[i] += b[i];
        }
    }
    for (size_t p = 0; p < parts; ++p) {
        const Shape s{cuts[p + 1] - cuts[p], whole.c, whole.spatial, layout};
        const auto xp = samples(x, whole, cuts[p], cuts[p + 1]);
        const auto dyp = samples(dy, whole, cuts[p], cuts[p + 1]);
        std::vector<T> dxp(xp.size());
        backward_elementwise<T>(s, {.dy = dyp, .x = xp, .dx = dxp, .total_count = total, .sum_dy = sum_dy,
                                    .sum_dy_xhat = sum_dy_xhat, .weight = gamma, .save_mean = psm, .save_invstd = psi});
        part_dx.insert(part_dx.end(), dxp.begin(), dxp.end());
    }
    expect_near(part_y, y, tol, "y");
    expect_near(prm, rm, tol, "running_mean");
    expect_near(prv, rv, tol, "running_var");
    EXPECT_EQ(part_batches, batches);
    expect_near(part_dx, dx, tol, "dx");
    std::vector<T> sdy(sum_dy.begin(), sum_dy.end()), sdx(sum_dy_xhat.begin(), sum_dy_xhat.end());
    expect_near(sdy, db, tol, "sum_dy = dbias");
    expect_near(sdx, dw, tol, "sum_dy_xhat = dweight");
}

TEST(SplitOps, uneven_parts_with_empty_ones_give_the_whole_batch_f64_nchw) { parts_give_the_whole_batch<double>(Layout::channels_first); }
TEST(SplitOps, uneven_parts_with_empty_ones_give_the_whole_batch_f64_nhwc) { parts_give_the_whole_batch<double>(Layout::channels_last); }
TEST(SplitOps, uneven_parts_with_empty_ones_give_the_whole_batch_f32_nchw) { parts_give_the_whole_batch<float>(Layout::channels_first); }
TEST(SplitOps, uneven_parts_with_empty_ones_give_the_whole_batch_f32_nhwc) { parts_give_the_whole_batch<float>(Layout::channels_last); }

// 1e6 + N(0, 1e-3) cut into uneven parts: Chan's merge keeps the variance (1e-6) to 1e-4
// relative, where merging sums of x and x^2 would lose every digit (x^2 ~ 1e12, its ulp ~ 1e-4).
TEST(SplitOps, merge_of_1e6_plus_noise_1e_3_in_uneven_parts_keeps_the_variance_f64) {
    const std::vector<int64_t> sizes = {1, 0, 997, 3, 5000, 2, 0, 4000};
    const int64_t n = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
    auto x = random_vector<double>(n, 31, 0.0, 1e-3);
    for (auto& v : x) v += 1e6;
    long double sum = 0, sq = 0;
    for (double v : x) sum += v;
    const long double exact_mean = sum / static_cast<long double>(n);
    for (double v : x) sq += (v - exact_mean) * (v - exact_mean);
    const double exact_var = static_cast<double>(sq / static_cast<long double>(n));
    std::vector<int64_t> counts;
    std::vector<double> means, m2s;
    int64_t begin = 0;
    for (int64_t size : sizes) {
        int64_t count = 0;
        double mean = 0, m2 = 0;
        local_statistics<double>({size, 1, 1}, std::span<const double>(x.data() + begin, static_cast<size_t>(size)), count,
                                 {&mean, 1}, {&m2, 1});
        counts.push_back(count);
        means.push_back(mean);
        m2s.push_back(m2);
        begin += size;
    }
    int64_t total = 0;
    double mean = 0, m2 = 0;
    merge_statistics(1, counts, means, m2s, total, {&mean, 1}, {&m2, 1});
    EXPECT_EQ(total, n);
    EXPECT_NEAR(m2 / static_cast<double>(n) / exact_var, 1.0, 1e-4) << "variance " << m2 / static_cast<double>(n)
                                                                    << ", exact " << exact_var;
}

TEST(SplitOps, results_do_not_depend_on_the_thread_count) {
    for (Shape s : {Shape{3, 2, 40000, Layout::channels_first}, Shape{5000, 37, 1, Layout::channels_last}}) {
        const auto x = random_vector<float>(numel(s), 41, 1.0, 2.0);
        std::vector<double> first_mean, first_m2;
        for (int threads : {1, 2, 3}) {
            const int previous = set_num_threads(threads);
            std::vector<double> mean(static_cast<size_t>(s.c)), m2(static_cast<size_t>(s.c));
            int64_t count = 0;
            local_statistics<float>(s, x, count, mean, m2);
            set_num_threads(previous);
            if (first_mean.empty()) {
                first_mean = mean;
                first_m2 = m2;
            }
            EXPECT_EQ(std::memcmp(mean.data(), first_mean.data(), mean.size() * 8), 0) << threads << " threads";
            EXPECT_EQ(std::memcmp(m2.data(), first_m2.data(), m2.size() * 8), 0) << threads << " threads";
        }
    }
}

// ---- errors ---------------------------------------------------------------------------------
template <class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const InvalidArgument& e) {
        return e.what();
    }
    return "(no exception)";
}

TEST(SplitOpsErrors, a_total_count_of_1_is_the_single_process_error) {
    std::vector<float> x = {1.f}, y(1);
    std::vector<double> mean = {1.0}, m2 = {0.0};
    const std::string m = message_of([&] {
        normalize_with_statistics<float>({1, 1, 1}, Options{}, {.x = x, .y = y, .total_count = 1, .mean = mean, .m2 = m2});
    });
    EXPECT_NE(m.find("bnorm::normalize_with_statistics: training needs more than 1 value per channel"), std::string::npos) << m;
    EXPECT_NE(m.find("total_count = 1"), std::string::npos) << m;
}

TEST(SplitOpsErrors, a_total_count_below_the_part_is_refused) {
    std::vector<float> x(6), y(6);
    std::vector<double> mean = {0.0}, m2 = {1.0};
    const std::string m = message_of([&] {
        normalize_with_statistics<float>({6, 1, 1}, Options{}, {.x = x, .y = y, .total_count = 4, .mean = mean, .m2 = m2});
    });
    EXPECT_NE(m.find("total_count = 4 is less than this part's n*spatial = 6"), std::string::npos) << m;
}

TEST(SplitOpsErrors, c_abi_names_the_bad_argument_and_writes_nothing) {
    const int64_t counts[] = {3, -1};
    const double means[] = {0, 0}, m2s[] = {1, 1};
    int64_t total = 77;
    double mean = 5, m2 = 6;
    EXPECT_EQ(bnorm_merge_statistics(2, 1, counts, means, m2s, &total, &mean, &m2), BNORM_EINVAL);
    EXPECT_NE(std::string(bnorm_last_error()).find("bnorm_merge_statistics: counts[1] = -1 is negative"), std::string::npos)
        << bnorm_last_error();
    EXPECT_EQ(total, 77);
    EXPECT_EQ(mean, 5);
    const bnorm_desc d{BNORM_F32, BNORM_CHANNELS_FIRST, 2, 1, 1};
    int64_t count = 0;
    EXPECT_EQ(bnorm_local_statistics(&d, nullptr, &count, &mean, &m2), BNORM_EINVAL);
    EXPECT_NE(std::string(bnorm_last_error()).find("x is NULL"), std::string::npos) << bnorm_last_error();
    const bnorm_desc empty{BNORM_F32, BNORM_CHANNELS_FIRST, 0, 1, 1};
    EXPECT_EQ(bnorm_local_statistics(&empty, nullptr, &count, &mean, &m2), BNORM_OK) << bnorm_last_error();
    EXPECT_EQ(count, 0);
    const bnorm_desc negative{BNORM_F32, BNORM_CHANNELS_FIRST, -1, 1, 1};
    EXPECT_EQ(bnorm_local_statistics(&negative, nullptr, &count, &mean, &m2), BNORM_EINVAL);
    EXPECT_NE(std::string(bnorm_last_error()).find("desc->n = -1 must be >= 0"), std::string::npos) << bnorm_last_error();
    const bnorm_desc half{BNORM_BF16, BNORM_CHANNELS_FIRST, 2, 1, 1};
    float x[2] = {1, 2};
    EXPECT_EQ(bnorm_local_statistics(&half, x, &count, &mean, &m2), BNORM_EUNSUPPORTED);
    float dx[2];
    const float sm = 0, si = 1;
    const double sdy = 0, sdx = 0;
    EXPECT_EQ(bnorm_backward_elementwise(&d, x, x, nullptr, &sm, &si, 2, &sdy, &sdx, x), BNORM_OK) << bnorm_last_error();
    EXPECT_EQ(bnorm_backward_elementwise(&d, x, dx, nullptr, &sm, &si, 2, &sdy, &sdx, dx + 1), BNORM_EINVAL);
    EXPECT_NE(std::string(bnorm_last_error()).find("dx overlaps"), std::string::npos) << bnorm_last_error();
}

TEST(SplitOpsErrors, cpp_span_sizes_are_checked) {
    std::vector<double> x(6), mean(2), m2(1);
    int64_t count = 0;
    const std::string m = message_of([&] { local_statistics<double>({3, 2, 1}, x, count, mean, m2); });
    EXPECT_NE(m.find("bnorm::local_statistics: m2 has 1 elements; it needs 2"), std::string::npos) << m;
}

}  // namespace
}  // namespace bnorm::test
