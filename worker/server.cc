#include "worker/server.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/file_util.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "nodes/tensor/wire.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/model_ref.h"
#include "proto/grpc_status.h"
#include "proto/inference/grpc_service.grpc.pb.h"
#include "proto/sd/v1/worker.grpc.pb.h"
#include "worker/metrics_http.h"
#include "worker/model_repo.h"
#include "worker/request_limits.h"

namespace sd::worker {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// ---- logs: one JSON object per line on stderr
// -------------------------------------------------------

std::mutex g_log_mu;

void Log(const char* level, const char* event, nlohmann::json fields = nlohmann::json::object()) {
  fields["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  fields["level"] = level;
  fields["event"] = event;
  const std::string line = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

// ---- metrics
// ----------------------------------------------------------------------------------------

struct Metrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("sd_worker_requests_total")
          .Help("Node calls and model loads by kind and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram()
          .Name("sd_worker_request_duration_seconds")
          .Help("Time from arrival to answer, by kind")
          .Register(*registry);
  prometheus::Gauge& queue_depth =
      Gauge("sd_worker_queue_depth", "Calls waiting for a compute slot");
  prometheus::Gauge& inflight = Gauge("sd_worker_inflight", "Calls computing now");
  prometheus::Gauge& loaded_models =
      Gauge("sd_worker_loaded_models", "Networks (CLIP, UNet, VAE) held in memory");
  prometheus::Gauge& model_bytes = Gauge("sd_worker_model_bytes", "Bytes of the networks held");
  prometheus::Gauge& evictions =
      Gauge("sd_worker_model_evictions", "Networks dropped by the memory budget so far");
  prometheus::Gauge& resident =
      Gauge("sd_worker_resident_memory_bytes", "Resident set size of the worker");
  prometheus::Gauge& serving = Gauge("sd_worker_serving", "1 when the health service says SERVING");

  prometheus::Gauge& Gauge(const char* name, const char* help) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add({});
  }
  // `kind`: a registered node kind or a method name (anything else is counted as "other").
  void Record(const std::string& kind_or_method, absl::StatusCode code, double seconds) {
    const std::string kind =
        kind_or_method == "LoadModel" ? kind_or_method : MetricKindLabel(kind_or_method);
    requests.Add({{"kind", kind}, {"code", absl::StatusCodeToString(code)}}).Increment();
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300};
    latency.Add({{"kind", kind}}, kBuckets).Observe(seconds);
  }
};

// ---- compute threads behind a bounded queue
// ---------------------------------------------------------

class JobQueue {
 public:
  JobQueue(int threads, int capacity, Metrics& metrics) : capacity_(capacity), metrics_(metrics) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~JobQueue() { Stop(); }
  // False when every thread is busy and `capacity` calls already wait, or when stopping.
  bool Push(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || static_cast<int>(q_.size()) >= capacity_ + idle_) return false;
    q_.push_back(std::move(job));
    metrics_.queue_depth.Set(static_cast<double>(q_.size()));
    cv_.notify_one();
    return true;
  }
  size_t Waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return q_.size();
  }
  // Runs what is queued, then joins the threads.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ++idle_;
        cv_.wait(lock, [&] { return stop_ || !q_.empty(); });
        --idle_;
        if (q_.empty()) return;
        job = std::move(q_.front());
        q_.pop_front();
        metrics_.queue_depth.Set(static_cast<double>(q_.size()));
      }
      metrics_.inflight.Increment();
      // Jobs answer their own call and catch what they compute; this is the last line before
      // std::terminate would end the worker.
      absl::Status escaped = CatchExceptions("job", [&] {
        job();
        return absl::OkStatus();
      });
      if (!escaped.ok()) Log("error", "job_exception", {{"error", std::string(escaped.message())}});
      metrics_.inflight.Decrement();
    }
  }
  const int capacity_;
  Metrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  int idle_ = 0;  // threads waiting for work
  std::vector<std::thread> threads_;
};

// ---- the node host
// ----------------------------------------------------------------------------------

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

