// A strict reader for the zip archives torch.save writes (since PyTorch 1.6): stored (uncompressed)
// records, optionally ZIP64. Only what a checkpoint needs; everything else is refused with an error.
// Records are views into the mapped file, never copies.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nodes/base/mapped_file.h"

namespace sd {

struct ZipRecord {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

class ZipArchive {
 public:
  // Parses the central directory and every local header. Refuses compressed or encrypted records,
  // multi-disk archives, names that are absolute or contain "..", "\\" or NUL, duplicate names,
  // and any size or offset outside the file.
  static absl::StatusOr<ZipArchive> Open(std::shared_ptr<const MappedFile> file);

  const std::map<std::string, ZipRecord>& records() const { return records_; }
  const ZipRecord* Find(const std::string& name) const;
  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<const MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::map<std::string, ZipRecord> records_;
};

// True when the bytes begin with a zip local-file header ("PK\3\4").
bool LooksLikeZip(const uint8_t* data, uint64_t size);

uint32_t Crc32(const uint8_t* data, uint64_t size);

}  // namespace sd
