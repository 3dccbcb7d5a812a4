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
    amax = cp.max(cp.abs(x), axis=axes, keepdims=True)
    _, e = cp.frexp(amax)
    return cp.ldexp(x, -e)


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
