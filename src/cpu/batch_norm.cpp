// batch_norm.cpp: the production CPU kernels, written once with Highway and compiled for several
// instruction sets (AVX-512, AVX2, and a portable baseline); Highway picks the best one the
// machine has, once, at the first call (HWY_DYNAMIC_DISPATCH, at the bottom of this file).
//
// Batch normalization is memory-bound, so every operation is arranged to move each byte as few
// times as possible:
//   forward training, channels-first: one task per channel (or per group of channels with short
//     planes, visited sample by sample) reads the channel once for its
//     statistics (single-pass shifted sums per chunk, merged with Chan's formula) and normalizes
//     it while it is still in the core's cache (a channel of 32x112x112 float32 is 1.6 MB); for
//     problems of the last-level cache with short planes, the normalization runs instead over the
//     whole array in memory order after every channel's statistics (two_pass_in_order), and
//     problems beyond L2 with short planes pipeline groups of channels: one group's statistics
//     alongside the previous group's output, read back from L2 (pipelined_forward);
//   forward training, channels-last: one read for the statistics (per-chunk sums, vectorized
//     across channels with the accumulators in registers), then one read + one write;
//   backward: sum dy and sum dy*(x - mean) in one pass, then dx, per channel while in cache (or,
//     as the forward, in memory order after every channel's sums, the sums too in memory order
//     for runs of 256 bytes to 4 KB: in_order_gradients, also backward in inference mode's pass;
//     pipelined as the forward where it fits: pipelined_backward);
//   inference, backward in inference mode: one read, one write (y = x*scale + shift, one FMA).
// Channels-first passes in memory order over planes of a vector to 4 KB (FlatMap, FlatGradients)
// go in vectors aligned to the array, not plane by plane: a vector that spans two planes takes
// each plane's coefficients in its lanes, so short planes cost no partial vectors of their own.
// Outputs larger than the caches are written with non-temporal stores (no read-for-ownership),
// except in runs too short to reach whole aligned vectors (channels-first planes under 4 KB, which
// the flat walks stream as whole vectors only when a pass's tensors exceed kFlatStreamBytes).
//
// Determinism: the chunks depend only on the shape, each chunk is reduced by one thread in a fixed
// order and chunk results are merged in chunk order, so the results are bitwise identical for
// every thread count (they may differ between instruction sets in the last bits: the vector width
// sets the order of the additions within a chunk).
//
// Accuracy: sums accumulate in the compute type (float for float32 and 16-bit data, double for
// double) over blocks of 16 values per lane, which are added into double totals (see "reductions"
// below: each block's moments are taken around its own first values, so that large offsets or
// outliers cost float precision only within a block). A chunk's moments are then the shifted sums
// around x0, the chunk's first value, in double: since x0 is one of the chunk's values,
// (mean - x0)^2 <= M2, so the cancellation in M2 = sum d^2 - (sum d)^2/n costs at most a factor n
// (8192, or for channels-last the rows of a chunk: 256 KiB of a tensor's rows, or m/64 for
// large problems) of double's precision. Chunks are merged with
// Chan's formula in double. 16-bit data are widened to float32 on load and rounded to nearest-even
// on store; parameters and statistics stay float32.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/batch_norm.cpp"
// AVX-512, AVX2 and the baseline: the SSE4/SSSE3 targets would only lengthen the build.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4 | HWY_AVX3_DL)
#endif
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/kernels.hpp"
#include "core/threading.hpp"

#ifndef BNORM_CPU_KERNEL_COMMON
#define BNORM_CPU_KERNEL_COMMON
namespace bnorm::detail::cpu {

// Values per statistics chunk: the factor that bounds the cancellation (see the top), and the
// unit of parallel work. 8192 float32 = 32 KiB, in L1/L2 between the two uses of a chunk.
constexpr int64_t kChunkElements = 8192;
// Interleaved problems have at most this many chunks (more rows per chunk instead): enough for
// the threads, and few enough that merging the chunks' per-channel moments stays cheap.
constexpr int64_t kMaxInterleavedChunks = 64;
// Interleaved chunks hold at least this many bytes of each tensor: the chunks' per-channel sums
// (three doubles per channel and chunk) are then small beside the data, and merging them, across
// cores with two threads, costs little. 256 KiB: with chunks of 16 rows of 256x1024 float32 (64 KiB)
// the merges were a fifth of the training forward, and two threads were slower than one; 256 KiB
// chunks made it 1.15-1.3x faster on one thread and 1.2-1.4x on two (an AMD Zen 5 host); 512 KiB
// lost the backward's second pass from the L2 cache (x and dy of a chunk: 1 MiB).
constexpr int64_t kInterleavedChunkBytes = int64_t{256} << 10;
// Outputs of problems above this size are streamed to memory (they would not stay in the L2 caches).
constexpr int64_t kStreamBytes = int64_t{4} << 20;
// Inputs of problems above this size (per tensor) are prefetched kAheadBytes ahead of their use
// (see "software prefetch" below).
// 16 MB: 64x256x14x14 float32 (12.8 MB per tensor), which runs largely from the caches, was 1.1x
// slower with prefetches; 8x32x256x256 bfloat16 (33.5 MB) 1.2-1.5x faster.
constexpr int64_t kPrefetchBytes = int64_t{16} << 20;
constexpr int64_t kAheadBytes = 4096;

// How a problem's memory traffic goes: streaming stores, software prefetch.
struct Far {
    bool stream = false;
    bool prefetch = false;
};

// The split of a problem into chunks. Interleaved ((rows, c): channels-last, or channels-first
// with spatial 1): chunk k is rows [k*rows, (k+1)*rows) of all channels. Planar (channels-first,
// spatial > 1): chunk k of channel c is its plane positions [k*kChunkElements, ...), position i
// being sample i / spatial, offset i % spatial.
struct Plan {
    Geometry g;
    bool interleaved;
    int64_t chunk_len;  // rows (interleaved) or plane positions (planar) per chunk
    int64_t chunks;     // chunks per channel
    Far far;

    Plan(const Geometry& geometry, int64_t element_bytes) : g(geometry), interleaved(geometry.interleaved()) {
        far.stream = g.numel() * element_bytes > kStreamBytes;
        far.prefetch = g.numel() * element_bytes > kPrefetchBytes;
        const int64_t m = g.per_channel();
        chunk_len = interleaved ? std::max({int64_t{16}, kInterleavedChunkBytes / (g.c * element_bytes),
                                            (m + kMaxInterleavedChunks - 1) / kMaxInterleavedChunks})
                                : kChunkElements;
        chunk_len = std::min(chunk_len, m);
        chunks = (m + chunk_len - 1) / chunk_len;
    }
    int64_t begin(int64_t k) const { return k * chunk_len; }
    int64_t end(int64_t k) const { return std::min(g.per_channel(), (k + 1) * chunk_len); }
};

// Calls run(offset, length) for each contiguous run of channel c's plane positions [i0, i1).
template <class Run>
void for_each_run(const Geometry& g, int64_t c, int64_t i0, int64_t i1, Run&& run) {
    for (int64_t i = i0; i < i1;) {
        const int64_t sample = i / g.spatial, position = i % g.spatial;
        const int64_t length = std::min(g.spatial - position, i1 - i);
        run((sample * g.c + c) * g.spatial + position, length);
        i += length;
    }
}

// Scratch memory of the calling thread, reused across calls: no allocation once warmed up.
inline double* workspace(size_t doubles) {
    thread_local std::vector<double> buffer;
    if (buffer.size() < doubles) buffer.resize(doubles);
    return buffer.data();
}

// Moments of a set of values: count, mean, sum of squared deviations.
struct Moments {
    double n = 0, mean = 0, m2 = 0;
};

// From the shifted sums s1 = sum d, s2 = sum d^2 of n values d = x - shift.
inline Moments from_shifted(double n, double shift, double s1, double s2) {
    return Moments{n, shift + s1 / n, std::max(0.0, s2 - s1 * s1 / n)};
}

// Chan, Golub & LeVeque (1979): the moments of the union of two disjoint sets.
inline void merge(Moments& a, const Moments& b) {
    const double n = a.n + b.n;
    const double delta = b.mean - a.mean;
    a.mean += delta * (b.n / n);
    a.m2 += b.m2 + delta * delta * (a.n * b.n / n);
    a.n = n;
}

// Whether the processor has AVX512-BF16 (vcvtneps2bf16), asked once at load time.
#if defined(__x86_64__) && defined(__GNUC__)
inline const bool kHasAvx512Bf16 = (__builtin_cpu_init(), __builtin_cpu_supports("avx512bf16"));
#else
inline const bool kHasAvx512Bf16 = false;
#endif

}  // namespace bnorm::detail::cpu
#endif  // BNORM_CPU_KERNEL_COMMON

HWY_BEFORE_NAMESPACE();
namespace bnorm::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using cpu::for_each_run;
using cpu::Moments;
using cpu::Plan;

// ---- loads and stores of the element types, as vectors of the compute type ---------------------
// Compute type: double for double data, float otherwise.
template <class S>
using Compute = std::conditional_t<std::is_same_v<S, double>, double, float>;

#undef BNORM_SOFT_FLOAT16
#if HWY_TARGET == HWY_EMU128 || HWY_TARGET == HWY_SCALAR
#define BNORM_SOFT_FLOAT16 1  // Highway's portable float16 conversion truncates: use ours
#else
#define BNORM_SOFT_FLOAT16 0  // F16C's vcvtph2ps / vcvtps2ph (round to nearest even)
#endif

template <class D>
HWY_INLINE hn::Vec<D> load(D d, const float* p) { return hn::LoadU(d, p); }
template <class D>
HWY_INLINE hn::Vec<D> load(D d, const double* p) { return hn::LoadU(d, p); }
template <class D>
HWY_INLINE hn::Vec<D> load(D d, const bfloat16* p) {
    const hn::Rebind<uint16_t, D> d16;
    const hn::RebindToUnsigned<D> d32;
    const auto bits = hn::PromoteTo(d32, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p)));
    return hn::BitCast(d, hn::ShiftLeft<16>(bits));
}
template <class D>
HWY_INLINE hn::Vec<D> load(D d, const float16* p) {
#if BNORM_SOFT_FLOAT16
    HWY_ALIGN float values[hn::MaxLanes(d)];
    for (size_t i = 0; i < hn::Lanes(d); ++i) values[i] = to_float(p[i]);
    return hn::Load(d, values);
#else
    const hn::Rebind<hwy::float16_t, D> d16;
    return hn::PromoteTo(d, hn::LoadU(d16, reinterpret_cast<const hwy::float16_t*>(p)));
#endif
}

// A vector of lanes as they are, at p: streamed (non-temporal) when `stream` (p then aligned).
template <class D>
HWY_INLINE void put(D d, hn::Vec<D> v, hn::TFromD<D>* p, bool stream) {
    if (stream) hn::Stream(v, d, p);
    else hn::StoreU(v, d, p);
}

// Stores v at p; streaming (non-temporal) when `stream` and p is aligned to the stored vector.
template <class D>
HWY_INLINE void store(D d, hn::Vec<D> v, float* p, bool stream) {
    put(d, v, p, stream);
}
template <class D>
HWY_INLINE void store(D d, hn::Vec<D> v, double* p, bool stream) {
    put(d, v, p, stream);
}
#if HWY_TARGET == HWY_AVX3
// The lanes that AVX512-BF16's vcvtneps2bf16 would flush to zero (vfpclassps category 0x20:
// subnormal).
HWY_INLINE __mmask16 subnormal_lanes(__m512 v) { return _mm512_fpclass_ps_mask(v, 0x20); }
// v (16 floats, no subnormal lane) rounded to bfloat16 by vcvtneps2bf16 and put at p.
template <class D>
HWY_INLINE void put_bf16(D, __m512 v, bfloat16* p, bool stream) {
    __m256i half;
    asm("vcvtneps2bf16 %1, %0" : "=v"(half) : "v"(v));
    const hn::Rebind<uint16_t, D> d16;
    put(d16, hn::Vec<decltype(d16)>{half}, reinterpret_cast<uint16_t*>(p), stream);
}
#endif

template <class D>
HWY_INLINE void store(D d, hn::Vec<D> v, bfloat16* p, bool stream) {
    const hn::RebindToUnsigned<D> d32;
    const auto bits = hn::BitCast(d32, v);
#if HWY_TARGET == HWY_AVX3
    // AVX512-BF16's vcvtneps2bf16 rounds the same way (nearest even, NaN quieted) except that it
    // flushes subnormal inputs to zero: it is used for whole vectors without subnormals, through
    // inline assembly since this Highway version has no target with it.
    if constexpr (hn::MaxLanes(d) == 16) {
        // vfpclassps (AVX512DQ, part of this target) with category 0x20: the subnormal lanes.
        if (cpu::kHasAvx512Bf16 && subnormal_lanes(v.raw) == 0) {
            put_bf16(d, v.raw, p, stream);
            return;
        }
    }
#else
    (void)d;
#endif
    // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the high half; a NaN keeps
    // its high half with the quiet bit set (rounding could carry it into an infinity).
    const auto odd = hn::And(hn::ShiftRight<16>(bits), hn::Set(d32, 1u));
    const auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(d32, 0x7fffu), odd)));
    const auto quiet = hn::ShiftRight<16>(hn::Or(bits, hn::Set(d32, 0x00400000u)));
    const auto half = hn::IfThenElse(hn::RebindMask(d32, hn::IsNaN(v)), quiet, rounded);
    const hn::Rebind<uint16_t, D> d16;
    put(d16, hn::DemoteTo(d16, hn::BitCast(hn::RebindToSigned<D>(), half)), reinterpret_cast<uint16_t*>(p), stream);
}
template <class D>
HWY_INLINE void store(D d, hn::Vec<D> v, float16* p, bool stream) {
#if BNORM_SOFT_FLOAT16
    (void)stream;
    HWY_ALIGN float values[hn::MaxLanes(d)];
    hn::Store(v, d, values);
    for (size_t i = 0; i < hn::Lanes(d); ++i) p[i] = to_float16(values[i]);
#else
    const hn::Rebind<hwy::float16_t, D> d16;
    const hn::Rebind<uint16_t, D> du16;
    put(du16, hn::BitCast(du16, hn::DemoteTo(d16, v)), reinterpret_cast<uint16_t*>(p), stream);
#endif
}

// Whether store_pair stores two vectors of S as one: bfloat16 on AVX-512 (16 floats a vector),
// where AVX512-BF16's vcvtne2ps2bf16 converts two vectors in one instruction and one 64-byte store
// writes both (a cache line, when aligned). Elsewhere store_pair is two stores.
template <class S, class D>
constexpr bool kPairedStores = HWY_TARGET == HWY_AVX3 && std::is_same_v<S, bfloat16> && hn::MaxLanes(D()) == 16;

// Whether pairs of vectors of S (store_pair) at p, and at p + r * stride for every row r, start on a
// pair boundary (2 vectors' bytes), so that each pair can be streamed as one whole vector.
template <class D, class S>
HWY_INLINE bool pairs_aligned(D d, const S* p, int64_t stride) {
    const uintptr_t pair_bytes = 2 * hn::MaxLanes(d) * sizeof(S);
    return reinterpret_cast<uintptr_t>(p) % pair_bytes == 0 &&
           static_cast<uintptr_t>(stride) * sizeof(S) % pair_bytes == 0;
}

// Stores v0 at p and v1 right after it; for kPairedStores, as one 64-byte vector, streamed when
// `stream` (then p must be aligned to 64 bytes) and when neither has a subnormal lane (the
// condition of store's vcvtneps2bf16; else each half takes store's own way).
template <class D, class S>
HWY_INLINE void store_pair(D d, hn::Vec<D> v0, hn::Vec<D> v1, S* p, bool stream) {
#if HWY_TARGET == HWY_AVX3
    if constexpr (kPairedStores<S, D>) {
        if (cpu::kHasAvx512Bf16 && (subnormal_lanes(v0.raw) | subnormal_lanes(v1.raw)) == 0) {
            __m512i packed;
            asm("vcvtne2ps2bf16 %2, %1, %0" : "=v"(packed) : "v"(v1.raw), "v"(v0.raw));  // v0: the lower half
            const hn::Repartition<uint16_t, D> dw;
            put(dw, hn::Vec<decltype(dw)>{packed}, reinterpret_cast<uint16_t*>(p), stream);
            return;
        }
    }
#endif
    store(d, v0, p, stream);
    store(d, v1, p + hn::Lanes(d), stream);
}

// Two vectors to p and p + Lanes(d), each as store writes it; bfloat16 on AVX-512 with one test for
// subnormal lanes for both (one branch where store takes two; GCC also placed store's
// vcvtneps2bf16 out of the loop, two jumps a vector). In the flat walks' two-vector loop,
// 64x256x14x14 bfloat16 (bench/ab_pair, 60-80 pairs, bitwise-equal outputs): training forward
// 0.96-0.98, inference forward 0.86-0.93, on one and two threads; 4x256x14x14 inference forward
// 0.90; 16x128x7x7 and 8x64x28x28 training forward 1.00. HWY_LIKELY on store's test instead:
// 1.02-1.05.
template <class D, class S>
HWY_INLINE void store_two(D d, hn::Vec<D> v0, hn::Vec<D> v1, S* p, bool stream) {
#if HWY_TARGET == HWY_AVX3
    if constexpr (std::is_same_v<S, bfloat16> && hn::MaxLanes(D()) == 16) {
        if (cpu::kHasAvx512Bf16 && (subnormal_lanes(v0.raw) | subnormal_lanes(v1.raw)) == 0) {
            put_bf16(d, v0.raw, p, stream);
            put_bf16(d, v1.raw, p + hn::Lanes(d), stream);
            return;
        }
    }
#endif
    store(d, v0, p, stream);
    store(d, v1, p + hn::Lanes(d), stream);
}

