#include "nodes/weights/model_ref.h"

#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
    if (key == "lora") {
      SD_ASSIGN_OR_RETURN(LoraRef lora, ParseLoraSpec(value));
      ref.loras.push_back(std::move(lora));
      continue;
    }
    if (key == "control") {
      if (value.empty()) return bad("control= names no file");
      ref.controls.push_back(value);
      continue;
    }
    if (key != "vae")
      return bad(
          absl::StrCat("unknown part '", key, "' (vae=FILE, lora=NAME:UNET:TEXT, control=FILE)"));
    if (value.empty()) return bad("vae= names no file");
    if (!ref.vae.empty()) return bad("two VAEs");
    ref.vae = value;
  }
  return ref;
}

std::string ModelRef::Format() const {
  std::string out = vae.empty() ? base : absl::StrCat(base, "|vae=", vae);
  for (const LoraRef& l : loras)
    absl::StrAppend(&out, "|lora=", l.name, absl::StrFormat(":%.9g:%.9g", l.unet, l.text));
  for (const std::string& c : controls) absl::StrAppend(&out, "|control=", c);
  return out;
}

absl::StatusOr<LoraRef> ParseLoraSpec(const std::string& spec) {
  std::vector<std::string> fields = absl::StrSplit(spec, ':');
  std::vector<double> numbers;
  while (fields.size() > 1 && numbers.size() < 2) {
    double v = 0;
    if (!absl::SimpleAtod(fields.back(), &v)) break;
    if (!std::isfinite(v))
      return absl::InvalidArgumentError(
          absl::StrCat("LoRA '", spec, "': a strength is not finite"));
    numbers.insert(numbers.begin(), v);
    fields.pop_back();
  }
  LoraRef l;
  l.name = absl::StrJoin(fields, ":");
  if (l.name.empty())
    return absl::InvalidArgumentError(absl::StrCat("LoRA '", spec, "' names no file"));
  if (!numbers.empty()) l.unet = l.text = numbers[0];
  if (numbers.size() == 2) l.text = numbers[1];
  return l;
}

absl::StatusOr<ModelRef> ModelRef::Map(
    const std::function<absl::StatusOr<std::string>(const std::string&)>& resolve) const {
  ModelRef out;
  SD_ASSIGN_OR_RETURN(out.base, resolve(base));
  if (!vae.empty()) {
    SD_ASSIGN_OR_RETURN(out.vae, resolve(vae));
  }
  for (const LoraRef& l : loras) {
    LoraRef mapped = l;
    SD_ASSIGN_OR_RETURN(mapped.name, resolve(l.name));
    out.loras.push_back(std::move(mapped));
  }
  for (const std::string& c : controls) {
    SD_ASSIGN_OR_RETURN(std::string mapped, resolve(c));
    out.controls.push_back(std::move(mapped));
  }
  return out;
}

}  // namespace sd
