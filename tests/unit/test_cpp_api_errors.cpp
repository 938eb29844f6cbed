// test_cpp_api_errors.cpp: the error contract of the C++ API (include/bnorm/bnorm.hpp).
//
// Bad inputs to the four functions and to bnorm::BatchNorm<T> throw bnorm::InvalidArgument
// (a bnorm::Error with status() == BNORM_EINVAL) whose what() names the operation and the bad
// argument, and leave every output, the running statistics and the batch counter bitwise
// unchanged. Every rejection has a positive control: the same call with the argument fixed
// succeeds and writes its outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "common.hpp"

namespace {

using bnorm::Layout;
using bnorm::Options;
using bnorm::Shape;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

static_assert(std::is_base_of_v<bnorm::Error, bnorm::InvalidArgument>);
static_assert(std::is_base_of_v<std::runtime_error, bnorm::Error>);

// Runs f, expects bnorm::InvalidArgument with status BNORM_EINVAL and every word in what().
template <class F>
void expect_invalid(F&& f, const std::vector<std::string>& words) {
    try {
        f();
        ADD_FAILURE() << "no exception; expected bnorm::InvalidArgument naming \"" << words.front() << "\"";
    } catch (const bnorm::InvalidArgument& e) {
        EXPECT_EQ(e.status(), BNORM_EINVAL);
        const std::string what = e.what();
        for (const auto& w : words)
            EXPECT_NE(what.find(w), std::string::npos) << "what() does not name \"" << w << "\": \"" << what << "\"";
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected bnorm::InvalidArgument, got another exception: " << e.what();
    }
}

// A value that no computation produces, for "untouched" checks (compared bitwise).
template <class T>
T sentinel() { return static_cast<T>(12345.0); }

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// The buffers of one problem, n=4 c=3 spatial=5, plus room to pass wrongly sized spans.
template <class T>
struct Data {
    Shape shape{.n = 4, .c = 3, .spatial = 5};
    int64_t numel = 60, c = 3;
    std::vector<T> x = bnorm::test::random_vector<T>(61, 1, 2.0, 3.0);
    std::vector<T> dy = bnorm::test::random_vector<T>(61, 2);
    std::vector<T> weight = bnorm::test::random_positive<T>(4, 3);
    std::vector<T> bias = bnorm::test::random_vector<T>(4, 4);
    std::vector<T> running_mean = bnorm::test::random_vector<T>(4, 5);
    std::vector<T> running_var = bnorm::test::random_positive<T>(4, 6);
    std::vector<T> save_mean = std::vector<T>(4, sentinel<T>());
    std::vector<T> save_invstd = std::vector<T>(4, sentinel<T>());
    std::vector<T> y = std::vector<T>(61, sentinel<T>());
    std::vector<T> dx = std::vector<T>(61, sentinel<T>());
    std::vector<T> dweight = std::vector<T>(4, sentinel<T>());
    std::vector<T> dbias = std::vector<T>(4, sentinel<T>());
    int64_t count = 3;

    // Spans of the right sizes.
    std::span<const T> cx(int64_t k = 0) const { return {x.data(), static_cast<size_t>(numel + k)}; }
    std::span<const T> cdy(int64_t k = 0) const { return {dy.data(), static_cast<size_t>(numel + k)}; }
    std::span<T> sy(int64_t k = 0) { return {y.data(), static_cast<size_t>(numel + k)}; }
    std::span<T> sdx(int64_t k = 0) { return {dx.data(), static_cast<size_t>(numel + k)}; }
    template <class V>
    static auto per_channel(V& v, int64_t c, int64_t k) {
        return std::span(v.data(), static_cast<size_t>(c + k));
    }
    std::span<const T> w(int64_t k = 0) const { return per_channel(weight, c, k); }
    std::span<const T> b(int64_t k = 0) const { return per_channel(bias, c, k); }
    std::span<T> rm(int64_t k = 0) { return per_channel(running_mean, c, k); }
    std::span<T> rv(int64_t k = 0) { return per_channel(running_var, c, k); }
    std::span<const T> crm(int64_t k = 0) const { return per_channel(running_mean, c, k); }
    std::span<const T> crv(int64_t k = 0) const { return per_channel(running_var, c, k); }
    std::span<T> sm(int64_t k = 0) { return per_channel(save_mean, c, k); }
    std::span<T> si(int64_t k = 0) { return per_channel(save_invstd, c, k); }
    std::span<const T> csm(int64_t k = 0) const { return per_channel(save_mean, c, k); }
    std::span<const T> csi(int64_t k = 0) const { return per_channel(save_invstd, c, k); }
    std::span<T> dw(int64_t k = 0) { return per_channel(dweight, c, k); }
    std::span<T> db(int64_t k = 0) { return per_channel(dbias, c, k); }

