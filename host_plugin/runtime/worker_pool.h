// The distributed runtime's node-call dispatcher: a pool of sd-worker processes behind the same
// interface as in-process execution (NodeDispatcher; see graph.h).
//
//   SD_ASSIGN_OR_RETURN(auto pool, WorkerPool::Create({.targets = {"10.0.0.5:50051",
//   "10.0.0.6:50051"}})); SD_ASSIGN_OR_RETURN(ModelInfo model,
//   pool->Prepare("v1-5-pruned-emaonly"));  // all workers must agree options.dispatcher =
//   pool.get(); graph.Run(inputs, ctx, options);
//
// Each call goes to the healthy worker with the fewest outstanding calls, so the cond and uncond
// UNet calls of a step (sent at the same time by the runtime) land on two workers, and concurrent
// runs spread over the pool. Every call has a deadline. What a failure means for the call:
//   - UNAVAILABLE, a dropped connection: the worker is marked down and the call is retried on
//     another (nodes are pure, so a retry gives the same bytes), at most max_attempts workers;
//   - DEADLINE_EXCEEDED: retried elsewhere likewise; the worker is marked down only if its health
//     service does not answer SERVING (a slow worker is not a dead one);
//   - a full queue (RESOURCE_EXHAUSTED marked busy): retried with exponential backoff and jitter
//     until the call's deadline, on any worker, without counting as an attempt;
//   - any other RESOURCE_EXHAUSTED (out of memory, a message over the size limit): the request
//     cannot fit, FAILED_PRECONDITION, not retried;
//   - anything else (INVALID_ARGUMENT, NOT_FOUND, ...): returned as it is. A health thread watches
//   every worker; one that comes back (restarted, or
// done draining) is asked for the model again and rejoins when its hash matches. Cancellation
// cancels the calls in flight. A whole loop placed on one worker (v1::Placement WORKER) is one
// request under the same rules, its deadline the call deadline times its steps.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/tensor/wire.h"

namespace sd {

struct WorkerPoolOptions {
  // "HOST:PORT" each, or "dns:///NAME:PORT" (a Kubernetes headless service): every address NAME
  // resolves to becomes a member of its own (health, model hash, retries), and NAME is resolved
  // again every resolve_interval_s: new addresses join, vanished ones leave.
  std::vector<std::string> targets;
  double resolve_interval_s = 10;
  // How dns:/// targets are resolved ("dns:///NAME:PORT" -> "ADDRESS:PORT"s); empty: getaddrinfo.
  // For tests.
  std::function<absl::StatusOr<std::vector<std::string>>(const std::string& target)> resolver;
  std::string token;              // sent as `authorization: Bearer <token>`
  std::string tls_ca;             // PEM file: use TLS, trusting this CA ("" : plaintext)
  std::string tls_cert, tls_key;  // PEM files: client certificate for mutual TLS
  std::string tls_server_name;  // expected name in the workers' certificates ("" : from the target)
  // Refuse plaintext (no tls_ca). Without it, a token sent over plaintext gets a warning on stderr.
  bool require_tls = false;
  WireDType wire = WireDType::kF32;  // dtype of float activations on the wire
  double call_timeout_s = 600;       // deadline of one node call (and of loading a model)
  double unavailable_grace_s = 5;    // how long a call waits for some worker to come back
  double health_interval_s = 0.5;
  int max_message_mb = kDefaultMaxMessageMb;  // the workers' default too
  // Workers one call may fail on (transport failures, deadlines) before it gives up: a request that
  // crashes workers must not cycle through a pool as they restart.
  int max_attempts = 3;
};

// What the workers report about a model.
struct ModelInfo {
  std::string checkpoint;
  std::string sha256;
  std::string config;
  int unet_in_channels = 4;
  int native_size =
      0;  // pixels, when the model declares the size it was trained at; 0: not declared
  std::string checkpoint_sha256, vae_sha256;  // the parts' files (sha256 covers all)
  std::vector<std::string> lora_sha256;       // in the order the model reference lists them
  int text_width = 0;  // of the text encoder's vectors (0: a worker that does not say)
};

class WorkerPool : public NodeDispatcher {
 public:
  // Parses "a:1,b:2" into targets; INVALID_ARGUMENT for an empty or malformed list.
  static absl::StatusOr<std::vector<std::string>> ParseTargets(const std::string& list);
  // Connects lazily: nothing is sent until Prepare or the first call.
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(WorkerPoolOptions options);
  ~WorkerPool() override;

  // Asks every worker to load `checkpoint` (a name in the workers' model repositories) and checks
  // that all that answer report the same content hash: FAILED_PRECONDITION naming both otherwise;
  // UNAVAILABLE when no worker answers. Workers that did not answer join later if their hash
  // matches.
  absl::StatusOr<ModelInfo> Prepare(const std::string& checkpoint);

  absl::StatusOr<NodeOutputs> Call(const NodeCall& call,
                                   const std::atomic<bool>* cancelled) override;
  // A loop placed on one worker (worker_pool_graphs.cc): one streaming RunGraph request to the
  // least busy worker, retried like a node call (from the loop's first step) on another.
  bool RunsGraphs() const override;
  absl::StatusOr<std::map<std::string, Value>> RunGraph(
      const GraphCall& call, const std::atomic<bool>* cancelled) override;

  struct WorkerStats {
    std::string target;  // HOST:PORT, or for members of a dns:/// target their ADDRESS:PORT
    std::string origin;  // the dns:/// target a member came from ("" for HOST:PORT targets)
    bool healthy = false;
    int outstanding = 0;
    int64_t calls = 0;     // answered OK
    int64_t failures = 0;  // transport failures (retried elsewhere)
  };
  std::vector<WorkerStats> Stats() const;  // the current members
  size_t size() const;

  struct Impl;

 private:
  explicit WorkerPool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sd
