#include "nodes/weights/pickle.h"

#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nodes/base/checked_math.h"
#include "nodes/base/status_macros.h"

namespace sd {
namespace {

constexpr int kMaxDepth = 256;
constexpr size_t kMaxMemo = 1 << 22;
constexpr size_t kMaxStack = 1 << 24;

using Kind = PickleValue::Kind;

// Globals whose only use in a pickle is running code. Never called either way; refusing them outright
// gives the user a clear answer about a hostile file instead of a confusing "not a tensor" later.
bool IsForbiddenGlobal(const std::string& module, const std::string& name) {
  static const char* const kModules[] = {
      "os",       "posix",  "nt",        "subprocess", "sys",    "shutil",   "socket",
      "importlib", "runpy", "pickle",    "_pickle",    "marshal", "ctypes",  "pty",
      "code",     "codeop", "webbrowser", "pdb",       "multiprocessing", "signal",
      "asyncio",  "platform", "commands", "popen2",    "timeit", "cProfile", "profile", "trace",
      "torch.hub", "torch.jit", "torch.serialization", "torch._C", "numpy.testing", "distutils",
      "setuptools", "pip", "tempfile", "glob", "io", "_io", "fileinput", "zipimport"};
  for (const char* m : kModules) {
    if (module == m || absl::StartsWith(module, absl::StrCat(m, "."))) return true;
  }
  if (module == "builtins" || module == "__builtin__") {
    static const char* const kSafe[] = {"set", "frozenset", "slice", "complex", "bytearray",
                                        "range", "list", "dict", "tuple", "int", "float",
                                        "str", "bool", "bytes", "object"};
    for (const char* s : kSafe) {
      if (name == s) return false;
    }
    return true;  // eval, exec, compile, open, __import__, getattr, ...
  }
  if ((module == "operator" && (name == "attrgetter" || name == "methodcaller" ||
                                name == "itemgetter")) ||
      (module == "functools" && name == "partial") || (module == "numpy" && name == "load")) {
    return true;
  }
  return false;
}

enum class Callable { kNone, kOrderedDict, kRebuildTensorV2, kRebuildParameter,
                      kRebuildParameterWithState, kStorageClass };

Callable Classify(const std::string& module, const std::string& name) {
  if (module == "collections" && name == "OrderedDict") return Callable::kOrderedDict;
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2") return Callable::kRebuildTensorV2;
    if (name == "_rebuild_parameter") return Callable::kRebuildParameter;
    if (name == "_rebuild_parameter_with_state") return Callable::kRebuildParameterWithState;
  }
  if (module == "torch" && StorageClassDType(name).ok()) return Callable::kStorageClass;
  return Callable::kNone;
}

// What a memo entry costs in the hash map (node, key, value, bucket).
constexpr uint64_t kMemoEntryBytes = 64;

// The heap bytes of one value: the object with its shared_ptr control block and allocator header,
// and what its strings and vectors hold.
uint64_t ValueBytes(const PickleValue& v) {
  return sizeof(PickleValue) + 32 + v.str.capacity() + v.module.capacity() + v.name.capacity() +
         v.items.capacity() * sizeof(PVal) + v.dict.capacity() * sizeof(v.dict[0]) +
         (v.shape.capacity() + v.strides.capacity()) * sizeof(int64_t);
}

int MaxDepth(const std::vector<PVal>& items) {
  int d = 0;
  for (const PVal& v : items) d = std::max(d, v->depth);
  return d;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, uint64_t size, const PersistentLoader& loader,
            const std::string& where, const UnpickleLimits& limits)
      : p_(data),
        end_(data + size),
        begin_(data),
        loader_(loader),
        where_(where),
        budget_(limits.max_object_bytes) {}

  absl::StatusOr<PVal> Run();

