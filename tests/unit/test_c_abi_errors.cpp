// test_c_abi_errors.cpp: the error contract of the C ABI (include/bnorm/bnorm.h).
//
// For every bad argument of every entry point: the call returns its bnorm_status (BNORM_EINVAL, or
// BNORM_EUNSUPPORTED for the valid but unimplemented BNORM_BF16/BNORM_F16), bnorm_last_error()
// starts with the entry point's name and names the bad argument, and not one byte of any buffer
// (outputs, in-out running statistics, the batch counter, even the inputs) has changed. Every
// buffer is snapshotted byte by byte before the call and compared with memcmp after it; the
// outputs start as an all-ones bit pattern (a NaN), so a write of any value is seen.
//
// Positive controls: the same buffers with the bad argument fixed succeed and do write the
// outputs, so the checks above can tell a rejection from a call that does nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr unsigned char kSentinelByte = 0xFF;  // all ones: a NaN in float32, float64, bf16 and f16

size_t element_size(bnorm_dtype dtype) {
    switch (static_cast<int>(dtype)) {
        case BNORM_F64: return 8;
        case BNORM_BF16:
        case BNORM_F16: return 2;
        default: return 4;
    }
}

std::string dtype_name(bnorm_dtype dtype) {
    switch (static_cast<int>(dtype)) {
        case BNORM_F32: return "F32";
        case BNORM_F64: return "F64";
        case BNORM_BF16: return "BF16";
        case BNORM_F16: return "F16";
        default: return "dtype" + std::to_string(static_cast<int>(dtype));
    }
}

// Raw storage for a buffer of any dtype. new unsigned char[] gives storage in which the library's
// float/double accesses are well defined (implicit object creation) and aligned for any scalar.
struct Block {
    std::string name;
    std::unique_ptr<unsigned char[]> bytes;
    size_t size = 0;

    Block(std::string block_name, size_t byte_count)
        : name(std::move(block_name)), bytes(new unsigned char[byte_count > 0 ? byte_count : 1]), size(byte_count) {
        std::memset(bytes.get(), kSentinelByte, size);
    }
    void* data() { return bytes.get(); }
    unsigned char* at_byte(size_t offset) { return bytes.get() + offset; }
};

enum class Op { forward_training, forward_inference, backward, backward_inference };

const char* op_symbol(Op op) {
    switch (op) {
        case Op::forward_training: return "bnorm_forward_training";
        case Op::forward_inference: return "bnorm_forward_inference";
        case Op::backward: return "bnorm_backward";
        case Op::backward_inference: return "bnorm_backward_inference";
    }
    return "?";
}

// Every pointer any entry point takes; invoke() passes the ones its entry point has.
struct Args {
    const bnorm_desc* desc = nullptr;
    const bnorm_options* options = nullptr;
    const void* x = nullptr;
    const void* dy = nullptr;
    const void* weight = nullptr;
    const void* bias = nullptr;
    void* running_mean = nullptr;
    void* running_var = nullptr;
    int64_t* num_batches_tracked = nullptr;
    void* y = nullptr;
    void* save_mean = nullptr;
    void* save_invstd = nullptr;
    void* dx = nullptr;
    void* dweight = nullptr;
    void* dbias = nullptr;
};

bnorm_status invoke(Op op, const Args& a) {
    switch (op) {
        case Op::forward_training:
            return bnorm_forward_training(a.desc, a.options, a.x, a.weight, a.bias, a.running_mean,
                                          a.running_var, a.num_batches_tracked, a.y, a.save_mean,
                                          a.save_invstd);
        case Op::forward_inference:
            return bnorm_forward_inference(a.desc, a.options, a.x, a.weight, a.bias, a.running_mean,
                                           a.running_var, a.y);
        case Op::backward:
            return bnorm_backward(a.desc, a.dy, a.x, a.weight, a.save_mean, a.save_invstd, a.dx, a.dweight,
                                  a.dbias);
        case Op::backward_inference:
            return bnorm_backward_inference(a.desc, a.options, a.dy, a.x, a.weight, a.running_mean,
                                            a.running_var, a.dx, a.dweight, a.dbias);
    }
    return BNORM_EINTERNAL;
}

// All buffers of one small problem (default n=4, c=3, spatial=5: m = 20 values per channel).
// Inputs hold valid values of the dtype; outputs hold the sentinel. save_mean/save_invstd are
// outputs of the training forward (sentinel) and inputs of the backward (valid values).
class Problem {
public:
    Problem(Op op, bnorm_dtype dtype, bnorm_layout layout = BNORM_CHANNELS_FIRST, int64_t n = 4, int64_t c = 3,
            int64_t spatial = 5)
        : desc{dtype, layout, n, c, spatial},
          esz(element_size(dtype)),
          numel(static_cast<size_t>(n * c * spatial)),
          channels(static_cast<size_t>(c)) {
        x = add("x", numel);
        dy = add("dy", numel);
        y = add("y", numel);
        dx = add("dx", numel);
        weight = add("weight", channels);
        bias = add("bias", channels);
        running_mean = add("running_mean", channels);
        running_var = add("running_var", channels);
        save_mean = add("save_mean", channels);
        save_invstd = add("save_invstd", channels);
        dweight = add("dweight", channels);
        dbias = add("dbias", channels);
        std::mt19937 rng(1234);
        std::normal_distribution<double> normal(0.0, 1.0);
        std::uniform_real_distribution<double> positive(0.5, 2.0);
        fill(*x, [&] { return 3.0 + 2.0 * normal(rng); });
        fill(*dy, [&] { return normal(rng); });
        fill(*weight, [&] { return positive(rng); });
        fill(*bias, [&] { return normal(rng); });
        fill(*running_mean, [&] { return normal(rng); });
        fill(*running_var, [&] { return positive(rng); });
        if (op == Op::backward) {
            fill(*save_mean, [&] { return normal(rng); });
            fill(*save_invstd, [&] { return positive(rng); });
        }
    }

