// sd-worker as an outside client sees it: the KServe v2 service, the health service, bad input of
// every kind (each answered with its specific code, the worker serving on afterwards), tokens, TLS
// and mutual TLS, queue limits, draining on SIGTERM, the LRU memory budget, and a Python client
// generated from the same proto with Debian's grpc_python_plugin.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/inference/grpc_service.grpc.pb.h"
#include "proto/sd/v1/worker.grpc.pb.h"
#include "tests/integration/worker_harness.h"

namespace sd::testing {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr char kToken[] = "t0ken-for-tests-only";

std::string F32Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string F64Bytes(double d) { return std::string(reinterpret_cast<const char*>(&d), 8); }

void AddInput(ModelInferRequest& r, const std::string& name, const std::string& datatype,
              std::vector<int64_t> shape, std::string raw) {
  auto* in = r.add_inputs();
  in->set_name(name);
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  r.add_raw_input_contents(std::move(raw));
}

// A valid UNetStep call on the tiny model: latents [1, 4, 8, 8], t = 500, context [1, 77, 64].
ModelInferRequest UNetRequest(const std::string& checkpoint = "tiny") {
  ModelInferRequest r;
  r.set_model_name("UNetStep");
  r.set_id("test");
  (*r.mutable_parameters())["checkpoint"].set_string_param(checkpoint);
  std::vector<float> latents(4 * 8 * 8), context(77 * 64);
  for (size_t i = 0; i < latents.size(); ++i) latents[i] = std::sin(0.1f * i);
  for (size_t i = 0; i < context.size(); ++i) context[i] = std::cos(0.01f * i);
  AddInput(r, "latents", "FP32", {1, 4, 8, 8}, F32Bytes(latents));
  AddInput(r, "t", "FP64", {1}, F64Bytes(500));
  AddInput(r, "context", "FP32", {1, 77, 64}, F32Bytes(context));
  return r;
}

class Client {
 public:
  explicit Client(
      const std::string& target,
      std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials(),
      const std::string& server_name = "") {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    args.SetMaxReceiveMessageSize(64 << 20);
    if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
    channel_ = grpc::CreateCustomChannel(target, creds, args);
    infer_ = GRPCInferenceService::NewStub(channel_);
    control_ = v1::Worker::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }
  void Prepare(grpc::ClientContext& ctx, const std::string& token) const {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  }
  grpc::Status Infer(const ModelInferRequest& r, ModelInferResponse* out,
                     const std::string& token = kToken) const {
    grpc::ClientContext ctx;
    Prepare(ctx, token);
    return infer_->ModelInfer(&ctx, r, out);
  }
  grpc::Status Live(const std::string& token = kToken) const {
    grpc::ClientContext ctx;
    Prepare(ctx, token);
    inference::ServerLiveResponse resp;
    grpc::Status s = infer_->ServerLive(&ctx, {}, &resp);
    if (s.ok() && !resp.live()) return grpc::Status(grpc::StatusCode::INTERNAL, "not live");
    return s;
  }
  grpc::Status Load(const std::string& name, v1::LoadModelResponse* out,
                    const std::string& token = kToken) const {
    grpc::ClientContext ctx;
    Prepare(ctx, token);
    v1::LoadModelRequest req;
    req.set_checkpoint(name);
    return control_->LoadModel(&ctx, req, out);
  }
  grpc::health::v1::HealthCheckResponse::ServingStatus Health() const {
    grpc::ClientContext ctx;
    Prepare(ctx, "");
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health_->Check(&ctx, {}, &resp);
    return s.ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  GRPCInferenceService::Stub& infer() { return *infer_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GRPCInferenceService::Stub> infer_;
  std::unique_ptr<v1::Worker::Stub> control_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

class WorkerProtocolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::filesystem::create_directories(dir_->File("models"));
    auto r = MakeTestCheckpoint(dir_->File("models/tiny.safetensors"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = MakeTestCheckpoint(dir_->File("models/tiny9.safetensors"), "--tiny --inpaint");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    WriteFile(dir_->File("token"), std::string(kToken) + "\n");
    worker_ = new WorkerProcess();
    ASSERT_TRUE(worker_->Start(dir_->File("models"), dir_->File("w.log"),
                               {"--token-file", dir_->File("token"), "--max-message-mb", "4"}));
  }
  static void TearDownTestSuite() {
    delete worker_;
    delete dir_;
  }
  static TempDir* dir_;
  static WorkerProcess* worker_;
};
TempDir* WorkerProtocolTest::dir_;
WorkerProcess* WorkerProtocolTest::worker_;

TEST_F(WorkerProtocolTest, HealthIsNotServingUntilAModelIsLoaded) {
  TempDir d;
  WorkerProcess w;
  ASSERT_TRUE(w.Start(dir_->File("models"), d.File("w.log")));
  Client c(w.target());
  EXPECT_EQ(c.Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  v1::LoadModelResponse loaded;
  ASSERT_TRUE(c.Load("tiny", &loaded, "").ok());
  EXPECT_EQ(loaded.sha256().size(), 64u);
  EXPECT_EQ(loaded.unet_in_channels(), 4);
  EXPECT_EQ(loaded.device(), "cpu");
  EXPECT_EQ(c.Health(), grpc::health::v1::HealthCheckResponse::SERVING);
  v1::LoadModelResponse again;
  ASSERT_TRUE(c.Load("tiny.safetensors", &again, "").ok());
  EXPECT_EQ(again.sha256(), loaded.sha256());
}

TEST_F(WorkerProtocolTest, KServeEndpointsDescribeTheNodes) {
  Client c(worker_->target());
  ASSERT_TRUE(c.Live().ok());
  grpc::ClientContext ctx;
  c.Prepare(ctx, kToken);
  inference::ModelMetadataRequest req;
  req.set_name("UNetStep");
  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(c.infer().ModelMetadata(&ctx, req, &meta).ok());
  std::map<std::string, std::pair<std::string, int>> inputs;
  for (const auto& t : meta.inputs()) inputs[t.name()] = {t.datatype(), t.shape_size()};
  EXPECT_EQ(inputs["latents"], std::make_pair(std::string("FP32"), 4));
  EXPECT_EQ(inputs["t"], std::make_pair(std::string("FP64"), 1));
  EXPECT_EQ(inputs["context"], std::make_pair(std::string("FP32"), 3));
  ASSERT_EQ(meta.outputs_size(), 1);
  EXPECT_EQ(meta.outputs(0).name(), "eps");
  grpc::ClientContext ctx2;
  c.Prepare(ctx2, kToken);
  req.set_name("NoSuchNode");
  EXPECT_EQ(c.infer().ModelMetadata(&ctx2, req, &meta).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerProtocolTest, UNetStepAnswersInFp32AndOnAHalfWire) {
  Client c(worker_->target());
  ModelInferResponse out;
  grpc::Status s = c.Infer(UNetRequest(), &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(out.outputs_size(), 1);
  EXPECT_EQ(out.outputs(0).name(), "eps");
  EXPECT_EQ(out.outputs(0).datatype(), "FP32");
  EXPECT_EQ(out.raw_output_contents(0).size(), 4u * 8 * 8 * 4);
  ModelInferRequest half = UNetRequest();
  (*half.mutable_parameters())["wire_dtype"].set_string_param("FP16");
  ModelInferResponse out16;
  ASSERT_TRUE(c.Infer(half, &out16).ok());
  EXPECT_EQ(out16.outputs(0).datatype(), "FP16");
  EXPECT_EQ(out16.raw_output_contents(0).size(), 4u * 8 * 8 * 2);
  // Typed contents (what some clients send instead of raw bytes) give the same answer.
  ModelInferRequest typed = UNetRequest();
  for (int i = 0; i < typed.inputs_size(); ++i) {
    const std::string& raw = typed.raw_input_contents(i);
    auto* contents = typed.mutable_inputs(i)->mutable_contents();
    if (typed.inputs(i).datatype() == "FP32") {
      for (size_t k = 0; k < raw.size() / 4; ++k) {
        float f;
        std::memcpy(&f, raw.data() + 4 * k, 4);
        contents->add_fp32_contents(f);
      }
    } else {
      double d;
      std::memcpy(&d, raw.data(), 8);
      contents->add_fp64_contents(d);
    }
  }
  typed.clear_raw_input_contents();
  ModelInferResponse out_typed;
  ASSERT_TRUE(c.Infer(typed, &out_typed).ok());
  EXPECT_EQ(out_typed.raw_output_contents(0), out.raw_output_contents(0));
}

TEST_F(WorkerProtocolTest, BadInputGetsItsCodeAndTheWorkerServesOn) {
  Client c(worker_->target());
  struct Case {
    std::string what;
    std::function<void(ModelInferRequest&)> spoil;
    grpc::StatusCode code;
    std::string token = kToken;
  };
  auto nan_latents = [](ModelInferRequest& r) {
    std::vector<float> v(4 * 8 * 8, 0.5f);
    v[17] = std::nanf("");
    *r.mutable_raw_input_contents(0) = F32Bytes(v);
  };
  const std::vector<Case> cases = {
      {"wrong dtype", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_datatype("INT64"); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"unknown dtype", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_datatype("FP8"); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"wrong rank",
       [](ModelInferRequest& r) {
         r.mutable_inputs(0)->clear_shape();
         for (int d : {4, 8, 8}) r.mutable_inputs(0)->add_shape(d);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"bytes not matching the shape",
       [](ModelInferRequest& r) { r.mutable_raw_input_contents(0)->resize(100); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"negative dimension", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_shape(0, -1); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"overflowing shape",
       [](ModelInferRequest& r) {
         for (int i = 0; i < 4; ++i) r.mutable_inputs(0)->set_shape(i, int64_t{1} << 40);
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"NaN in the latents", nan_latents, grpc::StatusCode::INVALID_ARGUMENT},
      {"infinite timestep",
       [](ModelInferRequest& r) { *r.mutable_raw_input_contents(1) = F64Bytes(INFINITY); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"unknown node kind", [](ModelInferRequest& r) { r.set_model_name("Frobnicate"); },
       grpc::StatusCode::NOT_FOUND},
      {"path-like model name",
       [](ModelInferRequest& r) {
         (*r.mutable_parameters())["checkpoint"].set_string_param("../../etc/passwd");
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"absolute model path",
       [](ModelInferRequest& r) {
         (*r.mutable_parameters())["checkpoint"].set_string_param("/etc/passwd");
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"unknown model",
       [](ModelInferRequest& r) {
         (*r.mutable_parameters())["checkpoint"].set_string_param("nosuch");
       },
       grpc::StatusCode::NOT_FOUND},
      {"no model", [](ModelInferRequest& r) { r.mutable_parameters()->erase("checkpoint"); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"missing input",
       [](ModelInferRequest& r) {
         r.mutable_inputs()->RemoveLast();
         r.mutable_raw_input_contents()->RemoveLast();
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"unknown input", [](ModelInferRequest& r) { r.mutable_inputs(2)->set_name("contexts"); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"raw contents not one per input",
       [](ModelInferRequest& r) { r.mutable_raw_input_contents()->RemoveLast(); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"bad options",
       [](ModelInferRequest& r) {
         (*r.mutable_parameters())["options"].set_string_param("tile: 1");
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"oversized message",
       [](ModelInferRequest& r) { *r.mutable_raw_input_contents(2) = std::string(5 << 20, 'x'); },
       grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"a kind not served (no model: --serve-kinds)",
       [](ModelInferRequest& r) { r.set_model_name("CfgCombine"); }, grpc::StatusCode::NOT_FOUND},
      {"latents over --max-image-size",
       [](ModelInferRequest& r) {
         for (int i : {2, 3}) r.mutable_inputs(0)->set_shape(i, 264);
         *r.mutable_raw_input_contents(0) = F32Bytes(std::vector<float>(4 * 264 * 264, 0.1f));
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"batch over --max-batch",
       [](ModelInferRequest& r) {
         r.mutable_inputs(0)->set_shape(0, 9);
         *r.mutable_raw_input_contents(0) = F32Bytes(std::vector<float>(9 * 4 * 8 * 8, 0.1f));
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"a context of the wrong width (checked before LibTorch sees it)",
       [](ModelInferRequest& r) {
         r.mutable_inputs(2)->set_shape(2, 65);
         *r.mutable_raw_input_contents(2) = F32Bytes(std::vector<float>(77 * 65, 0.1f));
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"latents 9x9 (the UNet halves them 3 times: checked before LibTorch sees them)",
       [](ModelInferRequest& r) {
         for (int i : {2, 3}) r.mutable_inputs(0)->set_shape(i, 9);
         *r.mutable_raw_input_contents(0) = F32Bytes(std::vector<float>(4 * 9 * 9, 0.1f));
       },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"missing token", [](ModelInferRequest&) {}, grpc::StatusCode::UNAUTHENTICATED, ""},
      {"wrong token", [](ModelInferRequest&) {}, grpc::StatusCode::UNAUTHENTICATED,
       "t0ken-for-tests-onlx"},
  };
  for (const Case& k : cases) {
    ModelInferRequest r = UNetRequest();
    k.spoil(r);
    ModelInferResponse out;
    grpc::Status s = c.Infer(r, &out, k.token);
    EXPECT_EQ(s.error_code(), k.code) << k.what << ": " << s.error_message();
    std::printf("[ bad input ] %-30s -> %d %s\n", k.what.c_str(), static_cast<int>(s.error_code()),
                s.error_message().substr(0, 110).c_str());
    ASSERT_TRUE(c.Live().ok()) << "the worker stopped serving after: " << k.what;
  }
  // Tensors that do not fit each other (the ports' dims: image [B, 3, h*f, w*f], noise [B, C, h,
  // w]) are refused before the kernel runs, naming the port and the axis.
  ModelInferRequest enc;
  enc.set_model_name("VaeEncode");
  (*enc.mutable_parameters())["checkpoint"].set_string_param("tiny");
  AddInput(enc, "image", "FP32", {1, 3, 64, 64}, F32Bytes(std::vector<float>(3 * 64 * 64, 0.1f)));
  AddInput(enc, "noise", "FP32", {2, 4, 8, 8}, F32Bytes(std::vector<float>(2 * 4 * 8 * 8, 0.1f)));
  ModelInferResponse encoded;
  const grpc::Status unfit = c.Infer(enc, &encoded);
  EXPECT_EQ(unfit.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << unfit.error_message();
  EXPECT_NE(unfit.error_message().find("input 'noise' [2, 4, 8, 8]: axis 0 is 2, expected B = 1"),
            std::string::npos)
      << unfit.error_message();
  EXPECT_EQ(c.Live("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::LoadModelResponse loaded;
  EXPECT_EQ(c.Load("../tiny", &loaded).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(c.Load("tiny", &loaded, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ModelInferResponse out;
  EXPECT_TRUE(c.Infer(UNetRequest(), &out).ok());
}

// An allocation far beyond memory inside a node (Noise of 4 million pixels a side, on a worker
// whose operator raised the image limit that far and serves every kind) comes back as
// RESOURCE_EXHAUSTED, and the worker answers the next call; a `channels` option beyond any latent's
// is refused before anything is drawn; the metrics label calls of unknown kinds "other", never with
// the name a client sent.
TEST_F(WorkerProtocolTest, AllocationFailureIsAnErrorNotACrashAndLabelsAreBounded) {
  WorkerProcess all;
  ASSERT_TRUE(all.Start(dir_->File("models"), dir_->File("all.log"),
                        {"--serve-kinds", "all", "--max-image-size", "4000000"}));
  Client c(all.target());
  auto noise_request = [](int64_t side, const std::string& options) {
    ModelInferRequest noise;
    noise.set_model_name("Noise");
    if (!options.empty()) (*noise.mutable_parameters())["options"].set_string_param(options);
    AddInput(noise, "seed", "INT64", {1}, std::string("\x01\0\0\0\0\0\0\0", 8));
    AddInput(noise, "height", "INT64", {1}, std::string(reinterpret_cast<const char*>(&side), 8));
    AddInput(noise, "width", "INT64", {1}, std::string(reinterpret_cast<const char*>(&side), 8));
    return noise;
  };
  ModelInferResponse out;
  grpc::Status s = c.Infer(noise_request(4000000, ""), &out, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  s = c.Infer(noise_request(64, "channels: 1000000000"), &out, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("channels"), std::string::npos) << s.error_message();
  EXPECT_TRUE(all.running());
  ASSERT_TRUE(c.Live("").ok());
  EXPECT_TRUE(c.Infer(UNetRequest(), &out, "").ok()) << "the worker still computes";

  ModelInferRequest junk = UNetRequest();
  junk.set_model_name("kind-chosen-by-a-client-12345");
  EXPECT_EQ(c.Infer(junk, &out, "").error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string metrics = all.Metrics();
  EXPECT_EQ(metrics.find("kind-chosen-by-a-client"), std::string::npos);
  EXPECT_NE(metrics.find("kind=\"other\""), std::string::npos) << metrics.substr(0, 2000);
  EXPECT_NE(metrics.find("kind=\"Noise\""), std::string::npos);
}

// Clients that connect to /metrics and send nothing hold a thread each, not the endpoint: a scrape
// is answered while they stay connected (a one-connection-at-a-time server would have had to drop
// them first).
TEST_F(WorkerProtocolTest, IdleMetricsClientsDoNotBlockScrapes) {
  std::vector<int> idle;
  for (int i = 0; i < 2; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(worker_->metrics_port()));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    idle.push_back(fd);
  }
  const std::string text = worker_->Metrics();
  EXPECT_NE(text.find("# TYPE sd_worker_"), std::string::npos) << text.substr(0, 500);
  for (int fd : idle) {
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "an idle client was dropped before the scrape was served";
    ::close(fd);
  }
}

TEST_F(WorkerProtocolTest, SymlinksOutOfTheRepositoryAreRefused) {
  TempDir elsewhere;
  std::filesystem::copy_file(dir_->File("models/tiny.safetensors"),
                             elsewhere.File("outside.safetensors"));
  std::filesystem::create_symlink(elsewhere.File("outside.safetensors"),
                                  dir_->File("models/evil.safetensors"));
  Client c(worker_->target());
  ModelInferResponse out;
  EXPECT_EQ(c.Infer(UNetRequest("evil"), &out).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  std::filesystem::remove(dir_->File("models/evil.safetensors"));
}

// Waits (polling the folder: explicit synchronisation, not a sleep of a guessed length) until the
// worker holding calls in `hold` has started the call `id`.
void AwaitArrival(const std::string& hold, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!std::filesystem::exists(hold + "/" + id + ".arrived") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(std::filesystem::exists(hold + "/" + id + ".arrived")) << id << " never started";
}

// A UNetStep call with id `id` sent from a thread of its own, waited for until the worker (started
// with --hold-calls `hold`) has started it.
class HeldCall {
 public:
  HeldCall(Client& c, const std::string& hold, const std::string& id)
      : thread_([this, &c, id] {
          ModelInferRequest r = UNetRequest();
          r.set_id(id);
          ModelInferResponse out;
          code_ = c.Infer(r, &out, "").error_code();
        }) {
    AwaitArrival(hold, id);
  }
  ~HeldCall() { Wait(); }
  grpc::StatusCode Wait() {
    if (thread_.joinable()) thread_.join();
    return code_;
  }

 private:
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
  std::thread thread_;
};

// One compute thread, no queue: while a call is held in it, the next is refused at once with
// RESOURCE_EXHAUSTED marked busy (retry later), and the held call then completes.
TEST_F(WorkerProtocolTest, FullQueueIsResourceExhausted) {
  TempDir d;
  const std::string hold = d.File("hold");
  std::filesystem::create_directories(hold);
  WorkerProcess w;
  ASSERT_TRUE(
      w.Start(dir_->File("models"), d.File("w.log"),
              {"--concurrency", "1", "--queue", "0", "--preload", "tiny", "--hold-calls", hold}));
  Client c(w.target());
  HeldCall first(c, hold, "first");
  ModelInferRequest second = UNetRequest();
  second.set_id("second");
  grpc::ClientContext ctx;
  c.Prepare(ctx, "");
  ModelInferResponse out;
  const grpc::Status s = c.infer().ModelInfer(&ctx, second, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  bool busy = false;
  for (const auto& [k, v] : ctx.GetServerTrailingMetadata()) {
    busy = busy || (std::string(k.data(), k.size()) == "sd-retry" &&
                    std::string(v.data(), v.size()) == "busy");
  }
  EXPECT_TRUE(busy) << "a full queue is marked busy: retry later, not permanent";
  WriteFile(hold + "/release", "");
  EXPECT_EQ(first.Wait(), grpc::StatusCode::OK);
}

// SIGTERM while a call is in flight (held): the worker turns NOT_SERVING, refuses new calls, lets
// the held call finish once released, and exits 0.
TEST_F(WorkerProtocolTest, SigtermDrainsCallsInFlight) {
  TempDir d;
  const std::string hold = d.File("hold");
  std::filesystem::create_directories(hold);
  WorkerProcess w;
  ASSERT_TRUE(
      w.Start(dir_->File("models"), d.File("w.log"), {"--preload", "tiny", "--hold-calls", hold}));
  Client c(w.target());
  while (c.Health() != grpc::health::v1::HealthCheckResponse::SERVING)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  HeldCall held(c, hold, "held");
  ASSERT_EQ(::kill(w.pid(), SIGTERM), 0);
  while (w.Events("draining").empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ModelInferResponse out;
  EXPECT_EQ(c.Infer(UNetRequest(), &out, "").error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a draining worker takes no new calls";
  WriteFile(hold + "/release", "");
  EXPECT_EQ(held.Wait(), grpc::StatusCode::OK) << "the call in flight was not allowed to finish";
  EXPECT_EQ(w.Stop(), 0);
  EXPECT_FALSE(w.Events("stopped").empty());
}

TEST_F(WorkerProtocolTest, MemoryBudgetEvictsLeastRecentlyUsedNetworks) {
  TempDir d;
  WorkerProcess w;
  // About 30 MB: less than one tiny model's three networks (51 MB).
  ASSERT_TRUE(w.Start(dir_->File("models"), d.File("w.log"), {"--memory-budget-gb", "0.03"}));
  Client c(w.target());
  v1::LoadModelResponse a, b;
  ASSERT_TRUE(c.Load("tiny", &a, "").ok());
  ASSERT_TRUE(c.Load("tiny9", &b, "").ok());
  EXPECT_NE(a.sha256(), b.sha256());
  EXPECT_EQ(b.unet_in_channels(), 9);
  const std::string m = w.Metrics();
  EXPECT_GT(MetricValue(m, "sd_worker_model_evictions"), 0) << m;
  EXPECT_LE(MetricValue(m, "sd_worker_loaded_models"), 2) << m;
  // An evicted model is loaded again when called.
  ModelInferResponse out;
  EXPECT_TRUE(c.Infer(UNetRequest(), &out, "").ok());
}

// ---- TLS
// --------------------------------------------------------------------------------------------

// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, made with openssl.
void MakeCertificates(const TempDir& d) {
  const std::string script = "set -e; cd " + Quote(d.path()) +
                             "; openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out "
                             "ca.pem -days 2 -subj /CN=sdgraph-test-ca 2>/dev/null"
                             "; openssl req -newkey rsa:2048 -nodes -keyout server.key -out "
                             "server.csr -subj /CN=localhost 2>/dev/null"
                             "; printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext"
                             "; openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
                             "-CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null"
                             "; openssl req -newkey rsa:2048 -nodes -keyout client.key -out "
                             "client.csr -subj /CN=sdgraph-test-client 2>/dev/null"
                             "; openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
                             "-CAcreateserial -out client.pem -days 2 2>/dev/null";
  auto r = RunCommand("sh -c " + Quote(script));
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(WorkerProtocolTest, MutualTlsRefusesPlaintextAndClientsWithoutCertificates) {
  TempDir d;
  MakeCertificates(d);
  WorkerProcess w;
  ASSERT_TRUE(w.Start(dir_->File("models"), d.File("w.log"),
                      {"--tls-cert", d.File("server.pem"), "--tls-key", d.File("server.key"),
                       "--tls-client-ca", d.File("ca.pem"), "--preload", "tiny"}));
  grpc::SslCredentialsOptions with_cert{ReadFile(d.File("ca.pem")), ReadFile(d.File("client.key")),
                                        ReadFile(d.File("client.pem"))};
  grpc::SslCredentialsOptions no_cert{ReadFile(d.File("ca.pem")), "", ""};
  Client good(w.target(), grpc::SslCredentials(with_cert), "localhost");
  Client anonymous(w.target(), grpc::SslCredentials(no_cert), "localhost");
  Client plain(w.target());
  EXPECT_EQ(plain.Live("").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(anonymous.Live("").error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(good.Live("").ok());
  ModelInferResponse out;
  EXPECT_TRUE(good.Infer(UNetRequest(), &out, "").ok());
  // The whole pipeline over mutual TLS.
  auto r =
      RunCommand(SdGraphBin() + " txt2img --model tiny --workers " + w.target() + " --tls-ca " +
                 Quote(d.File("ca.pem")) + " --tls-cert " + Quote(d.File("client.pem")) +
                 " --tls-key " + Quote(d.File("client.key")) +
                 " --prompt tls --steps 2 --width 64 --height 64 -o " + Quote(d.File("tls.png")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(d.File("tls.png")));
  ASSERT_TRUE(good.Live("").ok());
}

// Every call carries the sha256 the caller expects; a worker whose file under that name has other
// bytes (here: swapped while the worker runs, before it loaded it) answers FAILED_PRECONDITION, so
// a pool takes it out instead of computing with the wrong model.
TEST_F(WorkerProtocolTest, ExpectedModelHashIsCheckedOnEveryCall) {
  Client c(worker_->target());
  v1::LoadModelResponse loaded;
  ASSERT_TRUE(c.Load("tiny", &loaded).ok());
  const std::string hash = loaded.sha256();
  ModelInferRequest right = UNetRequest();
  (*right.mutable_parameters())["sha256"].set_string_param(hash);
  ModelInferResponse out;
  EXPECT_TRUE(c.Infer(right, &out).ok());

  TempDir d;
  std::filesystem::create_directories(d.File("models"));
  std::filesystem::copy_file(dir_->File("models/tiny.safetensors"),
                             d.File("models/tiny.safetensors"));
  WorkerProcess w;
  ASSERT_TRUE(w.Start(d.File("models"), d.File("w.log")));
  // Swap the file (as a deploy that renames a new file into place would), then call.
  std::filesystem::copy_file(dir_->File("models/tiny9.safetensors"), d.File("models/new.tmp"));
  std::filesystem::rename(d.File("models/new.tmp"), d.File("models/tiny.safetensors"));
  Client other(w.target());
  grpc::Status s = other.Infer(right, &out, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("the caller expects " + hash), std::string::npos)
      << s.error_message();
}

// A bearer token in plaintext: the worker warns at start and sd-graph warns when it sends one;
// --require-tls makes both refuse.
TEST_F(WorkerProtocolTest, TokenOverPlaintextWarnsAndRequireTlsRefuses) {
  EXPECT_FALSE(worker_->Events("token_over_plaintext").empty())
      << "the fixture's worker has a token";
  TempDir d;
  WorkerProcess strict;
  EXPECT_FALSE(strict.Start(dir_->File("models"), d.File("strict.log"), {"--require-tls"}))
      << "a worker with --require-tls and no certificate must not start";
  EXPECT_NE(ReadFile(d.File("strict.log")).find("this worker does not serve plaintext"),
            std::string::npos)
      << ReadFile(d.File("strict.log"));

  const std::string base = SdGraphBin() + " txt2img --model tiny --workers " + worker_->target() +
                           " --token-file " + Quote(dir_->File("token")) +
                           " --prompt p --steps 1 --width 64 --height 64 -o " +
                           Quote(d.File("p.png"));
  auto r = RunCommand(base);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("the bearer token goes to the workers in plaintext"), std::string::npos)
      << r.err;
  r = RunCommand(base + " --require-tls");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--require-tls"), std::string::npos) << r.err;
}

// ---- an outside client
// ------------------------------------------------------------------------------

TEST_F(WorkerProtocolTest, PythonClientGeneratedFromTheProtoCallsUNetStep) {
  TempDir d;
  auto gen =
      RunCommand("protoc -I " + Quote(SD_TEST_PROTO_DIR) + " --python_out=" + Quote(d.path()) +
                 " --grpc_python_out=" + Quote(d.path()) +
                 " --plugin=protoc-gen-grpc_python=$(command -v grpc_python_plugin) " +
                 Quote(std::string(SD_TEST_PROTO_DIR) + "/inference/grpc_service.proto"));
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  auto r = RunCommand(std::string(SD_TEST_PYTHON) + " " + Quote(PythonDir() + "/kserve_client.py") +
                      " " + Quote(d.path()) + " " + worker_->target() + " " + kToken + " " +
                      Quote(d.File("eps.bin")));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("eps FP32 [1, 4, 8, 8]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no token: UNAUTHENTICATED"), std::string::npos) << r.out;
  // The same request from our own client: the same bytes back.
  ModelInferRequest req;
  ASSERT_TRUE(req.ParseFromString(ReadFile(d.File("eps.bin.request"))));
  ModelInferResponse out;
  ASSERT_TRUE(Client(worker_->target()).Infer(req, &out).ok());
  EXPECT_EQ(ReadFile(d.File("eps.bin")), out.raw_output_contents(0))
      << "the Python client got other bytes";
}

}  // namespace
}  // namespace sd::testing
