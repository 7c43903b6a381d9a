#include "host_plugin/runtime/graph.h"

#include <torch/torch.h>

#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "host_plugin/runtime/graph_executor.h"
#include "host_plugin/runtime/stock_graphs.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {

namespace {

absl::StatusOr<Value> FromProto(const v1::Value& v) {
  switch (v.kind_case()) {
    case v1::Value::kS:
      return Value(v.s());
    case v1::Value::kI:
      return Value(v.i());
    case v1::Value::kF:
      return Value(v.f());
    case v1::Value::kTensor: {
      const v1::Tensor& t = v.tensor();
      const std::optional<DType> dtype = DTypeFromProto(t.dtype());
      if (!dtype) return absl::InvalidArgumentError("tensor value without a dtype");
      const torch::ScalarType st = ToTorchDType(*dtype);
      std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      SD_ASSIGN_OR_RETURN(uint64_t n, CheckedNumel(shape, "tensor value"));
      if (n * torch::elementSize(st) != t.raw().size()) {
        return absl::InvalidArgumentError(absl::StrCat("tensor value: ", t.raw().size(),
                                                       " bytes for shape ", ShapeString(shape)));
      }
      return Value(torch::from_blob(const_cast<char*>(t.raw().data()), shape, st).clone());
    }
    default:
      return Value();
  }
}

// An imported graph file: a regular file of at most kMaxGraphFileBytes.
absl::StatusOr<std::string> ReadGraphFile(const std::string& path) {
  constexpr uintmax_t kMaxGraphFileBytes = 16u << 20;
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    return absl::NotFoundError(absl::StrCat("graph ", path, ": no such file"));
  if (!std::filesystem::is_regular_file(status))
    return absl::InvalidArgumentError(absl::StrCat("graph ", path, " is not a regular file"));
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxGraphFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph ", path, " is larger than ", kMaxGraphFileBytes >> 20, " MiB"));
  }
  return ReadWholeFile(path, "graph");
}

}  // namespace

GraphImports FileImports() {
  GraphImports imports;
  imports.read = ReadGraphFile;
  imports.library = GraphLibraryDirs(DirOfExecutable());
  return imports;
}

absl::StatusOr<Graph> Graph::FromText(const std::string& text, const std::string& name) {
  return FromText(text, name, RegisteredContract, FileImports());
}

absl::StatusOr<Graph> Graph::FromText(const std::string& text, const std::string& name,
                                      const ContractLookup& contracts,
                                      const GraphImports& imports) {
  // Referencing the stock kinds links them (and their options messages) into every host.
  static const size_t stock_kinds = StockNodeKinds().size();
  (void)stock_kinds;
  SD_ASSIGN_OR_RETURN(ParsedGraph parsed, ParseGraph(text, name, contracts, imports));
  Graph g;
  g.name_ = name;
  g.config_ = std::move(parsed.config);
  g.plan_ = std::move(parsed.plan);
  return g;
}

absl::StatusOr<Graph> Graph::Load(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "graph"));
  return FromText(text, path);
}

const v1::GraphInput* Graph::Input(const std::string& name) const {
  for (const v1::GraphInput& in : config_->input()) {
    if (in.name() == name) return &in;
  }
  return nullptr;
}

absl::StatusOr<Value> Graph::ParseInputValue(const std::string& name,
                                             const std::string& text) const {
  const v1::GraphInput* in = Input(name);
  if (!in) {
    std::vector<std::string> names;
    for (const v1::GraphInput& i : config_->input()) names.push_back(i.name());
    return absl::InvalidArgumentError(absl::StrCat("graph ", name_, " has no input '", name,
                                                   "' (inputs: ", absl::StrJoin(names, ", "), ")"));
  }
  switch (in->type().kind()) {
    case v1::STRING:
      return Value(text);
    case v1::INT: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v))
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': '", text, "' is not an integer"));
      return Value(v);
    }
    case v1::FLOAT: {
      double v;
      if (!absl::SimpleAtod(text, &v))
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': '", text, "' is not a number"));
      return Value(v);
    }
    case v1::TENSOR: {
      // @file.safetensors:key
      const size_t colon = text.rfind(':');
      if (text.empty() || text[0] != '@' || colon == std::string::npos || colon < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': a tensor is given as @FILE.safetensors:KEY"));
      }
      auto st = ReadSafetensors(text.substr(1, colon - 1));
      if (!st.ok()) return st.status();
      for (const TensorView& v : st->tensors) {
        if (v.name == text.substr(colon + 1)) return Value(ViewAsTorch(v, st->file).clone());
      }
      return absl::NotFoundError(absl::StrCat("input '", name, "': ", text.substr(1, colon - 1),
                                              " has no tensor '", text.substr(colon + 1), "'"));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' has no type"));
  }
}

namespace {

// What an in-process run's checkpoint declares as its native size ("sdgraph.native_size"): graph
// inputs `width` and `height` that the run does not set take it instead of their defaults. 0 when
// it declares none, and for distributed runs (their hosts set the size the workers report).
int NativeSizeFor(const RunContext& ctx, const RunOptions& options) {
  if (options.dispatcher || !ctx.models || ctx.checkpoint.empty()) return 0;
  auto entry =
      ctx.models->Open(ctx.checkpoint);  // a failure is reported by the nodes that need the model
  return entry.ok() ? NativeSize((*entry)->checkpoint->metadata()).value_or(0) : 0;
}

}  // namespace

// The graph's inputs as "@NAME" values: given, else the model's native size for width/height,
// else the declared default; a required one missing is INVALID_ARGUMENT.
absl::StatusOr<std::map<std::string, Value>> Graph::BindInputs(
    const std::map<std::string, Value>& inputs, int native) const {
  std::map<std::string, Value> values;
  for (const auto& [n, v] : inputs) {
    if (!Input(n))
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, " has no input '", n, "'"));
  }
  for (const v1::GraphInput& in : config_->input()) {
    Value v;
    if (auto it = inputs.find(in.name()); it != inputs.end()) {
      v = it->second;
    } else if (native > 0 && in.type().kind() == v1::INT &&
               (in.name() == "width" || in.name() == "height")) {
      v = int64_t{native};
    } else if (in.has_default_value()) {
      SD_ASSIGN_OR_RETURN(v, FromProto(in.default_value()));
    } else if (!in.optional()) {
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, ": required input '",
                                                     in.name(), "' (", DescribeType(in.type()),
                                                     ") is not set"));
    }
    if (std::holds_alternative<int64_t>(v) && in.type().kind() == v1::FLOAT)
      v = static_cast<double>(std::get<int64_t>(v));
    if (!std::holds_alternative<std::monostate>(v)) {
      if (absl::Status s = CheckValue(v, in.type()); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph ", name_, ": input '", in.name(), "': ", s.message()));
      }
    }
    values["@" + in.name()] = std::move(v);
  }
  return values;
}

absl::StatusOr<std::map<std::string, Value>> Graph::Run(const std::map<std::string, Value>& inputs,
                                                        RunContext& ctx,
                                                        const RunOptions& options) const {
  SD_ASSIGN_OR_RETURN(auto bound, BindInputs(inputs, NativeSizeFor(ctx, options)));
  return GraphExecutor(name_, *config_, *plan_, ctx, options).Run(std::move(bound));
}

}  // namespace sd
