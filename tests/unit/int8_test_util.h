// What the int8 layers' tests share (int8_conv_test, int8_linear_test).
#pragma once

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/test_util.h"

namespace sd::int8_test {

inline double RelL2(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).norm() / w.norm()).item<double>();
}

// Runs `forward` on each input from a single-threaded caller first (oneDNN sizes a kernel's
// scratch space for the threads it is made with), then with at least 4 OpenMP threads from two
// callers at once, four rounds each (each caller has its own scratch space): every result must
// equal the single-threaded one.
inline void ExpectSameResultsOnThreadsSideBySide(
    const std::function<torch::Tensor(const torch::Tensor&)>& forward,
    const std::vector<torch::Tensor>& inputs) {
  std::vector<torch::Tensor> alone;
  std::thread([&] {
    c10::InferenceMode thread_guard;
    at::set_num_threads(1);
    for (const torch::Tensor& x : inputs) alone.push_back(forward(x));
  }).join();
  const int threads = at::get_num_threads();
  at::set_num_threads(std::max(threads, 4));
  std::vector<std::vector<torch::Tensor>> together(2);
  std::vector<std::thread> callers;
  for (auto& results : together) {
    callers.emplace_back([&forward, &inputs, &results] {
      c10::InferenceMode thread_guard;
      for (int round = 0; round < 4; ++round) {
        for (const torch::Tensor& x : inputs) results.push_back(forward(x));
      }
    });
  }
  for (std::thread& t : callers) t.join();
  at::set_num_threads(threads);
  for (const auto& results : together) {
    ASSERT_EQ(results.size(), 4 * inputs.size());
    for (size_t i = 0; i < results.size(); ++i) {
      EXPECT_TRUE(torch::allclose(results[i], alone[i % inputs.size()], 1e-5, 1e-5)) << i;
    }
  }
}

// A safetensors file in `dir` holding `tensors` (name -> tensor) under the prefix "net.".
inline std::string WriteFile(const testing::TempDir& dir, const std::string& name,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::vector<TensorToWrite> writes;
  for (const auto& [key, t] : tensors) {
    auto w = ToWrite("net." + key, t);
    EXPECT_TRUE(w.ok()) << w.status();
    writes.push_back(*w);
  }
  const std::string path = dir.File(name);
  EXPECT_TRUE(WriteSafetensors(path, writes, {}).ok());
  return path;
}

}  // namespace sd::int8_test
