// IDX files (the format of MNIST and Fashion-MNIST), gzipped or plain, read through zlib.
// Format (http://yann.lecun.com/exdb/mnist/): a big-endian magic 0x0000TTDD (TT the type, 0x08 for
// uint8; DD the number of dimensions), DD big-endian uint32 sizes, then the data, row-major.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "bnorm/nn/data.hpp"

namespace bnorm::nn {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kImagesMagic = 0x00000803;  // uint8, 3 dimensions (count, rows, cols)
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8, 1 dimension (count)
constexpr int64_t kMaxElements = 1'000'000'000;
constexpr int64_t kMaxSide = 4096;

const char* const kInstallHint =
    "install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it goes to "
    "/usr/share/datasets/fashion-mnist) or point --data DIR at a directory holding the IDX files";

[[noreturn]] void fail(const fs::path& file, const std::string& problem) {
    throw DataError("data file " + file.string() + ": " + problem);
}

std::string hex32(uint32_t value) {
    static const char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) s += digits[(value >> shift) & 0xfu];
    return s;
}

uint32_t big_endian_u32(const uint8_t* bytes) {
    return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
           uint32_t{bytes[3]};
}

// "IDX, uint8, 1 dimension" for an IDX magic number; otherwise what the four bytes look like.
std::string describe_magic(uint32_t magic) {
    if ((magic >> 16) == 0x1f8b) return "a gzip header: the file is gzipped twice; gunzip it once";
    if ((magic >> 16) != 0) return "not an IDX magic number";
    const char* type = nullptr;
    switch ((magic >> 8) & 0xffu) {
        case 0x08: type = "uint8"; break;
        case 0x09: type = "int8"; break;
        case 0x0b: type = "int16"; break;
        case 0x0c: type = "int32"; break;
        case 0x0d: type = "float32"; break;
        case 0x0e: type = "float64"; break;
        default: return "not an IDX magic number (unknown type code)";
    }
    const uint32_t dims = magic & 0xffu;
    return std::string("IDX, ") + type + ", " + std::to_string(dims) +
           (dims == 1 ? " dimension" : " dimensions");
}

// A file read through zlib: gzread decompresses a gzip stream and passes any other file through.
class GzReader {
public:
    explicit GzReader(const fs::path& file) : path_(file) {
        std::error_code ec;
        const fs::file_status status = fs::status(file, ec);
        if (status.type() == fs::file_type::not_found)
            fail(file, std::string("no such file; ") + kInstallHint);
        if (ec) fail(file, "cannot inspect it: " + ec.message() + "; check the path and its permissions");
        if (fs::is_directory(status))
            fail(file, "is a directory, not a file; give the path of the IDX file inside it "
                       "(or pass the directory as --data DIR)");
        // A pipe or a device could block or never end: only regular files are read.
        if (!fs::is_regular_file(status)) fail(file, "is not a regular file; give the path of an IDX file");
        errno = 0;
        gz_ = gzopen(file.c_str(), "rb");
        if (gz_ == nullptr) {
            const int error = errno;
            fail(file, "cannot be opened: " +
                           std::string(error != 0 ? std::strerror(error) : "zlib could not allocate its state") +
                           "; check its permissions");
        }
        gzbuffer(gz_, 1u << 18);  // fewer, larger reads: decompression dominates the load time
    }
    GzReader(const GzReader&) = delete;
    GzReader& operator=(const GzReader&) = delete;
    ~GzReader() { gzclose_r(gz_); }

    // Reads up to n bytes; returns fewer only at the end of the data.
    // throws DataError on a corrupt or truncated gzip stream or a read error.
    size_t read(uint8_t* out, size_t n) {
        size_t total = 0;
        while (total < n) {
            const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - total, size_t{1} << 30));
            const int got = gzread(gz_, out + total, chunk);
            if (got <= 0) break;
            total += static_cast<size_t>(got);
            offset_ += static_cast<uint64_t>(got);
        }
        if (total < n) check_stream();
        return total;
    }

    // The size of the whole (decompressed) file that its header declares, for messages.
    void set_declared_size(uint64_t size) { declared_size_ = size; }

