// swanref._jax_ffi: the C++ core as XLA FFI custom calls (typed FFI handlers, CPU), so that
// swanref.jax can put GradNorm, whitening, the polynomial presets and SinkGD inside jax.jit.
// Only binding code lives here; the numerics are the headers under cpp/include/swanref/, the
// same ones swanref._core binds, so both return the same bits.
//
// * Built only with -DSWANREF_JAX=ON (or AUTO with jax's FFI headers at build time): the
//   headers come from jax.ffi.include_dir(); nothing of jax is linked.
// * BLAS/LAPACK: this module's table is filled at import from SciPy's capsules
//   (scipy_blas.hpp), exactly as swanref._core's: one OpenBLAS in the process.
// * Buffers: XLA hands dense row-major buffers of shape (*batch, m, n); under jax.vmap the
//   mapped axes arrive as more leading batch axes (vmap_method "broadcast_all"), which the
//   core iterates over like any stack.
// * Errors: a swanref::Error becomes an FFI error status carrying the core's message
//   (INVALID_ARGUMENT for bad values, INTERNAL for LAPACK failures and the rest), which jax
//   raises as a JaxRuntimeError. The input policy of spec 6.2 (non-finite input) and the
//   divergence guard of spec 3.5 are checked here and reported with the Python API's messages.
// * The Python module exposes the handlers as capsules (registrations()) for
//   jax.ffi.register_ffi_target.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "scipy_blas.hpp"
#include "swanref/swanref.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using swanref::index_t;

namespace {

std::string g_blas_error;  // why the table could not be filled (empty if it was)

std::vector<index_t> shape_of(const ffi::AnyBuffer& b) {
  const auto dims = b.dimensions();
  return std::vector<index_t>(dims.begin(), dims.end());
}

// The core's errors as FFI statuses with the same message.
template <class F>
ffi::Error guarded(F&& body) {
  try {
    return body();
  } catch (const swanref::Error& e) {
    switch (e.code()) {
      case swanref::Status::invalid_argument:
      case swanref::Status::invalid_dtype:
      case swanref::Status::size_overflow: return ffi::Error::InvalidArgument(e.what());
      default: return ffi::Error::Internal(e.what());
    }
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "swanref: out of memory");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(e.what());
  }
}

// body(T{}) for a float32/float64 buffer, an INVALID_ARGUMENT status for anything else.
template <class F>
ffi::Error with_dtype(const ffi::AnyBuffer& x, const char* fname, F&& body) {
  switch (x.element_type()) {
    case ffi::DataType::F32: return guarded([&] { return body(float{}); });
    case ffi::DataType::F64: return guarded([&] { return body(double{}); });
    default:
      return ffi::Error::InvalidArgument(std::string(fname) +
                                         ": expected dtype float32 or float64 (swanref.jax casts "
                                         "bfloat16/float16 to float32 before the call)");
  }
}

// Spec 6.2 with check_finite=True: the ValueError message of swanref.spec.validate.nonfinite_error.
// (check_finite=False is applied by swanref.jax, which zeroes and NaN-masks the slices.)
template <class T>
ffi::Error finite_or_error(const T* p, index_t size, bool check_finite, const char* name = "G") {
  if (!check_finite) return ffi::Error::Success();
  index_t bad = 0;
  for (index_t k = 0; k < size; ++k) bad += std::isfinite(p[k]) ? 0 : 1;
  if (bad == 0) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(name) + " contains " + std::to_string(bad) +
                                     " non-finite value(s) (NaN or Inf); pass check_finite=False to "
                                     "get NaN in the affected slices instead");
}

template <class T>
swanref::StridedView<const T> input_view(const ffi::AnyBuffer& x) {
  return swanref::StridedView<const T>::contiguous(static_cast<const T*>(x.untyped_data()), shape_of(x));
}

// One elementwise operator of the core: check the input, run op(view, out).
template <class Op>
ffi::Error unary(const char* fname, const ffi::AnyBuffer& x, ffi::Result<ffi::AnyBuffer>& y,
                 bool check_finite, Op&& op) {
  return with_dtype(x, fname, [&](auto tag) -> ffi::Error {
    using T = decltype(tag);
    if (y->element_type() != x.element_type())
      return ffi::Error::InvalidArgument(std::string(fname) + ": output dtype differs from the input's");
    const auto view = input_view<T>(x);
    if (auto err = finite_or_error(static_cast<const T*>(x.untyped_data()), view.size(), check_finite);
        err.failure())
      return err;
    op(view, static_cast<T*>(y->untyped_data()));
    return ffi::Error::Success();
  });
}

