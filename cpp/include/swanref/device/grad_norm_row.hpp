// swanref/device/grad_norm_row.hpp: GradNorm of one row, written once for the host and the GPU.
//
// The same source is compiled three ways (the scipy/xsf pattern):
//   * by a host C++ compiler: SWANREF_HOST_DEVICE is empty, <cmath> supplies the math, and
//     grad_norm_row() runs serially with SerialExec;
//   * by nvcc (__CUDACC__): every function is __host__ __device__;
//   * by NVRTC (__CUDACC_RTC__, which also defines __CUDACC__), as CuPy's RawModule does for
//     swanref/_cupy_backend.py: no standard library at all, only CUDA's built-in math
//     (frexp/ldexp/sqrt/fabs and their float forms) and warp intrinsics.
// Under CUDA the header also defines BlockExec (one thread block cooperates on one row) and the
// kernel grad_norm_rows<T> (one block per row, grid-stride over rows), so that the fused GPU
// kernel is this file and nothing else.
//
// Numerics: the algorithm of swanref/reference.py::grad_norm (docs/spec.md section 2.1), step by
// step and in the input precision T:
//   1. e1 = frexp exponent of max|g|; y = ldexp(g, -e1)          (exact power-of-two scaling)
//   2. d = y - y[0]                                               (exactly constant row -> 0)
//   3. e2 = frexp exponent of max|d|; d = ldexp(d, -e2)           (largest deviation in [.5, 1))
//   4. mean = sum(d) / n; c = d - mean; var = sum(c*c) / n        (two-pass, population)
//   5. std = sqrt(var + ldexp(eps, -2 (e1 + e2)))                 (eps on the ORIGINAL variance)
//   6. out = std > 0 ? c / std : 0
// Only the order of the two sums differs from NumPy's pairwise summation (per-thread strided
// partial sums, then a butterfly over the warp and over the warps), so results agree with the
// reference to a few ulps; a constant row is exactly zero and there is no overflow/underflow.
#ifndef SWANREF_DEVICE_GRAD_NORM_ROW_HPP
#define SWANREF_DEVICE_GRAD_NORM_ROW_HPP

#if defined(__CUDACC__)
#define SWANREF_HOST_DEVICE __host__ __device__
#define SWANREF_CUDA 1
#else
#define SWANREF_HOST_DEVICE
#include <cmath>
#endif

