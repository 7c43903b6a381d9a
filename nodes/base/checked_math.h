// Checked unsigned 64-bit arithmetic for sizes and offsets read from untrusted input (checkpoint
// files, archives, wire messages): an overflow is reported, never wrapped. Every bounds computation
// of a reader goes through these.
#pragma once

#include <cstdint>
#include <optional>

namespace sd {

// a + b, or nullopt when it does not fit in 64 bits.
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a * b, or nullopt when it does not fit in 64 bits.
inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b * c, or nullopt on overflow.
inline std::optional<uint64_t> CheckedMulAdd(uint64_t a, uint64_t b, uint64_t c) {
  const std::optional<uint64_t> m = CheckedMul(b, c);
  return m ? CheckedAdd(a, *m) : std::nullopt;
}

}  // namespace sd
