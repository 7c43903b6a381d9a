#include "nodes/models/cpu_choice.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nodes/base/runtime_info.h"
#include "nodes/kernels/cpu_rates.h"

namespace sd::nn {

namespace {

// A file larger than this is not ours to read: it is emptied and written afresh.
constexpr off_t kMaxFileBytes = off_t{1} << 20;

// Tabs and line ends would break a line of the file.
std::string OneField(std::string s) {
  std::replace_if(
      s.begin(), s.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
  return s;
}

void WarnOnce(const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::cerr << "sdgraph: CPU measurements are not shared with other processes: " << why
              << std::endl;
  });
}

// The measurement file, locked for one outermost MeasuredOnThisMachine call and the calls nested in
// its `measure` (a second lock from this process would wait for itself).
class LockedFile {
 public:
  explicit LockedFile(const std::string& path) {
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      WarnOnce(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
    } else if (::flock(fd_, LOCK_EX) != 0) {
      WarnOnce(absl::StrCat("cannot lock ", path, ": ", std::strerror(errno)));
      Close();
    }
  }
  ~LockedFile() { Close(); }
  LockedFile(const LockedFile&) = delete;
  LockedFile& operator=(const LockedFile&) = delete;
  bool ok() const { return fd_ >= 0; }

  // The file's text; false when it cannot be read. A file over kMaxFileBytes is emptied.
  bool ReadAll(std::string* text) {
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    if (size < 0) return false;
    if (size > kMaxFileBytes) {
      text->clear();
      return ::ftruncate(fd_, 0) == 0;
    }
    text->assign(static_cast<size_t>(size), '\0');
    return ::pread(fd_, text->data(), text->size(), 0) == static_cast<ssize_t>(text->size());
  }

  // The value of `name` measured on `machine`, or a negative number when the file has none.
  double Find(const std::string& machine, const std::string& name) {
    std::string text;
    if (!ReadAll(&text)) return -1;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      const std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
      double value = 0;
      if (fields.size() == 3 && fields[0] == machine && fields[1] == name &&
          absl::SimpleAtod(fields[2], &value) && std::isfinite(value) && value >= 0) {
        return value;
      }
    }
    return -1;
  }

  // Rewrites the file without `machine`'s lines; how many went, or -1 when it could not.
  int Drop(const std::string& machine) {
    std::string text;
    if (!ReadAll(&text)) return -1;
    std::string kept;
    int dropped = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      const std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
      if (fields.size() == 3 && fields[0] == machine) {
        ++dropped;
      } else {
        absl::StrAppend(&kept, line, "\n");
      }
    }
    if (::ftruncate(fd_, 0) != 0 ||
        ::pwrite(fd_, kept.data(), kept.size(), 0) != static_cast<ssize_t>(kept.size())) {
      return -1;
    }
    return dropped;
  }

  void Append(const std::string& machine, const std::string& name, double value) {
    const std::string line = absl::StrCat(machine, "\t", name, "\t", value, "\n");
    if (::lseek(fd_, 0, SEEK_END) < 0 ||
        ::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      WarnOnce(absl::StrCat("cannot write the measurement file: ", std::strerror(errno)));
    }
  }

 private:
  void Close() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
    fd_ = -1;
  }
  int fd_ = -1;
};

struct Measurements {
  std::recursive_mutex mu;  // recursive: a measurement may take another
  std::map<std::string, double> known;
  LockedFile* file = nullptr;  // held by the outermost call in progress
};

Measurements& State() {
  static Measurements* state = new Measurements;  // never destroyed: used until exit
  return *state;
}

// The file a call uses: the one an enclosing call holds, else `path` opened and locked into `own`
// (nullptr when there is none or it cannot be locked).
LockedFile* FileInUse(Measurements& state, const std::string& path,
                      std::optional<LockedFile>* own) {
  if (state.file) return state.file;
  if (path.empty()) return nullptr;
  own->emplace(path);
  return (*own)->ok() ? &**own : nullptr;
}

}  // namespace

