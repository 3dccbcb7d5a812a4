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


# Reductions use CuPy's built-in ones, which CuPy runs through CUB: a user ReductionKernel runs
# one thread block per output value, so a per-matrix reduction of a large matrix ran on a single
# SM (measured on an H100: milliseconds per pass at 4096 x 11008, docs/performance_gpu.md).

# CuPy compiles its own kernels (ufuncs such as cp.abs, cp.frexp, cp.ldexp, and every
# ElementwiseKernel/ReductionKernel) with -ftz=true: they flush float32 subnormals to zero
# (cupy/cupy#8382). The exact power-of-two normalisation must see them, so it takes max |x| on
# the bit patterns (integer operations) and scales in kernels.py's pow2_scale, compiled
# without -ftz.

_UINT_MASK = {4: (np.int32, 0x7FFFFFFF), 8: (np.int64, 0x7FFFFFFFFFFFFFFF)}


def max_abs(x, axes):
    """max |x| over ``axes`` (keepdims), exact for float32 subnormals: the maximum of the
    sign-cleared bit patterns, whose integer order is the order of the magnitudes."""
    cp = rt.cp()
    x = cp.ascontiguousarray(x)
    itype, mask = _UINT_MASK[x.dtype.itemsize]
    bits = cp.bitwise_and(x.view(itype), itype(mask))
    return cp.max(bits, axis=axes, keepdims=True).view(x.dtype)


def _axes_block(ndim: int, axes) -> tuple | None:
    axes = sorted({a % ndim for a in ((axes,) if isinstance(axes, int) else axes)})
    return (axes[0], axes[-1]) if axes == list(range(axes[0], axes[-1] + 1)) else None


def pow2_normalise(x, axes):
    """``x * 2**-e`` per slice over ``axes`` so that max|x| lies in [0.5, 1) (exact, float32
    subnormals included); a C-contiguous result."""
    cp = rt.cp()
    x = cp.ascontiguousarray(x)
    block = _axes_block(x.ndim, axes)
    if x.size == 0 or block is None:  # (no caller reduces over axes that are not adjacent)
        amax = cp.max(cp.abs(x), axis=axes, keepdims=True)
        _, e = cp.frexp(amax)
        return cp.ldexp(x, -e)
    amax = cp.ascontiguousarray(max_abs(x, axes))
    lo, hi = block
    q = int(np.prod(x.shape[hi + 1:], dtype=np.int64))
    rq = int(np.prod(x.shape[lo:], dtype=np.int64))
    y = cp.empty_like(x)
    grid, threads = K.grid_1d(x.size)
    K.kernel("pow2_scale", x.dtype)(grid, threads, (x, y, np.int64(x.size), np.int64(rq),
                                                   np.int64(q), amax))
    return y


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
