// split_ops.cpp: argument checks and dispatch of the split operations (split_ops.hpp). The checks
// follow ops.cpp's wording; unlike there, n may be 0 (a process with no samples of the batch).
#include "core/split_ops.hpp"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>

#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"
#include "core/split_kernels.hpp"

namespace bnorm::detail {
namespace {

[[noreturn]] void invalid(const char* op, const std::string& message) {
    throw InvalidArgument(std::string(op) + ": " + message);
}

// C callers pass NULL and set desc->n; C++ callers pass an empty span and set shape.n.
bool from_cpp(const char* op) { return std::strncmp(op, "bnorm::", 7) == 0; }
std::string prefix(const char* op) { return from_cpp(op) ? "shape." : "desc->"; }
std::string missing(const char* op) { return from_cpp(op) ? " is missing (an empty span)" : " is NULL"; }

void require(const char* op, const void* p, const std::string& name, const std::string& what) {
    if (!p) invalid(op, name + missing(op) + "; it is required: pass " + what);
}

struct Part {
    DType dtype;
    Geometry g;
    size_t element_size;
};

Part check_desc(const char* op, const bnorm_desc* desc) {
    if (!desc) invalid(op, "desc is NULL; pass a bnorm_desc with dtype, layout, n, c and spatial");
    int dtype_value = 0, layout_value = 0;
    static_assert(sizeof(bnorm_dtype) == sizeof(int) && sizeof(bnorm_layout) == sizeof(int));
    std::memcpy(&dtype_value, &desc->dtype, sizeof dtype_value);
    std::memcpy(&layout_value, &desc->layout, sizeof layout_value);
    Part p{};
    switch (dtype_value) {
        case BNORM_F32: p.dtype = DType::f32; p.element_size = 4; break;
        case BNORM_F64: p.dtype = DType::f64; p.element_size = 8; break;
        case BNORM_BF16:
        case BNORM_F16:
            throw Unsupported(std::string(op) + ": the split operations take BNORM_F32 or BNORM_F64 data; convert "
                              "BNORM_BF16/BNORM_F16 to BNORM_F32");
        default:
            invalid(op, "desc->dtype = " + std::to_string(dtype_value) +
                            " is not a bnorm_dtype; use BNORM_F32 (0) or BNORM_F64 (1)");
    }
    if (layout_value != BNORM_CHANNELS_FIRST && layout_value != BNORM_CHANNELS_LAST)
        invalid(op, prefix(op) + "layout = " + std::to_string(layout_value) +
                        " is not a layout; use channels-first (0) or channels-last (1)");
    if (desc->n < 0)
        invalid(op, prefix(op) + "n = " + std::to_string(desc->n) +
                        " must be >= 0 (0: this process has no samples of the batch)");
    if (desc->c <= 0 || desc->spatial <= 0)
        invalid(op, prefix(op) + (desc->c <= 0 ? "c = " + std::to_string(desc->c) : "spatial = " + std::to_string(desc->spatial)) +
                        " must be at least 1 (spatial is 1 for (N, C) input)");
    int64_t numel = 0, bytes = 0;
    if (__builtin_mul_overflow(desc->n, desc->c, &numel) || __builtin_mul_overflow(numel, desc->spatial, &numel) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(p.element_size), &bytes) ||
        bytes > std::numeric_limits<std::ptrdiff_t>::max())
        invalid(op, prefix(op) + "n * c * spatial overflows the address space; check the sizes");
    p.g = Geometry{layout_value == BNORM_CHANNELS_LAST ? Layout::channels_last : Layout::channels_first, desc->n,
                   desc->c, desc->spatial};
    return p;
}

// Data pointers may be NULL only when the part is empty.
void require_data(const char* op, const Part& p, const void* ptr, const char* name, const char* what) {
    if (p.g.n > 0) require(op, ptr, name, what);
}

struct Region {
    const char* name;
    const void* data;
    size_t bytes;
    bool output;
    const char* may_alias = nullptr;  // an input that this output may be exactly (in place)
    const char* may_alias_too = nullptr;
};

void check_overlaps(const char* op, std::initializer_list<Region> regions) {
    for (const Region& out : regions) {
        if (!out.output || !out.data || out.bytes == 0) continue;
        const auto* a = static_cast<const std::byte*>(out.data);
        for (const Region& other : regions) {
            if (&other == &out || !other.data || other.bytes == 0) continue;
            const auto* b = static_cast<const std::byte*>(other.data);
            if (!(a < b + other.bytes && b < a + out.bytes)) continue;
            const bool exact = out.data == other.data && out.bytes == other.bytes;
            const auto named = [&](const char* n) { return n && std::strcmp(n, other.name) == 0; };
            if (exact && (named(out.may_alias) || named(out.may_alias_too))) continue;
            invalid(op, std::string(out.name) + " overlaps " + other.name +
                            "; give each output its own buffer (in place, only y = x and dx = dy or dx = x)");
        }
    }
}

void check_total_count(const char* op, const Part& p, int64_t total_count) {
    if (total_count < 2)
        invalid(op, "training needs more than 1 value per channel over all processes (total_count = " +
                        std::to_string(total_count) +
                        "): the batch variance is undefined; use a global batch of at least 2, or inference");
    if (total_count < p.g.per_channel())
        invalid(op, "total_count = " + std::to_string(total_count) + " is less than this part's n*spatial = " +
                        std::to_string(p.g.per_channel()) +
                        "; pass the total over all processes (bnorm_merge_statistics's total_count)");
}

template <class T>
const SplitKernelTable<T>& kernels() {
    const SplitImplementation& impl = split_cpu_implementation();
    if constexpr (std::is_same_v<T, double>) return impl.f64;
    else return impl.f32;
}

template <class T>
const T* in(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* out(void* p) { return static_cast<T*>(p); }

}  // namespace

void local_statistics(const char* op, const bnorm_desc* desc, const void* x, int64_t* count, double* mean,
                      double* m2) {
    const Part p = check_desc(op, desc);
    require_data(op, p, x, "x", "the input, n*c*spatial values");
    require(op, count, "count", "where to write n*spatial");
    require(op, mean, "mean", "c doubles for the means");
    require(op, m2, "m2", "c doubles for the sums of squared deviations");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t stats = static_cast<size_t>(p.g.c) * sizeof(double);
    check_overlaps(op, {{"x", x, data, false},
                        {"count", count, sizeof(int64_t), true},
                        {"mean", mean, stats, true},
                        {"m2", m2, stats, true}});
    if (p.dtype == DType::f64) kernels<double>().local_statistics({p.g, in<double>(x), mean, m2});
    else kernels<float>().local_statistics({p.g, in<float>(x), mean, m2});
    *count = p.g.per_channel();
}

void merge_statistics(const char* op, int64_t parts, int64_t c, const int64_t* counts, const double* means,
                      const double* m2s, int64_t* total_count, double* mean, double* m2) {
    if (parts < 1) invalid(op, "parts = " + std::to_string(parts) + " must be at least 1 (the number of processes)");
    if (c < 1) invalid(op, "c = " + std::to_string(c) + " must be at least 1 (the number of channels)");
    int64_t entries = 0;
    if (__builtin_mul_overflow(parts, c, &entries) || entries > std::numeric_limits<std::ptrdiff_t>::max() / 8)
        invalid(op, "parts * c overflows; check the sizes");
    require(op, counts, "counts", "one count per part");
    require(op, means, "means", "parts*c means, part after part");
    require(op, m2s, "m2s", "parts*c sums of squared deviations, part after part");
    require(op, total_count, "total_count", "where to write the total count");
    require(op, mean, "mean", "c doubles for the merged means");
    require(op, m2, "m2", "c doubles for the merged sums of squared deviations");
    int64_t total = 0;
    for (int64_t i = 0; i < parts; ++i) {
        if (counts[i] < 0)
            invalid(op, "counts[" + std::to_string(i) + "] = " + std::to_string(counts[i]) +
                            " is negative; a count is n*spatial of a part, >= 0");
        if (__builtin_add_overflow(total, counts[i], &total))
            invalid(op, "the counts add up past int64; check counts");
    }
    for (int64_t i = 0; i < entries; ++i)
        if (m2s[i] < 0)
            invalid(op, "m2s[" + std::to_string(i) + "] = " + std::to_string(m2s[i]) +
                            " is negative; pass sums of squared deviations (bnorm_local_statistics's m2)");
    const size_t table = static_cast<size_t>(entries) * sizeof(double);
    const size_t stats = static_cast<size_t>(c) * sizeof(double);
    check_overlaps(op, {{"counts", counts, static_cast<size_t>(parts) * sizeof(int64_t), false},
                        {"means", means, table, false},
                        {"m2s", m2s, table, false},
                        {"total_count", total_count, sizeof(int64_t), true},
                        {"mean", mean, stats, true},
                        {"m2", m2, stats, true}});
    merge_statistics_kernel(parts, c, counts, means, m2s, total_count, mean, m2);
}

void normalize_with_statistics(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                               const void* x, const void* weight, const void* bias, int64_t total_count,
                               const double* mean, const double* m2, void* running_mean, void* running_var,
                               int64_t* num_batches_tracked, void* y, void* save_mean, void* save_invstd) {
    const Part p = check_desc(op, desc);
    check_options(op, options);
    require_data(op, p, x, "x", "the input, n*c*spatial values");
    require_data(op, p, y, "y", "the output, n*c*spatial values");
    require(op, mean, "mean", "the c merged means (bnorm_merge_statistics)");
    require(op, m2, "m2", "the c merged sums of squared deviations (bnorm_merge_statistics)");
    check_total_count(op, p, total_count);
    for (int64_t c = 0; c < p.g.c; ++c)
        if (m2[c] < 0)
            invalid(op, "m2[" + std::to_string(c) + "] = " + std::to_string(m2[c]) +
                            " is negative; pass the merged sums of squared deviations");
    if ((running_mean == nullptr) != (running_var == nullptr))
        invalid(op, std::string(running_mean ? "running_var" : "running_mean") + missing(op) + " but " +
                        (running_mean ? "running_mean" : "running_var") +
                        " is not; pass both (statistics tracked) or neither (not tracked)");
    const bool tracked = running_mean != nullptr;
    const bool cumulative = std::isnan(options->momentum);
    if (tracked && cumulative && !num_batches_tracked)
        invalid(op, "the momentum is the cumulative average but num_batches_tracked" + missing(op) +
                        "; pass the batch counter, or a numeric momentum");
    if (tracked && num_batches_tracked &&
        (*num_batches_tracked < 0 || *num_batches_tracked == std::numeric_limits<int64_t>::max()))
        invalid(op, "*num_batches_tracked = " + std::to_string(*num_batches_tracked) +
                        " is out of range; it counts batches, from 0 (reset it to 0)");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.element_size;
    const size_t stats = static_cast<size_t>(p.g.c) * sizeof(double);
    check_overlaps(op, {{"x", x, data, false},
                        {"weight", weight, param, false},
                        {"bias", bias, param, false},
                        {"mean", mean, stats, false},
                        {"m2", m2, stats, false},
                        {"running_mean", running_mean, param, true},
                        {"running_var", running_var, param, true},
                        {"num_batches_tracked", tracked ? num_batches_tracked : nullptr, sizeof(int64_t), true},
                        {"y", y, data, true, "x"},
                        {"save_mean", save_mean, param, true},
                        {"save_invstd", save_invstd, param, true}});
    RunningUpdate update;
    int64_t batches = 0;
    if (tracked) {
        update.enabled = true;
        update.unbiased = options->running_var_unbiased == 1;
        if (num_batches_tracked) batches = *num_batches_tracked + 1;
        update.factor = cumulative ? 1.0 / static_cast<double>(batches) : options->momentum;
    }
    if (p.dtype == DType::f64)
        kernels<double>().normalize({p.g, options->eps, update, total_count, mean, m2, in<double>(x),
                                     in<double>(weight), in<double>(bias), out<double>(running_mean),
                                     out<double>(running_var), out<double>(y), out<double>(save_mean),
                                     out<double>(save_invstd)});
    else
        kernels<float>().normalize({p.g, options->eps, update, total_count, mean, m2, in<float>(x), in<float>(weight),
                                    in<float>(bias), out<float>(running_mean), out<float>(running_var),
                                    out<float>(y), out<float>(save_mean), out<float>(save_invstd)});
    if (tracked && num_batches_tracked) *num_batches_tracked = batches;
}

void backward_reduce(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
                     const void* save_mean, const void* save_invstd, double* sum_dy, double* sum_dy_xhat) {
    const Part p = check_desc(op, desc);
    require_data(op, p, dy, "dy", "the gradient of the loss with respect to y, n*c*spatial values");
    require_data(op, p, x, "x", "the input of the forward pass, n*c*spatial values");
    require(op, save_mean, "save_mean", "the means saved by the forward pass (normalize_with_statistics)");
    require(op, save_invstd, "save_invstd", "the inverse standard deviations saved by the forward pass");
    require(op, sum_dy, "sum_dy", "c doubles for the sums of dy");
    require(op, sum_dy_xhat, "sum_dy_xhat", "c doubles for the sums of dy*xhat");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.element_size;
    const size_t stats = static_cast<size_t>(p.g.c) * sizeof(double);
    check_overlaps(op, {{"dy", dy, data, false},
                        {"x", x, data, false},
                        {"save_mean", save_mean, param, false},
                        {"save_invstd", save_invstd, param, false},
                        {"sum_dy", sum_dy, stats, true},
                        {"sum_dy_xhat", sum_dy_xhat, stats, true}});
    if (p.dtype == DType::f64)
        kernels<double>().backward_reduce({p.g, in<double>(dy), in<double>(x), in<double>(save_mean),
                                           in<double>(save_invstd), sum_dy, sum_dy_xhat});
    else
        kernels<float>().backward_reduce({p.g, in<float>(dy), in<float>(x), in<float>(save_mean),
                                          in<float>(save_invstd), sum_dy, sum_dy_xhat});
}

void backward_elementwise(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
                          const void* weight, const void* save_mean, const void* save_invstd,
                          int64_t total_count, const double* sum_dy, const double* sum_dy_xhat, void* dx) {
    const Part p = check_desc(op, desc);
    require_data(op, p, dy, "dy", "the gradient of the loss with respect to y, n*c*spatial values");
    require_data(op, p, x, "x", "the input of the forward pass, n*c*spatial values");
    require_data(op, p, dx, "dx", "the output gradient buffer, n*c*spatial values");
    require(op, save_mean, "save_mean", "the means saved by the forward pass (normalize_with_statistics)");
    require(op, save_invstd, "save_invstd", "the inverse standard deviations saved by the forward pass");
    require(op, sum_dy, "sum_dy", "the c sums of dy over all processes");
    require(op, sum_dy_xhat, "sum_dy_xhat", "the c sums of dy*xhat over all processes");
    check_total_count(op, p, total_count);
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.element_size;
    const size_t stats = static_cast<size_t>(p.g.c) * sizeof(double);
    check_overlaps(op, {{"dy", dy, data, false},
                        {"x", x, data, false},
                        {"weight", weight, param, false},
                        {"save_mean", save_mean, param, false},
                        {"save_invstd", save_invstd, param, false},
                        {"sum_dy", sum_dy, stats, false},
                        {"sum_dy_xhat", sum_dy_xhat, stats, false},
                        {"dx", dx, data, true, "dy", "x"}});
    if (p.dtype == DType::f64)
        kernels<double>().backward_elementwise({p.g, total_count, sum_dy, sum_dy_xhat, in<double>(dy), in<double>(x),
                                                in<double>(weight), in<double>(save_mean), in<double>(save_invstd),
                                                out<double>(dx)});
    else
        kernels<float>().backward_elementwise({p.g, total_count, sum_dy, sum_dy_xhat, in<float>(dy), in<float>(x),
                                               in<float>(weight), in<float>(save_mean), in<float>(save_invstd),
                                               out<float>(dx)});
}

}  // namespace bnorm::detail
