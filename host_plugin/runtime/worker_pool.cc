#include "host_plugin/runtime/worker_pool.h"

#include <google/protobuf/text_format.h>
#include <torch/torch.h>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "host_plugin/runtime/worker_pool_impl.h"
#include "nodes/base/file_util.h"
#include "nodes/tensor/wire_messages.h"

namespace sd {

absl::StatusOr<std::vector<std::string>> WorkerPool::ParseTargets(const std::string& list) {
  std::vector<std::string> targets;
  for (absl::string_view t : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    const std::string target(absl::StripAsciiWhitespace(t));
    if (target.rfind("dns:", 0) == 0) {
      if (auto dns = ParseDnsTarget(target); !dns.ok())
        return absl::InvalidArgumentError(absl::StrCat("--workers: ", dns.status().message()));
      targets.push_back(target);
      continue;
    }
    const size_t colon = target.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers: '", target, "' is not HOST:PORT or dns:///NAME:PORT"));
    }
    targets.push_back(target);
  }
  if (targets.empty()) return absl::InvalidArgumentError("--workers: no worker given");
  return targets;
}

WorkerPool::WorkerPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WorkerPool::~WorkerPool() { impl_->Stop(); }

size_t WorkerPool::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  for (const auto& w : impl_->workers) n += w->retired ? 0 : 1;
  return n;
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(WorkerPoolOptions o) {
  if (o.targets.empty())
    return absl::InvalidArgumentError("a worker pool needs at least one worker");
  auto impl = std::make_unique<Impl>();
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    SD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWholeFile(o.tls_ca, "--tls-ca"));
    if (!o.tls_cert.empty() || !o.tls_key.empty()) {
      if (o.tls_cert.empty() || o.tls_key.empty())
        return absl::InvalidArgumentError("mutual TLS needs both --tls-cert and --tls-key");
      SD_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadWholeFile(o.tls_cert, "--tls-cert"));
      SD_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadWholeFile(o.tls_key, "--tls-key"));
    }
    creds = grpc::SslCredentials(ssl);
  } else if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert/--tls-key need --tls-ca (the CA that signed the workers' certificates)");
  } else if (o.require_tls) {
    return absl::InvalidArgumentError(
        "--require-tls: no --tls-ca given, and plaintext connections to workers are refused");
  } else if (!o.token.empty()) {
    std::fprintf(
        stderr,
        "sdgraph: warning: the bearer token goes to the workers in plaintext (no --tls-ca); "
        "anyone on the path can read it (--require-tls refuses this)\n");
  }
  impl->o = std::move(o);
  impl->creds = std::move(creds);
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    for (const std::string& target : impl->o.targets) {
      if (target.rfind("dns:", 0) == 0) {
        SD_RETURN_IF_ERROR(ParseDnsTarget(target).status());
        impl->dns_targets.push_back(target);
      } else {
        impl->AddWorkerLocked(target, "");
      }
    }
  }
  impl->ResolveAll();  // the first members of dns:/// targets, now
  if (!impl->dns_targets.empty()) {
    Impl* raw = impl.get();
    impl->resolver_thread = std::thread([raw] { raw->ResolveLoop(); });
  }
  return std::unique_ptr<WorkerPool>(new WorkerPool(std::move(impl)));
}

