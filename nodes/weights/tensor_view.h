// What a checkpoint holds, seen without LibTorch: element types, and zero-copy views of tensors inside a
// mapped file. The parsers (safetensors, .ckpt) produce these after validating every size and offset;
// torch_tensors.h turns them into torch::Tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nodes/base/mapped_file.h"
#include "nodes/tensor/dtype.h"

namespace sd {

// A tensor stored in a file. `data` points at element [0,...,0]; strides are in elements (row-major
// contiguous for safetensors; whatever torch.save stored for .ckpt). The parser has checked that every
// element reachable through shape/strides lies inside the file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  const uint8_t* data = nullptr;
  uint64_t numel = 0;

  bool IsContiguous() const;
  uint64_t nbytes() const { return numel * static_cast<uint64_t>(DTypeSize(dtype)); }
};

// Row-major strides for `shape`.
std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape);

// Product of `shape` with overflow and sign checks; `what` names the tensor in the error.
absl::StatusOr<uint64_t> CheckedNumel(const std::vector<int64_t>& shape, absl::string_view what);

// "[320, 4, 3, 3]"
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace sd
