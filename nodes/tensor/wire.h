// Values on the wire: the tensors of a KServe v2 (Open Inference Protocol) request or response, as
// datatype name + shape + raw little-endian row-major bytes. Scalars travel as one-element tensors
// (INT -> INT64, FLOAT -> FP64, STRING -> BYTES with the protocol's 4-byte length prefix). Float
// tensors may travel as FP16 or BF16 to halve the bytes ("wire dtype"); they are widened back to
// f32 on arrival.
//
// Everything read from the wire is checked before use: datatype against the port, rank, every
// dimension, the byte count against the shape, and (for float tensors) that every value is finite.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/ops/node.h"

namespace sd {

enum class WireDType { kF32, kF16, kBF16 };

// "f32" | "fp32" | "float32", "f16" | "fp16" | "float16", "bf16" | "bfloat16".
absl::StatusOr<WireDType> ParseWireDType(const std::string& text);
const char* WireDTypeName(WireDType d);  // "FP32", "FP16", "BF16": the KServe datatype

struct WireTensor {
  std::string datatype;  // KServe name: FP32, FP16, BF16, FP64, INT64, INT32, UINT8, BYTES
  std::vector<int64_t> shape;
  std::string raw;
};

// Encodes `v`; float32 tensors travel in `wire`.
absl::StatusOr<WireTensor> EncodeValue(const Value& v, WireDType wire = WireDType::kF32);

// Decodes a tensor arriving for a port of type `type`. `what` names it in errors ("input
// 'latents'").
absl::StatusOr<Value> DecodeValue(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const v1::PortType& type,
                                  const std::string& what);

// The KServe datatype a port of `type` is described with in model metadata.
std::string WireDatatypeOf(const v1::PortType& type);

// The largest gRPC message (request or response) a worker and a worker pool accept by default: the
// same on both sides, so a call that fits one fits the other (--max-message-mb changes either).
inline constexpr int kDefaultMaxMessageMb = 64;

// Trailing metadata that tells a caller how to retry a failed call. `busy` on RESOURCE_EXHAUSTED:
// only the worker's queue is full; the call is fine and may be retried after a pause (any other
// RESOURCE_EXHAUSTED is permanent for the call).
inline constexpr char kRetryMetadataKey[] = "sd-retry";
inline constexpr char kBusyMetadataValue[] = "busy";
// On FAILED_PRECONDITION: the worker's copy of the requested model is not the bytes the caller
// expects (request parameter `sha256`): that worker is out, others may have the right file.
inline constexpr char kModelMismatchMetadataValue[] = "model-mismatch";

}  // namespace sd
