// What a worker accepts from a caller: which node kinds it serves, and how large the tensors and
// strings of a request may be. A worker is reachable over the network; without these bounds one
// call (Noise of any size, Tokenize of a megabyte-long word, a 16k x 16k latent) could take all its
// memory or hours of compute, and client-chosen metric labels could grow without bound.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nodes/ops/node.h"

namespace sd::worker {

struct RequestLimits {
  int64_t max_image_side = 2048;         // pixels; latents may be 1/8 of it on a side
  int64_t max_batch = 8;                 // first dimension of every tensor
  int64_t max_context_tokens = 77 * 8;   // second dimension of token ids and contexts
  int64_t max_string_bytes = 16 * 1024;  // each string input (prompts)
  int64_t max_loop_steps = 1000;         // steps of a loop in a graph run (SD's 1000 timesteps)
};

// The kinds a worker serves. `spec` is "" (the kinds that compute with a model: ClipEncode,
// UNetStep, ControlNet, VaeEncode, VaeDecode — the only ones the distributed runtime sends), "all",
// or a comma list of registered kinds (INVALID_ARGUMENT naming an unknown one).
absl::StatusOr<std::set<std::string>> ParseServedKinds(const std::string& spec);

// The registered kind `kind` when it is in `served`; NOT_FOUND otherwise (unknown, or not served
// here, naming what is).
absl::StatusOr<const NodeKind*> FindServedKind(const std::string& kind,
                                               const std::set<std::string>& served);

// The metrics label for a call's kind: the kind when registered, else "other" (labels never come
// from what a client typed).
std::string MetricKindLabel(const std::string& kind);

// Checks one decoded input against the limits: tensor `shape` (rank >= 2: batch first; rank 4:
// [B, C, H, W], images when C == 3, else latent-sized), or a string of `string_bytes` bytes
// (shape empty); `packed_residuals`: ControlNet residuals [B, N] (PackControl), N bounded by the
// largest image. INVALID_ARGUMENT names `what`, the bound and the flag that raises it.
absl::Status CheckInputSize(const std::string& what, const std::vector<int64_t>& shape,
                            int64_t string_bytes, const RequestLimits& limits,
                            bool packed_residuals = false);

// Integer inputs that size the work: `width` and `height` (pixels) at most max_image_side,
// `steps` at most max_loop_steps.
absl::Status CheckIntInput(const std::string& what, const std::string& port, int64_t value,
                           const RequestLimits& limits);

// Whether `kind`'s input `port` holds ControlNet residuals packed [B, N] (PackControl).
bool IsPackedResiduals(const std::string& kind, const std::string& port);

// One node's inputs in a graph run, checked as a node call's are (tensors, strings, integers).
absl::Status CheckNodeInputs(const std::string& kind, const std::map<std::string, Value>& inputs,
                             const RequestLimits& limits);

}  // namespace sd::worker
