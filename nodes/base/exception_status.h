// Exceptions end at thread, job and process boundaries: there they become a Status. LibTorch throws
// c10::Error (shape mismatches, allocation failures), the standard library std::bad_alloc; a
// boundary that let one escape would call std::terminate (inside the GEGL plugin, that takes the
// host application down). Torch-free header: the LibTorch specifics live in the .cc.
#pragma once

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sd {

// The Status for an exception caught by `catch (...)` (pass std::current_exception()):
// RESOURCE_EXHAUSTED for allocation failures (std::bad_alloc, LibTorch's "not enough memory" / "out
// of memory"), INTERNAL otherwise; the message starts with `where` and has no C++ backtrace.
absl::Status StatusFromException(std::exception_ptr e, absl::string_view where);

// Runs f (returning absl::Status or absl::StatusOr<T>) and turns any exception into a Status.
template <typename F>
auto CatchExceptions(absl::string_view where, F&& f) -> decltype(f()) {
  try {
    return std::forward<F>(f)();
  } catch (...) {
    return StatusFromException(std::current_exception(), where);
  }
}

}  // namespace sd
