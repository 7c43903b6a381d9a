#include "worker/core.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/tensor/wire.h"
#include "nodes/tensor/wire_messages.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/model_ref.h"
#include "worker/request_limits.h"
#include "worker/worker_log.h"

namespace sd::worker {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

namespace {

class ErrorText : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (text.empty()) text = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string text;
};

// Typed contents (the non-raw form some clients send) -> raw little-endian bytes.
absl::StatusOr<std::string> RawFromContents(const ModelInferRequest::InferInputTensor& t) {
  const inference::InferTensorContents& c = t.contents();
  auto pack = [](const auto& field) {
    using T = typename std::decay_t<decltype(field)>::value_type;
    return std::string(reinterpret_cast<const char*>(field.data()), field.size() * sizeof(T));
  };
  if (t.datatype() == "FP32") return pack(c.fp32_contents());
  if (t.datatype() == "FP64") return pack(c.fp64_contents());
  if (t.datatype() == "INT64") return pack(c.int64_contents());
  if (t.datatype() == "INT32") return pack(c.int_contents());
  if (t.datatype() == "UINT8") {
    std::string raw;
    for (uint32_t v : c.uint_contents()) raw.push_back(static_cast<char>(v & 0xff));
    return raw;
  }
  if (t.datatype() == "BYTES") {
    std::string raw;
    for (const std::string& b : c.bytes_contents()) {
      const uint32_t n = static_cast<uint32_t>(b.size());
      for (int i = 0; i < 4; ++i) raw.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
      raw += b;
    }
    return raw;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("input '", t.name(), "': datatype ", t.datatype(),
                   " is not supported in typed contents (send raw_input_contents)"));
}

std::string DeviceName(const torch::Device& d) { return d.str(); }

}  // namespace

Core::Core(const WorkerOptions& o, std::set<std::string> served, Metrics& metrics, RunContext base)
    : options_(o),
      metrics_(metrics),
      served_(std::move(served)),
      repo_(o.models_dir),
      base_(std::move(base)) {
  // A model reference on a graph node's `model` input names files in this repository.
  base_.model_file = [this](const std::string& ref) { return ResolveRef(ref); };
}

absl::StatusOr<const NodeKind*> Core::ServedKind(const std::string& name) const {
  return FindServedKind(name, served_);
}

grpc::Status Core::Authorize(const grpc::CallbackServerContext* ctx, const char* method) {
  if (options_.token.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  const std::string want = "Bearer " + options_.token;
  if (it != md.end()) {
    const std::string got(it->second.data(), it->second.size());
    // Constant-time comparison: no early exit on the first differing byte.
    unsigned diff = got.size() != want.size();
    for (size_t i = 0; i < want.size(); ++i)
      diff |= static_cast<unsigned>(want[i] ^ (i < got.size() ? got[i] : 0));
    if (diff == 0) return grpc::Status::OK;
  }
  Log("warn", "unauthenticated",
      {{"method", method}, {"peer", ctx->peer()}, {"had_token", it != md.end()}});
  metrics_.requests.Add({{"kind", method}, {"code", "UNAUTHENTICATED"}}).Increment();
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      it == md.end()
                          ? "this worker requires a bearer token (authorization metadata)"
                          : "wrong bearer token");
}

absl::StatusOr<v1::LoadModelResponse> Core::Load(const std::string& name) {
  return CatchExceptions(absl::StrCat("loading model '", name.substr(0, 200), "'"),
                         [&] { return LoadOrThrow(name); });
}

absl::StatusOr<std::string> Core::ResolveRef(const std::string& name) const {
  SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(name));
  SD_ASSIGN_OR_RETURN(ModelRef resolved,
                      ref.Map([&](const std::string& part) { return repo_.Resolve(part); }));
  return resolved.Format();
}

