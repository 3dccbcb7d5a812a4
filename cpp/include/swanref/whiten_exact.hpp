// swanref/whiten_exact.hpp: exact whitening (the polar factor of G).
//
// whiten_svd(G, sigma_rtol): thin SVD G = U S V^T, keep s_i > sigma_rtol s_1,
//   X = U_r V_r^T (zero matrix -> zeros). Accuracy ~ kappa * eps.
//   Route (column-major, W = Gs^T is n x m with n >= m):
//   * wide (n >= qr_ratio * m): W = Q R (geqrf), R = U1 S V1^T (gesdd, m x m),
//     X^T = Q (U1_r V1_r^T) applied with ormqr: no n x m singular-vector
//     matrices, no orglq, no n x m x m GEMM with explicit Q;
//   * otherwise gesdd of W (jobz 'O'), X^T = U_r VT_r (one GEMM).
//   float32 input is computed in float64 (LAPACK's single-precision SVD is not faster
//   on CPU): by the eigh route when sigma_rtol is far above float64 rounding noise
//   (its kappa^2 eps64 error is then below kappa eps32), else by the float64 SVD route.
// whiten_eigh(G, lambda_rtol): A = Gs Gs^T (SYRK) = Q diag(l) Q^T (syevd),
//   keep l_i > lambda_rtol l_max, X = Q_r diag(l_r^-1/2) Q_r^T Gs, computed as
//   H = (Q_r l_r^-1/4)(Q_r l_r^-1/4)^T (SYRK) and X^T = Gs^T H (SYMM).
//   Accuracy ~ kappa^2 * eps.
// Both prescale G by an exact power of two near 1/max|G| (scale invariant).
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <algorithm>
#include <string>
#include <vector>

#include "swanref/blas.hpp"
#include "swanref/newton_schulz.hpp"  // check_whiten_shape
#include "swanref/scale.hpp"
#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {

enum class SvdRoute {
  automatic,    // float64: svd; float32: see whiten_svd<float>
  svd,          // LAPACK SVD in the input precision
  svd_double,   // float32 input: the SVD route in float64
  eigh_double,  // float32 input: the eigh route in float64 (allowed only when it is accurate enough)
};

struct SvdOptions {
  // Take the QR route when n >= qr_ratio * m (see docs/performance.md for the measurement).
  double qr_ratio = 1.5;
  SvdRoute route = SvdRoute::automatic;
};

inline void check_rtol(double rtol, const char* name) {
  require(std::isfinite(rtol) && rtol >= 0, std::string(name) + " must be finite and >= 0");
}