class Core {
 public:
  Core(const WorkerOptions& o, std::set<std::string> served, Metrics& metrics, RunContext base)
      : options_(o),
        served_(std::move(served)),
        metrics_(metrics),
        repo_(o.models_dir),
        base_(std::move(base)) {}

  // A kind this worker serves, or NOT_FOUND (unknown, or not in --serve-kinds).
  absl::StatusOr<const NodeKind*> ServedKind(const std::string& name) const {
    return FindServedKind(name, served_);
  }

  grpc::Status Authorize(const grpc::CallbackServerContext* ctx, const char* method) {
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

  // Loads a model for LoadModel calls and --preload; never throws (LibTorch's errors and failed
  // allocations while building the networks become a Status).
  absl::StatusOr<v1::LoadModelResponse> Load(const std::string& name) {
    return CatchExceptions(absl::StrCat("loading model '", name.substr(0, 200), "'"),
                           [&] { return LoadOrThrow(name); });
  }

  // A model reference (model_ref.h) with every part a name in the repository -> the same with
  // paths.
  absl::StatusOr<std::string> ResolveRef(const std::string& name) const {
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(name));
    SD_ASSIGN_OR_RETURN(ModelRef resolved,
                        ref.Map([&](const std::string& part) { return repo_.Resolve(part); }));
    return resolved.Format();
  }

  absl::StatusOr<v1::LoadModelResponse> LoadOrThrow(const std::string& name) {
    SD_ASSIGN_OR_RETURN(std::string path, ResolveRef(name));
    SD_ASSIGN_OR_RETURN(auto entry, base_.models->Open(path));
    SD_ASSIGN_OR_RETURN(std::string identity, base_.models->Identity(path));
    // Build all networks now (and the ControlNets it names), so the first node calls do not wait.
    SD_RETURN_IF_ERROR(base_.models->GetClip(path, base_.dtype, base_.device).status());
    SD_RETURN_IF_ERROR(base_.models->GetUnet(path, base_.dtype, base_.device).status());
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
    r.set_device(DeviceName(base_.device));
    r.set_dtype(options_.dtype);
    UpdateModelGauges();
    MarkServing();
    return r;
  }

  // FAILED_PRECONDITION (with the model-mismatch payload) unless the model this worker has loaded
  // for `name` (opening it if need be) has the content hash the caller expects.
  absl::Status CheckModelHash(const std::string& name, const std::string& path,
                              const std::string& expected) {
    SD_ASSIGN_OR_RETURN(std::string identity, base_.models->Identity(path));
    if (identity == expected) return absl::OkStatus();
    absl::Status s = absl::FailedPreconditionError(
        absl::StrCat("model '", name, "' here has sha256 ", identity, ", the caller expects ",
                     expected, " (another file under the same name)"));
    s.SetPayload(kModelMismatchMetadataValue, absl::Cord("1"));
    return s;
  }

