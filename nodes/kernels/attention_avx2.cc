// The fused attention's AVX2 body: attention_kernel.inc over VecAvx2.
#include <algorithm>
#include <cmath>
#include <limits>

#include "nodes/kernels/attention_internal.h"

#ifdef SD_ATTENTION_X86
#include "nodes/kernels/simd_avx2.h"

namespace sd::kernels::attention {
namespace {

using V = VecAvx2;
#define SD_KERNEL_TARGET SD_AVX2_TARGET
#include "nodes/kernels/attention_kernel.inc"
#undef SD_KERNEL_TARGET

}  // namespace

SD_AVX2_TARGET void RowsAvx2(const Head& head, int64_t row_begin, int64_t row_end, float* scratch) {
  Rows<F32Tiles>(head, row_begin, row_end, scratch);
}

}  // namespace sd::kernels::attention

#endif  // SD_ATTENTION_X86
