// CLIP ViT-L/14's text tower, the conditioning of SD v1.x: token + learned position embeddings, pre-LayerNorm
// transformer layers with causal self-attention and QuickGELU MLPs, final LayerNorm. Output [B, 77, width].
// Parameters are named as in the checkpoint under cond_stage_model.transformer.text_model.
//
//   ClipTextModel clip(config.clip);
//   SD_RETURN_IF_ERROR(LoadWeights(*clip, checkpoint, kClipPrefix, torch::kFloat32));
//   SD_ASSIGN_OR_RETURN(torch::Tensor context, clip->Encode(tokens));  // tokens: int64 [B, 77]
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "absl/status/statusor.h"
#include "nodes/models/layers.h"
#include "nodes/weights/sd_config.h"

namespace sd {

class ClipLayerImpl : public torch::nn::Module {
 public:
  ClipLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, W]

 private:
  int64_t heads_;
  nn::LayerNorm layer_norm1_, layer_norm2_;
  nn::Linear q_, k_, v_, out_, fc1_, fc2_;
};
TORCH_MODULE(ClipLayer);

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);
  // Checks `tokens` (int64 [B, T], T <= max positions) and runs the encoder. Ids from vocab_size on
  // stand for rows of `vectors` (float [N, width]: textual-inversion embeddings; undefined or N = 0
  // when none). `clip_skip` N takes the hidden state N-1 layers before the last (1: the last), then
  // the final LayerNorm, as other SD tools do.
  absl::StatusOr<torch::Tensor> Encode(const torch::Tensor& tokens,
                                       const torch::Tensor& vectors = {}, int64_t clip_skip = 1);
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& vectors = {},
                        int64_t clip_skip = 1);
  const ClipTextConfig& config() const { return config_; }

 private:
  ClipTextConfig config_;
  nn::Embedding token_embedding_, position_embedding_;
  torch::nn::ModuleList layers_;
  nn::LayerNorm final_layer_norm_;

  torch::Tensor Embed(const torch::Tensor& tokens, const torch::Tensor& vectors);
};
TORCH_MODULE(ClipTextModel);

}  // namespace sd
