// cases.hpp: what bench_kernels and bench_onednn both measure (issue 5): the shapes, layouts,
// operations and dtypes, their benchmark names, the deterministic inputs, the bytes counted, the
// command-line filters, and the low-precision conversions. bench/run.py parses the names.
#pragma once

#include <benchmark/benchmark.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace bench {

struct Shape {
    int64_t n, c, h, w;  // (N, C) input: h = w = 1
    bool is_2d() const { return h == 1 && w == 1; }
    int64_t spatial() const { return h * w; }
    int64_t count() const { return n * c * h * w; }
    std::string name() const {
        return is_2d() ? std::to_string(n) + "x" + std::to_string(c)
                       : std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
    }
};

inline const std::vector<Shape>& shapes() {
    static const std::vector<Shape> all{
        {32, 64, 112, 112}, {64, 256, 14, 14}, {8, 32, 256, 256}, {256, 1024, 1, 1}, {60, 100, 1, 1}};
    return all;
}

enum class Layout { nchw, nhwc, nc };  // nc: (N, C) input, where both layouts are the same memory
inline const char* layout_name(Layout l) { return l == Layout::nchw ? "nchw" : l == Layout::nhwc ? "nhwc" : "nc"; }
inline std::vector<Layout> layouts_of(const Shape& s) {
    if (s.is_2d()) return {Layout::nc};
    return {Layout::nchw, Layout::nhwc};
}

enum class Op { fwd_train, backward, fwd_infer, bwd_infer };
inline const std::vector<Op>& ops() {
    static const std::vector<Op> all{Op::fwd_train, Op::backward, Op::fwd_infer, Op::bwd_infer};
    return all;
}
inline const char* op_name(Op o) {
    switch (o) {
        case Op::fwd_train: return "fwd-train";
        case Op::backward: return "backward";
        case Op::fwd_infer: return "fwd-infer";
        case Op::bwd_infer: return "bwd-infer";
    }
    return "?";
}
inline bool is_backward(Op o) { return o == Op::backward || o == Op::bwd_infer; }

// The dtype values are bnorm_dtype's (BNORM_F32 = 0, BNORM_BF16 = 2, BNORM_F16 = 3).
enum class DType { f32 = 0, bf16 = 2, f16 = 3 };
inline const std::vector<DType>& dtypes() {
    static const std::vector<DType> all{DType::f32, DType::bf16, DType::f16};
    return all;
}
inline const char* dtype_name(DType d) { return d == DType::f32 ? "f32" : d == DType::bf16 ? "bf16" : "f16"; }
inline size_t element_size(DType d) { return d == DType::f32 ? 4 : 2; }

// Bytes counted (issue 5): 2*|x| for a forward pass (read x, write y), 3*|x| for a backward pass
// (read x and dy, write dx), |x| in bytes of the element type.
inline int64_t bytes_moved(const Shape& s, DType d, Op o) {
    return (is_backward(o) ? 3 : 2) * s.count() * static_cast<int64_t>(element_size(d));
}

// "<tool>/<shape>/<layout>/<dtype>/<op>/t<threads>", e.g. bnorm/32x64x112x112/nchw/f32/fwd-train/t1.
inline std::string case_name(const char* tool, const Shape& s, Layout l, DType d, Op o, int threads) {
    return std::string(tool) + "/" + s.name() + "/" + layout_name(l) + "/" + dtype_name(d) + "/" + op_name(o) +
           "/t" + std::to_string(threads);
}

