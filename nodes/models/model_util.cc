#include "nodes/models/model_util.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/layers.h"
#include "nodes/tensor/dtype.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {

namespace {

// An int8 weight (`convert --dtype q8`): `key` holds int8 [out, in, k, k] (a convolution) or
// [out, in] (a linear layer of the shape the int8 mode takes) and `key`_scale its f32 scales [out]
// (README, "--dtype q8").
absl::Status LoadInt8Weight(torch::nn::Module& m, const std::string& param,
                            const Checkpoint& checkpoint, const std::string& key,
                            torch::Device device) {
  auto* conv = m.as<nn::Conv2dImpl>();
  auto* linear = m.as<nn::LinearImpl>();
  if (linear != nullptr && !nn::Int8LinearShape(linear->weight.size(0), linear->weight.size(1))) {
    linear = nullptr;
  }
  if ((conv == nullptr && linear == nullptr) || param != "weight") {
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint.path(), ": tensor ", key,
        " is int8, which only convolution and feed-forward projection weights may be"));
  }
  const std::string scale_key = key + "_scale";
  const TensorView* scale_view = checkpoint.Find(scale_key);
  const int64_t out = conv != nullptr ? conv->weight.size(0) : linear->weight.size(0);
  if (scale_view == nullptr || scale_view->shape != std::vector<int64_t>{out} ||
      !IsFloatingPoint(scale_view->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint.path(), ": int8 tensor ", key, " needs ", scale_key,
                     ", a floating-point tensor of shape [", out, "]"));
  }
  SD_ASSIGN_OR_RETURN(torch::Tensor q, LoadTensor(checkpoint, key, torch::kInt8));
  SD_ASSIGN_OR_RETURN(torch::Tensor scale, LoadTensor(checkpoint, scale_key, torch::kFloat32));
  if (!torch::isfinite(scale).all().item<bool>() || !(scale > 0).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint.path(), ": ", scale_key, " holds a scale that is not a positive finite number"));
  }
  if (conv != nullptr) {
    conv->SetInt8Weights(q.to(device), scale.to(device));
  } else {
    linear->SetInt8Weights(q.to(device), scale.to(device));
  }
  return absl::OkStatus();
}

// LoadWeights's int8_layers: the layers nn::UseInt8Layers takes, one at a time. A weight read
// zero-copy from the file leaves its pages to the kernel once quantized.
bool QuantizeIfInt8Layer(torch::nn::Module& m) {
  return (m.as<nn::Conv2dImpl>() != nullptr || m.as<nn::LinearImpl>() != nullptr) &&
         nn::UseInt8Layers(m) > 0;
}

// Whether the checkpoint holds any of `module`'s weights in int8.
bool HoldsInt8Weights(const torch::nn::Module& module, const Checkpoint& checkpoint,
                      const std::function<std::string(const std::string&)>& key_of) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    const std::string key = key_of(p.key());
    const TensorView* view = key.empty() ? nullptr : checkpoint.Find(key);
    if (view != nullptr && view->dtype == DType::kI8) return true;
  }
  return false;
}

}  // namespace

absl::Status LoadWeights(torch::nn::Module& module, const Checkpoint& checkpoint,
                         const std::string& prefix, torch::ScalarType dtype, torch::Device device,
                         bool int8_layers) {
  return LoadWeights(
      module, checkpoint, [&](const std::string& name) { return prefix + name; }, dtype, device,
      int8_layers);
}

absl::Status LoadWeights(torch::nn::Module& module, const Checkpoint& checkpoint,
                         const std::function<std::string(const std::string&)>& key_of,
                         torch::ScalarType dtype, torch::Device device, bool int8_layers) {
  torch::NoGradGuard no_grad;
  if (dtype == torch::kHalf && device.is_cpu()) {
    // LibTorch 1.13's CPU kernels (matmul, conv) do not implement float16.
    return absl::InvalidArgumentError(
        "float16 compute is not supported on CPU; use bfloat16 (fast on CPUs with AVX-512 BF16) or float32 there, "
        "and float16 on CUDA. float16 checkpoints load in any compute dtype.");
  }
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kHalf) {
    return absl::InvalidArgumentError(absl::StrCat("compute dtype must be float32, bfloat16 or float16, not ",
                                                   std::string(c10::toString(dtype))));
  }
  int8_layers = int8_layers || HoldsInt8Weights(module, checkpoint, key_of);
  KeyCheck check;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    const torch::nn::Module& m = *item.value();
    const bool fp32 = dynamic_cast<const nn::Fp32Params*>(&m) != nullptr;
    for (const auto& p : m.named_parameters(/*recurse=*/false)) {
      const std::string name = item.key().empty() ? p.key() : absl::StrCat(item.key(), ".", p.key());
      const std::string key = key_of(name);
      const TensorView* view = key.empty() ? nullptr : checkpoint.Find(key);
      if (!view) {
        check.missing.push_back(key.empty() ? name : key);
        continue;
      }
      torch::Tensor param = p.value();
      if (view->shape != param.sizes().vec()) {
        check.mismatched.push_back({key, param.sizes().vec(), view->shape});
        continue;
      }
      if (view->dtype == DType::kI8) {
        SD_RETURN_IF_ERROR(LoadInt8Weight(*item.value(), p.key(), checkpoint, key, device));
        ++check.matched;
        continue;
      }
      const torch::ScalarType want = fp32 ? torch::kFloat32 : dtype;
      absl::StatusOr<torch::Tensor> t = LoadTensor(checkpoint, key, want);
      if (!t.ok()) return t.status();
      torch::Tensor value = *t;
      if (!value.device().is_cpu() || device != torch::kCPU) value = value.to(device);
      param.set_data(value);
      ++check.matched;
      const bool quantized =
          int8_layers && p.key() == "weight" && QuantizeIfInt8Layer(*item.value());
      // Converted, moved or quantized: the file's pages for this tensor are no longer needed in
      // memory.
      if (quantized || value.data_ptr() != static_cast<const void*>(view->data)) {
        checkpoint.file()->DropPages(view->data, view->nbytes());
      }
    }
  }
  // The parameters the module was built with are gone: their blocks will not be needed again.
  ReleaseCachedCpuBlocks();
  return check.ToStatus(checkpoint.path());
}

std::string DescribeTensor(const torch::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return absl::StrCat(std::string(c10::toString(t.scalar_type())), " [", absl::StrJoin(t.sizes(), ", "), "]");
}

absl::Status CheckFinite(const torch::Tensor& t, const std::string& what) {
  if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " contains NaN or infinity"));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> RunGuarded(const std::string& what, const std::function<torch::Tensor()>& fn) {
  try {
    c10::InferenceMode guard;
    return fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (absl::StrContains(msg, "out of memory") || absl::StrContains(msg, "DefaultCPUAllocator")) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", msg));
    }
    return absl::InternalError(absl::StrCat(what, ": ", msg));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  }
}

}  // namespace sd