    // Valid save_mean/save_invstd for the backward (a real training forward fills them).
    void fill_saved() {
        save_mean = bnorm::test::random_vector<T>(4, 7);
        save_invstd = bnorm::test::random_positive<T>(4, 8);
    }

    bnorm::ForwardTrainingArgs<T> training() {
        return {.x = cx(), .y = sy(), .weight = w(), .bias = b(), .running_mean = rm(), .running_var = rv(),
                .num_batches_tracked = &count, .save_mean = sm(), .save_invstd = si()};
    }
    bnorm::ForwardInferenceArgs<T> inference() {
        return {.x = cx(), .y = sy(), .weight = w(), .bias = b(), .running_mean = crm(), .running_var = crv()};
    }
    bnorm::BackwardArgs<T> backward() {
        return {.dy = cdy(), .x = cx(), .dx = sdx(), .weight = w(), .save_mean = csm(), .save_invstd = csi(),
                .dweight = dw(), .dbias = db()};
    }
    bnorm::BackwardInferenceArgs<T> backward_inference() {
        return {.dy = cdy(), .x = cx(), .dx = sdx(), .weight = w(), .running_mean = crm(), .running_var = crv(),
                .dweight = dw(), .dbias = db()};
    }

    // Everything the calls may write, for "untouched" checks.
    struct Outputs {
        std::vector<T> y, dx, running_mean, running_var, save_mean, save_invstd, dweight, dbias;
        int64_t count;
    };
    Outputs outputs() const { return {y, dx, running_mean, running_var, save_mean, save_invstd, dweight, dbias, count}; }
};

template <class T>
void expect_untouched(const typename Data<T>::Outputs& before, const Data<T>& d) {
    EXPECT_TRUE(bitwise_equal(before.y, d.y)) << "y was written";
    EXPECT_TRUE(bitwise_equal(before.dx, d.dx)) << "dx was written";
    EXPECT_TRUE(bitwise_equal(before.running_mean, d.running_mean)) << "running_mean was written";
    EXPECT_TRUE(bitwise_equal(before.running_var, d.running_var)) << "running_var was written";
    EXPECT_TRUE(bitwise_equal(before.save_mean, d.save_mean)) << "save_mean was written";
    EXPECT_TRUE(bitwise_equal(before.save_invstd, d.save_invstd)) << "save_invstd was written";
    EXPECT_TRUE(bitwise_equal(before.dweight, d.dweight)) << "dweight was written";
    EXPECT_TRUE(bitwise_equal(before.dbias, d.dbias)) << "dbias was written";
    EXPECT_EQ(before.count, d.count) << "num_batches_tracked was written";
}

// Expects `call(d)` to throw InvalidArgument naming the words and to leave d's outputs alone.
template <class T, class Call>
void expect_rejected(Data<T>& d, Call&& call, const std::vector<std::string>& words) {
    const auto before = d.outputs();
    expect_invalid([&] { call(d); }, words);
    expect_untouched<T>(before, d);
}

template <class T>
class CppApiErrors : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CppApiErrors, Types);

// ---- positive controls: the valid calls these tests break one argument of ----------------------

