#include "nodes/weights/model_ref.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nodes/base/status_macros.h"

namespace sd {

absl::StatusOr<ModelRef> ModelRef::Parse(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, '|');
  ModelRef ref;
  ref.base = parts[0];
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("model '", text.substr(0, 300), "': ", why));
  };
  if (parts.size() > 1 && ref.base.empty()) return bad("no checkpoint before '|'");
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    const std::string key = parts[i].substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : parts[i].substr(eq + 1);
    if (key != "vae") return bad(absl::StrCat("unknown part '", key, "' (vae=FILE)"));
    if (value.empty()) return bad("vae= names no file");
    if (!ref.vae.empty()) return bad("two VAEs");
    ref.vae = value;
  }
  return ref;
}

std::string ModelRef::Format() const {
  return vae.empty() ? base : absl::StrCat(base, "|vae=", vae);
}

absl::StatusOr<ModelRef> ModelRef::Map(
    const std::function<absl::StatusOr<std::string>(const std::string&)>& resolve) const {
  ModelRef out;
  SD_ASSIGN_OR_RETURN(out.base, resolve(base));
  if (!vae.empty()) {
    SD_ASSIGN_OR_RETURN(out.vae, resolve(vae));
  }
  return out;
}

}  // namespace sd
