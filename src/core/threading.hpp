// threading.hpp: the thread count of the CPU kernels and the one parallel loop they use.
// Work is always split into a number of chunks fixed by the problem, never by the thread count,
// so results are bitwise identical for every thread count; threads only pick which chunks they run.
#pragma once

#include <cstdint>

#include <omp.h>

namespace bnorm::detail {

int num_threads();
int set_num_threads(int n);  // n <= 0: back to the default; returns the previous value

// Threads worth starting for `count` pieces of work touching `work` elements in all.
inline int64_t threads_for(int64_t count, int64_t work) {
    constexpr int64_t kMinWorkPerThread = 1 << 15;
    int64_t threads = num_threads();
    if (threads > count) threads = count;
    if (threads > work / kMinWorkPerThread) threads = work / kMinWorkPerThread;
    return threads;
}

// Calls body(i) for every i in [0, count), spread over num_threads() threads when the problem is
// large enough to pay for it (work: elements touched in all). body must not throw.
template <class Body>
void parallel_for(int64_t count, int64_t work, Body&& body) {
    const int64_t threads = threads_for(count, work);
    if (threads <= 1) {
        for (int64_t i = 0; i < count; ++i) body(i);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
    for (int64_t i = 0; i < count; ++i) body(i);
}

// Calls body(begin, end) once per thread with that thread's contiguous range of [0, count): thread
// t of T gets [count*t/T, count*(t+1)/T) (one call with the whole range when one thread runs).
template <class Body>
void parallel_ranges(int64_t count, int64_t work, Body&& body) {
    const int64_t threads = threads_for(count, work);
    if (threads <= 1) {
        if (count > 0) body(int64_t{0}, count);
        return;
    }
#pragma omp parallel num_threads(static_cast<int>(threads))
    {
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        body(count * t / n, count * (t + 1) / n);
    }
}

// The same with a split of its own: thread t of T runs [count*t/T, count*(t+1)/T), in order or
// (reverse) last first. Two loops over the same count and work give each thread the same indices,
// so a second pass in reverse finds what the thread read last in its own core's cache.
template <class Body>
void parallel_for_split(int64_t count, int64_t work, bool reverse, Body&& body) {
    parallel_ranges(count, work, [&](int64_t begin, int64_t end) {
        if (reverse)
            for (int64_t i = end; i-- > begin;) body(i);
        else
            for (int64_t i = begin; i < end; ++i) body(i);
    });
}

}  // namespace bnorm::detail
