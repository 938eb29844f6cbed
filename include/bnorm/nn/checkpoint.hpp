// checkpoint.hpp: save and restore a model, its optimizer and its random engines in the
// safetensors format (https://github.com/huggingface/safetensors), under PyTorch's state-dict
// names, so that torch loads the weights (tests/nn/checkpoint_torch_load.py) and a resumed run
// continues bitwise as if never stopped.
//
//   bnorm::nn::save_checkpoint("run/ckpt.safetensors", net, &sgd, {{"step", "1200"}, {"epoch", "2"}});
//   ...
//   auto metadata = bnorm::nn::load_checkpoint("run/ckpt.safetensors", net, &sgd);  // all or nothing
//   int64_t step = std::stoll(metadata.at("step"));
//
// The file: an 8-byte little-endian header length N; N bytes of JSON (padded with spaces to a
// multiple of 8)
//   {"__metadata__": {...}, "0.weight": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 24]}, ...}
// then the tensors' little-endian bytes, contiguous, in header order. Tensors: every parameter
// and buffer of the model ("1.num_batches_tracked" as I64 of shape []), then the optimizer state
// ("optimizer.0.weight.momentum_buffer", ...). __metadata__ (strings only):
//   "format": "bnorm.checkpoint.v1"
//   "optimizer": "SGD" | "Adam" (absent without an optimizer), "optimizer.steps": "1200",
//   "optimizer.<hyperparameter>": "0.9" ("optimizer.lr", "optimizer.momentum", ...)
//   "random_state.<name>": a std::mt19937_64 as operator<< writes it, one per model.random_states()
//   and the caller's own keys, which must not be "format" nor start with "optimizer" or "random_state".
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/optim.hpp"

namespace bnorm::nn {

// A checkpoint that cannot be written, read or used: the message names the file and what is wrong
// ("ckpt.safetensors: tensor 0.weight has shape (2, 3), the model expects (3, 2)").
class CheckpointError : public bnorm::Error {
public:
    explicit CheckpointError(const std::string& message) : bnorm::Error(BNORM_EINVAL, message) {}
};

// One tensor's entry in a safetensors header.
struct SafetensorsEntry {
    std::string name;
    std::string dtype;  // "F32", "I64" (the only dtypes accepted)
    std::vector<int64_t> shape;
    uint64_t begin;  // byte offsets relative to the start of the data section
    uint64_t end;
};

struct SafetensorsHeader {
    std::vector<SafetensorsEntry> tensors;  // in header order
    std::map<std::string, std::string> metadata;
    uint64_t data_start;  // 8 + N: the file offset of the data section
};

// Reads and checks the header of a safetensors file: its length, its JSON, every entry's dtype,
// shape and data_offsets (in range, matching dtype x shape, contiguous and covering the data
// section exactly, with no trailing bytes). Throws CheckpointError naming the file.
SafetensorsHeader read_safetensors_header(const std::filesystem::path& path);

// Writes the checkpoint atomically (write_file_atomically). `optimizer` may be null.
// Throws CheckpointError if the model has two tensors of the same name, a caller key is reserved,
// a string is not UTF-8, or the file cannot be written (the old file, if any, is then intact).
void save_checkpoint(const std::filesystem::path& path, Layer& model, const Optimizer* optimizer,
                     const std::map<std::string, std::string>& metadata);

// Restores every parameter, buffer and random engine of `model` and, if `optimizer` is not null,
// its hyperparameters (lr included), step count and state; returns the caller's metadata (the
// reserved keys removed). With a null optimizer, optimizer entries of the file are checked but
// ignored (evaluating a training checkpoint). Everything is validated before anything is written:
// on a throw (CheckpointError naming the file and the problem) model and optimizer are untouched.
// Refused: a damaged file (see read_safetensors_header), a tensor missing, a tensor the model does
// not have, a dtype or shape other than the model's, an optimizer of another kind or with other
// parameters, a random engine missing, extra or unreadable.
std::map<std::string, std::string> load_checkpoint(const std::filesystem::path& path, Layer& model,
                                                   Optimizer* optimizer);

}  // namespace bnorm::nn
