// data_files.hpp: writes IDX files (plain or gzipped) and scratch directories for the tests.
//
//   ScratchDir dir("data");                                      // removed at the end of scope
//   auto bytes = idx_images_bytes(3, 2, 2, {0, 1, 2, ...});      // header + pixels
//   write_file(dir.path() / "x-images", bytes);
//   write_gzip_file(dir.path() / "x-images.gz", bytes);
#pragma once

#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::nn::test {

using Bytes = std::vector<uint8_t>;

inline void append_big_endian_u32(Bytes& out, uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

// An IDX images file: magic 0x00000803, count, rows, cols, then the pixels as given (which need
// not match the header: the tests write lying headers on purpose).
inline Bytes idx_images_bytes(uint32_t count, uint32_t rows, uint32_t cols, const Bytes& pixels,
                              uint32_t magic = 0x00000803) {
    Bytes out;
    append_big_endian_u32(out, magic);
    append_big_endian_u32(out, count);
    append_big_endian_u32(out, rows);
    append_big_endian_u32(out, cols);
    out.insert(out.end(), pixels.begin(), pixels.end());
    return out;
}

inline Bytes idx_labels_bytes(uint32_t count, const Bytes& labels, uint32_t magic = 0x00000801) {
    Bytes out;
    append_big_endian_u32(out, magic);
    append_big_endian_u32(out, count);
    out.insert(out.end(), labels.begin(), labels.end());
    return out;
}

inline void write_file(const std::filesystem::path& file, const Bytes& bytes) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + file.string());
}

inline Bytes gzip_bytes(const Bytes& bytes) {
    // gzip framing (windowBits 15 + 16) around deflate, as the gzip command writes it.
    z_stream stream{};
    if (deflateInit2(&stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw std::runtime_error("deflateInit2 failed");
    Bytes out(deflateBound(&stream, static_cast<uLong>(bytes.size())) + 32);
    stream.next_in = const_cast<Bytes::value_type*>(bytes.data());
    stream.avail_in = static_cast<uInt>(bytes.size());
    stream.next_out = out.data();
    stream.avail_out = static_cast<uInt>(out.size());
    const int status = deflate(&stream, Z_FINISH);
    out.resize(stream.total_out);
    deflateEnd(&stream);
    if (status != Z_STREAM_END) throw std::runtime_error("deflate did not finish");
    return out;
}

inline void write_gzip_file(const std::filesystem::path& file, const Bytes& bytes) {
    write_file(file, gzip_bytes(bytes));
}

// A fresh directory under the system's temporary directory, removed with everything in it.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& name) {
        static std::atomic<int> serial{0};
        path_ = std::filesystem::temp_directory_path() /
                ("bnorm-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(serial++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    ~ScratchDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace bnorm::nn::test
