#include "nodes/base/exception_status.h"

#include <c10/util/Exception.h>

#include <new>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sd {
namespace {

bool IsAllocationFailure(absl::string_view what) {
  // LibTorch's CPU allocator says "can't allocate memory ... Cannot allocate memory" (posix_memalign
  // failed) or "not enough memory"; CUDA's says "out of memory".
  for (const char* s : {"not enough memory", "can't allocate memory", "Cannot allocate memory",
                        "out of memory", "Out of memory"}) {
    if (absl::StrContains(what, s)) return true;
  }
  return false;
}

absl::Status Make(absl::string_view where, absl::string_view what, bool allocation) {
  const std::string message = where.empty() ? std::string(what) : absl::StrCat(where, ": ", what);
  return allocation ? absl::ResourceExhaustedError(message) : absl::InternalError(message);
}

}  // namespace

absl::Status StatusFromException(std::exception_ptr e, absl::string_view where) {
  try {
    std::rethrow_exception(e);
  } catch (const c10::Error& err) {
    const std::string what = err.what_without_backtrace();
    return Make(where, what, IsAllocationFailure(what));
  } catch (const std::bad_alloc&) {
    return Make(where, "out of memory (an allocation failed)", true);
  } catch (const std::exception& err) {
    return Make(where, err.what(), IsAllocationFailure(err.what()));
  } catch (...) {
    return Make(where, "unknown exception", false);
  }
}

}  // namespace sd