TYPED_TEST(CppApiErrors, ValidCallsSucceedAndWriteTheirOutputs) {
    using T = TypeParam;
    Data<T> d;
    auto before = d.outputs();
    ASSERT_NO_THROW(bnorm::forward_training<T>(d.shape, Options{}, d.training()));
    EXPECT_FALSE(bitwise_equal(before.y, d.y));
    EXPECT_FALSE(bitwise_equal(before.running_mean, d.running_mean));
    EXPECT_FALSE(bitwise_equal(before.save_invstd, d.save_invstd));
    EXPECT_EQ(d.count, 4);
    EXPECT_EQ(d.y[60], sentinel<T>()) << "wrote past the span";
    before = d.outputs();
    ASSERT_NO_THROW(bnorm::backward<T>(d.shape, d.backward()));
    EXPECT_FALSE(bitwise_equal(before.dx, d.dx));
    EXPECT_FALSE(bitwise_equal(before.dweight, d.dweight));
    EXPECT_EQ(d.dx[60], sentinel<T>()) << "wrote past the span";

    Data<T> e;
    before = e.outputs();
    ASSERT_NO_THROW(bnorm::forward_inference<T>(e.shape, Options{}, e.inference()));
    EXPECT_FALSE(bitwise_equal(before.y, e.y));
    ASSERT_NO_THROW(bnorm::backward_inference<T>(e.shape, Options{}, e.backward_inference()));
    EXPECT_FALSE(bitwise_equal(before.dx, e.dx));
    EXPECT_FALSE(bitwise_equal(before.dbias, e.dbias));
}

TYPED_TEST(CppApiErrors, EmptyOptionalSpansAreAccepted) {
    using T = TypeParam;
    Data<T> d;
    ASSERT_NO_THROW(bnorm::forward_training<T>(d.shape, Options{}, {.x = d.cx(), .y = d.sy()}));
    EXPECT_EQ(d.count, 3) << "untracked statistics must not count the batch";
    EXPECT_EQ(d.save_mean[0], sentinel<T>());
    d.fill_saved();
    ASSERT_NO_THROW(bnorm::backward<T>(d.shape, {.dy = d.cdy(), .x = d.cx(), .dx = d.sdx(), .save_mean = d.csm(),
                                                 .save_invstd = d.csi()}));
    EXPECT_EQ(d.dweight[0], sentinel<T>());
}

TYPED_TEST(CppApiErrors, CumulativeMomentumWithCounterAndNegativeOrZeroMomentumAreAccepted) {
    using T = TypeParam;
    for (const std::optional<double> momentum : {std::optional<double>{}, std::optional<double>{0.0},
                                                 std::optional<double>{-0.5}}) {
        Data<T> d;
        ASSERT_NO_THROW(bnorm::forward_training<T>(d.shape, Options{.momentum = momentum}, d.training()));
        EXPECT_EQ(d.count, 4);
    }
    Data<T> d;  // cumulative average without tracked statistics needs no counter
    ASSERT_NO_THROW(bnorm::forward_training<T>(d.shape, Options{.momentum = std::nullopt}, {.x = d.cx(), .y = d.sy()}));
}

TYPED_TEST(CppApiErrors, InPlaceYEqualsXIsAccepted) {
    using T = TypeParam;
    Data<T> d;
    ASSERT_NO_THROW(bnorm::forward_training<T>(d.shape, Options{}, {.x = d.cx(), .y = {d.x.data(), 60}}));
    ASSERT_NO_THROW(bnorm::backward<T>(d.shape, {.dy = d.cdy(), .x = d.cx(), .dx = {d.dy.data(), 60},
                                                 .save_mean = d.csm(), .save_invstd = d.csi()}));
}

