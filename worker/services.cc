#include "worker/services.h"

#include <cctype>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nodes/base/exception_status.h"
#include "nodes/tensor/wire.h"
#include "proto/grpc_status.h"
#include "proto/inference/grpc_service.grpc.pb.h"
#include "proto/sd/v1/worker.grpc.pb.h"
#include "worker/request_limits.h"
#include "worker/worker_log.h"

namespace sd::worker {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

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

// One RunGraph call: authorised, queued on the compute threads like a node call, run there while
// its progress events are written one at a time (gRPC allows one write in flight); finished once
// the run has ended and every event is written. A caller that goes away cancels the run.
class GraphRun final : public grpc::ServerWriteReactor<v1::RunGraphEvent> {
 public:
  GraphRun(Core& core, JobQueue& queue, grpc::CallbackServerContext* ctx,
           const v1::RunGraphRequest* req)
      : core_(core), ctx_(ctx), req_(req) {
    if (grpc::Status s = core_.Authorize(ctx, "RunGraph"); !s.ok()) {
      Finish(s);
      return;
    }
    if (core_.draining_.load()) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down"));
      return;
    }
    if (!queue.Push([this] { Work(); })) {
      core_.metrics_.Record("RunGraph", absl::StatusCode::kResourceExhausted,
                            SecondsSince(arrived_));
      ctx->AddTrailingMetadata(kRetryMetadataKey, kBusyMetadataValue);
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the worker's queue is full (", core_.options_.queue,
                                       " calls waiting); retry later or elsewhere")));
    }
  }
  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      pending_.pop_front();
      if (!ok) {
        broken_ = true;  // the caller is gone: stop the run, write nothing more
        cancelled_ = true;
      }
    }
    Pump();
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  void Work() {
    if (!core_.options_.hold_dir.empty())
      HoldCall(core_.options_.hold_dir, "RunGraph/" + req_->id(), ctx_);
    const double waited = SecondsSince(arrived_);
    v1::RunGraphEvent result;
    int logged_step = 0;
    auto emit = [&](const v1::RunGraphEvent& e) {
      if (e.step() > logged_step) {  // one log line a step, for operators (and tests) to follow
        logged_step = e.step();
        Log("info", "graph_step", {{"id", req_->id()}, {"step", e.step()}, {"steps", e.steps()}});
      }
      Push(e);
    };
    absl::Status s = cancelled_.load()
                         ? absl::CancelledError("the caller gave up before the run started")
                         : CatchExceptions("RunGraph", [&] {
                             return core_.RunGraph(*req_, emit, &cancelled_, &result);
                           });
    const double seconds = SecondsSince(arrived_);
    core_.metrics_.Record("RunGraph", s.code(), seconds);
    nlohmann::json f = {{"id", req_->id()},
                        {"code", absl::StatusCodeToString(s.code())},
                        {"ms", std::round(seconds * 1e4) / 10},
                        {"queue_ms", std::round(waited * 1e4) / 10},
                        {"peer", ctx_->peer()}};
    if (!s.ok()) f["error"] = std::string(s.message());
    Log(s.ok() ? "info" : "warn", "graph_run", std::move(f));
    if (s.GetPayload(kModelMismatchMetadataValue).has_value())
      ctx_->AddTrailingMetadata(kRetryMetadataKey, kModelMismatchMetadataValue);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (s.ok()) pending_.push_back(std::move(result));
      finish_ = ToGrpcStatus(s);
    }
    Pump();  // `this` may be gone after this
  }
  void Push(const v1::RunGraphEvent& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_) return;
      pending_.push_back(e);
    }
    Pump();
  }
  // Starts the next write, or finishes when the run is over and nothing is left to write.
  void Pump() {
    const v1::RunGraphEvent* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writing_ || finished_) return;
      if (!pending_.empty() && !broken_) {
        writing_ = true;
        next = &pending_.front();  // a deque keeps it in place while others are added
      } else if (finish_) {
        finished_ = true;
        finish = finish_;
      }
    }
    if (next) StartWrite(next);
    if (finish) Finish(*finish);
  }

  Core& core_;
  grpc::CallbackServerContext* ctx_;
  const v1::RunGraphRequest* req_;
  const std::chrono::steady_clock::time_point arrived_ = std::chrono::steady_clock::now();
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::deque<v1::RunGraphEvent> pending_;  // the front one is being written while writing_
  bool writing_ = false, broken_ = false, finished_ = false;
  std::optional<grpc::Status> finish_;
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
  grpc::ServerWriteReactor<v1::RunGraphEvent>* RunGraph(grpc::CallbackServerContext* ctx,
                                                        const v1::RunGraphRequest* req) override {
    return new GraphRun(core_, queue_, ctx, req);
  }

 private:
  Core& core_;
  JobQueue& queue_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeInferenceService(Core& core, JobQueue& queue) {
  return std::make_unique<InferenceService>(core, queue);
}

std::unique_ptr<grpc::Service> MakeWorkerControl(Core& core, JobQueue& queue) {
  return std::make_unique<WorkerControl>(core, queue);
}

}  // namespace sd::worker
