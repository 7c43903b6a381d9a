// The node contract (after MediaPipe's calculators): a node kind states its ports and options
// message once; graphs are validated against every contract before anything runs; Open() acquires
// resources (models), Process() computes. Nodes are pure functions of their inputs and options, so
// any worker can run any node and a retry gives the same bytes.
//
// A kind registers itself with SD_REGISTER_NODE(ClassName); the class declares its ports (typed,
// below) and provides
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
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nodes/base/status_macros.h"
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
  // --dtype q8: f32 compute with the UNet's 3x3 convolutions (and, with VNNI, its feed-forward
  // projections) in int8 (nn::UseInt8Layers).
  bool int8 = false;
  torch::Device device = torch::kCPU;
  std::shared_ptr<ModelCache> models;
  // How ApplyLora and ApplyVae name a file in the run's model references: `part` is "lora" or
  // "vae" (in-process: the file, a LoRA found by name in --lora-dir or the model's folder; with
  // workers: the name in their repositories). Unset: as given.
  std::function<absl::StatusOr<std::string>(const std::string& part, const std::string& name)>
      part_file;
  // How a model reference that reaches a node's `model` input becomes one the model cache opens (a
  // worker: names in its repository -> paths). Unset: as given.
  std::function<absl::StatusOr<std::string>(const std::string&)> model_file;
};

// Typed ports (after MediaPipe's api2): a kind declares each port once, as a static member with its
// name, type, dims and doc, lists them in its contract, and reads and writes them typed:
//   static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
//   static constexpr OptionalInput<int64_t> kClipSkip{"clip_skip", "1 (default): the last layer"};
//   static constexpr Output<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w"};
//   static NodeContract Contract() { return {Ports(kLatents, kClipSkip), Ports(kEps), ...}; }
//   absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
//     torch::Tensor x = in[kLatents];                  // required: always there
//     std::optional<int64_t> skip = in[kClipSkip];     // optional: std::nullopt when unwired
//     out.Set(kEps, ...);
// Port types: torch::Tensor, int64_t, double (an int wired to it reads as a double), std::string.
enum class PortRole { kInput, kOptionalInput, kOutput };

template <typename T>
constexpr v1::ValueKind PortValueKind() {
  if constexpr (std::is_same_v<T, torch::Tensor>) return v1::TENSOR;
  if constexpr (std::is_same_v<T, int64_t>) return v1::INT;
  if constexpr (std::is_same_v<T, double>) return v1::FLOAT;
  static_assert(std::is_same_v<T, torch::Tensor> || std::is_same_v<T, int64_t> ||
                    std::is_same_v<T, double> || std::is_same_v<T, std::string>,
                "a port carries a torch::Tensor, an int64_t, a double or a std::string");
  return v1::STRING;
}

template <typename T, PortRole R>
class Port {
 public:
  using Type = T;
  static constexpr PortRole kRole = R;
  // A scalar port.
  template <typename U = T, std::enable_if_t<!std::is_same_v<U, torch::Tensor>, int> = 0>
  constexpr explicit Port(const char* name, const char* doc = "") : name_(name), doc_(doc) {}
  // A tensor port: its dtype and its dims, one per axis ("B,C,h,w"; see port_dims.h).
  template <typename U = T, std::enable_if_t<std::is_same_v<U, torch::Tensor>, int> = 0>
  constexpr Port(const char* name, v1::DType dtype, const char* dims, const char* doc = "")
      : name_(name), doc_(doc), dtype_(dtype), dims_(dims) {}
  constexpr const char* name() const { return name_; }
  PortSpec Spec() const;

 private:
  const char* name_;
  const char* doc_;
  v1::DType dtype_ = v1::DTYPE_UNSPECIFIED;
  const char* dims_ = "";
};

template <typename T>
using Input = Port<T, PortRole::kInput>;
template <typename T>
using OptionalInput = Port<T, PortRole::kOptionalInput>;
template <typename T>
using Output = Port<T, PortRole::kOutput>;