// ---- forward_training ------------------------------------------------------------------------

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsXWithOneElementTooFew) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.x = v.cx(-1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"bnorm::forward_training", "x has 59 elements", "60"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsYWithOneElementTooMany) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.y = v.sy(1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"y has 61 elements", "60"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsEmptyX) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.x = {};
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"x has 0 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsEmptyY) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.y = {};
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"y has 0 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsWeightWithOneExtraChannel) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.weight = v.w(1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"weight has 4 elements", "3"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsBiasWithOneChannelMissing) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.bias = v.b(-1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"bias has 2 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsRunningMeanWithOneChannelMissing) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.running_mean = v.rm(-1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"running_mean has 2 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsRunningVarWithOneExtraChannel) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.running_var = v.rv(1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"running_var has 4 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsSaveInvstdWithOneChannelMissing) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.save_invstd = v.si(-1);
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"save_invstd has 2 elements"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsRunningMeanWithoutRunningVar) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.running_var = {};
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"running_var", "running_mean"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsShapeNZero) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        bnorm::forward_training<T>(Shape{.n = 0, .c = 3, .spatial = 5}, Options{}, v.training());
    }, {"n = 0"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsShapeCNegative) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        bnorm::forward_training<T>(Shape{.n = 4, .c = -3, .spatial = 5}, Options{}, v.training());
    }, {"c = -3"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsShapeSpatialZero) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        bnorm::forward_training<T>(Shape{.n = 4, .c = 3, .spatial = 0}, Options{}, v.training());
    }, {"spatial = 0"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsShapeOverflowingInt64) {
    using T = TypeParam;
    Data<T> d;
    const int64_t big = int64_t{1} << 22;
    expect_rejected(d, [&](Data<T>& v) {
        bnorm::forward_training<T>(Shape{.n = big, .c = big, .spatial = big}, Options{}, v.training());
    }, {"overflow"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsLayoutOutOfRange) {
    using T = TypeParam;
    Data<T> d;
    Shape shape = d.shape;
    const int bad = 7;
    std::memcpy(&shape.layout, &bad, sizeof bad);  // as a deserialized or FFI-built Shape could hold
    expect_rejected(d, [&](Data<T>& v) { bnorm::forward_training<T>(shape, Options{}, v.training()); }, {"layout"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsOneValuePerChannel) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        const Shape one{.n = 1, .c = 3, .spatial = 1};
        bnorm::forward_training<T>(one, Options{},
                                   {.x = {v.x.data(), 3}, .y = {v.y.data(), 3}, .running_mean = v.rm(),
                                    .running_var = v.rv(), .num_batches_tracked = &v.count});
    }, {"n*spatial = 1"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsNegativeEps) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) { bnorm::forward_training<T>(v.shape, Options{.eps = -1e-5}, v.training()); },
                    {"eps"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsNaNEps) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) { bnorm::forward_training<T>(v.shape, Options{.eps = kNaN}, v.training()); },
                    {"eps"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsInfiniteMomentum) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        bnorm::forward_training<T>(v.shape, Options{.momentum = -kInf}, v.training());
    }, {"momentum"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsCumulativeMomentumWithoutCounter) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.num_batches_tracked = nullptr;
        bnorm::forward_training<T>(v.shape, Options{.momentum = std::nullopt}, a);
    }, {"num_batches_tracked"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsNegativeCounter) {
    using T = TypeParam;
    Data<T> d;
    d.count = -1;
    expect_rejected(d, [](Data<T>& v) { bnorm::forward_training<T>(v.shape, Options{}, v.training()); },
                    {"num_batches_tracked", "-1"});
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsYOverlappingXAtAnOffset) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.y = {v.x.data() + 1, 60};
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"y overlaps x"});
    EXPECT_TRUE(bitwise_equal(d.x, bnorm::test::random_vector<T>(61, 1, 2.0, 3.0))) << "x was written";
}

TYPED_TEST(CppApiErrors, ForwardTrainingRejectsSaveMeanSameAsRunningMean) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.training();
        a.save_mean = v.rm();
        bnorm::forward_training<T>(v.shape, Options{}, a);
    }, {"overlaps", "save_mean"});
}

// ---- forward_inference -----------------------------------------------------------------------

TYPED_TEST(CppApiErrors, ForwardInferenceRejectsEmptyRunningMean) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.inference();
        a.running_mean = {};
        bnorm::forward_inference<T>(v.shape, Options{}, a);
    }, {"bnorm::forward_inference", "running_mean has 0 elements"});
}

TYPED_TEST(CppApiErrors, ForwardInferenceRejectsRunningVarWithOneChannelMissing) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.inference();
        a.running_var = v.crv(-1);
        bnorm::forward_inference<T>(v.shape, Options{}, a);
    }, {"running_var has 2 elements"});
}

TYPED_TEST(CppApiErrors, ForwardInferenceRejectsXWithOneElementTooFew) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.inference();
        a.x = v.cx(-1);
        bnorm::forward_inference<T>(v.shape, Options{}, a);
    }, {"x has 59 elements"});
}

TYPED_TEST(CppApiErrors, ForwardInferenceRejectsInfiniteEps) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) { bnorm::forward_inference<T>(v.shape, Options{.eps = kInf}, v.inference()); },
                    {"eps"});
}