 private:
  absl::Status Err(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(where_, ": unsafe or malformed pickle at byte ", op_pos_, ": ", what));
  }
  absl::StatusOr<uint64_t> ReadUint(int n) {
    if (end_ - p_ < n) return Err("truncated");
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | p_[k];
    p_ += n;
    return v;
  }
  absl::StatusOr<std::string> ReadBytes(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) return Err("string runs past the end of the pickle");
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  absl::StatusOr<std::string> ReadLine() {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) return Err("unterminated GLOBAL");
    std::string s(reinterpret_cast<const char*>(p_), nl - p_);
    p_ = nl + 1;
    return s;
  }
  // Values are created mutable so that a container nobody else references yet can grow in place.
  // Their bytes are charged to the budget, which Push() and Memoize() enforce.
  PVal Make(PickleValue v) {
    charged_ += ValueBytes(v);
    return std::make_shared<PickleValue>(std::move(v));
  }
  absl::Status CheckBudget() const {
    if (charged_ <= budget_) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat(where_, ": the pickle's objects need more than the budget of ", budget_ >> 20,
                     " MiB at byte ", op_pos_,
                     " (a memory bomb, or a pickle far larger than a checkpoint's; "
                     "SD_PICKLE_BUDGET_MB raises the budget)"));
  }
  absl::Status Push(PVal v) {
    if (v->depth > kMaxDepth) return Err("values nested too deeply");
    if (stack_.size() >= kMaxStack) return Err("stack too large");
    const size_t capacity = stack_.capacity();
    stack_.push_back(std::move(v));
    charged_ += (stack_.capacity() - capacity) * sizeof(PVal);
    return CheckBudget();
  }
  absl::StatusOr<PVal> Pop() {
    if (stack_.size() <= MarkFloor()) return Err("stack underflow");
    PVal v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  size_t MarkFloor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<std::vector<PVal>> PopToMark() {
    if (marks_.empty()) return Err("no MARK");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PVal> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  absl::StatusOr<PVal> Top() {
    if (stack_.size() <= MarkFloor()) return Err("stack underflow");
    return stack_.back();
  }
  absl::Status Global(const std::string& module, const std::string& name);
  absl::StatusOr<PVal> Call(const PVal& callable, const PVal& args);
  absl::StatusOr<PVal> RebuildTensor(const std::vector<PVal>& a);
  absl::Status Memoize(uint64_t key) {
    if (stack_.empty()) return Err("memo of an empty stack");
    if (memo_.size() >= kMaxMemo && !memo_.count(key)) return Err("memo too large");
    auto [it, added] = memo_.emplace(key, stack_.back());
    if (added) {
      charged_ += kMemoEntryBytes;
    } else {
      it->second = stack_.back();
    }
    return CheckBudget();
  }
  absl::Status Get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Err(absl::StrCat("memo key ", key, " was never stored"));
    return Push(it->second);
  }
  // Applies SETITEM(S) to the dict (or opaque object) below the items.
  absl::Status SetItems(std::vector<PVal> kv);
  absl::Status Append(std::vector<PVal> items);
  // A container about to grow: itself when only the caller holds it, else a copy that replaces it in the
  // memo. Copies are charged to a budget so a hostile pickle cannot make this quadratic.
  absl::StatusOr<std::shared_ptr<PickleValue>> Writable(PVal target);

  uint64_t copy_budget_ = 64 << 20;

  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* begin_;
  const PersistentLoader& loader_;
  const std::string& where_;
  uint64_t op_pos_ = 0;
  std::vector<PVal> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PVal> memo_;
  const uint64_t budget_;  // bytes of values, stack and memo
  uint64_t charged_ = 0;   // bytes allocated so far (never refunded: a bound on the peak)
};

absl::Status Unpickler::Global(const std::string& module, const std::string& name) {
  if (IsForbiddenGlobal(module, name)) {
    return Err(absl::StrCat("refusing global ", module, ".", name,
                            " (it can only serve to run code; this file is hostile or not a checkpoint)"));
  }
  PickleValue g;
  g.kind = Kind::kGlobal;
  g.module = module;
  g.name = name;
  return Push(Make(std::move(g)));
}

