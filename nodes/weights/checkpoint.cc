#include "nodes/weights/checkpoint.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "nodes/base/sha256.h"
#include "nodes/base/status_macros.h"
#include "nodes/weights/ckpt.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/zip_reader.h"

namespace sd {

const char* FormatName(CheckpointFormat format) {
  return format == CheckpointFormat::kCkpt ? "ckpt" : "safetensors";
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::Open(path));
  return FromFile(std::move(file));
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::FromFile(
    std::shared_ptr<const MappedFile> file) {
  std::shared_ptr<Checkpoint> c(new Checkpoint());
  const uint8_t* d = file->data();
  const uint64_t n = file->size();
  if (LooksLikeZip(d, n)) {
    SD_ASSIGN_OR_RETURN(CkptContents ck, ParseCkpt(file));
    c->format_ = CheckpointFormat::kCkpt;
    c->tensors_ = std::move(ck.tensors);
    c->ignored_ = std::move(ck.ignored);
  } else if (n >= 9 && d[8] == '{') {
    SD_ASSIGN_OR_RETURN(SafetensorsContents st, ParseSafetensors(file));
    c->format_ = CheckpointFormat::kSafetensors;
    c->tensors_ = std::move(st.tensors);
    c->metadata_ = std::move(st.metadata);
  } else if (n >= 2 && d[0] == 0x80 && d[1] <= 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": a legacy (pre-1.6) torch.save file; only the zip format is read. "
                      "Re-save it with a current PyTorch, or convert it to .safetensors"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": not a checkpoint (neither safetensors nor a PyTorch zip archive)"));
  }
  for (size_t i = 0; i < c->tensors_.size(); ++i) c->index_[c->tensors_[i].name] = i;
  c->file_ = std::move(file);
  return std::shared_ptr<const Checkpoint>(std::move(c));
}

const TensorView* Checkpoint::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const std::vector<int64_t>* Checkpoint::ShapeOf(const std::string& name) const {
  const TensorView* t = Find(name);
  return t ? &t->shape : nullptr;
}

DType Checkpoint::PredominantFloatDType() const {
  std::map<DType, uint64_t> count;
  for (const TensorView& t : tensors_) {
    if (IsFloatingPoint(t.dtype)) count[t.dtype] += t.numel;
  }
  DType best = DType::kF32;
  uint64_t most = 0;
  for (const auto& [dtype, n] : count) {
    if (n > most) {
      most = n;
      best = dtype;
    }
  }
  return best;
}

uint64_t Checkpoint::ParameterCount() const {
  uint64_t n = 0;
  for (const TensorView& t : tensors_) n += t.numel;
  return n;
}

std::string Checkpoint::ContentHash() const {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (hash_.empty()) {
    // A chunk at a time, each chunk's pages let go once hashed: otherwise the whole file would be
    // resident in this process (and counted in its peak) before a single weight is loaded. The
    // page cache keeps them, so the weights that load later read them back cheaply.
    constexpr uint64_t kChunk = uint64_t{64} << 20;
    Sha256 sha;
    for (uint64_t at = 0; at < file_->size(); at += kChunk) {
      const uint64_t n = std::min(kChunk, file_->size() - at);
      sha.Update(file_->data() + at, n);
      file_->DropPages(file_->data() + at, n);
    }
    hash_ = sha.FinishHex();
  }
  return hash_;
}

}  // namespace sd
