// allocation_counter.hpp: replaces this test binary's global operator new with one that counts
// while `counting_allocations` is set. Include it in exactly one file of a test binary (it defines
// the replacement operators, which a program may have only once).
//
//   allocations = 0;
//   counting_allocations = true;
//   step();
//   counting_allocations = false;
//   EXPECT_EQ(allocations.load(), 0);
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace {
std::atomic<bool> counting_allocations{false};
std::atomic<int64_t> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
    if (counting_allocations.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
// GCC inlines these into call sites and then sees free() of memory from `new`; they match here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop
