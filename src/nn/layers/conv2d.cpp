// Conv2d: 2-D cross-correlation by im2col + sgemm.
//   x (N, Cin, H, W), either memory order     W "weight" (Cout, Cin, k, k)     b "bias" (Cout)
//   y (N, Cout, H', W'), H' = (H + 2 padding - k) / stride + 1, in the order set_channels_last chose
//   columns (N H' W', K) with K = Cin k k: row (n, oh, ow) holds the input window of that output
//   pixel, ordered (c, kh, kw) as the weight's rows, zero where the window leaves the padded image.
//   forward:  channels-last  y (N H' W', Cout) = columns W^T + b
//             channels-first y_n (Cout, H' W') = W columns_n^T + b, per image n
//   backward: dW = sum_n dy_n^T columns_n (Cout, K), db = sum of dy per channel,
//             dcolumns = dy W (N H' W', K), and dx = col2im(dcolumns) (the adjoint of im2col: a
//             scatter-add of each window back to the pixels it read).
#include <cblas.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "bnorm/nn/layers.hpp"
#include "nn/layers/common.hpp"

namespace bnorm::nn {
namespace {

// Element strides of a logical (N, C, H, W) tensor in its memory order.
struct Strides {
    int64_t n, c, h, w;
};
Strides strides_of(int64_t c, int64_t h, int64_t w, bool channels_last) {
    if (channels_last) return {h * w * c, 1, w * c, c};
    return {c * h * w, h * w, w, 1};
}

}  // namespace

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride, int64_t padding,
               bool bias)
    : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size), stride_(stride),
      padding_(padding), has_bias_(bias) {
    if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 || padding < 0)
        throw std::invalid_argument("Conv2d: in_channels = " + std::to_string(in_channels) + ", out_channels = " +
                                    std::to_string(out_channels) + ", kernel_size = " + std::to_string(kernel_size) +
                                    ", stride = " + std::to_string(stride) + " must be at least 1 and padding = " +
                                    std::to_string(padding) + " at least 0");
    weight_.resize({out_channels, in_channels, kernel_size, kernel_size});
    weight_.fill(0.0f);
    grad_weight_.resize(weight_.shape());
    grad_weight_.fill(0.0f);
    bias_.resize({has_bias_ ? out_channels : 0});
    bias_.fill(0.0f);
    grad_bias_.resize({has_bias_ ? out_channels : 0});
    grad_bias_.fill(0.0f);
}

std::vector<Parameter> Conv2d::parameters() {
    std::vector<Parameter> out{{"weight", &weight_, &grad_weight_}};
    if (has_bias_) out.push_back({"bias", &bias_, &grad_bias_});
    return out;
}

const Tensor& Conv2d::forward(const Tensor& input) {
    const int64_t k = kernel_size_;
    if (input.rank() != 4 || input.dim(1) != in_channels_ || input.dim(2) + 2 * padding_ < k ||
        input.dim(3) + 2 * padding_ < k)
        detail::throw_bad_shape("Conv2d::forward",
                                "(N, " + std::to_string(in_channels_) + ", H, W) with H, W >= " +
                                    std::to_string(k - 2 * padding_),
                                input);
    const int64_t n = input.dim(0), c = in_channels_, h = input.dim(2), w = input.dim(3);
    const int64_t out_h = (h + 2 * padding_ - k) / stride_ + 1, out_w = (w + 2 * padding_ - k) / stride_ + 1;
    const int64_t pixels = out_h * out_w, rows = n * pixels, depth = c * k * k;
    input_shape_ = input.shape();
    input_channels_last_ = input.channels_last();
    detail::set_shape(output_, {n, out_channels_, out_h, out_w}, channels_last_);

    // im2col
    detail::set_shape(columns_, {rows, depth});
    const Strides s = strides_of(c, h, w, input.channels_last());
    const float* x = input.data();
    float* col = columns_.data();
    for (int64_t b = 0; b < n; ++b)
        for (int64_t oh = 0; oh < out_h; ++oh)
            for (int64_t ow = 0; ow < out_w; ++ow) {
                float* row = col + ((b * out_h + oh) * out_w + ow) * depth;
                for (int64_t ch = 0; ch < c; ++ch)
                    for (int64_t kh = 0; kh < k; ++kh) {
                        const int64_t ih = oh * stride_ - padding_ + kh;
                        for (int64_t kw = 0; kw < k; ++kw) {
                            const int64_t iw = ow * stride_ - padding_ + kw;
                            const bool inside = ih >= 0 && ih < h && iw >= 0 && iw < w;
                            *row++ = inside ? x[b * s.n + ch * s.c + ih * s.h + iw * s.w] : 0.0f;
                        }
                    }
            }
    if (rows == 0) return output_;

    const int cout = detail::blas_int(out_channels_, "Conv2d"), kdepth = detail::blas_int(depth, "Conv2d");
    float* y = output_.data();
    const float beta = has_bias_ ? 1.0f : 0.0f;
    if (channels_last_) {
        if (has_bias_)
            for (int64_t r = 0; r < rows; ++r) std::copy_n(bias_.data(), out_channels_, y + r * out_channels_);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, detail::blas_int(rows, "Conv2d"), cout, kdepth, 1.0f, col,
                    kdepth, weight_.data(), kdepth, beta, y, cout);
    } else {
        const int npix = detail::blas_int(pixels, "Conv2d");
        for (int64_t b = 0; b < n; ++b) {
            float* yb = y + b * out_channels_ * pixels;
            if (has_bias_)
                for (int64_t o = 0; o < out_channels_; ++o) std::fill_n(yb + o * pixels, pixels, bias_.at(o));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cout, npix, kdepth, 1.0f, weight_.data(), kdepth,
                        col + b * pixels * depth, kdepth, beta, yb, npix);
        }
    }
    return output_;
}

