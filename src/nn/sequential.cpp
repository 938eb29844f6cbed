#include <algorithm>
#include <stdexcept>

#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

void Sequential::add(std::unique_ptr<Layer> layer) {
    if (!layer) throw std::invalid_argument("Sequential::add: the layer is null");
    if (first_with_parameters_ == layers_.size() && layer->parameters().empty()) ++first_with_parameters_;
    layers_.push_back(std::move(layer));
    set_input_grad_needed(input_grad_needed_);
}

void Sequential::set_input_grad_needed(bool on) {
    input_grad_needed_ = on;
    for (size_t i = 0; i < layers_.size(); ++i)
        layers_[i]->set_input_grad_needed(on || i != first_with_parameters_);
}

const Tensor& Sequential::forward(const Tensor& input) {
    if (layers_.empty()) throw std::logic_error("Sequential::forward: no layers; add() some first");
    const Tensor* x = &input;
    for (auto& layer : layers_) x = &layer->forward(*x);
    return *x;
}

const Tensor& Sequential::backward(const Tensor& grad_output) {
    if (layers_.empty()) throw std::logic_error("Sequential::backward: no layers");
    const Tensor* g = &grad_output;
    const size_t stop = input_grad_needed_ ? 0 : std::min(first_with_parameters_, layers_.size() - 1);
    for (size_t i = layers_.size(); i-- > stop;) g = &layers_[i]->backward(*g);
    return *g;
}

std::vector<Parameter> Sequential::parameters() {
    std::vector<Parameter> out;
    for (size_t i = 0; i < layers_.size(); ++i)
        for (Parameter p : layers_[i]->parameters()) {
            p.name = std::to_string(i) + "." + p.name;
            out.push_back(p);
        }
    return out;
}

std::vector<Buffer> Sequential::buffers() {
    std::vector<Buffer> out;
    for (size_t i = 0; i < layers_.size(); ++i)
        for (Buffer b : layers_[i]->buffers()) {
            b.name = std::to_string(i) + "." + b.name;
            out.push_back(b);
        }
    return out;
}

std::vector<RandomState> Sequential::random_states() {
    std::vector<RandomState> out;
    for (size_t i = 0; i < layers_.size(); ++i)
        for (RandomState r : layers_[i]->random_states()) {
            r.name = std::to_string(i) + "." + r.name;
            out.push_back(r);
        }
    return out;
}

void Sequential::set_training(bool on) {
    training_ = on;
    for (auto& layer : layers_) layer->set_training(on);
}

}  // namespace bnorm::nn
