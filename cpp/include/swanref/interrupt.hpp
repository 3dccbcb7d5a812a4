// swanref/interrupt.hpp: cooperative interruption of the long loops (Newton-Schulz, NSDS,
// the polynomial presets, SinkGD). Their iteration counts come from the caller and are
// unbounded, so every iteration calls poll_interrupt(); if the calling thread installed a
// hook and it returns true, the loop throws Error(Status::interrupted) and the output
// buffer is left unspecified.
//
// The hook is per thread (a language binding installs one for the duration of a call, e.g.
// the Python module checks for Ctrl-C) and must be cheap or rate-limit itself: it runs once
// per iteration, which costs at least one O(m n) pass. No hook installed: a null check.
#pragma once

#include "swanref/status.hpp"

namespace swanref {

// Returns true to stop the computation. ctx is the pointer given with it.
using InterruptFn = bool (*)(void* ctx);

struct InterruptHook {
  InterruptFn fn = nullptr;
  void* ctx = nullptr;
};

// The calling thread's hook (none by default).
inline InterruptHook& interrupt_hook() noexcept {
  thread_local InterruptHook hook;
  return hook;
}

// Installs a hook for the current thread for the lifetime of the object, then restores
// the previous one.
class ScopedInterruptHook {
 public:
  explicit ScopedInterruptHook(InterruptFn fn, void* ctx = nullptr) noexcept : saved_(interrupt_hook()) {
    interrupt_hook() = InterruptHook{fn, ctx};
  }
  ~ScopedInterruptHook() { interrupt_hook() = saved_; }
  ScopedInterruptHook(const ScopedInterruptHook&) = delete;
  ScopedInterruptHook& operator=(const ScopedInterruptHook&) = delete;

 private:
  InterruptHook saved_;
};

// Throws Error(Status::interrupted) when the thread's hook asks to stop.
inline void poll_interrupt() {
  const InterruptHook& h = interrupt_hook();
  if (h.fn != nullptr && h.fn(h.ctx)) fail(Status::interrupted, "interrupted");
}

}  // namespace swanref
