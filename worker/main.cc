// sd-worker: the gRPC worker of the distributed runtime. See server.h and worker/README.md.
#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/file_util.h"
#include "nodes/base/runtime_info.h"
#include "worker/server.h"

namespace {

constexpr char kHelp[] =
    "usage: sd-worker --models DIR [flags]\n\n"
    "Serves sdgraph's node kinds over gRPC: the KServe v2 inference protocol\n"
    "(inference.GRPCInferenceService: model name = node kind, parameter `checkpoint` = a model "
    "name in DIR),\n"
    "sd.v1.Worker (load a model, report its sha256) and grpc.health.v1 (NOT_SERVING until the "
    "first model is\n"
    "loaded). SIGTERM drains: new calls are refused, calls in flight finish (up to "
    "--drain-seconds).\n\n"
    "  --listen HOST:PORT      address to serve (default 127.0.0.1:50051; 0.0.0.0:PORT for all "
    "interfaces;\n"
    "                          port 0 picks a free one, see --port-file)\n"
    "  --models DIR            the model repository: checkpoints (.safetensors, .ckpt) addressed "
    "by file name,\n"
    "                          with or without the extension; required\n"
    "  --preload NAME[,NAME]   load these models at start (the health service turns SERVING when "
    "loaded)\n"
    "  --tokenizer DIR         CLIP vocab.json + merges.txt (default: the shipped copy)\n"
    "  --device D              cpu (default), cuda or cuda:N\n"
    "  --dtype D               compute dtype: f32 (default), bf16, f16 (f16 on CUDA only); bf16 on "
    "a CPU\n"
    "                          without AMX computes in fp32 from bf16 weights "
    "(SD_CPU_BF16=native|f32);\n"
    "                          q8: f32 with the UNet's 3x3 convolutions (and, with VNNI, its\n"
    "                          feed-forward projections) in int8 (CPU; README)\n"
    "  --threads N             CPU threads per computation (default: all cores)\n"
    "  --concurrency N         calls computing at once (default 1)\n"
    "  --queue N               calls that may wait beyond those; more get RESOURCE_EXHAUSTED "
    "(default 64)\n"
    "  --memory-budget-gb G    keep at most G GiB of networks; least recently used ones are "
    "dropped (default:\n"
    "                          no limit)\n"
    "  --max-message-mb N      largest request or response (default 64)\n"
    "  --token-file F          require `authorization: Bearer <token>` on every call, the token "
    "being the\n"
    "                          file's first line (or set SD_WORKER_TOKEN); the health service "
    "stays open\n"
    "  --tls-cert F --tls-key F   serve TLS with this PEM certificate chain and key\n"
    "  --tls-client-ca F       mutual TLS: require client certificates signed by this CA\n"
    "  --require-tls           refuse to start without --tls-cert/--tls-key (without it, a token "
    "over\n"
    "                          plaintext gets a warning at start)\n"
    "  --metrics-listen HOST:PORT   serve Prometheus metrics at http://HOST:PORT/metrics (default: "
    "off)\n"
    "  --port-file F           write {\"port\": N, \"metrics_port\": M} to F once listening\n"
    "  --drain-seconds S       on SIGTERM, how long calls in flight may finish (default 30)\n"
    "  --serve-kinds K[,K]     node kinds callable remotely: default the four that compute with a "
    "model\n"
    "                          (ClipEncode, UNetStep, VaeEncode, VaeDecode: all the distributed "
    "runtime sends);\n"
    "                          `all` for every kind (Noise, Tokenize, CfgCombine, ...)\n"
    "  --max-image-size N      largest image side in pixels a call may ask for (default 2048; "
    "latents 1/8)\n"
    "  --max-batch N           largest batch of a call's tensors (default 8)\n"
    "  --max-context-tokens N  longest token sequence or text context (default 616 = 8 x 77)\n"
    "  --max-prompt-bytes N    longest string input (default 16384)\n"
    "  --hold-calls DIR        for tests: each call writes DIR/ID.arrived and waits for DIR/ID.go "
    "or\n"
    "                          DIR/release (synchronisation without sleeps)\n"
    "\nLogs are JSON lines on stderr (one per call: id, kind, code, ms, queue_ms, peer).\n";

}  // namespace

