// The worker's node host: authorises calls, loads models from the repository, and runs one node
// call (a KServe v2 ModelInfer request naming a node kind) from request to response, checking every
// parameter and input against the kind's contract and the request limits first.
#pragma once

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "nodes/ops/node.h"
#include "proto/inference/grpc_service.pb.h"
#include "proto/sd/v1/worker.pb.h"
#include "worker/metrics.h"
#include "worker/model_repo.h"
#include "worker/server.h"

namespace sd {
class Graph;
}  // namespace sd

namespace sd::worker {

class Core {
 public:
  Core(const WorkerOptions& o, std::set<std::string> served, Metrics& metrics, RunContext base);

  // A kind this worker serves, or NOT_FOUND (unknown, or not in --serve-kinds).
  absl::StatusOr<const NodeKind*> ServedKind(const std::string& name) const;
  // OK, or UNAUTHENTICATED (logged and counted) when a token is required and the call lacks it.
  grpc::Status Authorize(const grpc::CallbackServerContext* ctx, const char* method);
  // Loads a model for LoadModel calls and --preload; never throws (LibTorch's errors and failed
  // allocations while building the networks become a Status).
  absl::StatusOr<v1::LoadModelResponse> Load(const std::string& name);
  // Runs one node call.
  absl::Status Infer(const inference::ModelInferRequest& req, inference::ModelInferResponse* resp);
  // Runs a caller's graph (graph_runs.cc): `emit` gets a progress event as each node finishes,
  // `result` the outputs. Stops with CANCELLED when `cancelled` turns true.
  absl::Status RunGraph(const v1::RunGraphRequest& req,
                        const std::function<void(const v1::RunGraphEvent&)>& emit,
                        const std::atomic<bool>* cancelled, v1::RunGraphEvent* result);

  const WorkerOptions& options_;
  Metrics& metrics_;
  grpc::Server* server_ = nullptr;
  std::atomic<bool> serving_{false};
  std::atomic<bool> draining_{false};

 private:
  // What a call's parameters ask for, checked.
  struct CallSetup {
    std::string checkpoint;  // a resolved model reference ("" : none)
    google::protobuf::Any options;
    WireDType wire = WireDType::kF32;
  };
  absl::StatusOr<CallSetup> Setup(const inference::ModelInferRequest& req,
                                  const NodeContract& contract);
  using ValueMap = std::map<std::string, Value>;
  absl::StatusOr<ValueMap> DecodeInputs(const inference::ModelInferRequest& req,
                                        const NodeContract& contract) const;
  // One input tensor of a node call or a graph run: checked against the request limits (sizes
  // before decoding, then integers), decoded as `type`.
  absl::StatusOr<Value> DecodeChecked(const inference::ModelInferRequest::InferInputTensor& t,
                                      const std::string& raw, const v1::PortType& type,
                                      const std::string& what, bool packed_residuals = false) const;
  absl::Status EncodeOutputs(const inference::ModelInferRequest& req, const NodeContract& contract,
                             const NodeOutputs& out, WireDType wire,
                             inference::ModelInferResponse* resp) const;
  // A model reference (model_ref.h) with every part a name in the repository -> the same with
  // paths.
  absl::StatusOr<std::string> ResolveRef(const std::string& name) const;
  absl::StatusOr<v1::LoadModelResponse> LoadOrThrow(const std::string& name);
  // FAILED_PRECONDITION (with the model-mismatch payload) unless the model this worker has loaded
  // for `name` (opening it if need be) has the content hash the caller expects.
  absl::Status CheckModelHash(const std::string& name, const std::string& path,
                              const std::string& expected);
  void MarkServing();
  void UpdateModelGauges();
  // A graph's inputs from the request, each checked against the limits and its declared type.
  absl::StatusOr<ValueMap> DecodeGraphInputs(const v1::RunGraphRequest& req,
                                             const Graph& graph) const;

  const std::set<std::string> served_;  // node kinds callable here (--serve-kinds)
  ModelRepository repo_;
  RunContext base_;
};

}  // namespace sd::worker
