// common.hpp: helpers shared by the C++ tests: random tensors, shapes, and calls of the reference
// kernels (the oracle) with the same arguments as the public API.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "core/kernels.hpp"

namespace bnorm::test {

inline std::string layout_name(Layout l) { return l == Layout::channels_first ? "nchw" : "nhwc"; }

inline std::string shape_name(const Shape& s) {
    return layout_name(s.layout) + "_n" + std::to_string(s.n) + "_c" + std::to_string(s.c) + "_s" +
           std::to_string(s.spatial);
}

inline int64_t numel(const Shape& s) { return s.n * s.c * s.spatial; }

// Every shape of the list in both layouts, channels-first first.
template <class Shapes>
std::vector<Shape> in_both_layouts(const Shapes& shapes) {
    std::vector<Shape> out;
    for (Layout layout : {Layout::channels_first, Layout::channels_last})
        for (Shape s : shapes) {
            s.layout = layout;
            out.push_back(s);
        }
    return out;
}

template <class T>
std::vector<T> random_vector(int64_t size, uint32_t seed, double mean = 0.0, double stddev = 1.0) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> dist(mean, stddev);
    std::vector<T> v(static_cast<size_t>(size));
    for (auto& e : v) e = static_cast<T>(dist(rng));
    return v;
}

template <class T>
std::vector<T> random_positive(int64_t size, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> dist(0.5, 2.0);
    std::vector<T> v(static_cast<size_t>(size));
    for (auto& e : v) e = static_cast<T>(dist(rng));
    return v;
}

inline detail::Geometry geometry(const Shape& s) {
    return detail::Geometry{s.layout == Layout::channels_first ? detail::Layout::channels_first
                                                               : detail::Layout::channels_last,
                            s.n, s.c, s.spatial};
}

template <class T>
const detail::KernelTable<T>& reference_kernels() {
    if constexpr (std::is_same_v<T, double>) return detail::reference_implementation().f64;
    else return detail::reference_implementation().f32;
}

template <class T>
T* opt(std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }
template <class T>
const T* opt(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }

// Tolerance for comparing a result with the float64 reference: a few units of the type's epsilon,
// scaled by the size of the values involved.
template <class T>
double tolerance() { return std::is_same_v<T, double> ? 1e-12 : 2e-5; }

// Expects |got - want| <= tol * (1 + |want|) element by element, naming the first bad index.
template <class T>
void expect_near(const std::vector<T>& got, const std::vector<T>& want, double tol, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
        if (!(std::abs(g - w) <= tol * (1.0 + std::abs(w)))) {
            ADD_FAILURE() << what << "[" << i << "] = " << g << ", reference " << w << ", difference "
                          << std::abs(g - w) << " > " << tol * (1.0 + std::abs(w));
            return;
        }
    }
}

}  // namespace bnorm::test
