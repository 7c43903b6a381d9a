#include "host_plugin/runtime/cfg_batch.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace sd {

namespace {

constexpr char kUNetStep[] = "UNetStep";
constexpr char kLatents[] = "latents";
constexpr char kContext[] = "context";
constexpr char kControl[] = "control";

const torch::Tensor* TensorAt(const std::map<std::string, Value>& in, const char* port) {
  auto it = in.find(port);
  return it == in.end() ? nullptr : std::get_if<torch::Tensor>(&it->second);
}

// Port -> source of every input but the context: equal for the two halves of one guided step.
std::map<std::string, std::string> SharedSources(const PlannedNode& p) {
  std::map<std::string, std::string> sources;
  for (const auto& [port, src] : p.inputs) {
    if (port != kContext) sources[port] = src;
  }
  return sources;
}

bool Joinable(const PlannedNode& a, const std::map<std::string, Value>& in_a, const PlannedNode& b,
              const std::map<std::string, Value>& in_b) {
  if (a.node->kind() != kUNetStep || b.node->kind() != kUNetStep) return false;
  if (a.node->options().SerializeAsString() != b.node->options().SerializeAsString()) return false;
  if (in_a.count(kControl) || in_b.count(kControl)) return false;
  if (SharedSources(a) != SharedSources(b)) return false;
  const torch::Tensor* x = TensorAt(in_a, kLatents);
  const torch::Tensor* ca = TensorAt(in_a, kContext);
  const torch::Tensor* cb = TensorAt(in_b, kContext);
  if (!x || !ca || !cb || x->dim() != 4 || ca->dim() != 3 || cb->dim() != 3) return false;
  const int64_t batch = x->size(0);
  auto fits = [&](const torch::Tensor& c) { return c.size(0) == 1 || c.size(0) == batch; };
  return fits(*ca) && fits(*cb) && ca->size(1) == cb->size(1) && ca->size(2) == cb->size(2) &&
         ca->scalar_type() == cb->scalar_type();
}

}  // namespace

v1::CfgBatch CfgBatchSetting(v1::CfgBatch run, v1::CfgBatch graph) {
  return run != v1::CFG_BATCH_AUTO ? run : graph;
}

bool JoinsCfgHalves(v1::CfgBatch setting, const torch::Device& device) {
  switch (setting) {
    case v1::CFG_BATCH_ON:
      return true;
    case v1::CFG_BATCH_OFF:
      return false;
    default:
      return device.is_cuda();
  }
}

std::vector<std::pair<size_t, size_t>> FindCfgPairs(
    const std::vector<const PlannedNode*>& wave,
    const std::vector<std::map<std::string, Value>>& inputs,
    const std::function<bool(const PlannedNode&)>& local) {
  std::vector<std::pair<size_t, size_t>> pairs;
  std::vector<bool> taken(wave.size(), false);
  for (size_t i = 0; i < wave.size(); ++i) {
    if (taken[i] || !local(*wave[i])) continue;
    for (size_t j = i + 1; j < wave.size(); ++j) {
      if (taken[j] || !local(*wave[j]) || !Joinable(*wave[i], inputs[i], *wave[j], inputs[j]))
        continue;
      pairs.emplace_back(i, j);
      taken[i] = taken[j] = true;
      break;
    }
  }
  return pairs;
}

std::map<std::string, Value> JoinCfgInputs(const std::map<std::string, Value>& first,
                                           const std::map<std::string, Value>& second) {
  std::map<std::string, Value> joined = first;
  const torch::Tensor& x = *TensorAt(first, kLatents);
  const int64_t batch = x.size(0);
  joined[kLatents] = torch::cat({x, x});
  // Inpainting inputs of batch 1 broadcast over any batch; those of the latents' batch go twice.
  for (const char* port : {"mask", "masked_latents"}) {
    const torch::Tensor* m = TensorAt(first, port);
    if (m && m->dim() > 0 && m->size(0) != 1) joined[port] = torch::cat({*m, *m});
  }
  auto context = [&](const std::map<std::string, Value>& in) {
    const torch::Tensor& c = *TensorAt(in, kContext);
    return c.expand({batch, c.size(1), c.size(2)});
  };
  joined[kContext] = torch::cat({context(first), context(second)});
  return joined;
}

absl::StatusOr<std::pair<NodeOutputs, NodeOutputs>> SplitCfgOutputs(
    const NodeOutputs& joined, const std::map<std::string, Value>& first) {
  const int64_t batch = TensorAt(first, kLatents)->size(0);
  std::pair<NodeOutputs, NodeOutputs> halves;
  for (const auto& [name, value] : joined) {
    const torch::Tensor* t = std::get_if<torch::Tensor>(&value);
    if (!t || t->dim() == 0 || t->size(0) != 2 * batch) {
      return absl::InternalError(absl::StrCat(
          "output '", name, "' of the joined cond and uncond call is not a tensor of batch ",
          2 * batch));
    }
    halves.first[name] = t->narrow(0, 0, batch);
    halves.second[name] = t->narrow(0, batch, batch);
  }
  return halves;
}

}  // namespace sd
