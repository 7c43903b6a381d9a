// One fixture for the tests that need "a tiny checkpoint in a temp dir": per test suite, a fresh
// folder (dir_) holding tiny.safetensors, the sdgold-v1 weights at SdConfig::Tiny() (TinyPath()).
// Suites that need more files write them in their own SetUpTestSuite after calling this one's.
//
//   class MyTest : public testing::TinyCheckpointTest {};
//   TEST_F(MyTest, Loads) { ... Checkpoint::Open(TinyPath()) ... }
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "nodes/weights/sd_config.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd::testing {

class TinyCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(WriteTestCheckpoint(TinyPath(), TinyOptions()).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string TinyPath() { return dir_->File("tiny.safetensors"); }
  // What tiny.safetensors is written with; start from it for variants (another dtype, 9 channels).
  static TestCheckpointOptions TinyOptions() {
    TestCheckpointOptions o;
    o.config = SdConfig::Tiny();
    return o;
  }
  inline static TempDir* dir_ = nullptr;
};

}  // namespace sd::testing
