"""Array plumbing shared by the operators: stacks, exact power-of-two scaling, and the
one-pass checks the public call asks the backend for (finite input, Frobenius norms)."""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import kernels as K


def stack(G):
    """C-contiguous (B, m, n) view or copy of G (B = product of the batch dimensions)."""
    cp = rt.cp()
    m, n = G.shape[-2:]
    return cp.ascontiguousarray(G).reshape((-1, m, n))


# Per-matrix reductions run in two passes, over the rows and then over the row results.  CuPy's
# built-in reduction over both trailing axes (CUB's segmented reduce) and a user ReductionKernel
# both give each output value one thread block, so a single large matrix was reduced on one SM:
# on an H100 max|G| took 0.88 ms at 1024 x 4096 and 11.5 ms at 4096 x 11008 float32
# (tests/device/profile_probe.py), more than the whole muon_ns5 polynomial in bfloat16.

def per_matrix(reduce, X, keepdims: bool = False):
    """``reduce`` (cp.max, cp.sum) over the last two axes of X: rows first, in parallel."""
    m, n = X.shape[-2:]
    Y = X
    if m < 256 and n >= 1 << 15 and X.flags.c_contiguous:
        k = 1  # few long rows: cut each into 2**j pieces so the first pass has enough of them
        while n % (2 * k) == 0 and n // (2 * k) >= 4096 and m * k < 256:
            k *= 2
        Y = X.reshape(X.shape[:-2] + (m * k, n // k))
    out = reduce(reduce(Y, axis=-1), axis=-1)
    return out[..., None, None] if keepdims else out


def _amax(x, axes, kernel=None):
    """max|x| (or max of ``kernel(x)``) per slice over ``axes``, keepdims."""
    cp = rt.cp()
    mag = cp.abs(x) if kernel is None else kernel(x)
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    if tuple(sorted(a % x.ndim for a in axes)) == (x.ndim - 2, x.ndim - 1):
        return per_matrix(cp.max, mag, keepdims=True)
    return cp.max(mag, axis=axes, keepdims=True)


def pow2_normalise(x, axes):
    """``x * 2**-e`` per slice over ``axes`` so that max|x| lies in [0.5, 1) (exact)."""
    cp = rt.cp()
    if x.dtype == np.float32:
        return _pow2_normalise_f32(x, axes)
    amax = _amax(x, axes)
    _, e = cp.frexp(amax)
    return cp.ldexp(x, -e)


# CuPy compiles its element-wise kernels with flush-to-zero for float32, so abs/max/ldexp read a
# subnormal float32 as 0: a slice whose largest entry is subnormal came out all zeros, and
# subnormal entries next to a small normal maximum were lost.  The float32 path therefore finds
# max|x| on the bit patterns (integers order like the magnitudes) and scales every subnormal
# entry from its integer significand (x = s * 2**-149), so no float arithmetic sees a subnormal
# operand.  The result is exact wherever it is a normal number; only results below 2**-126 next
# to a maximum in [0.5, 1) are flushed, a change far below float32's rounding of the output.
_F32_KERNELS: list = []


def _f32_kernels():
    if not _F32_KERNELS:
        cp = rt.cp()
        magnitude = cp.ElementwiseKernel(
            "float32 x", "int32 m", "m = __float_as_int(x) & 0x7fffffff;",
            "swanref_f32_magnitude_bits")
        scale = cp.ElementwiseKernel(
            "float32 x, int32 mb", "float32 y",
            """
            const int b = __float_as_int(x);
            const int E = mb >> 23;           // biased exponent of max|x| (0: subnormal or zero)
            if (mb == 0) {
                y = x;
            } else if ((b & 0x7f800000) != 0) {
                y = ldexpf(x, 126 - E);       // x normal (so is max|x| = 1.f * 2**(E-127))
            } else {                          // x subnormal or zero: s * 2**-149
                // max|x| normal: times 2**(126-E); max|x| subnormal with L significand bits:
                // times 2**(149-L)
                const int k = E != 0 ? -23 - E : -(32 - __clz(mb));
                const float v = ldexpf((float)(b & 0x7fffff), k);
                y = b < 0 ? -v : v;
            }
            """, "swanref_f32_pow2_normalise")
        _F32_KERNELS.extend((magnitude, scale))
    return _F32_KERNELS


def _pow2_normalise_f32(x, axes):
    magnitude, scale = _f32_kernels()
    mb = _amax(x, axes, magnitude)
    return scale(x, mb)


#: dtype -> (h, t): when max|G| >= 2**h the squares of the Frobenius norm can overflow, and G is
#: first multiplied by the exact power of two that brings max|G| to [2**(t-1), 2**t)
#: (swanref.presets.catalogue.prescale_huge, whose constants these are).
HUGE = {np.dtype(np.float32): (60, 48), np.dtype(np.float64): (500, 256)}


def huge_shift(X):
    """Per-slice int32 exponent s (shape (B,)) with X[b] * 2**-s[b] free of norm overflow."""
    cp = rt.cp()
    h, t = HUGE[np.dtype(X.dtype)]
    amax = per_matrix(cp.max, cp.abs(X))
    amax = cp.where(cp.isfinite(amax), amax, 0)
    _, e = cp.frexp(amax)
    return cp.where(e > h, e - t, 0).astype(cp.int32)


# The bfloat16-word checks of the preset path in two launches (kernels._SCAN_SOURCE) instead of
# about a dozen elementwise ops and reductions (on an H100 at 1024 x 4096: 0.34 -> 0.074 ms for
# both, tests/device/scan_probe_h100_h35.txt). The
# elementwise route below stays as the definition, the tests' oracle and the fallback: taken
# when the scan kernels fail to compile or launch (rt.state["bf16_scan_error"] says why) or
# when SWANREF_CUPY_BF16_SCAN=0 (rt.state["bf16_scan"] False).
_SCAN_WORDS_PER_BLOCK = 1 << 14  # 256 threads x 8 words x 8 loads
_SCAN_THREADS = 256


def _scan_parts(slice_: int) -> int:
    """Blocks per matrix: about 16K words each, at most 1024, and at least 1."""
    return max(1, min(1024, -(-slice_ // _SCAN_WORDS_PER_BLOCK)))


def _bf16_scan(W, batch: int, want_ok: bool):
    """(shift int32 (batch,), ok bool 0-d) of the C-contiguous words W seen as ``batch``
    matrices, by the two scan kernels; None when the scan is off or failed (then the caller
    takes the elementwise route)."""
    if not rt.state["bf16_scan"]:
        return None
    cp = rt.cp()
    slice_ = W.size // batch
    parts = _scan_parts(slice_)
    if batch * parts >= 2**31:
        return None
    vec = slice_ % 8 == 0 and W.data.ptr % 16 == 0
    h, t = HUGE[np.dtype(np.float32)]  # bfloat16 has float32's exponent range
    try:
        partial = cp.empty(batch * parts, dtype=cp.uint32)
        shift = cp.empty(batch, dtype=cp.int32)
        ok = cp.empty((), dtype=cp.bool_)
        K.kernel("bf16_amax_parts_vec" if vec else "bf16_amax_parts")(
            (batch * parts,), (_SCAN_THREADS,), (W, np.int64(slice_), np.int32(parts), partial))
        grid = 1 if want_ok else max(1, min(1024, -(-batch // 32)))
        K.kernel("bf16_shift_finish")(
            (grid,), (1024,), (partial, np.int64(batch), np.int32(parts), np.int32(h),
                               np.int32(t), shift, ok, np.int32(1 if want_ok else 0)))
    except Exception as exc:  # NVRTC or launch failure: the elementwise route from now on
        rt.state["bf16_scan"] = False
        rt.state["bf16_scan_error"] = repr(exc)
        return None
    return shift, ok


def lp_sumsq(X, fmt: str):
    """Sum of squares per matrix (float64 array (B,), the float32 sum widened) of the 16-bit
    words X (C-contiguous (B, m, n), format ``fmt``), by the scan module's two kernels; None when
    the scan is off or failed (the caller then sums through CuPy, as before)."""
    if (not rt.state["bf16_scan"] or fmt not in ("bfloat16", "float16")
            or not X.flags.c_contiguous or X.ndim != 3 or X.size == 0):
        return None
    cp = rt.cp()
    batch = X.shape[0]
    slice_ = X.size // batch
    parts = _scan_parts(slice_)
    if batch * parts >= 2**31:
        return None
    try:
        partial = cp.empty(batch * parts, dtype=cp.float32)
        out = cp.empty(batch, dtype=cp.float64)
        K.kernel("lp_sumsq_parts_" + fmt)((batch * parts,), (_SCAN_THREADS,),
                                          (X, np.int64(slice_), np.int32(parts), partial))
        K.kernel("sumsq_finish")((max(1, min(1024, -(-batch // 32))),), (1024,),
                                 (partial, np.int64(batch), np.int32(parts), out))
    except Exception as exc:  # as _bf16_scan
        rt.state["bf16_scan"] = False
        rt.state["bf16_scan_error"] = repr(exc)
        return None
    return out


def huge_shift_bfloat16(W):
    """:func:`huge_shift` of bfloat16 values held as 16-bit words (uint16, shape (B, m, n)):
    max|x| from the bit patterns (without the sign bit they order like the magnitudes)."""
    if W.flags.c_contiguous and W.ndim == 3 and W.size:
        got = _bf16_scan(W, W.shape[0], want_ok=False)
        if got is not None:
            return got[0]
    return _huge_shift_bfloat16_elementwise(W)


def _huge_shift_bfloat16_elementwise(W):
    cp = rt.cp()
    h, t = HUGE[np.dtype(np.float32)]
    bits = per_matrix(cp.max, cp.bitwise_and(W, 0x7FFF)).astype(cp.uint32)
    amax = cp.left_shift(bits, 16).view(cp.float32)
    amax = cp.where(cp.isfinite(amax), amax, 0)
    _, e = cp.frexp(amax)
    return cp.where(e > h, e - t, 0).astype(cp.int32)


def _bfloat16_nonfinite(W):
    return rt.cp().bitwise_and(W, 0x7F80) == 0x7F80  # exponent bits all ones: NaN or Inf


def bfloat16_finite_flag(W):
    """Device boolean scalar: no bfloat16 word of W (uint16) is NaN/Inf (no host sync)."""
    cp = rt.cp()
    if W.size == 0:
        return cp.asarray(True)
    if W.flags.c_contiguous:
        got = _bf16_scan(W, 1, want_ok=True)
        if got is not None:
            return got[1]
    return _bfloat16_finite_flag_elementwise(W)


def _bfloat16_finite_flag_elementwise(W):
    return ~rt.cp().any(_bfloat16_nonfinite(W))


def bfloat16_all_finite(W) -> bool:
    """:func:`bfloat16_finite_flag` read on the host (one sync), as :func:`all_finite`."""
    return bool(bfloat16_finite_flag(W))


def bfloat16_nonfinite_count(W) -> int:
    """Number of NaN/Inf bfloat16 words in W (uint16), for the error message."""
    return int(rt.cp().count_nonzero(_bfloat16_nonfinite(W)))


def finite_flag(X):
    """Device boolean scalar: X holds no NaN/Inf (its sum is finite; no host sync). A sum that
    overflows says False for finite X; the caller then runs its exact check (ops._Call.masked)."""
    cp = rt.cp()
    if X.size == 0:
        return cp.asarray(True)
    total = per_matrix(cp.sum, X) if X.ndim >= 2 else X
    return cp.isfinite(cp.sum(total))


def all_finite(X) -> bool:
    """:func:`finite_flag` read on the host (one sync)."""
    return bool(finite_flag(X))


def fro_norms(X):
    """Frobenius norms over the last two axes (float64 result; squares and sums in X's dtype,
    which is all the divergence guard needs: an overflowing square means a diverged output)."""
    cp = rt.cp()
    return cp.sqrt(per_matrix(cp.sum, cp.square(X)).astype(cp.float64))
