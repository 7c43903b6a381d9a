#include "tools/train/caption_heads.h"

#include <numeric>

namespace sd::train {

CaptionHeadsImpl::CaptionHeadsImpl(int64_t width) {
  const int64_t classes =
      std::accumulate(demo::kStatedClasses.begin(), demo::kStatedClasses.end(), int64_t{0});
  linear_ = register_module("linear", torch::nn::Linear(width, classes));
}

torch::Tensor CaptionHeadsImpl::Loss(const torch::Tensor& context, const torch::Tensor& stated,
                                     const torch::Tensor& first_rows) {
  const int64_t batch = context.size(0), rows = context.size(1);
  const torch::Tensor logits = linear_->forward(context);  // [B, L, sum of classes]
  torch::Tensor nll = torch::zeros({batch, rows}, context.options());
  int64_t offset = 0;
  for (size_t a = 0; a < demo::kStatedClasses.size(); ++a) {
    const int64_t classes = demo::kStatedClasses[a];
    const torch::Tensor logp = torch::log_softmax(logits.narrow(2, offset, classes), 2);
    const torch::Tensor label =
        stated.select(1, static_cast<int64_t>(a)).view({batch, 1, 1}).expand({batch, rows, 1});
    nll = nll - logp.gather(2, label).squeeze(2);
    offset += classes;
  }
  const torch::Tensor row = torch::arange(rows, torch::kInt64).view({1, rows});
  const torch::Tensor mask = (row >= first_rows.view({batch, 1})).to(context.scalar_type());
  const double attributes = static_cast<double>(demo::kStatedClasses.size());
  return (nll * mask).sum() / (mask.sum().clamp_min(1.0) * attributes);
}

torch::Tensor StatedTensor(const std::vector<demo::Stated>& stated) {
  const int64_t n = static_cast<int64_t>(stated.size());
  const int64_t k = static_cast<int64_t>(demo::kStatedClasses.size());
  torch::Tensor t = torch::empty({n, k}, torch::kInt64);
  auto out = t.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t a = 0; a < k; ++a)
      out[i][a] = stated[static_cast<size_t>(i)][static_cast<size_t>(a)];
  }
  return t;
}

}  // namespace sd::train