    // The valid call of `op` with every buffer this entry point takes.
    Args args(Op op) {
        Args a;
        a.desc = &desc;
        a.options = &options;
        a.x = x->data();
        a.weight = weight->data();
        a.bias = bias->data();
        switch (op) {
            case Op::forward_training:
                a.running_mean = running_mean->data();
                a.running_var = running_var->data();
                a.num_batches_tracked = &num_batches_tracked;
                a.y = y->data();
                a.save_mean = save_mean->data();
                a.save_invstd = save_invstd->data();
                break;
            case Op::forward_inference:
                a.running_mean = running_mean->data();
                a.running_var = running_var->data();
                a.y = y->data();
                break;
            case Op::backward:
                a.dy = dy->data();
                a.save_mean = save_mean->data();
                a.save_invstd = save_invstd->data();
                a.dx = dx->data();
                a.dweight = dweight->data();
                a.dbias = dbias->data();
                break;
            case Op::backward_inference:
                a.dy = dy->data();
                a.running_mean = running_mean->data();
                a.running_var = running_var->data();
                a.dx = dx->data();
                a.dweight = dweight->data();
                a.dbias = dbias->data();
                break;
        }
        return a;
    }

    // An extra block (for overlap cases), `elements` values of this dtype, sentinel-filled.
    Block* extra(const std::string& name, size_t elements) { return add(name, elements); }

    // A copy of the first `elements` values of `from` into `to` at element offset `at`.
    void copy_values(Block& to, size_t at, const Block& from, size_t elements) const {
        std::memcpy(to.at_byte(at * esz), from.bytes.get(), elements * esz);
    }

    // Every byte of every buffer, the batch counter included.
    std::vector<std::vector<unsigned char>> snapshot() const {
        std::vector<std::vector<unsigned char>> s;
        for (const auto& b : blocks_) s.emplace_back(b->bytes.get(), b->bytes.get() + b->size);
        const auto* counter = reinterpret_cast<const unsigned char*>(&num_batches_tracked);
        s.emplace_back(counter, counter + sizeof num_batches_tracked);
        return s;
    }

    // Names the buffers whose bytes differ between two snapshots.
    std::string changed(const std::vector<std::vector<unsigned char>>& before,
                        const std::vector<std::vector<unsigned char>>& after) const {
        std::string names;
        for (size_t i = 0; i < before.size() && i < after.size(); ++i)
            if (before[i].size() != after[i].size() ||
                std::memcmp(before[i].data(), after[i].data(), before[i].size()) != 0)
                names += (names.empty() ? "" : ", ") +
                         (i < blocks_.size() ? blocks_[i]->name : std::string("*num_batches_tracked"));
        return names;
    }

    bool is_sentinel(const Block& b) const {
        for (size_t i = 0; i < b.size; ++i)
            if (b.bytes[i] != kSentinelByte) return false;
        return true;
    }

    // Value i of a block, as double (float32/float64 only).
    double value(const Block& b, size_t i) const {
        if (esz == 8) {
            double v;
            std::memcpy(&v, b.bytes.get() + i * 8, 8);
            return v;
        }
        float v;
        std::memcpy(&v, b.bytes.get() + i * 4, 4);
        return static_cast<double>(v);
    }

    bnorm_desc desc;
    bnorm_options options{1e-5, 0.1, 1};
    int64_t num_batches_tracked = 3;
    size_t esz, numel, channels;
    Block *x, *dy, *y, *dx, *weight, *bias, *running_mean, *running_var, *save_mean, *save_invstd, *dweight,
        *dbias;

private:
    Block* add(const std::string& name, size_t elements) {
        blocks_.push_back(std::make_unique<Block>(name, elements * esz));
        return blocks_.back().get();
    }

    template <class Gen>
    void fill(Block& b, Gen&& gen) {
        for (size_t i = 0; i < b.size / esz; ++i) {
            const double v = gen();
            if (esz == 8) {
                std::memcpy(b.at_byte(i * 8), &v, 8);
            } else if (esz == 4) {
                const auto f = static_cast<float>(v);
                std::memcpy(b.at_byte(i * 4), &f, 4);
            } else {  // bf16: the upper half of the float32 (also a finite f16 bit pattern for these values)
                const auto f = static_cast<float>(v);
                uint32_t bits;
                std::memcpy(&bits, &f, 4);
                const auto half = static_cast<uint16_t>(bits >> 16);
                std::memcpy(b.at_byte(i * 2), &half, 2);
            }
        }
    }

    std::vector<std::unique_ptr<Block>> blocks_;
};

// Stores an int that is not one of the enumerators into a C enum field, as a C caller can: through
// the bytes, so that this test itself does not form an out-of-range enum value.
template <class Enum>
void set_raw(Enum& field, int value) {
    static_assert(sizeof(Enum) == sizeof(int));
    std::memcpy(&field, &value, sizeof value);
}

