// What sd-train keeps between runs and what it ships: parameter initialisation for training from
// scratch, the resumable state file, the VAE's latent rescaling, and the fp16 safetensors export.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nodes/models/clip_text.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/weights/safetensors.h"

namespace sd::train {

struct Models {
  explicit Models(const SdConfig& c) : config(c), clip(c.clip), vae(c.vae), unet(c.unet) {}
  SdConfig config;
  ClipTextModel clip;
  Vae vae;
  UNet unet;
};

// Fresh weights from torch's generator (seed it first): uniform(+-1/sqrt(fan_in)) for convolutions
// and linear layers, N(0, 0.02) for embeddings, ones/zeros for normalisations and biases, and zeros
// for the UNet's last convolution of each residual branch and its output (so it starts as an
// identity of its skips). Every parameter then records gradients.
void InitForTraining(torch::nn::Module& module, bool zero_residual_outputs);

// What the diffusion phase trains: CLIP's parameters, then the UNet's.
std::vector<torch::Tensor> DiffusionParams(Models& m);

// Parameters of both diffusion-phase networks, and their exponential moving average.
struct Ema {
  std::vector<torch::Tensor> params, shadow;
  int64_t updates = 0;
  void Reset(const std::vector<torch::Tensor>& live);
  void Update(double max_decay);  // decay min(max_decay, (1 + n) / (10 + n))
};

struct Progress {
  int64_t vae_step = 0, diffusion_step = 0, decoder_step = 0;
  bool vae_rescaled = false;
  double seconds = 0;  // training time over all runs
};

// The optimisers of the phases, by the name their state is saved under.
using NamedOptimizers = std::vector<std::pair<std::string, torch::optim::Optimizer*>>;

// Modules that training uses but never exports (caption heads), by the name their weights are
// saved under in the state file.
using NamedModules = std::vector<std::pair<std::string, torch::nn::Module*>>;

// Copies the weights of an exported (or any SD v1.x) checkpoint of the same configuration into `m`,
// to go on training a shipped model (the optimiser state starts afresh). FAILED_PRECONDITION names
// a missing or mismatched tensor. With `widen_unet_input`, a UNet tensor with more input channels
// than the checkpoint's (an inpainting UNet's first convolution, made from an ordinary model's)
// takes the checkpoint's weights on its first channels and zeros on the rest.
absl::Status InitFromCheckpoint(const std::string& path, Models& m, bool widen_unet_input = false);

// Writes `archive` to `path` through a temporary file renamed into place.
absl::Status SaveArchive(torch::serialize::OutputArchive& archive, const std::string& path);

// Saves models, EMA, optimiser states, training aids and progress to `path` (via a temporary file
// renamed into place).
absl::Status SaveState(const std::string& path, Models& m, const Ema& ema,
                       const NamedOptimizers& optimizers, const Progress& p,
                       const NamedModules& aids = {});
// Loads what SaveState saved. A phase that a state file predates (no optimiser state, no step
// count) starts from its beginning; an aid it predates keeps its fresh weights.
absl::Status LoadState(const std::string& path, Models& m, Ema& ema,
                       const NamedOptimizers& optimizers, Progress& p,
                       const NamedModules& aids = {});

// Scales the VAE's latents by `factor`: quant_conv's mean rows times factor, its log-variance
// biases plus 2 ln(factor), post_quant_conv's weights divided by factor. Decoding is unchanged.
void FoldLatentScale(Vae& vae, double factor);

// Tensors converted to fp16 as they are added, then written as one safetensors file: what both
// trainers export.
class Fp16Safetensors {
 public:
  void Add(const std::string& name, const torch::Tensor& t);
  absl::Status Write(const std::string& path,
                     const std::map<std::string, std::string>& metadata) const;

 private:
  std::vector<torch::Tensor> keep_;  // the fp16 copies `out_` points into
  std::vector<TensorToWrite> out_;
};

// Writes the VAE and the EMA weights of CLIP and the UNet in fp16, under their checkpoint names.
absl::Status ExportModel(const std::string& path, Models& m, const Ema& ema,
                         const std::map<std::string, std::string>& metadata);
// The same with `clip_unet` (in DiffusionParams' order) as CLIP's and the UNet's weights.
absl::Status ExportModel(const std::string& path, Models& m,
                         const std::vector<torch::Tensor>& clip_unet,
                         const std::map<std::string, std::string>& metadata);

}  // namespace sd::train
