"""Run-time compiled kernels of the CuPy backend (NVRTC), and its one CuPy ElementwiseKernel.

* GradNorm: the host/device C++ header ``cpp/include/swanref/device/grad_norm_row.hpp``
  (one thread block per row), compiled with ``-I`` to the header directory.
* Helpers of the whitening routes and the low-precision (bfloat16 / float16) preset path:
  self-contained source below, so that they need no header on disk.

Both are compiled without ``-ftz`` (see :func:`_compile`): float32 subnormals keep their values.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np

from swanref.backends.cupy import _runtime as rt

HEADER = "swanref/device/grad_norm_row.hpp"

_GRAD_NORM_SOURCE = r"""
// %(tag)s
#include <swanref/device/grad_norm_row.hpp>
"""

_HELPER_SOURCE = r"""
namespace swanref_cupy {
template <class T> __device__ __forceinline__ bool finite(T x) { return x - x == T(0); }
// bfloat16 held as a 16-bit word: finite unless the exponent bits are all ones
__device__ __forceinline__ bool finite(unsigned short h) { return (h & 0x7f80u) != 0x7f80u; }
template <class T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ unsigned short quiet_nan<unsigned short>() { return 0x7fc0u; }
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}

// Row-major stack of square matrices (batch, m, m) whose upper triangle holds a symmetric
// matrix: copy it into the lower triangle (32x32 tiles through shared memory, coalesced).
template <class T>
__global__ void mirror_upper(T* a, int m, long long batch_stride) {
  __shared__ T tile[32][33];
  const int bx = blockIdx.x, by = blockIdx.y;
  if (by < bx) return;
  T* A = a + (long long)blockIdx.z * batch_stride;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int k = 0; k < 32; k += 8) {
    const int r = bx * 32 + ty + k, c = by * 32 + tx;
    if (r < m && c < m) tile[ty + k][tx] = A[(long long)r * m + c];
  }
  __syncthreads();
  for (int k = 0; k < 32; k += 8) {
    const int r = by * 32 + ty + k, c = bx * 32 + tx;
    if (r < m && c < m && r > c) A[(long long)r * m + c] = tile[tx][ty + k];
  }
}

// a[b, i, i] += v for the (batch, m, m) stack a (total = batch * m diagonal entries).
template <class T>
__global__ void add_diagonal(T* a, long long total, int m, T v) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long b = i / m, k = i % m;
    a[(b * m + k) * m + k] += v;
  }
}

// GradNorm output rows (rows x n, contiguous) whose first entry is not finite hold a row with
// NaN/Inf (the row algorithm propagates them to every entry): make the whole row NaN.
template <class T>
__global__ void nan_bad_rows(T* out, long long rows, long long n) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = out + r * n;
    if (finite(row[0])) continue;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) row[j] = quiet_nan<T>();
  }
}

// *flag = 1 when some GradNorm output row (rows x n, contiguous) starts with NaN/Inf, else 0.
// One block (the first entries are few), so the flag needs no reset before the launch.
template <class T>
__global__ void first_entries_finite(const T* out, long long rows, long long n, int* flag) {
  int bad = 0;
  for (long long r = threadIdx.x; r < rows; r += blockDim.x) bad |= !finite(out[r * n]);
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) *flag = bad;
}

// -- bfloat16 (F = 0) / float16 (F = 1) held as 16-bit words: PyTorch-eager rounding ----------
// Conversions are the hardware's round-to-nearest-even (cvt.rn), as PyTorch's are.
template <int F> __device__ __forceinline__ float lp2f(unsigned short h);
template <> __device__ __forceinline__ float lp2f<0>(unsigned short h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
template <> __device__ __forceinline__ float lp2f<1>(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
template <int F> __device__ __forceinline__ unsigned short f2lp(float f);
template <> __device__ __forceinline__ unsigned short f2lp<0>(float f) {
  unsigned short r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f)); return r;
}
template <> __device__ __forceinline__ unsigned short f2lp<1>(float f) {
  unsigned short r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f)); return r;
}
#define SWANREF_GRID_LOOP(i, total) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (total); \
       i += (long long)gridDim.x * blockDim.x)

