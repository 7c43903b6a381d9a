// Noise: the randomness of a run, as an explicit tensor. Draw `offset + index` of a sequence of
// latent-shaped float32 draws from the torch CPU generator seeded with `seed`: the reference's order, so a
// seed reproduces the reference image (txt2img: draw 0 is the initial latent, draw 1 + i the noise of step
// i). With `table` wired, returns row `offset + index` of it instead.
//   node { kind: "Noise" name: "step_noise" input: "seed=@seed" input: "height=@height"
//          input: "width=@width" input: "index=@loop.index"
//          options { [type.googleapis.com/sd.v1.NoiseOptions] { offset: 1 } } }
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class Noise : public NodeKernel {
 public:
  static constexpr Input<int64_t> kSeed{"seed"};
  static constexpr OptionalInput<int64_t> kHeight{"height",
                                                  "image height in pixels (or wire `like`)"};
  static constexpr OptionalInput<int64_t> kWidth{"width", "image width in pixels (or wire `like`)"};
  static constexpr OptionalInput<torch::Tensor> kLike{"like", v1::FLOAT32, "?,?,?,?",
                                                      "an image [B, C, H, W] whose H and W to use"};
  static constexpr OptionalInput<torch::Tensor> kLatents{
      "latents", v1::FLOAT32, "B,C,h,w",
      "latents [B, C, h, w] to draw noise shaped like (one draw)"};
  static constexpr OptionalInput<int64_t> kBatchIndex{
      "batch_index",
      "with latents: element k of the batch gets draw batch_index + k of one image (ComfyUI's "
      "batch_index)"};
  static constexpr OptionalInput<int64_t> kIndex{"index"};
  static constexpr OptionalInput<double> kT{
      "t", "the sampler's timestep: at t = 0 the reference draws nothing (zeros)"};
  static constexpr OptionalInput<torch::Tensor> kTable{"table", v1::FLOAT32, "",
                                                       "recorded draws [K, ...]"};
  static constexpr OptionalInput<int64_t> kOffset{
      "offset", "added to the options' offset (a subgraph's caller can say which draws are its)"};
  static constexpr OptionalInput<int64_t> kSeedOffset{"seed_offset",
                                                      "added to the options' seed_offset"};
  static constexpr Output<torch::Tensor> kNoise{
      "noise", v1::FLOAT32, "B,C,h,w", "[1, 4, height/8, width/8] (or the latents' shape)"};
  static NodeContract Contract() {
    return {Ports(kSeed, kHeight, kWidth, kLike, kLatents, kBatchIndex, kIndex, kT, kTable, kOffset,
                  kSeedOffset),
            Ports(kNoise), v1::NoiseOptions::descriptor(),
            "seeded Gaussian noise in the reference's draw order"};
  }
  static constexpr int64_t kMaxChannels = 64;  // a bound on what a request can make us draw
  static constexpr int64_t kMaxBatch = 64;
  explicit Noise(const google::protobuf::Any& options) : options_(UnpackOptions<v1::NoiseOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    // Every term is bounded, so the sums cannot overflow; the draw index is checked below.
    constexpr int64_t kMaxTerm = 100000;
    if (options_.offset() < -kMaxTerm || options_.offset() > kMaxTerm) {
      return absl::InvalidArgumentError(
          absl::StrCat("Noise: options offset ", options_.offset(), " out of range"));
    }
    int64_t index = options_.offset();
    uint64_t seed_offset = static_cast<uint64_t>(options_.seed_offset());
    for (const OptionalInput<int64_t>* port : {&kIndex, &kOffset, &kSeedOffset}) {
      const std::optional<int64_t> i = in[*port];
      if (!i) continue;
      if (*i < -kMaxTerm || *i > kMaxTerm)
        return absl::InvalidArgumentError(
            absl::StrCat("Noise: ", port->name(), " ", *i, " out of range"));
      if (port == &kSeedOffset) {
        seed_offset += static_cast<uint64_t>(*i);  // wraps, as seed + seed_offset does
      } else {
        index += *i;
      }
    }
    int64_t channels = options_.channels() > 0 ? options_.channels() : 4;
    if (channels > kMaxChannels) {
      return absl::InvalidArgumentError(absl::StrCat("Noise: channels ", channels, " is more than ",
                                                     kMaxChannels, " (SD latents have 4)"));
    }
    int64_t h = 0, w = 0, batch = 1;
    if (const std::optional<torch::Tensor> latents = in[kLatents]) {
      if (latents->size(0) > kMaxBatch || latents->size(1) > kMaxChannels) {
        return absl::InvalidArgumentError(
            absl::StrCat("Noise: latents ", DescribeTensor(*latents), " must be at most ",
                         kMaxBatch, " latent images of at most ", kMaxChannels, " channels"));
      }
      batch = latents->size(0);
      channels = latents->size(1);
      h = latents->size(2) * 8;
      w = latents->size(3) * 8;
    } else if (const std::optional<torch::Tensor> like = in[kLike]) {
      h = like->size(2);
      w = like->size(3);
    } else {
      if (!in[kHeight] || !in[kWidth]) {
        return absl::InvalidArgumentError(absl::StrCat("input '",
                                                       in[kHeight] ? kWidth.name() : kHeight.name(),
                                                       "' is not set (nor 'like' or 'latents')"));
      }
      h = *in[kHeight];
      w = *in[kWidth];
    }
    if (h <= 0 || w <= 0 || h % 8 || w % 8) {
      return absl::InvalidArgumentError(absl::StrCat("Noise: height and width must be positive multiples of 8, got ", h, "x", w));
    }
    if (in[kT] == 0.0) {  // no draw: the sampler adds no noise at t = 0
      out.Set(kNoise, torch::zeros({batch, channels, h / 8, w / 8}));
      return absl::OkStatus();
    }
    if (index < 0 || index > 100000) return absl::InvalidArgumentError(absl::StrCat("Noise: draw index ", index, " out of range"));
    if (const std::optional<torch::Tensor> table = in[kTable]) {
      if (table->dim() == 0)
        return absl::InvalidArgumentError("Noise: table must be draws [K, ...], got a scalar");
      if (index >= table->size(0)) {
        return absl::InvalidArgumentError(absl::StrCat("Noise: table has ", table->size(0), " draws; draw ", index, " asked"));
      }
      torch::Tensor row = (*table)[index].to(torch::kFloat32);
      out.Set(kNoise, row.dim() == 3 ? row.unsqueeze(0) : row);
      return absl::OkStatus();
    }
    auto gen =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(in[kSeed]) + seed_offset);
    // ComfyUI's noise for batch_index i..i+B-1: draws i..i+B-1 of one image each.
    if (const std::optional<int64_t> first = in[kBatchIndex]) {
      if (*first < 0 || *first > 100000) {
        return absl::InvalidArgumentError(
            absl::StrCat("Noise: batch_index ", *first, " out of range"));
      }
      std::vector<torch::Tensor> kept;
      for (int64_t k = 0; k < *first + batch; ++k) {
        torch::Tensor t = at::randn({1, channels, h / 8, w / 8}, gen, torch::kFloat32);
        if (k >= *first) kept.push_back(t);
      }
      out.Set(kNoise, torch::cat(kept));
      return absl::OkStatus();
    }
    torch::Tensor t;
    for (int64_t k = 0; k <= index; ++k)
      t = at::randn({batch, channels, h / 8, w / 8}, gen, torch::kFloat32);
    out.Set(kNoise, t);
    return absl::OkStatus();
  }

 private:
  v1::NoiseOptions options_;
};
SD_REGISTER_NODE(Noise);

}  // namespace sd
