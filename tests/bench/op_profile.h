// A small operator profiler for sd-bench --profile: times every ATen operator through RecordFunction
// callbacks and reports self time (children excluded) per operator name, so the next optimisation is
// chosen by measurement.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sd {

struct OpTime {
  std::string name;
  double self_seconds = 0;
  int64_t calls = 0;
};

class OpProfiler {
 public:
  OpProfiler();   // starts recording on every thread
  ~OpProfiler();  // stops
  // Operators by self time, longest first.
  std::vector<OpTime> Results() const;
  // Floating-point operations of the matrix products and convolutions seen (2 per multiply-add), counted
  // from their input shapes: what "GFLOP/s" is measured against.
  double Flops() const;

 private:
  uint64_t handle_;
};

// Prints the first 15 of `ops` (Results()) with their share of `total` seconds, then the time spent
// outside every ATen operator under `outside`.
void PrintTopOperators(const std::vector<OpTime>& ops, double total, const std::string& outside);

}  // namespace sd
