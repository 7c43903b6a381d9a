// sd-train: trains an SD v1.x-structured model from scratch on the drawn shapes of
// shapes_dataset.h, with the project's own CLIP, VAE and UNet modules (so the tensors it writes are
// exactly what every loader reads). Three phases (the last optional):
//   1. the VAE: L1 + L2 reconstruction and a small KL term; then the encoder's latents are rescaled
//   so that
//      latents * 0.18215 have unit standard deviation, the factor folded into quant_conv /
//      post_quant_conv (the stock graphs' scale factor stays SD's);
//   2. the text encoder and the UNet together: epsilon prediction under SD's scaled-linear
//   schedule, with 10%
//      of captions replaced by the empty prompt so that classifier-free guidance works; an
//      exponential moving average of their weights is what gets exported;
//   3. optionally the VAE's decoder alone, the encoder frozen so the latents the UNet learnt stay
//   valid:
//      sharper pictures, as SD's fine-tuned decoders (ft-MSE) were made.
// Every step's data and noise derive from (seed, phase, step), so a run resumed from its state file
// takes the same steps as one that never stopped. The state (weights, EMA, optimiser moments, step
// counters) is saved every few minutes, on SIGINT/SIGTERM and at the end; the model is exported as
// fp16 safetensors with metadata saying what it is.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace sd::train {

struct TrainOptions {
  std::string out_dir;                 // state.pt, losses.tsv, and (by default) model.safetensors
  std::string config = "demo-shapes";  // or "tiny" (for smoke tests)
  std::string export_path;             // default <out_dir>/model.safetensors
  std::string tokenizer_dir;           // default: ClipTokenizer::DefaultDir()
  int size = 64;                       // image side in pixels (the native size)
  uint64_t seed = 1;
  int vae_steps = 3000, vae_batch = 16;
  int diffusion_steps = 8000, diffusion_batch = 48;
  double vae_lr = 5e-4, diffusion_lr = 5e-4;
  int decoder_steps = 0;  // then the VAE decoder alone, the encoder frozen (batch: vae_batch)
  double decoder_lr = 3e-4;
  // The decoder phase adds this times the L1 error of the pictures' neighbour differences (their
  // edges) to its L1 + L2 reconstruction loss: sharper corners, so triangles stay triangles.
  double decoder_edge_weight = 0;
  int warmup_steps = 200;
  double kl_weight = 1e-5;       // per image: KL summed over latent elements
  double uncond_fraction = 0.1;  // captions replaced by "" (classifier-free guidance)
  double ema_decay = 0.999;
  // Each sample's ε loss is weighted by 1/SNR(t) clamped to [1, x0_weight_cap]: where noise
  // dominates that is the loss on the predicted picture, which is where the layout (a shape's
  // position) is decided and where a plain ε loss barely sees it. 1: the plain ε loss.
  double x0_weight_cap = 1;
  // This fraction of each batch draws its timesteps from the noisiest 30% (t >= 700 of 1000),
  // the rest from all of them.
  double high_t_fraction = 0;
  // > 0: add this times the caption heads' loss (caption_heads.h) to the diffusion loss, so the
  // text encoder's rows after a caption carry every word it states, the position words included.
  double caption_loss_weight = 0;
  int log_every = 25;
  int save_every_s = 300;
  double max_minutes = 0;  // > 0: save and stop after this long (run again to resume)
  // > 0: save and stop after this many steps of this run (tests of resuming).
  int stop_after_steps = 0;
  int pool_size = 3072;  // encoded pictures the diffusion phase draws from (each used ~4 times)
  int threads = 0;       // 0: all cores
  // A fresh run starts from this model's weights, its VAE taken as trained (diffusion phase
  // onwards).
  std::string init_from;
  // Export the state's model as it is (after a VAE-only state: an untrained UNet).
  bool export_now = false;
};

// Trains (resuming from <out_dir>/state.pt when it exists) and exports the model. Returns OK also
// when max_minutes stopped the run early (the export is then skipped; the log says so).
absl::Status Train(const TrainOptions& options);

}  // namespace sd::train
