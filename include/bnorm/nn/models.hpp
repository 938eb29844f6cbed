// models.hpp: the networks of the experiments, as Sequentials whose parameter and buffer names are
// those of the equivalent torch.nn.Sequential ("1.weight", "2.running_mean", ...).
//
//   std::unique_ptr<bnorm::nn::Sequential> net = bnorm::nn::mlp(/*batch_norm=*/true, /*seed=*/1);
//   const bnorm::nn::Tensor& logits = net->forward(images);      // images (N, 1, 28, 28) or (N, 784)
//   auto cnn = bnorm::nn::cnn(/*batch_norm=*/true, /*seed=*/1, /*channels_last=*/true);
//   auto he_mlp = bnorm::nn::mlp(false, 1, bnorm::nn::Init::he());
//   for (auto& p : net->parameters()) ...                         // "1.weight" (100, 784), ...
#pragma once

#include <cstdint>
#include <memory>

#include "bnorm/nn/init.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

// The MNIST network of Ioffe & Szegedy (2015), section 4.1: 28x28 input, three fully connected
// hidden layers of 100 sigmoid units, a 10-way output. Weights from `init` (N(0, 0.1^2) by default)
// drawn in layer order from std::mt19937_64(seed); biases 0; BatchNorm weight 1, bias 0.
// With batch_norm, BatchNorm1d(100) sits between each hidden Linear and its Sigmoid and that Linear
// has no bias (BN's beta replaces it). Layer indices (= torch.nn.Sequential names):
//   batch_norm = false                      batch_norm = true
//   0 Flatten                               0 Flatten
//   1 Linear(784, 100)                      1 Linear(784, 100, bias=False)   2 BatchNorm1d(100)
//   2 Sigmoid                               3 Sigmoid
//   3 Linear(100, 100)                      4 Linear(100, 100, bias=False)   5 BatchNorm1d(100)
//   4 Sigmoid                               6 Sigmoid
//   5 Linear(100, 100)                      7 Linear(100, 100, bias=False)   8 BatchNorm1d(100)
//   6 Sigmoid                               9 Sigmoid
//   7 Linear(100, 10)                       10 Linear(100, 10)
// The input of the last hidden sigmoid (Fig. 1 of the paper) is the output of layer 5 without BN
// and of layer 8 with BN. With dropout > 0 a Dropout(dropout) follows each hidden Sigmoid, which
// shifts every later index by one per Dropout before it (without BN: 0 Flatten, 1 Linear, 2 Sigmoid,
// 3 Dropout, 4 Linear, ...); the Dropouts' seeds come from a second engine, so the weights are the
// same with and without dropout.
std::unique_ptr<Sequential> mlp(bool batch_norm, uint64_t seed, Init init = Init::gaussian(0.1f),
                                double dropout = 0.0);

// A small convnet for (N, 1, 28, 28) input, He-initialized (all conv and linear weights), biases 0.
// channels_last: the convolutions write (N, H, W, C) activations, so BatchNorm2d, ReLU and MaxPool2d
// run channels-last too (torch: model.to(memory_format=torch.channels_last)); the results are the same.
//   batch_norm = false                       batch_norm = true (conv biases omitted)
//   0 Conv2d(1, 32, 3, padding=1)            0 Conv2d(1, 32, 3, padding=1, bias=False)   1 BatchNorm2d(32)
//   1 ReLU                                   2 ReLU
//   2 MaxPool2d(2)                           3 MaxPool2d(2)
//   3 Conv2d(32, 64, 3, padding=1)           4 Conv2d(32, 64, 3, padding=1, bias=False)  5 BatchNorm2d(64)
//   4 ReLU                                   6 ReLU
//   5 MaxPool2d(2)                           7 MaxPool2d(2)
//   6 Flatten                                8 Flatten
//   7 Linear(64 * 7 * 7, 128)                9 Linear(64 * 7 * 7, 128)
//   8 ReLU                                   10 ReLU
//   9 Linear(128, 10)                        11 Linear(128, 10)
std::unique_ptr<Sequential> cnn(bool batch_norm, uint64_t seed, bool channels_last = false);

}  // namespace bnorm::nn
