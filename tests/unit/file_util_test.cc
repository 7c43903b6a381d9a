// Atomic writes (every file the project writes goes through WriteAtomically) and the shipped
// models found by name.
#include "nodes/base/file_util.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "nodes/base/install_dirs.h"
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

// An install tree: a binary in PREFIX/bin and the plugin in PREFIX/lib/gegl-0.4 both find
// PREFIX/share/sdgraph/WHAT; a folder without the probe file is passed over.
TEST(InstallDirsTest, BinaryAndPluginFindTheSharedData) {
  testing::TempDir d;
  const std::string prefix = d.File("prefix");
  std::filesystem::create_directories(prefix + "/bin");
  std::filesystem::create_directories(prefix + "/lib/gegl-0.4");
  std::filesystem::create_directories(prefix + "/share/sdgraph/graphs");
  std::filesystem::create_directories(prefix + "/share/sdgraph/clip-tokenizer");
  testing::WriteFile(prefix + "/share/sdgraph/clip-tokenizer/vocab.json", "{}");
  EXPECT_EQ(FindInstalledDir(prefix + "/bin", "clip-tokenizer", "vocab.json"),
            prefix + "/bin/../share/sdgraph/clip-tokenizer");
  EXPECT_EQ(FindInstalledDir(prefix + "/lib/gegl-0.4", "clip-tokenizer", "vocab.json"),
            prefix + "/lib/gegl-0.4/../../share/sdgraph/clip-tokenizer");
  EXPECT_EQ(FindInstalledDir(prefix + "/bin", "graphs", "txt2img.pbtxt"), "");
  EXPECT_EQ(FindInstalledDir("", "clip-tokenizer", "vocab.json"), "");
  EXPECT_EQ(InstalledDataDirs(prefix + "/bin", "graphs").size(), 2u);
}

}  // namespace
}  // namespace sd
