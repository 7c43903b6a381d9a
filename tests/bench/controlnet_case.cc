#include "tests/bench/controlnet_case.h"

#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/test_weights.h"

namespace sd {

absl::StatusOr<std::string> BenchControlNetFile(const UNetConfig& unet, const std::string& file,
                                                const std::string& dir) {
  if (!file.empty()) return file;
  TestControlNetOptions o;
  o.config = ControlNetConfig::For(unet);
  const std::string path = dir + "/sdgold-v1-controlnet.safetensors";
  SD_RETURN_IF_ERROR(WriteTestControlNet(path, o));
  return path;
}

absl::StatusOr<ControlNet> LoadBenchControlNet(const std::string& file, torch::ScalarType dtype,
                                               torch::Device device) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> ckpt, Checkpoint::Open(file));
  SD_ASSIGN_OR_RETURN(ControlNetFile layout, ReadControlNetLayout(*ckpt));
  ControlNet net(layout.config);
  SD_RETURN_IF_ERROR(LoadWeights(
      *net, *ckpt, [&](const std::string& name) { return layout.KeyOf(name); }, dtype, device));
  for (const auto& p : net->parameters()) (void)p.sum().item<double>();  // resident before timing
  net->eval();
  return net;
}

}  // namespace sd