  absl::Status Infer(const ModelInferRequest& req, ModelInferResponse* resp) {
    SD_ASSIGN_OR_RETURN(const NodeKind* kind, ServedKind(req.model_name()));
    const NodeContract contract = kind->contract();
    const std::string& who = req.model_name();
    auto param = [&](const char* key) -> const InferParameter* {
      auto it = req.parameters().find(key);
      return it == req.parameters().end() ? nullptr : &it->second;
    };
    auto string_param = [&](const char* key) -> absl::StatusOr<std::string> {
      const InferParameter* p = param(key);
      if (!p) return std::string();
      if (!p->has_string_param())
        return absl::InvalidArgumentError(absl::StrCat("parameter '", key, "' must be a string"));
      return p->string_param();
    };
    SD_ASSIGN_OR_RETURN(std::string model, string_param("checkpoint"));
    SD_ASSIGN_OR_RETURN(std::string expected_sha256, string_param("sha256"));
    std::string checkpoint;
    if (!model.empty()) {
      SD_ASSIGN_OR_RETURN(checkpoint, ResolveRef(model));
      if (!expected_sha256.empty())
        SD_RETURN_IF_ERROR(CheckModelHash(model, checkpoint, expected_sha256));
    } else if (contract.needs_model) {
      return absl::InvalidArgumentError(
          absl::StrCat(who,
                       " computes with a model: set the request parameter `checkpoint` "
                       "to a model name in the worker's repository"));
    }
    google::protobuf::Any options;
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
      options.PackFrom(*m);
    }
    WireDType wire = WireDType::kF32;
    SD_ASSIGN_OR_RETURN(std::string wire_text, string_param("wire_dtype"));
    if (!wire_text.empty()) {
      SD_ASSIGN_OR_RETURN(wire, ParseWireDType(wire_text));
    }

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
      const std::string what = absl::StrCat(who, " input '", t.name(), "'");
      const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      const bool residuals = (who == "UNetStep" && t.name() == "control") ||
                             (who == "ControlNet" && t.name() == "residuals");
      SD_RETURN_IF_ERROR(CheckInputSize(
          what, shape, t.datatype() == "BYTES" ? static_cast<int64_t>(raw.size()) : 0,
          options_.limits, residuals));
      SD_ASSIGN_OR_RETURN(Value v, DecodeValue(t.datatype(), shape, raw, port->type, what));
      if (const int64_t* n = std::get_if<int64_t>(&v)) {
        SD_RETURN_IF_ERROR(CheckIntInput(what, t.name(), *n, options_.limits));
      }
      values[t.name()] = std::move(v);
    }
    for (const PortSpec& p : contract.inputs) {
      if (!p.optional && !values.count(p.name)) {
        return absl::InvalidArgumentError(
            absl::StrCat(who, " needs input '", p.name, "' (", DescribeType(p.type), ")"));
      }
    }
    RunContext ctx = base_;
    ctx.checkpoint = checkpoint;
    NodeOutputs out;
    absl::Status s;
    s = CatchExceptions("", [&] {
      c10::InferenceMode guard;
      std::unique_ptr<NodeKernel> kernel = kind->create(options);
      absl::Status opened = kernel->Open(ctx);
      return opened.ok() ? kernel->Process(NodeInputs(&values, &who), out) : opened;
    });
    if (contract.needs_model) UpdateModelGauges();
    if (!s.ok()) return s;
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
    for (const std::string& name : wanted) {
      auto it = out.find(name);
      if (it == out.end())
        return absl::InternalError(absl::StrCat(who, " did not produce output '", name, "'"));
      SD_RETURN_IF_ERROR(CheckValue(it->second, contract.Output(name)->type));
      SD_ASSIGN_OR_RETURN(WireTensor w, EncodeValue(it->second, wire));
      auto* o = resp->add_outputs();
      o->set_name(name);
      o->set_datatype(w.datatype);
      for (int64_t d : w.shape) o->add_shape(d);
      resp->add_raw_output_contents(std::move(w.raw));
    }
    if (contract.needs_model) MarkServing();
    return absl::OkStatus();
  }

  void MarkServing() {
    if (serving_.exchange(true)) return;
    if (server_ && !draining_.load()) {
      server_->GetHealthCheckService()->SetServingStatus(true);
      metrics_.serving.Set(1);
      Log("info", "serving");
    }
  }
  void UpdateModelGauges() {
    const ModelCache::Stats s = base_.models->GetStats();
    metrics_.loaded_models.Set(static_cast<double>(s.networks));
    metrics_.model_bytes.Set(static_cast<double>(s.bytes));
    metrics_.evictions.Set(static_cast<double>(s.evictions));
  }

  const WorkerOptions& options_;
  const std::set<std::string> served_;  // node kinds callable here (--serve-kinds)
  Metrics& metrics_;
  ModelRepository repo_;
  RunContext base_;
  grpc::Server* server_ = nullptr;
  std::atomic<bool> serving_{false};
  std::atomic<bool> draining_{false};
};