// ---- software prefetch ----------------------------------------------------------------------------
// A core keeps only as many reads in flight as its out-of-order window reaches: with the widening
// of 16-bit loads, the hardware prefetchers alone left the loops at 50-70% of the copy bandwidth.
// Far problems therefore prefetch each input kAheadBytes ahead of the vector being loaded (a hint:
// it never faults, so addresses past an array's end are harmless; computed as integers). Measured
// on 32x64x112x112, one thread: bfloat16 training forward 1.6x, backward 1.3-1.6x faster, float32
// up to 1.2x; 1024 and 2048 bytes gained less, 8192 no more; cache-resident problems lose a few
// percent to the extra instructions, so they do not prefetch.
// The loops are compiled twice, with and without the prefetches (a test in the loop, even never
// taken, made cache-resident problems 5-10% slower): prefetching(flag, body) calls body with
// std::true_type or std::false_type, and ahead(pf, p) is a prefetch in the first only.
// The bodies are inlined (BNORM_LOOP on the lambda): left as a function of their own, every value
// they capture by reference is reloaded through the closure after each vector store (a store of
// Intel's vector types may alias anything). 64x256x14x14 float16 backward in inference mode, whose
// loop stores dx between the loads: 1.05 -> 0.73 ms, one thread; other cases within noise.
#define BNORM_LOOP __attribute__((always_inline))
template <class Body>
HWY_INLINE void prefetching(bool prefetch, Body&& body) {
    if (prefetch) body(std::true_type());
    else body(std::false_type());
}
template <class P, class T>
HWY_INLINE void ahead(P, const T* p) {
    if constexpr (P::value)
        __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + cpu::kAheadBytes));
}
// The same for `elements` values at `at` in a row-major array: the same columns, `rows_ahead`
// bytes on (rows_ahead(row bytes): as many whole rows as make kAheadBytes, computed once per loop).
inline uintptr_t rows_ahead(int64_t row_bytes) {
    return static_cast<uintptr_t>((cpu::kAheadBytes + row_bytes - 1) / row_bytes * row_bytes);
}
template <class P, class T>
HWY_INLINE void ahead_rows(P, const T* at, int64_t elements, uintptr_t bytes_ahead) {
    if constexpr (P::value) {
        const uintptr_t base = reinterpret_cast<uintptr_t>(at) + bytes_ahead;
        for (int64_t o = 0; o < elements * static_cast<int64_t>(sizeof(T)); o += 64)
            __builtin_prefetch(reinterpret_cast<const void*>(base + static_cast<uintptr_t>(o)));
    }
}

// ---- elementwise: out = f(x) per element over a run, vectors plus one-lane vectors for the ends --
// The one-lane vectors use the same operations, so an element's result does not depend on where
// it falls. With `stream` (and a run long enough to pay for it), a head of one-lane stores reaches
// the output's vector alignment first. When `overlap` (out aliases none of f's inputs), a ragged
// end is done as one more whole vector ending at the run's end, recomputing a few elements.
// `second`: another input of f (indexed like x), prefetched with x.
template <class S, class F>
HWY_INLINE void map_run(const S* x, S* out, int64_t length, cpu::Far far, bool overlap, F&& f,
                        const S* second = nullptr) {
    using C = Compute<S>;
    const hn::ScalableTag<C> d;
    const hn::CappedTag<C, 1> d1;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    int64_t j = 0;
    const bool stream = far.stream && length * static_cast<int64_t>(sizeof(S)) >= 4096;
    // bfloat16 outputs go two vectors to a store (store_pair), streamed from the pairs' alignment.
    constexpr bool kPairs = kPairedStores<S, decltype(d)>;
    if (stream) {
        const uintptr_t bytes = static_cast<uintptr_t>(lanes) * sizeof(S) * (kPairs ? 2 : 1);
        while (j < length && reinterpret_cast<uintptr_t>(out + j) % bytes != 0) {
            store(d1, f(d1, load(d1, x + j), j), out + j, false);
            ++j;
        }
    }
    prefetching(far.prefetch, [&](auto pf) BNORM_LOOP {
        if constexpr (kPairs)
            for (; j + 2 * lanes <= length; j += 2 * lanes) {
                ahead(pf, x + j);
                ahead(pf, x + j + lanes);
                if (second) {
                    ahead(pf, second + j);
                    ahead(pf, second + j + lanes);
                }
                const auto y0 = f(d, load(d, x + j), j);
                store_pair(d, y0, f(d, load(d, x + j + lanes), j + lanes), out + j, stream);
            }
        for (; j + lanes <= length; j += lanes) {
            ahead(pf, x + j);
            if (second) ahead(pf, second + j);
            store(d, f(d, load(d, x + j), j), out + j, stream);
        }
    });
    if (j < length && overlap && length >= lanes) {
        const int64_t last = length - lanes;
        store(d, f(d, load(d, x + last), last), out + last, false);
        return;
    }
    for (; j < length; ++j) store(d1, f(d1, load(d1, x + j), j), out + j, false);
}

// ---- reductions: float blocks added into double ---------------------------------------------------
// Sums accumulate in the compute type (float for float32 and 16-bit data) over blocks of at most
// kBlock values per lane, with four independent chains (memory-bound loops need the loads in flight:
// one dependent chain, or widening every element to double, halves the read bandwidth of a core),
// and each block is then added into double totals. Moments use a shift per block, the block's first
// vector s: the float sums a = sum (x - s), b = sum (x - s)^2 of a lane's n values are moved to the
// common shift X in double,
//   A += a + n*(s - X),   B += b + (s - X)*(2a + n*(s - X)),
// so float rounding is relative to the spread of n <= kBlock values around one of them (at most
// (n + 1)*b's own size): however far the data lie from X, the variance loses at most a factor
// n*(n + 1) of float's precision, and typically sqrt(n). The assignment of elements to lanes, chains
// and blocks depends only on the run, so results are deterministic.
constexpr int64_t kBlock = 16;
// Channels-first planes of at least a vector and at most kBlock vectors (short_planes) are summed in
// two levels instead (PairSums::add_short_runs): each plane (or its piece in a chunk) in float, one
// chain per lane, and the sums of kRunsPerFlush such planes added in float before they move into
// double, all around one shift per chunk, the mean of its first plane (short_shift). A lane's float
// sums then hold at most kBlock*kRunsPerFlush = 128 values, by additions at most kBlock +
// kRunsPerFlush deep: the bound above with n = 128, relative to the spread of the chunk's values
// around that mean, which an outlier moves by its distance over the plane's length. It spares each
// plane the move into double, which held the statistics of 64x256x14x14 at about 15 ns a plane (see
// planar_group_moments).
constexpr int kRunsPerFlush = 8;

// A vector of the compute type as kParts double vectors: 2 for float (N floats are two vectors of
// N/2 doubles), 1 for double data and on one-lane targets (hi is then unused).
template <class DC>
struct Widen {
    using DD = hn::ScalableTag<double>;
    static constexpr int kParts = hn::MaxLanes(DC()) > hn::MaxLanes(DD()) ? 2 : 1;
    static HWY_INLINE void apply(hn::Vec<DC> v, hn::Vec<DD>& lo, hn::Vec<DD>& hi) {
        if constexpr (std::is_same_v<hn::TFromD<DC>, double>) {
            lo = hi = v;
        } else if constexpr (kParts == 1) {
            lo = hi = hn::PromoteTo(DD(), v);
        } else {
#if HWY_TARGET != HWY_SCALAR  // one-lane vectors have no halves (kParts is 1 there)
            const hn::Half<DC> dh;
            lo = hn::PromoteTo(DD(), hn::LowerHalf(dh, v));
            hi = hn::PromoteTo(DD(), hn::UpperHalf(dh, v));
#endif
        }
    }
};

// Adds a block's float sums to the double totals A[i], B[i] of lanes i (Lanes(DC) doubles each).
template <class DC>
HWY_INLINE void add_block_sums(DC, hn::Vec<DC> a, hn::Vec<DC> b, double* HWY_RESTRICT A, double* HWY_RESTRICT B) {
    using W = Widen<DC>;
    const typename W::DD dd;
    hn::Vec<typename W::DD> lo, hi;
    const size_t half = hn::Lanes(dd);
    W::apply(a, lo, hi);
    hn::StoreU(hn::Add(hn::LoadU(dd, A), lo), dd, A);
    if constexpr (W::kParts == 2) hn::StoreU(hn::Add(hn::LoadU(dd, A + half), hi), dd, A + half);
    W::apply(b, lo, hi);
    hn::StoreU(hn::Add(hn::LoadU(dd, B), lo), dd, B);
    if constexpr (W::kParts == 2) hn::StoreU(hn::Add(hn::LoadU(dd, B + half), hi), dd, B + half);
}

// The same for moments around the block shift s, moved to the shifts X[i] of the totals; lane i
// holds n[i] values.
template <class DC>
HWY_INLINE void add_block_moments(DC, hn::Vec<DC> a, hn::Vec<DC> b, hn::Vec<DC> s, const double* X, hn::Vec<DC> n,
                                  double* HWY_RESTRICT A, double* HWY_RESTRICT B) {
    using W = Widen<DC>;
    const typename W::DD dd;
    using VD = hn::Vec<typename W::DD>;
    VD a_part[2], b_part[2], s_part[2], n_part[2];
    W::apply(a, a_part[0], a_part[1]);
    W::apply(b, b_part[0], b_part[1]);
    W::apply(s, s_part[0], s_part[1]);
    W::apply(n, n_part[0], n_part[1]);
    const VD two = hn::Set(dd, 2.0);
    const size_t half = hn::Lanes(dd);
    for (int q = 0; q < W::kParts; ++q) {
        const size_t o = static_cast<size_t>(q) * half;
        const VD delta = hn::Sub(s_part[q], hn::LoadU(dd, X + o));
        hn::StoreU(hn::Add(hn::LoadU(dd, A + o), hn::MulAdd(n_part[q], delta, a_part[q])), dd, A + o);
        const VD spread = hn::MulAdd(n_part[q], delta, hn::Mul(two, a_part[q]));
        hn::StoreU(hn::Add(hn::LoadU(dd, B + o), hn::MulAdd(delta, spread, b_part[q])), dd, B + o);
    }
}

// The upper `rem` lanes of a vector.
template <class DC>
HWY_INLINE hn::Mask<DC> tail_mask(DC d, int64_t rem) {
    return hn::Not(hn::FirstN(d, static_cast<size_t>(static_cast<int64_t>(hn::Lanes(d)) - rem)));
}

// Four independent chains of gradient sums, a += dy and b += dy*(x - mu), in the compute type (a
// block's worth: see kBlock).
template <class D>
struct GradientChains {
    hn::Vec<D> a0, a1, a2, a3, b0, b1, b2, b3;
    explicit HWY_INLINE GradientChains(D d) { reset(d); }
    HWY_INLINE void reset(D d) { a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = hn::Zero(d); }
    HWY_INLINE hn::Vec<D> sum_a() const { return hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)); }
    HWY_INLINE hn::Vec<D> sum_b() const { return hn::Add(hn::Add(b0, b1), hn::Add(b2, b3)); }

    // The n whole vectors at element i (four at a time into the four chains, the rest into the
    // first), prefetching ahead with pf; out(d, i, dy) after each vector's sums, or, with kPairs,
    // out(d, i, dy, dy of i + lanes) twice for the four at a time (out then takes both forms).
    template <bool kPairs, class S, class P, class Out>
    HWY_INLINE void add(D d, const S* dy, const S* x, int64_t i, int64_t n, hn::Vec<D> mu, P pf, Out&& out) {
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        int64_t v = 0;
        for (; v + 4 <= n; v += 4, i += 4 * lanes) {
            for (int64_t q = 0; q < 4; ++q) {
                ahead(pf, dy + i + q * lanes);
                ahead(pf, x + i + q * lanes);
            }
            const auto g0 = load(d, dy + i), g1 = load(d, dy + i + lanes);
            const auto g2 = load(d, dy + i + 2 * lanes), g3 = load(d, dy + i + 3 * lanes);
            a0 = hn::Add(a0, g0);
            b0 = hn::MulAdd(g0, hn::Sub(load(d, x + i), mu), b0);
            a1 = hn::Add(a1, g1);
            b1 = hn::MulAdd(g1, hn::Sub(load(d, x + i + lanes), mu), b1);
            a2 = hn::Add(a2, g2);
            b2 = hn::MulAdd(g2, hn::Sub(load(d, x + i + 2 * lanes), mu), b2);
            a3 = hn::Add(a3, g3);
            b3 = hn::MulAdd(g3, hn::Sub(load(d, x + i + 3 * lanes), mu), b3);
            if constexpr (kPairs) {
                out(d, i, g0, g1);
                out(d, i + 2 * lanes, g2, g3);
            } else {
                out(d, i, g0);
                out(d, i + lanes, g1);
                out(d, i + 2 * lanes, g2);
                out(d, i + 3 * lanes, g3);
            }
        }
        for (; v < n; ++v, i += lanes) {
            const auto g0 = load(d, dy + i);
            a0 = hn::Add(a0, g0);
            b0 = hn::MulAdd(g0, hn::Sub(load(d, x + i), mu), b0);
            out(d, i, g0);
        }
    }
};

// body(std::integral_constant<int, r>{}) for r = 0, ..., R - 1: arrays of vectors indexed by r stay
// in registers.
template <int R, class Body>
HWY_INLINE void for_each_index(Body&& body) {
    [&]<int... r>(std::integer_sequence<int, r...>) BNORM_LOOP {
        (body(std::integral_constant<int, r>{}), ...);
    }(std::make_integer_sequence<int, R>{});
}

// Sums over runs of values: element j of a run goes to lane j % lanes while a whole vector remains
// (bfloat16 moments in groups of four vectors: see kSplitPairs); the rest of a run at least one
// vector long go to the upper lanes of the vector that ends the run (the lanes it shares with the
// last whole vector masked out), and of a shorter run to the scalar tail (double). The assignment
// depends only on the run's length, never on addresses.
template <class S>
struct PairSums {
    using C = Compute<S>;
    using DC = hn::ScalableTag<C>;
    static constexpr size_t kLanes = hn::MaxLanes(DC());
    // Whether add_moments_of reads bfloat16 two vectors at a time, as one vector of 32-bit pairs of
    // elements: the even elements are the pairs shifted up 16 bits, the odd ones the pairs with the
    // low halves cleared (the floats that load widens them to), so element j of such a pair of
    // vectors goes to lane (j / 2) % lanes of the first or second. One shift and one AND for two
    // vectors, where load takes a widening shuffle and a shift for each. Each lane still holds one
    // value of each of the block's vectors, and the block's shift s is still one of its values, so
    // the precision bound is the same. On the Intel host, whose statistics pass of a bfloat16
    // channels-first training forward is bound by the core's vector ports rather than by memory
    // (bench/ab_pair, 60 pairs, new/old): 8x32x256x256 0.94 on one thread and 0.95 on two,
    // 32x64x112x112 0.96 and 0.95, 16x64x28x28 0.97 and 0.98, outputs within the last bit of some
    // statistics. (On the AMD host the same change measured 0.97-1.00: not kept then.)
    static constexpr bool kSplitPairs = std::is_same_v<S, bfloat16> && kLanes >= 4;
    // Elements [0, 2*Lanes) of bfloat16 p: the even ones to `even`, the odd ones to `odd`.
    static HWY_INLINE void split_pair(DC d, const S* p, hn::Vec<DC>& even, hn::Vec<DC>& odd) {
        const hn::RebindToUnsigned<DC> du;
        const auto pairs = hn::LoadU(du, reinterpret_cast<const uint32_t*>(p));
        even = hn::BitCast(d, hn::ShiftLeft<16>(pairs));
        odd = hn::BitCast(d, hn::And(pairs, hn::Set(du, 0xffff0000u)));
    }
    HWY_ALIGN double a[kLanes] = {}, b[kLanes] = {}, shift[kLanes] = {};
    double tail_a = 0, tail_b = 0, x0 = 0;

    HWY_INLINE PairSums() = default;
    // Moments are accumulated around x0 (a value of the data: see from_shifted).
    HWY_INLINE explicit PairSums(double around) { reset(around); }
    HWY_INLINE void reset(double around) {
        for (size_t i = 0; i < kLanes; ++i) {
            a[i] = b[i] = 0;
            shift[i] = around;
        }
        tail_a = tail_b = 0;
        x0 = around;
        for (size_t i = 0; i < kLanes; ++i) a2[i] = b2[i] = 0;
        runs = 0;
    }

    // a += x - x0, b += (x - x0)^2
    HWY_INLINE void add_moments(const S* x, int64_t length, bool prefetch) {
        PairSums* self[1] = {this};
        const S* run[1] = {x};
        add_moments_of<1>(self, run, length, prefetch);
    }

    // add_moments of R runs of the same length, runs[r] into sums[r], each summed exactly as alone;
    // their instructions interleaved, so that the out-of-order core has R independent chains (a
    // 14x14 plane is one block: a chain of loads, sums and double updates).
    template <int R>
    static HWY_INLINE void add_moments_of(PairSums* const* sums, const S* const* runs, int64_t length, bool prefetch) {
        const DC d;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        int64_t j = 0;
        prefetching(prefetch, [&](auto pf) BNORM_LOOP {
            while (j + lanes <= length) {
                const int64_t n = std::min(kBlock, (length - j) / lanes);
                hn::Vec<DC> s[R], a0[R], a1[R], a2[R], a3[R], b0[R], b1[R], b2[R], b3[R];
                for (int r = 0; r < R; ++r) {
                    s[r] = load(d, runs[r] + j);
                    a0[r] = a1[r] = a2[r] = a3[r] = b0[r] = b1[r] = b2[r] = b3[r] = hn::Zero(d);
                }
                int64_t v = 0;
                for (; v + 4 <= n; v += 4) {
                    for (int r = 0; r < R; ++r) {
                        const S* p = runs[r] + j;
                        for (int64_t q = 0; q < 4; ++q) ahead(pf, p + (v + q) * lanes);
                        hn::Vec<DC> v0, v1, v2, v3;
                        if constexpr (kSplitPairs) {
                            split_pair(d, p + v * lanes, v0, v1);
                            split_pair(d, p + (v + 2) * lanes, v2, v3);
                        } else {
                            v0 = load(d, p + v * lanes);
                            v1 = load(d, p + (v + 1) * lanes);
                            v2 = load(d, p + (v + 2) * lanes);
                            v3 = load(d, p + (v + 3) * lanes);
                        }
                        const auto d0 = hn::Sub(v0, s[r]);
                        const auto d1 = hn::Sub(v1, s[r]);
                        const auto d2 = hn::Sub(v2, s[r]);
                        const auto d3 = hn::Sub(v3, s[r]);
                        a0[r] = hn::Add(a0[r], d0);
                        b0[r] = hn::MulAdd(d0, d0, b0[r]);
                        a1[r] = hn::Add(a1[r], d1);
                        b1[r] = hn::MulAdd(d1, d1, b1[r]);
                        a2[r] = hn::Add(a2[r], d2);
                        b2[r] = hn::MulAdd(d2, d2, b2[r]);
                        a3[r] = hn::Add(a3[r], d3);
                        b3[r] = hn::MulAdd(d3, d3, b3[r]);
                    }
                }
                for (; v < n; ++v)
                    for (int r = 0; r < R; ++r) {
                        const auto d0 = hn::Sub(load(d, runs[r] + j + v * lanes), s[r]);
                        a0[r] = hn::Add(a0[r], d0);
                        b0[r] = hn::MulAdd(d0, d0, b0[r]);
                    }
                j += n * lanes;
                auto count = hn::Set(d, static_cast<C>(n));
                if (j < length && j + lanes > length) {
                    // The last values, as the upper lanes of the vector that ends the run, join the
                    // run's last block (its shift s holds values of the run in every lane).
                    const auto last = tail_mask(d, length - j);
                    for (int r = 0; r < R; ++r) {
                        const auto d0 = hn::IfThenElseZero(last, hn::Sub(load(d, runs[r] + length - lanes), s[r]));
                        a1[r] = hn::Add(a1[r], d0);
                        b1[r] = hn::MulAdd(d0, d0, b1[r]);
                    }
                    count = hn::Add(count, hn::IfThenElseZero(last, hn::Set(d, C(1))));
                    j = length;
                }
                for (int r = 0; r < R; ++r)
                    add_block_moments(d, hn::Add(hn::Add(a0[r], a1[r]), hn::Add(a2[r], a3[r])),
                                      hn::Add(hn::Add(b0[r], b1[r]), hn::Add(b2[r], b3[r])), s[r], sums[r]->shift,
                                      count, sums[r]->a, sums[r]->b);
            }
        });
        for (int r = 0; r < R; ++r) sums[r]->add_tail_moments(runs[r], j, length);
    }

