#include "tools/train/train_state.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::train {
namespace {

bool ZeroAtStart(const std::string& name) {
  // ResBlocks' second convolution, transformers' output projection, and the UNet's output
  // convolution.
  return absl::StrContains(name, "out_layers.3.") || absl::StrContains(name, "proj_out.") ||
         absl::StartsWith(name, "out.2.");
}

void WriteParams(torch::serialize::OutputArchive& a, const std::string& prefix,
                 torch::nn::Module& module) {
  for (const auto& kv : module.named_parameters()) a.write(prefix + kv.key(), kv.value().detach());
}

// `if_saved`: for modules a state file may predate; what it lacks keeps its present value (else a
// missing tensor throws).
void ReadParams(torch::serialize::InputArchive& a, const std::string& prefix,
                torch::nn::Module& module, bool if_saved = false) {
  torch::NoGradGuard no_grad;
  for (auto& kv : module.named_parameters()) {
    torch::Tensor t;
    if (if_saved) {
      if (a.try_read(prefix + kv.key(), t)) kv.value().copy_(t);
    } else {
      a.read(prefix + kv.key(), t);
      kv.value().copy_(t);
    }
  }
}

torch::Tensor Scalar(double v) { return torch::tensor({v}, torch::kFloat64); }

}  // namespace

void InitForTraining(torch::nn::Module& module, bool zero_residual_outputs) {
  torch::NoGradGuard no_grad;
  for (auto& kv : module.named_parameters()) {
    torch::Tensor p = kv.value();
    const std::string& name = kv.key();
    if (p.dim() == 1) {
      // Normalisation scales are "weight" vectors; every other vector is a bias.
      if (absl::EndsWith(name, ".weight"))
        p.fill_(1.0);
      else
        p.zero_();
    } else if (absl::StrContains(name, "embedding")) {
      p.normal_(0.0, 0.02);
    } else if (zero_residual_outputs && ZeroAtStart(name)) {
      p.zero_();
    } else {
      const double fan_in = static_cast<double>(p.numel() / p.size(0));
      const double bound = 1.0 / std::sqrt(fan_in);
      p.uniform_(-bound, bound);
    }
    p.set_requires_grad(true);
  }
}

namespace {

// Whether `from` fits into the first input channels of `to`: same sizes but a smaller dimension 1.
bool WidensInput(const torch::Tensor& from, const torch::Tensor& to) {
  if (from.dim() != 4 || to.dim() != 4 || from.size(1) >= to.size(1)) return false;
  for (int64_t d : {0, 2, 3}) {
    if (from.size(d) != to.size(d)) return false;
  }
  return true;
}

}  // namespace

absl::Status InitFromCheckpoint(const std::string& path, Models& m, bool widen_unet_input) {
  SD_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(path));
  torch::NoGradGuard no_grad;
  const std::pair<const char*, torch::nn::Module*> nets[] = {
      {kClipPrefix, m.clip.get()}, {kVaePrefix, m.vae.get()}, {kUNetPrefix, m.unet.get()}};
  for (const auto& [prefix, net] : nets) {
    for (auto& kv : net->named_parameters()) {
      const std::string name = prefix + kv.key();
      SD_ASSIGN_OR_RETURN(torch::Tensor t, LoadTensor(*ckpt, name, torch::kFloat32));
      if (widen_unet_input && net == m.unet.get() && WidensInput(t, kv.value())) {
        kv.value().zero_();
        kv.value().slice(1, 0, t.size(1)).copy_(t);
        continue;
      }
      if (t.sizes() != kv.value().sizes()) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, ": tensor ", name, " is ", DescribeTensor(t),
                         ", the configuration needs ", DescribeTensor(kv.value())));
      }
      kv.value().copy_(t);
    }
  }
  return absl::OkStatus();
}

void Ema::Reset(const std::vector<torch::Tensor>& live) {
  torch::NoGradGuard no_grad;
  params = live;
  shadow.clear();
  for (const torch::Tensor& p : live) shadow.push_back(p.detach().clone());
  updates = 0;
}

void Ema::Update(double max_decay) {
  torch::NoGradGuard no_grad;
  const double n = static_cast<double>(updates++);
  const double decay = std::min(max_decay, (1.0 + n) / (10.0 + n));
  for (size_t i = 0; i < params.size(); ++i)
    shadow[i].mul_(decay).add_(params[i].detach(), 1.0 - decay);
}

absl::Status SaveArchive(torch::serialize::OutputArchive& archive, const std::string& path) {
  return WriteAtomically(path, [&](const std::string& tmp) {
    return CatchExceptions(absl::StrCat("writing ", path), [&] {
      archive.save_to(tmp);
      return absl::OkStatus();
    });
  });
}