std::string str(std::string_view s) { return std::string(s.data(), s.size()); }

// ---- handlers ------------------------------------------------------------------------------

ffi::Error grad_norm_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, double eps, bool check_finite) {
  return unary("grad_norm", x, y, check_finite,
               [&](const auto& v, auto* o) { swanref::grad_norm(v, o, eps); });
}

ffi::Error whiten_svd_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, double sigma_rtol,
                           std::string_view route, bool check_finite) {
  swanref::SvdOptions opt;
  if (route == "auto")
    opt.route = swanref::SvdRoute::automatic;
  else if (route == "svd")
    opt.route = swanref::SvdRoute::svd;
  else if (route == "refined")
    opt.route = swanref::SvdRoute::refined;
  else
    return ffi::Error::InvalidArgument("whiten_svd: route must be 'auto', 'refined' or 'svd', got '" +
                                       str(route) + "'");
  return unary("whiten_svd", x, y, check_finite,
               [&](const auto& v, auto* o) { swanref::whiten_svd(v, o, sigma_rtol, opt); });
}

ffi::Error whiten_eigh_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, double lambda_rtol,
                            bool check_finite) {
  return unary("whiten_eigh", x, y, check_finite,
               [&](const auto& v, auto* o) { swanref::whiten_eigh(v, o, lambda_rtol); });
}

// Frobenius norm of an m x n slice, accumulated in double.
template <class T>
double fro(const T* p, index_t count) {
  double s = 0;
  for (index_t k = 0; k < count; ++k) {
    const double v = static_cast<double>(p[k]);
    s += v * v;
  }
  return std::sqrt(s);
}

// Newton-Schulz / NSDS with the divergence guard of spec 3.5 (swanref.ops._diverged): a slice
// whose output is non-finite or whose Frobenius norm exceeds 1.01 max(1, 2 beta) sqrt(m)
// (scaling 'none': max(that bound, ||G||_F) in place of max(1, 2 beta)) is flagged in `bad`;
// with raise_on_divergence the call fails with DivergenceError's message. `label` is the
// reading as swanref.ops prints it, e.g. "newton_schulz(steps=10, beta=0.5, scaling='gram_fro')".
ffi::Error whiten_iterative_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                                 ffi::Result<ffi::Buffer<ffi::PRED>> bad, std::string_view method,
                                 int64_t steps, double beta, std::string_view scaling, bool check_finite,
                                 bool raise_on_divergence, std::string_view label) {
  const bool nsds = method == "nsds";
  if (!nsds && method != "newton_schulz")
    return ffi::Error::InvalidArgument("whiten_iterative: method must be 'newton_schulz' or 'nsds'");
  return guarded([&] {
    const auto sc = swanref::parse_scaling(str(scaling));
    return unary(nsds ? "whiten_nsds" : "whiten_newton_schulz", x, y, check_finite,
                 [&](const auto& v, auto* o) {
                   using T = std::remove_const_t<std::remove_reference_t<decltype(*o)>>;
                   if (nsds)
                     swanref::whiten_nsds(v, o, steps, beta, sc);
                   else
                     swanref::whiten_newton_schulz(v, o, steps, beta, sc);
                   const index_t m = v.rows(), n = v.cols(), nb = v.batch_count(), mn = m * n;
                   const double base = std::max(1.0, 2.0 * beta);
                   const double root_r = std::sqrt(static_cast<double>(std::min(m, n)));
                   const T* g = static_cast<const T*>(x.untyped_data());
                   bool* flags = bad->typed_data();
                   std::vector<index_t> idx;
                   for (index_t b = 0; b < nb; ++b) {
                     const double bound =
                         sc == swanref::Scaling::none ? std::max(base, fro(g + b * mn, mn)) : base;
                     const double f = fro(o + b * mn, mn);
                     flags[b] = !std::isfinite(f) || f > 1.01 * bound * root_r;
                     if (flags[b]) idx.push_back(b);
                   }
                   if (!raise_on_divergence || idx.empty()) return;
                   std::string list = "[";
                   for (std::size_t k = 0; k < idx.size() && k < 10; ++k)
                     list += (k ? ", " : "") + std::to_string(idx[k]);
                   list += "]";
                   swanref::fail(swanref::Status::invalid_argument,
                                 str(label) + " diverged on " + std::to_string(idx.size()) + " of " +
                                     std::to_string(nb) + " slice(s) (flat batch indices " + list +
                                     (idx.size() > 10 ? "..." : "") +
                                     "): output non-finite or its Frobenius norm above the bound of "
                                     "spec 3.5; use float64, fewer steps, method='svd', or "
                                     "on_divergence='fallback'");
                 });
  });
}