    // Values [i0, i1) of a run into the scalar tail (double), around x0.
    HWY_INLINE void add_tail_moments(const S* x, int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const double v = to_double(x[i]) - x0;
            tail_a += v;
            tail_b += v * v;
        }
    }

    // Short runs (short_planes), in two levels of float sums around x0 (short_shift). A run's
    // values, lane by lane in one chain (its whole vectors in order, then the masked last vector as
    // in add_moments; a run under a vector goes to the scalar tail), are added into the second
    // level (a2, b2), which moves into the double totals every kRunsPerFlush runs and when the chunk
    // closes (flush_short). A plane then costs its loads, its arithmetic and two additions, not a
    // block's move into double.
    HWY_ALIGN C a2[kLanes] = {}, b2[kLanes] = {};
    int runs = 0;

    HWY_INLINE void add_short_run(const S* x, int64_t length) {
        PairSums* self[1] = {this};
        const S* run[1] = {x};
        add_short_runs<1>(self, run, length);
    }
    // add_short_run of R runs of the same length, each as alone, their chains interleaved vector
    // by vector (a 14x14 plane's chain alone is 13 dependent additions).
    template <int R>
    static HWY_NOINLINE void add_short_runs(PairSums* const* sums, const S* const* x, int64_t length) {
        const DC d;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        if (length < lanes) {
            for (int r = 0; r < R; ++r) sums[r]->add_tail_moments(x[r], 0, length);
            return;
        }
        hn::Vec<DC> s[R], a1[R], b1[R];
        for_each_index<R>([&](auto r) BNORM_LOOP {
            PairSums& t = *sums[r];
            s[r] = hn::Set(d, static_cast<C>(t.x0));
            const auto v = hn::Sub(load(d, x[r]), s[r]);
            a1[r] = v;
            b1[r] = hn::Mul(v, v);
        });
        int64_t j = lanes;
        for (; j + lanes <= length; j += lanes)
            for_each_index<R>([&](auto r) BNORM_LOOP {
                const auto v = hn::Sub(load(d, x[r] + j), s[r]);
                a1[r] = hn::Add(a1[r], v);
                b1[r] = hn::MulAdd(v, v, b1[r]);
            });
        const bool ragged = j < length;
        const auto last = tail_mask(d, length - j);
        for_each_index<R>([&](auto r) BNORM_LOOP {
            PairSums& t = *sums[r];
            if (ragged) {
                const auto v = hn::IfThenElseZero(last, hn::Sub(load(d, x[r] + length - lanes), s[r]));
                a1[r] = hn::Add(a1[r], v);
                b1[r] = hn::MulAdd(v, v, b1[r]);
            }
            hn::Store(hn::Add(hn::Load(d, t.a2), a1[r]), d, t.a2);
            hn::Store(hn::Add(hn::Load(d, t.b2), b1[r]), d, t.b2);
            if (++t.runs == kRunsPerFlush) t.flush_short();
        });
    }
    HWY_INLINE void flush_short() {
        if (runs == 0) return;
        const DC d;
        add_block_sums(d, hn::Load(d, a2), hn::Load(d, b2), a, b);
        const auto zero = hn::Zero(d);
        hn::Store(zero, d, a2);
        hn::Store(zero, d, b2);
        runs = 0;
    }
    // The shift of a chunk of short runs: the mean of its first run, rounded to the compute type (so
    // that x0 is exactly the shift the vectors subtract). Not a value of the data, as the shift of
    // add_moments is, but near most of them: an outlier among the run moves it by its distance over
    // the run's length, where as the shift itself it would offset every value of the chunk.
    static HWY_INLINE double short_shift(const S* x, int64_t length) {
        const DC d;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        double sum = 0;
        if (length < lanes) {
            for (int64_t i = 0; i < length; ++i) sum += to_double(x[i]);
        } else {
            // Four chains: the chunk's first sums wait for this.
            auto v0 = load(d, x), v1 = hn::Zero(d), v2 = hn::Zero(d), v3 = hn::Zero(d);
            int64_t j = lanes;
            for (; j + 4 * lanes <= length; j += 4 * lanes) {
                v1 = hn::Add(v1, load(d, x + j));
                v2 = hn::Add(v2, load(d, x + j + lanes));
                v3 = hn::Add(v3, load(d, x + j + 2 * lanes));
                v0 = hn::Add(v0, load(d, x + j + 3 * lanes));
            }
            for (; j + lanes <= length; j += lanes) v1 = hn::Add(v1, load(d, x + j));
            if (j < length) v2 = hn::Add(v2, hn::IfThenElseZero(tail_mask(d, length - j), load(d, x + length - lanes)));
            sum = static_cast<double>(hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(v0, v1), hn::Add(v2, v3)))));
        }
        return static_cast<double>(static_cast<C>(sum / static_cast<double>(length)));
    }

    // The sums of one vector block of gradients: a += dy, b += dy*(x - center); out as for
    // GradientChains::add.
    template <bool kPairs, class Store>
    HWY_INLINE void gradient_blocks(const S* dy, const S* x, int64_t j, int64_t length, C center, bool prefetch,
                                    Store&& out) {
        const DC d;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        const auto mu = hn::Set(d, center);
        prefetching(prefetch, [&](auto pf) BNORM_LOOP {
            while (j + lanes <= length) {
                const int64_t n = std::min(kBlock, (length - j) / lanes);
                GradientChains<DC> chains(d);
                chains.template add<kPairs>(d, dy, x, j, n, mu, pf, out);
                add_block_sums(d, chains.sum_a(), chains.sum_b(), a, b);
                j += n * lanes;
            }
        });
    }

    HWY_INLINE void add_tail_gradient(double g, double x, double center) {
        tail_a += g;
        tail_b += g * (x - center);
    }

    // The last `rem` (< lanes <= length) values of a run of gradients, as the upper lanes of the
    // vector that ends it; returns that vector's dy (all lanes).
    HWY_INLINE hn::Vec<DC> add_last_gradients(const S* dy, const S* x, int64_t length, int64_t rem, C center) {
        const DC d;
        const int64_t i = length - static_cast<int64_t>(hn::Lanes(d));
        const auto g = load(d, dy + i);
        const auto mine = tail_mask(d, rem);
        const auto used = hn::IfThenElseZero(mine, g);
        add_block_sums(d, used, hn::Mul(used, hn::IfThenElseZero(mine, hn::Sub(load(d, x + i), hn::Set(d, center)))), a,
                       b);
        return g;
    }

    // a += dy, b += dy*(x - center)
    HWY_INLINE void add_gradients(const S* dy, const S* x, int64_t length, C center, bool prefetch) {
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(DC()));
        const int64_t whole = length / lanes * lanes;
        gradient_blocks<false>(dy, x, 0, whole, center, prefetch, [](auto, int64_t, auto) {});
        if (whole < length && length >= lanes) {
            add_last_gradients(dy, x, length, length - whole, center);
            return;
        }
        for (int64_t j = whole; j < length; ++j) add_tail_gradient(to_double(dy[j]), to_double(x[j]), center);
    }

    // The gradient sums of a run and dx = dy*scale, in one pass (dx may alias dy or x: each
    // element is read before it is written). Elements go to lanes from the run's start, whatever
    // the addresses (sums must not depend on where the buffers are), so dx is streamed only when
    // the run starts at dx's vector alignment.
    HWY_INLINE void add_gradients_scaling(const S* dy, const S* x, S* dx, int64_t length, C center, C scale,
                                          cpu::Far far) {
        const DC d;
        const hn::CappedTag<C, 1> d1;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        auto one = [&](int64_t j) {
            const auto g = load(d1, dy + j);
            add_tail_gradient(static_cast<double>(hn::GetLane(g)), to_double(x[j]), center);
            store(d1, hn::Mul(g, hn::Set(d1, scale)), dx + j, false);
        };
        int64_t j = 0;
        const bool stream = far.stream && length * static_cast<int64_t>(sizeof(S)) >= 4096 &&
                 reinterpret_cast<uintptr_t>(dx) % (static_cast<uintptr_t>(lanes) * sizeof(S)) == 0;
        const int64_t whole = length / lanes * lanes;
        const auto k = hn::Set(d, scale);
        // bfloat16 dx: pairs of vectors to a store (the four at a time of the chains start at
        // multiples of 4 vectors from the run's start), when they are aligned or not streamed.
        const bool paired = kPairedStores<S, DC> && (!stream || pairs_aligned(d, dx, 0));
        gradient_blocks<true>(dy, x, j, whole, center, far.prefetch, [&](auto dv, int64_t i, auto g, auto... next) {
            if constexpr (sizeof...(next) == 1) {  // two vectors: g, then next
                const auto g1 = (next, ...);
                if (paired) {
                    store_pair(dv, hn::Mul(g, k), hn::Mul(g1, k), dx + i, stream);
                } else {
                    store(dv, hn::Mul(g, k), dx + i, stream);
                    store(dv, hn::Mul(g1, k), dx + i + lanes, stream);
                }
            } else {
                store(dv, hn::Mul(g, k), dx + i, stream);
            }
        });
        if (whole < length && length >= lanes) {
            // The sums as without aliasing (the lanes the loop above may have written are masked
            // out); dx of the last vector is written whole (its other lanes get the values they
            // have), or, when dx aliases an input, element by element from the inputs left.
            const auto g = add_last_gradients(dy, x, length, length - whole, center);
            if (dx != dy && dx != x) {
                store(d, hn::Mul(g, k), dx + length - lanes, false);
                return;
            }
            for (j = whole; j < length; ++j) store(d1, hn::Mul(load(d1, dy + j), hn::Set(d1, scale)), dx + j, false);
            return;
        }
        for (j = whole; j < length; ++j) one(j);
    }

    double total_a() const {
        double t = 0;
        for (double v : a) t += v;
        return t + tail_a;
    }
    double total_b() const {
        double t = 0;
        for (double v : b) t += v;
        return t + tail_b;
    }
};

// ---- column blocks of interleaved rows ------------------------------------------------------------
// Calls block(std::integral_constant<int, K>{}, c0) for the whole vectors of a row of C values:
// blocks of 4 vectors, then the rest in one block of 3 or 2 where it fits (each row is then read
// once), then blocks of 1. Returns the first channel left over (C - C % lanes).
template <class Block>
HWY_INLINE int64_t for_each_column_block(int64_t C, int64_t lanes, Block&& block) {
    int64_t c0 = 0;
    for (; c0 + 4 * lanes <= C; c0 += 4 * lanes) block(std::integral_constant<int, 4>{}, c0);
    if (c0 + 3 * lanes <= C) {
        block(std::integral_constant<int, 3>{}, c0);
        c0 += 3 * lanes;
    } else if (c0 + 2 * lanes <= C) {
        block(std::integral_constant<int, 2>{}, c0);
        c0 += 2 * lanes;
    }
    for (; c0 + lanes <= C; c0 += lanes) block(std::integral_constant<int, 1>{}, c0);
    return c0;
}

// ---- interleaved reductions: across rows, vectorized across channels ---------------------------
// For channels [c0, c0 + K*lanes) of rows [r0, r1) of a (rows, C) array, the K accumulator pairs
// stay in registers for blocks of kBlock rows, whose float sums are then added in double (as above).
// Writes sum_a[c], sum_b[c] for those channels:
//   moments:   a = sum (x - x[r0]), b = sum (x - x[r0])^2, and shift[c] = x[r0][c]
//   gradients: a = sum dy,          b = sum dy*(x - center[c])
// and with kScale (gradients only) also dx = dy*scale[c] in the same pass: each element is read
// before dx, which may alias dy or x, is written.
template <class S>
struct ScaleOut {
    S* dx = nullptr;
    const Compute<S>* scale = nullptr;
    bool stream = false;  // rows are whole aligned vectors: streaming stores allowed
};

template <int K, bool kGradients, bool kScale, class S>
HWY_INLINE void interleaved_block(const S* x, const S* dy, int64_t C, int64_t r0, int64_t r1, int64_t c0,
                                  const Compute<S>* center, double* shift_out, double* sum_a, double* sum_b,
                                  bool prefetch, const ScaleOut<S>& out) {
    using CT = Compute<S>;
    const hn::ScalableTag<CT> d;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    for (int64_t c = c0; c < c0 + K * lanes; ++c) {
        sum_a[c] = sum_b[c] = 0;
        if constexpr (!kGradients) shift_out[c] = to_double(x[r0 * C + c]);
    }
    hn::Vec<decltype(d)> s[K], a[K], b[K], k_scale[K], scaled[K];
    if constexpr (kGradients)
        for (int k = 0; k < K; ++k) s[k] = hn::LoadU(d, center + c0 + k * lanes);
    if constexpr (kScale)
        for (int k = 0; k < K; ++k) k_scale[k] = hn::LoadU(d, out.scale + c0 + k * lanes);
    const uintptr_t skip = rows_ahead(C * static_cast<int64_t>(sizeof(S)));
    // Pairs of bfloat16 dx vectors (kPairedStores) are streamed as whole 64-byte vectors when every
    // row's pairs are aligned.
    bool pair_stream = false;
    if constexpr (kScale) pair_stream = out.stream && pairs_aligned(d, out.dx + r0 * C + c0, C);
    prefetching(prefetch, [&](auto pf) BNORM_LOOP {
        for (int64_t rb = r0; rb < r1; rb += kBlock) {
            const int64_t re = std::min(r1, rb + kBlock);
            for (int k = 0; k < K; ++k) {
                if constexpr (!kGradients) s[k] = load(d, x + rb * C + c0 + k * lanes);
                a[k] = b[k] = hn::Zero(d);
            }
            for (int64_t r = rb; r < re; ++r) {
                ahead_rows(pf, x + r * C + c0, K * lanes, skip);
                if constexpr (kGradients) ahead_rows(pf, dy + r * C + c0, K * lanes, skip);
                for (int k = 0; k < K; ++k) {
                    const int64_t i = r * C + c0 + k * lanes;
                    const auto dev = hn::Sub(load(d, x + i), s[k]);
                    if constexpr (kGradients) {
                        const auto g = load(d, dy + i);
                        a[k] = hn::Add(a[k], g);
                        b[k] = hn::MulAdd(g, dev, b[k]);
                        if constexpr (kScale) scaled[k] = hn::Mul(g, k_scale[k]);
                    } else {
                        a[k] = hn::Add(a[k], dev);
                        b[k] = hn::MulAdd(dev, dev, b[k]);
                    }
                }
                if constexpr (kScale) {
                    // dx after the row's loads (dx may alias dy or x); bfloat16: two vectors a store.
                    S* row_dx = out.dx + r * C + c0;
                    int k = 0;
                    if constexpr (kPairedStores<S, decltype(d)>)
                        for (; k + 2 <= K; k += 2)
                            store_pair(d, scaled[k], scaled[k + 1], row_dx + k * lanes, pair_stream);
                    for (; k < K; ++k) store(d, scaled[k], row_dx + k * lanes, out.stream);
                }
            }
            for (int k = 0; k < K; ++k) {
                const int64_t c = c0 + k * lanes;
                if constexpr (kGradients)
                    add_block_sums(d, a[k], b[k], sum_a + c, sum_b + c);
                else
                    add_block_moments(d, a[k], b[k], s[k], shift_out + c, hn::Set(d, static_cast<CT>(re - rb)),
                                      sum_a + c, sum_b + c);
            }
        }
    });
}

// The same for every channel of the rows: blocks of 4 vectors, then of 1, then channel by channel.
template <bool kGradients, bool kScale = false, class S>
void interleaved_sums(const S* x, const S* dy, int64_t C, int64_t r0, int64_t r1, const Compute<S>* center,
                      double* shift_out, double* sum_a, double* sum_b, bool prefetch, const ScaleOut<S>& out = {}) {
    using CT = Compute<S>;
    const hn::ScalableTag<CT> d;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    const hn::CappedTag<CT, 1> d1;
    int64_t c0 = for_each_column_block(C, lanes, [&](auto K, int64_t c) BNORM_LOOP {
        interleaved_block<K(), kGradients, kScale>(x, dy, C, r0, r1, c, center, shift_out, sum_a, sum_b, prefetch, out);
    });
    for (; c0 < C; ++c0) {
        const double base = kGradients ? static_cast<double>(center[c0]) : to_double(x[r0 * C + c0]);
        double a = 0, b = 0;
        for (int64_t r = r0; r < r1; ++r) {
            const double v = to_double(x[r * C + c0]);
            if constexpr (kGradients) {
                const auto g = load(d1, dy + r * C + c0);
                a += static_cast<double>(hn::GetLane(g));
                b += static_cast<double>(hn::GetLane(g)) * (v - base);
                if constexpr (kScale) store(d1, hn::Mul(g, hn::Set(d1, out.scale[c0])), out.dx + r * C + c0, false);
            } else {
                a += v - base;
                b += (v - base) * (v - base);
            }
        }
        sum_a[c0] = a;
        sum_b[c0] = b;
        if constexpr (!kGradients) shift_out[c0] = base;
    }
}

// ---- per-channel coefficients, in the compute type ---------------------------------------------
// Workspace of one call: per-chunk double arrays, then coefficient arrays of the compute type.
template <class S>
struct Scratch {
    using C = Compute<S>;
    double* chunk_a;  // chunks * c
    double* chunk_b;  // chunks * c
    double* chunk_s;  // chunks * c (shifts)
    double* center;   // c doubles
    C* coefficient;   // 4 * c values of C
    double* extra;    // extra_doubles, for an operation's own use

