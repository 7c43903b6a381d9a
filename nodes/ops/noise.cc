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
  static constexpr char kSeed[] = "seed";
  static constexpr char kHeight[] = "height";
  static constexpr char kWidth[] = "width";
  static constexpr char kIndex[] = "index";
  static constexpr char kTable[] = "table";
  static constexpr char kLike[] = "like";
  static constexpr char kLatents[] = "latents";
  static constexpr char kBatchIndex[] = "batch_index";
  static constexpr char kT[] = "t";
  static constexpr char kOffset[] = "offset";
  static constexpr char kSeedOffset[] = "seed_offset";
  static constexpr char kNoise[] = "noise";
  static NodeContract Contract() {
    return {
        {{kSeed, ScalarPort(v1::INT)},
         {kHeight, ScalarPort(v1::INT), true, "image height in pixels (or wire `like`)"},
         {kWidth, ScalarPort(v1::INT), true, "image width in pixels (or wire `like`)"},
         {kLike, TensorPort(v1::FLOAT32, 4), true, "an image [B, C, H, W] whose H and W to use"},
         {kLatents, TensorPort(v1::FLOAT32, 4), true,
          "latents [B, C, h, w] to draw noise shaped like (one draw)"},
         {kBatchIndex, ScalarPort(v1::INT), true,
          "with latents: element k of the batch gets draw batch_index + k of one image (ComfyUI's "
          "batch_index)"},
         {kIndex, ScalarPort(v1::INT), true},
         {kT, ScalarPort(v1::FLOAT), true,
          "the sampler's timestep: at t = 0 the reference draws nothing (zeros)"},
         {kTable, TensorPort(v1::FLOAT32, -1), true, "recorded draws [K, ...]"},
         {kOffset, ScalarPort(v1::INT), true,
          "added to the options' offset (a subgraph's caller can say which draws are its)"},
         {kSeedOffset, ScalarPort(v1::INT), true, "added to the options' seed_offset"}},
        {{kNoise, TensorPort(v1::FLOAT32, 4), false,
          "[1, 4, height/8, width/8] (or the latents' shape)"}},
        v1::NoiseOptions::descriptor(),
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
    for (const char* port : {kIndex, kOffset, kSeedOffset}) {
      if (!in.Has(port)) continue;
      auto i = in.Int(port);
      if (!i.ok()) return i.status();
      if (*i < -kMaxTerm || *i > kMaxTerm)
        return absl::InvalidArgumentError(absl::StrCat("Noise: ", port, " ", *i, " out of range"));
      if (port == kSeedOffset) {
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
    if (in.Has(kLatents)) {
      auto latents = in.Tensor(kLatents);
      if (!latents.ok()) return latents.status();
      if (latents->size(0) > kMaxBatch || latents->size(1) > kMaxChannels) {
        return absl::InvalidArgumentError(
            absl::StrCat("Noise: latents ", DescribeTensor(*latents), " must be at most ",
                         kMaxBatch, " latent images of at most ", kMaxChannels, " channels"));
      }
      batch = latents->size(0);
      channels = latents->size(1);
      h = latents->size(2) * 8;
      w = latents->size(3) * 8;
    } else if (in.Has(kLike)) {
      auto like = in.Tensor(kLike);
      if (!like.ok()) return like.status();
      h = like->size(2);
      w = like->size(3);
    } else {
      auto hh = in.Int(kHeight);
      auto ww = in.Int(kWidth);
      if (!hh.ok()) return hh.status();
      if (!ww.ok()) return ww.status();
      h = *hh;
      w = *ww;
    }
    if (h <= 0 || w <= 0 || h % 8 || w % 8) {
      return absl::InvalidArgumentError(absl::StrCat("Noise: height and width must be positive multiples of 8, got ", h, "x", w));
    }
    if (in.Has(kT)) {
      auto t = in.Float(kT);
      if (!t.ok()) return t.status();
      if (*t == 0) {  // no draw: the sampler adds no noise at t = 0
        out[kNoise] = torch::zeros({batch, channels, h / 8, w / 8});
        return absl::OkStatus();
      }
    }
    if (index < 0 || index > 100000) return absl::InvalidArgumentError(absl::StrCat("Noise: draw index ", index, " out of range"));
    if (in.Has(kTable)) {
      auto table = in.Tensor(kTable);
      if (!table.ok()) return table.status();
      if (index >= table->size(0)) {
        return absl::InvalidArgumentError(absl::StrCat("Noise: table has ", table->size(0), " draws; draw ", index, " asked"));
      }
      torch::Tensor row = (*table)[index].to(torch::kFloat32);
      out[kNoise] = row.dim() == 3 ? row.unsqueeze(0) : row;
      return absl::OkStatus();
    }
    auto seed = in.Int(kSeed);
    if (!seed.ok()) return seed.status();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(*seed) + seed_offset);
    if (in.Has(kBatchIndex)) {  // ComfyUI's noise for batch_index i..i+B-1: draws i..i+B-1 of one
                                // image each
      auto first = in.Int(kBatchIndex);
      if (!first.ok()) return first.status();
      if (*first < 0 || *first > 100000) {
        return absl::InvalidArgumentError(
            absl::StrCat("Noise: batch_index ", *first, " out of range"));
      }
      std::vector<torch::Tensor> kept;
      for (int64_t k = 0; k < *first + batch; ++k) {
        torch::Tensor t = at::randn({1, channels, h / 8, w / 8}, gen, torch::kFloat32);
        if (k >= *first) kept.push_back(t);
      }
      out[kNoise] = torch::cat(kept);
      return absl::OkStatus();
    }
    torch::Tensor t;
    for (int64_t k = 0; k <= index; ++k)
      t = at::randn({batch, channels, h / 8, w / 8}, gen, torch::kFloat32);
    out[kNoise] = t;
    return absl::OkStatus();
  }

 private:
  v1::NoiseOptions options_;
};
SD_REGISTER_NODE(Noise);

}  // namespace sd
