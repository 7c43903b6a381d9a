#include "host_plugin/runtime/worker_pool.h"

#include <google/protobuf/text_format.h>
#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "host_plugin/runtime/worker_resolver.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/grpc_status.h"
#include "proto/inference/grpc_service.grpc.pb.h"
#include "proto/sd/v1/worker.grpc.pb.h"

namespace sd {
namespace {

using Clock = std::chrono::steady_clock;

// Failures of the worker or the path to it, not of the call: another worker may succeed.
bool Transport(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::DEADLINE_EXCEEDED ||
         c == grpc::StatusCode::ABORTED || c == grpc::StatusCode::CANCELLED ||
         c == grpc::StatusCode::UNKNOWN;
}

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

struct Worker {
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> infer;
  std::unique_ptr<v1::Worker::Stub> control;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // Guarded by Impl::mu.
  bool healthy = false;
  int outstanding = 0;
  int64_t calls = 0, failures = 0;
  int generation = 0;  // bumps each time the worker (re)joins
  std::string last_error = "not contacted yet";
  grpc::ClientContext* rejoin = nullptr;  // the watcher's model load in flight, to cancel on stop
  std::string origin;    // the dns:/// target this member was resolved from ("" : given directly)
  bool retired = false;  // its address no longer resolves: out of the pool for good
};

struct WorkerPool::Impl {
  WorkerPoolOptions o;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  // Grows while running (dns:/// members join), never shrinks (members leave by `retired`), so
  // Worker pointers stay valid; guarded by mu.
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::string> dns_targets;  // dns:/// targets, resolved again by `resolver_thread`
  std::thread resolver_thread;
  mutable std::mutex mu;
  std::condition_variable changed;  // a worker joined or left
  std::mutex prepare_mu;
  bool prepared = false;  // guarded by mu
  ModelInfo model;        // guarded by mu once prepared
  std::atomic<bool> stop{false};
  std::atomic<int64_t> seq{0};
  std::vector<std::thread> watchers;  // one per worker

  void Authorize(grpc::ClientContext& ctx, double timeout_s) const {
    ctx.set_deadline(DeadlineIn(timeout_s));
    if (!o.token.empty()) ctx.AddMetadata("authorization", "Bearer " + o.token);
  }

  // Loads `checkpoint` on `w`; with no checkpoint, only checks that `w` answers (calls of kinds
  // that need no model).
  absl::StatusOr<v1::LoadModelResponse> Load(Worker& w, const std::string& checkpoint) const {
    grpc::ClientContext ctx;
    return Load(w, checkpoint, ctx);
  }
  absl::StatusOr<v1::LoadModelResponse> Load(Worker& w, const std::string& checkpoint,
                                             grpc::ClientContext& ctx) const {
    if (checkpoint.empty()) {
      Authorize(ctx, 10);
      inference::ServerLiveResponse live;
      grpc::Status s = w.infer->ServerLive(&ctx, {}, &live);
      if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("worker ", w.target, ": "));
      return v1::LoadModelResponse();
    }
    Authorize(ctx, o.call_timeout_s);
    v1::LoadModelRequest req;
    req.set_checkpoint(checkpoint);
    v1::LoadModelResponse resp;
    grpc::Status s = w.control->LoadModel(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("worker ", w.target, ": "));
    return resp;
  }

  // The healthy worker with the fewest outstanding calls that this call has not failed on (since
  // its last rejoin), its outstanding count raised; or nullptr after waiting up to 100 ms for one.
  Worker* PickWorker(const std::map<Worker*, int>& tried, Clock::time_point give_up_at) {
    std::unique_lock<std::mutex> lock(mu);
    Worker* w = nullptr;
    for (auto& wp : workers) {
      Worker* c = wp.get();
      if (!c->healthy || c->retired) continue;
      if (auto it = tried.find(c); it != tried.end() && it->second == c->generation) continue;
      if (!w || c->outstanding < w->outstanding ||
          (c->outstanding == w->outstanding && c->calls < w->calls))
        w = c;
    }
    if (w == nullptr) {
      if (Clock::now() < give_up_at) changed.wait_for(lock, std::chrono::milliseconds(100));
      return nullptr;
    }
    ++w->outstanding;
    return w;
  }

