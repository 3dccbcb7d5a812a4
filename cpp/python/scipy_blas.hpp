// cpp/python/scipy_blas.hpp: fills the core's BLAS/LAPACK table (swanref/blas.hpp) from SciPy's
// scipy.linalg.cython_blas / cython_lapack __pyx_capi__ capsules (the jaxlib pattern). Shared by
// the two Python extensions, swanref._core (pybind11) and swanref._jax_ffi (XLA FFI handlers):
// each is its own shared object with its own table, and both take SciPy's OpenBLAS, so the
// process has one BLAS and one thread pool. Binding code only (no numerics).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "swanref/blas.hpp"

namespace swanref_python {

// Fills swanref::blas::table(); returns why it is incomplete ("" when complete). An exception
// that is not an Exception (KeyboardInterrupt while SciPy loads, SystemExit) propagates: the
// import then fails and the next one fills the table afresh.
inline std::string fill_blas_from_scipy() {
  namespace py = pybind11;
  auto& t = swanref::blas::table();
  std::string error;
  try {
    py::dict blas_capi = py::module_::import("scipy.linalg.cython_blas").attr("__pyx_capi__");
    py::dict lapack_capi = py::module_::import("scipy.linalg.cython_lapack").attr("__pyx_capi__");
    for (const auto& name : swanref::blas::entry_names()) {
      py::dict& d = blas_capi.contains(name) ? blas_capi : lapack_capi;
      if (!d.contains(name)) continue;
      py::object cap = d[py::str(name)];
      PyObject* c = cap.ptr();
      if (!PyCapsule_CheckExact(c)) continue;
      void* p = PyCapsule_GetPointer(c, PyCapsule_GetName(c));
      if (p == nullptr) {
        PyErr_Clear();
        continue;
      }
      *swanref::blas::slot(t, name) = p;
    }
    t.source = "scipy.linalg.cython_blas/cython_lapack";
    const auto missing = swanref::blas::missing_entries(t);
    if (!missing.empty()) {
      error = "SciPy's cython_blas/cython_lapack lack:";
      for (const auto& n : missing) error += " " + n;
    }
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_Exception)) throw;
    error = std::string("could not take BLAS/LAPACK from SciPy: ") + e.what();
  }
  return error;
}

// The `blas_info()` both modules expose: where the table came from, what is missing, and
// `error` (fill_blas_from_scipy's result).
inline pybind11::dict blas_info(const std::string& error) {
  pybind11::dict d;
  d["source"] = swanref::blas::table().source;
  d["complete"] = swanref::blas::complete();
  d["missing"] = swanref::blas::missing_entries();
  d["error"] = error;
  return d;
}

}  // namespace swanref_python
