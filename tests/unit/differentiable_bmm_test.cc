// The batched products of training (nodes/models/differentiable_bmm.h) and the attention built on
// them: the same values and gradients as float64 autograd through torch's own operators, for the
// shapes the demo model trains with and for strided (transposed) operands.
#include "nodes/models/differentiable_bmm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nodes/models/layers.h"

namespace sd::nn {
namespace {

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat64) - want).abs().max().item<double>() /
         (want.abs().max().item<double>() + 1e-30);
}

struct BmmShape {
  int64_t n, m, k, p;
};

TEST(DifferentiableBmmTest, ValuesAndGradientsMatchFloat64) {
  torch::manual_seed(7);
  for (const BmmShape s :
       {BmmShape{384, 64, 8, 64}, BmmShape{384, 16, 16, 77}, BmmShape{48, 77, 96, 77},
        BmmShape{3, 1, 5, 1}, BmmShape{1, 33, 17, 9}}) {
    SCOPED_TRACE(testing::Message()
                 << s.n << " x " << s.m << "x" << s.k << " . " << s.k << "x" << s.p);
    // b is a transposed view, as attention passes kᵀ.
    const torch::Tensor a = torch::randn({s.n, s.m, s.k}).requires_grad_();
    const torch::Tensor bt = torch::randn({s.n, s.p, s.k}).requires_grad_();
    const torch::Tensor upstream = torch::randn({s.n, s.m, s.p});
    const torch::Tensor c = DifferentiableBmm(a, bt.transpose(1, 2));
    (c * upstream).sum().backward();

    const torch::Tensor a64 = a.detach().to(torch::kFloat64).requires_grad_();
    const torch::Tensor bt64 = bt.detach().to(torch::kFloat64).requires_grad_();
    const torch::Tensor c64 = torch::bmm(a64, bt64.transpose(1, 2));
    (c64 * upstream.to(torch::kFloat64)).sum().backward();

    ASSERT_EQ(c.sizes(), c64.sizes());
    EXPECT_LT(RelativeError(c, c64), 1e-5);
    EXPECT_LT(RelativeError(a.grad(), a64.grad()), 1e-5);
    EXPECT_LT(RelativeError(bt.grad(), bt64.grad()), 1e-5);
  }
}

TEST(DifferentiableBmmTest, OnlyTheOperandsThatNeedGradientsGetThem) {
  const torch::Tensor a = torch::randn({4, 3, 5}).requires_grad_();
  const torch::Tensor b = torch::randn({4, 5, 2});
  DifferentiableBmm(a, b).sum().backward();
  ASSERT_TRUE(a.grad().defined());
  EXPECT_LT(RelativeError(
                a.grad(),
                torch::ones({4, 3, 2}, torch::kFloat64).bmm(b.to(torch::kFloat64).transpose(1, 2))),
            1e-5);
  EXPECT_FALSE(b.grad().defined());
}

TEST(DifferentiableBmmTest, OtherDtypesTakeTorchBmm) {
  const torch::Tensor a = torch::randn({2, 3, 4}, torch::kFloat64);
  const torch::Tensor b = torch::randn({2, 4, 5}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(DifferentiableBmm(a, b), torch::bmm(a, b)));
}

// softmax(q kᵀ / sqrt(d)) v per head, in float64 with torch's operators.
torch::Tensor ReferenceAttention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, int64_t heads, bool causal) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), d = q.size(2) / heads;
  auto split = [&](const torch::Tensor& x, int64_t t) {
    return x.view({b, t, heads, d}).transpose(1, 2);
  };
  torch::Tensor s = torch::matmul(split(q, tq), split(k, tk).transpose(-1, -2)) / std::sqrt(d);
  if (causal)
    s = s.masked_fill(torch::ones({tq, tk}, torch::kBool).triu(1),
                      -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(s, -1), split(v, tk)).transpose(1, 2).reshape({b, tq, -1});
}

TEST(DifferentiableBmmTest, TrainingAttentionMatchesFloat64) {
  torch::manual_seed(3);
  struct Case {
    int64_t b, tq, tk, width, heads;
    bool causal;
  };
  for (const Case c : {Case{6, 64, 64, 64, 8, false}, Case{6, 16, 77, 128, 8, false},
                       Case{4, 77, 77, 96, 1, true}}) {
    SCOPED_TRACE(testing::Message() << "tq " << c.tq << " tk " << c.tk << " causal " << c.causal);
    const torch::Tensor q = torch::randn({c.b, c.tq, c.width}).requires_grad_();
    const torch::Tensor k = torch::randn({c.b, c.tk, c.width}).requires_grad_();
    const torch::Tensor v = torch::randn({c.b, c.tk, c.width}).requires_grad_();
    const torch::Tensor upstream = torch::randn({c.b, c.tq, c.width});
    const torch::Tensor out = Attention(q, k, v, c.heads, c.causal);
    (out * upstream).sum().backward();

    std::vector<torch::Tensor> ref_in;
    for (const auto& x : {q, k, v})
      ref_in.push_back(x.detach().to(torch::kFloat64).requires_grad_());
    const torch::Tensor ref =
        ReferenceAttention(ref_in[0], ref_in[1], ref_in[2], c.heads, c.causal);
    (ref * upstream.to(torch::kFloat64)).sum().backward();

    EXPECT_LT(RelativeError(out, ref), 1e-5);
    EXPECT_LT(RelativeError(q.grad(), ref_in[0].grad()), 1e-4);
    EXPECT_LT(RelativeError(k.grad(), ref_in[1].grad()), 1e-4);
    EXPECT_LT(RelativeError(v.grad(), ref_in[2].grad()), 1e-4);
  }
}

}  // namespace
}  // namespace sd::nn