    explicit Scratch(const Plan& p, size_t extra_doubles = 0) {
        const size_t per_chunk = static_cast<size_t>(p.chunks * p.g.c), c = static_cast<size_t>(p.g.c);
        double* base = cpu::workspace(3 * per_chunk + 5 * c + extra_doubles);
        chunk_a = base;
        chunk_b = base + per_chunk;
        chunk_s = base + 2 * per_chunk;
        center = base + 3 * per_chunk;
        coefficient = reinterpret_cast<C*>(center + c);
        extra = center + 5 * c;
    }
    C* coefficients(int64_t i, int64_t c) const { return coefficient + i * c; }
};

// ---- channels-first passes in vectors aligned to the array --------------------------------------
// Lanes [first, first + count) of the vector at element i of p, through a copy (the others zero),
// and their store: the vectors at a task's ends, whose other lanes are another task's or lie past
// the array.
template <class S>
HWY_INLINE hn::Vec<hn::ScalableTag<Compute<S>>> load_part(const S* p, int64_t i, int64_t first, int64_t count) {
    const hn::ScalableTag<Compute<S>> d;
    HWY_ALIGN S buffer[hn::MaxLanes(d)] = {};
    std::memcpy(buffer + first, p + i + first, static_cast<size_t>(count) * sizeof(S));
    return load(d, buffer);
}
template <class S>
HWY_INLINE void store_part(hn::Vec<hn::ScalableTag<Compute<S>>> v, S* p, int64_t i, int64_t first, int64_t count) {
    const hn::ScalableTag<Compute<S>> d;
    HWY_ALIGN S buffer[hn::MaxLanes(d)];
    store(d, v, buffer, false);
    std::memcpy(p + i + first, buffer + first, static_cast<size_t>(count) * sizeof(S));
}

// The gradient sums of one plane (channel c = q % C of sample q / C: elements [s, s + spatial)) in
// vectors aligned to the array's start (element e goes to lane e % lanes), and with dx, dx =
// dy*scale[c] as whole vectors too: a vector that starts in the previous plane takes that plane's
// scale in its first lanes, and the vector that ends a plane in the middle is written by the next
// plane (they are adjacent in memory). Vectors beyond the task's planes [s0, s1) are read through
// a copy and written lane by lane, never touching another task's elements or the array's ends.
// Each lane's float sums are added into double vectors every kBlock vectors, and the plane's totals
// are their lanes' sum. Needs spatial >= lanes (a vector spans at most two planes).
template <class S>
struct FlatGradients {
    using C = Compute<S>;
    using DC = hn::ScalableTag<C>;
    using W = Widen<DC>;
    using DD = typename W::DD;
    const S* dy;
    const S* x;
    S* dx;  // nullptr: the sums only
    const C* center;
    const C* scale;
    int64_t channels, spatial;
    bool prefetch;

    // Returns the plane's sums, sum dy and sum dy*(x - center), per lane of a double vector (the
    // lanes are added at the very end, per channel). `stream`: dx is streamed (aligned vectors).
    template <bool stream>
    HWY_INLINE void plane(int64_t q, int64_t s0, int64_t s1, hn::Vec<DD>& total_a, hn::Vec<DD>& total_b) const {
        const DC d;
        const DD dd;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        const int64_t c = q % channels, s = q * spatial, e = s + spatial;
        const auto mu = hn::Set(d, center[c]);
        const auto k = hn::Set(d, dx ? scale[c] : C(0));
        auto A0 = hn::Zero(dd), A1 = A0, B0 = A0, B1 = A0;
        GradientChains<DC> chains(d);
        auto flush = [&]() BNORM_LOOP {
            hn::Vec<DD> lo, hi;
            W::apply(chains.sum_a(), lo, hi);
            A0 = hn::Add(A0, lo);
            if constexpr (W::kParts == 2) A1 = hn::Add(A1, hi);
            W::apply(chains.sum_b(), lo, hi);
            B0 = hn::Add(B0, lo);
            if constexpr (W::kParts == 2) B1 = hn::Add(B1, hi);
            chains.reset(d);
        };
        int64_t i = s - s % lanes, used = 0;
        if (i < s) {
            // The vector that starts in the previous plane: lanes [head, lanes) are this plane's.
            const int64_t head = s - i;
            const bool edge = i < s0;  // the previous plane is another task's
            const auto g = edge ? load_part<S>(dy, i, head, lanes - head) : load(d, dy + i);
            const auto xv = edge ? load_part<S>(x, i, head, lanes - head) : load(d, x + i);
            const auto mine = hn::Not(hn::FirstN(d, static_cast<size_t>(head)));
            chains.a0 = hn::IfThenElseZero(mine, g);
            chains.b0 = hn::Mul(chains.a0, hn::IfThenElseZero(mine, hn::Sub(xv, mu)));
            if (dx) {
                if (edge) {
                    store_part<S>(hn::Mul(g, k), dx, i, head, lanes - head);
                } else {
                    const auto before = hn::Set(d, scale[(q + channels - 1) % channels]);
                    store(d, hn::Mul(g, hn::IfThenElse(mine, k, before)), dx + i, stream);
                }
            }
            used = 1;
            i += lanes;
        }
        prefetching(prefetch, [&](auto pf) BNORM_LOOP {
            while (i + lanes <= e) {
                const int64_t n = std::min(kBlock - used, (e - i) / lanes);
                if (dx)
                    chains.template add<false>(d, dy, x, i, n, mu, pf, [&](auto dv, int64_t at, auto g) BNORM_LOOP {
                        store(dv, hn::Mul(g, k), dx + at, stream);
                    });
                else
                    chains.template add<false>(d, dy, x, i, n, mu, pf, [](auto, int64_t, auto) {});
                i += n * lanes;
                used += n;
                if (used == kBlock) {
                    flush();
                    used = 0;
                }
            }
        });
        if (i < e) {
            // The vector that ends this plane and starts the next: lanes [0, tail) are this plane's;
            // the next plane writes its dx, unless that plane is another task's (or past the end).
            const int64_t tail = e - i;
            const bool edge = e >= s1;
            const auto g = edge ? load_part<S>(dy, i, 0, tail) : load(d, dy + i);
            const auto xv = edge ? load_part<S>(x, i, 0, tail) : load(d, x + i);
            const auto mine = hn::FirstN(d, static_cast<size_t>(tail));
            const auto used_g = hn::IfThenElseZero(mine, g);
            chains.a1 = hn::Add(chains.a1, used_g);
            chains.b1 = hn::MulAdd(used_g, hn::IfThenElseZero(mine, hn::Sub(xv, mu)), chains.b1);
            if (dx && edge) store_part<S>(hn::Mul(g, k), dx, i, 0, tail);
        }
        flush();
        if constexpr (W::kParts == 2) {
            A0 = hn::Add(A0, A1);
            B0 = hn::Add(B0, B1);
        }
        total_a = A0;
        total_b = B0;
    }
};

// out = f(coefficients of the element's channel, in0, in1) over whole planes of a channels-first
// array, in memory order, in vectors aligned to the array's start: a vector that starts in the
// previous plane takes that plane's coefficients in its first lanes, and the vector that ends a
// plane in the middle is written by the next plane. So short planes (14x14) cost no partial
// vectors of their own, and outputs can be streamed whole. Vectors beyond a task's planes are
// read through a copy and written lane by lane: never another task's elements, nor past the
// array's ends. Needs spatial >= lanes (a vector spans at most two planes). Each output is
// computed from its own inputs only, after they are read, so out may alias in0 or in1.
// f(d, k, v0, v1): k, the K coefficient vectors; v1 is v0 when there is no in1.
// bfloat16 outputs stay one vector to a store here: two to a store (store_pair, each plane's pairs
// from an even vector), as the other output passes do, made 64x256x14x14 bfloat16 training and
// inference forward 1.05-1.07x slower (bench/ab_pair, 40 pairs, one and two threads).
template <class S, int K, bool kTwo, class F>
struct FlatMap {
    using C = Compute<S>;
    using DC = hn::ScalableTag<C>;
    const S* in0;
    const S* in1;  // used when kTwo
    S* out;
    std::array<const C*, K> coefficient;
    int64_t channels, spatial;
    F f;

    template <bool stream, class P>
    HWY_INLINE void planes(int64_t q0, int64_t q1, P pf) const {
        const DC d;
        const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
        const int64_t s0 = q0 * spatial, s1 = q1 * spatial;
        hn::Vec<DC> k[K], previous[K];
        // The first plane's vector that starts in the previous plane is always read through a copy
        // (part), so `previous` starts as its own channel's: no read of coefficients outside
        // [q0, q1), which another thread may still be writing (pipelined_backward).
        for (int j = 0; j < K; ++j) previous[j] = hn::Set(d, coefficient[j][q0 % channels]);
        auto value = [&](const hn::Vec<DC>* kv, int64_t i) BNORM_LOOP {
            const auto v0 = load(d, in0 + i);
            if constexpr (kTwo) return f(d, kv, v0, load(d, in1 + i));
            else return f(d, kv, v0, v0);
        };
        // Lanes [first, first + count) of the vector at i, through copies.
        auto part = [&](const hn::Vec<DC>* kv, int64_t i, int64_t first, int64_t count) BNORM_LOOP {
            const auto v0 = load_part<S>(in0, i, first, count);
            hn::Vec<DC> v;
            if constexpr (kTwo) v = f(d, kv, v0, load_part<S>(in1, i, first, count));
            else v = f(d, kv, v0, v0);
            store_part<S>(v, out, i, first, count);
        };
        for (int64_t q = q0; q < q1; ++q) {
            const int64_t c = q % channels, s = q * spatial, e = s + spatial;
            for (int j = 0; j < K; ++j) k[j] = hn::Set(d, coefficient[j][c]);
            int64_t i = s - s % lanes;
            if (i < s) {
                const int64_t head = s - i;
                if (i < s0) {
                    part(k, i, head, lanes - head);
                } else {
                    const auto mine = hn::Not(hn::FirstN(d, static_cast<size_t>(head)));
                    hn::Vec<DC> blend[K];
                    for (int j = 0; j < K; ++j) blend[j] = hn::IfThenElse(mine, k[j], previous[j]);
                    store(d, value(blend, i), out + i, stream);
                }
                i += lanes;
            }
            for (; i + 2 * lanes <= e; i += 2 * lanes) {
                for (int64_t r = 0; r < 2; ++r) {
                    ahead(pf, in0 + i + r * lanes);
                    if constexpr (kTwo) ahead(pf, in1 + i + r * lanes);
                }
                store_two(d, value(k, i), value(k, i + lanes), out + i, stream);
            }
            if (i + lanes <= e) {
                store(d, value(k, i), out + i, stream);
                i += lanes;
            }
            if (i < e && e >= s1) part(k, i, 0, e - i);  // the task's last vector
            for (int j = 0; j < K; ++j) previous[j] = k[j];
        }
    }
};

// m.planes(q0, q1) without prefetches, the output streamed or not.
template <class M>
HWY_INLINE void output_planes(const M& m, bool stream, int64_t q0, int64_t q1) {
    if (stream) m.template planes<true>(q0, q1, std::false_type());
    else m.template planes<false>(q0, q1, std::false_type());
}

// Whether a flat walk streams its output: when `far` streams, out is aligned to the vectors, and the
// pass's `tensors` (its inputs and output) exceed kFlatStreamBytes together, so that they cannot
// stay in the last-level cache from call to call (the AMD host's L3 is 32 MB, shared with other
// guests). 64x256x14x14: float32 backward and backward in inference mode (3 tensors, 38 MB) were
// 1.2-1.6x faster streamed (6 rounds alternating, one and two threads). The float32 forward passes
// (2 tensors, 26 MB) were 1.1-1.2x slower streamed on two threads in that A/B (when the bound was
// 32 MB); bench/ab_pair later put them at 0.76-0.82 (training and inference forward, one thread,
// 200-300 pairs) and 0.82-1.09 (two threads). 16-bit passes of that shape are 1.1-1.3x slower
// streamed: two tensors (13 MB), and three (19 MB; ab_pair, 150 pairs: backward 1.11 and 1.12,
// backward in inference mode 1.02-1.07, except float16's 0.94 on one thread). So 20 MB.
constexpr int64_t kFlatStreamBytes = int64_t{20} << 20;
template <class S>
inline bool flat_stream(const Geometry& g, cpu::Far far, const S* out, int64_t tensors) {
    const uintptr_t vector_bytes = hn::Lanes(hn::ScalableTag<Compute<S>>()) * sizeof(S);
    return far.stream && tensors * g.numel() * static_cast<int64_t>(sizeof(S)) > kFlatStreamBytes &&
           reinterpret_cast<uintptr_t>(out) % vector_bytes == 0;
}

// out = f(d, k, in0, in1) over every plane of the array (FlatMap), in parallel tasks of consecutive
// planes (about kChunkElements values each), each thread a contiguous range of them
// (parallel_for_split), last task first when `reverse`; `weight` as for for_planes_in_order.
template <class S, int K, bool kTwo, class F>
void flat_map(const Geometry& g, const S* in0, const S* in1, S* out, const std::array<const Compute<S>*, K>& k,
              cpu::Far far, int64_t weight, F&& f, bool reverse = false) {
    const FlatMap<S, K, kTwo, F&> m{in0, in1, out, k, g.c, g.spatial, f};
    const int64_t planes = g.n * g.c;
    const int64_t per_task = std::max<int64_t>(1, cpu::kChunkElements / g.spatial);
    const bool stream = flat_stream(g, far, out, kTwo ? 3 : 2);
    parallel_for_split((planes + per_task - 1) / per_task, weight * g.numel(), reverse, [&](int64_t t) {
        const int64_t q0 = t * per_task, q1 = std::min(planes, q0 + per_task);
        prefetching(far.prefetch, [&](auto pf) BNORM_LOOP {
            if (stream) m.template planes<true>(q0, q1, pf);
            else m.template planes<false>(q0, q1, pf);
        });
    });
}

// Whether an array's planes can be walked in vectors aligned to the array (FlatMap,
// FlatGradients): channels-first planes of at least a vector, so that a vector spans at most two.
template <class S>
inline bool planes_of_a_vector(const Geometry& g) {
    return !g.interleaved() && g.spatial >= static_cast<int64_t>(hn::Lanes(hn::ScalableTag<Compute<S>>()));
}

// Whether the flat walks above apply: such planes under 4 KB (longer planes cost little per plane,
// and are streamed from their own alignment by map_run).
template <class S>
inline bool flat_planes(const Geometry& g) {
    return planes_of_a_vector<S>(g) && g.spatial * static_cast<int64_t>(sizeof(S)) < 4096;
}

// ---- planar (channels-first, spatial > 1) building blocks ---------------------------------------
// Whether channels-first planes are summed in two levels (kRunsPerFlush, PairSums::add_short_run):
// at least a vector and at most kBlock vectors long. Depends only on the shape and the target.
template <class S>
inline bool short_planes(const Geometry& g) {
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<Compute<S>>()));
    return g.spatial >= lanes && g.spatial <= kBlock * lanes;
}

template <class S>
Moments planar_chunk_moments(const Plan& p, const S* x, int64_t c, int64_t k) {
    const int64_t i0 = p.begin(k), i1 = p.end(k);
    PairSums<S> sums;
    if (short_planes<S>(p.g)) {
        // The runs as planar_group_moments sums them (bitwise the same moments), around the mean
        // of the first.
        bool first = true;
        for_each_run(p.g, c, i0, i1, [&](int64_t offset, int64_t length) {
            if (first) sums.reset(PairSums<S>::short_shift(x + offset, length));
            first = false;
            sums.add_short_run(x + offset, length);
        });
        sums.flush_short();
    } else {
        for_each_run(p.g, c, i0, i0 + 1, [&](int64_t offset, int64_t) { sums.reset(to_double(x[offset])); });
        for_each_run(p.g, c, i0, i1,
                     [&](int64_t offset, int64_t length) { sums.add_moments(x + offset, length, p.far.prefetch); });
    }
    return cpu::from_shifted(static_cast<double>(i1 - i0), sums.x0, sums.total_a(), sums.total_b());
}

template <class S>
void planar_chunk_gradients(const Plan& p, const S* dy, const S* x, int64_t c, int64_t k, Compute<S> center,
                            double& sum_dy, double& sum_dy_centered) {
    PairSums<S> sums;
    for_each_run(p.g, c, p.begin(k), p.end(k),
                 [&](int64_t offset, int64_t length) {
                     sums.add_gradients(dy + offset, x + offset, length, center, p.far.prefetch);
                 });
    sum_dy = sums.total_a();
    sum_dy_centered = sums.total_b();
}

// out = (x - center)*scale + shift over channel c's plane positions [i0, i1).
template <class S>
HWY_INLINE void affine_run(const S* x, S* out, int64_t offset, int64_t length, Compute<S> center, Compute<S> scale,
                           Compute<S> shift, cpu::Far far) {
    map_run(x + offset, out + offset, length, far, x != out, [&](auto d, auto v, int64_t) {
        return hn::MulAdd(hn::Sub(v, hn::Set(d, center)), hn::Set(d, scale), hn::Set(d, shift));
    });
}

template <class S>
void planar_affine(const Plan& p, const S* x, S* out, int64_t c, int64_t i0, int64_t i1, Compute<S> center,
                   Compute<S> scale, Compute<S> shift, cpu::Far far) {
    for_each_run(p.g, c, i0, i1,
                 [&](int64_t offset, int64_t length) { affine_run(x, out, offset, length, center, scale, shift, far); });
}

// Calls plane(c, offset) for every plane (one sample of one channel) of a channels-first array, in
// memory order, in parallel tasks of whole planes: consecutive planes are adjacent in memory, so
// short planes (14x14) are read and written as one stream rather than as runs that jump between
// samples. `weight`: the pass's cost for parallel_for, in elements of the array (as the other loops
// of its operation count theirs: 1 for a forward pass, 2 for a backward one).
template <class Plane>
void for_planes_in_order(const Geometry& g, int64_t weight, Plane&& plane) {
    const int64_t planes = g.n * g.c;
    const int64_t per_task = std::max<int64_t>(1, cpu::kChunkElements / g.spatial);
    parallel_for((planes + per_task - 1) / per_task, weight * g.numel(), [&](int64_t t) {
        const int64_t end = std::min(planes, (t + 1) * per_task);
        for (int64_t q = t * per_task; q < end; ++q) plane(q % g.c, q * g.spatial);
    });
}

