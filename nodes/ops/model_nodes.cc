// Models as graph values (ComfyUI's LoraLoader and VAELoader): each kind takes a model reference
// (model_ref.h) and hands on the same with a patch, for the `model` input of the nodes that
// compute with one. They run in the host before anything else, as loading a model does: their
// inputs are graph inputs or values, never what a node computes.
//   node { kind: "ApplyLora" name: "style" input: "lora=@lora" input: "unet=@lora_unet" }
//   node { kind: "ApplyLora" name: "detail" input: "model=style.model" input: "lora=#detail:0.5" }
//   node { kind: "ApplyVae" name: "vae" input: "model=detail.model" input: "vae=#vae-ft-mse" }
//   node { kind: "UNetStep" ... input: "model=vae.model" }
// An empty or unset patch passes the model on unchanged, so a graph can offer an optional one.
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "nodes/ops/node.h"
#include "nodes/weights/model_ref.h"

namespace sd {

// What both kinds share: the model they start from, and the run's naming of files.
class ModelNode : public NodeKernel {
 public:
  static constexpr OptionalInput<std::string> kModel{
      "model", "a model reference (another model node's); unwired: the run's model"};
  static constexpr Output<std::string> kOut{"model", "the model, patched"};
  absl::Status Open(RunContext& ctx) override {
    run_model_ = ctx.checkpoint;
    part_file_ = ctx.part_file;
    return absl::OkStatus();
  }

 protected:
  absl::StatusOr<std::string> File(const char* part, const std::string& name) const {
    return part_file_ ? part_file_(part, name) : absl::StatusOr<std::string>(name);
  }
  // Hands on the input model with `patch` applied, or unchanged when `given` is empty.
  absl::Status Patch(const NodeInputs& in, NodeOutputs& out, const std::string& given,
                     const std::function<absl::Status(ModelRef&)>& patch) const {
    const std::string base = in[kModel].value_or(run_model_);
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(base));
    if (given.empty()) {
      out.Set(kOut, base);
      return absl::OkStatus();
    }
    SD_RETURN_IF_ERROR(patch(ref));
    out.Set(kOut, ref.Format());
    return absl::OkStatus();
  }

 private:
  std::string run_model_;
  std::function<absl::StatusOr<std::string>(const std::string&, const std::string&)> part_file_;
};

class ApplyLora : public ModelNode {
 public:
  static constexpr OptionalInput<std::string> kLora{
      "lora", "NAME[:UNET[:TEXT]]: a LoRA file or its name; unset or empty: none"};
  static constexpr OptionalInput<double> kUnet{"unet", "strength on the UNet (default 1)"};
  static constexpr OptionalInput<double> kText{"text", "strength on the text encoder (default 1)"};
  static NodeContract Contract() {
    return {Ports(kModel, kLora, kUnet, kText), Ports(kOut), nullptr,
            "a model with a LoRA applied (model -> model), for the `model` input of model nodes"};
  }
  explicit ApplyLora(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const std::string spec = in[kLora].value_or("");
    return Patch(in, out, spec, [&](ModelRef& ref) -> absl::Status {
      SD_ASSIGN_OR_RETURN(LoraRef lora, ParseLoraSpec(spec));
      SD_RETURN_IF_ERROR(Strength(in, kUnet, &lora.unet));
      SD_RETURN_IF_ERROR(Strength(in, kText, &lora.text));
      SD_ASSIGN_OR_RETURN(lora.name, File("lora", lora.name));
      ref.loras.push_back(std::move(lora));
      return absl::OkStatus();
    });
  }

 private:
  // `port`'s value, when wired, over the spec's.
  static absl::Status Strength(const NodeInputs& in, const OptionalInput<double>& port,
                               double* strength) {
    const std::optional<double> given = in[port];
    if (!given) return absl::OkStatus();
    if (!std::isfinite(*given)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", port.name(), "': strength ", *given, " is not finite"));
    }
    *strength = *given;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ApplyLora);

class ApplyVae : public ModelNode {
 public:
  static constexpr OptionalInput<std::string> kVae{
      "vae", "a standalone VAE file or its name (as --vae); unset or empty: the model's own"};
  static NodeContract Contract() {
    return {Ports(kModel, kVae), Ports(kOut), nullptr,
            "a model with its VAE replaced (model -> model), for the `model` input of model nodes"};
  }
  explicit ApplyVae(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const std::string vae = in[kVae].value_or("");
    return Patch(in, out, vae, [&](ModelRef& ref) -> absl::Status {
      SD_ASSIGN_OR_RETURN(ref.vae, File("vae", vae));
      return absl::OkStatus();
    });
  }
};
SD_REGISTER_NODE(ApplyVae);

}  // namespace sd
