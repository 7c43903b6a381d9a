// Inpainting glue: masks as tensors, the masked image, and the latent blend of the mask-blend
// method.
//
// MaskToLatent: uint8 mask [H, W, C] (white = repaint) -> float [1, 1, H, W] in {0, 1} (`pixels`)
// and its 1/8-resolution version for the latents (`latent`: a latent pixel is repainted if any of
// its 8x8 image pixels is).
//   node { kind: "MaskToLatent" name: "mask" input: "mask=@mask" }
// MaskImage: image [1, 3, H, W] in [-1, 1] with the repainted pixels set to 0 (what 9-channel
// inpainting UNets are conditioned on). MaskBlend: after each sampler step, the known region is
// replaced by the original latents noised to the level the step reached (the sampler's next
// timestep; clean after the last step), so only the masked region is invented.
//   node { kind: "MaskBlend" name: "blend" input: "latents=step.latents" input:
//   "original=encode.latents"
//          input: "mask=mask.latent" input: "t=@loop.t" input: "steps=@steps" input:
//          "noise=blend_noise.noise" }
// MaskComposite: the final pixels, generated inside the mask and the original's outside, so the
// kept region is exactly the input (the VAE round trip would change it by a few levels); keep=0
// passes them through.
//   node { kind: "MaskComposite" name: "composite" input: "pixels=to_image.pixels" input:
//   "original=@init"
//          input: "mask=mask.pixels" input: "keep=@keep_unmasked" }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"
#include "nodes/ops/sampler_inputs.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

class MaskToLatent : public NodeKernel {
 public:
  static constexpr char kMask[] = "mask";
  static constexpr char kPixels[] = "pixels";
  static constexpr char kLatent[] = "latent";
  static NodeContract Contract() {
    return {{{kMask, TensorPort(v1::UINT8, 3), false, "uint8 [H, W, C], white = repaint"}},
            {{kPixels, TensorPort(v1::FLOAT32, 4), false, "[1, 1, H, W] in {0, 1}"},
             {kLatent, TensorPort(v1::FLOAT32, 4), false, "[1, 1, H/8, W/8] in {0, 1}"}},
            nullptr, "inpainting mask for pixels and latents"};
  }
  explicit MaskToLatent(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto m = in.Tensor(kMask);
    if (!m.ok()) return m.status();
    if (m->size(0) % 8 || m->size(1) % 8 || m->size(0) == 0 || m->size(1) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("MaskToLatent: mask size ", m->size(1), "x", m->size(0),
                                                     " is not a multiple of 8"));
    }
    torch::Tensor px = (m->to(torch::kFloat32).amax(2) >= 128.0f).to(torch::kFloat32).unsqueeze(0).unsqueeze(0);
    out[kPixels] = px;
    out[kLatent] = torch::max_pool2d(px, {8, 8});
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskToLatent);

class MaskImage : public NodeKernel {
 public:
  static constexpr char kImage[] = "image";
  static constexpr char kMask[] = "mask";
  static NodeContract Contract() {
    return {{{kImage, TensorPort(v1::FLOAT32, 4)}, {kMask, TensorPort(v1::FLOAT32, 4), false, "[1, 1, H, W]"}},
            {{kImage, TensorPort(v1::FLOAT32, 4)}}, nullptr, "the image with its repainted region set to 0"};
  }
  explicit MaskImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto image = in.Tensor(kImage);
    auto mask = in.Tensor(kMask);
    if (!image.ok()) return image.status();
    if (!mask.ok()) return mask.status();
    if (image->size(2) != mask->size(2) || image->size(3) != mask->size(3)) {
      return absl::InvalidArgumentError(absl::StrCat("MaskImage: image ", DescribeTensor(*image), " and mask ",
                                                     DescribeTensor(*mask), " differ in size"));
    }
    out[kImage] = *image * (1.0f - *mask);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskImage);

