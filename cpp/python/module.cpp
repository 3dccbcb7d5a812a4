// pybind11 entry point for swanref._core. Only binding code lives here; the
// numerics are in the framework-agnostic headers under cpp/include/swanref/.
//
// * BLAS/LAPACK: the function table (swanref/blas.hpp) is filled at import from
//   scipy.linalg.cython_blas / cython_lapack __pyx_capi__ capsules (the jaxlib
//   pattern), so the extension calls SciPy's OpenBLAS and shares its thread
//   pool (threadpoolctl controls it). Nothing is linked at build time.
// * Arrays: any float32/float64 ndarray of ndim >= 2 with any strides is read
//   in place through a strided view (no conversion copy); the result is a new
//   C-contiguous array of the same dtype and shape. The GIL is released while
//   the core computes.
// * Errors: swanref::Error codes map to ValueError (bad values), TypeError
//   (bad types), numpy.linalg.LinAlgError (LAPACK did not converge) and
//   RuntimeError (no BLAS); nothing aborts the interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <vector>

#include "swanref/swanref.hpp"

namespace py = pybind11;
using swanref::index_t;

namespace {

std::string g_blas_error;  // why the table could not be filled (empty if it was)

void fill_blas_from_scipy() {
  auto& t = swanref::blas::table();
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
      g_blas_error = "SciPy's cython_blas/cython_lapack lack:";
      for (const auto& n : missing) g_blas_error += " " + n;
    }
  } catch (py::error_already_set& e) {
    g_blas_error = std::string("could not take BLAS/LAPACK from SciPy: ") + e.what();
  }
}

// A strided view of a float32/float64 array (strides converted to elements).
template <class T>
swanref::StridedView<const T> view_of(const py::array& a) {
  std::vector<index_t> shape(a.ndim()), strides(a.ndim());
  for (py::ssize_t k = 0; k < a.ndim(); ++k) {
    shape[k] = a.shape(k);
    strides[k] = a.strides(k) / static_cast<py::ssize_t>(sizeof(T));
  }
  return swanref::StridedView<const T>(static_cast<const T*>(a.data()), shape, strides);
}

enum class Kind { f32, f64 };

// Validates the argument; returns the (possibly re-laid-out) array and its kind.
py::array checked_array(const py::handle& obj, const char* fname, Kind& kind) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fname) + ": expected a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const py::dtype dt = a.dtype();
  if (dt.equal(py::dtype::of<double>())) {
    kind = Kind::f64;
  } else if (dt.equal(py::dtype::of<float>())) {
    kind = Kind::f32;
  } else {
    throw py::type_error(std::string(fname) + ": expected dtype float32 or float64 (native byte order), got " +
                         std::string(py::str(dt)));
  }
  if (a.ndim() < 2)
    throw py::value_error(std::string(fname) + ": expected an array with ndim >= 2 (shape (*batch, m, n)), got ndim " +
                          std::to_string(a.ndim()));
  const py::ssize_t item = dt.itemsize();
  for (py::ssize_t k = 0; k < a.ndim(); ++k)
    if (a.strides(k) % item != 0) {  // unaligned strides (rare views): one copy
      a = py::module_::import("numpy").attr("ascontiguousarray")(a);
      break;
    }
  return a;
}

