// f32 convolutions on a CPU by oneDNN on memory exactly as it lies: NCHW input, OIHW weights,
// NCHW output, no reorder of any of them. LibTorch's convolution hands oneDNN its weights to be
// reordered into a blocked layout on every call (a read and a write of all of a layer's weights,
// 59 MB for one of the UNet's 1280-channel layers), which costs more than the arithmetic on small
// images; on plain weights oneDNN picks its im2col + JIT sgemm kernel ("gemm:jit"), which reads
// them as they are. plain_conv.h decides where that pays. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace sd::nn {

struct OneDnnConvShape {
  int64_t batch = 1, in = 0, out = 0, height = 0, width = 0;
  int64_t kernel = 3, stride = 1, padding = 1;
  bool bias = true;
  // The OpenMP threads the call runs on (at::get_num_threads()): oneDNN sizes a kernel's scratch
  // space for the threads it is made with, and running it on more overruns that space, so kernels
  // are kept per thread count (a process may run threads of 1 and of 2 at once).
  int64_t threads = 1;
  int64_t OutHeight() const { return (height + 2 * padding - kernel) / stride + 1; }
  int64_t OutWidth() const { return (width + 2 * padding - kernel) / stride + 1; }
};

// Whether this build has oneDNN (SD_WITH_ONEDNN).
bool HaveOneDnnConv();
// The name of the implementation oneDNN picks for the shape on this CPU ("x64:gemm:jit"); empty
// when it has only its reference code for it (slow: OneDnnConv refuses it) or the build has no
// oneDNN. The kernel is made here, once per shape (kept for the process).
std::string OneDnnConvImplementation(const OneDnnConvShape& shape);
// y = conv(x, w) + bias for x [batch, in, height, width], w [out, in, kernel, kernel], bias [out]
// (read only when shape.bias), y [batch, out, OutHeight, OutWidth], all dense f32. Threads: the
// OpenMP ones LibTorch uses. Throws std::runtime_error naming the shape when oneDNN refuses it or
// has only its reference code for it.
void OneDnnConv(const OneDnnConvShape& shape, const float* x, const float* w, const float* bias,
                float* y);
// The FLOPs of all OneDnnConv calls of this process so far (2 x multiply-adds): not ATen operators,
// so sd-bench's profile adds them itself.
uint64_t OneDnnConvFlops();

}  // namespace sd::nn
