// A bounded set of threads for the calls of one graph run that may overlap (the CFG halves of a
// step sent to two workers, several ControlNets): at most `threads` at once, threads started on
// first use and kept for the whole run (a 50-step loop reuses them), joined when the pool goes.
//
//   CallPool pool(4);
//   pool.RunAll({[&] { a = Call(x); }, [&] { b = Call(y); }}, [&] { c = Local(z); });
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sd {

class CallPool {
 public:
  explicit CallPool(int threads);
  ~CallPool();
  CallPool(const CallPool&) = delete;
  CallPool& operator=(const CallPool&) = delete;

  // Runs every task of `tasks` on the pool and `meanwhile` on the calling thread, and returns when
  // all have finished. Tasks must not throw (wrap them in CatchExceptions).
  void RunAll(std::vector<std::function<void()>> tasks,
              const std::function<void()>& meanwhile = {});
  int threads() const { return max_threads_; }

 private:
  void Work();
  const int max_threads_;
  std::mutex mu_;
  std::condition_variable ready_, done_;
  std::deque<std::function<void()>> queue_;
  int unfinished_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sd
