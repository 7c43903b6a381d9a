#include "nodes/ops/node.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/port_dims.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {
namespace {

v1::DType ToProtoDType(torch::ScalarType t) {
  absl::StatusOr<DType> d = FromTorchDType(t);
  return d.ok() ? ProtoDType(*d) : v1::DTYPE_UNSPECIFIED;
}

}  // namespace

std::string DescribeValue(const Value& v) {
  if (std::holds_alternative<std::string>(v)) return "string";
  if (std::holds_alternative<int64_t>(v)) return "int";
  if (std::holds_alternative<double>(v)) return "float";
  if (std::holds_alternative<torch::Tensor>(v)) return DescribeTensor(std::get<torch::Tensor>(v));
  return "nothing";
}

absl::Status CheckValue(const Value& v, const v1::PortType& type) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat("expected ", DescribeType(type), ", got ", DescribeValue(v)));
  };
  switch (type.kind()) {
    case v1::STRING: return std::holds_alternative<std::string>(v) ? absl::OkStatus() : bad();
    case v1::INT: return std::holds_alternative<int64_t>(v) ? absl::OkStatus() : bad();
    case v1::FLOAT: return std::holds_alternative<double>(v) || std::holds_alternative<int64_t>(v) ? absl::OkStatus() : bad();
    case v1::TENSOR: {
      if (!std::holds_alternative<torch::Tensor>(v)) return bad();
      const torch::Tensor& t = std::get<torch::Tensor>(v);
      if (!t.defined()) return bad();
      if (type.rank() >= 0 && t.dim() != type.rank()) {
        return absl::InvalidArgumentError(absl::StrCat("expected rank ", type.rank(), ", got ", t.dim(), " (", DescribeTensor(t), ")"));
      }
      if (type.dtype() == v1::DTYPE_UNSPECIFIED ? !t.is_floating_point() : ToProtoDType(t.scalar_type()) != type.dtype()) {
        return bad();
      }
      return absl::OkStatus();
    }
    default: return bad();
  }
}

namespace {

std::vector<int64_t> Sizes(const Value& v) {
  const torch::Tensor& t = std::get<torch::Tensor>(v);
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

// Adds the tensors on `ports` that have dims to `solver` ("input 'latents'").
absl::Status AddDims(const std::vector<PortSpec>& ports, const std::map<std::string, Value>& values,
                     const char* side, DimSolver& solver) {
  for (const PortSpec& p : ports) {
    auto it = values.find(p.name);
    if (p.dims.empty() || it == values.end() || !std::holds_alternative<torch::Tensor>(it->second))
      continue;
    SD_RETURN_IF_ERROR(
        solver.Add(absl::StrCat(side, " '", p.name, "'"), p.dims, Sizes(it->second)));
  }
  return absl::OkStatus();
}

absl::Status SolveInputs(const NodeContract& contract, const std::map<std::string, Value>& inputs,
                         DimSolver& solver) {
  for (const PortSpec& p : contract.inputs) {
    auto it = inputs.find(p.name);
    if (it == inputs.end() || std::holds_alternative<std::monostate>(it->second)) {
      if (p.optional) continue;
      return absl::InvalidArgumentError(absl::StrCat("input '", p.name, "' is not set"));
    }
    if (absl::Status s = CheckValue(it->second, p.type); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat("input '", p.name, "': ", s.message()));
  }
  SD_RETURN_IF_ERROR(AddDims(contract.inputs, inputs, "input", solver));
  return solver.Solve();
}

}  // namespace

absl::Status CheckCallInputs(const NodeContract& contract,
                             const std::map<std::string, Value>& inputs) {
  DimSolver solver;
  return SolveInputs(contract, inputs, solver);
}

absl::Status CheckCallOutputs(const NodeContract& contract,
                              const std::map<std::string, Value>& inputs,
                              const std::map<std::string, Value>& outputs) {
  DimSolver solver;
  SD_RETURN_IF_ERROR(SolveInputs(contract, inputs, solver));
  for (const PortSpec& p : contract.outputs) {
    auto it = outputs.find(p.name);
    if (it == outputs.end())
      return absl::InternalError(absl::StrCat("did not produce output '", p.name, "'"));
    if (absl::Status s = CheckValue(it->second, p.type); !s.ok())
      return absl::InternalError(absl::StrCat("output '", p.name, "': ", s.message()));
    if (p.dims.empty()) continue;
    const std::string who = absl::StrCat("output '", p.name, "'");
    absl::Status s = solver.Add(who, p.dims, Sizes(it->second));
    if (s.ok()) s = solver.Solve();
    // The fault may show on an input's axis that only this output determines ("h*f").
    if (!s.ok() && absl::StartsWith(s.message(), who)) return absl::InternalError(s.message());
    if (!s.ok())
      return absl::InternalError(absl::StrCat(who, " does not fit the inputs: ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeInputs> NodeInputs::Check(const NodeContract& contract,
                                             const std::map<std::string, Value>* values,
                                             const std::string* node) {
  if (absl::Status s = CheckCallInputs(contract, *values); !s.ok())
    return absl::Status(s.code(), absl::StrCat("node '", *node, "': ", s.message()));
  return NodeInputs(values, node);
}

NodeRegistry& NodeRegistry::Get() {
  static NodeRegistry* r = new NodeRegistry();
  return *r;
}

absl::Status NodeRegistry::Register(NodeKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string name = kind.name;
  if (!kinds_.emplace(name, std::make_unique<NodeKind>(std::move(kind))).second) {
    return absl::AlreadyExistsError(absl::StrCat("node kind '", name, "' is registered twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const NodeKind*> NodeRegistry::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kinds_.find(name);
  if (it == kinds_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, k] : kinds_) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("unknown node kind '", name, "' (known: ", absl::StrJoin(names, ", "), ")"));
  }
  return it->second.get();
}

std::vector<std::string> NodeRegistry::Names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const auto& [n, k] : kinds_) names.push_back(n);
  return names;
}

absl::StatusOr<NodeContract> RegisteredContract(const std::string& kind) {
  SD_ASSIGN_OR_RETURN(const NodeKind* k, NodeRegistry::Get().Find(kind));
  return k->contract();
}

absl::StatusOr<v1::NodeKindCatalog> KindCatalog(const std::vector<std::string>& names) {
  v1::NodeKindCatalog catalog;
  for (const std::string& name : names.empty() ? NodeRegistry::Get().Names() : names) {
    auto kind = NodeRegistry::Get().Find(name);
    if (!kind.ok()) return kind.status();
    *catalog.add_kind() = ContractToInfo(name, (*kind)->contract());
  }
  return catalog;
}

namespace internal {
bool RegisterOrDie(NodeKind kind) {
  absl::Status s = NodeRegistry::Get().Register(std::move(kind));
  if (!s.ok()) {
    std::fprintf(stderr, "sdgraph: %s\n", s.ToString().c_str());
    std::abort();
  }
  return true;
}
}  // namespace internal

}  // namespace sd
