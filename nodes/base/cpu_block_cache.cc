#include "nodes/base/cpu_block_cache.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace sd {
namespace {

constexpr size_t kLargeBytes = size_t{1} << 20;  // smaller blocks come from malloc
constexpr size_t kGranule = size_t{2} << 20;     // large blocks: whole (huge) pages
constexpr size_t kAlignment = 64;                // what LibTorch's own CPU allocator gives
// Large allocations per window of the bound (a CFG step at 512x512 makes about 400, a VAE decode
// about 200): blocks needed only while models were built are let go within two windows.
constexpr uint64_t kWindow = 256;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// A mapping of `bytes` (a multiple of kGranule) at a kGranule-aligned address, or nullptr.
void* MapAligned(size_t bytes, bool huge_pages) {
  const size_t span = bytes + kGranule;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(start, kGranule);
  if (aligned > start) ::munmap(raw, aligned - start);
  const size_t tail = start + span - (aligned + bytes);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  void* block = reinterpret_cast<void*>(aligned);
  if (huge_pages) (void)::madvise(block, bytes, MADV_HUGEPAGE);  // a hint: refused is fine
  return block;
}

// Whether the kernel gives transparent huge pages to a mapping that asks (THP "always" or
// "madvise"). Without them the bounded cache maps and unmaps too often to pay (measured: a CFG
// step 15.4 s with LibTorch's allocator, 17.7 s with the cache on 4 KB pages, 8.8 s on huge pages).
bool HugePagesOnRequest() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(f, line);
  return line.find("[always]") != std::string::npos || line.find("[madvise]") != std::string::npos;
}

struct CachedBlock {
  void* ptr;
  size_t bytes;
};

class BlockCache {
 public:
  BlockCache(bool huge_pages, bool grow) : huge_pages_(huge_pages), grow_(grow) {}

  void* Allocate(size_t n) {
    if (n == 0) return nullptr;
    if (n < kLargeBytes) {
      void* p = nullptr;
      if (::posix_memalign(&p, kAlignment, n) != 0)
        TORCH_CHECK(false, "out of memory allocating ", n, " bytes");
      return p;
    }
    const size_t bytes = RoundUp(n, kGranule);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = TakeCached(bytes);
    if (p == nullptr && grow_) p = GrowCached(bytes);
    if (p == nullptr) p = MapNew(bytes);
    TORCH_CHECK(p != nullptr, "out of memory allocating ", n, " bytes (", live_ >> 20,
                " MB in use)");
    return p;
  }

  void Free(void* p) {
    if (p == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_blocks_.find(p);
      if (it != live_blocks_.end()) {
        cached_.push_back({p, it->second});
        cached_bytes_ += it->second;
        live_ -= it->second;
        live_blocks_.erase(it);
        return;
      }
    }
    std::free(p);
  }

  void ReleaseAll() {
    std::lock_guard<std::mutex> lock(mu_);
    while (!cached_.empty()) UnmapOldest();
    window_peak_ = last_window_peak_ = live_;
  }

  CpuBlockCacheStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {true,    live_,  cached_bytes_, std::max(window_peak_, last_window_peak_),
            reused_, grown_, mapped_,       unmapped_};
  }

 private:
  // The cached block that `fits` and that `better` prefers to every other that fits, taken out of
  // the cache; nullopt when none fits.
  template <typename Fits, typename Better>
  std::optional<CachedBlock> TakeOut(Fits fits, Better better) {
    auto best = cached_.end();
    for (auto it = cached_.begin(); it != cached_.end(); ++it) {
      if (fits(it->bytes) && (best == cached_.end() || better(it->bytes, best->bytes))) best = it;
    }
    if (best == cached_.end()) return std::nullopt;
    const CachedBlock b = *best;
    cached_.erase(best);
    cached_bytes_ -= b.bytes;
    return b;
  }

  // The smallest cached block of at least `bytes` and at most 1/8 more, taken out of the cache.
  void* TakeCached(size_t bytes) {
    const std::optional<CachedBlock> b =
        TakeOut([bytes](size_t n) { return n >= bytes && n <= bytes + bytes / 8; }, std::less<>());
    if (!b) return nullptr;
    Track(*b);
    ++reused_;
    Trim(0);
    return b->ptr;
  }

  // The largest cached block smaller than `bytes` (and at least half of it), grown to `bytes`: its
  // pages move to the head of a new mapping (mremap keeps them, huge pages included, as both ends
  // are 2 MB aligned), so only the tail is faulted in anew. Serves the sizes no other activation
  // has, e.g. a sub-pixel upsampling's phase output 4C(H+1)(W+1) beside its result's C(2H)(2W).
  void* GrowCached(size_t bytes) {
    const std::optional<CachedBlock> b =
        TakeOut([bytes](size_t n) { return n < bytes && n >= bytes / 2; }, std::greater<>());
    if (!b) return nullptr;
    Trim(bytes);  // b's pages stay mapped, to become part of the new block
    void* p = MapAligned(bytes, huge_pages_);
    const bool moved = p != nullptr && ::mremap(b->ptr, b->bytes, b->bytes,
                                                MREMAP_MAYMOVE | MREMAP_FIXED, p) != MAP_FAILED;
    if (!moved) {  // b goes; a mapping made is used as a new one, else MapNew tries harder
      ::munmap(b->ptr, b->bytes);
      ++unmapped_;
      if (p == nullptr) return nullptr;
    }
    Track({p, bytes});
    if (moved) {
      ++grown_;
    } else {
      ++mapped_;
    }
    return p;
  }

  // Unmaps cached blocks, oldest first, until live + cached + `extra` is within the recent peak of
  // live bytes (the larger of this window's and the last one's).
  void Trim(size_t extra) {
    const size_t bound = std::max({window_peak_, last_window_peak_, live_ + extra});
    while (!cached_.empty() && live_ + cached_bytes_ + extra > bound) UnmapOldest();
  }

  // Makes room under the bound, then maps a new block.
  void* MapNew(size_t bytes) {
    Trim(bytes);
    void* p = MapAligned(bytes, huge_pages_);
    if (p == nullptr && !cached_.empty()) {  // out of address space or memory: give back everything
      while (!cached_.empty()) UnmapOldest();
      p = MapAligned(bytes, huge_pages_);
    }
    if (p == nullptr) return nullptr;
    Track({p, bytes});
    ++mapped_;
    return p;
  }

  // A block handed out: counted live, and the window of recent large allocations moves on.
  void Track(const CachedBlock& b) {
    live_blocks_[b.ptr] = b.bytes;
    live_ += b.bytes;
    window_peak_ = std::max(window_peak_, live_);
    if (++allocations_ % kWindow == 0) {
      last_window_peak_ = window_peak_;
      window_peak_ = live_;
    }
  }

  void UnmapOldest() {
    const CachedBlock b = cached_.front();
    cached_.erase(cached_.begin());
    cached_bytes_ -= b.bytes;
    ::munmap(b.ptr, b.bytes);
    ++unmapped_;
  }

  const bool huge_pages_, grow_;
  std::mutex mu_;
  std::unordered_map<void*, size_t> live_blocks_;
  std::vector<CachedBlock> cached_;  // oldest first
  size_t live_ = 0, cached_bytes_ = 0;
  // The most live bytes within this window of kWindow large allocations, and within the last one.
  size_t window_peak_ = 0, last_window_peak_ = 0;
  uint64_t allocations_ = 0, reused_ = 0, grown_ = 0, mapped_ = 0, unmapped_ = 0;
};

BlockCache* g_cache = nullptr;  // never destroyed: tensors may be freed during exit

void Delete(void* p) { g_cache->Free(p); }

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = g_cache->Allocate(n);
    return {p, p, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }
};

}  // namespace

bool InstallCpuBlockCache() {
  static const bool installed = [] {
    const std::string mode =
        std::getenv("SD_CPU_BLOCK_CACHE") ? std::getenv("SD_CPU_BLOCK_CACHE") : "";
    if (mode == "0" || (mode.empty() && !HugePagesOnRequest())) return false;
    // SD_CPU_BLOCK_CACHE=flat: the cache without huge pages; =exact: no cached block grown (to
    // measure what each part brings).
    g_cache = new BlockCache(/*huge_pages=*/mode != "flat", /*grow=*/mode != "exact");
    static CachingAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
    return true;
  }();
  return installed;
}

void ReleaseCachedCpuBlocks() {
  if (g_cache != nullptr) g_cache->ReleaseAll();
}

CpuBlockCacheStats GetCpuBlockCacheStats() {
  return g_cache != nullptr ? g_cache->Stats() : CpuBlockCacheStats{};
}

}  // namespace sd
