// Values into the tensors of KServe v2 messages and of ours that reuse them (RunGraphRequest,
// RunGraphEvent): each a named, typed, shaped tensor whose raw little-endian bytes go in the
// message's raw contents at the same index.
//
//   SD_RETURN_IF_ERROR(AddInputTensor("latents", value, WireDType::kF32, &request));
#pragma once

#include <string>
#include <utility>

#include "nodes/base/status_macros.h"
#include "nodes/tensor/wire.h"

namespace sd {

template <typename Tensor>
void DescribeWireTensor(const std::string& name, const WireTensor& w, Tensor* t) {
  t->set_name(name);
  t->set_datatype(w.datatype);
  for (int64_t d : w.shape) t->add_shape(d);
}

// Appends `value` as input `name` of `m` (ModelInferRequest, RunGraphRequest).
template <typename Message>
absl::Status AddInputTensor(const std::string& name, const Value& value, WireDType wire,
                            Message* m) {
  SD_ASSIGN_OR_RETURN(WireTensor w, EncodeValue(value, wire));
  DescribeWireTensor(name, w, m->add_inputs());
  m->add_raw_input_contents(std::move(w.raw));
  return absl::OkStatus();
}

// Appends `value` as output `name` of `m` (ModelInferResponse, RunGraphEvent).
template <typename Message>
absl::Status AddOutputTensor(const std::string& name, const Value& value, WireDType wire,
                             Message* m) {
  SD_ASSIGN_OR_RETURN(WireTensor w, EncodeValue(value, wire));
  DescribeWireTensor(name, w, m->add_outputs());
  m->add_raw_output_contents(std::move(w.raw));
  return absl::OkStatus();
}

}  // namespace sd
