/* Deterministic hostile-input fuzz of the C API (compiled as C; ctest "capi_fuzz"). Built with
 * SWANREF_SANITIZE=ON it runs under ASan + UBSan, so an out-of-bounds access, an overflow or a
 * misaligned load aborts it. Every C entry point gets:
 *   - hostile dimensions (negative, 2^31, 2^32, 2^62, INT64_MAX, products that overflow int64)
 *     with NULL and non-NULL pointers: an error code before anything is read;
 *   - random small shapes with exactly sized heap buffers, extreme and degenerate values and
 *     random (also invalid) parameters: documented codes only, the input never written;
 *   - NaN / Inf entries, misaligned pointers: SWANREF_INVALID_ARGUMENT;
 *   - unbounded iteration counts with an interrupt handler: SWANREF_INTERRUPTED.
 * Exit status 0 when every check holds. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swanref/c_api.h"

static int failures = 0;
static long checks = 0;
#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    ++checks;                                                                \
    if (!(cond)) {                                                           \
      if (failures < 30) {                                                   \
        fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, " [last_error: %s]\n", swanref_last_error());        \
      }                                                                      \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

/* xorshift64*: a fixed sequence on every platform */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}
static int rnd_int(int k) { return (int)(rnd() % (uint64_t)k); }
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0 - 0.5; }

enum { F_GRAD_NORM, F_SVD, F_EIGH, F_NS, F_NSDS, F_SINKGD, F_COUNT };
static const char* fname[F_COUNT] = {"grad_norm", "whiten_svd", "whiten_eigh", "newton_schulz", "nsds", "sinkgd"};

typedef struct {
  double eps_or_rtol; /* grad_norm eps, svd sigma_rtol, eigh lambda_rtol */
  int64_t steps;      /* Newton-Schulz / NSDS steps, SinkGD iters */
  double beta;
  int scaling;
} params;

static params good_params(void) {
  params p = {0.0, 3, 0.5, SWANREF_SCALING_GRAM_FRO};
  return p;
}

/* Calls entry point f in precision `dbl` (1: f64, 0: f32). */
static int call(int f, int dbl, const void* g, void* out, int64_t b, int64_t m, int64_t n, params p) {
  if (dbl) {
    const double* gd = (const double*)g;
    double* od = (double*)out;
    switch (f) {
      case F_GRAD_NORM: return swanref_grad_norm_f64(gd, od, b, m, n, p.eps_or_rtol);
      case F_SVD: return swanref_whiten_svd_f64(gd, od, b, m, n, p.eps_or_rtol);
      case F_EIGH: return swanref_whiten_eigh_f64(gd, od, b, m, n, p.eps_or_rtol);
      case F_NS: return swanref_whiten_newton_schulz_f64(gd, od, b, m, n, p.steps, p.beta, p.scaling);
      case F_NSDS: return swanref_whiten_nsds_f64(gd, od, b, m, n, p.steps, p.beta, p.scaling);
      default: return swanref_sinkgd_f64(gd, od, b, m, n, p.steps);
    }
  }
  {
    const float* gf = (const float*)g;
    float* of = (float*)out;
    switch (f) {
      case F_GRAD_NORM: return swanref_grad_norm_f32(gf, of, b, m, n, p.eps_or_rtol);
      case F_SVD: return swanref_whiten_svd_f32(gf, of, b, m, n, p.eps_or_rtol);
      case F_EIGH: return swanref_whiten_eigh_f32(gf, of, b, m, n, p.eps_or_rtol);
      case F_NS: return swanref_whiten_newton_schulz_f32(gf, of, b, m, n, p.steps, p.beta, p.scaling);
      case F_NSDS: return swanref_whiten_nsds_f32(gf, of, b, m, n, p.steps, p.beta, p.scaling);
      default: return swanref_sinkgd_f32(gf, of, b, m, n, p.steps);
    }
  }
}

static int documented(int st) { return st >= SWANREF_OK && st <= SWANREF_INTERRUPTED; }
static int is_whitening(int f) { return f == F_SVD || f == F_EIGH || f == F_NS || f == F_NSDS; }

/* True when the parameters are valid for f (whatever the shape). */
static int params_valid(int f, params p) {
  switch (f) {
    case F_GRAD_NORM: return isfinite(p.eps_or_rtol) && p.eps_or_rtol >= 0;
    case F_SVD:
    case F_EIGH:
      return p.eps_or_rtol == SWANREF_DEFAULT_RTOL ||
             (isfinite(p.eps_or_rtol) && p.eps_or_rtol >= 0 && p.eps_or_rtol < 1);
    case F_NS:
    case F_NSDS:
      return p.steps >= 0 && p.steps <= SWANREF_MAX_ITERATIONS && isfinite(p.beta) && p.beta > 0 &&
             p.scaling >= SWANREF_SCALING_GRAM_FRO && p.scaling <= SWANREF_SCALING_NONE;
    default: return p.steps >= 0 && p.steps <= SWANREF_MAX_ITERATIONS;
  }
}