// Leaves a known message from another entry point in bnorm_last_error(), so that the message read
// after the call under test can only have come from that call.
void prime_last_error(Op op_under_test) {
    if (op_under_test == Op::backward)
        ASSERT_EQ(bnorm_forward_inference(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
                  BNORM_EINVAL);
    else
        ASSERT_EQ(bnorm_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
                  BNORM_EINVAL);
}

// Calls op with args, expects `status`, a message from op naming every word, and no byte changed.
void expect_rejected(Problem& p, Op op, const Args& args, bnorm_status status, const std::vector<std::string>& words) {
    prime_last_error(op);
    const auto before = p.snapshot();
    const bnorm_status got = invoke(op, args);
    const auto after = p.snapshot();
    const std::string message = bnorm_last_error();
    EXPECT_EQ(got, status) << op_symbol(op) << " returned " << got << " (message: \"" << message << "\")";
    EXPECT_FALSE(message.empty()) << op_symbol(op) << " failed without a message";
    EXPECT_EQ(message.rfind(std::string(op_symbol(op)) + ": ", 0), 0u)
        << "the message does not start with \"" << op_symbol(op) << ": \": \"" << message << "\"";
    for (const auto& w : words)
        EXPECT_NE(message.find(w), std::string::npos) << "the message does not name \"" << w << "\": \"" << message << "\"";
    EXPECT_EQ(p.changed(before, after), "") << op_symbol(op) << " failed but wrote to these buffers";
}

// ---- the table of bad arguments: one test per (case, dtype) ---------------------------------

using Mutate = void (*)(Problem&, Args&);

struct BadCase {
    std::string name;  // says what is proved: <Op>_Rejects<What>
    Op op;
    Mutate mutate;
    std::vector<std::string> words;  // substrings the message must contain
    bnorm_status status = BNORM_EINVAL;
};

constexpr Op kTrain = Op::forward_training;
constexpr Op kInfer = Op::forward_inference;
constexpr Op kBack = Op::backward;
constexpr Op kBackInfer = Op::backward_inference;

// Cases that apply to every entry point, instantiated for each.
std::vector<BadCase> descriptor_cases(Op op, const std::string& prefix) {
    std::vector<BadCase> cases = {
        {"RejectsDescNull", op, [](Problem&, Args& a) { a.desc = nullptr; }, {"desc is NULL"}},
        {"RejectsDtype7", op, [](Problem& p, Args&) { set_raw(p.desc.dtype, 7); }, {"desc->dtype", "7"}},
        {"RejectsDtypeMinus1", op, [](Problem& p, Args&) { set_raw(p.desc.dtype, -1); },
         {"desc->dtype", "-1"}},
        {"RejectsLayout2", op, [](Problem& p, Args&) { set_raw(p.desc.layout, 2); }, {"desc->layout", "2"}},
        {"RejectsLayoutMinus1", op, [](Problem& p, Args&) { set_raw(p.desc.layout, -1); },
         {"desc->layout", "-1"}},
        {"RejectsNZero", op, [](Problem& p, Args&) { p.desc.n = 0; }, {"desc->n", "0"}},
        {"RejectsNNegative", op, [](Problem& p, Args&) { p.desc.n = -4; }, {"desc->n", "-4"}},
        {"RejectsCZero", op, [](Problem& p, Args&) { p.desc.c = 0; }, {"desc->c", "0"}},
        {"RejectsCNegative", op, [](Problem& p, Args&) { p.desc.c = -3; }, {"desc->c", "-3"}},
        {"RejectsSpatialZero", op, [](Problem& p, Args&) { p.desc.spatial = 0; }, {"desc->spatial", "0"}},
        {"RejectsSpatialNegative", op, [](Problem& p, Args&) { p.desc.spatial = -5; }, {"desc->spatial", "-5"}},
        // Sizes whose product overflows int64 must be rejected before any buffer is touched (the
        // buffers are tiny; the sanitizer build would catch a read past them).
        {"RejectsNumelOverflowingInt64", op,
         [](Problem& p, Args&) { p.desc.n = p.desc.c = p.desc.spatial = int64_t{1} << 22; },
         {"desc->n * desc->c * desc->spatial", "overflow"}},
        {"RejectsNTimesCOverflowingInt64", op,
         [](Problem& p, Args&) {
             p.desc.n = std::numeric_limits<int64_t>::max();
             p.desc.c = 2;
             p.desc.spatial = 1;
         },
         {"desc->n * desc->c * desc->spatial", "overflow"}},
        // n*c*spatial = 2^62 fits int64, but its size in bytes (x4 or x8) does not.
        {"RejectsByteSizeOverflowingInt64", op,
         [](Problem& p, Args&) {
             p.desc.n = int64_t{1} << 30;
             p.desc.c = int64_t{1} << 30;
             p.desc.spatial = 4;
         },
         {"desc->n * desc->c * desc->spatial", "overflow"}},
        {"RejectsXNull", op, [](Problem&, Args& a) { a.x = nullptr; }, {"x is NULL"}},
    };
    if (op != kBack) {
        cases.push_back({"RejectsOptionsNull", op, [](Problem&, Args& a) { a.options = nullptr; }, {"options is NULL"}});
        cases.push_back({"RejectsEpsNegative", op, [](Problem& p, Args&) { p.options.eps = -1e-5; }, {"options->eps"}});
        cases.push_back({"RejectsEpsNaN", op, [](Problem& p, Args&) { p.options.eps = kNaN; }, {"options->eps"}});
        cases.push_back({"RejectsEpsPlusInfinity", op, [](Problem& p, Args&) { p.options.eps = kInf; }, {"options->eps"}});
        cases.push_back({"RejectsEpsMinusInfinity", op, [](Problem& p, Args&) { p.options.eps = -kInf; }, {"options->eps"}});
    }
    for (auto& c : cases) c.name = prefix + "_" + c.name;
    return cases;
}

std::vector<BadCase> all_bad_cases() {
    std::vector<BadCase> cases;
    for (const auto& [op, prefix] : {std::pair{kTrain, "ForwardTraining"}, std::pair{kInfer, "ForwardInference"},
                                     std::pair{kBack, "Backward"}, std::pair{kBackInfer, "BackwardInference"}}) {
        auto some = descriptor_cases(op, prefix);
        cases.insert(cases.end(), some.begin(), some.end());
    }
    const std::vector<BadCase> specific = {
        // ---- forward training ----
        {"ForwardTraining_RejectsYNull", kTrain, [](Problem&, Args& a) { a.y = nullptr; }, {"y is NULL"}},
        {"ForwardTraining_RejectsRunningMeanWithoutRunningVar", kTrain,
         [](Problem&, Args& a) { a.running_var = nullptr; }, {"running_var is NULL", "running_mean"}},
        {"ForwardTraining_RejectsRunningVarWithoutRunningMean", kTrain,
         [](Problem&, Args& a) { a.running_mean = nullptr; }, {"running_mean is NULL", "running_var"}},
        {"ForwardTraining_RejectsOneValuePerChannel_N1Spatial1", kTrain,
         [](Problem& p, Args&) { p.desc.n = 1, p.desc.spatial = 1; }, {"n*spatial = 1"}},
        {"ForwardTraining_RejectsOneValuePerChannelChannelsLast", kTrain,
         [](Problem& p, Args&) { p.desc.layout = BNORM_CHANNELS_LAST, p.desc.n = 1, p.desc.spatial = 1; },
         {"n*spatial = 1"}},
        {"ForwardTraining_RejectsOneValuePerChannelUntracked", kTrain,
         [](Problem& p, Args& a) {
             p.desc.n = 1, p.desc.spatial = 1;
             a.running_mean = a.running_var = nullptr;
         },
         {"n*spatial = 1"}},
        {"ForwardTraining_RejectsMomentumPlusInfinity", kTrain, [](Problem& p, Args&) { p.options.momentum = kInf; },
         {"options->momentum"}},
        {"ForwardTraining_RejectsMomentumMinusInfinity", kTrain, [](Problem& p, Args&) { p.options.momentum = -kInf; },
         {"options->momentum"}},
        {"ForwardTraining_RejectsRunningVarUnbiased2", kTrain,
         [](Problem& p, Args&) { p.options.running_var_unbiased = 2; }, {"options->running_var_unbiased", "2"}},
        {"ForwardTraining_RejectsRunningVarUnbiasedMinus1", kTrain,
         [](Problem& p, Args&) { p.options.running_var_unbiased = -1; }, {"options->running_var_unbiased", "-1"}},
        {"ForwardTraining_RejectsMomentumNaNWithoutCounter", kTrain,
         [](Problem& p, Args& a) {
             p.options.momentum = kNaN;
             a.num_batches_tracked = nullptr;
         },
         {"num_batches_tracked", "NULL"}},
        {"ForwardTraining_RejectsNegativeCounter", kTrain, [](Problem& p, Args&) { p.num_batches_tracked = -1; },
         {"num_batches_tracked", "-1"}},
        {"ForwardTraining_RejectsNegativeCounterWithMomentumNaN", kTrain,
         [](Problem& p, Args&) {
             p.options.momentum = kNaN;
             p.num_batches_tracked = -7;
         },
         {"num_batches_tracked", "-7"}},
        // Incrementing INT64_MAX would overflow.
        {"ForwardTraining_RejectsCounterAtInt64Max", kTrain,
         [](Problem& p, Args&) { p.num_batches_tracked = std::numeric_limits<int64_t>::max(); },
         {"num_batches_tracked"}},
        {"ForwardTraining_RejectsYPartlyOverlappingXAfterIt", kTrain,
         [](Problem& p, Args& a) {
             Block* both = p.extra("x_and_y", p.numel + 1);
             p.copy_values(*both, 0, *p.x, p.numel);
             a.x = both->data();
             a.y = both->at_byte(p.esz);
         },
         {"y overlaps x"}},
        {"ForwardTraining_RejectsYPartlyOverlappingXBeforeIt", kTrain,
         [](Problem& p, Args& a) {
             Block* both = p.extra("y_and_x", p.numel + 1);
             p.copy_values(*both, 1, *p.x, p.numel);
             a.x = both->at_byte(p.esz);
             a.y = both->data();
         },
         {"y overlaps x"}},
        {"ForwardTraining_RejectsSaveMeanSameAsRunningMean", kTrain,
         [](Problem&, Args& a) { a.save_mean = a.running_mean; }, {"overlaps", "save_mean", "running_mean"}},
        {"ForwardTraining_RejectsRunningVarSameAsRunningMean", kTrain,
         [](Problem&, Args& a) { a.running_var = a.running_mean; }, {"overlaps", "running_var", "running_mean"}},
        {"ForwardTraining_RejectsSaveInvstdPartlyOverlappingSaveMean", kTrain,
         [](Problem& p, Args& a) {
             Block* both = p.extra("save_mean_and_invstd", p.channels + 1);
             a.save_mean = both->data();
             a.save_invstd = both->at_byte(p.esz);
         },
         {"overlaps", "save_mean", "save_invstd"}},
        {"ForwardTraining_RejectsWeightInsideY", kTrain,
         [](Problem& p, Args& a) {
             p.copy_values(*p.y, 2, *p.weight, p.channels);
             a.weight = p.y->at_byte(2 * p.esz);
         },
         {"y overlaps weight"}},
        {"ForwardTraining_RejectsSaveMeanInsideX", kTrain,
         [](Problem& p, Args& a) { a.save_mean = p.x->at_byte(p.esz); }, {"save_mean overlaps x"}},
        {"ForwardTraining_RejectsCounterInsideSaveMean", kTrain,
         [](Problem& p, Args& a) {
             // The counter's 8 bytes are the start of save_mean (a block of int64 values, the first 3).
             Block* both = p.extra("counter_and_save_mean", (p.channels * p.esz + 8) / p.esz + 1);
             const int64_t three = 3;
             std::memcpy(both->data(), &three, sizeof three);
             a.num_batches_tracked = reinterpret_cast<int64_t*>(both->data());
             a.save_mean = both->data();
         },
         {"overlaps", "num_batches_tracked", "save_mean"}},
        // ---- forward inference ----
        {"ForwardInference_RejectsYNull", kInfer, [](Problem&, Args& a) { a.y = nullptr; }, {"y is NULL"}},
        {"ForwardInference_RejectsRunningMeanNull", kInfer, [](Problem&, Args& a) { a.running_mean = nullptr; },
         {"running_mean is NULL"}},
        {"ForwardInference_RejectsRunningVarNull", kInfer, [](Problem&, Args& a) { a.running_var = nullptr; },
         {"running_var is NULL"}},
        {"ForwardInference_RejectsBothRunningStatsNull", kInfer,
         [](Problem&, Args& a) { a.running_mean = a.running_var = nullptr; }, {"running_mean is NULL"}},
        {"ForwardInference_RejectsYPartlyOverlappingX", kInfer,
         [](Problem& p, Args& a) {
             Block* both = p.extra("x_and_y", p.numel + 1);
             p.copy_values(*both, 0, *p.x, p.numel);
             a.x = both->data();
             a.y = both->at_byte(p.esz);
         },
         {"y overlaps x"}},
        {"ForwardInference_RejectsRunningVarInsideY", kInfer,
         [](Problem& p, Args& a) {
             p.copy_values(*p.y, 1, *p.running_var, p.channels);
             a.running_var = p.y->at_byte(p.esz);
         },
         {"y overlaps running_var"}},
        // ---- backward ----
        {"Backward_RejectsDyNull", kBack, [](Problem&, Args& a) { a.dy = nullptr; }, {"dy is NULL"}},
        {"Backward_RejectsSaveMeanNull", kBack, [](Problem&, Args& a) { a.save_mean = nullptr; }, {"save_mean is NULL"}},
        {"Backward_RejectsSaveInvstdNull", kBack, [](Problem&, Args& a) { a.save_invstd = nullptr; },
         {"save_invstd is NULL"}},
        {"Backward_RejectsDxNull", kBack, [](Problem&, Args& a) { a.dx = nullptr; }, {"dx is NULL"}},
        {"Backward_RejectsDweightSameAsDbias", kBack, [](Problem&, Args& a) { a.dweight = a.dbias; },
         {"overlaps", "dweight", "dbias"}},
        {"Backward_RejectsDxPartlyOverlappingDy", kBack,
         [](Problem& p, Args& a) {
             Block* both = p.extra("dy_and_dx", p.numel + 1);
             p.copy_values(*both, 0, *p.dy, p.numel);
             a.dy = both->data();
             a.dx = both->at_byte(p.esz);
         },
         {"dx overlaps dy"}},
        {"Backward_RejectsDxPartlyOverlappingX", kBack,
         [](Problem& p, Args& a) {
             Block* both = p.extra("dx_and_x", p.numel + 1);
             p.copy_values(*both, 1, *p.x, p.numel);
             a.x = both->at_byte(p.esz);
             a.dx = both->data();
         },
         {"dx overlaps x"}},
        {"Backward_RejectsDweightSameAsSaveInvstd", kBack, [](Problem&, Args& a) { a.dweight = a.save_invstd; },
         {"dweight overlaps save_invstd"}},
        {"Backward_RejectsSaveMeanInsideDx", kBack,
         [](Problem& p, Args& a) {
             p.copy_values(*p.dx, 0, *p.save_mean, p.channels);
             a.save_mean = p.dx->data();
         },
         {"dx overlaps save_mean"}},
        // ---- backward inference ----
        {"BackwardInference_RejectsDyNull", kBackInfer, [](Problem&, Args& a) { a.dy = nullptr; }, {"dy is NULL"}},
        {"BackwardInference_RejectsRunningMeanNull", kBackInfer, [](Problem&, Args& a) { a.running_mean = nullptr; },
         {"running_mean is NULL"}},
        {"BackwardInference_RejectsRunningVarNull", kBackInfer, [](Problem&, Args& a) { a.running_var = nullptr; },
         {"running_var is NULL"}},
        {"BackwardInference_RejectsDxNull", kBackInfer, [](Problem&, Args& a) { a.dx = nullptr; }, {"dx is NULL"}},
        {"BackwardInference_RejectsDweightSameAsDbias", kBackInfer, [](Problem&, Args& a) { a.dweight = a.dbias; },
         {"overlaps", "dweight", "dbias"}},
        {"BackwardInference_RejectsDxPartlyOverlappingDy", kBackInfer,
         [](Problem& p, Args& a) {
             Block* both = p.extra("dy_and_dx", p.numel + 1);
             p.copy_values(*both, 1, *p.dy, p.numel);
             a.dy = both->at_byte(p.esz);
             a.dx = both->data();
         },
         {"dx overlaps dy"}},
        {"BackwardInference_RejectsDbiasSameAsRunningVar", kBackInfer,
         [](Problem&, Args& a) { a.dbias = a.running_var; }, {"dbias overlaps running_var"}},
    };
    cases.insert(cases.end(), specific.begin(), specific.end());
    return cases;
}

const std::vector<BadCase>& bad_cases() {
    static const std::vector<BadCase> cases = all_bad_cases();
    return cases;
}

class CAbiRejects : public ::testing::TestWithParam<std::tuple<size_t, bnorm_dtype>> {};

TEST_P(CAbiRejects, ReturnsStatusNamesArgumentAndWritesNothing) {
    const BadCase& c = bad_cases()[std::get<0>(GetParam())];
    const bnorm_dtype dtype = std::get<1>(GetParam());
    Problem p(c.op, dtype);
    Args a = p.args(c.op);
    // Positive control on identical, fresh buffers: the unmodified call succeeds.
    {
        Problem control(c.op, dtype);
        ASSERT_EQ(invoke(c.op, control.args(c.op)), BNORM_OK) << bnorm_last_error();
    }
    c.mutate(p, a);
    expect_rejected(p, c.op, a, c.status, c.words);
}

INSTANTIATE_TEST_SUITE_P(
    EveryBadArgument, CAbiRejects,
    ::testing::Combine(::testing::Range<size_t>(0, bad_cases().size()), ::testing::Values(BNORM_F32, BNORM_F64)),
    [](const ::testing::TestParamInfo<CAbiRejects::ParamType>& param_info) {
        return bad_cases()[std::get<0>(param_info.param)].name + "_" + dtype_name(std::get<1>(param_info.param));
    });

// ---- BNORM_BF16 / BNORM_F16: the argument checks hold for the 16-bit dtypes too ----------------
// (Their results are tested against the reference in unit_against_reference and against PyTorch
// in parity_torch; these buffers are rejected before any is read.)

class CAbiHalfDtypes : public ::testing::TestWithParam<std::tuple<Op, bnorm_dtype>> {};

// A bad argument is EINVAL whatever the dtype.
TEST_P(CAbiHalfDtypes, BadArgumentIsStillInvalidNotUnsupported) {
    const auto [op, dtype] = GetParam();
    Problem p(op, dtype);
    Args a = p.args(op);
    a.x = nullptr;
    expect_rejected(p, op, a, BNORM_EINVAL, {"x is NULL"});
}

TEST_P(CAbiHalfDtypes, OverlapIsStillInvalidNotUnsupported) {
    const auto [op, dtype] = GetParam();
    Problem p(op, dtype);
    Args a = p.args(op);
    if (op == kTrain || op == kInfer)
        a.y = p.x->at_byte(p.esz);  // y starts one bf16/f16 element into x
    else
        a.dx = p.dy->at_byte(p.esz);
    expect_rejected(p, op, a, BNORM_EINVAL, {"overlaps"});
}

INSTANTIATE_TEST_SUITE_P(Bf16F16, CAbiHalfDtypes,
                         ::testing::Combine(::testing::Values(kTrain, kInfer, kBack, kBackInfer),
                                            ::testing::Values(BNORM_BF16, BNORM_F16)),
                         [](const ::testing::TestParamInfo<CAbiHalfDtypes::ParamType>& param_info) {
                             return std::string(op_symbol(std::get<0>(param_info.param))) + "_" +
                                    dtype_name(std::get<1>(param_info.param));
                         });

// ---- positive controls ------------------------------------------------------------------------

class CAbiAccepts : public ::testing::TestWithParam<std::tuple<bnorm_dtype, bnorm_layout>> {};

// Calls op and expects success and that `written` (the outputs) changed.
void expect_accepted(Op op, const Args& a, const std::vector<const Block*>& written) {
    std::vector<std::vector<unsigned char>> before;
    for (const Block* b : written) before.emplace_back(b->bytes.get(), b->bytes.get() + b->size);
    ASSERT_EQ(invoke(op, a), BNORM_OK) << op_symbol(op) << ": " << bnorm_last_error();
    for (size_t i = 0; i < written.size(); ++i)
        EXPECT_NE(std::memcmp(before[i].data(), written[i]->bytes.get(), before[i].size()), 0)
            << op_symbol(op) << " succeeded but did not write " << written[i]->name;
}

TEST_P(CAbiAccepts, ForwardTrainingWithAllBuffersWritesOutputsAndCountsTheBatch) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    expect_accepted(kTrain, p.args(kTrain), {p.y, p.save_mean, p.save_invstd, p.running_mean, p.running_var});
    EXPECT_EQ(p.num_batches_tracked, 4);
    EXPECT_FALSE(p.is_sentinel(*p.y));
}

