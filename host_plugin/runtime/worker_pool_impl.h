// Internal to the worker pool (worker_pool.cc, worker_pool_graphs.cc): a member worker, and the
// pool's state and its one-worker operations (load, pick, send, health, membership).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host_plugin/runtime/worker_pool.h"
#include "host_plugin/runtime/worker_resolver.h"
#include "nodes/base/status_macros.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/grpc_status.h"
#include "proto/inference/grpc_service.grpc.pb.h"
#include "proto/sd/v1/worker.grpc.pb.h"

namespace sd {
namespace pool_internal {

using Clock = std::chrono::steady_clock;

// Failures of the worker or the path to it, not of the call: another worker may succeed.
inline bool Transport(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::DEADLINE_EXCEEDED ||
         c == grpc::StatusCode::ABORTED || c == grpc::StatusCode::CANCELLED ||
         c == grpc::StatusCode::UNKNOWN;
}

inline std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace pool_internal

using pool_internal::Clock;
using pool_internal::DeadlineIn;
using pool_internal::Transport;

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
  ModelInfo model;        // guarded by mu once prepared: the last model prepared
  // Every model reference the pool prepared in this process (a graph's ApplyLora nodes can give
  // its nodes models other than the run's), with what the workers agreed on; guarded by mu.
  std::map<std::string, ModelInfo> agreed;
  // The sha256 the pool agreed on for `checkpoint` ("" : none yet); mu held.
  std::string AgreedSha256Locked(const std::string& checkpoint) const {
    auto it = agreed.find(checkpoint);
    return it == agreed.end() ? "" : it->second.sha256;
  }
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

  // What one try of a request on one worker came to.
  struct Outcome {
    grpc::Status status;
    bool busy = false;      // the worker's queue was full (RESOURCE_EXHAUSTED marked busy)
    bool mismatch = false;  // the worker's model is another file (FAILED_PRECONDITION marked so)
  };

  // Ends a try on `w` (whose outstanding count PickWorker raised): reads what the trailing
  // metadata says of the failure, lowers the count.
  Outcome Settle(Worker& w, grpc::ClientContext& ctx, grpc::Status status) {
    Outcome a;
    a.status = std::move(status);
    for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
      if (key == kRetryMetadataKey && value == kBusyMetadataValue) a.busy = true;
      if (key == kRetryMetadataKey && value == kModelMismatchMetadataValue) a.mismatch = true;
    }
    std::lock_guard<std::mutex> lock(mu);
    --w.outstanding;
    if (a.status.ok()) ++w.calls;
    return a;
  }

  // One try of a node call on `w`, cancelled when `cancelled` turns true.
  Outcome Send(Worker& w, const inference::ModelInferRequest& req,
               const std::atomic<bool>* cancelled, inference::ModelInferResponse* resp) {
    grpc::ClientContext ctx;
    Authorize(ctx, o.call_timeout_s);
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    grpc::Status status;
    w.infer->async()->ModelInfer(&ctx, &req, resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(done_mu);
      status = std::move(s);
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
    return Settle(w, ctx, std::move(status));
  }

  // Sends a request by the pool's policy (worker_pool.h): `attempt` tries it on the worker given,
  // until one succeeds (returned), or the failures say to give up. `what` names the request in
  // messages ("node 'unet' (UNetStep)"); `timeout_s` bounds the waits for busy workers.
  absl::StatusOr<Worker*> Retry(const std::string& what, double timeout_s,
                                const std::atomic<bool>* cancelled,
                                const std::function<Outcome(Worker&)>& attempt);

  // Prepares the pool for a request that needs `checkpoint` ("" : no model) unless it is.
  absl::Status EnsurePrepared(WorkerPool& pool, const std::string& checkpoint);

  // The outputs of a successful answer (ModelInferResponse, RunGraphEvent), each decoded as the
  // type `type_of` gives its name; INTERNAL (the worker is at fault) for raw contents that do not
  // match, an output the caller did not ask for (no type) or gave twice, or one that does not
  // decode.
  template <typename Answer>
  absl::StatusOr<std::map<std::string, Value>> DecodeOutputs(
      const Worker& w, const Answer& answer,
      const std::function<const v1::PortType*(const std::string&)>& type_of) const {
    if (answer.raw_output_contents_size() != answer.outputs_size()) {
      return absl::InternalError(absl::StrCat("worker ", w.target, ": ", answer.outputs_size(),
                                              " outputs but ", answer.raw_output_contents_size(),
                                              " raw contents"));
    }
    std::map<std::string, Value> out;
    for (int i = 0; i < answer.outputs_size(); ++i) {
      const auto& t = answer.outputs(i);
      const v1::PortType* type = type_of(t.name());
      if (!type || out.count(t.name())) {
        return absl::InternalError(
            absl::StrCat("worker ", w.target, " answered an unexpected output '", t.name(), "'"));
      }
      auto v = DecodeValue(t.datatype(), std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                           answer.raw_output_contents(i), *type,
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

}  // namespace sd