/* ---- 1. hostile dimensions ------------------------------------------------------------ */
static void hostile_dims(void) {
  const int64_t dims[] = {INT64_MIN, -1, 0, 1, 2, 3, INT64_C(1) << 31, INT64_C(1) << 32,
                          INT64_C(1) << 62, INT64_MAX};
  const int nd = (int)(sizeof dims / sizeof dims[0]);
  double dummy_d[4] = {1, 2, 3, 4};
  double out_d[4];
  float dummy_f[4] = {1, 2, 3, 4};
  float out_f[4];
  for (int f = 0; f < F_COUNT; ++f)
    for (int dbl = 0; dbl < 2; ++dbl)
      for (int i = 0; i < nd; ++i)
        for (int j = 0; j < nd; ++j)
          for (int k = 0; k < nd; ++k)
            for (int ptrs = 0; ptrs < 4; ++ptrs) {
              const int64_t b = dims[i], m = dims[j], n = dims[k];
              const void* g = (ptrs & 1) ? NULL : (dbl ? (const void*)dummy_d : (const void*)dummy_f);
              void* out = (ptrs & 2) ? NULL : (dbl ? (void*)out_d : (void*)out_f);
              const int negative = b < 0 || m < 0 || n < 0;
              const int empty = !negative && (b == 0 || m == 0 || n == 0);
              /* nonempty arrays of more than 4 elements: a non-NULL dummy would be read out of
                 bounds (the caller's contract), so only NULL pointers or overflowing products. */
              /* the product of the non-zero extents, in bytes, beyond int64 (also for empty arrays) */
              int overflow = 0;
              double prod = 0;
              if (!negative) {
                prod = (double)(b ? b : 1) * (double)(m ? m : 1) * (double)(n ? n : 1);
                overflow = prod * (dbl ? 8.0 : 4.0) > 9.2e18;
              }
              if (!negative && !empty && !overflow && prod > 4 && g != NULL && out != NULL) continue;
              const int st = call(f, dbl, g, out, b, m, n, good_params());
              CHECK(documented(st), "%s dims (%lld, %lld, %lld) ptrs %d: status %d", fname[f], (long long)b,
                    (long long)m, (long long)n, ptrs, st);
              const int empty_axis = !negative && (m == 0 || n == 0);
              if (negative || empty_axis || (!empty && (g == NULL || out == NULL))) {
                CHECK(st == SWANREF_INVALID_ARGUMENT, "%s dims (%lld, %lld, %lld) ptrs %d: status %d", fname[f],
                      (long long)b, (long long)m, (long long)n, ptrs, st);
              } else if (overflow) {
                CHECK(st == SWANREF_SIZE_OVERFLOW, "%s dims (%lld, %lld, %lld): status %d", fname[f], (long long)b,
                      (long long)m, (long long)n, st);
              } else if (empty && !overflow) {
                /* an empty batch is valid (NULL allowed) unless the shape is invalid for whitening */
                const int want = is_whitening(f) && m > n ? SWANREF_INVALID_ARGUMENT : SWANREF_OK;
                CHECK(st == want, "%s empty dims (%lld, %lld, %lld) ptrs %d: status %d", fname[f], (long long)b,
                      (long long)m, (long long)n, ptrs, st);
              }
              if (st != SWANREF_OK) CHECK(strlen(swanref_last_error()) > 0, "%s: empty message", fname[f]);
            }
}

/* ---- 2. random small problems ------------------------------------------------------- */
static double special_value(int dbl) {
  switch (rnd_int(8)) {
    case 0: return 0.0;
    case 1: return dbl ? 1e-300 : 1e-38;
    case 2: return dbl ? 1e300 : 1e38;
    case 3: return dbl ? 4.9e-324 : 1.4e-45; /* smallest subnormal */
    case 4: return -2.5;
    case 5: return 1e-30;
    case 6: return 1e30;
    default: return 1.0;
  }
}

static void fill(double* g, int64_t count, int64_t n, int dbl) {
  const int mode = rnd_int(6);
  const double scale = mode == 1 ? (dbl ? 1e-300 : 1e-30) : mode == 2 ? (dbl ? 1e300 : 1e30) : 1.0;
  for (int64_t k = 0; k < count; ++k) {
    double v = rnd_unit() * scale;
    if (mode == 3) v = (k % (n > 0 ? n : 1)) == 0 ? special_value(dbl) : v; /* mixed magnitudes */
    if (mode == 4) v = 0.0;                                                 /* all zero */
    if (mode == 5) v = 3.25;                                                /* constant rows */
    g[k] = v;
  }
}