  std::string DescribeWorkers() const {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> states;
    for (const auto& wp : workers) {
      if (!wp->retired) states.push_back(absl::StrCat(wp->target, ": ", wp->last_error));
    }
    if (states.empty()) states.push_back("no worker (the dns:/// names resolve to nothing yet)");
    return absl::StrJoin(states, "; ");
  }

  // One try of a call on `w` (whose outstanding count PickWorker raised), cancelled when
  // `cancelled` turns true.
  struct Attempt {
    grpc::Status status;
    inference::ModelInferResponse resp;
    bool busy = false;      // the worker's queue was full (RESOURCE_EXHAUSTED marked busy)
    bool mismatch = false;  // the worker's model is another file (FAILED_PRECONDITION marked so)
  };
  Attempt Send(Worker& w, const inference::ModelInferRequest& req,
               const std::atomic<bool>* cancelled) {
    Attempt a;
    grpc::ClientContext ctx;
    Authorize(ctx, o.call_timeout_s);
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    w.infer->async()->ModelInfer(&ctx, &req, &a.resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(done_mu);
      a.status = std::move(s);
      done = true;
      done_cv.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(done_mu);
      bool cancel_sent = false;
      while (!done) {
        done_cv.wait_for(lock, std::chrono::milliseconds(100));
        if (!done && !cancel_sent && cancelled && cancelled->load()) {
          ctx.TryCancel();
          cancel_sent = true;
        }
      }
    }
    for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
      if (key == kRetryMetadataKey && value == kBusyMetadataValue) a.busy = true;
      if (key == kRetryMetadataKey && value == kModelMismatchMetadataValue) a.mismatch = true;
    }
    std::lock_guard<std::mutex> lock(mu);
    --w.outstanding;
    if (a.status.ok()) ++w.calls;
    return a;
  }

  // The outputs of a successful call, checked against the node's contract.
  absl::StatusOr<NodeOutputs> Decode(const Worker& w, const NodeCall& call,
                                     const inference::ModelInferResponse& resp) const {
    if (resp.raw_output_contents_size() != resp.outputs_size()) {
      return absl::InternalError(absl::StrCat("worker ", w.target, ": ", resp.outputs_size(),
                                              " outputs but ", resp.raw_output_contents_size(),
                                              " raw contents"));
    }
    NodeOutputs out;
    for (int i = 0; i < resp.outputs_size(); ++i) {
      const auto& t = resp.outputs(i);
      const PortSpec* port = call.contract.Output(t.name());
      if (!port)
        return absl::InternalError(
            absl::StrCat("worker ", w.target, " answered an unknown output '", t.name(), "'"));
      auto v = DecodeValue(t.datatype(), std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                           resp.raw_output_contents(i), port->type,
                           absl::StrCat("worker ", w.target, " output '", t.name(), "'"));
      if (!v.ok()) return absl::InternalError(v.status().message());
      out[t.name()] = std::move(*v);
    }
    return out;
  }

  // Sleeps before busy retry number `retry`: 50 ms doubling up to 2 s, times a random factor in
  // [0.5, 1.5) so that callers that met a full queue together do not come back together; never past
  // `deadline`. False when cancelled meanwhile.
  bool Backoff(int retry, Clock::time_point deadline, const std::atomic<bool>* cancelled) {
    thread_local std::mt19937 rng(std::random_device{}());
    const double base_ms = std::min(2000.0, 50.0 * std::pow(2.0, std::min(retry, 10)));
    const double ms = base_ms * std::uniform_real_distribution<double>(0.5, 1.5)(rng);
    const auto until = std::min(
        deadline, Clock::now() + std::chrono::microseconds(static_cast<int64_t>(ms * 1000)));
    std::unique_lock<std::mutex> lock(mu);
    changed.wait_until(lock, until,
                       [&] { return stop.load() || (cancelled && cancelled->load()); });
    return !(cancelled && cancelled->load());
  }

