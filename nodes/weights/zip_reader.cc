#include "nodes/weights/zip_reader.h"

#include <algorithm>

#include <array>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sd {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;

uint64_t Le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid checkpoint archive: ", what));
}

bool SafeName(absl::string_view name) {
  if (name.empty() || name.size() > 1024 || name[0] == '/') return false;
  for (char c : name) {
    if (c == '\0' || c == '\\') return false;
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part == ".." || part == ".") return false;
  }
  return true;
}

}  // namespace

bool LooksLikeZip(const uint8_t* data, uint64_t size) {
  return size >= 4 && Le(data, 4) == kLocalSig;
}

uint32_t Crc32(const uint8_t* data, uint64_t size) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (uint64_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

const ZipRecord* ZipArchive::Find(const std::string& name) const {
  auto it = records_.find(name);
  return it == records_.end() ? nullptr : &it->second;
}

absl::StatusOr<ZipArchive> ZipArchive::Open(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* base = file->data();
  const uint64_t size = file->size();
  if (size < 22) return Bad(path, "too short for a zip archive (truncated?)");

  // The end-of-central-directory record sits in the last 22 + 65535 bytes (its comment is at most 64 KiB).
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t p = size - 22 + 1; p-- > lowest;) {
    if (Le(base + p, 4) == kEndSig && p + 22 + Le(base + p + 20, 2) == size) {
      eocd = p;
      break;
    }
  }
  if (eocd == UINT64_MAX) {
    return Bad(path, "no end-of-central-directory record (truncated or not a zip)");
  }
  const uint8_t* e = base + eocd;
  if (Le(e + 4, 2) != 0 || Le(e + 6, 2) != 0) return Bad(path, "multi-disk archives are not supported");
  uint64_t count = Le(e + 10, 2);
  uint64_t cd_size = Le(e + 12, 4);
  uint64_t cd_offset = Le(e + 16, 4);
  uint64_t cd_end_limit = eocd;
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    if (eocd < 20 || Le(base + eocd - 20, 4) != kEnd64LocatorSig) {
      return Bad(path, "ZIP64 fields without a ZIP64 end-of-central-directory locator");
    }
    const uint64_t rec = Le(base + eocd - 20 + 8, 8);
    if (rec > eocd - 20 || eocd - 20 - rec < 56 || Le(base + rec, 4) != kEnd64Sig) {
      return Bad(path, "bad ZIP64 end-of-central-directory record");
    }
    if (Le(base + rec + 16, 4) != 0 || Le(base + rec + 20, 4) != 0) {
      return Bad(path, "multi-disk archives are not supported");
    }
    count = Le(base + rec + 32, 8);
    cd_size = Le(base + rec + 40, 8);
    cd_offset = Le(base + rec + 48, 8);
    cd_end_limit = rec;
  }
  if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset) {
    return Bad(path, "central directory lies outside the file");
  }
  if (count > cd_size / 46) return Bad(path, "central directory entry count exceeds its size");

  ZipArchive archive;
  const uint8_t* p = base + cd_offset;
  const uint8_t* cd_end = p + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - p < 46 || Le(p, 4) != kCentralSig) {
      return Bad(path, absl::StrCat("central directory entry ", i, " is malformed"));
    }
    const uint64_t flags = Le(p + 8, 2);
    const uint64_t method = Le(p + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(Le(p + 16, 4));
    uint64_t csize = Le(p + 20, 4);
    uint64_t usize = Le(p + 24, 4);
    const uint64_t name_len = Le(p + 28, 2);
    const uint64_t extra_len = Le(p + 30, 2);
    const uint64_t comment_len = Le(p + 32, 2);
    const uint64_t disk = Le(p + 34, 2);
    uint64_t local = Le(p + 42, 4);
    if (static_cast<uint64_t>(cd_end - p) < 46 + name_len + extra_len + comment_len) {
      return Bad(path, absl::StrCat("central directory entry ", i, " runs past the directory"));
    }
    std::string name(reinterpret_cast<const char*>(p + 46), name_len);
    if (!SafeName(name)) {
      return Bad(path, absl::StrCat("record name '", absl::CHexEscape(name),
                                    "' is absolute or escapes the archive"));
    }
    // ZIP64 extended information: present values replace the 0xffffffff placeholders, in this order.
    const uint8_t* x = p + 46 + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint64_t id = Le(x, 2), len = Le(x + 2, 2);
      if (static_cast<uint64_t>(x_end - x - 4) < len) {
        return Bad(path, absl::StrCat("record '", name, "': extra field runs past its entry"));
      }
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        uint64_t left = len;
        for (uint64_t* field : {&usize, &csize, &local}) {
          if (*field != 0xffffffff) continue;
          if (left < 8) return Bad(path, absl::StrCat("record '", name, "': short ZIP64 field"));
          *field = Le(f, 8);
          f += 8;
          left -= 8;
        }
      }
      x += 4 + len;
    }
    if (disk != 0 && disk != 0xffff) return Bad(path, "multi-disk archives are not supported");
    if (flags & 0x1) return Bad(path, absl::StrCat("record '", name, "' is encrypted"));
    if (method != 0 || csize != usize) {
      return Bad(path, absl::StrCat("record '", name, "' is compressed (method ", method,
                                    "); torch.save writes stored records only"));
    }
    if (local > cd_offset || cd_offset - local < 30 || Le(base + local, 4) != kLocalSig) {
      return Bad(path, absl::StrCat("record '", name, "': bad local header offset"));
    }
    const uint8_t* lh = base + local;
    const uint64_t lname = Le(lh + 26, 2), lextra = Le(lh + 28, 2);
    const uint64_t data_off = local + 30 + lname + lextra;
    if (data_off > cd_offset || usize > cd_offset - data_off) {
      return Bad(path, absl::StrCat("record '", name, "' (", usize,
                                    " bytes) runs past the archive's data"));
    }
    if (lname != name_len || std::memcmp(lh + 30, name.data(), name_len) != 0) {
      return Bad(path, absl::StrCat("record '", name, "': local header names another file"));
    }
    if (!archive.records_.emplace(name, ZipRecord{base + data_off, usize, crc}).second) {
      return Bad(path, absl::StrCat("duplicate record '", name, "'"));
    }
    p += 46 + name_len + extra_len + comment_len;
  }
  archive.file_ = std::move(file);
  return archive;
}

}  // namespace sd
