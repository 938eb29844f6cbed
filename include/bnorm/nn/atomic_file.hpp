// atomic_file.hpp: write a file so that readers (and a crash) see either its old content or the
// complete new content, never a part.
//
//   std::string text = summary.dump();
//   bnorm::nn::write_file_atomically("runs/summary.json", std::as_bytes(std::span(text)));
//   // on return the new content is durable (file and directory fsync'ed); on a throw the old
//   // file, if any, is untouched and no temporary file is left behind
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>

namespace bnorm::nn {

// Writes `bytes` to a new file in path's directory (a unique name: ".<filename>.tmp.<random>"),
// fsyncs it, renames it over `path`, and fsyncs the directory. The new file's mode is 0666 less
// the umask. Throws std::system_error (its code the errno; the message names the path and the
// step that failed) after removing the temporary file.
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);

}  // namespace bnorm::nn
