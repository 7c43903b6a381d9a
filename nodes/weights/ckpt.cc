#include "nodes/weights/ckpt.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/weights/pickle.h"
#include "nodes/weights/zip_reader.h"

namespace sd {
namespace {

using Kind = PickleValue::Kind;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid checkpoint: ", what));
}

bool SafeKey(const std::string& key) {
  if (key.empty() || key.size() > 64) return false;
  for (char c : key) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// The budget for the objects of a `pickle_bytes`-byte data.pkl: SD_PICKLE_BUDGET_MB (default 256
// MiB), but no more than a generous multiple of the pickle's size, so that refusing a small hostile
// file stays cheap: 16 MiB + 48 bytes per pickle byte (112 MB for a 2 MB pickle). Measured: an
// SD-sized state dict (1131 tensors, a 190 KB pickle) needs 6-8 MB of its 25 MB, about 40 bytes of
// objects per pickle byte.
UnpickleLimits PickleLimitsFor(uint64_t pickle_bytes) {
  UnpickleLimits limits;
  if (const char* env = std::getenv("SD_PICKLE_BUDGET_MB")) {
    uint64_t mb = 0;
    if (absl::SimpleAtoi(env, &mb) && mb > 0 && mb < (uint64_t{1} << 40)) {
      limits.max_object_bytes = mb << 20;
      return limits;
    }
  }
  const uint64_t scaled =
      (uint64_t{16} << 20) + std::min<uint64_t>(pickle_bytes, uint64_t{1} << 40) * 48;
  limits.max_object_bytes = std::min(limits.max_object_bytes, scaled);
  return limits;
}

}  // namespace

absl::StatusOr<CkptContents> ParseCkpt(std::shared_ptr<const MappedFile> file) {
  const std::string path = file->path();
  SD_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Open(file));

  // Exactly one `<prefix>/data.pkl` at the top of the archive.
  std::string prefix;
  int found = 0;
  for (const auto& [name, record] : zip.records()) {
    size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") {
      prefix = name.substr(0, slash);
      ++found;
    }
  }
  if (found != 1) {
    return Bad(path, found == 0 ? "no <archive>/data.pkl record (not a torch.save file?)"
                                : "several data.pkl records");
  }
  if (const ZipRecord* bo = zip.Find(prefix + "/byteorder")) {
    std::string order(reinterpret_cast<const char*>(bo->data), bo->size);
    if (order != "little") return Bad(path, absl::StrCat("byte order '", order, "' is not supported"));
  }
  const ZipRecord* pkl = zip.Find(prefix + "/data.pkl");
  if (Crc32(pkl->data, pkl->size) != pkl->crc32) return Bad(path, "data.pkl fails its CRC check");

  struct Storage {
    PVal value;
    const uint8_t* data;
  };
  std::map<std::string, Storage> storages;
  PersistentLoader loader = [&](const PVal& pid) -> absl::StatusOr<PVal> {
    // ('storage', torch.FloatStorage, key, location, numel)
    if (pid->kind != Kind::kTuple || pid->items.size() != 5 || pid->items[0]->kind != Kind::kString ||
        pid->items[0]->str != "storage") {
      return absl::InvalidArgumentError("persistent id is not ('storage', class, key, location, numel)");
    }
    const PVal& cls = pid->items[1];
    const PVal& key = pid->items[2];
    const PVal& numel = pid->items[4];
    if (cls->kind != Kind::kGlobal || cls->module != "torch") {
      return absl::InvalidArgumentError(absl::StrCat("storage class is ", cls->Describe()));
    }
    SD_ASSIGN_OR_RETURN(DType dtype, StorageClassDType(cls->name));
    if (key->kind != Kind::kString || !SafeKey(key->str)) {
      return absl::InvalidArgumentError("storage key is not a plain name");
    }
    if (numel->kind != Kind::kInt || numel->i < 0) {
      return absl::InvalidArgumentError("storage element count is not a non-negative int");
    }
    auto it = storages.find(key->str);
    if (it != storages.end()) {
      if (it->second.value->storage_dtype != dtype ||
          it->second.value->storage_numel != static_cast<uint64_t>(numel->i)) {
        return absl::InvalidArgumentError(absl::StrCat("storage '", key->str, "' is declared twice differently"));
      }
      return it->second.value;
    }
    const std::string record_name = absl::StrCat(prefix, "/data/", key->str);
    const ZipRecord* record = zip.Find(record_name);
    if (!record) return absl::InvalidArgumentError(absl::StrCat("storage record ", record_name, " is missing"));
    const uint64_t n = static_cast<uint64_t>(numel->i);
    if (n > record->size / DTypeSize(dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("storage '", key->str, "' claims ", n, " elements of ", DTypeName(dtype),
                       " but its record holds ", record->size, " bytes"));
    }
    auto v = std::make_shared<PickleValue>();
    v->kind = Kind::kStorage;
    v->storage_dtype = dtype;
    v->storage_numel = n;
    v->str = key->str;
    storages[key->str] = Storage{v, record->data};
    return PVal(v);
  };
  SD_ASSIGN_OR_RETURN(PVal top, Unpickle(pkl->data, pkl->size, loader,
                                         absl::StrCat(path, ": ", prefix, "/data.pkl"),
                                         PickleLimitsFor(pkl->size)));

  CkptContents out;
  if (top->kind != Kind::kDict) return Bad(path, absl::StrCat("top level is a ", top->Describe(), ", not a dict"));
  PVal sd = top;
  if (PVal nested = top->Get("state_dict")) {
    if (nested->kind != Kind::kDict) {
      return Bad(path, absl::StrCat("'state_dict' is a ", nested->Describe(), ", not a dict"));
    }
    sd = nested;
    out.nested_state_dict = true;
  }
  std::set<std::string> seen;
  // Dicts inside the state dict (a textual-inversion file's {"string_to_param": {"*": tensor}})
  // are flattened with dotted names, a few levels deep.
  std::function<absl::Status(const PVal&, const std::string&, int)> walk =
      [&](const PVal& dict, const std::string& prefix, int depth) -> absl::Status {
    for (const auto& [k, v] : dict->dict) {
      if (k->kind != Kind::kString)
        return Bad(path, absl::StrCat("state dict key is a ", k->Describe()));
      const std::string name = prefix + k->str;
      if (!seen.insert(name).second) return Bad(path, absl::StrCat("duplicate key '", name, "'"));
      if (v->kind == Kind::kTensor) {
        const Storage& s = storages.at(v->items[0]->str);
        TensorView t;
        t.name = name;
        t.dtype = v->storage_dtype;
        t.shape = v->shape;
        t.strides = v->strides;
        SD_ASSIGN_OR_RETURN(t.numel, CheckedNumel(t.shape, t.name));
        // In bounds: the unpickler checked offset < storage elements, and the loader checked
        // storage elements * element size <= the record's bytes.
        t.data = s.data + static_cast<uint64_t>(v->storage_offset) * DTypeSize(t.dtype);
        out.tensors.push_back(std::move(t));
      } else if (v->kind == Kind::kDict && depth < 3) {
        SD_RETURN_IF_ERROR(walk(v, name + ".", depth + 1));
      } else if (v->kind == Kind::kObject || v->kind == Kind::kGlobal ||
                 v->kind == Kind::kStorage) {
        return Bad(path, absl::StrCat("entry '", name, "' is a ", v->Describe(), ", not a tensor"));
      } else {
        out.ignored.push_back(name);
      }
    }
    return absl::OkStatus();
  };
  SD_RETURN_IF_ERROR(walk(sd, "", 0));
  out.file = std::move(file);
  return out;
}

}  // namespace sd
