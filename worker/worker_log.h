// The worker's log: one JSON object per line on stderr, with a timestamp, a level and an event
// name.
//
//   Log("warn", "queue_full", {{"id", id}, {"kind", kind}});
#pragma once

#include <nlohmann/json.hpp>

namespace sd::worker {

void Log(const char* level, const char* event, nlohmann::json fields = nlohmann::json::object());

}  // namespace sd::worker
