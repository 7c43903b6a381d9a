// The one element-type table (nodes/tensor/dtype.h) and its LibTorch bridge: every spelling of
// every type maps back to the type, sizes agree with LibTorch's and the wire checker's, and the
// types that travel or sit in graph files are exactly the ones the wire and graph files have always
// taken.
#include "nodes/tensor/dtype.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nodes/tensor/wire_check.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {
namespace {

constexpr DType kAll[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                          DType::kI32, DType::kI16, DType::kI8,  DType::kU8,   DType::kBool};

TEST(DTypeTest, EverySpellingMapsBack) {
  int wire = 0, proto = 0;
  for (DType d : kAll) {
    SCOPED_TRACE(std::string(DTypeName(d)));
    EXPECT_EQ(*ParseDTypeName(DTypeName(d)), d);
    const torch::ScalarType t = ToTorchDType(d);
    EXPECT_EQ(*FromTorchDType(t), d);
    EXPECT_EQ(DTypeSize(d), static_cast<int>(c10::elementSize(t)));
    EXPECT_EQ(IsFloatingPoint(d), c10::isFloatingType(t));
    if (!KServeName(d).empty()) {
      ++wire;
      EXPECT_EQ(DTypeFromKServe(KServeName(d)), d);
      EXPECT_EQ(WireElementSize(std::string(KServeName(d))), static_cast<size_t>(DTypeSize(d)));
    }
    if (ProtoDType(d) != v1::DTYPE_UNSPECIFIED) {
      ++proto;
      EXPECT_EQ(DTypeFromProto(ProtoDType(d)), d);
    }
  }
  EXPECT_EQ(wire, 7);   // FP64 FP32 FP16 BF16 INT64 INT32 UINT8
  EXPECT_EQ(proto, 5);  // every sd.v1.DType but DTYPE_UNSPECIFIED
  EXPECT_EQ(DTypeFromKServe("BYTES"), std::nullopt);
  EXPECT_EQ(DTypeFromKServe("INT8"), std::nullopt);
  EXPECT_EQ(WireElementSize("BYTES"), 1u);
  EXPECT_EQ(WireElementSize("FP8"), 0u);
  EXPECT_EQ(DTypeFromProto(v1::DTYPE_UNSPECIFIED), std::nullopt);
  EXPECT_FALSE(ParseDTypeName("F8").ok());
  EXPECT_FALSE(FromTorchDType(torch::kComplexFloat).ok());
}

}  // namespace
}  // namespace sd
