// libFuzzer target: the wire decoder's checks (CheckWireValue) on arbitrary requests. The input is
// a datatype, a port, a shape and the raw bytes; whatever the checks accept is read to its last
// payload byte, so AddressSanitizer catches a layout that promises more bytes than arrived.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nodes/tensor/wire_check.h"

namespace {

const char* const kDatatypes[] = {"FP32",  "FP16",  "BF16",  "FP64", "INT64",
                                  "INT32", "UINT8", "BYTES", "FP8"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const std::string datatype = kDatatypes[data[0] % (sizeof(kDatatypes) / sizeof(kDatatypes[0]))];
  sd::WireExpectation expect;
  expect.kind = static_cast<sd::WireExpectation::Kind>(data[1] % 4);
  expect.elements = static_cast<sd::WireExpectation::Elements>(data[2] % 3);
  expect.rank = static_cast<int>(data[3] % 10) - 1;  // -1 .. 8
  const size_t rank = data[4] % 10;
  size_t pos = 5;
  std::vector<int64_t> shape;
  for (size_t i = 0; i < rank && pos + 8 <= size; ++i, pos += 8) {
    int64_t d;
    std::memcpy(&d, data + pos, 8);
    // Mostly small dimensions (so that accepted values happen), sometimes anything at all.
    shape.push_back((data[pos] & 1) ? d : (d & 0xff) - 2);
  }
  const std::string raw(reinterpret_cast<const char*>(data + pos), size - pos);
  auto layout = sd::CheckWireValue(datatype, shape, raw, expect, "fuzz input");
  if (!layout.ok()) return 0;
  const uint64_t bytes = layout->numel * layout->element_size;
  if (layout->payload_offset + bytes != raw.size())
    std::abort();  // the promise the decoder relies on
  volatile uint8_t sink = 0;
  for (uint64_t i = 0; i < bytes; ++i)
    sink ^= static_cast<uint8_t>(raw[layout->payload_offset + i]);
  return 0;
}
