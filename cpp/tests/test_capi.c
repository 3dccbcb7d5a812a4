/* C test of the C API (compiled as C): grad_norm, exact and Newton-Schulz whitening, errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "swanref/c_api.h"

static int failures = 0;
#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

/* max |X X^T - I| for a row-major m x n matrix */
static double orth_err(const double* x, int m, int n) {
  double e = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += x[i * n + k] * x[j * n + k];
      s -= (i == j);
      if (fabs(s) > e) e = fabs(s);
    }
  return e;
}

int main(void) {
  enum { M = 3, N = 7 };
  double g[M * N], x[M * N];
  float gf[M * N], xf[M * N];
  unsigned s = 12345u;
  for (int i = 0; i < M * N; ++i) {
    s = s * 1103515245u + 12345u;
    g[i] = ((double)(s >> 8) / (double)(1u << 24)) - 0.5;
    gf[i] = (float)g[i];
  }
  CHECK(strlen(swanref_version()) > 0);

  CHECK(swanref_grad_norm_f64(g, x, 1, M, N, 0.0) == SWANREF_OK);
  for (int i = 0; i < M; ++i) {
    double mu = 0, v = 0;
    for (int k = 0; k < N; ++k) mu += x[i * N + k];
    for (int k = 0; k < N; ++k) v += x[i * N + k] * x[i * N + k];
    CHECK(fabs(mu / N) < 1e-14 && fabs(v / N - 1) < 1e-13);
  }

  CHECK(swanref_whiten_svd_f64(g, x, 1, M, N, 0.0) == SWANREF_OK);
  CHECK(orth_err(x, M, N) < 1e-13);
  CHECK(swanref_whiten_eigh_f64(g, x, 1, M, N, 0.0) == SWANREF_OK);
  CHECK(orth_err(x, M, N) < 1e-12);
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, 40, 0.5, SWANREF_SCALING_GRAM_FRO) == SWANREF_OK);
  CHECK(orth_err(x, M, N) < 1e-10);
  CHECK(swanref_whiten_svd_f32(gf, xf, 1, M, N, 0.0) == SWANREF_OK);
  CHECK(swanref_sinkgd_f32(gf, xf, 1, M, N, 3) == SWANREF_OK);
  CHECK(swanref_whiten_nsds_f64(g, x, 1, M, N, 2, 0.5, SWANREF_SCALING_GRAD_FRO) == SWANREF_OK);
  CHECK(swanref_whiten_nsds_f32(gf, xf, 1, M, N, 2, 0.5, SWANREF_SCALING_GRAM_FRO) == SWANREF_OK);
  CHECK(swanref_grad_norm_f32(gf, xf, 1, M, N, 1e-8) == SWANREF_OK);

  /* errors: status codes and a message, never an abort */
  CHECK(swanref_whiten_svd_f64(g, x, 1, N, M, 0.0) == SWANREF_INVALID_ARGUMENT); /* m > n */
  CHECK(strstr(swanref_last_error(), "m <= n") != NULL);
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, -1, 0.5, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, 3, 0.5, 7) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_grad_norm_f64(NULL, x, 1, M, N, 0.0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_grad_norm_f64(g, x, 1, M, N, -1.0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_grad_norm_f64(g, x, 0, M, N, 0.0) == SWANREF_OK); /* empty batch */
  /* batch * m * n wraps to 0 in int64: NULL must still be rejected, the size reported */
  CHECK(swanref_grad_norm_f64(NULL, NULL, 1LL << 32, 1LL << 32, 1, 0.0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_sinkgd_f64(NULL, NULL, 1LL << 32, 1LL << 32, 1, 1) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_grad_norm_f64(g, x, 1LL << 32, 1LL << 32, 1, 0.0) == SWANREF_SIZE_OVERFLOW);
  CHECK(swanref_sinkgd_f32(gf, xf, 1LL << 32, 1, 1LL << 32, 1) == SWANREF_SIZE_OVERFLOW);
  CHECK(swanref_whiten_svd_f64(g + 1, x, 1, M, N - 1, 0.0) == SWANREF_OK);
  CHECK(swanref_whiten_svd_f64((const double*)((const char*)g + 1), x, 1, 1, 1, 0.0) == SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "aligned") != NULL);
  g[4] = NAN;
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, 3, 0.5, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "non-finite") != NULL);
  g[4] = 0.25;

  /* every parameter the Python API validates (issue 23): beta <= 0, counts above
     SWANREF_MAX_ITERATIONS, rank tolerances outside [0, 1) */
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, 3, 0.0, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "beta must be") != NULL);
  CHECK(swanref_whiten_newton_schulz_f32(gf, xf, 1, M, N, 3, -0.5, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_nsds_f64(g, x, 1, M, N, 2, 0.0, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_nsds_f32(gf, xf, 1, M, N, 2, -1.0, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_newton_schulz_f64(g, x, 1, M, N, SWANREF_MAX_ITERATIONS + 1, 0.5, 0) ==
        SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "steps must be in [0, 100000]") != NULL);
  CHECK(swanref_whiten_nsds_f64(g, x, 1, M, N, SWANREF_MAX_ITERATIONS + 1, 0.4, 0) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_sinkgd_f64(g, x, 1, M, N, SWANREF_MAX_ITERATIONS + 1) == SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "iters must be") != NULL);
  CHECK(swanref_whiten_svd_f64(g, x, 1, M, N, 1.0) == SWANREF_INVALID_ARGUMENT);
  CHECK(strstr(swanref_last_error(), "sigma_rtol must be in [0, 1)") != NULL);
  CHECK(swanref_whiten_svd_f64(g, x, 1, M, N, -0.5) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_eigh_f64(g, x, 1, M, N, 1e308) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_whiten_eigh_f32(gf, xf, 1, M, N, NAN) == SWANREF_INVALID_ARGUMENT);
  CHECK(swanref_grad_norm_f64(g, x, 1, M, N, NAN) == SWANREF_INVALID_ARGUMENT);

  /* SWANREF_DEFAULT_RTOL: a rank-1-up-to-rounding 2 x 3 input gives the partial isometry (one
     singular value 1, one 0) as swanref.whiten does; sigma_rtol = 0 whitens the rounding noise
     into a second unit singular value */
  {
    const double r1[6] = {0.1, 0.2, 0.3, 0.1 * 3, 0.2 * 3, 0.3 * 3 + 1e-17};
    double y[6], y0[6];
    CHECK(swanref_whiten_svd_f64(r1, y, 1, 2, 3, SWANREF_DEFAULT_RTOL) == SWANREF_OK);
    CHECK(swanref_whiten_svd_f64(r1, y0, 1, 2, 3, 0.0) == SWANREF_OK);
    /* trace of Y Y^T: the number of unit singular values kept */
    double t = 0, t0 = 0;
    for (int k = 0; k < 6; ++k) {
      t += y[k] * y[k];
      t0 += y0[k] * y0[k];
    }
    CHECK(fabs(t - 1.0) < 1e-12);
    CHECK(fabs(t0 - 2.0) < 1e-12);
    CHECK(swanref_whiten_eigh_f64(r1, y, 1, 2, 3, SWANREF_DEFAULT_RTOL) == SWANREF_OK);
    t = 0;
    for (int k = 0; k < 6; ++k) t += y[k] * y[k];
    CHECK(fabs(t - 1.0) < 1e-8);
  }
  CHECK(swanref_grad_norm_f64(g, x, 0, M, N, 0.0) == SWANREF_OK);
  CHECK(strlen(swanref_last_error()) == 0); /* cleared by a successful call */

  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("test_capi: all checks passed\n");
  return 0;
}
