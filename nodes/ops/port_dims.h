// The shapes a node's tensor ports promise, with dimensions that can be named (symbolic), so that a
// value of the wrong size is caught at the node where it arrives, named by port and dimension.
//
// A port's dims are written one per axis, comma-separated: a number ("3"), a symbol ("B", "h"),
// a product of them ("h*f", "8*w"), or "?" (anything). The same symbol means the same size on every
// port of one node call:
//   latents "B,C,h,w" -> image "B,3,h*f,w*f"
// binds B, C, h and w from the latents and f (the VAE's scale) from the image's height, then checks
// its width. A dimension whose product still has two unknown symbols once everything else is bound
// constrains nothing. Torch-free: graphs are planned and fuzzed without LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sd {

// One axis: "?" (any), or the product of `factor` and `symbols`.
struct DimExpr {
  bool any = false;
  int64_t factor = 1;
  std::vector<std::string> symbols;
};

// INVALID_ARGUMENT for text that is not dims (empty axes, "2*?", a symbol not
// [A-Za-z_][A-Za-z0-9_]*, numbers < 1 or past 2^31).
absl::StatusOr<std::vector<DimExpr>> ParseDims(const std::string& text);
std::string DescribeDim(const DimExpr& d);

// Solves one node call's dims: tensors are added port by port, then Solve() binds what it can and
// checks the rest. Errors are INVALID_ARGUMENT naming the port, the axis and what was expected
// ("input 'noise' [2, 4, 8, 8]: axis 0 is 2, expected B = 1").
class DimSolver {
 public:
  // `who` names the port in errors ("input 'noise'"). `dims` must parse and have one axis per
  // entry of `shape` (the port's rank was checked before); INVALID_ARGUMENT otherwise.
  absl::Status Add(const std::string& who, const std::string& dims,
                   const std::vector<int64_t>& shape);
  // Binds every symbol that a pending axis determines (repeating until nothing changes) and
  // checks the axes whose symbols are all bound. Axes left with unknowns stay pending for later
  // Add()s. Dims may hold sizes up to 2^62; products past that are errors.
  absl::Status Solve();
  const std::map<std::string, int64_t>& bindings() const { return bound_; }

 private:
  struct Pending {
    std::string who;
    std::string shape;
    size_t axis;
    DimExpr expr;
    int64_t size;
  };
  // OK with `done` set when the axis was checked or bound one symbol; OK and not done when it has
  // two unknowns or more.
  absl::Status Step(const Pending& p, bool& done);
  std::vector<Pending> pending_;
  std::map<std::string, int64_t> bound_;
};

}  // namespace sd
