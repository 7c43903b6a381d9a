// The fixture of the sd-graph command-line tests (generate_cli_test.cc, model_files_cli_test.cc):
// a tiny checkpoint and its inpainting variant in a folder of the suite's own, the LoRA files of
// every family for it on demand, and a txt2img command line.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nodes/weights/sd_config.h"
#include "tests/test_util.h"

namespace sd::cli_test {

using testing::Quote;
using testing::RunCommand;

inline std::string Bin() { return SD_TEST_SDGRAPH_BIN; }

class GenerateCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new sd::testing::TempDir();
    model_ = dir_->File("tiny.safetensors");
    auto r = RunCommand(Bin() + " make-test-checkpoint --tiny " + Quote(model_));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = RunCommand(Bin() + " make-test-checkpoint --tiny --inpaint " +
                   Quote(dir_->File("tiny9.safetensors")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Txt2Img(const std::string& extra, const std::string& out) {
    return Bin() + " txt2img --model " + Quote(model_) + " --prompt 'a red fox' --steps 3 " +
           extra + " -o " + Quote(out);
  }
  // LoRA files of every family for the tiny model (lora_reference.py), made once: the folder.
  static std::string Loras() {
    const std::string lora_dir = dir_->File("loras");
    if (std::filesystem::exists(lora_dir + "/peft.safetensors")) return lora_dir;
    std::filesystem::create_directories(lora_dir);
    nlohmann::json cfg;
    cfg["num_res_blocks"] = SdConfig::Tiny().unet.num_res_blocks;
    std::vector<int> attention;
    for (bool a : SdConfig::Tiny().unet.attention) attention.push_back(a);
    cfg["attention"] = attention;
    std::vector<std::string> keys;
    for (const KeySpec& k : ExpectedKeys(SdConfig::Tiny())) keys.push_back(k.name);
    cfg["keys"] = keys;  // so the diffusers-named (PEFT) file patches the UNet too
    sd::testing::WriteFile(lora_dir + "/cfg.json", cfg.dump());
    EXPECT_EQ(
        std::system((sd::testing::PythonScript("lora_reference.py") + " make " + Quote(model_) +
                     " " + Quote(lora_dir + "/cfg.json") + " " + Quote(lora_dir) + " 0.7 0.4")
                        .c_str()),
        0);
    return lora_dir;
  }
  inline static sd::testing::TempDir* dir_ = nullptr;
  inline static std::string model_;
};

}  // namespace sd::cli_test
