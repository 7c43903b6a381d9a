// Atomic writes (every file the project writes goes through WriteAtomically) and the shipped
// models found by name.
#include "nodes/base/file_util.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "nodes/weights/demo_model.h"
#include "tests/test_util.h"

namespace sd {
namespace {

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

TEST(WriteAtomicallyTest, ReplacesOnlyWhenTheWriteSucceedsAndLeavesNoTemporary) {
  testing::TempDir dir;
  const std::string path = dir.File("out.png");
  ASSERT_TRUE(WriteWholeFile(path, "old", "test").ok());
  std::string seen_tmp;
  // The temporary is beside the file and keeps its extension (image writers pick the format by it).
  absl::Status s = WriteAtomically(path, [&](const std::string& tmp) {
    seen_tmp = tmp;
    EXPECT_TRUE(WriteWholeFile(tmp, "half", "test").ok());
    return absl::DataLossError("the writer failed half way");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(std::filesystem::path(seen_tmp).parent_path(),
            std::filesystem::path(path).parent_path());
  EXPECT_EQ(std::filesystem::path(seen_tmp).extension(), ".png");
  EXPECT_EQ(*ReadWholeFile(path, "test"), "old");
  EXPECT_EQ(FilesIn(dir.path()), 1u);

  ASSERT_TRUE(WriteAtomically(path, [](const std::string& tmp) {
                return WriteWholeFile(tmp, "new", "test");
              }).ok());
  EXPECT_EQ(*ReadWholeFile(path, "test"), "new");
  EXPECT_EQ(FilesIn(dir.path()), 1u);
}

TEST(WriteAtomicallyTest, AFailedMoveIntoPlaceIsDataLossNamingTheFile) {
  testing::TempDir dir;
  const std::string path = dir.File("occupied");
  std::filesystem::create_directories(path + "/inside");  // a non-empty folder cannot be replaced
  absl::Status s = WriteAtomically(
      path, [](const std::string& tmp) { return WriteWholeFile(tmp, "bytes", "test"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_EQ(FilesIn(dir.path()), 0u);  // the temporary is gone
}

TEST(ShippedModelsTest, FoundByTheirFileNamesWhenNotAFileHere) {
  const std::string demo = ShippedPathOf(kDemoModelFile);
  ASSERT_FALSE(demo.empty());
  EXPECT_EQ(ShippedPathOf("sd-demo-shapes"), demo);
  const std::string canny = ShippedPathOf(kDemoControlNetFile);
  ASSERT_FALSE(canny.empty());
  EXPECT_TRUE(IsReadableFile(canny));
  EXPECT_EQ(ShippedPathOf("sd-demo-shapes-canny"), canny);
  EXPECT_EQ(ShippedPathOf("some-other.safetensors"), "");
  EXPECT_EQ(ResolveShippedName(kDemoControlNetFile), canny);
  EXPECT_EQ(ResolveShippedName("no-such-model.safetensors"), "no-such-model.safetensors");
  // A readable file of that name is the user's own.
  testing::TempDir dir;
  const std::string own = dir.File(kDemoControlNetFile);
  ASSERT_TRUE(WriteWholeFile(own, "x", "test").ok());
  EXPECT_EQ(ResolveShippedName(own), own);
}

}  // namespace
}  // namespace sd