int ChoiceInForce(int set, const char* env,
                  std::initializer_list<std::pair<const char*, int>> words) {
  if (set >= 0) return set;
  const char* value = std::getenv(env);
  if (!value) return -1;
  for (const auto& [word, choice] : words) {
    if (std::strcmp(value, word) == 0) return choice;
  }
  return -1;
}

double TimedSpeedup(const std::function<void()>& a, const std::function<void()>& b, int rounds) {
  auto seconds = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  a();
  b();
  double best_a = seconds(a), best_b = seconds(b);
  for (int i = 1; i < rounds; ++i) {
    best_a = std::min(best_a, seconds(a));
    best_b = std::min(best_b, seconds(b));
  }
  return best_b > 0 ? best_a / best_b : 0.0;
}

std::string CpuMeasurementsFile() {
  if (const char* path = std::getenv("SDGRAPH_CPU_MEASUREMENTS")) {
    return std::strcmp(path, "off") == 0 ? "" : path;
  }
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return absl::StrCat(xdg, "/sdgraph/cpu-measurements");
  const char* home = std::getenv("HOME");
  if (home && *home) return absl::StrCat(home, "/.cache/sdgraph/cpu-measurements");
  return "";
}

std::string MeasuredMachine() {
  const std::string blas = OpenBlasCore();
  return OneField(absl::StrCat(kernels::CpuModelName(), " | ", kernels::CpuVectorFeatures(), " | ",
                               at::get_num_threads(), " threads | ", blas.empty() ? "BLAS" : blas));
}

std::optional<double> RecordedOnThisMachine(const std::string& name) {
  Measurements& state = State();
  std::lock_guard<std::recursive_mutex> lock(state.mu);
  if (auto it = state.known.find(name); it != state.known.end()) return it->second;
  const std::string path = CpuMeasurementsFile();
  if (path.empty() || !std::filesystem::exists(path)) return std::nullopt;
  std::optional<LockedFile> own;
  LockedFile* file = FileInUse(state, path, &own);
  const double value = file ? file->Find(MeasuredMachine(), OneField(name)) : -1;
  if (value < 0) return std::nullopt;
  return value;
}

absl::StatusOr<int> ForgetThisMachine() {
  Measurements& state = State();
  std::lock_guard<std::recursive_mutex> lock(state.mu);
  state.known.clear();
  const std::string path = CpuMeasurementsFile();
  if (path.empty() || !std::filesystem::exists(path)) return 0;
  LockedFile file(path);
  const int dropped = file.ok() ? file.Drop(MeasuredMachine()) : -1;
  if (dropped < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rewrite the CPU measurement file ", path, ": ", std::strerror(errno)));
  }
  return dropped;
}

double MeasuredOnThisMachine(const std::string& name, const std::function<double()>& measure) {
  Measurements& state = State();
  std::lock_guard<std::recursive_mutex> lock(state.mu);
  if (auto it = state.known.find(name); it != state.known.end()) return it->second;
  const std::string key = OneField(name), machine = MeasuredMachine(), path = CpuMeasurementsFile();
  std::optional<LockedFile> own;  // the outermost call opens and locks the file
  LockedFile* file = FileInUse(state, path, &own);
  double value = file ? file->Find(machine, key) : -1;
  if (value < 0) {
    if (own && file) {
      static std::once_flag once;
      std::call_once(once, [&] {
        std::cerr << "sdgraph: timing this CPU's kernels once for this machine (kept in " << path
                  << ")" << std::endl;
      });
    }
    {
      // The calls nested in `measure` use this call's file; the guard restores the outer one.
      struct Restore {
        Measurements& state;
        LockedFile* outer;
        ~Restore() { state.file = outer; }
      } restore{state, state.file};
      state.file = file;
      value = measure();
    }
    // As the file will say (6 digits), so that this process decides as the next ones will.
    if (!absl::SimpleAtod(absl::StrCat(value), &value)) value = 0;
    if (file) file->Append(machine, key, value);
  }
  state.known[name] = value;
  return value;
}

}  // namespace sd::nn