absl::StatusOr<v1::LoadModelResponse> Core::LoadOrThrow(const std::string& name) {
  SD_ASSIGN_OR_RETURN(std::string path, ResolveRef(name));
  SD_ASSIGN_OR_RETURN(auto entry, base_.models->Open(path));
  SD_ASSIGN_OR_RETURN(std::string identity, base_.models->Identity(path));
  // Build all networks now (and the ControlNets it names), so the first node calls do not wait.
  SD_RETURN_IF_ERROR(base_.models->GetClip(path, base_.dtype, base_.device).status());
  SD_RETURN_IF_ERROR(base_.models->GetUnet(path, base_.dtype, base_.device, base_.int8).status());
  SD_RETURN_IF_ERROR(base_.models->GetVae(path, base_.dtype, base_.device).status());
  SD_ASSIGN_OR_RETURN(ModelRef parts, ModelRef::Parse(path));
  for (const std::string& control : parts.controls) {
    SD_RETURN_IF_ERROR(base_.models->GetControlNet(control, base_.dtype, base_.device).status());
  }
  v1::LoadModelResponse r;
  r.set_checkpoint(name);
  r.set_sha256(identity);
  r.set_checkpoint_sha256(entry->hash);
  SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(path));
  if (!ref.vae.empty()) {
    SD_ASSIGN_OR_RETURN(std::string vae_hash, base_.models->FileHash(ref.vae));
    r.set_vae_sha256(vae_hash);
  }
  for (const LoraRef& l : ref.loras) {
    SD_ASSIGN_OR_RETURN(std::string lora_hash, base_.models->FileHash(l.name));
    r.add_lora_sha256(lora_hash);
  }
  r.set_config(entry->config.Describe());
  r.set_unet_in_channels(static_cast<int32_t>(entry->config.unet.in_channels));
  r.set_native_size(NativeSize(entry->checkpoint->metadata()).value_or(0));
  r.set_text_width(static_cast<int32_t>(entry->config.clip.width));
  r.set_device(DeviceName(base_.device));
  r.set_dtype(options_.dtype);
  UpdateModelGauges();
  MarkServing();
  return r;
}

absl::Status Core::CheckModelHash(const std::string& name, const std::string& path,
                                  const std::string& expected) {
  SD_ASSIGN_OR_RETURN(std::string identity, base_.models->Identity(path));
  if (identity == expected) return absl::OkStatus();
  absl::Status s = absl::FailedPreconditionError(
      absl::StrCat("model '", name, "' here has sha256 ", identity, ", the caller expects ",
                   expected, " (another file under the same name)"));
  s.SetPayload(kModelMismatchMetadataValue, absl::Cord("1"));
  return s;
}

absl::StatusOr<Core::CallSetup> Core::Setup(const ModelInferRequest& req,
                                            const NodeContract& contract) {
  const std::string& who = req.model_name();
  auto string_param = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = req.parameters().find(key);
    if (it == req.parameters().end()) return std::string();
    if (!it->second.has_string_param())
      return absl::InvalidArgumentError(absl::StrCat("parameter '", key, "' must be a string"));
    return it->second.string_param();
  };
  CallSetup setup;
  SD_ASSIGN_OR_RETURN(std::string model, string_param("checkpoint"));
  SD_ASSIGN_OR_RETURN(std::string expected_sha256, string_param("sha256"));
  if (!model.empty()) {
    SD_ASSIGN_OR_RETURN(setup.checkpoint, ResolveRef(model));
    if (!expected_sha256.empty())
      SD_RETURN_IF_ERROR(CheckModelHash(model, setup.checkpoint, expected_sha256));
  } else if (contract.needs_model) {
    return absl::InvalidArgumentError(
        absl::StrCat(who,
                     " computes with a model: set the request parameter `checkpoint` "
                     "to a model name in the worker's repository"));
  }
  SD_ASSIGN_OR_RETURN(std::string options_text, string_param("options"));
  if (!options_text.empty()) {
    if (!contract.options)
      return absl::InvalidArgumentError(absl::StrCat(who, " takes no options"));
    std::unique_ptr<google::protobuf::Message> m(
        google::protobuf::MessageFactory::generated_factory()
            ->GetPrototype(contract.options)
            ->New());
    google::protobuf::TextFormat::Parser parser;
    ErrorText errors;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(options_text, m.get())) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, " options (", contract.options->full_name(), "): ", errors.text));
    }
    setup.options.PackFrom(*m);
  }
  SD_ASSIGN_OR_RETURN(std::string wire_text, string_param("wire_dtype"));
  if (!wire_text.empty()) {
    SD_ASSIGN_OR_RETURN(setup.wire, ParseWireDType(wire_text));
  }
  return setup;
}

absl::StatusOr<Value> Core::DecodeChecked(const ModelInferRequest::InferInputTensor& t,
                                          const std::string& raw, const v1::PortType& type,
                                          const std::string& what, bool packed_residuals) const {
  const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  SD_RETURN_IF_ERROR(CheckInputSize(what, shape,
                                    t.datatype() == "BYTES" ? static_cast<int64_t>(raw.size()) : 0,
                                    options_.limits, packed_residuals));
  SD_ASSIGN_OR_RETURN(Value v, DecodeValue(t.datatype(), shape, raw, type, what));
  if (const int64_t* n = std::get_if<int64_t>(&v)) {
    SD_RETURN_IF_ERROR(CheckIntInput(what, t.name(), *n, options_.limits));
  }
  return v;
}

