// Synchronized batch normalization across the processes of mpirun: a small network trained for
// 200 steps with its batch split across the K processes (evenly, unevenly, and with a process
// that gets no samples in some steps) gives, step by step, the losses and parameters of the same
// network trained in one process on the whole batch: within 1e-5 (float32) and 1e-12 (float64),
// relative to each tensor's largest magnitude. Also: every process ends with bitwise identical
// parameters, the merge of 1e6 + noise 1e-3 across processes keeps the variance, and a process
// with a different layer size is named at the first forward pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bnorm/dist.hpp"
#include "dist/mpi_main.hpp"

namespace bnorm::test {
namespace {

constexpr int64_t kInputs = 5, kHidden = 6, kOutputs = 3, kBatch = 12;

// x (N, 5) -> Linear(5, 6) -> SyncBatchNorm over (N, C = 2, spatial = 3) -> tanh -> Linear(6, 3)
// -> SyncBatchNorm(3) -> loss = sum over the global batch of 0.5*|out - target|^2 / kBatch.
// Linear gradients are this process's part; after backward the trainer sums every gradient.
template <class T>
struct Network {
    std::vector<T> w1, b1, w2, b2;
    SyncBatchNorm<T> bn1, bn2;
    std::vector<T> h, hn, a, o, on, g_on, g_o, g_a, g_hn, g_h, gw1, gb1, gw2, gb2;

    explicit Network(Communicator& comm)
        : bn1({.num_features = 2}, comm), bn2({.num_features = kOutputs}, comm) {
        std::mt19937 rng(5);
        std::normal_distribution<double> d(0.0, 0.5);
        auto fill = [&](std::vector<T>& v, int64_t n) {
            v.resize(static_cast<size_t>(n));
            for (auto& e : v) e = static_cast<T>(d(rng));
        };
        fill(w1, kHidden * kInputs);
        fill(b1, kHidden);
        fill(w2, kOutputs * kHidden);
        fill(b2, kOutputs);
        for (size_t i = 0; i < 2; ++i) bn1.weight()[i] = static_cast<T>(1.0 + 0.1 * static_cast<double>(i));
    }

    static void linear(int64_t n, int64_t in, int64_t out, const T* x, const std::vector<T>& w, const std::vector<T>& b,
                       std::vector<T>& y) {
        y.assign(static_cast<size_t>(n * out), T(0));
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < out; ++j) {
                T s = b[static_cast<size_t>(j)];
                for (int64_t k = 0; k < in; ++k) s += w[static_cast<size_t>(j * in + k)] * x[i * in + k];
                y[static_cast<size_t>(i * out + j)] = s;
            }
    }
    static void linear_backward(int64_t n, int64_t in, int64_t out, const T* x, const std::vector<T>& w,
                                const std::vector<T>& gy, std::vector<T>& gw, std::vector<T>& gb, std::vector<T>* gx) {
        gw.assign(w.size(), T(0));
        gb.assign(static_cast<size_t>(out), T(0));
        if (gx) gx->assign(static_cast<size_t>(n * in), T(0));
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < out; ++j) {
                const T g = gy[static_cast<size_t>(i * out + j)];
                gb[static_cast<size_t>(j)] += g;
                for (int64_t k = 0; k < in; ++k) {
                    gw[static_cast<size_t>(j * in + k)] += g * x[i * in + k];
                    if (gx) (*gx)[static_cast<size_t>(i * in + k)] += g * w[static_cast<size_t>(j * in + k)];
                }
            }
    }

    // One training step on this process's n samples; returns this process's part of the loss.
    double step(Communicator& comm, int64_t n, const T* x, const T* target, double lr) {
        const Shape s1{n, 2, 3}, s2{n, kOutputs, 1};
        linear(n, kInputs, kHidden, x, w1, b1, h);
        hn.resize(h.size());
        bn1.forward(s1, h, hn);
        a.resize(hn.size());
        for (size_t i = 0; i < a.size(); ++i) a[i] = std::tanh(hn[i]);
        linear(n, kHidden, kOutputs, a.data(), w2, b2, o);
        on.resize(o.size());
        bn2.forward(s2, o, on);
        double loss = 0;
        g_on.resize(on.size());
        for (size_t i = 0; i < on.size(); ++i) {
            const double d = static_cast<double>(on[i]) - static_cast<double>(target[i]);
            loss += 0.5 * d * d / kBatch;
            g_on[i] = static_cast<T>(d / kBatch);
        }
        g_o.resize(o.size());
        bn2.backward(s2, o, g_on, g_o);
        linear_backward(n, kHidden, kOutputs, a.data(), w2, g_o, gw2, gb2, &g_a);
        g_hn.resize(hn.size());
        for (size_t i = 0; i < g_hn.size(); ++i) g_hn[i] = g_a[i] * (T(1) - a[i] * a[i]);
        g_h.resize(h.size());
        bn1.backward(s1, h, g_hn, g_h);
        linear_backward(n, kInputs, kHidden, x, w1, g_h, gw1, gb1, nullptr);
        // Data parallelism: one bucket with every gradient, summed over the processes.
        std::vector<T> bucket;
        for (auto* g : {&gw1, &gb1, &gw2, &gb2}) bucket.insert(bucket.end(), g->begin(), g->end());
        for (auto* bn : {&bn1, &bn2}) {
            bucket.insert(bucket.end(), bn->grad_weight().begin(), bn->grad_weight().end());
            bucket.insert(bucket.end(), bn->grad_bias().begin(), bn->grad_bias().end());
        }
        comm.allreduce_sum(std::span<T>(bucket));
        size_t at = 0;
        auto update = [&](std::span<T> p) {
            for (auto& v : p) v -= static_cast<T>(lr) * bucket[at++];
        };
        update(w1), update(b1), update(w2), update(b2);
        for (auto* bn : {&bn1, &bn2}) {
            update(bn->weight());
            update(bn->bias());
        }
        return loss;
    }

