// One build of a function per instruction set, chosen when the program loads (GCC target clones):
// AVX-512 (F, CD, BW, DQ, VL: Skylake-SP Xeons, Zen 4 and later EPYCs), AVX2, and plain x86-64. For
// element-wise loops that the compiler vectorizes itself. SD_ISA_CLONES_O3 also builds the
// function at -O3 (GCC vectorizes loops of unknown length only there) inside a file built at -O2.
// Other compilers and CPUs get a plain function.
#ifndef SD_NODES_KERNELS_ISA_CLONES_H_
#define SD_NODES_KERNELS_ISA_CLONES_H_

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SD_ISA_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#define SD_ISA_CLONES_O3 SD_ISA_CLONES __attribute__((optimize("O3")))
#else
#define SD_ISA_CLONES
#define SD_ISA_CLONES_O3
#endif

#endif  // SD_NODES_KERNELS_ISA_CLONES_H_