absl::StatusOr<Core::ValueMap> Core::DecodeInputs(const ModelInferRequest& req,
                                                  const NodeContract& contract) const {
  const std::string& who = req.model_name();
  if (req.raw_input_contents_size() != 0 && req.raw_input_contents_size() != req.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(req.inputs_size(), " inputs but ", req.raw_input_contents_size(),
                     " raw_input_contents: give one per input, or none"));
  }
  std::map<std::string, Value> values;
  for (int i = 0; i < req.inputs_size(); ++i) {
    const auto& t = req.inputs(i);
    const PortSpec* port = contract.Input(t.name());
    if (!port) {
      std::vector<std::string> names;
      for (const PortSpec& p : contract.inputs) names.push_back(p.name);
      return absl::InvalidArgumentError(absl::StrCat(
          who, " has no input '", t.name(), "' (inputs: ", absl::StrJoin(names, ", "), ")"));
    }
    if (values.count(t.name()))
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' is given twice"));
    std::string raw;
    if (req.raw_input_contents_size() > 0) {
      raw = req.raw_input_contents(i);
    } else {
      SD_ASSIGN_OR_RETURN(raw, RawFromContents(t));
    }
    SD_ASSIGN_OR_RETURN(
        values[t.name()],
        DecodeChecked(t, raw, port->type, absl::StrCat(who, " input '", t.name(), "'"),
                      IsPackedResiduals(who, t.name())));
  }
  for (const PortSpec& p : contract.inputs) {
    if (!p.optional && !values.count(p.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, " needs input '", p.name, "' (", DescribeType(p.type), ")"));
    }
  }
  return values;
}

absl::Status Core::EncodeOutputs(const ModelInferRequest& req, const NodeContract& contract,
                                 const NodeOutputs& out, WireDType wire,
                                 ModelInferResponse* resp) const {
  const std::string& who = req.model_name();
  std::vector<std::string> wanted;
  for (const auto& o : req.outputs()) {
    if (!contract.Output(o.name()))
      return absl::InvalidArgumentError(absl::StrCat(who, " has no output '", o.name(), "'"));
    wanted.push_back(o.name());
  }
  if (wanted.empty()) {
    for (const PortSpec& p : contract.outputs) wanted.push_back(p.name);
  }
  resp->set_model_name(req.model_name());
  resp->set_model_version("1");
  resp->set_id(req.id());
  // Every output is there: Infer checked them against the contract (CheckCallOutputs).
  for (const std::string& name : wanted)
    SD_RETURN_IF_ERROR(AddOutputTensor(name, out.at(name), wire, resp));
  return absl::OkStatus();
}

absl::Status Core::Infer(const ModelInferRequest& req, ModelInferResponse* resp) {
  SD_ASSIGN_OR_RETURN(const NodeKind* kind, ServedKind(req.model_name()));
  const NodeContract contract = kind->contract();
  const std::string& who = req.model_name();
  SD_ASSIGN_OR_RETURN(CallSetup setup, Setup(req, contract));
  SD_ASSIGN_OR_RETURN(ValueMap values, DecodeInputs(req, contract));
  SD_ASSIGN_OR_RETURN(const NodeInputs in, NodeInputs::Check(contract, &values, &who));
  RunContext ctx = base_;
  ctx.checkpoint = setup.checkpoint;
  NodeOutputs out;
  const absl::Status s = CatchExceptions("", [&] {
    c10::InferenceMode guard;
    std::unique_ptr<NodeKernel> kernel = kind->create(setup.options);
    absl::Status opened = kernel->Open(ctx);
    return opened.ok() ? kernel->Process(in, out) : opened;
  });
  if (contract.needs_model) UpdateModelGauges();
  if (!s.ok()) return s;
  if (absl::Status c = CheckCallOutputs(contract, values, out); !c.ok())
    return absl::Status(c.code(), absl::StrCat(who, " ", c.message()));
  SD_RETURN_IF_ERROR(EncodeOutputs(req, contract, out, setup.wire, resp));
  if (contract.needs_model) MarkServing();
  return absl::OkStatus();
}

void Core::MarkServing() {
  if (serving_.exchange(true)) return;
  if (server_ && !draining_.load()) {
    server_->GetHealthCheckService()->SetServingStatus(true);
    metrics_.serving.Set(1);
    Log("info", "serving");
  }
}
void Core::UpdateModelGauges() {
  const ModelCache::Stats s = base_.models->GetStats();
  metrics_.loaded_models.Set(static_cast<double>(s.networks));
  metrics_.model_bytes.Set(static_cast<double>(s.bytes));
  metrics_.evictions.Set(static_cast<double>(s.evictions));
}

}  // namespace sd::worker