  // Asks `w`'s health service, with a one-second deadline.
  grpc::Status CheckHealth(Worker& w, grpc::health::v1::HealthCheckResponse* resp) const {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(1.0));
    return w.health->Check(&ctx, {}, resp);
  }

  // True when `w`'s health service answers SERVING within a second.
  bool AnswersServing(Worker& w) const {
    grpc::health::v1::HealthCheckResponse resp;
    return CheckHealth(w, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }

  // UNAVAILABLE-like failures say nothing about the request: the worker is marked down.
  void MarkDown(Worker& w, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    w.last_error = why;
    if (!w.healthy) return;
    w.healthy = false;
    ++w.failures;
    std::fprintf(stderr, "sdgraph: worker %s is down (%s); its calls go to the others\n",
                 w.target.c_str(), why.c_str());
    changed.notify_all();
  }

  // Health loop of one worker (each worker has its own thread, so a slow rejoin blinds the pool to
  // no other worker): a healthy worker is asked the health service; a down one, once reachable, is
  // asked for the model again and rejoins when the hash matches. Stop() cancels a rejoin in flight.
  void Watch(Worker& w) {
    while (!stop.load()) {
      WatchOnce(w);
      std::unique_lock<std::mutex> lock(mu);
      changed.wait_for(lock,
                       std::chrono::milliseconds(static_cast<int64_t>(o.health_interval_s * 1000)),
                       [&] { return stop.load() || w.retired; });
      if (w.retired) return;
    }
  }

  // A new member for `target` ("HOST:PORT"), watched from now on. Called with mu held.
  Worker* AddWorkerLocked(const std::string& target, const std::string& origin) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(o.max_message_mb << 20);
    args.SetMaxSendMessageSize(o.max_message_mb << 20);
    // A restarted worker should be found again within a second, not after gRPC's default backoff
    // (up to 2 min).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);  // retries are ours, on another worker
    if (!o.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(o.tls_server_name);
    } else if (auto dns = ParseDnsTarget(origin); dns.ok()) {
      args.SetSslTargetNameOverride(dns->host);  // certificates name the service, not the pod's IP
    }
    auto w = std::make_unique<Worker>();
    w->target = target;
    w->origin = origin;
    w->channel = grpc::CreateCustomChannel(target, creds, args);
    w->infer = inference::GRPCInferenceService::NewStub(w->channel);
    w->control = v1::Worker::NewStub(w->channel);
    w->health = grpc::health::v1::Health::NewStub(w->channel);
    Worker* raw = w.get();
    workers.push_back(std::move(w));
    watchers.emplace_back([this, raw] { Watch(*raw); });
    return raw;
  }

  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& dns_target) const {
    if (o.resolver) return o.resolver(dns_target);
    SD_ASSIGN_OR_RETURN(DnsTarget t, ParseDnsTarget(dns_target));
    return ResolveDnsTarget(t);
  }

  // Brings the members of every dns:/// target in line with what it resolves to now: new addresses
  // join (their watcher loads the model and checks its hash), vanished ones retire. A name that
  // does not resolve leaves its members as they are.
  void ResolveAll() {
    for (const std::string& dns : dns_targets) {
      absl::StatusOr<std::vector<std::string>> addresses = Resolve(dns);
      if (!addresses.ok()) continue;
      std::lock_guard<std::mutex> lock(mu);
      for (const std::string& a : *addresses) {
        bool known = false;
        for (const auto& w : workers)
          known = known || (!w->retired && w->origin == dns && w->target == a);
        if (!known && !stop.load()) AddWorkerLocked(a, dns);
      }
      for (auto& w : workers) {
        if (w->origin != dns || w->retired) continue;
        if (std::find(addresses->begin(), addresses->end(), w->target) == addresses->end()) {
          w->retired = true;
          w->healthy = false;
          std::fprintf(stderr, "sdgraph: worker %s left %s\n", w->target.c_str(), dns.c_str());
        }
      }
      changed.notify_all();
    }
  }

  void ResolveLoop() {
    while (!stop.load()) {
      {
        std::unique_lock<std::mutex> lock(mu);
        changed.wait_for(
            lock, std::chrono::milliseconds(static_cast<int64_t>(o.resolve_interval_s * 1000)),
            [&] { return stop.load(); });
      }
      if (!stop.load()) ResolveAll();
    }
  }

  void WatchOnce(Worker& w) {
    bool healthy, ready;
    std::string checkpoint, hash;
    {
      std::lock_guard<std::mutex> lock(mu);
      healthy = w.healthy;
      ready = prepared;
      checkpoint = model.checkpoint;
      hash = model.sha256;
    }
    if (!ready) return;
    grpc::health::v1::HealthCheckResponse resp;
    const grpc::Status s = CheckHealth(w, &resp);
    if (healthy) {
      if (!s.ok()) {
        MarkDown(w, absl::StrCat("health check: ", s.error_message()));
      } else if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
        MarkDown(w, "the worker says NOT_SERVING (draining?)");
      }
      return;
    }
    if (!s.ok()) return;  // still unreachable
    grpc::ClientContext load_ctx;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stop.load()) return;
      w.rejoin = &load_ctx;
    }
    auto loaded = Load(w, checkpoint, load_ctx);
    std::lock_guard<std::mutex> lock(mu);
    w.rejoin = nullptr;
    if (!loaded.ok()) {
      w.last_error = std::string(loaded.status().message());
    } else if (loaded->sha256() != hash) {
      w.last_error = absl::StrCat("its '", checkpoint, "' has sha256 ", loaded->sha256(),
                                  ", the pool's is ", hash);
    } else {
      w.healthy = true;
      ++w.generation;
      std::fprintf(stderr, "sdgraph: worker %s joined\n", w.target.c_str());
      changed.notify_all();
    }
  }

  // Ends the watchers: a rejoin in flight is cancelled, so this returns within about a second
  // (the health check's deadline), not after a model load's.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop.store(true);
      for (auto& w : workers) {
        if (w->rejoin) w->rejoin->TryCancel();
      }
      changed.notify_all();
    }
    if (resolver_thread.joinable()) resolver_thread.join();  // no watcher starts after this
    for (std::thread& t : watchers) {
      if (t.joinable()) t.join();
    }
  }
};

