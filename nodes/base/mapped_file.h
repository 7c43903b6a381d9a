// A read-only memory mapping of a whole file. Checkpoint readers hand out zero-copy views into it; the
// mapping lives as long as the last shared_ptr to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace sd {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  // Wraps bytes already in memory (fuzzers, tests); the bytes are copied.
  static std::shared_ptr<const MappedFile> FromBytes(std::string bytes, std::string name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the pages of [data, data + size) are not needed now (after their contents were converted
  // to another dtype): resident memory drops; a later read faults them in again from the file. Safe to call
  // at any time; a no-op for in-memory bytes.
  void DropPages(const void* data, uint64_t size) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::string owned_;
  std::string path_;
};

}  // namespace sd
