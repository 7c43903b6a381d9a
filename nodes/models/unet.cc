#include "nodes/models/unet.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/status_macros.h"
#include "nodes/kernels/geglu_cpu.h"
#include "nodes/models/model_util.h"
#include "nodes/models/upsample_conv.h"

namespace sd {

torch::Tensor TimestepEmbedding(const torch::Tensor& timesteps, int64_t dim) {
  const int64_t half = dim / 2;
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device());
  torch::Tensor freqs = torch::pow(10000.0, -torch::arange(0, half, options) / static_cast<double>(half));
  torch::Tensor args = timesteps.to(torch::kFloat32).reshape({-1, 1}) * freqs.unsqueeze(0);  // [N, half]
  return torch::cat({torch::cos(args), torch::sin(args)}, -1);
}

namespace {

// value * gelu(gate) of the feed-forward projection [..., 8C] (value, then gate): in one pass by
// kernels::Geglu for f32 inference on a CPU, unless SD_CPU_GEGLU=aten; else LibTorch's ops (the
// only differentiable form, and other dtypes and devices).
torch::Tensor Geglu(const torch::Tensor& vg) {
  const char* mode = std::getenv("SD_CPU_GEGLU");
  if (c10::InferenceMode::is_enabled() && vg.device().is_cpu() &&
      vg.scalar_type() == torch::kFloat32 && vg.is_contiguous() && vg.numel() > 0 &&
      vg.size(-1) % 2 == 0 && (mode == nullptr || std::strcmp(mode, "aten") != 0)) {
    const int64_t width = vg.size(-1) / 2;
    std::vector<int64_t> shape = vg.sizes().vec();
    shape.back() = width;
    torch::Tensor out = torch::empty(shape, vg.options());
    kernels::Geglu(vg.data_ptr<float>(), vg.numel() / vg.size(-1), width, out.data_ptr<float>(),
                   at::get_num_threads());
    return out;
  }
  const std::vector<torch::Tensor> halves = vg.chunk(2, -1);
  return halves[0] * torch::gelu(halves[1]);
}

// A module that only holds `conv` under `name` (Downsample's "op", Upsample's "conv").
std::shared_ptr<torch::nn::Module> Holding(const std::string& name, nn::Conv2d conv) {
  auto m = std::make_shared<torch::nn::Module>();
  m->register_module(name, conv);
  return m;
}

}  // namespace

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t emb, double eps)
    : in_norm_(in, eps), out_norm_(out, eps), in_conv_(in, out, 3), out_conv_(out, out, 3), emb_linear_(emb, out) {
  auto in_layers = register_module("in_layers", torch::nn::ModuleList());
  in_layers->push_back(in_norm_);
  in_layers->push_back(torch::nn::SiLU());
  in_layers->push_back(in_conv_);
  auto emb_layers = register_module("emb_layers", torch::nn::ModuleList());
  emb_layers->push_back(torch::nn::SiLU());
  emb_layers->push_back(emb_linear_);
  auto out_layers = register_module("out_layers", torch::nn::ModuleList());
  out_layers->push_back(out_norm_);
  out_layers->push_back(torch::nn::SiLU());
  out_layers->push_back(torch::nn::Identity());  // dropout in training
  out_layers->push_back(out_conv_);
  if (in != out) skip_ = register_module("skip_connection", nn::Conv2d(in, out, 1));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& emb) {
  torch::Tensor h = in_conv_(torch::silu(in_norm_(x)));                    // [B, out, H, W]
  h = h + emb_linear_(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);       // + [B, out, 1, 1]
  h = out_conv_(torch::silu(out_norm_(h)));
  return (skip_ ? skip_(x) : x) + h;
}

