// A model reference: a checkpoint with its VAE replaced, written as one string.
#include "nodes/weights/model_ref.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sd {
namespace {

using ::testing::HasSubstr;

TEST(ModelRefTest, ParsesFormatsAndMaps) {
  ModelRef r = ModelRef::Parse("v1-5.safetensors").value();
  EXPECT_EQ(r.base, "v1-5.safetensors");
  EXPECT_FALSE(r.HasPatches());
  EXPECT_EQ(r.Format(), "v1-5.safetensors");
  r = ModelRef::Parse("dir/v1-5.ckpt|vae=vae-ft-mse.safetensors").value();
  EXPECT_EQ(r.vae, "vae-ft-mse.safetensors");
  EXPECT_EQ(r.Format(), "dir/v1-5.ckpt|vae=vae-ft-mse.safetensors");
  auto mapped =
      r.Map([](const std::string& s) -> absl::StatusOr<std::string> { return "/repo/" + s; });
  EXPECT_EQ(mapped->Format(), "/repo/dir/v1-5.ckpt|vae=/repo/vae-ft-mse.safetensors");
  auto refused = r.Map([](const std::string& s) -> absl::StatusOr<std::string> {
    if (s.find("vae") != std::string::npos) return absl::NotFoundError("no " + s);
    return s;
  });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound);
  r = ModelRef::Parse("m|lora=a:b.safetensors:0.5|lora=c|lora=d:0.25:1.5").value();
  ASSERT_EQ(r.loras.size(), 3u);
  EXPECT_EQ(r.loras[0].name, "a:b.safetensors");
  EXPECT_EQ(r.loras[0].unet, 0.5);
  EXPECT_EQ(r.loras[0].text, 0.5);
  EXPECT_EQ(r.loras[1].unet, 1.0);
  EXPECT_EQ(r.loras[2].unet, 0.25);
  EXPECT_EQ(r.loras[2].text, 1.5);
  EXPECT_EQ(r.Format(), "m|lora=a:b.safetensors:0.5:0.5|lora=c:1:1|lora=d:0.25:1.5");
  EXPECT_EQ(ModelRef::Parse(r.Format())->Format(), r.Format());
}

TEST(ModelRefTest, RefusesMalformedReferences) {
  for (const auto& [text, why] :
       std::vector<std::pair<std::string, std::string>>{{"|vae=x", "no checkpoint"},
                                                        {"m|foo=x", "unknown part 'foo'"},
                                                        {"m|lora=:1", "names no file"},
                                                        {"m|lora=x:inf", "not finite"},
                                                        {"m|vae=", "names no file"},
                                                        {"m|vae=a|vae=b", "two VAEs"}}) {
    auto r = ModelRef::Parse(text);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(why)) << text;
  }
}

}  // namespace
}  // namespace sd
