// C API of the swanref core (swanref/c_api.h): thin extern "C" wrappers that
// build dense strided views, fill the BLAS table from the linked BLAS once,
// and turn every C++ exception into a status code + thread-local message.
// Sizes are checked before anything is dereferenced: the NULL check uses no product of the
// dimensions (batch * m * n may overflow), and the element count is computed with
// swanref::checked_element_count (Status::size_overflow when it does not fit).
#include "swanref/c_api.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "swanref/blas_linked.hpp"
#include "swanref/swanref.hpp"

namespace {

thread_local std::string g_last_error;

// The calling thread's C interruption callback (swanref_set_interrupt_handler).
struct CInterrupt {
  swanref_interrupt_fn fn = nullptr;
  void* ctx = nullptr;
};
thread_local CInterrupt g_interrupt;

bool call_c_interrupt(void* p) {
  const auto* h = static_cast<const CInterrupt*>(p);
  return h->fn(h->ctx) != 0;
}

void ensure_blas() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!swanref::blas::complete()) swanref::blas::use_linked_blas();
  });
}

template <class F>
int guarded(F&& f) {
  try {
    ensure_blas();
    if (g_interrupt.fn != nullptr) {
      const swanref::ScopedInterruptHook hook(&call_c_interrupt, &g_interrupt);
      f();
    } else {
      f();
    }
    g_last_error.clear();
    return SWANREF_OK;
  } catch (const swanref::Error& e) {
    g_last_error = e.what();
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return SWANREF_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return SWANREF_INTERNAL;
  } catch (...) {
    g_last_error = "unknown error";
    return SWANREF_INTERNAL;
  }
}

// A (batch, m, n) view of g after checking the arguments: non-negative dimensions, no empty
// matrix axis, non-NULL pointers unless the batch is empty, an element count that fits, aligned pointers, finite
// entries (as the Python API's default; NaN would reach LAPACK).
template <class T>
swanref::StridedView<const T> dense_view(const T* g, T* out, int64_t batch, int64_t m, int64_t n) {
  static_assert(sizeof(int64_t) <= sizeof(swanref::index_t), "index_t must hold int64_t");
  swanref::require(batch >= 0 && m >= 0 && n >= 0, "batch, m and n must be >= 0");
  // as swanref.whiten / grad_norm: an empty matrix axis is refused, an empty batch is not
  swanref::require(m > 0 && n > 0, "g has an empty matrix dimension: m = " + std::to_string(m) +
                                       ", n = " + std::to_string(n) + " (an empty batch, batch = 0, is accepted)");
  const bool empty = batch == 0;
  swanref::require(empty || (g != nullptr && out != nullptr), "g and out must not be NULL");
  const std::vector<swanref::index_t> shape = {static_cast<swanref::index_t>(batch), static_cast<swanref::index_t>(m),
                                               static_cast<swanref::index_t>(n)};
  const swanref::index_t count = swanref::checked_element_count(shape.data(), shape.size(), sizeof(T));
  swanref::require(reinterpret_cast<std::uintptr_t>(out) % alignof(T) == 0,
                   "out is not aligned to the element size (" + std::to_string(alignof(T)) + " bytes)");
  swanref::require(reinterpret_cast<std::uintptr_t>(g) % alignof(T) == 0,
                   "g is not aligned to the element size (" + std::to_string(alignof(T)) + " bytes)");
  for (swanref::index_t k = 0; k < count; ++k)
    if (!std::isfinite(g[k]))
      swanref::fail(swanref::Status::invalid_argument,
                    "g contains a non-finite entry at flat index " + std::to_string(k));
  return swanref::StridedView<const T>::contiguous(g, shape);
}

// Parameter checks of the Python API (swanref.ops / spec.validate), applied before any work.
void check_count(int64_t k, const char* name) {
  swanref::require(k >= 0 && k <= SWANREF_MAX_ITERATIONS,
                   std::string(name) + " must be in [0, " + std::to_string(SWANREF_MAX_ITERATIONS) + "], got " +
                       std::to_string(k));
}

