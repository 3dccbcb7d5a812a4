"""Deterministic generators of gradients with a prescribed singular spectrum.

Random Gaussian matrices are almost always well conditioned, so tests and golden vectors
build ``G = U diag(s) V^T`` from Haar-random orthogonal factors and a chosen spectrum.
Shared by the hypothesis strategies, the report and the golden vectors.
"""
from __future__ import annotations

import numpy as np


def haar_orthogonal(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """An m x k matrix with orthonormal columns, Haar distributed (QR with sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((m, k)))
    return Q * np.sign(np.where(np.diag(R) == 0, 1, np.diag(R)))


def spectrum(kappa: float, r: int, kind: str = "geometric") -> np.ndarray:
    """``r`` singular values from 1 down to ``1/kappa`` (descending)."""
    if r == 1:
        return np.ones(1)
    if kind == "geometric":
        return np.logspace(0, -np.log10(kappa), r)
    if kind == "linear":
        return np.linspace(1, 1 / kappa, r)
    if kind == "cluster":  # all at 1 except one at 1/kappa: hardest for the rank-1 gap
        s = np.ones(r)
        s[-1] = 1 / kappa
        return s
    raise ValueError(f"unknown spectrum kind {kind!r}")


def with_spectrum(rng: np.random.Generator, m: int, n: int, s, scale: float = 1.0,
                  dtype=np.float64) -> np.ndarray:
    """``scale * U diag(s) V^T`` (m x n) with ``len(s) <= min(m, n)`` nonzero singular values."""
    s = np.asarray(s, dtype=np.float64)
    r = len(s)
    U = haar_orthogonal(rng, m, r)
    V = haar_orthogonal(rng, n, r)
    return ((U * (scale * s)) @ V.T).astype(dtype)


def conditioned(rng, m, n, kappa, *, rank=None, scale=1.0, kind="geometric", dtype=np.float64):
    """A gradient with condition number ``kappa`` over its ``rank`` nonzero singular values."""
    r = min(m, n) if rank is None else rank
    return with_spectrum(rng, m, n, spectrum(kappa, r, kind), scale, dtype)