// out = x*scale[c] + shift[c] over a channels-first array, in memory order.
template <class S>
void planar_affine_in_order(const Geometry& g, const S* x, S* out, const Compute<S>* scale,
                            const Compute<S>* shift, cpu::Far far) {
    if (flat_planes<S>(g)) {
        flat_map<S, 2, false>(g, x, x, out, {scale, shift}, far, 1,
                              [](auto d, const auto* k, auto v, auto) { (void)d; return hn::MulAdd(v, k[0], k[1]); });
        return;
    }
    for_planes_in_order(g, 1, [&](int64_t c, int64_t offset) {
        map_run(x + offset, out + offset, g.spatial, far, x != out, [&](auto d, auto v, int64_t) {
            return hn::MulAdd(v, hn::Set(d, scale[c]), hn::Set(d, shift[c]));
        });
    });
}

// dx = dy*scale + (x - center)*slope + shift over channel c's plane positions [i0, i1).
template <class S>
HWY_INLINE void backward_run(const S* dy, const S* x, S* dx, int64_t offset, int64_t length, Compute<S> center,
                             Compute<S> scale, Compute<S> slope, Compute<S> shift, cpu::Far far) {
    const S* xs = x + offset;
    map_run(
        dy + offset, dx + offset, length, far, dx != dy && dx != x,
        [&](auto d, auto g, int64_t j) {
            const auto centered = hn::Sub(load(d, xs + j), hn::Set(d, center));
            return hn::MulAdd(g, hn::Set(d, scale), hn::MulAdd(centered, hn::Set(d, slope), hn::Set(d, shift)));
        },
        xs);
}

template <class S>
void planar_backward_elementwise(const Plan& p, const S* dy, const S* x, S* dx, int64_t c, int64_t i0, int64_t i1,
                                 Compute<S> center, Compute<S> scale, Compute<S> slope, Compute<S> shift,
                                 cpu::Far far) {
    for_each_run(p.g, c, i0, i1, [&](int64_t offset, int64_t length) {
        backward_run(dy, x, dx, offset, length, center, scale, slope, shift, far);
    });
}

// ---- channel groups: short planes in memory order ------------------------------------------------
// With short planes (14x14), one channel's runs are a few cache lines each, a whole channel apart:
// a task per channel jumps across the tensor, and the prefetchers cannot follow. Tasks then take a
// group of consecutive channels and visit their runs sample by sample, reading the group's
// G*spatial values of a sample as one contiguous piece. Each channel's values are still added in
// the same order into the same chunks, so results are bitwise those of a task per channel.
constexpr int64_t kMaxGroup = 32;
// Runs shorter than this form groups of channels (channel_group).
constexpr int64_t kGroupBelowBytes = 512;

// Channels per group: 1 (a task per channel) unless a run is shorter than 512 bytes, or 1024 bytes
// when the tasks compute only the statistics (`statistics_only`: two_pass_in_order); then about
// 4 KB of runs. With the statistics and the output in one task per group (512 bytes), measured on
// 64x256x14x14 before that shape took the path in memory order below: bfloat16 1.3x faster,
// float32, whose 784-byte runs the prefetchers still follow, 5% slower with groups. With the
// statistics alone in the tasks (two_pass_in_order: 1024 bytes), float32 14x14 planes in groups:
// 64x256x14x14 training forward, one thread, 0.82-1.00 ms against 0.91-1.31 ms a channel at a
// time (4 rounds, alternating, in a scratch build with a switch).
inline int64_t channel_group(const Plan& p, int64_t element_bytes, bool statistics_only) {
    const int64_t run_bytes = p.g.spatial * element_bytes;
    if (run_bytes >= (statistics_only ? 2 * kGroupBelowBytes : kGroupBelowBytes)) return 1;
    const int64_t g = std::min(kMaxGroup, (4096 + run_bytes - 1) / run_bytes);
    return std::max<int64_t>(1, std::min(g, p.g.c / (4 * num_threads())));  // four groups per thread
}

// Whether a channels-first two-pass operation (training forward and backward) runs its second pass
// over the whole array in memory order (for_planes_in_order) after the statistics of every channel,
// rather than channel by channel while a channel's values are in cache. For problems beyond the L2
// caches (streamed, not prefetched: kStreamBytes to kPrefetchBytes per tensor) the second pass
// reads from the last-level cache where the tensors stay there (the channel-by-channel pass reads
// from L2 instead, but only a channel or group that was just read), and with short planes (under
// 4 KB) the channel-by-channel writes, a few cache lines a whole channel apart, are what the
// prefetchers cannot follow. Problems within the L2 caches keep one pass per channel group: with
// two threads, the second pass in memory order would read on one core what the other core's
// statistics pass left in its L2 (4x256x14x14 float32, 0.8 MB: 1.2x slower). 64x256x14x14, one
// thread, 6 rounds alternating (medians, the range over rounds): float32 training forward 1.19-1.38
// -> 0.85-1.04 ms, backward 1.90-2.13 -> 1.68-2.06 ms; bfloat16 0.66-0.80 -> 0.53-0.60 ms and
// 0.89-1.07 -> 0.70-0.80 ms; on two threads 1.0-1.25x.
inline bool two_pass_in_order(const Plan& p, int64_t element_bytes) {
    return p.far.stream && !p.far.prefetch && p.g.spatial * element_bytes < 4096;
}

// Sample n's plane positions [i0, i1) of every channel, as chunks split them: one run (`whole`,
// in chunk k0), or, at a chunk boundary within the plane, two or more; without `chunked`, one run
// in chunk 0. The same for every channel: computed once per sample.
struct SamplePlane {
    int64_t i0, i1, k0;
    bool whole;
    SamplePlane(const Plan& p, int64_t n, bool chunked)
        : i0(n * p.g.spatial), i1(i0 + p.g.spatial), k0(chunked ? i0 / p.chunk_len : 0),
          whole(!chunked || (k0 + 1) * p.chunk_len >= i1) {}
    // piece(k, start, length) for the runs of the plane, start counted from the plane's first value.
    template <class Piece>
    HWY_INLINE void pieces(const Plan& p, Piece&& piece) const {
        if (whole) {
            piece(k0, int64_t{0}, i1 - i0);
            return;
        }
        for (int64_t i = i0, k = k0; i < i1; ++k) {
            const int64_t e = std::min(i1, (k + 1) * p.chunk_len);
            piece(k, i - i0, e - i);
            i = e;
        }
    }
};

// Calls visit(c, k, offset, length) for the runs of channels [c0, c1), sample by sample (the last
// sample first when `reverse`), split at chunk boundaries when `chunked` (k: the chunk; else 0).
template <class Visit>
void group_runs(const Plan& p, int64_t c0, int64_t c1, bool chunked, bool reverse, Visit&& visit) {
    const Geometry& g = p.g;
    for (int64_t t = 0; t < g.n; ++t) {
        const int64_t n = reverse ? g.n - 1 - t : t;
        const SamplePlane plane(p, n, chunked);
        for (int64_t u = 0; u < c1 - c0; ++u) {
            const int64_t c = reverse ? c1 - 1 - u : c0 + u;
            const int64_t base = (n * g.c + c) * g.spatial;
            plane.pieces(p, [&](int64_t k, int64_t start, int64_t length) { visit(c, k, base + start, length); });
        }
    }
}

// ---- channels-first reductions in memory order ----------------------------------------------------
// For short planes, a channels-first array is reduced in memory order, the way the bytes lie: tasks
// of consecutive planes (planes_per_task: about kChunkElements values, at most kMaxGroup planes)
// each add their planes into sums of their own, one per slot: a slot per plane, or per channel when
// a task holds more planes than there are channels (plane q of the task starting at q0 goes to slot
// (q - q0) % slots, and slot j is channel (q0 + j) % C). The tasks' partial results are then merged
// per channel in task order. Tasks and order depend only on the problem, so results do not depend
// on the thread count. The channel-group tasks read a sample's piece of a group of channels, then
// jump a whole sample; measured against them at backward and backward_inference. Each plane is
// summed by FlatGradients, in vectors aligned to the array, into double vectors whose lanes are
// added at the task's end (a sum of lanes per plane, and the sums through memory of PairSums, were
// a fifth of the time of 64x256x14x14 backward in inference mode).
inline int64_t planes_per_task(const Geometry& g) {
    return std::clamp<int64_t>(cpu::kChunkElements / g.spatial, 1, kMaxGroup);
}

// Doubles of workspace that the merges below need: 2 per slot of every task.
inline size_t in_order_workspace(const Geometry& g) {
    const int64_t per_task = planes_per_task(g), tasks = (g.n * g.c + per_task - 1) / per_task;
    return 2 * static_cast<size_t>(tasks * std::min(per_task, g.c));
}

// Whether a channels-first pass that reduces short planes does so in memory order (below): runs of
// 256 bytes to 4 KB, of at least a vector (FlatGradients). Shorter runs form groups of channels,
// read in pieces of about 4 KB (not measured against the walk in memory order there). With the
// plane sums in vectors aligned to the array (FlatGradients), 64x256x14x14 16-bit (392-byte runs)
// backward in inference mode is 1.2-1.3x faster in memory order than in groups on one thread and
// 1.0-1.15x on two, its training backward the same (0.98-1.03x); with the sums per run (PairSums)
// before it, memory order had been 1.2-1.5x slower than the groups for 16-bit.
template <class S>
inline bool sums_in_memory_order(const Plan& p) {
    return flat_planes<S>(p.g) && p.g.spatial * static_cast<int64_t>(sizeof(S)) >= 256;
}

// Whether a channels-first training backward of 16-bit data beyond the prefetch bound (over 16 MB
// per tensor) takes its two passes over the whole array in memory order (in_order_gradients over
// whole planes, then backward_in_order) rather than channel by channel, the second pass reading the
// channel back from the caches. A 16-bit channel of 32x64x112x112 or 8x32x256x256 (x and dy: 1.6
// and 2 MB) exceeds the 1 MB L2, and its planes (25 and 128 KB) are runs of their own for the
// prefetchers; in memory order the reads are one stream per input and the second pass streams from
// memory with software prefetches. bench/ab_pair, 10 pairs, RUNS 4 (lib 9040280 -> this), time
// ratios on 1 and 2 threads: 32x64x112x112 bfloat16 0.98, 0.89, float16 0.93, 0.82; 8x32x256x256
// bfloat16 0.86, 0.91, float16 0.89, 0.81 (RUNS 2: 0.82-1.08); bench/ab.sh-like (bench_kernels,
// 4 or 8 rounds alternating): medians 0.87-1.01 on 1 thread (lowest 0.79-0.85), 0.82-1.02 on 2. float32
// (3.2 and 4 MB a channel) was slower in memory order: 8x32x256x256 1.30 and 1.15, 32x64x112x112
// 1.05 and 0.97; the training forward, whose channel of x alone fits in L2, gained nothing.
template <class S>
inline bool backward_planes_in_order(const Plan& p) {
    return sizeof(S) == 2 && p.far.prefetch && planes_of_a_vector<S>(p.g);
}

// Each channel's gradient sums, sum_dy[c] and sum_dy_centered[c] (dy*(x - center[c])), in memory
// order; with dx, also dx = dy*scale[c] in the same pass (backward in inference mode). `partial`:
// in_order_workspace(g) doubles.
template <class S>
void in_order_gradients(const Plan& p, const S* dy, const S* x, S* dx, const Compute<S>* center,
                        const Compute<S>* scale, double* partial, double* sum_dy, double* sum_dy_centered) {
    using DD = hn::ScalableTag<double>;
    const DD dd;
    const Geometry& g = p.g;
    const int64_t C = g.c, planes = g.n * C, per_task = planes_per_task(g), L = static_cast<int64_t>(hn::Lanes(dd));
    const int64_t tasks = (planes + per_task - 1) / per_task, slots = std::min(per_task, C);
    double* part_a = partial;
    double* part_b = partial + tasks * slots;
    auto in_task = [&](int64_t t) { return std::min(planes, (t + 1) * per_task) - t * per_task; };
    const bool stream = dx && flat_stream(g, p.far, dx, 3);
    const FlatGradients<S> walk{dy, x, dx, center, scale, C, g.spatial, p.far.prefetch};
    parallel_for(tasks, 2 * g.numel(), [&](int64_t t) {
        const int64_t q0 = t * per_task, count = in_task(t);
        const int64_t s0 = q0 * g.spatial, s1 = (q0 + count) * g.spatial;
        // A slot per plane, or per channel when the task holds more planes than there are channels
        // (plane i to slot i % slots, added in plane order), as a double vector; its lanes are added
        // at the task's end.
        HWY_ALIGN double a[kMaxGroup * hn::MaxLanes(DD())], b[kMaxGroup * hn::MaxLanes(DD())];
        if (count > slots) {
            std::fill(a, a + slots * L, 0.0);
            std::fill(b, b + slots * L, 0.0);
        }
        auto run = [&](auto streamed) BNORM_LOOP {
            for (int64_t i = 0; i < count; ++i) {
                hn::Vec<DD> plane_a, plane_b;
                walk.template plane<decltype(streamed)::value>(q0 + i, s0, s1, plane_a, plane_b);
                double* slot_a = a + (i % slots) * L;
                double* slot_b = b + (i % slots) * L;
                if (count > slots) {
                    plane_a = hn::Add(hn::Load(dd, slot_a), plane_a);
                    plane_b = hn::Add(hn::Load(dd, slot_b), plane_b);
                }
                hn::Store(plane_a, dd, slot_a);
                hn::Store(plane_b, dd, slot_b);
            }
        };
        if (stream) run(std::true_type{});
        else run(std::false_type{});
        for (int64_t j = 0, used = std::min(slots, count); j < used; ++j) {
            part_a[t * slots + j] = hn::GetLane(hn::SumOfLanes(dd, hn::Load(dd, a + j * L)));
            part_b[t * slots + j] = hn::GetLane(hn::SumOfLanes(dd, hn::Load(dd, b + j * L)));
        }
    });
    std::fill(sum_dy, sum_dy + C, 0.0);
    std::fill(sum_dy_centered, sum_dy_centered + C, 0.0);
    for (int64_t t = 0; t < tasks; ++t)
        for (int64_t j = 0, used = std::min(slots, in_task(t)); j < used; ++j) {
            const int64_t c = (t * per_task + j) % C;
            sum_dy[c] += part_a[t * slots + j];
            sum_dy_centered[c] += part_b[t * slots + j];
        }
}

// The moments of channels [c0, c1), into out[c - c0]: per chunk (planar_chunk_moments), merged in
// chunk order.
//
// Short planes (short_planes: at most kBlock vectors, such as 14x14 and 7x7) go by blocks of four
// channels (ShortPlaneBlock), each block over every sample: a sample's four planes are summed
// together (add_short_runs<4>, four chains interleaved vector by vector), each plane's float sums
// added into the channel's second-level sums, which move into double every kRunsPerFlush planes.
// Before, each plane was a block of its own (PairSums::add_moments: four chains, combined, widened,
// shifted and added into the double totals), about 15 ns a plane for 64x256x14x14 bfloat16 in
// whatever order the planes were read; a scratch program timed that per-plane sum at 0.158 ms,
// the two-level sums in blocks of four channels at 0.096 ms, and the same loads and arithmetic in
// one flat loop at 0.070 ms. In the library, training forward (bench/ab_pair, 60 pairs, against the
// two planes at a time below): 64x256x14x14 bfloat16 0.92 on one thread and 0.97 on two, float16
// 0.92 and 0.93, float32 1.00 and 0.95; 16x128x7x7 float32 0.83; 4x256x14x14 (in L2) bfloat16
// 0.99, float32 on two threads 0.70.
// - The shift, per chunk, is the mean of its first plane (short_shift). The chunk's first value
//   (as add_moments takes a block's) was 1.03-1.08x faster, but one outlier there offsets all the
//   chunk's values: with the first of 64x8x196 float32 values at 100 and the rest spread 1e-2, the
//   variance came out 2e-4 off (the block moments before: 1e-6; with the mean: 2e-7). A shift per
//   lane from each second-level block's first vector (moved into double with per-lane counts, as
//   add_block_moments does) was as slow as the per-plane blocks (0.97-1.0) and 2.5e-5 off there.
// - With the block's chains inlined into the sample loop, GCC kept one of them on the stack (its
//   vector registers were taken by the block's other values): 0.93, and the separate function 0.87
//   in the next minutes (both with the first value as shift); hence add_short_runs is a function
//   of its own.
//
// Longer planes under 4 KB: the group's whole planes of a sample are summed two at a time
// (add_moments_of<2>): a plane of a block or a few is a chain from its loads to its double
// updates, and two chains in the core's window at once hide the last-level cache's latency better.
// 64x256x14x14 training forward when it took this path (bench/ab_pair, 60-100 pairs, against one
// plane at a time): bfloat16 0.87 on one and two threads, float32 and float16 0.93; 16x128x7x7
// float32 0.79. Three and four at a time were slower than two (1.0-1.05, 1.08-1.13: the chains no
// longer fit the registers). The sample's pieces (a plane, or its parts at a chunk boundary) are
// found once per sample, not per channel: 0.955 (bfloat16, one and two threads).
// The moments of R consecutive channels' short planes from channel c0, sample by sample: init,
// then sample(n) for n = 0, 1, ..., g.n - 1, then finish(); into out[0, R).
template <int R, class S>
struct ShortPlaneBlock {
    const Plan* p;
    const S* x;
    int64_t c0;
    Moments* out;
    PairSums<S> sums[R];
    int64_t current[R];

    void init(const Plan& plan, const S* data, int64_t first, Moments* moments) {
        p = &plan;
        x = data;
        c0 = first;
        out = moments;
        std::fill(current, current + R, int64_t{-1});
    }
    HWY_INLINE void close(int r) {
        sums[r].flush_short();
        const int64_t k = current[r];
        const Moments mo = cpu::from_shifted(static_cast<double>(p->end(k) - p->begin(k)), sums[r].x0,
                                             sums[r].total_a(), sums[r].total_b());
        if (k == 0) out[r] = mo;
        else cpu::merge(out[r], mo);
    }
    // A chunk's first run (offset, length) gives its shift.
    HWY_INLINE void start(int r, int64_t k, int64_t offset, int64_t length) {
        if (current[r] != k) {
            if (current[r] >= 0) close(r);
            sums[r].reset(PairSums<S>::short_shift(x + offset, length));
            current[r] = k;
        }
    }
    HWY_INLINE void sample(int64_t n) {
        const Geometry& g = p->g;
        const SamplePlane plane(*p, n, true);
        const int64_t first = (n * g.c + c0) * g.spatial;
        if (plane.whole) {
            // The block's planes of this sample together, each summed as alone.
            PairSums<S>* some[R];
            const S* planes[R];
            for (int r = 0; r < R; ++r) {
                const int64_t offset = first + r * g.spatial;
                start(r, plane.k0, offset, g.spatial);
                some[r] = &sums[r];
                planes[r] = x + offset;
            }
            PairSums<S>::template add_short_runs<R>(some, planes, g.spatial);
            return;
        }
        for (int r = 0; r < R; ++r)
            plane.pieces(*p, [&](int64_t k, int64_t piece, int64_t length) {
                const int64_t offset = first + r * g.spatial + piece;
                start(r, k, offset, length);
                sums[r].add_short_run(x + offset, length);
            });
    }
    void finish() {
        for (int r = 0; r < R; ++r) close(r);
    }
};

