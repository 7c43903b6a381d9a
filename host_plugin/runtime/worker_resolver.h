// dns:///NAME:PORT targets (a Kubernetes headless service): every address NAME resolves to is its
// own member of a worker pool, with its own health, model hash check and retries, so one failing
// pod is one worker down, not the whole service. As in gRPC, dns://SERVER[:PORT]/NAME:PORT asks
// that DNS server instead of the system's resolver.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

struct DnsTarget {
  std::string host;  // NAME
  int port = 0;
  std::string server;  // "ADDRESS:PORT" of the DNS server to ask; empty: the system's resolver
};

// Parses "dns:///NAME:PORT", "dns:NAME:PORT" and "dns://SERVER[:PORT]/NAME:PORT" (SERVER an IP
// address, IPv6 in brackets; port 53 by default); INVALID_ARGUMENT otherwise.
absl::StatusOr<DnsTarget> ParseDnsTarget(const std::string& target);

// The addresses NAME resolves to now, as gRPC targets ("10.0.0.5:50051", "[fd00::5]:50051"), sorted
// and without duplicates. UNAVAILABLE when the name does not resolve (or the server does not answer
// within 5 s).
absl::StatusOr<std::vector<std::string>> ResolveDnsTarget(const DnsTarget& target);

}  // namespace sd
