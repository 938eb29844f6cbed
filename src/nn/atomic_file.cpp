// atomic_file.cpp: temporary file + fsync + rename + directory fsync (POSIX).
#include "bnorm/nn/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <random>
#include <string>
#include <system_error>

namespace bnorm::nn {
namespace {

[[noreturn]] void fail(int error, const std::string& what, const std::filesystem::path& path) {
    throw std::system_error(error, std::generic_category(),
                            "write_file_atomically: " + what + " '" + path.string() + "'");
}

// Closes the descriptor and removes the temporary file unless release()d: every early exit
// (a throw) cleans up.
class TemporaryFile {
public:
    TemporaryFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
    TemporaryFile(const TemporaryFile&) = delete;
    TemporaryFile& operator=(const TemporaryFile&) = delete;
    ~TemporaryFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    int fd() const { return fd_; }
    const std::filesystem::path& path() const { return path_; }
    // Closes the descriptor, reporting close()'s error (NFS reports write errors there).
    int close() {
        const int rc = ::close(fd_);
        fd_ = -1;
        return rc == 0 ? 0 : errno;
    }
    void release() { path_.clear(); }

private:
    int fd_;
    std::filesystem::path path_;
};

TemporaryFile create_temporary(const std::filesystem::path& path) {
    std::random_device entropy;
    std::mt19937_64 rng((static_cast<uint64_t>(entropy()) << 32) ^ entropy() ^ static_cast<uint64_t>(::getpid()));
    const std::filesystem::path directory = path.parent_path();
    for (int attempt = 0;; ++attempt) {
        char suffix[17];
        const uint64_t r = rng();
        for (int i = 0; i < 16; ++i) suffix[i] = "0123456789abcdef"[(r >> (4 * i)) & 15];
        suffix[16] = '\0';
        // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "." + std::string.
        std::string name(1, '.');
        name += path.filename().string();
        name += ".tmp.";
        name += suffix;
        std::filesystem::path temporary = directory / name;
        const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) return TemporaryFile(fd, std::move(temporary));
        if (errno != EEXIST || attempt >= 100) fail(errno, "cannot create a temporary file for", path);
    }
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
    if (path.filename().empty()) fail(EISDIR, "the path names a directory, not a file:", path);
    TemporaryFile temporary = create_temporary(path);

    const std::byte* next = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
        const ssize_t written = ::write(temporary.fd(), next, left);
        if (written < 0) {
            if (errno == EINTR) continue;
            fail(errno, "cannot write the temporary file for", path);
        }
        next += written;
        left -= static_cast<size_t>(written);
    }
    if (::fsync(temporary.fd()) != 0) fail(errno, "cannot fsync the temporary file for", path);
    if (const int error = temporary.close(); error != 0) fail(error, "cannot close the temporary file for", path);
    if (::rename(temporary.path().c_str(), path.c_str()) != 0) fail(errno, "cannot rename the temporary file onto", path);
    temporary.release();

    // Make the rename itself durable. Some file systems cannot fsync a directory (EINVAL): the
    // rename is then as durable as they make it.
    std::filesystem::path directory = path.parent_path();
    if (directory.empty()) directory = ".";
    const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) fail(errno, "cannot open the directory to fsync it after writing", path);
    const int rc = ::fsync(dir_fd);
    const int error = errno;
    ::close(dir_fd);
    if (rc != 0 && error != EINVAL) fail(error, "cannot fsync the directory after writing", path);
}

}  // namespace bnorm::nn
