// ControlNet in graphs: ControlHint turns a picture (an edge map, a depth or normal pass) into the
// hint at 8x the latents' size, ControlNet turns the hint, the latents, the timestep and a text
// context into residuals (one tensor: every residual flattened and joined, PackControl) that a
// UNetStep adds.
//
//   node { kind: "ControlHint" name: "hint" input: "pixels=@hint" input: "latents=noise.noise" }
//   loop { ...
//     node { kind: "ControlNet" name: "control_cond" input: "hint=hint.hint" input:
//     "latents=@loop.latents"
//            input: "t=@loop.t" input: "context=cond.context" input: "strength=@control_strength" }
//     node { kind: "UNetStep" name: "unet_cond" ... input: "control=control_cond.residuals" }
//   }
//
// The ControlNet file is the run's model reference's `control=` part number `index` (the node's
// ControlNetOptions; model_ref.h), so
// workers agree on it by hash like on the checkpoint. Several ControlNets: chain them through
// `residuals` (each adds its own). `start`/`end` are the part of the denoising where it acts, as
// fractions (0 = the first step, 1 = the last), measured on the timestep: progress = 1 - t / 999,
// as ComfyUI's start/end percent.
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/image_resize.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "nodes/weights/model_ref.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {
namespace {

// Whether both configurations have the same trunk (a ControlNet is a copy of its UNet's encoder).
bool SameTrunk(const UNetConfig& a, const UNetConfig& b) {
  return a.model_channels == b.model_channels && a.channel_mult == b.channel_mult &&
         a.num_res_blocks == b.num_res_blocks && a.attention == b.attention &&
         a.transformer_depth == b.transformer_depth && a.context_dim == b.context_dim;
}

}  // namespace