// ShortPlaneBlock over every sample.
template <int R, class S>
void short_plane_moments(const Plan& p, const S* x, int64_t c0, Moments* out) {
    ShortPlaneBlock<R, S> block;
    block.init(p, x, c0, out);
    for (int64_t n = 0; n < p.g.n; ++n) block.sample(n);
    block.finish();
}

template <class S>
void planar_group_moments(const Plan& p, const S* x, int64_t c0, int64_t c1, Moments* out) {
    if (short_planes<S>(p.g)) {
        // Blocks of four channels, each over every sample (each channel's runs in order, as
        // planar_chunk_moments sums them).
        int64_t c = c0;
        for (; c + 4 <= c1; c += 4) short_plane_moments<4>(p, x, c, out + (c - c0));
        switch (c1 - c) {
            case 3: short_plane_moments<3>(p, x, c, out + (c - c0)); break;
            case 2: short_plane_moments<2>(p, x, c, out + (c - c0)); break;
            case 1: short_plane_moments<1>(p, x, c, out + (c - c0)); break;
            default: break;
        }
        return;
    }
    PairSums<S> sums[kMaxGroup];
    int64_t current[kMaxGroup];
    std::fill(current, current + (c1 - c0), int64_t{-1});
    auto close = [&](int64_t u) {
        const int64_t k = current[u];
        const Moments mo = cpu::from_shifted(static_cast<double>(p.end(k) - p.begin(k)), sums[u].x0,
                                             sums[u].total_a(), sums[u].total_b());
        if (k == 0) out[u] = mo;
        else cpu::merge(out[u], mo);
    };
    auto start = [&](int64_t u, int64_t k, int64_t offset) {
        if (current[u] != k) {
            if (current[u] >= 0) close(u);
            sums[u].reset(to_double(x[offset]));
            current[u] = k;
        }
    };
    const Geometry& g = p.g;
    for (int64_t n = 0; n < g.n; ++n) {
        const SamplePlane plane(p, n, true);
        const int64_t first = (n * g.c + c0) * g.spatial;
        int64_t u = 0;
        if (plane.whole) {
            // Whole planes, two at a time, each summed as alone (add_moments_of).
            constexpr int R = 2;
            for (; u + R <= c1 - c0; u += R) {
                PairSums<S>* some[R];
                const S* runs[R];
                for (int r = 0; r < R; ++r) {
                    const int64_t offset = first + (u + r) * g.spatial;
                    start(u + r, plane.k0, offset);
                    some[r] = &sums[u + r];
                    runs[r] = x + offset;
                }
                PairSums<S>::template add_moments_of<R>(some, runs, g.spatial, p.far.prefetch);
            }
        }
        for (; u < c1 - c0; ++u)
            plane.pieces(p, [&](int64_t k, int64_t piece, int64_t length) {
                const int64_t offset = first + u * g.spatial + piece;
                start(u, k, offset);
                sums[u].add_moments(x + offset, length, p.far.prefetch);
            });
    }
    for (int64_t u = 0; u < c1 - c0; ++u) close(u);
}

// ---- channels-first moments in memory order ------------------------------------------------------
// Training forward of short planes (short_planes) beyond the L2 caches and within the prefetch
// bound (two_pass_in_order), planes of at least kBlock/2 vectors and at least kMomentTasks tasks
// (moments_in_memory_order): the statistics pass reads the array in memory order, as the output
// pass does after it (flat_map), in tasks of kRunsPerFlush consecutive samples (a task's runs of a
// channel are one second-level block). Each task sums every channel's planes of its samples as
// ShortPlaneBlock sums a chunk's (add_short_runs, blocks of four channels, the shift of each
// channel the mean of its first plane in the task), and the tasks' moments are merged per channel
// in task order: the tasks depend only on the shape, so the results do not depend on the thread
// count. Each thread takes a contiguous range of tasks (parallel_for_split), and the output pass
// then walks that range last task first, so that it starts on what the thread's statistics pass
// left in its L2.
constexpr int64_t kMomentTasks = 8;
template <class S>
inline bool moments_in_memory_order(const Plan& p) {
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<Compute<S>>()));
    return !p.interleaved && two_pass_in_order(p, sizeof(S)) && short_planes<S>(p.g) &&
           p.g.spatial >= kBlock / 2 * lanes && p.g.n >= kMomentTasks * kRunsPerFlush;
}
// in_order_moments' tasks: kRunsPerFlush samples each, the last one the rest.
inline int64_t moment_tasks(const Geometry& g) { return (g.n + kRunsPerFlush - 1) / kRunsPerFlush; }
// Doubles of workspace for in_order_moments: a mean and an m2 per channel and task.
inline size_t in_order_moments_workspace(const Geometry& g) {
    return 2 * static_cast<size_t>(moment_tasks(g) * g.c);
}

// The calling thread's PairSums for c channels, reused across calls.
template <class S>
PairSums<S>* channel_sums(int64_t c) {
    thread_local std::unique_ptr<PairSums<S>[]> sums;
    thread_local int64_t size = 0;
    if (size < c) {
        sums.reset(new PairSums<S>[static_cast<size_t>(c)]);
        size = c;
    }
    return sums.get();
}

// Every channel's mean and m2 into mean[c], m2[c], in memory order (above); partial:
// in_order_moments_workspace doubles.
template <class S>
void in_order_moments(const Plan& p, const S* x, double* partial, double* mean, double* m2) {
    const Geometry& g = p.g;
    const int64_t C = g.c, per_task = kRunsPerFlush, tasks = moment_tasks(g);
    double* part_mean = partial;
    double* part_m2 = partial + tasks * C;
    parallel_for_split(tasks, g.numel(), false, [&](int64_t t) {
        const int64_t n0 = t * per_task, n1 = std::min(g.n, n0 + per_task);
        PairSums<S>* sums = channel_sums<S>(C);
        for (int64_t n = n0; n < n1; ++n) {
            const S* sample = x + n * C * g.spatial;
            auto block = [&](auto rs, int64_t c) BNORM_LOOP {
                constexpr int R = decltype(rs)::value;
                PairSums<S>* some[R];
                const S* planes[R];
                for (int r = 0; r < R; ++r) {
                    planes[r] = sample + (c + r) * g.spatial;
                    some[r] = &sums[c + r];
                    if (n == n0) some[r]->reset(PairSums<S>::short_shift(planes[r], g.spatial));
                }
                PairSums<S>::template add_short_runs<R>(some, planes, g.spatial);
            };
            int64_t c = 0;
            for (; c + 4 <= C; c += 4) block(std::integral_constant<int, 4>{}, c);
            switch (C - c) {
                case 3: block(std::integral_constant<int, 3>{}, c); break;
                case 2: block(std::integral_constant<int, 2>{}, c); break;
                case 1: block(std::integral_constant<int, 1>{}, c); break;
                default: break;
            }
        }
        const double count = static_cast<double>((n1 - n0) * g.spatial);
        for (int64_t c = 0; c < C; ++c) {
            sums[c].flush_short();
            const Moments mo = cpu::from_shifted(count, sums[c].x0, sums[c].total_a(), sums[c].total_b());
            part_mean[t * C + c] = mo.mean;
            part_m2[t * C + c] = mo.m2;
        }
    });
    for (int64_t c = 0; c < C; ++c) {
        Moments total{static_cast<double>(std::min(g.n, per_task) * g.spatial), part_mean[c], part_m2[c]};
        for (int64_t t = 1; t < tasks; ++t) {
            const int64_t n0 = t * per_task, n1 = std::min(g.n, n0 + per_task);
            cpu::merge(total, Moments{static_cast<double>((n1 - n0) * g.spatial), part_mean[t * C + c],
                                      part_m2[t * C + c]});
        }
        mean[c] = total.mean;
        m2[c] = total.m2;
    }
}

// The gradient sums of channels [c0, c1): per chunk (planar_chunk_gradients), added in chunk order.
template <class S>
void planar_group_gradients(const Plan& p, const S* dy, const S* x, int64_t c0, int64_t c1, const Compute<S>* center,
                            double* sum_dy, double* sum_dy_centered) {
    PairSums<S> sums[kMaxGroup];
    int64_t current[kMaxGroup];
    std::fill(current, current + (c1 - c0), int64_t{-1});
    auto close = [&](int64_t u) {
        if (current[u] == 0) {
            sum_dy[u] = sums[u].total_a();
            sum_dy_centered[u] = sums[u].total_b();
        } else {
            sum_dy[u] += sums[u].total_a();
            sum_dy_centered[u] += sums[u].total_b();
        }
    };
    group_runs(p, c0, c1, true, false, [&](int64_t c, int64_t k, int64_t offset, int64_t length) {
        const int64_t u = c - c0;
        if (current[u] != k) {
            if (current[u] >= 0) close(u);
            sums[u].reset(0.0);
            current[u] = k;
        }
        sums[u].add_gradients(dy + offset, x + offset, length, center[c], p.far.prefetch);
    });
    for (int64_t u = 0; u < c1 - c0; ++u) close(u);
}

// ---- interleaved elementwise: rows [r0, r1) of (rows, C) ------------------------------------------
// out = (x - center)*scale + shift, or with dy: out = dy*scale + (x - center)*slope + shift; without
// kCentered (inference: no center, center ignored) out = x*scale + shift. The inference passes
// subtracted a center of zeros before, which is exact (round to nearest, no flush to zero), so their
// results are unchanged; without its load and subtraction, 256x1024 inference forward is 1.1-1.4x
// faster (float32 0.037 -> 0.026 ms on one thread, 0.041 -> 0.034 ms on two; 16-bit 1.1-1.2x).
// Rows of whole vectors are done in column blocks of at most 4 vectors whose coefficients stay in
// registers, over tiles of rows of about 4 KB (a tile's other column blocks find it in L1): loaded
// for every vector, and again after each store (the store may alias them), the coefficients held
// the dx pass of 32x64x112x112 float32 training backward to 27 GB/s (1.5x slower).
template <int K, bool kWithGradient, bool kCentered, class S>
HWY_INLINE void interleaved_elementwise_block(const S* x, const S* dy, S* out, int64_t C, int64_t c0, int64_t r0,
                                              int64_t r1, const Compute<S>* center, const Compute<S>* scale,
                                              const Compute<S>* slope, const Compute<S>* shift, bool stream,
                                              bool prefetch) {
    using CT = Compute<S>;
    const hn::ScalableTag<CT> d;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    hn::Vec<decltype(d)> k_center[K], k_scale[K], k_slope[K], k_shift[K];
    for (int k = 0; k < K; ++k) {
        const int64_t c = c0 + k * lanes;
        if constexpr (kCentered) k_center[k] = hn::LoadU(d, center + c);
        k_scale[k] = hn::LoadU(d, scale + c);
        if constexpr (kWithGradient) k_slope[k] = hn::LoadU(d, slope + c);
        k_shift[k] = hn::LoadU(d, shift + c);
    }
    const uintptr_t skip = rows_ahead(C * static_cast<int64_t>(sizeof(S)));
    // Pairs of bfloat16 vectors (kPairedStores) are streamed as whole 64-byte vectors when every
    // row's pairs are aligned.
    const bool pair_stream = stream && pairs_aligned(d, out + r0 * C + c0, C);
    prefetching(prefetch, [&](auto pf) BNORM_LOOP {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t row = r * C + c0;
            ahead_rows(pf, x + row, K * lanes, skip);
            if constexpr (kWithGradient) ahead_rows(pf, dy + row, K * lanes, skip);
            auto value = [&](int k) BNORM_LOOP {
                const int64_t i = row + k * lanes;
                auto centered = load(d, x + i);
                if constexpr (kCentered) centered = hn::Sub(centered, k_center[k]);
                if constexpr (kWithGradient)
                    return hn::MulAdd(load(d, dy + i), k_scale[k], hn::MulAdd(centered, k_slope[k], k_shift[k]));
                else
                    return hn::MulAdd(centered, k_scale[k], k_shift[k]);
            };
            int k = 0;
            if constexpr (kPairedStores<S, decltype(d)>)
                for (; k + 2 <= K; k += 2) store_pair(d, value(k), value(k + 1), out + row + k * lanes, pair_stream);
            for (; k < K; ++k) store(d, value(k), out + row + k * lanes, stream);
        }
    });
}

template <bool kWithGradient, bool kCentered = true, class S>
void interleaved_elementwise(const S* x, const S* dy, S* out, int64_t C, int64_t r0, int64_t r1,
                             const Compute<S>* center, const Compute<S>* scale, const Compute<S>* slope,
                             const Compute<S>* shift, cpu::Far far) {
    using CT = Compute<S>;
    const hn::ScalableTag<CT> d;
    const hn::CappedTag<CT, 1> d1;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    auto one = [&](auto tag, int64_t r, int64_t c, bool streamed) {
        const int64_t i = r * C + c;
        auto centered = load(tag, x + i);
        if constexpr (kCentered) centered = hn::Sub(centered, hn::LoadU(tag, center + c));
        hn::Vec<decltype(tag)> v;
        if constexpr (kWithGradient)
            v = hn::MulAdd(load(tag, dy + i), hn::LoadU(tag, scale + c),
                           hn::MulAdd(centered, hn::LoadU(tag, slope + c), hn::LoadU(tag, shift + c)));
        else
            v = hn::MulAdd(centered, hn::LoadU(tag, scale + c), hn::LoadU(tag, shift + c));
        store(tag, v, out + i, streamed);
    };
    // Rows are streamed only when a row is a whole number of aligned vectors.
    const uintptr_t bytes = static_cast<uintptr_t>(lanes) * sizeof(S);
    const bool aligned_rows = far.stream && C % lanes == 0 && reinterpret_cast<uintptr_t>(out) % bytes == 0;
    const uintptr_t skip = rows_ahead(C * static_cast<int64_t>(sizeof(S)));
    // One input of 32-bit values (inference forward) is prefetched well enough by the hardware:
    // 32x64x112x112 float32 measured 1.1x faster without software prefetches.
    const bool prefetch = far.prefetch && (kWithGradient || sizeof(S) < 4);
    // Rows of kTileBytes and more gain nothing from tiles (256x1024 float32 backward 1.07x slower
    // in blocks): they take the loop below.
    constexpr int64_t kTileBytes = 4096;
    const int64_t vectors = C / lanes, row_bytes = C * static_cast<int64_t>(sizeof(S));
    if (C % lanes == 0 && (vectors <= 4 || 2 * row_bytes <= kTileBytes)) {
        const int64_t tile = vectors <= 4 ? r1 - r0 : kTileBytes / row_bytes;
        for (int64_t t0 = r0; t0 < r1; t0 += tile) {
            const int64_t t1 = std::min(r1, t0 + tile);
            for_each_column_block(C, lanes, [&](auto K, int64_t c0) BNORM_LOOP {
                interleaved_elementwise_block<K(), kWithGradient, kCentered>(x, dy, out, C, c0, t0, t1, center, scale,
                                                                             slope, shift, aligned_rows, prefetch);
            });
        }
        return;
    }
    prefetching(prefetch, [&](auto pf) BNORM_LOOP {
        for (int64_t r = r0; r < r1; ++r) {
            ahead_rows(pf, x + r * C, C, skip);
            if constexpr (kWithGradient) ahead_rows(pf, dy + r * C, C, skip);
            int64_t c = 0;
            for (; c + lanes <= C; c += lanes) one(d, r, c, aligned_rows);
            for (; c < C; ++c) one(d1, r, c, false);
        }
    });
}

// ---- the operations ---------------------------------------------------------------------------------

// Interleaved statistics: per-chunk shifted sums in parallel, then Chan merges in chunk order;
// leaves mean in w.center and M2 in w.chunk_b[0..c), and calls finish(c0, c1) for each group of
// channels [c0, c1) once its totals are complete (in parallel with other groups).
template <class S, class Finish>
void interleaved_moments(const Plan& p, const S* x, const Scratch<S>& w, Finish&& finish) {
    const int64_t C = p.g.c;
    parallel_for_split(p.chunks, p.g.numel(), false, [&](int64_t k) {
        interleaved_sums<false>(x, static_cast<const S*>(nullptr), C, p.begin(k), p.end(k), nullptr, w.chunk_s + k * C,
                                w.chunk_a + k * C, w.chunk_b + k * C, p.far.prefetch);
    });
    // Chan merges in chunk order, for groups of channels in parallel (a loop the compiler
    // vectorizes: the count-dependent factors are the same for every channel of a chunk).
    constexpr int64_t kGroup = 256;
    parallel_for((C + kGroup - 1) / kGroup, p.chunks * C * 8, [&](int64_t group) {
        const int64_t c0 = group * kGroup, c1 = std::min(C, c0 + kGroup);
        double* mean = w.center;
        double* m2 = w.chunk_b;  // chunk 0's slots become the totals
        {
            const double n = static_cast<double>(p.end(0) - p.begin(0)), inv = 1.0 / n;
            for (int64_t c = c0; c < c1; ++c) {
                const double s1 = w.chunk_a[c], s2 = w.chunk_b[c];
                mean[c] = w.chunk_s[c] + s1 * inv;
                const double v = s2 - s1 * s1 * inv;
                m2[c] = v > 0 ? v : 0;
            }
        }
        double count = static_cast<double>(p.end(0) - p.begin(0));
        for (int64_t k = 1; k < p.chunks; ++k) {
            const double nb = static_cast<double>(p.end(k) - p.begin(k)), inv = 1.0 / nb, total = count + nb;
            const double weight_b = nb / total, cross = count * nb / total;
            const double* s1s = w.chunk_a + k * C;
            const double* s2s = w.chunk_b + k * C;
            const double* shifts = w.chunk_s + k * C;
            for (int64_t c = c0; c < c1; ++c) {
                const double s1 = s1s[c];
                const double mean_b = shifts[c] + s1 * inv;
                const double v = s2s[c] - s1 * s1 * inv;
                const double delta = mean_b - mean[c];
                mean[c] += delta * weight_b;
                m2[c] += (v > 0 ? v : 0) + delta * delta * cross;
            }
            count = total;
        }
        finish(c0, c1);
    });
}

