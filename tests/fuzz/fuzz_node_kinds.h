// The node kinds the graph-planning fuzzers plan against: the catalog `sd-graph kinds --textproto`
// writes (they are built without LibTorch, so without the kinds themselves), read from the path in
// SD_FUZZ_NODE_KINDS (run_fuzzers.sh sets it) once, in LLVMFuzzerInitialize.
#pragma once

#include <google/protobuf/text_format.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "nodes/ops/node_contract.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd::fuzz {

inline std::map<std::string, NodeContract>*& Kinds() {
  static std::map<std::string, NodeContract>* kinds = nullptr;
  return kinds;
}

// Reads the catalog; aborts (with `who` and the reason) when it cannot.
inline void LoadNodeKinds(const char* who) {
  auto die = [&](const std::string& why) {
    std::fprintf(stderr, "%s: %s\n", who, why.c_str());
    std::abort();
  };
  const char* path = std::getenv("SD_FUZZ_NODE_KINDS");
  if (!path) die("set SD_FUZZ_NODE_KINDS to the output of `sd-graph kinds --textproto`");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  v1::NodeKindCatalog catalog;
  if (!in || !google::protobuf::TextFormat::ParseFromString(text.str(), &catalog))
    die(std::string("cannot read the node kind catalog ") + path);
  // The options messages all live in nodes.proto: using one links the file, whose descriptors
  // the catalog's options types are looked up in.
  (void)v1::NoiseOptions::descriptor();
  Kinds() = new std::map<std::string, NodeContract>();
  for (const v1::NodeKindInfo& k : catalog.kind()) {
    auto c = ContractFromInfo(k);
    if (!c.ok()) die(std::string(c.status().message()));
    (*Kinds())[k.name()] = *std::move(c);
  }
  if (Kinds()->empty()) die(std::string("no node kinds in ") + path);
}

// The ContractLookup ParseGraph takes.
inline absl::StatusOr<NodeContract> LookupKind(const std::string& kind) {
  auto it = Kinds()->find(kind);
  if (it == Kinds()->end()) return absl::NotFoundError("unknown node kind '" + kind + "'");
  return it->second;
}

}  // namespace sd::fuzz
