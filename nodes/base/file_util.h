// Small file reads shared by the hosts and the worker.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sd {

// The whole file as bytes; NOT_FOUND "<what> <path>: cannot read the file" when it cannot be
// opened.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what);

// Writes `bytes` to `path` through a temporary file in the same folder renamed into place, so readers never
// see a partial file; PERMISSION_DENIED "<what> <path>: ..." when it cannot.
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