TransformerBlockImpl::TransformerBlockImpl(int64_t c, int64_t context_dim, int64_t heads)
    : heads_(heads),
      q1_(c, c, false), k1_(c, c, false), v1_(c, c, false), out1_(c, c),
      q2_(c, c, false), k2_(context_dim, c, false), v2_(context_dim, c, false), out2_(c, c),
      geglu_(c, 8 * c), ff_out_(4 * c, c),
      norm1_(c), norm2_(c), norm3_(c) {
  auto attention = [this](const char* name, nn::Linear q, nn::Linear k, nn::Linear v, nn::Linear out) {
    auto a = register_module(name, std::make_shared<torch::nn::Module>());
    a->register_module("to_q", q);
    a->register_module("to_k", k);
    a->register_module("to_v", v);
    auto to_out = a->register_module("to_out", torch::nn::ModuleList());
    to_out->push_back(out);
  };
  attention("attn1", q1_, k1_, v1_, out1_);
  auto ff = register_module("ff", std::make_shared<torch::nn::Module>());
  auto net = ff->register_module("net", torch::nn::ModuleList());
  auto geglu = std::make_shared<torch::nn::Module>();
  geglu->register_module("proj", geglu_);
  net->push_back(geglu);
  net->push_back(torch::nn::Identity());  // dropout in training
  net->push_back(ff_out_);
  attention("attn2", q2_, k2_, v2_, out2_);
  register_module("norm1", norm1_);
  register_module("norm2", norm2_);
  register_module("norm3", norm3_);
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& context) {
  torch::Tensor h = norm1_(x_in);
  torch::Tensor x = x_in + out1_(nn::Attention(q1_(h), k1_(h), v1_(h), heads_));
  h = norm2_(x);
  x = x + out2_(nn::Attention(q2_(h), k2_(context), v2_(context), heads_));
  return x + ff_out_(Geglu(geglu_(norm3_(x))));  // value, gate: [B, T, 4C] each
}

SpatialTransformerImpl::SpatialTransformerImpl(int64_t channels, const UNetConfig& c)
    : norm_(channels, c.transformer_norm_eps), proj_in_(channels, channels, 1), proj_out_(channels, channels, 1) {
  register_module("norm", norm_);
  register_module("proj_in", proj_in_);
  auto blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int d = 0; d < c.transformer_depth; ++d) {
    blocks_.emplace_back(channels, c.context_dim, c.num_heads);
    blocks->push_back(blocks_.back());
  }
  register_module("proj_out", proj_out_);
}

torch::Tensor SpatialTransformerImpl::forward(const torch::Tensor& x_in, const torch::Tensor& context) {
  const int64_t b = x_in.size(0), c = x_in.size(1), h = x_in.size(2), w = x_in.size(3);
  torch::Tensor x = proj_in_(norm_(x_in)).reshape({b, c, h * w}).transpose(1, 2);  // [B, HW, C]
  for (auto& block : blocks_) x = block(x, context);
  x = x.transpose(1, 2).reshape({b, c, h, w});
  return proj_out_(x) + x_in;
}

void UNetStageImpl::AddResBlock(ResBlock b) { layers_.emplace_back(Kind::kRes, register_module(NextName(), b.ptr())); }
void UNetStageImpl::AddTransformer(SpatialTransformer t) {
  layers_.emplace_back(Kind::kTransformer, register_module(NextName(), t.ptr()));
}
void UNetStageImpl::AddDownsample(int64_t ch) {
  layers_.emplace_back(Kind::kDown, register_module(NextName(), Holding("op", nn::Conv2d(ch, ch, 3, 2, 1))));
}
void UNetStageImpl::AddUpsample(int64_t ch) {
  layers_.emplace_back(Kind::kUp, register_module(NextName(), Holding("conv", nn::Conv2d(ch, ch, 3))));
}
void UNetStageImpl::AddConv(nn::Conv2d c) { layers_.emplace_back(Kind::kConv, register_module(NextName(), c.ptr())); }

torch::Tensor UNetStageImpl::forward(torch::Tensor x, const torch::Tensor& emb, const torch::Tensor& context) {
  for (auto& [kind, m] : layers_) {
    switch (kind) {
      case Kind::kRes: x = std::static_pointer_cast<ResBlockImpl>(m)->forward(x, emb); break;
      case Kind::kTransformer: x = std::static_pointer_cast<SpatialTransformerImpl>(m)->forward(x, context); break;
      case Kind::kDown: x = m->children()[0]->as<nn::Conv2d>()->forward(x); break;
      case Kind::kUp:
        x = m->children()[0]->as<nn::Conv2d>()->forward(nn::Nearest2x(x));
        break;
      case Kind::kConv: x = std::static_pointer_cast<nn::Conv2dImpl>(m)->forward(x); break;
    }
  }
  return x;
}

