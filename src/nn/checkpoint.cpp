// checkpoint.cpp: safetensors writer and a strict reader: load_checkpoint validates the whole file
// against the model and the optimizer first, then copies; nothing is written before every check
// has passed.
#include "bnorm/nn/checkpoint.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "bnorm/nn/atomic_file.hpp"

namespace bnorm::nn {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader and writer copy bytes as they are");

using Json = nlohmann::ordered_json;  // keeps the header's order: tensors are written in it

constexpr uint64_t kMaxHeaderLength = 100'000'000;  // safetensors' own limit
constexpr const char* kFormat = "bnorm.checkpoint.v1";
constexpr const char* kOptimizerPrefix = "optimizer.";
constexpr const char* kRandomStatePrefix = "random_state.";

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
    throw CheckpointError(path.string() + ": " + what);
}

bool is_reserved_key(const std::string& key) {
    return key == "format" || key == "optimizer" || key.starts_with(kOptimizerPrefix) ||
           key.starts_with(kRandomStatePrefix);
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

std::string list_names(const std::vector<std::string>& names) {
    std::string s;
    const size_t shown = std::min<size_t>(names.size(), 10);
    for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > shown) s += " and " + std::to_string(names.size() - shown) + " more";
    return s;
}

size_t dtype_size(const std::string& dtype) { return dtype == "I64" ? 8 : 4; }

// A tensor of the model or the optimizer, as the file must hold it.
struct Target {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    void* data;  // float* (F32) or int64_t* (I64)
    uint64_t bytes;
};

std::vector<Target> model_targets(Layer& model) {
    std::vector<Target> out;
    for (const Parameter& p : model.parameters())
        out.push_back({p.name, "F32", p.value->shape(), p.value->data(), static_cast<uint64_t>(p.value->numel()) * 4});
    for (const Buffer& b : model.buffers()) {
        if ((b.f32 == nullptr) == (b.i64 == nullptr))
            throw std::logic_error("checkpoint: buffer \"" + b.name + "\" must set exactly one of f32 and i64");
        if (b.f32 != nullptr)
            out.push_back({b.name, "F32", b.f32->shape(), b.f32->data(), static_cast<uint64_t>(b.f32->numel()) * 4});
        else
            out.push_back({b.name, "I64", {}, b.i64, 8});
    }
    return out;
}

std::vector<Target> optimizer_targets(Optimizer& optimizer) {
    std::vector<Target> out;
    for (const OptimizerState& s : optimizer.state())
        out.push_back({s.name, "F32", s.value->shape(), s.value->data(), static_cast<uint64_t>(s.value->numel()) * 4});
    return out;
}

uint64_t read_le64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// Reads `count` bytes at the current position of `file` into `out`, or fails naming the file.
void read_exactly(std::FILE* file, const std::filesystem::path& path, char* out, size_t count) {
    if (count > 0 && std::fread(out, 1, count, file) != count) {
        if (std::ferror(file)) fail(path, std::string("cannot read: ") + std::strerror(errno));
        fail(path, "the file ended while reading it (changed while being read?)");
    }
}

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};

std::unique_ptr<std::FILE, FileCloser> open_for_reading(const std::filesystem::path& path, uint64_t& size) {
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(path, std::string("cannot open: ") + std::strerror(errno));
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory, not a checkpoint file");
    size = std::filesystem::file_size(path, ec);
    if (ec) fail(path, "cannot read its size: " + ec.message());
    return file;
}

// The header length N from the first 8 bytes, checked against the file size.
uint64_t check_header_length(const std::filesystem::path& path, const unsigned char* first8, uint64_t file_size) {
    const uint64_t n = read_le64(first8);
    if (n == 0) fail(path, "header length is 0; a safetensors header is a JSON object of at least 2 bytes");
    if (n > kMaxHeaderLength)
        fail(path, "header length " + std::to_string(n) + " is absurd (more than " + std::to_string(kMaxHeaderLength) +
                       " bytes): not a safetensors file, or a damaged one");
    if (n > file_size - 8)
        fail(path, "header length " + std::to_string(n) + " is larger than the rest of the file (" +
                       std::to_string(file_size - 8) + " bytes): the file is truncated or damaged");
    return n;
}

uint64_t json_unsigned(const std::filesystem::path& path, const Json& value, const std::string& what) {
    if (!value.is_number_unsigned()) fail(path, what + " must be a non-negative integer, got " + value.dump());
    return value.get<uint64_t>();
}

