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

// -- execution policies ---------------------------------------------------------------------
// An Exec says which chunks of the row this thread visits (c = first(); c < chunks;
// c += step()) and combines per-thread partial results over everyone working on the row.

// One host thread does the whole row.
struct SerialExec {
  SWANREF_HOST_DEVICE int first() const { return 0; }
  SWANREF_HOST_DEVICE int step() const { return 1; }
  template <class T>
  SWANREF_HOST_DEVICE T reduce_sum(T v) const { return v; }
  template <class T>
  SWANREF_HOST_DEVICE T reduce_max(T v) const { return v; }
  template <class T>
  SWANREF_HOST_DEVICE void reduce_max_sum(T&, T&) const {}
};

#if defined(SWANREF_CUDA)
#define SWANREF_UNROLL _Pragma("unroll 4")
#else
#define SWANREF_UNROLL
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
    return;
  } else if constexpr (W * sizeof(T) == 16 && sizeof(T) == 8) {
    const double2 v = *reinterpret_cast<const double2*>(p);
    x[0] = v.x; x[1] = v.y;
    return;
  }
#endif
  for (int k = 0; k < W; ++k) x[k] = p[k];
}

template <int W, class T>
SWANREF_HOST_DEVICE inline void store_chunk(T* p, const T (&x)[W]) {
#if defined(SWANREF_CUDA)
  if constexpr (W * sizeof(T) == 16 && sizeof(T) == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
    return;
  } else if constexpr (W * sizeof(T) == 16 && sizeof(T) == 8) {
    *reinterpret_cast<double2*>(p) = make_double2(x[0], x[1]);
    return;
  }
#endif
  for (int k = 0; k < W; ++k) p[k] = x[k];
}

// -- the row algorithm ------------------------------------------------------------------------
// The row: in[j * in_stride], j < n (in_stride must be 1 when W > 1; in[0] is read by every
// thread). out: the result, contiguous. work: contiguous scratch holding the row while it is
// processed; shared memory, or the output row itself (every thread reads back only the chunks
// it wrote, so no barrier is needed for it). n % W == 0; for W > 1 in, out and work are
// 16-byte aligned. eps >= 0.
//
// Three reductions: max|g|; then max|d| and sum(d) together (sum(ldexp(d, -e2)) equals
// ldexp(sum(d), -e2) exactly, the partial sums being scaled by the same power of two; |d| < 2
// cannot overflow); then sum(c^2). The final step divides (as the reference does).
template <int W, class T, class Exec>
SWANREF_HOST_DEVICE inline void grad_norm_row(Exec& ex, const T* in, index_type in_stride,
                                              T* out, T* work, index_type n, T eps) {
  const int chunks = static_cast<int>(n / W);
  const int c0 = ex.first();
  const int dc = ex.step();

  // 1. read the row once, keep it, find max|g|
  T amax = T(0);
  SWANREF_UNROLL
  for (int c = c0; c < chunks; c += dc) {
    T x[W];
    load_chunk<W>(in + static_cast<index_type>(c) * W * in_stride, x);
    store_chunk<W>(work + static_cast<index_type>(c) * W, x);
    for (int k = 0; k < W; ++k) {
      const T a = dmath::fabs(x[k]);
      amax = a > amax ? a : amax;
    }
  }
  amax = ex.reduce_max(amax);
  const int e1 = pow2_exponent(amax);
  const Pow2Scaler<T> s1(-e1);
  const T y0 = s1(in[0]);

  // 2. deviations from the first entry (exact power-of-two scaling first): max|d| and sum(d)
  T dmax = T(0);
  T s = T(0);
  SWANREF_UNROLL
  for (int c = c0; c < chunks; c += dc) {
    T x[W];
    load_chunk<W>(work + static_cast<index_type>(c) * W, x);
    for (int k = 0; k < W; ++k) {
      x[k] = s1(x[k]) - y0;
      const T a = dmath::fabs(x[k]);
      dmax = a > dmax ? a : dmax;
      s += x[k];
    }
    store_chunk<W>(work + static_cast<index_type>(c) * W, x);
  }
  ex.reduce_max_sum(dmax, s);
  const int e2 = pow2_exponent(dmax);
  const Pow2Scaler<T> s2(-e2);
  const T mean = s2(s) / T(n);

  // 3. rescale so that the largest deviation lies in [0.5, 1); centre; population variance
  T q = T(0);
  SWANREF_UNROLL
  for (int c = c0; c < chunks; c += dc) {
    T x[W];
    load_chunk<W>(work + static_cast<index_type>(c) * W, x);
    for (int k = 0; k < W; ++k) {
      x[k] = s2(x[k]) - mean;
      q += x[k] * x[k];
    }
    store_chunk<W>(work + static_cast<index_type>(c) * W, x);
  }
  const T var = ex.reduce_sum(q) / T(n);

  // 4. eps is added to the variance of the original row: var_orig = var * 4^(e1 + e2)
  const T std = eps > T(0) ? dmath::sqrt(var + dmath::ldexp(eps, -2 * (e1 + e2)))
                           : dmath::sqrt(var);

  // 5. standardise (a constant row has c == 0 everywhere and std == sqrt(eps') or 0)
  const bool scale = std > T(0);
  SWANREF_UNROLL
  for (int c = c0; c < chunks; c += dc) {
    T x[W];
    load_chunk<W>(work + static_cast<index_type>(c) * W, x);
    for (int k = 0; k < W; ++k) x[k] = scale ? x[k] / std : T(0);
    store_chunk<W>(out + static_cast<index_type>(c) * W, x);
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
// -- GPU: one thread block per row ------------------------------------------------------------

// Block-wide reductions through warp shuffles and a shared buffer (32 warp partials plus the
// broadcast slot, twice for the paired reduction). blockDim.x must be a multiple of 32 and at most 1024. Two barriers
// per reduction; the buffer can be reused by the next reduction without a third one.
template <class T>
struct BlockExec {
  T* red;  // shared memory, >= 66 entries

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
//        in_col_stride == 1 and 16-byte aligned rows when W > 1)
//   out: C-contiguous rows of length n (n % W == 0)
//   work_in_shared: 1 -> the row lives in dynamic shared memory (n * sizeof(T) bytes);
//                   0 -> it lives in the output row (rows too long for shared memory).
template <class T, int W>
__global__ void grad_norm_rows(const T* __restrict__ in, index_type rows, index_type n,
                               index_type in_row_stride, index_type in_col_stride, T* out, T eps,
                               int work_in_shared) {
  extern __shared__ __align__(16) unsigned char swanref_grad_norm_smem[];
  __shared__ T red[66];
  BlockExec<T> ex{red};
  for (index_type r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * in_row_stride;
    T* orow = out + r * n;
    T* work = work_in_shared ? reinterpret_cast<T*>(swanref_grad_norm_smem) : orow;
    grad_norm_row<W>(ex, row, in_col_stride, orow, work, n, eps);
  }
}
#endif  // SWANREF_CUDA

}  // namespace device
}  // namespace swanref

#endif  // SWANREF_DEVICE_GRAD_NORM_ROW_HPP
