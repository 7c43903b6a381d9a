// The memory layout the VAE decoder's fp32 convolutions run in on a CPU. oneDNN's convolutions of
// the decoder's up-block shapes (128-512 channels at 64x64 to 512x512) are 5-33% faster on
// channels-last (NHWC) tensors on AVX-512 CPUs, and 10-75% slower on AVX2-only CPUs, where its
// NCHW kernels are the fast ones; and only NCHW inputs can take Winograd convolutions
// (winograd_conv.h). So the layout is measured, not read from CPU flags: kAuto (the default) times
// convolutions of two decoder-like shapes in each layout once per process (about 0.2 s; NCHW by
// Winograd where the decoder would run them that way) and picks channels-last only where it ran
// faster. SD_CPU_CONV_LAYOUT=nchw|nhwc|auto overrides the default.
#pragma once

namespace sd::nn {

enum class ConvLayout { kAuto, kNchw, kNhwc };

// Sets the layout, over SD_CPU_CONV_LAYOUT; kAuto clears it (SD_CPU_CONV_LAYOUT again, else
// measured).
void SetVaeConvLayout(ConvLayout layout);
// The layout in force (set, else SD_CPU_CONV_LAYOUT, else kAuto), resolved to kNchw or kNhwc.
ConvLayout ResolvedVaeConvLayout();
// How many times faster channels-last ran than NCHW in kAuto's measurement (< 1: slower).
// Measured once per machine (cpu_choice.h).
double MeasuredChannelsLastSpeedup();
// Its name in the measurement file.
inline constexpr char kChannelsLastMeasurement[] = "vae channels-last speedup";

const char* ConvLayoutName(ConvLayout layout);  // "nchw", "nhwc", "auto"

}  // namespace sd::nn