class ControlNetNode : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kHint{"hint", v1::FLOAT32, "?,?,8*h,8*w",
                                              "[1 or B, 3, 8h, 8w] in [0, 1] (ControlHint)"};
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w",
                                                 "[B, 4, h, w], as the UNet step gets them"};
  static constexpr Input<double> kT{"t", "timestep"};
  static constexpr Input<torch::Tensor> kContext{"context", v1::FLOAT32, "?,T,D",
                                                 "the text context of the UNet step it steers"};
  static constexpr OptionalInput<double> kStrength{"strength",
                                                   "scale of the residuals (default 1; 0: off)"};
  static constexpr OptionalInput<double> kStart{
      "start", "acts from this fraction of the denoising (default 0)"};
  static constexpr OptionalInput<double> kEnd{"end", "until this fraction (default 1)"};
  static constexpr OptionalInput<int64_t> kGuessMode{
      "guess_mode", "1: residual i scaled by strength * 0.825^(12 - i) (the original guess mode)"};
  static constexpr OptionalInput<int64_t> kActive{
      "active",
      "0: off (passes `residuals` on, or zeros); the stock graphs steer the unconditional half "
      "only when "
      "control_uncond is 1"};
  static constexpr OptionalInput<torch::Tensor> kPrevious{
      "residuals", v1::FLOAT32, "?,N", "another ControlNet's, added to this one's"};
  static constexpr Output<torch::Tensor> kResiduals{"residuals", v1::FLOAT32, "?,N",
                                                    "[1 or B, N]: every residual, packed"};
  static NodeContract Contract() {
    return {Ports(kHint, kLatents, kT, kContext, kStrength, kStart, kEnd, kGuessMode, kActive,
                  kPrevious),
            Ports(kResiduals), v1::ControlNetOptions::descriptor(),
            "ControlNet: residuals that steer a UNet step toward a hint image", true};
  }
  explicit ControlNetNode(const google::protobuf::Any& options)
      : index_(UnpackOptions<v1::ControlNetOptions>(options).index()) {}
  absl::Status Open(RunContext& ctx) override {
    ctx_ = ctx;
    SD_ASSIGN_OR_RETURN(net_, Network(index_));
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor latents = in[kLatents];
    const double t = in[kT], strength = in[kStrength].value_or(1.0),
                 start = in[kStart].value_or(0.0), end = in[kEnd].value_or(1.0);
    const int64_t guess = in[kGuessMode].value_or(0), active = in[kActive].value_or(1);
    if (!std::isfinite(strength) || !(start >= 0 && start <= end && end <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ControlNet: strength ", strength, ", start ", start, ", end ", end,
                       ": need a finite strength and 0 <= start <= end <= 1"));
    }
    const UNetConfig& u = net_->config().unet;
    const int64_t h = latents.size(2), w = latents.size(3);
    const torch::Tensor previous = in[kPrevious].value_or(torch::Tensor());
    if (previous.defined()) SD_RETURN_IF_ERROR(UnpackControl(previous, u, h, w).status());
    const double progress = 1.0 - t / 999.0;
    if (active == 0 || strength == 0 || progress < start - 1e-9 || progress > end + 1e-9) {
      out.Set(kResiduals, previous.defined() ? previous : PackControl(Zeros(u, h, w)));
      return absl::OkStatus();
    }
    SD_ASSIGN_OR_RETURN(
        std::vector<torch::Tensor> residuals,
        net_->Predict(latents, in[kHint], torch::tensor({t}, torch::kFloat64).to(torch::kFloat32),
                      in[kContext]));
    const std::vector<double> scales = ControlScales(residuals.size(), strength, guess != 0);
    for (size_t i = 0; i < residuals.size(); ++i) residuals[i] = residuals[i] * scales[i];
    torch::Tensor packed = PackControl(residuals);
    if (previous.defined()) {
      if (previous.size(0) != 1 && previous.size(0) != packed.size(0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ControlNet: the residuals given have batch ", previous.size(0),
                         ", this one's ", packed.size(0)));
      }
      packed = packed + previous;
    }
    out.Set(kResiduals, packed);
    return absl::OkStatus();
  }

 private:
  static std::vector<torch::Tensor> Zeros(const UNetConfig& u, int64_t h, int64_t w) {
    std::vector<torch::Tensor> z;
    for (const auto& s : ControlResidualShapes(u, h, w))
      z.push_back(torch::zeros({1, s[0], s[1], s[2]}));
    return z;
  }
  // ControlNet `index` of the run's model reference, checked against the checkpoint's UNet.
  absl::StatusOr<ControlNet> Network(int64_t index) {
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(ctx_.checkpoint));
    if (index < 0 || index >= static_cast<int64_t>(ref.controls.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("ControlNet: the model reference names ", ref.controls.size(),
                       " ControlNet file(s); index ", index, " is out of range",
                       ref.controls.empty() ? " (sd-graph: --controlnet FILE)" : ""));
    }
    const std::string& file = ref.controls[static_cast<size_t>(index)];
    SD_ASSIGN_OR_RETURN(ControlNet net, ctx_.models->GetControlNet(file, ctx_.dtype, ctx_.device));
    SD_ASSIGN_OR_RETURN(std::shared_ptr<const ModelCache::Entry> base, ctx_.models->Open(ref.base));
    if (!SameTrunk(net->config().unet, base->config.unet)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ControlNet ", file, " was made for another model than ", ref.base, " (its UNet copy: ",
          net->config().unet.model_channels, " channels, context ", net->config().unet.context_dim,
          "; the checkpoint's UNet: ", base->config.unet.model_channels, " channels, context ",
          base->config.unet.context_dim, ")"));
    }
    return net;
  }
  int64_t index_;
  RunContext ctx_;
  ControlNet net_{nullptr};
};
// Registered under the name graphs use (ControlNet is the network's class).
extern const bool sd_node_registered_ControlNet;
const bool sd_node_registered_ControlNet = internal::RegisterOrDie(
    NodeKind{"ControlNet", [] { return ControlNetNode::Contract(); },
             [](const google::protobuf::Any& o) -> std::unique_ptr<NodeKernel> {
               return std::make_unique<ControlNetNode>(o);
             }});

