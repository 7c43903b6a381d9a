// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}), then the
// data. The reader validates everything before any tensor is handed out.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nodes/base/mapped_file.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

// The safetensors reference implementation's limit; larger headers are refused before parsing.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsContents {
  std::shared_ptr<const MappedFile> file;
  std::vector<TensorView> tensors;  // in file order of their data
  std::map<std::string, std::string> metadata;
};

// Validates the header (length, JSON, dtype names, shapes, offsets in bounds, sizes matching shapes, no
// overlaps or holes, total size) and returns zero-copy views into `file`.
absl::StatusOr<SafetensorsContents> ParseSafetensors(std::shared_ptr<const MappedFile> file);
absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path);

// One tensor to write: its bytes are row-major contiguous, `nbytes` = numel * dtype size. Either `data`
// points at them, or `fill` writes them into a buffer of `nbytes` when the writer reaches this tensor (so
// a whole model never has to be in memory at once).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
  std::function<void(void* dst)> fill;
};

// Writes a safetensors file (via a temporary file renamed into place, so a crash never leaves a partial
// file under `path`). Names must be unique and not "__metadata__".
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace sd