// ---- per-channel arithmetic, on double vectors ------------------------------------------------------
// The coefficients of each channel (a square root and divisions) were 11% of 256x1024 float32
// training forward as scalar code. They run on vectors of doubles, each operation in the order the
// scalar expressions had (every one correctly rounded), so a channel's values do not depend on the
// lane or the tail it falls in. body(d, c) for channels [c, c + Lanes(d)).
template <class Body>
HWY_INLINE void for_channels(int64_t c0, int64_t c1, Body&& body) {
    const hn::ScalableTag<double> d;
    const hn::CappedTag<double, 1> d1;
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
    int64_t c = c0;
    for (; c + lanes <= c1; c += lanes) body(d, c);
    for (; c < c1; ++c) body(d1, c);
}
// p[c, c + Lanes(d)) as doubles, or `fallback` when p is null (an absent weight or bias).
template <class D, class P>
HWY_INLINE hn::Vec<D> load_double(D d, const P* p, int64_t c, double fallback) {
    if (p == nullptr) return hn::Set(d, fallback);
    if constexpr (std::is_same_v<P, double>) return hn::LoadU(d, p + c);
    else return hn::PromoteTo(d, hn::LoadU(hn::Rebind<float, D>(), p + c));
}
// v rounded to P (float or double) at p[c, ...).
template <class D, class P>
HWY_INLINE void store_double(D d, hn::Vec<D> v, P* p, int64_t c) {
    if constexpr (std::is_same_v<P, double>) hn::StoreU(v, d, p + c);
    else hn::StoreU(hn::DemoteTo(hn::Rebind<float, D>(), v), hn::Rebind<float, D>(), p + c);
}
// gamma/sqrt(running_var + eps): the inference scale.
template <class D, class Args>
HWY_INLINE hn::Vec<D> inference_scale(D d, const Args& a, int64_t c) {
    return hn::Div(load_double(d, a.weight, c, 1.0),
                   hn::Sqrt(hn::Add(load_double(d, a.running_var, c, 0.0), hn::Set(d, a.eps))));
}

// Channels [c0, c1): the normalization coefficients from their means and M2 (mean[i], m2[i]: channel
// c0 + i), and the saved and running statistics.
template <class S>
void finish_statistics(const ForwardTrainingArgs<S>& a, int64_t c0, int64_t c1, const double* mean, const double* m2,
                       Compute<S>* center, Compute<S>* scale, Compute<S>* shift) {
    const double m = static_cast<double>(a.g.per_channel());
    for_channels(c0, c1, [&](auto d, int64_t c) BNORM_LOOP {
        const auto mu = hn::LoadU(d, mean + (c - c0));
        const auto var = hn::Div(hn::LoadU(d, m2 + (c - c0)), hn::Set(d, m));
        const auto invstd = hn::Div(hn::Set(d, 1.0), hn::Sqrt(hn::Add(var, hn::Set(d, a.eps))));
        store_double(d, mu, center, c);
        store_double(d, hn::Mul(load_double(d, a.weight, c, 1.0), invstd), scale, c);
        store_double(d, load_double(d, a.bias, c, 0.0), shift, c);
        if (a.save_mean) store_double(d, mu, a.save_mean, c);
        if (a.save_invstd) store_double(d, invstd, a.save_invstd, c);
        if (a.update.enabled) {
            const auto f = hn::Set(d, a.update.factor), keep = hn::Set(d, 1.0 - a.update.factor);
            const auto batch_var =
                a.update.unbiased ? hn::Div(hn::Mul(var, hn::Set(d, m)), hn::Set(d, m - 1.0)) : var;
            store_double(d, hn::Add(hn::Mul(keep, load_double(d, a.running_mean, c, 0.0)), hn::Mul(f, mu)),
                         a.running_mean, c);
            store_double(d, hn::Add(hn::Mul(keep, load_double(d, a.running_var, c, 0.0)), hn::Mul(f, batch_var)),
                         a.running_var, c);
        }
    });
}

// ---- pipelines over groups of channels -----------------------------------------------------------
// The training forward and backward of channels-first short planes (flat_planes; the forward:
// short_planes) in problems beyond the L2 caches: groups of G consecutive channels (a sample's piece
// of a group: about kPipelinePieceBytes), each thread over a contiguous range of groups, pipelined:
// sample by sample, the reduction of the next group (statistics, or gradient sums: its x, or dy and
// x, read from memory or the last-level cache) alongside the output of the current group (y or dx),
// whose inputs the reduction just left in the core's L2. Each input is then read once from beyond
// L2 and the output written once, and the reads of one group overlap the (streamed) writes of the
// other. Before, the two passes over the whole array in memory order (within the prefetch bound)
// read the inputs twice from beyond L2, with nothing written during the first; the channel-group
// tasks beyond the prefetch bound read the second time from L2 too, but neither overlapped.
// bench/ab_pair (12-40 pairs, the Intel Xeon host; B/A time ratios on one and two threads):
// - backward: float32 64x256x14x14 0.72-0.75 and 0.78-0.80, 32x256x14x14 0.69 and 0.70, 16x128x28x28
//   0.74-0.76 and 0.77-0.81, 64x128x28x28 0.56 and 0.52, 128x512x7x7 0.83 and 0.86, 256x256x14x14
//   (51 MB) 0.47 and 0.50; 64x256x14x14 bfloat16 0.84-0.90 and 0.84-0.92, float16 0.79 and 0.79,
//   128x512x7x7 bfloat16 0.92 and 0.92. Pieces of 1.5 KB (128x512x7x7 float32: G=8) were 0.96 and
//   1.09, of 6 KB (64x256x14x14 float32, G=8) 0.87 and 0.89, of 3 KB 0.72-0.83. Not taken: planes
//   of 4 KB and more (as groups of one channel: 32x64x56x56 float32 1.14 and 1.13, bfloat16 1.04 and
//   1.07, 8x32x256x256 float32 1.14 and 1.10, 32x64x112x112 float32 0.98 and 1.02); 16-bit problems
//   beyond the prefetch bound (backward_planes_in_order: 256x256x14x14 bfloat16, G=8, 1.11 and 1.00,
//   G=4 1.25 and 1.20).
// - training forward: float32 64x256x14x14 0.84-0.96 and 0.90-0.98, 32x256x14x14 0.74-0.82 and
//   0.75-0.77, 64x352x10x10 0.79 and 0.78, 128x512x7x7 0.77-0.79 and 0.78-0.79, 256x256x14x14 0.58
//   and 0.63-0.75; 64x256x14x14 bfloat16 0.92-1.03 and 1.02 (its statistics are bound by the vector
//   ports), float16 0.87 and 0.86-0.99; 128x512x7x7 bfloat16 0.89 and 0.83, 256x256x14x14 0.77 and
//   0.86.
// The outputs may alias the inputs: a group's reduction is done before its first write, and the
// writes of the other groups go to other channels. The reductions do not depend on the thread count:
// the backward's sums go plane by plane (FlatGradients) into double vectors in sample order, the
// forward's statistics are planar_group_moments' (blocks of four channels, ShortPlaneBlock).
constexpr int64_t kPipelinePieceBytes = 3072;
// A group's inputs must stay in L2 until its output pass; beyond this, the older paths.
constexpr int64_t kPipelineGroupBytes = int64_t{4} << 20;
// At least this many groups, so that a thread's range pipelines over several (with a group count
// that depends only on the shape: results are the same for every thread count).
constexpr int64_t kPipelineMinGroups = 8;

// Channels per group: pieces of about kPipelinePieceBytes, a multiple of `multiple` (a power of two).
inline int64_t pipeline_group(const Geometry& g, int64_t element_bytes, int64_t multiple = 1) {
    const int64_t run_bytes = g.spatial * element_bytes;
    const int64_t G = std::clamp<int64_t>((kPipelinePieceBytes + run_bytes - 1) / run_bytes, 1, kMaxGroup);
    return (G + multiple - 1) / multiple * multiple;
}

// Whether a channels-first problem with flat planes beyond the L2 caches fits the pipeline: enough
// groups, and a group's `tensors` inputs within kPipelineGroupBytes.
template <class S>
inline bool pipeline_fits(const Plan& p, int64_t tensors, int64_t multiple = 1) {
    const Geometry& g = p.g;
    if (g.interleaved() || !flat_planes<S>(g) || !p.far.stream) return false;
    const int64_t G = pipeline_group(g, sizeof(S), multiple);
    return (g.c + G - 1) / G >= kPipelineMinGroups &&
           tensors * g.n * G * g.spatial * static_cast<int64_t>(sizeof(S)) <= kPipelineGroupBytes;
}

// A thread's range of groups [first, last), pipelined: begin(first), add(first, n) for every sample
// n, end(first); then for each group t, sample by sample, add(t + 1, n) (the next group's reduction)
// alongside out(t, n) (this group's output), and end(t + 1).
template <class Begin, class Add, class End, class Out>
HWY_INLINE void pipeline_groups(int64_t first, int64_t last, int64_t samples, Begin&& begin, Add&& add, End&& end,
                                Out&& out) {
    begin(first);
    for (int64_t n = 0; n < samples; ++n) add(first, n);
    end(first);
    for (int64_t t = first; t < last; ++t) {
        const bool next = t + 1 < last;
        if (next) begin(t + 1);
        for (int64_t n = 0; n < samples; ++n) {
            if (next) add(t + 1, n);
            out(t, n);
        }
        if (next) end(t + 1);
    }
}


// y = (x - center)*scale + shift for the flat walks (FlatMap over x, coefficients {center, scale,
// shift}).
struct AffineValue {
    template <class D, class V>
    HWY_INLINE V operator()(D, const V* k, V v, V) const {
        return hn::MulAdd(hn::Sub(v, k[0]), k[1], k[2]);
    }
};

// The training forward of short planes (short_planes), pipelined (above): groups of a multiple of
// four channels.
template <class S>
inline bool forward_pipelined(const Plan& p) {
    return pipeline_fits<S>(p, 1, 4) && short_planes<S>(p.g);
}

template <class S>
void pipelined_forward(const ForwardTrainingArgs<S>& a, const Plan& p, Compute<S>* center, Compute<S>* scale,
                       Compute<S>* shift) {
    const Geometry& g = p.g;
    const int64_t G = pipeline_group(g, sizeof(S), 4), C = g.c, groups = (C + G - 1) / G;
    const bool stream = flat_stream(g, p.far, a.y, 2);
    const FlatMap<S, 3, false, AffineValue> y{a.x, a.x, a.y, {center, scale, shift}, C, g.spatial, AffineValue()};
    parallel_ranges(groups, g.numel(), [&](int64_t first, int64_t last) {
        // A group's blocks of four channels; the last group's last channels (C % 4) one at a time.
        ShortPlaneBlock<4, S> blocks[kMaxGroup / 4];
        ShortPlaneBlock<1, S> singles[3];
        Moments mo[kMaxGroup];
        int64_t count = 0, single = 0;
        auto begin_group = [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            count = (c1 - c0) / 4;
            single = (c1 - c0) % 4;
            for (int64_t b = 0; b < count; ++b) blocks[b].init(p, a.x, c0 + 4 * b, mo + 4 * b);
            for (int64_t u = 0; u < single; ++u) singles[u].init(p, a.x, c0 + 4 * count + u, mo + 4 * count + u);
        };
        auto add_sample = [&](int64_t, int64_t n) BNORM_LOOP {
            for (int64_t b = 0; b < count; ++b) blocks[b].sample(n);
            for (int64_t u = 0; u < single; ++u) singles[u].sample(n);
        };
        auto end_group = [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            for (int64_t b = 0; b < count; ++b) blocks[b].finish();
            for (int64_t u = 0; u < single; ++u) singles[u].finish();
            double means[kMaxGroup], m2s[kMaxGroup];
            for (int64_t u = 0; u < c1 - c0; ++u) {
                means[u] = mo[u].mean;
                m2s[u] = mo[u].m2;
            }
            finish_statistics(a, c0, c1, means, m2s, center, scale, shift);
        };
        auto y_sample = [&](int64_t t, int64_t n) BNORM_LOOP {
            output_planes(y, stream, n * C + t * G, n * C + std::min(C, (t + 1) * G));
        };
        pipeline_groups(first, last, g.n, begin_group, add_sample, end_group, y_sample);
    });
}

template <class S>
void forward_training(const ForwardTrainingArgs<S>& a) {
    const Plan p(a.g, sizeof(S));
    const bool pipelined = forward_pipelined<S>(p);
    const bool in_memory_order = !pipelined && moments_in_memory_order<S>(p);
    const Scratch<S> w(p, in_memory_order ? 2 * static_cast<size_t>(a.g.c) + in_order_moments_workspace(a.g) : 0);
    const int64_t C = a.g.c;
    const cpu::Far far = p.far;
    auto* center = w.coefficients(0, C);
    auto* scale = w.coefficients(1, C);
    auto* shift = w.coefficients(2, C);
    const AffineValue affine;
    if (pipelined) {
        pipelined_forward(a, p, center, scale, shift);
    } else if (p.interleaved) {
        interleaved_moments(p, a.x, w, [&](int64_t c0, int64_t c1) {
            finish_statistics(a, c0, c1, w.center + c0, w.chunk_b + c0, center, scale, shift);
        });
        parallel_for_split(p.chunks, a.g.numel(), true, [&](int64_t k) {
            interleaved_elementwise<false>(a.x, static_cast<const S*>(nullptr), a.y, C, p.begin(k), p.end(k), center,
                                           scale, static_cast<const Compute<S>*>(nullptr), shift, far);
        });
    } else if (in_memory_order) {
        // Both passes in memory order, each thread's output pass last task first.
        double* mean = w.extra;
        double* m2 = mean + C;
        in_order_moments(p, a.x, m2 + C, mean, m2);
        finish_statistics(a, 0, C, mean, m2, center, scale, shift);
        flat_map<S, 3, false>(a.g, a.x, a.x, a.y, {center, scale, shift}, far, 1, affine, true);
    } else if (C >= num_threads()) {
        // A task per channel, or per group of channels with short planes: statistics, then the
        // normalization while the channel or group is in cache (last sample first), or, in order,
        // of the whole array after every channel's statistics.
        const bool in_order = two_pass_in_order(p, sizeof(S));
        const int64_t G = channel_group(p, sizeof(S), in_order);
        parallel_for((C + G - 1) / G, a.g.numel(), [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            Moments mo[kMaxGroup];
            planar_group_moments(p, a.x, c0, c1, mo);
            double means[kMaxGroup], m2s[kMaxGroup];
            for (int64_t u = 0; u < c1 - c0; ++u) {
                means[u] = mo[u].mean;
                m2s[u] = mo[u].m2;
            }
            finish_statistics(a, c0, c1, means, m2s, center, scale, shift);
            if (in_order) return;
            // The second pass reads from the cache: no prefetch (measured: 1.1x faster without).
            const cpu::Far cached{far.stream, false};
            group_runs(p, c0, c1, false, true, [&](int64_t c, int64_t, int64_t offset, int64_t length) {
                affine_run(a.x, a.y, offset, length, center[c], scale[c], shift[c], cached);
            });
        });
        if (in_order && flat_planes<S>(a.g))
            flat_map<S, 3, false>(a.g, a.x, a.x, a.y, {center, scale, shift}, far, 1, affine);
        else if (in_order)
            for_planes_in_order(a.g, 1, [&](int64_t c, int64_t offset) {
                affine_run(a.x, a.y, offset, a.g.spatial, center[c], scale[c], shift[c], far);
            });
    } else {
        // Fewer channels than threads: the chunks of every channel in parallel, the same merges.
        parallel_for(C * p.chunks, a.g.numel(), [&](int64_t t) {
            const Moments mo = planar_chunk_moments(p, a.x, t / p.chunks, t % p.chunks);
            w.chunk_a[t] = mo.mean;
            w.chunk_b[t] = mo.m2;
        });
        for (int64_t c = 0; c < C; ++c) {
            Moments total{static_cast<double>(p.end(0) - p.begin(0)), w.chunk_a[c * p.chunks], w.chunk_b[c * p.chunks]};
            for (int64_t k = 1; k < p.chunks; ++k)
                cpu::merge(total, Moments{static_cast<double>(p.end(k) - p.begin(k)), w.chunk_a[c * p.chunks + k],
                                          w.chunk_b[c * p.chunks + k]});
            finish_statistics(a, c, c + 1, &total.mean, &total.m2, center, scale, shift);
        }
        parallel_for(C * p.chunks, a.g.numel(), [&](int64_t t) {
            const int64_t c = t / p.chunks, k = t % p.chunks;
            planar_affine(p, a.x, a.y, c, p.begin(k), p.end(k), center[c], scale[c], shift[c], far);
        });
    }
    if (far.stream) hwy::FlushStream();
}

// y = x*scale + shift with scale = gamma/sqrt(running_var + eps), shift = beta - running_mean*scale.
template <class S>
void forward_inference(const ForwardInferenceArgs<S>& a) {
    using CT = Compute<S>;
    const Plan p(a.g, sizeof(S));
    const Scratch<S> w(p);
    const int64_t C = a.g.c;
    const cpu::Far far = p.far;
    CT* scale = w.coefficients(0, C);
    CT* shift = w.coefficients(1, C);
    for_channels(0, C, [&](auto d, int64_t c) BNORM_LOOP {
        const auto s = inference_scale(d, a, c);
        store_double(d, s, scale, c);
        store_double(d, hn::Sub(load_double(d, a.bias, c, 0.0), hn::Mul(load_double(d, a.running_mean, c, 0.0), s)),
                     shift, c);
    });
    if (p.interleaved) {
        parallel_for(p.chunks, a.g.numel(), [&](int64_t k) {
            interleaved_elementwise<false, false>(a.x, static_cast<const S*>(nullptr), a.y, C, p.begin(k), p.end(k),
                                                  nullptr, scale, static_cast<const CT*>(nullptr), shift, far);
        });
    } else {
        planar_affine_in_order(a.g, a.x, a.y, scale, shift, far);
    }
    if (far.stream) hwy::FlushStream();
}

// Per channel, from sum dy and sum dy*(x - mean):
//   dx = gamma*invstd/m*(m*dy - sum_dy - xhat*sum_dy_xhat)
//      = dy*(gamma*invstd) + (x - mean)*(-gamma*invstd^3*sum_dy_centered/m) + (-gamma*invstd*sum_dy/m)
// For channels [c0, c1) (sum_dy[i], sum_dy_centered[i]: channel c0 + i); center (the saved mean)
// is set before the sums, which use it.
template <class S>
void backward_coefficients(const BackwardArgs<S>& a, int64_t c0, int64_t c1, const double* sum_dy,
                           const double* sum_dy_centered, Compute<S>* scale, Compute<S>* slope, Compute<S>* shift) {
    const double m = static_cast<double>(a.g.per_channel());
    for_channels(c0, c1, [&](auto d, int64_t c) BNORM_LOOP {
        const auto invstd = load_double(d, a.save_invstd, c, 0.0);
        const auto neg_gamma_invstd = hn::Neg(hn::Mul(load_double(d, a.weight, c, 1.0), invstd));
        const auto sdy = hn::LoadU(d, sum_dy + (c - c0)), sdc = hn::LoadU(d, sum_dy_centered + (c - c0));
        const auto mv = hn::Set(d, m);
        store_double(d, hn::Neg(neg_gamma_invstd), scale, c);
        store_double(d, hn::Div(hn::Mul(hn::Mul(hn::Mul(neg_gamma_invstd, invstd), invstd), sdc), mv), slope, c);
        store_double(d, hn::Div(hn::Mul(neg_gamma_invstd, sdy), mv), shift, c);
        if (a.dweight) store_double(d, hn::Mul(sdc, invstd), a.dweight, c);
        if (a.dbias) store_double(d, sdy, a.dbias, c);
    });
}