// ---- backward --------------------------------------------------------------------------------

TYPED_TEST(CppApiErrors, BackwardRejectsEmptySaveMean) {
    using T = TypeParam;
    Data<T> d;
    d.fill_saved();
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward();
        a.save_mean = {};
        bnorm::backward<T>(v.shape, a);
    }, {"bnorm::backward", "save_mean has 0 elements"});
}

TYPED_TEST(CppApiErrors, BackwardRejectsDxWithOneElementTooFew) {
    using T = TypeParam;
    Data<T> d;
    d.fill_saved();
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward();
        a.dx = v.sdx(-1);
        bnorm::backward<T>(v.shape, a);
    }, {"dx has 59 elements"});
}

TYPED_TEST(CppApiErrors, BackwardRejectsDweightWithOneExtraChannel) {
    using T = TypeParam;
    Data<T> d;
    d.fill_saved();
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward();
        a.dweight = v.dw(1);
        bnorm::backward<T>(v.shape, a);
    }, {"dweight has 4 elements"});
}

TYPED_TEST(CppApiErrors, BackwardRejectsDweightSameAsDbias) {
    using T = TypeParam;
    Data<T> d;
    d.fill_saved();
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward();
        a.dbias = v.dw();
        bnorm::backward<T>(v.shape, a);
    }, {"overlaps", "dweight", "dbias"});
}

TYPED_TEST(CppApiErrors, BackwardRejectsShapeSpatialNegative) {
    using T = TypeParam;
    Data<T> d;
    d.fill_saved();
    expect_rejected(d, [](Data<T>& v) { bnorm::backward<T>(Shape{.n = 4, .c = 3, .spatial = -5}, v.backward()); },
                    {"spatial = -5"});
}

// ---- backward_inference ----------------------------------------------------------------------

TYPED_TEST(CppApiErrors, BackwardInferenceRejectsEmptyRunningVar) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward_inference();
        a.running_var = {};
        bnorm::backward_inference<T>(v.shape, Options{}, a);
    }, {"bnorm::backward_inference", "running_var has 0 elements"});
}

TYPED_TEST(CppApiErrors, BackwardInferenceRejectsDbiasWithOneChannelMissing) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward_inference();
        a.dbias = v.db(-1);
        bnorm::backward_inference<T>(v.shape, Options{}, a);
    }, {"dbias has 2 elements"});
}

TYPED_TEST(CppApiErrors, BackwardInferenceRejectsEmptyDy) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        auto a = v.backward_inference();
        a.dy = {};
        bnorm::backward_inference<T>(v.shape, Options{}, a);
    }, {"dy has 0 elements"});
}

TYPED_TEST(CppApiErrors, BackwardInferenceRejectsNegativeEps) {
    using T = TypeParam;
    Data<T> d;
    expect_rejected(d, [](Data<T>& v) {
        bnorm::backward_inference<T>(v.shape, Options{.eps = -1.0}, v.backward_inference());
    }, {"eps"});
}

TYPED_TEST(CppApiErrors, InvalidArgumentIsCatchableAsBnormError) {
    using T = TypeParam;
    Data<T> d;
    auto a = d.training();
    a.x = {};
    try {
        bnorm::forward_training<T>(d.shape, Options{}, a);
        FAIL() << "no exception";
    } catch (const bnorm::Error& e) {
        EXPECT_EQ(e.status(), BNORM_EINVAL);
        EXPECT_NE(dynamic_cast<const bnorm::InvalidArgument*>(&e), nullptr);
    }
}

// ---- bnorm::BatchNorm<T> ---------------------------------------------------------------------

template <class T>
class BatchNormErrors : public ::testing::Test {};
TYPED_TEST_SUITE(BatchNormErrors, Types);

template <class T>
using Config = typename bnorm::BatchNorm<T>::Config;

TYPED_TEST(BatchNormErrors, ConstructorRejectsZeroAndNegativeNumFeatures) {
    using T = TypeParam;
    for (const int64_t features : {int64_t{0}, int64_t{-2}})
        expect_invalid([&] { bnorm::BatchNorm<T> bn(Config<T>{.num_features = features}); },
                       {"bnorm::BatchNorm", "num_features = " + std::to_string(features)});
    EXPECT_NO_THROW(bnorm::BatchNorm<T>(Config<T>{.num_features = 1}));
}