ffi::Error whiten_polynomial_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                                  ffi::Span<const double> coefficients, std::string_view norm, double eps,
                                  double norm_scale, bool check_finite) {
  if (coefficients.size() % 3 != 0)
    return ffi::Error::InvalidArgument("whiten_polynomial: coefficients must have shape (steps, 3)");
  return guarded([&] {
    swanref::PolynomialOptions opt;
    opt.norm = swanref::parse_poly_norm(str(norm));
    opt.eps = eps;
    opt.norm_scale = norm_scale;
    const std::vector<double> coef(coefficients.begin(), coefficients.end());
    const auto steps = static_cast<long long>(coef.size() / 3);
    return unary("whiten_polynomial", x, y, check_finite, [&](const auto& v, auto* o) {
      swanref::whiten_polynomial(v, o, coef.data(), steps, opt);
    });
  });
}

ffi::Error sinkgd_impl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, int64_t iters, bool check_finite) {
  return unary("sinkgd", x, y, check_finite, [&](const auto& v, auto* o) { swanref::sinkgd(v, o, iters); });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefGradNorm, grad_norm_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<double>("eps")
                                  .Attr<bool>("check_finite"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefWhitenSvd, whiten_svd_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<double>("sigma_rtol")
                                  .Attr<std::string_view>("route")
                                  .Attr<bool>("check_finite"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefWhitenEigh, whiten_eigh_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<double>("lambda_rtol")
                                  .Attr<bool>("check_finite"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefWhitenIterative, whiten_iterative_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::PRED>>()
                                  .Attr<std::string_view>("method")
                                  .Attr<int64_t>("steps")
                                  .Attr<double>("beta")
                                  .Attr<std::string_view>("scaling")
                                  .Attr<bool>("check_finite")
                                  .Attr<bool>("raise_on_divergence")
                                  .Attr<std::string_view>("label"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefWhitenPolynomial, whiten_polynomial_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("coefficients")
                                  .Attr<std::string_view>("norm")
                                  .Attr<double>("eps")
                                  .Attr<double>("norm_scale")
                                  .Attr<bool>("check_finite"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwanrefSinkgd, sinkgd_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("iters")
                                  .Attr<bool>("check_finite"));

PYBIND11_MODULE(_jax_ffi, m) {
  m.doc() = "swanref's C++ core as XLA FFI handlers (CPU) for swanref.jax; BLAS from SciPy";
  m.attr("__version__") = swanref::version;
  g_blas_error = swanref_python::fill_blas_from_scipy();

  m.def("blas_info", []() { return swanref_python::blas_info(g_blas_error); }, "Where this module's BLAS/LAPACK function table came from and which entries are missing.");

  m.def("registrations", []() {
    py::dict d;
    auto add = [&](const char* name, XLA_FFI_Handler* fn) {
      d[name] = py::capsule(reinterpret_cast<void*>(fn));
    };
    add("swanref_grad_norm", SwanrefGradNorm);
    add("swanref_whiten_svd", SwanrefWhitenSvd);
    add("swanref_whiten_eigh", SwanrefWhitenEigh);
    add("swanref_whiten_iterative", SwanrefWhitenIterative);
    add("swanref_whiten_polynomial", SwanrefWhitenPolynomial);
    add("swanref_sinkgd", SwanrefSinkgd);
    return d;
  }, "FFI target name -> PyCapsule of the typed handler (for jax.ffi.register_ffi_target).");
}