absl::StatusOr<std::vector<std::string>> WorkerPool::ParseTargets(const std::string& list) {
  std::vector<std::string> targets;
  for (absl::string_view t : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    const std::string target(absl::StripAsciiWhitespace(t));
    if (target.rfind("dns:", 0) == 0) {
      if (auto dns = ParseDnsTarget(target); !dns.ok())
        return absl::InvalidArgumentError(absl::StrCat("--workers: ", dns.status().message()));
      targets.push_back(target);
      continue;
    }
    const size_t colon = target.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers: '", target, "' is not HOST:PORT or dns:///NAME:PORT"));
    }
    targets.push_back(target);
  }
  if (targets.empty()) return absl::InvalidArgumentError("--workers: no worker given");
  return targets;
}

WorkerPool::WorkerPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WorkerPool::~WorkerPool() { impl_->Stop(); }

size_t WorkerPool::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  for (const auto& w : impl_->workers) n += w->retired ? 0 : 1;
  return n;
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(WorkerPoolOptions o) {
  if (o.targets.empty())
    return absl::InvalidArgumentError("a worker pool needs at least one worker");
  auto impl = std::make_unique<Impl>();
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    SD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWholeFile(o.tls_ca, "--tls-ca"));
    if (!o.tls_cert.empty() || !o.tls_key.empty()) {
      if (o.tls_cert.empty() || o.tls_key.empty())
        return absl::InvalidArgumentError("mutual TLS needs both --tls-cert and --tls-key");
      SD_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadWholeFile(o.tls_cert, "--tls-cert"));
      SD_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadWholeFile(o.tls_key, "--tls-key"));
    }
    creds = grpc::SslCredentials(ssl);
  } else if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert/--tls-key need --tls-ca (the CA that signed the workers' certificates)");
  } else if (o.require_tls) {
    return absl::InvalidArgumentError(
        "--require-tls: no --tls-ca given, and plaintext connections to workers are refused");
  } else if (!o.token.empty()) {
    std::fprintf(
        stderr,
        "sdgraph: warning: the bearer token goes to the workers in plaintext (no --tls-ca); "
        "anyone on the path can read it (--require-tls refuses this)\n");
  }
  impl->o = std::move(o);
  impl->creds = std::move(creds);
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    for (const std::string& target : impl->o.targets) {
      if (target.rfind("dns:", 0) == 0) {
        SD_RETURN_IF_ERROR(ParseDnsTarget(target).status());
        impl->dns_targets.push_back(target);
      } else {
        impl->AddWorkerLocked(target, "");
      }
    }
  }
  impl->ResolveAll();  // the first members of dns:/// targets, now
  if (!impl->dns_targets.empty()) {
    Impl* raw = impl.get();
    impl->resolver_thread = std::thread([raw] { raw->ResolveLoop(); });
  }
  return std::unique_ptr<WorkerPool>(new WorkerPool(std::move(impl)));
}

