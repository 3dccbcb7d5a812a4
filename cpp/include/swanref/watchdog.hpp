// swanref/watchdog.hpp: a process deadline that needs nothing from the thread it guards.
//
// A language binding arms it around a call into code that may never return while holding the
// runtime's lock: Python's GIL held by a LAPACK loop that never converges on Inf
// (Reference-LAPACK/lapack#1409, reached through numpy.linalg.svd, which keeps the GIL) or by
// a regular expression that backtracks forever. Then no timer of the binding can run, not
// even to print a report. If disarm() does not come first, the watchdog's own thread writes
// the message to stderr and ends the process with exit_code through std::_Exit (no
// destructors, no atexit handlers: the runtime is stuck and would never run them).
//
// One object guards one call at a time; arm() and disarm() are meant for one thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace swanref {

class Watchdog {
 public:
  Watchdog() = default;
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() { disarm(); }

  // Ends the process with exit_code after `seconds` unless disarm() is called first. Arming an
  // armed watchdog replaces its deadline. The caller checks that seconds is finite and > 0.
  void arm(double seconds, std::string message, int exit_code) {
    disarm();
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds));
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = true;
    thread_ = std::thread([this, deadline, text = std::move(message), exit_code] {
      std::unique_lock<std::mutex> wait_lock(mutex_);
      if (cv_.wait_until(wait_lock, deadline, [this] { return !armed_; })) return;
      std::fputs(text.c_str(), stderr);
      std::fputc('\n', stderr);
      std::fflush(stderr);
      std::_Exit(exit_code);
    });
  }

  // Cancels the deadline (a no-op when not armed); returns when the watchdog's thread ended.
  void disarm() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      armed_ = false;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  bool armed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return armed_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
  bool armed_ = false;
};

}  // namespace swanref