namespace swanref {
namespace device {

typedef long long index_type;

// -- the few math functions needed, spelled the same on every compiler ---------------------
namespace dmath {
#if defined(SWANREF_CUDA)
SWANREF_HOST_DEVICE inline float frexp(float x, int* e) { return ::frexpf(x, e); }
SWANREF_HOST_DEVICE inline double frexp(double x, int* e) { return ::frexp(x, e); }
SWANREF_HOST_DEVICE inline float ldexp(float x, int e) { return ::ldexpf(x, e); }
SWANREF_HOST_DEVICE inline double ldexp(double x, int e) { return ::ldexp(x, e); }
SWANREF_HOST_DEVICE inline float sqrt(float x) { return ::sqrtf(x); }
SWANREF_HOST_DEVICE inline double sqrt(double x) { return ::sqrt(x); }
SWANREF_HOST_DEVICE inline float fabs(float x) { return ::fabsf(x); }
SWANREF_HOST_DEVICE inline double fabs(double x) { return ::fabs(x); }
#else
inline float frexp(float x, int* e) { return std::frexp(x, e); }
inline double frexp(double x, int* e) { return std::frexp(x, e); }
inline float ldexp(float x, int e) { return std::ldexp(x, e); }
inline double ldexp(double x, int e) { return std::ldexp(x, e); }
inline float sqrt(float x) { return std::sqrt(x); }
inline double sqrt(double x) { return std::sqrt(x); }
inline float fabs(float x) { return std::fabs(x); }
inline double fabs(double x) { return std::fabs(x); }
#endif
}  // namespace dmath

// Integer e with amax = f * 2^e, 0.5 <= f < 1 (e = 0 for amax = 0): numpy.frexp's exponent.
template <class T>
SWANREF_HOST_DEVICE inline int pow2_exponent(T amax) {
  int e = 0;
  dmath::frexp(amax, &e);
  return e;
}

// Largest / smallest k with 2^k a normal number of T.
template <class T>
struct pow2_limits;
template <>
struct pow2_limits<float> {
  static constexpr int min_exp = -126, max_exp = 127;
};
template <>
struct pow2_limits<double> {
  static constexpr int min_exp = -1022, max_exp = 1023;
};

// x -> ldexp(x, k), exactly (one rounding, only for subnormal results). When 2^k is a normal
// number this is one multiplication by 2^k, which rounds the same exact value the same way;
// otherwise (rows of huge or tiny magnitude) it calls ldexp. The branch is uniform per row.
template <class T>
struct Pow2Scaler {
  T factor;
  int k;
  bool multiply;
  SWANREF_HOST_DEVICE explicit Pow2Scaler(int k_) : factor(T(0)), k(k_), multiply(false) {
    multiply = k >= pow2_limits<T>::min_exp && k <= pow2_limits<T>::max_exp;
    if (multiply) factor = dmath::ldexp(T(1), k);
  }
  SWANREF_HOST_DEVICE T operator()(T x) const { return multiply ? x * factor : dmath::ldexp(x, k); }
};

// -- storage type beside the compute type ------------------------------------------------------
// The row is read from and written to memory in its storage type S and computed in T (S == T on
// the host; on the GPU also S = bf16_storage with T = float, so that bfloat16 tensors are read
// and written natively, with no widened copy). load_as is exact; store_as rounds once, to
// nearest even, as PyTorch's float -> bfloat16 conversion does: the result is bitwise the float32
// computation rounded to bfloat16.
template <class T, class S>
struct Storage {
  SWANREF_HOST_DEVICE static T load(S v) { return static_cast<T>(v); }
  SWANREF_HOST_DEVICE static S store(T v) { return static_cast<S>(v); }
};
// bfloat16 held as its 16-bit word (no bfloat16 type is needed: NVRTC has no cuda_bf16.h
// without the toolkit's headers, and the host test reads the same words).
struct bf16_storage {
  unsigned short bits;
};
template <>
struct Storage<float, bf16_storage> {
  SWANREF_HOST_DEVICE static float load(bf16_storage v) {
    const unsigned int u = static_cast<unsigned int>(v.bits) << 16;
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
#endif
  }
  SWANREF_HOST_DEVICE static bf16_storage store(float v) {
    bf16_storage r;
#if defined(__CUDA_ARCH__)
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
#else
    unsigned int u;
    __builtin_memcpy(&u, &v, sizeof u);
    r.bits = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<unsigned short>((u >> 16) | 0x40u)
                                            : static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
    return r;
  }
};
template <class T, class S>
SWANREF_HOST_DEVICE inline T load_as(S v) { return Storage<T, S>::load(v); }
template <class S, class T>
SWANREF_HOST_DEVICE inline S store_as(T v) { return Storage<T, S>::store(v); }

// SWANREF_UNROLL: unroll the chunk loops on the GPU. SWANREF_LANES: the loops over the W lanes
// of a chunk are one vector operation on the host (with -fopenmp-simd; no OpenMP runtime).
#if defined(SWANREF_CUDA)
#define SWANREF_UNROLL _Pragma("unroll 4")
#define SWANREF_LANES
#else
#define SWANREF_UNROLL
#define SWANREF_LANES _Pragma("omp simd")
#endif

// -- chunks of W consecutive entries ----------------------------------------------------------
// W == 1: one entry at p[0] (the row may have any stride). W > 1: W contiguous entries, and
// under CUDA a chunk of 16 bytes is moved by one vector access (p must be 16-byte aligned).
template <int W, class T>
SWANREF_HOST_DEVICE inline void load_chunk(const T* p, T (&x)[W]) {
#if defined(SWANREF_CUDA)
  if constexpr (W * sizeof(T) == 16 && sizeof(T) == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w;
  } else if constexpr (W * sizeof(T) == 16 && sizeof(T) == 8) {
    const double2 v = *reinterpret_cast<const double2*>(p);
    x[0] = v.x; x[1] = v.y;
  } else if constexpr (W == 4 && sizeof(T) == 2) {  // four 16-bit words: one 8-byte access
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    x[0] = T{static_cast<unsigned short>(v.x & 0xffffu)};
    x[1] = T{static_cast<unsigned short>(v.x >> 16)};
    x[2] = T{static_cast<unsigned short>(v.y & 0xffffu)};
    x[3] = T{static_cast<unsigned short>(v.y >> 16)};
  } else {
    for (int k = 0; k < W; ++k) x[k] = p[k];
  }
#else
  for (int k = 0; k < W; ++k) x[k] = p[k];
#endif
}

template <int W, class T>
SWANREF_HOST_DEVICE inline void store_chunk(T* p, const T (&x)[W]) {
#if defined(SWANREF_CUDA)
  if constexpr (W * sizeof(T) == 16 && sizeof(T) == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  } else if constexpr (W * sizeof(T) == 16 && sizeof(T) == 8) {
    *reinterpret_cast<double2*>(p) = make_double2(x[0], x[1]);
  } else if constexpr (W == 4 && sizeof(T) == 2) {
    *reinterpret_cast<uint2*>(p) = make_uint2(static_cast<unsigned int>(x[0].bits) | (static_cast<unsigned int>(x[1].bits) << 16),
                                              static_cast<unsigned int>(x[2].bits) | (static_cast<unsigned int>(x[3].bits) << 16));
  } else {
    for (int k = 0; k < W; ++k) p[k] = x[k];
  }
#else
  for (int k = 0; k < W; ++k) p[k] = x[k];
#endif
}

// A chunk being read (ChunkIn) or written (ChunkOut). Under CUDA it is copied through registers
// with the vector accesses above; on the host it is the memory itself, which the vectoriser
// handles best (a local copy would be kept on the stack).
#if defined(SWANREF_CUDA)
template <int W, class T>
struct ChunkIn {
  T x[W];
  __device__ explicit ChunkIn(const T* p) { load_chunk<W>(p, x); }
  __device__ T operator[](int k) const { return x[k]; }
};
template <int W, class T>
struct ChunkOut {
  T x[W];
  T* p;
  __device__ explicit ChunkOut(T* p_) : p(p_) {}
  __device__ T& operator[](int k) { return x[k]; }
  __device__ void flush() { store_chunk<W>(p, x); }
};
#else
template <int W, class T>
struct ChunkIn {
  const T* p;
  explicit ChunkIn(const T* p_) : p(p_) {}
  T operator[](int k) const { return p[k]; }
};
template <int W, class T>
struct ChunkOut {
  T* p;
  explicit ChunkOut(T* p_) : p(p_) {}
  T& operator[](int k) { return p[k]; }
  void flush() {}
};
#endif

// -- execution policies ---------------------------------------------------------------------
// An Exec says which chunks of the row this thread visits (c = first(); c < chunks;
// c += step()), combines per-thread partial results over everyone working on the row, and
// makes the object through which a chunk of the output is written (out_chunk).

// One host thread does the whole row.
struct SerialExec {
  static constexpr bool prescale_first = false;
  SWANREF_HOST_DEVICE int first() const { return 0; }
  SWANREF_HOST_DEVICE int step() const { return 1; }
  template <class T>
  SWANREF_HOST_DEVICE T reduce_sum(T v) const { return v; }
  template <class T>
  SWANREF_HOST_DEVICE T reduce_max(T v) const { return v; }
  template <class T>
  SWANREF_HOST_DEVICE void reduce_max_sum(T&, T&) const {}
  template <int W, class T>
  SWANREF_HOST_DEVICE ChunkOut<W, T> out_chunk(T* p) const { return ChunkOut<W, T>(p); }
};

// -- the row algorithm ------------------------------------------------------------------------
// The row: in[j * in_stride], j < n (in_stride must be 1 when W > 1; in[0] is read by every
// thread). out: the result, contiguous. work: contiguous scratch holding the row while it is
// processed; shared memory, a host buffer, or the output row itself (every thread reads back
// only the entries it wrote, so no barrier is needed for it). Entries are visited in chunks of
// W (16-byte aligned in, out and work under CUDA when W > 1) and a tail of n % W single
// entries. eps >= 0.
//
// Every partial result has W lanes (lane k sums entries k, k + W, ...; the lanes are combined
// pairwise in a fixed order), so the host compiler vectorises the passes without reassociating
// anything and each thread's share is the same on every compiler.
//
// Passes (two reductions in the common case; Exec::prescale_first selects the GPU's order):
//   A. from memory: d = g - g[0] into work, max|d| and sum(d) together. Scaling by a power of
//      two commutes with rounding while nothing overflows (subnormal differences and sums of
//      them are exact), so these are the reference's ldexp(y - y0, -e2) and their sum up to the
//      factor 2^(e1 + e2) = 2^e, e = frexp exponent of max|d|, applied in pass B. If d or its
//      sum overflowed (|g| near the largest finite value), pass A is redone on the row scaled
//      by 2^-e1 first, as the reference does.
//      With prescale_first (BlockExec), the row is first copied into work with max|g| and pass A
//      runs on the prescaled copy, as the reference orders the steps: on the GPU the extra pass
//      over shared memory is cheap and no thread waits for g[0] before its first load (measured
//      on an H100: the fused order was up to 12% slower there, the prescaled one is not slower
//      than before); on the host the fused order saves a pass of arithmetic.
//   B. c = ldexp(d, -e) - mean into work; sum(c^2).
//   C. out = c * (1 / std), std = sqrt(var + ldexp(eps, -2 (e1 + e2))): one division per row
//      (the reference divides each entry; the product is within an ulp of the quotient).

template <int W, class T>
SWANREF_HOST_DEVICE inline T lanes_sum(T (&a)[W]) {
  for (int w = W / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) a[k] += a[k + w];
  return a[0];
}
template <int W, class T>
SWANREF_HOST_DEVICE inline T lanes_max(T (&a)[W]) {
  for (int w = W / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) a[k] = a[k + w] > a[k] ? a[k + w] : a[k];
  return a[0];
}

// The two forms of Pow2Scaler as separate types, so that a pass is compiled once per form and
// its inner loop has no branch (the form is uniform over the row).
template <class T>
struct MulBy {
  T f;
  SWANREF_HOST_DEVICE T operator()(T x) const { return x * f; }
};
template <class T>
struct LdexpBy {
  int k;
  SWANREF_HOST_DEVICE T operator()(T x) const { return dmath::ldexp(x, k); }
};
struct Unscaled {
  template <class T>
  SWANREF_HOST_DEVICE T operator()(T x) const { return x; }
};

// Pass A: work[j] = s(in[j]) - y0; returns the row's max|d| and sum(d) (reduced over ex).
// Partial results live in local arrays (the caller's could alias work as far as the compiler
// knows).
template <int W, class T, class Exec, class S>
SWANREF_HOST_DEVICE inline void gn_deviations(Exec& ex, const T* in, index_type in_stride, T* work, index_type n,
                                              S s, T y0, T& dmax_out, T& sum_out) {
  const int chunks = static_cast<int>(n / W);
  T dmax[W], sum[W];
  for (int k = 0; k < W; ++k) dmax[k] = sum[k] = T(0);
  SWANREF_UNROLL
  for (int c = ex.first(); c < chunks; c += ex.step()) {
    const ChunkIn<W, T> x(in + static_cast<index_type>(c) * W * in_stride);
    ChunkOut<W, T> y(work + static_cast<index_type>(c) * W);
    SWANREF_LANES
    for (int k = 0; k < W; ++k) {
      const T v = s(x[k]) - y0;
      y[k] = v;
      const T a = dmath::fabs(v);
      dmax[k] = a > dmax[k] ? a : dmax[k];
      sum[k] += v;
    }
    y.flush();
  }
  // the tail in separate scalars (lane arrays touched only by whole-lane loops stay in vector
  // registers)
  T tmax = T(0), tsum = T(0);
  for (index_type j = static_cast<index_type>(chunks) * W + ex.first(); j < n; j += ex.step()) {
    const T v = s(in[j * in_stride]) - y0;
    work[j] = v;
    const T a = dmath::fabs(v);
    tmax = a > tmax ? a : tmax;
    tsum += v;
  }
  dmax_out = lanes_max<W>(dmax);
  dmax_out = tmax > dmax_out ? tmax : dmax_out;
  sum_out = lanes_sum<W>(sum) + tsum;
  ex.reduce_max_sum(dmax_out, sum_out);
}

// Pass B: work[j] = s(work[j]) - mean; returns sum of squares (reduced over ex).
template <int W, class T, class Exec, class S>
SWANREF_HOST_DEVICE inline T gn_centre(Exec& ex, T* work, index_type n, S s, T mean) {
  const int chunks = static_cast<int>(n / W);
  T q[W];
  for (int k = 0; k < W; ++k) q[k] = T(0);
  SWANREF_UNROLL
  for (int c = ex.first(); c < chunks; c += ex.step()) {
    const ChunkIn<W, T> x(work + static_cast<index_type>(c) * W);
    ChunkOut<W, T> y(work + static_cast<index_type>(c) * W);
    SWANREF_LANES
    for (int k = 0; k < W; ++k) {
      const T v = s(x[k]) - mean;
      y[k] = v;
      q[k] += v * v;
    }
    y.flush();
  }
  T tq = T(0);
  for (index_type j = static_cast<index_type>(chunks) * W + ex.first(); j < n; j += ex.step()) {
    const T v = s(work[j]) - mean;
    work[j] = v;
    tq += v * v;
  }
  return ex.reduce_sum(lanes_sum<W>(q) + tq);
}

// Pass C: out[j] = s(work[j]) * inv, stored as O (the storage type).
template <int W, class T, class Exec, class S, class O>
SWANREF_HOST_DEVICE inline void gn_scale_out(Exec& ex, const T* work, O* out, index_type n, S s, T inv) {
  const int chunks = static_cast<int>(n / W);
  SWANREF_UNROLL
  for (int c = ex.first(); c < chunks; c += ex.step()) {
    const ChunkIn<W, T> x(work + static_cast<index_type>(c) * W);
    auto y = ex.template out_chunk<W>(out + static_cast<index_type>(c) * W);
    SWANREF_LANES
    for (int k = 0; k < W; ++k) y[k] = store_as<O>(s(x[k]) * inv);
    y.flush();
  }
  for (index_type j = static_cast<index_type>(chunks) * W + ex.first(); j < n; j += ex.step())
    out[j] = store_as<O>(s(work[j]) * inv);
}

// No <cmath> isfinite under NVRTC.
template <class T>
SWANREF_HOST_DEVICE inline bool gn_finite(T x) {
  return x - x == T(0);  // false for inf and NaN
}

// S: the storage type of in and out (T, or bf16_storage under CUDA, which needs
// Exec::prescale_first: the other order reads the row from memory in pass A).
template <int W, class T, class Exec, class S>
SWANREF_HOST_DEVICE inline void grad_norm_row(Exec& ex, const S* in, index_type in_stride,
                                              S* out, T* work, index_type n, T eps) {
  T dmax, s;
  int e1 = 0;  // exponent of the prescaling (0: none was needed)
  if constexpr (Exec::prescale_first) {
    // A0. copy the row into work, max|g|; A. deviations of the prescaled row, from work
    T lane[W];
    for (int k = 0; k < W; ++k) lane[k] = T(0);
    const int chunks = static_cast<int>(n / W);
    SWANREF_UNROLL
    for (int c = ex.first(); c < chunks; c += ex.step()) {
      const ChunkIn<W, S> x(in + static_cast<index_type>(c) * W * in_stride);
      ChunkOut<W, T> y(work + static_cast<index_type>(c) * W);
      SWANREF_LANES
      for (int k = 0; k < W; ++k) {
        const T v = load_as<T>(x[k]);
        y[k] = v;
        const T a = dmath::fabs(v);
        lane[k] = a > lane[k] ? a : lane[k];
      }
      y.flush();
    }
    T tmax = T(0);
    for (index_type j = static_cast<index_type>(chunks) * W + ex.first(); j < n; j += ex.step()) {
      const T v = load_as<T>(in[j * in_stride]);
      work[j] = v;
      const T a = dmath::fabs(v);
      tmax = a > tmax ? a : tmax;
    }
    T amax = lanes_max<W>(lane);
    e1 = pow2_exponent(ex.reduce_max(tmax > amax ? tmax : amax));
    const Pow2Scaler<T> s1(-e1);
    if (s1.multiply)
      gn_deviations<W>(ex, work, 1, work, n, MulBy<T>{s1.factor}, s1(work[0]), dmax, s);
    else
      gn_deviations<W>(ex, work, 1, work, n, LdexpBy<T>{s1.k}, s1(work[0]), dmax, s);
  } else {
  // A. deviations from the first entry, read from memory once
  gn_deviations<W>(ex, in, in_stride, work, n, Unscaled{}, in[0], dmax, s);
  if (!(gn_finite(dmax) && gn_finite(s))) {
    // |g| near the overflow threshold: prescale by 2^-e1 (e1 = frexp exponent of max|g|)
    T lane[W];
    for (int k = 0; k < W; ++k) lane[k] = T(0);
    for (index_type j = ex.first(); j < n; j += ex.step()) {
      const T a = dmath::fabs(in[j * in_stride]);
      lane[0] = a > lane[0] ? a : lane[0];
    }
    e1 = pow2_exponent(ex.reduce_max(lanes_max<W>(lane)));
    const Pow2Scaler<T> s1(-e1);
    if (s1.multiply)
      gn_deviations<W>(ex, in, in_stride, work, n, MulBy<T>{s1.factor}, s1(in[0]), dmax, s);
    else
      gn_deviations<W>(ex, in, in_stride, work, n, LdexpBy<T>{s1.k}, s1(in[0]), dmax, s);
  }
  }
  // the scaling that puts the largest deviation in [0.5, 1) (e1 + e2 = e1 + e in the spec's terms)
  const int e = pow2_exponent(dmax);
  const Pow2Scaler<T> s2(-e);
  const T mean = s2(s) / T(n);

  // B. rescale, centre, population variance
  const T q = s2.multiply ? gn_centre<W>(ex, work, n, MulBy<T>{s2.factor}, mean)
                          : gn_centre<W>(ex, work, n, LdexpBy<T>{s2.k}, mean);
  const T var = q / T(n);

  // eps is added to the variance of the original row: var_orig = var * 4^(e1 + e).
  const T eps_s = eps > T(0) ? dmath::ldexp(eps, -2 * (e1 + e)) : T(0);
  // A constant row (dmax == 0) has c == 0 everywhere and std == sqrt(eps') or 0, whose reciprocal
  // may overflow: its output is 0. Otherwise var >= 1 / (4 n^2) and 1 / std is finite.
  if (!(dmax > T(0))) {
    gn_scale_out<W>(ex, work, out, n, Unscaled{}, T(0));
  } else if (gn_finite(eps_s)) {
    gn_scale_out<W>(ex, work, out, n, Unscaled{}, T(1) / dmath::sqrt(var + eps_s));
  } else {
    // eps' overflows (tiny rows): var is negligible beside it, out = ldexp(c, e1 + e) / sqrt(eps)
    const Pow2Scaler<T> back(e1 + e);
    const T inv = T(1) / dmath::sqrt(eps);
    if (back.multiply)
      gn_scale_out<W>(ex, work, out, n, MulBy<T>{back.factor}, inv);
    else
      gn_scale_out<W>(ex, work, out, n, LdexpBy<T>{back.k}, inv);
  }
}

// Convenience for host code: one row of any stride, scratch supplied by the caller (may be out).
template <class T>
inline void grad_norm_row_serial(const T* in, index_type in_stride, T* out, T* work,
                                 index_type n, T eps) {
  SerialExec ex;
  grad_norm_row<1>(ex, in, in_stride, out, work, n, eps);
}

#if defined(SWANREF_CUDA)
#undef SWANREF_LANES
#undef SWANREF_UNROLL

// -- GPU: one thread block per row ------------------------------------------------------------

// Block-wide reductions through warp shuffles and a shared buffer (32 warp partials plus the
// broadcast slot, twice for the paired reduction). blockDim.x must be a multiple of 32 and at most 1024. Two barriers
// per reduction; the buffer can be reused by the next reduction without a third one.
template <class T>
struct BlockExec {
  T* red;  // shared memory, >= 66 entries
  static constexpr bool prescale_first = true;

