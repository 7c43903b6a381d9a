// Keeps every stock node kind linked in (static registration needs a reference, or the linker drops the
// object file of a kind nothing else calls).
#include "nodes/ops/node.h"

// clang-format off
#define SD_STOCK_NODES(X) \
  X(Tokenize) X(ClipEncode) X(Noise) X(Schedule) X(UNetStep) X(CfgCombine) X(SamplerStep) X(VaeDecode) \
  X(VaeEncode) X(AddNoise) X(ImageToTensor) X(TensorToImage) X(MaskToLatent) X(MaskImage) X(MaskBlend) \
  X(MaskComposite) X(TokenizePrompt) X(ApplyPromptWeights) \
  X(SigmaSchedule) X(SigmaStart) X(SigmaStep) X(SigmaEnd) X(EmptyLatent) X(LatentUpscale) X(ImageScale) \
  X(ImageInvert) X(NoiseMaskIn) X(NoiseMaskOut) X(InpaintPrepare) X(MaskInvert) \
  X(TensorToImages) X(BatchSelect) X(BatchRepeat) X(ControlNet) X(ControlHint) X(Canny) X(ApplyLora) X(ApplyVae)
// clang-format on

namespace sd {

#define SD_DECLARE(Class) extern const bool sd_node_registered_##Class;
SD_STOCK_NODES(SD_DECLARE)
#undef SD_DECLARE

std::vector<std::string> StockNodeKinds() {
  std::vector<std::string> names;
#define SD_NAME(Class) \
  if (sd_node_registered_##Class) names.push_back(#Class);
  SD_STOCK_NODES(SD_NAME)
#undef SD_NAME
  return names;
}

}  // namespace sd
