// Small file reads and atomic writes shared by the hosts, the worker and the tools.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sd {

// The whole file as bytes; NOT_FOUND "<what> <path>: cannot read the file" when it cannot be
// opened.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what);

// Every file the project writes goes through here: `write` writes a temporary file beside `path`
// (same folder, same extension: image writers choose the format by it), which is renamed into place
// only when `write` returns OK, and removed otherwise, so readers see the old file or the whole new
// one, never a part. `write`'s error is returned as it is; a failed rename is DATA_LOSS naming
// `path`.
absl::Status WriteAtomically(const std::string& path,
                             const std::function<absl::Status(const std::string& tmp)>& write);

// Writes `bytes` to `path` (WriteAtomically); PERMISSION_DENIED "<what> <path>: ..." when it
// cannot.
absl::Status WriteWholeFile(const std::string& path, absl::string_view bytes, absl::string_view what);

// The folder of the running executable ("" when /proc/self/exe cannot be read).
std::string DirOfExecutable();
// Whether `path` can be opened for reading.
bool IsReadableFile(const std::string& path);

// A bearer token: the first line of `path` without surrounding whitespace (INVALID_ARGUMENT when
// empty); with no path, $SD_WORKER_TOKEN ("" when unset). Workers and clients read tokens the same
// way.
absl::StatusOr<std::string> ReadToken(const std::string& path);

}  // namespace sd
