#include "nodes/tensor/wire.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/tensor_view.h"

namespace sd {
namespace {

struct WireType {
  const char* name;
  torch::ScalarType torch_type;
  size_t size;
};

constexpr WireType kWireTypes[] = {
    {"FP32", torch::kFloat32, 4}, {"FP16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"FP64", torch::kFloat64, 8}, {"INT64", torch::kInt64, 8},  {"INT32", torch::kInt32, 4},
    {"UINT8", torch::kUInt8, 1},
};

const WireType* FindWireType(const std::string& name) {
  for (const WireType& w : kWireTypes) {
    if (name == w.name) return &w;
  }
  return nullptr;
}

std::string TensorBytes(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

WireTensor Scalar(const char* datatype, const void* data, size_t size) {
  return WireTensor{datatype, {1}, std::string(static_cast<const char*>(data), size)};
}

// The single element of a scalar tensor.
absl::StatusOr<torch::Tensor> ScalarTensor(const WireType& w, const std::vector<int64_t>& shape,
                                           const std::string& raw, const std::string& what) {
  if (shape.size() > 1 || (shape.size() == 1 && shape[0] != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a scalar travels as shape [1] or [], got ", ShapeString(shape)));
  }
  if (raw.size() != w.size) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", raw.size(), " bytes for one ",
                                                   w.name, " (", w.size, " expected)"));
  }
  return torch::from_blob(const_cast<char*>(raw.data()), {1}, w.torch_type).clone();
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
    for (const WireType& w : kWireTypes) {
      if (w.torch_type == x.scalar_type())
        return WireTensor{w.name, x.sizes().vec(), TensorBytes(x)};
    }
    return absl::InvalidArgumentError(absl::StrCat("no wire form for a ", DescribeTensor(x)));
  }
  return absl::InvalidArgumentError("no value to encode");
}

absl::StatusOr<Value> DecodeValue(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const v1::PortType& type,
                                  const std::string& what) {
  if (shape.size() > 8)
    return absl::InvalidArgumentError(absl::StrCat(what, ": rank ", shape.size(), " is too high"));
  switch (type.kind()) {
    case v1::STRING: {
      if (datatype != "BYTES")
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": expected BYTES (a string), got ", datatype));
      if (shape.size() > 1 || (shape.size() == 1 && shape[0] != 1))
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": expected one string, got shape ", ShapeString(shape)));
      if (raw.size() < 4)
        return absl::InvalidArgumentError(absl::StrCat(what, ": BYTES without its 4-byte length"));
      uint32_t len = 0;
      for (int i = 0; i < 4; ++i)
        len |= static_cast<uint32_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
      if (len != raw.size() - 4) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": BYTES length says ", len, " but ",
                                                       raw.size() - 4, " bytes follow"));
      }
      return Value(raw.substr(4));
    }
    case v1::INT: {
      const WireType* w = FindWireType(datatype);
      if (!w || (datatype != "INT64" && datatype != "INT32")) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": expected INT64 (an integer), got ", datatype));
      }
      auto t = ScalarTensor(*w, shape, raw, what);
      if (!t.ok()) return t.status();
      return Value(t->to(torch::kInt64).item<int64_t>());
    }
    case v1::FLOAT: {
      const WireType* w = FindWireType(datatype);
      if (!w || !(datatype == "FP64" || datatype == "FP32" || datatype == "INT64")) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": expected FP64 (a number), got ", datatype));
      }
      auto t = ScalarTensor(*w, shape, raw, what);
      if (!t.ok()) return t.status();
      const double d = t->to(torch::kFloat64).item<double>();
      if (!std::isfinite(d))
        return absl::InvalidArgumentError(absl::StrCat(what, ": ", d, " is not a finite number"));
      return Value(d);
    }
    case v1::TENSOR: {
      const WireType* w = FindWireType(datatype);
      const bool float_port = type.dtype() == v1::FLOAT32 ||
                              type.dtype() == v1::DTYPE_UNSPECIFIED ||
                              type.dtype() == v1::FLOAT16 || type.dtype() == v1::BFLOAT16;
      const bool float_wire = datatype == "FP32" || datatype == "FP16" || datatype == "BF16";
      const bool ok =
          w && ((float_port && float_wire) || (type.dtype() == v1::INT64 && datatype == "INT64") ||
                (type.dtype() == v1::UINT8 && datatype == "UINT8"));
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": datatype ", datatype, " does not fit a ", DescribeType(type)));
      }
      if (type.rank() >= 0 && static_cast<int>(shape.size()) != type.rank()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": expected rank ", type.rank(),
                                                       ", got shape ", ShapeString(shape)));
      }
      auto numel = CheckedNumel(shape, what);
      if (!numel.ok()) return numel.status();
      if (*numel > (uint64_t{1} << 40) || *numel * w->size != raw.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": ", raw.size(), " bytes do not hold a ", datatype, " tensor of shape ",
            ShapeString(shape), " (", *numel * w->size, " expected)"));
      }
      torch::Tensor t =
          torch::from_blob(const_cast<char*>(raw.data()), shape, w->torch_type).clone();
      if (float_wire) {
        if (t.scalar_type() != torch::kFloat32) t = t.to(torch::kFloat32);
        if (t.numel() > 0 && !torch::isfinite(t).all().item<bool>()) {
          return absl::InvalidArgumentError(
              absl::StrCat(what, ": contains NaN or infinite values"));
        }
      }
      return Value(t);
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(what, ": the port has no type"));
  }
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
