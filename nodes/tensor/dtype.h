// Element types: the one table. Every spelling of a tensor's element type the project meets maps
// through here: the safetensors name ("BF16"), the KServe v2 datatype on the wire ("BF16"), the
// graph file's sd.v1.DType (BFLOAT16), the byte size. The LibTorch type is one function away
// (ToTorchDType / FromTorchDType in nodes/weights/torch_tensors.h). Torch-free.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/sd/v1/tensor.pb.h"

namespace sd {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int DTypeSize(DType dtype);
bool IsFloatingPoint(DType dtype);

// The safetensors spelling: "F32", "BF16", "I64", "BOOL", ...
absl::string_view DTypeName(DType dtype);
// Parses the safetensors spelling; INVALID_ARGUMENT for anything else.
absl::StatusOr<DType> ParseDTypeName(absl::string_view name);

// The KServe v2 datatype of the types that travel ("FP32", "FP16", "BF16", "FP64", "INT64",
// "INT32", "UINT8"); "" for the others.
absl::string_view KServeName(DType dtype);
// The type of a KServe datatype that travels; nullopt for others (and for BYTES, which is no
// tensor).
std::optional<DType> DTypeFromKServe(absl::string_view datatype);

// The graph files' element type (DTYPE_UNSPECIFIED where they have none).
v1::DType ProtoDType(DType dtype);
std::optional<DType> DTypeFromProto(v1::DType dtype);

}  // namespace sd
