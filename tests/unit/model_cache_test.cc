// ModelCache loads outside its lock: while one checkpoint is being read and its network built,
// calls on networks already built go on, and a second call for the same network waits for that one
// load instead of starting another. Synchronised through the cache's load hook, not sleeps: if the
// lock were held during the load, GetUnet on the other model would block and the test would hang.
#include "nodes/ops/model_cache.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "nodes/weights/embeddings.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd {
namespace {

TEST(ModelCacheTest, LoadsOutsideTheLockOnceForConcurrentCallers) {
  testing::TempDir dir;
  TestCheckpointOptions o;
  o.config = SdConfig::Tiny();
  const std::string ready = dir.File("ready.safetensors"), slow = dir.File("slow.safetensors");
  ASSERT_TRUE(WriteTestCheckpoint(ready, o).ok());
  o.config = SdConfig::Tiny();
  o.config.unet.in_channels = 9;  // another file, another hash: the 9-channel inpainting variant
  ASSERT_TRUE(WriteTestCheckpoint(slow, o).ok());

  ModelCache cache;
  auto first = cache.GetUnet(ready, torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(first.ok()) << first.status();

  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> slow_opens{0}, slow_builds{0};
  cache.SetLoadHook([&](const std::string& what) {
    if (!absl::StrContains(what, "slow.safetensors")) return;
    if (absl::StrContains(what, ":unet")) {
      ++slow_builds;
      return;
    }
    if (slow_opens++ == 0) {
      entered.set_value();
      released.wait();  // hold the first open of the slow checkpoint until the test lets it go
    }
  });

  std::promise<const void*> got1, got2;
  std::thread t1([&] {
    auto m = cache.GetUnet(slow, torch::kFloat32, torch::kCPU);
    got1.set_value(m.ok() ? m->ptr().get() : nullptr);
  });
  entered.get_future().wait();  // t1 is inside the load now
  std::thread t2([&] {
    auto m = cache.GetUnet(slow, torch::kFloat32, torch::kCPU);
    got2.set_value(m.ok() ? m->ptr().get() : nullptr);
  });

  // With the slow load in progress, the built network is served at once.
  auto again = cache.GetUnet(ready, torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ptr().get(), first->ptr().get());

  release.set_value();
  const void* a = got1.get_future().get();
  const void* b = got2.get_future().get();
  t1.join();
  t2.join();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b) << "both callers share the one network";
  EXPECT_EQ(slow_opens.load(), 1) << "the second caller waited for the first's load";
  EXPECT_EQ(slow_builds.load(), 1);
  EXPECT_EQ(cache.GetStats().networks, 2u);
}

// An embeddings folder is listed once, and again once a file is added (the folder's time changes).
TEST(ModelCacheTest, EmbeddingsFolderIsListedOnceWhileUnchanged) {
  testing::TempDir dir;
  const std::vector<float> v(2 * 8, 0.5f);
  auto write = [&](const std::string& name) {
    ASSERT_TRUE(WriteSafetensors(dir.File(name),
                                 {{"emb_params", DType::kF32, {2, 8}, v.data(), v.size() * 4, {}}})
                    .ok());
  };
  write("one.safetensors");
  ModelCache cache;
  auto a = cache.Embeddings(dir.path());
  auto b = cache.Embeddings(dir.path());
  ASSERT_TRUE(a.ok() && b.ok()) << a.status();
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ((*a)->Names(), std::vector<std::string>({"one"}));
  // Directory times have a resolution: wait until a new entry is sure to change it.
  const auto before = std::filesystem::last_write_time(dir.path());
  do {
    std::filesystem::remove(dir.File("two.safetensors"));
    write("two.safetensors");
  } while (std::filesystem::last_write_time(dir.path()) == before);
  auto c = cache.Embeddings(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(c->get(), a->get());
  EXPECT_EQ((*c)->Names(), std::vector<std::string>({"one", "two"}));
  EXPECT_EQ(cache.Embeddings(dir.File("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelCacheTest, AFailedLoadIsReportedToEveryWaiterAndCanBeRetried) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("junk.safetensors"), "not a checkpoint");
  ModelCache cache;
  auto a = cache.GetUnet(dir.File("junk.safetensors"), torch::kFloat32, torch::kCPU);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string(a.status().message()).find("junk.safetensors"), std::string::npos);
  TestCheckpointOptions o;
  o.config = SdConfig::Tiny();
  ASSERT_TRUE(WriteTestCheckpoint(dir.File("junk.safetensors"), o).ok());
  EXPECT_TRUE(cache.GetUnet(dir.File("junk.safetensors"), torch::kFloat32, torch::kCPU).ok())
      << "a failure is not cached";
}

}  // namespace
}  // namespace sd
