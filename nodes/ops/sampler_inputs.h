// The inputs that choose a sampler, shared by Schedule, SamplerStep and MaskBlend: `sampler` (ddpm, ddim,
// euler, euler_a, dpmpp_2m), `karras` (1: Karras sigma spacing) and `eta` (DDIM).
#pragma once

#include "nodes/ops/node.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

struct SamplerPorts {
  static constexpr OptionalInput<std::string> kSampler{
      "sampler", "ddpm (default), ddim, euler, euler_a, dpmpp_2m"};
  static constexpr OptionalInput<int64_t> kKarras{"karras", "1: Karras sigma spacing"};
  static constexpr OptionalInput<double> kEta{"eta", "DDIM eta (default 0)"};
};

inline absl::StatusOr<SamplerSpec> ReadSamplerSpec(const NodeInputs& in, const std::string& option_default) {
  SamplerSpec spec;
  if (!option_default.empty()) spec.name = option_default;
  if (auto s = in[SamplerPorts::kSampler]) spec.name = *s;
  if (auto k = in[SamplerPorts::kKarras]) spec.karras = *k != 0;
  if (auto e = in[SamplerPorts::kEta]) spec.eta = *e;
  SD_RETURN_IF_ERROR(CheckSamplerSpec(spec));
  return spec;
}

}  // namespace sd