// ---- low-precision element types (the conversions are only used outside the timed loops) ----
inline uint16_t to_bf16(float f) {  // round to nearest even
    const uint32_t u = std::bit_cast<uint32_t>(f);
    if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
    return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
inline float from_bf16(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }
inline uint16_t to_f16(float f) { return std::bit_cast<uint16_t>(static_cast<_Float16>(f)); }
inline float from_f16(uint16_t h) { return static_cast<float>(std::bit_cast<_Float16>(h)); }

// A tensor of n elements of dtype d, 64-byte aligned.
class Buffer {
public:
    Buffer() = default;
    Buffer(DType d, int64_t n) : dtype_(d), count_(n) {
        const size_t bytes = (static_cast<size_t>(n) * element_size(d) + 63) / 64 * 64;
        data_ = std::aligned_alloc(64, bytes > 0 ? bytes : 64);
        if (!data_) {
            std::fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
            std::exit(1);
        }
        std::memset(data_, 0, bytes);  // touched once, outside any timed loop
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& o) noexcept { *this = std::move(o); }
    Buffer& operator=(Buffer&& o) noexcept {
        std::swap(data_, o.data_);
        dtype_ = o.dtype_;
        count_ = o.count_;
        return *this;
    }
    ~Buffer() { std::free(data_); }
    void* data() const { return data_; }
    int64_t count() const { return count_; }
    DType dtype() const { return dtype_; }
    float get(int64_t i) const {
        switch (dtype_) {
            case DType::f32: return static_cast<const float*>(data_)[i];
            case DType::bf16: return from_bf16(static_cast<const uint16_t*>(data_)[i]);
            case DType::f16: return from_f16(static_cast<const uint16_t*>(data_)[i]);
        }
        return 0;
    }
    void set(int64_t i, float v) {
        switch (dtype_) {
            case DType::f32: static_cast<float*>(data_)[i] = v; break;
            case DType::bf16: static_cast<uint16_t*>(data_)[i] = to_bf16(v); break;
            case DType::f16: static_cast<uint16_t*>(data_)[i] = to_f16(v); break;
        }
    }
    // The same values as float32 (exact: every bf16/f16 value is a float).
    Buffer to_f32() const {
        Buffer out(DType::f32, count_);
        for (int64_t i = 0; i < count_; ++i) out.set(i, get(i));
        return out;
    }

private:
    void* data_ = nullptr;
    DType dtype_ = DType::f32;
    int64_t count_ = 0;
};

// ---- deterministic inputs: the same in every binary -----------------------------------------
inline float hashed_uniform(uint64_t i, uint64_t seed) {  // in [-1, 1)
    uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(static_cast<double>(z >> 40) / static_cast<double>(1ull << 23) - 1.0);
}
inline int64_t channel_of(const Shape& s, Layout l, int64_t i) {
    return l == Layout::nchw ? (i / s.spatial()) % s.c : i % s.c;
}
// x: per-channel offset and spread; dy: uniform.
inline void fill_x(Buffer& x, const Shape& s, Layout l) {
    for (int64_t i = 0; i < x.count(); ++i) {
        const int64_t c = channel_of(s, l, i);
        x.set(i, 0.5f * static_cast<float>(c % 7) - 1.5f + (1.0f + 0.25f * static_cast<float>(c % 3)) * hashed_uniform(static_cast<uint64_t>(i), 1));
    }
}
inline void fill_dy(Buffer& dy) {
    for (int64_t i = 0; i < dy.count(); ++i) dy.set(i, hashed_uniform(static_cast<uint64_t>(i), 2));
}
struct Params {  // float32 per-channel buffers, c elements each
    std::vector<float> gamma, beta, running_mean, running_var;
    explicit Params(int64_t c) : gamma(c), beta(c), running_mean(c), running_var(c) {
        for (int64_t k = 0; k < c; ++k) {
            gamma[k] = 1.0f + 0.1f * static_cast<float>(k % 5);
            beta[k] = 0.1f * static_cast<float>(k % 3);
            running_mean[k] = 0.1f * static_cast<float>(k % 4) - 0.5f;
            running_var[k] = 1.0f + 0.05f * static_cast<float>(k % 6);
        }
    }
};
constexpr double kEps = 1e-5;
constexpr double kMomentum = 0.1;

// Largest |a - b| / (1 + max |b|) over the elements: a scale-aware difference for outputs of
// order 1 (y, dx) and for sums over a whole channel (dgamma, dbeta) alike.
template <class GetA, class GetB>
double scaled_max_diff(int64_t n, GetA a, GetB b) {
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double bi = b(i);
        diff = std::fmax(diff, std::fabs(a(i) - bi));
        scale = std::fmax(scale, std::fabs(bi));
    }
    return diff / (1.0 + scale);
}

// The state of one case, kept while Google Benchmark runs its repetitions (they run one after
// the other) so that buffers are allocated and touched once per case, not once per repetition.
template <class T, class Make>
T& cached(const std::string& key, Make make) {
    static std::string current;
    static std::unique_ptr<T> state;
    if (!state || current != key) {
        state.reset();  // free the previous case's buffers first
        state = make();
        current = key;
    }
    return *state;
}

// ---- command line: --threads=T (one thread count per process), --dtypes=f32,bf16, --quick ---
struct Filters {
    int threads = 1;
    std::vector<std::string> dtypes{"f32", "bf16", "f16"};
    bool quick = false;  // the shapes 64x256x14x14 and 60x100 only
    bool check = true;   // bench_onednn: compare with bnorm before timing
    bool wants(DType d) const {
        for (const auto& s : dtypes)
            if (s == dtype_name(d)) return true;
        return false;
    }
    bool wants(const Shape& s) const { return !quick || s.name() == "64x256x14x14" || s.name() == "60x100"; }
};
// Call after benchmark::Initialize, which leaves the arguments it does not know.
inline Filters parse_filters(int argc, char** argv) {
    Filters f;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a.rfind("--threads=", 0) == 0) {
            f.threads = std::atoi(a.c_str() + 10);
        } else if (a.rfind("--dtypes=", 0) == 0) {
            f.dtypes.clear();
            std::string rest = a.substr(9);
            for (size_t p; (p = rest.find(',')) != std::string::npos; rest = rest.substr(p + 1))
                f.dtypes.push_back(rest.substr(0, p));
            if (!rest.empty()) f.dtypes.push_back(rest);
        } else if (a == "--quick") {
            f.quick = true;
        } else if (a == "--no-check") {
            f.check = false;
        } else {
            std::fprintf(stderr, "%s: unknown argument %s (known: --threads=T --dtypes=f32,bf16,f16 --quick --no-check "
                                 "and Google Benchmark's --benchmark_* flags)\n", argv[0], a.c_str());
            std::exit(2);
        }
    }
    if (f.threads < 1) {
        std::fprintf(stderr, "%s: --threads must be >= 1\n", argv[0]);
        std::exit(2);
    }
    return f;
}

// Calls fn(shape, layout, dtype, op) for every case that the filters keep.
template <class Fn>
void for_each_case(const Filters& f, Fn fn) {
    for (const Shape& s : shapes()) {
        if (!f.wants(s)) continue;
        for (Layout l : layouts_of(s))
            for (DType d : dtypes())
                if (f.wants(d))
                    for (Op o : ops()) fn(s, l, d, o);
    }
}

// One Google Benchmark per case, in milliseconds of real time (the kernels are multithreaded).
template <class Fn>
void register_case(const std::string& name, Fn fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The main of both binaries: Google Benchmark's flags, then ours; setup(filters) sets the thread
// count, registers the cases and adds its context; then every case runs.
template <class Setup>
int bench_main(int argc, char** argv, Setup setup) {
    benchmark::Initialize(&argc, argv);
    const Filters f = parse_filters(argc, argv);
    setup(f);
    benchmark::AddCustomContext("threads", std::to_string(f.threads));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace bench
