// What the oneDNN primitives we run ourselves share (int8_conv, batched_matmul, onednn_conv): one
// CPU engine, and scratch space per thread. Only for files built with SD_WITH_ONEDNN (defined in
// onednn_conv.cc).
#pragma once

#include <cstddef>
#include <oneapi/dnnl/dnnl.hpp>

namespace sd::nn {

dnnl::engine& OneDnnCpuEngine();
// Scratch space of at least `bytes` for a primitive made with a user scratchpad
// (dnnl::scratchpad_mode::user), one buffer per thread, kept between calls (a fresh one would be
// page-faulted in on every layer). oneDNN's own scratchpad is shared by the primitives of a
// process: two threads running primitives at once (the semantic tests draw pictures side by side)
// crashed in it.
void* OneDnnThreadScratch(size_t bytes);

}  // namespace sd::nn
