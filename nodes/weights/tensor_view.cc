#include "nodes/weights/tensor_view.h"

#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/checked_math.h"

namespace sd {

std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * std::max<int64_t>(shape[i + 1], 1);
  }
  return strides;
}

bool TensorView::IsContiguous() const {
  if (numel <= 1) return true;
  std::vector<int64_t> want = ContiguousStrides(shape);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != 1 && strides[i] != want[i]) return false;
  }
  return true;
}

absl::StatusOr<uint64_t> CheckedNumel(const std::vector<int64_t>& shape, absl::string_view what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in shape ", ShapeString(shape)));
    }
    // At most 2^60 elements, so that a byte count (up to 16 bytes an element) fits in 64 bits too.
    const std::optional<uint64_t> product = CheckedMul(n, static_cast<uint64_t>(d));
    if (!product || *product > (uint64_t{1} << 60)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape ", ShapeString(shape), " overflows"));
    }
    n = *product;
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace sd
