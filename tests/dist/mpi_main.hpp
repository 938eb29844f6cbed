// mpi_main.hpp: the GoogleTest main of the tests that run under mpirun (mpi_main.cpp): MPI is
// initialized around RUN_ALL_TESTS, every process runs every test (each test makes the same
// collective calls on every rank), rank 0 prints the usual report, other ranks print only their
// failures, prefixed with their rank.
#pragma once

#include "bnorm/mpi.hpp"

namespace bnorm::test {
Communicator& world();  // MPI_COMM_WORLD
}
