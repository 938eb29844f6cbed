// geometry.hpp: the internal description of a batch-normalization problem that core hands to
// kernels after checking it. Kernels trust every field (see the requires below).
#pragma once

#include <cstdint>

namespace bnorm::detail {

enum class Layout { channels_first, channels_last };

// requires: n, c, spatial >= 1 and n*c*spatial fits in int64_t (core checks both).
// Element (n, c, s) lives at ((n*c_count + c)*spatial + s) channels-first and at
// ((n*spatial + s)*c_count + c) channels-last. Each channel has m = n*spatial values.
struct Geometry {
    Layout layout;
    int64_t n, c, spatial;

    int64_t numel() const { return n * c * spatial; }
    int64_t per_channel() const { return n * spatial; }
    // channels-first with spatial == 1 has the same memory order as channels-last: (n, c).
    bool interleaved() const { return layout == Layout::channels_last || spatial == 1; }
    int64_t offset(int64_t in, int64_t ic, int64_t is) const {
        return layout == Layout::channels_first ? (in * c + ic) * spatial + is
                                                : (in * spatial + is) * c + ic;
    }
};

}  // namespace bnorm::detail
