// The Prometheus endpoint of a worker: GET /metrics answers the registry in the text format, served
// by libmicrohttpd (Debian's libmicrohttpd12) from its own event-loop thread: an idle or slow
// client never blocks a scrape, and idle connections are closed after a timeout.
//
// (prometheus-cpp's own exposer embeds CivetWeb, which starts its threads with a small fixed stack;
// in a process that also loads LibTorch, the static TLS of the loaded libraries does not fit in it,
// pthread_create fails with EINVAL, and the exposer cannot start: "Cannot create threads: error
// 22".)
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct MHD_Daemon;

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace sd::worker {

class MetricsEndpoint {
 public:
  // Listens on "HOST:PORT" (an IPv4 address or localhost; port 0: a free one).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsEndpoint();
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  int port_ = 0;
  std::shared_ptr<prometheus::Registry> registry_;
  MHD_Daemon* daemon_ = nullptr;
};

}  // namespace sd::worker
