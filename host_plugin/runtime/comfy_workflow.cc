#include "host_plugin/runtime/comfy_workflow.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sd {
namespace {

using json = nlohmann::json;
constexpr size_t kMaxNodes = 10000;
constexpr size_t kMaxFileBytes = 64 << 20;

enum class In { kLink, kText, kInt, kNumber };
struct InputSpec {
  const char* name;
  In kind;
  ComfyType type = ComfyType::kModel;  // what a link must carry
};
struct ComfyClass {
  const char* name;
  std::vector<InputSpec> inputs;
  std::vector<ComfyType> outputs;
  bool output_node = false;
};

InputSpec Link(const char* name, ComfyType t) { return {name, In::kLink, t}; }
InputSpec Text(const char* name) { return {name, In::kText}; }
InputSpec Int(const char* name) { return {name, In::kInt}; }
InputSpec Number(const char* name) { return {name, In::kNumber}; }

const std::vector<ComfyClass>& Classes() {
  using T = ComfyType;
  static const auto* classes = new std::vector<ComfyClass>{
      {"CheckpointLoaderSimple", {Text("ckpt_name")}, {T::kModel, T::kClip, T::kVae}},
      {"VAELoader", {Text("vae_name")}, {T::kVae}},
      {"LoraLoader",
       {Link("model", T::kModel), Link("clip", T::kClip), Text("lora_name"),
        Number("strength_model"), Number("strength_clip")},
       {T::kModel, T::kClip}},
      {"LoraLoaderModelOnly",
       {Link("model", T::kModel), Text("lora_name"), Number("strength_model")},
       {T::kModel}},
      {"CLIPSetLastLayer", {Link("clip", T::kClip), Int("stop_at_clip_layer")}, {T::kClip}},
      {"CLIPTextEncode", {Link("clip", T::kClip), Text("text")}, {T::kConditioning}},
      {"EmptyLatentImage", {Int("width"), Int("height"), Int("batch_size")}, {T::kLatent}},
      {"KSampler",
       {Link("model", T::kModel), Link("positive", T::kConditioning),
        Link("negative", T::kConditioning), Link("latent_image", T::kLatent), Int("seed"),
        Int("steps"), Number("cfg"), Text("sampler_name"), Text("scheduler"), Number("denoise")},
       {T::kLatent}},
      {"KSamplerAdvanced",
       {Link("model", T::kModel), Link("positive", T::kConditioning),
        Link("negative", T::kConditioning), Link("latent_image", T::kLatent), Text("add_noise"),
        Int("noise_seed"), Int("steps"), Number("cfg"), Text("sampler_name"), Text("scheduler"),
        Int("start_at_step"), Int("end_at_step"), Text("return_with_leftover_noise")},
       {T::kLatent}},
      {"VAEDecode", {Link("samples", T::kLatent), Link("vae", T::kVae)}, {T::kImage}},
      {"VAEEncode", {Link("pixels", T::kImage), Link("vae", T::kVae)}, {T::kLatent}},
      {"LoadImage", {Text("image")}, {T::kImage, T::kMask}},
      {"LoadImageMask", {Text("image"), Text("channel")}, {T::kMask}},
      {"InvertMask", {Link("mask", T::kMask)}, {T::kMask}},
      {"VAEEncodeForInpaint",
       {Link("pixels", T::kImage), Link("vae", T::kVae), Link("mask", T::kMask),
        Int("grow_mask_by")},
       {T::kLatent}},
      {"SetLatentNoiseMask", {Link("samples", T::kLatent), Link("mask", T::kMask)}, {T::kLatent}},
      {"RepeatLatentBatch", {Link("samples", T::kLatent), Int("amount")}, {T::kLatent}},
      {"LatentFromBatch",
       {Link("samples", T::kLatent), Int("batch_index"), Int("length")},
       {T::kLatent}},
      {"SaveImage", {Link("images", T::kImage), Text("filename_prefix")}, {}, true},
      {"PreviewImage", {Link("images", T::kImage)}, {}, true},
      {"LatentUpscale",
       {Link("samples", T::kLatent), Text("upscale_method"), Int("width"), Int("height"),
        Text("crop")},
       {T::kLatent}},
      {"LatentUpscaleBy",
       {Link("samples", T::kLatent), Text("upscale_method"), Number("scale_by")},
       {T::kLatent}},
      {"ImageScale",
       {Link("image", T::kImage), Text("upscale_method"), Int("width"), Int("height"),
        Text("crop")},
       {T::kImage}},
      {"ImageScaleBy",
       {Link("image", T::kImage), Text("upscale_method"), Number("scale_by")},
       {T::kImage}},
      {"ImageInvert", {Link("image", T::kImage)}, {T::kImage}},
      {"ControlNetLoader", {Text("control_net_name")}, {T::kControlNet}},
      {"ControlNetApply",
       {Link("conditioning", T::kConditioning), Link("control_net", T::kControlNet),
        Link("image", T::kImage), Number("strength")},
       {T::kConditioning}},
      {"ControlNetApplyAdvanced",
       {Link("positive", T::kConditioning), Link("negative", T::kConditioning),
        Link("control_net", T::kControlNet), Link("image", T::kImage), Number("strength"),
        Number("start_percent"), Number("end_percent")},
       {T::kConditioning, T::kConditioning}},
  };
  return *classes;
}

const ComfyClass* FindClass(const std::string& name) {
  for (const ComfyClass& c : Classes()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// Node ids in ComfyUI's order: numbers by value, then anything else by text.
bool IdLess(const std::string& a, const std::string& b) {
  int64_t x = 0, y = 0;
  const bool na = absl::SimpleAtoi(a, &x), nb = absl::SimpleAtoi(b, &y);
  if (na != nb) return na;
  return na && x != y ? x < y : a < b;
}

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}
  absl::Status Error(const std::string& where, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", file_, ": ", where, where.empty() ? "" : ": ", what));
  }
  absl::StatusOr<ComfyNode> ReadNode(const std::string& id, const json& v,
                                     const ComfyClass& cls) const {
    ComfyNode n;
    n.id = id;
    n.class_type = cls.name;
    if (auto meta = v.find("_meta"); meta != v.end() && meta->is_object()) {
      if (auto t = meta->find("title"); t != meta->end() && t->is_string())
        n.title = t->get<std::string>();
    }
    const json& inputs = v.at("inputs");
    for (const InputSpec& spec : cls.inputs) {
      const std::string where =
          absl::StrCat("node ", id, " (", cls.name, ") input '", spec.name, "'");
      auto it = inputs.find(spec.name);
      if (it == inputs.end()) return Error(where, "is missing");
      const json& x = *it;
      const bool is_link = x.is_array();
      if (spec.kind == In::kLink) {
        if (!is_link || x.size() != 2 || !(x[0].is_string() || x[0].is_number_integer()) ||
            !x[1].is_number_integer()) {
          return Error(where, "must be a link [\"NODE_ID\", OUTPUT_INDEX]");
        }
        ComfyLink l;
        l.node = x[0].is_string() ? x[0].get<std::string>() : std::to_string(x[0].get<int64_t>());
        const int64_t slot = x[1].get<int64_t>();
        if (slot < 0 || slot > 64)
          return Error(where, absl::StrCat("output index ", slot, " is out of range"));
        l.slot = static_cast<int>(slot);
        n.links[spec.name] = l;
        continue;
      }
      if (is_link) {
        return Error(
            where,
            "is linked to another node; only literal values are supported for it (a custom "
            "node feeding a widget?)");
      }
      auto w = ReadWidget(x, spec.kind);
      if (!w.ok()) return Error(where, std::string(w.status().message()));
      n.widgets[spec.name] = *w;
    }
    return n;
  }

 private:
  static absl::StatusOr<ComfyWidget> ReadWidget(const json& x, In kind) {
    if (kind == In::kText) {
      if (!x.is_string())
        return absl::InvalidArgumentError(absl::StrCat("must be text, got ", x.type_name()));
      return ComfyWidget(x.get<std::string>());
    }
    if (kind == In::kInt) {
      if (x.is_number_unsigned())
        return ComfyWidget(static_cast<int64_t>(x.get<uint64_t>()));  // 64-bit seeds
      if (x.is_number_integer()) return ComfyWidget(x.get<int64_t>());
      if (x.is_number_float()) {
        const double d = x.get<double>();
        if (std::floor(d) == d && std::abs(d) < 9e15) return ComfyWidget(static_cast<int64_t>(d));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("must be an integer, got ", x.dump().substr(0, 40)));
    }
    if (!x.is_number())
      return absl::InvalidArgumentError(absl::StrCat("must be a number, got ", x.type_name()));
    const double d = x.get<double>();
    if (!std::isfinite(d)) return absl::InvalidArgumentError("must be a finite number");
    return ComfyWidget(d);
  }
  std::string file_;
};

// Links: the source exists, has the output, and it carries the type the input takes.
absl::Status CheckLinks(const ComfyWorkflow& w, const Reader& r) {
  for (const auto& [id, n] : w.nodes) {
    const ComfyClass* cls = FindClass(n.class_type);
    for (const InputSpec& spec : cls->inputs) {
      if (spec.kind != In::kLink) continue;
      const ComfyLink& l = n.links.at(spec.name);
      const std::string where =
          absl::StrCat("node ", id, " (", n.class_type, ") input '", spec.name, "'");
      auto src = w.nodes.find(l.node);
      if (src == w.nodes.end()) {
        return r.Error(
            where, absl::StrCat("links to node ", l.node, ", which the workflow does not have"));
      }
      const ComfyClass* from = FindClass(src->second.class_type);
      if (static_cast<size_t>(l.slot) >= from->outputs.size()) {
        return r.Error(
            where, absl::StrCat("links to output ", l.slot, " of node ", l.node, " (", from->name,
                                "), which has ", from->outputs.size(), " outputs"));
      }
      if (from->outputs[l.slot] != spec.type) {
        return r.Error(where, absl::StrCat("takes ", ComfyTypeName(spec.type), " but output ",
                                           l.slot, " of node ", l.node, " (", from->name, ") is ",
                                           ComfyTypeName(from->outputs[l.slot])));
      }
    }
  }
  return absl::OkStatus();
}

// Depth-first from the outputs (iteratively: a hostile file may chain many nodes): each needed node
// after its inputs; a cycle is named node by node.
absl::Status Order(ComfyWorkflow& w, const Reader& r) {
  enum Mark { kNone, kOpen, kDone };
  std::map<std::string, Mark> mark;
  for (const std::string& out : w.outputs) {
    std::vector<std::pair<std::string, bool>> stack{{out, false}};  // (node, inputs pushed)
    std::vector<std::string> path;
    while (!stack.empty()) {
      auto [id, expanded] = stack.back();
      stack.pop_back();
      if (expanded) {
        mark[id] = kDone;
        path.pop_back();
        w.order.push_back(id);
        continue;
      }
      if (mark[id] == kDone) continue;
      if (mark[id] == kOpen) {
        auto from = std::find(path.begin(), path.end(), id);
        std::vector<std::string> cycle(from, path.end());
        cycle.push_back(id);
        return r.Error("", absl::StrCat("the nodes form a cycle: ", absl::StrJoin(cycle, " -> ")));
      }
      mark[id] = kOpen;
      path.push_back(id);
      stack.push_back({id, true});
      std::vector<std::string> inputs;
      for (const auto& [port, l] : w.nodes.at(id).links) inputs.push_back(l.node);
      std::sort(inputs.begin(), inputs.end(),
                [](const auto& a, const auto& b) { return IdLess(b, a); });
      for (const std::string& in : inputs) {
        if (mark[in] != kDone) stack.push_back({in, false});
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* ComfyTypeName(ComfyType t) {
  switch (t) {
    case ComfyType::kModel:
      return "MODEL";
    case ComfyType::kClip:
      return "CLIP";
    case ComfyType::kVae:
      return "VAE";
    case ComfyType::kConditioning:
      return "CONDITIONING";
    case ComfyType::kLatent:
      return "LATENT";
    case ComfyType::kImage:
      return "IMAGE";
    case ComfyType::kMask:
      return "MASK";
    case ComfyType::kControlNet:
      return "CONTROL_NET";
  }
  return "?";
}

const std::string& ComfyNode::Text(const std::string& name) const {
  return std::get<std::string>(widgets.at(name));
}
int64_t ComfyNode::Int(const std::string& name) const {
  return std::get<int64_t>(widgets.at(name));
}
double ComfyNode::Number(const std::string& name) const {
  return std::get<double>(widgets.at(name));
}

std::vector<std::string> ComfyClassNames() {
  std::vector<std::string> names;
  for (const ComfyClass& c : Classes()) names.push_back(c.name);
  return names;
}

absl::StatusOr<ComfyWorkflow> ParseComfyWorkflow(std::string_view text, const std::string& file) {
  Reader r(file);
  json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return r.Error("", "is not valid JSON");
  if (!root.is_object() || root.empty())
    return r.Error("", "must be a JSON object of nodes keyed by id");
  if (root.contains("nodes") && root.contains("links")) {
    return r.Error(
        "",
        "is ComfyUI's editor format (a \"workflow\"); export it with \"Save (API Format)\", or "
        "give a PNG ComfyUI saved");
  }
  if (root.size() > kMaxNodes)
    return r.Error("", absl::StrCat("has ", root.size(), " nodes; at most ", kMaxNodes));
  ComfyWorkflow w;
  w.file = file;
  std::map<std::string, std::vector<std::string>> unsupported;  // class -> ids
  for (const auto& [id, v] : root.items()) {
    if (!v.is_object() || !v.contains("class_type") || !v["class_type"].is_string() ||
        !v.contains("inputs") || !v["inputs"].is_object()) {
      return r.Error(absl::StrCat("node ", id),
                     "needs a \"class_type\" string and an \"inputs\" object");
    }
    const std::string cls = v["class_type"].get<std::string>();
    if (!FindClass(cls)) {
      unsupported[cls].push_back(id);
      continue;
    }
    auto n = r.ReadNode(id, v, *FindClass(cls));
    if (!n.ok()) return n.status();
    w.nodes[id] = *std::move(n);
  }
  if (!unsupported.empty()) {
    std::vector<std::string> parts;
    for (auto& [cls, ids] : unsupported) {
      std::sort(ids.begin(), ids.end(), IdLess);
      parts.push_back(
          absl::StrCat(cls, " (node", ids.size() > 1 ? "s " : " ", absl::StrJoin(ids, ", "), ")"));
    }
    return r.Error("", absl::StrCat("unsupported node types: ", absl::StrJoin(parts, "; "),
                                    ". Supported: ", absl::StrJoin(ComfyClassNames(), ", ")));
  }
  if (absl::Status s = CheckLinks(w, r); !s.ok()) return s;
  for (const auto& [id, n] : w.nodes) {
    if (FindClass(n.class_type)->output_node) w.outputs.push_back(id);
  }
  std::sort(w.outputs.begin(), w.outputs.end(), IdLess);
  if (w.outputs.empty())
    return r.Error("", "has no SaveImage or PreviewImage node: nothing would be output");
  if (absl::Status s = Order(w, r); !s.ok()) return s;
  return w;
}

absl::StatusOr<std::string> ComfyPromptFromPng(std::string_view png, const std::string& file) {
  static constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
  };
  if (png.size() < 8 || png.substr(0, 8) != std::string_view(kSignature, 8))
    return bad("is not a PNG file");
  size_t pos = 8;
  while (pos + 12 <= png.size()) {
    const auto* p = reinterpret_cast<const unsigned char*>(png.data() + pos);
    const uint64_t length = (uint64_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
    const std::string_view type = png.substr(pos + 4, 4);
    if (length > png.size() - pos - 12)
      return bad(absl::StrCat("PNG chunk '", std::string(type), "' runs past the end of the file"));
    const std::string_view data = png.substr(pos + 8, length);
    pos += 12 + length;
    if (type == "IEND") break;
    if (type != "tEXt" && type != "iTXt") continue;
    const size_t nul = data.find('\0');
    if (nul == std::string_view::npos || data.substr(0, nul) != "prompt") continue;
    if (type == "tEXt") return std::string(data.substr(nul + 1));
    // iTXt: keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    if (data.size() < nul + 3) return bad("malformed iTXt chunk 'prompt'");
    if (data[nul + 1] != 0) return bad("its 'prompt' chunk is compressed, which is not supported");
    const size_t lang_end = data.find('\0', nul + 3);
    const size_t key_end =
        lang_end == std::string_view::npos ? lang_end : data.find('\0', lang_end + 1);
    if (key_end == std::string_view::npos) return bad("malformed iTXt chunk 'prompt'");
    return std::string(data.substr(key_end + 1));
  }
  return absl::NotFoundError(
      absl::StrCat(file, ": has no ComfyUI 'prompt' text chunk (not saved by ComfyUI?)"));
}

absl::StatusOr<ComfyWorkflow> ReadComfyWorkflow(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open workflow ", file));
  std::string bytes;
  bytes.resize(kMaxFileBytes + 1);
  f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<size_t>(f.gcount()));
  if (bytes.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", file, " is larger than ", kMaxFileBytes >> 20, " MiB"));
  }
  if (bytes.size() >= 8 && bytes.compare(0, 4, "\x89PNG") == 0) {
    auto prompt = ComfyPromptFromPng(bytes, file);
    if (!prompt.ok()) return prompt.status();
    return ParseComfyWorkflow(*prompt, file);
  }
  return ParseComfyWorkflow(bytes, file);
}

}  // namespace sd
