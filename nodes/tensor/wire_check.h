// The checks a value arriving on the wire passes before anything reads its bytes: datatype against
// the port, rank, every dimension, the byte count against the shape. Torch-free (the parsers' fuzz
// build runs it under AddressSanitizer); nodes/tensor/wire.cc turns what passes into values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

// What a port takes, in wire terms.
struct WireExpectation {
  enum class Kind { kString, kInt, kFloat, kTensor };
  enum class Elements { kFloat, kInt64, kUInt8 };  // kTensor: what the port computes with
  Kind kind = Kind::kTensor;
  Elements elements = Elements::kFloat;
  int rank = -1;            // kTensor: -1 for any rank
  std::string description;  // for messages: "float32 tensor of rank 4"
};

// Where the payload lies once checked.
struct WireLayout {
  std::string datatype;       // FP32, FP16, BF16, FP64, INT64, INT32, UINT8 or BYTES
  size_t element_size = 0;    // bytes per element (1 for BYTES)
  uint64_t numel = 0;         // elements; numel * element_size bytes start at payload_offset
  size_t payload_offset = 0;  // 4 for BYTES (its length prefix), else 0
};

// The byte size of a KServe datatype's element, or 0 for an unknown one.
size_t WireElementSize(const std::string& datatype);

// INVALID_ARGUMENT naming `what` unless `raw` holds exactly a `datatype` value of `shape` that a
// port expecting `expect` takes. On success, layout.numel * layout.element_size == raw.size() -
// layout.payload_offset.
absl::StatusOr<WireLayout> CheckWireValue(const std::string& datatype,
                                          const std::vector<int64_t>& shape, const std::string& raw,
                                          const WireExpectation& expect, const std::string& what);

}  // namespace sd