// Runs core(view, out) for the array's dtype with the GIL released.
template <class F>
py::array dispatch(const py::handle& obj, const char* fname, F&& core) {
  Kind kind;
  py::array a = checked_array(obj, fname, kind);
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  auto run = [&](auto tag) -> py::array {
    using T = decltype(tag);
    py::array_t<T> out(shape);
    auto v = view_of<T>(a);
    T* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      core(v, o);
    }
    return std::move(out);
  };
  return kind == Kind::f64 ? run(double{}) : run(float{});
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "swanref C++ core (framework-agnostic kernels bound by pybind11; BLAS from SciPy)";
  m.attr("spec_version") = swanref::spec_version;
  m.attr("__version__") = swanref::version;

  // A deliberately leaked reference: a static py::object would be released after the
  // interpreter is finalised.
  static PyObject* linalg_error = py::object(py::module_::import("numpy.linalg").attr("LinAlgError")).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const swanref::Error& e) {
      switch (e.code()) {
        case swanref::Status::invalid_argument:
        case swanref::Status::size_overflow: PyErr_SetString(PyExc_ValueError, e.what()); break;
        case swanref::Status::invalid_dtype: PyErr_SetString(PyExc_TypeError, e.what()); break;
        case swanref::Status::lapack_failure: PyErr_SetString(linalg_error, e.what()); break;
        default: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
      }
    }
  });

  fill_blas_from_scipy();

  m.def("blas_info", []() {
    py::dict d;
    d["source"] = swanref::blas::table().source;
    d["complete"] = swanref::blas::complete();
    d["missing"] = swanref::blas::missing_entries();
    d["error"] = g_blas_error;
    return d;
  }, "Where the BLAS/LAPACK function table came from and which entries are missing.");

  m.def(
      "grad_norm",
      [](py::handle G, double eps, py::object out) -> py::object {
        if (out.is_none())
          return dispatch(G, "grad_norm", [&](const auto& v, auto* o) { swanref::grad_norm(v, o, eps); });
        // Write into a caller-provided array (benchmarks, embedding): same dtype and shape,
        // C-contiguous, writeable, not sharing memory with G.
        Kind kind, okind;
        py::array a = checked_array(G, "grad_norm", kind);
        py::array o = checked_array(out, "grad_norm(out=)", okind);
        if (okind != kind) throw py::type_error("grad_norm: out must have the dtype of G");
        if (o.ndim() != a.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), o.shape()))
          throw py::value_error("grad_norm: out must have the shape of G");
        if (!(o.flags() & py::array::c_style) || !o.writeable())
          throw py::value_error("grad_norm: out must be C-contiguous and writeable");
        if (py::module_::import("numpy").attr("may_share_memory")(a, o).cast<bool>())
          throw py::value_error("grad_norm: out must not share memory with G");
        if (kind == Kind::f64) {
          auto v = view_of<double>(a);
          double* p = static_cast<double*>(o.mutable_data());
          py::gil_scoped_release nogil;
          swanref::grad_norm(v, p, eps);
        } else {
          auto v = view_of<float>(a);
          float* p = static_cast<float*>(o.mutable_data());
          py::gil_scoped_release nogil;
          swanref::grad_norm(v, p, eps);
        }
        return out;
      },
      py::arg("G"), py::arg("eps"), py::kw_only(), py::arg("out") = py::none(),
      "Standardise each row (last axis): (x - mean) / sqrt(var + eps); constant rows -> 0.\n"
      "out: optional C-contiguous array of G's dtype and shape to write into (returned).");

  m.def(
      "whiten_svd",
      [](py::handle G, double sigma_rtol, double qr_ratio, const std::string& route) {
        swanref::SvdOptions opt;
        opt.qr_ratio = qr_ratio;
        if (route == "auto")
          opt.route = swanref::SvdRoute::automatic;
        else if (route == "svd")
          opt.route = swanref::SvdRoute::svd;
        else if (route == "svd_double")
          opt.route = swanref::SvdRoute::svd_double;
        else if (route == "eigh_double")
          opt.route = swanref::SvdRoute::eigh_double;
        else if (route == "refined")
          opt.route = swanref::SvdRoute::refined;
        else
          throw py::value_error("route must be 'auto', 'refined', 'svd', 'svd_double' or 'eigh_double'");
        return dispatch(G, "whiten_svd", [&](const auto& v, auto* o) { swanref::whiten_svd(v, o, sigma_rtol, opt); });
      },
      py::arg("G"), py::arg("sigma_rtol"), py::kw_only(), py::arg("qr_ratio") = swanref::SvdOptions{}.qr_ratio,
      py::arg("route") = "auto",
      "Polar factor U_r V_r^T of each (m x n, m <= n) slice, keeping s_i > sigma_rtol * s_1.\n"
      "route: 'auto' (float64: 'refined'; float32: computed in float64, the eigh route when\n"
      "sigma_rtol^2 >= 1e4 max(m,n) eps64, else 'refined'), 'refined' (eigh + first-order\n"
      "polar refinement, SVD fallback per slice), 'svd' (LAPACK SVD in the input precision),\n"
      "'svd_double', 'eigh_double' (float32 only).");

  m.def(
      "whiten_eigh",
      [](py::handle G, double lambda_rtol) {
        return dispatch(G, "whiten_eigh", [&](const auto& v, auto* o) { swanref::whiten_eigh(v, o, lambda_rtol); });
      },
      py::arg("G"), py::arg("lambda_rtol"),
      "Q_r diag(l_r^-1/2) Q_r^T G from the eigendecomposition of G G^T, keeping l_i > lambda_rtol * l_max.");

  m.def(
      "whiten_newton_schulz",
      [](py::handle G, long long steps, double beta, const std::string& scaling, bool symmetric) {
        const auto sc = swanref::parse_scaling(scaling);
        swanref::NewtonSchulzOptions opt;
        opt.symmetric = symmetric;
        return dispatch(G, "whiten_newton_schulz",
                        [&](const auto& v, auto* o) { swanref::whiten_newton_schulz(v, o, steps, beta, sc, opt); });
      },
      py::arg("G"), py::arg("steps"), py::arg("beta"), py::arg("scaling"), py::kw_only(),
      py::arg("symmetric") = false,
      "Coupled Newton-Schulz whitening (Y <- beta Y T, Z <- beta T Z, T = 3I - Z Y) on A = G G^T / c.");

  m.def(
      "whiten_nsds",
      [](py::handle G, long long steps, double beta, const std::string& scaling) {
        const auto sc = swanref::parse_scaling(scaling);
        return dispatch(G, "whiten_nsds",
                        [&](const auto& v, auto* o) { swanref::whiten_nsds(v, o, steps, beta, sc); });
      },
      py::arg("G"), py::arg("steps"), py::arg("beta"), py::arg("scaling"),
      "Newton-Schulz with diagonal substitution: elementwise recurrence on diag(G G^T) / c.");

  m.def(
      "whiten_polynomial",
      [](py::handle G, py::array_t<double, py::array::c_style | py::array::forcecast> coefficients,
         const std::string& norm, double eps, double norm_scale) {
        if (coefficients.ndim() != 2 || coefficients.shape(1) != 3)
          throw py::value_error("whiten_polynomial: coefficients must have shape (steps, 3)");
        swanref::PolynomialOptions opt;
        opt.norm = swanref::parse_poly_norm(norm);
        opt.eps = eps;
        opt.norm_scale = norm_scale;
        const long long steps = coefficients.shape(0);
        std::vector<double> coef(coefficients.data(), coefficients.data() + 3 * steps);
        return dispatch(G, "whiten_polynomial", [&](const auto& v, auto* o) {
          swanref::whiten_polynomial(v, o, coef.data(), steps, opt);
        });
      },
      py::arg("G"), py::arg("coefficients"), py::arg("norm") = "add", py::arg("eps") = 1e-7,
      py::arg("norm_scale") = 1.0,
      "Muon-style polynomial Newton-Schulz (m <= n): X = G / N(||G||_F), then per (a, b, c): "
      "A = X X^T, X <- a X + (b A + c A A) X. norm in {'add', 'clamp', 'none', 'safe'}.");

  m.def(
      "sinkgd",
      [](py::handle G, long long iters) {
        return dispatch(G, "sinkgd", [&](const auto& v, auto* o) { swanref::sinkgd(v, o, iters); });
      },
      py::arg("G"), py::arg("iters"),
      "SR-Sinkhorn: iters x (rows to l2 norm sqrt(n), then columns to l2 norm sqrt(m)).");

  m.def("newton_schulz_flops", &swanref::newton_schulz_flops, py::arg("m"), py::arg("n"), py::arg("steps"),
        py::arg("symmetric") = false, "Flops performed by whiten_newton_schulz on one m x n slice.");
  m.def("newton_schulz_step_flops", &swanref::newton_schulz_step_flops, py::arg("m"), py::arg("symmetric") = false,
        "Flops of one full Newton-Schulz step: 3 m x m products (6 m^3 as GEMMs).");
  m.def("newton_schulz_products", &swanref::newton_schulz_products, py::arg("steps"),
        "Number of m x m products for `steps` steps (3 steps - 3 for steps >= 2).");
}
