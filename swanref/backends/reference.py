"""The NumPy reference backend: the executable form of docs/spec.md.

Written for clarity and float64 accuracy, not speed.  Every function follows the backend
protocol of docs/backends.md: finite float32/float64 input of shape (*batch, m, n), any
strides, a new array of the same dtype and shape out, input never modified, and for the
whitening functions ``m <= n``.  Section numbers refer to docs/spec.md.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from swanref.spec.scaling import pow2_exponent, pow2_normalise
from swanref.spec.validate import iteration_count

name = "reference"
#: grad_norm and sinkgd give a non-finite result for non-finite input (the finite check may run
#: on their output: spec 6.4)
NONFINITE_PROPAGATES = True


def available() -> bool:
    return True


# -- 2. GradNorm --------------------------------------------------------------------------

def grad_norm(G: np.ndarray, eps: float) -> np.ndarray:
    """Row standardisation over the last axis (spec 2.1).

    Each row is first scaled by an exact power of two (no overflow of squares) and shifted by
    its first entry (an exactly constant row becomes exactly zero), then rescaled again so
    that its largest deviation lies in [0.5, 1); standardisation is invariant under all three.
    """
    dtype = G.dtype
    e1 = pow2_exponent(np.max(np.abs(G), axis=-1, keepdims=True))
    y = np.ldexp(G, -e1)
    d = y - y[..., :1]
    e2 = pow2_exponent(np.max(np.abs(d), axis=-1, keepdims=True))
    d = np.ldexp(d, -e2)
    centred = d - d.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    if eps:
        # eps is added to the variance of the *original* row: var_orig = var * 4**(e1 + e2).
        with np.errstate(over="ignore"):
            eps_scaled = np.ldexp(np.asarray(eps, dtype=dtype), -2 * (e1 + e2))
        std = np.sqrt(var + eps_scaled)
    else:
        std = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        # `std == 0`, not `not std > 0`: a NaN std (non-finite input) stays NaN (spec 6.4)
        zero = std == 0
        out = np.where(zero, 0, centred / np.where(zero, 1, std))
    return out.astype(dtype, copy=False)


# -- 3.1 / 3.2 Exact whitening -------------------------------------------------------------

def _svd(G: np.ndarray):
    try:
        return np.linalg.svd(G, full_matrices=False)
    except np.linalg.LinAlgError:
        # gesdd failed to converge on some slice: redo every slice with the QR-iteration driver.
        flat = G.reshape((-1,) + G.shape[-2:])
        parts = [scipy.linalg.svd(g, full_matrices=False, lapack_driver="gesvd") for g in flat]
        U, s, Vt = (np.stack(p) for p in zip(*parts))
        return (U.reshape(G.shape[:-1] + (s.shape[-1],)), s.reshape(G.shape[:-2] + s.shape[-1:]),
                Vt.reshape(G.shape[:-2] + Vt.shape[-2:]))


def whiten_svd(G: np.ndarray, sigma_rtol: float) -> np.ndarray:
    """``U_r V_r^T`` from the thin SVD, keeping ``s_i > sigma_rtol * s_1`` (spec 3.1).

    The SVD runs on ``G`` scaled by an exact power of two (max|G| in [0.5, 1)), as in the C++
    core: LAPACK's 2-norms overflow to Inf for s_1 near the float maximum (all-zero output).
    """
    U, s, Vt = _svd(_pow2n(G, axes=(-2, -1)))
    keep = s > sigma_rtol * s[..., :1]
    return ((U * keep[..., None, :]) @ Vt).astype(G.dtype, copy=False)


def _h(X: np.ndarray) -> np.ndarray:
    """Conjugate transpose of the matrices (the transpose for real input; spec 9.7)."""
    Xt = np.swapaxes(X, -1, -2)
    return Xt.conj() if np.iscomplexobj(Xt) else Xt


def _abs2(X: np.ndarray) -> np.ndarray:
    return (X * X.conj()).real if np.iscomplexobj(X) else X * X


def _pow2n(x: np.ndarray, axes) -> np.ndarray:
    """pow2_normalise, complex input included (an exact power-of-two factor on both parts)."""
    if not np.iscomplexobj(x):
        return pow2_normalise(x, axes)
    amax = np.max(np.abs(x), axis=axes, keepdims=True)
    e = -pow2_exponent(amax)
    # each part scaled on its own: the factor 2**e itself overflows for subnormal input
    out = np.empty_like(x)
    out.real, out.imag = np.ldexp(x.real, e), np.ldexp(x.imag, e)
    return out


def _gram(Gs: np.ndarray) -> np.ndarray:
    return Gs @ _h(Gs)


def whiten_eigh(G: np.ndarray, lambda_rtol: float) -> np.ndarray:
    """``Q_r diag(l_r)^(-1/2) Q_r^T G`` from the eigendecomposition of ``G G^T`` (spec 3.2)."""
    Gs = _pow2n(G, axes=(-2, -1))
    lam, Q = np.linalg.eigh(_gram(Gs))
    keep = lam > lambda_rtol * lam[..., -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1)), 0)
    P = (Q * inv_sqrt[..., None, :]) @ _h(Q)
    return (P @ Gs).astype(G.dtype, copy=False)


# -- 3.3 / 3.4 Iterative whitening ---------------------------------------------------------

def _scaled_gram(G: np.ndarray, scaling: str):
    """``(Gs, A, c)`` of spec 3.3: pre-scaled gradient, its Gram matrix, scaling constant."""
    Gs = G if scaling == "none" else _pow2n(G, axes=(-2, -1))
    A = _gram(Gs)
    if scaling == "gram_fro":
        c = np.sqrt(np.sum(_abs2(A), axis=(-2, -1)))
    elif scaling == "grad_fro":
        c = np.sum(_abs2(Gs), axis=(-2, -1))
    elif scaling == "none":
        c = np.ones(G.shape[:-2], dtype=G.real.dtype)
    else:
        raise ValueError(f"unknown scaling {scaling!r}")
    c = np.where(c > 0, c, 1).astype(G.dtype)  # zero matrix: A = 0, output 0 whatever c is
    return Gs, A, c[..., None, None]


def whiten_newton_schulz(G: np.ndarray, steps: int, beta: float, scaling: str) -> np.ndarray:
    """The coupled Newton-Schulz iteration for ``A^(-1/2)`` applied to ``G`` (spec 3.3)."""
    steps = iteration_count(steps, "steps")  # bounded: the loop below is Python, Ctrl-C works
    dtype = G.dtype
    Gs, A, c = _scaled_gram(G, scaling)
    m = G.shape[-2]
    eye = np.eye(m, dtype=dtype)
    Y = A / c
    Z = np.broadcast_to(eye, Y.shape).copy()
    b = dtype.type(beta)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            T = 3 * eye - Z @ Y
            Y, Z = b * (Y @ T), b * (T @ Z)
        return (Z @ Gs / np.sqrt(c)).astype(dtype, copy=False)


def whiten_nsds(G: np.ndarray, steps: int, beta: float, scaling: str) -> np.ndarray:
    """Newton-Schulz with diagonal substitution (reconstructed; spec 3.4)."""
    steps = iteration_count(steps, "steps")
    dtype = G.dtype
    Gs, A, c = _scaled_gram(G, scaling)
    y = np.diagonal(A, axis1=-2, axis2=-1) / c[..., 0]
    z = np.ones_like(y)
    b = dtype.type(beta)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            t = 3 - z * y
            y, z = b * y * t, b * t * z
        return (z[..., :, None] * Gs / np.sqrt(c)).astype(dtype, copy=False)


# -- 5. SinkGD --------------------------------------------------------------------------------

def _normalise_lines(X: np.ndarray, axis: int, target: float) -> np.ndarray:
    """Scale every line along ``axis`` to l2 norm ``target``; zero lines stay zero."""
    Xs = pow2_normalise(X, axes=axis)  # per-line exact rescale: squares cannot under/overflow
    norm = np.sqrt(np.sum(Xs * Xs, axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = norm == 0  # a NaN norm (non-finite input) stays NaN (spec 6.4)
        return np.where(zero, 0, Xs * (target / np.where(zero, 1, norm))).astype(X.dtype)


def sinkgd(G: np.ndarray, iters: int) -> np.ndarray:
    """SR-Sinkhorn: ``iters`` alternating row/column l2 normalisations (spec 5)."""
    iters = iteration_count(iters, "iters")
    m, n = G.shape[-2:]
    X = np.array(G, copy=True)
    for _ in range(iters):
        X = _normalise_lines(X, -1, np.sqrt(n))
        X = _normalise_lines(X, -2, np.sqrt(m))
    return X
