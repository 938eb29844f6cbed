// Every operation of the production kernels (through the public C++ API) against the reference
// kernels, over layouts x dtypes x affine/non-affine x tracked/untracked x momentum kinds x
// biased/unbiased running variance, on adversarial shapes: C = 1, S = 1, N = 2, primes, a channel
// larger than a chunk, more channels than a chunk holds.
#include <limits>

#include "common.hpp"

namespace bnorm::test {
namespace {

const Shape kShapes[] = {
    {2, 1, 1},     {2, 3, 1},    {3, 1, 7},     {5, 7, 11},     {1, 3, 17},  {2, 1, 20011},
    {2, 1000, 1},  {7, 13, 97},  {60, 100, 1},  {4, 64, 196},   {3, 17, 8193}, {9, 5, 1000},
    {2, 4097, 3},  {31, 2, 1},   {256, 33, 1},  {2, 2, 2},
};

std::vector<Shape> all_shapes() { return in_both_layouts(kShapes); }

struct Variant {
    bool affine;
    bool tracked;
    std::optional<double> momentum;
    bool unbiased;
    std::string name() const {
        std::string m = momentum ? std::to_string(*momentum) : "cumulative";
        return std::string(affine ? "affine" : "no_affine") + (tracked ? " tracked momentum=" + m : " untracked") +
               (unbiased ? " unbiased" : " biased");
    }
};

std::vector<Variant> variants() {
    std::vector<Variant> out;
    for (bool affine : {true, false}) {
        out.push_back({affine, false, 0.1, true});
        for (std::optional<double> momentum : {std::optional<double>(0.1), std::optional<double>(),
                                               std::optional<double>(0.0), std::optional<double>(-1.2)})
            for (bool unbiased : {true, false}) out.push_back({affine, true, momentum, unbiased});
    }
    return out;
}

class Against : public ::testing::TestWithParam<Shape> {};

// Two consecutive training calls, so that the running statistics and the counter of the second
// call depend on the first (the cumulative average weighs the second batch 1/2).
template <class T>
void check_forward_training(const Shape& shape) {
    const int64_t C = shape.c, N = numel(shape);
    for (const Variant& v : variants()) {
        SCOPED_TRACE(v.name());
        const auto weight = v.affine ? random_vector<T>(C, 11, 1.0, 0.5) : std::vector<T>{};
        const auto bias = v.affine ? random_vector<T>(C, 12) : std::vector<T>{};
        std::vector<T> rm = v.tracked ? random_vector<T>(C, 13) : std::vector<T>{};
        std::vector<T> rv = v.tracked ? random_positive<T>(C, 14) : std::vector<T>{};
        std::vector<T> ref_rm = rm, ref_rv = rv;
        int64_t counter = 3, ref_counter = 3;
        const Options options{.eps = 1e-5, .momentum = v.momentum, .running_var_unbiased = v.unbiased};
        for (uint32_t call = 0; call < 2; ++call) {
            const auto x = random_vector<T>(N, 100 + call, 0.5, 2.0);
            std::vector<T> y(static_cast<size_t>(N)), sm(static_cast<size_t>(C)), si(static_cast<size_t>(C));
            forward_training<T>(shape, options,
                                {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm,
                                 .running_var = rv, .num_batches_tracked = &counter, .save_mean = sm,
                                 .save_invstd = si});
            std::vector<T> ref_y(y.size()), ref_sm(sm.size()), ref_si(si.size());
            detail::RunningUpdate update;
            if (v.tracked) {
                ++ref_counter;
                update = {true, v.momentum ? *v.momentum : 1.0 / static_cast<double>(ref_counter), v.unbiased};
            }
            reference_kernels<T>().forward_training({geometry(shape), 1e-5, update, x.data(), opt(weight),
                                                     opt(bias), opt(ref_rm), opt(ref_rv), ref_y.data(),
                                                     ref_sm.data(), ref_si.data()});
            const double tol = tolerance<T>();
            expect_near(y, ref_y, tol, "y");
            expect_near(sm, ref_sm, tol, "save_mean");
            expect_near(si, ref_si, tol, "save_invstd");
            expect_near(rm, ref_rm, tol, "running_mean");
            expect_near(rv, ref_rv, tol, "running_var");
            EXPECT_EQ(counter, ref_counter) << "num_batches_tracked";
        }
    }
}

template <class T>
void check_forward_inference(const Shape& shape) {
    const int64_t C = shape.c, N = numel(shape);
    for (bool affine : {true, false}) {
        SCOPED_TRACE(affine ? "affine" : "no_affine");
        const auto weight = affine ? random_vector<T>(C, 21, 1.0, 0.5) : std::vector<T>{};
        const auto bias = affine ? random_vector<T>(C, 22) : std::vector<T>{};
        const auto rm = random_vector<T>(C, 23), rv = random_positive<T>(C, 24);
        const auto x = random_vector<T>(N, 25, 0.5, 2.0);
        std::vector<T> y(static_cast<size_t>(N)), ref_y(y.size());
        const Options options{.eps = 1e-3};
        forward_inference<T>(shape, options,
                             {.x = x, .y = y, .weight = weight, .bias = bias, .running_mean = rm, .running_var = rv});
        reference_kernels<T>().forward_inference({geometry(shape), 1e-3, x.data(), opt(weight), opt(bias),
                                                  rm.data(), rv.data(), ref_y.data()});
        expect_near(y, ref_y, tolerance<T>(), "y");
    }
}

template <class T>
void check_backward(const Shape& shape) {
    const int64_t C = shape.c, N = numel(shape);
    const auto x = random_vector<T>(N, 31, 0.5, 2.0);
    const auto dy = random_vector<T>(N, 32);
    // Saved statistics as the forward pass leaves them.
    std::vector<T> sm(static_cast<size_t>(C)), si(static_cast<size_t>(C)), scratch(static_cast<size_t>(N));
    reference_kernels<T>().forward_training({geometry(shape), 1e-5, {}, x.data(), nullptr, nullptr, nullptr,
                                             nullptr, scratch.data(), sm.data(), si.data()});
    for (bool affine : {true, false})
        for (bool want_grads : {true, false}) {
            SCOPED_TRACE(std::string(affine ? "affine" : "no_affine") + (want_grads ? " with dweight/dbias" : " dx only"));
            const auto weight = affine ? random_vector<T>(C, 33, 1.0, 0.5) : std::vector<T>{};
            std::vector<T> dx(static_cast<size_t>(N)), dw, db;
            if (want_grads) dw.assign(static_cast<size_t>(C), T(0)), db.assign(static_cast<size_t>(C), T(0));
            backward<T>(shape, {.dy = dy, .x = x, .dx = dx, .weight = weight, .save_mean = sm,
                                .save_invstd = si, .dweight = dw, .dbias = db});
            std::vector<T> ref_dx(dx.size()), ref_dw(dw.size()), ref_db(db.size());
            reference_kernels<T>().backward({geometry(shape), dy.data(), x.data(), opt(weight), sm.data(), si.data(),
                                             ref_dx.data(), opt(ref_dw), opt(ref_db)});
            expect_near(dx, ref_dx, tolerance<T>(), "dx");
            expect_near(dw, ref_dw, tolerance<T>(), "dweight");
            expect_near(db, ref_db, tolerance<T>(), "dbias");
        }
}

template <class T>
void check_backward_inference(const Shape& shape) {
    const int64_t C = shape.c, N = numel(shape);
    const auto x = random_vector<T>(N, 41, 0.5, 2.0);
    const auto dy = random_vector<T>(N, 42);
    const auto rm = random_vector<T>(C, 43), rv = random_positive<T>(C, 44);
    for (bool affine : {true, false})
        for (bool want_grads : {true, false}) {
            SCOPED_TRACE(std::string(affine ? "affine" : "no_affine") + (want_grads ? " with dweight/dbias" : " dx only"));
            const auto weight = affine ? random_vector<T>(C, 45, 1.0, 0.5) : std::vector<T>{};
            std::vector<T> dx(static_cast<size_t>(N)), dw, db;
            if (want_grads) dw.assign(static_cast<size_t>(C), T(0)), db.assign(static_cast<size_t>(C), T(0));
            backward_inference<T>(shape, Options{.eps = 1e-2},
                                  {.dy = dy, .x = x, .dx = dx, .weight = weight, .running_mean = rm,
                                   .running_var = rv, .dweight = dw, .dbias = db});
            std::vector<T> ref_dx(dx.size()), ref_dw(dw.size()), ref_db(db.size());
            reference_kernels<T>().backward_inference({geometry(shape), 1e-2, dy.data(), x.data(), opt(weight),
                                                       rm.data(), rv.data(), ref_dx.data(), opt(ref_dw), opt(ref_db)});
            expect_near(dx, ref_dx, tolerance<T>(), "dx");
            expect_near(dw, ref_dw, tolerance<T>(), "dweight");
            expect_near(db, ref_db, tolerance<T>(), "dbias");
        }
}

TEST_P(Against, forward_training_matches_reference_f32) { check_forward_training<float>(GetParam()); }
TEST_P(Against, forward_training_matches_reference_f64) { check_forward_training<double>(GetParam()); }
TEST_P(Against, forward_inference_matches_reference_f32) { check_forward_inference<float>(GetParam()); }
TEST_P(Against, forward_inference_matches_reference_f64) { check_forward_inference<double>(GetParam()); }
TEST_P(Against, backward_matches_reference_f32) { check_backward<float>(GetParam()); }
TEST_P(Against, backward_matches_reference_f64) { check_backward<double>(GetParam()); }
TEST_P(Against, backward_inference_matches_reference_f32) { check_backward_inference<float>(GetParam()); }
TEST_P(Against, backward_inference_matches_reference_f64) { check_backward_inference<double>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Shapes, Against, ::testing::ValuesIn(all_shapes()),
                         [](const auto& param_info) { return shape_name(param_info.param); });

// The reference itself, on a case small enough to check by hand: channel values 1, 2, 3, 4 have
// mean 2.5 and biased variance 1.25, so y = (x - 2.5)/sqrt(1.25 + eps)*gamma + beta, and the
// unbiased running variance after momentum 1 is 5/3.
TEST(Reference, forward_training_matches_hand_computation) {
    const Shape shape{4, 1, 1};
    const std::vector<double> x{1, 2, 3, 4}, weight{2}, bias{0.5};
    std::vector<double> y(4), sm(1), si(1), rm{0}, rv{1};
    reference_kernels<double>().forward_training({geometry(shape), 0.0, {true, 1.0, true}, x.data(), weight.data(),
                                                  bias.data(), rm.data(), rv.data(), y.data(), sm.data(), si.data()});
    const double invstd = 1 / std::sqrt(1.25);
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(y[i], (x[i] - 2.5) * invstd * 2 + 0.5, 1e-15);
    EXPECT_DOUBLE_EQ(sm[0], 2.5);
    EXPECT_DOUBLE_EQ(si[0], invstd);
    EXPECT_DOUBLE_EQ(rm[0], 2.5);
    EXPECT_DOUBLE_EQ(rv[0], 5.0 / 3.0);
}

}  // namespace
}  // namespace bnorm::test
