#include "tests/bench/reference_case.h"

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "nodes/base/file_util.h"
#include "tests/test_util.h"

namespace sd {

absl::Status RunProgram(const std::vector<std::string>& command,
                        const std::map<std::string, std::string>& env) {
  if (command.empty()) return absl::InvalidArgumentError("no command to run");
  std::string line;
  for (const auto& [name, value] : env)
    absl::StrAppend(&line, name, "=", testing::Quote(value), " ");
  line += "exec";
  for (const std::string& a : command) absl::StrAppend(&line, " ", testing::Quote(a));
  const testing::CommandResult r = testing::RunCommand(line);
  std::cout << r.out << std::flush;
  std::cerr << r.err << std::flush;
  if (r.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(command[0], " failed (",
                                          r.exit_code >= 0
                                              ? absl::StrCat("exit status ", r.exit_code)
                                              : absl::StrCat("signal ", r.signal),
                                          r.exit_code == 127 ? ": could not be started" : "", ")"));
}

absl::StatusOr<ReferenceRun> RunReference(const ReferenceOptions& o) {
  if (!std::filesystem::exists(o.script)) {
    return absl::NotFoundError(absl::StrCat("the reference script ", o.script,
                                            " is not there (it lives in the source tree)"));
  }
  std::vector<std::string> command = {o.python,    o.script,
                                      "--model",   o.model,
                                      "--size",    std::to_string(o.size),
                                      "--threads", std::to_string(o.threads),
                                      "--repeat",  std::to_string(o.repeat),
                                      "--json",    o.json_path};
  if (!o.golden_dir.empty()) {
    command.push_back("--golden");
    command.push_back(o.golden_dir);
  }
  if (absl::Status s = RunProgram(command); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("the reference (", o.script, "): ", s.message()));
  }
  auto text = ReadWholeFile(o.json_path, "the reference's results");
  if (!text.ok()) return text.status();
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InternalError(o.json_path + ": not a JSON object");
  ReferenceRun run;
  run.torch_version = j.value("torch", "");
  for (const char* c : {"unet2", "vae_dec"}) {
    if (!j.contains(c) || !j[c].is_object() || !j[c].contains("seconds") ||
        !j[c]["seconds"].is_number()) {
      return absl::InternalError(absl::StrCat(o.json_path, ": no seconds for ", c));
    }
    run.seconds[c] = j[c]["seconds"].get<double>();
  }
  if (j.contains("golden_max_abs") && j["golden_max_abs"].is_object()) {
    for (const auto& [stage, v] : j["golden_max_abs"].items()) {
      if (v.is_number()) run.golden_max_abs[stage] = v.get<double>();
    }
  }
  return run;
}

}  // namespace sd
