#include "nodes/ops/node_contract.h"

#include <google/protobuf/descriptor.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nodes/ops/port_dims.h"

namespace sd {

std::string DescribeType(const v1::PortType& type) {
  switch (type.kind()) {
    case v1::STRING:
      return "string";
    case v1::INT:
      return "int";
    case v1::FLOAT:
      return "float";
    case v1::TENSOR: {
      std::string dtype = type.dtype() == v1::DTYPE_UNSPECIFIED
                              ? "float"
                              : absl::AsciiStrToLower(v1::DType_Name(type.dtype()));
      return type.rank() < 0 ? absl::StrCat(dtype, " tensor")
                             : absl::StrCat(dtype, " tensor of rank ", type.rank());
    }
    default:
      return "unspecified";
  }
}

v1::PortType TensorPort(v1::DType dtype, int rank) {
  v1::PortType t;
  t.set_kind(v1::TENSOR);
  t.set_dtype(dtype);
  t.set_rank(rank);
  return t;
}

v1::PortType ScalarPort(v1::ValueKind kind) {
  v1::PortType t;
  t.set_kind(kind);
  return t;
}

bool Compatible(const v1::PortType& from, const v1::PortType& to) {
  if (from.kind() != to.kind()) return from.kind() == v1::INT && to.kind() == v1::FLOAT;
  if (from.kind() != v1::TENSOR) return true;
  const bool float_from = from.dtype() == v1::DTYPE_UNSPECIFIED || from.dtype() == v1::FLOAT32 ||
                          from.dtype() == v1::FLOAT16 || from.dtype() == v1::BFLOAT16;
  const bool dtype_ok = to.dtype() == from.dtype() ||
                        (to.dtype() == v1::DTYPE_UNSPECIFIED && float_from) ||
                        (from.dtype() == v1::DTYPE_UNSPECIFIED && to.dtype() == v1::FLOAT32);
  return dtype_ok && (to.rank() < 0 || from.rank() < 0 || to.rank() == from.rank());
}

const PortSpec* NodeContract::Input(const std::string& name) const {
  for (const PortSpec& p : inputs) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const PortSpec* NodeContract::Output(const std::string& name) const {
  for (const PortSpec& p : outputs) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

namespace {

v1::PortInfo PortToInfo(const PortSpec& p) {
  v1::PortInfo info;
  info.set_name(p.name);
  *info.mutable_type() = p.type;
  info.set_optional(p.optional);
  info.set_doc(p.doc);
  info.set_dims(p.dims);
  return info;
}

PortSpec PortFromInfo(const v1::PortInfo& info) {
  return PortSpec{info.name(), info.type(), info.optional(), info.doc(), info.dims()};
}

}  // namespace

absl::Status CheckContract(const std::string& kind, const NodeContract& contract) {
  for (const auto* ports : {&contract.inputs, &contract.outputs}) {
    for (const PortSpec& p : *ports) {
      if (p.dims.empty()) continue;
      const std::string who = absl::StrCat("node kind '", kind, "' port '", p.name, "'");
      if (p.type.kind() != v1::TENSOR)
        return absl::InvalidArgumentError(absl::StrCat(who, ": dims on a ", DescribeType(p.type)));
      auto dims = ParseDims(p.dims);
      if (!dims.ok())
        return absl::InvalidArgumentError(absl::StrCat(who, ": ", dims.status().message()));
      if (p.type.rank() >= 0 && dims->size() != static_cast<size_t>(p.type.rank())) {
        return absl::InvalidArgumentError(
            absl::StrCat(who, ": dims '", p.dims, "' for rank ", p.type.rank()));
      }
    }
  }
  return absl::OkStatus();
}

v1::NodeKindInfo ContractToInfo(const std::string& kind, const NodeContract& contract) {
  v1::NodeKindInfo info;
  info.set_name(kind);
  for (const PortSpec& p : contract.inputs) *info.add_input() = PortToInfo(p);
  for (const PortSpec& p : contract.outputs) *info.add_output() = PortToInfo(p);
  if (contract.options) info.set_options_type(contract.options->full_name());
  info.set_doc(contract.doc);
  info.set_needs_model(contract.needs_model);
  return info;
}

absl::StatusOr<NodeContract> ContractFromInfo(const v1::NodeKindInfo& info) {
  NodeContract c;
  for (const v1::PortInfo& p : info.input()) c.inputs.push_back(PortFromInfo(p));
  for (const v1::PortInfo& p : info.output()) c.outputs.push_back(PortFromInfo(p));
  if (!info.options_type().empty()) {
    c.options = google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
        info.options_type());
    if (!c.options) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node kind '", info.name(), "': unknown options type '", info.options_type(), "'"));
    }
  }
  c.doc = info.doc();
  c.needs_model = info.needs_model();
  if (absl::Status s = CheckContract(info.name(), c); !s.ok()) return s;
  return c;
}

}  // namespace sd