TEST_P(CAbiAccepts, ForwardInferenceWritesY) {
    const auto [dtype, layout] = GetParam();
    Problem p(kInfer, dtype, layout);
    expect_accepted(kInfer, p.args(kInfer), {p.y});
}

TEST_P(CAbiAccepts, BackwardWritesDxDweightDbias) {
    const auto [dtype, layout] = GetParam();
    Problem p(kBack, dtype, layout);
    expect_accepted(kBack, p.args(kBack), {p.dx, p.dweight, p.dbias});
}

TEST_P(CAbiAccepts, BackwardInferenceWritesDxDweightDbias) {
    const auto [dtype, layout] = GetParam();
    Problem p(kBackInfer, dtype, layout);
    expect_accepted(kBackInfer, p.args(kBackInfer), {p.dx, p.dweight, p.dbias});
}

TEST_P(CAbiAccepts, OptionalBuffersMayAllBeNull) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    Args a = p.args(kTrain);
    a.weight = a.bias = nullptr;
    a.running_mean = a.running_var = nullptr;
    a.num_batches_tracked = nullptr;
    a.save_mean = a.save_invstd = nullptr;
    expect_accepted(kTrain, a, {p.y});
    Problem b(kBack, dtype, layout);
    Args ab = b.args(kBack);
    ab.weight = nullptr;
    ab.dweight = ab.dbias = nullptr;
    expect_accepted(kBack, ab, {b.dx});
    EXPECT_TRUE(b.is_sentinel(*b.dweight));
    EXPECT_TRUE(b.is_sentinel(*b.dbias));
}