absl::StatusOr<PVal> Unpickler::RebuildTensor(const std::vector<PVal>& a) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() < 4) return Err("_rebuild_tensor_v2 needs at least 4 arguments");
  if (a[0]->kind != Kind::kStorage) {
    return Err(absl::StrCat("_rebuild_tensor_v2 on ", a[0]->Describe(), ", not a storage"));
  }
  if (a[1]->kind != Kind::kInt || a[1]->i < 0) return Err("tensor storage offset is not a non-negative int");
  if (a[2]->kind != Kind::kTuple || a[3]->kind != Kind::kTuple || a[2]->items.size() != a[3]->items.size()) {
    return Err("tensor size and stride are not tuples of equal length");
  }
  PickleValue t;
  t.kind = Kind::kTensor;
  t.items = {a[0]};
  t.storage_offset = a[1]->i;
  t.storage_dtype = a[0]->storage_dtype;
  for (size_t k = 0; k < a[2]->items.size(); ++k) {
    const PVal& s = a[2]->items[k];
    const PVal& st = a[3]->items[k];
    if (s->kind != Kind::kInt || st->kind != Kind::kInt || s->i < 0 || st->i < 0) {
      return Err("tensor size/stride entries must be non-negative ints");
    }
    t.shape.push_back(s->i);
    t.strides.push_back(st->i);
  }
  // Every reachable element must lie inside the storage: the offset itself, and the last element
  // offset + Σ (size - 1) * stride, in checked arithmetic (an overflow is an error, never a wrap).
  const uint64_t storage_numel = a[0]->storage_numel;
  const uint64_t offset = static_cast<uint64_t>(t.storage_offset);
  absl::StatusOr<uint64_t> numel = CheckedNumel(t.shape, "tensor");
  if (!numel.ok()) return Err(numel.status().message());
  if (*numel == 0 ? offset > storage_numel : offset >= storage_numel) {
    return Err(absl::StrCat("tensor storage offset ", offset, " lies outside its storage of ",
                            storage_numel, " elements"));
  }
  if (*numel > 0) {
    std::optional<uint64_t> last = offset;
    for (size_t k = 0; k < t.shape.size() && last; ++k) {
      last = CheckedMulAdd(*last, static_cast<uint64_t>(t.shape[k] - 1),
                           static_cast<uint64_t>(t.strides[k]));
    }
    if (!last) {
      return Err(absl::StrCat("tensor of shape ", ShapeString(t.shape), " at offset ", offset,
                              ": strides overflow 64 bits"));
    }
    if (*last >= storage_numel) {
      return Err(absl::StrCat("tensor of shape ", ShapeString(t.shape), " at offset ", offset,
                              " reaches element ", *last, " of a storage with ", storage_numel,
                              " elements"));
    }
  }
  t.depth = 2;
  return Make(std::move(t));
}

absl::StatusOr<PVal> Unpickler::Call(const PVal& callable, const PVal& args) {
  if (args->kind != Kind::kTuple) return Err("REDUCE arguments are not a tuple");
  if (callable->kind == Kind::kGlobal) {
    switch (Classify(callable->module, callable->name)) {
      case Callable::kOrderedDict: {
        PickleValue d;
        d.kind = Kind::kDict;
        if (!args->items.empty()) {
          if (args->items[0]->kind != Kind::kList && args->items[0]->kind != Kind::kTuple) {
            return Err("OrderedDict argument is not a list of pairs");
          }
          for (const PVal& kv : args->items[0]->items) {
            if (kv->kind != Kind::kTuple || kv->items.size() != 2) return Err("OrderedDict item is not a pair");
            d.dict.emplace_back(kv->items[0], kv->items[1]);
          }
        }
        d.depth = 1 + args->depth;
        return Make(std::move(d));
      }
      case Callable::kRebuildTensorV2:
        return RebuildTensor(args->items);
      case Callable::kRebuildParameter:
      case Callable::kRebuildParameterWithState:
        if (args->items.empty() || args->items[0]->kind != Kind::kTensor) {
          return Err("_rebuild_parameter on something that is not a tensor");
        }
        return args->items[0];
      case Callable::kStorageClass:
        return Err(absl::StrCat("torch.", callable->name, " may only appear in a persistent id"));
      case Callable::kNone:
        break;
    }
  }
  // An unknown class or function: record it, never call it.
  PickleValue o;
  o.kind = Kind::kObject;
  o.module = callable->kind == Kind::kGlobal || callable->kind == Kind::kObject ? callable->module : "?";
  o.name = callable->kind == Kind::kGlobal || callable->kind == Kind::kObject ? callable->name : "?";
  o.depth = 1 + std::max(callable->depth, args->depth);
  return Make(std::move(o));
}