// WorkerOptions::hold_dir: announces the call and waits for the test to let it go.
void HoldCall(const std::string& dir, const std::string& id, grpc::CallbackServerContext* ctx) {
  std::string name = id.empty() ? "call" : id.substr(0, 200);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '@';
  }
  const std::string base = dir + "/" + name;
  std::ofstream(base + ".arrived").close();
  std::error_code ec;
  while (!ctx->IsCancelled() && !std::filesystem::exists(base + ".go", ec) &&
         !std::filesystem::exists(dir + "/release", ec)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ---- the services
// -----------------------------------------------------------------------------------

class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  InferenceService(Core& core, JobQueue& queue) : core_(core), queue_(queue) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx,
                                       const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* r) override {
    return Answer(ctx, "ServerLive", [&] { r->set_live(true); });
  }
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx,
                                        const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* r) override {
    return Answer(ctx, "ServerReady",
                  [&] { r->set_ready(core_.serving_.load() && !core_.draining_.load()); });
  }
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx,
                                       const inference::ModelReadyRequest* q,
                                       inference::ModelReadyResponse* r) override {
    return Answer(ctx, "ModelReady", [&]() -> grpc::Status {
      auto kind = core_.ServedKind(q->name());
      if (!kind.ok()) return ToGrpcStatus(kind.status());
      r->set_ready(!core_.draining_.load() &&
                   (!(*kind)->contract().needs_model || core_.serving_.load()));
      return grpc::Status::OK;
    });
  }
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* r) override {
    return Answer(ctx, "ServerMetadata", [&] {
      r->set_name("sdgraph-worker");
      r->set_version("0.1.0");
    });
  }
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const inference::ModelMetadataRequest* q,
                                          inference::ModelMetadataResponse* r) override {
    return Answer(ctx, "ModelMetadata", [&]() -> grpc::Status {
      auto kind = core_.ServedKind(q->name());
      if (!kind.ok()) return ToGrpcStatus(kind.status());
      const NodeContract c = (*kind)->contract();
      r->set_name(q->name());
      r->add_versions("1");
      r->set_platform("sdgraph");
      auto describe = [](const PortSpec& p, inference::ModelMetadataResponse::TensorMetadata* m) {
        m->set_name(p.name);
        m->set_datatype(WireDatatypeOf(p.type));
        if (p.type.kind() != v1::TENSOR) {
          m->add_shape(1);
        } else {
          for (int i = 0; i < std::max(p.type.rank(), 1); ++i) m->add_shape(-1);
        }
      };
      for (const PortSpec& p : c.inputs) describe(p, r->add_inputs());
      for (const PortSpec& p : c.outputs) describe(p, r->add_outputs());
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const ModelInferRequest* req,
                                       ModelInferResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    const auto arrived = std::chrono::steady_clock::now();
    if (grpc::Status s = core_.Authorize(ctx, "ModelInfer"); !s.ok()) {
      reactor->Finish(s);
      return reactor;
    }
    if (core_.draining_.load()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down"));
      return reactor;
    }
    const std::string peer = ctx->peer();
    const bool queued = queue_.Push([this, ctx, req, resp, reactor, arrived, peer] {
      if (!core_.options_.hold_dir.empty()) HoldCall(core_.options_.hold_dir, req->id(), ctx);
      const double waited = SecondsSince(arrived);
      absl::Status s;
      if (ctx->IsCancelled()) {
        s = absl::CancelledError("the caller gave up before the call started");
      } else {
        s = CatchExceptions(req->model_name().substr(0, 64),
                            [&] { return core_.Infer(*req, resp); });
      }
      const double seconds = SecondsSince(arrived);
      core_.metrics_.Record(req->model_name(), s.code(), seconds);
      nlohmann::json f = {{"id", req->id()},
                          {"kind", req->model_name()},
                          {"code", absl::StatusCodeToString(s.code())},
                          {"ms", std::round(seconds * 1e4) / 10},
                          {"queue_ms", std::round(waited * 1e4) / 10},
                          {"peer", peer}};
      if (!s.ok()) f["error"] = std::string(s.message());
      Log(s.ok() ? "info" : "warn", "infer", std::move(f));
      if (s.GetPayload(kModelMismatchMetadataValue).has_value()) {
        ctx->AddTrailingMetadata(kRetryMetadataKey, kModelMismatchMetadataValue);
      }
      reactor->Finish(ToGrpcStatus(s));
    });
    if (!queued) {
      core_.metrics_.Record(req->model_name(), absl::StatusCode::kResourceExhausted,
                            SecondsSince(arrived));
      Log("warn", "queue_full", {{"id", req->id()}, {"kind", req->model_name()}, {"peer", peer}});
      ctx->AddTrailingMetadata(kRetryMetadataKey,
                               kBusyMetadataValue);  // retry later: not permanent
      reactor->Finish(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("the worker's queue is full (", core_.options_.queue,
                                    " calls waiting); retry later or elsewhere")));
    }
    return reactor;
  }

 private:
  template <typename F>
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const char* method, F&& fill) {
    auto* reactor = ctx->DefaultReactor();
    grpc::Status s = core_.Authorize(ctx, method);
    if (s.ok()) {
      if constexpr (std::is_same_v<decltype(fill()), grpc::Status>) {
        s = fill();
      } else {
        fill();
      }
    }
    reactor->Finish(s);
    return reactor;
  }
  Core& core_;
  JobQueue& queue_;
};

