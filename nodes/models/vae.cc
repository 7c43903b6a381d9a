#include "nodes/models/vae.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/model_util.h"

namespace sd {

namespace F = torch::nn::functional;

VaeResnetImpl::VaeResnetImpl(int64_t in, int64_t out, double eps)
    : norm1_(in, eps), norm2_(out, eps), conv1_(in, out, 3), conv2_(out, out, 3) {
  register_module("norm1", norm1_);
  register_module("conv1", conv1_);
  register_module("norm2", norm2_);
  register_module("conv2", conv2_);
  if (in != out) nin_shortcut_ = register_module("nin_shortcut", nn::Conv2d(in, out, 1));
}

namespace {

// In place where the tensor is a fresh intermediate: at 512x512 one activation of the top level is
// 134 MB (268 MB at 256 channels), and the same arithmetic without the extra copies keeps the
// decoder's peak down. Training (autograd recording) needs the input of SiLU kept, so it gets the
// out-of-place form.
torch::Tensor SiluFresh(torch::Tensor h) {
  return torch::GradMode::is_enabled() && h.requires_grad() ? torch::silu(h) : torch::silu_(h);
}

}  // namespace

torch::Tensor VaeResnetImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = norm1_(x);
  h = conv1_(SiluFresh(h));
  h = norm2_(h);
  h = conv2_(SiluFresh(h));
  return h.add_(nin_shortcut_ ? nin_shortcut_(x) : x);  // x + h, the same sum
}

VaeAttentionImpl::VaeAttentionImpl(int64_t channels, double eps)
    : norm_(channels, eps), q_(channels, channels, 1), k_(channels, channels, 1), v_(channels, channels, 1),
      proj_out_(channels, channels, 1) {
  register_module("norm", norm_);
  register_module("q", q_);
  register_module("k", k_);
  register_module("v", v_);
  register_module("proj_out", proj_out_);
}

torch::Tensor VaeAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor n = norm_(x);
  auto tokens = [&](const torch::Tensor& t) { return t.reshape({b, c, h * w}).transpose(1, 2); };  // [B, HW, C]
  torch::Tensor a = nn::Attention(tokens(q_(n)), tokens(k_(n)), tokens(v_(n)), 1);
  return x + proj_out_(a.transpose(1, 2).reshape({b, c, h, w}));
}

VaeMidImpl::VaeMidImpl(int64_t channels, double eps)
    : block_1_(channels, channels, eps), block_2_(channels, channels, eps), attn_1_(channels, eps) {
  register_module("block_1", block_1_);
  register_module("attn_1", attn_1_);
  register_module("block_2", block_2_);
}

torch::Tensor VaeMidImpl::forward(const torch::Tensor& x) { return block_2_(attn_1_(block_1_(x))); }

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& c)
    : conv_in_(c.in_channels, c.ch, 3),
      conv_out_(c.ch * c.ch_mult.back(), 2 * c.z_channels, 3),
      mid_(c.ch * c.ch_mult.back(), c.norm_eps),
      norm_out_(c.ch * c.ch_mult.back(), c.norm_eps) {
  register_module("conv_in", conv_in_);
  auto down = register_module("down", torch::nn::ModuleList());
  int64_t ch = c.ch;
  const size_t levels = c.ch_mult.size();
  for (size_t i = 0; i < levels; ++i) {
    auto level = std::make_shared<torch::nn::Module>();
    auto block = level->register_module("block", torch::nn::ModuleList());
    blocks_.emplace_back();
    for (int j = 0; j < c.num_res_blocks; ++j) {
      VaeResnet r(ch, c.ch * c.ch_mult[i], c.norm_eps);
      block->push_back(r);
      blocks_.back().push_back(r);
      ch = c.ch * c.ch_mult[i];
    }
    if (i + 1 != levels) {
      nn::Conv2d conv(ch, ch, 3, /*stride=*/2, /*padding=*/0);
      auto ds = level->register_module("downsample", std::make_shared<torch::nn::Module>());
      ds->register_module("conv", conv);
      downsample_.push_back(conv);
    }
    down->push_back(level);
  }
  register_module("mid", mid_);
  register_module("norm_out", norm_out_);
  register_module("conv_out", conv_out_);
  nn::AllowWinogradIn(*this);
}

