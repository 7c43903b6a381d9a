#include "worker/request_limits.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nodes/ops/node.h"

namespace sd::worker {

absl::StatusOr<std::set<std::string>> ParseServedKinds(const std::string& spec) {
  std::set<std::string> served;
  const std::vector<std::string> all = NodeRegistry::Get().Names();
  if (spec == "all") return std::set<std::string>(all.begin(), all.end());
  if (spec.empty()) {
    for (const std::string& name : all) {
      if ((*NodeRegistry::Get().Find(name))->contract().needs_model) served.insert(name);
    }
    return served;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const std::string name(part);
    if (!NodeRegistry::Get().Find(name).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--serve-kinds: unknown node kind '", name,
                                                     "' (kinds: ", absl::StrJoin(all, ", "), ")"));
    }
    served.insert(name);
  }
  return served;
}

absl::StatusOr<const NodeKind*> FindServedKind(const std::string& kind,
                                               const std::set<std::string>& served) {
  absl::StatusOr<const NodeKind*> found = NodeRegistry::Get().Find(kind);
  if (!found.ok() || served.count(kind)) return found;
  return absl::NotFoundError(absl::StrCat("node kind ", kind,
                                          " is not served by this worker (it serves ",
                                          absl::StrJoin(served, ", "), "; see --serve-kinds)"));
}

std::string MetricKindLabel(const std::string& kind) {
  return NodeRegistry::Get().Find(kind).ok() ? kind : "other";
}

absl::Status CheckInputSize(const std::string& what, const std::vector<int64_t>& shape,
                            int64_t string_bytes, const RequestLimits& limits,
                            bool packed_residuals) {
  auto too_large = [&](const std::string& detail, const char* flag) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", detail, " exceeds this worker's limit (", flag, ")"));
  };
  if (shape.empty() || string_bytes > 0) {
    if (string_bytes > limits.max_string_bytes) {
      return too_large(
          absl::StrCat("a string of ", string_bytes, " bytes, over ", limits.max_string_bytes, ","),
          "--max-prompt-bytes");
    }
    if (shape.empty()) return absl::OkStatus();
  }
  if (shape.size() >= 2 && shape[0] > limits.max_batch) {
    return too_large(absl::StrCat("batch ", shape[0], ", over ", limits.max_batch, ","),
                     "--max-batch");
  }
  if (packed_residuals) {
    // SD v1.x's 13 ControlNet residuals hold 1640 values per latent pixel; 2048 leaves room.
    const int64_t latent_side = limits.max_image_side / 8;
    const int64_t bound = 2048 * latent_side * latent_side;
    if (shape.size() == 2 && shape[1] > bound) {
      return too_large(absl::StrCat(shape[1], " residual values, over ", bound, " (images of ",
                                    limits.max_image_side, " pixels a side),"),
                       "--max-image-size");
    }
    return absl::OkStatus();
  }
  if ((shape.size() == 2 || shape.size() == 3) && shape[1] > limits.max_context_tokens) {
    return too_large(absl::StrCat(shape[1], " tokens, over ", limits.max_context_tokens, ","),
                     "--max-context-tokens");
  }
  if (shape.size() == 4) {
    const bool image = shape[1] == 3;
    const int64_t side = image ? limits.max_image_side : limits.max_image_side / 8;
    if (shape[2] > side || shape[3] > side) {
      return too_large(absl::StrCat(image ? "an image of " : "a latent of ", shape[3], "x",
                                    shape[2], ", over ", side, "x", side, ","),
                       "--max-image-size");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckIntInput(const std::string& what, const std::string& port, int64_t value,
                           const RequestLimits& limits) {
  if ((port == "width" || port == "height") && value > limits.max_image_side) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", value,
                                                   " pixels exceeds this worker's limit of ",
                                                   limits.max_image_side, " (--max-image-size)"));
  }
  if (port == "steps" && value > limits.max_loop_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", value, " steps exceeds this worker's limit of ", limits.max_loop_steps));
  }
  return absl::OkStatus();
}

bool IsPackedResiduals(const std::string& kind, const std::string& port) {
  return (kind == "UNetStep" && port == "control") || (kind == "ControlNet" && port == "residuals");
}

absl::Status CheckNodeInputs(const std::string& kind, const std::map<std::string, Value>& inputs,
                             const RequestLimits& limits) {
  for (const auto& [port, v] : inputs) {
    const std::string what = absl::StrCat(kind, " input '", port, "'");
    absl::Status s;
    if (const auto* t = std::get_if<torch::Tensor>(&v)) {
      s = CheckInputSize(what, t->sizes().vec(), 0, limits, IsPackedResiduals(kind, port));
    } else if (const auto* text = std::get_if<std::string>(&v)) {
      s = CheckInputSize(what, {}, static_cast<int64_t>(text->size()), limits);
    } else if (const auto* n = std::get_if<int64_t>(&v)) {
      s = CheckIntInput(what, port, *n, limits);
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace sd::worker
