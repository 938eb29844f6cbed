// Softmax cross-entropy and accuracy counting over (N, K) logits.
//   loss = (1/N) sum_i [ m_i + log sum_k e^(x_ik - m_i) - x_i,y_i ],  m_i = max_k x_ik
//   dL/dx_ik = (e^(x_ik - lse_i) - [k == y_i]) / N
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "bnorm/nn/loss.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {
namespace {

void check(const char* where, const Tensor& logits, std::span<const int32_t> labels) {
    if (logits.rank() != 2 || logits.dim(0) < 1 || logits.dim(1) < 1)
        throw std::invalid_argument(std::string(where) + ": expected logits of shape (N, K) with N, K >= 1, got " +
                                    logits.shape_string());
    if (static_cast<int64_t>(labels.size()) != logits.dim(0))
        throw std::invalid_argument(std::string(where) + ": expected " + std::to_string(logits.dim(0)) +
                                    " labels (one per row of the logits " + logits.shape_string() + "), got " +
                                    std::to_string(labels.size()));
    for (size_t i = 0; i < labels.size(); ++i)
        if (labels[i] < 0 || labels[i] >= logits.dim(1))
            throw std::invalid_argument(std::string(where) + ": label " + std::to_string(labels[i]) + " at row " +
                                        std::to_string(i) + " is outside [0, " + std::to_string(logits.dim(1)) + ")");
}

double log_sum_exp(const float* row, int64_t k) {
    double m = row[0];
    for (int64_t j = 1; j < k; ++j) m = std::max(m, static_cast<double>(row[j]));
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(row[j] - m);
    return m + std::log(sum);
}

double cross_entropy(const char* where, const Tensor& logits, std::span<const int32_t> labels, Tensor* grad) {
    check(where, logits, labels);
    const int64_t n = logits.dim(0), k = logits.dim(1);
    if (grad) {
        detail::set_shape(*grad, {n, k});
    }
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data() + i * k;
        const double lse = log_sum_exp(row, k);
        const int32_t label = labels[static_cast<size_t>(i)];
        total += lse - row[label];
        if (grad) {
            float* g = grad->data() + i * k;
            for (int64_t j = 0; j < k; ++j)
                g[j] = static_cast<float>((std::exp(row[j] - lse) - (j == label ? 1.0 : 0.0)) / static_cast<double>(n));
        }
    }
    return total / static_cast<double>(n);
}

}  // namespace

double softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels, Tensor& grad_logits) {
    return cross_entropy("softmax_cross_entropy", logits, labels, &grad_logits);
}

double softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels) {
    return cross_entropy("softmax_cross_entropy", logits, labels, nullptr);
}

int64_t count_correct(const Tensor& logits, std::span<const int32_t> labels) {
    check("count_correct", logits, labels);
    const int64_t n = logits.dim(0), k = logits.dim(1);
    int64_t correct = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data() + i * k;
        int64_t best = 0;
        for (int64_t j = 1; j < k; ++j)
            if (row[j] > row[best]) best = j;
        if (best == labels[static_cast<size_t>(i)]) ++correct;
    }
    return correct;
}

}  // namespace bnorm::nn