absl::Status SaveState(const std::string& path, Models& m, const Ema& ema,
                       const NamedOptimizers& optimizers, const Progress& p,
                       const NamedModules& aids) {
  return CatchExceptions(
      absl::StrCat("saving the training state to ", path), [&]() -> absl::Status {
        torch::serialize::OutputArchive a;
        WriteParams(a, "clip.", *m.clip);
        WriteParams(a, "vae.", *m.vae);
        WriteParams(a, "unet.", *m.unet);
        for (const auto& [name, module] : aids) WriteParams(a, name + ".", *module);
        for (size_t i = 0; i < ema.shadow.size(); ++i)
          a.write(absl::StrCat("ema.", i), ema.shadow[i]);
        a.write("ema_updates", Scalar(static_cast<double>(ema.updates)));
        for (const auto& [name, opt] : optimizers) {
          torch::serialize::OutputArchive o;
          opt->save(o);
          a.write(name, o);
        }
        a.write("vae_step", Scalar(static_cast<double>(p.vae_step)));
        a.write("diffusion_step", Scalar(static_cast<double>(p.diffusion_step)));
        a.write("decoder_step", Scalar(static_cast<double>(p.decoder_step)));
        a.write("vae_rescaled", Scalar(p.vae_rescaled ? 1 : 0));
        a.write("seconds", Scalar(p.seconds));
        return SaveArchive(a, path);
      });
}

absl::Status LoadState(const std::string& path, Models& m, Ema& ema,
                       const NamedOptimizers& optimizers, Progress& p, const NamedModules& aids) {
  return CatchExceptions(absl::StrCat("loading the training state ", path), [&]() -> absl::Status {
    torch::serialize::InputArchive a;
    a.load_from(path);
    ReadParams(a, "clip.", *m.clip);
    ReadParams(a, "vae.", *m.vae);
    ReadParams(a, "unet.", *m.unet);
    for (const auto& [name, module] : aids) ReadParams(a, name + ".", *module, /*if_saved=*/true);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ema.shadow.size(); ++i) {
      torch::Tensor t;
      a.read(absl::StrCat("ema.", i), t);
      ema.shadow[i].copy_(t);
    }
    auto scalar = [&](const char* key) {
      torch::Tensor t;
      a.read(key, t);
      return t.item<double>();
    };
    auto optional_scalar = [&](const char* key) {
      torch::Tensor t;
      return a.try_read(key, t) ? t.item<double>() : 0.0;
    };
    ema.updates = static_cast<int64_t>(scalar("ema_updates"));
    for (const auto& [name, opt] : optimizers) {
      torch::serialize::InputArchive o;
      if (a.try_read(name, o)) opt->load(o);
    }
    p.vae_step = static_cast<int64_t>(scalar("vae_step"));
    p.diffusion_step = static_cast<int64_t>(scalar("diffusion_step"));
    p.decoder_step = static_cast<int64_t>(optional_scalar("decoder_step"));
    p.vae_rescaled = scalar("vae_rescaled") != 0;
    p.seconds = scalar("seconds");
    return absl::OkStatus();
  });
}

void FoldLatentScale(Vae& vae, double factor) {
  torch::NoGradGuard no_grad;
  const int64_t e = vae->config().embed_dim;
  auto params = vae->named_parameters();
  params["quant_conv.weight"].slice(0, 0, e).mul_(factor);
  params["quant_conv.bias"].slice(0, 0, e).mul_(factor);
  params["quant_conv.bias"].slice(0, e).add_(2.0 * std::log(factor));
  params["post_quant_conv.weight"].div_(factor);
}

void Fp16Safetensors::Add(const std::string& name, const torch::Tensor& t) {
  keep_.push_back(t.detach().to(torch::kHalf).contiguous());
  const torch::Tensor& h = keep_.back();
  out_.push_back(
      {name, DType::kF16, h.sizes().vec(), h.data_ptr(), static_cast<uint64_t>(h.nbytes()), {}});
}

absl::Status Fp16Safetensors::Write(const std::string& path,
                                    const std::map<std::string, std::string>& metadata) const {
  return WriteSafetensors(path, out_, metadata);
}

absl::Status ExportModel(const std::string& path, Models& m, const Ema& ema,
                         const std::map<std::string, std::string>& metadata) {
  // The EMA shadows follow DiffusionParams' order: CLIP's parameters, then the UNet's.
  return ExportModel(path, m, ema.shadow, metadata);
}

absl::Status ExportModel(const std::string& path, Models& m,
                         const std::vector<torch::Tensor>& clip_unet,
                         const std::map<std::string, std::string>& metadata) {
  Fp16Safetensors file;
  if (clip_unet.size() != DiffusionParams(m).size())
    return absl::InternalError("the weights to export and the model's parameters disagree");
  size_t i = 0;
  for (const auto& kv : m.clip->named_parameters())
    file.Add(kClipPrefix + kv.key(), clip_unet[i++]);
  for (const auto& kv : m.unet->named_parameters())
    file.Add(kUNetPrefix + kv.key(), clip_unet[i++]);
  for (const auto& kv : m.vae->named_parameters()) file.Add(kVaePrefix + kv.key(), kv.value());
  return file.Write(path, metadata);
}

std::vector<torch::Tensor> DiffusionParams(Models& m) {
  std::vector<torch::Tensor> p = m.clip->parameters();
  for (const torch::Tensor& t : m.unet->parameters()) p.push_back(t);
  return p;
}

}  // namespace sd::train
