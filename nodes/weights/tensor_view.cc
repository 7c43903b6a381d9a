#include "nodes/weights/tensor_view.h"

#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/checked_math.h"

namespace sd {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  int size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeInfo& Info(DType d) { return kDTypes[static_cast<int>(d)]; }

}  // namespace

int DTypeSize(DType dtype) { return Info(dtype).size; }
absl::string_view DTypeName(DType dtype) { return Info(dtype).name; }

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kF16 ||
         dtype == DType::kBF16;
}

absl::StatusOr<DType> ParseDTypeName(absl::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype '", name, "' (known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
}

std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * std::max<int64_t>(shape[i + 1], 1);
  }
  return strides;
}

bool TensorView::IsContiguous() const {
  if (numel <= 1) return true;
  std::vector<int64_t> want = ContiguousStrides(shape);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != 1 && strides[i] != want[i]) return false;
  }
  return true;
}

absl::StatusOr<uint64_t> CheckedNumel(const std::vector<int64_t>& shape, absl::string_view what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in shape ", ShapeString(shape)));
    }
    // At most 2^60 elements, so that a byte count (up to 16 bytes an element) fits in 64 bits too.
    const std::optional<uint64_t> product = CheckedMul(n, static_cast<uint64_t>(d));
    if (!product || *product > (uint64_t{1} << 60)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape ", ShapeString(shape), " overflows"));
    }
    n = *product;
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace sd
