// Example: a C++ program using an installed swanref.
//  * GradNorm straight from the header-only templates (swanref::core), on a
//    column-major buffer viewed through a StridedView (no copy);
//  * exact whitening through the C API (swanref::c), which carries its BLAS.
#include <cmath>
#include <cstdio>
#include <vector>

#include "swanref/grad_norm.hpp"
#include "swanref/view.hpp"
#ifdef CONSUMER_WITH_C_API
#include "swanref/c_api.h"
#endif

int main() {
  const std::ptrdiff_t m = 4, n = 6;
  // column-major storage of a 4 x 6 matrix of full rank (condition number 3.2 after GradNorm;
  // sin(1 + 7 i + 3 j) alone has rank 2, whose whitening is a partial isometry, not orthonormal)
  std::vector<double> g(m * n);
  for (std::ptrdiff_t j = 0; j < n; ++j)
    for (std::ptrdiff_t i = 0; i < m; ++i) g[i + j * m] = std::sin(1.0 + i * 7 + j * 3 + 0.5 * i * j * j) * (1 + i);
  swanref::StridedView<const double> view(g.data(), {m, n}, {1, m});
  std::vector<double> normed(m * n);
  swanref::grad_norm(view, normed.data(), 0.0);
  for (std::ptrdiff_t i = 0; i < m; ++i) {
    double mu = 0, var = 0;
    for (std::ptrdiff_t j = 0; j < n; ++j) mu += normed[i * n + j] / n;
    for (std::ptrdiff_t j = 0; j < n; ++j) var += (normed[i * n + j] - mu) * (normed[i * n + j] - mu) / n;
    std::printf("row %td: mean %+.1e, var %.15f\n", i, mu, var);
    if (std::abs(mu) > 1e-14 || std::abs(var - 1) > 1e-13) return 1;
  }
#ifdef CONSUMER_WITH_C_API
  std::vector<double> x(m * n);
  // SWANREF_DEFAULT_RTOL: swanref.whiten's rank tolerance max(m, n) eps (0.0 would whiten the
  // rounding noise of a rank-deficient input into unit singular values)
  if (swanref_whiten_svd_f64(normed.data(), x.data(), 1, m, n, SWANREF_DEFAULT_RTOL) != SWANREF_OK) {
    std::printf("error: %s\n", swanref_last_error());
    return 1;
  }
  double err = 0;  // X X^T = I
  for (std::ptrdiff_t i = 0; i < m; ++i)
    for (std::ptrdiff_t k = 0; k < m; ++k) {
      double s = 0;
      for (std::ptrdiff_t j = 0; j < n; ++j) s += x[i * n + j] * x[k * n + j];
      err = std::max(err, std::abs(s - (i == k)));
    }
  std::printf("swanref %s: whiten_svd orthonormality error %.1e\n", swanref_version(), err);
  if (err > 1e-13) return 1;
  // rank 1 up to rounding: the default tolerance gives the partial isometry (trace X X^T = 1)
  const double r1[6] = {0.1, 0.2, 0.3, 0.1 * 3, 0.2 * 3, 0.3 * 3 + 1e-17};
  double y[6], trace = 0;
  if (swanref_whiten_svd_f64(r1, y, 1, 2, 3, SWANREF_DEFAULT_RTOL) != SWANREF_OK) return 1;
  for (double v : y) trace += v * v;
  std::printf("rank-1 input: %.0f unit singular value(s)\n", trace);
  if (std::abs(trace - 1) > 1e-12) return 1;
  // a bad call reports an error instead of aborting
  if (swanref_whiten_svd_f64(normed.data(), x.data(), 1, n, m, SWANREF_DEFAULT_RTOL) != SWANREF_INVALID_ARGUMENT)
    return 1;
  std::printf("bad call rejected: %s\n", swanref_last_error());
#endif
  std::printf("consumer OK\n");
  return 0;
}
