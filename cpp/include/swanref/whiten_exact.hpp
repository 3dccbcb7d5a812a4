// swanref/whiten_exact.hpp: exact whitening (the polar factor of G).
//
// whiten_svd(G, sigma_rtol): thin SVD G = U S V^T, keep s_i > sigma_rtol s_1,
//   X = U_r V_r^T (zero matrix -> zeros). Accuracy ~ kappa * eps. Routes:
//   * refined (float64 default, RefinedEighSolver): eigh of the Gram matrix plus a
//     first-order one-sided refinement, as accurate as the SVD at about the cost of
//     the eigh route; per slice it falls back to
//   * svd (SvdSolver; column-major, W = Gs^T is n x m with n >= m):
//     - wide (n >= qr_ratio * m): W = Q R (geqrf), R = U1 S V1^T (gesdd, m x m),
//       X^T = Q (U1_r V1_r^T) applied with ormqr: no n x m singular-vector
//       matrices, no orglq, no n x m x m GEMM with explicit Q;
//     - otherwise gesdd of W (jobz 'O'), X^T = U_r VT_r (one GEMM).
//   * float32 input is computed in float64 and rounded once: by the plain eigh
//     route when sigma_rtol is far above float64 rounding noise (its kappa^2 eps64
//     error is then below kappa eps32), else by the refined route.
// whiten_eigh(G, lambda_rtol): A = Gs Gs^T (SYRK) = Q diag(l) Q^T (syevd),
//   keep l_i > lambda_rtol l_max, X = Q_r diag(l_r^-1/2) Q_r^T Gs, computed as
//   H = (Q_r l_r^-1/4)(Q_r l_r^-1/4)^T (SYRK) and X^T = Gs^T H (SYMM).
//   Accuracy ~ kappa^2 * eps.
// All prescale G by an exact power of two near 1/max|G| (scale invariant).
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
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
  refined,      // the refined eigh route (RefinedEighSolver), SVD route where it would not be accurate
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

  // A = Gs Gs^T, eigendecomposition in place; returns Q (eigenvalues in eigenvalues()).
  T* decompose() {
    blas::syrk<T>('L', 'T', fm_, fn_, T(1), gs_.data(), fn_, T(0), a_.data(), fm_);
    char jobz = 'V', uplo = 'L';
    fint info = 0, lw = lwork_, liw = liwork_;
    blas::Routines<T>::syevd()(&jobz, &uplo, &fm_, a_.data(), &fm_, w_.data(), work_.data(), &lw, iwork_.data(), &liw,
                               &info);
    blas::check_info(info, "syevd");
    return a_.data();
  }

  void run(T* o, double lambda_rtol) {
    const std::size_t mn = static_cast<std::size_t>(m_) * n_;
    decompose();
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

// Refined eigh route (float64 whiten_svd): kappa * eps accurate at about the cost of the eigh
// route. With A = Gs Gs^T = Q diag(l) Q^T from syevd (any orthogonal Q works in exact
// arithmetic), B = Q^T Gs has nearly orthogonal rows b_i of norms s_i, and
//   polar(Gs) = Q S^-1/2 B,   S = B B^T  (exactly, for orthogonal Q).
// S = D^1/2 (I + E) D^1/2 is nearly diagonal; its errors are componentwise (~eps s_i s_j), so
// the scaled E is small even when kappa is large (the one-sided Jacobi argument), and to first
// order S^-1/2 B = (I + C) D^-1/2 B with C_ij = -S_ij / (s_i (s_i + s_j)). The neglected terms
// are O(max|E|^2); the slice is accepted when max|E|^2 <= min(0.1 kappa_r eps, sqrt(eps)) (the
// error is then that of the SVD route, docs/performance.md), else the SVD route recomputes it.
// Rank: keep s_i > rtol s_1 with s_i^2 = ||b_i||^2 (accurate in the relative sense).
// Cost: 6 m^2 n + 2 m^3 flops in BLAS-3 + syevd(m), vs geqrf + gesdd(m) + ormqr.
//
// Large kappa: syevd's eigenvectors of the small eigenvalues are mixed at the absolute level
// eps l_1, so E_ij ~ eps s_1^2 / (s_i s_j) reaches eps kappa^2 (1e-4 at kappa = 1e6) and the
// first-order step alone would fail its test beyond kappa ~ 1e5. Any orthogonal Q works, so the
// rows b_i with s_i < tau s_1 (tau = 1e-2; they are the first k, syevd sorting ascending) are
// re-diagonalised on their own: A_k = B_k B_k^T = Q_k diag Q_k^T (syevd of k x k),
// B_k <- Q_k^T B_k, Q[:, :k] <- Q[:, :k] Q_k. Inside the block the mixing drops to
// eps (tau s_1)^2 / (s_i s_j) <= eps tau^2 kappa^2, and the measured max|E| at kappa = 1e6
// (1e7) is ~1e-8 (1e-6), so the test passes up to kappa ~ 1e7 with the SVD route's error (the
// table in docs/performance.md). Extra cost: 3 k^2 n + 2 m k^2 flops + syevd(k), taken only when
// kappa^2 eps > 1e-6, where the single step would be close to failing.
template <class T>
class RefinedEighSolver {
 public:
  using fint = blas::fint;
  RefinedEighSolver(index_t m, index_t n, const SvdOptions& opt)
      : m_(m), n_(n), fm_(blas::to_fint(m, "m")), fn_(blas::to_fint(n, "n")), opt_(opt), eigh_(m, n) {
    const std::size_t mn = static_cast<std::size_t>(m) * n, mm = static_cast<std::size_t>(m) * m;
    bc_.resize(mn);
    s_.resize(mm);
    nm_.resize(mm);
    mq_.resize(mm);
    d_.resize(m);
    d2_.resize(m);
  }

  T* input() { return eigh_.input(); }
  index_t fallbacks() const { return fallbacks_; }

  // The re-diagonalisation of the small block described above, on the kept (compacted) r
  // columns of Q and Bc; d_ holds their squared norms, dmax the largest. The output buffer o
  // (n x m, not yet written) and mq_ serve as scratch.
  void deflate_small(T* q, index_t r, double dmax, T* o) {
    constexpr double tau = 1e-2;
    const double eps = std::numeric_limits<T>::epsilon();
    double dmin = dmax;
    for (index_t i = 0; i < r; ++i) dmin = std::min(dmin, d_[i]);
    if (!(dmin > 0) || dmax / dmin * eps <= 1e-6) return;  // kappa^2 eps <= 1e-6
    index_t k = 0;
    for (index_t i = 0; i < r; ++i)
      if (d_[i] < tau * tau * dmax) k = i + 1;
    if (k < 2) return;
    fint fk = static_cast<fint>(k);
    if (dwork_.empty()) {  // syevd workspace for up to m (queried once)
      char jobz = 'V', uplo = 'L';
      fint info = 0, lwork = -1, liwork = -1, iq = 0;
      T wq = 0;
      blas::Routines<T>::syevd()(&jobz, &uplo, &fm_, s_.data(), &fm_, d2_.data(), &wq, &lwork, &iq, &liwork, &info);
      blas::check_info(info, "syevd workspace query");
      dwork_.resize(static_cast<std::size_t>(std::max(blas::lwork_from(wq), fint(1))));
      diwork_.resize(static_cast<std::size_t>(std::max(iq, fint(1))));
    }
    // A_k = B_k^T B_k with B_k the first k columns of Bc (column-major n x k); its eigenvectors
    blas::syrk<T>('L', 'T', fk, fn_, T(1), bc_.data(), fn_, T(0), s_.data(), fk);
    char jobz = 'V', uplo = 'L';
    fint info = 0, lw = static_cast<fint>(dwork_.size()), liw = static_cast<fint>(diwork_.size());
    blas::Routines<T>::syevd()(&jobz, &uplo, &fk, s_.data(), &fk, d2_.data(), dwork_.data(), &lw, diwork_.data(),
                               &liw, &info);
    blas::check_info(info, "syevd");
    // B_k <- B_k Q_k (through o), Q[:, :k] <- Q[:, :k] Q_k (through mq_)
    blas::gemm<T>('N', 'N', fn_, fk, fk, T(1), bc_.data(), fn_, s_.data(), fk, T(0), o, fn_);
    std::memcpy(bc_.data(), o, sizeof(T) * static_cast<std::size_t>(n_) * k);
    blas::gemm<T>('N', 'N', fm_, fk, fk, T(1), q, fm_, s_.data(), fk, T(0), mq_.data(), fm_);
    std::memcpy(q, mq_.data(), sizeof(T) * static_cast<std::size_t>(m_) * k);
    ++deflations_;
  }
  index_t deflations() const { return deflations_; }

  void run(T* o, double rtol) {
    const std::size_t mn = static_cast<std::size_t>(m_) * n_;
    T* gs = eigh_.input();
    T* q = eigh_.decompose();  // column-major m x m eigenvectors (A overwritten)
    // Bc (column-major n x m) = Gs^T Q: column i is b_i.
    blas::gemm<T>('N', 'N', fn_, fm_, fm_, T(1), gs, fn_, q, fm_, T(0), bc_.data(), fn_);
    double dmax = 0;
    for (index_t i = 0; i < m_; ++i) {
      const T* c = bc_.data() + i * static_cast<std::size_t>(n_);
      double acc = 0;
      for (index_t k = 0; k < n_; ++k) acc += static_cast<double>(c[k]) * c[k];
      d_[i] = acc;
      dmax = std::max(dmax, acc);
    }
    if (!(dmax > 0)) {
      std::memset(o, 0, sizeof(T) * mn);
      return;
    }
    // Compact the kept columns of Q and Bc to the front.
    const double thr = rtol * rtol * dmax;
    index_t r = 0;
    for (index_t i = 0; i < m_; ++i) {
      if (!(d_[i] > thr)) continue;
      if (r != i) {
        std::memcpy(q + r * m_, q + i * m_, sizeof(T) * m_);
        std::memcpy(bc_.data() + r * static_cast<std::size_t>(n_), bc_.data() + i * static_cast<std::size_t>(n_),
                    sizeof(T) * n_);
      }
      d_[r] = d_[i];
      ++r;
    }
    const fint fr = static_cast<fint>(r);
    deflate_small(q, r, dmax, o);
    // S = B_r B_r^T (lower triangle, column-major r x r).
    blas::syrk<T>('L', 'T', fr, fn_, T(1), bc_.data(), fn_, T(0), s_.data(), fr);
    double smax = 0, smin = std::numeric_limits<double>::infinity(), emax = 0;
    for (index_t i = 0; i < r; ++i) {
      const double si = std::sqrt(static_cast<double>(s_[i + i * r]));
      d_[i] = si;
      smax = std::max(smax, si);
      smin = std::min(smin, si);
    }
    // N = (I + C) D^-1/2 (column-major r x r), C from the lower triangle of S.
    for (index_t j = 0; j < r; ++j) {
      const double sj = d_[j];
      for (index_t i = j; i < r; ++i) {
        if (i == j) {
          nm_[i + j * r] = static_cast<T>(1.0 / sj);
          continue;
        }
        const double sij = static_cast<double>(s_[i + j * r]), si = d_[i];
        emax = std::max(emax, std::abs(sij) / (si * sj));
        // C_ij = -S_ij / (s_i (s_i + s_j)),  C_ji = -S_ij / (s_j (s_i + s_j))
        nm_[i + j * r] = static_cast<T>(-sij / (si * (si + sj)) / sj);
        nm_[j + i * r] = static_cast<T>(-sij / (sj * (si + sj)) / si);
      }
    }
    const double eps = std::numeric_limits<T>::epsilon();
    // Neglected terms ~0.1 max|E|^2 (measured; in the polar factor and in the orthonormality of
    // the rows): accept when max|E|^2 <= 0.1 kappa_r eps, so the error stays at the SVD route's
    // level, and <= sqrt(eps) (noise-level directions, kept by a zero rank tolerance, go to the
    // SVD route, which keeps the rows orthonormal).
    if (!(emax * emax <= std::min(0.1 * (smax / smin) * eps, std::sqrt(eps)))) {  // SVD route
      ++fallbacks_;
      if (!svd_) svd_.reset(new SvdSolver<T>(m_, n_, opt_));
      std::memcpy(svd_->input(), gs, sizeof(T) * mn);
      svd_->run(o, rtol);
      return;
    }
    // M = Q_r N (column-major m x r), then X^T (column-major n x m) = B_r^T M^T.
    blas::gemm<T>('N', 'N', fm_, fr, fr, T(1), q, fm_, nm_.data(), fr, T(0), mq_.data(), fm_);
    blas::gemm<T>('N', 'T', fn_, fm_, fr, T(1), bc_.data(), fn_, mq_.data(), fm_, T(0), o, fn_);
  }

 private:
  index_t m_, n_;
  fint fm_, fn_;
  SvdOptions opt_;
  EighSolver<T> eigh_;
  std::vector<T> bc_, s_, nm_, mq_, d2_, dwork_;
  std::vector<fint> diwork_;
  std::vector<double> d_;
  index_t deflations_ = 0;
  std::unique_ptr<SvdSolver<T>> svd_;
  index_t fallbacks_ = 0;
};

// The float64 eigh route resolves s_i > rtol s_1 of float32 data reliably (eigenvalues
// lambda_i > rtol^2 lambda_1 carry absolute errors ~ max(m, n) eps64 lambda_1) when
// rtol^2 >= 1e4 max(m, n) eps64; its error is then <= kappa^2 eps64 <= kappa eps32.
inline bool eigh_double_accurate_for(index_t m, index_t n, double rtol) {
  const double eps64 = std::numeric_limits<double>::epsilon();
  return rtol * rtol >= 1e4 * static_cast<double>(std::max(m, n)) * eps64;
}

}  // namespace detail

