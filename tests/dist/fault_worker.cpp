// fault_worker: a distributed training loop of SyncBatchNorm steps in which rank 1 fails at step 20
// in the way argv[1] says: "exit" (std::exit(3) without MPI_Finalize), "exit0" (std::exit(0)
// without MPI_Finalize), "crash" (SIGSEGV), "return" (returns from main: MpiSession's destructor
// finalizes, the case an MPI job can hang on, since nothing has died). The others keep training. run_fault.cmake runs
// it under mpirun and checks that the job stops with a message, in time.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "bnorm/mpi.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: fault_worker exit|exit0|crash|return\n");
        return 2;
    }
    const std::string mode = argv[1];
    bnorm::MpiSession session(&argc, &argv);
    bnorm::MpiCommunicator comm;
    bnorm::SyncBatchNorm<float> bn({.num_features = 8}, comm);
    std::vector<float> x(4 * 8), y(x.size()), dx(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) + static_cast<float>(comm.rank());
    for (int step = 0; step < 100000; ++step) {
        if (comm.rank() == 1 && step == 20) {
            std::fprintf(stderr, "fault_worker: rank 1 fails now (%s)\n", mode.c_str());
            std::fflush(stderr);
            if (mode == "exit") std::exit(3);
            if (mode == "exit0") std::exit(0);
            if (mode == "crash") std::raise(SIGSEGV);
            if (mode == "return") return 0;
        }
        bn.forward({4, 8, 1}, x, y);
        bn.backward({4, 8, 1}, x, y, dx);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::fprintf(stderr, "fault_worker: rank %d finished without noticing the failure\n", comm.rank());
    return 0;
}