void check_beta(double beta) {
  swanref::require(std::isfinite(beta) && beta > 0, "beta must be finite and > 0, got " + std::to_string(beta));
}

// sigma_rtol / lambda_rtol: [0, 1), or SWANREF_DEFAULT_RTOL for factor * max(m, n) * eps(T).
template <class T>
double rank_tolerance(double rtol, int64_t m, int64_t n, double factor, const char* name) {
  if (rtol == SWANREF_DEFAULT_RTOL)
    return factor * static_cast<double>(std::max(m, n)) * static_cast<double>(std::numeric_limits<T>::epsilon());
  swanref::require(std::isfinite(rtol) && rtol >= 0 && rtol < 1,
                   std::string(name) + " must be in [0, 1) or SWANREF_DEFAULT_RTOL, got " + std::to_string(rtol));
  return rtol;
}

// swanref.ops.EIGH_NOISE_FACTOR: the eigh route's floor is 8 max(m, n) eps (spec 3.2)
constexpr double kEighNoiseFactor = 8.0;

swanref::Scaling to_scaling(int s) {
  switch (s) {
    case SWANREF_SCALING_GRAM_FRO: return swanref::Scaling::gram_fro;
    case SWANREF_SCALING_GRAD_FRO: return swanref::Scaling::grad_fro;
    case SWANREF_SCALING_NONE: return swanref::Scaling::none;
    default: swanref::fail(swanref::Status::invalid_argument, "scaling must be a swanref_scaling value");
  }
}

}  // namespace

extern "C" {

const char* swanref_version(void) { return swanref::version; }
const char* swanref_last_error(void) { return g_last_error.c_str(); }
void swanref_set_interrupt_handler(swanref_interrupt_fn fn, void* ctx) { g_interrupt = CInterrupt{fn, ctx}; }

#define SWANREF_C_FUNCS(SUF, T)                                                                                \
  int swanref_grad_norm_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double eps) {          \
    return guarded([&] { swanref::grad_norm(dense_view(g, out, batch, m, n), out, eps); });                     \
  }                                                                                                            \
  int swanref_whiten_svd_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double rtol) {        \
    return guarded([&] {                                                                                       \
      const double r = rank_tolerance<T>(rtol, m, n, 1.0, "sigma_rtol");                                       \
      swanref::whiten_svd(dense_view(g, out, batch, m, n), out, r);                                            \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_whiten_eigh_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double rtol) {       \
    return guarded([&] {                                                                                       \
      const double r = rank_tolerance<T>(rtol, m, n, kEighNoiseFactor, "lambda_rtol");                        \
      swanref::whiten_eigh(dense_view(g, out, batch, m, n), out, r);                                           \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_whiten_newton_schulz_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n,              \
                                         int64_t steps, double beta, int scaling) {                            \
    return guarded([&] {                                                                                       \
      check_count(steps, "steps");                                                                             \
      check_beta(beta);                                                                                        \
      swanref::whiten_newton_schulz(dense_view(g, out, batch, m, n), out, steps, beta, to_scaling(scaling));    \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_whiten_nsds_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, int64_t steps,      \
                                 double beta, int scaling) {                                                   \
    return guarded([&] {                                                                                       \
      check_count(steps, "steps");                                                                             \
      check_beta(beta);                                                                                        \
      swanref::whiten_nsds(dense_view(g, out, batch, m, n), out, steps, beta, to_scaling(scaling));             \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_sinkgd_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, int64_t iters) {          \
    return guarded([&] {                                                                                       \
      check_count(iters, "iters");                                                                             \
      swanref::sinkgd(dense_view(g, out, batch, m, n), out, iters);                                            \
    });                                                                                                        \
  }

SWANREF_C_FUNCS(f32, float)
SWANREF_C_FUNCS(f64, double)

}  // extern "C"
