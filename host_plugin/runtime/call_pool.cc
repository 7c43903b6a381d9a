#include "host_plugin/runtime/call_pool.h"

#include <algorithm>

namespace sd {

CallPool::CallPool(int threads) : max_threads_(std::max(1, threads)) {}

CallPool::~CallPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void CallPool::Work() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --unfinished_;
    }
    done_.notify_all();
  }
}

void CallPool::RunAll(std::vector<std::function<void()>> tasks,
                      const std::function<void()>& meanwhile) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t wanted = std::min<size_t>(static_cast<size_t>(max_threads_), tasks.size());
    while (threads_.size() < wanted) threads_.emplace_back([this] { Work(); });
    for (auto& t : tasks) queue_.push_back(std::move(t));
    unfinished_ += static_cast<int>(tasks.size());
  }
  ready_.notify_all();
  if (meanwhile) meanwhile();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return unfinished_ == 0; });
}

}  // namespace sd
