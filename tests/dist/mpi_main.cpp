#include "dist/mpi_main.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

namespace bnorm::test {
namespace {

std::unique_ptr<MpiCommunicator> communicator;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
public:
    explicit RankFailurePrinter(int rank) : rank_(rank) {}
    void OnTestPartResult(const ::testing::TestPartResult& result) override {
        if (result.failed())
            std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                         result.line_number(), result.summary());
    }

private:
    int rank_;
};

}  // namespace

Communicator& world() { return *communicator; }

}  // namespace bnorm::test

int main(int argc, char** argv) {
    bnorm::MpiSession session(&argc, &argv);
    bnorm::test::communicator = std::make_unique<bnorm::MpiCommunicator>();
    ::testing::InitGoogleTest(&argc, argv);
    const int rank = bnorm::test::world().rank();
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    if (rank != 0) {
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new bnorm::test::RankFailurePrinter(rank));
    }
    const int failed = RUN_ALL_TESTS();
    // The job fails if any rank failed (mpirun also returns the first non-zero exit code).
    double verdict = failed ? 1.0 : 0.0;
    bnorm::test::world().allreduce_sum(std::span<double>(&verdict, 1));
    if (rank == 0 && verdict > 0 && !failed) std::fprintf(stderr, "another rank failed; see its [rank N] lines\n");
    return verdict > 0 ? 1 : 0;
}