namespace detail {

// Runs `solver` (SvdSolver / EighSolver / RefinedEighSolver of precision U) over the batch;
// U may be wider than T (float32 input computed in float64, rounded once at the end).
template <class T, class Solver, class U>
void run_exact(const StridedView<const T>& in, T* out, Solver& solver, double rtol, std::vector<U>& tmp) {
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  const std::size_t mn = static_cast<std::size_t>(m) * n;
  for (index_t b = 0; b < nb; ++b) {
    T* o = out + b * static_cast<index_t>(mn);
    if (!scaled_copy_nonzero(in.matrix(b), solver.input())) {
      std::memset(o, 0, sizeof(T) * mn);
      continue;
    }
    if (std::is_same<T, U>::value) {
      solver.run(reinterpret_cast<U*>(o), rtol);
    } else {
      tmp.resize(mn);
      solver.run(tmp.data(), rtol);
      for (std::size_t k = 0; k < mn; ++k) o[k] = static_cast<T>(tmp[k]);
    }
  }
}

template <class T, class U>
void whiten_svd_in(const StridedView<const T>& in, T* out, double sigma_rtol, const SvdOptions& opt, SvdRoute route) {
  const index_t m = in.rows(), n = in.cols();
  std::vector<U> tmp;
  if (route == SvdRoute::svd || route == SvdRoute::svd_double) {
    SvdSolver<U> solver(m, n, opt);
    run_exact(in, out, solver, sigma_rtol, tmp);
  } else if (route == SvdRoute::eigh_double) {
    EighSolver<U> solver(m, n);
    run_exact(in, out, solver, sigma_rtol * sigma_rtol, tmp);
  } else {
    RefinedEighSolver<U> solver(m, n, opt);
    run_exact(in, out, solver, sigma_rtol, tmp);
  }
}

}  // namespace detail

