// pybind11 entry point for swanref._core. Only binding code lives here; the
// numerics are in the framework-agnostic headers under cpp/include/swanref/.
//
// * BLAS/LAPACK: the function table (swanref/blas.hpp) is filled at import from
//   scipy.linalg.cython_blas / cython_lapack __pyx_capi__ capsules (the jaxlib
//   pattern; cpp/python/scipy_blas.hpp, shared with the JAX FFI module), so the
//   extension calls SciPy's OpenBLAS and shares its thread pool (threadpoolctl
//   controls it). Nothing is linked at build time.
// * Arrays: any float32/float64 ndarray of ndim >= 2 with any strides is read
//   in place through a strided view (no conversion copy) when its data pointer
//   and strides are multiples of the item size; otherwise it is copied once.
//   The result is a new C-contiguous array of the same dtype and shape. The GIL
//   is released while the core computes.
// * Ctrl-C: on the main thread the core's interruption hook (swanref/interrupt.hpp)
//   re-takes the GIL at most every 20 ms of a computation and runs
//   PyErr_CheckSignals; the exception a signal handler raised (KeyboardInterrupt)
//   propagates from the call.
// * Counts (steps, iters) are Python integers checked here, so 2**63 is a clear
//   ValueError and not a pybind11 overload-resolution error.
// * Errors: swanref::Error codes map to ValueError (bad values), TypeError
//   (bad types), numpy.linalg.LinAlgError (LAPACK did not converge) and
//   RuntimeError (no BLAS); nothing aborts the interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "scipy_blas.hpp"
#include "swanref/swanref.hpp"
#include "swanref/watchdog.hpp"

namespace py = pybind11;
using swanref::index_t;