  __device__ int first() const { return threadIdx.x; }
  __device__ int step() const { return blockDim.x; }

  template <bool IsMax>
  __device__ static T combine(T a, T b) {
    return IsMax ? (a > b ? a : b) : a + b;
  }

  template <bool IsMax>
  __device__ T reduce(T v) const {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    const unsigned nwarps = blockDim.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = combine<IsMax>(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
      T w = lane < nwarps ? red[lane] : T(0);  // 0 is the identity of both (magnitudes are >= 0)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) w = combine<IsMax>(w, __shfl_xor_sync(0xffffffffu, w, off));
      if (lane == 0) red[32] = w;
    }
    __syncthreads();
    return red[32];
  }

  template <int W, class O>
  __device__ ChunkOut<W, O> out_chunk(O* p) const { return ChunkOut<W, O>(p); }

  __device__ T reduce_sum(T v) const { return reduce<false>(v); }
  __device__ T reduce_max(T v) const { return reduce<true>(v); }

  // max of mx and sum of sm over the block, both at once (red needs >= 66 entries)
  __device__ void reduce_max_sum(T& mx, T& sm) const {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    const unsigned nwarps = blockDim.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const T a = __shfl_xor_sync(0xffffffffu, mx, off);
      const T b = __shfl_xor_sync(0xffffffffu, sm, off);
      mx = a > mx ? a : mx;
      sm += b;
    }
    if (lane == 0) {
      red[warp] = mx;
      red[33 + warp] = sm;
    }
    __syncthreads();
    if (warp == 0) {
      T a = lane < nwarps ? red[lane] : T(0);
      T b = lane < nwarps ? red[33 + lane] : T(0);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const T a2 = __shfl_xor_sync(0xffffffffu, a, off);
        const T b2 = __shfl_xor_sync(0xffffffffu, b, off);
        a = a2 > a ? a2 : a;
        b += b2;
      }
      if (lane == 0) {
        red[32] = a;
        red[65] = b;
      }
    }
    __syncthreads();
    mx = red[32];
    sm = red[65];
  }
};

