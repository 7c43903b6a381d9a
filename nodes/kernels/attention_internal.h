// What the fused attention's per-ISA bodies (attention_avx512.cc, attention_avx2.cc) share with its
// entry point (attention_cpu.cc). Not for other users: see attention_cpu.h.
#ifndef SD_NODES_KERNELS_ATTENTION_INTERNAL_H_
#define SD_NODES_KERNELS_ATTENTION_INTERNAL_H_

#include <cstdint>

#include "nodes/kernels/attention_cpu.h"

// The bodies are x86-64 intrinsics; elsewhere only the ATen path exists (AttentionIsaSupported says
// so), and they are not compiled.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_ATTENTION_X86 1
#endif

namespace sd::kernels::attention {

constexpr int kRows = 6;                          // query rows per register tile
constexpr int64_t kKeyStep = kAttentionKeyBlock;  // keys per step of the score kernel
constexpr int64_t kBlockRows = 48;                // query rows that share one pass over the keys
constexpr int64_t kChunkKeys = 64;                // keys per chunk of that pass
// Score rows are a little longer than a chunk so that the rows of a tile do not sit a power of two
// apart (which would map them onto the same cache sets).
constexpr int64_t kChunkStride = kChunkKeys + 16;
// Floats of scratch each thread passes to Rows().
constexpr int64_t kScratchFloats = kBlockRows * kChunkStride;

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// One head, as the kernel reads it.
struct Head {
  const float* q;  // [tq, d], row r at q + r * q_stride
  int64_t q_stride;
  const float* k_packed;  // one head of AttentionBatch::k_packed
  const float* v;         // [tk, d], row j at v + j * v_stride
  int64_t v_stride;
  float* out;  // [tq, d], row r at out + r * out_stride
  int64_t out_stride;
  int64_t tk;  // keys
  int64_t d;   // head width
  float scale;
};

// One head of AttentionBatchBf16, as the bf16 body reads it (tk and d as in Head; d even).
struct HeadBf16 {
  const uint16_t* q;  // [tq, d] bf16, row r at q + r * q_stride
  int64_t q_stride;
  const uint16_t* k_pairs;  // one head of AttentionBatchBf16::k_pairs
  const uint16_t* v_pairs;  // one head of AttentionBatchBf16::v_pairs
  float* out;               // [tq, d], row r at out + r * out_stride
  int64_t out_stride;
  int64_t tk;
  int64_t d;
  float scale;
};

// Output rows [row_begin, row_end) of one head; `scratch` holds kScratchFloats floats. One body per
// instruction set (SD_ATTENTION_X86 builds only); call only the ones the CPU has.
void RowsAvx512(const Head& head, int64_t row_begin, int64_t row_end, float* scratch);
void RowsAvx2(const Head& head, int64_t row_begin, int64_t row_end, float* scratch);
// AVX-512 BF16.
void RowsAvx512Bf16(const HeadBf16& head, int64_t row_begin, int64_t row_end, float* scratch);

}  // namespace sd::kernels::attention

#endif  // SD_NODES_KERNELS_ATTENTION_INTERNAL_H_