TYPED_TEST(BatchNormErrors, ConstructorRejectsNegativeOrNaNEps) {
    using T = TypeParam;
    for (const double eps : {-1e-5, kNaN, kInf})
        expect_invalid([&] { bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3, .eps = eps}); }, {"eps"});
    EXPECT_NO_THROW(bnorm::BatchNorm<T>(Config<T>{.num_features = 3, .eps = 0.0}));
}

TYPED_TEST(BatchNormErrors, ConstructorRejectsInfiniteMomentum) {
    using T = TypeParam;
    for (const double momentum : {kInf, -kInf})
        expect_invalid([&] { bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3, .momentum = momentum}); },
                       {"momentum"});
    EXPECT_NO_THROW(bnorm::BatchNorm<T>(Config<T>{.num_features = 3, .momentum = std::nullopt}));
    EXPECT_NO_THROW(bnorm::BatchNorm<T>(Config<T>{.num_features = 3, .momentum = -0.5}));
}

// The module's state (parameters, running statistics, counter), for "untouched" checks.
template <class T>
struct ModuleState {
    std::vector<T> weight, bias, running_mean, running_var, grad_weight, grad_bias;
    int64_t count;
    explicit ModuleState(bnorm::BatchNorm<T>& bn)
        : weight(bn.weight().begin(), bn.weight().end()),
          bias(bn.bias().begin(), bn.bias().end()),
          running_mean(bn.running_mean().begin(), bn.running_mean().end()),
          running_var(bn.running_var().begin(), bn.running_var().end()),
          grad_weight(bn.grad_weight().begin(), bn.grad_weight().end()),
          grad_bias(bn.grad_bias().begin(), bn.grad_bias().end()),
          count(bn.num_batches_tracked()) {}
    void expect_equal(const ModuleState& o) const {
        EXPECT_TRUE(bitwise_equal(weight, o.weight)) << "weight changed";
        EXPECT_TRUE(bitwise_equal(bias, o.bias)) << "bias changed";
        EXPECT_TRUE(bitwise_equal(running_mean, o.running_mean)) << "running_mean changed";
        EXPECT_TRUE(bitwise_equal(running_var, o.running_var)) << "running_var changed";
        EXPECT_TRUE(bitwise_equal(grad_weight, o.grad_weight)) << "grad_weight changed";
        EXPECT_TRUE(bitwise_equal(grad_bias, o.grad_bias)) << "grad_bias changed";
        EXPECT_EQ(count, o.count) << "num_batches_tracked changed";
    }
};

TYPED_TEST(BatchNormErrors, ForwardAndBackwardSucceedOnMatchingInput) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    const ModuleState<T> before(bn);
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));
    EXPECT_EQ(bn.num_batches_tracked(), 1);
    EXPECT_FALSE(bitwise_equal(before.running_mean, ModuleState<T>(bn).running_mean));
    ASSERT_NO_THROW(bn.backward(d.shape, d.cx(), d.cdy(), d.sdx()));
    EXPECT_FALSE(bitwise_equal(before.grad_weight, ModuleState<T>(bn).grad_weight));
    EXPECT_NE(d.dx[0], sentinel<T>());
    bn.eval();
    ASSERT_NO_THROW(bn.forward(Shape{.n = 1, .c = 3, .spatial = 1}, std::span<const T>(d.x.data(), 3),
                               std::span<T>(d.y.data(), 3)))
        << "evaluation mode with tracked statistics accepts one value per channel";
}

