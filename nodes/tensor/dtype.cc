#include "nodes/tensor/dtype.h"

#include "absl/strings/str_cat.h"

namespace sd {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* safetensors;
  const char* kserve;  // "" : does not travel
  v1::DType proto;     // DTYPE_UNSPECIFIED : not in graph files
  int size;
  bool floating;
};

// In DType's order.
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", "FP64", v1::DTYPE_UNSPECIFIED, 8, true},
    {DType::kF32, "F32", "FP32", v1::FLOAT32, 4, true},
    {DType::kF16, "F16", "FP16", v1::FLOAT16, 2, true},
    {DType::kBF16, "BF16", "BF16", v1::BFLOAT16, 2, true},
    {DType::kI64, "I64", "INT64", v1::INT64, 8, false},
    {DType::kI32, "I32", "INT32", v1::DTYPE_UNSPECIFIED, 4, false},
    {DType::kI16, "I16", "", v1::DTYPE_UNSPECIFIED, 2, false},
    {DType::kI8, "I8", "", v1::DTYPE_UNSPECIFIED, 1, false},
    {DType::kU8, "U8", "UINT8", v1::UINT8, 1, false},
    {DType::kBool, "BOOL", "", v1::DTYPE_UNSPECIFIED, 1, false},
};

constexpr bool InOrder() {
  for (int i = 0; i < static_cast<int>(std::size(kDTypes)); ++i) {
    if (static_cast<int>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(InOrder(), "kDTypes is indexed by DType");

const DTypeInfo& Info(DType d) { return kDTypes[static_cast<int>(d)]; }

}  // namespace

int DTypeSize(DType dtype) { return Info(dtype).size; }
bool IsFloatingPoint(DType dtype) { return Info(dtype).floating; }
absl::string_view DTypeName(DType dtype) { return Info(dtype).safetensors; }
absl::string_view KServeName(DType dtype) { return Info(dtype).kserve; }
v1::DType ProtoDType(DType dtype) { return Info(dtype).proto; }

absl::StatusOr<DType> ParseDTypeName(absl::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.safetensors) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype '", name, "' (known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
}

std::optional<DType> DTypeFromKServe(absl::string_view datatype) {
  for (const DTypeInfo& info : kDTypes) {
    if (*info.kserve != '\0' && datatype == info.kserve) return info.dtype;
  }
  return std::nullopt;
}

std::optional<DType> DTypeFromProto(v1::DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (dtype != v1::DTYPE_UNSPECIFIED && info.proto == dtype) return info.dtype;
  }
  return std::nullopt;
}

}  // namespace sd