class WorkerControl final : public v1::Worker::CallbackService {
 public:
  WorkerControl(Core& core, JobQueue& queue) : core_(core), queue_(queue) {}
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* ctx,
                                      const v1::LoadModelRequest* req,
                                      v1::LoadModelResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    const auto arrived = std::chrono::steady_clock::now();
    if (grpc::Status s = core_.Authorize(ctx, "LoadModel"); !s.ok()) {
      reactor->Finish(s);
      return reactor;
    }
    // Loading is compute-bound work too: it waits its turn like node calls.
    const bool queued = queue_.Push([this, ctx, req, resp, reactor, arrived] {
      if (!core_.options_.hold_dir.empty()) {
        HoldCall(core_.options_.hold_dir, "LoadModel/" + req->checkpoint(), ctx);
      }
      auto r = core_.Load(req->checkpoint());
      core_.metrics_.Record("LoadModel", r.status().code(), SecondsSince(arrived));
      if (r.ok()) {
        *resp = *r;
        Log("info", "model_loaded",
            {{"checkpoint", req->checkpoint()},
             {"sha256", r->sha256()},
             {"s", SecondsSince(arrived)}});
      } else {
        Log("warn", "model_load_failed",
            {{"checkpoint", req->checkpoint().substr(0, 200)},
             {"error", std::string(r.status().message())}});
      }
      reactor->Finish(ToGrpcStatus(r.status()));
    });
    if (!queued)
      reactor->Finish(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the worker's queue is full"));
    return reactor;
  }

 private:
  Core& core_;
  JobQueue& queue_;
};

