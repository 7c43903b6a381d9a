#include "nodes/tensor/wire.h"

#include <torch/torch.h>

#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/tensor/wire_check.h"
#include "nodes/weights/tensor_view.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {
namespace {

// The torch type of a KServe datatype that travels (nullopt: BYTES, or none of ours).
std::optional<torch::ScalarType> TorchTypeOf(const std::string& datatype) {
  const std::optional<DType> d = DTypeFromKServe(datatype);
  if (!d) return std::nullopt;
  return ToTorchDType(*d);
}

std::string TensorBytes(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

WireTensor Scalar(const char* datatype, const void* data, size_t size) {
  return WireTensor{datatype, {1}, std::string(static_cast<const char*>(data), size)};
}

}  // namespace

absl::StatusOr<WireDType> ParseWireDType(const std::string& text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "f32" || t == "fp32" || t == "float32") return WireDType::kF32;
  if (t == "f16" || t == "fp16" || t == "float16") return WireDType::kF16;
  if (t == "bf16" || t == "bfloat16") return WireDType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("wire dtype '", text, "': expected f32, f16 or bf16"));
}

const char* WireDTypeName(WireDType d) {
  switch (d) {
    case WireDType::kF16:
      return "FP16";
    case WireDType::kBF16:
      return "BF16";
    default:
      return "FP32";
  }
}

absl::StatusOr<WireTensor> EncodeValue(const Value& v, WireDType wire) {
  if (const auto* s = std::get_if<std::string>(&v)) {
    const uint32_t n = static_cast<uint32_t>(s->size());
    std::string raw(4, '\0');
    for (int i = 0; i < 4; ++i) raw[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return WireTensor{"BYTES", {1}, raw + *s};
  }
  if (const auto* i = std::get_if<int64_t>(&v)) return Scalar("INT64", i, sizeof(*i));
  if (const auto* f = std::get_if<double>(&v)) return Scalar("FP64", f, sizeof(*f));
  if (const auto* t = std::get_if<torch::Tensor>(&v)) {
    torch::Tensor x = t->to(torch::kCPU);
    if (x.scalar_type() == torch::kFloat32 && wire != WireDType::kF32) {
      x = x.to(wire == WireDType::kF16 ? torch::kFloat16 : torch::kBFloat16);
    }
    const absl::StatusOr<DType> d = FromTorchDType(x.scalar_type());
    if (d.ok() && !KServeName(*d).empty())
      return WireTensor{std::string(KServeName(*d)), x.sizes().vec(), TensorBytes(x)};
    return absl::InvalidArgumentError(absl::StrCat("no wire form for a ", DescribeTensor(x)));
  }
  return absl::InvalidArgumentError("no value to encode");
}

namespace {

WireExpectation ExpectationOf(const v1::PortType& type) {
  WireExpectation e;
  switch (type.kind()) {
    case v1::STRING:
      e.kind = WireExpectation::Kind::kString;
      break;
    case v1::INT:
      e.kind = WireExpectation::Kind::kInt;
      break;
    case v1::FLOAT:
      e.kind = WireExpectation::Kind::kFloat;
      break;
    default:
      e.kind = WireExpectation::Kind::kTensor;
      break;
  }
  e.elements = type.dtype() == v1::INT64   ? WireExpectation::Elements::kInt64
               : type.dtype() == v1::UINT8 ? WireExpectation::Elements::kUInt8
                                           : WireExpectation::Elements::kFloat;
  e.rank = type.rank();
  e.description = DescribeType(type);
  return e;
}

}  // namespace

absl::StatusOr<Value> DecodeValue(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const v1::PortType& type,
                                  const std::string& what) {
  if (type.kind() != v1::STRING && type.kind() != v1::INT && type.kind() != v1::FLOAT &&
      type.kind() != v1::TENSOR) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the port has no type"));
  }
  // Every size is checked before a byte is read (wire_check.cc, fuzzed on its own).
  SD_ASSIGN_OR_RETURN(WireLayout layout,
                      CheckWireValue(datatype, shape, raw, ExpectationOf(type), what));
  if (type.kind() == v1::STRING) return Value(raw.substr(layout.payload_offset));
  const std::optional<torch::ScalarType> st = TorchTypeOf(datatype);
  if (!st) return absl::InternalError(absl::StrCat(what, ": no wire type ", datatype));
  const std::vector<int64_t> dims = type.kind() == v1::TENSOR ? shape : std::vector<int64_t>{1};
  torch::Tensor t = torch::from_blob(const_cast<char*>(raw.data()), dims, *st).clone();
  if (type.kind() == v1::INT) return Value(t.to(torch::kInt64).item<int64_t>());
  if (type.kind() == v1::FLOAT) {
    const double d = t.to(torch::kFloat64).item<double>();
    if (!std::isfinite(d))
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", d, " is not a finite number"));
    return Value(d);
  }
  if (t.is_floating_point()) {
    if (t.scalar_type() != torch::kFloat32) t = t.to(torch::kFloat32);
    if (t.numel() > 0 && !torch::isfinite(t).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": contains NaN or infinite values"));
    }
  }
  return Value(t);
}

std::string WireDatatypeOf(const v1::PortType& type) {
  switch (type.kind()) {
    case v1::STRING:
      return "BYTES";
    case v1::INT:
      return "INT64";
    case v1::FLOAT:
      return "FP64";
    case v1::TENSOR:
      if (type.dtype() == v1::INT64) return "INT64";
      if (type.dtype() == v1::UINT8) return "UINT8";
      return "FP32";
    default:
      return "";
  }
}

}  // namespace sd
