// C++ tests of the header-only core (ctest). Plain checks, no framework.
// The BLAS-free parts (views, GradNorm, SinkGD, NSDS with grad_fro/none) always
// run; whitening runs when the build linked a BLAS (SWANREF_TEST_WITH_BLAS).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <climits>
#include <cstring>
#include <limits>

#ifdef SWANREF_TEST_WITH_BLAS
#include "swanref/blas_linked.hpp"
#endif
#include "swanref/swanref.hpp"

using swanref::index_t;

static int failures = 0;
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                                    \
    }                                                                                \
  } while (0)

template <class F>
static bool throws(swanref::Status code, F&& f) {
  try {
    f();
  } catch (const swanref::Error& e) {
    return e.code() == code;
  }
  return false;
}

static std::vector<double> randn(std::size_t k, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> d;
  std::vector<double> v(k);
  for (auto& x : v) x = d(gen);
  return v;
}

static double orth_err(const std::vector<double>& x, index_t m, index_t n) {
  double e = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      double s = 0;
      for (index_t k = 0; k < n; ++k) s += x[i * n + k] * x[j * n + k];
      e = std::max(e, std::abs(s - (i == j)));
    }
  return e;
}

static void test_views() {
  std::vector<double> buf(2 * 3 * 4);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = double(i);
  auto v = swanref::StridedView<const double>::contiguous(buf.data(), {2, 3, 4});
  CHECK(v.batch_count() == 2 && v.rows() == 3 && v.cols() == 4);
  CHECK(v.matrix(1)(2, 3) == 23.0);
  // transposed view (strides swapped) and negative strides
  swanref::StridedView<const double> t(buf.data(), {2, 4, 3}, {12, 1, 4});
  CHECK(t.matrix(1)(3, 2) == 23.0);
  swanref::StridedView<const double> r(buf.data() + 11, {3, 4}, {-4, -1});
  CHECK(r.matrix(0)(0, 0) == 11.0 && r.matrix(0)(2, 3) == 0.0);
  CHECK(throws(swanref::Status::invalid_argument, [&] { swanref::StridedView<const double>(buf.data(), {5}, {1}); }));
}

static void test_grad_norm() {
  const index_t m = 5, n = 37;
  auto g = randn(m * n, 1);
  for (index_t j = 0; j < n; ++j) g[2 * n + j] = 3.25;  // constant row
  std::vector<double> out(m * n);
  swanref::grad_norm(swanref::StridedView<const double>::contiguous(g.data(), {m, n}), out.data(), 0.0);
  for (index_t i = 0; i < m; ++i) {
    double mu = 0, v = 0;
    for (index_t j = 0; j < n; ++j) mu += out[i * n + j];
    for (index_t j = 0; j < n; ++j) v += out[i * n + j] * out[i * n + j];
    if (i == 2) {
      CHECK(mu == 0 && v == 0);
    } else {
      CHECK(std::abs(mu / n) < 1e-14 && std::abs(v / n - 1) < 1e-13);
    }
  }
  // Fortran-order input gives the same result; huge and subnormal rows stay finite and scale invariant.
  std::vector<double> gf(m * n), of(m * n);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) gf[i + j * m] = g[i * n + j];
  swanref::grad_norm(swanref::StridedView<const double>(gf.data(), {m, n}, {1, m}), of.data(), 0.0);
  CHECK(of == out);
  for (double s : {1e300, 1e-300, 4.9e-324 * 1024}) {
    std::vector<double> gs(n), os(n), o1(n), g1(g.begin(), g.begin() + n);
    double amax = 0;
    for (double x : g1) amax = std::max(amax, std::abs(x));
    for (index_t j = 0; j < n; ++j) gs[j] = g1[j] / amax * s;
    swanref::grad_norm(swanref::StridedView<const double>::contiguous(gs.data(), {1, n}), os.data(), 0.0);
    for (index_t j = 0; j < n; ++j) gs[j] = gs[j] / s;  // back to O(1) (exact up to the input rounding)
    swanref::grad_norm(swanref::StridedView<const double>::contiguous(gs.data(), {1, n}), o1.data(), 0.0);
    for (index_t j = 0; j < n; ++j) CHECK(std::isfinite(os[j]) && std::abs(os[j] - o1[j]) < 1e-6);
  }
  CHECK(throws(swanref::Status::invalid_argument, [&] {
    swanref::grad_norm(swanref::StridedView<const double>::contiguous(g.data(), {m, n}), out.data(), -1.0);
  }));
  // float
  std::vector<float> gf32(g.begin(), g.end()), of32(m * n);
  swanref::grad_norm(swanref::StridedView<const float>::contiguous(gf32.data(), {m, n}), of32.data(), 0.0);
  for (index_t k = 0; k < m * n; ++k) CHECK(std::abs(of32[k] - out[k]) < 1e-5);
}

