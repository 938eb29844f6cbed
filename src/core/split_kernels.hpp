// split_kernels.hpp: the contract between core (split_ops.cpp) and the kernels of the split
// operations of synchronized batch normalization (bnorm.h, "split operations").
// A kernel receives arguments core has validated: c >= 1, spatial >= 1, n >= 0 (n = 0: an empty
// part, every data pointer may be null), required pointers non-null, no overlaps except dx == dy
// or dx == x, total_count >= max(2, n*spatial). Statistics are double. Kernels never throw,
// print or keep state; results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "core/geometry.hpp"
#include "core/kernels.hpp"

namespace bnorm::detail {

template <class T>
struct LocalStatisticsArgs {
    Geometry g;  // g.n may be 0
    const T* x;
    double* mean;  // c
    double* m2;    // c
};

template <class T>
struct NormalizeArgs {
    Geometry g;
    double eps;
    RunningUpdate update;
    int64_t total_count;
    const double* mean;
    const double* m2;
    const T* x;
    const T* weight;  // optional
    const T* bias;    // optional
    T* running_mean;  // required when update.enabled
    T* running_var;
    T* y;
    T* save_mean;    // optional
    T* save_invstd;  // optional
};

template <class T>
struct BackwardReduceArgs {
    Geometry g;
    const T* dy;
    const T* x;
    const T* save_mean;
    const T* save_invstd;
    double* sum_dy;
    double* sum_dy_xhat;
};

template <class T>
struct BackwardElementwiseArgs {
    Geometry g;
    int64_t total_count;
    const double* sum_dy;
    const double* sum_dy_xhat;
    const T* dy;
    const T* x;
    const T* weight;  // optional
    const T* save_mean;
    const T* save_invstd;
    T* dx;
};

template <class T>
struct SplitKernelTable {
    void (*local_statistics)(const LocalStatisticsArgs<T>&);
    void (*normalize)(const NormalizeArgs<T>&);
    void (*backward_reduce)(const BackwardReduceArgs<T>&);
    void (*backward_elementwise)(const BackwardElementwiseArgs<T>&);
};

struct SplitImplementation {
    const char* name;
    SplitKernelTable<float> f32;
    SplitKernelTable<double> f64;
};

// Merging is one algorithm for every implementation (it is O(parts*c), never hot): Chan, Golub &
// LeVeque (1979) pairwise update, parts in index order, empty parts skipped.
void merge_statistics_kernel(int64_t parts, int64_t c, const int64_t* counts, const double* means,
                             const double* m2s, int64_t* total_count, double* mean, double* m2);

const SplitImplementation& split_reference_implementation();  // src/cpu/ref/split_reference.cpp
const SplitImplementation& split_cpu_implementation();        // src/cpu/split.cpp

}  // namespace bnorm::detail