// y = fmt(float(ldexp(x, -shift[slice]))): the G.bfloat16() cast after the huge-input prescale
template <int F, class T>
__global__ void lp_cast_in(const T* x, unsigned short* y, long long total, long long slice,
                           const int* shift) {
  SWANREF_GRID_LOOP(i, total) y[i] = f2lp<F>((float)ldexp(x[i], -shift[i / slice]));
}
// y = fmt(ldexp(x, -shift[slice])) for 16-bit input words x of the same format: the cast above
// for input that is already bfloat16/float16 (exact unless the shift is non-zero)
template <int F>
__global__ void lp_shift_words(const unsigned short* x, unsigned short* y, long long total,
                               long long slice, const int* shift) {
  SWANREF_GRID_LOOP(i, total) {
    const int s = shift[i / slice];
    y[i] = s == 0 ? x[i] : f2lp<F>(ldexpf(lp2f<F>(x[i]), -s));
  }
}
template <int F, class T>
__global__ void lp_cast_out(const unsigned short* x, T* y, long long total) {
  SWANREF_GRID_LOOP(i, total) y[i] = (T)lp2f<F>(x[i]);
}
// X / N(||X||) with the preset's normalisation; sumsq[slice] = sum of squares (float64).
// mode: 0 add (nrm + eps), 1 clamp (max(nrm, eps)), 2 none, 3 safe (0 where nrm == 0)
template <int F>
__global__ void lp_normalise(unsigned short* x, long long total, long long slice,
                             const double* sumsq, float scale, float eps, int mode) {
  SWANREF_GRID_LOOP(i, total) {
    float nrm = lp2f<F>(f2lp<F>((float)sqrt(sumsq[i / slice])));
    if (scale != 1.0f) nrm = lp2f<F>(f2lp<F>(scale * nrm));
    float d = nrm;
    if (mode == 0) d = lp2f<F>(f2lp<F>(nrm + eps));
    else if (mode == 1) d = lp2f<F>(f2lp<F>(nrm != nrm ? nrm : fmaxf(nrm, eps)));
    const float v = lp2f<F>(x[i]);
    x[i] = (mode == 3 && !(nrm > 0.0f)) ? f2lp<F>(0.0f) : f2lp<F>(v / d);
  }
}
template <int F>
__global__ void lp_scale(const unsigned short* x, unsigned short* y, long long total, float s) {
  SWANREF_GRID_LOOP(i, total) y[i] = f2lp<F>(s * lp2f<F>(x[i]));
}
// y = fmt(fmt(a * x) + p): the eager "a * X + P" with its two roundings
template <int F>
__global__ void lp_scale_add(const unsigned short* x, const unsigned short* p, unsigned short* y,
                             long long total, float a) {
  SWANREF_GRID_LOOP(i, total) y[i] = f2lp<F>(lp2f<F>(f2lp<F>(a * lp2f<F>(x[i]))) + lp2f<F>(p[i]));
}
}  // namespace swanref_cupy
"""

# The bfloat16-word scan of the preset path (its own module: should it fail to compile, the
# other kernels are unaffected and interop.py keeps its elementwise route). Pass 1: each block
# reduces a part of one matrix to the max of its magnitude bits (word & 0x7fff orders like
# |x|; NaN/Inf have the exponent field all ones, so the max is >= 0x7f80 exactly when the
# matrix holds one). Pass 2: per matrix, the huge-value shift (interop.HUGE, frexp from the
# exponent field) and the all-finite flag. Two launches, no host synchronisation.
_SCAN_SOURCE = r"""
namespace swanref_scan {
__device__ __forceinline__ unsigned int max_u(unsigned int a, unsigned int b) { return a > b ? a : b; }
__device__ __forceinline__ unsigned int mag2(unsigned int q) {  // two words, max magnitude
  return max_u(q & 0x7fffu, (q >> 16) & 0x7fffu);
}
__device__ __forceinline__ unsigned int warp_max(unsigned int m) {
  for (int o = 16; o > 0; o >>= 1) m = max_u(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}
struct alignas(16) words8 { unsigned int x, y, z, w; };  // eight 16-bit words
// block b of the 1-D grid reduces part (b % parts) of matrix (b / parts); V = 8: 16-byte loads
// (every matrix starts 16-byte aligned and slice % 8 == 0), V = 1: one word at a time
template <int V>
__global__ void bf16_amax_parts(const unsigned short* w, long long slice, int parts,
                                unsigned int* partial) {
  const long long mat = blockIdx.x / parts;
  const int part = blockIdx.x % parts;
  const unsigned short* x = w + mat * slice;
  const long long step = (long long)parts * blockDim.x;
  unsigned int m = 0;
  if (V == 8) {
    const words8* v = reinterpret_cast<const words8*>(x);
    for (long long i = (long long)part * blockDim.x + threadIdx.x; i < slice / 8; i += step) {
      const words8 q = v[i];
      m = max_u(m, max_u(max_u(mag2(q.x), mag2(q.y)), max_u(mag2(q.z), mag2(q.w))));
    }
  } else {
    for (long long i = (long long)part * blockDim.x + threadIdx.x; i < slice; i += step)
      m = max_u(m, (unsigned int)(x[i] & 0x7fffu));
  }
  __shared__ unsigned int warps[32];
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) warps[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = warp_max(threadIdx.x < (blockDim.x >> 5) ? warps[threadIdx.x] : 0u);
    if (threadIdx.x == 0) partial[blockIdx.x] = m;
  }
}
// one warp per matrix: shift[b] = e - t when frexp's exponent e of max|x| exceeds h, else 0
// (0 for NaN/Inf, as interop.huge_shift); with want_ok (one block) *ok = no NaN/Inf anywhere
__global__ void bf16_shift_finish(const unsigned int* partial, long long batch, int parts,
                                  int h, int t, int* shift, bool* ok, int want_ok) {
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  int bad = 0;
  for (long long b = blockIdx.x * (long long)(blockDim.x >> 5) + (threadIdx.x >> 5); b < batch;
       b += warps) {
    unsigned int m = 0;
    for (int p = lane; p < parts; p += 32) m = max_u(m, partial[b * parts + p]);
    m = warp_max(m);
    const int E = (int)(m >> 7);  // exponent field; max|x| = 0.1f * 2**(E - 126) when normal
    bad |= E == 0xff;
    if (lane == 0) shift[b] = (E != 0xff && E != 0 && E - 126 > h) ? E - 126 - t : 0;
  }
  if (want_ok) {
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) *ok = !bad;
  }
}
// -- sum of squares of 16-bit words (bfloat16 F = 0, float16 F = 1) per matrix, in float32 --
// The squares are exact in float32 (no contraction into an FMA: __fmul_rn, __fadd_rn), the sums
// float32 in a fixed order (parts of 256 strided threads, then the parts): the precision
// PyTorch's norm uses. Subnormal squares are kept (this module is compiled without -ftz).
template <int F> __device__ __forceinline__ float lp2f(unsigned short h);
template <> __device__ __forceinline__ float lp2f<0>(unsigned short h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
template <> __device__ __forceinline__ float lp2f<1>(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ float warp_sum(float s) {
  for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
  return s;
}
template <int F>
__global__ void lp_sumsq_parts(const unsigned short* w, long long slice, int parts,
                               float* partial) {
  const long long mat = blockIdx.x / parts;
  const int part = blockIdx.x % parts;
  const unsigned short* x = w + mat * slice;
  const long long step = (long long)parts * blockDim.x;
  float s = 0.0f;
  for (long long i = (long long)part * blockDim.x + threadIdx.x; i < slice; i += step) {
    const float v = lp2f<F>(x[i]);
    s = __fadd_rn(s, __fmul_rn(v, v));
  }
  __shared__ float warps[32];
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0) warps[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    s = warp_sum(threadIdx.x < (blockDim.x >> 5) ? warps[threadIdx.x] : 0.0f);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
  }
}
// one warp per matrix: out[b] = the float32 sum of its parts, widened to double
__global__ void sumsq_finish(const float* partial, long long batch, int parts, double* out) {
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long b = blockIdx.x * (long long)(blockDim.x >> 5) + (threadIdx.x >> 5); b < batch;
       b += warps) {
    float s = 0.0f;
    for (int p = lane; p < parts; p += 32) s = __fadd_rn(s, partial[b * parts + p]);
    s = warp_sum(s);
    if (lane == 0) out[b] = (double)s;
  }
}
}  // namespace swanref_scan
"""
_SCAN_NAMES = {"bf16_amax_parts": "swanref_scan::bf16_amax_parts<1>",
               "bf16_amax_parts_vec": "swanref_scan::bf16_amax_parts<8>",
               "bf16_shift_finish": "swanref_scan::bf16_shift_finish",
               "lp_sumsq_parts_bfloat16": "swanref_scan::lp_sumsq_parts<0>",
               "lp_sumsq_parts_float16": "swanref_scan::lp_sumsq_parts<1>",
               "sumsq_finish": "swanref_scan::sumsq_finish"}

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: the helpers that also take bfloat16 words (uint16): the finite-row policy of GradNorm
_WORD_HELPERS = ("nan_rows", "first_finite")
_BF16 = "swanref::device::bf16_storage"
_LP = {"bfloat16": 0, "float16": 1}

_GRAD_NORM_NAMES = {"grad_norm": "swanref::device::grad_norm_rows<%s, 1>",
                    "grad_norm_vec": "swanref::device::grad_norm_rows<%s, %d>"}
#: bfloat16 rows read and written natively (storage bf16, compute float; 8-byte vectors)
_GRAD_NORM_BF16_NAMES = {"grad_norm_bf16": "swanref::device::grad_norm_rows<float, 1, %s>" % _BF16,
                         "grad_norm_bf16_vec": "swanref::device::grad_norm_rows<float, 4, %s>" % _BF16}
_HELPER_NAMES = {"mirror": "swanref_cupy::mirror_upper<%s>",
                 "add_diag": "swanref_cupy::add_diagonal<%s>",
                 "nan_rows": "swanref_cupy::nan_bad_rows<%s>",
                 "first_finite": "swanref_cupy::first_entries_finite<%s>"}
_LP_T_NAMES = {"lp_cast_in": "swanref_cupy::lp_cast_in<%d, %s>",
               "lp_cast_out": "swanref_cupy::lp_cast_out<%d, %s>"}
_LP_NAMES = {"lp_normalise": "swanref_cupy::lp_normalise<%d>",
             "lp_shift_words": "swanref_cupy::lp_shift_words<%d>",
             "lp_scale": "swanref_cupy::lp_scale<%d>",
             "lp_scale_add": "swanref_cupy::lp_scale_add<%d>"}

_modules: dict = {}
_functions: dict = {}
_smem_set: dict = {}


def include_dir() -> pathlib.Path:
    """Directory holding ``swanref/device/grad_norm_row.hpp``.

    Looked up in order: ``$SWANREF_INCLUDE_DIR``; ``<package>/include`` (where an installed
    wheel ships it); ``<source tree>/cpp/include`` (a checkout or an editable install).
    """
    here = pathlib.Path(__file__).resolve().parent.parent.parent  # the swanref package folder
    candidates = []
    env = os.environ.get("SWANREF_INCLUDE_DIR")
    if env:
        candidates.append(pathlib.Path(env))
    candidates += [here / "include", here.parent / "cpp" / "include"]
    for cand in candidates:
        if (cand / HEADER).is_file():
            return cand
    raise RuntimeError(
        f"swanref's CuPy backend cannot find the header {HEADER} (looked in "
        f"{', '.join(str(c) for c in candidates)}); set SWANREF_INCLUDE_DIR to the directory "
        "that holds swanref/device/")


def _compile(code: str, options: tuple, names: list):
    """``(how, keep_alive, {name expression: kernel})`` for ``code``.

    CuPy's RawModule appends ``-ftz=true`` to every NVRTC compilation (cupy/cuda/compiler.py,
    ``_compile_with_cache_cuda``), which would flush float32 subnormals to zero and break the
    spec's exact handling of tiny rows. So the module is compiled here through CuPy's NVRTC
    wrapper ``compile_using_nvrtc`` (no option added; ``--ftz=false`` stated explicitly) and
    loaded as a plain module. Should that private API change, RawModule is used instead and
    ``compile_path()`` says so.
    """
    cp = rt.cp()
    opts = options + ("--ftz=false", "--prec-div=true", "--prec-sqrt=true")
    try:
        from cupy.cuda import compiler, function
        obj, mapping = compiler.compile_using_nvrtc(code, options=opts, name_expressions=names)
        if isinstance(obj, str):
            obj = obj.encode()
        mod = function.Module()
        mod.load(obj)
        return "nvrtc", mod, {n: mod.get_function(mapping[n]) for n in names}
    except Exception as exc:  # pragma: no cover - depends on the CuPy version
        raw = cp.RawModule(code=code, options=options, name_expressions=names)
        raw.compile()
        rt.state["compile_error"] = repr(exc)
        return "cupy.RawModule (-ftz=true)", raw, {n: raw.get_function(n) for n in names}


def _names(which: str) -> list:
    if which == "scan":
        return list(_SCAN_NAMES.values())
    if which == "grad_norm":
        return ([_GRAD_NORM_NAMES["grad_norm"] % c for c in _CTYPE.values()]
                + [_GRAD_NORM_NAMES["grad_norm_vec"] % (c, 16 // dt.itemsize)
                   for dt, c in _CTYPE.items()] + list(_GRAD_NORM_BF16_NAMES.values()))
    out = [v % c for v in _HELPER_NAMES.values() for c in _CTYPE.values()]
    out += [_HELPER_NAMES[k] % "unsigned short" for k in _WORD_HELPERS]
    out += [v % (f, c) for v in _LP_T_NAMES.values() for f in _LP.values() for c in _CTYPE.values()]
    out += [v % f for v in _LP_NAMES.values() for f in _LP.values()]
    return out


def module(which: str = "grad_norm"):
    """The compiled kernels ``which`` ("grad_norm", "helpers" or "scan") for the current
    device."""
    key = (which, rt.device())
    mod = _modules.get(key)
    if mod is None:
        with rt.lock:
            mod = _modules.get(key)
            if mod is None:
                if which == "grad_norm":
                    inc = include_dir()
                    header = (inc / HEADER).read_bytes()
                    tag = "swanref header sha256 " + hashlib.sha256(header).hexdigest()
                    code = _GRAD_NORM_SOURCE % {"tag": tag}
                    options = ("-std=c++17", f"-I{inc}")
                elif which == "scan":
                    code, options = _SCAN_SOURCE, ("-std=c++17",)
                else:
                    code, options = _HELPER_SOURCE, ("-std=c++17",)
                mod = _modules[key] = _compile(code, options, _names(which))
    return mod


def compile_path() -> str:
    """How the kernels were compiled: "nvrtc" (IEEE float32 subnormals) or the RawModule
    fallback (float32 subnormals flushed to zero)."""
    return module()[0]


def kernel(kind: str, dtype=None, fmt: str | None = None):
    """The kernel ``kind`` for ``dtype`` (float32/float64; uint16 for the bfloat16-word
    helpers) and/or low-precision ``fmt``."""
    dtype = None if dtype is None else np.dtype(dtype)
    key = (rt.device(), kind, dtype, fmt)
    fn = _functions.get(key)
    if fn is None:
        if kind in _SCAN_NAMES:
            name, which = _SCAN_NAMES[kind], "scan"
        elif kind in _GRAD_NORM_BF16_NAMES:
            name, which = _GRAD_NORM_BF16_NAMES[kind], "grad_norm"
        elif kind in _WORD_HELPERS and dtype == np.dtype(np.uint16):
            name, which = _HELPER_NAMES[kind] % "unsigned short", "helpers"
        elif kind == "grad_norm_vec":
            name, which = _GRAD_NORM_NAMES[kind] % (_CTYPE[dtype], 16 // dtype.itemsize), "grad_norm"
        elif kind == "grad_norm":
            name, which = _GRAD_NORM_NAMES[kind] % _CTYPE[dtype], "grad_norm"
        elif kind in _HELPER_NAMES:
            name, which = _HELPER_NAMES[kind] % _CTYPE[dtype], "helpers"
        elif kind in _LP_T_NAMES:
            name, which = _LP_T_NAMES[kind] % (_LP[fmt], _CTYPE[dtype]), "helpers"
        else:
            name, which = _LP_NAMES[kind] % _LP[fmt], "helpers"
        fn = _functions[key] = module(which)[2][name]
    return fn


def allow_dynamic_smem(fn, nbytes: int) -> None:
    """Raise the kernel's dynamic shared-memory limit (needed above 48 KiB)."""
    key = id(fn)
    if _smem_set.get(key, 48 * 1024) >= nbytes:
        return
    if hasattr(fn, "max_dynamic_shared_size_bytes"):
        fn.max_dynamic_shared_size_bytes = nbytes
    else:
        from cupy_backends.cuda.api import driver
        attr = getattr(driver, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8)
        driver.funcSetAttribute(fn.ptr, attr, nbytes)
    _smem_set[key] = nbytes


def grid_1d(total: int, threads: int = 256) -> tuple:
    return (max(1, min((total + threads - 1) // threads, 132 * 32)),), (threads,)


_lp_square_kernels: dict = {}


def lp_squares(fmt: str):
    """ElementwiseKernel: float32 squares of 16-bit words of format ``fmt`` (exact)."""
    fn = _lp_square_kernels.get(fmt)
    if fn is None:
        conv = ("return __uint_as_float(((unsigned int)h) << 16);" if fmt == "bfloat16"
                else 'float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;')
        pre = "__device__ __forceinline__ float swanref_lp2f(unsigned short h) { " + conv + " }"
        fn = _lp_square_kernels[fmt] = rt.cp().ElementwiseKernel(
            "uint16 x", "float32 y", "float v = swanref_lp2f(x); y = v * v;",
            "swanref_lp_square_" + fmt, preamble=pre)
    return fn