// The SSE2 baseline and the AVX2 version of the GradNorm row kernel agree bitwise (fixed lanes),
// with and without streaming stores, for both dtypes and row lengths around the lane count.
template <class T>
static void test_grad_norm_kernels_agree() {
#if defined(SWANREF_GRAD_NORM_AVX2)
  if (!__builtin_cpu_supports("avx2")) return;
  for (index_t n : {1, 3, 15, 16, 17, 64, 333, 4096}) {
    auto g = randn(n, 7 + static_cast<unsigned>(n));
    std::vector<T> x(g.begin(), g.end());
    // 64-byte aligned outputs (streaming stores need alignment) plus an offset copy
    std::vector<T> a(n + 64), b(n + 64), c(n + 64), d(n + 64);
    for (bool stream : {false, true}) {
      T* pa = a.data() + (64 - reinterpret_cast<std::uintptr_t>(a.data()) % 64) / sizeof(T) % 16;
      T* pb = b.data() + (64 - reinterpret_cast<std::uintptr_t>(b.data()) % 64) / sizeof(T) % 16;
      T* pc = c.data() + 1;
      T* pd = d.data() + 1;
      std::vector<T> w(n);
      swanref::detail::grad_norm_row_generic(x.data(), n, T(1e-8), pa, w.data(), stream);
      swanref::detail::grad_norm_row_avx2(x.data(), n, T(1e-8), pb, w.data(), stream);
      swanref::detail::grad_norm_row_generic(x.data(), n, T(1e-8), pc, w.data(), stream);
      swanref::detail::grad_norm_row_avx2(x.data(), n, T(1e-8), pd, w.data(), stream);
#if defined(__SSE2__)
      _mm_sfence();
#endif
      for (index_t j = 0; j < n; ++j) CHECK(pa[j] == pb[j] && pa[j] == pc[j] && pa[j] == pd[j]);
    }
  }
#endif
}

static void test_sinkgd() {
  const index_t m = 6, n = 9;
  auto g = randn(m * n, 2);
  std::vector<double> out(m * n);
  swanref::sinkgd(swanref::StridedView<const double>::contiguous(g.data(), {m, n}), out.data(), 20);
  for (index_t j = 0; j < n; ++j) {
    double s = 0;
    for (index_t i = 0; i < m; ++i) s += out[i * n + j] * out[i * n + j];
    CHECK(std::abs(s - m) < 1e-10);  // columns have norm sqrt(m) after the last half-step
  }
  CHECK(throws(swanref::Status::invalid_argument, [&] {
    swanref::sinkgd(swanref::StridedView<const double>::contiguous(g.data(), {m, n}), out.data(), -1);
  }));
}

static void test_shape_errors() {
  std::vector<double> g(12), out(12);
  auto tall = swanref::StridedView<const double>::contiguous(g.data(), {4, 3});
  CHECK(throws(swanref::Status::invalid_argument,
               [&] { swanref::whiten_nsds(tall, out.data(), 2, 0.5, swanref::Scaling::grad_fro); }));
  CHECK(throws(swanref::Status::invalid_argument, [&] { swanref::parse_scaling("spectral"); }));
}

