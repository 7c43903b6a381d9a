// The CPU block cache (nodes/base/cpu_block_cache.h) as LibTorch's CPU allocator: freed large
// blocks come back for the next allocation of their size, and live + cached bytes stay within the
// recent peak of live bytes.
#include "nodes/base/cpu_block_cache.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>

namespace sd {
namespace {

constexpr int64_t kMB = int64_t{1} << 20;

class CpuBlockCacheTest : public ::testing::Test {
 protected:
  // Installed whatever the kernel's huge-page setting (which only decides the default).
  static void SetUpTestSuite() {
    ::setenv("SD_CPU_BLOCK_CACHE", "1", 1);
    InstallCpuBlockCache();
  }

  void SetUp() override {
    ASSERT_TRUE(GetCpuBlockCacheStats().installed);
    ReleaseCachedCpuBlocks();  // no blocks from another test; the bound starts at what is live now
  }

  // A float tensor of `mb` megabytes, written so that its pages are really used.
  static torch::Tensor Block(int64_t mb, float value = 1.0f) {
    return torch::full({mb * kMB / 4}, value, torch::kFloat32);
  }
};

TEST_F(CpuBlockCacheTest, AFreedBlockServesTheNextAllocationOfItsSize) {
  torch::Tensor a = Block(16);
  const void* first = a.data_ptr();
  a = torch::Tensor();
  EXPECT_EQ(GetCpuBlockCacheStats().cached_bytes, uint64_t{16 * kMB});
  const uint64_t reused = GetCpuBlockCacheStats().reused;
  torch::Tensor b = Block(16, 2.0f);
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(GetCpuBlockCacheStats().reused, reused + 1);
  EXPECT_EQ(GetCpuBlockCacheStats().cached_bytes, 0u);
  // The reused block holds what was written into it, not its old contents.
  EXPECT_EQ(b.sum().item<double>(), 2.0 * b.numel());
}

TEST_F(CpuBlockCacheTest, LargeBlocksAreAlignedToHugePagesAndSmallOnesToCacheLines) {
  torch::Tensor large = Block(3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data_ptr()) % (2 * kMB), 0u);
  const uint64_t live = GetCpuBlockCacheStats().live_bytes;
  torch::Tensor small = torch::ones({1000});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data_ptr()) % 64, 0u);
  EXPECT_EQ(GetCpuBlockCacheStats().live_bytes, live);  // from malloc, not the cache
  EXPECT_EQ(small.sum().item<double>(), 1000.0);
}

TEST_F(CpuBlockCacheTest, LiveAndCachedBytesStayWithinTheRecentPeak) {
  const CpuBlockCacheStats before = GetCpuBlockCacheStats();
  torch::Tensor a = Block(64), b = Block(64);  // the peak: 128 MB live
  a = torch::Tensor();
  b = torch::Tensor();
  EXPECT_EQ(GetCpuBlockCacheStats().cached_bytes, uint64_t{128 * kMB});
  // 256 MB fits no cached block, nor is any at least half of it: both go before it is mapped, as
  // 64 + 64 + 256 MB would exceed the 128 MB peak.
  torch::Tensor c = Block(256);
  const CpuBlockCacheStats s = GetCpuBlockCacheStats();
  EXPECT_EQ(s.unmapped, before.unmapped + 2);
  EXPECT_EQ(s.mapped, before.mapped + 3);
  EXPECT_EQ(s.live_bytes, before.live_bytes + 256 * kMB);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_LE(s.live_bytes + s.cached_bytes, s.bound_bytes);
  EXPECT_EQ(c.sum().item<double>(), static_cast<double>(c.numel()));
}

TEST_F(CpuBlockCacheTest, ASmallerFreedBlockIsGrownKeepingItsPages) {
  torch::Tensor a = Block(64, 5.0f), b = Block(64);
  const void* first = a.data_ptr();
  a = torch::Tensor();
  b = torch::Tensor();
  const CpuBlockCacheStats before = GetCpuBlockCacheStats();
  // 96 MB fits neither cached block (at most 1/8 larger than asked): the older 64 MB one is grown,
  // and the other goes, as 64 + 96 MB would exceed the 128 MB peak.
  torch::Tensor c = torch::empty({96 * kMB / 4}, torch::kFloat32);
  const CpuBlockCacheStats s = GetCpuBlockCacheStats();
  EXPECT_EQ(s.grown, before.grown + 1);
  EXPECT_EQ(s.mapped, before.mapped);
  EXPECT_EQ(s.unmapped, before.unmapped + 1);
  EXPECT_EQ(s.live_bytes, before.live_bytes + 96 * kMB);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_LE(s.live_bytes + s.cached_bytes, s.bound_bytes);
  // Its pages moved, not copied or faulted in anew: the head holds what the old block held, at a
  // new, huge-page aligned address; the tail is usable.
  EXPECT_NE(c.data_ptr(), first);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.data_ptr()) % (2 * kMB), 0u);
  EXPECT_EQ(c.narrow(0, 0, 64 * kMB / 4).sum().item<double>(), 5.0 * (64 * kMB / 4));
  c.narrow(0, 64 * kMB / 4, 32 * kMB / 4).fill_(3.0f);
  EXPECT_EQ(c.sum().item<double>(), 5.0 * (64 * kMB / 4) + 3.0 * (32 * kMB / 4));
}

TEST_F(CpuBlockCacheTest, ReleasingUnmapsEveryCachedBlock) {
  torch::Tensor a = Block(8), b = Block(24);
  a = torch::Tensor();
  b = torch::Tensor();
  EXPECT_EQ(GetCpuBlockCacheStats().cached_bytes, uint64_t{32 * kMB});
  ReleaseCachedCpuBlocks();
  EXPECT_EQ(GetCpuBlockCacheStats().cached_bytes, 0u);
}

TEST_F(CpuBlockCacheTest, ResultsDoNotDependOnWhatAReusedBlockHeld) {
  // The same convolution again and again, on blocks freed and handed out anew between the calls.
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({1, 64, 128, 128}), w = torch::randn({64, 64, 3, 3});
  const torch::Tensor want = torch::conv2d(x, w, {}, 1, 1).clone();
  for (int i = 0; i < 3; ++i) {
    Block(16, 1e30f);  // stale contents for the next block of this size
    const torch::Tensor y = torch::conv2d(x, w, {}, 1, 1);
    EXPECT_TRUE(torch::equal(y, want)) << "run " << i;
  }
}

}  // namespace
}  // namespace sd
