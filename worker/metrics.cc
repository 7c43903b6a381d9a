#include "worker/metrics.h"

#include "worker/request_limits.h"

namespace sd::worker {

void Metrics::Record(const std::string& kind_or_method, absl::StatusCode code, double seconds) {
  const std::string kind =
      kind_or_method == "LoadModel" ? kind_or_method : MetricKindLabel(kind_or_method);
  requests.Add({{"kind", kind}, {"code", absl::StatusCodeToString(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300};
  latency.Add({{"kind", kind}}, kBuckets).Observe(seconds);
}

}  // namespace sd::worker