// Momentum NaN needs the counter only when statistics are tracked.
TEST_P(CAbiAccepts, MomentumNaNWithoutRunningStatsAndWithoutCounterIsNotTracked) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.momentum = kNaN;
    Args a = p.args(kTrain);
    a.running_mean = a.running_var = nullptr;
    a.num_batches_tracked = nullptr;
    const auto before = p.snapshot();
    expect_accepted(kTrain, a, {p.y, p.save_mean, p.save_invstd});
    const std::string changed = p.changed(before, p.snapshot());
    EXPECT_EQ(changed.find("running_"), std::string::npos) << "untracked call wrote: " << changed;
}

TEST_P(CAbiAccepts, CounterIsLeftAloneWhenStatisticsAreNotTracked) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.momentum = kNaN;
    Args a = p.args(kTrain);
    a.running_mean = a.running_var = nullptr;
    expect_accepted(kTrain, a, {p.y});
    EXPECT_EQ(p.num_batches_tracked, 3);
}

TEST_P(CAbiAccepts, MomentumNaNWithCounterIsCumulativeAverageAndIncrements) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.momentum = kNaN;
    std::vector<double> old_mean(p.channels);
    for (size_t c = 0; c < p.channels; ++c) old_mean[c] = p.value(*p.running_mean, c);
    expect_accepted(kTrain, p.args(kTrain), {p.y, p.running_mean, p.running_var});
    EXPECT_EQ(p.num_batches_tracked, 4);
    // With the counter at 3 before the call, the new batch gets weight 1/4.
    for (size_t c = 0; c < p.channels; ++c) {
        const double want = 0.75 * old_mean[c] + 0.25 * p.value(*p.save_mean, c);
        EXPECT_NEAR(p.value(*p.running_mean, c), want, 1e-5 * (1 + std::abs(want))) << "channel " << c;
    }
}

