// swanref/whiten_exact.hpp: exact whitening (the polar factor of G).
//
// whiten_svd(G, sigma_rtol): thin SVD G = U S V^T, keep s_i > sigma_rtol s_1,
//   X = U_r V_r^T (zero matrix -> zeros). Accuracy ~ kappa * eps.
//   Route (column-major, W = Gs^T is n x m with n >= m):
//   * wide (n >= qr_ratio * m): W = Q R (geqrf), R = U1 S V1^T (gesdd, m x m),
//     X^T = Q (U1_r V1_r^T) applied with ormqr: no n x m singular-vector
//     matrices, no orglq, no n x m x m GEMM with explicit Q;
//   * otherwise gesdd of W (jobz 'O'), X^T = U_r VT_r (one GEMM).
// whiten_eigh(G, lambda_rtol): A = Gs Gs^T (SYRK) = Q diag(l) Q^T (syevd),
//   keep l_i > lambda_rtol l_max, X = Q_r diag(l_r^-1/2) Q_r^T Gs, computed as
//   H = (Q_r l_r^-1/4)(Q_r l_r^-1/4)^T (SYRK) and X^T = Gs^T H (SYMM).
//   Accuracy ~ kappa^2 * eps.
// Both prescale G by an exact power of two near 1/max|G| (scale invariant).
#pragma once

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "swanref/blas.hpp"
#include "swanref/newton_schulz.hpp"  // check_whiten_shape
#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {

struct SvdOptions {
  // Take the QR route when n >= qr_ratio * m (see docs/performance.md for the measurement).
  double qr_ratio = 1.5;
};

inline void check_rtol(double rtol, const char* name) {
  require(std::isfinite(rtol) && rtol >= 0, std::string(name) + " must be finite and >= 0");
}

namespace detail {

// Copy with prescale; false for an all-zero slice.
template <class T>
inline bool scaled_copy_nonzero(const MatrixView<const T>& g, T* gs) {
  const double amax = max_abs(g);
  if (amax == 0) return false;
  copy_scaled(g, gs, g.cols, -pow2_exponent(amax));
  return true;
}

template <class T>
inline index_t count_kept(const T* s, index_t k, double rtol) {
  if (k == 0 || !(s[0] > 0)) return 0;
  const double thr = rtol * static_cast<double>(s[0]);
  index_t r = 0;
  while (r < k && static_cast<double>(s[r]) > thr) ++r;
  return r;
}

}  // namespace detail

template <class T>
void whiten_svd(const StridedView<const T>& in, T* out, double sigma_rtol, SvdOptions opt = {}) {
  using blas::fint;
  check_rtol(sigma_rtol, "sigma_rtol");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const fint fm = blas::to_fint(m, "m"), fn = blas::to_fint(n, "n");
  const std::size_t mn = static_cast<std::size_t>(m) * n, mm = static_cast<std::size_t>(m) * m;
  const bool qr = static_cast<double>(n) >= opt.qr_ratio * static_cast<double>(m) && n > m;
  std::vector<T> w(mn), s(m), vt(mm), tau(qr ? m : 0), r(qr ? mm : 0), p(qr ? mm : 0);
  std::vector<fint> iwork(8 * static_cast<std::size_t>(m));
  fint info = 0, lwork = -1;
  char jobz = 'O';
  // Workspace queries (sizes only depend on the shape).
  T q1 = 0, q2 = 0, q3 = 0;
  if (qr) {
    blas::Routines<T>::geqrf()(const_cast<fint*>(&fn), const_cast<fint*>(&fm), w.data(), const_cast<fint*>(&fn),
                               tau.data(), &q1, &lwork, &info);
    lwork = -1;
    blas::Routines<T>::gesdd()(&jobz, const_cast<fint*>(&fm), const_cast<fint*>(&fm), r.data(),
                               const_cast<fint*>(&fm), s.data(), nullptr, const_cast<fint*>(&fm), vt.data(),
                               const_cast<fint*>(&fm), &q2, &lwork, iwork.data(), &info);
    lwork = -1;
    char side = 'L', trans = 'N';
    blas::Routines<T>::ormqr()(&side, &trans, const_cast<fint*>(&fn), const_cast<fint*>(&fm),
                               const_cast<fint*>(&fm), w.data(), const_cast<fint*>(&fn), tau.data(), out,
                               const_cast<fint*>(&fn), &q3, &lwork, &info);
  } else {
    blas::Routines<T>::gesdd()(&jobz, const_cast<fint*>(&fn), const_cast<fint*>(&fm), w.data(),
                               const_cast<fint*>(&fn), s.data(), nullptr, const_cast<fint*>(&fn), vt.data(),
                               const_cast<fint*>(&fm), &q1, &lwork, iwork.data(), &info);
  }
  blas::check_info(info, "workspace query");
  lwork = std::max({blas::lwork_from(q1), blas::lwork_from(q2), blas::lwork_from(q3), fint(1)});
  std::vector<T> work(static_cast<std::size_t>(lwork));

  for (index_t b = 0; b < nb; ++b) {
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::scaled_copy_nonzero(in.matrix(b), w.data())) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    fint lw = lwork;
    if (qr) {
      blas::Routines<T>::geqrf()(const_cast<fint*>(&fn), const_cast<fint*>(&fm), w.data(),
                                 const_cast<fint*>(&fn), tau.data(), work.data(), &lw, &info);
      blas::check_info(info, "geqrf");
      for (index_t j = 0; j < m; ++j)
        for (index_t i = 0; i < m; ++i) r[i + j * m] = i <= j ? w[i + j * static_cast<std::size_t>(n)] : T(0);
      lw = lwork;
      blas::Routines<T>::gesdd()(&jobz, const_cast<fint*>(&fm), const_cast<fint*>(&fm), r.data(),
                                 const_cast<fint*>(&fm), s.data(), nullptr, const_cast<fint*>(&fm), vt.data(),
                                 const_cast<fint*>(&fm), work.data(), &lw, iwork.data(), &info);
      blas::check_info(info, "gesdd");
      const index_t k = detail::count_kept(s.data(), m, sigma_rtol);
      // C = [U1_r VT1_r; 0] (column-major n x m in the output), then X^T = Q C.
      std::memset(o, 0, sizeof(T) * mn);
      if (k > 0) {
        blas::gemm<T>('N', 'N', fm, fm, static_cast<fint>(k), T(1), r.data(), fm, vt.data(), fm, T(0), p.data(), fm);
        for (index_t j = 0; j < m; ++j) std::memcpy(o + j * n, p.data() + j * m, sizeof(T) * m);
      }
      lw = lwork;
      char side = 'L', trans = 'N';
      blas::Routines<T>::ormqr()(&side, &trans, const_cast<fint*>(&fn), const_cast<fint*>(&fm),
                                 const_cast<fint*>(&fm), w.data(), const_cast<fint*>(&fn), tau.data(), o,
                                 const_cast<fint*>(&fn), work.data(), &lw, &info);
      blas::check_info(info, "ormqr");
    } else {
      blas::Routines<T>::gesdd()(&jobz, const_cast<fint*>(&fn), const_cast<fint*>(&fm), w.data(),
                                 const_cast<fint*>(&fn), s.data(), nullptr, const_cast<fint*>(&fn), vt.data(),
                                 const_cast<fint*>(&fm), work.data(), &lw, iwork.data(), &info);
      blas::check_info(info, "gesdd");
      const index_t k = detail::count_kept(s.data(), m, sigma_rtol);
      if (k == 0) {
        std::memset(o, 0, sizeof(T) * mn);
        continue;
      }
      // X^T = U_r VT_r, U in w (column-major n x m).
      blas::gemm<T>('N', 'N', fn, fm, static_cast<fint>(k), T(1), w.data(), fn, vt.data(), fm, T(0), o, fn);
    }
  }
}

