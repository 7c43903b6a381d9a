// A fused attention kernel for x86-64 CPUs with AVX-512: softmax(q kᵀ · scale) v for a block of
// query rows of one head, without materialising the score matrix. Scores for a few query rows at a
// time stay in a small buffer in the core's cache; the matmuls are register-blocked so that they
// run at the FMA rate, which the general BLAS does not reach for these shapes (an inner dimension
// of 40 and an output of 40 columns).
//
// Torch-free: raw f32 pointers with row strides.
#ifndef SD_NODES_KERNELS_ATTENTION_CPU_H_
#define SD_NODES_KERNELS_ATTENTION_CPU_H_

#include <cstdint>

namespace sd::kernels {

// True when this CPU can run AttentionRows (AVX-512 F/DQ/BW/VL) and it was compiled in.
bool FusedAttentionAvailable();

// The largest head width the kernel takes; wider heads (the VAE's single 512-wide head) read K and
// V from memory once per few query rows, which a BLAS matmul does better.
inline constexpr int64_t kFusedAttentionMaxHeadDim = 160;

// Keys per block of the packed key layout (see AttentionHead::k_packed).
inline constexpr int64_t kAttentionKeyBlock = 32;

// The scratch AttentionRows needs, in floats.
int64_t AttentionScratchFloats();

struct AttentionHead {
  const float* q;  // [tq, d], row r at q + r * q_stride
  int64_t q_stride;
  // Keys packed in blocks of kAttentionKeyBlock: feature i of key j at
  // k_packed[(j / kAttentionKeyBlock) * d * kAttentionKeyBlock + i * kAttentionKeyBlock + j %
  // kAttentionKeyBlock], the last block zero-padded. One step of the score kernel then reads one
  // contiguous block.
  const float* k_packed;
  const float* v;  // [tk, d], row j at v + j * v_stride
  int64_t v_stride;
  float* out;  // [tq, d], row r at out + r * out_stride
  int64_t out_stride;
  int64_t tk;  // keys
  int64_t d;   // head width, 1..kFusedAttentionMaxHeadDim
  float scale;
};

// Computes output rows [row_begin, row_end) of one head: out[r] = Σ_j softmax_j(q[r]·k[j] · scale)
// v[j], with the softmax taken in f32 after subtracting the row maximum, like the reference.
// `scratch` holds AttentionScratchFloats() floats. Requires FusedAttentionAvailable().
void AttentionRows(const AttentionHead& head, int64_t row_begin, int64_t row_end, float* scratch);

// Every head of a batch: q and out are [batch, tq, heads * d], v is [batch, heads, tk, d] (each head's
// values contiguous: 10% faster than reading them out of the interleaved rows), k_packed is [batch, heads]
// packed heads (see AttentionHead). Runs on OpenMP threads (the runtime ATen's intra-op parallelism
// uses; pass at::get_num_threads() as `threads`), split by head and block of query rows.
struct AttentionBatch {
  const float* q;
  const float* k_packed;
  const float* v;
  float* out;
  int64_t batch, heads, tq, tk, d;
  float scale;
  int threads = 0;  // OpenMP threads to use; 0: OpenMP's default
};
void MultiHeadAttention(const AttentionBatch& args);

// Multiply-add FLOPs done by MultiHeadAttention since the program started (2 per multiply-add, of q
// kᵀ and of the weighted values): the benchmark adds them to the FLOPs its operator profiler
// counts.
uint64_t FusedAttentionFlops();

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_ATTENTION_CPU_H_
