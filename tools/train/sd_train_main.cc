// sd-train: trains the demo model (or a tiny one, for smoke tests). See trainer.h for the recipe.
#include <cstdio>
#include <string>
#include <vector>

#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "tools/train/train_flags.h"
#include "tools/train/trainer.h"

namespace {

constexpr char kUsage[] =
    "usage: sd-train --out DIR [flags]\n"
    "\n"
    "Trains an SD v1.x-structured model from scratch on procedurally drawn shapes (a flat circle, "
    "square or\n"
    "triangle in one of eight colours on a flat background, with a caption), then writes it as "
    "fp16\n"
    "safetensors. First the VAE, then CLIP and the UNet together. Progress (loss, seconds per "
    "step, ETA) goes\n"
    "to stdout and every loss to DIR/losses.tsv. The state is saved to DIR/state.pt every few "
    "minutes, on\n"
    "Ctrl-C and at the end: run the same command again to resume; the resumed run takes the same "
    "steps.\n"
    "\n"
    "  --out DIR              where the state, the losses and the model go (required)\n"
    "  --export PATH          the model file (default DIR/model.safetensors)\n"
    "  --config NAME          demo-shapes (default) or tiny\n"
    "  --size N               image side in pixels, the model's native size (default 64)\n"
    "  --seed N               the recipe's seed (default 1)\n"
    "  --vae-steps N          VAE steps (default 3000)      --vae-batch N (default 16)\n"
    "  --diffusion-steps N    CLIP+UNet steps (default 8000) --diffusion-batch N (default 48)\n"
    "  --vae-lr X             (default 5e-4)                 --diffusion-lr X (default 5e-4)\n"
    "  --warmup-steps N       steps of linear learning-rate warm-up in each phase (default 200)\n"
    "  --decoder-steps N      then the VAE decoder alone, encoder frozen (default 0)  --decoder-lr "
    "X (3e-4)\n"
    "  --decoder-edge-weight W  the decoder phase also weighs the error of the pictures' edges "
    "(their\n"
    "                         neighbour differences) by W: sharper corners (default 0)\n"
    "  --kl-weight X          weight of the KL term, per image (default 1e-5)\n"
    "  --ema-decay X          (default 0.999)\n"
    "  --x0-weight-cap C      weight each sample's noise-prediction loss by 1/SNR(t), clamped to\n"
    "                         [1, C]: more weight on the noisiest steps, where the layout (a "
    "shape's\n"
    "                         position) is decided (default 1: the plain loss)\n"
    "  --high-t-fraction F    this fraction of each batch takes its timesteps from the noisiest "
    "30%\n"
    "                         (default 0: all uniform)\n"
    "  --caption-loss-weight W  add W times the loss of linear classifiers that read what the "
    "caption\n"
    "                         states (colours, shape, size, position) from the text encoder's rows "
    "after\n"
    "                         it; without it the position words are not learnt (default 0)\n"
    "  --max-minutes M        save and stop after M minutes of this run (resume later)\n"
    "  --init-from MODEL      start a fresh run from MODEL's weights (e.g. the shipped demo "
    "model), its\n"
    "                         VAE taken as trained: only the diffusion (and decoder) phases run\n"
    "  --export-now           write the model from DIR/state.pt as it is (EMA weights), without "
    "training\n"
    "  --log-every N          steps between progress lines (default 25)\n"
    "  --stop-after-steps N   save and stop after N steps of this run (resume later)\n"
    "  --pool-size N          encoded pictures the diffusion phase draws from, each used ~4 times\n"
    "                         (default 3072; encoding costs more than a UNet step)\n"
    "  --threads N            compute threads (default: all cores)\n"
    "  --tokenizer DIR        CLIP tokenizer files (default: the installed copy)\n";

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> argv_vec(argv + 1, argv + argc);
  sd::cli::FlagSpec spec;
  spec.with_value = {"out",
                     "export",
                     "config",
                     "size",
                     "seed",
                     "vae-steps",
                     "vae-batch",
                     "diffusion-steps",
                     "diffusion-batch",
                     "vae-lr",
                     "diffusion-lr",
                     "kl-weight",
                     "ema-decay",
                     "x0-weight-cap",
                     "high-t-fraction",
                     "caption-loss-weight",
                     "max-minutes",
                     "log-every",
                     "threads",
                     "tokenizer",
                     "stop-after-steps",
                     "pool-size",
                     "warmup-steps",
                     "decoder-steps",
                     "decoder-lr",
                     "decoder-edge-weight",
                     "init-from"};
  spec.switches = {"help", "export-now"};
  auto args = sd::cli::Args::Parse(argv_vec, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "sd-train: %s\n\n%s", std::string(args.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->Has("out")) {
    std::fprintf(stderr, "sd-train: --out DIR is required\n\n%s", kUsage);
    return 2;
  }
  sd::EnsureFastBlasKernels(argv);
  // Training allocates and frees the same large activations every step: keep them mapped
  // (nodes/base/cpu_block_cache.h).
  sd::InstallCpuBlockCache();
  sd::train::TrainOptions o;
  using sd::train::ParseNumber;
  o.out_dir = *args->Get("out");
  o.export_path = args->GetOr("export", "");
  o.config = args->GetOr("config", o.config);
  o.tokenizer_dir = args->GetOr("tokenizer", "");
  o.export_now = args->Has("export-now");
  o.init_from = args->GetOr("init-from", "");
  const bool numbers_ok =
      ParseNumber("sd-train", *args, "size", &o.size) &&
      ParseNumber("sd-train", *args, "seed", &o.seed) &&
      ParseNumber("sd-train", *args, "vae-steps", &o.vae_steps) &&
      ParseNumber("sd-train", *args, "vae-batch", &o.vae_batch) &&
      ParseNumber("sd-train", *args, "diffusion-steps", &o.diffusion_steps) &&
      ParseNumber("sd-train", *args, "diffusion-batch", &o.diffusion_batch) &&
      ParseNumber("sd-train", *args, "vae-lr", &o.vae_lr) &&
      ParseNumber("sd-train", *args, "diffusion-lr", &o.diffusion_lr) &&
      ParseNumber("sd-train", *args, "kl-weight", &o.kl_weight) &&
      ParseNumber("sd-train", *args, "ema-decay", &o.ema_decay) &&
      ParseNumber("sd-train", *args, "x0-weight-cap", &o.x0_weight_cap) &&
      ParseNumber("sd-train", *args, "high-t-fraction", &o.high_t_fraction) &&
      ParseNumber("sd-train", *args, "caption-loss-weight", &o.caption_loss_weight) &&
      ParseNumber("sd-train", *args, "max-minutes", &o.max_minutes) &&
      ParseNumber("sd-train", *args, "log-every", &o.log_every) &&
      ParseNumber("sd-train", *args, "threads", &o.threads) &&
      ParseNumber("sd-train", *args, "stop-after-steps", &o.stop_after_steps) &&
      ParseNumber("sd-train", *args, "pool-size", &o.pool_size) &&
      ParseNumber("sd-train", *args, "warmup-steps", &o.warmup_steps) &&
      ParseNumber("sd-train", *args, "decoder-steps", &o.decoder_steps) &&
      ParseNumber("sd-train", *args, "decoder-lr", &o.decoder_lr) &&
      ParseNumber("sd-train", *args, "decoder-edge-weight", &o.decoder_edge_weight);
  if (!numbers_ok) return 2;
  if (o.vae_steps < 0 || o.diffusion_steps < 0 || o.vae_batch < 1 || o.diffusion_batch < 1 ||
      o.log_every < 1 || o.pool_size < 1 || o.stop_after_steps < 0 || o.warmup_steps < 1 ||
      o.decoder_steps < 0 || !(o.x0_weight_cap >= 1) ||
      !(o.high_t_fraction >= 0 && o.high_t_fraction <= 1) || !(o.caption_loss_weight >= 0) ||
      !(o.decoder_edge_weight >= 0)) {
    std::fprintf(stderr,
                 "sd-train: step counts must be >= 0; batches, --pool-size and --log-every >= 1; "
                 "--x0-weight-cap >= 1; --high-t-fraction in [0, 1]; --caption-loss-weight and "
                 "--decoder-edge-weight >= 0\n");
    return 2;
  }
  const absl::Status s = sd::train::Train(o);
  if (!s.ok()) {
    std::fprintf(stderr, "sd-train: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
