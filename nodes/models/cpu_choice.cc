#include "nodes/models/cpu_choice.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace sd::nn {

int ChoiceInForce(int set, const char* env,
                  std::initializer_list<std::pair<const char*, int>> words) {
  if (set >= 0) return set;
  const char* value = std::getenv(env);
  if (!value) return -1;
  for (const auto& [word, choice] : words) {
    if (std::strcmp(value, word) == 0) return choice;
  }
  return -1;
}

double FasterOfTwoRuns(const std::function<void()>& f) {
  auto seconds = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double first = seconds();
  return std::min(first, seconds());
}

}  // namespace sd::nn
