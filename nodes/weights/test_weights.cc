#include "nodes/weights/test_weights.h"

#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/weights/safetensors.h"

namespace sd {

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

void FillSdgold(const std::string& name, const std::vector<int64_t>& shape, float* out, int threads) {
  const uint64_t seed = Fnv1a64(name);
  uint64_t n = 1, fan_in = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    n *= static_cast<uint64_t>(shape[d]);
    if (d >= 1) fan_in *= static_cast<uint64_t>(shape[d]);
  }
  enum { kMatrix, kScale, kShift } kind =
      shape.size() >= 2 ? kMatrix : absl::EndsWith(name, "weight") ? kScale : kShift;
  const double sqrt12 = std::sqrt(12.0);
  auto run = [&](uint64_t begin, uint64_t end) {
    for (uint64_t i = begin; i < end; ++i) {
      uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z = z ^ (z >> 31);
      const double u = static_cast<double>(z >> 40) * 0x1p-24;
      const double v = (u - 0.5) * sqrt12;
      // Division, not multiplication by the reciprocal: that is what the rule says, bit for bit.
      const double w = kind == kMatrix ? v / std::sqrt(static_cast<double>(fan_in))
                       : kind == kScale ? 1.0 + 0.1 * v
                                        : 0.05 * v;
      out[i] = static_cast<float>(w);
    }
  };
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (n < (1u << 16) || threads == 1) {
    run(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const uint64_t chunk = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const uint64_t b = std::min<uint64_t>(n, t * chunk), e = std::min<uint64_t>(n, b + chunk);
    pool.emplace_back(run, b, e);
  }
  for (std::thread& th : pool) th.join();
}

uint16_t FloatToHalfBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return static_cast<uint16_t>(sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00));
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds past 65504: inf
  if (abs < 0x38800000) {  // subnormal half (or zero)
    const uint32_t mant = (abs & 0x7fffff) | 0x800000;
    const int shift = 113 - static_cast<int>(abs >> 23) + 13;
    if (shift > 24) return static_cast<uint16_t>(sign);
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000) >> 13);
  const uint32_t rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t FloatToBFloat16Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

namespace {

struct Extra {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::vector<Extra> RealCheckpointExtras(const SdConfig& config) {
  // The DDPM buffers of the LDM wrapper: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
  std::vector<float> betas(1000), alphas_cumprod(1000);
  double prod = 1.0;
  for (int i = 0; i < 1000; ++i) {
    const double s = std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * i / 999.0;
    betas[i] = static_cast<float>(s * s);
    prod *= 1.0 - s * s;
    alphas_cumprod[i] = static_cast<float>(prod);
  }
  std::vector<int64_t> position_ids(config.clip.max_positions);
  for (int i = 0; i < config.clip.max_positions; ++i) position_ids[i] = i;
  return {
      {"betas", DType::kF32, {1000}, Bytes(betas)},
      {"alphas_cumprod", DType::kF32, {1000}, Bytes(alphas_cumprod)},
      {std::string(kClipPrefix) + "embeddings.position_ids", DType::kI64,
       {1, config.clip.max_positions}, Bytes(position_ids)},
      {"model_ema.decay", DType::kF32, {}, Bytes(std::vector<float>{0.9999f})},
      {"model_ema.num_updates", DType::kI32, {}, Bytes(std::vector<int32_t>{0})},
  };
}

absl::Status CheckTestDType(DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("test checkpoints are F32, F16 or BF16, not ", DTypeName(dtype)));
  }
  return absl::OkStatus();
}

// Tensor `key` written under its name with the sdgold-v1 values of tensor `rule_name`.
TensorToWrite SdgoldTensor(const std::string& rule_name, const KeySpec& key, DType dtype,
                           int threads) {
  TensorToWrite t;
  t.name = key.name;
  t.dtype = dtype;
  t.shape = key.shape;
  uint64_t n = 1;
  for (int64_t d : key.shape) n *= static_cast<uint64_t>(d);
  t.nbytes = n * DTypeSize(dtype);
  t.fill = [name = rule_name, shape = key.shape, n, dtype, threads](void* dst) {
    if (dtype == DType::kF32) {
      FillSdgold(name, shape, static_cast<float*>(dst), threads);
      return;
    }
    std::vector<float> tmp(n);
    FillSdgold(name, shape, tmp.data(), threads);
    uint16_t* out = static_cast<uint16_t*>(dst);
    for (uint64_t i = 0; i < n; ++i) {
      out[i] = dtype == DType::kF16 ? FloatToHalfBits(tmp[i]) : FloatToBFloat16Bits(tmp[i]);
    }
  };
  return t;
}

}  // namespace

absl::Status WriteTestControlNet(const std::string& path, const TestControlNetOptions& options) {
  SD_RETURN_IF_ERROR(CheckTestDType(options.dtype));
  std::vector<TensorToWrite> tensors;
  for (const KeySpec& k : ControlNetKeys(options.config)) {
    KeySpec written = k;
    if (options.layout == ControlNetLayout::kOriginal) written.name = kControlNetPrefix + k.name;
    if (options.layout == ControlNetLayout::kDiffusers)
      written.name = ControlNetToDiffusers(k.name, options.config.unet);
    if (written.name.empty())
      return absl::InternalError(absl::StrCat("no diffusers name for ", k.name));
    // The values are those of the original layout's names, whatever the layout written.
    tensors.push_back(
        SdgoldTensor(kControlNetPrefix + k.name, written, options.dtype, options.threads));
  }
  return WriteSafetensors(
      path, tensors,
      {{"format", "pt"}, {"sdgraph.weights", "sdgold-v1 ControlNet (deterministic test weights)"}});
}

absl::Status WriteTestCheckpoint(const std::string& path, const TestCheckpointOptions& options) {
  SD_RETURN_IF_ERROR(CheckTestDType(options.dtype));
  std::vector<KeySpec> keys = ExpectedKeys(options.config);
  std::vector<Extra> extras;
  if (options.with_extras) extras = RealCheckpointExtras(options.config);
  std::vector<TensorToWrite> tensors;
  for (const KeySpec& k : keys)
    tensors.push_back(SdgoldTensor(k.name, k, options.dtype, options.threads));
  for (const Extra& e : extras) {
    tensors.push_back({e.name, e.dtype, e.shape, e.bytes.data(), e.bytes.size(), nullptr});
  }
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"sdgraph.weights", "sdgold-v1 (deterministic test weights: the images are noise)"}};
  return WriteSafetensors(path, tensors, metadata);
}

}  // namespace sd
