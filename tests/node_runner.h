// Runs one node kind outside any graph: no worker, no graph file.
//
// NodeRunner drives a node from the text it would have in a graph, inputs wired to named values
// ("@name") or literals ("#7.5"), and checks the inputs and every output against the kind's
// contract:
//   auto cfg = NodeRunner::FromText(R"(kind: "CfgCombine" input: "cond=@c" input: "uncond=@u"
//                                      input: "scale=#7.5")");
//   SD_ASSIGN_OR_RETURN(NodeOutputs out, cfg->Run({{"c", cond}, {"u", uncond}}));
// RunNode is the short form: the kind's name and the values on its input ports (options empty
// unless given).
//   SD_ASSIGN_OR_RETURN(NodeOutputs out, testing::RunNode("SigmaStep", ctx, {{"index", int64_t{0}},
//   ...}));
#pragma once

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/node.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd::testing {

inline absl::StatusOr<NodeOutputs> RunNode(const std::string& kind, RunContext& ctx,
                                           std::map<std::string, Value> inputs,
                                           const google::protobuf::Any& options = {}) {
  SD_ASSIGN_OR_RETURN(const NodeKind* k, NodeRegistry::Get().Find(kind));
  std::unique_ptr<NodeKernel> kernel = k->create(options);
  SD_RETURN_IF_ERROR(kernel->Open(ctx));
  const std::string name = kind;
  SD_ASSIGN_OR_RETURN(const NodeInputs in, NodeInputs::Check(k->contract(), &inputs, &name));
  NodeOutputs out;
  SD_RETURN_IF_ERROR(kernel->Process(in, out));
  return out;
}

class NodeRunner {
 public:
  // `text`: the body of a graph's `node { ... }` (kind, inputs, options; the name may be left out).
  static absl::StatusOr<NodeRunner> FromText(const std::string& text) {
    NodeRunner r;
    if (!google::protobuf::TextFormat::ParseFromString(text, &r.node_))
      return absl::InvalidArgumentError("NodeRunner: the node text does not parse: " + text);
    if (r.node_.name().empty()) r.node_.set_name(r.node_.kind());
    SD_ASSIGN_OR_RETURN(r.kind_, NodeRegistry::Get().Find(r.node_.kind()));
    r.contract_ = r.kind_->contract();
    for (const std::string& in : r.node_.input()) {
      const size_t eq = in.find('=');
      const std::string port = in.substr(0, eq);
      const PortSpec* spec = eq == std::string::npos ? nullptr : r.contract_.Input(port);
      if (!spec || eq + 2 > in.size() || (in[eq + 1] != '@' && in[eq + 1] != '#'))
        return absl::InvalidArgumentError("NodeRunner: '" + in +
                                          "' is not PORT=@NAME or PORT=#VALUE");
      if (in[eq + 1] == '@') {
        r.sources_[port] = in.substr(eq + 2);
      } else {
        SD_ASSIGN_OR_RETURN(r.literals_[port], Literal(in.substr(eq + 2), spec->type));
      }
    }
    for (const PortSpec& p : r.contract_.inputs) {
      if (!p.optional && !r.sources_.count(p.name) && !r.literals_.count(p.name))
        return absl::InvalidArgumentError("NodeRunner: required input '" + p.name +
                                          "' is not wired");
    }
    return r;
  }

  // Runs the node on `values` (by the names the inputs read); a fresh context unless one is given.
  absl::StatusOr<NodeOutputs> Run(const std::map<std::string, Value>& values = {}) const {
    RunContext ctx;
    return Run(values, ctx);
  }
  absl::StatusOr<NodeOutputs> Run(const std::map<std::string, Value>& values,
                                  RunContext& ctx) const {
    std::map<std::string, Value> inputs = literals_;
    for (const auto& [port, name] : sources_) {
      auto it = values.find(name);
      if (it == values.end()) continue;  // unset: the port receives nothing, as in a graph
      inputs[port] = it->second;
    }
    // Checked before the kernel opens (loads its model), as a graph checks them.
    SD_ASSIGN_OR_RETURN(const NodeInputs in, NodeInputs::Check(contract_, &inputs, &node_.name()));
    std::unique_ptr<NodeKernel> kernel = kind_->create(node_.options());
    SD_RETURN_IF_ERROR(kernel->Open(ctx));
    NodeOutputs out;
    SD_RETURN_IF_ERROR(kernel->Process(in, out));
    SD_RETURN_IF_ERROR(CheckCallOutputs(contract_, inputs, out));
    return out;
  }

 private:
  static absl::StatusOr<Value> Literal(const std::string& text, const v1::PortType& type) {
    int64_t i = 0;
    double f = 0;
    if (type.kind() == v1::INT && absl::SimpleAtoi(text, &i)) return Value(i);
    if (type.kind() == v1::FLOAT && absl::SimpleAtod(text, &f)) return Value(f);
    if (type.kind() == v1::STRING) return Value(text);
    return absl::InvalidArgumentError("NodeRunner: '#" + text + "' does not fit the port");
  }
  v1::Node node_;
  const NodeKind* kind_ = nullptr;
  NodeContract contract_;
  std::map<std::string, std::string> sources_;  // port -> value name
  std::map<std::string, Value> literals_;       // port -> value
};

// The tensor on output `port`.
inline torch::Tensor OutTensor(const NodeOutputs& out, const std::string& port) {
  return std::get<torch::Tensor>(out.at(port));
}

// Tensor `name` of a .safetensors or .ckpt file, as float32 (fails the test when missing).
inline torch::Tensor ReadTensor(const std::string& path, const std::string& name) {
  auto c = Checkpoint::Open(path);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  auto t = LoadTensor(**c, name, torch::kFloat32);
  EXPECT_TRUE(t.ok()) << path << ": " << t.status();
  return t.ok() ? t->clone() : torch::Tensor();
}

}  // namespace sd::testing
