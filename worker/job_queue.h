// The worker's compute threads behind a bounded queue: a fixed number of threads run the jobs;
// beyond the jobs waiting for them, Push refuses (the caller answers RESOURCE_EXHAUSTED at once).
// A job answers its own call; an exception escaping one is logged, never the end of the worker.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/metrics.h"

namespace sd::worker {

class JobQueue {
 public:
  JobQueue(int threads, int capacity, Metrics& metrics) : capacity_(capacity), metrics_(metrics) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~JobQueue() { Stop(); }
  // False when every thread is busy and `capacity` calls already wait, or when stopping.
  bool Push(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || static_cast<int>(q_.size()) >= capacity_ + idle_) return false;
    q_.push_back(std::move(job));
    metrics_.queue_depth.Set(static_cast<double>(q_.size()));
    cv_.notify_one();
    return true;
  }
  size_t Waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return q_.size();
  }
  // Runs what is queued, then joins the threads.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Loop();
  const int capacity_;
  Metrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  int idle_ = 0;  // threads waiting for work
  std::vector<std::thread> threads_;
};

}  // namespace sd::worker
