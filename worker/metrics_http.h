// A minimal HTTP endpoint for Prometheus scrapes: GET /metrics answers the registry in the text
// format. (prometheus-cpp's own exposer embeds CivetWeb, which fails to start in Debian 12's build
// and cannot bind port 0; scrapes need nothing more than this.)
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}

namespace sd::worker {

class MetricsEndpoint {
 public:
  // Listens on "HOST:PORT" (port 0: a free one).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsEndpoint();
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  void Serve();
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::shared_ptr<prometheus::Registry> registry_;
  std::thread thread_;
};

}  // namespace sd::worker
