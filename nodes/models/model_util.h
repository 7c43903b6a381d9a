// What every network shares: loading parameters by their checkpoint names, turning LibTorch exceptions
// into Status at the model boundary, and describing tensors in error messages.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nodes/weights/checkpoint.h"

namespace sd {

// Replaces every parameter of `module` with checkpoint tensor `prefix + name`, converted to `dtype`
// (fp32 for normalisation layers) and moved to `device`. Zero-copy when the stored dtype is already
// the one wanted on CPU. FAILED_PRECONDITION lists missing keys and shape mismatches (expected vs
// found). int8_layers: each layer the int8 mode takes (nn::UseInt8Layers) is quantized as soon
// as it is loaded, so the network's f32 copies of those weights never exist all at once. A network
// of which the checkpoint holds any weight in int8 (`convert --dtype q8`) loads so whatever
// int8_layers says: its other int8 layers (those that file keeps in float, e.g. the feed-forward
// projections, int8 only on CPUs with VNNI) are quantized as the int8 mode would.
absl::Status LoadWeights(torch::nn::Module& module, const Checkpoint& checkpoint,
                         const std::string& prefix, torch::ScalarType dtype,
                         torch::Device device = torch::kCPU, bool int8_layers = false);

// The same with the checkpoint's key of each parameter name given by `key_of` ("" when it has
// none).
absl::Status LoadWeights(torch::nn::Module& module, const Checkpoint& checkpoint,
                         const std::function<std::string(const std::string&)>& key_of,
                         torch::ScalarType dtype, torch::Device device = torch::kCPU,
                         bool int8_layers = false);

// "float32 [2, 4, 64, 64]"
std::string DescribeTensor(const torch::Tensor& t);

// INVALID_ARGUMENT naming `what` when `t` holds NaN or infinity.
absl::Status CheckFinite(const torch::Tensor& t, const std::string& what);

// Runs `fn` under inference mode; a LibTorch exception becomes a Status naming `what`
// (RESOURCE_EXHAUSTED for out-of-memory, INTERNAL otherwise).
absl::StatusOr<torch::Tensor> RunGuarded(const std::string& what, const std::function<torch::Tensor()>& fn);

}  // namespace sd
