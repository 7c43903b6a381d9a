// Number flags of the trainers' command lines, and the flags the fine-tuning trainers share.
#pragma once

#include <cstdio>
#include <set>
#include <string>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "host_plugin/cli/args.h"
#include "tools/train/fine_tune_options.h"

namespace sd::train {

// Parses flag `flag` into *out when given; false (after saying why on stderr, as `tool`) when it is
// not a number.
template <typename T>
bool ParseNumber(const char* tool, const sd::cli::Args& args, const std::string& flag, T* out) {
  const auto v = args.Get(flag);
  if (!v) return true;
  bool ok;
  if constexpr (std::is_floating_point_v<T>)
    ok = absl::SimpleAtod(*v, out);
  else
    ok = absl::SimpleAtoi(*v, out);
  if (!ok) std::fprintf(stderr, "%s: --%s: '%s' is not a number\n", tool, flag.c_str(), v->c_str());
  return ok;
}

// The value flags of FineTuneOptions, for FlagSpec::with_value (a trainer adds its own).
inline std::set<std::string> FineTuneFlagNames() {
  return {"model",
          "out",
          "export",
          "size",
          "seed",
          "steps",
          "batch",
          "lr",
          "warmup-steps",
          "uncond-fraction",
          "pool-size",
          "max-minutes",
          "stop-after-steps",
          "log-every",
          "threads",
          "tokenizer"};
}

// Their --help lines, with `defaults`' values; `export_name` is the default file in DIR.
inline std::string FineTuneFlagsHelp(const FineTuneOptions& d, const char* export_name) {
  return absl::StrFormat(
      "  --model MODEL          the frozen model (required)\n"
      "  --out DIR              where the state, the losses and the result go (required)\n"
      "  --export PATH          the result (default DIR/%s)\n"
      "  --size N               picture side in pixels (default: MODEL's native size)\n"
      "  --seed N               the recipe's seed (default %d)\n"
      "  --steps N              training steps (default %d)   --batch N (default %d)\n"
      "  --lr X                 peak learning rate (default %g)\n"
      "  --warmup-steps N       steps of linear learning-rate warm-up (default %d)\n"
      "  --uncond-fraction F    share of captions replaced by the empty prompt (default %g)\n"
      "  --pool-size N          drawn and encoded pictures the steps draw from, each used ~4 "
      "times\n"
      "                         (default %d)\n"
      "  --max-minutes M        save and stop after M minutes of this run (resume later)\n"
      "  --stop-after-steps N   save and stop after N steps of this run (resume later)\n"
      "  --log-every N          steps between progress lines (default %d)\n"
      "  --threads N            compute threads (default: all cores)\n"
      "  --tokenizer DIR        CLIP tokenizer files (default: the installed copy)\n",
      export_name, d.seed, d.steps, d.batch, d.lr, d.warmup_steps, d.uncond_fraction, d.pool_size,
      d.log_every);
}

// Parses the flags of FineTuneFlagNames() into *o and checks their ranges; false after saying why
// on stderr (as `tool`). --model and --out are required.
inline bool ParseFineTuneFlags(const char* tool, const sd::cli::Args& args, FineTuneOptions* o) {
  if (!args.Has("model") || !args.Has("out")) {
    std::fprintf(stderr, "%s: --model MODEL and --out DIR are required\n", tool);
    return false;
  }
  o->base_model = *args.Get("model");
  o->out_dir = *args.Get("out");
  o->export_path = args.GetOr("export", "");
  o->tokenizer_dir = args.GetOr("tokenizer", "");
  const bool numbers_ok =
      ParseNumber(tool, args, "size", &o->size) && ParseNumber(tool, args, "seed", &o->seed) &&
      ParseNumber(tool, args, "steps", &o->steps) && ParseNumber(tool, args, "batch", &o->batch) &&
      ParseNumber(tool, args, "lr", &o->lr) &&
      ParseNumber(tool, args, "warmup-steps", &o->warmup_steps) &&
      ParseNumber(tool, args, "uncond-fraction", &o->uncond_fraction) &&
      ParseNumber(tool, args, "pool-size", &o->pool_size) &&
      ParseNumber(tool, args, "max-minutes", &o->max_minutes) &&
      ParseNumber(tool, args, "stop-after-steps", &o->stop_after_steps) &&
      ParseNumber(tool, args, "log-every", &o->log_every) &&
      ParseNumber(tool, args, "threads", &o->threads);
  if (!numbers_ok) return false;
  if (o->steps < 0 || o->batch < 1 || o->pool_size < 1 || o->log_every < 1 || o->warmup_steps < 1 ||
      o->size < 0 || o->stop_after_steps < 0 || !(o->lr > 0) ||
      !(o->uncond_fraction >= 0 && o->uncond_fraction <= 1)) {
    std::fprintf(stderr,
                 "%s: --steps, --size and --stop-after-steps must be >= 0; --batch, --pool-size, "
                 "--log-every and --warmup-steps >= 1; --lr > 0; --uncond-fraction in [0, 1]\n",
                 tool);
    return false;
  }
  return true;
}

}  // namespace sd::train
