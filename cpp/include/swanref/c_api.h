/* swanref/c_api.h: C API of the swanref core, for FFI from C, Rust, Julia, ...
 *
 * Buffers are dense C-order (row-major) arrays of shape (batch, m, n); `out`
 * has the same shape and must not overlap `g`. Each of the `batch` slices is an
 * independent problem. Whitening functions need m <= n (pass the transpose of
 * tall matrices). `g` must hold finite numbers (NaN or Inf:
 * SWANREF_INVALID_ARGUMENT); pointers must be aligned for their type and may be
 * NULL only when the batch is empty (batch = 0); batch * m * n beyond
 * int64 is SWANREF_SIZE_OVERFLOW. Every function returns SWANREF_OK (0) or an
 * error code, and never aborts; swanref_last_error() describes the last failure
 * on the calling thread. The library carries its own BLAS/LAPACK (chosen at
 * build time, see docs/architecture.md) and is thread safe (no global mutable
 * state besides the BLAS table, which is filled once).
 *
 * Parameters are validated as the Python API validates them (docs/spec.md 6; each bad value
 * is SWANREF_INVALID_ARGUMENT with a message), and the Python defaults are (C has no default
 * arguments: pass the value, or SWANREF_DEFAULT_RTOL for the size-dependent tolerances):
 *
 *   parameter    valid values                        swanref (Python) default
 *   eps          finite, >= 0                        0 (GradNorm has no epsilon)
 *   sigma_rtol   [0, 1) or SWANREF_DEFAULT_RTOL      max(m, n) * eps(T)  (rank_rtol=None)
 *   lambda_rtol  [0, 1) or SWANREF_DEFAULT_RTOL      8 * max(m, n) * eps(T); swanref.whiten(G,
 *                                                    "eigh", rank_rtol=r) passes
 *                                                    max(r * r, 8 * max(m, n) * eps(T))
 *   steps        0 .. SWANREF_MAX_ITERATIONS          10 (Newton-Schulz), 2 (NSDS)
 *   beta         finite, > 0                         0.5 (Newton-Schulz), 0.4 (NSDS)
 *   scaling      a swanref_scaling value             SWANREF_SCALING_GRAM_FRO
 *   iters        0 .. SWANREF_MAX_ITERATIONS          5 (SinkGD)
 *
 * eps(T) is the machine epsilon of the element type (2^-52 for f64, 2^-23 for f32). As in
 * swanref.whiten, an empty matrix axis (m = 0 or n = 0) is SWANREF_INVALID_ARGUMENT and an
 * empty batch (batch = 0) is accepted and does nothing.
 */
#ifndef SWANREF_C_API_H
#define SWANREF_C_API_H

#include <stdint.h>

#if defined(_WIN32)
#if defined(SWANREF_BUILDING_C_API)
#define SWANREF_API __declspec(dllexport)
#else
#define SWANREF_API __declspec(dllimport)
#endif
#else
#define SWANREF_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Largest steps / iters (swanref.spec.validate.MAX_ITERATIONS, docs/spec.md 6.5). */
#define SWANREF_MAX_ITERATIONS 100000
/* Pass as sigma_rtol or lambda_rtol for swanref's size-dependent default (table above). */
#define SWANREF_DEFAULT_RTOL (-1.0)

typedef enum swanref_status {
  SWANREF_OK = 0,
  SWANREF_INVALID_ARGUMENT = 1, /* bad value: m > n, steps < 0, NULL pointer, NaN in g, ... */
  SWANREF_INVALID_DTYPE = 2,
  SWANREF_BLAS_UNAVAILABLE = 3,
  SWANREF_LAPACK_FAILURE = 4, /* a LAPACK routine did not converge */
  SWANREF_SIZE_OVERFLOW = 5,  /* batch*m*n overflows int64, or a size exceeds the 32-bit BLAS integer */
  SWANREF_INTERNAL = 6,
  SWANREF_OUT_OF_MEMORY = 7,
  SWANREF_INTERRUPTED = 8 /* the interrupt handler returned non-zero; `out` is unspecified */
} swanref_status;

typedef enum swanref_scaling {
  SWANREF_SCALING_GRAM_FRO = 0, /* c = ||G G^T||_F */
  SWANREF_SCALING_GRAD_FRO = 1, /* c = ||G||_F^2 */
  SWANREF_SCALING_NONE = 2      /* c = 1 */
} swanref_scaling;

SWANREF_API const char* swanref_version(void);
SWANREF_API const char* swanref_last_error(void);

/* Interruption of the iterative functions (Newton-Schulz, NSDS, SinkGD), whose runs may be
 * long (up to SWANREF_MAX_ITERATIONS steps): `fn(ctx)` is called about once per iteration on the
 * calling thread and a non-zero return ends the call with SWANREF_INTERRUPTED. Per thread;
 * fn = NULL removes it. */
typedef int (*swanref_interrupt_fn)(void* ctx);
SWANREF_API void swanref_set_interrupt_handler(swanref_interrupt_fn fn, void* ctx);

/* GradNorm over the last axis: (x - mean) / sqrt(var + eps); constant rows -> 0. */
SWANREF_API int swanref_grad_norm_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n, double eps);
SWANREF_API int swanref_grad_norm_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n, double eps);

/* Exact whitening U_r V_r^T, keeping s_i > sigma_rtol * s_1 (kappa * eps accurate). Pass
 * SWANREF_DEFAULT_RTOL as swanref.whiten does: with sigma_rtol = 0 a matrix of rank r < m up
 * to rounding comes back orthonormal, its rounding noise blown up to singular values 1, where
 * the default gives the partial isometry (docs/spec.md 3.0). */
SWANREF_API int swanref_whiten_svd_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n,
                                       double sigma_rtol);
SWANREF_API int swanref_whiten_svd_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n,
                                       double sigma_rtol);

/* Whitening via eigh of G G^T, keeping l_i > lambda_rtol * l_max (kappa^2 * eps accurate). */
SWANREF_API int swanref_whiten_eigh_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n,
                                        double lambda_rtol);
SWANREF_API int swanref_whiten_eigh_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n,
                                        double lambda_rtol);

/* Coupled Newton-Schulz whitening (SWAN), `steps` steps, scaling a swanref_scaling value. */
SWANREF_API int swanref_whiten_newton_schulz_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n,
                                                 int64_t steps, double beta, int scaling);
SWANREF_API int swanref_whiten_newton_schulz_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n,
                                                 int64_t steps, double beta, int scaling);

/* Newton-Schulz with diagonal substitution (NSDS): elementwise recurrence on diag(G G^T) / c. */
SWANREF_API int swanref_whiten_nsds_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n, int64_t steps,
                                        double beta, int scaling);
SWANREF_API int swanref_whiten_nsds_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n,
                                        int64_t steps, double beta, int scaling);

/* SR-Sinkhorn: `iters` alternating row/column l2 normalisations. */
SWANREF_API int swanref_sinkgd_f32(const float* g, float* out, int64_t batch, int64_t m, int64_t n, int64_t iters);
SWANREF_API int swanref_sinkgd_f64(const double* g, double* out, int64_t batch, int64_t m, int64_t n, int64_t iters);

#ifdef __cplusplus
}
#endif

#endif /* SWANREF_C_API_H */
