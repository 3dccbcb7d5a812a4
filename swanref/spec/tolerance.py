"""The tolerance model of spec section 8: how a result is judged correct.

Every bound is ``constant * (size factor) * (conditioning factor) * u`` with ``u`` the unit
roundoff of the compute dtype, plus the rounding of the output to a narrower input dtype.
The constants were fitted on mpmath references (tests/test_tolerance_model.py re-measures
them) and carry a safety factor of about 8 over the worst case observed.
"""
from __future__ import annotations

import numpy as np

from swanref.spec import spectral
from swanref.spec.validate import compute_dtype

#: fitted constants (spec 8.2)
C_GRAD_NORM = 4.0
C_SVD = 8.0
C_EIGH = 8.0
C_NEWTON_SCHULZ = 16.0
C_NEWTON_SCHULZ_FEEDBACK = 1.0
C_SINKGD = 8.0
#: above this predicted error the iterative tolerance model makes no claim (spec 8.3)
TRUSTED_LIMIT = 1e-2


def unit_roundoff(dtype) -> float:
    """``u = eps/2`` of the dtype the computation runs in (float32 for float16/bfloat16)."""
    return float(np.finfo(compute_dtype(np.dtype(dtype))).eps) / 2


def output_roundoff(dtype) -> float:
    """Relative rounding of storing a result in ``dtype`` (0 when it is the compute dtype)."""
    dtype = np.dtype(dtype)
    if compute_dtype(dtype) == dtype:
        return 0.0
    if dtype.name == "bfloat16":
        return 2.0 ** -8
    return float(np.finfo(dtype).eps) / 2


def condition_number(G, rank_rtol: float | None = None) -> np.ndarray:
    """``s_1 / s_r`` over the numerically nonzero singular values (per slice; 1 for zero G)."""
    s = np.linalg.svd(np.asarray(G, dtype=np.float64), compute_uv=False)
    m, n = np.shape(G)[-2:]
    rtol = max(m, n) * np.finfo(np.float64).eps if rank_rtol is None else rank_rtol
    keep = s > rtol * s[..., :1]
    smin = np.min(np.where(keep, s, np.inf), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(np.isfinite(smin) & (smin > 0), s[..., 0] / smin, 1.0)
    return kappa


def grad_norm_tolerance(n: int, dtype, offset_ratio=0.0):
    """Elementwise bound: ``|out - exact| <= tol * (1 + |exact|)`` (spec 8.1).

    ``offset_ratio`` is ``|mean| / std`` of the line: the textbook two-pass algorithm (mean,
    subtract, mean of squares) rounds the mean with an absolute error up to about
    ``(2 + sqrt(n)) u |mean|``, a shift that every output of the line carries divided by the
    std.  ``0`` gives the offset-free bound of swanref's shifted algorithm (spec 2.5); the
    checker's required properties use the line's ratio, its advisory ``offset_robustness``
    the offset-free bound.  Broadcasts over an array of ratios.
    """
    r = np.asarray(offset_ratio, dtype=np.float64)
    tol = C_GRAD_NORM * (2 + np.sqrt(n)) * unit_roundoff(dtype) * (1 + r) + output_roundoff(dtype)
    return float(tol) if tol.ndim == 0 else tol


def exact_whitening_tolerance(m: int, n: int, kappa, dtype, method: str = "svd"):
    """Bound on ``||X - U_r V_r^T||_F / sqrt(r)`` for the exact methods (spec 8.2).

    svd: ``8 max(m,n) kappa u``; eigh: ``8 max(m,n) kappa^2 u``.  Capped at 2 (the largest
    possible distance between two partial isometries of the same rank, per sqrt(r)).
    """
    u = unit_roundoff(dtype)
    kappa = np.asarray(kappa, dtype=np.float64)
    if method == "svd":
        tol = C_SVD * max(m, n) * kappa * u
    elif method == "eigh":
        tol = C_EIGH * max(m, n) * kappa ** 2 * u
    else:
        raise ValueError(f"no exact tolerance for method {method!r}")
    return np.minimum(tol + output_roundoff(dtype), 2.0)


def newton_schulz_tolerance(s, m: int, n: int, steps: int, beta: float, scaling: str, dtype):
    """Bound on ``||X - U phi(S) V^T||_F / sqrt(m)`` for the coupled iteration (spec 8.3).

    ``16 (K+1) sqrt(max(m,n)) u z_max + u z_max^2`` where ``z_max`` is the largest scalar
    multiplier ``z_K`` of the iteration over the scaled eigenvalues, each floored at ``m u``
    (rounding puts noise of that size into null directions, which the iteration amplifies by
    up to (3 beta)^K).  The first term is accumulated rounding, with the probabilistic size
    factor ``sqrt(max(m, n))`` of an inner product's rounding error (Higham & Mary 2019; the
    ``sqrt(n)`` of 8.1) in place of the worst case ``max(m, n)`` (spec 0.3); the second is
    feedback: a rounding
    error of relative size u in the product Z Y (Z up to z_max) is carried into the next Z by
    another factor z_max, and dominates once z_max is large (high kappa, many steps).
    Defined for beta = 1/2 (the convergent reading); returns ``inf`` otherwise, and a value
    above TRUSTED_LIMIT means the model makes no claim (the divergence guard's domain).
    """
    if beta != 0.5:
        return np.inf
    u = unit_roundoff(dtype)
    s = np.asarray(s, dtype=np.float64)
    pad = m - s.shape[-1]
    if pad > 0:
        s = np.concatenate([s, np.zeros(s.shape[:-1] + (pad,))], axis=-1)
    c = spectral.scaling_constant(s, scaling)[..., None]
    lam = np.maximum(s ** 2 / c, m * u)
    z = spectral.ns_scalar_map(lam, steps, beta) / np.sqrt(lam)
    zmax = np.max(z, axis=-1)
    tol = (C_NEWTON_SCHULZ * (steps + 1) * np.sqrt(max(m, n)) * u * zmax
           + C_NEWTON_SCHULZ_FEEDBACK * u * zmax ** 2)
    return tol + output_roundoff(dtype)


def sinkgd_tolerance(m: int, n: int, iters: int, dtype) -> float:
    """Elementwise ``|X - exact| <= tol (1 + |exact|)`` for SR-Sinkhorn (spec 8.5).

    Each of the ``2 iters`` line normalisations has relative error at most about
    ``(2 + sqrt(len)) u``: ``8 * 2 iters (2 + sqrt(max(m, n))) u``, the form and safety factor
    of the GradNorm bound (8.1).
    """
    u = unit_roundoff(dtype)
    return C_SINKGD * 2 * iters * (2 + np.sqrt(max(m, n))) * u + output_roundoff(dtype)