template <class T>
void whiten_eigh(const StridedView<const T>& in, T* out, double lambda_rtol) {
  using blas::fint;
  check_rtol(lambda_rtol, "lambda_rtol");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const fint fm = blas::to_fint(m, "m"), fn = blas::to_fint(n, "n");
  const std::size_t mn = static_cast<std::size_t>(m) * n, mm = static_cast<std::size_t>(m) * m;
  std::vector<T> gs(mn), a(mm), h(mm), wv(m);
  char jobz = 'V', uplo = 'L';
  fint info = 0, lwork = -1, liwork = -1, iq = 0;
  T q = 0;
  blas::Routines<T>::syevd()(&jobz, &uplo, const_cast<fint*>(&fm), a.data(), const_cast<fint*>(&fm), wv.data(), &q,
                             &lwork, &iq, &liwork, &info);
  blas::check_info(info, "syevd workspace query");
  lwork = std::max(blas::lwork_from(q), fint(1));
  liwork = std::max(iq, fint(1));
  std::vector<T> work(static_cast<std::size_t>(lwork));
  std::vector<fint> iwork(static_cast<std::size_t>(liwork));
  for (index_t b = 0; b < nb; ++b) {
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::scaled_copy_nonzero(in.matrix(b), gs.data())) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    blas::syrk<T>('L', 'T', fm, fn, T(1), gs.data(), fn, T(0), a.data(), fm);
    fint lw = lwork, liw = liwork;
    blas::Routines<T>::syevd()(&jobz, &uplo, const_cast<fint*>(&fm), a.data(), const_cast<fint*>(&fm), wv.data(),
                               work.data(), &lw, iwork.data(), &liw, &info);
    blas::check_info(info, "syevd");
    const double lmax = static_cast<double>(wv[m - 1]);
    if (!(lmax > 0)) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    const double thr = lambda_rtol * lmax;
    index_t k0 = m;
    while (k0 > 0 && static_cast<double>(wv[k0 - 1]) > thr && wv[k0 - 1] > T(0)) --k0;
    const index_t r = m - k0;
    // Qs = Q_r diag(l_r^-1/4), in place in a.
    for (index_t j = k0; j < m; ++j) {
      const T f = static_cast<T>(std::pow(static_cast<double>(wv[j]), -0.25));
      T* col = a.data() + j * m;
      for (index_t i = 0; i < m; ++i) col[i] *= f;
    }
    blas::syrk<T>('L', 'N', fm, static_cast<fint>(r), T(1), a.data() + k0 * m, fm, T(0), h.data(), fm);
    // X^T (column-major n x m) = Gs^T H
    blas::symm<T>('R', 'L', fn, fm, T(1), h.data(), fm, gs.data(), fn, T(0), o, fn);
  }
}

}  // namespace swanref