SafetensorsHeader parse_header(const std::filesystem::path& path, const char* text, uint64_t length,
                               uint64_t file_size) {
    Json header;
    try {
        header = Json::parse(text, text + length);
    } catch (const Json::exception& e) {
        fail(path, std::string("the header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) fail(path, "the header is JSON but not an object (" + std::string(header.type_name()) + ")");

    SafetensorsHeader out;
    out.data_start = 8 + length;
    const uint64_t data_size = file_size - out.data_start;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail(path, "__metadata__ must be an object of strings");
            for (const auto& [key, value] : entry.items()) {
                if (!value.is_string()) fail(path, "__metadata__ value of \"" + key + "\" is not a string: " + value.dump());
                out.metadata[key] = value.get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor " + name;
        if (!entry.is_object()) fail(path, where + ": entry is not an object");
        for (const auto& [key, value] : entry.items())
            if (key != "dtype" && key != "shape" && key != "data_offsets") fail(path, where + ": unknown field \"" + key + "\"");
        SafetensorsEntry e;
        e.name = name;
        if (!entry.contains("dtype")) fail(path, where + " has no dtype");
        if (!entry["dtype"].is_string()) fail(path, where + ": dtype is not a string: " + entry["dtype"].dump());
        e.dtype = entry["dtype"].get<std::string>();
        if (e.dtype != "F32" && e.dtype != "I64")
            fail(path, where + ": dtype \"" + e.dtype + "\" is not supported (F32 or I64)");

        if (!entry.contains("shape") || !entry["shape"].is_array()) fail(path, where + ": shape is missing or not an array");
        uint64_t numel = 1;
        bool overflow = false, empty = false;
        for (const Json& d : entry["shape"]) {
            const uint64_t size = json_unsigned(path, d, where + ": each shape dimension");
            if (size > static_cast<uint64_t>(INT64_MAX)) fail(path, where + ": shape dimension " + d.dump() + " is too large");
            overflow = __builtin_mul_overflow(numel, size, &numel) || overflow;
            empty = empty || size == 0;
            e.shape.push_back(static_cast<int64_t>(size));
        }
        uint64_t bytes = 0;
        if (!empty && (overflow || __builtin_mul_overflow(numel, dtype_size(e.dtype), &bytes)))
            fail(path, where + ": shape " + shape_text(e.shape) + " is too large");

        if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2)
            fail(path, where + ": data_offsets must be an array [begin, end]");
        e.begin = json_unsigned(path, entry["data_offsets"][0], where + ": data_offsets begin");
        e.end = json_unsigned(path, entry["data_offsets"][1], where + ": data_offsets end");
        if (e.begin > e.end) fail(path, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] end before they begin");
        if (e.end > data_size)
            fail(path, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                           "] are out of range: the data section has " + std::to_string(data_size) + " bytes (file truncated?)");
        if (e.end - e.begin != bytes)
            fail(path, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] hold " +
                           std::to_string(e.end - e.begin) + " bytes, but " + e.dtype + " of shape " + shape_text(e.shape) +
                           " needs " + std::to_string(bytes));
        out.tensors.push_back(std::move(e));
    }

    // The tensors must tile the data section: no overlap, no gap, nothing after the last.
    std::vector<const SafetensorsEntry*> by_offset;
    for (const auto& e : out.tensors) by_offset.push_back(&e);
    std::stable_sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t expected = 0;
    const SafetensorsEntry* previous = nullptr;
    for (const SafetensorsEntry* e : by_offset) {
        if (e->begin < expected)
            fail(path, "tensors " + previous->name + " and " + e->name + " overlap (data_offsets [" +
                           std::to_string(previous->begin) + ", " + std::to_string(previous->end) + "] and [" +
                           std::to_string(e->begin) + ", " + std::to_string(e->end) + "])");
        if (e->begin > expected)
            fail(path, "bytes [" + std::to_string(expected) + ", " + std::to_string(e->begin) +
                           ") of the data section belong to no tensor (before " + e->name + ")");
        expected = e->end;
        previous = e;
    }
    if (expected != data_size)
        fail(path, std::to_string(data_size - expected) + " bytes of trailing data after the last tensor");
    return out;
}

bool parse_int64(const std::string& text, int64_t& value) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

}  // namespace

