// Reading the reference vectors of ../shared/golden and comparing against them.
#pragma once

#include <torch/torch.h>

#include <cstdio>
#include <map>
#include <string>

#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/test_util.h"

namespace sd::testing {

// Every tensor of golden file `name` (e.g. "unet.safetensors"), copied out of the mapping.
inline std::map<std::string, torch::Tensor> ReadGolden(const std::string& name) {
  auto st = ReadSafetensors(GoldenDir() + "/" + name);
  if (!st.ok()) throw std::runtime_error(std::string(st.status().message()));
  std::map<std::string, torch::Tensor> out;
  for (const TensorView& v : st->tensors) out[v.name] = ViewAsTorch(v, st->file).clone();
  return out;
}

struct ErrorStats {
  double max_abs = 0;  // max |a - b|
  double rel = 0;      // ||a - b||_2 / ||b||_2
};

inline ErrorStats Compare(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor a = got.to(torch::kFloat64), b = want.to(torch::kFloat64);
  ErrorStats e;
  e.max_abs = (a - b).abs().max().item<double>();
  e.rel = ((a - b).norm() / b.norm().clamp_min(1e-30)).item<double>();
  return e;
}

// One line of the test log per comparison, so reduced-precision errors are on record.
inline ErrorStats Report(const std::string& what, const std::string& dtype, const torch::Tensor& got,
                         const torch::Tensor& want) {
  ErrorStats e = Compare(got, want);
  std::printf("[ parity ] %-28s %-5s max_abs=%.3e rel=%.3e\n", what.c_str(), dtype.c_str(), e.max_abs, e.rel);
  std::fflush(stdout);
  return e;
}

}  // namespace sd::testing
