// A ComfyUI workflow in its API format ("Save (API Format)", what its HTTP API takes and what it
// writes into each PNG as the `prompt` text chunk), read and checked before anything is translated:
// the JSON's shape, every class_type against the node set we run (one message lists every
// unsupported one), links (dangling, wrong output slot, wrong type), widget values (type), and
// cycles. Messages name the file, the node id and the input. Torch-free.
//   {"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0], ...}}, ...}
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

enum class ComfyType { kModel, kClip, kVae, kConditioning, kLatent, kImage, kMask, kControlNet };
const char* ComfyTypeName(ComfyType t);  // "MODEL", "CLIP", ...

struct ComfyLink {
  std::string node;  // the source node's id
  int slot = 0;      // its output
};
using ComfyWidget = std::variant<std::string, int64_t, double>;

struct ComfyNode {
  std::string id, class_type, title;
  std::map<std::string, ComfyWidget> widgets;
  std::map<std::string, ComfyLink> links;
  // The widget `name` (checked present and of its type when read).
  const std::string& Text(const std::string& name) const;
  int64_t Int(const std::string& name) const;
  double Number(const std::string& name) const;
};

struct ComfyWorkflow {
  std::string file;                        // for messages
  std::map<std::string, ComfyNode> nodes;  // every node of the file
  std::vector<std::string> order;          // the nodes an output needs, each after its inputs
  std::vector<std::string> outputs;        // SaveImage / PreviewImage ids, in id order
  const ComfyNode& node(const std::string& id) const { return nodes.at(id); }
};

// The node classes we translate (ComfyUI's SD v1.x core set), for messages and docs.
std::vector<std::string> ComfyClassNames();

// INVALID_ARGUMENT, naming `file` and the node and input at fault, for anything not a runnable
// workflow of the supported classes (the editor's "workflow" format gets a hint to save the API
// format).
absl::StatusOr<ComfyWorkflow> ParseComfyWorkflow(std::string_view json, const std::string& file);

// The `prompt` text of a PNG that ComfyUI saved (tEXt or uncompressed iTXt); NOT_FOUND when the
// file has none, INVALID_ARGUMENT when it is not a PNG or its chunks are malformed.
absl::StatusOr<std::string> ComfyPromptFromPng(std::string_view png, const std::string& file);

// Reads FILE: a .png is searched for its `prompt` chunk; anything else is the JSON itself.
absl::StatusOr<ComfyWorkflow> ReadComfyWorkflow(const std::string& file);

}  // namespace sd
