// Real sd-worker processes for integration tests (tests/worker_launcher.h, with this build's
// sd-worker), and the binaries the tests run.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"
#include "tests/worker_launcher.h"

namespace sd::testing {

inline std::string WorkerBin() { return SD_TEST_WORKER_BIN; }
inline std::string SdGraphBin() { return SD_TEST_SDGRAPH_BIN; }

// Writes a test checkpoint to `path` with sd-graph (these tests link no LibTorch); `flags`:
// "--tiny", "--tiny --inpaint", or "" for the full-size one.
inline CommandResult MakeTestCheckpoint(const std::string& path,
                                        const std::string& flags = "--tiny") {
  return RunCommand(SdGraphBin() + " make-test-checkpoint " + Quote(path) + " " + flags);
}

// A worker for tests: sd-worker of this build.
class WorkerProcess : public WorkerLauncher {
 public:
  WorkerProcess() : WorkerLauncher(WorkerBin()) {}
};

}  // namespace sd::testing
