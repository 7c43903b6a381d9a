// Starts real sd-worker processes on free loopback ports for tests and benchmarks (the worker
// picks the port and writes it to a port file): their JSON log lines read back, their metrics
// fetched, killed or stopped on purpose. gtest-free, so sd-rpc-bench uses it too.
//
//   WorkerLauncher w(bin);
//   if (!w.Start(models_dir, log_path, {"--preload", "tiny"})) ...;   // w.target(): 127.0.0.1:PORT
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sd::testing {

// The whole file ("" when it cannot be read).
inline std::string ReadLauncherFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// GET http://127.0.0.1:PORT/PATH; "" on failure.
inline std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) resp.append(buf, n);
  ::close(fd);
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// The value of an unlabelled Prometheus sample, or -1.
inline double MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

class WorkerLauncher {
 public:
  explicit WorkerLauncher(std::string bin) : bin_(std::move(bin)) {}
  WorkerLauncher(const WorkerLauncher&) = delete;
  ~WorkerLauncher() { Kill(SIGKILL); }
  // Runs the worker through this command (e.g. {"/usr/bin/taskset", "-c", "0"}); before Start.
  void set_prefix(std::vector<std::string> prefix) { prefix_ = std::move(prefix); }

  // Starts `sd-worker --models DIR --listen 127.0.0.1:PORT ... EXTRA` (PORT 0: a free one) and
  // waits until it listens. Returns false if it did not come up in 60 s.
  bool Start(const std::string& models, const std::string& log,
             const std::vector<std::string>& extra = {}, int port = 0) {
    models_ = models;
    log_ = log;
    extra_ = extra;
    port_file_ = log + ".port";
    std::remove(port_file_.c_str());
    std::vector<std::string> args = prefix_;
    for (const std::string& a : std::initializer_list<std::string>{
             bin_, "--models", models, "--listen", host_ + ":" + std::to_string(port),
             "--port-file", port_file_, "--metrics-listen", "127.0.0.1:0", "--threads", "1",
             "--drain-seconds", "10"})
      args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 2);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 600; ++i) {
      std::ifstream f(port_file_);
      std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (!text.empty()) {
        auto j = nlohmann::json::parse(text, nullptr, false);
        if (!j.is_discarded()) {
          port_ = j["port"];
          metrics_port_ = j["metrics_port"];
          return true;
        }
      }
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // Starts again on the same port, with the same flags (a restarted worker).
  bool Restart() { return Start(models_, log_, extra_, port_); }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  // SIGTERM, then the exit code (-1 if it did not exit in 30 s or died of a signal).
  int Stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Kill(SIGKILL);
    return -1;
  }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string target() const { return host_ + ":" + std::to_string(port_); }
  // The loopback address to listen on (before Start; default 127.0.0.1). Linux routes all of
  // 127.0.0.0/8 to loopback, so workers on 127.0.0.2 and 127.0.0.3 can share a port number.
  void set_host(const std::string& host) { host_ = host; }
  std::string Metrics() const { return HttpGet(metrics_port_, "/metrics"); }
  int metrics_port() const { return metrics_port_; }
  const std::string& log() const { return log_; }
  size_t LogSize() const { return ReadLauncherFile(log_).size(); }
  // The log's JSON lines from byte `from` on, with event `event` ("" : all).
  std::vector<nlohmann::json> Events(const std::string& event, size_t from = 0) const {
    std::vector<nlohmann::json> out;
    std::istringstream in(ReadLauncherFile(log_).substr(std::min(from, LogSize())));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object() && (event.empty() || j.value("event", "") == event))
        out.push_back(j);
    }
    return out;
  }
  // Resident memory in bytes (/proc/PID/status VmRSS).
  uint64_t Rss() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(f, line);) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    }
    return 0;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0, metrics_port_ = 0;
  std::string host_ = "127.0.0.1";
  std::string models_, log_, port_file_;
  std::vector<std::string> extra_;
  std::string bin_;
  std::vector<std::string> prefix_;
};

}  // namespace sd::testing
