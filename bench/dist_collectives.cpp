// dist_collectives: the time of the collectives that synchronized batch normalization makes, alone:
// global_statistics (allgather of 2C + 1 doubles) and global_backward_sums (allgather of 2C), for
// C channels, averaged over many calls, under mpirun. Never asserts a time.
//   mpirun -np 2 build/bench_dist_collectives 100
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bnorm/mpi.hpp"

int main(int argc, char** argv) {
    bnorm::MpiSession session(&argc, &argv);
    bnorm::MpiCommunicator comm;
    const int64_t c = argc > 1 ? std::atoll(argv[1]) : 100, n = 30;
    std::vector<float> x(static_cast<size_t>(n * c), 1.5f), dy(x.size(), 0.5f), sm(static_cast<size_t>(c), 1.f),
        si(static_cast<size_t>(c), 1.f);
    std::vector<double> mean(static_cast<size_t>(c)), m2(mean.size()), a(mean.size()), b(mean.size()), la(mean.size()),
        lb(mean.size());
    const bnorm::Shape shape{n, c, 1};
    auto step = [&] {
        bnorm::global_statistics<float>(comm, shape, x, mean, m2);
        bnorm::global_backward_sums<float>(comm, shape,
                                           {.dy = dy, .x = x, .save_mean = sm, .save_invstd = si, .sum_dy = la,
                                            .sum_dy_xhat = lb},
                                           a, b);
    };
    for (int i = 0; i < 200; ++i) step();
    const int iterations = 5000;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) step();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iterations;
    if (comm.rank() == 0)
        std::printf("%d processes, C = %lld: %.2f us per BN layer per step (2 allgathers + local work)\n", comm.size(),
                    static_cast<long long>(c), us);
    return 0;
}