absl::Status Unpickler::SetItems(std::vector<PVal> kv) {
  if (kv.size() % 2 != 0) return Err("SETITEMS with an odd number of values");
  SD_ASSIGN_OR_RETURN(PVal target, Pop());
  if (target->kind == Kind::kObject) return Push(target);  // opaque: contents ignored
  if (target->kind != Kind::kDict) return Err(absl::StrCat("SETITEM on ", target->Describe()));
  SD_ASSIGN_OR_RETURN(std::shared_ptr<PickleValue> d, Writable(std::move(target)));
  const size_t capacity = d->dict.capacity();
  for (size_t k = 0; k < kv.size(); k += 2) {
    d->dict.emplace_back(kv[k], kv[k + 1]);
    d->depth = std::max(d->depth, 1 + std::max(kv[k]->depth, kv[k + 1]->depth));
  }
  charged_ += (d->dict.capacity() - capacity) * sizeof(d->dict[0]);
  return Push(std::move(d));
}

absl::Status Unpickler::Append(std::vector<PVal> items) {
  SD_ASSIGN_OR_RETURN(PVal target, Pop());
  if (target->kind == Kind::kObject) return Push(target);
  if (target->kind != Kind::kList) return Err(absl::StrCat("APPEND on ", target->Describe()));
  SD_ASSIGN_OR_RETURN(std::shared_ptr<PickleValue> l, Writable(std::move(target)));
  l->depth = std::max(l->depth, 1 + MaxDepth(items));
  const size_t capacity = l->items.capacity();
  for (PVal& v : items) l->items.push_back(std::move(v));
  charged_ += (l->items.capacity() - capacity) * sizeof(PVal);
  return Push(std::move(l));
}

absl::StatusOr<std::shared_ptr<PickleValue>> Unpickler::Writable(PVal target) {
  if (target.use_count() == 1) {
    // Sole owner: every value is created mutable by Make(), so this is safe.
    return std::const_pointer_cast<PickleValue>(std::move(target));
  }
  const uint64_t cost = target->items.size() + target->dict.size() + memo_.size() + 1;
  if (cost > copy_budget_) return Err("pickle needs too much work to rebuild its containers");
  copy_budget_ -= cost;
  charged_ += ValueBytes(*target);
  auto copy = std::make_shared<PickleValue>(*target);
  for (auto& entry : memo_) {
    if (entry.second == target) entry.second = copy;
  }
  return copy;
}

