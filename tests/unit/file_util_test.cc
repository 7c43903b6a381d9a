// Atomic writes (every file the project writes goes through WriteAtomically) and the shipped
// models found by name.
#include "nodes/base/file_util.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

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
  const std::string inpaint = ShippedPathOf(kDemoInpaintModelFile);
  ASSERT_FALSE(inpaint.empty());
  EXPECT_TRUE(IsReadableFile(inpaint));
  EXPECT_EQ(ShippedPathOf("sd-demo-shapes-inpainting"), inpaint);
  EXPECT_EQ(ShippedPathOf("some-other.safetensors"), "");
  EXPECT_EQ(ResolveShippedName(kDemoControlNetFile), canny);
  EXPECT_EQ(ResolveShippedName("no-such-model.safetensors"), "no-such-model.safetensors");
  // A readable file of that name is the user's own.
  testing::TempDir dir;
  const std::string own = dir.File(kDemoControlNetFile);
  ASSERT_TRUE(WriteWholeFile(own, "x", "test").ok());
  EXPECT_EQ(ResolveShippedName(own), own);
}

// Sets (or, with nullptr, unsets) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (saved_)
      ::setenv(name_, saved_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

// With no model named, inpainting runs the demo inpainting model (by its file name on workers); a
// demo model chosen by $SDGRAPH_DEMO_MODEL stands for both unless $SDGRAPH_DEMO_INPAINT_MODEL says
// otherwise.
TEST(ShippedModelsTest, InpaintingDefaultsToTheDemoInpaintingModel) {
  ScopedEnv no_demo("SDGRAPH_DEMO_MODEL", nullptr),
      no_inpaint("SDGRAPH_DEMO_INPAINT_MODEL", nullptr);
  EXPECT_EQ(DefaultModel(/*on_workers=*/true, "", /*inpainting=*/true), kDemoInpaintModelFile);
  EXPECT_EQ(DefaultModel(/*on_workers=*/true), kDemoModelFile);
  EXPECT_EQ(DefaultModel(false, "", true), ShippedPathOf(kDemoInpaintModelFile));
  EXPECT_EQ(DefaultModel(false), ShippedPathOf(kDemoModelFile));
  testing::TempDir dir;
  const std::string mine = dir.File("mine.safetensors"), mine9 = dir.File("mine9.safetensors");
  ASSERT_TRUE(WriteWholeFile(mine, "x", "test").ok());
  ASSERT_TRUE(WriteWholeFile(mine9, "x", "test").ok());
  {
    ScopedEnv demo("SDGRAPH_DEMO_MODEL", mine.c_str());
    EXPECT_EQ(DefaultModel(false, "", true), mine);
    ScopedEnv inpaint("SDGRAPH_DEMO_INPAINT_MODEL", mine9.c_str());
    EXPECT_EQ(DefaultModel(false, "", true), mine9);
    EXPECT_EQ(DefaultModel(false), mine);
  }
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
