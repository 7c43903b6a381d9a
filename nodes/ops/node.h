// The node contract (after MediaPipe's calculators): a node kind states its ports and options message
// once; graphs are validated against every contract before anything runs; Open() acquires resources
// (models), Process() computes. Nodes are pure functions of their inputs and options, so any worker can
// run any node and a retry gives the same bytes.
//
// A kind registers itself with SD_REGISTER_NODE(ClassName); the class provides
//   static NodeContract Contract();
//   explicit ClassName(const google::protobuf::Any& options)  (options already checked to be of the
//                                                             contract's type, or empty)
//   absl::Status Open(RunContext& ctx);
//   absl::Status Process(const NodeInputs& in, NodeOutputs& out);
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nodes/ops/node_contract.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

class ModelCache;

// A value on an edge: a string, an integer, a float or a tensor.
using Value = std::variant<std::monostate, std::string, int64_t, double, torch::Tensor>;
std::string DescribeValue(const Value& v);
// Checks `v` against `type` ("expected rank 3, got 2"); the caller prefixes the port's name.
absl::Status CheckValue(const Value& v, const v1::PortType& type);
// What a run shares with its nodes: where models and the tokenizer come from, the compute dtype and
// device, and the process-wide model cache. Passed per run: no globals.
struct RunContext {
  std::string checkpoint;     // path of the SD checkpoint named by the run (--model)
  std::string tokenizer_dir;  // CLIP vocab.json + merges.txt
  std::string embeddings_dir;  // textual-inversion embeddings ("": none)
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  std::shared_ptr<ModelCache> models;
};

class NodeInputs {
 public:
  explicit NodeInputs(const std::map<std::string, Value>* values, const std::string* node) : values_(values), node_(node) {}
  bool Has(const std::string& port) const;
  absl::StatusOr<torch::Tensor> Tensor(const std::string& port) const;
  absl::StatusOr<int64_t> Int(const std::string& port) const;
  absl::StatusOr<double> Float(const std::string& port) const;
  absl::StatusOr<std::string> String(const std::string& port) const;

 private:
  absl::StatusOr<const Value*> Get(const std::string& port) const;
  const std::map<std::string, Value>* values_;
  const std::string* node_;
};

using NodeOutputs = std::map<std::string, Value>;

class NodeKernel {
 public:
  virtual ~NodeKernel() = default;
  virtual absl::Status Open(RunContext& ctx) { return absl::OkStatus(); }
  virtual absl::Status Process(const NodeInputs& in, NodeOutputs& out) = 0;
};

struct NodeKind {
  std::string name;
  std::function<NodeContract()> contract;
  std::function<std::unique_ptr<NodeKernel>(const google::protobuf::Any& options)> create;
};

// The process-wide registry of node kinds (a leaked singleton behind a mutex).
class NodeRegistry {
 public:
  static NodeRegistry& Get();
  // ALREADY_EXISTS for a duplicate name.
  absl::Status Register(NodeKind kind);
  // NOT_FOUND listing the known kinds.
  absl::StatusOr<const NodeKind*> Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  NodeRegistry() = default;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<NodeKind>> kinds_;
};

namespace internal {
bool RegisterOrDie(NodeKind kind);
}

// Registration happens when the object file is linked in; stock_nodes.cc references every stock kind's
// flag so a static library cannot drop them.
#define SD_REGISTER_NODE(Class)                                                                  \
  extern const bool sd_node_registered_##Class;                                                 \
  const bool sd_node_registered_##Class = ::sd::internal::RegisterOrDie(::sd::NodeKind{         \
      #Class, [] { return Class::Contract(); },                                                   \
      [](const google::protobuf::Any& o) -> std::unique_ptr<::sd::NodeKernel> { return std::make_unique<class Class>(o); }})

// The stock node kinds, linked into every host. Returns their names.
std::vector<std::string> StockNodeKinds();

// The contracts of the registered kinds `names` (every registered kind when empty) as data, in
// that order; NOT_FOUND (listing the known kinds) for a name not registered.
absl::StatusOr<v1::NodeKindCatalog> KindCatalog(const std::vector<std::string>& names);

// Unpacks node options of type T (defaults when `options` is empty).
template <typename T>
T UnpackOptions(const google::protobuf::Any& options) {
  T t;
  if (options.ByteSizeLong() > 0) options.UnpackTo(&t);
  return t;
}

}  // namespace sd
