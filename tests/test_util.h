// Helpers shared by the tests: where the reference data lives, temporary folders, running commands.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sd::testing {

// ../shared of the checkout (the golden vectors); SDGRAPH_SHARED_DIR overrides.
inline std::string SharedDir() {
  if (const char* e = std::getenv("SDGRAPH_SHARED_DIR"); e && *e) return e;
  return SD_TEST_SHARED_DIR;
}
inline std::string GoldenDir() { return SharedDir() + "/golden"; }
inline std::string TokenizerDir() { return SD_TEST_TOKENIZER_DIR; }
inline std::string PythonDir() { return SD_TEST_PYTHON_DIR; }
// "python3 SCRIPT" for a script of tests/python, run by the Python that has python3-torch.
inline std::string PythonScript(const std::string& script) {
  return std::string(SD_TEST_PYTHON) + " '" + PythonDir() + "/" + script + "'";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// A fresh folder under $TMPDIR, removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sdgraph-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;    // -1 when it did not exit (a signal ended it)
  int signal = 0;        // the signal that ended it, or 0
  long peak_rss_kb = 0;  // the largest resident set of the command (and what it waited for)
  std::string out, err;
};

// Runs `command` through the shell, capturing stdout and stderr. A command line that is one program
// should start with `exec` for peak_rss_kb to be that program's alone (and for `pid` to be its).
// When `pid` is given, the child's process id is stored there as soon as it exists (for signalling
// it from another thread), and -1 once it has been waited for.
inline CommandResult RunCommand(const std::string& command, std::atomic<pid_t>* pid_out = nullptr) {
  TempDir tmp;
  const std::string out = tmp.File("out"), err = tmp.File("err");
  const std::string line = command + " >" + out + " 2>" + err;
  CommandResult r;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid_out) pid_out->store(pid);
  int status = 0;
  struct rusage usage {};
  while (pid > 0 && ::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  if (pid > 0 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (pid > 0 && WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  if (pid_out) pid_out->store(-1);
  r.peak_rss_kb = usage.ru_maxrss;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

}  // namespace sd::testing
