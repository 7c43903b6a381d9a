#include "nodes/models/controlnet.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/models/model_util.h"

namespace sd {

namespace {

// A module holding `conv` as its child "0" (cldm's TimestepEmbedSequential around a zero
// convolution).
std::shared_ptr<torch::nn::Module> Wrapped(nn::Conv2d conv) {
  auto m = std::make_shared<torch::nn::Module>();
  m->register_module("0", conv);
  return m;
}

}  // namespace

ControlNetImpl::ControlNetImpl(const ControlNetConfig& c)
    : config_(c), trunk_(*this, c.unet), middle_out_(nullptr) {
  auto hint = register_module("input_hint_block", torch::nn::ModuleList());
  int64_t in = c.hint_channels;
  for (const HintConv& h : HintConvs()) {
    const int64_t out = h.out == 0 ? c.unet.model_channels : h.out;
    if (h.index > 0) hint->push_back(torch::nn::SiLU());
    hint_convs_.emplace_back(in, out, 3, h.stride, 1);
    hint->push_back(hint_convs_.back());
    in = out;
  }
  auto zero = register_module("zero_convs", torch::nn::ModuleList());
  for (int64_t ch : trunk_.skip_channels) {
    zero_convs_.emplace_back(ch, ch, 1);
    zero->push_back(Wrapped(zero_convs_.back()));
  }
  const int64_t mid = trunk_.skip_channels.back();
  middle_out_ = nn::Conv2d(mid, mid, 1);
  register_module("middle_block_out", Wrapped(middle_out_));
}

std::vector<torch::Tensor> ControlNetImpl::forward(const torch::Tensor& x,
                                                   const torch::Tensor& hint_in,
                                                   const torch::Tensor& timesteps,
                                                   const torch::Tensor& context) {
  const int64_t b = x.size(0);
  torch::Tensor emb = trunk_.Embed(timesteps, x.scalar_type());
  if (emb.size(0) != b) emb = emb.expand({b, emb.size(1)});
  torch::Tensor ctx =
      context.size(0) == b ? context : context.expand({b, context.size(1), context.size(2)});
  torch::Tensor hint = hint_in;
  for (size_t i = 0; i < hint_convs_.size(); ++i) {
    hint = hint_convs_[i](hint);
    if (i + 1 < hint_convs_.size()) hint = torch::silu(hint);
  }
  std::vector<torch::Tensor> out;
  torch::Tensor h = x;
  for (size_t i = 0; i < trunk_.input_blocks.size(); ++i) {
    h = trunk_.input_blocks[i](h, emb, ctx);
    if (i == 0) h = h + hint;  // the guided hint joins after the first convolution
    out.push_back(zero_convs_[i](h));
  }
  h = trunk_.middle_block(h, emb, ctx);
  out.push_back(middle_out_(h));
  return out;
}

absl::StatusOr<std::vector<torch::Tensor>> ControlNetImpl::Predict(const torch::Tensor& latents,
                                                                   const torch::Tensor& hint,
                                                                   const torch::Tensor& timesteps,
                                                                   const torch::Tensor& context) {
  const UNetConfig& u = config_.unet;
  const int64_t m = int64_t{1} << (u.channel_mult.size() - 1);
  if (latents.dim() != 4 || latents.size(1) != u.in_channels || !latents.is_floating_point() ||
      latents.size(0) < 1 || latents.size(2) < m || latents.size(3) < m ||
      latents.size(2) % m != 0 || latents.size(3) % m != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ControlNet: latents must be float [batch, ", u.in_channels,
        ", h, w] with h and w positive multiples of ", m, ", got ", DescribeTensor(latents)));
  }
  const int64_t b = latents.size(0), h = latents.size(2), w = latents.size(3);
  if (hint.dim() != 4 || !hint.is_floating_point() || (hint.size(0) != b && hint.size(0) != 1) ||
      hint.size(1) != config_.hint_channels || hint.size(2) != 8 * h || hint.size(3) != 8 * w) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ControlNet: the hint must be float [", b, " or 1, ", config_.hint_channels, ", ", 8 * h,
        ", ", 8 * w, "] (8 times the latents' ", h, "x", w, "), got ", DescribeTensor(hint)));
  }
  if (context.dim() != 3 || context.size(2) != u.context_dim || !context.is_floating_point() ||
      (context.size(0) != b && context.size(0) != 1) || context.size(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("ControlNet: context must be float [", b,
                                                   " or 1, tokens, ", u.context_dim, "], got ",
                                                   DescribeTensor(context)));
  }
  if (timesteps.numel() != 1 && timesteps.numel() != b) {
    return absl::InvalidArgumentError(
        absl::StrCat("ControlNet: expected 1 or ", b, " timesteps, got ", timesteps.numel()));
  }
  for (const auto& [t, what] :
       {std::pair{latents, "latents"}, {hint, "hint"}, {context, "context"}}) {
    if (absl::Status s = CheckFinite(t, absl::StrCat("ControlNet: ", what)); !s.ok()) return s;
  }
  const auto& weight = trunk_.time_embed_0->weight;
  std::vector<torch::Tensor> residuals;
  absl::StatusOr<torch::Tensor> done = RunGuarded("ControlNet", [&] {
    const auto dtype = nn::ActivationDtype(weight.scalar_type(), weight.device());
    const auto dev = weight.device();
    for (torch::Tensor& r : forward(latents.to(dev, dtype), hint.to(dev, dtype), timesteps.to(dev),
                                    context.to(dev, dtype))) {
      residuals.push_back(r.to(torch::kFloat32));
    }
    return residuals.back();
  });
  if (!done.ok()) return done.status();
  return residuals;
}

std::vector<double> ControlScales(size_t count, double strength, bool guess_mode) {
  std::vector<double> scales(count, strength);
  if (guess_mode) {
    for (size_t i = 0; i < count; ++i)
      scales[i] = strength * std::pow(0.825, static_cast<double>(count - 1 - i));
  }
  return scales;
}

torch::Tensor PackControl(const std::vector<torch::Tensor>& residuals) {
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& r : residuals) flat.push_back(r.reshape({r.size(0), -1}));
  return torch::cat(flat, 1);
}

absl::StatusOr<std::vector<torch::Tensor>> UnpackControl(const torch::Tensor& packed,
                                                         const UNetConfig& config, int64_t h,
                                                         int64_t w) {
  const auto shapes = ControlResidualShapes(config, h, w);
  int64_t total = 0;
  for (const auto& s : shapes) total += s[0] * s[1] * s[2];
  if (packed.dim() != 2 || packed.size(1) != total || !packed.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ControlNet residuals for latents of ", h, "x", w, " must be float [batch, ", total, "] (",
        shapes.size(), " residuals packed), got ", DescribeTensor(packed),
        ": was the ControlNet run on latents of another size, or made for another model?"));
  }
  std::vector<torch::Tensor> out;
  int64_t at = 0;
  for (const auto& s : shapes) {
    const int64_t n = s[0] * s[1] * s[2];
    out.push_back(packed.narrow(1, at, n).reshape({packed.size(0), s[0], s[1], s[2]}));
    at += n;
  }
  return out;
}

}  // namespace sd
