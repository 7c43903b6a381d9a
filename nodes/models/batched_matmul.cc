#include "nodes/models/batched_matmul.h"

#include <atomic>
#include <stdexcept>
#include <string>

#ifdef SD_WITH_ONEDNN
#include "nodes/models/onednn_common.h"
#endif

namespace sd::nn {

namespace {
std::atomic<uint64_t> g_flops{0};
}  // namespace

uint64_t OneDnnBatchedMatmulFlops() { return g_flops.load(std::memory_order_relaxed); }

#ifdef SD_WITH_ONEDNN

bool HaveOneDnnBatchedMatmul() { return true; }

void OneDnnBatchedMatmul(const float* a, const float* b, float* c, int64_t batch, int64_t m,
                         int64_t k, int64_t n) {
  using dnnl::memory;
  dnnl::engine& engine = OneDnnCpuEngine();
  try {
    const memory::desc a_md({batch, m, k}, memory::data_type::f32, memory::format_tag::abc);
    const memory::desc b_md({batch, k, n}, memory::data_type::f32, memory::format_tag::abc);
    const memory::desc c_md({batch, m, n}, memory::data_type::f32, memory::format_tag::abc);
    // oneDNN's primitive cache keeps the compiled kernel of a shape seen before. Scratch space per
    // thread (onednn_common.h).
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine);
    const dnnl::matmul product(pd);
    const memory::desc scratch = pd.scratchpad_desc();
    dnnl::stream stream(engine);
    product.execute(stream, {{DNNL_ARG_SRC, memory(a_md, engine, const_cast<float*>(a))},
                             {DNNL_ARG_WEIGHTS, memory(b_md, engine, const_cast<float*>(b))},
                             {DNNL_ARG_DST, memory(c_md, engine, c)},
                             {DNNL_ARG_SCRATCHPAD,
                              memory(scratch, engine, OneDnnThreadScratch(scratch.get_size()))}});
    stream.wait();
    g_flops.fetch_add(static_cast<uint64_t>(2 * batch * m * k * n), std::memory_order_relaxed);
  } catch (const dnnl::error& e) {
    throw std::runtime_error("oneDNN batched matmul of " + std::to_string(batch) + " x [" +
                             std::to_string(m) + " x " + std::to_string(k) + "] . [" +
                             std::to_string(k) + " x " + std::to_string(n) + "]: " + e.what());
  }
}

#else  // built without oneDNN

bool HaveOneDnnBatchedMatmul() { return false; }

void OneDnnBatchedMatmul(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t) {
  throw std::runtime_error("oneDNN batched matmul: sdgraph was built without oneDNN");
}

#endif  // SD_WITH_ONEDNN

}  // namespace sd::nn
