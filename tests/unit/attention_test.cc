// The fused CPU attention kernel against softmax(q kᵀ / √d) v computed in double, over the shapes
// the UNet uses and the edge cases of the kernel's tiling: key counts that are not a multiple of
// its 32-key step, row counts that are not a multiple of its 6-row tile, head widths that end in a
// partial vector, and rows so peaked that most of their softmax weights underflow. Every body this
// CPU has runs (AVX-512, AVX2, and the ATen path), so an AVX2-only machine tests all it can run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <string>
#include <tuple>

#include "nodes/kernels/attention_cpu.h"
#include "nodes/models/layers.h"

namespace sd {
namespace {

torch::Tensor ReferenceAttention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, int64_t heads) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  auto split = [&](const torch::Tensor& x, int64_t t) {
    return x.to(torch::kFloat64).view({b, t, heads, d}).transpose(1, 2);
  };
  torch::Tensor scores =
      torch::matmul(split(q, tq), split(k, tk).transpose(-1, -2)) / std::sqrt(double(d));
  torch::Tensor out = torch::matmul(torch::softmax(scores, -1), split(v, tk));
  return out.transpose(1, 2).reshape({b, tq, width});
}

struct Shape {
  int64_t b, tq, tk, heads, d;
  double spread;  // scale of q and k: large values make peaked softmax rows
};

class FusedAttentionTest
    : public ::testing::TestWithParam<std::tuple<kernels::AttentionIsa, Shape>> {
 protected:
  void TearDown() override { kernels::SetAttentionIsa(std::nullopt); }
};

TEST_P(FusedAttentionTest, MatchesDoublePrecisionReference) {
  const auto [isa, s] = GetParam();
  if (!kernels::AttentionIsaSupported(isa)) {
    GTEST_SKIP() << "this CPU lacks " << kernels::AttentionIsaName(isa)
                 << "; the bodies it has run in the other instances";
  }
  kernels::SetAttentionIsa(isa);
  ASSERT_EQ(kernels::ActiveAttentionIsa(), isa);
  torch::manual_seed(s.tq * 131 + s.tk * 7 + s.d);
  const torch::Tensor q = torch::randn({s.b, s.tq, s.heads * s.d}) * s.spread;
  const torch::Tensor k = torch::randn({s.b, s.tk, s.heads * s.d}) * s.spread;
  const torch::Tensor v = torch::randn({s.b, s.tk, s.heads * s.d});
  const torch::Tensor expected = ReferenceAttention(q, k, v, s.heads);
  const torch::Tensor got = nn::Attention(q, k, v, s.heads);
  ASSERT_EQ(got.sizes(), q.sizes());
  ASSERT_EQ(got.scalar_type(), torch::kFloat32);
  const double err = (got.to(torch::kFloat64) - expected).abs().max().item<double>();
  // f32 inputs: the reference implementation itself (fp32 against fp64) strays by a few 1e-6.
  EXPECT_LT(err, 2e-5) << "b=" << s.b << " tq=" << s.tq << " tk=" << s.tk << " heads=" << s.heads
                       << " d=" << s.d;

  // bf16 activations go through the same kernel in f32 and come back as bf16.
  const torch::Tensor got16 = nn::Attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16),
                                            v.to(torch::kBFloat16), s.heads);
  ASSERT_EQ(got16.scalar_type(), torch::kBFloat16);
  const torch::Tensor expected16 = ReferenceAttention(
      q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), s.heads);
  EXPECT_LT((got16.to(torch::kFloat64) - expected16).abs().max().item<double>(), 2e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FusedAttentionTest,
    ::testing::Combine(
        ::testing::Values(kernels::AttentionIsa::kAvx512, kernels::AttentionIsa::kAvx2,
                          kernels::AttentionIsa::kNone),
        ::testing::Values(
            Shape{2, 256, 256, 8, 40, 1.0},   // UNet level 1 self-attention (fewer tokens)
            Shape{2, 64, 77, 8, 40, 1.0},     // cross-attention: 77 context tokens
            Shape{2, 64, 154, 8, 40, 1.0},    // a long prompt: two 77-token chunks
            Shape{1, 64, 231, 8, 40, 1.0},    // three chunks
            Shape{1, 64, 64, 8, 80, 1.0},     // level 2
            Shape{1, 16, 16, 8, 160, 1.0},    // level 3
            Shape{1, 7, 33, 1, 17, 1.0},      // odd everything: partial vectors and tiles
            Shape{1, 5, 1, 2, 48, 1.0},       // a single key
            Shape{1, 13, 31, 3, 96, 1.0},     // tails in both the key step and the columns
            Shape{1, 50, 200, 2, 64, 6.0})),  // peaked rows: most weights underflow to 0
    [](const auto& info) {
      return std::string(kernels::AttentionIsaName(std::get<0>(info.param))) + "_" +
             std::to_string(info.index);
    });

TEST(FusedAttentionTest, CausalAndWideHeadsKeepTheAtenPath) {
  // CLIP's causal mask and the VAE's 512-wide head are not the fused kernel's; they must still be
  // right.
  torch::manual_seed(3);
  const torch::Tensor q = torch::randn({1, 10, 64}), k = torch::randn({1, 10, 64}),
                      v = torch::randn({1, 10, 64});
  torch::Tensor mask = torch::ones({10, 10}, torch::kBool).triu(1);
  torch::Tensor scores =
      torch::matmul(q.to(torch::kFloat64).view({1, 10, 2, 32}).transpose(1, 2),
                    k.to(torch::kFloat64).view({1, 10, 2, 32}).transpose(1, 2).transpose(-1, -2)) /
      std::sqrt(32.0);
  scores.masked_fill_(mask, -std::numeric_limits<double>::infinity());
  torch::Tensor expected = torch::matmul(torch::softmax(scores, -1),
                                         v.to(torch::kFloat64).view({1, 10, 2, 32}).transpose(1, 2))
                               .transpose(1, 2)
                               .reshape({1, 10, 64});
  EXPECT_LT((nn::Attention(q, k, v, 2, /*causal=*/true).to(torch::kFloat64) - expected)
                .abs()
                .max()
                .item<double>(),
            2e-5);

  const torch::Tensor wq = torch::randn({1, 20, 512}), wk = torch::randn({1, 20, 512}),
                      wv = torch::randn({1, 20, 512});
  EXPECT_LT((nn::Attention(wq, wk, wv, 1).to(torch::kFloat64) - ReferenceAttention(wq, wk, wv, 1))
                .abs()
                .max()
                .item<double>(),
            2e-5);
}

}  // namespace
}  // namespace sd
