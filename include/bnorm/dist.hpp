// dist.hpp: synchronized batch normalization over any transport, built from the split operations
// of bnorm.hpp and a small Communicator interface (an MPI one is in bnorm/mpi.hpp, library
// bnorm_dist). libbnorm itself does not depend on MPI.
//
//   bnorm::MpiCommunicator comm;                                 // or any Communicator
//   bnorm::SyncBatchNorm<float> bn({.num_features = 64}, comm);
//   bn.forward({.n = local_n, .c = 64, .spatial = 784}, x, y);   // statistics of the whole batch
//   bn.backward(shape, x, dy, dx);                               // dx of the whole batch's loss
//   comm.allreduce_sum(grads);                                   // grad_weight/grad_bias are local parts
//
// Every call that says "collective" must be made by every process of the communicator, in the
// same order, also by a process with no samples (shape.n = 0). docs/distributed.md has the design.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm {

// The collectives synchronized batch normalization and data parallelism need. Implementations
// must give every process the same bits (allreduce), deliver rank r's block at r*send.size()
// (allgather), and never wait forever: a process that is gone is reported as a bnorm::Error or
// ends the job with a message.
class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // requires: every process passes the same send.size(); recv.size() == size()*send.size().
    virtual void allgather(std::span<const double> send, std::span<double> recv) = 0;
    virtual void allgather(std::span<const int64_t> send, std::span<int64_t> recv) = 0;
    // In place: data becomes the element-wise sum over the processes.
    virtual void allreduce_sum(std::span<float> data) = 0;
    virtual void allreduce_sum(std::span<double> data) = 0;
};

// One process: the collectives are copies. SyncBatchNorm over it is plain batch normalization.
class SingleProcessCommunicator final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void allgather(std::span<const double> send, std::span<double> recv) override;
    void allgather(std::span<const int64_t> send, std::span<int64_t> recv) override;
    void allreduce_sum(std::span<float>) override {}
    void allreduce_sum(std::span<double>) override {}
};

// Collective. Throws InvalidArgument on every process when they disagree on `values`, naming the
// first rank that differs from rank 0 and what (`what[i]` names values[i]), e.g. "rank 2 has
// channels = 32, rank 0 has 64". For checking at start that every process built the same model.
void check_same_on_all(Communicator& comm, const char* op, std::span<const int64_t> values,
                       std::span<const char* const> what);

// Collective: the statistics of the whole batch, from every process's part (allgather of
// count, mean, M2; merged in rank order, so every process gets the same bits). Returns the total
// count. communication_seconds, when given, accumulates the time spent in the collective.
template <class T>
int64_t global_statistics(Communicator& comm, const Shape& shape, std::span<const T> x, std::span<double> mean,
                          std::span<double> m2, double* communication_seconds = nullptr);

// Collective: sum_dy and sum_dy_xhat of the whole batch (allgather, summed in rank order).
// local.sum_dy and local.sum_dy_xhat receive this process's part.
template <class T>
void global_backward_sums(Communicator& comm, const Shape& shape, const BackwardReduceArgs<T>& local,
                          std::span<double> sum_dy, std::span<double> sum_dy_xhat,
                          double* communication_seconds = nullptr);

// What a synchronized layer keeps from its training forward pass for its backward pass.
struct SyncState {
    int64_t total_count = 0;
    std::vector<double> mean, m2, sum_dy, sum_dy_xhat, local_sum_dy, local_sum_dy_xhat;
    bool checked = false;               // the first forward checks that every process has this layer's size
    double communication_seconds = 0;   // time spent in this layer's collectives
};

// Collective: the training forward of synchronized batch normalization: global_statistics, then
// normalize_with_statistics with them (args.total_count, mean and m2 are filled in here). The first
// call checks with check_same_on_all that every process has the same channels, affine and spatial.
template <class T>
void sync_forward_training(Communicator& comm, SyncState& state, const Shape& shape, const Options& options,
                           NormalizeArgs<T> args);

// Collective: the backward of sync_forward_training: global_backward_sums, then
// backward_elementwise (args.total_count and the sums are filled in here); dweight and dbias (c or
// none) receive this process's part.
template <class T>
void sync_backward(Communicator& comm, SyncState& state, const Shape& shape, BackwardElementwiseArgs<T> args,
                   std::span<T> dweight, std::span<T> dbias);

// Batch normalization whose training statistics are those of the batch split over the processes
// of `comm`: the same state and semantics as BatchNorm<T> (running statistics get the unbiased
// variance over the total count). forward() and backward() in training mode are collective;
// evaluation mode is local. grad_weight()/grad_bias() are this process's part of the batch's
// gradients (their sum over the processes is the whole batch's): sum them with the other gradients.
template <class T>
class SyncBatchNorm {
public:
    using Config = typename BatchNorm<T>::Config;
    SyncBatchNorm(const Config& config, Communicator& comm);  // stores a reference to comm

    void forward(const Shape& shape, std::span<const T> x, std::span<T> y);
    void backward(const Shape& shape, std::span<const T> x, std::span<const T> dy, std::span<T> dx);

    void train(bool on = true) { training_ = on; }
    void eval() { training_ = false; }
    bool training() const { return training_; }
    // Parameters and running statistics live in a BatchNorm<T> (its forward is never called).
    const Config& config() const { return state_.config(); }
    std::span<T> weight() { return state_.weight(); }
    std::span<T> bias() { return state_.bias(); }
    std::span<const T> grad_weight() const { return grad_weight_; }
    std::span<const T> grad_bias() const { return grad_bias_; }
    std::span<T> running_mean() { return state_.running_mean(); }
    std::span<T> running_var() { return state_.running_var(); }
    int64_t num_batches_tracked() const { return state_.num_batches_tracked(); }
    double communication_seconds() const { return sync_.communication_seconds; }  // time in the collectives

private:
    Options options() const;

    BatchNorm<T> state_;
    Communicator& comm_;
    bool training_ = true;
    std::vector<T> grad_weight_, grad_bias_, save_mean_, save_invstd_;
    SyncState sync_;
    enum class Saved { nothing, batch_statistics, running_statistics } saved_ = Saved::nothing;
};

extern template class SyncBatchNorm<float>;
extern template class SyncBatchNorm<double>;

}  // namespace bnorm
