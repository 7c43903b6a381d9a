// A restricted unpickler for PyTorch checkpoints. It builds a tree of plain values and never
// executes anything from the file:
//   - only the opcodes a state dict needs (protocols 2-5, binary forms) are understood; others are
//   errors;
//   - GLOBAL/STACK_GLOBAL resolve against an allow-list (collections.OrderedDict, the torch tensor
//   and
//     parameter rebuild functions, torch.*Storage classes); globals known to be dangerous
//     (os.system, builtins.eval, subprocess.Popen, ...) are refused outright; any other global (a
//     pytorch_lightning callback, say) becomes an opaque value, and calling or BUILDing it just
//     yields another opaque value;
//   - nesting depth, memo and stack sizes are bounded, and so are the bytes its values take
//     (UnpickleLimits): a pickle that would exceed them is refused with RESOURCE_EXHAUSTED.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

struct PickleValue;
using PVal = std::shared_ptr<const PickleValue>;

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,   // str (UTF-8) and bytes alike: `str`
    kTuple,    // `items`
    kList,     // `items` (sets and frozensets are read as lists too)
    kDict,     // `dict`, in insertion order
    kGlobal,   // a class or function: `module`, `name`, `allowed`
    kObject,   // the opaque result of calling or instantiating an unknown global: `module`, `name`
    kStorage,  // a torch storage from a persistent id: `storage_dtype`, `str` (key), `storage_numel`
    kTensor,   // `items[0]` = storage; `shape`, `strides`, `storage_offset`
  };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string str;
  std::string module, name;
  std::vector<PVal> items;
  std::vector<std::pair<PVal, PVal>> dict;
  DType storage_dtype = DType::kF32;
  uint64_t storage_numel = 0;
  std::vector<int64_t> shape, strides;
  int64_t storage_offset = 0;
  int depth = 1;

  // "int", "dict", "object pytorch_lightning.callbacks.ModelCheckpoint", ...
  std::string Describe() const;
  // For dicts: the value under a string key, or nullptr.
  PVal Get(const std::string& key) const;
};

// Turns a persistent id (for torch: ('storage', StorageClass, key, location, numel)) into a value.
using PersistentLoader = std::function<absl::StatusOr<PVal>(const PVal& pid)>;

struct UnpickleLimits {
  // Bytes the values, stack and memo may allocate in all (counted as allocated, never refunded).
  // A state dict of SD v1.x needs a few MB; 3 MB of pickle that only pushes empty lists would need
  // over 1 GB.
  uint64_t max_object_bytes = uint64_t{256} << 20;
};

// `where` names the file and record in errors ("model.ckpt: archive/data.pkl").
absl::StatusOr<PVal> Unpickle(const uint8_t* data, uint64_t size, const PersistentLoader& loader,
                              const std::string& where, const UnpickleLimits& limits = {});

// The dtype of a torch storage class name ("FloatStorage" -> F32), or an error.
absl::StatusOr<DType> StorageClassDType(const std::string& name);

}  // namespace sd
