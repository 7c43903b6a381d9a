#include "worker/metrics_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cstring>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sd::worker {
namespace {

// Seconds an idle connection may stay open.
constexpr unsigned kIdleTimeoutSeconds = 10;

MHD_Result Answer(MHD_Connection* connection, unsigned status, const std::string& body) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                  void** /*con_cls*/) {
  if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0 || *upload_data_size != 0) {
    return Answer(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
  }
  if (std::strcmp(url, "/metrics") == 0) {
    auto* registry = static_cast<prometheus::Registry*>(cls);
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry->Collect());
    return Answer(connection, MHD_HTTP_OK, out.str());
  }
  if (std::strcmp(url, "/") == 0)
    return Answer(connection, MHD_HTTP_OK, "sd-worker: metrics at /metrics\n");
  return Answer(connection, MHD_HTTP_NOT_FOUND, "not found\n");
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen ", listen, ": expected HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen ", listen, ": HOST must be an IPv4 address"));
  }
  std::unique_ptr<MetricsEndpoint> m(new MetricsEndpoint());
  m->registry_ = std::move(registry);
  // One internal thread running an event loop (epoll or poll): connections are served as their
  // bytes arrive, so none can hold up another.
  m->daemon_ = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, nullptr,
                                nullptr, &Handle, m->registry_.get(), MHD_OPTION_SOCK_ADDR,
                                reinterpret_cast<sockaddr*>(&addr), MHD_OPTION_CONNECTION_TIMEOUT,
                                kIdleTimeoutSeconds, MHD_OPTION_END);
  if (m->daemon_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": ", std::strerror(errno)));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(m->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  m->port_ = info != nullptr ? info->port : port;
  return m;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace sd::worker
