// A fused attention kernel for x86-64 CPUs with AVX-512 or AVX2 + FMA: softmax(q kᵀ · scale) v
// without materialising the score matrix. A block of query rows walks the keys a chunk at a time
// with a running softmax maximum and sum (as flash attention does), so the chunk's keys, values and
// scores stay in the core's L1 cache; the matmuls are register-blocked so that they run at the FMA
// rate, which the general BLAS does not reach for these shapes (an inner dimension of 40 and an
// output of 40 columns).
//
// Torch-free: raw f32 pointers.
#ifndef SD_NODES_KERNELS_ATTENTION_CPU_H_
#define SD_NODES_KERNELS_ATTENTION_CPU_H_

#include <cstdint>
#include <optional>

namespace sd::kernels {

// The instruction sets the kernel has a body for (one translation unit each, chosen at run time).
enum class AttentionIsa { kNone, kAvx2, kAvx512 };

// True when this CPU can run the body for `isa` (kAvx512: AVX-512 F/DQ/BW/VL; kAvx2: AVX2 + FMA).
bool AttentionIsaSupported(AttentionIsa isa);
// "avx512", "avx2", "none".
const char* AttentionIsaName(AttentionIsa isa);
// The body MultiHeadAttention runs: the best this CPU supports, unless SD_ATTENTION_ISA=avx2|none
// lowers it or SetAttentionIsa chose one.
AttentionIsa ActiveAttentionIsa();
// Forces a body (tests and benchmarks run every body the CPU has); nullopt, or an ISA this CPU
// lacks, returns to the automatic choice.
void SetAttentionIsa(std::optional<AttentionIsa> isa);

// True when ActiveAttentionIsa() is not kNone.
bool FusedAttentionAvailable();

// The largest head width the kernel takes; wider heads (the VAE's single 512-wide head) read K and
// V from memory once per few query rows, which a BLAS matmul does better.
inline constexpr int64_t kFusedAttentionMaxHeadDim = 160;

// Keys per block of the packed key layout (see AttentionBatch::k_packed).
inline constexpr int64_t kAttentionKeyBlock = 32;

// Every head of a batch: out[b, r, h] = Σ_j softmax_j(q[b, r, h]·k[b, j, h] · scale) v[b, h, j],
// with the softmax taken in f32 after subtracting the row maximum, like the reference. Runs on
// OpenMP threads (the runtime ATen's intra-op parallelism uses; pass at::get_num_threads() as
// `threads`), split by head and block of query rows. Requires FusedAttentionAvailable().
struct AttentionBatch {
  const float* q;  // [batch, tq, heads * d]
  // [batch, heads] packed heads: within a head, feature i of key j at
  // (j / kAttentionKeyBlock) * d * kAttentionKeyBlock + i * kAttentionKeyBlock + j %
  // kAttentionKeyBlock, the last block zero-padded. One step of the score kernel then reads one
  // contiguous block.
  const float* k_packed;
  // [batch, heads, tk, d]: each head's values contiguous (10% faster than reading them out of the
  // interleaved rows).
  const float* v;
  float* out;                       // [batch, tq, heads * d]
  int64_t batch, heads, tq, tk, d;  // d: 1..kFusedAttentionMaxHeadDim
  float scale;
  int threads = 0;  // OpenMP threads to use; 0: OpenMP's default
};
void MultiHeadAttention(const AttentionBatch& args);

// The same attention over bf16 queries, keys and values (the network's activations in bf16
// compute), with vdpbf16ps products: scores, softmax and output in f32, the softmax weights rounded
// to bf16 for the values' products (each row's rounded weights are what it is normalised by). On
// CPUs with AVX-512 BF16 only, and only when the AVX-512 body is the active one
// (SD_ATTENTION_ISA=avx2 or SetAttentionIsa turn it off with it), unless SD_ATTENTION_BF16=0.
bool Bf16AttentionAvailable();

// What reports name: the active body, "+bf16" where bf16 activations take the bf16 one
// ("avx512+bf16", "avx512", "avx2", "none").
const char* AttentionKernelName();

struct AttentionBatchBf16 {
  const uint16_t* q;  // [batch, tq, heads * d] bf16 bits
  // [batch, heads, ceil(tk / kAttentionKeyBlock), d / 2, kAttentionKeyBlock, 2]: per block of 32
  // keys, per pair of features, the 32 keys' two features; padded keys zero. 64-byte aligned.
  const uint16_t* k_pairs;
  // [batch, heads, ceil(tk / 2), d, 2]: per pair of keys, per feature, the two keys' values; a
  // padded key (odd tk) zero.
  const uint16_t* v_pairs;
  float* out;                       // [batch, tq, heads * d]
  int64_t batch, heads, tq, tk, d;  // d: even, 2..kFusedAttentionMaxHeadDim
  float scale;
  int threads = 0;
};
// Requires Bf16AttentionAvailable().
void MultiHeadAttentionBf16(const AttentionBatchBf16& args);

// Multiply-add FLOPs done by MultiHeadAttention(Bf16) since the program started (2 per
// multiply-add, of q kᵀ and of the weighted values): the benchmark adds them to the FLOPs its
// operator profiler counts.
uint64_t FusedAttentionFlops();

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_ATTENTION_CPU_H_
