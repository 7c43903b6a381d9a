// WorkerPool::RunGraph: a whole loop as one streaming RunGraph request to one worker, under the
// pool's retry policy (worker_pool.h). The worker's progress events are relayed as they arrive;
// should the worker die, the loop starts again from its first step on another worker, and as
// nodes are pure the result is the same.
#include <torch/torch.h>

#include "host_plugin/runtime/worker_pool.h"
#include "host_plugin/runtime/worker_pool_impl.h"
#include "nodes/tensor/wire_messages.h"

namespace sd {
namespace {

// Calls TryCancel on `ctx` as soon as `cancelled` turns true, until destroyed.
class CancelWatch {
 public:
  CancelWatch(grpc::ClientContext& ctx, const std::atomic<bool>* cancelled) {
    if (!cancelled) return;
    thread_ = std::thread([this, &ctx, cancelled] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!done_) {
        if (cancelled->load()) {
          ctx.TryCancel();
          return;
        }
        cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
    });
  }
  ~CancelWatch() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

bool WorkerPool::RunsGraphs() const { return true; }

absl::StatusOr<std::map<std::string, Value>> WorkerPool::RunGraph(
    const GraphCall& call, const std::atomic<bool>* cancelled) {
  Impl& p = *impl_;
  SD_RETURN_IF_ERROR(p.EnsurePrepared(*this, call.checkpoint));
  v1::RunGraphRequest req;
  req.set_id(absl::StrCat(call.loop, "/", p.seq.fetch_add(1)));
  req.set_graph(call.graph_text);
  req.set_checkpoint(call.checkpoint);
  for (const std::string& c : call.capture) req.add_capture(c);
  {
    std::lock_guard<std::mutex> lock(p.mu);
    req.set_sha256(p.AgreedSha256Locked(call.checkpoint));
  }
  if (p.o.wire != WireDType::kF32) req.set_wire_dtype(WireDTypeName(p.o.wire));
  for (const auto& [name, value] : call.inputs)
    SD_RETURN_IF_ERROR(AddInputTensor(name, value, p.o.wire, &req));
  // Each step may take as long as a node call.
  const double timeout_s = p.o.call_timeout_s * (std::max(call.steps, 1) + 1);
  v1::RunGraphEvent last;
  auto attempt = [&](Worker& w) {
    grpc::ClientContext ctx;
    p.Authorize(ctx, timeout_s);
    last.Clear();
    grpc::Status status;
    {
      CancelWatch watch(ctx, cancelled);
      std::unique_ptr<grpc::ClientReader<v1::RunGraphEvent>> reader =
          w.control->RunGraph(&ctx, req);
      v1::RunGraphEvent e;
      while (reader->Read(&e)) {
        if (e.done()) {
          last = std::move(e);
        } else if (call.on_progress) {
          call.on_progress({e.step(), e.steps(), e.node(), e.elapsed_s()});
        }
      }
      status = reader->Finish();
    }
    if (status.ok() && !last.done())
      status = grpc::Status(grpc::StatusCode::INTERNAL, "the run ended without its outputs");
    return p.Settle(w, ctx, std::move(status));
  };
  SD_ASSIGN_OR_RETURN(
      Worker * w, p.Retry(absl::StrCat("loop '", call.loop, "'"), timeout_s, cancelled, attempt));
  return p.DecodeOutputs(*w, last, [&](const std::string& name) -> const v1::PortType* {
    auto type = call.outputs.find(name);
    return type == call.outputs.end() ? nullptr : &type->second;
  });
}

}  // namespace sd