private:
    void check_stream() {
        int code = Z_OK;
        const char* message = gzerror(gz_, &code);
        if (code == Z_OK) return;
        // zlib's message starts with the path it was given; the path is said once already.
        std::string detail = message != nullptr ? message : "";
        const std::string prefix = path_.string() + ": ";
        if (detail.rfind(prefix, 0) == 0) detail.erase(0, prefix.size());
        const std::string where =
            " after " + std::to_string(offset_) +
            (declared_size_ > 0 ? " of the " + std::to_string(declared_size_) + " bytes its header declares"
                                : " bytes of decompressed data");
        if (code == Z_BUF_ERROR)
            fail(path_, "the gzip stream ends early" + where +
                            ": the file is truncated; download it again");
        if (code == Z_DATA_ERROR)
            fail(path_, "corrupt gzip data (zlib: " + detail + ")" + where +
                            "; the file is damaged, download it again");
        if (code == Z_MEM_ERROR) fail(path_, "zlib ran out of memory while decompressing it");
        if (code == Z_ERRNO)
            fail(path_, std::string("read error: ") + std::strerror(errno) + "; check the disk and the file");
        fail(path_, "zlib error " + std::to_string(code) + " (" + detail + ")" + where);
    }

    fs::path path_;
    gzFile gz_ = nullptr;
    uint64_t offset_ = 0;
    uint64_t declared_size_ = 0;
};

// Reads exactly `size` bytes of data after a header, growing the buffer only as the data arrives,
// so that a header that lies about its size costs no more memory than the file holds. Then
// requires the end of the data: bytes after it mean a wrong header or a damaged file.
std::vector<uint8_t> read_data(GzReader& reader, const fs::path& file, int64_t header_size, int64_t size,
                               const std::string& what) {
    reader.set_declared_size(static_cast<uint64_t>(header_size + size));
    const size_t expected = static_cast<size_t>(size);
    std::vector<uint8_t> data;
    size_t have = 0;
    while (have < expected) {
        const size_t target = std::min(expected, std::max<size_t>(size_t{1} << 20, 2 * have));
        data.resize(target);
        const size_t got = reader.read(data.data() + have, target - have);
        have += got;
        if (have < target) break;
    }
    if (have < expected)
        fail(file, "truncated: expected " + std::to_string(expected) + " bytes of data (" + what +
                       ") after the header, got " + std::to_string(have) +
                       "; the file is cut short, download it again");

    uint8_t scratch[4096];
    constexpr uint64_t kCountLimit = uint64_t{1} << 20;  // enough to say how much; never reads on forever
    uint64_t extra = 0;
    for (size_t got; extra < kCountLimit && (got = reader.read(scratch, sizeof scratch)) > 0;) extra += got;
    if (extra > 0)
        fail(file, (extra >= kCountLimit ? "more than " + std::to_string(kCountLimit) : std::to_string(extra)) +
                       " extra bytes after the " + std::to_string(expected) + " bytes of data (" + what +
                       ") that its header declares: the header's count is wrong or the file is "
                       "damaged; download it again");
    return data;
}

// Reads the 4-byte magic and checks it; `role` is "images" or "labels".
void read_magic(GzReader& reader, const fs::path& file, uint32_t expected, const char* role) {
    uint8_t bytes[4];
    const size_t got = reader.read(bytes, sizeof bytes);
    if (got == 0)
        fail(file, std::string("is empty (0 bytes); expected an IDX ") + role +
                       " file; download it again");
    if (got < sizeof bytes)
        fail(file, "is too short for an IDX header: " + std::to_string(got) +
                       " bytes; expected an IDX " + role + " file; download it again");
    const uint32_t magic = big_endian_u32(bytes);
    if (magic == expected) return;
    std::string message = "wrong magic number " + hex32(magic) + " (" + describe_magic(magic) +
                          "), expected " + hex32(expected) + " (" + describe_magic(expected) + "): ";
    const uint32_t other = expected == kImagesMagic ? kLabelsMagic : kImagesMagic;
    if (magic == other)
        message += std::string("this is ") + (other == kLabelsMagic ? "a labels" : "an images") +
                   " file given as the " + role + " file; swap the two paths";
    else if ((magic >> 16) == 0)
        message += std::string("only uint8 IDX ") + role + " files (" + hex32(expected) + ") are supported";
    else
        message += std::string("this is not an IDX file; give the path of a *-") +
                   (expected == kImagesMagic ? "images-idx3" : "labels-idx1") + "-ubyte(.gz) file";
    fail(file, message);
}

// Reads the n big-endian uint32 sizes that follow the magic.
std::vector<int64_t> read_sizes(GzReader& reader, const fs::path& file, size_t n) {
    std::vector<uint8_t> bytes(4 * n);
    const size_t got = reader.read(bytes.data(), bytes.size());
    if (got < bytes.size())
        fail(file, "truncated header: got " + std::to_string(4 + got) + " of its " +
                       std::to_string(4 + bytes.size()) + " bytes; download the file again");
    std::vector<int64_t> sizes(n);
    for (size_t i = 0; i < n; ++i) sizes[i] = big_endian_u32(bytes.data() + 4 * i);
    return sizes;
}