SafetensorsHeader read_safetensors_header(const std::filesystem::path& path) {
    uint64_t file_size = 0;
    auto file = open_for_reading(path, file_size);
    if (file_size < 8)
        fail(path, "file too short (" + std::to_string(file_size) + " bytes); a safetensors file starts with an 8-byte header length");
    unsigned char first8[8];
    read_exactly(file.get(), path, reinterpret_cast<char*>(first8), 8);
    const uint64_t length = check_header_length(path, first8, file_size);
    std::string text(length, '\0');
    read_exactly(file.get(), path, text.data(), length);
    return parse_header(path, text.data(), length, file_size);
}

void save_checkpoint(const std::filesystem::path& path, Layer& model, const Optimizer* optimizer,
                     const std::map<std::string, std::string>& metadata) {
    std::vector<Target> targets = model_targets(model);
    if (optimizer != nullptr) {
        // state() hands out writable pointers for loading; saving only reads through them.
        std::vector<Target> state = optimizer_targets(const_cast<Optimizer&>(*optimizer));
        targets.insert(targets.end(), state.begin(), state.end());
    }
    std::set<std::string> names;
    for (const Target& t : targets) {
        if (t.name == "__metadata__" || !names.insert(t.name).second)
            fail(path, "cannot save: the model has two tensors named \"" + t.name + "\" (or one named __metadata__)");
        if (optimizer == nullptr && t.name.starts_with(kOptimizerPrefix))
            fail(path, "cannot save: the model's tensor \"" + t.name + "\" starts with the reserved prefix optimizer.");
    }

    Json meta = Json::object();
    meta["format"] = kFormat;
    if (optimizer != nullptr) {
        meta["optimizer"] = optimizer->kind();
        meta["optimizer.steps"] = std::to_string(optimizer->steps());
        for (const auto& [key, value] : optimizer->hyperparameters()) meta[kOptimizerPrefix + key] = value;
    }
    for (const RandomState& r : model.random_states()) {
        std::ostringstream text;
        text << *r.engine;
        const std::string key = kRandomStatePrefix + r.name;
        if (meta.contains(key)) fail(path, "cannot save: two random states named \"" + r.name + "\"");
        meta[key] = text.str();
    }
    for (const auto& [key, value] : metadata) {
        if (is_reserved_key(key))
            fail(path, "cannot save: metadata key \"" + key +
                           "\" is reserved (format, optimizer, optimizer.*, random_state.*); choose another name");
        meta[key] = value;
    }

    Json header = Json::object();
    header["__metadata__"] = std::move(meta);
    uint64_t offset = 0;
    for (const Target& t : targets) {
        header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
        offset += t.bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const Json::exception& e) {
        fail(path, std::string("cannot save: a name or metadata string is not valid UTF-8: ") + e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

    std::vector<std::byte> bytes(8 + text.size() + offset);
    const uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<std::byte>((length >> (8 * i)) & 0xff);
    std::memcpy(bytes.data() + 8, text.data(), text.size());
    std::byte* data = bytes.data() + 8 + text.size();
    for (const Target& t : targets) {
        if (t.bytes > 0) std::memcpy(data, t.data, t.bytes);
        data += t.bytes;
    }
    try {
        write_file_atomically(path, bytes);
    } catch (const std::system_error& e) {
        throw CheckpointError(std::string("cannot save the checkpoint: ") + e.what());
    }
}

std::map<std::string, std::string> load_checkpoint(const std::filesystem::path& path, Layer& model,
                                                   Optimizer* optimizer) {
    // ---- read the file ----
    uint64_t file_size = 0;
    std::vector<char> bytes;
    {
        auto file = open_for_reading(path, file_size);
        if (file_size < 8)
            fail(path, "file too short (" + std::to_string(file_size) +
                           " bytes); a safetensors file starts with an 8-byte header length");
        unsigned char first8[8];
        read_exactly(file.get(), path, reinterpret_cast<char*>(first8), 8);
        check_header_length(path, first8, file_size);
        bytes.resize(file_size);
        std::memcpy(bytes.data(), first8, 8);
        read_exactly(file.get(), path, bytes.data() + 8, file_size - 8);
    }
    const uint64_t length = read_le64(reinterpret_cast<const unsigned char*>(bytes.data()));
    const SafetensorsHeader header = parse_header(path, bytes.data() + 8, length, file_size);

    // ---- match every tensor of the model (and the optimizer) with the file's ----
    std::map<std::string, const SafetensorsEntry*> entries;
    for (const auto& e : header.tensors) entries[e.name] = &e;
    std::vector<Target> targets = model_targets(model);
    if (optimizer != nullptr) {
        std::vector<Target> state = optimizer_targets(*optimizer);
        targets.insert(targets.end(), state.begin(), state.end());
    }
    std::set<std::string> wanted;
    std::vector<std::string> missing;
    for (const Target& t : targets) {
        if (!wanted.insert(t.name).second) fail(path, "the model has two tensors named \"" + t.name + "\"");
        auto it = entries.find(t.name);
        if (it == entries.end()) {
            missing.push_back(t.name);
            continue;
        }
        const SafetensorsEntry& e = *it->second;
        if (e.dtype != t.dtype) fail(path, "tensor " + t.name + " is " + e.dtype + ", the model expects " + t.dtype);
        if (e.shape != t.shape)
            fail(path, "tensor " + t.name + " has shape " + shape_text(e.shape) + ", the model expects " + shape_text(t.shape));
    }
    if (!missing.empty()) fail(path, "missing tensors: " + list_names(missing));
    std::vector<std::string> unexpected;
    for (const auto& e : header.tensors)
        if (!wanted.contains(e.name) && !(optimizer == nullptr && e.name.starts_with(kOptimizerPrefix)))
            unexpected.push_back(e.name);
    if (!unexpected.empty()) fail(path, "tensors that the model does not have: " + list_names(unexpected));

    // ---- metadata: format, optimizer, random states, the caller's ----
    const auto& meta = header.metadata;
    auto format = meta.find("format");
    if (format == meta.end()) fail(path, "__metadata__ has no \"format\": not a bnorm checkpoint");
    if (format->second != kFormat)
        fail(path, "format \"" + format->second + "\" is not " + kFormat + " (written by another version?)");

    std::map<std::string, std::string> hyperparameters;
    int64_t steps = 0;
    if (optimizer != nullptr) {
        auto kind = meta.find("optimizer");
        if (kind == meta.end()) fail(path, "the checkpoint has no optimizer state (saved without an optimizer)");
        if (kind->second != optimizer->kind())
            fail(path, "the checkpoint's optimizer is " + kind->second + ", this run's is " + optimizer->kind());
        auto step_text = meta.find("optimizer.steps");
        if (step_text == meta.end()) fail(path, "__metadata__ has no optimizer.steps");
        if (!parse_int64(step_text->second, steps) || steps < 0)
            fail(path, "optimizer.steps is not a non-negative integer: \"" + step_text->second + "\"");
        for (const auto& [key, value] : meta)
            if (key.starts_with(kOptimizerPrefix) && key != "optimizer.steps")
                hyperparameters[key.substr(std::strlen(kOptimizerPrefix))] = value;
        try {
            optimizer->check_hyperparameters(hyperparameters);
        } catch (const std::invalid_argument& e) {
            fail(path, std::string("optimizer hyperparameters: ") + e.what());
        }
    }

    const std::vector<RandomState> random_states = model.random_states();
    std::vector<std::mt19937_64> engines(random_states.size());
    std::set<std::string> engine_keys;
    for (size_t i = 0; i < random_states.size(); ++i) {
        const std::string key = kRandomStatePrefix + random_states[i].name;
        engine_keys.insert(key);
        auto it = meta.find(key);
        if (it == meta.end()) fail(path, "__metadata__ has no " + key + " (the model's random engine " + random_states[i].name + ")");
        std::istringstream text(it->second);
        text >> engines[i];
        if (text.fail()) fail(path, key + " is not a std::mt19937_64 state");
        text >> std::ws;
        if (!text.eof()) fail(path, key + " has text after the std::mt19937_64 state");
    }
    for (const auto& [key, value] : meta)
        if (key.starts_with(kRandomStatePrefix) && !engine_keys.contains(key))
            fail(path, key + ": the model has no random engine of that name");

    std::map<std::string, std::string> caller_metadata;
    for (const auto& [key, value] : meta)
        if (!is_reserved_key(key)) caller_metadata[key] = value;

    // ---- every check passed: copy ----
    const char* data = bytes.data() + header.data_start;
    for (const Target& t : targets) {
        const SafetensorsEntry& e = *entries.at(t.name);
        if (t.bytes > 0) std::memcpy(t.data, data + e.begin, t.bytes);
    }
    if (optimizer != nullptr) {
        optimizer->set_hyperparameters(hyperparameters);
        optimizer->set_steps(steps);
    }
    for (size_t i = 0; i < random_states.size(); ++i) *random_states[i].engine = engines[i];
    return caller_metadata;
}

}  // namespace bnorm::nn
