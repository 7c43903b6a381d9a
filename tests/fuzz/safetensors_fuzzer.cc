// libFuzzer target: the safetensors reader on arbitrary bytes. Every byte of every tensor it accepts is
// read, so AddressSanitizer catches any view that escapes the file.
#include <cstddef>
#include <cstdint>
#include <string>

#include "nodes/weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = sd::MappedFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  auto parsed = sd::ParseSafetensors(file);
  if (!parsed.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const sd::TensorView& t : parsed->tensors) {
    for (uint64_t i = 0; i < t.nbytes(); ++i) sink ^= t.data[i];
  }
  return 0;
}
