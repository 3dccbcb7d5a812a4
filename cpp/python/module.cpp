// pybind11 entry point for swanref._core. Only binding code lives here; the
// numerics are in the framework-agnostic headers under cpp/include/swanref/.
#include <pybind11/pybind11.h>

#include "swanref/version.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "swanref C++ core (framework-agnostic kernels bound by pybind11)";
  m.attr("spec_version") = swanref::spec_version;
}
