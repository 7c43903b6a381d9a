// Caption heads: a training aid that makes the text encoder carry everything a caption states into
// every row after the caption. Never exported; the shipped model is the plain CLIP and UNet.
//
// Trained by the diffusion loss alone, the text encoder learns first what pays at once: a colour
// word shifts every pixel, so its rows move apart within a hundred steps. A position word pays only
// once the UNet has position-dependent features that read it, and such features pay nothing while
// the rows of "on the left" and "on the right" are nearly equal: joint training stayed at that
// saddle (from scratch, position alone, 1800 steps: left and right changed the predicted picture
// by 0.0001 of its error). These heads are linear classifiers over the text encoder's rows from the
// caption's end token on (the rows that have seen the whole caption), one per stated attribute
// (demo::StatedBy). Their cross-entropy, added to the diffusion loss, makes those rows differ by
// every stated word; in the same run the UNet then learnt the position within 100 steps.
//
//   CaptionHeads heads(config.clip.width);
//   loss = eps_loss + weight * heads->Loss(context, stated, first_rows);
#pragma once

#include <torch/torch.h>

#include <vector>

#include "tools/train/shapes_dataset.h"

namespace sd::train {

class CaptionHeadsImpl : public torch::nn::Module {
 public:
  explicit CaptionHeadsImpl(int64_t width);
  // Mean over the attributes of each head's cross-entropy, averaged over the rows of `context`
  // ([B, L, width]) from `first_rows[b]` (int64 [B]) to L - 1; `stated` is int64 [B, 5]
  // (demo::Stated). A scalar.
  torch::Tensor Loss(const torch::Tensor& context, const torch::Tensor& stated,
                     const torch::Tensor& first_rows);

 private:
  torch::nn::Linear linear_{nullptr};
};
TORCH_MODULE(CaptionHeads);

// `stated` as an int64 [B, 5] tensor.
torch::Tensor StatedTensor(const std::vector<demo::Stated>& stated);

}  // namespace sd::train
