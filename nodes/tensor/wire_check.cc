#include "nodes/tensor/wire_check.h"

#include "absl/strings/str_cat.h"
#include "nodes/base/checked_math.h"
#include "nodes/tensor/dtype.h"
#include "nodes/weights/tensor_view.h"

namespace sd {
namespace {

using Kind = WireExpectation::Kind;
using Elements = WireExpectation::Elements;

absl::Status Bad(const std::string& what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

// A scalar travels as shape [1] or [] in exactly one element's bytes.
absl::StatusOr<WireLayout> Scalar(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const std::string& what) {
  if (shape.size() > 1 || (shape.size() == 1 && shape[0] != 1)) {
    return Bad(what, absl::StrCat("a scalar travels as shape [1] or [], got ", ShapeString(shape)));
  }
  const size_t size = WireElementSize(datatype);
  if (raw.size() != size) {
    return Bad(what,
               absl::StrCat(raw.size(), " bytes for one ", datatype, " (", size, " expected)"));
  }
  return WireLayout{datatype, size, 1, 0};
}

absl::StatusOr<WireLayout> String(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const std::string& what) {
  if (datatype != "BYTES")
    return Bad(what, absl::StrCat("expected BYTES (a string), got ", datatype));
  if (shape.size() > 1 || (shape.size() == 1 && shape[0] != 1)) {
    return Bad(what, absl::StrCat("expected one string, got shape ", ShapeString(shape)));
  }
  if (raw.size() < 4) return Bad(what, "BYTES without its 4-byte length");
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i)
    len |= static_cast<uint32_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
  if (len != raw.size() - 4) {
    return Bad(what,
               absl::StrCat("BYTES length says ", len, " but ", raw.size() - 4, " bytes follow"));
  }
  return WireLayout{datatype, 1, len, 4};
}

absl::StatusOr<WireLayout> Tensor(const std::string& datatype, const std::vector<int64_t>& shape,
                                  const std::string& raw, const WireExpectation& expect,
                                  const std::string& what) {
  const bool float_wire = datatype == "FP32" || datatype == "FP16" || datatype == "BF16";
  const bool fits = (expect.elements == Elements::kFloat && float_wire) ||
                    (expect.elements == Elements::kInt64 && datatype == "INT64") ||
                    (expect.elements == Elements::kUInt8 && datatype == "UINT8");
  if (!fits) {
    return Bad(what, absl::StrCat("datatype ", datatype, " does not fit a ",
                                  expect.description.empty() ? "tensor port" : expect.description));
  }
  if (expect.rank >= 0 && static_cast<int>(shape.size()) != expect.rank) {
    return Bad(what,
               absl::StrCat("expected rank ", expect.rank, ", got shape ", ShapeString(shape)));
  }
  absl::StatusOr<uint64_t> numel = CheckedNumel(shape, what);
  if (!numel.ok()) return numel.status();
  const size_t size = WireElementSize(datatype);
  const std::optional<uint64_t> bytes = CheckedMul(*numel, size);
  if (*numel > (uint64_t{1} << 40) || !bytes || *bytes != raw.size()) {
    return Bad(what,
               absl::StrCat(raw.size(), " bytes do not hold a ", datatype, " tensor of shape ",
                            ShapeString(shape),
                            bytes ? absl::StrCat(" (", *bytes, " expected)") : std::string()));
  }
  return WireLayout{datatype, size, *numel, 0};
}

}  // namespace

size_t WireElementSize(const std::string& datatype) {
  if (datatype == "BYTES") return 1;
  const std::optional<DType> d = DTypeFromKServe(datatype);
  return d ? static_cast<size_t>(DTypeSize(*d)) : 0;
}

absl::StatusOr<WireLayout> CheckWireValue(const std::string& datatype,
                                          const std::vector<int64_t>& shape, const std::string& raw,
                                          const WireExpectation& expect, const std::string& what) {
  if (shape.size() > 8) return Bad(what, absl::StrCat("rank ", shape.size(), " is too high"));
  switch (expect.kind) {
    case Kind::kString:
      return String(datatype, shape, raw, what);
    case Kind::kInt:
      if (datatype != "INT64" && datatype != "INT32") {
        return Bad(what, absl::StrCat("expected INT64 (an integer), got ", datatype));
      }
      return Scalar(datatype, shape, raw, what);
    case Kind::kFloat:
      if (datatype != "FP64" && datatype != "FP32" && datatype != "INT64") {
        return Bad(what, absl::StrCat("expected FP64 (a number), got ", datatype));
      }
      return Scalar(datatype, shape, raw, what);
    case Kind::kTensor:
      return Tensor(datatype, shape, raw, expect, what);
  }
  return Bad(what, "the port has no type");
}

}  // namespace sd
