// PyTorch checkpoints (.ckpt/.pt/.pth) in the zip format torch.save writes since 1.6: `<prefix>/data.pkl`
// (a pickle of the state dict whose tensors point at storages by persistent id) and `<prefix>/data/<key>`
// (each storage's raw little-endian bytes). Read with the restricted unpickler of pickle.h; never executes
// anything from the file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/base/mapped_file.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

struct CkptContents {
  std::shared_ptr<const MappedFile> file;
  std::vector<TensorView> tensors;
  // State-dict entries that are not tensors (ints, None, ...): tolerated, listed for `inspect`.
  std::vector<std::string> ignored;
  // True when the top level was {"state_dict": {...}, ...} rather than the state dict itself.
  bool nested_state_dict = false;
};

absl::StatusOr<CkptContents> ParseCkpt(std::shared_ptr<const MappedFile> file);

}  // namespace sd