absl::StatusOr<ModelInfo> WorkerPool::Prepare(const std::string& checkpoint) {
  Impl& p = *impl_;
  std::lock_guard<std::mutex> prepare_lock(p.prepare_mu);
  {
    std::lock_guard<std::mutex> lock(p.mu);
    // Kinds without a model run on any prepared pool.
    if (p.prepared && (checkpoint.empty() || p.model.checkpoint == checkpoint)) return p.model;
  }
  std::vector<Worker*> members;  // a snapshot: dns:/// members may join meanwhile
  {
    std::lock_guard<std::mutex> lock(p.mu);
    for (auto& w : p.workers) {
      if (!w->retired) members.push_back(w.get());
    }
  }
  const size_t n = members.size();
  std::vector<std::optional<absl::StatusOr<v1::LoadModelResponse>>> answers(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i)
    threads.emplace_back([&, i] { answers[i] = p.Load(*members[i], checkpoint); });
  for (std::thread& t : threads) t.join();
  const v1::LoadModelResponse* first = nullptr;
  size_t first_index = 0;
  std::vector<std::string> errors;
  absl::Status permanent;
  for (size_t i = 0; i < n; ++i) {
    const auto& a = *answers[i];
    if (!a.ok()) {
      errors.push_back(std::string(a.status().message()));
      if (permanent.ok() && !Transport(static_cast<grpc::StatusCode>(a.status().code())))
        permanent = a.status();
      continue;
    }
    if (!first) {
      first = &*a;
      first_index = i;
    } else if (a->sha256() != first->sha256()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workers disagree on model '", checkpoint, "': ", members[first_index]->target,
          " has sha256 ", first->sha256(), ", ", members[i]->target, " has ", a->sha256(),
          "; put the same file on every worker"));
    }
  }
  if (!first) {
    if (!permanent.ok()) return permanent;
    return absl::UnavailableError(
        absl::StrCat("no worker could load '", checkpoint, "': ", absl::StrJoin(errors, "; ")));
  }
  std::lock_guard<std::mutex> lock(p.mu);
  p.model =
      ModelInfo{checkpoint,
                first->sha256(),
                first->config(),
                first->unet_in_channels(),
                first->native_size(),
                first->checkpoint_sha256().empty() ? first->sha256() : first->checkpoint_sha256(),
                first->vae_sha256(),
                {first->lora_sha256().begin(), first->lora_sha256().end()}};
  p.prepared = true;
  for (size_t i = 0; i < n; ++i) {
    Worker& w = *members[i];
    w.healthy = answers[i]->ok();
    if (w.healthy) ++w.generation;
    w.last_error = w.healthy ? "" : std::string(answers[i]->status().message());
    if (!w.healthy)
      std::fprintf(stderr, "sdgraph: worker %s is not available (%s)\n", w.target.c_str(),
                   w.last_error.c_str());
  }
  p.changed.notify_all();
  return p.model;
}

