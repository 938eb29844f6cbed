// values.hpp: the element and parameter reads the CPU kernels share: x at (n, c, s) as double,
// and an optional per-channel parameter (weight, bias) with its default when absent.
#pragma once

#include <cstdint>

#include "core/geometry.hpp"

namespace bnorm::detail {

template <class T>
double at(const T* p, const Geometry& g, int64_t n, int64_t c, int64_t s) {
    return static_cast<double>(p[g.offset(n, c, s)]);
}

template <class T>
double param_or(const T* p, int64_t c, double fallback) {
    return p ? static_cast<double>(p[c]) : fallback;
}

}  // namespace bnorm::detail
