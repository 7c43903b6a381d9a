// The LoRA tests' bridge to tests/python/lora_reference.py: a configuration as the script reads it,
// and running it.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nodes/weights/sd_config.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd::testing {

// {"num_res_blocks", "attention", "keys"}: what the script builds diffusers' names from.
inline nlohmann::json LoraConfigJson(const SdConfig& c) {
  nlohmann::json j;
  j["num_res_blocks"] = c.unet.num_res_blocks;
  std::vector<int> attention;
  for (bool a : c.unet.attention) attention.push_back(a ? 1 : 0);
  j["attention"] = attention;
  std::vector<std::string> keys;
  for (const KeySpec& k : ExpectedKeys(c)) keys.push_back(k.name);
  j["keys"] = keys;
  return j;
}

// lora_reference.py ARGS; a failure fails the calling test.
inline void RunLoraReference(const std::string& args) {
  ASSERT_EQ(std::system((PythonScript("lora_reference.py") + " " + args).c_str()), 0) << args;
}

}  // namespace sd::testing
