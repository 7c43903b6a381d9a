#include "nodes/ops/node.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/models/model_util.h"
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

bool NodeInputs::Has(const std::string& port) const {
  auto it = values_->find(port);
  return it != values_->end() && !std::holds_alternative<std::monostate>(it->second);
}

absl::StatusOr<const Value*> NodeInputs::Get(const std::string& port) const {
  auto it = values_->find(port);
  if (it == values_->end() || std::holds_alternative<std::monostate>(it->second)) {
    return absl::InvalidArgumentError(absl::StrCat("node '", *node_, "': input '", port, "' is not set"));
  }
  return &it->second;
}

absl::StatusOr<torch::Tensor> NodeInputs::Tensor(const std::string& port) const {
  auto v = Get(port);
  if (!v.ok()) return v.status();
  if (!std::holds_alternative<torch::Tensor>(**v)) {
    return absl::InvalidArgumentError(absl::StrCat("node '", *node_, "': input '", port, "' is a ", DescribeValue(**v), ", not a tensor"));
  }
  return std::get<torch::Tensor>(**v);
}

absl::StatusOr<int64_t> NodeInputs::Int(const std::string& port) const {
  auto v = Get(port);
  if (!v.ok()) return v.status();
  if (std::holds_alternative<int64_t>(**v)) return std::get<int64_t>(**v);
  if (std::holds_alternative<torch::Tensor>(**v) && std::get<torch::Tensor>(**v).numel() == 1 &&
      !std::get<torch::Tensor>(**v).is_floating_point()) {
    return std::get<torch::Tensor>(**v).item<int64_t>();
  }
  return absl::InvalidArgumentError(absl::StrCat("node '", *node_, "': input '", port, "' is a ", DescribeValue(**v), ", not an int"));
}

absl::StatusOr<double> NodeInputs::Float(const std::string& port) const {
  auto v = Get(port);
  if (!v.ok()) return v.status();
  if (std::holds_alternative<double>(**v)) return std::get<double>(**v);
  if (std::holds_alternative<int64_t>(**v)) return static_cast<double>(std::get<int64_t>(**v));
  return absl::InvalidArgumentError(absl::StrCat("node '", *node_, "': input '", port, "' is a ", DescribeValue(**v), ", not a float"));
}

absl::StatusOr<std::string> NodeInputs::String(const std::string& port) const {
  auto v = Get(port);
  if (!v.ok()) return v.status();
  if (!std::holds_alternative<std::string>(**v)) {
    return absl::InvalidArgumentError(absl::StrCat("node '", *node_, "': input '", port, "' is a ", DescribeValue(**v), ", not a string"));
  }
  return std::get<std::string>(**v);
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