    // Every parameter and running statistic, in a fixed order.
    std::vector<std::vector<double>> state() {
        std::vector<std::vector<double>> all;
        auto add = [&](std::span<const T> v) { all.emplace_back(v.begin(), v.end()); };
        add(w1), add(b1), add(w2), add(b2);
        for (auto* bn : {&bn1, &bn2}) {
            add(bn->weight()), add(bn->bias()), add(bn->running_mean()), add(bn->running_var());
        }
        return all;
    }
};

// How a global batch of kBatch samples is split across `size` processes at `step`.
using Split = std::function<std::vector<int64_t>(int64_t step, int size)>;

std::vector<int64_t> even(int64_t, int size) {
    std::vector<int64_t> n(static_cast<size_t>(size), kBatch / size);
    for (int r = 0; r < kBatch % size; ++r) ++n[static_cast<size_t>(r)];
    return n;
}
// Rank r gets a share proportional to r + 1 (rank 0 the fewest).
std::vector<int64_t> uneven(int64_t, int size) {
    std::vector<int64_t> n(static_cast<size_t>(size));
    const int64_t weights = size * (size + 1) / 2;
    int64_t given = 0;
    for (int r = 0; r < size; ++r) given += n[static_cast<size_t>(r)] = kBatch * (r + 1) / weights;
    n.back() += kBatch - given;
    return n;
}
// Every other step, rank 1 gets no samples (and every fifth step rank 0 gets none either, when
// there are more than two processes): those ranks still join every collective.
std::vector<int64_t> with_empty(int64_t step, int size) {
    std::vector<int64_t> n = even(step, size);
    std::vector<bool> empty(static_cast<size_t>(size), false);
    if (step % 2 == 0) empty[1] = true;
    if (size > 2 && step % 5 == 0) empty[0] = true;
    int64_t moved = 0, receivers = 0;
    for (int r = 0; r < size; ++r)
        if (empty[static_cast<size_t>(r)]) moved += std::exchange(n[static_cast<size_t>(r)], 0);
        else ++receivers;
    for (int r = 0, k = 0; r < size; ++r)
        if (!empty[static_cast<size_t>(r)]) n[static_cast<size_t>(r)] += moved / receivers + (k++ < moved % receivers);
    return n;
}

