"""Exact power-of-two rescalings used to keep norms and Gram matrices in range.

Multiplying by 2**k is exact in binary floating point (away from the subnormal range), so
these rescalings change no digit of a scale-invariant result; they only prevent overflow of
``G G^T`` for huge gradients and underflow of squared norms for tiny ones (spec section 6.3).
"""
from __future__ import annotations

import numpy as np


def pow2_exponent(amax: np.ndarray) -> np.ndarray:
    """Integer ``e`` with ``amax = f * 2**e``, ``0.5 <= f < 1`` (``e = 0`` for ``amax = 0``)."""
    _, e = np.frexp(amax)
    return e


def pow2_normalise(x: np.ndarray, axes) -> np.ndarray:
    """``x * 2**-e`` with ``e`` chosen per slice over ``axes`` so that max|x| lies in [0.5, 1)."""
    amax = np.max(np.abs(x), axis=axes, keepdims=True)
    return np.ldexp(x, -pow2_exponent(amax))
