#include "nodes/weights/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "nodes/base/sha256.h"
#include "nodes/weights/checkpoint.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file with the given header JSON and `data_bytes` bytes of data.
std::string File(const std::string& header, size_t data_bytes) {
  return Le64(header.size()) + header + std::string(data_bytes, '\x01');
}

absl::Status ParseBytes(const std::string& bytes) {
  return ParseSafetensors(MappedFile::FromBytes(bytes, "t.safetensors")).status();
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadataZeroCopy) {
  testing::TempDir dir;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f};
  const std::vector<int64_t> b = {7, -8};
  const uint16_t c[3] = {0x3c00, 0x4000, 0xbc00};
  std::vector<TensorToWrite> tensors = {
      {"a", DType::kF32, {2, 3}, a.data(), a.size() * 4, nullptr},
      {"b", DType::kI64, {2}, b.data(), 16, nullptr},
      {"c", DType::kF16, {3}, c, 6, nullptr},
      {"empty", DType::kF32, {0, 4}, nullptr, 0, nullptr},
      {"scalar", DType::kF32, {}, nullptr, 4, [](void* dst) { *static_cast<float*>(dst) = 42.0f; }},
  };
  ASSERT_TRUE(WriteSafetensors(dir.File("x.safetensors"), tensors, {{"k", "v"}}).ok());
  auto read = ReadSafetensors(dir.File("x.safetensors"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata.at("k"), "v");
  ASSERT_EQ(read->tensors.size(), 5u);
  std::map<std::string, const TensorView*> by_name;
  for (const TensorView& t : read->tensors) by_name[t.name] = &t;
  const TensorView& ta = *by_name.at("a");
  EXPECT_EQ(ta.dtype, DType::kF32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta.strides, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
  // Zero copy: the view points into the mapping.
  EXPECT_GE(ta.data, read->file->data());
  EXPECT_LT(ta.data, read->file->data() + read->file->size());
  EXPECT_EQ(std::memcmp(by_name.at("b")->data, b.data(), 16), 0);
  EXPECT_EQ(by_name.at("c")->dtype, DType::kF16);
  EXPECT_EQ(by_name.at("empty")->numel, 0u);
  float scalar;
  std::memcpy(&scalar, by_name.at("scalar")->data, 4);
  EXPECT_EQ(scalar, 42.0f);
  EXPECT_TRUE(by_name.at("scalar")->shape.empty());
}

TEST(SafetensorsTest, WriterRefusesDuplicateNamesAndWrongSizes) {
  testing::TempDir dir;
  float x = 0;
  EXPECT_EQ(WriteSafetensors(dir.File("d"), {{"a", DType::kF32, {1}, &x, 4, nullptr},
                                             {"a", DType::kF32, {1}, &x, 4, nullptr}})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir.File("d"), {{"a", DType::kF32, {2}, &x, 4, nullptr}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.File("d")));
}

struct HostileCase {
  const char* name;
  std::string bytes;
  const char* expect;
};

TEST(SafetensorsTest, RejectsHostileFiles) {
  const std::string ok_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_TRUE(ParseBytes(File(ok_header, 8)).ok());
  std::string huge_len = Le64(uint64_t{100} << 20) + "{}";  // a 100 MB header: refused before reading
  std::string past_eof = Le64(1000) + "{}";
  const std::vector<HostileCase> cases = {
      {"header length past EOF", past_eof, "runs past the end of the file"},
      {"100 MB header", huge_len, "exceeds the limit"},
      {"header length 2^64-1", Le64(~uint64_t{0}) + "{}", "exceeds the limit"},
      {"shorter than 8 bytes", "abc", "shorter than the 8-byte"},
      {"not JSON", File("{not json}", 0), "not a valid JSON object"},
      {"JSON array", File("[1,2]", 0), "does not start with '{'"},
      {"unknown dtype", File(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2), "unknown dtype 'F8'"},
      {"shape/size mismatch", File(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes"},
      {"overlapping ranges",
       File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlaps"},
      {"offsets past the data", File(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8), "past the data"},
      {"begin after end", File(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "begin > end"},
      {"negative dimension", File(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "negative"},
      {"overflowing shape",
       File(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8), "overflow"},
      {"fractional dimension", File(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), "not an integer"},
      {"missing data_offsets", File(R"({"w":{"dtype":"F32","shape":[2]}})", 8), "lacks"},
      {"hole in the data",
       File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       "unindexed bytes"},
      {"trailing bytes", File(ok_header, 16), "cover 8"},
      {"metadata not strings", File(R"({"__metadata__":{"a":1}})", 0), "not a string"},
  };
  for (const HostileCase& c : cases) {
    absl::Status s = ParseBytes(c.bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.expect)) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr("t.safetensors")) << c.name;
  }
}

TEST(SafetensorsTest, ActualHundredMegabyteHeaderFileIsRefusedWithoutParsing) {
  testing::TempDir dir;
  const uint64_t len = 100ull << 20;
  {
    std::ofstream f(dir.File("big.safetensors"), std::ios::binary);
    f << Le64(len) << '{';
    f.seekp(static_cast<std::streamoff>(8 + len - 1));
    f << '}';
  }
  absl::Status s = ReadSafetensors(dir.File("big.safetensors")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("exceeds the limit"));
}

// Kilobytes of `address`'s mapping resident in this process (/proc/self/smaps), -1 if not found.
int64_t ResidentKb(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stoll(line.substr(4));
    }
  }
  return -1;
}

TEST(SafetensorsTest, HashingACheckpointLeavesItsPagesOutOfMemory) {
  testing::TempDir dir;
  // 96 MB: more than one of the hash's chunks.
  std::vector<float> values(24u << 20);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 1000);
  const std::vector<TensorToWrite> tensors = {{"w",
                                               DType::kF32,
                                               {static_cast<int64_t>(values.size())},
                                               values.data(),
                                               values.size() * 4,
                                               nullptr}};
  ASSERT_TRUE(WriteSafetensors(dir.File("big.safetensors"), tensors, {}).ok());
  auto ckpt = Checkpoint::Open(dir.File("big.safetensors"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const std::shared_ptr<const MappedFile>& file = (*ckpt)->file();

  const std::string hash = (*ckpt)->ContentHash();
  Sha256 whole;
  std::ifstream in(dir.File("big.safetensors"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  whole.Update(bytes.data(), bytes.size());
  EXPECT_EQ(hash, whole.FinishHex());
  // The whole file was read, and none of it stays resident in this process for the hash's sake.
  const int64_t kb = ResidentKb(file->data());
  ASSERT_GE(kb, 0) << "the mapping is not in /proc/self/smaps";
  EXPECT_LT(kb, 8 * 1024) << "KB resident after hashing a " << file->size() / 1024 << " KB file";
  // The weights read back as written.
  const TensorView* w = (*ckpt)->Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(std::memcmp(w->data, values.data(), values.size() * 4), 0);
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSafetensors("/nonexistent/x.safetensors").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sd
