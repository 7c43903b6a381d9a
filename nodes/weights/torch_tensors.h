// Checkpoint tensors as torch::Tensor: zero-copy views into the mapping when the stored dtype is the one
// wanted, one conversion at load otherwise. The only file of nodes/weights that includes LibTorch.
#pragma once

#include <torch/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

torch::ScalarType ToTorchDType(DType dtype);
absl::StatusOr<DType> FromTorchDType(torch::ScalarType dtype);

// A tensor sharing the bytes of `view`; `file` stays mapped while the tensor (or any view of it) lives.
// Read-only memory: never write through it.
torch::Tensor ViewAsTorch(const TensorView& view, std::shared_ptr<const MappedFile> file);

// Tensor `name` of `checkpoint`, converted to `dtype` when given and different. Zero-copy when no
// conversion is needed and the data is suitably aligned. NOT_FOUND names the key and the file.
absl::StatusOr<torch::Tensor> LoadTensor(const Checkpoint& checkpoint, const std::string& name,
                                         std::optional<torch::ScalarType> dtype = std::nullopt);

// Describes a CPU tensor for WriteSafetensors; `tensor` must stay alive and contiguous until written.
absl::StatusOr<TensorToWrite> ToWrite(const std::string& name, const torch::Tensor& tensor);

}  // namespace sd
