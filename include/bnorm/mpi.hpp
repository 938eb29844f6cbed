// mpi.hpp: the Communicator over MPI (library bnorm_dist, CMake target bnorm::bnorm_dist; Open MPI
// from Debian's libopenmpi-dev). MPI_COMM_WORLD, one process per rank, launched with mpirun.
//
//   int main(int argc, char** argv) {
//       bnorm::MpiSession session(&argc, &argv);   // MPI_Init ... MPI_Finalize
//       bnorm::MpiCommunicator comm;                // rank(), size(), the collectives
//       bnorm::SyncBatchNorm<float> bn({.num_features = 64}, comm);
//   }
//
// No collective waits forever: if the other processes have not all joined it within the timeout
// (a process crashed, exited early or skipped a call), this process prints which collective and
// why to stderr and aborts the whole job (MPI_Abort), so mpirun exits non-zero, never hangs.
#pragma once

#include <span>

#include "bnorm/dist.hpp"

namespace bnorm {

// MPI_Init in the constructor, MPI_Finalize in the destructor. launched_by_mpirun() says whether
// this process was started by mpirun (Open MPI's or a PMI launcher's environment), without MPI.
class MpiSession {
public:
    MpiSession(int* argc, char*** argv);
    ~MpiSession();
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;
    static bool launched_by_mpirun();
    [[noreturn]] static void abort(int code);  // MPI_Abort: ends every process of the job
};

class MpiCommunicator final : public Communicator {
public:
    // requires: MPI is initialized (MpiSession). timeout_seconds <= 0: plain blocking collectives.
    explicit MpiCommunicator(double timeout_seconds = default_timeout_seconds());
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    void allgather(std::span<const double> send, std::span<double> recv) override;
    void allgather(std::span<const int64_t> send, std::span<int64_t> recv) override;
    void allreduce_sum(std::span<float> data) override;
    void allreduce_sum(std::span<double> data) override;
    // BNORM_DIST_TIMEOUT (seconds) from the environment, else 30.
    static double default_timeout_seconds();

private:
    int rank_ = 0, size_ = 1;
    double timeout_seconds_;
};

}  // namespace bnorm
