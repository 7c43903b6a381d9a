// sd-worker: hosts the node kinds of the registry that compute with a model (or those --serve-kinds
// names) behind the KServe v2 inference service
// (inference.GRPCInferenceService), plus sd.v1.Worker (load a model, report its hash) and the
// standard grpc.health.v1 service (NOT_SERVING until the first requested model is loaded).
//
// Calls run on a fixed number of compute threads per device behind a bounded queue (a full queue
// answers RESOURCE_EXHAUSTED at once). Models load from the repository directory by name and are
// cached by content hash with an LRU memory budget. Optional TLS / mutual TLS and a bearer token
// checked on every call. Logs are JSON lines on stderr; metrics are Prometheus text on an HTTP
// port.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nodes/tensor/wire.h"
#include "worker/request_limits.h"

namespace sd::worker {

struct WorkerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one (see port_file)
  std::string models_dir;
  std::string tokenizer_dir;   // "" -> the shipped copy
  std::string device = "cpu";  // cpu | cuda | cuda:N
  std::string dtype = "f32";   // f32 | bf16 | f16
  int concurrency = 1;         // calls computing at once on the device
  int queue = 64;              // calls waiting beyond those; more are refused (RESOURCE_EXHAUSTED)
  int threads = 0;             // ATen intra-op threads (0: all cores)
  uint64_t memory_budget = 0;  // bytes of built networks to keep (0: unlimited), LRU eviction
  int max_message_mb = kDefaultMaxMessageMb;  // largest request or response
  std::string token;           // bearer token required on every call ("" : none)
  std::string tls_cert, tls_key;  // PEM files: serve TLS
  std::string tls_client_ca;      // PEM file: also require client certificates signed by it (mTLS)
  bool require_tls = false;  // refuse to start without TLS (a token must never travel in plaintext)
  std::string metrics_listen;     // host:port of the Prometheus endpoint ("" : off; port 0 picks)
  std::string port_file;          // where to write {"port": N, "metrics_port": M} once listening
  std::vector<std::string> preload;  // models to load at start
  double drain_seconds = 30;         // on SIGTERM: how long in-flight calls may finish
  std::string serve_kinds;           // "" (the model kinds), "all", or KIND,KIND (ParseServedKinds)
  // For tests (explicit synchronisation instead of sleeps): each ModelInfer call, as its job
  // starts, creates DIR/ID.arrived (ID: the request id, '/' as '@') and waits until DIR/ID.go or
  // DIR/release exists, or the caller gives up. "" : off.
  std::string hold_dir;
  RequestLimits limits;              // sizes a request may ask for
};

// Runs the worker until SIGTERM or SIGINT, then drains. Returns an error when it cannot start.
absl::Status RunWorker(const WorkerOptions& options);

}  // namespace sd::worker
