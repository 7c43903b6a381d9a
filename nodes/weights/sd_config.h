// Stable Diffusion v1.x: model hyper-parameters, the checkpoint key table in the original CompVis/LDM
// naming (the project's one canonical naming), detection of the configuration from tensor shapes (never
// from file names), and the strict key check a loader reports.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

inline constexpr char kUNetPrefix[] = "model.diffusion_model.";
inline constexpr char kVaePrefix[] = "first_stage_model.";
inline constexpr char kClipPrefix[] = "cond_stage_model.transformer.text_model.";

struct ClipTextConfig {
  int vocab_size = 49408;
  int max_positions = 77;
  int width = 768;
  int layers = 12;
  int heads = 12;  // not stored in shapes: width / 64, as in CLIP
  int ffn = 3072;
};

struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int ch = 128;
  std::vector<int> ch_mult = {1, 2, 4, 4};
  int num_res_blocks = 2;
  int z_channels = 4;
  int embed_dim = 4;
  // GroupNorm epsilon. The reference implementation uses PyTorch's default (1e-5) in its VAE, LDM's training
  // code 1e-6; matching the reference keeps decoded images within 2.3e-6 of it instead of 1.8e-5.
  double norm_eps = 1e-5;
  double scale_factor = 0.18215;    // latents = z * scale_factor
};

struct UNetConfig {
  int in_channels = 4;  // 9 for inpainting checkpoints: [latent, mask, masked-image latent]
  int out_channels = 4;
  int model_channels = 320;
  std::vector<int> channel_mult = {1, 2, 4, 4};
  int num_res_blocks = 2;
  std::vector<bool> attention = {true, true, true, false};  // per level
  int num_heads = 8;  // not stored in shapes: fixed at 8 throughout SD v1.x
  int transformer_depth = 1;
  int context_dim = 768;
  double resblock_norm_eps = 1e-5;     // GroupNorm32 of LDM's ResBlocks and output
  double transformer_norm_eps = 1e-6;  // GroupNorm of the spatial transformers
};

struct SdConfig {
  ClipTextConfig clip;
  VaeConfig vae;
  UNetConfig unet;

  // The released SD v1.x configuration (v1-inference.yaml).
  static SdConfig Sd15();
  // Same structure, small widths: for fast tests. CLIP keeps the real vocabulary so the real tokenizer works.
  static SdConfig Tiny();
  // The project's demo model (trained by sd-train on drawn shapes, not Stable Diffusion): SD v1.x's
  // structure at small widths, a 3-level UNet (images in multiples of 32 pixels), native size
  // 64x64.
  static SdConfig DemoShapes();
  // A short human-readable summary, e.g. for `sd-graph inspect`.
  std::string Describe() const;
  bool operator==(const SdConfig& o) const;
};

// "sd15", "tiny", "demo-shapes" (with "-inpainting" for 9 input channels), else "custom".
std::string ConfigName(const SdConfig& config);

struct KeySpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every parameter of the three networks under its checkpoint name, with its shape.
std::vector<KeySpec> ExpectedKeys(const SdConfig& config);

// Looks up the shape of a checkpoint tensor; nullptr when absent.
using ShapeLookup = std::function<const std::vector<int64_t>*(const std::string& name)>;

// The UNet's time embedding, input blocks and middle block under `prefix` (what a ControlNet
// copies).
std::vector<KeySpec> UNetTrunkKeys(const UNetConfig& unet, const std::string& prefix);
// The channels of the input blocks' outputs (the skip connections), in input-block order.
std::vector<int64_t> UNetSkipChannels(const UNetConfig& unet);
// The UNet configuration read off those keys under `prefix` (out_channels stays 4); errors as
// DetectConfig's.
absl::StatusOr<UNetConfig> DetectUNetTrunk(const ShapeLookup& shape_of, const std::string& prefix);

// Reads the configuration off the tensor shapes. NOT_FOUND names the key that anchors detection when it is
// absent; UNIMPLEMENTED for recognisably different families (SD 2.x, SDXL).
absl::StatusOr<SdConfig> DetectConfig(const ShapeLookup& shape_of);

struct ShapeMismatch {
  std::string name;
  std::vector<int64_t> expected, found;
};

struct KeyCheck {
  std::vector<std::string> missing;
  std::vector<ShapeMismatch> mismatched;
  size_t matched = 0;
  bool ok() const { return missing.empty() && mismatched.empty(); }
  // FAILED_PRECONDITION naming up to `max_listed` missing keys and mismatches (expected vs found).
  absl::Status ToStatus(const std::string& path, size_t max_listed = 10) const;
};

// Checks that every expected key is present with the expected shape. Extra keys are tolerated.
KeyCheck CheckKeys(const SdConfig& config, const ShapeLookup& shape_of);

}  // namespace sd
