// What a node kind promises (its contract): the ports it reads and writes, with their types, and
// its options message. Torch-free, so that graph files can be parsed and planned (and fuzzed)
// without LibTorch; the kinds themselves live in node.h.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

v1::PortType TensorPort(v1::DType dtype, int rank);
v1::PortType ScalarPort(v1::ValueKind kind);
std::string DescribeType(const v1::PortType& type);
// Whether a value of type `from` can flow into a port of type `to`.
bool Compatible(const v1::PortType& from, const v1::PortType& to);

struct PortSpec {
  std::string name;
  v1::PortType type;
  bool optional = false;
  std::string doc;
  // Tensors: the size of each axis, symbols shared across the node's ports ("B,C,h,w"; see
  // port_dims.h). Empty: any size.
  std::string dims;
};

struct NodeContract {
  std::vector<PortSpec> inputs;
  std::vector<PortSpec> outputs;
  // The options message type (nullptr: the kind takes no options).
  const google::protobuf::Descriptor* options = nullptr;
  std::string doc;
  // Whether the kind computes with a checkpoint's networks (CLIP, UNet, VAE): such nodes are what
  // the distributed runtime sends to workers; the rest are cheap and run in the host.
  bool needs_model = false;
  const PortSpec* Input(const std::string& name) const;
  const PortSpec* Output(const std::string& name) const;
};

// INVALID_ARGUMENT unless every port's dims parse and have one axis per rank (tensor ports only).
absl::Status CheckContract(const std::string& kind, const NodeContract& contract);

// The contract as data (`sd-graph kinds --textproto`), and back: INVALID_ARGUMENT for an options
// type this program does not know.
v1::NodeKindInfo ContractToInfo(const std::string& kind, const NodeContract& contract);
absl::StatusOr<NodeContract> ContractFromInfo(const v1::NodeKindInfo& info);

}  // namespace sd