UNetTrunk::UNetTrunk(torch::nn::Module& owner, const UNetConfig& c)
    : model_channels(c.model_channels),
      time_embed_0(c.model_channels, 4 * c.model_channels),
      time_embed_2(4 * c.model_channels, 4 * c.model_channels) {
  const int64_t mc = c.model_channels, emb = 4 * mc;
  const double eps = c.resblock_norm_eps;
  auto time_embed = owner.register_module("time_embed", torch::nn::ModuleList());
  time_embed->push_back(time_embed_0);
  time_embed->push_back(torch::nn::SiLU());
  time_embed->push_back(time_embed_2);

  auto input = owner.register_module("input_blocks", torch::nn::ModuleList());
  auto add_input = [&](UNetStage s, int64_t ch) {
    input_blocks.push_back(s);
    input->push_back(s);
    skip_channels.push_back(ch);
  };
  UNetStage first;
  first->AddConv(nn::Conv2d(c.in_channels, mc, 3));
  add_input(first, mc);
  int64_t ch = mc;
  const size_t levels = c.channel_mult.size();
  for (size_t level = 0; level < levels; ++level) {
    for (int r = 0; r < c.num_res_blocks; ++r) {
      UNetStage s;
      const int64_t out = mc * c.channel_mult[level];
      s->AddResBlock(ResBlock(ch, out, emb, eps));
      ch = out;
      if (c.attention[level]) s->AddTransformer(SpatialTransformer(ch, c));
      add_input(s, ch);
    }
    if (level + 1 != levels) {
      UNetStage s;
      s->AddDownsample(ch);
      add_input(s, ch);
    }
  }
  middle_block->AddResBlock(ResBlock(ch, ch, emb, eps));
  middle_block->AddTransformer(SpatialTransformer(ch, c));
  middle_block->AddResBlock(ResBlock(ch, ch, emb, eps));
  owner.register_module("middle_block", middle_block);
}

torch::Tensor UNetTrunk::Embed(const torch::Tensor& timesteps, torch::ScalarType dtype) {
  torch::Tensor t_emb = TimestepEmbedding(timesteps, model_channels).to(dtype);  // [N, mc]
  return time_embed_2(torch::silu(time_embed_0(t_emb)));                         // [N, 4mc]
}

std::vector<std::vector<int64_t>> ControlResidualShapes(const UNetConfig& c, int64_t h, int64_t w) {
  std::vector<std::vector<int64_t>> shapes = {{c.model_channels, h, w}};
  const size_t levels = c.channel_mult.size();
  for (size_t level = 0; level < levels; ++level) {
    const int64_t ch = int64_t{c.model_channels} * c.channel_mult[level];
    for (int r = 0; r < c.num_res_blocks; ++r) shapes.push_back({ch, h, w});
    if (level + 1 != levels) {
      h = (h + 1) / 2;  // a 3x3 convolution of stride 2 and padding 1
      w = (w + 1) / 2;
      shapes.push_back({ch, h, w});
    }
  }
  shapes.push_back({int64_t{c.model_channels} * c.channel_mult.back(), h, w});
  return shapes;
}

UNetImpl::UNetImpl(const UNetConfig& c)
    : config_(c),
      trunk_(*this, c),
      out_norm_(c.model_channels, c.resblock_norm_eps),
      out_conv_(c.model_channels, c.out_channels, 3) {
  const int64_t mc = c.model_channels, emb = 4 * mc;
  const double eps = c.resblock_norm_eps;
  std::vector<int64_t> skip_chans = trunk_.skip_channels;
  int64_t ch = skip_chans.back();
  const size_t levels = c.channel_mult.size();
  auto output = register_module("output_blocks", torch::nn::ModuleList());
  for (size_t level = levels; level-- > 0;) {
    for (int r = 0; r <= c.num_res_blocks; ++r) {
      UNetStage s;
      const int64_t out = mc * c.channel_mult[level];
      s->AddResBlock(ResBlock(ch + skip_chans.back(), out, emb, eps));
      skip_chans.pop_back();
      ch = out;
      if (c.attention[level]) s->AddTransformer(SpatialTransformer(ch, c));
      if (level != 0 && r == c.num_res_blocks) s->AddUpsample(ch);
      output_blocks_.push_back(s);
      output->push_back(s);
    }
  }
  auto out = register_module("out", torch::nn::ModuleList());
  out->push_back(out_norm_);
  out->push_back(torch::nn::SiLU());
  out->push_back(out_conv_);
  nn::AllowWinogradIn(*this);
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                                const torch::Tensor& context,
                                const std::vector<torch::Tensor>& control) {
  torch::Tensor emb = trunk_.Embed(timesteps, x.scalar_type());
  if (emb.size(0) != x.size(0)) emb = emb.expand({x.size(0), emb.size(1)});
  torch::Tensor ctx = context.size(0) == x.size(0) ? context : context.expand({x.size(0), context.size(1), context.size(2)});
  std::vector<torch::Tensor> skips;
  torch::Tensor h = x;
  for (auto& block : trunk_.input_blocks) {
    h = block(h, emb, ctx);
    skips.push_back(h);
  }
  h = trunk_.middle_block(h, emb, ctx);
  if (!control.empty()) h = h + control.back();
  for (auto& block : output_blocks_) {
    torch::Tensor skip = skips.back();
    if (!control.empty()) skip = skip + control[skips.size() - 1];
    h = block(torch::cat({h, skip}, 1), emb, ctx);
    skips.pop_back();
  }
  return out_conv_(torch::silu(out_norm_(h)));
}