torch::Tensor VaeEncoderImpl::forward(const torch::Tensor& image) {
  torch::Tensor x = conv_in_(image);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    for (auto& block : blocks_[i]) x = block(x);
    if (i < downsample_.size()) x = downsample_[i](F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));  // LDM's asymmetric pad
  }
  x = mid_(x);
  x = norm_out_(x);
  return conv_out_(SiluFresh(x));
}

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& c)
    : conv_in_(c.z_channels, c.ch * c.ch_mult.back(), 3),
      conv_out_(c.ch * c.ch_mult.front(), c.out_channels, 3),
      mid_(c.ch * c.ch_mult.back(), c.norm_eps),
      norm_out_(c.ch * c.ch_mult.front(), c.norm_eps) {
  register_module("conv_in", conv_in_);
  register_module("mid", mid_);
  const size_t levels = c.ch_mult.size();
  blocks_.resize(levels);
  upsample_.resize(levels, nn::Conv2d(nullptr));
  std::vector<std::shared_ptr<torch::nn::Module>> up_levels(levels);
  int64_t ch = c.ch * c.ch_mult.back();
  for (size_t l = levels; l-- > 0;) {
    auto level = std::make_shared<torch::nn::Module>();
    auto block = level->register_module("block", torch::nn::ModuleList());
    for (int j = 0; j <= c.num_res_blocks; ++j) {
      VaeResnet r(ch, c.ch * c.ch_mult[l], c.norm_eps);
      block->push_back(r);
      blocks_[l].push_back(r);
      ch = c.ch * c.ch_mult[l];
    }
    if (l != 0) {
      upsample_[l] = nn::Conv2d(ch, ch, 3);
      level->register_module("upsample", std::make_shared<torch::nn::Module>())->register_module("conv", upsample_[l]);
    }
    up_levels[l] = level;
  }
  auto up = register_module("up", torch::nn::ModuleList());
  for (auto& level : up_levels) up->push_back(level);
  register_module("norm_out", norm_out_);
  register_module("conv_out", conv_out_);
  nn::AllowWinogradIn(*this);
}

torch::Tensor VaeDecoderImpl::forward(const torch::Tensor& z) {
  torch::Tensor x = mid_(conv_in_(z));
  // The up blocks work at 2x to 8x the latent's size with few channels, where oneDNN's fp32
  // convolutions run faster on channels-last (NHWC) tensors on some CPUs and slower on others
  // (conv_layout.h: measured once per process); group norm, SiLU, the residual adds and nearest
  // upsampling keep the layout. The result is returned in the usual layout.
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
      nn::ResolvedVaeConvLayout() == nn::ConvLayout::kNhwc) {
    x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  for (size_t l = blocks_.size(); l-- > 0;) {
    for (auto& block : blocks_[l]) x = block(x);
    if (l != 0) {
      x = upsample_[l]->ForwardUpsampled2x(x);  // conv(nearest 2x upsampling of x)
    }
  }
  x = norm_out_(x);
  return conv_out_(SiluFresh(x)).contiguous();
}

VaeImpl::VaeImpl(const VaeConfig& config)
    : config_(config), encoder_(config), decoder_(config),
      quant_conv_(2 * config.z_channels, 2 * config.embed_dim, 1),
      post_quant_conv_(config.embed_dim, config.z_channels, 1) {
  register_module("encoder", encoder_);
  register_module("decoder", decoder_);
  register_module("quant_conv", quant_conv_);
  register_module("post_quant_conv", post_quant_conv_);
}

torch::Tensor VaeImpl::EncodeMoments(const torch::Tensor& image) {
  return quant_conv_(encoder_(image));
}

torch::Tensor VaeImpl::DecodeUnscaled(const torch::Tensor& z) {
  return decoder_(post_quant_conv_(z));
}