static params random_params(int f) {
  params p = good_params();
  const double reals[] = {0.0, 1e-8, 1e-3, 0.5, 2.0, -1.0, NAN, INFINITY, -0.0, 1e300, 1.0, -0.5};
  const int64_t counts[] = {0, 1, 2, 5, 12, -1, INT64_MIN, SWANREF_MAX_ITERATIONS + 1, INT64_MAX};
  const double betas[] = {0.5, 0.25, 1.0, -1.0, 0.0, NAN, INFINITY, 1e300};
  const int scalings[] = {0, 1, 2, -1, 3, 1000};
  p.eps_or_rtol = reals[rnd_int(rnd_int(2) ? 4 : 12)];
  p.steps = counts[rnd_int(rnd_int(2) ? 5 : 9)];
  p.beta = betas[rnd_int(rnd_int(2) ? 2 : 8)];
  p.scaling = scalings[rnd_int(rnd_int(2) ? 3 : 6)];
  (void)f;
  return p;
}

static void random_problems(int cases) {
  for (int c = 0; c < cases; ++c) {
    const int f = rnd_int(F_COUNT), dbl = rnd_int(2);
    const int64_t b = rnd_int(4), m = rnd_int(7), n = rnd_int(9);
    const int64_t count = b * m * n;
    const size_t item = dbl ? sizeof(double) : sizeof(float);
    /* exact sizes (at least 1 byte so malloc returns a pointer ASan tracks) */
    double* src = (double*)malloc((size_t)(count > 0 ? count : 1) * sizeof(double));
    void* g = malloc((size_t)(count > 0 ? count : 1) * item);
    void* g_copy = malloc((size_t)(count > 0 ? count : 1) * item);
    void* out = malloc((size_t)(count > 0 ? count : 1) * item);
    if (!src || !g || !g_copy || !out) {
      fprintf(stderr, "malloc failed\n");
      exit(2);
    }
    fill(src, count, n, dbl);
    for (int64_t k = 0; k < count; ++k) {
      if (dbl)
        ((double*)g)[k] = src[k];
      else
        ((float*)g)[k] = (float)src[k];
    }
    memcpy(g_copy, g, (size_t)count * item);
    const params p = random_params(f);
    const int st = call(f, dbl, g, out, b, m, n, p);
    CHECK(documented(st), "%s case %d: status %d", fname[f], c, st);
    CHECK(memcmp(g, g_copy, (size_t)count * item) == 0, "%s case %d: input modified", fname[f], c);
    if (!params_valid(f, p) && count > 0) {
      /* invalid parameters: an error, never a result */
      CHECK(st == SWANREF_INVALID_ARGUMENT, "%s case %d: invalid params gave status %d", fname[f], c, st);
    }
    if (is_whitening(f) && m > n) CHECK(st == SWANREF_INVALID_ARGUMENT, "%s case %d: m > n gave %d", fname[f], c, st);
    if (m == 0 || n == 0) CHECK(st == SWANREF_INVALID_ARGUMENT, "%s case %d: empty matrix axis gave %d", fname[f], c, st);
    if (params_valid(f, p) && !(is_whitening(f) && m > n) && m > 0 && n > 0) {
      /* valid calls succeed (LAPACK may report non-convergence, never anything else) */
      CHECK(st == SWANREF_OK || ((f == F_SVD || f == F_EIGH) && st == SWANREF_LAPACK_FAILURE),
            "%s case %d (%lld, %lld, %lld): valid call gave %d", fname[f], c, (long long)b, (long long)m,
            (long long)n, st);
    }
    if (st == SWANREF_OK && (f == F_GRAD_NORM || f == F_SVD || f == F_EIGH || f == F_SINKGD)) {
      /* these are bounded for finite input: the output is finite */
      for (int64_t k = 0; k < count; ++k) {
        const double v = dbl ? ((double*)out)[k] : (double)((float*)out)[k];
        if (!isfinite(v)) {
          CHECK(0, "%s case %d: non-finite output at %lld", fname[f], c, (long long)k);
          break;
        }
      }
    }
    free(src);
    free(g);
    free(g_copy);
    free(out);
  }
}

