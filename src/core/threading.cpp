#include "core/threading.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <thread>

namespace bnorm::detail {
namespace {

// BNORM_NUM_THREADS if it is a positive integer (an invalid value is ignored), else the cores.
int default_threads() {
    if (const char* env = std::getenv("BNORM_NUM_THREADS")) {
        char* end = nullptr;
        errno = 0;
        const long v = std::strtol(env, &end, 10);
        if (errno == 0 && end != env && *end == '\0' && v > 0 && v <= 4096) return static_cast<int>(v);
    }
    const unsigned cores = std::thread::hardware_concurrency();
    return cores > 0 ? static_cast<int>(cores) : 1;
}

std::atomic<int>& current() {
    static std::atomic<int> threads{default_threads()};
    return threads;
}

}  // namespace

int num_threads() { return current().load(std::memory_order_relaxed); }

int set_num_threads(int n) { return current().exchange(n > 0 ? n : default_threads()); }

}  // namespace bnorm::detail