absl::StatusOr<torch::Tensor> VaeImpl::Decode(const torch::Tensor& latents) {
  if (latents.dim() != 4 || latents.size(1) != config_.embed_dim || !latents.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat("VAE decoder: latents must be float [batch, ", config_.embed_dim,
                                                   ", h, w], got ", DescribeTensor(latents)));
  }
  if (absl::Status s = CheckFinite(latents, "VAE decoder: latents"); !s.ok()) return s;
  const auto& w = post_quant_conv_->weight;
  return RunGuarded("VAE decoder", [&] {
    torch::Tensor z = latents.to(w.device(), nn::ActivationDtype(w.scalar_type(), w.device())) / config_.scale_factor;
    return decoder_(post_quant_conv_(z)).to(torch::kFloat32);
  });
}

absl::StatusOr<torch::Tensor> VaeImpl::Encode(const torch::Tensor& image, const torch::Tensor& noise) {
  const int64_t f = downscale();
  if (image.dim() != 4 || image.size(1) != config_.in_channels || !image.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat("VAE encoder: image must be float [batch, ", config_.in_channels,
                                                   ", H, W], got ", DescribeTensor(image)));
  }
  if (image.size(2) % f != 0 || image.size(3) % f != 0 || image.size(2) == 0 || image.size(3) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("VAE encoder: image height and width must be positive multiples of ",
                                                   f, ", got ", image.size(2), "x", image.size(3)));
  }
  const std::vector<int64_t> want = {image.size(0), config_.embed_dim, image.size(2) / f, image.size(3) / f};
  if (noise.sizes().vec() != want || !noise.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat("VAE encoder: noise must be float [", want[0], ", ", want[1], ", ",
                                                   want[2], ", ", want[3], "], got ", DescribeTensor(noise)));
  }
  if (absl::Status s = CheckFinite(image, "VAE encoder: image"); !s.ok()) return s;
  if (absl::Status s = CheckFinite(noise, "VAE encoder: noise"); !s.ok()) return s;
  const auto& w = quant_conv_->weight;
  return RunGuarded("VAE encoder", [&] {
    torch::Tensor moments =
        quant_conv_(encoder_(image.to(w.device(), nn::ActivationDtype(w.scalar_type(), w.device()))));  // [B, 2z, h, w]
    torch::Tensor mean = moments.slice(1, 0, config_.embed_dim).to(torch::kFloat32);
    torch::Tensor logvar = moments.slice(1, config_.embed_dim).to(torch::kFloat32).clamp(-30.0, 20.0);
    torch::Tensor std = torch::exp(0.5 * logvar);
    return (mean + std * noise.to(mean.device(), torch::kFloat32)) * config_.scale_factor;
  });
}

namespace {

// Tile origins covering [0, size) with tiles of `tile` and at least about `overlap` shared: evenly spread,
// rounded down to multiples of `align`.
std::vector<int64_t> TileStarts(int64_t size, int64_t tile, int64_t overlap, int64_t align) {
  if (size <= tile) return {0};
  const int64_t stride = tile - overlap;
  const int64_t n = (size - overlap + stride - 1) / stride;  // tiles needed
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < n; ++i) starts.push_back(n == 1 ? 0 : (size - tile) * i / (n - 1) / align * align);
  return starts;
}

// Blending weights of a tile [len] along one axis: ramps up over `ramp` where a neighbour overlaps.
torch::Tensor Ramp(int64_t len, int64_t ramp, bool ramp_in, bool ramp_out) {
  torch::Tensor w = torch::ones({len});
  if (ramp <= 0) return w;
  torch::Tensor r = (torch::arange(ramp, torch::kFloat32) + 0.5) / ramp;
  if (ramp_in) w.slice(0, 0, ramp).mul_(r);
  if (ramp_out) w.slice(0, len - ramp, len).mul_(r.flip(0));
  return w;
}

