// The CPU code paths chosen by measurement (how bf16 weights compute, the VAE's convolution layout,
// Winograd convolutions) are each set in code, else by an environment variable, else measured once
// per process by timing both ways. These are the two pieces they share.
#pragma once

#include <functional>
#include <initializer_list>
#include <utility>

namespace sd::nn {

// `set` when it is >= 0 (set in code), else the value `words` gives the environment variable
// `env`'s word; -1 (measure) when it is unset or another word.
int ChoiceInForce(int set, const char* env,
                  std::initializer_list<std::pair<const char*, int>> words);

// The faster of two timed runs of `f`, in seconds.
double FasterOfTwoRuns(const std::function<void()>& f);

}  // namespace sd::nn
