#include "core/ops.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>

#include "bnorm/bnorm.hpp"
#include "core/kernels.hpp"

namespace bnorm::detail {
namespace {

[[noreturn]] void invalid(const char* op, const std::string& message) {
    throw InvalidArgument(std::string(op) + ": " + message);
}

// Messages use the caller's words: C callers set desc->n and pass NULL, C++ callers set shape.n
// and pass an empty span. The C++ API's ops are named "bnorm::...".
bool from_cpp(const char* op) { return std::strncmp(op, "bnorm::", 7) == 0; }
std::string field(const char* op, const char* c_name, const char* cpp_name) {
    return from_cpp(op) ? cpp_name : c_name;
}
std::string missing(const char* op) { return from_cpp(op) ? " is missing (an empty span)" : " is NULL"; }

// Shortest round-trip text of a double: -1e-09, not -0.000000.
std::string number(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", v);
    for (int precision = 1; precision < 17; ++precision) {
        char shorter[32];
        std::snprintf(shorter, sizeof shorter, "%.*g", precision, v);
        if (std::strtod(shorter, nullptr) == v) return shorter;
    }
    return text;
}

struct Problem {
    DType dtype;
    Geometry g;
    size_t element_size;  // of x, y, dy, dx
    size_t param_size;    // of every parameter/statistics buffer: 8 for BNORM_F64, else 4
};

Problem check_desc(const char* op, const bnorm_desc* desc) {
    if (!desc) invalid(op, "desc is NULL; pass a bnorm_desc with dtype, layout, n, c and spatial");
    DType dtype;
    size_t element_size;
    // Read the enums as plain ints: a C caller may store any int there, and loading an
    // out-of-range value as the enum type would be undefined behaviour.
    static_assert(sizeof(bnorm_dtype) == sizeof(int) && sizeof(bnorm_layout) == sizeof(int));
    int dtype_value = 0, layout_value = 0;
    std::memcpy(&dtype_value, &desc->dtype, sizeof dtype_value);
    std::memcpy(&layout_value, &desc->layout, sizeof layout_value);
    switch (dtype_value) {
        case BNORM_F32: dtype = DType::f32; element_size = 4; break;
        case BNORM_F64: dtype = DType::f64; element_size = 8; break;
        case BNORM_BF16: dtype = DType::bf16; element_size = 2; break;
        case BNORM_F16: dtype = DType::f16; element_size = 2; break;
        default:
            invalid(op, "desc->dtype = " + std::to_string(dtype_value) +
                            " is not a bnorm_dtype; use BNORM_F32 (0), BNORM_F64 (1), BNORM_BF16 (2) "
                            "or BNORM_F16 (3)");
    }
    Layout layout;
    switch (layout_value) {
        case BNORM_CHANNELS_FIRST: layout = Layout::channels_first; break;
        case BNORM_CHANNELS_LAST: layout = Layout::channels_last; break;
        default:
            invalid(op, field(op, "desc->layout", "shape.layout") + " = " + std::to_string(layout_value) +
                            " is not a layout; use " +
                            field(op, "BNORM_CHANNELS_FIRST (0) or BNORM_CHANNELS_LAST (1)",
                                  "Layout::channels_first or Layout::channels_last"));
    }
    const std::pair<const char*, int64_t> sizes[] = {{"n", desc->n}, {"c", desc->c}, {"spatial", desc->spatial}};
    const std::string prefix = field(op, "desc->", "shape.");
    for (const auto& [name, value] : sizes)
        if (value <= 0)
            invalid(op, prefix + name + " = " + std::to_string(value) +
                            " must be at least 1 (spatial is 1 for (N, C) input)");
    int64_t numel = 0;
    int64_t bytes = 0;
    if (__builtin_mul_overflow(desc->n, desc->c, &numel) ||
        __builtin_mul_overflow(numel, desc->spatial, &numel) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(element_size), &bytes) ||
        bytes > std::numeric_limits<std::ptrdiff_t>::max())
        invalid(op, prefix + "n * " + prefix + "c * " + prefix + "spatial = " + std::to_string(desc->n) + " * " +
                        std::to_string(desc->c) + " * " + std::to_string(desc->spatial) +
                        " elements overflow the address space; check the sizes");
    return Problem{dtype, Geometry{layout, desc->n, desc->c, desc->spatial}, element_size,
                   dtype == DType::f64 ? size_t{8} : size_t{4}};
}

// Inference uses only eps; training also momentum and running_var_unbiased.
enum class Uses { eps, all };

void check_options_impl(const char* op, const bnorm_options* options, Uses uses) {
    if (!options) invalid(op, "options is NULL; pass a bnorm_options, e.g. {1e-5, 0.1, 1}");
    const std::string prefix = field(op, "options->", "options.");
    if (!(options->eps >= 0.0) || !std::isfinite(options->eps))
        invalid(op, prefix + "eps = " + number(options->eps) +
                        " must be a finite number >= 0 (PyTorch's default is 1e-5)");
    if (uses == Uses::eps) return;
    if (std::isinf(options->momentum))
        invalid(op, prefix + "momentum is infinite; use a finite value (0.1 is PyTorch's default) or " +
                        field(op, "NaN", "std::nullopt") + " for the cumulative moving average");
    if (options->running_var_unbiased != 0 && options->running_var_unbiased != 1)
        invalid(op, prefix + "running_var_unbiased = " + std::to_string(options->running_var_unbiased) +
                        " must be 1 (unbiased, PyTorch) or 0 (biased, ONNX)");
}

void require(const char* op, const void* p, const char* name, const char* what) {
    if (!p) invalid(op, std::string(name) + missing(op) + "; it is required: pass " + what);
}

// A buffer of the call, for the overlap check: outputs may not overlap any other buffer, except
// the exact in-place aliases listed in `in_place` (names of inputs of the same size).
struct Buffer {
    const char* name;
    const void* data;
    size_t bytes;
    bool output;
    std::initializer_list<const char*> in_place = {};
};

bool allows(const Buffer& out, const Buffer& other) {
    if (out.data != other.data || out.bytes != other.bytes) return false;
    for (const char* name : out.in_place)
        if (std::string(name) == other.name) return true;
    return false;
}

void check_overlaps(const char* op, std::initializer_list<Buffer> buffers) {
    for (const Buffer& out : buffers) {
        if (!out.output || !out.data) continue;
        const auto* a = static_cast<const std::byte*>(out.data);
        for (const Buffer& other : buffers) {
            if (&other == &out || !other.data) continue;
            const auto* b = static_cast<const std::byte*>(other.data);
            const bool overlap = a < b + other.bytes && b < a + out.bytes;
            if (overlap && !allows(out, other))
                invalid(op, std::string(out.name) + " overlaps " + other.name +
                                "; give each output its own buffer (in place, only y = x and "
                                "dx = dy or dx = x are allowed)");
        }
    }
}

// The one dispatch point: the first implementation of the list that accepts the problem, then the
// kernel table of its element type, called as run(table, S{}) with S the element type.
template <class Run>
void dispatch(const char* op, const Problem& p, Run&& run) {
    const Implementation* list[] = {&cpu_implementation()};
    for (const Implementation* impl : list) {
        if (!impl->accepts(p.dtype, p.g)) continue;
        switch (p.dtype) {
            case DType::f32: return run(impl->f32, float{});
            case DType::f64: return run(impl->f64, double{});
            case DType::bf16: return run(impl->bf16, bfloat16{});
            case DType::f16: return run(impl->f16, float16{});
        }
    }
    throw Unsupported(std::string(op) + ": no implementation in this build serves this problem");
}

template <class T>
const T* in(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* out(void* p) { return static_cast<T*>(p); }

}  // namespace

void check_options(const char* op, const bnorm_options* options) { check_options_impl(op, options, Uses::all); }

void forward_training(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                      const void* x, const void* weight, const void* bias, void* running_mean,
                      void* running_var, int64_t* num_batches_tracked, void* y, void* save_mean,
                      void* save_invstd) {
    const Problem p = check_desc(op, desc);
    check_options_impl(op, options, Uses::all);
    require(op, x, "x", "the input, n*c*spatial values");
    require(op, y, "y", "the output, n*c*spatial values");
    if ((running_mean == nullptr) != (running_var == nullptr))
        invalid(op, std::string(running_mean ? "running_var" : "running_mean") + missing(op) + " but " +
                        (running_mean ? "running_mean" : "running_var") +
                        " is not; pass both (statistics tracked) or neither (not tracked)");
    const bool tracked = running_mean != nullptr;
    const bool cumulative = std::isnan(options->momentum);
    if (tracked && cumulative && !num_batches_tracked)
        invalid(op, field(op, "options->momentum is NaN", "options.momentum is std::nullopt") +
                        " (cumulative moving average) but num_batches_tracked" + missing(op) +
                        "; pass the batch counter, or a numeric momentum");
    if (tracked && num_batches_tracked &&
        (*num_batches_tracked < 0 || *num_batches_tracked == std::numeric_limits<int64_t>::max()))
        invalid(op, "*num_batches_tracked = " + std::to_string(*num_batches_tracked) +
                        " is out of range; it counts batches, from 0 (reset it to 0)");
    if (p.g.per_channel() < 2)
        invalid(op, "training needs more than 1 value per channel (n*spatial = " +
                        std::to_string(p.g.per_channel()) +
                        "): the batch variance is undefined; use a batch of at least 2, or inference");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.param_size;
    check_overlaps(op, {{"x", x, data, false},
                        {"weight", weight, param, false},
                        {"bias", bias, param, false},
                        {"running_mean", running_mean, param, true},
                        {"running_var", running_var, param, true},
                        {"num_batches_tracked", tracked ? num_batches_tracked : nullptr, sizeof(int64_t), true},
                        {"y", y, data, true, {"x"}},
                        {"save_mean", save_mean, param, true},
                        {"save_invstd", save_invstd, param, true}});
    RunningUpdate update;
    int64_t count = 0;
    if (tracked) {
        update.enabled = true;
        update.unbiased = options->running_var_unbiased == 1;
        if (num_batches_tracked) count = *num_batches_tracked + 1;
        update.factor = cumulative ? 1.0 / static_cast<double>(count) : options->momentum;
    }
    dispatch(op, p, [&](const auto& table, auto element) {
        using S = decltype(element);
        using P = param_t<S>;
        table.forward_training({p.g, options->eps, update, in<S>(x), in<P>(weight), in<P>(bias), out<P>(running_mean),
                                out<P>(running_var), out<S>(y), out<P>(save_mean), out<P>(save_invstd)});
    });
    if (tracked && num_batches_tracked) *num_batches_tracked = count;
}

void forward_inference(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                       const void* x, const void* weight, const void* bias,
                       const void* running_mean, const void* running_var, void* y) {
    const Problem p = check_desc(op, desc);
    check_options_impl(op, options, Uses::eps);
    require(op, x, "x", "the input, n*c*spatial values");
    require(op, y, "y", "the output, n*c*spatial values");
    require(op, running_mean, "running_mean", "the c running means (inference normalizes with them)");
    require(op, running_var, "running_var", "the c running variances (inference normalizes with them)");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.param_size;
    check_overlaps(op, {{"x", x, data, false},
                        {"weight", weight, param, false},
                        {"bias", bias, param, false},
                        {"running_mean", running_mean, param, false},
                        {"running_var", running_var, param, false},
                        {"y", y, data, true, {"x"}}});
    dispatch(op, p, [&](const auto& table, auto element) {
        using S = decltype(element);
        using P = param_t<S>;
        table.forward_inference({p.g, options->eps, in<S>(x), in<P>(weight), in<P>(bias), in<P>(running_mean),
                                 in<P>(running_var), out<S>(y)});
    });
}

void backward(const char* op, const bnorm_desc* desc, const void* dy, const void* x,
              const void* weight, const void* save_mean, const void* save_invstd, void* dx,
              void* dweight, void* dbias) {
    const Problem p = check_desc(op, desc);
    require(op, dy, "dy", "the gradient of the loss with respect to y, n*c*spatial values");
    require(op, x, "x", "the input of the forward pass, n*c*spatial values");
    require(op, save_mean, "save_mean", "the batch means saved by the training forward pass");
    require(op, save_invstd, "save_invstd", "the inverse standard deviations saved by the training forward pass");
    require(op, dx, "dx", "the output gradient buffer, n*c*spatial values");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.param_size;
    check_overlaps(op, {{"dy", dy, data, false},
                        {"x", x, data, false},
                        {"weight", weight, param, false},
                        {"save_mean", save_mean, param, false},
                        {"save_invstd", save_invstd, param, false},
                        {"dx", dx, data, true, {"dy", "x"}},
                        {"dweight", dweight, param, true},
                        {"dbias", dbias, param, true}});
    dispatch(op, p, [&](const auto& table, auto element) {
        using S = decltype(element);
        using P = param_t<S>;
        table.backward({p.g, in<S>(dy), in<S>(x), in<P>(weight), in<P>(save_mean), in<P>(save_invstd), out<S>(dx),
                        out<P>(dweight), out<P>(dbias)});
    });
}

void backward_inference(const char* op, const bnorm_desc* desc, const bnorm_options* options,
                        const void* dy, const void* x, const void* weight,
                        const void* running_mean, const void* running_var, void* dx,
                        void* dweight, void* dbias) {
    const Problem p = check_desc(op, desc);
    check_options_impl(op, options, Uses::eps);
    require(op, dy, "dy", "the gradient of the loss with respect to y, n*c*spatial values");
    require(op, x, "x", "the input of the forward pass, n*c*spatial values");
    require(op, running_mean, "running_mean", "the c running means the forward pass used");
    require(op, running_var, "running_var", "the c running variances the forward pass used");
    require(op, dx, "dx", "the output gradient buffer, n*c*spatial values");
    const size_t data = static_cast<size_t>(p.g.numel()) * p.element_size;
    const size_t param = static_cast<size_t>(p.g.c) * p.param_size;
    check_overlaps(op, {{"dy", dy, data, false},
                        {"x", x, data, false},
                        {"weight", weight, param, false},
                        {"running_mean", running_mean, param, false},
                        {"running_var", running_var, param, false},
                        {"dx", dx, data, true, {"dy", "x"}},
                        {"dweight", dweight, param, true},
                        {"dbias", dbias, param, true}});
    dispatch(op, p, [&](const auto& table, auto element) {
        using S = decltype(element);
        using P = param_t<S>;
        table.backward_inference({p.g, options->eps, in<S>(dy), in<S>(x), in<P>(weight), in<P>(running_mean),
                                  in<P>(running_var), out<S>(dx), out<P>(dweight), out<P>(dbias)});
    });
}

}  // namespace bnorm::detail
