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

// A LoraLoader's file on one side (MODEL or CLIP) of a handle.
struct HandleLora {
  std::string name;
  double strength = 1.0;  // this side's
  std::string node;       // the LoraLoader's id (not part of what computes)
  bool operator==(const HandleLora& o) const { return name == o.name && strength == o.strength; }
};

// What flows along a MODEL, CLIP or VAE link: which files, not tensors.
struct Handle {
  std::string checkpoint, vae, origin;  // origin: the loader's node id, for messages
  std::vector<HandleLora> loras;
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

// A node id as our names allow it ('.', '=', '@' and spaces become '_').
inline std::string Safe(const std::string& id) {
  std::string s = id;
  for (char& c : s) {
    if (c == '.' || c == '=' || c == '@' || c == ' ') c = '_';
  }
  return s;
}

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
  for (const HandleLora& l : h.loras) absl::StrAppend(&s, " + LoRA '", l.name, "' at ", l.strength);
  return s;
}

// A graph input standing for a widget value of node `owner`: its token ("$P<index>$"); the name
// is chosen when the graph is rendered.
inline std::string AddParam(ComfyTranslation& t, const std::string& base, const std::string& owner,
                            ComfyWidget value, const std::string& doc) {
  t.params.push_back({base, owner, std::move(value), doc});
  return "$P" + std::to_string(t.params.size() - 1) + "$";
}

// The run's model: one checkpoint (and VAE) for every sampler's MODEL, encoder's CLIP and VAE user
// (else INVALID_ARGUMENT naming the nodes and `file`). Where they also agree on their LoRAs, those
// are the run's (m->loras); where not, each sampler's UNet steps and each encoder's ClipEncode
// take a `model` from a chain of ApplyLora nodes, one per LoraLoader and side, added to `t`
// (their files named by options.lora_file when set).
absl::Status ChooseComfyModel(const std::string& file, const ComfyImportOptions& options,
                              ComfyTranslation& t, ComfyModel* m);

// The graph file: inputs named (equal values of one meaning share a name), the model in the
// header comment, the blocks with their comments, the outputs.
std::string RenderComfyGraph(const std::string& file, const ComfyTranslation& t,
                             const ComfyModel& m);

}  // namespace sd::comfy_import
