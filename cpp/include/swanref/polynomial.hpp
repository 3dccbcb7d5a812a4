// swanref/polynomial.hpp: Muon-style odd-polynomial Newton-Schulz, the production presets of
// docs/presets.md (muon_ns5, torch_muon, polar_express, cubic, custom schedules, ...).
//
// Per m x n slice (m <= n: the caller transposes tall input, the presets' "to_wide" rule):
//   X = G / N(||G||_F), the preset's normalisation N:
//     add    X / (s ||X||_F + eps)          (Keller Jordan's Muon, Polar Express, dion, optax)
//     clamp  X / max(s ||X||_F, eps)        (torch.optim.Muon, NeMo)
//     none   X / ||X||_F                    (no guard: the zero matrix gives NaN, as in modula)
//     safe   X / ||X||_F, zero matrix -> 0  (classical cubic)
//   with s the preset's norm_scale; ||X||_F = sqrt(sum x*x) with the squares formed in T, so
//   tiny float32 input underflows exactly as the sources' norms do (a documented defect).
//   Then for each (a, b, c) of the schedule:
//     A = X X^T (SYRK), B = b A + c A A, X <- a X + B X.
// No exact prescale here: the presets are defined by their sources' arithmetic, defects
// included; this computes the same function as swanref.presets (float32/float64, no
// emulation), to float round-off.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "swanref/blas.hpp"
#include "swanref/interrupt.hpp"
#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {

enum class PolyNorm { add, clamp, none, safe };

inline PolyNorm parse_poly_norm(const std::string& s) {
  if (s == "add") return PolyNorm::add;
  if (s == "clamp") return PolyNorm::clamp;
  if (s == "none") return PolyNorm::none;
  if (s == "safe") return PolyNorm::safe;
  fail(Status::invalid_argument, "norm must be one of 'add', 'clamp', 'none', 'safe', got '" + s + "'");
}

struct PolynomialOptions {
  PolyNorm norm = PolyNorm::add;
  double eps = 1e-7;
  double norm_scale = 1.0;
};

// coeffs: `steps` triples (a, b, c), row-major steps x 3.
template <class T>
void whiten_polynomial(const StridedView<const T>& in, T* out, const double* coeffs, long long steps,
                       const PolynomialOptions& opt) {
  require(steps >= 0, "steps must be >= 0, got " + std::to_string(steps));
  require(std::isfinite(opt.eps) && opt.eps >= 0, "eps must be finite and >= 0");
  require(std::isfinite(opt.norm_scale) && opt.norm_scale > 0, "norm_scale must be finite and > 0");
  index_t ncoef = 0;
  if (checked_mul(static_cast<index_t>(steps), 3, ncoef) != Status::ok)
    fail(Status::size_overflow, "steps = " + std::to_string(steps) + " overflows the coefficient count");
  for (index_t k = 0; k < ncoef; ++k) require(std::isfinite(coeffs[k]), "coefficients must be finite");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  require(m <= n, "whiten_polynomial expects m <= n in the last two axes (pass the transpose of tall matrices)");
  if (m == 0 || n == 0 || nb == 0) return;
  const blas::fint fm = blas::to_fint(m, "m"), fn = blas::to_fint(n, "n");
  const std::size_t mm = static_cast<std::size_t>(m) * m, mn = static_cast<std::size_t>(m) * n;
  std::vector<T> x(mn), xn(mn), a(mm), b(mm);
  for (index_t s = 0; s < nb; ++s) {
    T* o = out + s * static_cast<index_t>(mn);
    copy_scaled(in.matrix(s), x.data(), n, 0);
    double sq = 0;  // squares in T (underflow as in the sources), sum in double
    for (std::size_t k = 0; k < mn; ++k) sq += static_cast<double>(x[k] * x[k]);
    const T nrm = static_cast<T>(std::sqrt(sq));
    const T scaled = static_cast<T>(opt.norm_scale) * nrm;
    T denom = nrm;
    if (opt.norm == PolyNorm::add) denom = scaled + static_cast<T>(opt.eps);
    if (opt.norm == PolyNorm::clamp) denom = std::max(scaled, static_cast<T>(opt.eps));
    if (opt.norm == PolyNorm::safe && nrm == T(0)) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    for (std::size_t k = 0; k < mn; ++k) x[k] = x[k] / denom;  // 0/0 -> NaN for "none", as defined
    for (long long k = 0; k < steps; ++k) {
      poll_interrupt();
      const T ca = static_cast<T>(coeffs[3 * k]), cb = static_cast<T>(coeffs[3 * k + 1]),
              cc = static_cast<T>(coeffs[3 * k + 2]);
      // A = X X^T: X row-major m x n is X^T column-major (n x m, ld n).
      blas::syrk<T>('L', 'T', fm, fn, T(1), x.data(), fn, T(0), a.data(), fm);
      symmetrize_from_lower(a.data(), m, m);
      for (std::size_t q = 0; q < mm; ++q) b[q] = cb * a[q];
      if (cc != T(0)) blas::gemm<T>('N', 'N', fm, fm, fm, cc, a.data(), fm, a.data(), fm, T(1), b.data(), fm);
      // X_new^T = a X^T + X^T B (B symmetric): column-major n x m.
      std::memcpy(xn.data(), x.data(), sizeof(T) * mn);
      blas::gemm<T>('N', 'N', fn, fm, fm, T(1), x.data(), fn, b.data(), fm, ca, xn.data(), fn);
      std::swap(x, xn);
    }
    std::memcpy(o, x.data(), sizeof(T) * mn);
  }
}

// Flops of one polynomial step on an m x n slice: SYRK m^2 n, A A 2 m^3 (if c != 0), B X 2 m^2 n.
inline double polynomial_step_flops(index_t m, index_t n, bool quintic = true) {
  return double(m) * m * n + (quintic ? 2.0 * double(m) * m * m : 0.0) + 2.0 * double(m) * m * n;
}

}  // namespace swanref
