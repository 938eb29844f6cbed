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

namespace {

// The named things of every layer (parameters, buffers, random engines), renamed "<index>.<name>"
// as in PyTorch's state_dict.
template <class Named, class Get>
std::vector<Named> prefixed(const std::vector<std::unique_ptr<Layer>>& layers, Get get) {
    std::vector<Named> out;
    for (size_t i = 0; i < layers.size(); ++i)
        for (Named item : get(*layers[i])) {
            item.name = std::to_string(i) + "." + item.name;
            out.push_back(item);
        }
    return out;
}

}  // namespace

std::vector<Parameter> Sequential::parameters() {
    return prefixed<Parameter>(layers_, [](Layer& l) { return l.parameters(); });
}

std::vector<Buffer> Sequential::buffers() {
    return prefixed<Buffer>(layers_, [](Layer& l) { return l.buffers(); });
}

std::vector<RandomState> Sequential::random_states() {
    return prefixed<RandomState>(layers_, [](Layer& l) { return l.random_states(); });
}

void Sequential::set_training(bool on) {
    training_ = on;
    for (auto& layer : layers_) layer->set_training(on);
}

}  // namespace bnorm::nn