/* ---- 3. non-finite entries and misaligned pointers ------------------------------------ */
static void nonfinite_and_misaligned(void) {
  enum { B = 2, M = 3, N = 5, COUNT = B * M * N };
  const double bad[] = {NAN, INFINITY, -INFINITY};
  for (int f = 0; f < F_COUNT; ++f)
    for (int dbl = 0; dbl < 2; ++dbl)
      for (int v = 0; v < 3; ++v) {
        double gd[COUNT], od[COUNT];
        float gf[COUNT], of[COUNT];
        for (int k = 0; k < COUNT; ++k) gd[k] = gf[k] = (float)rnd_unit();
        const int at = rnd_int(COUNT);
        gd[at] = bad[v];
        gf[at] = (float)bad[v];
        const int st = call(f, dbl, dbl ? (void*)gd : (void*)gf, dbl ? (void*)od : (void*)of, B, M, N, good_params());
        CHECK(st == SWANREF_INVALID_ARGUMENT, "%s: non-finite input gave %d", fname[f], st);
      }
  /* misaligned g or out: the library must not read or write through them */
  {
    static double aligned[2 * 3 * 5 + 2];
    unsigned char* raw = (unsigned char*)(void*)aligned;
    for (int k = 0; k < 30; ++k) aligned[k] = rnd_unit();
    for (int f = 0; f < F_COUNT; ++f)
      for (int dbl = 0; dbl < 2; ++dbl)
        for (int which = 0; which < 2; ++which) {
          unsigned char* mis = raw + 1; /* odd address, inside the buffer */
          const void* g = which == 0 ? (const void*)mis : (const void*)aligned;
          void* out = which == 1 ? (void*)mis : (void*)(aligned + 0);
          double other[30];
          if (which == 0) out = other;
          const int st = call(f, dbl, g, out, 2, 3, 5, good_params());
          CHECK(st == SWANREF_INVALID_ARGUMENT, "%s: misaligned %s gave %d", fname[f], which ? "out" : "g", st);
        }
  }
}

/* ---- 4. long runs (SWANREF_MAX_ITERATIONS steps), interrupted ---------------------------- */
static long polls = 0;
static int stop_after(void* ctx) {
  const long limit = *(const long*)ctx;
  return ++polls > limit;
}
static int never(void* ctx) {
  (void)ctx;
  ++polls;
  return 0;
}

static void interruption(void) {
  enum { M = 4, N = 6 };
  double g[M * N], out[M * N];
  float gf[M * N], outf[M * N];
  for (int k = 0; k < M * N; ++k) g[k] = gf[k] = (float)rnd_unit();
  /* NSDS polls once per matrix and every 2^16 steps: 9 polls at 10^5 steps for 4 rows */
  long limit = 5;
  params p = good_params();
  p.steps = SWANREF_MAX_ITERATIONS;
  swanref_set_interrupt_handler(stop_after, &limit);
  for (int dbl = 0; dbl < 2; ++dbl) {
    const int fs[] = {F_NS, F_NSDS, F_SINKGD};
    for (int i = 0; i < 3; ++i) {
      polls = 0;
      const int st = call(fs[i], dbl, dbl ? (void*)g : (void*)gf, dbl ? (void*)out : (void*)outf, 1, M, N, p);
      CHECK(st == SWANREF_INTERRUPTED, "%s with SWANREF_MAX_ITERATIONS steps gave %d", fname[fs[i]], st);
      CHECK(polls == limit + 1, "%s: %ld polls", fname[fs[i]], polls);
    }
  }
  /* a handler that never stops leaves results untouched; removing it restores normal calls */
  swanref_set_interrupt_handler(never, NULL);
  double ref[M * N];
  p.steps = 20;
  polls = 0;
  CHECK(swanref_whiten_newton_schulz_f64(g, out, 1, M, N, p.steps, 0.5, SWANREF_SCALING_GRAM_FRO) == SWANREF_OK,
        "NS with a passive handler");
  CHECK(polls > 0, "handler was not polled");
  memcpy(ref, out, sizeof ref);
  swanref_set_interrupt_handler(NULL, NULL);
  CHECK(swanref_whiten_newton_schulz_f64(g, out, 1, M, N, p.steps, 0.5, SWANREF_SCALING_GRAM_FRO) == SWANREF_OK,
        "NS without a handler");
  CHECK(memcmp(ref, out, sizeof ref) == 0, "the handler changed the result");
}

int main(int argc, char** argv) {
  const int cases = argc > 1 ? atoi(argv[1]) : 3000;
  CHECK(strlen(swanref_version()) > 0, "version");
  hostile_dims();
  random_problems(cases);
  nonfinite_and_misaligned();
  interruption();
  if (failures) {
    fprintf(stderr, "fuzz_capi: %d of %ld checks failed\n", failures, checks);
    return 1;
  }
  printf("fuzz_capi: all %ld checks passed\n", checks);
  return 0;
}