// GradNorm over the last axis of a stack of rows.
//   in:  row r, entry j at in[r * in_row_stride + j * in_col_stride] (element strides, >= 0;
//        in_col_stride == 1 and rows aligned to W * sizeof(S) bytes when W > 1)
//   out: C-contiguous rows of length n (n % W == 0)
//   work_in_shared: 1 -> the row lives in dynamic shared memory (n * sizeof(T) bytes);
//                   0 -> it lives in the output row (rows too long for shared memory; S == T only).
//   S: storage type of in and out (T, or bf16_storage with T = float).
template <class T, int W, class S = T>
__global__ void grad_norm_rows(const S* __restrict__ in, index_type rows, index_type n,
                               index_type in_row_stride, index_type in_col_stride, S* out, T eps,
                               int work_in_shared) {
  extern __shared__ __align__(16) unsigned char swanref_grad_norm_smem[];
  __shared__ T red[66];
  BlockExec<T> ex{red};
  for (index_type r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* row = in + r * in_row_stride;
    S* orow = out + r * n;
    T* work = reinterpret_cast<T*>(swanref_grad_norm_smem);
    if constexpr (sizeof(S) == sizeof(T)) {
      if (!work_in_shared) work = reinterpret_cast<T*>(orow);
    }
    grad_norm_row<W>(ex, row, in_col_stride, orow, work, n, eps);
  }
}
#endif  // SWANREF_CUDA

}  // namespace device
}  // namespace swanref

#endif  // SWANREF_DEVICE_GRAD_NORM_ROW_HPP