namespace detail {

// Copy with prescale; false for an all-zero slice.
template <class T, class U>
inline bool scaled_copy_nonzero(const MatrixView<const T>& g, U* gs) {
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

// SVD-route solver for one m x n slice (m <= n); workspace sized once, reused over the batch.
template <class T>
class SvdSolver {
 public:
  using fint = blas::fint;
  SvdSolver(index_t m, index_t n, const SvdOptions& opt)
      : m_(m), n_(n), fm_(blas::to_fint(m, "m")), fn_(blas::to_fint(n, "n")),
        qr_(static_cast<double>(n) >= opt.qr_ratio * static_cast<double>(m) && n > m) {
    const std::size_t mn = static_cast<std::size_t>(m) * n, mm = static_cast<std::size_t>(m) * m;
    w_.resize(mn);
    s_.resize(m);
    vt_.resize(mm);
    if (qr_) {
      tau_.resize(m);
      r_.resize(mm);
      p_.resize(mm);
    }
    iwork_.resize(8 * static_cast<std::size_t>(m));
    fint info = 0, lwork = -1;
    T q1 = 0, q2 = 0, q3 = 0;
    if (qr_) {
      blas::Routines<T>::geqrf()(&fn_, &fm_, w_.data(), &fn_, tau_.data(), &q1, &lwork, &info);
      lwork = -1;
      blas::Routines<T>::gesdd()(&jobz_, &fm_, &fm_, r_.data(), &fm_, s_.data(), nullptr, &fm_, vt_.data(), &fm_, &q2,
                                 &lwork, iwork_.data(), &info);
      lwork = -1;
      char side = 'L', trans = 'N';
      T dummy = 0;
      blas::Routines<T>::ormqr()(&side, &trans, &fn_, &fm_, &fm_, w_.data(), &fn_, tau_.data(), &dummy, &fn_, &q3,
                                 &lwork, &info);
    } else {
      blas::Routines<T>::gesdd()(&jobz_, &fn_, &fm_, w_.data(), &fn_, s_.data(), nullptr, &fn_, vt_.data(), &fm_, &q1,
                                 &lwork, iwork_.data(), &info);
    }
    blas::check_info(info, "workspace query");
    lwork_ = std::max({blas::lwork_from(q1), blas::lwork_from(q2), blas::lwork_from(q3), fint(1)});
    work_.resize(static_cast<std::size_t>(lwork_));
  }

  // Prescaled dense copy of the slice goes here (row-major m x n == column-major n x m).
  T* input() { return w_.data(); }

  // out (dense row-major m x n) = U_r V_r^T of input().
  void run(T* o, double rtol) {
    const std::size_t mn = static_cast<std::size_t>(m_) * n_;
    fint info = 0, lw = lwork_;
    if (qr_) {
      blas::Routines<T>::geqrf()(&fn_, &fm_, w_.data(), &fn_, tau_.data(), work_.data(), &lw, &info);
      blas::check_info(info, "geqrf");
      for (index_t j = 0; j < m_; ++j)
        for (index_t i = 0; i < m_; ++i) r_[i + j * m_] = i <= j ? w_[i + j * static_cast<std::size_t>(n_)] : T(0);
      lw = lwork_;
      blas::Routines<T>::gesdd()(&jobz_, &fm_, &fm_, r_.data(), &fm_, s_.data(), nullptr, &fm_, vt_.data(), &fm_,
                                 work_.data(), &lw, iwork_.data(), &info);
      blas::check_info(info, "gesdd");
      const index_t k = count_kept(s_.data(), m_, rtol);
      // C = [U1_r VT1_r; 0] (column-major n x m in the output), then X^T = Q C.
      std::memset(o, 0, sizeof(T) * mn);
      if (k > 0) {
        blas::gemm<T>('N', 'N', fm_, fm_, static_cast<fint>(k), T(1), r_.data(), fm_, vt_.data(), fm_, T(0), p_.data(),
                      fm_);
        for (index_t j = 0; j < m_; ++j) std::memcpy(o + j * n_, p_.data() + j * m_, sizeof(T) * m_);
      }
      lw = lwork_;
      char side = 'L', trans = 'N';
      blas::Routines<T>::ormqr()(&side, &trans, &fn_, &fm_, &fm_, w_.data(), &fn_, tau_.data(), o, &fn_, work_.data(),
                                 &lw, &info);
      blas::check_info(info, "ormqr");
    } else {
      blas::Routines<T>::gesdd()(&jobz_, &fn_, &fm_, w_.data(), &fn_, s_.data(), nullptr, &fn_, vt_.data(), &fm_,
                                 work_.data(), &lw, iwork_.data(), &info);
      blas::check_info(info, "gesdd");
      const index_t k = count_kept(s_.data(), m_, rtol);
      if (k == 0) {
        std::memset(o, 0, sizeof(T) * mn);
        return;
      }
      // X^T = U_r VT_r, U in w (column-major n x m).
      blas::gemm<T>('N', 'N', fn_, fm_, static_cast<fint>(k), T(1), w_.data(), fn_, vt_.data(), fm_, T(0), o, fn_);
    }
  }

 private:
  index_t m_, n_;
  fint fm_, fn_;
  bool qr_;
  char jobz_ = 'O';
  fint lwork_ = 1;
  std::vector<T> w_, s_, vt_, tau_, r_, p_, work_;
  std::vector<fint> iwork_;
};

// Eigh-route solver for one m x n slice: A = Gs Gs^T = Q diag(l) Q^T, keep l_i > lambda_rtol l_max,
// X^T = Gs^T H with H = (Q_r l_r^-1/4)(Q_r l_r^-1/4)^T.
template <class T>
class EighSolver {
 public:
  using fint = blas::fint;
  EighSolver(index_t m, index_t n) : m_(m), n_(n), fm_(blas::to_fint(m, "m")), fn_(blas::to_fint(n, "n")) {
    const std::size_t mn = static_cast<std::size_t>(m) * n, mm = static_cast<std::size_t>(m) * m;
    gs_.resize(mn);
    a_.resize(mm);
    h_.resize(mm);
    w_.resize(m);
    char jobz = 'V', uplo = 'L';
    fint info = 0, lwork = -1, liwork = -1, iq = 0;
    T q = 0;
    blas::Routines<T>::syevd()(&jobz, &uplo, &fm_, a_.data(), &fm_, w_.data(), &q, &lwork, &iq, &liwork, &info);
    blas::check_info(info, "syevd workspace query");
    lwork_ = std::max(blas::lwork_from(q), fint(1));
    liwork_ = std::max(iq, fint(1));
    work_.resize(static_cast<std::size_t>(lwork_));
    iwork_.resize(static_cast<std::size_t>(liwork_));
  }

  T* input() { return gs_.data(); }

  void run(T* o, double lambda_rtol) {
    const std::size_t mn = static_cast<std::size_t>(m_) * n_;
    blas::syrk<T>('L', 'T', fm_, fn_, T(1), gs_.data(), fn_, T(0), a_.data(), fm_);
    char jobz = 'V', uplo = 'L';
    fint info = 0, lw = lwork_, liw = liwork_;
    blas::Routines<T>::syevd()(&jobz, &uplo, &fm_, a_.data(), &fm_, w_.data(), work_.data(), &lw, iwork_.data(), &liw,
                               &info);
    blas::check_info(info, "syevd");
    const double lmax = static_cast<double>(w_[m_ - 1]);
    if (!(lmax > 0)) {
      std::memset(o, 0, sizeof(T) * mn);
      return;
    }
    const double thr = lambda_rtol * lmax;
    index_t k0 = m_;
    while (k0 > 0 && static_cast<double>(w_[k0 - 1]) > thr && w_[k0 - 1] > T(0)) --k0;
    const index_t r = m_ - k0;
    // Qs = Q_r diag(l_r^-1/4), in place.
    for (index_t j = k0; j < m_; ++j) {
      const T f = static_cast<T>(std::pow(static_cast<double>(w_[j]), -0.25));
      T* col = a_.data() + j * m_;
      for (index_t i = 0; i < m_; ++i) col[i] *= f;
    }
    blas::syrk<T>('L', 'N', fm_, static_cast<fint>(r), T(1), a_.data() + k0 * m_, fm_, T(0), h_.data(), fm_);
    // X^T (column-major n x m) = Gs^T H
    blas::symm<T>('R', 'L', fn_, fm_, T(1), h_.data(), fm_, gs_.data(), fn_, T(0), o, fn_);
  }

 private:
  index_t m_, n_;
  fint fm_, fn_;
  fint lwork_ = 1, liwork_ = 1;
  std::vector<T> gs_, a_, h_, w_, work_;
  std::vector<fint> iwork_;
};

// The float64 eigh route resolves s_i > rtol s_1 of float32 data reliably (eigenvalues
// lambda_i > rtol^2 lambda_1 carry absolute errors ~ max(m, n) eps64 lambda_1) when
// rtol^2 >= 1e4 max(m, n) eps64; its error is then <= kappa^2 eps64 <= kappa eps32.
inline bool eigh_double_accurate_for(index_t m, index_t n, double rtol) {
  const double eps64 = std::numeric_limits<double>::epsilon();
  return rtol * rtol >= 1e4 * static_cast<double>(std::max(m, n)) * eps64;
}

}  // namespace detail

// float64 (and float32 with route = svd): the SVD route in the input precision.
template <class T>
void whiten_svd(const StridedView<const T>& in, T* out, double sigma_rtol, SvdOptions opt = {}) {
  check_rtol(sigma_rtol, "sigma_rtol");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const std::size_t mn = static_cast<std::size_t>(m) * n;
  if (std::is_same<T, float>::value && opt.route != SvdRoute::svd) {
    // float32: compute in float64 and round once. Both float64 routes are more accurate than a
    // float32 SVD (error <= kappa eps32) at the cost of a float64 SVD; the eigh route is ~3-4x
    // faster and is taken whenever the rank tolerance is far above float64 rounding noise.
    bool use_eigh = detail::eigh_double_accurate_for(m, n, sigma_rtol);
    if (opt.route == SvdRoute::svd_double) use_eigh = false;
    if (opt.route == SvdRoute::eigh_double) {
      require(use_eigh, "route eigh_double needs sigma_rtol^2 >= 1e4 * max(m, n) * eps64");
    }
    std::vector<double> o64(mn);
    if (use_eigh) {
      detail::EighSolver<double> solver(m, n);
      for (index_t b = 0; b < nb; ++b) {
        T* o = out + b * static_cast<index_t>(mn);
        if (!detail::scaled_copy_nonzero(in.matrix(b), solver.input())) {
          std::memset(o, 0, sizeof(T) * mn);
          continue;
        }
        solver.run(o64.data(), sigma_rtol * sigma_rtol);
        for (std::size_t k = 0; k < mn; ++k) o[k] = static_cast<T>(o64[k]);
      }
    } else {
      detail::SvdSolver<double> solver(m, n, opt);
      for (index_t b = 0; b < nb; ++b) {
        T* o = out + b * static_cast<index_t>(mn);
        if (!detail::scaled_copy_nonzero(in.matrix(b), solver.input())) {
          std::memset(o, 0, sizeof(T) * mn);
          continue;
        }
        solver.run(o64.data(), sigma_rtol);
        for (std::size_t k = 0; k < mn; ++k) o[k] = static_cast<T>(o64[k]);
      }
    }
    return;
  }
  require(opt.route == SvdRoute::automatic || opt.route == SvdRoute::svd,
          "routes svd_double / eigh_double are for float32 input");
  detail::SvdSolver<T> solver(m, n, opt);
  for (index_t b = 0; b < nb; ++b) {
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::scaled_copy_nonzero(in.matrix(b), solver.input())) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    solver.run(o, sigma_rtol);
  }
}

template <class T>
void whiten_eigh(const StridedView<const T>& in, T* out, double lambda_rtol) {
  check_rtol(lambda_rtol, "lambda_rtol");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  const std::size_t mn = static_cast<std::size_t>(m) * n;
  detail::EighSolver<T> solver(m, n);
  for (index_t b = 0; b < nb; ++b) {
    T* o = out + b * static_cast<index_t>(mn);
    if (!detail::scaled_copy_nonzero(in.matrix(b), solver.input())) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    solver.run(o, lambda_rtol);
  }
}

}  // namespace swanref
