// What comfy_import.cc's translation of a workflow collects and comfy_import_render.cc turns into
// a graph file: the translated nodes in blocks (one per ComfyUI node), the widget values that
// become graph inputs, and which model each sampler, encoder and decoder uses. Not for other users:
// see comfy_import.h.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "host_plugin/runtime/comfy_import.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd::comfy_import {

// What flows along a MODEL, CLIP or VAE link: which files, not tensors.
struct Handle {
  std::string checkpoint, vae, origin;  // origin: the loader's node id, for messages
  std::vector<std::pair<std::string, double>> loras;
  int64_t clip_skip = 1;
  bool operator==(const Handle& o) const {
    return checkpoint == o.checkpoint && vae == o.vae && loras == o.loras;
  }
};

struct Param {
  std::string base;
  std::string owner;  // the ComfyUI node id, for a suffix when values differ
  ComfyWidget value;
  std::string doc;
};

// The nodes one ComfyUI node became.
struct Block {
  std::string comment;
  std::vector<v1::Node> nodes;
  std::vector<v1::Loop> loops;
  std::vector<v1::Node> after;  // nodes after the loops (a sampler's end)
};

struct ComfyTranslation {
  std::vector<Param> params;  // referred to in the nodes as "$P<index>$"
  std::vector<Block> blocks;
  std::vector<std::pair<std::string, std::string>> outputs;  // name, source
  // Node id and the model its MODEL / CLIP / VAE input carries.
  std::vector<std::pair<std::string, Handle>> model_users, clip_users, vae_users;
  std::vector<std::string> control_files;  // ControlNetLoader files, by index
};

// Text for a comment of the graph file: a control character (a line break would end the comment
// and make the rest graph text) becomes a space.
inline std::string OneLine(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

inline std::string Describe(const Handle& h) {
  std::string s = absl::StrCat("checkpoint '", h.checkpoint, "'");
  for (const auto& [name, w] : h.loras) absl::StrAppend(&s, " + LoRA '", name, "' at ", w);
  return s;
}

// One model for the run: every sampler's MODEL, every encoder's CLIP and every VAE user agree
// (else INVALID_ARGUMENT naming the nodes and `file`).
absl::Status ChooseComfyModel(const std::string& file, const ComfyTranslation& t, ComfyModel* m);

// The graph file: inputs named (equal values of one meaning share a name), the model in the
// header comment, the blocks with their comments, the outputs.
std::string RenderComfyGraph(const std::string& file, const ComfyTranslation& t,
                             const ComfyModel& m);

}  // namespace sd::comfy_import
