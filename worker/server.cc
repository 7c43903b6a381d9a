// sd-worker's start-up and shut-down: options checked, the node host (core.h) and its services
// (services.h) on a gRPC server, metrics on their own port, models preloaded, and on SIGTERM or
// SIGINT a drain. The pieces: worker_log (JSON lines), metrics, job_queue (compute threads), core
// (one node call), services (the gRPC methods).
#include "worker/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/file_util.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "worker/core.h"
#include "worker/job_queue.h"
#include "worker/metrics_http.h"
#include "worker/model_repo.h"
#include "worker/services.h"
#include "worker/worker_log.h"

namespace sd::worker {
namespace {

absl::StatusOr<torch::Device> ParseDevice(const std::string& text) {
  try {
    torch::Device d(text);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", text, ": this LibTorch has no CUDA or no GPU is visible"));
    }
    return d;
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device ", text, ": expected cpu, cuda or cuda:N"));
  }
}

// The context every call starts from: device, dtype, tokenizer and the model cache.
absl::StatusOr<RunContext> BaseContext(const WorkerOptions& o) {
  RunContext base;
  SD_ASSIGN_OR_RETURN(base.device, ParseDevice(o.device));
  if (o.dtype == "bf16") {
    base.dtype = torch::kBFloat16;
  } else if (o.dtype == "f16") {
    base.dtype = torch::kFloat16;
  } else if (o.dtype == "q8") {
    base.int8 = true;  // f32 compute, the UNet's int8 layers (nn::UseInt8Layers)
  } else if (o.dtype != "f32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype ", o.dtype, ": expected f32, bf16, f16 or q8"));
  }
  if (o.concurrency < 1 || o.queue < 0 || o.max_message_mb < 1) {
    return absl::InvalidArgumentError(
        "--concurrency and --max-message-mb must be >= 1, --queue >= 0");
  }
  base.tokenizer_dir = o.tokenizer_dir;
  base.models = std::make_shared<ModelCache>();
  base.models->SetBudget(o.memory_budget);
  return base;
}

// TLS (and mutual TLS) from the PEM files, or plaintext where allowed.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const WorkerOptions& o) {
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty())
      return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
    grpc::SslServerCredentialsOptions ssl;
    SD_ASSIGN_OR_RETURN(std::string cert, ReadWholeFile(o.tls_cert, "--tls-cert"));
    SD_ASSIGN_OR_RETURN(std::string key, ReadWholeFile(o.tls_key, "--tls-key"));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!o.tls_client_ca.empty()) {
      SD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWholeFile(o.tls_client_ca, "--tls-client-ca"));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    return grpc::SslServerCredentials(ssl);
  }
  if (!o.tls_client_ca.empty())
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  if (o.require_tls) {
    return absl::InvalidArgumentError(
        "--require-tls: no --tls-cert/--tls-key given; this worker does not serve plaintext");
  }
  if (!o.token.empty()) {
    Log("warn", "token_over_plaintext",
        {{"message",
          "the bearer token travels in plaintext (no --tls-cert/--tls-key): anyone on the path can "
          "read it; --require-tls refuses to start this way"}});
  }
  return grpc::InsecureServerCredentials();
}

// The metrics endpoint (if asked for) and the port file; the ports they name.
absl::Status Announce(const WorkerOptions& o, int port, Metrics& metrics,
                      std::unique_ptr<MetricsEndpoint>* exposer, int* metrics_port) {
  if (!o.metrics_listen.empty()) {
    SD_ASSIGN_OR_RETURN(*exposer, MetricsEndpoint::Start(o.metrics_listen, metrics.registry));
    *metrics_port = (*exposer)->port();
  }
  if (o.port_file.empty()) return absl::OkStatus();
  const std::string ports =
      nlohmann::json{{"port", port}, {"metrics_port", *metrics_port}}.dump() + "\n";
  return WriteWholeFile(o.port_file, ports, "--port-file");
}

void LogListening(const WorkerOptions& o, int port, int metrics_port, const RunContext& base,
                  int threads, const std::set<std::string>& served) {
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  Log("info", "listening",
      {{"address", absl::StrCat(host, ":", port)},
       {"metrics_port", metrics_port},
       {"tls", !o.tls_cert.empty()},
       {"mtls", !o.tls_client_ca.empty()},
       {"token", !o.token.empty()},
       {"device", base.device.str()},
       {"dtype", o.dtype},
       {"threads", threads},
       {"concurrency", o.concurrency},
       {"queue", o.queue},
       {"models", o.models_dir},
       {"memory_budget", o.memory_budget},
       {"serves", absl::StrJoin(served, ",")},
       {"blas", LoadedBlas().Describe()}});
}

void Preload(Core& core, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    auto r = core.Load(name);
    if (r.ok()) {
      Log("info", "model_loaded",
          {{"checkpoint", name}, {"sha256", r->sha256()}, {"preload", true}});
    } else {
      Log("error", "model_load_failed",
          {{"checkpoint", name}, {"error", std::string(r.status().message())}, {"preload", true}});
    }
  }
}

// Waits for SIGTERM / SIGINT (blocked in every thread), refreshing the memory gauge meanwhile.
int WaitForSignal(const sigset_t& signals, Metrics& metrics) {
  for (;;) {
    metrics.resident.Set(static_cast<double>(CurrentRss()));
    timespec tick{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) return sig;
  }
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& o) {
  // SIGTERM / SIGINT are taken synchronously by this thread (sigwait); every thread started below
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SD_RETURN_IF_ERROR(ModelRepository(o.models_dir).Check());
  SD_ASSIGN_OR_RETURN(RunContext base, BaseContext(o));
  const int threads = ConfigureThreads(o.threads);
  WarnIfSlowBlas("sd-worker");
  StockNodeKinds();
  SD_ASSIGN_OR_RETURN(std::set<std::string> served, ParseServedKinds(o.serve_kinds));
  SD_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, Credentials(o));

  Metrics metrics;
  Core core(o, served, metrics, base);
  JobQueue queue(o.concurrency, o.queue, metrics);
  std::unique_ptr<grpc::Service> inference = MakeInferenceService(core, queue);
  std::unique_ptr<grpc::Service> control = MakeWorkerControl(core, queue);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o.listen, creds, &port);
  builder.RegisterService(inference.get());
  builder.RegisterService(control.get());
  builder.SetMaxReceiveMessageSize(o.max_message_mb << 20);
  builder.SetMaxSendMessageSize(o.max_message_mb << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen));
  server->GetHealthCheckService()->SetServingStatus(false);
  core.server_ = server.get();

  std::unique_ptr<MetricsEndpoint> exposer;
  int metrics_port = 0;
  if (absl::Status s = Announce(o, port, metrics, &exposer, &metrics_port); !s.ok()) {
    server->Shutdown();
    return s;
  }
  LogListening(o, port, metrics_port, base, threads, served);
  std::thread preload([&] { Preload(core, o.preload); });

  const int sig = WaitForSignal(signals, metrics);
  // Refuse new calls first, then say so: a reader of the log may rely on it.
  core.draining_.store(true);
  server->GetHealthCheckService()->SetServingStatus(false);
  metrics.serving.Set(0);
  Log("info", "draining",
      {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"queued", queue.Waiting()},
       {"deadline_s", o.drain_seconds}});
  preload.join();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.drain_seconds * 1000)));
  queue.Stop();
  server->Wait();
  Log("info", "stopped");
  return absl::OkStatus();
}

}  // namespace sd::worker