absl::StatusOr<torch::Device> ParseDevice(const std::string& text) {
  try {
    torch::Device d(text);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", text, ": this LibTorch has no CUDA or no GPU is visible"));
    }
    return d;
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device ", text, ": expected cpu, cuda or cuda:N"));
  }
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& o) {
  // SIGTERM / SIGINT are taken synchronously by this thread (sigwait); every thread started below
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ModelRepository repo(o.models_dir);
  SD_RETURN_IF_ERROR(repo.Check());
  SD_ASSIGN_OR_RETURN(torch::Device device, ParseDevice(o.device));
  torch::ScalarType dtype = torch::kFloat32;
  if (o.dtype == "bf16") {
    dtype = torch::kBFloat16;
  } else if (o.dtype == "f16") {
    dtype = torch::kFloat16;
  } else if (o.dtype != "f32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype ", o.dtype, ": expected f32, bf16 or f16"));
  }
  if (o.concurrency < 1 || o.queue < 0 || o.max_message_mb < 1) {
    return absl::InvalidArgumentError(
        "--concurrency and --max-message-mb must be >= 1, --queue >= 0");
  }
  const int threads = ConfigureThreads(o.threads);
  WarnIfSlowBlas("sd-worker");
  StockNodeKinds();
  SD_ASSIGN_OR_RETURN(std::set<std::string> served, ParseServedKinds(o.serve_kinds));

  RunContext base;
  base.tokenizer_dir = o.tokenizer_dir;
  base.dtype = dtype;
  base.device = device;
  base.models = std::make_shared<ModelCache>();
  base.models->SetBudget(o.memory_budget);
  Metrics metrics;
  Core core(o, served, metrics, base);
  JobQueue queue(o.concurrency, o.queue, metrics);
  InferenceService inference(core, queue);
  WorkerControl control(core, queue);

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty())
      return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
    grpc::SslServerCredentialsOptions ssl;
    SD_ASSIGN_OR_RETURN(std::string cert, ReadWholeFile(o.tls_cert, "--tls-cert"));
    SD_ASSIGN_OR_RETURN(std::string key, ReadWholeFile(o.tls_key, "--tls-key"));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!o.tls_client_ca.empty()) {
      SD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWholeFile(o.tls_client_ca, "--tls-client-ca"));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  } else if (!o.tls_client_ca.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  } else if (o.require_tls) {
    return absl::InvalidArgumentError(
        "--require-tls: no --tls-cert/--tls-key given; this worker does not serve plaintext");
  } else if (!o.token.empty()) {
    Log("warn", "token_over_plaintext",
        {{"message",
          "the bearer token travels in plaintext (no --tls-cert/--tls-key): anyone on the path can "
          "read it; --require-tls refuses to start this way"}});
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o.listen, creds, &port);
  builder.RegisterService(&inference);
  builder.RegisterService(&control);
  builder.SetMaxReceiveMessageSize(o.max_message_mb << 20);
  builder.SetMaxSendMessageSize(o.max_message_mb << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen));
  server->GetHealthCheckService()->SetServingStatus(false);
  core.server_ = server.get();

  std::unique_ptr<MetricsEndpoint> exposer;
  int metrics_port = 0;
  if (!o.metrics_listen.empty()) {
    auto e = MetricsEndpoint::Start(o.metrics_listen, metrics.registry);
    if (!e.ok()) {
      server->Shutdown();
      return e.status();
    }
    exposer = *std::move(e);
    metrics_port = exposer->port();
  }
  if (!o.port_file.empty()) {
    const std::string ports = nlohmann::json{{"port", port}, {"metrics_port", metrics_port}}.dump() + "\n";
    if (absl::Status s = WriteWholeFile(o.port_file, ports, "--port-file"); !s.ok()) {
      server->Shutdown();
      return s;
    }
  }
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  Log("info", "listening",
      {{"address", absl::StrCat(host, ":", port)},
       {"metrics_port", metrics_port},
       {"tls", !o.tls_cert.empty()},
       {"mtls", !o.tls_client_ca.empty()},
       {"token", !o.token.empty()},
       {"device", device.str()},
       {"dtype", o.dtype},
       {"threads", threads},
       {"concurrency", o.concurrency},
       {"queue", o.queue},
       {"models", o.models_dir},
       {"memory_budget", o.memory_budget},
       {"serves", absl::StrJoin(served, ",")},
       {"blas", LoadedBlas().Describe()}});

  std::thread preload([&] {
    for (const std::string& name : o.preload) {
      auto r = core.Load(name);
      if (r.ok()) {
        Log("info", "model_loaded",
            {{"checkpoint", name}, {"sha256", r->sha256()}, {"preload", true}});
      } else {
        Log("error", "model_load_failed",
            {{"checkpoint", name},
             {"error", std::string(r.status().message())},
             {"preload", true}});
      }
    }
  });

  // Wait for SIGTERM / SIGINT, refreshing the memory gauge meanwhile.
  int sig = 0;
  for (;;) {
    metrics.resident.Set(static_cast<double>(CurrentRss()));
    timespec tick{1, 0};
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  // Refuse new calls first, then say so: a reader of the log may rely on it.
  core.draining_.store(true);
  server->GetHealthCheckService()->SetServingStatus(false);
  metrics.serving.Set(0);
  Log("info", "draining",
      {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"queued", queue.Waiting()},
       {"deadline_s", o.drain_seconds}});
  preload.join();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.drain_seconds * 1000)));
  queue.Stop();
  server->Wait();
  Log("info", "stopped");
  return absl::OkStatus();
}

}  // namespace sd::worker
