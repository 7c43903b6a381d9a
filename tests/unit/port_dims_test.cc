// Port dims (nodes/ops/port_dims.h): the grammar, the solver's bindings and deferrals, and the
// messages that name the port and the axis.
#include "nodes/ops/port_dims.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nodes/ops/node_contract.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

TEST(PortDimsTest, ParsesNumbersSymbolsProductsAndAny) {
  auto d = ParseDims("B, 3,h*f ,8*w*2,?");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 5u);
  EXPECT_EQ(DescribeDim((*d)[0]), "B");
  EXPECT_EQ(DescribeDim((*d)[1]), "3");
  EXPECT_EQ(DescribeDim((*d)[2]), "h*f");
  EXPECT_EQ((*d)[3].factor, 16);
  EXPECT_EQ(DescribeDim((*d)[3]), "16*w");
  EXPECT_TRUE((*d)[4].any);
  for (const char* bad :
       {"", "B,,C", "2*?", "0", "-1", "3x", "h*", "4294967296", "65536*65536", "a b"}) {
    EXPECT_FALSE(ParseDims(bad).ok()) << bad;
  }
}

TEST(PortDimsTest, BindsSymbolsAcrossPortsAndChecksTheRest) {
  DimSolver s;
  ASSERT_TRUE(s.Add("input 'latents'", "B,C,h,w", {2, 4, 8, 6}).ok());
  ASSERT_TRUE(s.Solve().ok());
  EXPECT_EQ(s.bindings().at("B"), 2);
  EXPECT_EQ(s.bindings().at("w"), 6);
  ASSERT_TRUE(s.Add("output 'image'", "B,3,h*f,w*f", {2, 3, 64, 48}).ok());
  ASSERT_TRUE(s.Solve().ok());
  EXPECT_EQ(s.bindings().at("f"), 8);

  DimSolver wrong;
  ASSERT_TRUE(wrong.Add("input 'latents'", "B,C,h,w", {2, 4, 8, 6}).ok());
  ASSERT_TRUE(wrong.Add("input 'noise'", "B,C,h,w", {2, 4, 8, 7}).ok());
  absl::Status st = wrong.Solve();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "input 'noise' [2, 4, 8, 7]: axis 3 is 7, expected w = 6");
}

TEST(PortDimsTest, AnAxisWithTwoUnknownsWaitsForAnotherPort) {
  // VaeEncode: the image's axes are h*f and w*f; only the latents say what h and w are.
  DimSolver s;
  ASSERT_TRUE(s.Add("input 'image'", "B,3,h*f,w*f", {1, 3, 64, 64}).ok());
  ASSERT_TRUE(s.Solve().ok());
  EXPECT_FALSE(s.bindings().count("f"));
  ASSERT_TRUE(s.Add("output 'latents'", "B,C,h,w", {1, 4, 8, 9}).ok());
  absl::Status st = s.Solve();
  EXPECT_THAT(
      st.message(),
      HasSubstr("input 'image' [1, 3, 64, 64]: axis 3 is 64, expected w*f = 72 (w=9, f=8)"));
  // Still two unknowns at the end: that axis constrains nothing.
  DimSolver loose;
  ASSERT_TRUE(loose.Add("input 'x'", "a*b", {12}).ok());
  EXPECT_TRUE(loose.Solve().ok());
  // A symbol twice in one axis is not solved for (h*h), only checked once h is known.
  DimSolver squared;
  ASSERT_TRUE(squared.Add("input 'x'", "h*h,h", {10, 3}).ok());
  EXPECT_THAT(squared.Solve().message(), HasSubstr("axis 0 is 10, expected h*h = 9 (h=3)"));
}

TEST(PortDimsTest, MultiplesZerosAndHugeSizes) {
  DimSolver s;
  ASSERT_TRUE(s.Add("input 'mask'", "8*h,8*w,?", {100, 64, 1}).ok());
  EXPECT_THAT(s.Solve().message(), HasSubstr("axis 0 is 100, expected 8*h: not a multiple of 8"));
  DimSolver zero;
  ASSERT_TRUE(zero.Add("input 'x'", "B,h", {0, 5}).ok());
  ASSERT_TRUE(zero.Add("input 'y'", "B*n,h", {0, 5}).ok());
  EXPECT_TRUE(zero.Solve().ok());
  DimSolver huge;
  ASSERT_TRUE(huge.Add("input 'x'", "a,b", {int64_t{1} << 40, int64_t{1} << 40}).ok());
  ASSERT_TRUE(huge.Add("input 'y'", "a*b", {1}).ok());
  EXPECT_THAT(huge.Solve().message(), HasSubstr("too large"));
  DimSolver negative;
  EXPECT_FALSE(negative.Add("input 'x'", "a", {-1}).ok());
  EXPECT_THAT(negative.Add("input 'x'", "a,b", {1}).message(), HasSubstr("expected 2 axes"));
}

TEST(PortDimsTest, ContractsCarryTheirDimsAndRefuseBadOnes) {
  NodeContract c;
  c.inputs.push_back({"latents", TensorPort(v1::FLOAT32, 4), false, "", "B,C,h,w"});
  c.outputs.push_back({"image", TensorPort(v1::FLOAT32, 4), false, "", "B,3,h*f,w*f"});
  ASSERT_TRUE(CheckContract("Decode", c).ok());
  auto back = ContractFromInfo(ContractToInfo("Decode", c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Output("image")->dims, "B,3,h*f,w*f");
  c.outputs[0].dims = "B,3,h";
  EXPECT_THAT(CheckContract("Decode", c).message(), HasSubstr("dims 'B,3,h' for rank 4"));
  c.outputs[0].dims = "B,3,h,w";
  c.inputs.push_back({"t", ScalarPort(v1::FLOAT), false, "", "B"});
  EXPECT_THAT(CheckContract("Decode", c).message(), HasSubstr("dims on a float"));
  // A worker's catalog with a bad dims string is refused when read.
  v1::NodeKindInfo info = ContractToInfo("Decode", c);
  info.mutable_input(0)->set_dims("B,,C,h");
  EXPECT_FALSE(ContractFromInfo(info).ok());
}

}  // namespace
}  // namespace sd