TEST_P(CAbiAccepts, MomentumZeroLeavesRunningStatsBitwiseButCountsTheBatch) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.momentum = 0.0;
    const std::vector<unsigned char> mean_before(p.running_mean->bytes.get(),
                                                 p.running_mean->bytes.get() + p.running_mean->size);
    const std::vector<unsigned char> var_before(p.running_var->bytes.get(),
                                                p.running_var->bytes.get() + p.running_var->size);
    expect_accepted(kTrain, p.args(kTrain), {p.y});
    EXPECT_EQ(std::memcmp(mean_before.data(), p.running_mean->bytes.get(), mean_before.size()), 0);
    EXPECT_EQ(std::memcmp(var_before.data(), p.running_var->bytes.get(), var_before.size()), 0);
    EXPECT_EQ(p.num_batches_tracked, 4);
}

TEST_P(CAbiAccepts, NegativeMomentumIsAccepted) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.momentum = -0.5;
    expect_accepted(kTrain, p.args(kTrain), {p.y, p.running_mean, p.running_var});
    EXPECT_EQ(p.num_batches_tracked, 4);
}

TEST_P(CAbiAccepts, EpsZeroAndRunningVarBiasedAreAccepted) {
    const auto [dtype, layout] = GetParam();
    Problem p(kTrain, dtype, layout);
    p.options.eps = 0.0;
    p.options.running_var_unbiased = 0;
    expect_accepted(kTrain, p.args(kTrain), {p.y});
    Problem q(kBackInfer, dtype, layout);
    q.options.eps = 0.0;
    expect_accepted(kBackInfer, q.args(kBackInfer), {q.dx});
}

