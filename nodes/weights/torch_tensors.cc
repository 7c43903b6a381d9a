#include "nodes/weights/torch_tensors.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace sd {

torch::ScalarType ToTorchDType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat32;
}

absl::StatusOr<DType> FromTorchDType(torch::ScalarType dtype) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    if (ToTorchDType(d) == dtype) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("dtype ", c10::toString(dtype), " cannot be stored"));
}

torch::Tensor ViewAsTorch(const TensorView& view, std::shared_ptr<const MappedFile> file) {
  auto keep = std::make_shared<std::shared_ptr<const MappedFile>>(std::move(file));
  return torch::from_blob(
      const_cast<uint8_t*>(view.data), view.shape, view.strides,
      [keep](void*) mutable { keep.reset(); }, torch::TensorOptions().dtype(ToTorchDType(view.dtype)));
}

absl::StatusOr<torch::Tensor> LoadTensor(const Checkpoint& checkpoint, const std::string& name,
                                         std::optional<torch::ScalarType> dtype) {
  const TensorView* view = checkpoint.Find(name);
  if (!view) {
    return absl::NotFoundError(absl::StrCat(checkpoint.path(), ": no tensor '", name, "'"));
  }
  torch::Tensor t = ViewAsTorch(*view, checkpoint.file());
  const bool aligned = reinterpret_cast<uintptr_t>(view->data) % DTypeSize(view->dtype) == 0;
  if (dtype && *dtype != t.scalar_type()) return t.to(*dtype).contiguous();
  if (!aligned) return t.clone();
  return t;
}

absl::StatusOr<TensorToWrite> ToWrite(const std::string& name, const torch::Tensor& tensor) {
  if (!tensor.device().is_cpu() || !tensor.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is not a contiguous CPU tensor"));
  }
  TensorToWrite w;
  w.name = name;
  auto dtype = FromTorchDType(tensor.scalar_type());
  if (!dtype.ok()) return dtype.status();
  w.dtype = *dtype;
  w.shape = tensor.sizes().vec();
  w.data = tensor.data_ptr();
  w.nbytes = tensor.nbytes();
  return w;
}

}  // namespace sd
