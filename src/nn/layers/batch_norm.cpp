// BatchNorm1d / BatchNorm2d: batch normalization through libbnorm's public ops.
//   BatchNorm1d: x (N, C) or (N, C, L)                       -> bnorm::Shape{N, C, 1 or L, channels_first}
//   BatchNorm2d: x (N, C, H, W), either memory order         -> bnorm::Shape{N, C, H W, the input's order}
//   y has x's shape and memory order; "weight", "bias", running_mean, running_var, save_mean,
//   save_invstd are (C).
//   training:   bnorm::forward_training (batch statistics; updates the running ones and
//               num_batches_tracked), backward through bnorm::backward with save_mean/save_invstd
//   synchronized (set_communicator): bnorm::sync_forward_training / bnorm::sync_backward, the
//               statistics and the backward sums of the batch split over the processes
//   evaluation: bnorm::forward_inference (running statistics), backward through
//               bnorm::backward_inference (the statistics are constants there)
#include <stdexcept>
#include <string>

#include "bnorm/bnorm.hpp"
#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {
namespace {

bnorm::Shape bnorm_shape(const Tensor& x) {
    bnorm::Shape s{.n = x.dim(0), .c = x.dim(1), .spatial = 1, .layout = bnorm::Layout::channels_first};
    for (size_t i = 2; i < x.rank(); ++i) s.spatial *= x.dim(i);
    if (x.rank() == 4 && x.channels_last()) s.layout = bnorm::Layout::channels_last;
    return s;
}

}  // namespace

BatchNorm::BatchNorm(int64_t num_features, double eps, std::optional<double> momentum, bool affine)
    : num_features_(num_features), eps_(eps), momentum_(momentum), affine_(affine) {
    if (num_features <= 0)
        throw std::invalid_argument("BatchNorm: num_features = " + std::to_string(num_features) +
                                    " must be at least 1 (the number of channels)");
    if (!(eps >= 0.0)) throw std::invalid_argument("BatchNorm: eps = " + std::to_string(eps) + " must be >= 0");
    if (momentum && !(*momentum >= 0.0 && *momentum <= 1.0))
        throw std::invalid_argument("BatchNorm: momentum = " + std::to_string(*momentum) +
                                    " must be in [0, 1] (or none for a cumulative average)");
    const int64_t affine_size = affine ? num_features : 0;
    weight_.resize({affine_size});
    weight_.fill(1.0f);
    bias_.resize({affine_size});
    bias_.fill(0.0f);
    grad_weight_.resize({affine_size});
    grad_weight_.fill(0.0f);
    grad_bias_.resize({affine_size});
    grad_bias_.fill(0.0f);
    running_mean_.resize({num_features});
    running_mean_.fill(0.0f);
    running_var_.resize({num_features});
    running_var_.fill(1.0f);
    save_mean_.resize({num_features});
    save_mean_.fill(0.0f);
    save_invstd_.resize({num_features});
    save_invstd_.fill(0.0f);
}

std::vector<Parameter> BatchNorm::parameters() {
    if (!affine_) return {};
    return {{"weight", &weight_, &grad_weight_}, {"bias", &bias_, &grad_bias_}};
}

std::vector<Buffer> BatchNorm::buffers() {
    return {{.name = "running_mean", .f32 = &running_mean_},
            {.name = "running_var", .f32 = &running_var_},
            {.name = "num_batches_tracked", .i64 = &num_batches_tracked_}};
}

const Tensor& BatchNorm::forward(const Tensor& input) {
    check_input(input);
    const bnorm::Shape shape = bnorm_shape(input);
    const bnorm::Options options{.eps = eps_, .momentum = momentum_, .running_var_unbiased = true};
    detail::set_shape(output_, input.shape(), input.rank() == 4 && input.channels_last());
    input_ = &input;
    used_batch_statistics_ = training_;
    if (training_ && comm_)
        bnorm::sync_forward_training<float>(
            *comm_, sync_, shape, options,
            {.x = input.values(), .y = output_.values(), .weight = weight_.values(), .bias = bias_.values(),
             .running_mean = running_mean_.values(), .running_var = running_var_.values(),
             .num_batches_tracked = &num_batches_tracked_, .save_mean = save_mean_.values(),
             .save_invstd = save_invstd_.values()});
    else if (training_)
        bnorm::forward_training<float>(shape, options,
                                       {.x = input.values(), .y = output_.values(), .weight = weight_.values(),
                                        .bias = bias_.values(), .running_mean = running_mean_.values(),
                                        .running_var = running_var_.values(),
                                        .num_batches_tracked = &num_batches_tracked_,
                                        .save_mean = save_mean_.values(), .save_invstd = save_invstd_.values()});
    else
        bnorm::forward_inference<float>(shape, options,
                                        {.x = input.values(), .y = output_.values(), .weight = weight_.values(),
                                         .bias = bias_.values(), .running_mean = running_mean_.values(),
                                         .running_var = running_var_.values()});
    return output_;
}

const Tensor& BatchNorm::backward(const Tensor& grad_output) {
    detail::check_grad_output(type(), input_ != nullptr, grad_output, output_);
    const Tensor& input = *input_;
    const bnorm::Shape shape = bnorm_shape(input);
    detail::set_shape(grad_input_, input.shape(), output_.channels_last());
    if (used_batch_statistics_ && comm_)
        bnorm::sync_backward<float>(*comm_, sync_, shape,
                                    {.dy = grad_output.values(), .x = input.values(), .dx = grad_input_.values(),
                                     .weight = weight_.values(), .save_mean = save_mean_.values(),
                                     .save_invstd = save_invstd_.values()},
                                    grad_weight_.values(), grad_bias_.values());
    else if (used_batch_statistics_)
        bnorm::backward<float>(shape, {.dy = grad_output.values(), .x = input.values(), .dx = grad_input_.values(),
                                       .weight = weight_.values(), .save_mean = save_mean_.values(),
                                       .save_invstd = save_invstd_.values(), .dweight = grad_weight_.values(),
                                       .dbias = grad_bias_.values()});
    else
        bnorm::backward_inference<float>(
            shape, {.eps = eps_, .momentum = momentum_, .running_var_unbiased = true},
            {.dy = grad_output.values(), .x = input.values(), .dx = grad_input_.values(), .weight = weight_.values(),
             .running_mean = running_mean_.values(), .running_var = running_var_.values(),
             .dweight = grad_weight_.values(), .dbias = grad_bias_.values()});
    return grad_input_;
}

void BatchNorm1d::check_input(const Tensor& input) const {
    const std::string c = std::to_string(num_features());
    if ((input.rank() != 2 && input.rank() != 3) || input.dim(1) != num_features())
        detail::throw_bad_shape("BatchNorm1d::forward", "(N, " + c + ") or (N, " + c + ", L)", input);
}

void BatchNorm2d::check_input(const Tensor& input) const {
    if (input.rank() != 4 || input.dim(1) != num_features())
        detail::throw_bad_shape("BatchNorm2d::forward", "(N, " + std::to_string(num_features()) + ", H, W)", input);
}

}  // namespace bnorm::nn
