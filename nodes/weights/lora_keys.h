// The one table of LoRA key names: every layer a LoRA can patch (the UNet's and the text encoder's
// linear and convolution weights) under each name LoRA files use for it in the wild, mapped onto
// our checkpoint key.
//
//   family          UNet layer (diffusers path / LDM path)              text encoder layer
//   kohya           lora_unet_down_blocks_0_attentions_0_..._to_q
//   lora_te_text_model_encoder_layers_0_self_attn_q_proj kohya, LDM
//   lora_unet_input_blocks_1_1_transformer_blocks_0_...   (same as kohya) diffusers/PEFT
//   unet.down_blocks.0.attentions.0.....to_q
//   text_encoder.text_model.encoder.layers.0.self_attn.q_proj LDM
//   model.diffusion_model.input_blocks.1.1.....to_q
//   cond_stage_model.transformer.text_model.encoder....
//
// followed by a suffix: .lora_down.weight / .lora_up.weight / .lora_mid.weight / .alpha (kohya,
// LoCon), .lora_A.weight / .lora_B.weight (PEFT), .lora.down.weight / .lora.up.weight.
// UNet paths follow the UNet's configuration (levels, res blocks per level, which levels attend).
//
//   LoraKeyTable table = LoraKeyTable::ForModel(ExpectedKeys(config), config.unet);
//   const LoraTarget* t = table.Find("lora_unet_mid_block_attentions_0_proj_in");
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nodes/weights/sd_config.h"

namespace sd {

enum class LoraComponent { kUNet, kText };

struct LoraTarget {
  std::string
      key;  // the checkpoint's weight, e.g. model.diffusion_model.input_blocks.1.1.proj_in.weight
  LoraComponent component;
};

class LoraKeyTable {
 public:
  // From the model's keys: every UNet and text-encoder weight of rank 2 or 4.
  static LoraKeyTable ForModel(const std::vector<KeySpec>& keys, const UNetConfig& unet);

  // The layer a LoRA name (a key without its suffix) stands for; nullptr when none.
  const LoraTarget* Find(const std::string& name) const;
  const std::map<std::string, LoraTarget>& names() const { return names_; }
  // Names that two layers would share (none for the SD v1.x layouts; a test checks).
  const std::vector<std::string>& collisions() const { return collisions_; }

 private:
  std::map<std::string, LoraTarget> names_;
  std::vector<std::string> collisions_;
};

// The diffusers module path of a UNet module given by its LDM path ("input_blocks.1.1.proj_in" ->
// "down_blocks.0.attentions.0.proj_in"); "" when the path is not a UNet module.
std::string DiffusersUNetPath(const std::string& ldm_path, const UNetConfig& unet);

// Splits a LoRA file's key into its layer name and its part ("down", "up", "mid", "alpha");
// false when the key has none of the known suffixes.
bool SplitLoraKey(const std::string& key, std::string* name, std::string* part);

}  // namespace sd
