#include "nodes/weights/lora.h"

#include <torch/torch.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {

absl::StatusOr<LoraFile> LoadLora(const std::string& path, const LoraKeyTable& table) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> file, Checkpoint::Open(path));
  LoraFile out;
  out.path = path;
  out.sha256 = file->ContentHash();
  struct Parts {
    const TensorView *down = nullptr, *up = nullptr, *mid = nullptr, *alpha = nullptr;
  };
  std::map<std::string, Parts> by_name;
  for (const TensorView& t : file->tensors()) {
    std::string name, part;
    if (!SplitLoraKey(t.name, &name, &part) || !table.Find(name)) {
      out.unmatched.push_back(t.name);
      continue;
    }
    Parts& p = by_name[name];
    (part == "down" ? p.down : part == "up" ? p.up : part == "mid" ? p.mid : p.alpha) = &t;
  }
  auto bad = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA ", path, ": ", key, ": ", why));
  };
  for (const auto& [name, p] : by_name) {
    if (!p.down || !p.up) return bad(name, p.down ? "has no up weight" : "has no down weight");
    for (const TensorView* t : {p.down, p.up, p.mid, p.alpha}) {
      if (t && !IsFloatingPoint(t->dtype)) return bad(t->name, "is not floating point");
    }
    LoraLayer layer;
    layer.name = name;
    layer.target = *table.Find(name);
    SD_ASSIGN_OR_RETURN(layer.down, LoadTensor(*file, p.down->name, torch::kFloat32));
    SD_ASSIGN_OR_RETURN(layer.up, LoadTensor(*file, p.up->name, torch::kFloat32));
    layer.down = layer.down.clone();
    layer.up = layer.up.clone();
    if (p.mid) {
      SD_ASSIGN_OR_RETURN(layer.mid, LoadTensor(*file, p.mid->name, torch::kFloat32));
      layer.mid = layer.mid.clone();
    }
    const int64_t rank = layer.down.dim() >= 2 ? layer.down.size(0) : 0;
    if (rank < 1 || layer.up.dim() < 2 || layer.up.size(1) != rank) {
      return bad(name, absl::StrCat("down ", ShapeString(p.down->shape), " and up ",
                                    ShapeString(p.up->shape), " do not share a rank"));
    }
    double alpha = static_cast<double>(rank);
    if (p.alpha) {
      SD_ASSIGN_OR_RETURN(torch::Tensor a, LoadTensor(*file, p.alpha->name, torch::kFloat32));
      if (a.numel() != 1) return bad(p.alpha->name, "is not a single number");
      alpha = a.item<double>();
    }
    layer.scale = alpha / static_cast<double>(rank);
    out.layers.push_back(std::move(layer));
  }
  return out;
}

absl::StatusOr<torch::Tensor> LoraDelta(const LoraLayer& l, const std::vector<int64_t>& shape,
                                        double multiplier) {
  const int64_t rank = l.down.size(0), out_ch = l.up.size(0);
  const torch::Tensor up = l.up.reshape({out_ch, rank});
  torch::Tensor delta;
  if (l.mid.defined()) {
    // Tucker (LoCon "cp"): ΔW[o,i,h,w] = Σ up[o,a] mid[a,b,h,w] down[b,i].
    if (l.mid.dim() != 4 || l.mid.size(0) != rank || l.mid.size(1) != rank) {
      return absl::InvalidArgumentError(absl::StrCat("LoRA layer ", l.name, ": mid ",
                                                     ShapeString(l.mid.sizes().vec()),
                                                     " does not fit rank ", rank));
    }
    delta = (torch::einsum("oa,abhw,bi->oihw", {up, l.mid, l.down.reshape({rank, -1})}) *
             (l.scale * multiplier))
                .contiguous();
  } else {
    // (up·s)·down: the scale folded into the small factor.
    delta =
        torch::mm(up * (l.scale * multiplier), l.down.reshape({rank, -1}));  // [out, in * kh * kw]
    if (l.down.dim() == 4)
      delta = delta.reshape({out_ch, l.down.size(1), l.down.size(2), l.down.size(3)});
  }
  const std::vector<int64_t> got = delta.sizes().vec();
  if (got == shape) return delta;
  if (delta.numel() == c10::multiply_integers(shape))
    return delta.reshape(shape);  // linear <-> 1x1 conv
  // An inpainting model's first convolution takes 9 channels; a LoRA made for 4 patches the
  // first 4.
  if (shape.size() == 4 && delta.dim() == 4 && got[0] == shape[0] && got[1] < shape[1] &&
      got[2] == shape[2] && got[3] == shape[3]) {
    torch::Tensor padded = torch::zeros(shape, torch::kFloat32);
    padded.slice(1, 0, got[1]).copy_(delta);
    return padded;
  }
  return absl::InvalidArgumentError(absl::StrCat("LoRA layer ", l.name, ": an update of ",
                                                 ShapeString(got), " does not fit ", l.target.key,
                                                 " ", ShapeString(shape)));
}

absl::Status ApplyLoras(torch::nn::Module& module, const std::string& prefix,
                        LoraComponent component,
                        const std::vector<std::pair<const LoraFile*, double>>& loras) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : module.named_parameters()) params[prefix + p.key()] = p.value();
  std::map<std::string, torch::Tensor> updated;  // key -> float32 sum, written back once
  for (const auto& [lora, strength] : loras) {
    if (strength == 0) continue;
    for (const LoraLayer& l : lora->layers) {
      if (l.target.component != component) continue;
      auto it = params.find(l.target.key);
      if (it == params.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("LoRA ", lora->path, ": ", l.target.key, " is not in the model"));
      }
      if (it->second.scalar_type() == torch::kInt8) {
        return absl::InvalidArgumentError(absl::StrCat(
            "LoRA ", lora->path, ": ", l.target.key,
            " is int8 in this checkpoint (convert --dtype q8); apply LoRAs to the f16 or f32 "
            "checkpoint and run it with --dtype q8"));
      }
      // ΔW·strength added to W element by element, not folded into one addmm: how a BLAS kernel
      // folds W into its sums is its own affair, and every process must merge to the same bytes
      // (in-process runs and workers give equal images).
      SD_ASSIGN_OR_RETURN(torch::Tensor delta, LoraDelta(l, it->second.sizes().vec(), strength));
      auto u = updated.find(l.target.key);
      if (u == updated.end()) {
        // The float32 copy of the weight, made once (by its first update).
        updated.emplace(l.target.key, delta.add_(it->second.to(torch::kCPU, torch::kFloat32)));
      } else {
        u->second.add_(delta);
      }
    }
  }
  for (auto& [key, value] : updated) {
    torch::Tensor& param = params.at(key);
    param.set_data(value.to(param.device(), param.scalar_type()));
  }
  return absl::OkStatus();
}

}  // namespace sd
