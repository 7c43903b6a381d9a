// SHA-256 (FIPS 180-4), streamed. Used for model identity: workers report a checkpoint's content hash and the
// host refuses to mix workers that disagree.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace sd {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  std::array<uint8_t, 32> Finish();
  // Lower-case hex of Finish().
  std::string FinishHex();

  // Whether this CPU's SHA extensions are used (about 8x faster on multi-GB checkpoints).
  static bool HardwareAccelerated();
  // Tests: compute with the portable code even where the SHA extensions exist.
  void ForcePortable() { portable_ = true; }

 private:
  void Blocks(const uint8_t* p, size_t count);
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
  bool portable_ = false;
};

// Hex SHA-256 of a whole file, read in chunks (never all at once).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace sd
