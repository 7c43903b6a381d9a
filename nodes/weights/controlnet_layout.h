// ControlNet for SD v1.x (lllyasviel's cldm.py): the checkpoint layout, read in the three forms
// users download, and its configuration read off the tensor shapes.
//
//   layout        example key                                            where from
//   original      control_model.input_blocks.1.1.proj_in.weight          ControlNet 1.0
//   .pth/.safetensors unprefixed    input_blocks.1.1.proj_in.weight ControlNet 1.1, ComfyUI's
//   models diffusers     down_blocks.0.attentions.0.proj_in.weight              diffusers'
//   ControlNetModel
//
// Every form is mapped onto the unprefixed names (the module's own parameter names); the diffusers
// names through one table, DiffusersToControlNet. The network is a copy of the UNet's time
// embedding, input blocks and middle block, plus the hint encoder (input_hint_block: eight 3x3
// convolutions, three of stride 2, from the hint image at 8x the latent size down to
// model_channels), one 1x1 "zero convolution" per input block (zero_convs.I.0) and one after the
// middle block (middle_block_out.0).
//
//   SD_ASSIGN_OR_RETURN(ControlNetFile f, ReadControlNetLayout(*checkpoint));
//   // f.config.unet, f.config.hint_channels; f.key_of("input_hint_block.0.weight") is the file's
//   name
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"

namespace sd {

inline constexpr char kControlNetPrefix[] = "control_model.";

struct ControlNetConfig {
  UNetConfig unet;  // the trunk's: out_channels unused
  int hint_channels = 3;
  // The released SD v1.5 ControlNet (cldm_v15.yaml).
  static ControlNetConfig Sd15();
  // For a UNet of configuration `unet` (the tiny test model's, say).
  static ControlNetConfig For(const UNetConfig& unet);
};

// The hint encoder's convolutions: index in input_hint_block, output channels, stride. The last one
// outputs model_channels.
struct HintConv {
  int index;
  int out;
  int stride;
};
const std::vector<HintConv>& HintConvs();

// Every parameter under its unprefixed name, with its shape.
std::vector<KeySpec> ControlNetKeys(const ControlNetConfig& config);

enum class ControlNetLayout { kOriginal, kUnprefixed, kDiffusers };
const char* LayoutName(ControlNetLayout layout);

// The unprefixed name of a diffusers ControlNetModel key ("" when it is not one), given the number
// of ResBlocks per level (down_blocks.L.resnets.J -> input_blocks.{1 + L(n+1) + J}.0).
std::string DiffusersToControlNet(const std::string& key, int num_res_blocks);

// The other way (what a diffusers ControlNetModel calls parameter `name`); "" when it has no such
// name.
std::string ControlNetToDiffusers(const std::string& name, const UNetConfig& unet);

struct ControlNetFile {
  ControlNetLayout layout = ControlNetLayout::kOriginal;
  ControlNetConfig config;
  std::map<std::string, std::string> names;  // unprefixed name -> the file's key
  // The file's key of parameter `name` ("" when absent).
  std::string KeyOf(const std::string& name) const;
};

// Whether the file is recognisably a ControlNet (of any layout or family, usable or not): what
// ReadControlNetLayout refuses with "not a ControlNet" is not.
bool LooksLikeControlNet(const Checkpoint& checkpoint);

// The weights file of a ControlNet given as a file or as a diffusers ControlNetModel folder
// (diffusion_pytorch_model.safetensors, else diffusion_pytorch_model.bin, in it). NOT_FOUND naming
// what was looked for.
absl::StatusOr<std::string> ControlNetWeightsFile(const std::string& path);

// Recognises the layout, detects the configuration and checks every key: INVALID_ARGUMENT when the
// file is no ControlNet, UNIMPLEMENTED naming the family for an SD 2.x or SDXL ControlNet,
// FAILED_PRECONDITION listing missing keys, shape mismatches and extra tensors. Errors name the
// file.
absl::StatusOr<ControlNetFile> ReadControlNetLayout(const Checkpoint& checkpoint);

}  // namespace sd
