// The fused CPU attention kernel against softmax(q kᵀ / √d) v computed in double, over the shapes
// the UNet uses and the edge cases of the kernel's tiling: key counts that are not a multiple of
// its 32-key step, row counts that are not a multiple of its 6-row tile, head widths that end in a
// partial vector, and rows so peaked that most of their softmax weights underflow. Every body this
// CPU has runs (AVX-512, AVX2, and the ATen path), so an AVX2-only machine tests all it can run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

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

// The bf16 body (CPUs with AVX-512 BF16), called directly with inputs packed as attention_cpu.h
// documents (by plain loops here, not by the packing nn::Attention does): against the double
// reference of the same bf16 inputs. Its only rounding beyond f32's is of the softmax weights to
// bf16 (2^-9 relative each), so the error stays far below the bf16 outputs' own rounding.
class Bf16AttentionTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    if (!kernels::Bf16AttentionAvailable())
      GTEST_SKIP() << "this CPU has no AVX-512 BF16: bf16 activations take the f32 body there";
  }
};

uint16_t Bits(const at::BFloat16& x) { return x.x; }

TEST_P(Bf16AttentionTest, MatchesDoublePrecisionReference) {
  const Shape s = GetParam();
  torch::manual_seed(s.tq * 31 + s.tk * 5 + s.d);
  const int64_t width = s.heads * s.d, kb = kernels::kAttentionKeyBlock;
  const int64_t blocks = (s.tk + kb - 1) / kb, keys_even = (s.tk + 1) / 2 * 2;
  const torch::Tensor q = (torch::randn({s.b, s.tq, width}) * s.spread).to(torch::kBFloat16);
  const torch::Tensor k = (torch::randn({s.b, s.tk, width}) * s.spread).to(torch::kBFloat16);
  for (bool ones : {false, true}) {
    const torch::Tensor v = ones ? torch::ones({s.b, s.tk, width}, torch::kBFloat16)
                                 : torch::randn({s.b, s.tk, width}).to(torch::kBFloat16);
    std::vector<uint16_t> k_pairs(s.b * s.heads * blocks * kb * s.d, 0),
        v_pairs(s.b * s.heads * keys_even * s.d, 0);
    const auto ka = k.accessor<at::BFloat16, 3>(), va = v.accessor<at::BFloat16, 3>();
    for (int64_t bi = 0; bi < s.b; ++bi) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t bh = bi * s.heads + h;
        for (int64_t j = 0; j < s.tk; ++j) {
          for (int64_t i = 0; i < s.d; ++i) {
            k_pairs[(((bh * blocks + j / kb) * (s.d / 2) + i / 2) * kb + j % kb) * 2 + i % 2] =
                Bits(ka[bi][j][h * s.d + i]);
            v_pairs[((bh * (keys_even / 2) + j / 2) * s.d + i) * 2 + j % 2] =
                Bits(va[bi][j][h * s.d + i]);
          }
        }
      }
    }
    // The kernel loads key blocks 64-byte aligned.
    torch::Tensor k_aligned = torch::empty({static_cast<int64_t>(k_pairs.size())}, torch::kInt16);
    std::memcpy(k_aligned.data_ptr(), k_pairs.data(), k_pairs.size() * sizeof(uint16_t));
    torch::Tensor out = torch::full({s.b, s.tq, width}, std::nanf(""));
    kernels::MultiHeadAttentionBf16({reinterpret_cast<const uint16_t*>(q.data_ptr()),
                                     reinterpret_cast<const uint16_t*>(k_aligned.data_ptr()),
                                     v_pairs.data(), out.data_ptr<float>(), s.b, s.heads, s.tq,
                                     s.tk, s.d, static_cast<float>(1.0 / std::sqrt(double(s.d))),
                                     2});
    const torch::Tensor err =
        (out.to(torch::kFloat64) - ReferenceAttention(q, k, v, s.heads)).abs();
    const std::string where = "tq=" + std::to_string(s.tq) + " tk=" + std::to_string(s.tk) +
                              " heads=" + std::to_string(s.heads) + " d=" + std::to_string(s.d);
    if (ones) {
      // Every row's (rounded) weights sum to one.
      EXPECT_LT(err.max().item<double>(), 1e-6) << where;
    } else {
      EXPECT_LT(err.max().item<double>(), 1e-2) << where;
      EXPECT_LT(err.mean().item<double>(), 1.5e-3) << where;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Bf16AttentionTest,
    ::testing::Values(Shape{2, 64, 77, 8, 8, 1.0},  // demo model: 8-wide heads
                      Shape{1, 64, 64, 8, 16, 1.0}, Shape{2, 256, 256, 8, 40, 1.0},
                      Shape{1, 64, 154, 8, 40, 1.0}, Shape{1, 64, 64, 8, 80, 1.0},
                      Shape{1, 16, 77, 8, 160, 1.0}, Shape{1, 7, 33, 1, 18, 1.0},  // partial tiles
                      Shape{1, 5, 1, 2, 48, 1.0},                                  // a single key
                      Shape{1, 13, 31, 3, 96, 1.0},     // odd keys, column tails
                      Shape{1, 3, 5, 1, 2, 1.0},        // one feature pair
                      Shape{1, 50, 200, 2, 64, 6.0}));  // peaked rows

// nn::Attention sends bf16 activations to the bf16 body where the CPU has one: the result is the
// f32 body's on the same inputs up to the rounding of the weights, and differs from it (so the
// bf16 body did run).
TEST_P(Bf16AttentionTest, NetworksUseIt) {
  const Shape s = GetParam();
  torch::manual_seed(9);
  const torch::Tensor q =
      (torch::randn({s.b, s.tq, s.heads * s.d}) * s.spread).to(torch::kBFloat16);
  const torch::Tensor k =
      (torch::randn({s.b, s.tk, s.heads * s.d}) * s.spread).to(torch::kBFloat16);
  const torch::Tensor v = torch::randn({s.b, s.tk, s.heads * s.d}).to(torch::kBFloat16);
  kernels::SetAttentionIsa(kernels::AttentionIsa::kAvx512);
  const torch::Tensor bf16 = nn::Attention(q, k, v, s.heads);
  kernels::SetAttentionIsa(kernels::AttentionIsa::kNone);  // the ATen path, in f32
  const torch::Tensor f32 = nn::Attention(q, k, v, s.heads);
  kernels::SetAttentionIsa(std::nullopt);
  ASSERT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_LT((bf16 - f32).abs().max().item<float>(), 2e-2);
  if (s.tq * s.tk >= 1000) {
    EXPECT_FALSE(torch::equal(bf16, f32));
  }
}

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