TEST_P(CAbiAccepts, CounterZeroAndLargeAreAccepted) {
    const auto [dtype, layout] = GetParam();
    for (const int64_t start : {int64_t{0}, std::numeric_limits<int64_t>::max() - 1}) {
        Problem p(kTrain, dtype, layout);
        p.num_batches_tracked = start;
        expect_accepted(kTrain, p.args(kTrain), {p.y});
        EXPECT_EQ(p.num_batches_tracked, start + 1);
    }
}

TEST_P(CAbiAccepts, TwoValuesPerChannelAreEnoughForTraining) {
    const auto [dtype, layout] = GetParam();
    for (const auto& [n, spatial] : {std::pair<int64_t, int64_t>{2, 1}, std::pair<int64_t, int64_t>{1, 2}}) {
        Problem p(kTrain, dtype, layout, n, 3, spatial);
        expect_accepted(kTrain, p.args(kTrain), {p.y, p.running_var});
    }
}

TEST_P(CAbiAccepts, OneValuePerChannelIsFineForInferenceAndBackward) {
    const auto [dtype, layout] = GetParam();
    Problem p(kInfer, dtype, layout, 1, 3, 1);
    expect_accepted(kInfer, p.args(kInfer), {p.y});
    Problem q(kBackInfer, dtype, layout, 1, 3, 1);
    expect_accepted(kBackInfer, q.args(kBackInfer), {q.dx});
}

// In place: y == x (forward) and dx == dy, dx == x (backward) give the out-of-place result.
template <class Mutate>
void expect_in_place_matches(Op op, bnorm_dtype dtype, bnorm_layout layout, Mutate&& alias) {
    Problem separate(op, dtype, layout);
    ASSERT_EQ(invoke(op, separate.args(op)), BNORM_OK) << bnorm_last_error();
    Problem same(op, dtype, layout);
    Args a = same.args(op);
    Block* out = alias(same, a);
    ASSERT_EQ(invoke(op, a), BNORM_OK) << op_symbol(op) << " in place: " << bnorm_last_error();
    const Block& want = (op == kTrain || op == kInfer) ? *separate.y : *separate.dx;
    ASSERT_EQ(out->size, want.size);
    EXPECT_EQ(std::memcmp(out->bytes.get(), want.bytes.get(), want.size), 0)
        << op_symbol(op) << " in place differs from out of place";
}

