// kernels.hpp: the contract between core (checks, dispatch) and the kernels (reference, CPU).
// A kernel receives arguments core has validated: sizes are positive, required pointers are
// non-null, buffers do not overlap except the allowed in-place pairs (y == x, dx == dy, dx == x),
// and training calls have m = n*spatial >= 2. Kernels never throw, print or keep state.
#pragma once

#include "core/geometry.hpp"

namespace bnorm::detail {

// Running statistics update of one training call, already resolved by core from the momentum
// and num_batches_tracked: running = (1 - factor)*running + factor*batch.
struct RunningUpdate {
    bool enabled = false;
    double factor = 0.0;
    bool unbiased = true;  // running_var gets var*m/(m-1) (true) or var (false)
};

template <class T>
struct ForwardTrainingArgs {
    Geometry g;
    double eps;
    RunningUpdate update;
    const T* x;
    const T* weight;  // optional
    const T* bias;    // optional
    T* running_mean;  // required when update.enabled
    T* running_var;   // required when update.enabled
    T* y;
    T* save_mean;    // optional
    T* save_invstd;  // optional
};

template <class T>
struct ForwardInferenceArgs {
    Geometry g;
    double eps;
    const T* x;
    const T* weight;  // optional
    const T* bias;    // optional
    const T* running_mean;
    const T* running_var;
    T* y;
};

template <class T>
struct BackwardArgs {
    Geometry g;
    const T* dy;
    const T* x;
    const T* weight;  // optional
    const T* save_mean;
    const T* save_invstd;
    T* dx;
    T* dweight;  // optional
    T* dbias;    // optional
};

template <class T>
struct BackwardInferenceArgs {
    Geometry g;
    double eps;
    const T* dy;
    const T* x;
    const T* weight;  // optional
    const T* running_mean;
    const T* running_var;
    T* dx;
    T* dweight;  // optional
    T* dbias;    // optional
};

template <class T>
struct KernelTable {
    void (*forward_training)(const ForwardTrainingArgs<T>&);
    void (*forward_inference)(const ForwardInferenceArgs<T>&);
    void (*backward)(const BackwardArgs<T>&);
    void (*backward_inference)(const BackwardInferenceArgs<T>&);
};

enum class DType { f32, f64, bf16, f16 };

// One implementation of all operations. The dispatch list is ordered; the first whose accepts()
// returns true for a problem serves it.
struct Implementation {
    const char* name;
    bool (*accepts)(DType dtype, const Geometry& g);
    KernelTable<float> f32;
    KernelTable<double> f64;
};

// The plain reference (src/cpu/ref): double accumulation, obvious loops, the tests' oracle.
const Implementation& reference_implementation();
// The production CPU kernels (src/cpu): threads, fixed chunking, vectorized loops.
const Implementation& cpu_implementation();

}  // namespace bnorm::detail
