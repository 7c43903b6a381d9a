#include "tests/bench/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

namespace sd {
namespace {

using Clock = std::chrono::steady_clock;

struct Frame {
  const char* name;
  Clock::time_point start;
  double children = 0;
};

std::mutex g_mu;
std::map<std::string, OpTime>* g_times = new std::map<std::string, OpTime>();
thread_local std::vector<Frame> t_stack;

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  t_stack.push_back({fn.name(), Clock::now(), 0});
  return nullptr;
}

void OnEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (t_stack.empty()) return;
  Frame f = t_stack.back();
  t_stack.pop_back();
  const double total = std::chrono::duration<double>(Clock::now() - f.start).count();
  if (!t_stack.empty()) t_stack.back().children += total;
  std::lock_guard<std::mutex> lock(g_mu);
  OpTime& t = (*g_times)[f.name];
  t.name = f.name;
  t.self_seconds += total - f.children;
  ++t.calls;
}

}  // namespace

OpProfiler::OpProfiler() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_times->clear();
  }
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&OnStart, &OnEnd).scopes({at::RecordScope::FUNCTION}));
}

OpProfiler::~OpProfiler() { at::removeCallback(handle_); }

std::vector<OpTime> OpProfiler::Results() const {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<OpTime> out;
  for (const auto& [n, t] : *g_times) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

}  // namespace sd