const Tensor& Conv2d::backward(const Tensor& grad_output) {
    detail::check_grad_output("Conv2d", !input_shape_.empty(), grad_output, output_);
    const int64_t k = kernel_size_, n = input_shape_[0], c = in_channels_, h = input_shape_[2], w = input_shape_[3];
    const int64_t out_h = output_.dim(2), out_w = output_.dim(3);
    const int64_t pixels = out_h * out_w, rows = n * pixels, depth = c * k * k;
    detail::set_shape(grad_input_, input_shape_, input_channels_last_);
    if (input_grad_needed_) grad_input_.fill(0.0f);
    detail::set_shape(grad_columns_, {rows, depth});
    if (rows == 0) {
        grad_weight_.fill(0.0f);
        grad_bias_.fill(0.0f);
        return grad_input_;
    }

    const int cout = detail::blas_int(out_channels_, "Conv2d"), kdepth = detail::blas_int(depth, "Conv2d");
    const float* dy = grad_output.data();
    const float* col = columns_.data();
    float* dcol = grad_columns_.data();
    if (has_bias_) grad_bias_.fill(0.0f);
    if (channels_last_) {
        const int nrows = detail::blas_int(rows, "Conv2d");
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cout, kdepth, nrows, 1.0f, dy, cout, col, kdepth, 0.0f,
                    grad_weight_.data(), kdepth);
        if (input_grad_needed_)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nrows, kdepth, cout, 1.0f, dy, cout, weight_.data(),
                        kdepth, 0.0f, dcol, kdepth);
        if (has_bias_) {
            float* db = grad_bias_.data();
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t o = 0; o < out_channels_; ++o) db[o] += dy[r * out_channels_ + o];
        }
    } else {
        const int npix = detail::blas_int(pixels, "Conv2d");
        for (int64_t b = 0; b < n; ++b) {
            const float* dyb = dy + b * out_channels_ * pixels;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, kdepth, npix, 1.0f, dyb, npix,
                        col + b * pixels * depth, kdepth, b == 0 ? 0.0f : 1.0f, grad_weight_.data(), kdepth);
            if (input_grad_needed_)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, npix, kdepth, cout, 1.0f, dyb, npix,
                            weight_.data(), kdepth, 0.0f, dcol + b * pixels * depth, kdepth);
            if (has_bias_)
                for (int64_t o = 0; o < out_channels_; ++o) {
                    float sum = 0.0f;
                    for (int64_t p = 0; p < pixels; ++p) sum += dyb[o * pixels + p];
                    grad_bias_.at(o) += sum;
                }
        }
    }

    if (!input_grad_needed_) return grad_input_;
    // col2im
    const Strides s = strides_of(c, h, w, input_channels_last_);
    float* dx = grad_input_.data();
    for (int64_t b = 0; b < n; ++b)
        for (int64_t oh = 0; oh < out_h; ++oh)
            for (int64_t ow = 0; ow < out_w; ++ow) {
                const float* row = dcol + ((b * out_h + oh) * out_w + ow) * depth;
                for (int64_t ch = 0; ch < c; ++ch)
                    for (int64_t kh = 0; kh < k; ++kh) {
                        const int64_t ih = oh * stride_ - padding_ + kh;
                        for (int64_t kw = 0; kw < k; ++kw, ++row) {
                            const int64_t iw = ow * stride_ - padding_ + kw;
                            if (ih >= 0 && ih < h && iw >= 0 && iw < w)
                                dx[b * s.n + ch * s.c + ih * s.h + iw * s.w] += *row;
                        }
                    }
            }
    return grad_input_;
}

}  // namespace bnorm::nn
