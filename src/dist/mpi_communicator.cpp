// mpi_communicator.cpp: bnorm::MpiCommunicator over MPI_COMM_WORLD. Each collective is started
// non-blocking (MPI_Iallgather, MPI_Iallreduce) and polled with MPI_Test up to a deadline, so that a
// process that is gone turns into a message and MPI_Abort within the timeout instead of a hang.
// MPI errors are returned (MPI_ERRORS_RETURN) and reported the same way.
#include "bnorm/mpi.hpp"

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace bnorm {
namespace {

[[noreturn]] void abort_job(int rank, const std::string& message) {
    std::fprintf(stderr, "bnorm: rank %d: %s; aborting all processes\n", rank, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
    std::_Exit(3);
}

void check(int rank, int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    abort_job(rank, std::string(what) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

int count_of(int rank, size_t n, const char* what) {
    if (n > static_cast<size_t>(INT_MAX))
        abort_job(rank, std::string(what) + ": " + std::to_string(n) + " values exceed MPI's int count; split the call");
    return static_cast<int>(n);
}

// Polls until the request completes; after the deadline, reports and aborts.
void wait(int rank, double timeout_seconds, MPI_Request& request, const char* what) {
    if (timeout_seconds <= 0) {
        check(rank, MPI_Wait(&request, MPI_STATUS_IGNORE), what);
        return;
    }
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_seconds);
    for (int polls = 0;; ++polls) {
        int done = 0;
        check(rank, MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
        if (done) return;
        // Spin briefly (collectives on one node finish in microseconds), then give the core away:
        // on an oversubscribed machine the process we wait for may need it.
        if (polls < 64) continue;
        const auto now = clock::now();
        if (now > deadline)
            abort_job(rank, std::string("the other processes did not join ") + what + " within " +
                                std::to_string(static_cast<int>(timeout_seconds)) +
                                " s (BNORM_DIST_TIMEOUT): a process crashed, exited early or skipped the call "
                                "(every process must make the same collective calls, also one with no samples)");
        if (now - start < std::chrono::milliseconds(2)) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

// The processes meet on their own communicator before MPI_Finalize: a process that returns early
// (its error, or a bug) must not finalize while the others still wait in a collective: Open MPI's
// mpirun does not return when a job aborts after one of its processes has finalized.
MPI_Comm finish_comm = MPI_COMM_NULL;

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) MPI_Init(argc, argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_dup(MPI_COMM_WORLD, &finish_comm);
}

MpiSession::~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const double timeout = MpiCommunicator::default_timeout_seconds();
    MPI_Request request;
    if (MPI_Ibarrier(finish_comm, &request) == MPI_SUCCESS) wait(rank, timeout, request, "the end of the program");
    MPI_Comm_free(&finish_comm);
    MPI_Finalize();
}

void MpiSession::abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
}

bool MpiSession::launched_by_mpirun() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
        if (std::getenv(name)) return true;
    return false;
}

double MpiCommunicator::default_timeout_seconds() {
    if (const char* text = std::getenv("BNORM_DIST_TIMEOUT")) {
        char* end = nullptr;
        const double v = std::strtod(text, &end);
        if (end != text && *end == '\0') return v;
        std::fprintf(stderr, "bnorm: BNORM_DIST_TIMEOUT=%s is not a number of seconds; using 30\n", text);
    }
    return 30.0;
}

MpiCommunicator::MpiCommunicator(double timeout_seconds) : timeout_seconds_(timeout_seconds) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

namespace {

void allgather_values(int rank, double timeout, const void* send, size_t n, void* recv, MPI_Datatype type) {
    MPI_Request request;
    const int count = count_of(rank, n, "MPI_Iallgather");
    check(rank, MPI_Iallgather(send, count, type, recv, count, type, MPI_COMM_WORLD, &request), "MPI_Iallgather");
    wait(rank, timeout, request, "an allgather");
}

void allreduce_values(int rank, double timeout, void* data, size_t n, MPI_Datatype type) {
    MPI_Request request;
    const int count = count_of(rank, n, "MPI_Iallreduce");
    check(rank, MPI_Iallreduce(MPI_IN_PLACE, data, count, type, MPI_SUM, MPI_COMM_WORLD, &request), "MPI_Iallreduce");
    wait(rank, timeout, request, "an allreduce");
}

}  // namespace

void MpiCommunicator::allgather(std::span<const double> send, std::span<double> recv) {
    allgather_values(rank_, timeout_seconds_, send.data(), send.size(), recv.data(), MPI_DOUBLE);
}
void MpiCommunicator::allgather(std::span<const int64_t> send, std::span<int64_t> recv) {
    allgather_values(rank_, timeout_seconds_, send.data(), send.size(), recv.data(), MPI_INT64_T);
}
void MpiCommunicator::allreduce_sum(std::span<float> data) {
    allreduce_values(rank_, timeout_seconds_, data.data(), data.size(), MPI_FLOAT);
}
void MpiCommunicator::allreduce_sum(std::span<double> data) {
    allreduce_values(rank_, timeout_seconds_, data.data(), data.size(), MPI_DOUBLE);
}

}  // namespace bnorm
