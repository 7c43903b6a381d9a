// CPU measurements kept per machine (nodes/models/cpu_choice.h): read back by name for this
// machine only, written once, the file locked while a measurement runs (so processes take turns),
// nested measurements, and files that are not ours.
#include "nodes/models/cpu_choice.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace sd {
namespace {

class CpuMeasurementsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* old = std::getenv("SDGRAPH_CPU_MEASUREMENTS");
    if (old) saved_ = old;
    had_ = old != nullptr;
    ::setenv("SDGRAPH_CPU_MEASUREMENTS", file_.c_str(), 1);
  }
  void TearDown() override {
    if (had_) {
      ::setenv("SDGRAPH_CPU_MEASUREMENTS", saved_.c_str(), 1);
    } else {
      ::unsetenv("SDGRAPH_CPU_MEASUREMENTS");
    }
  }
  std::string Contents() const {
    std::ifstream in(file_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Names are per process once measured: each test uses its own.
  static std::string Name(const char* what) {
    return std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + " " +
           what;
  }

  testing::TempDir dir_;
  std::string file_ = dir_.path() + "/sub/cpu-measurements";  // the folder is made on first use
  std::string saved_;
  bool had_ = false;
};

TEST_F(CpuMeasurementsTest, MeasuresOnceAndWritesTheMachineNameAndValue) {
  int calls = 0;
  const std::string name = Name("x");
  EXPECT_EQ(nn::MeasuredOnThisMachine(name, [&] { return ++calls, 1.75; }), 1.75);
  EXPECT_EQ(nn::MeasuredOnThisMachine(name, [&] { return ++calls, 9.0; }), 1.75);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Contents(), nn::MeasuredMachine() + "\t" + name + "\t1.75\n");
  EXPECT_NE(nn::MeasuredMachine().find(" threads | "), std::string::npos) << nn::MeasuredMachine();
}

TEST_F(CpuMeasurementsTest, ReadsWhatAnotherProcessMeasuredOnThisMachineOnly) {
  const std::string mine = Name("mine"), other = Name("other machine");
  std::filesystem::create_directories(dir_.path() + "/sub");
  std::ofstream(file_) << "another CPU | avx2 | 2 threads | BLAS\t" << other << "\t7\n"
                       << nn::MeasuredMachine() << "\t" << mine << "\t2.5\n";
  int calls = 0;
  EXPECT_EQ(nn::MeasuredOnThisMachine(mine, [&] { return ++calls, 1.0; }), 2.5);
  EXPECT_EQ(nn::MeasuredOnThisMachine(other, [&] { return ++calls, 0.5; }), 0.5);
  EXPECT_EQ(calls, 1);
}

TEST_F(CpuMeasurementsTest, IgnoresLinesThatAreNotValues) {
  const std::string name = Name("y"), machine = nn::MeasuredMachine();
  std::filesystem::create_directories(dir_.path() + "/sub");
  std::ofstream(file_) << machine << "\t" << name << "\tnan\n"
                       << machine << "\t" << name << "\t-1\n"
                       << machine << "\t" << name << "\tfast\n"
                       << machine << "\t" << name << "\n"
                       << machine << "\t" << name << "\t1\textra\n"
                       << "\n\t\t\n";
  EXPECT_EQ(nn::MeasuredOnThisMachine(name, [] { return 3.0; }), 3.0);
  EXPECT_NE(Contents().find(machine + "\t" + name + "\t3\n"), std::string::npos);
}

TEST_F(CpuMeasurementsTest, AFileTooLargeToBeOursIsWrittenAfresh) {
  const std::string name = Name("z");
  std::filesystem::create_directories(dir_.path() + "/sub");
  std::ofstream(file_) << std::string(size_t{2} << 20, 'x');
  EXPECT_EQ(nn::MeasuredOnThisMachine(name, [] { return 4.0; }), 4.0);
  EXPECT_EQ(Contents(), nn::MeasuredMachine() + "\t" + name + "\t4\n");
}

TEST_F(CpuMeasurementsTest, HoldsTheFileLockedWhileMeasuringAndNests) {
  const std::string outer = Name("outer"), inner = Name("inner");
  bool locked_by_us = false;
  const double value = nn::MeasuredOnThisMachine(outer, [&] {
    // Another process (another open file) cannot take the lock now.
    const int fd = ::open(file_.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    locked_by_us = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);
    return nn::MeasuredOnThisMachine(inner, [] { return 2.0; }) + 1.0;
  });
  EXPECT_TRUE(locked_by_us);
  EXPECT_EQ(value, 3.0);
  const std::string machine = nn::MeasuredMachine();
  EXPECT_EQ(Contents(), machine + "\t" + inner + "\t2\n" + machine + "\t" + outer + "\t3\n");
  // Released afterwards.
  const int fd = ::open(file_.c_str(), O_RDWR | O_CLOEXEC);
  EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  ::close(fd);
}

// Two processes asking for one measurement at the same time: one measures, the other waits for
// the lock and reads its value.
TEST_F(CpuMeasurementsTest, ProcessesStartedTogetherMeasureOnce) {
  const std::string name = Name("race"), counter = dir_.path() + "/measured";
  std::vector<pid_t> children;
  for (int i = 0; i < 2; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // the child: no gtest assertions, only its exit status
      const double v = nn::MeasuredOnThisMachine(name, [&] {
        std::ofstream(counter, std::ios::app) << "m";
        ::usleep(300 * 1000);  // long enough for the other to be waiting
        return 2.5;
      });
      std::_Exit(v == 2.5 ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  std::ifstream in(counter);
  std::string measured((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(measured, "m");
  EXPECT_EQ(Contents(), nn::MeasuredMachine() + "\t" + name + "\t2.5\n");
}

TEST_F(CpuMeasurementsTest, WithoutAFileEveryProcessMeasures) {
  ::setenv("SDGRAPH_CPU_MEASUREMENTS", "off", 1);
  EXPECT_EQ(nn::CpuMeasurementsFile(), "");
  EXPECT_EQ(nn::MeasuredOnThisMachine(Name("w"), [] { return 5.0; }), 5.0);
  // A file that cannot be made: measured all the same.
  ::setenv("SDGRAPH_CPU_MEASUREMENTS", "/proc/no-such-dir/cpu-measurements", 1);
  EXPECT_EQ(nn::MeasuredOnThisMachine(Name("v"), [] { return 6.0; }), 6.0);
  EXPECT_FALSE(std::filesystem::exists(file_));
}

}  // namespace
}  // namespace sd
