"""Array plumbing shared by the operators: stacks, exact power-of-two scaling, and the
one-pass checks the public call asks the backend for (finite input, Frobenius norms)."""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt


def stack(G):
    """C-contiguous (B, m, n) view or copy of G (B = product of the batch dimensions)."""
    cp = rt.cp()
    m, n = G.shape[-2:]
    return cp.ascontiguousarray(G).reshape((-1, m, n))


# Reductions use CuPy's built-in ones, which CuPy runs through CUB: a user ReductionKernel runs
# one thread block per output value, so a per-matrix reduction of a large matrix ran on a single
# SM (measured on an H100: milliseconds per pass at 4096 x 11008, docs/performance_gpu.md).

def pow2_normalise(x, axes):
    """``x * 2**-e`` per slice over ``axes`` so that max|x| lies in [0.5, 1) (exact)."""
    cp = rt.cp()
    if x.dtype == np.float32:
        return _pow2_normalise_f32(x, axes)
    amax = cp.max(cp.abs(x), axis=axes, keepdims=True)
    _, e = cp.frexp(amax)
    return cp.ldexp(x, -e)


# CuPy compiles its element-wise kernels with flush-to-zero for float32, so abs/max/ldexp read a
# subnormal float32 as 0 and a slice whose largest entry is subnormal came out all zeros.  The
# float32 path therefore finds max|x| on the bit patterns (integers order like the magnitudes) and
# scales a subnormal slice from its integer significands, never doing float arithmetic on a
# subnormal operand.  An entry that stays subnormal after the scaling (|y| < 2**-126 next to a
# maximum in [0.5, 1)) is flushed, a change far below float32's rounding of the result.
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
            int E = mb >> 23;                 // biased exponent of max|x| (0: subnormal or zero)
            if (mb == 0) {
                y = x;
            } else if (E != 0) {
                y = ldexpf(x, 126 - E);       // max|x| = 1.f * 2**(E-127) -> [0.5, 1)
            } else {                          // every entry subnormal: x = s * 2**-149
                int b = __float_as_int(x);
                float v = ldexpf((float)(b & 0x7fffff), -(32 - __clz(mb)));
                y = b < 0 ? -v : v;
            }
            """, "swanref_f32_pow2_normalise")
        _F32_KERNELS.extend((magnitude, scale))
    return _F32_KERNELS


def _pow2_normalise_f32(x, axes):
    cp = rt.cp()
    magnitude, scale = _f32_kernels()
    mb = cp.max(magnitude(x), axis=axes, keepdims=True)
    return scale(x, mb)


#: dtype -> (h, t): when max|G| >= 2**h the squares of the Frobenius norm can overflow, and G is
#: first multiplied by the exact power of two that brings max|G| to [2**(t-1), 2**t)
#: (swanref.presets.catalogue.prescale_huge, whose constants these are).
HUGE = {np.dtype(np.float32): (60, 48), np.dtype(np.float64): (500, 256)}


def huge_shift(X):
    """Per-slice int32 exponent s (shape (B,)) with X[b] * 2**-s[b] free of norm overflow."""
    cp = rt.cp()
    h, t = HUGE[np.dtype(X.dtype)]
    amax = cp.max(cp.abs(X), axis=(-2, -1))
    amax = cp.where(cp.isfinite(amax), amax, 0)
    _, e = cp.frexp(amax)
    return cp.where(e > h, e - t, 0).astype(cp.int32)


def all_finite(X) -> bool:
    """True when X holds no NaN/Inf (one host sync): its sum is finite. A sum that overflows
    says False for finite X; the caller then runs its exact check (ops._Call.masked)."""
    cp = rt.cp()
    if X.size == 0:
        return True
    return bool(cp.isfinite(cp.sum(X)))


def fro_norms(X):
    """Frobenius norms over the last two axes (float64 result; squares and sums in X's dtype,
    which is all the divergence guard needs: an overflowing square means a diverged output)."""
    cp = rt.cp()
    return cp.sqrt(cp.sum(cp.square(X), axis=(-2, -1)).astype(cp.float64))