// Runs `fn` on overlapping tiles of `input`'s last two dims (`tile`, `overlap` in input pixels) and blends the
// outputs, which are `scale` times the input's size (decoder 8, encoder 1/8).
absl::StatusOr<torch::Tensor> Tiled(const torch::Tensor& input, int64_t tile, int64_t overlap, int64_t align, double scale,
                                    const std::function<absl::StatusOr<torch::Tensor>(int64_t y, int64_t x, int64_t th,
                                                                                      int64_t tw)>& fn) {
  const int64_t h = input.size(2), w = input.size(3);
  const std::vector<int64_t> ys = TileStarts(h, tile, overlap, align), xs = TileStarts(w, tile, overlap, align);
  torch::Tensor out, weight;
  for (int64_t y : ys) {
    for (int64_t x : xs) {
      const int64_t th = std::min(tile, h), tw = std::min(tile, w);
      absl::StatusOr<torch::Tensor> part = fn(y, x, th, tw);
      if (!part.ok()) return part.status();
      const int64_t oy = static_cast<int64_t>(y * scale), ox = static_cast<int64_t>(x * scale);
      const int64_t oh = part->size(2), ow = part->size(3), ramp = static_cast<int64_t>(overlap * scale);
      if (!out.defined()) {
        out = torch::zeros({part->size(0), part->size(1), static_cast<int64_t>(h * scale), static_cast<int64_t>(w * scale)});
        weight = torch::zeros({1, 1, out.size(2), out.size(3)});
      }
      torch::Tensor wy = Ramp(oh, ramp, y > 0, y + th < h), wx = Ramp(ow, ramp, x > 0, x + tw < w);
      torch::Tensor m = (wy.unsqueeze(1) * wx.unsqueeze(0)).unsqueeze(0).unsqueeze(0);  // [1, 1, oh, ow]
      out.slice(2, oy, oy + oh).slice(3, ox, ox + ow).add_(part->to(torch::kFloat32) * m);
      weight.slice(2, oy, oy + oh).slice(3, ox, ox + ow).add_(m);
    }
  }
  return out / weight;
}

}  // namespace

absl::StatusOr<torch::Tensor> VaeImpl::DecodeTiled(const torch::Tensor& latents, int64_t tile, int64_t overlap) {
  if (tile <= 0 || overlap < 0 || overlap >= tile) {
    return absl::InvalidArgumentError(absl::StrCat("VAE decoder: tile ", tile, " and overlap ", overlap,
                                                   " must satisfy 0 <= overlap < tile"));
  }
  if (latents.dim() != 4) return Decode(latents);  // Decode reports the shape error
  if (latents.size(2) <= tile && latents.size(3) <= tile) return Decode(latents);
  c10::InferenceMode guard;
  return Tiled(latents, tile, overlap, 1, static_cast<double>(downscale()), [&](int64_t y, int64_t x, int64_t th, int64_t tw) {
    return Decode(latents.slice(2, y, y + th).slice(3, x, x + tw));
  });
}

absl::StatusOr<torch::Tensor> VaeImpl::EncodeTiled(const torch::Tensor& image, const torch::Tensor& noise, int64_t tile,
                                                   int64_t overlap) {
  const int64_t f = downscale();
  if (tile <= 0 || overlap < 0 || overlap >= tile || tile % f || overlap % f) {
    return absl::InvalidArgumentError(absl::StrCat("VAE encoder: tile ", tile, " and overlap ", overlap,
                                                   " must be multiples of ", f, " with 0 <= overlap < tile"));
  }
  if (image.dim() != 4 || (image.size(2) <= tile && image.size(3) <= tile)) return Encode(image, noise);
  if (noise.dim() != 4 || noise.size(2) * f != image.size(2) || noise.size(3) * f != image.size(3)) {
    return Encode(image, noise);  // reports the mismatch
  }
  c10::InferenceMode guard;
  return Tiled(image, tile, overlap, f, 1.0 / f, [&](int64_t y, int64_t x, int64_t th, int64_t tw) {
    return Encode(image.slice(2, y, y + th).slice(3, x, x + tw),
                  noise.slice(2, y / f, (y + th) / f).slice(3, x / f, (x + tw) / f));
  });
}

}  // namespace sd
