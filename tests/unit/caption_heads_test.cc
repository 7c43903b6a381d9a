// sd-train's caption heads (tools/train/caption_heads.h): their loss reads only the rows from each
// caption's end token on, averages the attributes' cross-entropies, and can be driven to zero by
// rows that carry what the captions state.
#include "tools/train/caption_heads.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

namespace sd::train {
namespace {

constexpr int64_t kRows = 12;

std::vector<demo::Stated> SomeStated() {
  return {{0, 3, 1, 0, 1}, {7, 8, 3, 2, 5}, {8, 8, 3, 1, 0}, {4, 2, 0, 1, 3}};
}

// Rows that say the labels outright: one-hot codes of every attribute, side by side.
torch::Tensor OneHotRows(const std::vector<demo::Stated>& stated) {
  const int64_t width =
      std::accumulate(demo::kStatedClasses.begin(), demo::kStatedClasses.end(), int64_t{0});
  torch::Tensor rows = torch::zeros({static_cast<int64_t>(stated.size()), kRows, width});
  for (size_t b = 0; b < stated.size(); ++b) {
    int64_t offset = 0;
    for (size_t a = 0; a < demo::kStatedClasses.size(); ++a) {
      rows[static_cast<int64_t>(b)].select(1, offset + stated[b][a]).fill_(1.0);
      offset += demo::kStatedClasses[a];
    }
  }
  return rows;
}

TEST(CaptionHeadsTest, UninformedHeadsCostTheMeanLogOfTheClassCounts) {
  CaptionHeads heads(16);
  torch::NoGradGuard no_grad;
  for (auto& p : heads->parameters()) p.zero_();
  const auto stated = SomeStated();
  const torch::Tensor first = torch::tensor({3, 5, 1, 11}, torch::kInt64);
  const double loss =
      heads->Loss(torch::randn({4, kRows, 16}), StatedTensor(stated), first).item<double>();
  double want = 0;
  for (int c : demo::kStatedClasses) want += std::log(static_cast<double>(c));
  EXPECT_NEAR(loss, want / demo::kStatedClasses.size(), 1e-5);
}

TEST(CaptionHeadsTest, OnlyRowsFromTheEndTokenOnCount) {
  torch::manual_seed(4);
  CaptionHeads heads(16);
  torch::NoGradGuard no_grad;
  const torch::Tensor stated = StatedTensor(SomeStated());
  const torch::Tensor first = torch::tensor({3, 5, 1, 11}, torch::kInt64);
  torch::Tensor context = torch::randn({4, kRows, 16});
  const double loss = heads->Loss(context, stated, first).item<double>();
  torch::Tensor before = context.clone();
  before[0].slice(0, 0, 3).normal_();  // rows of caption 0 before its end token
  before[3].slice(0, 0, 11).normal_();
  EXPECT_DOUBLE_EQ(heads->Loss(before, stated, first).item<double>(), loss);
  torch::Tensor after = context.clone();
  after[3][11].normal_();  // caption 3's only counted row
  EXPECT_NE(heads->Loss(after, stated, first).item<double>(), loss);
}

TEST(CaptionHeadsTest, RowsThatCarryTheCaptionDriveTheLossToZero) {
  torch::manual_seed(5);
  const auto stated = SomeStated();
  const torch::Tensor context = OneHotRows(stated);
  CaptionHeads heads(context.size(2));
  torch::optim::Adam opt(heads->parameters(), torch::optim::AdamOptions(0.1));
  const torch::Tensor first = torch::tensor({2, 4, 1, 6}, torch::kInt64);
  const torch::Tensor labels = StatedTensor(stated);
  const double start = heads->Loss(context, labels, first).item<double>();
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    heads->Loss(context, labels, first).backward();
    opt.step();
  }
  const double end = heads->Loss(context, labels, first).item<double>();
  EXPECT_GT(start, 0.5);
  EXPECT_LT(end, 0.02) << "from " << start;
}

}  // namespace
}  // namespace sd::train