namespace {

std::string g_blas_error;  // why the table could not be filled (empty if it was)

// ---- interruption (Ctrl-C) ---------------------------------------------------

unsigned long g_main_thread = 0;  // threading.main_thread().ident: signals run there only

// The Python exception raised by a signal handler during a computation on this thread, kept
// from the hook (which runs deep inside the core) until the exception translator restores it.
struct PendingError {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
};
thread_local PendingError g_pending;

struct SignalPoll {
  std::chrono::steady_clock::time_point next{};
};

// The hook: cheap (a clock read) except every 20 ms, when it takes the GIL for
// PyErr_CheckSignals, which runs the Python-level signal handlers.
bool check_python_signals(void* ctx) {
  auto* poll = static_cast<SignalPoll*>(ctx);
  const auto now = std::chrono::steady_clock::now();
  if (now < poll->next) return false;
  poll->next = now + std::chrono::milliseconds(20);
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return false;
  PyErr_Fetch(&g_pending.type, &g_pending.value, &g_pending.traceback);
  return true;
}

// Runs core() with the GIL released and, on the main thread, the signal hook installed.
template <class F>
void run_without_gil(F&& core) {
  SignalPoll poll;
  const bool main = PyThread_get_thread_ident() == g_main_thread;
  py::gil_scoped_release nogil;
  if (main) {
    const swanref::ScopedInterruptHook hook(&check_python_signals, &poll);
    core();
  } else {
    core();
  }
}

// A Python integer count (steps, iters) as long long: any object with __index__; values
// beyond int64 are a ValueError naming the argument (the core rejects negative values).
long long count_arg(const py::handle& h, const char* fname, const char* name) {
  if (PyFloat_Check(h.ptr()) || PyBool_Check(h.ptr()))
    throw py::type_error(std::string(fname) + ": " + name + " must be an integer, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  PyObject* idx = PyNumber_Index(h.ptr());
  if (idx == nullptr) {
    PyErr_Clear();
    throw py::type_error(std::string(fname) + ": " + name + " must be an integer, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  }
  const py::object owned = py::reinterpret_steal<py::object>(idx);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
  if (overflow != 0)
    throw py::value_error(std::string(fname) + ": " + name + " = " + std::string(py::str(owned)) +
                          " is out of range (at most 2**63 - 1)");
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

// ---- arrays --------------------------------------------------------------------

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

// f(T{}) for the element type of the kind: the one place a dtype becomes a C++ type.
template <class F>
decltype(auto) with_dtype(Kind kind, F&& f) {
  return kind == Kind::f64 ? f(double{}) : f(float{});
}

// Element reads through a view are naturally aligned: the data pointer and every stride are
// multiples of the item size (NumPy allows neither to be, e.g. frombuffer(..., offset=1)).
bool aligned(const py::array& a) {
  const auto item = static_cast<std::uintptr_t>(a.itemsize());
  if (reinterpret_cast<std::uintptr_t>(a.data()) % item != 0) return false;
  for (py::ssize_t k = 0; k < a.ndim(); ++k)
    if (static_cast<std::uintptr_t>(a.strides(k)) % item != 0) return false;
  return true;
}

// Validates the argument; returns the array, or an aligned copy of it when copy_misaligned
// (inputs; an output array must be written in place, so its caller rejects misalignment).
py::array checked_array(const py::handle& obj, const char* fname, Kind& kind, bool copy_misaligned = true) {
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
  if (copy_misaligned && !aligned(a)) a = a.attr("copy")();  // rare views (offset buffers, packed records): one aligned copy
  return a;
}

// Runs core(view, out) for the array's dtype with the GIL released.
template <class F>
py::array dispatch(const py::handle& obj, const char* fname, F&& core) {
  Kind kind;
  py::array a = checked_array(obj, fname, kind);
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  return with_dtype(kind, [&](auto tag) -> py::array {
    using T = decltype(tag);
    py::array_t<T> out(shape);
    const auto v = view_of<T>(a);
    T* o = out.mutable_data();
    run_without_gil([&] { core(v, o); });
    return std::move(out);
  });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "swanref C++ core (framework-agnostic kernels bound by pybind11; BLAS from SciPy)";
  m.attr("spec_version") = swanref::spec_version;
  m.attr("__version__") = swanref::version;
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

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
        case swanref::Status::interrupted:
          if (g_pending.type != nullptr) {  // what the signal handler raised (KeyboardInterrupt)
            PyErr_Restore(g_pending.type, g_pending.value, g_pending.traceback);
            g_pending = PendingError{};
          } else {
            PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
          }
          break;
        default: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
      }
    }
  });

  g_blas_error = swanref_python::fill_blas_from_scipy();

  m.def("blas_info", []() { return swanref_python::blas_info(g_blas_error); }, "Where the BLAS/LAPACK function table came from and which entries are missing.");

  // The checker's last-resort deadline (swanref/verify/targets.py): it must fire while a
  // target holds the GIL, so it lives in C++ and never touches Python.
  py::class_<swanref::Watchdog>(m, "Watchdog",
                                "A process deadline that fires even while another thread holds the GIL: after "
                                "`seconds` without disarm(), writes `message` to stderr and ends the process "
                                "with `exit_code` (no cleanup).")
      .def(py::init<>())
      .def(
          "arm",
          [](swanref::Watchdog& w, double seconds, std::string message, int exit_code) {
            if (!(seconds > 0.0) || !std::isfinite(seconds)) {
              throw py::value_error("Watchdog.arm: seconds must be finite and > 0");
            }
            w.arm(seconds, std::move(message), exit_code);
          },
          py::arg("seconds"), py::arg("message"), py::arg("exit_code"))
      .def("disarm", &swanref::Watchdog::disarm, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("armed", &swanref::Watchdog::armed);

  m.def(
      "grad_norm",
      [](py::handle G, double eps, py::object out) -> py::object {
        if (out.is_none())
          return dispatch(G, "grad_norm", [&](const auto& v, auto* o) { swanref::grad_norm(v, o, eps); });
        // Write into a caller-provided array (benchmarks, embedding): same dtype and shape,
        // C-contiguous, writeable, not sharing memory with G.
        Kind kind, okind;
        py::array a = checked_array(G, "grad_norm", kind);
        py::array o = checked_array(out, "grad_norm(out=)", okind, /*copy_misaligned=*/false);
        if (okind != kind) throw py::type_error("grad_norm: out must have the dtype of G");
        if (o.ndim() != a.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), o.shape()))
          throw py::value_error("grad_norm: out must have the shape of G");
        if (!(o.flags() & py::array::c_style) || !o.writeable() || !aligned(o))
          throw py::value_error("grad_norm: out must be C-contiguous, aligned and writeable");
        if (py::module_::import("numpy").attr("may_share_memory")(a, o).cast<bool>())
          throw py::value_error("grad_norm: out must not share memory with G");
        with_dtype(kind, [&](auto tag) {
          using T = decltype(tag);
          const auto v = view_of<T>(a);
          T* p = static_cast<T*>(o.mutable_data());
          run_without_gil([&] { swanref::grad_norm(v, p, eps); });
        });
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
      [](py::handle G, py::handle steps_arg, double beta, const std::string& scaling, bool symmetric) {
        const long long steps = count_arg(steps_arg, "whiten_newton_schulz", "steps");
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
      [](py::handle G, py::handle steps_arg, double beta, const std::string& scaling) {
        const long long steps = count_arg(steps_arg, "whiten_nsds", "steps");
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
      [](py::handle G, py::handle iters_arg) {
        const long long iters = count_arg(iters_arg, "sinkgd", "iters");
        return dispatch(G, "sinkgd", [&](const auto& v, auto* o) { swanref::sinkgd(v, o, iters); });
      },
      py::arg("G"), py::arg("iters"),
      "SR-Sinkhorn: iters x (rows to l2 norm sqrt(n), then columns to l2 norm sqrt(m)).");

  m.def(
      "newton_schulz_flops",
      [](index_t rows, index_t cols, py::handle steps, bool symmetric) {
        return swanref::newton_schulz_flops(rows, cols, count_arg(steps, "newton_schulz_flops", "steps"), symmetric);
      },
      py::arg("m"), py::arg("n"), py::arg("steps"), py::arg("symmetric") = false,
      "Flops performed by whiten_newton_schulz on one m x n slice.");
  m.def("newton_schulz_step_flops", &swanref::newton_schulz_step_flops, py::arg("m"), py::arg("symmetric") = false,
        "Flops of one full Newton-Schulz step: 3 m x m products (6 m^3 as GEMMs).");
  m.def(
      "newton_schulz_products",
      [](py::handle steps) {
        return swanref::newton_schulz_products(count_arg(steps, "newton_schulz_products", "steps"));
      },
      py::arg("steps"), "Number of m x m products for `steps` steps (3 steps - 3 for steps >= 2).");
}