absl::StatusOr<ModelInfo> WorkerPool::Prepare(const std::string& checkpoint) {
  Impl& p = *impl_;
  std::lock_guard<std::mutex> prepare_lock(p.prepare_mu);
  {
    std::lock_guard<std::mutex> lock(p.mu);
    // Kinds without a model run on any prepared pool.
    if (p.prepared && checkpoint.empty()) return p.model;
    if (auto it = p.agreed.find(checkpoint); it != p.agreed.end()) return it->second;
  }
  std::vector<Worker*> members;  // a snapshot: dns:/// members may join meanwhile
  {
    std::lock_guard<std::mutex> lock(p.mu);
    for (auto& w : p.workers) {
      if (!w->retired) members.push_back(w.get());
    }
  }
  const size_t n = members.size();
  std::vector<std::optional<absl::StatusOr<v1::LoadModelResponse>>> answers(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i)
    threads.emplace_back([&, i] { answers[i] = p.Load(*members[i], checkpoint); });
  for (std::thread& t : threads) t.join();
  const v1::LoadModelResponse* first = nullptr;
  size_t first_index = 0;
  std::vector<std::string> errors;
  absl::Status permanent;
  for (size_t i = 0; i < n; ++i) {
    const auto& a = *answers[i];
    if (!a.ok()) {
      errors.push_back(std::string(a.status().message()));
      if (permanent.ok() && !Transport(static_cast<grpc::StatusCode>(a.status().code())))
        permanent = a.status();
      continue;
    }
    if (!first) {
      first = &*a;
      first_index = i;
    } else if (a->sha256() != first->sha256()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workers disagree on model '", checkpoint, "': ", members[first_index]->target,
          " has sha256 ", first->sha256(), ", ", members[i]->target, " has ", a->sha256(),
          "; put the same file on every worker"));
    }
  }
  if (!first) {
    if (!permanent.ok()) return permanent;
    return absl::UnavailableError(
        absl::StrCat("no worker could load '", checkpoint, "': ", absl::StrJoin(errors, "; ")));
  }
  std::lock_guard<std::mutex> lock(p.mu);
  p.model =
      ModelInfo{checkpoint,
                first->sha256(),
                first->config(),
                first->unet_in_channels(),
                first->native_size(),
                first->checkpoint_sha256().empty() ? first->sha256() : first->checkpoint_sha256(),
                first->vae_sha256(),
                {first->lora_sha256().begin(), first->lora_sha256().end()},
                first->text_width()};
  p.prepared = true;
  p.agreed[checkpoint] = p.model;
  for (size_t i = 0; i < n; ++i) {
    Worker& w = *members[i];
    w.healthy = answers[i]->ok();
    if (w.healthy) ++w.generation;
    w.last_error = w.healthy ? "" : std::string(answers[i]->status().message());
    if (!w.healthy)
      std::fprintf(stderr, "sdgraph: worker %s is not available (%s)\n", w.target.c_str(),
                   w.last_error.c_str());
  }
  p.changed.notify_all();
  return p.model;
}

absl::Status WorkerPool::Impl::EnsurePrepared(WorkerPool& pool, const std::string& checkpoint) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (prepared && (checkpoint.empty() || agreed.count(checkpoint))) return absl::OkStatus();
  }
  return pool.Prepare(checkpoint).status();
}

absl::StatusOr<Worker*> WorkerPool::Impl::Retry(const std::string& what, double timeout_s,
                                                const std::atomic<bool>* cancelled,
                                                const std::function<Outcome(Worker&)>& attempt) {
  std::map<Worker*, int> tried;  // worker -> its generation when it failed this call
  std::vector<std::string> failures;
  int attempts = 0;      // workers this call failed on
  int busy_retries = 0;  // answers "queue full", for the backoff
  const auto call_deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  auto grace = [&] {
    return Clock::now() +
           std::chrono::milliseconds(static_cast<int64_t>(o.unavailable_grace_s * 1000));
  };
  auto give_up_at = grace();
  for (;;) {
    if (cancelled && cancelled->load()) return absl::CancelledError("cancelled");
    Worker* w = PickWorker(tried, give_up_at);
    if (w == nullptr) {
      if (Clock::now() < give_up_at) continue;
      return absl::UnavailableError(
          absl::StrCat("no worker could run ", what, ": ", DescribeWorkers()));
    }
    Outcome a = attempt(*w);
    if (a.status.ok()) return w;
    if (cancelled && cancelled->load()) return absl::CancelledError("cancelled");
    const grpc::StatusCode code = a.status.error_code();
    const std::string why =
        absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)), ": ",
                     a.status.error_message());
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED && a.busy) {
      // Busy, not broken: wait (exponential backoff with jitter) and try again, on any worker.
      if (Clock::now() >= call_deadline) {
        return absl::UnavailableError(absl::StrCat(
            what, ": every worker stayed busy until the call's deadline; last: ", w->target, ": ",
            why));
      }
      if (!Backoff(busy_retries++, call_deadline, cancelled)) continue;
      give_up_at = grace();
      continue;
    }
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " cannot run: worker ", w->target, ": ", why,
          " (out of memory, or a message over --max-message-mb; retrying would not help)"));
    }
    const bool mismatch = code == grpc::StatusCode::FAILED_PRECONDITION && a.mismatch;
    if (!Transport(code) && !mismatch) {
      return FromGrpcStatus(a.status, absl::StrCat("worker ", w->target, ": "));
    }
    // A worker with another file is out until it rejoins (the watcher checks its hash again).
    if (mismatch || code != grpc::StatusCode::DEADLINE_EXCEEDED || !AnswersServing(*w)) {
      MarkDown(*w, why);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      tried[w] = w->generation;
    }
    failures.push_back(absl::StrCat(w->target, ": ", why));
    if (++attempts >= o.max_attempts) {
      return absl::UnavailableError(
          absl::StrCat(what, " failed on ", attempts,
                       " workers (--max-attempts): ", absl::StrJoin(failures, "; ")));
    }
    give_up_at = grace();
  }
}