int main(int argc, char** argv) {
  sd::EnsureFastBlasKernels(argv);  // may re-execute this program with faster OpenBLAS kernels
  sd::InstallCpuBlockCache();       // before any tensor: freed activations stay mapped for reuse
  std::vector<std::string> argv_list(argv + 1, argv + argc);
  sd::cli::FlagSpec spec{{"listen",
                          "models",
                          "preload",
                          "tokenizer",
                          "device",
                          "dtype",
                          "threads",
                          "concurrency",
                          "queue",
                          "memory-budget-gb",
                          "max-message-mb",
                          "token-file",
                          "tls-cert",
                          "tls-key",
                          "tls-client-ca",
                          "metrics-listen",
                          "port-file",
                          "drain-seconds",
                          "serve-kinds",
                          "max-image-size",
                          "max-batch",
                          "max-context-tokens",
                          "max-prompt-bytes",
                          "hold-calls"},
                         {"help", "require-tls"}};
  auto args = sd::cli::Args::Parse(argv_list, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "sd-worker: %s\n\n%s", std::string(args.status().message()).c_str(),
                 kHelp);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  auto usage = [](const std::string& msg) {
    std::fprintf(stderr, "sd-worker: %s\n", msg.c_str());
    return 2;
  };
  if (!args->positionals().empty())
    return usage("unexpected argument '" + args->positionals()[0] + "'");
  sd::worker::WorkerOptions o;
  o.listen = args->GetOr("listen", o.listen);
  o.models_dir = args->GetOr("models", "");
  if (o.models_dir.empty()) return usage("--models DIR is required");
  o.tokenizer_dir = args->GetOr("tokenizer", "");
  o.device = args->GetOr("device", o.device);
  o.dtype = args->GetOr("dtype", o.dtype);
  o.tls_cert = args->GetOr("tls-cert", "");
  o.tls_key = args->GetOr("tls-key", "");
  o.tls_client_ca = args->GetOr("tls-client-ca", "");
  o.metrics_listen = args->GetOr("metrics-listen", "");
  o.port_file = args->GetOr("port-file", "");
  o.serve_kinds = args->GetOr("serve-kinds", "");
  o.hold_dir = args->GetOr("hold-calls", "");
  o.require_tls = args->Has("require-tls");
  struct LimitFlag {
    const char* name;
    int64_t* into;
  };
  for (const LimitFlag& f : {LimitFlag{"max-image-size", &o.limits.max_image_side},
                             LimitFlag{"max-batch", &o.limits.max_batch},
                             LimitFlag{"max-context-tokens", &o.limits.max_context_tokens},
                             LimitFlag{"max-prompt-bytes", &o.limits.max_string_bytes}}) {
    if (auto v = args->Get(f.name); v && (!absl::SimpleAtoi(*v, f.into) || *f.into < 1)) {
      return usage(std::string("--") + f.name + " must be a positive integer");
    }
  }
  if (auto p = args->Get("preload")) {
    for (absl::string_view n : absl::StrSplit(*p, ',', absl::SkipEmpty()))
      o.preload.emplace_back(n);
  }
  struct IntFlag {
    const char* name;
    int* into;
    int min;
  };
  for (const IntFlag& f :
       {IntFlag{"threads", &o.threads, 0}, IntFlag{"concurrency", &o.concurrency, 1},
        IntFlag{"queue", &o.queue, 0}, IntFlag{"max-message-mb", &o.max_message_mb, 1}}) {
    if (auto v = args->Get(f.name); v && (!absl::SimpleAtoi(*v, f.into) || *f.into < f.min)) {
      return usage(std::string("--") + f.name + " must be an integer >= " + std::to_string(f.min));
    }
  }
  if (o.max_message_mb > 2000) return usage("--max-message-mb must be at most 2000");
  if (auto v = args->Get("memory-budget-gb")) {
    double gb;
    if (!absl::SimpleAtod(*v, &gb) || gb < 0)
      return usage("--memory-budget-gb must be a non-negative number");
    o.memory_budget = static_cast<uint64_t>(gb * (1ull << 30));
  }
  if (auto v = args->Get("drain-seconds");
      v && (!absl::SimpleAtod(*v, &o.drain_seconds) || o.drain_seconds < 0)) {
    return usage("--drain-seconds must be a non-negative number");
  }
  auto token = sd::ReadToken(args->GetOr("token-file", ""));
  if (!token.ok()) return usage(std::string(token.status().message()));
  o.token = *token;
  absl::Status s = sd::worker::RunWorker(o);
  if (!s.ok()) {
    std::fprintf(stderr, "sd-worker: %s\n", s.ToString().c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
