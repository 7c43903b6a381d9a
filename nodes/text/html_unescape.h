// Python's html.unescape, exactly: named references (HTML5 table, longest-prefix rule for names without
// ';'), decimal and hex references with HTML's remapping of invalid numbers. Input and output are UTF-8.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace sd {

std::string HtmlUnescape(absl::string_view text);

}  // namespace sd
