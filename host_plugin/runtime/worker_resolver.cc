#include "host_plugin/runtime/worker_resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sd {

namespace {

// A port number, 1 to 65535.
bool ParsePort(absl::string_view text, int* port) {
  return absl::SimpleAtoi(text, port) && *port > 0 && *port <= 65535;
}

// "SERVER" or "SERVER:PORT" (IPv6: "[ADDR]" or "[ADDR]:PORT") as c-ares wants it, "ADDR:PORT" or
// "[ADDR]:PORT" (port 53 by default); nullopt when it is neither.
std::optional<std::string> ParseDnsServer(const std::string& server) {
  const bool v6 = !server.empty() && server[0] == '[';
  const size_t close = v6 ? server.find(']') : 0;
  if (v6 && close == std::string::npos) return std::nullopt;
  const size_t colon = server.find(':', close);
  int port = 53;
  if (colon != std::string::npos && !ParsePort(server.substr(colon + 1), &port))
    return std::nullopt;
  const std::string address = server.substr(0, colon);
  if (address.empty() || address == "[]") return std::nullopt;
  return absl::StrCat(address, ":", port);
}

}  // namespace

absl::StatusOr<DnsTarget> ParseDnsTarget(const std::string& target) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("'", target, "' is not dns:///NAME:PORT or dns://SERVER/NAME:PORT"));
  };
  std::string rest;
  DnsTarget t;
  if (target.rfind("dns://", 0) == 0) {
    const size_t slash = target.find('/', 6);
    if (slash == std::string::npos) return bad();
    if (slash > 6) {  // dns://SERVER/...; dns:///... asks the system resolver
      std::optional<std::string> server = ParseDnsServer(target.substr(6, slash - 6));
      if (!server) return bad();
      t.server = *server;
    }
    rest = target.substr(slash + 1);
  } else if (target.rfind("dns:", 0) == 0) {
    rest = target.substr(4);
  } else {
    return bad();
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || !ParsePort(rest.substr(colon + 1), &t.port))
    return bad();
  t.host = rest.substr(0, colon);
  return t;
}

namespace {

// "ADDRESS:PORT" or "[ADDRESS]:PORT" for one resolved address.
void AddAddress(const sockaddr* a, int port, std::vector<std::string>& out) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, text, sizeof(text));
    out.push_back(absl::StrCat(text, ":", port));
  } else if (a->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, text, sizeof(text));
    out.push_back(absl::StrCat("[", text, "]:", port));
  }
}

absl::Status ResolveWithSystem(const DnsTarget& target, std::vector<std::string>& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(target.host.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.host, ": ", ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, &::freeaddrinfo);
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next)
    AddAddress(a->ai_addr, target.port, out);
  return absl::OkStatus();
}

// One query to `target.server` with c-ares (the library gRPC's own resolver uses).
absl::Status ResolveWithServer(const DnsTarget& target, std::vector<std::string>& out) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS)
    return absl::InternalError(absl::StrCat("c-ares: ", ares_strerror(library)));
  ares_options options{};
  options.timeout = 1000;  // ms per try
  options.tries = 3;
  ares_channel channel = nullptr;
  if (int rc = ares_init_options(&channel, &options, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
      rc != ARES_SUCCESS)
    return absl::InternalError(absl::StrCat("c-ares: ", ares_strerror(rc)));
  std::unique_ptr<std::remove_pointer_t<ares_channel>, decltype(&ares_destroy)> owner(
      channel, &ares_destroy);
  if (int rc = ares_set_servers_ports_csv(channel, target.server.c_str()); rc != ARES_SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat("DNS server '", target.server, "': ", ares_strerror(rc)));
  }
  struct Answer {
    bool done = false;
    int status = ARES_ETIMEOUT;
    std::vector<std::string>* out;
    int port;
  } answer{false, ARES_ETIMEOUT, &out, target.port};
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  ares_getaddrinfo(
      channel, target.host.c_str(), nullptr, &hints,
      [](void* arg, int status, int, ares_addrinfo* result) {
        auto* a = static_cast<Answer*>(arg);
        a->done = true;
        a->status = status;
        if (!result) return;
        for (const ares_addrinfo_node* n = result->nodes; n != nullptr; n = n->ai_next)
          AddAddress(n->ai_addr, a->port, *a->out);
        ares_freeaddrinfo(result);
      },
      &answer);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!answer.done && std::chrono::steady_clock::now() < deadline) {
    fd_set read, write;
    FD_ZERO(&read);
    FD_ZERO(&write);
    const int nfds = ares_fds(channel, &read, &write);
    if (nfds == 0) break;
    timeval wait{0, 100000}, *tv = ares_timeout(channel, &wait, &wait);
    ::select(nfds, &read, &write, nullptr, tv);
    ares_process(channel, &read, &write);
  }
  if (!answer.done || answer.status != ARES_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.host, " at DNS server ", target.server, ": ",
                     ares_strerror(answer.done ? answer.status : ARES_ETIMEOUT)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveDnsTarget(const DnsTarget& target) {
  std::vector<std::string> out;
  const absl::Status s =
      target.server.empty() ? ResolveWithSystem(target, out) : ResolveWithServer(target, out);
  if (!s.ok()) return s;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) return absl::UnavailableError(absl::StrCat(target.host, " has no addresses"));
  return out;
}

}  // namespace sd
