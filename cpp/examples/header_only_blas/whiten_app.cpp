// Recipe (a): the header-only core with a BLAS/LAPACK linked by the application.
// blas_linked.hpp declares the BLAS/LAPACK symbols (prefix SWANREF_BLAS_PREFIX) and
// use_linked_blas() puts them into swanref's function table; without that call the
// whitening routines throw swanref::Error (status blas_unavailable).
#include <cmath>
#include <cstdio>
#include <vector>

#include "swanref/blas_linked.hpp"
#include "swanref/whiten_exact.hpp"

int main() {
  swanref::blas::use_linked_blas();
  const std::ptrdiff_t m = 3, n = 5;
  std::vector<double> g(m * n), x(m * n);
  for (std::ptrdiff_t i = 0; i < m * n; ++i) g[i] = std::cos(0.7 * i) + 0.1 * i;
  swanref::StridedView<const double> view(g.data(), {m, n}, {n, 1});
  swanref::whiten_svd(view, x.data(), 0.0);
  double err = 0;  // X X^T = I for a full-rank wide G
  for (std::ptrdiff_t i = 0; i < m; ++i)
    for (std::ptrdiff_t k = 0; k < m; ++k) {
      double s = 0;
      for (std::ptrdiff_t j = 0; j < n; ++j) s += x[i * n + j] * x[k * n + j];
      err = std::fmax(err, std::fabs(s - (i == k ? 1.0 : 0.0)));
    }
  std::printf("header-only whiten_svd: orthonormality error %.1e\n", err);
  if (err > 1e-13) return 1;
  std::printf("whiten_app OK\n");
  return 0;
}
