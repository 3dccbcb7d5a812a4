"""Third-party-style implementations of the SWAN operators, correct and deliberately wrong.

Each is written the way someone outside swanref would write it (plain NumPy/SciPy, no swanref
imports), so the meta-tests in test_checker.py prove that ``swanref check`` accepts correct
implementations it did not write and rejects plausible mistakes, naming the broken property.
Batched input is handled by looping over leading axes where an implementation supports it.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def _batched(fn):
    """Apply a 2-D function slice by slice over leading axes."""
    def wrapper(G):
        G = np.asarray(G)
        if G.ndim == 2:
            return fn(G)
        flat = G.reshape((-1,) + G.shape[-2:])
        out = np.stack([fn(g) for g in flat])
        return out.reshape(G.shape[:-2] + out.shape[-2:])
    wrapper.__name__ = fn.__name__
    return wrapper


def _only_2d(fn):
    def wrapper(G):
        if np.ndim(G) != 2:
            raise ValueError("only 2-D gradients are supported")
        return fn(G)
    wrapper.__name__ = fn.__name__
    return wrapper


# == GradNorm ======================================================================================

@_batched
def grad_norm_numpy(G):
    """Correct: shift by the first entry (exact for constant rows), population std."""
    dt = G.dtype
    x = G.astype(np.float64 if dt == np.float64 else np.float32)
    d = x - x[:, :1]
    c = d - d.mean(axis=1, keepdims=True)
    sd = np.sqrt((c * c).mean(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sd > 0, c / np.where(sd > 0, sd, 1), 0)
    return out.astype(dt)


def grad_norm_naive_batched(G):
    """Correct for moderate offsets: textbook two-pass mean/std over the last axis, any batch.

    Loses accuracy when |mean| >> std (advisory property offset_robustness), exactly constant
    rows handled by comparing with the row's first entry.
    """
    G = np.asarray(G)
    mu = G.mean(axis=-1, keepdims=True)
    c = G - mu
    sd = np.sqrt((c * c).mean(axis=-1, keepdims=True))
    const = np.all(G == G[..., :1], axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(const, 0, c / np.where(const, 1, sd)).astype(G.dtype)


@_batched
def grad_norm_ddof1(G):
    """Wrong: sample std (ddof=1, torch.std's default)."""
    d = G - G[:, :1]
    c = d - d.mean(axis=1, keepdims=True)
    sd = c.std(axis=1, ddof=1, keepdims=True) if G.shape[1] > 1 else np.zeros((G.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, c / np.where(sd > 0, sd, 1), 0).astype(G.dtype)


@_batched
def grad_norm_wrong_axis(G):
    """Wrong: standardises columns (over m) instead of rows."""
    return grad_norm_numpy(G.T).T


@_batched
def grad_norm_rms(G):
    """Wrong: RMS normalisation, no mean subtraction."""
    rms = np.sqrt((G * G).mean(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rms > 0, G / np.where(rms > 0, rms, 1), 0).astype(G.dtype)


@_batched
def grad_norm_eps(G):
    """Wrong (for the eps=0 reading): 1e-8 added to the std, as many optimizers do."""
    d = G - G[:, :1]
    c = d - d.mean(axis=1, keepdims=True)
    sd = np.sqrt((c * c).mean(axis=1, keepdims=True))
    return (c / (sd + 1e-8)).astype(G.dtype)


@_batched
def grad_norm_nan_constant(G):
    """Wrong: no guard, a constant row gives 0/0 = NaN."""
    d = G - G[:, :1]
    c = d - d.mean(axis=1, keepdims=True)
    sd = np.sqrt((c * c).mean(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c / sd).astype(G.dtype)


def grad_norm_float64_out(G):
    """Wrong: correct values but always returns float64."""
    return grad_norm_numpy(np.asarray(G, dtype=np.float64))


def grad_norm_inplace(G):
    """Wrong: writes the result into its input."""
    out = grad_norm_numpy(G)
    G[...] = out
    return G


# == exact whitening ===============================================================================

def _polar_wide(G):
    """scipy.linalg.polar wrapped to the convention: left factor for wide, right for tall."""
    U, _ = scipy.linalg.polar(G.astype(np.float64), side="right")
    return U


@_batched
def whiten_scipy_polar(G):
    """Correct: scipy.linalg.polar (G = U P, U the polar factor), restricted to range(G).

    scipy completes U to a full isometry on rank-deficient input; the spec's whitening is the
    partial isometry U_r V_r^T, so the wrapper projects onto the numerical range of G.
    """
    dt = G.dtype
    U = _polar_wide(G)
    W, s, Vt = np.linalg.svd(G.astype(np.float64), full_matrices=False)
    tol = max(G.shape) * np.finfo(dt).eps * (s[0] if s.size else 0)
    r = int(np.sum(s > tol)) if s.size and s[0] > 0 else 0
    if r < min(G.shape):
        P = W[:, :r] @ W[:, :r].T          # projector onto range(G)
        U = P @ U
    return U.astype(dt)


@_batched
def whiten_scipy_polar_raw(G):
    """Wrong for rank-deficient input: scipy.linalg.polar as is (completes the null space)."""
    return _polar_wide(G).astype(G.dtype)


@_batched
def whiten_full_svd_completion(G):
    """Wrong: U @ Vt of the thin SVD without dropping zero singular values."""
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    return (U @ Vt).astype(G.dtype)


@_batched
def whiten_frobenius(G):
    """Wrong: G / ||G||_F instead of the polar factor."""
    n = np.linalg.norm(G)
    return (G / n if n > 0 else G).astype(G.dtype)


@_batched
def whiten_eigh(G):
    """An eigh-of-the-Gram route: correct for the 'eigh' claim, wrong for the 'svd' claim."""
    dt = G.dtype
    tall = G.shape[0] > G.shape[1]
    X = G.T if tall else G
    s = np.max(np.abs(X))
    if s == 0:
        return np.zeros_like(G)
    X = X / s
    lam, Q = np.linalg.eigh(X @ X.T)
    keep = lam > max(X.shape) * np.finfo(dt).eps * lam[-1]
    inv = np.where(keep, 1 / np.sqrt(np.where(keep, lam, 1)), 0)
    out = (Q * inv) @ Q.T @ X
    return (out.T if tall else out).astype(dt)


@_batched
def whiten_no_transpose(G):
    """Wrong: (G G^T)^(-1/2) G even for tall G (the Gram matrix is singular there)."""
    s = np.max(np.abs(G))
    if s == 0:
        return np.zeros_like(G)
    X = G / s
    lam, Q = np.linalg.eigh(X @ X.T)
    lam = np.maximum(lam, np.finfo(G.dtype).tiny)
    return ((Q / np.sqrt(lam)) @ Q.T @ X).astype(G.dtype)


def whiten_polar_2d_only(G):
    """Correct on 2-D input, refuses batches (batched reported as unsupported)."""
    return _only_2d(whiten_scipy_polar)(G)


# == Newton-Schulz ================================================================================

def _ns(G, steps=10, beta=0.5, prescale=True, swap=False, transpose_back=True,
        output_scale=True):
    dt = G.dtype
    tall = G.shape[0] > G.shape[1]
    X = G.T if tall else G
    A = X @ X.T
    c = np.linalg.norm(A) if prescale else 1.0
    if c == 0:
        return np.zeros_like(G)
    I = np.eye(A.shape[0], dtype=dt)
    Y = A / c
    Z = I.copy()
    for _ in range(steps):
        T = 3 * I - Z @ Y
        if swap:                     # Y updated first, then reused for Z's factor
            Y = beta * Y @ T
            Z = beta * (3 * I - Z @ Y) @ Z
        else:
            Y, Z = beta * Y @ T, beta * T @ Z
    out = Z @ X / (np.sqrt(c) if output_scale else 1.0)
    if tall and transpose_back:
        out = out.T
    return out.astype(dt)


@_batched
def ns_numpy(G):
    """Correct: coupled Newton-Schulz, Y0 = A/||A||_F, beta 1/2, 10 steps (the default)."""
    return _ns(G)


@_batched
def ns_beta08(G):
    """Wrong for the beta=0.5 claim: beta 0.8 (a third-party default)."""
    return _ns(G, beta=0.8)


@_batched
def ns_no_prescale(G):
    """Wrong: no pre-scaling of the Gram matrix (Y0 = G G^T)."""
    with np.errstate(all="ignore"):
        return _ns(G, prescale=False)


@_batched
def ns_no_output_scale(G):
    """Wrong: forgets the 1/sqrt(||A||_F) on the output."""
    return _ns(G, output_scale=False)


@_batched
def ns_swapped_order(G):
    """Wrong: Z's factor recomputed with the already-updated Y."""
    return _ns(G, swap=True)


@_batched
def ns_no_transpose_back(G):
    """Wrong: whitens tall G as its transpose but returns the (n, m) result."""
    return _ns(G, transpose_back=False)


# == SWAN update ==================================================================================

@_batched
def swan_numpy(G):
    """Correct: GradNorm (rows) -> exact polar factor (SVD) -> rescale to RMS 1."""
    g = grad_norm_numpy(G).astype(np.float64)
    U, s, Vt = np.linalg.svd(g, full_matrices=False)
    keep = s > max(g.shape) * np.finfo(G.dtype).eps * (s[0] if s[0] > 0 else 1)
    D = (U * keep) @ Vt
    f = np.linalg.norm(D)
    D = D * (np.sqrt(g.size) / f) if f > 0 else D
    return D.astype(G.dtype)


@_batched
def swan_ns_numpy(G):
    """Correct for the newton_schulz claim (10 steps, beta 1/2, gram_fro), rescaled."""
    g = grad_norm_numpy(G).astype(np.float64)
    D = _ns(g)
    f = np.linalg.norm(D)
    return (D * (np.sqrt(g.size) / f) if f > 0 else D).astype(G.dtype)


@_batched
def swan_no_rescale(G):
    """Wrong (for the rescale reading): returns the polar factor without the sqrt(mn) rescale."""
    g = grad_norm_numpy(G).astype(np.float64)
    U, s, Vt = np.linalg.svd(g, full_matrices=False)
    keep = s > max(g.shape) * np.finfo(G.dtype).eps * (s[0] if s[0] > 0 else 1)
    return ((U * keep) @ Vt).astype(G.dtype)


@_batched
def swan_no_gradnorm(G):
    """Wrong: whitens the raw gradient (GradNorm skipped)."""
    U, s, Vt = np.linalg.svd(G.astype(np.float64), full_matrices=False)
    keep = s > max(G.shape) * np.finfo(G.dtype).eps * (s[0] if s[0] > 0 else 1)
    D = (U * keep) @ Vt
    f = np.linalg.norm(D)
    return (D * (np.sqrt(G.size) / f) if f > 0 else D).astype(G.dtype)


@_batched
def swan_rms_gradnorm(G):
    """Wrong: RMS normalisation instead of GradNorm before whitening."""
    g = grad_norm_rms(G).astype(np.float64)
    U, s, Vt = np.linalg.svd(g, full_matrices=False)
    keep = s > max(g.shape) * np.finfo(G.dtype).eps * (s[0] if s[0] > 0 else 1)
    D = (U * keep) @ Vt
    f = np.linalg.norm(D)
    return (D * (np.sqrt(g.size) / f) if f > 0 else D).astype(G.dtype)


# == SinkGD =======================================================================================

def _normalise(X, axis, target):
    n = np.sqrt(np.sum(X * X, axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, X * (target / np.where(n > 0, n, 1)), 0)


def sinkgd_numpy(G, iters=5):
    """Correct: rows to sqrt(n), then columns to sqrt(m), 5 times (any batch shape)."""
    G = np.asarray(G)
    m, n = G.shape[-2:]
    X = G.astype(np.float64)
    s = np.max(np.abs(X), axis=(-2, -1), keepdims=True)
    X = X / np.where(s > 0, s, 1)
    for _ in range(iters):
        X = _normalise(X, -1, np.sqrt(n))
        X = _normalise(X, -2, np.sqrt(m))
    return X.astype(G.dtype)


def sinkgd_columns_first(G, iters=5):
    """Wrong: normalises columns first, rows last."""
    G = np.asarray(G)
    m, n = G.shape[-2:]
    X = G.astype(np.float64)
    for _ in range(iters):
        X = _normalise(X, -2, np.sqrt(m))
        X = _normalise(X, -1, np.sqrt(n))
    return X.astype(G.dtype)


def sinkgd_one_iter(G):
    """Wrong for the iters=5 claim: a single iteration."""
    return sinkgd_numpy(G, iters=1)


def sinkgd_unit_norms(G, iters=5):
    """Wrong: normalises lines to unit norm (no sqrt(n), sqrt(m) targets)."""
    G = np.asarray(G)
    X = G.astype(np.float64)
    for _ in range(iters):
        X = _normalise(X, -1, 1.0)
        X = _normalise(X, -2, 1.0)
    return X.astype(G.dtype)


def sinkgd_eps(G, iters=5):
    """Wrong: clamps norms at 1e-8 (tiny gradients are not normalised)."""
    G = np.asarray(G)
    m, n = G.shape[-2:]
    X = G.astype(np.float64)
    for _ in range(iters):
        X = X * (np.sqrt(n) / np.maximum(np.sqrt(np.sum(X * X, -1, keepdims=True)), 1e-8))
        X = X * (np.sqrt(m) / np.maximum(np.sqrt(np.sum(X * X, -2, keepdims=True)), 1e-8))
    return X.astype(G.dtype)


# == more ways to get it wrong ======================================================================

@_batched
def grad_norm_global(G):
    """Wrong: one mean/std over the whole matrix instead of per row."""
    c = G - G.mean()
    sd = np.sqrt((c * c).mean())
    return (c / sd if sd > 0 else np.zeros_like(G)).astype(G.dtype)


@_batched
def whiten_eps_regularised(G):
    """Wrong: (G G^T + 1e-6 I)^(-1/2) G, a damped inverse square root (not scale invariant)."""
    tall = G.shape[0] > G.shape[1]
    X = (G.T if tall else G).astype(np.float64)
    lam, Q = np.linalg.eigh(X @ X.T + 1e-6 * np.eye(X.shape[0]))
    out = (Q / np.sqrt(lam)) @ Q.T @ X
    return (out.T if tall else out).astype(G.dtype)


@_batched
def whiten_half_precision(G):
    """Wrong for a float32 claim: the SVD of a float16 copy (float16 accuracy)."""
    U, s, Vt = np.linalg.svd(G.astype(np.float16).astype(np.float32), full_matrices=False)
    keep = s > max(G.shape) * np.finfo(np.float32).eps * (s[0] if s[0] > 0 else 1)
    return ((U * keep) @ Vt).astype(G.dtype)


@_batched
def ns_muon_quintic(G):
    """Wrong for the coupled Newton-Schulz claim: Muon's quintic iteration (5 steps)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = G.shape[0] > G.shape[1]
    X = (G.T if tall else G).astype(np.float64)
    n = np.linalg.norm(X)
    if n == 0:
        return np.zeros_like(G)
    X = X / n
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).astype(G.dtype)


@_batched
def swan_wrong_order(G):
    """Wrong: whitens first, then applies GradNorm (and rescales)."""
    U, s, Vt = np.linalg.svd(G.astype(np.float64), full_matrices=False)
    keep = s > max(G.shape) * np.finfo(G.dtype).eps * (s[0] if s[0] > 0 else 1)
    D = grad_norm_numpy((U * keep) @ Vt)
    f = np.linalg.norm(D)
    return (D * (np.sqrt(G.size) / f) if f > 0 else D).astype(G.dtype)


def sinkgd_swapped_targets(G, iters=5):
    """Wrong: rows to norm sqrt(m) and columns to sqrt(n) (targets swapped)."""
    G = np.asarray(G)
    m, n = G.shape[-2:]
    X = G.astype(np.float64)
    s = np.max(np.abs(X), axis=(-2, -1), keepdims=True)
    X = X / np.where(s > 0, s, 1)
    for _ in range(iters):
        X = _normalise(X, -1, np.sqrt(m))
        X = _normalise(X, -2, np.sqrt(n))
    return X.astype(G.dtype)