TEST_P(CAbiAccepts, InPlaceYEqualsXMatchesOutOfPlace) {
    const auto [dtype, layout] = GetParam();
    for (Op op : {kTrain, kInfer})
        expect_in_place_matches(op, dtype, layout, [](Problem& p, Args& a) {
            a.y = p.x->data();
            return p.x;
        });
}

TEST_P(CAbiAccepts, InPlaceDxEqualsDyMatchesOutOfPlace) {
    const auto [dtype, layout] = GetParam();
    for (Op op : {kBack, kBackInfer})
        expect_in_place_matches(op, dtype, layout, [](Problem& p, Args& a) {
            a.dx = p.dy->data();
            return p.dy;
        });
}

// bnorm.hpp and ops.cpp also allow dx == x (bnorm.h's summary only mentions dx == dy).
TEST_P(CAbiAccepts, InPlaceDxEqualsXMatchesOutOfPlace) {
    const auto [dtype, layout] = GetParam();
    for (Op op : {kBack, kBackInfer})
        expect_in_place_matches(op, dtype, layout, [](Problem& p, Args& a) {
            a.dx = p.x->data();
            return p.x;
        });
}

INSTANTIATE_TEST_SUITE_P(F32F64, CAbiAccepts,
                         ::testing::Combine(::testing::Values(BNORM_F32, BNORM_F64),
                                            ::testing::Values(BNORM_CHANNELS_FIRST, BNORM_CHANNELS_LAST)),
                         [](const ::testing::TestParamInfo<CAbiAccepts::ParamType>& param_info) {
                             return dtype_name(std::get<0>(param_info.param)) +
                                    (std::get<1>(param_info.param) == BNORM_CHANNELS_FIRST ? "_ChannelsFirst"
                                                                                     : "_ChannelsLast");
                         });

// ---- last error, threads, version -------------------------------------------------------------

TEST(CAbiLastError, IsThreadLocal) {
    ASSERT_EQ(bnorm_forward_training(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, nullptr),
              BNORM_EINVAL);
    const std::string mine = bnorm_last_error();
    ASSERT_NE(mine.find("bnorm_forward_training"), std::string::npos) << mine;

    std::string fresh_thread_message = "not run", other_thread_message;
    std::thread other([&] {
        fresh_thread_message = bnorm_last_error();
        const bnorm_desc d{BNORM_F32, BNORM_CHANNELS_FIRST, 2, 2, 2};
        if (bnorm_backward_inference(&d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr) == BNORM_EINVAL)
            other_thread_message = bnorm_last_error();
    });
    other.join();
    EXPECT_EQ(fresh_thread_message, "") << "a new thread must start with no message";
    EXPECT_NE(other_thread_message.find("bnorm_backward_inference: options is NULL"), std::string::npos)
        << other_thread_message;
    EXPECT_EQ(std::string(bnorm_last_error()), mine) << "another thread's failure changed this thread's message";
}

TEST(CAbiLastError, IsReplacedByTheNextFailure) {
    ASSERT_EQ(bnorm_forward_training(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, nullptr),
              BNORM_EINVAL);
    const bnorm_desc d{BNORM_F32, BNORM_CHANNELS_FIRST, 2, 0, 2};
    const bnorm_options o{1e-5, 0.1, 1};
    float x[4] = {}, y[4] = {};
    ASSERT_EQ(bnorm_forward_inference(&d, &o, x, nullptr, nullptr, x, x, y), BNORM_EINVAL);
    const std::string message = bnorm_last_error();
    EXPECT_NE(message.find("bnorm_forward_inference"), std::string::npos) << message;
    EXPECT_NE(message.find("desc->c"), std::string::npos) << message;
}

TEST(CAbiThreads, SetNumThreadsReturnsThePreviousValue) {
    const int original = bnorm_set_num_threads(3);
    EXPECT_GE(original, 1);
    EXPECT_EQ(bnorm_set_num_threads(5), 3);
    EXPECT_EQ(bnorm::num_threads(), 5);
    EXPECT_EQ(bnorm_set_num_threads(0), 5);  // 0: back to the default, which is >= 1
    const int default_threads = bnorm::num_threads();
    EXPECT_GE(default_threads, 1);
    EXPECT_EQ(bnorm_set_num_threads(-2), default_threads);  // negative: the default too
    EXPECT_EQ(bnorm::num_threads(), default_threads);
    bnorm_set_num_threads(original);
    EXPECT_EQ(bnorm::num_threads(), original);
}

TEST(CAbiVersion, IsMajorMinorPatchDigits) {
    const char* v = bnorm_version();
    ASSERT_NE(v, nullptr);
    // digits.digits.digits (checked by hand: std::regex trips GCC 12's -Wmaybe-uninitialized under ASan)
    int parts = 0;
    const std::string text = v;
    bool digit_before = false, ok = !text.empty();
    for (char ch : text) {
        if (ch >= '0' && ch <= '9') digit_before = true;
        else if (ch == '.' && digit_before) { ++parts; digit_before = false; }
        else ok = false;
    }
    ok = ok && parts == 2 && digit_before;
    EXPECT_TRUE(ok) << "bnorm_version() = \"" << v << "\"";
    EXPECT_STREQ(v, bnorm::version()) << "the C and C++ versions differ";
}

}  // namespace