absl::StatusOr<PVal> Unpickler::Run() {
  auto scalar = [](Kind k) {
    PickleValue v;
    v.kind = k;
    return v;
  };
  while (p_ < end_) {
    op_pos_ = p_ - begin_;
    const uint8_t op = *p_++;
    switch (op) {
      case 0x80: {  // PROTO
        SD_ASSIGN_OR_RETURN(uint64_t proto, ReadUint(1));
        if (proto < 2 || proto > 5) return Err(absl::StrCat("unsupported pickle protocol ", proto));
        break;
      }
      case 0x95:  // FRAME: a length hint only
        SD_RETURN_IF_ERROR(ReadUint(8).status());
        break;
      case '.': {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) return Err("STOP with a stack that is not one value");
        return stack_.back();
      }
      case '(':
        if (marks_.size() > kMaxDepth) return Err("too many MARKs");
        marks_.push_back(stack_.size());
        break;
      case '0':
        SD_RETURN_IF_ERROR(Pop().status());
        break;
      case '1':
        SD_RETURN_IF_ERROR(PopToMark().status());
        break;
      case '2': {
        SD_ASSIGN_OR_RETURN(PVal v, Top());
        SD_RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'N':
        SD_RETURN_IF_ERROR(Push(Make(scalar(Kind::kNone))));
        break;
      case 0x88:
      case 0x89: {
        PickleValue v = scalar(Kind::kBool);
        v.b = op == 0x88;
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 'J':
      case 'K':
      case 'M': {
        const int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        SD_ASSIGN_OR_RETURN(uint64_t u, ReadUint(n));
        PickleValue v = scalar(Kind::kInt);
        v.i = op == 'J' ? static_cast<int64_t>(static_cast<int32_t>(u)) : static_cast<int64_t>(u);
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 0x8a: {  // LONG1: little-endian two's complement, up to 8 bytes here
        SD_ASSIGN_OR_RETURN(uint64_t n, ReadUint(1));
        if (n > 8) return Err("integer wider than 64 bits");
        SD_ASSIGN_OR_RETURN(uint64_t u, ReadUint(static_cast<int>(n)));
        if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t{0} << (8 * n);
        PickleValue v = scalar(Kind::kInt);
        v.i = static_cast<int64_t>(u);
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 'G': {
        SD_ASSIGN_OR_RETURN(uint64_t u, ReadUint(8));
        uint64_t be = 0;
        for (int k = 0; k < 8; ++k) be = (be << 8) | ((u >> (8 * k)) & 0xff);  // stored big-endian
        PickleValue v = scalar(Kind::kFloat);
        std::memcpy(&v.f, &be, 8);
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 'X':
      case 0x8c:
      case 0x8d:
      case 'T':
      case 'U':
      case 'B':
      case 'C':
      case 0x8e: {
        const int n = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
        SD_ASSIGN_OR_RETURN(uint64_t len, ReadUint(n));
        PickleValue v = scalar(Kind::kString);
        SD_ASSIGN_OR_RETURN(v.str, ReadBytes(len));
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case ')':
      case ']':
      case '}':
      case 0x8f: {
        PickleValue v = scalar(op == ')' ? Kind::kTuple : op == '}' ? Kind::kDict : Kind::kList);
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 't':
      case 'l':
      case 0x91:
      case 0x85:
      case 0x86:
      case 0x87: {
        std::vector<PVal> items;
        if (op == 't' || op == 'l' || op == 0x91) {
          SD_ASSIGN_OR_RETURN(items, PopToMark());
        } else {
          const size_t n = op - 0x84;
          if (stack_.size() < MarkFloor() + n) return Err("stack underflow");
          items.assign(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
        }
        PickleValue v = scalar(op == 'l' || op == 0x91 ? Kind::kList : Kind::kTuple);
        v.depth = 1 + MaxDepth(items);
        v.items = std::move(items);
        SD_RETURN_IF_ERROR(Push(Make(std::move(v))));
        break;
      }
      case 'd': {
        SD_ASSIGN_OR_RETURN(std::vector<PVal> kv, PopToMark());
        SD_RETURN_IF_ERROR(Push(Make(scalar(Kind::kDict))));
        SD_RETURN_IF_ERROR(SetItems(std::move(kv)));
        break;
      }
      case 's': {
        SD_ASSIGN_OR_RETURN(PVal v, Pop());
        SD_ASSIGN_OR_RETURN(PVal k, Pop());
        SD_RETURN_IF_ERROR(SetItems({k, v}));
        break;
      }
      case 'u': {
        SD_ASSIGN_OR_RETURN(std::vector<PVal> kv, PopToMark());
        SD_RETURN_IF_ERROR(SetItems(std::move(kv)));
        break;
      }
      case 'a': {
        SD_ASSIGN_OR_RETURN(PVal v, Pop());
        SD_RETURN_IF_ERROR(Append({v}));
        break;
      }
      case 'e':
      case 0x90: {
        SD_ASSIGN_OR_RETURN(std::vector<PVal> items, PopToMark());
        SD_RETURN_IF_ERROR(Append(std::move(items)));
        break;
      }
      case 'q':
      case 'r': {
        SD_ASSIGN_OR_RETURN(uint64_t key, ReadUint(op == 'q' ? 1 : 4));
        SD_RETURN_IF_ERROR(Memoize(key));
        break;
      }
      case 0x94:
        SD_RETURN_IF_ERROR(Memoize(memo_.size()));
        break;
      case 'h':
      case 'j': {
        SD_ASSIGN_OR_RETURN(uint64_t key, ReadUint(op == 'h' ? 1 : 4));
        SD_RETURN_IF_ERROR(Get(key));
        break;
      }
      case 'c': {
        SD_ASSIGN_OR_RETURN(std::string module, ReadLine());
        SD_ASSIGN_OR_RETURN(std::string name, ReadLine());
        SD_RETURN_IF_ERROR(Global(module, name));
        break;
      }
      case 0x93: {
        SD_ASSIGN_OR_RETURN(PVal name, Pop());
        SD_ASSIGN_OR_RETURN(PVal module, Pop());
        if (module->kind != Kind::kString || name->kind != Kind::kString) {
          return Err("STACK_GLOBAL operands are not strings");
        }
        SD_RETURN_IF_ERROR(Global(module->str, name->str));
        break;
      }
      case 'R':
      case 0x81: {  // REDUCE, NEWOBJ
        SD_ASSIGN_OR_RETURN(PVal args, Pop());
        SD_ASSIGN_OR_RETURN(PVal callable, Pop());
        if (op == 0x81 && callable->kind == Kind::kGlobal &&
            Classify(callable->module, callable->name) != Callable::kNone) {
          return Err(absl::StrCat("NEWOBJ of ", callable->module, ".", callable->name));
        }
        SD_ASSIGN_OR_RETURN(PVal result, Call(callable, args));
        SD_RETURN_IF_ERROR(Push(std::move(result)));
        break;
      }
      case 0x92: {  // NEWOBJ_EX: cls, args, kwargs
        SD_ASSIGN_OR_RETURN(PVal kwargs, Pop());
        SD_ASSIGN_OR_RETURN(PVal args, Pop());
        SD_ASSIGN_OR_RETURN(PVal cls, Pop());
        if (cls->kind == Kind::kGlobal && Classify(cls->module, cls->name) != Callable::kNone) {
          return Err(absl::StrCat("NEWOBJ_EX of ", cls->module, ".", cls->name));
        }
        PickleValue empty = scalar(Kind::kTuple);
        SD_ASSIGN_OR_RETURN(PVal result, Call(cls, Make(std::move(empty))));
        SD_RETURN_IF_ERROR(Push(std::move(result)));
        break;
      }
      case 'b': {  // BUILD: state is recorded nowhere; nothing is ever set on or called for a value
        SD_ASSIGN_OR_RETURN(PVal state, Pop());
        SD_ASSIGN_OR_RETURN(PVal target, Top());
        if (target->kind == Kind::kGlobal) return Err(absl::StrCat("BUILD on the global ", target->module, ".", target->name));
        break;
      }
      case 'Q': {  // BINPERSID
        SD_ASSIGN_OR_RETURN(PVal pid, Pop());
        if (!loader_) return Err("persistent id without a loader");
        absl::StatusOr<PVal> v = loader_(pid);
        if (!v.ok()) return Err(v.status().message());
        SD_RETURN_IF_ERROR(Push(*std::move(v)));
        break;
      }
      default:
        return Err(absl::StrCat("unsupported opcode 0x", absl::Hex(op),
                                " (text-protocol, extension or buffer opcodes are not accepted)"));
    }
  }
  return Err("no STOP opcode (truncated pickle)");
}

}  // namespace

std::string PickleValue::Describe() const {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return absl::StrCat("global ", module, ".", name);
    case Kind::kObject: return absl::StrCat("object of class ", module, ".", name);
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

PVal PickleValue::Get(const std::string& key) const {
  for (const auto& kv : dict) {
    if (kv.first->kind == Kind::kString && kv.first->str == key) return kv.second;
  }
  return nullptr;
}

absl::StatusOr<DType> StorageClassDType(const std::string& name) {
  static const std::map<std::string, DType> kMap = {
      {"DoubleStorage", DType::kF64}, {"FloatStorage", DType::kF32},
      {"HalfStorage", DType::kF16},   {"BFloat16Storage", DType::kBF16},
      {"LongStorage", DType::kI64},   {"IntStorage", DType::kI32},
      {"ShortStorage", DType::kI16},  {"CharStorage", DType::kI8},
      {"ByteStorage", DType::kU8},    {"BoolStorage", DType::kBool}};
  auto it = kMap.find(name);
  if (it == kMap.end()) return absl::InvalidArgumentError(absl::StrCat("unknown storage class ", name));
  return it->second;
}

absl::StatusOr<PVal> Unpickle(const uint8_t* data, uint64_t size, const PersistentLoader& loader,
                              const std::string& where, const UnpickleLimits& limits) {
  Unpickler u(data, size, loader, where, limits);
  return u.Run();
}

}  // namespace sd
