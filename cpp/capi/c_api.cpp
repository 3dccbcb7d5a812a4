// C API of the swanref core (swanref/c_api.h): thin extern "C" wrappers that
// build dense strided views, fill the BLAS table from the linked BLAS once,
// and turn every C++ exception into a status code + thread-local message.
#include "swanref/c_api.h"

#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "swanref/blas_linked.hpp"
#include "swanref/swanref.hpp"

namespace {

thread_local std::string g_last_error;

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
    f();
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

template <class T>
swanref::StridedView<const T> dense_view(const T* g, T* out, int64_t batch, int64_t m, int64_t n) {
  swanref::require(batch >= 0 && m >= 0 && n >= 0, "batch, m and n must be >= 0");
  swanref::require((g != nullptr && out != nullptr) || batch * m * n == 0, "g and out must not be NULL");
  return swanref::StridedView<const T>::contiguous(
      g, {static_cast<swanref::index_t>(batch), static_cast<swanref::index_t>(m), static_cast<swanref::index_t>(n)});
}

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

#define SWANREF_C_FUNCS(SUF, T)                                                                                \
  int swanref_grad_norm_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double eps) {          \
    return guarded([&] { swanref::grad_norm(dense_view(g, out, batch, m, n), out, eps); });                     \
  }                                                                                                            \
  int swanref_whiten_svd_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double rtol) {        \
    return guarded([&] { swanref::whiten_svd(dense_view(g, out, batch, m, n), out, rtol); });                   \
  }                                                                                                            \
  int swanref_whiten_eigh_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, double rtol) {       \
    return guarded([&] { swanref::whiten_eigh(dense_view(g, out, batch, m, n), out, rtol); });                  \
  }                                                                                                            \
  int swanref_whiten_newton_schulz_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n,              \
                                         int64_t steps, double beta, int scaling) {                            \
    return guarded([&] {                                                                                       \
      swanref::whiten_newton_schulz(dense_view(g, out, batch, m, n), out, steps, beta, to_scaling(scaling));    \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_whiten_nsds_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, int64_t steps,      \
                                 double beta, int scaling) {                                                   \
    return guarded([&] {                                                                                       \
      swanref::whiten_nsds(dense_view(g, out, batch, m, n), out, steps, beta, to_scaling(scaling));             \
    });                                                                                                        \
  }                                                                                                            \
  int swanref_sinkgd_##SUF(const T* g, T* out, int64_t batch, int64_t m, int64_t n, int64_t iters) {          \
    return guarded([&] { swanref::sinkgd(dense_view(g, out, batch, m, n), out, iters); });                      \
  }

SWANREF_C_FUNCS(f32, float)
SWANREF_C_FUNCS(f64, double)

}  // extern "C"
