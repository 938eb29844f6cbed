// kernels.hpp: the contract between core (checks, dispatch) and the kernels (reference, CPU).
// A kernel receives arguments core has validated: sizes are positive, required pointers are
// non-null, buffers do not overlap except the allowed in-place pairs (y == x, dx == dy, dx == x),
// and training calls have m = n*spatial >= 2. Kernels never throw, print or keep state.
// S is the element type of the data (float, double, bfloat16, float16); P = param_t<S> that of
// the per-channel parameters and statistics (double for double data, else float).
#pragma once

#include "bnorm/bnorm.hpp"
#include "core/geometry.hpp"

namespace bnorm::detail {

// Running statistics update of one training call, already resolved by core from the momentum
// and num_batches_tracked: running = (1 - factor)*running + factor*batch.
struct RunningUpdate {
    bool enabled = false;
    double factor = 0.0;
    bool unbiased = true;  // running_var gets var*m/(m-1) (true) or var (false)
};

template <class S>
struct ForwardTrainingArgs {
    using P = param_t<S>;
    Geometry g;
    double eps;
    RunningUpdate update;
    const S* x;
    const P* weight;  // optional
    const P* bias;    // optional
    P* running_mean;  // required when update.enabled
    P* running_var;   // required when update.enabled
    S* y;
    P* save_mean;    // optional
    P* save_invstd;  // optional
};

template <class S>
struct ForwardInferenceArgs {
    using P = param_t<S>;
    Geometry g;
    double eps;
    const S* x;
    const P* weight;  // optional
    const P* bias;    // optional
    const P* running_mean;
    const P* running_var;
    S* y;
};

template <class S>
struct BackwardArgs {
    using P = param_t<S>;
    Geometry g;
    const S* dy;
    const S* x;
    const P* weight;  // optional
    const P* save_mean;
    const P* save_invstd;
    S* dx;
    P* dweight;  // optional
    P* dbias;    // optional
};

template <class S>
struct BackwardInferenceArgs {
    using P = param_t<S>;
    Geometry g;
    double eps;
    const S* dy;
    const S* x;
    const P* weight;  // optional
    const P* running_mean;
    const P* running_var;
    S* dx;
    P* dweight;  // optional
    P* dbias;    // optional
};

template <class S>
struct KernelTable {
    void (*forward_training)(const ForwardTrainingArgs<S>&);
    void (*forward_inference)(const ForwardInferenceArgs<S>&);
    void (*backward)(const BackwardArgs<S>&);
    void (*backward_inference)(const BackwardInferenceArgs<S>&);
};

enum class DType { f32, f64, bf16, f16 };

// One implementation of all operations. The dispatch list is ordered; the first whose accepts()
// returns true for a problem serves it.
struct Implementation {
    const char* name;
    bool (*accepts)(DType dtype, const Geometry& g);
    KernelTable<float> f32;
    KernelTable<double> f64;
    KernelTable<bfloat16> bf16;
    KernelTable<float16> f16;

    template <class S>
    const KernelTable<S>& table() const {
        if constexpr (std::is_same_v<S, float>) return f32;
        else if constexpr (std::is_same_v<S, double>) return f64;
        else if constexpr (std::is_same_v<S, bfloat16>) return bf16;
        else return f16;
    }
};

// The element type's value as a double, and a double rounded to the element type.
inline double to_double(float v) { return v; }
inline double to_double(double v) { return v; }
inline double to_double(bfloat16 v) { return to_float(v); }
inline double to_double(float16 v) { return to_float(v); }
template <class S>
S from_double(double v) {
    if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) return static_cast<S>(v);
    else if constexpr (std::is_same_v<S, bfloat16>) return to_bfloat16(static_cast<float>(v));
    else return to_float16(static_cast<float>(v));
}

// The plain reference (src/cpu/ref): double accumulation, obvious loops, the tests' oracle.
const Implementation& reference_implementation();
// The production CPU kernels (src/cpu): threads, fixed chunking, SIMD (Highway, the instruction set
// chosen at run time), non-temporal stores for outputs larger than the caches.
const Implementation& cpu_implementation();
// The instruction set the production kernels run with ("AVX3", "AVX2", "EMU128", ...).
const char* cpu_target_name();

}  // namespace bnorm::detail
