// Batched f32 matrix products on a CPU by oneDNN's matmul primitive: c[i] = a[i] · b[i] for i in
// [0, batch), a [batch][m][k], b [batch][k][n], c [batch][m][n], all row-major and dense. One
// primitive call for the whole batch, threaded by oneDNN over the batch and the matrices, with the
// JIT kernels of the CPU at hand (AVX-512 where there is AVX-512, whatever OpenBLAS's
// OPENBLAS_CORETYPE makes the BLAS run). The Winograd convolution's 36 products per band go through
// it where linear layers run through oneDNN (linear_cpu.h). Torch-free.
#pragma once

#include <cstdint>

namespace sd::nn {

// Whether this build has oneDNN (SD_WITH_ONEDNN); without it OneDnnBatchedMatmul is never called.
bool HaveOneDnnBatchedMatmul();

// c = a · b per batch entry, as above. Throws std::runtime_error naming the shapes when oneDNN
// refuses them (or when the build has no oneDNN).
void OneDnnBatchedMatmul(const float* a, const float* b, float* c, int64_t batch, int64_t m,
                         int64_t k, int64_t n);
// The FLOPs of all OneDnnBatchedMatmul calls of this process so far (2 m k n per product): not
// ATen operators, so sd-bench's profile adds them itself.
uint64_t OneDnnBatchedMatmulFlops();

}  // namespace sd::nn
