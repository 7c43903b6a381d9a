// .ckpt files written by PyTorch's own torch.save (Debian's python3-torch) read back through our
// restricted reader: same names, dtypes, shapes and bytes as the safetensors they were made from.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/test_weights.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/test_util.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

class GenuineCkptTest : public testing::TinyCheckpointTest {
 protected:
  static void SetUpTestSuite() {
    TinyCheckpointTest::SetUpTestSuite();
    auto r = testing::RunCommand(testing::PythonScript("write_genuine_ckpts.py") + " " +
                                 testing::Quote(TinyPath()) + " " + testing::Quote(dir_->path()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static std::shared_ptr<const Checkpoint> Open(const std::string& name) {
    auto c = Checkpoint::Open(dir_->File(name));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }
};

TEST_F(GenuineCkptTest, NestedLightningCheckpointMatchesSafetensorsBitForBit) {
  auto st = Open("tiny.safetensors");
  auto ck = Open("f32_nested.ckpt");
  ASSERT_TRUE(st && ck);
  EXPECT_EQ(ck->format(), CheckpointFormat::kCkpt);
  ASSERT_EQ(ck->tensors().size(), st->tensors().size());
  for (const TensorView& s : st->tensors()) {
    const TensorView* c = ck->Find(s.name);
    ASSERT_NE(c, nullptr) << s.name;
    EXPECT_EQ(c->dtype, s.dtype) << s.name;
    EXPECT_EQ(c->shape, s.shape) << s.name;
    auto a = LoadTensor(*st, s.name);
    auto b = LoadTensor(*ck, s.name);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(torch::equal(*a, *b)) << s.name;
  }
  ShapeLookup lookup = [&](const std::string& n) { return ck->ShapeOf(n); };
  auto config = DetectConfig(lookup);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(*config == SdConfig::Tiny());
  EXPECT_TRUE(CheckKeys(*config, lookup).ok());
}

TEST_F(GenuineCkptTest, HalfCheckpointMatchesTorchConversion) {
  auto st = Open("tiny.safetensors");
  auto ck = Open("f16_flat.ckpt");
  ASSERT_TRUE(st && ck);
  EXPECT_EQ(ck->PredominantFloatDType(), DType::kF16);
  for (const TensorView& s : st->tensors()) {
    auto a = LoadTensor(*st, s.name);
    auto b = LoadTensor(*ck, s.name);
    ASSERT_TRUE(a.ok() && b.ok()) << s.name;
    if (a->is_floating_point()) {
      EXPECT_EQ(b->scalar_type(), torch::kHalf);
      EXPECT_TRUE(torch::equal(a->to(torch::kHalf), *b)) << s.name;
      // Converted once at load to the compute dtype asked for.
      auto f = LoadTensor(*ck, s.name, torch::kFloat32);
      EXPECT_EQ(f->scalar_type(), torch::kFloat32);
    } else {
      EXPECT_TRUE(torch::equal(*a, *b)) << s.name;
    }
  }
}

TEST_F(GenuineCkptTest, ViewsSharingOneStorageKeepTheirStridesAndOffsets) {
  auto ck = Open("views.ckpt");
  ASSERT_TRUE(ck);
  torch::Tensor base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  EXPECT_TRUE(torch::equal(*LoadTensor(*ck, "base"), base));
  EXPECT_TRUE(torch::equal(*LoadTensor(*ck, "transposed"), base.t()));
  EXPECT_FALSE(ck->Find("transposed")->IsContiguous());
  EXPECT_TRUE(torch::equal(*LoadTensor(*ck, "slice"), base.slice(0, 1, 3).slice(1, 2, 5)));
  EXPECT_TRUE(torch::equal(*LoadTensor(*ck, "row"), base[2]));
  torch::Tensor scalar = *LoadTensor(*ck, "scalar");
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<float>(), 23.0f);
}

TEST_F(GenuineCkptTest, ZeroCopyWhenNoConversionIsNeeded) {
  auto st = Open("tiny.safetensors");
  const std::string name = "model.diffusion_model.out.2.weight";
  torch::Tensor t = *LoadTensor(*st, name);
  const uint8_t* p = static_cast<const uint8_t*>(t.data_ptr());
  EXPECT_GE(p, st->file()->data());
  EXPECT_LT(p, st->file()->data() + st->file()->size());
  // The mapping outlives the checkpoint object while a tensor refers to it.
  torch::Tensor copy = t.clone();
  st.reset();
  EXPECT_TRUE(torch::equal(t, copy));
}

TEST_F(GenuineCkptTest, MissingTensorIsNotFoundNamingKeyAndFile) {
  auto st = Open("tiny.safetensors");
  auto t = LoadTensor(*st, "no.such.key");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("no.such.key"));
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("tiny.safetensors"));
}

}  // namespace
}  // namespace sd