// whiten_svd: kappa * eps accurate polar factor U_r V_r^T, keeping s_i > sigma_rtol s_1.
// Routes (SvdOptions::route; docs/performance.md has the measurements):
//  * float64, automatic = refined: the refined eigh route, falling back per slice to the
//    SVD route (QR + gesdd for wide slices, gesdd otherwise) where it would not be accurate;
//  * float32, automatic: computed in float64 and rounded once -- the plain eigh route when
//    sigma_rtol^2 >= 1e4 max(m, n) eps64 (then kappa^2 eps64 <= kappa eps32), else refined;
//  * svd: the SVD route in the input precision; svd_double / eigh_double (float32 only).
template <class T>
void whiten_svd(const StridedView<const T>& in, T* out, double sigma_rtol, SvdOptions opt = {}) {
  check_rtol(sigma_rtol, "sigma_rtol");
  const index_t m = in.rows(), n = in.cols(), nb = in.batch_count();
  check_whiten_shape(m, n);
  if (m == 0 || n == 0 || nb == 0) return;
  SvdRoute route = opt.route;
  if (std::is_same<T, float>::value) {
    if (route == SvdRoute::svd) return detail::whiten_svd_in<T, T>(in, out, sigma_rtol, opt, route);
    const bool eigh_ok = detail::eigh_double_accurate_for(m, n, sigma_rtol);
    if (route == SvdRoute::automatic) route = eigh_ok ? SvdRoute::eigh_double : SvdRoute::refined;
    if (route == SvdRoute::eigh_double)
      require(eigh_ok, "route eigh_double needs sigma_rtol^2 >= 1e4 * max(m, n) * eps64");
    return detail::whiten_svd_in<T, double>(in, out, sigma_rtol, opt, route);
  }
  require(route != SvdRoute::svd_double && route != SvdRoute::eigh_double,
          "routes svd_double / eigh_double are for float32 input");
  if (route == SvdRoute::automatic) route = SvdRoute::refined;
  detail::whiten_svd_in<T, T>(in, out, sigma_rtol, opt, route);
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
