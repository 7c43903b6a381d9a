#include "nodes/base/sha256.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/test_util.h"

namespace sd {
namespace {

std::string Hex(const std::string& s) {
  Sha256 h;
  h.Update(s.data(), s.size());
  return h.FinishHex();
}

TEST(Sha256Test, KnownVectors) {
  Sha256 portable;
  portable.ForcePortable();
  portable.Update("abc", 3);
  EXPECT_EQ(portable.FinishHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, StreamingInPiecesMatchesOneShot) {
  std::string data;
  for (int i = 0; i < 10000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  Sha256 h;
  for (size_t at = 0, step = 1; at < data.size(); at += step, step = step % 97 + 1) {
    h.Update(data.data() + at, std::min(step, data.size() - at));
  }
  EXPECT_EQ(h.FinishHex(), Hex(data));
}

TEST(Sha256Test, HardwarePathMatchesPortablePath) {
  std::string data;
  uint32_t x = 12345;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>((x = x * 1664525u + 1013904223u) >> 24));
  for (size_t n : {0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 100000}) {
    Sha256 fast, slow;
    slow.ForcePortable();
    fast.Update(data.data(), n);
    slow.Update(data.data(), n);
    EXPECT_EQ(fast.FinishHex(), slow.FinishHex()) << n;
  }
  std::printf("[ info ] SHA extensions %s\n", Sha256::HardwareAccelerated() ? "used" : "not available");
}

TEST(Sha256Test, FileMatchesBytesAndMissingFileIsNotFound) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("x"), "abc");
  EXPECT_EQ(*Sha256File(dir.File("x")), Hex("abc"));
  EXPECT_EQ(Sha256File(dir.File("nope")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sd