absl::StatusOr<NodeOutputs> WorkerPool::Call(const NodeCall& call,
                                             const std::atomic<bool>* cancelled) {
  Impl& p = *impl_;
  bool ready;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    ready = p.prepared && (!call.contract.needs_model || p.model.checkpoint == call.checkpoint);
  }
  if (!ready)
    SD_RETURN_IF_ERROR(Prepare(call.contract.needs_model ? call.checkpoint : "").status());
  inference::ModelInferRequest req;
  req.set_model_name(call.kind);
  req.set_id(absl::StrCat(call.node, "/", call.step, "/", p.seq.fetch_add(1)));
  if (!call.checkpoint.empty()) {
    (*req.mutable_parameters())["checkpoint"].set_string_param(call.checkpoint);
    // The bytes the pool agreed on: a worker whose file changed since answers FAILED_PRECONDITION.
    std::lock_guard<std::mutex> lock(p.mu);
    if (call.contract.needs_model && p.model.checkpoint == call.checkpoint) {
      (*req.mutable_parameters())["sha256"].set_string_param(p.model.sha256);
    }
  }
  if (p.o.wire != WireDType::kF32)
    (*req.mutable_parameters())["wire_dtype"].set_string_param(WireDTypeName(p.o.wire));
  if (call.contract.options && call.options.ByteSizeLong() > 0) {
    std::unique_ptr<google::protobuf::Message> m(
        google::protobuf::MessageFactory::generated_factory()
            ->GetPrototype(call.contract.options)
            ->New());
    if (!call.options.UnpackTo(m.get())) return absl::InvalidArgumentError("options do not unpack");
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    std::string text;
    printer.PrintToString(*m, &text);
    if (!text.empty()) (*req.mutable_parameters())["options"].set_string_param(text);
  }
  for (const auto& [port, value] : call.inputs) {
    SD_ASSIGN_OR_RETURN(WireTensor w, EncodeValue(value, p.o.wire));
    auto* in = req.add_inputs();
    in->set_name(port);
    in->set_datatype(w.datatype);
    for (int64_t d : w.shape) in->add_shape(d);
    req.add_raw_input_contents(std::move(w.raw));
  }

  std::map<Worker*, int> tried;  // worker -> its generation when it failed this call
  std::vector<std::string> failures;
  int attempts = 0;      // workers this call failed on
  int busy_retries = 0;  // answers "queue full", for the backoff
  const auto call_deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(p.o.call_timeout_s * 1000));
  auto give_up_at = Clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(p.o.unavailable_grace_s * 1000));
  for (;;) {
    if (cancelled && cancelled->load()) return absl::CancelledError("cancelled");
    Worker* w = p.PickWorker(tried, give_up_at);
    if (w == nullptr) {
      if (Clock::now() < give_up_at) continue;
      return absl::UnavailableError(absl::StrCat("no worker could run node '", call.node, "' (",
                                                 call.kind, "): ", p.DescribeWorkers()));
    }
    Impl::Attempt a = p.Send(*w, req, cancelled);
    if (a.status.ok()) return p.Decode(*w, call, a.resp);
    if (cancelled && cancelled->load()) return absl::CancelledError("cancelled");
    const grpc::StatusCode code = a.status.error_code();
    const std::string why =
        absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)), ": ",
                     a.status.error_message());
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED && a.busy) {
      // Busy, not broken: wait (exponential backoff with jitter) and try again, on any worker.
      if (Clock::now() >= call_deadline) {
        return absl::UnavailableError(absl::StrCat("node '", call.node, "' (", call.kind,
                                                   "): every worker stayed busy until the call's "
                                                   "deadline; last: ",
                                                   w->target, ": ", why));
      }
      if (!p.Backoff(busy_retries++, call_deadline, cancelled)) continue;
      give_up_at = Clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(p.o.unavailable_grace_s * 1000));
      continue;
    }
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      return absl::FailedPreconditionError(absl::StrCat(
          "node '", call.node, "' (", call.kind, ") cannot run: worker ", w->target, ": ", why,
          " (out of memory, or a message over --max-message-mb; retrying would not help)"));
    }
    const bool mismatch = code == grpc::StatusCode::FAILED_PRECONDITION && a.mismatch;
    if (!Transport(code) && !mismatch) {
      return FromGrpcStatus(a.status, absl::StrCat("worker ", w->target, ": "));
    }
    // A worker with another file is out until it rejoins (the watcher checks its hash again).
    if (mismatch || code != grpc::StatusCode::DEADLINE_EXCEEDED || !p.AnswersServing(*w)) {
      p.MarkDown(*w, why);
    }
    {
      std::lock_guard<std::mutex> lock(p.mu);
      tried[w] = w->generation;
    }
    failures.push_back(absl::StrCat(w->target, ": ", why));
    if (++attempts >= p.o.max_attempts) {
      return absl::UnavailableError(
          absl::StrCat("node '", call.node, "' (", call.kind, ") failed on ", attempts,
                       " workers (--max-attempts): ", absl::StrJoin(failures, "; ")));
    }
    give_up_at = Clock::now() +
                 std::chrono::milliseconds(static_cast<int64_t>(p.o.unavailable_grace_s * 1000));
  }
}

std::vector<WorkerPool::WorkerStats> WorkerPool::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<WorkerStats> s;
  for (const auto& w : impl_->workers) {
    if (!w->retired)
      s.push_back({w->target, w->origin, w->healthy, w->outstanding, w->calls, w->failures});
  }
  return s;
}

}  // namespace sd
