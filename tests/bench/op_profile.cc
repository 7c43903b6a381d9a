#include "tests/bench/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
double g_flops = 0;
thread_local std::vector<Frame> t_stack;

std::vector<int64_t> SizesOf(const c10::IValue& v) {
  return v.isTensor() ? v.toTensor().sizes().vec() : std::vector<int64_t>();
}

// int[] arguments (also the SymInt[] kind, whose elements are plain ints here).
std::vector<int64_t> IntsOf(const c10::IValue& v) {
  if (v.isIntList()) return v.toIntVector();
  std::vector<int64_t> out;
  if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) {
      if (e.isInt())
        out.push_back(e.toInt());
      else if (e.isSymInt())
        out.push_back(e.toSymInt().expect_int());
    }
  }
  return out;
}

// 2 x multiply-adds of mm / addmm / bmm / baddbmm and of convolutions (counted once, at
// aten::convolution).
double FlopsOf(const at::RecordFunction& fn) {
  const std::string name = fn.name();
  const auto inputs = fn.inputs();
  auto product = [](const std::vector<int64_t>& a, const std::vector<int64_t>& b) -> double {
    if (a.size() < 2 || b.size() < 2) return 0;
    double batch = 1;
    for (size_t i = 0; i + 2 < a.size(); ++i) batch *= static_cast<double>(a[i]);
    return 2.0 * batch * a[a.size() - 2] * a.back() * b.back();
  };
  if ((name == "aten::mm" || name == "aten::bmm") && inputs.size() >= 2)
    return product(SizesOf(inputs[0]), SizesOf(inputs[1]));
  if ((name == "aten::addmm" || name == "aten::baddbmm") && inputs.size() >= 3) {
    return product(SizesOf(inputs[1]), SizesOf(inputs[2]));
  }
  if (name == "aten::convolution" && inputs.size() >= 9) {
    const auto x = SizesOf(inputs[0]), w = SizesOf(inputs[1]);
    if (x.size() != 4 || w.size() != 4) return 0;
    const auto stride = IntsOf(inputs[3]), pad = IntsOf(inputs[4]), dil = IntsOf(inputs[5]);
    if (stride.empty() || pad.empty() || dil.empty()) return 0;
    auto dim = [](const std::vector<int64_t>& v, size_t i) {
      return v.size() == 1 ? v[0] : v[i];
    };  // [k] means [k, k]
    const double ho = (x[2] + 2 * dim(pad, 0) - dim(dil, 0) * (w[2] - 1) - 1) / dim(stride, 0) + 1;
    const double wo = (x[3] + 2 * dim(pad, 1) - dim(dil, 1) * (w[3] - 1) - 1) / dim(stride, 1) + 1;
    return 2.0 * x[0] * w[0] * ho * wo * w[1] * w[2] * w[3];  // w[1] is already C_in / groups
  }
  return 0;
}

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  t_stack.push_back({fn.name(), Clock::now(), 0});
  if (const double flops = FlopsOf(fn); flops > 0) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_flops += flops;
  }
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
    g_flops = 0;
  }
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&OnStart, &OnEnd)
                                      .scopes({at::RecordScope::FUNCTION})
                                      .needsInputs(true));
}

OpProfiler::~OpProfiler() { at::removeCallback(handle_); }

std::vector<OpTime> OpProfiler::Results() const {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<OpTime> out;
  for (const auto& [n, t] : *g_times) out.push_back(t);
  std::sort(out.begin(), out.end(),
            [](const OpTime& a, const OpTime& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

double OpProfiler::Flops() const {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_flops;
}

void PrintTopOperators(const std::vector<OpTime>& ops, double total, const std::string& outside) {
  std::printf("  top operators by self time\n  %-40s %10s %7s %8s\n", "operator", "self s", "share",
              "calls");
  double in_ops = 0;
  for (const OpTime& op : ops) in_ops += op.self_seconds;
  for (size_t i = 0; i < ops.size() && i < 15; ++i) {
    std::printf("  %-40s %10.3f %6.1f%% %8lld\n", ops[i].name.c_str(), ops[i].self_seconds,
                100.0 * ops[i].self_seconds / total, static_cast<long long>(ops[i].calls));
  }
  std::printf("  %-40s %10.3f %6.1f%%\n", outside.c_str(), total - in_ops,
              100.0 * (total - in_ops) / total);
}

}  // namespace sd
