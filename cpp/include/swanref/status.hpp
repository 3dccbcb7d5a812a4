// swanref/status.hpp: error codes and the exception type of the C++ core.
// No Python here: the pybind11 layer maps Status codes to Python exceptions
// (invalid_argument -> ValueError, invalid_dtype -> TypeError, others ->
// RuntimeError) and the C API maps them to integer return codes.
#pragma once

#include <stdexcept>
#include <string>

namespace swanref {

enum class Status : int {
  ok = 0,
  invalid_argument = 1,   // bad value: ndim < 2, m > n for whitening, steps < 0, ...
  invalid_dtype = 2,      // element type not float32/float64 (binding layers only)
  blas_unavailable = 3,   // the BLAS/LAPACK function table was not filled
  lapack_failure = 4,     // a LAPACK routine returned info != 0
  size_overflow = 5,      // a size does not fit the BLAS integer type or overflows index_t
  internal = 6,
  // 7 is the C API's SWANREF_OUT_OF_MEMORY (std::bad_alloc, not an Error code).
  interrupted = 8,        // the interruption hook (swanref/interrupt.hpp) asked to stop
};

inline const char* status_name(Status s) noexcept {
  switch (s) {
    case Status::ok: return "ok";
    case Status::invalid_argument: return "invalid_argument";
    case Status::invalid_dtype: return "invalid_dtype";
    case Status::blas_unavailable: return "blas_unavailable";
    case Status::lapack_failure: return "lapack_failure";
    case Status::size_overflow: return "size_overflow";
    case Status::internal: return "internal";
    case Status::interrupted: return "interrupted";
  }
  return "unknown";
}

class Error : public std::runtime_error {
 public:
  Error(Status code, const std::string& what) : std::runtime_error(what), code_(code) {}
  Status code() const noexcept { return code_; }

 private:
  Status code_;
};

[[noreturn]] inline void fail(Status code, const std::string& what) { throw Error(code, what); }

inline void require(bool cond, const std::string& what) {
  if (!cond) fail(Status::invalid_argument, what);
}

}  // namespace swanref
