// LibTorch's CPU tensors from a cache of freed large blocks.
//
// A UNet step or a VAE decode at 512x512 allocates gigabytes of activations, each freed a moment
// later and then allocated again at the same size. glibc serves large blocks with a fresh mmap and
// returns them with munmap, so each activation's pages are faulted in anew: about 0.6 million page
// faults per CFG step, which cost as much as 40% of the step's time on a virtual machine. The cache
// keeps freed blocks of 1 MB and more mapped and hands them out again to an allocation of (about)
// the same size, or grows a smaller one to a size no freed block has (keeping its pages); its
// blocks are 2 MB aligned and advised as transparent huge pages, which cuts the faults of a block's
// first use 512-fold.
//
// Memory: live + cached bytes are kept within the largest live total of the last 256 to 512 large
// allocations (or live + new, when that is larger), unmapping cached blocks oldest first, so peak
// resident memory stays what it was without the cache (measured: slightly below). LoadWeights lets
// go of the blocks a module's parameters had before the checkpoint's replaced them.
//
// It is installed where the kernel grants huge pages on request (THP "always" or "madvise"): on
// 4 KB pages the blocks it maps and unmaps to stay within the bound cost more faults than it saves.
// SD_CPU_BLOCK_CACHE=0 leaves LibTorch's own allocator in place, =1 installs the cache regardless,
// =flat installs it without asking for huge pages, =exact without growing blocks (for comparing).
// Install it first thing in main(), before any tensor exists. Thread-safe.
#pragma once

#include <cstdint>

namespace sd {

// Makes the cache LibTorch's CPU allocator where it pays (above). Later calls do nothing. Returns
// whether the cache is in use.
bool InstallCpuBlockCache();

// Unmaps every cached block and restarts the bound from what is live now (e.g. once models are
// built, or when a job ends and the process waits for the next).
void ReleaseCachedCpuBlocks();

struct CpuBlockCacheStats {
  bool installed = false;
  uint64_t live_bytes = 0;    // large blocks held by tensors
  uint64_t cached_bytes = 0;  // large blocks freed and kept for reuse
  uint64_t bound_bytes = 0;   // live + cached stay within it: the recent peak of live bytes
  // Large allocations served from the cache as they were, from a smaller cached block grown (its
  // pages kept), and by a new mapping; cached blocks unmapped.
  uint64_t reused = 0, grown = 0, mapped = 0, unmapped = 0;
};
CpuBlockCacheStats GetCpuBlockCacheStats();

}  // namespace sd
