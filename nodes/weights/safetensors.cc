#include "nodes/weights/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"

namespace sd {
namespace {

using Json = nlohmann::json;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid safetensors: ", what));
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::StatusOr<int64_t> JsonToInt(const Json& j, absl::string_view what) {
  if (!j.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(what, " is not an integer"));
  if (j.is_number_unsigned()) {
    uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is too large"));
    }
    return static_cast<int64_t>(u);
  }
  int64_t v = j.get<int64_t>();
  if (v < 0) return absl::InvalidArgumentError(absl::StrCat(what, " is negative"));
  return v;
}

}  // namespace

absl::StatusOr<SafetensorsContents> ParseSafetensors(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  if (file->size() < 8) return Bad(path, "file is shorter than the 8-byte header length");
  const uint64_t header_len = ReadLe64(file->data());
  if (header_len > kSafetensorsMaxHeaderBytes) {
    return Bad(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                  kSafetensorsMaxHeaderBytes, " bytes"));
  }
  if (header_len > file->size() - 8) {
    return Bad(path, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  file->size(), " bytes)"));
  }
  if (header_len < 2) return Bad(path, "header is too short to be a JSON object");
  const char* hbegin = reinterpret_cast<const char*>(file->data() + 8);
  if (hbegin[0] != '{') return Bad(path, "header does not start with '{'");
  Json header = Json::parse(hbegin, hbegin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Bad(path, "header is not a valid JSON object");
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file->size() - data_start;

  SafetensorsContents out;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it.value().is_object()) return Bad(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          return Bad(path, absl::StrCat("__metadata__ value '", m.key(), "' is not a string"));
        }
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    const Json& t = it.value();
    if (!t.is_object()) return Bad(path, absl::StrCat(where, " is not an object"));
    auto dt = t.find("dtype");
    auto sh = t.find("shape");
    auto off = t.find("data_offsets");
    if (dt == t.end() || sh == t.end() || off == t.end()) {
      return Bad(path, absl::StrCat(where, " lacks dtype, shape or data_offsets"));
    }
    if (!dt->is_string()) return Bad(path, absl::StrCat(where, ": dtype is not a string"));
    absl::StatusOr<DType> dtype = ParseDTypeName(dt->get<std::string>());
    if (!dtype.ok()) return Bad(path, absl::StrCat(where, ": ", dtype.status().message()));
    if (!sh->is_array()) return Bad(path, absl::StrCat(where, ": shape is not an array"));
    if (sh->size() > 16) return Bad(path, absl::StrCat(where, ": more than 16 dimensions"));
    TensorView v;
    v.name = name;
    v.dtype = *dtype;
    for (const Json& d : *sh) {
      absl::StatusOr<int64_t> dim = JsonToInt(d, "shape entry");
      if (!dim.ok()) return Bad(path, absl::StrCat(where, ": ", dim.status().message()));
      v.shape.push_back(*dim);
    }
    absl::StatusOr<uint64_t> numel = CheckedNumel(v.shape, where);
    if (!numel.ok()) return Bad(path, numel.status().message());
    v.numel = *numel;
    if (!off->is_array() || off->size() != 2) {
      return Bad(path, absl::StrCat(where, ": data_offsets is not [begin, end]"));
    }
    absl::StatusOr<int64_t> b = JsonToInt((*off)[0], "data_offsets begin");
    absl::StatusOr<int64_t> e = JsonToInt((*off)[1], "data_offsets end");
    if (!b.ok() || !e.ok()) {
      return Bad(path, absl::StrCat(where, ": ", (!b.ok() ? b : e).status().message()));
    }
    const uint64_t begin = *b, end = *e;
    if (begin > end) return Bad(path, absl::StrCat(where, ": data_offsets begin > end"));
    if (end > data_size) {
      return Bad(path, absl::StrCat(where, ": data_offsets end ", end, " is past the data (",
                                    data_size, " bytes)"));
    }
    if (end - begin != v.nbytes()) {
      return Bad(path, absl::StrCat(where, ": shape ", ShapeString(v.shape), " of ",
                                    DTypeName(v.dtype), " needs ", v.nbytes(),
                                    " bytes but data_offsets span ", end - begin));
    }
    v.strides = ContiguousStrides(v.shape);
    v.data = file->data() + data_start + begin;
    ranges.push_back({begin, end, out.tensors.size()});
    out.tensors.push_back(std::move(v));
  }
  // The data must be covered exactly: no overlaps (a writer bug or an attack), no holes, no trailer.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Range& r : ranges) {
    if (r.begin < cursor) {
      return Bad(path, absl::StrCat("tensor '", out.tensors[r.index].name,
                                    "' overlaps the tensor before it"));
    }
    if (r.begin > cursor) {
      return Bad(path, absl::StrCat("unindexed bytes before tensor '", out.tensors[r.index].name,
                                    "' (", r.begin - cursor, " bytes)"));
    }
    cursor = r.end;
  }
  if (cursor != data_size) {
    return Bad(path, absl::StrCat("data is ", data_size, " bytes but the tensors cover ", cursor));
  }
  std::vector<TensorView> ordered;
  ordered.reserve(ranges.size());
  for (const Range& r : ranges) ordered.push_back(std::move(out.tensors[r.index]));
  out.tensors = std::move(ordered);
  out.file = std::move(file);
  return out;
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::Open(path));
  return ParseSafetensors(std::move(file));
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": duplicate or reserved tensor name '", t.name, "'"));
    }
    SD_ASSIGN_OR_RETURN(uint64_t numel, CheckedNumel(t.shape, t.name));
    if (t.nbytes > 0 && !t.data && !t.fill) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has no data"));
    }
    if (numel * DTypeSize(t.dtype) != t.nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has ", t.nbytes,
                                                     " bytes for shape ", ShapeString(t.shape)));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string json = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');

  return WriteAtomically(path, [&](const std::string& tmp) -> absl::Status {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) {
      return absl::PermissionDeniedError(
          absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
    }
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(json.size()) >> (8 * i));
    bool ok = std::fwrite(len, 1, 8, f) == 8 &&
              std::fwrite(json.data(), 1, json.size(), f) == json.size();
    std::vector<uint8_t> buffer;
    for (const TensorToWrite& t : tensors) {
      if (!ok) break;
      const void* bytes = t.data;
      if (t.fill) {
        buffer.resize(t.nbytes);
        t.fill(buffer.data());
        bytes = buffer.data();
      }
      ok = t.nbytes == 0 || std::fwrite(bytes, 1, t.nbytes, f) == t.nbytes;
    }
    ok = (std::fclose(f) == 0) && ok;
    if (!ok)
      return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    return absl::OkStatus();
  });
}

}  // namespace sd
