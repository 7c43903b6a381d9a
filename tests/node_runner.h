// Runs one node kind outside any graph, as a test states it: the kind's name, the run context and
// the values on its input ports (options empty unless given).
//   SD_ASSIGN_OR_RETURN(NodeOutputs out, testing::RunNode("SigmaStep", ctx, {{"index", int64_t{0}},
//   ...}));
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "nodes/base/status_macros.h"
#include "nodes/ops/node.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::testing {

inline absl::StatusOr<NodeOutputs> RunNode(const std::string& kind, RunContext& ctx,
                                           std::map<std::string, Value> inputs,
                                           const google::protobuf::Any& options = {}) {
  SD_ASSIGN_OR_RETURN(const NodeKind* k, NodeRegistry::Get().Find(kind));
  std::unique_ptr<NodeKernel> kernel = k->create(options);
  SD_RETURN_IF_ERROR(kernel->Open(ctx));
  const std::string name = kind;
  NodeInputs in(&inputs, &name);
  NodeOutputs out;
  SD_RETURN_IF_ERROR(kernel->Process(in, out));
  return out;
}

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