absl::StatusOr<torch::Tensor> UNetImpl::Predict(const torch::Tensor& latents,
                                                const torch::Tensor& timesteps,
                                                const torch::Tensor& context,
                                                const std::vector<torch::Tensor>& control) {
  const int64_t m = multiple();
  if (latents.dim() != 4 || latents.size(1) != config_.in_channels || !latents.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat("UNet: latents must be float [batch, ", config_.in_channels,
                                                   ", h, w], got ", DescribeTensor(latents)));
  }
  if (latents.size(0) < 1 || latents.size(2) < m || latents.size(3) < m || latents.size(2) % m != 0 ||
      latents.size(3) % m != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "UNet: latent height and width must be positive multiples of ", m, " (the UNet halves them ",
        config_.channel_mult.size() - 1, " times exactly; images must be multiples of ", 8 * m, " pixels), got ",
        latents.size(2), "x", latents.size(3)));
  }
  if (context.dim() != 3 || context.size(2) != config_.context_dim || !context.is_floating_point() ||
      (context.size(0) != latents.size(0) && context.size(0) != 1) || context.size(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("UNet: context must be float [", latents.size(0), " or 1, tokens, ",
                                                   config_.context_dim, "], got ", DescribeTensor(context)));
  }
  if (timesteps.numel() != 1 && timesteps.numel() != latents.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat("UNet: expected 1 or ", latents.size(0), " timesteps, got ",
                                                   timesteps.numel()));
  }
  for (const auto& [t, what] : {std::pair{latents, "latents"}, {context, "context"}, {timesteps, "timesteps"}}) {
    if (absl::Status s = CheckFinite(t, absl::StrCat("UNet: ", what)); !s.ok()) return s;
  }
  if (!control.empty()) SD_RETURN_IF_ERROR(CheckControl(control, latents));
  const auto& w = trunk_.time_embed_0->weight;
  return RunGuarded("UNet", [&] {
    const auto dtype = nn::ActivationDtype(w.scalar_type(), w.device());
    std::vector<torch::Tensor> residuals;
    for (const torch::Tensor& r : control) residuals.push_back(r.to(w.device(), dtype));
    return forward(latents.to(w.device(), dtype), timesteps.to(w.device()),
                   context.to(w.device(), dtype), residuals)
        .to(torch::kFloat32);
  });
}

absl::Status UNetImpl::CheckControl(const std::vector<torch::Tensor>& control,
                                    const torch::Tensor& latents) const {
  const auto shapes = ControlResidualShapes(config_, latents.size(2), latents.size(3));
  if (control.size() != shapes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("UNet: expected ", shapes.size(),
                                                   " ControlNet residuals, got ", control.size()));
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    const torch::Tensor& r = control[i];
    if (r.dim() != 4 || !r.is_floating_point() ||
        (r.size(0) != 1 && r.size(0) != latents.size(0)) || r.sizes().slice(1).vec() != shapes[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat("UNet: ControlNet residual ", i, " must be float [1 or ", latents.size(0),
                       ", ", absl::StrJoin(shapes[i], ", "), "] for latents of ", latents.size(2),
                       "x", latents.size(3), ", got ", DescribeTensor(r)));
    }
  }
  return absl::OkStatus();
}

}  // namespace sd
