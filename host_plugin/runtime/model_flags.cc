#include "host_plugin/runtime/model_flags.h"

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"
#include "nodes/text/prompt_parser.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/demo_model.h"

namespace sd {
namespace {

std::string Base(const std::string& p) { return std::filesystem::path(p).filename().string(); }
std::string Stem(const std::string& p) { return std::filesystem::path(p).stem().string(); }

// A LoRA named on the command line or in a tag: a file as given, else NAME[.safetensors|.pt|.ckpt]
// in each folder.
absl::StatusOr<std::string> FindLora(const std::string& name,
                                     const std::vector<std::string>& dirs) {
  if (IsReadableFile(name)) return name;
  std::vector<std::string> tried;
  for (const std::string& dir : dirs) {
    if (dir.empty()) continue;
    for (const char* ext : {"", ".safetensors", ".pt", ".ckpt"}) {
      const std::string path = (std::filesystem::path(dir) / (name + ext)).string();
      if (IsReadableFile(path)) return path;
    }
    tried.push_back(dir);
  }
  return absl::NotFoundError(absl::StrCat(
      "LoRA '", name, "' not found (looked for it as a file", tried.empty() ? "" : " and in ",
      absl::StrJoin(tried, ", "), "; --lora-dir names a folder)"));
}

}  // namespace

absl::StatusOr<std::string> LoraPath(const ModelFlags& f, const std::string& name) {
  if (f.remote) return Base(name);
  return FindLora(name, {f.lora_dir, std::filesystem::path(f.model).parent_path().string()});
}

absl::StatusOr<std::string> PartPath(const ModelFlags& f, const std::string& part,
                                     const std::string& name) {
  if (part == "lora") return LoraPath(f, name);
  if (part != "vae") return absl::InvalidArgumentError(absl::StrCat("no model part '", part, "'"));
  if (f.remote) return Base(name);
  if (!IsReadableFile(name))
    return absl::NotFoundError(absl::StrCat("VAE ", name, ": no such readable file"));
  return name;
}

absl::StatusOr<ModelRef> ModelFromFlags(const ModelFlags& f) {
  ModelRef ref;
  ref.base = f.remote ? Base(f.model) : f.model;
  ref.vae = f.remote && !f.vae.empty() ? Base(f.vae) : f.vae;
  std::vector<LoraRef> loras;
  for (const std::string& spec : f.loras) {
    SD_ASSIGN_OR_RETURN(LoraRef l, ParseLoraSpec(spec));
    loras.push_back(std::move(l));
  }
  std::vector<LoraTag> tags;
  SD_RETURN_IF_ERROR(StripLoraTags(f.prompt, &tags).status());
  for (const LoraTag& t : tags) loras.push_back(LoraRef{t.name, t.unet, t.text});
  for (LoraRef& l : loras) {
    SD_ASSIGN_OR_RETURN(l.name, LoraPath(f, l.name));
  }
  ref.loras = std::move(loras);
  for (const std::string& c : f.controlnets) {
    if (f.remote) {
      ref.controls.push_back(Base(c));
      continue;
    }
    // A diffusers folder: its file; the demo ControlNet's name: the shipped file.
    SD_ASSIGN_OR_RETURN(std::string file, ControlNetWeightsFile(ResolveShippedName(c)));
    if (!IsReadableFile(file))
      return absl::NotFoundError(absl::StrCat("ControlNet ", c, ": no such readable file"));
    ref.controls.push_back(file);
  }
  return ref;
}

absl::Status CheckLoras(ModelCache& models, const ModelRef& ref, bool strict,
                        const std::string& who) {
  for (const LoraRef& l : ref.loras) {
    SD_ASSIGN_OR_RETURN(std::shared_ptr<const LoraFile> lora, models.Lora(l.name, ref.base));
    if (lora->unmatched.empty()) continue;
    const size_t shown = std::min<size_t>(lora->unmatched.size(), 8);
    const std::string list =
        absl::StrCat(absl::StrJoin(lora->unmatched.begin(),
                                   lora->unmatched.begin() + static_cast<long>(shown), ", "),
                     lora->unmatched.size() > shown
                         ? absl::StrCat(" and ", lora->unmatched.size() - shown, " more")
                         : "");
    const std::string msg = absl::StrCat("LoRA ", l.name, ": ", lora->unmatched.size(),
                                         " keys patch no layer of this model: ", list);
    if (strict) return absl::InvalidArgumentError(msg + " (--strict-lora)");
    std::fprintf(stderr, "%s: warning: %s\n", who.c_str(), msg.c_str());
  }
  return absl::OkStatus();
}

std::vector<std::string> LoraHashEntries(const ModelRef& ref,
                                         const std::vector<std::string>& sha256s) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < ref.loras.size() && i < sha256s.size(); ++i)
    parts.push_back(absl::StrCat(Stem(ref.loras[i].name), ": ", sha256s[i].substr(0, 10)));
  return parts;
}

}  // namespace sd