// Interleaved gradient sums: per chunk in parallel, added in chunk order into chunk_a/chunk_b[0..c).
template <class S>
void interleaved_gradients(const Plan& p, const S* dy, const S* x, const Compute<S>* center, const Scratch<S>& w) {
    const int64_t C = p.g.c;
    parallel_for_split(p.chunks, 2 * p.g.numel(), false, [&](int64_t k) {
        // Two input streams and no stores: the hardware prefetchers keep enough reads in flight
        // (32x64x112x112 and 8x32x256x256 training backward 1.05-1.08x faster without software
        // prefetches on one thread, the same on two).
        interleaved_sums<true>(x, dy, C, p.begin(k), p.end(k), center, nullptr, w.chunk_a + k * C, w.chunk_b + k * C,
                               false);
    });
    for (int64_t k = 1; k < p.chunks; ++k)
        for (int64_t c = 0; c < C; ++c) {
            w.chunk_a[c] += w.chunk_a[k * C + c];
            w.chunk_b[c] += w.chunk_b[k * C + c];
        }
}

// dx = dy*scale + (x - center)*slope + shift for the flat walks (FlatMap over dy and x, coefficients
// {scale, center, slope, shift}).
struct BackwardValue {
    template <class D, class V>
    HWY_INLINE V operator()(D, const V* k, V g, V v) const {
        return hn::MulAdd(g, k[0], hn::MulAdd(hn::Sub(v, k[1]), k[2], k[3]));
    }
};

template <class S>
inline bool backward_pipelined(const Plan& p) {
    return pipeline_fits<S>(p, 2) && !backward_planes_in_order<S>(p);
}

// The training backward, pipelined (above).
template <class S>
void pipelined_backward(const BackwardArgs<S>& a, const Plan& p, const Compute<S>* center, Compute<S>* scale,
                        Compute<S>* slope, Compute<S>* shift) {
    const int64_t G = pipeline_group(p.g, sizeof(S));
    using DD = hn::ScalableTag<double>;
    const DD dd;
    const Geometry& g = p.g;
    const int64_t C = g.c, groups = (C + G - 1) / G, L = static_cast<int64_t>(hn::Lanes(dd));
    const bool stream = flat_stream(g, p.far, a.dx, 3);
    const FlatGradients<S> sums{a.dy, a.x, nullptr, center, nullptr, C, g.spatial, false};
    const FlatMap<S, 4, true, BackwardValue> dx{a.dy, a.x, a.dx, {scale, center, slope, shift}, C, g.spatial,
                                                BackwardValue()};
    parallel_ranges(groups, 2 * g.numel(), [&](int64_t first, int64_t last) {
        HWY_ALIGN double acc_a[kMaxGroup * hn::MaxLanes(DD())], acc_b[kMaxGroup * hn::MaxLanes(DD())];
        // Adds sample n's planes of group t into acc_a/acc_b.
        auto add_sample = [&](int64_t t, int64_t n) BNORM_LOOP {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G), q0 = n * C + c0, q1 = n * C + c1;
            for (int64_t q = q0; q < q1; ++q) {
                hn::Vec<DD> pa, pb;
                sums.template plane<false>(q, q0 * g.spatial, q1 * g.spatial, pa, pb);
                double* sa = acc_a + (q - q0) * L;
                double* sb = acc_b + (q - q0) * L;
                hn::Store(hn::Add(hn::Load(dd, sa), pa), dd, sa);
                hn::Store(hn::Add(hn::Load(dd, sb), pb), dd, sb);
            }
        };
        auto begin_group = [&](int64_t) {
            std::fill(acc_a, acc_a + G * L, 0.0);
            std::fill(acc_b, acc_b + G * L, 0.0);
        };
        auto end_group = [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            double sum_dy[kMaxGroup], sum_dy_centered[kMaxGroup];
            for (int64_t u = 0; u < c1 - c0; ++u) {
                sum_dy[u] = hn::GetLane(hn::SumOfLanes(dd, hn::Load(dd, acc_a + u * L)));
                sum_dy_centered[u] = hn::GetLane(hn::SumOfLanes(dd, hn::Load(dd, acc_b + u * L)));
            }
            backward_coefficients(a, c0, c1, sum_dy, sum_dy_centered, scale, slope, shift);
        };
        auto dx_sample = [&](int64_t t, int64_t n) BNORM_LOOP {
            output_planes(dx, stream, n * C + t * G, n * C + std::min(C, (t + 1) * G));
        };
        pipeline_groups(first, last, g.n, begin_group, add_sample, end_group, dx_sample);
    });
}

// dx = dy*scale + (x - center)*slope + shift over the whole channels-first array, in memory order;
// with `reverse` (flat walks only), each thread's range last task first (see flat_map).
template <class S>
void backward_in_order(const BackwardArgs<S>& a, const Compute<S>* center, const Compute<S>* scale,
                       const Compute<S>* slope, const Compute<S>* shift, cpu::Far far, bool reverse = false) {
    if (flat_planes<S>(a.g)) {
        flat_map<S, 4, true>(a.g, a.dy, a.x, a.dx, {scale, center, slope, shift}, far, 2, BackwardValue(), reverse);
        return;
    }
    for_planes_in_order(a.g, 2, [&](int64_t c, int64_t offset) {
        backward_run(a.dy, a.x, a.dx, offset, a.g.spatial, center[c], scale[c], slope[c], shift[c], far);
    });
}

template <class S>
void backward(const BackwardArgs<S>& a) {
    const Plan p(a.g, sizeof(S));
    // Runs of 256 bytes to 4 KB: the sums in memory order too (in_order_gradients; 64x256x14x14
    // float32, 4 rounds alternating: 1.70-2.37 -> 1.37-1.78 ms on one thread, 0.98-1.35 -> 0.72-0.91
    // ms on two, with the sums per run; see sums_in_memory_order). Shorter runs form groups of
    // channels, read in pieces of about 4 KB. 16-bit problems beyond the prefetch bound: both passes
    // in memory order too (backward_planes_in_order).
    const bool pipelined = backward_pipelined<S>(p);
    const bool sums_in_order = !pipelined && ((two_pass_in_order(p, sizeof(S)) && sums_in_memory_order<S>(p)) ||
                                              backward_planes_in_order<S>(p));
    const Scratch<S> w(p, sums_in_order ? in_order_workspace(a.g) : 0);
    const int64_t C = a.g.c;
    const cpu::Far far = p.far;
    auto* center = w.coefficients(0, C);
    auto* scale = w.coefficients(1, C);
    auto* slope = w.coefficients(2, C);
    auto* shift = w.coefficients(3, C);
    for (int64_t c = 0; c < C; ++c) center[c] = static_cast<Compute<S>>(a.save_mean[c]);
    if (pipelined) {
        pipelined_backward(a, p, center, scale, slope, shift);
    } else if (p.interleaved) {
        interleaved_gradients(p, a.dy, a.x, center, w);
        backward_coefficients(a, 0, C, w.chunk_a, w.chunk_b, scale, slope, shift);
        parallel_for_split(p.chunks, 2 * a.g.numel(), true, [&](int64_t k) {
            interleaved_elementwise<true>(a.x, a.dy, a.dx, C, p.begin(k), p.end(k), center, scale, slope, shift,
                                          far);
        });
    } else if (sums_in_order) {
        // Both sums, then dx, each over the whole array in memory order (dx may alias dy or x: all
        // the sums are taken before the first write).
        in_order_gradients(p, a.dy, a.x, static_cast<S*>(nullptr), center, static_cast<const Compute<S>*>(nullptr),
                           w.extra, w.chunk_a, w.chunk_b);
        backward_coefficients(a, 0, C, w.chunk_a, w.chunk_b, scale, slope, shift);
        backward_in_order(a, center, scale, slope, shift, far, two_pass_in_order(p, sizeof(S)));
    } else if (C >= num_threads()) {
        // A task per channel, or per group of channels with short planes: both sums, then dx while
        // the channel or group is in cache, or, in order, of the whole array after every channel's
        // sums (dx may alias dy or x: every read of a channel's sums comes before its first write).
        const bool in_order = two_pass_in_order(p, sizeof(S));
        const int64_t G = channel_group(p, sizeof(S), in_order);
        parallel_for((C + G - 1) / G, 2 * a.g.numel(), [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            double sum_dy[kMaxGroup], sum_dy_centered[kMaxGroup];
            planar_group_gradients(p, a.dy, a.x, c0, c1, center, sum_dy, sum_dy_centered);
            backward_coefficients(a, c0, c1, sum_dy, sum_dy_centered, scale, slope, shift);
            if (in_order) return;
            const cpu::Far cached{far.stream, false};  // as in forward_training
            group_runs(p, c0, c1, false, true, [&](int64_t c, int64_t, int64_t offset, int64_t length) {
                backward_run(a.dy, a.x, a.dx, offset, length, center[c], scale[c], slope[c], shift[c], cached);
            });
        });
        if (in_order) backward_in_order(a, center, scale, slope, shift, far);
    } else {
        parallel_for(C * p.chunks, 2 * a.g.numel(), [&](int64_t t) {
            const int64_t c = t / p.chunks;
            planar_chunk_gradients(p, a.dy, a.x, c, t % p.chunks, center[c], w.chunk_a[t], w.chunk_b[t]);
        });
        for (int64_t c = 0; c < C; ++c) {
            double sum_dy = w.chunk_a[c * p.chunks], sum_dy_centered = w.chunk_b[c * p.chunks];
            for (int64_t k = 1; k < p.chunks; ++k) {
                sum_dy += w.chunk_a[c * p.chunks + k];
                sum_dy_centered += w.chunk_b[c * p.chunks + k];
            }
            backward_coefficients(a, c, c + 1, &sum_dy, &sum_dy_centered, scale, slope, shift);
        }
        parallel_for(C * p.chunks, 2 * a.g.numel(), [&](int64_t t) {
            const int64_t c = t / p.chunks, k = t % p.chunks;
            planar_backward_elementwise(p, a.dy, a.x, a.dx, c, p.begin(k), p.end(k), center[c], scale[c], slope[c],
                                        shift[c], far);
        });
    }
    if (far.stream) hwy::FlushStream();
}

// dx = gamma*dy/sqrt(running_var + eps); dweight, dbias as in training, around running_mean.
template <class S>
void backward_inference(const BackwardInferenceArgs<S>& a) {
    using CT = Compute<S>;
    const Plan p(a.g, sizeof(S));
    const bool sums = a.dweight || a.dbias;
    // Runs of 256 bytes to 4 KB: the one pass in memory order (in_order_gradients), instead of a
    // task per channel whose runs lie a whole sample apart: 64x256x14x14 float32, 4 rounds
    // alternating, 1.32-1.50 -> 0.85-1.19 ms on one thread, 0.58-0.78 -> 0.46-0.60 ms on two (sums
    // per run); in vectors aligned to the array (FlatGradients), 0.80 -> 0.62 ms (6 rounds, the
    // lowest of each side's repetitions). Shorter runs form groups of channels below, read in
    // pieces of about 4 KB.
    const bool in_order = sums && sums_in_memory_order<S>(p);
    const Scratch<S> w(p, in_order ? in_order_workspace(a.g) : 0);
    const int64_t C = a.g.c;
    const cpu::Far far = p.far;
    CT* scale = w.coefficients(0, C);
    CT* zero = w.coefficients(1, C);    // the shift of dx = dy*scale, without the sums
    CT* center = w.coefficients(2, C);  // running_mean, around which the sums are taken
    for_channels(0, C, [&](auto d, int64_t c) BNORM_LOOP {
        store_double(d, inference_scale(d, a, c), scale, c);
        if (sums) store_double(d, load_double(d, a.running_mean, c, 0.0), center, c);
        else store_double(d, hn::Zero(d), zero, c);
    });
    if (!sums) {
        // dx = dy*scale: the affine pass applied to dy, uncentered, with shift 0.
        if (p.interleaved) {
            parallel_for(p.chunks, a.g.numel(), [&](int64_t k) {
                interleaved_elementwise<false, false>(a.dy, static_cast<const S*>(nullptr), a.dx, C, p.begin(k),
                                                      p.end(k), nullptr, scale, static_cast<const CT*>(nullptr), zero,
                                                      far);
            });
        } else {
            planar_affine_in_order(a.g, a.dy, a.dx, scale, zero, far);
        }
        if (far.stream) hwy::FlushStream();
        return;
    }
    // With dweight/dbias: one pass, reading dy and x once and writing dx: the sums and dx = dy*scale
    // in the same loop.
    if (p.interleaved) {
        const hn::ScalableTag<CT> d;
        const uintptr_t bytes = hn::Lanes(d) * sizeof(S);
        const ScaleOut<S> out{a.dx, scale,
                              far.stream && C % static_cast<int64_t>(hn::Lanes(d)) == 0 &&
                                  reinterpret_cast<uintptr_t>(a.dx) % bytes == 0};
        parallel_for(p.chunks, 2 * a.g.numel(), [&](int64_t k) {
            interleaved_sums<true, true>(a.x, a.dy, C, p.begin(k), p.end(k), center, nullptr, w.chunk_a + k * C,
                                         w.chunk_b + k * C, p.far.prefetch, out);
        });
        for (int64_t k = 1; k < p.chunks; ++k)
            for (int64_t c = 0; c < C; ++c) {
                w.chunk_a[c] += w.chunk_a[k * C + c];
                w.chunk_b[c] += w.chunk_b[k * C + c];
            }
    } else if (in_order) {
        in_order_gradients(p, a.dy, a.x, a.dx, center, scale, w.extra, w.chunk_a, w.chunk_b);
    } else {
        // One pass, so nothing has to stay in cache between passes: groups of channels as large as
        // leave four tasks per thread, visited sample by sample, read dy and x in long contiguous
        // pieces (each channel's values are still added in the same order).
        const int64_t G = std::max<int64_t>(1, std::min(kMaxGroup, C / (4 * num_threads())));
        parallel_for((C + G - 1) / G, 2 * a.g.numel(), [&](int64_t t) {
            const int64_t c0 = t * G, c1 = std::min(C, c0 + G);
            PairSums<S> channel_sums[kMaxGroup];
            group_runs(p, c0, c1, false, false, [&](int64_t c, int64_t, int64_t offset, int64_t length) {
                channel_sums[c - c0].add_gradients_scaling(a.dy + offset, a.x + offset, a.dx + offset, length, center[c],
                                                   scale[c], far);
            });
            for (int64_t c = c0; c < c1; ++c) {
                w.chunk_a[c] = channel_sums[c - c0].total_a();
                w.chunk_b[c] = channel_sums[c - c0].total_b();
            }
        });
    }
    for_channels(0, C, [&](auto d, int64_t c) BNORM_LOOP {
        const auto invstd = hn::Div(hn::Set(d, 1.0),
                                    hn::Sqrt(hn::Add(load_double(d, a.running_var, c, 0.0), hn::Set(d, a.eps))));
        if (a.dweight) store_double(d, hn::Mul(hn::LoadU(d, w.chunk_b + c), invstd), a.dweight, c);
        if (a.dbias) store_double(d, hn::LoadU(d, w.chunk_a + c), a.dbias, c);
    });
    if (far.stream) hwy::FlushStream();
}

// Entry points of this target, one per (operation, element type), for HWY_EXPORT.
#define BNORM_TARGET_ENTRIES(S, suffix)                                                              \
    void ForwardTraining##suffix(const ForwardTrainingArgs<S>& a) { forward_training<S>(a); }         \
    void ForwardInference##suffix(const ForwardInferenceArgs<S>& a) { forward_inference<S>(a); }      \
    void Backward##suffix(const BackwardArgs<S>& a) { backward<S>(a); }                               \
    void BackwardInference##suffix(const BackwardInferenceArgs<S>& a) { backward_inference<S>(a); }
BNORM_TARGET_ENTRIES(float, F32)
BNORM_TARGET_ENTRIES(double, F64)
BNORM_TARGET_ENTRIES(bfloat16, BF16)
BNORM_TARGET_ENTRIES(float16, F16)
#undef BNORM_TARGET_ENTRIES

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace bnorm::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::detail {
namespace {

HWY_EXPORT(TargetName);

#define BNORM_DISPATCH(S, suffix)                                                                     \
    HWY_EXPORT(ForwardTraining##suffix);                                                              \
    HWY_EXPORT(ForwardInference##suffix);                                                             \
    HWY_EXPORT(Backward##suffix);                                                                     \
    HWY_EXPORT(BackwardInference##suffix);                                                            \
    void forward_training_##suffix(const ForwardTrainingArgs<S>& a) {                                 \
        HWY_DYNAMIC_DISPATCH(ForwardTraining##suffix)(a);                                             \
    }                                                                                                 \
    void forward_inference_##suffix(const ForwardInferenceArgs<S>& a) {                               \
        HWY_DYNAMIC_DISPATCH(ForwardInference##suffix)(a);                                            \
    }                                                                                                 \
    void backward_##suffix(const BackwardArgs<S>& a) { HWY_DYNAMIC_DISPATCH(Backward##suffix)(a); }   \
    void backward_inference_##suffix(const BackwardInferenceArgs<S>& a) {                             \
        HWY_DYNAMIC_DISPATCH(BackwardInference##suffix)(a);                                           \
    }                                                                                                 \
    constexpr KernelTable<S> table_##suffix{forward_training_##suffix, forward_inference_##suffix,    \
                                            backward_##suffix, backward_inference_##suffix};
BNORM_DISPATCH(float, F32)
BNORM_DISPATCH(double, F64)
BNORM_DISPATCH(bfloat16, BF16)
BNORM_DISPATCH(float16, F16)
#undef BNORM_DISPATCH

bool accepts(DType, const Geometry&) { return true; }

}  // namespace

const Implementation& cpu_implementation() {
    static const Implementation impl{"cpu", accepts, table_F32, table_F64, table_BF16, table_F16};
    return impl;
}

const char* cpu_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace bnorm::detail
#endif  // HWY_ONCE
