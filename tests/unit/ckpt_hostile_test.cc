// The .ckpt reader against a corpus of hostile and broken files (tests/python/write_hostile_ckpts.py):
// every one is rejected with a clear error, and no payload ever runs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/pickle.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

class HostileCkptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    canary_ = dir_->File("canary-pwned");
    auto r = testing::RunCommand(testing::PythonScript("write_hostile_ckpts.py") + " " +
                          testing::Quote(dir_->File("corpus")) + " " + testing::Quote(canary_));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static testing::TempDir* dir_;
  static std::string canary_;
};
testing::TempDir* HostileCkptTest::dir_;
std::string HostileCkptTest::canary_;

TEST_F(HostileCkptTest, EveryFileIsRejectedWithItsReasonAndNothingRuns) {
  nlohmann::json expected = nlohmann::json::parse(testing::ReadFile(dir_->File("corpus/expected.json")));
  ASSERT_GE(expected.size(), 35u);
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    const std::string path = dir_->File("corpus/" + it.key() + ".ckpt");
    auto c = Checkpoint::Open(path);
    ASSERT_FALSE(c.ok()) << it.key() << " was accepted";
    EXPECT_EQ(absl::StatusCodeToString(c.status().code()), it.value()["code"].get<std::string>())
        << it.key() << ": " << c.status();
    const std::string msg(c.status().message());
    EXPECT_THAT(msg, HasSubstr(it.value()["error"].get<std::string>())) << it.key();
    EXPECT_THAT(msg, HasSubstr(path)) << it.key() << ": the error must name the file";
  }
  EXPECT_FALSE(std::filesystem::exists(canary_)) << "a payload ran";
}

TEST_F(HostileCkptTest, ForbiddenGlobalErrorSaysWhy) {
  auto c = Checkpoint::Open(dir_->File("corpus/global_os_system.ckpt"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("refusing global os.system"));
}

// Direct unpickler checks on hand-assembled bytes.
absl::StatusOr<PVal> U(const std::string& bytes) {
  return Unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr, "test.pkl");
}

std::string B(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

// BINUNICODE
std::string Str(const std::string& text) {
  return "X" + B({static_cast<int>(text.size()), 0, 0, 0}) + text;
}

const std::string kProto2 = B({0x80, 2});

TEST(UnpicklerTest, ReadsPlainValuesMemoAndNegativeLongs) {
  // {'a': 1, 'b': [-2, 'x', None, True], 'c': 2.5, 'd': -300, 'e': memo copy of 'b'}
  const std::string p = kProto2 + "}" + "q" + B({0}) + "(" + Str("a") + "K" + B({1}) + Str("b") + "]" + "q" +
                        B({1}) + "(" + "J" + B({0xfe, 0xff, 0xff, 0xff}) + Str("x") + "N" + B({0x88}) + "e" +
                        Str("c") + "G" + B({0x40, 0x04, 0, 0, 0, 0, 0, 0}) + Str("d") + B({0x8a, 2, 0xd4, 0xfe}) +
                        Str("e") + "h" + B({1}) + "u.";
  auto v = U(p);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ((*v)->kind, PickleValue::Kind::kDict);
  EXPECT_EQ((*v)->Get("a")->i, 1);
  ASSERT_EQ((*v)->Get("b")->items.size(), 4u);
  EXPECT_EQ((*v)->Get("b")->items[0]->i, -2);
  EXPECT_EQ((*v)->Get("b")->items[1]->str, "x");
  EXPECT_EQ((*v)->Get("b")->items[2]->kind, PickleValue::Kind::kNone);
  EXPECT_TRUE((*v)->Get("b")->items[3]->b);
  EXPECT_EQ((*v)->Get("c")->f, 2.5);
  EXPECT_EQ((*v)->Get("d")->i, -300);
  EXPECT_EQ((*v)->Get("e")->items.size(), 4u);
}

TEST(UnpicklerTest, UnknownGlobalsAreOpaqueNeverCalled) {
  // {'cb': pytorch_lightning.callbacks.ModelCheckpoint() with BUILD state}
  const std::string p = kProto2 + "}(" + Str("cb") + "cpytorch_lightning.callbacks\nModelCheckpoint\n)" +
                        B({0x81}) + "}" + Str("k") + "K" + B({1}) + "sbu.";
  auto v = U(p);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->Get("cb")->Describe(), "object of class pytorch_lightning.callbacks.ModelCheckpoint");
}

TEST(UnpicklerTest, RejectsTruncationUnderflowAndUnknownProtocols) {
  EXPECT_THAT(std::string(U(kProto2 + "X" + B({0xff, 0, 0, 0}) + "ab").status().message()),
              HasSubstr("runs past the end"));
  EXPECT_THAT(std::string(U(kProto2 + "s.").status().message()), HasSubstr("underflow"));
  EXPECT_THAT(std::string(U(B({0x80, 9}) + "N.").status().message()), HasSubstr("protocol 9"));
  EXPECT_THAT(std::string(U(kProto2 + "NN.").status().message()), HasSubstr("not one value"));
  EXPECT_THAT(std::string(U("").status().message()), HasSubstr("no STOP"));
}

TEST(UnpicklerTest, QuadraticSetItemOnMemoizedDictIsBounded) {
  // EMPTY_DICT, BINPUT, then many SETITEMs on the memoized dict. While the memo and the stack both
  // hold it, each SETITEM copies it (copy on write): 200000 of them would be quadratic in time and
  // memory. The copies are charged to the object budget, which refuses the pickle first.
  std::string p = kProto2 + "}q" + B({0});
  for (int i = 0; i < 200000; ++i) p += "K" + B({1}) + "K" + B({2}) + "s";
  p += ".";
  auto v = U(p);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("budget of 256 MiB"));

  // The same dict filled without the memo grows in place: accepted, every item kept.
  std::string q = kProto2 + "}";
  for (int i = 0; i < 200000; ++i) q += "K" + B({1}) + "K" + B({2}) + "s";
  q += ".";
  auto w = U(q);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->dict.size(), 200000u);
}

TEST(UnpicklerTest, ObjectBudgetRefusesMemoryBombsAndNamesTheBudget) {
  const std::string lists = kProto2 + std::string(100000, ']') + ".";
  UnpickleLimits small;
  small.max_object_bytes = 4 << 20;  // 100000 lists take ~30 MB
  auto v = Unpickle(reinterpret_cast<const uint8_t*>(lists.data()), lists.size(), nullptr,
                    "bomb.pkl", small);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("budget of 4 MiB"));
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("bomb.pkl"));
  // A pickle within the budget is unaffected by it.
  const std::string few = kProto2 + "]]]]000.";
  auto ok =
      Unpickle(reinterpret_cast<const uint8_t*>(few.data()), few.size(), nullptr, "ok.pkl", small);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->kind, PickleValue::Kind::kList);
}

}  // namespace
}  // namespace sd