class ControlHint : public NodeKernel {
 public:
  static constexpr OptionalInput<torch::Tensor> kPixels{
      "pixels", v1::UINT8, "?,?,?", "uint8 [H, W, C], C = 1 (grey), 3 or 4 (alpha dropped)"};
  static constexpr OptionalInput<torch::Tensor> kImage{
      "image", v1::FLOAT32, "1,?,?,?",
      "instead of pixels: an image tensor [1, C, H, W] in [-1, 1]"};
  static constexpr OptionalInput<torch::Tensor> kValues{
      "values", v1::FLOAT32, "?,?,?",
      "float [H, W, C] instead of pixels: a render pass (see `normalize`)"};
  static constexpr OptionalInput<std::string> kNormalize{
      "normalize",
      "for values: none (default; clamped to [0, 1]), depth (distances: near = white, far = black, "
      "min-max over "
      "the finite values), normal (unit normals in [-1, 1] -> (n + 1) / 2)"};
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "?,?,h,w",
                                                 "the hint is made 8x their height and width"};
  static constexpr OptionalInput<std::string> kMethod{"method", kResizeMethods};
  static constexpr OptionalInput<std::string> kCrop{
      "crop", "center (default: fill, centre-cropped) or disabled (stretch)"};
  static constexpr Output<torch::Tensor> kHint{"hint", v1::FLOAT32, "1,3,8*h,8*w",
                                               "[1, 3, 8h, 8w] in [0, 1]"};
  static NodeContract Contract() {
    return {Ports(kPixels, kImage, kValues, kNormalize, kLatents, kMethod, kCrop), Ports(kHint),
            nullptr, "a picture as a ControlNet hint, at the working size"};
  }
  explicit ControlHint(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor latents = in[kLatents];
    const std::string method = in[kMethod].value_or("nearest-exact"),
                      crop = in[kCrop].value_or("center");
    SD_ASSIGN_OR_RETURN(torch::Tensor x, Unit(in));  // [H, W, C] in [0, 1]
    if (x.size(0) < 1 || x.size(1) < 1 || x.size(2) < 1 || x.size(2) > 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("ControlHint: the picture must be [H, W, 1 to 4], got ", DescribeTensor(x)));
    }
    if (x.size(2) == 4) x = x.narrow(2, 0, 3);
    if (x.size(2) == 2) x = x.narrow(2, 0, 1);  // grey + alpha
    if (x.size(2) == 1) x = x.expand({x.size(0), x.size(1), 3});
    x = x.permute({2, 0, 1}).unsqueeze(0).contiguous();
    SD_ASSIGN_OR_RETURN(torch::Tensor hint, Rescale(x, method, 8 * latents.size(3),
                                                    8 * latents.size(2), crop, "ControlHint"));
    out.Set(kHint, hint.clamp(0, 1));
    return absl::OkStatus();
  }

 private:
  static absl::StatusOr<torch::Tensor> Unit(const NodeInputs& in) {
    const std::optional<torch::Tensor> pixels = in[kPixels], image = in[kImage],
                                       values = in[kValues];
    if (int(pixels.has_value()) + int(values.has_value()) + int(image.has_value()) != 1) {
      return absl::InvalidArgumentError(
          "ControlHint: give `pixels`, `image` or `values`, one of them");
    }
    if (image) return (((*image)[0].permute({1, 2, 0}).to(torch::kFloat32) + 1) / 2).clamp(0, 1);
    if (pixels) return pixels->to(torch::kFloat32) / 255.0;
    const std::string normalize = in[kNormalize].value_or("none");
    const torch::Tensor v = values->to(torch::kFloat32);
    if (normalize == "none") return torch::nan_to_num(v, 0.0, 1.0, 0.0).clamp(0, 1);
    if (normalize == "normal") return ((torch::nan_to_num(v, 0.0, 1.0, -1.0) + 1) / 2).clamp(0, 1);
    if (normalize != "depth") {
      return absl::InvalidArgumentError(
          absl::StrCat("ControlHint: normalize '", normalize, "' is none of none, depth, normal"));
    }
    // One channel of distances (the first, for an RGB-stored Z pass); infinity is the background.
    torch::Tensor d = v.narrow(2, 0, 1);
    torch::Tensor finite = torch::isfinite(d);
    if (!finite.any().item<bool>()) return torch::zeros_like(d);
    const double near = d.masked_select(finite).min().item<double>(),
                 far = d.masked_select(finite).max().item<double>();
    torch::Tensor unit = far > near ? (far - d) / (far - near) : torch::ones_like(d);
    return torch::where(finite, unit, torch::zeros_like(d)).clamp(0, 1);
  }
};
SD_REGISTER_NODE(ControlHint);

}  // namespace sd
