// network_parity_dump: runs one training step of each experiment network and writes everything
// PyTorch needs to redo it and compare: the initial parameters and buffers, the batch, the loss, the
// logits, every parameter's gradient, the buffers after the step, the parameters after one plain SGD
// step (p -= lr * grad, done here) and the evaluation-mode logits after that step.
// network_parity.py runs this and does the comparison.
//
//   network_parity_dump OUT_DIR      writes OUT_DIR/index.json and OUT_DIR/<case>.<key>.bin
//
// index.json: {"cases": [{"name", "model" ("mlp"/"cnn"), "batch_norm", "channels_last", "lr", "loss",
//   "tensors": {key: {"file", "dtype" ("float32"/"int32"/"int64"), "shape"}}}]}, the keys being
//   "input", "labels", "logits", "eval_logits", "initial.<name>", "grad.<name>", "after.<name>" (the
//   buffers after the step) and "updated.<name>", names as in torch's state_dict. Binary files are
//   raw little-endian values.
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bnorm/nn/init.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/models.hpp"

namespace {

using bnorm::nn::Tensor;
namespace fs = std::filesystem;

struct Case {
    std::string name;
    std::string model;
    bool batch_norm;
    bool channels_last;
    int64_t batch;
    uint64_t seed;
};

class Writer {
public:
    Writer(fs::path dir, std::string name, nlohmann::json& tensors)
        : dir_(std::move(dir)), name_(std::move(name)), tensors_(tensors) {}

    void add(const std::string& key, const void* data, size_t bytes, const char* dtype, std::vector<int64_t> shape) {
        const std::string file = name_ + "." + key + ".bin";
        std::ofstream out(dir_ / file, std::ios::binary);
        out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
        if (!out) throw std::runtime_error("cannot write " + (dir_ / file).string());
        tensors_[key] = {{"file", file}, {"dtype", dtype}, {"shape", shape}};
    }
    // The logical (N, C, H, W) order whatever the memory order: what torch's .numpy() of a
    // channels_last tensor gives after .contiguous().
    void add(const std::string& key, const Tensor& t) {
        std::vector<float> values(t.values().begin(), t.values().end());
        if (t.rank() == 4 && t.channels_last()) {
            const int64_t n = t.dim(0), c = t.dim(1), pixels = t.dim(2) * t.dim(3);
            for (int64_t b = 0; b < n; ++b)
                for (int64_t p = 0; p < pixels; ++p)
                    for (int64_t ch = 0; ch < c; ++ch)
                        values[static_cast<size_t>((b * c + ch) * pixels + p)] = t.at((b * pixels + p) * c + ch);
        }
        add(key, values.data(), values.size() * sizeof(float), "float32", t.shape());
    }
    void add(const std::string& key, int64_t value) { add(key, &value, sizeof value, "int64", {}); }

private:
    fs::path dir_;
    std::string name_;
    nlohmann::json& tensors_;
};

nlohmann::json run_case(const Case& c, const fs::path& dir) {
    constexpr double lr = 0.1;
    std::unique_ptr<bnorm::nn::Sequential> net =
        c.model == "mlp" ? bnorm::nn::mlp(c.batch_norm, c.seed) : bnorm::nn::cnn(c.batch_norm, c.seed, c.channels_last);
    nlohmann::json entry = {{"name", c.name},          {"model", c.model}, {"batch_norm", c.batch_norm},
                            {"channels_last", c.channels_last}, {"lr", lr}, {"tensors", nlohmann::json::object()}};
    Writer out(dir, c.name, entry["tensors"]);

    // A batch like Fashion-MNIST's: pixels in [0, 1), labels 0..9.
    std::mt19937_64 rng(c.seed + 1000);
    Tensor input({c.batch, 1, 28, 28});
    for (int64_t i = 0; i < input.numel(); ++i) input.at(i) = static_cast<float>(bnorm::nn::uniform01(rng));
    std::vector<int32_t> labels(static_cast<size_t>(c.batch));
    for (auto& label : labels) label = static_cast<int32_t>(rng() % 10);
    out.add("input", input);
    out.add("labels", labels.data(), labels.size() * sizeof(int32_t), "int32", {c.batch});

    for (const auto& p : net->parameters()) out.add("initial." + p.name, *p.value);
    for (const auto& b : net->buffers()) {
        if (b.f32) out.add("initial." + b.name, *b.f32);
        else out.add("initial." + b.name, *b.i64);
    }

    net->set_training(true);
    const Tensor& logits = net->forward(input);
    out.add("logits", logits);
    Tensor grad_logits;
    entry["loss"] = bnorm::nn::softmax_cross_entropy(logits, labels, grad_logits);
    net->backward(grad_logits);
    for (const auto& p : net->parameters()) out.add("grad." + p.name, *p.grad);
    for (const auto& b : net->buffers()) {
        if (b.f32) out.add("after." + b.name, *b.f32);
        else out.add("after." + b.name, *b.i64);
    }

    for (const auto& p : net->parameters())
        for (int64_t i = 0; i < p.value->numel(); ++i) p.value->at(i) -= static_cast<float>(lr) * p.grad->at(i);
    for (const auto& p : net->parameters()) out.add("updated." + p.name, *p.value);

    net->set_training(false);
    out.add("eval_logits", net->forward(input));
    return entry;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: network_parity_dump OUT_DIR\n";
        return 2;
    }
    try {
        const fs::path dir = argv[1];
        fs::create_directories(dir);
        const std::vector<Case> cases = {
            {"mlp_bn", "mlp", true, false, 60, 1},
            {"mlp", "mlp", false, false, 60, 2},
            {"cnn_bn", "cnn", true, false, 12, 3},
            {"cnn_bn_channels_last", "cnn", true, true, 12, 4},
            {"cnn", "cnn", false, false, 12, 5},
        };
        nlohmann::json index = {{"cases", nlohmann::json::array()}};
        for (const Case& c : cases) index["cases"].push_back(run_case(c, dir));
        std::ofstream(dir / "index.json") << index.dump(1) << "\n";
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "network_parity_dump: " << e.what() << "\n";
        return 1;
    }
}
