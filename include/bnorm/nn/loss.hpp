// loss.hpp: softmax cross-entropy over logits and integer class labels, and accuracy counting.
//
//   const bnorm::nn::Tensor& logits = net.forward(images);          // (N, K)
//   bnorm::nn::Tensor grad_logits;
//   double loss = bnorm::nn::softmax_cross_entropy(logits, labels, grad_logits);
//   net.backward(grad_logits);
//   int64_t correct = bnorm::nn::count_correct(logits, labels);
#pragma once

#include <cstdint>
#include <span>

#include "bnorm/nn/tensor.hpp"

namespace bnorm::nn {

// The mean over the batch of -log softmax(logits[i])[labels[i]], as
// torch.nn.functional.cross_entropy(logits, labels) (reduction "mean"), computed stably as
// logsumexp(logits[i]) - logits[i][labels[i]] with the row maximum subtracted, accumulated in double.
//   requires: logits (N, K), N >= 1, K >= 1; labels.size() == N, each in [0, K)
//             (std::invalid_argument otherwise)
//   ensures:  grad_logits is resized to (N, K) and holds dL/dlogits = (softmax(logits) - onehot) / N
double softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels, Tensor& grad_logits);
// The same loss without the gradient (evaluation).
double softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels);

// The number of rows whose argmax (the first one on ties) equals the label. Same requirements.
int64_t count_correct(const Tensor& logits, std::span<const int32_t> labels);

}  // namespace bnorm::nn
