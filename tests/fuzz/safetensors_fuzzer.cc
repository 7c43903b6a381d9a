// libFuzzer target: the safetensors reader on arbitrary bytes. Every byte of every tensor it
// accepts is read, so AddressSanitizer catches any view that escapes the file; an accepted file's
// names and shapes also go through the SD and ControlNet layout readers (key tables, diffusers
// names, detection).
#include <cstddef>
#include <cstdint>
#include <string>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = sd::MappedFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  auto parsed = sd::ParseSafetensors(file);
  if (!parsed.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const sd::TensorView& t : parsed->tensors) {
    for (uint64_t i = 0; i < t.nbytes(); ++i) sink ^= t.data[i];
  }
  auto ckpt = sd::Checkpoint::FromFile(file);
  if (!ckpt.ok()) return 0;
  (void)sd::ReadControlNetLayout(**ckpt);
  (void)sd::DetectConfig([&](const std::string& n) { return (*ckpt)->ShapeOf(n); });
  return 0;
}
