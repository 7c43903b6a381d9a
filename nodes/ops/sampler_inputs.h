// The inputs that choose a sampler, shared by Schedule, SamplerStep and MaskBlend: `sampler` (ddpm, ddim,
// euler, euler_a, dpmpp_2m), `karras` (1: Karras sigma spacing) and `eta` (DDIM).
#pragma once

#include "nodes/ops/node.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

inline void AddSamplerPorts(NodeContract& c) {
  c.inputs.push_back({"sampler", ScalarPort(v1::STRING), true, "ddpm (default), ddim, euler, euler_a, dpmpp_2m"});
  c.inputs.push_back({"karras", ScalarPort(v1::INT), true, "1: Karras sigma spacing"});
  c.inputs.push_back({"eta", ScalarPort(v1::FLOAT), true, "DDIM eta (default 0)"});
}

inline absl::StatusOr<SamplerSpec> ReadSamplerSpec(const NodeInputs& in, const std::string& option_default) {
  SamplerSpec spec;
  if (!option_default.empty()) spec.name = option_default;
  if (in.Has("sampler")) {
    auto s = in.String("sampler");
    if (!s.ok()) return s.status();
    spec.name = *s;
  }
  if (in.Has("karras")) {
    auto k = in.Int("karras");
    if (!k.ok()) return k.status();
    spec.karras = *k != 0;
  }
  if (in.Has("eta")) {
    auto e = in.Float("eta");
    if (!e.ok()) return e.status();
    spec.eta = *e;
  }
  if (absl::Status s = CheckSamplerSpec(spec); !s.ok()) return s;
  return spec;
}

}  // namespace sd