#ifdef SWANREF_TEST_WITH_BLAS
static void test_whitening() {
  swanref::blas::use_linked_blas();
  CHECK(swanref::blas::complete());
  const index_t b = 2, m = 12, n = 40;
  auto g = randn(b * m * n, 3);
  auto view = swanref::StridedView<const double>::contiguous(g.data(), {b, m, n});
  std::vector<double> xs(b * m * n), xe(b * m * n), xn(b * m * n), xq(b * m * n);
  swanref::whiten_svd(view, xs.data(), 0.0);
  swanref::SvdOptions direct;
  direct.qr_ratio = 1e9;
  swanref::whiten_svd(view, xq.data(), 0.0, direct);
  swanref::whiten_eigh(view, xe.data(), 0.0);
  swanref::whiten_newton_schulz(view, xn.data(), 40, 0.5, swanref::Scaling::gram_fro);
  for (index_t k = 0; k < b * m * n; ++k) {
    CHECK(std::abs(xs[k] - xe[k]) < 1e-12);
    CHECK(std::abs(xs[k] - xq[k]) < 1e-13);
    CHECK(std::abs(xs[k] - xn[k]) < 1e-12);
  }
  std::vector<double> slice(xs.begin(), xs.begin() + m * n);
  CHECK(orth_err(slice, m, n) < 1e-13);
  // symmetric products of commuting symmetric matrices: C = A^2 computed by halves
  const index_t k = 450;
  auto r = randn(k * k, 4);
  std::vector<double> a(k * k), c(k * k), ref(k * k);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) a[i + j * k] = r[i + j * k] + r[j + i * k];
  swanref::sym_product<double>(k, 1.0, a.data(), a.data(), c.data());
  swanref::blas::gemm<double>('N', 'N', k, k, k, 1.0, a.data(), k, a.data(), k, 0.0, ref.data(), k);
  double err = 0;
  for (index_t i = 0; i < k * k; ++i) err = std::max(err, std::abs(c[i] - ref[i]));
  CHECK(err < 1e-10);
  // errors
  auto tall = swanref::StridedView<const double>::contiguous(g.data(), {n, m});
  CHECK(throws(swanref::Status::invalid_argument, [&] { swanref::whiten_svd(tall, xs.data(), 0.0); }));
  CHECK(throws(swanref::Status::invalid_argument,
               [&] { swanref::whiten_newton_schulz(view, xs.data(), -1, 0.5, swanref::Scaling::none); }));
  // unbounded Newton-Schulz and polynomial loops stop at the interruption hook
  {
    long calls = 0;
    const swanref::ScopedInterruptHook hook([](void* p) { return ++*static_cast<long*>(p) > 10; }, &calls);
    CHECK(throws(swanref::Status::interrupted, [&] {
      swanref::whiten_newton_schulz(view, xs.data(), LLONG_MAX, 0.5, swanref::Scaling::gram_fro);
    }));
    CHECK(calls == 11);
    calls = 0;
    const std::vector<double> coef(3 * 100, 0.5);
    CHECK(throws(swanref::Status::interrupted, [&] {
      swanref::whiten_polynomial(view, xs.data(), coef.data(), 100, swanref::PolynomialOptions{});
    }));
    CHECK(calls == 11);
  }
  // zero matrix -> zeros
  std::vector<double> z(m * n, 0.0), oz(m * n, 1.0);
  swanref::whiten_eigh(swanref::StridedView<const double>::contiguous(z.data(), {m, n}), oz.data(), 0.0);
  for (double v : oz) CHECK(v == 0);
  // SWAN update composition
  std::vector<double> su(b * m * n);
  swanref::SwanOptions opt;
  opt.method = swanref::WhitenMethod::svd;
  swanref::swan_update(view, su.data(), opt);
  std::vector<double> su0(su.begin(), su.begin() + m * n);
  CHECK(orth_err(su0, m, n) < 1e-12);
}
#endif

