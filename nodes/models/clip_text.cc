#include "nodes/models/clip_text.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"

namespace sd {

ClipLayerImpl::ClipLayerImpl(const ClipTextConfig& c)
    : heads_(c.heads),
      layer_norm1_(c.width),
      layer_norm2_(c.width),
      q_(c.width, c.width),
      k_(c.width, c.width),
      v_(c.width, c.width),
      out_(c.width, c.width),
      fc1_(c.width, c.ffn),
      fc2_(c.ffn, c.width) {
  register_module("layer_norm1", layer_norm1_);
  register_module("layer_norm2", layer_norm2_);
  auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  attn->register_module("q_proj", q_);
  attn->register_module("k_proj", k_);
  attn->register_module("v_proj", v_);
  attn->register_module("out_proj", out_);
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  mlp->register_module("fc1", fc1_);
  mlp->register_module("fc2", fc2_);
}

torch::Tensor ClipLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = layer_norm1_(x);
  h = out_(nn::Attention(q_(h), k_(h), v_(h), heads_, /*causal=*/true));
  torch::Tensor y = x + h;
  h = fc1_(layer_norm2_(y));              // [B, T, ffn]
  h = h * torch::sigmoid(1.702 * h);      // QuickGELU
  return y + fc2_(h);
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config)
    : config_(config),
      token_embedding_(config.vocab_size, config.width),
      position_embedding_(config.max_positions, config.width),
      final_layer_norm_(config.width) {
  auto embeddings = register_module("embeddings", std::make_shared<torch::nn::Module>());
  embeddings->register_module("token_embedding", token_embedding_);
  embeddings->register_module("position_embedding", position_embedding_);
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
  for (int i = 0; i < config.layers; ++i) layers_->push_back(ClipLayer(config));
  encoder->register_module("layers", layers_);
  register_module("final_layer_norm", final_layer_norm_);
}

torch::Tensor ClipTextModelImpl::Embed(const torch::Tensor& tokens, const torch::Tensor& vectors) {
  if (!vectors.defined() || vectors.size(0) == 0) return token_embedding_(tokens);
  const torch::Tensor extra = tokens >= config_.vocab_size;                   // [B, T]
  const torch::Tensor base = token_embedding_(tokens.masked_fill(extra, 0));  // [B, T, W]
  const torch::Tensor rows = (tokens - config_.vocab_size).clamp_min(0).flatten();
  const torch::Tensor taught =
      vectors.to(base.options()).index_select(0, rows).view(base.sizes());  // [B, T, W]
  return torch::where(extra.unsqueeze(-1), taught, base);
}

torch::Tensor ClipTextModelImpl::forward(const torch::Tensor& tokens, const torch::Tensor& vectors,
                                         int64_t clip_skip) {
  const int64_t t = tokens.size(1);
  torch::Tensor x =
      Embed(tokens, vectors) + position_embedding_->weight.slice(0, 0, t);  // [B, T, W]
  const int64_t run = static_cast<int64_t>(layers_->size()) - (clip_skip - 1);
  for (int64_t i = 0; i < run; ++i)
    x = (*layers_)[static_cast<size_t>(i)]->as<ClipLayer>()->forward(x);
  return final_layer_norm_(x);
}

absl::StatusOr<torch::Tensor> ClipTextModelImpl::Encode(const torch::Tensor& tokens,
                                                        const torch::Tensor& vectors,
                                                        int64_t clip_skip) {
  if (tokens.dim() != 2 || tokens.scalar_type() != torch::kInt64) {
    return absl::InvalidArgumentError(
        absl::StrCat("CLIP text encoder: tokens must be int64 [batch, length], got ", DescribeTensor(tokens)));
  }
  if (tokens.size(1) < 1 || tokens.size(1) > config_.max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("CLIP text encoder: ", tokens.size(1),
                                                   " tokens; between 1 and ", config_.max_positions, " fit"));
  }
  const bool has_vectors = vectors.defined() && vectors.numel() > 0;
  if (has_vectors &&
      (vectors.dim() != 2 || !vectors.is_floating_point() || vectors.size(1) != config_.width)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CLIP text encoder: textual-inversion vectors must be float [count, ", config_.width,
        "] for this model, got ", DescribeTensor(vectors),
        vectors.dim() == 2 ? " (an embedding trained for another model, e.g. SD 2.x?)" : ""));
  }
  const int64_t ids = config_.vocab_size + (has_vectors ? vectors.size(0) : 0);
  if (tokens.numel() > 0) {
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    if (lo < 0 || hi >= ids) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CLIP text encoder: token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ",
          config_.vocab_size, ")",
          has_vectors ? absl::StrCat(" and the ", vectors.size(0), " embedding vectors") : ""));
    }
  }
  if (clip_skip < 1 || clip_skip > config_.layers) {
    return absl::InvalidArgumentError(absl::StrCat("CLIP text encoder: clip skip ", clip_skip,
                                                   " is outside 1..", config_.layers,
                                                   " (this encoder's layers)"));
  }
  const torch::Device device = token_embedding_->weight.device();
  return RunGuarded("CLIP text encoder", [&] {
    return forward(tokens.to(device), has_vectors ? vectors.to(device) : torch::Tensor(),
                   clip_skip);
  });
}

}  // namespace sd
