// The worker's Prometheus metrics (served by metrics_http.h): calls and model loads by kind and
// code, their latency, the queue, the networks held and the process's memory.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace sd::worker {

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
  void Record(const std::string& kind_or_method, absl::StatusCode code, double seconds);
};

}  // namespace sd::worker
