// The worker's gRPC services: KServe v2's GRPCInferenceService (health, metadata, and ModelInfer:
// one node call, queued on the compute threads) and sd.v1.Worker (LoadModel, and RunGraph: a whole
// loop, queued likewise, its progress streamed back). Both authorise every call and answer a full
// queue with RESOURCE_EXHAUSTED at once.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>

#include <memory>

#include "worker/core.h"
#include "worker/job_queue.h"

namespace sd::worker {

std::unique_ptr<grpc::Service> MakeInferenceService(Core& core, JobQueue& queue);
std::unique_ptr<grpc::Service> MakeWorkerControl(Core& core, JobQueue& queue);

}  // namespace sd::worker