TYPED_TEST(BatchNormErrors, ForwardRejectsChannelsDifferentFromNumFeatures) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 4});
    Data<T> d;  // c = 3
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.forward(v.shape, v.cx(), v.sy()); },
                    {"bnorm::BatchNorm::forward", "shape.c = 3", "num_features = 4"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, ForwardRejectsWrongInputSizeAndChangesNoState) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.forward(v.shape, v.cx(-1), v.sy()); }, {"x has 59 elements"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, ForwardInTrainingRejectsOneValuePerChannel) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) {
        bn.forward(Shape{.n = 1, .c = 3, .spatial = 1}, std::span<const T>(v.x.data(), 3), std::span<T>(v.y.data(), 3));
    }, {"n*spatial = 1"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, BackwardBeforeAnyForwardIsRejected) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.backward(v.shape, v.cx(), v.cdy(), v.sdx()); },
                    {"bnorm::BatchNorm::backward", "no forward pass"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, BackwardAfterAFailedForwardIsRejected) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));                            // a good forward...
    EXPECT_THROW(bn.forward(d.shape, d.cx(-1), d.sy()), bnorm::InvalidArgument);    // ...then a failed one
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.backward(v.shape, v.cx(), v.cdy(), v.sdx()); },
                    {"bnorm::BatchNorm::backward", "no forward pass"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, BackwardWithDifferentBatchSizeThanForwardIsRejected) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));
    const ModuleState<T> before(bn);
    const Shape smaller{.n = 2, .c = 3, .spatial = 5};
    expect_rejected(d, [&](Data<T>& v) {
        bn.backward(smaller, std::span<const T>(v.x.data(), 30), std::span<const T>(v.dy.data(), 30),
                    std::span<T>(v.dx.data(), 30));
    }, {"bnorm::BatchNorm::backward", "shape"});
    before.expect_equal(ModuleState<T>(bn));
    // The positive control: the forward's own shape works.
    ASSERT_NO_THROW(bn.backward(d.shape, d.cx(), d.cdy(), d.sdx()));
}

TYPED_TEST(BatchNormErrors, BackwardWithDifferentLayoutOrSpatialThanForwardIsRejected) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));
    Shape last = d.shape;
    last.layout = Layout::channels_last;
    expect_rejected(d, [&](Data<T>& v) { bn.backward(last, v.cx(), v.cdy(), v.sdx()); }, {"shape"});
    const Shape reshaped{.n = 4, .c = 3, .spatial = 5, .layout = Layout::channels_first};
    const Shape other{.n = 5, .c = 3, .spatial = 4};  // same numel, different n and spatial
    ASSERT_EQ(bnorm::test::numel(reshaped), bnorm::test::numel(other));
    expect_rejected(d, [&](Data<T>& v) { bn.backward(other, v.cx(), v.cdy(), v.sdx()); }, {"shape"});
}

TYPED_TEST(BatchNormErrors, BackwardWithChannelsDifferentFromNumFeaturesIsRejected) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));
    expect_rejected(d, [&](Data<T>& v) {
        bn.backward(Shape{.n = 4, .c = 2, .spatial = 5}, std::span<const T>(v.x.data(), 40),
                    std::span<const T>(v.dy.data(), 40), std::span<T>(v.dx.data(), 40));
    }, {"shape.c = 2", "num_features = 3"});
}

TYPED_TEST(BatchNormErrors, BackwardRejectsWrongDySize) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    Data<T> d;
    ASSERT_NO_THROW(bn.forward(d.shape, d.cx(), d.sy()));
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.backward(v.shape, v.cx(), v.cdy(-1), v.sdx()); }, {"dy has 59 elements"});
    before.expect_equal(ModuleState<T>(bn));
}

TYPED_TEST(BatchNormErrors, SetNumBatchesTrackedRejectsNegative) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3});
    ASSERT_NO_THROW(bn.set_num_batches_tracked(5));
    EXPECT_EQ(bn.num_batches_tracked(), 5);
    expect_invalid([&] { bn.set_num_batches_tracked(-1); }, {"set_num_batches_tracked", "-1"});
    EXPECT_EQ(bn.num_batches_tracked(), 5);
}

// A counter at INT64_MAX cannot be incremented: the training forward refuses and changes nothing.
TYPED_TEST(BatchNormErrors, ForwardRejectsCounterThatWouldOverflow) {
    using T = TypeParam;
    bnorm::BatchNorm<T> bn(Config<T>{.num_features = 3, .momentum = std::nullopt});
    bn.set_num_batches_tracked(std::numeric_limits<int64_t>::max());
    Data<T> d;
    const ModuleState<T> before(bn);
    expect_rejected(d, [&](Data<T>& v) { bn.forward(v.shape, v.cx(), v.sy()); }, {"num_batches_tracked"});
    before.expect_equal(ModuleState<T>(bn));
}

}  // namespace