class MaskBlend : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kOriginal[] = "original";
  static constexpr char kMask[] = "mask";
  static constexpr char kT[] = "t";
  static constexpr char kSteps[] = "steps";
  static constexpr char kNoise[] = "noise";
  static NodeContract Contract() {
    NodeContract c{{{kLatents, TensorPort(v1::FLOAT32, 4), false, "after the sampler step"},
                    {kOriginal, TensorPort(v1::FLOAT32, 4), false, "the clean latents of the init image"},
                    {kMask, TensorPort(v1::FLOAT32, 4), false, "[1, 1, h, w], 1 = repaint"},
                    {kT, ScalarPort(v1::FLOAT), false, "the step's timestep"},
                    {kSteps, ScalarPort(v1::INT)},
                    {kNoise, TensorPort(v1::FLOAT32, 4)}},
                   {{kLatents, TensorPort(v1::FLOAT32, 4)}}, nullptr, "keep the known region, invent the masked one"};
    AddSamplerPorts(c);
    return c;
  }
  explicit MaskBlend(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    auto original = in.Tensor(kOriginal);
    auto mask = in.Tensor(kMask);
    auto t = in.Float(kT);
    auto steps = in.Int(kSteps);
    auto noise = in.Tensor(kNoise);
    auto spec = ReadSamplerSpec(in, "");
    for (const absl::Status& s : {latents.status(), original.status(), mask.status(), t.status(), steps.status(), noise.status(),
                                  spec.status()}) {
      if (!s.ok()) return s;
    }
    if (latents->sizes() != original->sizes() || mask->size(2) != latents->size(2) || mask->size(3) != latents->size(3)) {
      return absl::InvalidArgumentError(absl::StrCat("MaskBlend: latents ", DescribeTensor(*latents), ", original ",
                                                     DescribeTensor(*original), " and mask ", DescribeTensor(*mask),
                                                     " do not fit together"));
    }
    const NoiseSchedule* schedule = &NoiseSchedule::StableDiffusion();
    auto ts = SamplerTimesteps(*schedule, *spec, static_cast<int>(*steps));
    if (!ts.ok()) return ts.status();
    auto it = std::find_if(ts->begin(), ts->end(), [&](double v) { return std::abs(v - *t) < 1e-3; });
    if (it == ts->end()) return absl::InvalidArgumentError(absl::StrCat("MaskBlend: timestep ", *t, " is not in the schedule"));
    torch::Tensor known = *original;  // clean after the last step
    if (it + 1 != ts->end()) {
      auto noised = AddNoiseAt(*schedule, *original, *(it + 1), *noise);
      if (!noised.ok()) return noised.status();
      known = *noised;
    }
    out[kLatents] = *mask * *latents + (1.0f - *mask) * known;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskBlend);

class MaskComposite : public NodeKernel {
 public:
  static constexpr char kPixels[] = "pixels";
  static constexpr char kOriginal[] = "original";
  static constexpr char kMask[] = "mask";
  static constexpr char kKeep[] = "keep";
  static NodeContract Contract() {
    return {{{kPixels, TensorPort(v1::UINT8, 3), false, "the generated image, uint8 [H, W, 3]"},
             {kOriginal, TensorPort(v1::UINT8, 3), false, "the init image, uint8 [H, W, 3]"},
             {kMask, TensorPort(v1::FLOAT32, 4), false, "[1, 1, H, W], 1 = repaint"},
             {kKeep, ScalarPort(v1::INT), true, "0: pass `pixels` through unchanged (default 1)"}},
            {{kPixels, TensorPort(v1::UINT8, 3)}},
            nullptr,
            "the generated pixels inside the mask, the original's outside"};
  }
  explicit MaskComposite(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto px = in.Tensor(kPixels);
    auto original = in.Tensor(kOriginal);
    auto mask = in.Tensor(kMask);
    for (const absl::Status& s : {px.status(), original.status(), mask.status()}) {
      if (!s.ok()) return s;
    }
    int64_t keep = 1;
    if (in.Has(kKeep)) {
      auto k = in.Int(kKeep);
      if (!k.ok()) return k.status();
      keep = *k;
    }
    if (keep == 0) {
      out[kPixels] = *px;
      return absl::OkStatus();
    }
    if (px->sizes() != original->sizes() || mask->dim() != 4 || mask->size(2) != px->size(0) ||
        mask->size(3) != px->size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MaskComposite: pixels ", DescribeTensor(*px), ", original ", DescribeTensor(*original),
          " and mask ", DescribeTensor(*mask), " do not fit together"));
    }
    const torch::Tensor repaint = (*mask)[0][0].unsqueeze(-1) > 0.5f;  // [H, W, 1]
    out[kPixels] = torch::where(repaint, *px, *original).contiguous();
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskComposite);

}  // namespace sd
