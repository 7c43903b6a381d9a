// sd-train-controlnet: trains a Canny ControlNet for the demo model (or another model sd-train
// made). See controlnet_trainer.h for the recipe.
#include <cstdio>
#include <string>
#include <vector>

#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "tools/train/controlnet_trainer.h"
#include "tools/train/train_flags.h"

namespace {

constexpr char kUsage[] =
    "usage: sd-train-controlnet --model MODEL --out DIR [flags]\n"
    "\n"
    "Trains a ControlNet for MODEL (the demo model, or another model sd-train made) on the drawn\n"
    "shapes it was trained on, with each picture's Canny edges as the hint: the edges then fix "
    "the\n"
    "shape and its place, the prompt the colours. MODEL stays frozen; the ControlNet starts as a\n"
    "copy of its UNet's encoder with zero convolutions at zero. Progress (loss, seconds per step,\n"
    "ETA) goes to stdout and every loss to DIR/losses.tsv. The state is saved to DIR/state.pt "
    "every\n"
    "few minutes, on Ctrl-C and at the end: run the same command again to resume; the resumed run\n"
    "takes the same steps. The result is fp16 safetensors (ControlNet 1.1 names), for\n"
    "`sd-graph txt2img --controlnet FILE --hint PICTURE --hint-pass canny`.\n"
    "\n"
    "  --model MODEL          the model to steer (required)\n"
    "  --out DIR              where the state, the losses and the ControlNet go (required)\n"
    "  --export PATH          the ControlNet file (default DIR/controlnet.safetensors)\n"
    "  --size N               picture side in pixels (default: MODEL's native size)\n"
    "  --seed N               the recipe's seed (default 1)\n"
    "  --steps N              training steps (default 2000)   --batch N (default 32)\n"
    "  --lr X                 peak learning rate (default 2e-4)\n"
    "  --warmup-steps N       steps of linear learning-rate warm-up (default 100)\n"
    "  --uncond-fraction F    share of captions replaced by the empty prompt (default 0.3)\n"
    "  --canny-low N          Canny thresholds of the hints (default 100 and 200, as\n"
    "  --canny-high N         sd-graph's --canny-low/--canny-high)\n"
    "  --pool-size N          drawn and encoded pictures the steps draw from, each used ~4 times\n"
    "                         (default 2048)\n"
    "  --max-minutes M        save and stop after M minutes of this run (resume later)\n"
    "  --stop-after-steps N   save and stop after N steps of this run (resume later)\n"
    "  --log-every N          steps between progress lines (default 25)\n"
    "  --threads N            compute threads (default: all cores)\n"
    "  --tokenizer DIR        CLIP tokenizer files (default: the installed copy)\n";

}  // namespace

int main(int argc, char** argv) {
  constexpr char kTool[] = "sd-train-controlnet";
  const std::vector<std::string> argv_vec(argv + 1, argv + argc);
  sd::cli::FlagSpec spec;
  spec.with_value = {"model",     "out",        "export",    "size",         "seed",
                     "steps",     "batch",      "lr",        "warmup-steps", "uncond-fraction",
                     "canny-low", "canny-high", "pool-size", "max-minutes",  "stop-after-steps",
                     "log-every", "threads",    "tokenizer"};
  spec.switches = {"help"};
  auto args = sd::cli::Args::Parse(argv_vec, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "%s: %s\n\n%s", kTool, std::string(args.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!args->Has("model") || !args->Has("out")) {
    std::fprintf(stderr, "%s: --model MODEL and --out DIR are required\n\n%s", kTool, kUsage);
    return 2;
  }
  sd::EnsureFastBlasKernels(argv);
  // Training allocates and frees the same large activations every step: keep them mapped
  // (nodes/base/cpu_block_cache.h).
  sd::InstallCpuBlockCache();
  sd::train::ControlNetTrainOptions o;
  o.base_model = *args->Get("model");
  o.out_dir = *args->Get("out");
  o.export_path = args->GetOr("export", "");
  o.tokenizer_dir = args->GetOr("tokenizer", "");
  using sd::train::ParseNumber;
  const bool numbers_ok =
      ParseNumber(kTool, *args, "size", &o.size) && ParseNumber(kTool, *args, "seed", &o.seed) &&
      ParseNumber(kTool, *args, "steps", &o.steps) &&
      ParseNumber(kTool, *args, "batch", &o.batch) && ParseNumber(kTool, *args, "lr", &o.lr) &&
      ParseNumber(kTool, *args, "warmup-steps", &o.warmup_steps) &&
      ParseNumber(kTool, *args, "uncond-fraction", &o.uncond_fraction) &&
      ParseNumber(kTool, *args, "canny-low", &o.canny_low) &&
      ParseNumber(kTool, *args, "canny-high", &o.canny_high) &&
      ParseNumber(kTool, *args, "pool-size", &o.pool_size) &&
      ParseNumber(kTool, *args, "max-minutes", &o.max_minutes) &&
      ParseNumber(kTool, *args, "stop-after-steps", &o.stop_after_steps) &&
      ParseNumber(kTool, *args, "log-every", &o.log_every) &&
      ParseNumber(kTool, *args, "threads", &o.threads);
  if (!numbers_ok) return 2;
  if (o.steps < 0 || o.batch < 1 || o.pool_size < 1 || o.log_every < 1 || o.warmup_steps < 1 ||
      o.size < 0 || o.stop_after_steps < 0 || !(o.lr > 0) ||
      !(o.uncond_fraction >= 0 && o.uncond_fraction <= 1) || o.canny_low < 0 ||
      o.canny_high < o.canny_low || o.canny_high > 1023) {
    std::fprintf(stderr,
                 "%s: --steps, --size and --stop-after-steps must be >= 0; --batch, --pool-size, "
                 "--log-every and --warmup-steps >= 1; --lr > 0; --uncond-fraction in [0, 1]; "
                 "0 <= --canny-low <= --canny-high <= 1023\n",
                 kTool);
    return 2;
  }
  const absl::Status s = sd::train::TrainControlNet(o);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", kTool, s.ToString().c_str());
    return 1;
  }
  return 0;
}