double worst_relative(const std::vector<double>& got, const std::vector<double>& want) {
    double scale = 0, diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        scale = std::max(scale, std::abs(want[i]));
        diff = std::max(diff, std::abs(got[i] - want[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

template <class T>
void distributed_equals_one_process(const Split& split, double tolerance, const char* name) {
    Communicator& comm = world();
    SingleProcessCommunicator alone;
    Network<T> distributed(comm), reference(alone);
    std::mt19937 rng(9);  // the same data on every process
    std::normal_distribution<double> d(0.0, 1.0);
    double worst_loss = 0, worst_state = 0;
    bool saw_empty = false;
    for (int64_t step = 0; step < 200; ++step) {
        std::vector<T> x(kBatch * kInputs), target(kBatch * kOutputs);
        for (auto& v : x) v = static_cast<T>(2.0 * d(rng) + 1.0);
        for (auto& v : target) v = static_cast<T>(d(rng));
        const std::vector<int64_t> counts = split(step, comm.size());
        int64_t begin = 0;
        for (int r = 0; r < comm.rank(); ++r) begin += counts[static_cast<size_t>(r)];
        const int64_t n = counts[static_cast<size_t>(comm.rank())];
        saw_empty = saw_empty || std::count(counts.begin(), counts.end(), 0) > 0;
        double loss = distributed.step(comm, n, x.data() + begin * kInputs, target.data() + begin * kOutputs, 0.05);
        comm.allreduce_sum(std::span<double>(&loss, 1));
        const double want = reference.step(alone, kBatch, x.data(), target.data(), 0.05);
        worst_loss = std::max(worst_loss, std::abs(loss - want) / std::abs(want));
        const auto got_state = distributed.state(), want_state = reference.state();
        for (size_t t = 0; t < got_state.size(); ++t)
            worst_state = std::max(worst_state, worst_relative(got_state[t], want_state[t]));
    }
    if (comm.rank() == 0)
        std::printf("%s, %d processes: worst relative difference over 200 steps: loss %.3g, parameters %.3g%s\n", name,
                    comm.size(), worst_loss, worst_state, saw_empty ? " (some steps had an empty process)" : "");
    EXPECT_LE(worst_loss, tolerance) << name;
    EXPECT_LE(worst_state, tolerance) << name;
    // Parameters are the same bits on every process.
    std::vector<double> flat;
    for (const auto& t : distributed.state()) flat.insert(flat.end(), t.begin(), t.end());
    std::vector<double> all(flat.size() * static_cast<size_t>(comm.size()));
    comm.allgather(flat, all);
    for (int r = 1; r < comm.size(); ++r)
        EXPECT_EQ(std::memcmp(all.data() + static_cast<size_t>(r) * flat.size(), flat.data(), flat.size() * 8), 0)
            << "rank " << r << "'s parameters differ from rank " << comm.rank() << "'s";
}

TEST(SyncTraining, even_split_equals_one_process_200_steps_f32) { distributed_equals_one_process<float>(even, 1e-5, "even f32"); }
TEST(SyncTraining, even_split_equals_one_process_200_steps_f64) { distributed_equals_one_process<double>(even, 1e-12, "even f64"); }
TEST(SyncTraining, uneven_split_equals_one_process_200_steps_f32) { distributed_equals_one_process<float>(uneven, 1e-5, "uneven f32"); }
TEST(SyncTraining, uneven_split_equals_one_process_200_steps_f64) { distributed_equals_one_process<double>(uneven, 1e-12, "uneven f64"); }
TEST(SyncTraining, split_with_empty_processes_equals_one_process_200_steps_f32) {
    distributed_equals_one_process<float>(with_empty, 1e-5, "with empty f32");
}
TEST(SyncTraining, split_with_empty_processes_equals_one_process_200_steps_f64) {
    distributed_equals_one_process<double>(with_empty, 1e-12, "with empty f64");
}

// 1e6 + N(0, 1e-3), rank r holding a slice of its own length (rank 1 none): the merged variance
// equals the exact one of the whole channel to 1e-4 relative.
TEST(SyncStatistics, merge_of_1e6_plus_noise_1e_3_across_processes_keeps_the_variance) {
    Communicator& comm = world();
    std::vector<int64_t> sizes(static_cast<size_t>(comm.size()));
    for (int r = 0; r < comm.size(); ++r) sizes[static_cast<size_t>(r)] = r == 1 ? 0 : 1000 * (r + 1) + 7 * r + 1;
    int64_t total = 0, begin = 0;
    for (int r = 0; r < comm.size(); ++r) (r < comm.rank() ? begin : total) += sizes[static_cast<size_t>(r)];
    total += begin;
    std::mt19937 rng(3);
    std::normal_distribution<double> d(0.0, 1e-3);
    std::vector<double> x(static_cast<size_t>(total));
    for (auto& v : x) v = 1e6 + d(rng);
    long double sum = 0, sq = 0;
    for (double v : x) sum += v;
    const long double exact_mean = sum / static_cast<long double>(total);
    for (double v : x) sq += (v - exact_mean) * (v - exact_mean);
    const double exact_var = static_cast<double>(sq / static_cast<long double>(total));
    double mean = 0, m2 = 0;
    const int64_t n = sizes[static_cast<size_t>(comm.rank())];
    const int64_t count = global_statistics<double>(comm, {n, 1, 1}, std::span<const double>(x.data() + begin, static_cast<size_t>(n)),
                                                    {&mean, 1}, {&m2, 1});
    EXPECT_EQ(count, total);
    EXPECT_NEAR(m2 / static_cast<double>(total) / exact_var, 1.0, 1e-4);
}

// A process whose model has a different number of channels is named at the first forward pass,
// on every process, instead of a mismatched collective.
TEST(SyncStatistics, a_process_with_a_different_channel_count_is_named) {
    Communicator& comm = world();
    const int odd = comm.size() - 1;
    const int64_t c = comm.rank() == odd ? 5 : 4;
    SyncBatchNorm<float> bn({.num_features = c}, comm);
    std::vector<float> x(static_cast<size_t>(3 * c), 1.0f), y(x.size());
    std::string message;
    try {
        bn.forward({3, c, 1}, x, y);
    } catch (const InvalidArgument& e) {
        message = e.what();
    }
    EXPECT_NE(message.find("rank " + std::to_string(odd) + " has num_features (channels) = 5, rank 0 has 4"),
              std::string::npos)
        << message;
}

// A global batch of one value per channel is the same error as in one process, on every process.
TEST(SyncStatistics, a_total_count_of_1_is_the_single_process_error) {
    Communicator& comm = world();
    SyncBatchNorm<double> bn({.num_features = 2}, comm);
    const int64_t n = comm.rank() == 0 ? 1 : 0;
    std::vector<double> x(static_cast<size_t>(2 * n), 1.0), y(x.size());
    std::string message;
    try {
        bn.forward({n, 2, 1}, x, y);
    } catch (const InvalidArgument& e) {
        message = e.what();
    }
    EXPECT_NE(message.find("training needs more than 1 value per channel over all processes (total_count = 1)"),
              std::string::npos)
        << message;
}

}  // namespace
}  // namespace bnorm::test
