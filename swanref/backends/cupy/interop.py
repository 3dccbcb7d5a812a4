"""Array plumbing shared by the operators: stacks, exact power-of-two scaling, and the
one-pass checks the public call asks the backend for (finite input, Frobenius norms)."""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import kernels as K

_pow2_kernel: list = []


def stack(G):
    """C-contiguous (B, m, n) view or copy of G (B = product of the batch dimensions)."""
    cp = rt.cp()
    m, n = G.shape[-2:]
    return cp.ascontiguousarray(G).reshape((-1, m, n))


def pow2_normalise(x, axes):
    """``x * 2**-e`` per slice over ``axes`` so that max|x| lies in [0.5, 1) (exact).

    One reduction (max|x|, no |x| temporary) and one elementwise pass.
    """
    cp = rt.cp()
    if not _pow2_kernel:
        _pow2_kernel.append(cp.ElementwiseKernel(
            "T x, T amax", "T y", "int e; frexp(amax, &e); y = ldexp(x, -e);",
            "swanref_pow2_normalise"))
    amax = K.reduction("amax")(x, axis=axes, keepdims=True)
    return _pow2_kernel[0](x, amax)


#: dtype -> (h, t): when max|G| >= 2**h the squares of the Frobenius norm can overflow, and G is
#: first multiplied by the exact power of two that brings max|G| to [2**(t-1), 2**t)
#: (swanref.presets.catalogue.prescale_huge, whose constants these are).
HUGE = {np.dtype(np.float32): (60, 48), np.dtype(np.float64): (500, 256)}


def huge_shift(X):
    """Per-slice int32 exponent s (shape (B,)) with X[b] * 2**-s[b] free of norm overflow."""
    cp = rt.cp()
    h, t = HUGE[np.dtype(X.dtype)]
    amax = K.reduction("amax")(X, axis=(-2, -1))
    amax = cp.where(cp.isfinite(amax), amax, 0)
    _, e = cp.frexp(amax)
    return cp.where(e > h, e - t, 0).astype(cp.int32)


def all_finite(X) -> bool:
    """True when X holds no NaN/Inf: one reduction, no boolean temporary (host sync)."""
    if X.size == 0:
        return True
    return bool(K.reduction("all_finite")(X))


def fro_norms(X):
    """Frobenius norms over the last two axes, accumulated in float64 (shape X.shape[:-2])."""
    return K.reduction("fro64")(X, axis=(-2, -1))