// The rank of a dims string: its axes (commas + 1); "" (any shape): -1, any rank.
constexpr int DimsRank(const char* dims) {
  if (*dims == '\0') return -1;
  int rank = 1;
  for (const char* c = dims; *c; ++c) rank += *c == ',' ? 1 : 0;
  return rank;
}

template <typename T, PortRole R>
PortSpec Port<T, R>::Spec() const {
  if constexpr (std::is_same_v<T, torch::Tensor>) {
    return PortSpec{name_, TensorPort(dtype_, DimsRank(dims_)), R == PortRole::kOptionalInput, doc_,
                    dims_};
  } else {
    return PortSpec{name_, ScalarPort(PortValueKind<T>()), R == PortRole::kOptionalInput, doc_, ""};
  }
}

// The ports of a contract, in order: Ports(kLatents, kT) for the inputs, Ports(kEps) for the
// outputs.
template <typename... P>
std::vector<PortSpec> Ports(const P&... ports) {
  static_assert(
      ((P::kRole == PortRole::kOutput) && ...) || ((P::kRole != PortRole::kOutput) && ...),
      "list a contract's inputs and its outputs apart");
  return {ports.Spec()...};
}

// The `model` input of the kinds that compute with a model (ClipEncode, UNetStep, VaeEncode,
// VaeDecode): a model reference (model_ref.h), e.g. ApplyLora's output. The graph executor opens
// the node with it, so it must be known before the run starts (a graph input, or an ApplyLora
// chain of those); the kernel's Process does not read it. Unwired: the run's model.
inline constexpr OptionalInput<std::string> kModelInput{
    "model", "the model it computes with (ApplyLora's); unwired: the run's model"};

// A node call's inputs, checked against its kind's contract before Process sees them: every
// required input is there with its type, and the tensors fit the ports' dims.
class NodeInputs {
 public:
  // INVALID_ARGUMENT naming the port for a missing required input, a value of the wrong type or a
  // tensor that does not fit its dims (`node` names the node in the message; both must outlive
  // the NodeInputs).
  static absl::StatusOr<NodeInputs> Check(const NodeContract& contract,
                                          const std::map<std::string, Value>* values,
                                          const std::string* node);
  template <typename T>
  T operator[](const Input<T>& port) const {
    return As<T>(values_->at(port.name()));
  }
  template <typename T>
  std::optional<T> operator[](const OptionalInput<T>& port) const {
    auto it = values_->find(port.name());
    if (it == values_->end() || std::holds_alternative<std::monostate>(it->second))
      return std::nullopt;
    return As<T>(it->second);
  }
  const std::string& node() const { return *node_; }

 private:
  NodeInputs(const std::map<std::string, Value>* values, const std::string* node)
      : values_(values), node_(node) {}
  template <typename T>
  static T As(const Value& v) {
    if constexpr (std::is_same_v<T, double>) {
      if (std::holds_alternative<int64_t>(v)) return static_cast<double>(std::get<int64_t>(v));
    }
    return std::get<T>(v);
  }
  const std::map<std::string, Value>* values_;
  const std::string* node_;
};

// What a node call produced, by output port.
class NodeOutputs : public std::map<std::string, Value> {
 public:
  using std::map<std::string, Value>::map;
  template <typename T>
  void Set(const Output<T>& port, typename Port<T, PortRole::kOutput>::Type value) {
    (*this)[port.name()] = Value(std::move(value));
  }
};

// A node call's values against its contract, for the runtime and the workers: every input checked
// (as NodeInputs::Check does), then every output there, of its type, and fitting its dims with the
// symbols the inputs bound. Errors name the port ("output 'image' [1, 3, 60, 64]: axis 2 is 60,
// expected h*f ..."); INVALID_ARGUMENT for inputs, INTERNAL for outputs (the node's fault).
absl::Status CheckCallInputs(const NodeContract& contract,
                             const std::map<std::string, Value>& inputs);
absl::Status CheckCallOutputs(const NodeContract& contract,
                              const std::map<std::string, Value>& inputs,
                              const std::map<std::string, Value>& outputs);

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

// The contract of registered kind `kind` (NOT_FOUND listing the known kinds): what graphs are
// planned against in-process.
absl::StatusOr<NodeContract> RegisteredContract(const std::string& kind);

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
