// A checkpoint file of either supported format, recognised by content (magic bytes), never by extension.
// All tensors are zero-copy views into the mapped file; conversion to a compute dtype happens once, when
// a model loads them (torch_tensors.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/base/mapped_file.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

enum class CheckpointFormat { kSafetensors, kCkpt };
const char* FormatName(CheckpointFormat format);

class Checkpoint {
 public:
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::string& path);
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> FromFile(std::shared_ptr<const MappedFile> file);

  CheckpointFormat format() const { return format_; }
  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<const MappedFile>& file() const { return file_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<std::string>& ignored_entries() const { return ignored_; }
  const TensorView* Find(const std::string& name) const;
  // The shape of `name`, or nullptr when absent.
  const std::vector<int64_t>* ShapeOf(const std::string& name) const;
  // The floating-point dtype holding most parameters (what "dtype" means for a checkpoint).
  DType PredominantFloatDType() const;
  uint64_t ParameterCount() const;
  // sha256 of the file's bytes (model identity), computed from the mapping on first use.
  std::string ContentHash() const;

 private:
  Checkpoint() = default;
  CheckpointFormat format_ = CheckpointFormat::kSafetensors;
  std::shared_ptr<const MappedFile> file_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> ignored_;
  mutable std::string hash_;
};

}  // namespace sd
