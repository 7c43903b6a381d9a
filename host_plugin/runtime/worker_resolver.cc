#include "host_plugin/runtime/worker_resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sd {

absl::StatusOr<DnsTarget> ParseDnsTarget(const std::string& target) {
  std::string rest;
  if (target.rfind("dns:///", 0) == 0) {
    rest = target.substr(7);
  } else if (target.rfind("dns:", 0) == 0) {
    rest = target.substr(4);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", target, "' is not dns:///NAME:PORT"));
  }
  const size_t colon = rest.rfind(':');
  DnsTarget t;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(rest.substr(colon + 1), &t.port) || t.port <= 0 || t.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", target, "' is not dns:///NAME:PORT"));
  }
  t.host = rest.substr(0, colon);
  return t;
}

absl::StatusOr<std::vector<std::string>> ResolveDnsTarget(const DnsTarget& target) {
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
  std::vector<std::string> out;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr, text,
                  sizeof(text));
      out.push_back(absl::StrCat(text, ":", target.port));
    } else if (a->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr, text,
                  sizeof(text));
      out.push_back(absl::StrCat("[", text, "]:", target.port));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) return absl::UnavailableError(absl::StrCat(target.host, " has no addresses"));
  return out;
}

}  // namespace sd
