// Batched matrix products that autograd differentiates, for training: c[i] = a[i] · b[i], a [N, m,
// k], b [N, k, n]. LibTorch 1.13's CPU bmm without MKL runs one BLAS call per batch entry, and the
// attention of a small network in training is thousands of tiny products per step (48 pictures x 8
// heads, 64 x 8 · 8 x 64): 40-60% of a demo-model training step went to that loop. On f32 CPU
// tensors with oneDNN (SD_WITH_ONEDNN) this is one oneDNN call for the whole batch, forward and
// backward; anything else takes torch::bmm.
#pragma once

#include <ATen/core/Tensor.h>

namespace sd::nn {

at::Tensor DifferentiableBmm(const at::Tensor& a, const at::Tensor& b);

}  // namespace sd::nn
