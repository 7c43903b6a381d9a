#include "nodes/models/differentiable_bmm.h"

#include <torch/torch.h>

#include "nodes/models/batched_matmul.h"

namespace sd::nn {
namespace {

bool OneDnnTakes(const torch::Tensor& a, const torch::Tensor& b) {
  return HaveOneDnnBatchedMatmul() && a.device().is_cpu() && b.device().is_cpu() &&
         a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32 && a.dim() == 3 &&
         b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1) && a.numel() > 0 &&
         b.numel() > 0;
}

// a · b without autograd (the operands may be strided views: they are packed first).
torch::Tensor Product(const torch::Tensor& a, const torch::Tensor& b) {
  if (!OneDnnTakes(a, b)) return torch::bmm(a, b);
  const torch::Tensor ac = a.contiguous(), bc = b.contiguous();
  torch::Tensor c = torch::empty({a.size(0), a.size(1), b.size(2)}, ac.options());
  OneDnnBatchedMatmul(ac.data_ptr<float>(), bc.data_ptr<float>(), c.data_ptr<float>(), a.size(0),
                      a.size(1), a.size(2), b.size(2));
  return c;
}

struct BmmFunction : public torch::autograd::Function<BmmFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return Product(a, b);
  }

  // dL/da = g · bᵀ, dL/db = aᵀ · g, per batch entry.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor& g = grads[0];
    torch::Tensor da, db;
    if (ctx->needs_input_grad(0)) da = Product(g, saved[1].transpose(1, 2));
    if (ctx->needs_input_grad(1)) db = Product(saved[0].transpose(1, 2), g);
    return {da, db};
  }
};

}  // namespace

at::Tensor DifferentiableBmm(const at::Tensor& a, const at::Tensor& b) {
  if (!OneDnnTakes(a, b)) return torch::bmm(a, b);
  return BmmFunction::apply(a, b);
}

}  // namespace sd::nn