absl::StatusOr<NodeOutputs> WorkerPool::Call(const NodeCall& call,
                                             const std::atomic<bool>* cancelled) {
  Impl& p = *impl_;
  SD_RETURN_IF_ERROR(p.EnsurePrepared(*this, call.contract.needs_model ? call.checkpoint : ""));
  inference::ModelInferRequest req;
  req.set_model_name(call.kind);
  req.set_id(absl::StrCat(call.node, "/", call.step, "/", p.seq.fetch_add(1)));
  if (!call.checkpoint.empty()) {
    (*req.mutable_parameters())["checkpoint"].set_string_param(call.checkpoint);
    // The bytes the pool agreed on: a worker whose file changed since answers FAILED_PRECONDITION.
    std::lock_guard<std::mutex> lock(p.mu);
    const std::string sha256 = p.AgreedSha256Locked(call.checkpoint);
    if (call.contract.needs_model && !sha256.empty())
      (*req.mutable_parameters())["sha256"].set_string_param(sha256);
  }
  if (p.o.wire != WireDType::kF32)
    (*req.mutable_parameters())["wire_dtype"].set_string_param(WireDTypeName(p.o.wire));
  if (call.contract.options && call.options.ByteSizeLong() > 0) {
    std::unique_ptr<google::protobuf::Message> m(
        google::protobuf::MessageFactory::generated_factory()
            ->GetPrototype(call.contract.options)
            ->New());
    if (!call.options.UnpackTo(m.get())) return absl::InvalidArgumentError("options do not unpack");
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    std::string text;
    printer.PrintToString(*m, &text);
    if (!text.empty()) (*req.mutable_parameters())["options"].set_string_param(text);
  }
  for (const auto& [port, value] : call.inputs)
    SD_RETURN_IF_ERROR(AddInputTensor(port, value, p.o.wire, &req));

  inference::ModelInferResponse resp;
  SD_ASSIGN_OR_RETURN(Worker * w, p.Retry(absl::StrCat("node '", call.node, "' (", call.kind, ")"),
                                          p.o.call_timeout_s, cancelled, [&](Worker& w) {
                                            return p.Send(w, req, cancelled, &resp);
                                          }));
  SD_ASSIGN_OR_RETURN(
      auto values, p.DecodeOutputs(*w, resp, [&](const std::string& name) -> const v1::PortType* {
        const PortSpec* port = call.contract.Output(name);
        return port ? &port->type : nullptr;
      }));
  return NodeOutputs(std::make_move_iterator(values.begin()),
                     std::make_move_iterator(values.end()));
}

std::vector<WorkerPool::WorkerStats> WorkerPool::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<WorkerStats> s;
  for (const auto& w : impl_->workers) {
    if (!w->retired)
      s.push_back({w->target, w->origin, w->healthy, w->outstanding, w->calls, w->failures});
  }
  return s;
}

}  // namespace sd
