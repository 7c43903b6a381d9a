#include "nodes/kernels/attention_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "nodes/kernels/attention_internal.h"

namespace sd::kernels {
namespace {

std::atomic<uint64_t> g_attention_flops{0};
std::atomic<int> g_isa_override{-1};  // SetAttentionIsa, or -1

using RowsFn = void (*)(const attention::Head&, int64_t, int64_t, float*);

RowsFn BodyFor(AttentionIsa isa) {
#ifdef SD_ATTENTION_X86
  switch (isa) {
    case AttentionIsa::kAvx512:
      return &attention::RowsAvx512;
    case AttentionIsa::kAvx2:
      return &attention::RowsAvx2;
    case AttentionIsa::kNone:
      break;
  }
#endif
  return nullptr;
}

// The best body this CPU runs, lowered by SD_ATTENTION_ISA=avx2|none (for comparisons).
AttentionIsa DetectedIsa() {
  static const AttentionIsa isa = [] {
    AttentionIsa best = AttentionIsa::kNone;
    for (AttentionIsa candidate : {AttentionIsa::kAvx2, AttentionIsa::kAvx512}) {
      if (AttentionIsaSupported(candidate)) best = candidate;
    }
    const char* env = std::getenv("SD_ATTENTION_ISA");
    if (env != nullptr && !std::strcmp(env, "none")) return AttentionIsa::kNone;
    if (env != nullptr && !std::strcmp(env, "avx2") && best == AttentionIsa::kAvx512) {
      return AttentionIsa::kAvx2;
    }
    return best;
  }();
  return isa;
}

}  // namespace

bool AttentionIsaSupported(AttentionIsa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case AttentionIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
    case AttentionIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case AttentionIsa::kNone:
      return true;
  }
#endif
  return isa == AttentionIsa::kNone;
}

const char* AttentionIsaName(AttentionIsa isa) {
  switch (isa) {
    case AttentionIsa::kAvx512:
      return "avx512";
    case AttentionIsa::kAvx2:
      return "avx2";
    case AttentionIsa::kNone:
      break;
  }
  return "none";
}

void SetAttentionIsa(std::optional<AttentionIsa> isa) {
  g_isa_override = isa && AttentionIsaSupported(*isa) ? static_cast<int>(*isa) : -1;
}

AttentionIsa ActiveAttentionIsa() {
  const int set = g_isa_override.load();
  return set >= 0 ? static_cast<AttentionIsa>(set) : DetectedIsa();
}

bool FusedAttentionAvailable() { return ActiveAttentionIsa() != AttentionIsa::kNone; }

uint64_t FusedAttentionFlops() { return g_attention_flops.load(std::memory_order_relaxed); }

namespace {

// Runs rows(head(b, h), rows...) for every head and block of query rows on `threads` OpenMP
// threads. Tasks are blocks of query rows of one head, so both cores have work at batch 1 too.
template <class MakeHead, class RowsBody>
void ForEachRowBlock(int64_t batch, int64_t heads, int64_t tq, int threads, MakeHead head,
                     RowsBody rows) {
  constexpr int64_t kRowsPerTask = 2 * attention::kBlockRows;
  const int64_t blocks = (tq + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t tasks = batch * heads * blocks;
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
  {
    std::vector<float> scratch(attention::kScratchFloats);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / blocks, block = task % blocks;
      rows(head(bh / heads, bh % heads), block * kRowsPerTask,
           std::min(tq, (block + 1) * kRowsPerTask), scratch.data());
    }
  }
}

void CountFlops(int64_t batch, int64_t heads, int64_t tq, int64_t tk, int64_t d) {
  g_attention_flops.fetch_add(static_cast<uint64_t>(4 * batch * heads * tq * tk * d),
                              std::memory_order_relaxed);
}

}  // namespace

void MultiHeadAttention(const AttentionBatch& a) {
  const RowsFn rows = BodyFor(ActiveAttentionIsa());
  if (rows == nullptr) std::abort();  // callers check FusedAttentionAvailable()
  CountFlops(a.batch, a.heads, a.tq, a.tk, a.d);
  const int64_t width = a.heads * a.d, keys_padded = attention::RoundUp(a.tk, kAttentionKeyBlock);
  auto head = [&](int64_t bi, int64_t hi) {
    const int64_t bh = bi * a.heads + hi;
    return attention::Head{a.q + bi * a.tq * width + hi * a.d,
                           width,
                           a.k_packed + bh * keys_padded * a.d,
                           a.v + bh * a.tk * a.d,
                           a.d,
                           a.out + bi * a.tq * width + hi * a.d,
                           width,
                           a.tk,
                           a.d,
                           a.scale};
  };
  ForEachRowBlock(a.batch, a.heads, a.tq, a.threads, head, rows);
}

bool Bf16AttentionAvailable() {
#ifdef SD_ATTENTION_X86
  static const bool cpu = [] {
    __builtin_cpu_init();
    const char* env = std::getenv("SD_ATTENTION_BF16");
    return __builtin_cpu_supports("avx512bf16") && (env == nullptr || std::strcmp(env, "0") != 0);
  }();
  return cpu && ActiveAttentionIsa() == AttentionIsa::kAvx512;
#else
  return false;
#endif
}

const char* AttentionKernelName() {
  return Bf16AttentionAvailable() ? "avx512+bf16" : AttentionIsaName(ActiveAttentionIsa());
}

void MultiHeadAttentionBf16(const AttentionBatchBf16& a) {
#ifdef SD_ATTENTION_X86
  if (!Bf16AttentionAvailable() || a.d % 2 != 0) std::abort();  // callers check
  CountFlops(a.batch, a.heads, a.tq, a.tk, a.d);
  const int64_t width = a.heads * a.d;
  const int64_t keys_padded = attention::RoundUp(a.tk, kAttentionKeyBlock);
  const int64_t keys_even = attention::RoundUp(a.tk, 2);
  auto head = [&](int64_t bi, int64_t hi) {
    const int64_t bh = bi * a.heads + hi;
    return attention::HeadBf16{a.q + bi * a.tq * width + hi * a.d,
                               width,
                               a.k_pairs + bh * keys_padded * a.d,
                               a.v_pairs + bh * keys_even * a.d,
                               a.out + bi * a.tq * width + hi * a.d,
                               width,
                               a.tk,
                               a.d,
                               a.scale};
  };
  ForEachRowBlock(a.batch, a.heads, a.tq, a.threads, head, &attention::RowsAvx512Bf16);
#else
  (void)a;
  std::abort();
#endif
}

}  // namespace sd::kernels
