// module.cpp: bnorm::BatchNorm, the module that owns parameters and running statistics.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "bnorm/bnorm.hpp"
#include "core/ops.hpp"

namespace bnorm {

template <class T>
BatchNorm<T>::BatchNorm(const Config& config) : config_(config) {
    if (config.num_features <= 0)
        throw InvalidArgument("bnorm::BatchNorm: num_features = " + std::to_string(config.num_features) +
                              " must be at least 1 (the number of channels)");
    const bnorm_options o = detail::to_c_options(options());
    detail::check_options("bnorm::BatchNorm", &o);
    const auto c = static_cast<size_t>(config.num_features);
    if (config.affine) {
        weight_.assign(c, T(1));
        bias_.assign(c, T(0));
        grad_weight_.assign(c, T(0));
        grad_bias_.assign(c, T(0));
    }
    if (config.track_running_stats) {
        running_mean_.assign(c, T(0));
        running_var_.assign(c, T(1));
    }
    save_mean_.assign(c, T(0));
    save_invstd_.assign(c, T(0));
}

template <class T>
Options BatchNorm<T>::options() const {
    return Options{config_.eps, config_.momentum, config_.running_var_unbiased};
}

template <class T>
void BatchNorm<T>::check_channels(const char* op, const Shape& shape) const {
    if (shape.c != config_.num_features)
        throw InvalidArgument(std::string(op) + ": the input has shape.c = " + std::to_string(shape.c) +
                              " channels but this BatchNorm has num_features = " +
                              std::to_string(config_.num_features) + "; pass input with that many channels");
}

template <class T>
void BatchNorm<T>::forward(const Shape& shape, std::span<const T> x, std::span<T> y) {
    check_channels("bnorm::BatchNorm::forward", shape);
    saved_ = Saved::nothing;
    const bool tracked = config_.track_running_stats;
    if (training_ || !tracked) {
        ForwardTrainingArgs<T> args{.x = x, .y = y, .weight = weight_, .bias = bias_,
                                    .save_mean = save_mean_, .save_invstd = save_invstd_};
        if (training_ && tracked) {
            args.running_mean = running_mean_;
            args.running_var = running_var_;
            args.num_batches_tracked = &num_batches_tracked_;
        }
        forward_training<T>(shape, options(), args);
        saved_ = Saved::batch_statistics;
    } else {
        forward_inference<T>(shape, options(),
                             {.x = x, .y = y, .weight = weight_, .bias = bias_,
                              .running_mean = running_mean_, .running_var = running_var_});
        saved_ = Saved::running_statistics;
    }
    saved_shape_ = shape;
}

template <class T>
void BatchNorm<T>::backward(const Shape& shape, std::span<const T> x, std::span<const T> dy, std::span<T> dx) {
    constexpr const char* op = "bnorm::BatchNorm::backward";
    check_channels(op, shape);
    if (saved_ == Saved::nothing)
        throw InvalidArgument(std::string(op) + ": no forward pass to differentiate; call forward() "
                              "on the same input first");
    auto text = [](const Shape& s) {
        return "(n = " + std::to_string(s.n) + ", c = " + std::to_string(s.c) + ", spatial = " +
               std::to_string(s.spatial) + (s.layout == Layout::channels_last ? ", channels_last)" : ", channels_first)");
    };
    if (shape.n != saved_shape_.n || shape.spatial != saved_shape_.spatial || shape.layout != saved_shape_.layout)
        throw InvalidArgument(std::string(op) + ": shape " + text(shape) + " differs from the last forward() call's " +
                              text(saved_shape_) + "; pass the shape and input of that call");
    std::span<T> dweight = grad_weight_, dbias = grad_bias_;
    if (saved_ == Saved::batch_statistics)
        bnorm::backward<T>(shape, {.dy = dy, .x = x, .dx = dx, .weight = weight_, .save_mean = save_mean_,
                                   .save_invstd = save_invstd_, .dweight = dweight, .dbias = dbias});
    else
        backward_inference<T>(shape, options(),
                              {.dy = dy, .x = x, .dx = dx, .weight = weight_, .running_mean = running_mean_,
                               .running_var = running_var_, .dweight = dweight, .dbias = dbias});
}

template <class T>
void BatchNorm<T>::set_num_batches_tracked(int64_t count) {
    if (count < 0)
        throw InvalidArgument("bnorm::BatchNorm::set_num_batches_tracked: count = " + std::to_string(count) +
                              " must be >= 0");
    num_batches_tracked_ = count;
}

template <class T>
void BatchNorm<T>::reset_running_stats() {
    std::fill(running_mean_.begin(), running_mean_.end(), T(0));
    std::fill(running_var_.begin(), running_var_.end(), T(1));
    num_batches_tracked_ = 0;
}

template class BatchNorm<float>;
template class BatchNorm<double>;

}  // namespace bnorm