struct Images {
    int64_t count, rows, cols;
    std::vector<uint8_t> pixels;
};

Images read_images(const fs::path& file) {
    GzReader reader(file);
    read_magic(reader, file, kImagesMagic, "images");
    const std::vector<int64_t> sizes = read_sizes(reader, file, 3);
    const int64_t count = sizes[0], rows = sizes[1], cols = sizes[2];
    for (const auto& [name, value] : {std::pair{"rows", rows}, std::pair{"cols", cols}})
        if (value < 1 || value > kMaxSide)
            fail(file, std::string("header says ") + name + " = " + std::to_string(value) +
                           ", out of range 1.." + std::to_string(kMaxSide) +
                           ": the header is corrupt; download the file again");
    if (count == 0) fail(file, "header says 0 images: the data set is empty; download the file again");
    // count < 2^32 and rows * cols <= 2^24: the product fits in int64.
    const int64_t size = count * rows * cols;
    const std::string what =
        std::to_string(count) + " images of " + std::to_string(rows) + "x" + std::to_string(cols);
    if (size > kMaxElements)
        fail(file, "header claims " + what + " = " + std::to_string(size) + " bytes, over the limit of " +
                       std::to_string(kMaxElements) + ": the header is corrupt; download the file again");
    return {count, rows, cols, read_data(reader, file, 16, size, what)};
}

std::vector<uint8_t> read_labels(const fs::path& file) {
    GzReader reader(file);
    read_magic(reader, file, kLabelsMagic, "labels");
    const int64_t count = read_sizes(reader, file, 1)[0];
    if (count == 0) fail(file, "header says 0 labels: the data set is empty; download the file again");
    const std::string what = std::to_string(count) + " labels";
    if (count > kMaxElements)
        fail(file, "header claims " + what + ", over the limit of " + std::to_string(kMaxElements) +
                       ": the header is corrupt; download the file again");
    return read_data(reader, file, 8, count, what);
}

fs::path pick_file(const fs::path& dir, const std::string& name) {
    fs::path gz = dir / (name + ".gz"), plain = dir / name;
    std::error_code ec;
    if (fs::exists(gz, ec)) return gz;
    if (fs::exists(plain, ec)) return plain;
    if (!fs::exists(dir, ec))
        throw DataError("data directory " + dir.string() + " does not exist; " + kInstallHint);
    throw DataError("data file " + gz.string() + ": no such file (nor " + plain.string() + "); " +
                    kInstallHint);
}

}  // namespace

Dataset load_idx(const fs::path& images, const fs::path& labels, int num_classes) {
    if (num_classes < 1 || num_classes > 256)
        throw bnorm::InvalidArgument("load_idx: num_classes = " + std::to_string(num_classes) +
                                     " is out of range 1..256 (uint8 labels)");
    Images read = read_images(images);
    std::vector<uint8_t> label_values = read_labels(labels);
    if (static_cast<int64_t>(label_values.size()) != read.count)
        throw DataError("data files " + images.string() + " and " + labels.string() + ": the images file holds " +
                        std::to_string(read.count) + " images but the labels file holds " +
                        std::to_string(label_values.size()) +
                        " labels; pair train-images with train-labels and t10k-images with t10k-labels");
    const auto bad = std::find_if(label_values.begin(), label_values.end(),
                                  [num_classes](uint8_t label) { return label >= num_classes; });
    if (bad != label_values.end())
        fail(labels, "label " + std::to_string(*bad) + " at index " +
                         std::to_string(bad - label_values.begin()) + " is out of range 0.." +
                         std::to_string(num_classes - 1) + " for " + std::to_string(num_classes) +
                         "-class data: the file is damaged or is not a labels file of this data set");
    Dataset data;
    data.count = read.count;
    data.rows = read.rows;
    data.cols = read.cols;
    data.pixels = std::move(read.pixels);
    data.labels = std::move(label_values);
    return data;
}

Dataset load_fashion_mnist(const fs::path& dir, bool train) {
    const std::string split = train ? "train" : "t10k";
    // In sequence (argument order is unspecified): a missing images file is reported first.
    const fs::path images = pick_file(dir, split + "-images-idx3-ubyte");
    const fs::path labels = pick_file(dir, split + "-labels-idx1-ubyte");
    return load_idx(images, labels, 10);
}

fs::path default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

}  // namespace bnorm::nn
