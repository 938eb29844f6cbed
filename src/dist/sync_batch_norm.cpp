// sync_batch_norm.cpp: synchronized batch normalization from the split operations and a
// Communicator (bnorm/dist.hpp). Per training step and layer:
//   forward : local_statistics -> allgather (count, mean, M2: 2c + 1 doubles) -> merge in rank
//             order -> normalize_with_statistics
//   backward: backward_reduce -> allgather (sum_dy, sum_dy_xhat: 2c doubles) -> sum in rank order
//             -> backward_elementwise
// Allgather + a local fixed-order merge (rather than an allreduce) makes the result the same bits
// on every process and independent of the MPI library's reduction order.
#include <algorithm>
#include <chrono>
#include <string>

#include "bnorm/dist.hpp"

namespace bnorm {
namespace {

std::vector<double>& gather_buffer(size_t size) {
    thread_local std::vector<double> buffer;
    if (buffer.size() < size) buffer.resize(size);
    return buffer;
}

template <class F>
void timed(double* seconds, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    if (seconds) *seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void SingleProcessCommunicator::allgather(std::span<const double> send, std::span<double> recv) {
    std::copy(send.begin(), send.end(), recv.begin());
}
void SingleProcessCommunicator::allgather(std::span<const int64_t> send, std::span<int64_t> recv) {
    std::copy(send.begin(), send.end(), recv.begin());
}

void check_same_on_all(Communicator& comm, const char* op, std::span<const int64_t> values,
                       std::span<const char* const> what) {
    const size_t k = values.size();
    // The count first, so that processes with different numbers of values cannot mismatch the gather.
    const int64_t count = static_cast<int64_t>(k);
    std::vector<int64_t> counts(static_cast<size_t>(comm.size()));
    comm.allgather(std::span<const int64_t>(&count, 1), counts);
    for (int r = 1; r < comm.size(); ++r)
        if (counts[static_cast<size_t>(r)] != counts[0])
            throw InvalidArgument(std::string(op) + ": rank " + std::to_string(r) + " checks " +
                                  std::to_string(counts[static_cast<size_t>(r)]) + " settings, rank 0 " +
                                  std::to_string(counts[0]) + "; every process must run the same program and model");
    std::vector<int64_t> all(k * static_cast<size_t>(comm.size()));
    comm.allgather(values, all);
    for (int r = 1; r < comm.size(); ++r)
        for (size_t i = 0; i < k; ++i)
            if (all[static_cast<size_t>(r) * k + i] != all[i])
                throw InvalidArgument(std::string(op) + ": rank " + std::to_string(r) + " has " +
                                      (i < what.size() ? what[i] : "a setting") + " = " +
                                      std::to_string(all[static_cast<size_t>(r) * k + i]) + ", rank 0 has " +
                                      std::to_string(all[i]) + "; every process must build the same model");
}

template <class T>
int64_t global_statistics(Communicator& comm, const Shape& shape, std::span<const T> x, std::span<double> mean,
                          std::span<double> m2, double* communication_seconds) {
    const auto c = static_cast<size_t>(shape.c);
    const auto parts = static_cast<size_t>(comm.size());
    const size_t block = 2 * c + 1;  // count, mean[c], m2[c]
    std::vector<double>& buffer = gather_buffer(block * (parts + 1));
    double* mine = buffer.data();
    double* all = mine + block;
    int64_t count = 0;
    local_statistics<T>(shape, x, count, {mine + 1, c}, {mine + 1 + c, c});
    mine[0] = static_cast<double>(count);  // exact: counts are far below 2^53
    timed(communication_seconds,
          [&] { comm.allgather(std::span<const double>(mine, block), std::span<double>(all, block * parts)); });
    // Regroup into the (parts, c) tables merge_statistics takes; the mine block is free scratch now.
    thread_local std::vector<int64_t> counts;
    thread_local std::vector<double> means, m2s;
    counts.resize(parts);
    means.resize(parts * c);
    m2s.resize(parts * c);
    for (size_t p = 0; p < parts; ++p) {
        const double* b = all + p * block;
        counts[p] = static_cast<int64_t>(b[0]);
        std::copy(b + 1, b + 1 + c, means.begin() + static_cast<std::ptrdiff_t>(p * c));
        std::copy(b + 1 + c, b + 1 + 2 * c, m2s.begin() + static_cast<std::ptrdiff_t>(p * c));
    }
    int64_t total = 0;
    merge_statistics(shape.c, counts, means, m2s, total, mean, m2);
    return total;
}

template <class T>
void global_backward_sums(Communicator& comm, const Shape& shape, const BackwardReduceArgs<T>& local,
                          std::span<double> sum_dy, std::span<double> sum_dy_xhat, double* communication_seconds) {
    const auto c = static_cast<size_t>(shape.c);
    const auto parts = static_cast<size_t>(comm.size());
    backward_reduce<T>(shape, local);
    std::vector<double>& buffer = gather_buffer(2 * c * (parts + 1));
    double* mine = buffer.data();
    double* all = mine + 2 * c;
    std::copy(local.sum_dy.begin(), local.sum_dy.end(), mine);
    std::copy(local.sum_dy_xhat.begin(), local.sum_dy_xhat.end(), mine + c);
    timed(communication_seconds,
          [&] { comm.allgather(std::span<const double>(mine, 2 * c), std::span<double>(all, 2 * c * parts)); });
    std::fill(sum_dy.begin(), sum_dy.end(), 0.0);
    std::fill(sum_dy_xhat.begin(), sum_dy_xhat.end(), 0.0);
    for (size_t p = 0; p < parts; ++p)
        for (size_t i = 0; i < c; ++i) {
            sum_dy[i] += all[p * 2 * c + i];
            sum_dy_xhat[i] += all[p * 2 * c + c + i];
        }
}

template <class T>
void sync_forward_training(Communicator& comm, SyncState& state, const Shape& shape, const Options& options,
                           NormalizeArgs<T> args) {
    const auto c = static_cast<size_t>(std::max<int64_t>(shape.c, 0));
    if (!state.checked) {
        const int64_t settings[] = {shape.c, args.weight.empty() ? 0 : 1, args.running_mean.empty() ? 0 : 1,
                                    static_cast<int64_t>(sizeof(T)), shape.spatial};
        const char* const names[] = {"num_features (channels)", "affine", "track_running_stats",
                                     "the element size in bytes", "shape.spatial"};
        check_same_on_all(comm, "synchronized batch normalization", settings, names);
        state.checked = true;
    }
    for (auto* v : {&state.mean, &state.m2, &state.sum_dy, &state.sum_dy_xhat, &state.local_sum_dy, &state.local_sum_dy_xhat})
        v->resize(c);
    state.total_count = global_statistics<T>(comm, shape, args.x, state.mean, state.m2, &state.communication_seconds);
    args.total_count = state.total_count;
    args.mean = state.mean;
    args.m2 = state.m2;
    normalize_with_statistics<T>(shape, options, args);
}

template <class T>
void sync_backward(Communicator& comm, SyncState& state, const Shape& shape, BackwardElementwiseArgs<T> args,
                   std::span<T> dweight, std::span<T> dbias) {
    global_backward_sums<T>(comm, shape,
                            {.dy = args.dy, .x = args.x, .save_mean = args.save_mean, .save_invstd = args.save_invstd,
                             .sum_dy = state.local_sum_dy, .sum_dy_xhat = state.local_sum_dy_xhat},
                            state.sum_dy, state.sum_dy_xhat, &state.communication_seconds);
    args.total_count = state.total_count;
    args.sum_dy = state.sum_dy;
    args.sum_dy_xhat = state.sum_dy_xhat;
    backward_elementwise<T>(shape, args);
    for (size_t i = 0; i < dweight.size(); ++i) dweight[i] = static_cast<T>(state.local_sum_dy_xhat[i]);
    for (size_t i = 0; i < dbias.size(); ++i) dbias[i] = static_cast<T>(state.local_sum_dy[i]);
}

template <class T>
SyncBatchNorm<T>::SyncBatchNorm(const Config& config, Communicator& comm) : state_(config), comm_(comm) {
    const auto c = static_cast<size_t>(config.num_features);
    if (config.affine) {
        grad_weight_.assign(c, T(0));
        grad_bias_.assign(c, T(0));
    }
    save_mean_.assign(c, T(0));
    save_invstd_.assign(c, T(0));
}

template <class T>
Options SyncBatchNorm<T>::options() const {
    const Config& c = state_.config();
    return Options{c.eps, c.momentum, c.running_var_unbiased};
}

template <class T>
void SyncBatchNorm<T>::forward(const Shape& shape, std::span<const T> x, std::span<T> y) {
    constexpr const char* op = "bnorm::SyncBatchNorm::forward";
    if (shape.c != config().num_features)
        throw InvalidArgument(std::string(op) + ": the input has shape.c = " + std::to_string(shape.c) +
                              " channels but this SyncBatchNorm has num_features = " +
                              std::to_string(config().num_features) + "; pass input with that many channels");
    saved_ = Saved::nothing;
    const bool tracked = config().track_running_stats;
    if (!training_ && tracked) {
        if (shape.n > 0)
            forward_inference<T>(shape, options(), {.x = x, .y = y, .weight = weight(), .bias = bias(),
                                                    .running_mean = running_mean(), .running_var = running_var()});
        saved_ = Saved::running_statistics;
        return;
    }
    NormalizeArgs<T> args{.x = x, .y = y, .weight = weight(), .bias = bias(), .save_mean = save_mean_,
                          .save_invstd = save_invstd_};
    int64_t batches = state_.num_batches_tracked();
    if (training_ && tracked) {
        args.running_mean = running_mean();
        args.running_var = running_var();
        args.num_batches_tracked = &batches;
    }
    sync_forward_training<T>(comm_, sync_, shape, options(), args);
    state_.set_num_batches_tracked(batches);
    saved_ = Saved::batch_statistics;
}

template <class T>
void SyncBatchNorm<T>::backward(const Shape& shape, std::span<const T> x, std::span<const T> dy, std::span<T> dx) {
    constexpr const char* op = "bnorm::SyncBatchNorm::backward";
    if (saved_ == Saved::nothing)
        throw InvalidArgument(std::string(op) + ": no forward pass to differentiate; call forward() on the same input first");
    if (saved_ == Saved::running_statistics) {
        if (shape.n > 0)
            backward_inference<T>(shape, options(),
                                  {.dy = dy, .x = x, .dx = dx, .weight = weight(), .running_mean = running_mean(),
                                   .running_var = running_var(), .dweight = grad_weight_, .dbias = grad_bias_});
        else {
            std::fill(grad_weight_.begin(), grad_weight_.end(), T(0));
            std::fill(grad_bias_.begin(), grad_bias_.end(), T(0));
        }
        return;
    }
    sync_backward<T>(comm_, sync_, shape,
                     {.dy = dy, .x = x, .dx = dx, .weight = weight(), .save_mean = save_mean_, .save_invstd = save_invstd_},
                     grad_weight_, grad_bias_);
}

template int64_t global_statistics<float>(Communicator&, const Shape&, std::span<const float>, std::span<double>,
                                          std::span<double>, double*);
template int64_t global_statistics<double>(Communicator&, const Shape&, std::span<const double>, std::span<double>,
                                           std::span<double>, double*);
template void global_backward_sums<float>(Communicator&, const Shape&, const BackwardReduceArgs<float>&,
                                          std::span<double>, std::span<double>, double*);
template void global_backward_sums<double>(Communicator&, const Shape&, const BackwardReduceArgs<double>&,
                                           std::span<double>, std::span<double>, double*);
template void sync_forward_training<float>(Communicator&, SyncState&, const Shape&, const Options&, NormalizeArgs<float>);
template void sync_forward_training<double>(Communicator&, SyncState&, const Shape&, const Options&, NormalizeArgs<double>);
template void sync_backward<float>(Communicator&, SyncState&, const Shape&, BackwardElementwiseArgs<float>, std::span<float>,
                                   std::span<float>);
template void sync_backward<double>(Communicator&, SyncState&, const Shape&, BackwardElementwiseArgs<double>,
                                    std::span<double>, std::span<double>);
template class SyncBatchNorm<float>;
template class SyncBatchNorm<double>;

}  // namespace bnorm
