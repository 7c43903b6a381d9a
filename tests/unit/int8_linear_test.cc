// int8 linear layers (nodes/models/int8_linear.h): the per-row quantization, the integer product
// exactly against a float64 product of the same quantized values, the error against f32, callers
// side by side, the layer (Linear::UseInt8 and its dequantized fallback), which linear layers the
// int8 mode takes, and int8 linear weights in checkpoints.
//
// ctest also runs this suite with oneDNN held to AVX2 (sd_onednn_avx2_tests): there is no VNNI
// there, so the layers must stay f32 under the int8 mode and int8 weights compute dequantized.
#include "nodes/models/int8_linear.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/test_util.h"
#include "tests/unit/int8_test_util.h"

namespace sd {
namespace {

using int8_test::RelL2;
using int8_test::WriteFile;

struct Quantized {
  torch::Tensor q, scale;
};
Quantized QuantizeRows(const torch::Tensor& x) {
  const torch::Tensor rows = x.reshape({-1, x.size(-1)}).contiguous();
  Quantized out{torch::empty(rows.sizes(), torch::kInt8), torch::empty({rows.size(0)})};
  nn::QuantizeRowsSymmetric(rows.data_ptr<float>(), rows.size(0), rows.size(1),
                            out.q.data_ptr<int8_t>(), out.scale.data_ptr<float>());
  return out;
}

TEST(Int8LinearTest, QuantizesEachRowToItsOwnRange) {
  // Rows: a tiny one, a huge one, zeros, and one whose values fall on half steps.
  torch::Tensor x = torch::randn({4, 37});
  x[0].mul_(1e-3);
  x[1].mul_(1e3);
  x[2].zero_();
  x[3] = torch::arange(37, torch::kFloat32).sub_(18).mul_(0.5f);  // -9 .. 9, max 9
  const Quantized q = QuantizeRows(x);
  for (int64_t r : {0, 1, 3}) {
    EXPECT_FLOAT_EQ(q.scale[r].item<float>(), x[r].abs().max().item<float>() / 127.0f) << r;
    EXPECT_EQ(q.q[r].abs().max().item<int>(), 127) << r;
    const torch::Tensor back = q.q[r].to(torch::kFloat32) * q.scale[r];
    EXPECT_LE((back - x[r]).abs().max().item<float>(), 0.5001f * q.scale[r].item<float>()) << r;
  }
  EXPECT_EQ(q.scale[2].item<float>(), 0.0f);
  EXPECT_EQ(q.q[2].abs().sum().item<int>(), 0);
  // x / scale = (i - 18) * 127 / 18: round half up, e.g. -9 -> -127, 0 -> 0, 9 -> 127.
  const torch::Tensor want = (torch::arange(37, torch::kFloat64).sub_(18) * (127.0 / 18.0))
                                 .add_(0.5)
                                 .floor_()
                                 .to(torch::kInt8);
  EXPECT_TRUE(torch::equal(q.q[3], want)) << q.q[3];
}

TEST(Int8LinearTest, ComputesTheQuantizedProductExactly) {
  if (!nn::Int8LinearAvailable()) GTEST_SKIP() << "no VNNI here: int8 linear layers stay f32";
  c10::InferenceMode guard;
  torch::manual_seed(11);
  struct Case {
    std::vector<int64_t> x_shape;
    int64_t out;
  };
  for (const Case& c : {Case{{1, 32}, 256}, Case{{7, 40}, 320}, Case{{2, 150, 320}, 2560},
                        Case{{3, 64, 96}, 768}}) {
    const int64_t in = c.x_shape.back();
    torch::Tensor x = torch::randn(c.x_shape);
    x.select(-1, 0).mul_(30);  // an outlying channel
    const torch::Tensor w = torch::randn({c.out, in}).mul_(1.0 / std::sqrt(in));
    const torch::Tensor b = torch::randn({c.out});
    const nn::Int8Weights qw = nn::QuantizeWeightsPerChannel(w);
    nn::Int8Linear layer(qw, b);
    const int64_t rows = x.numel() / in;
    ASSERT_TRUE(layer.Supports(rows));
    const torch::Tensor y = layer.Forward(x);
    std::vector<int64_t> want_shape = c.x_shape;
    want_shape.back() = c.out;
    ASSERT_EQ(y.sizes().vec(), want_shape);
    const Quantized qx = QuantizeRows(x);
    const torch::Tensor xd = qx.q.to(torch::kFloat64) * qx.scale.to(torch::kFloat64).unsqueeze(1);
    const torch::Tensor exact =
        torch::linear(xd, nn::DequantizeWeightsPerChannel(qw).to(torch::kFloat64),
                      b.to(torch::kFloat64))
            .reshape(want_shape);
    const double scale = exact.abs().max().item<double>();
    const double err = (y.to(torch::kFloat64) - exact).abs().max().item<double>();
    EXPECT_LE(err, 1e-5 * (1 + scale)) << in << " -> " << c.out << ", " << rows << " rows";
  }
}

TEST(Int8LinearTest, StaysWithinTheQuantizationErrorOfF32) {
  if (!nn::Int8LinearAvailable()) GTEST_SKIP() << "no VNNI here";
  c10::InferenceMode guard;
  torch::manual_seed(12);
  const torch::Tensor x = torch::layer_norm(torch::randn({2, 1024, 320}), {320});
  const torch::Tensor w = torch::randn({2560, 320}).mul_(1.0 / std::sqrt(320.0));
  const torch::Tensor b = torch::randn({2560}).mul_(0.1);
  nn::Int8Linear layer(nn::QuantizeWeightsPerChannel(w), b);
  const double rel = RelL2(layer.Forward(x), torch::linear(x, w, b));
  std::printf("[ int8 ] linear 320 -> 2560, 2048 rows: relative L2 error %.2e against f32\n", rel);
  EXPECT_LT(rel, 2e-2);  // measured 1.1e-2
  EXPECT_GT(rel, 1e-4);  // it did quantize
}

TEST(Int8LinearTest, RunsOnThreadsSideBySideAndOnKernelsMadeForFewerThreads) {
  if (!nn::Int8LinearAvailable()) GTEST_SKIP() << "no VNNI here";
  c10::InferenceMode guard;
  torch::manual_seed(13);
  const torch::Tensor w = torch::randn({1024, 128}).mul_(0.1);
  nn::Int8Linear layer(nn::QuantizeWeightsPerChannel(w), torch::randn({1024}));
  std::vector<torch::Tensor> inputs;
  for (int64_t rows : {64, 256, 1000}) inputs.push_back(torch::randn({rows, 128}));
  int8_test::ExpectSameResultsOnThreadsSideBySide(
      [&layer](const torch::Tensor& x) { return layer.Forward(x); }, inputs);
}

TEST(Int8LinearTest, ALayerRunsInt8OnlyInInferenceWithVnniAndElseOnTheDequantizedWeights) {
  torch::manual_seed(14);
  nn::Linear linear(64, 512);
  {
    torch::NoGradGuard no_grad;
    linear->weight.copy_(torch::randn({512, 64}).mul_(0.1));
    linear->bias.copy_(torch::randn({512}));
  }
  const torch::Tensor f32_weight = linear->weight.detach().clone();
  linear->UseInt8();
  ASSERT_TRUE(linear->UsesInt8());
  EXPECT_EQ(linear->weight.scalar_type(), torch::kInt8);
  EXPECT_EQ(linear->weight_scale.sizes(), (std::vector<int64_t>{512}));
  const torch::Tensor dequantized =
      nn::DequantizeWeightsPerChannel({linear->weight, linear->weight_scale});
  EXPECT_LT(RelL2(dequantized, f32_weight), 1e-2);
  const torch::Tensor x = torch::randn({2, 30, 64});
  torch::Tensor fallback;
  {
    torch::NoGradGuard no_grad;  // not inference mode: the dequantized weights in f32
    fallback = linear->forward(x);
    EXPECT_TRUE(torch::allclose(fallback, torch::linear(x, dequantized, linear->bias), 1e-5, 1e-5));
  }
  c10::InferenceMode guard;
  const torch::Tensor y = linear->forward(x);
  ASSERT_EQ(y.sizes(), fallback.sizes());
  const double rel = RelL2(y, fallback);
  if (nn::Int8LinearAvailable()) {
    EXPECT_GT(rel, 1e-4);  // the int8 kernel ran, not the fallback
    EXPECT_LT(rel, 2e-2);
  } else {
    EXPECT_LT(rel, 1e-6);  // the fallback
  }
}

struct Block : torch::nn::Module {
  Block() {
    register_module("proj", proj);
    register_module("ff_in", ff_in);
    register_module("ff_out", ff_out);
    register_module("conv", conv);
  }
  nn::Linear proj{64, 64}, ff_in{64, 512}, ff_out{256, 64};
  nn::Conv2d conv{64, 64, 3};
};

TEST(Int8LinearTest, TheInt8ModeTakesTheFeedForwardProjectionWhereVnniIs) {
  auto block = std::make_shared<Block>();
  for (auto& p : block->parameters()) p.detach().normal_();
  const bool vnni = nn::Int8LinearAvailable();
  EXPECT_EQ(nn::UseInt8Layers(*block), vnni ? 2 : 1);
  EXPECT_TRUE(block->conv->UsesInt8());
  EXPECT_EQ(block->ff_in->UsesInt8(), vnni);
  EXPECT_FALSE(block->proj->UsesInt8());
  EXPECT_FALSE(block->ff_out->UsesInt8());
  EXPECT_TRUE(nn::Int8LinearShape(2560, 320));
  EXPECT_FALSE(nn::Int8LinearShape(320, 1280));
  EXPECT_FALSE(nn::Int8LinearShape(1280, 320));
}

TEST(Int8LinearTest, Int8CheckpointsLoadProjectionWeightsAndRefuseOtherInt8LinearOnes) {
  torch::manual_seed(15);
  testing::TempDir dir;
  auto source = std::make_shared<Block>();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : source->named_parameters())
    tensors.emplace_back(p.key(), p.value().detach().normal_().clone());
  auto replaced = [&](const std::string& key, const nn::Int8Weights& q) {
    auto copy = tensors;
    for (auto& [k, v] : copy) {
      if (k == key) v = q.q;
    }
    copy.emplace_back(key + "_scale", q.scale);
    return copy;
  };
  const nn::Int8Weights ff = nn::QuantizeWeightsPerChannel(source->ff_in->weight);
  auto ckpt = Checkpoint::Open(WriteFile(dir, "good.safetensors", replaced("ff_in.weight", ff)));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto loaded = std::make_shared<Block>();
  ASSERT_TRUE(LoadWeights(*loaded, **ckpt, "net.", torch::kFloat32).ok());
  ASSERT_TRUE(loaded->ff_in->UsesInt8());
  EXPECT_TRUE(torch::equal(loaded->ff_in->weight, ff.q));
  EXPECT_TRUE(torch::equal(loaded->ff_in->weight_scale, ff.scale));
  EXPECT_FALSE(loaded->ff_out->UsesInt8());

  const nn::Int8Weights out = nn::QuantizeWeightsPerChannel(source->ff_out->weight);
  auto bad = Checkpoint::Open(WriteFile(dir, "ffout.safetensors", replaced("ff_out.weight", out)));
  ASSERT_TRUE(bad.ok()) << bad.status();
  auto net = std::make_shared<Block>();
  const absl::Status s = LoadWeights(*net, **bad, "net.", torch::kFloat32);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("net.ff_out.weight is int8"), std::string::npos) << s;
  EXPECT_NE(s.message().find("ffout.safetensors"), std::string::npos) << s;
}

}  // namespace
}  // namespace sd
