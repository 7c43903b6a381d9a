#include "worker/job_queue.h"

#include "nodes/base/exception_status.h"
#include "worker/worker_log.h"

namespace sd::worker {

void JobQueue::Loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++idle_;
      cv_.wait(lock, [&] { return stop_ || !q_.empty(); });
      --idle_;
      if (q_.empty()) return;
      job = std::move(q_.front());
      q_.pop_front();
      metrics_.queue_depth.Set(static_cast<double>(q_.size()));
    }
    metrics_.inflight.Increment();
    // Jobs answer their own call and catch what they compute; this is the last line before
    // std::terminate would end the worker.
    absl::Status escaped = CatchExceptions("job", [&] {
      job();
      return absl::OkStatus();
    });
    if (!escaped.ok()) Log("error", "job_exception", {{"error", std::string(escaped.message())}});
    metrics_.inflight.Decrement();
  }
}

}  // namespace sd::worker
