// libFuzzer target: a .ckpt (zip + restricted unpickler + storage resolution) on arbitrary bytes. Every
// element reachable through each accepted tensor's shape and strides is read, so AddressSanitizer
// catches any view that escapes its storage.
#include <cstddef>
#include <cstdint>
#include <string>

#include "nodes/weights/checkpoint.h"

namespace {

void Touch(const sd::TensorView& t, size_t dim, const uint8_t* p, volatile uint8_t& sink) {
  if (dim == t.shape.size()) {
    for (int b = 0; b < sd::DTypeSize(t.dtype); ++b) sink ^= p[b];
    return;
  }
  for (int64_t i = 0; i < t.shape[dim]; ++i) Touch(t, dim + 1, p + i * t.strides[dim] * sd::DTypeSize(t.dtype), sink);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = sd::MappedFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.ckpt");
  auto ckpt = sd::Checkpoint::FromFile(file);
  if (!ckpt.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const sd::TensorView& t : (*ckpt)->tensors()) {
    if (t.numel <= (1u << 20)) Touch(t, 0, t.data, sink);
  }
  return 0;
}
