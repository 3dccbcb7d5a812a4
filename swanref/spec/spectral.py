"""Spectral predictions: what each whitening method does to each singular value (spec 3.6).

Every iterate of the coupled Newton-Schulz iteration is a polynomial in A = G G^T, so in exact
arithmetic its output is ``U diag(phi(s)) V^T`` where ``G = U diag(s) V^T`` and ``phi`` is a
scalar map computed here.  The spec judges iterative methods against this prediction (the
method's own exact result), and separately reports how far the prediction is from ``U V^T``.
"""
from __future__ import annotations

import numpy as np


def scaling_constant(s: np.ndarray, scaling: str) -> np.ndarray:
    """The constant ``c`` of spec 3.3 from the singular values ``s`` (last axis) of G."""
    s = np.asarray(s, dtype=np.float64)
    if scaling == "gram_fro":
        c = np.sqrt(np.sum(s ** 4, axis=-1))
    elif scaling == "grad_fro":
        c = np.sum(s ** 2, axis=-1)
    elif scaling == "none":
        c = np.ones(s.shape[:-1])
    else:
        raise ValueError(f"unknown scaling {scaling!r}")
    return np.where(c > 0, c, 1.0)


def ns_scalar_map(lam, steps: int, beta: float) -> np.ndarray:
    """``sqrt(p_K)`` where ``p = lam * z^2`` follows the coupled iteration from z0 = 1.

    ``lam`` are eigenvalues of the scaled Gram matrix ``A / c``; the output singular value of
    the coupled iteration is ``z_K * sqrt(lam)``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    y, z = lam.copy(), np.ones_like(lam)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            t = 3.0 - z * y
            y, z = beta * y * t, beta * t * z
        return z * np.sqrt(lam)


def newton_schulz_singular_values(s, steps: int, beta: float, scaling: str) -> np.ndarray:
    """Predicted output singular values of ``whiten(G, 'newton_schulz', ...)``."""
    s = np.asarray(s, dtype=np.float64)
    c = scaling_constant(s, scaling)[..., None]
    return ns_scalar_map(s ** 2 / c, steps, beta)


def predicted_newton_schulz(G, steps: int, beta: float, scaling: str) -> np.ndarray:
    """``U diag(phi(s)) V^T`` in float64: the exact-arithmetic output of the coupled iteration."""
    G = np.asarray(G, dtype=np.float64)
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    phi = newton_schulz_singular_values(s, steps, beta, scaling)
    return (U * phi[..., None, :]) @ Vt


def steps_to_converge(kappa_scaled: float, beta: float = 0.5, tol: float = 1e-12,
                      max_steps: int = 200) -> int:
    """Smallest K with ``|phi_K - 1| <= tol`` for a scaled eigenvalue ``1/kappa_scaled**2``.

    ``kappa_scaled = sqrt(c) / s_min``: the distance of the smallest singular value from the
    scaled spectrum's top.  Returns ``max_steps + 1`` if it does not converge.
    """
    lam = np.array([1.0 / kappa_scaled ** 2])
    for k in range(max_steps + 1):
        if abs(ns_scalar_map(lam, k, beta)[0] - 1.0) <= tol:
            return k
    return max_steps + 1