// Overflow-safe sizes, alignment, LAPACK workspace limits.
static void test_sizes() {
  const index_t big = std::numeric_limits<index_t>::max();
  index_t r = -7;
  CHECK(swanref::checked_mul(big, 1, r) == swanref::Status::ok && r == big);
  CHECK(swanref::checked_mul(index_t(1) << 32, index_t(1) << 32, r) == swanref::Status::size_overflow);
  CHECK(r == big);  // untouched on failure
  CHECK(swanref::checked_mul(0, big, r) == swanref::Status::ok && r == 0);
  CHECK(swanref::checked_mul(-1, 2, r) == swanref::Status::invalid_argument);
  std::vector<double> buf(4, 1.0);
  // 2^32 x 2^32 wraps to 0 in 64 bits: a size error, never an empty view
  CHECK(throws(swanref::Status::size_overflow, [&] {
    swanref::StridedView<const double>::contiguous(buf.data(), {index_t(1) << 32, index_t(1) << 32, 1});
  }));
  // 2^61 doubles are 2^64 bytes
  CHECK(throws(swanref::Status::size_overflow,
               [&] { swanref::StridedView<const double>::contiguous(buf.data(), {index_t(1) << 61, 1}); }));
  // empty arrays are fine unless their non-zero extents overflow
  CHECK(swanref::StridedView<const double>::contiguous(buf.data(), {0, index_t(1) << 40, 8}).size() == 0);
  CHECK(throws(swanref::Status::size_overflow, [&] {
    swanref::StridedView<const double>::contiguous(buf.data(), {0, index_t(1) << 40, index_t(1) << 40});
  }));
  // a misaligned data pointer is rejected (reads through it are undefined behaviour)
  alignas(8) unsigned char raw[64] = {};
  const double* mis = reinterpret_cast<const double*>(raw + 1);
  CHECK(throws(swanref::Status::invalid_argument,
               [&] { swanref::StridedView<const double>::contiguous(mis, {2, 2}); }));
  // LAPACK workspace beyond the 32-bit integer: syevd at m = 32768 asks for 2147680257
  CHECK(swanref::blas::lwork_from(0.0) == 1);
  CHECK(swanref::blas::lwork_from(1000.0) == 1001);
  CHECK(swanref::blas::lwork_from(2147000000.0) > 2147000000);
  CHECK(throws(swanref::Status::size_overflow, [&] { swanref::blas::lwork_from(2147680257.0); }));
  CHECK(throws(swanref::Status::size_overflow, [&] { swanref::blas::lwork_from(std::nan("")); }));
  CHECK(throws(swanref::Status::size_overflow, [&] { swanref::blas::lwork_from(1e300); }));
}

// The interruption hook stops unbounded loops (SinkGD here: BLAS-free) and is scoped.
static void test_interrupt() {
  const index_t m = 3, n = 5;
  auto g = randn(m * n, 9);
  std::vector<double> out(m * n);
  auto view = swanref::StridedView<const double>::contiguous(g.data(), {m, n});
  struct Counter {
    long calls = 0, limit = 0;
  } c{0, 25};
  auto stop = [](void* p) {
    auto* k = static_cast<Counter*>(p);
    return ++k->calls > k->limit;
  };
  {
    const swanref::ScopedInterruptHook hook(stop, &c);
    CHECK(throws(swanref::Status::interrupted,
                 [&] { swanref::sinkgd(view, out.data(), std::numeric_limits<long long>::max()); }));
    CHECK(c.calls == 26);
    c.calls = 0;
    CHECK(throws(swanref::Status::interrupted, [&] {
      swanref::whiten_nsds(view, out.data(), std::numeric_limits<long long>::max(), 0.5, swanref::Scaling::grad_fro);
    }));
    CHECK(c.calls == 26);
  }
  CHECK(swanref::interrupt_hook().fn == nullptr);  // restored
  swanref::sinkgd(view, out.data(), 3);           // no hook: runs
  CHECK(std::strcmp(swanref::status_name(swanref::Status::interrupted), "interrupted") == 0);
}

int main() {
  test_views();
  test_sizes();
  test_interrupt();
  test_grad_norm();
  test_grad_norm_kernels_agree<double>();
  test_grad_norm_kernels_agree<float>();
  test_sinkgd();
  test_shape_errors();
#ifdef SWANREF_TEST_WITH_BLAS
  test_whitening();
  std::printf("test_core: BLAS tests ran (%s)\n", swanref::blas::table().source);
#else
  std::printf("test_core: built without BLAS, whitening tests skipped\n");
#endif
  if (failures) {
    std::fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  std::printf("test_core: all checks passed\n");
  return 0;
}
