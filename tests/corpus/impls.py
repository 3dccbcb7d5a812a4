"""Independent correct implementations, written the ways people write them (no swanref imports).

tests/test_corpus.py checks that ``swanref check`` accepts every one of them under the claims
it satisfies: zero false rejections.  NumPy versions always; torch and JAX versions where those
packages are installed (the tests skip cleanly otherwise).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


# == GradNorm, row statistics over the last axis, population std, constant rows -> 0 =========

def gn_textbook(G):
    """Two-pass mean/variance with an explicit constant-row rule."""
    G = np.asarray(G)
    mu = G.mean(axis=-1, keepdims=True)
    c = G - mu
    const = np.ptp(G, axis=-1, keepdims=True) == 0
    c = np.where(const, 0, c)
    v = np.mean(c * c, axis=-1, keepdims=True)
    return np.where(const, 0, c / np.sqrt(np.where(const, 1, v))).astype(G.dtype)


def gn_shifted(G):
    """Shifted two-pass: subtract the first entry before the mean (robust to offsets)."""
    G = np.asarray(G)
    d = G - G[..., :1]
    c = d - d.mean(axis=-1, keepdims=True)
    sd = np.sqrt((c * c).mean(axis=-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sd > 0, c / np.where(sd > 0, sd, 1), 0)
    return out.astype(G.dtype)


def gn_welford(G):
    """Welford's one-pass mean/M2 per row (float64 accumulators), then standardise."""
    G = np.asarray(G)
    flat = G.reshape(-1, G.shape[-1]).astype(np.float64)
    out = np.zeros_like(flat)
    for i, row in enumerate(flat):
        mean, m2 = 0.0, 0.0
        for k, x in enumerate(row, 1):
            delta = x - mean
            mean += delta / k
            m2 += delta * (x - mean)
        var = m2 / len(row)
        if var > 0 and np.ptp(row) > 0:
            out[i] = (row - mean) / np.sqrt(var)
    return out.reshape(G.shape).astype(G.dtype)


def gn_2d_only(G):
    """Like most optimizer code: refuses anything but a matrix."""
    G = np.asarray(G)
    if G.ndim != 2:
        raise ValueError("expected a 2-D gradient")
    return gn_shifted(G)


def gn_float32(G):
    """Computes in float32 whatever comes in (claim: float32)."""
    G = np.asarray(G)
    return gn_shifted(G.astype(np.float32)).astype(G.dtype)


# == Whitening (polar factor) ===================================================================

def polar_svd(G):
    """U_r V_r^T from numpy's SVD, rank by numpy.linalg.matrix_rank's threshold, batched."""
    # refuse NaN/Inf up front: LAPACK's gesdd on a NaN matrix can fail to return at all with
    # some OpenBLAS builds, and the spec lets an implementation raise on non-finite input
    G = np.asarray_chkfinite(G)
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    tol = np.max(G.shape[-2:]) * np.finfo(G.dtype).eps * s[..., :1]
    keep = (s > tol)[..., None, :]
    return ((U * keep) @ Vt).astype(G.dtype)


def polar_scipy_2d(G):
    """scipy.linalg.polar, 2-D only (full rank: the unitary factor is U V^T)."""
    G = np.asarray(G)
    if G.ndim != 2:
        raise ValueError("scipy.linalg.polar takes a matrix")
    side = "right" if G.shape[0] <= G.shape[1] else "left"
    return scipy.linalg.polar(G, side=side)[0].astype(G.dtype)


# == Muon-style Newton-Schulz (Keller's quintic, 5 steps, X / (||X||_F + 1e-7)) ==============

def keller_numpy(G, steps=5, eps=1e-7):
    """Keller Jordan's zeropower_via_newtonschulz5 in NumPy, per matrix of a batch."""
    X = np.asarray(G)
    dt = X.dtype
    X = X.astype(np.float64 if dt == np.float64 else np.float32)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = np.swapaxes(X, -1, -2)
    X = X / (np.sqrt(np.sum(X * X, axis=(-2, -1), keepdims=True)) + eps)
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        A = X @ np.swapaxes(X, -1, -2)
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = np.swapaxes(X, -1, -2)
    return X.astype(dt)


def gn_eps_dim1(G):
    """GradNorm as ethansmith2000/SWANOptimizer writes it for its 2-D matrix view: mean and
    variance over axis 1, eps 1e-8 inside the square root, no constant-row special case (a
    constant row's rounded mean over sqrt(eps) is its output).  Axis 1 of a 3-D array is not
    its rows: the function is 2-D only, silently."""
    G = np.asarray(G)
    c = G - G.mean(axis=1, keepdims=True)
    return (c / np.sqrt((c * c).mean(axis=1, keepdims=True) + 1e-8)).astype(G.dtype)


# == SinkGD as the public implementations write it (a clamped line epsilon) ==================

def sinkgd_clamped(G, iters=5, eps=1e-8):
    """SR-Sinkhorn with every line norm clamped to at least eps, as axolotl's ``sr_sinkhorn``
    (``x.norm(dim=-1, keepdim=True).clamp_min(eps)``, eps 1e-8, then the columns)."""
    X = np.asarray(G, dtype=np.float64)
    m, n = X.shape[-2:]
    for _ in range(iters):
        X = X * (np.sqrt(n) / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), eps))
        X = X * (np.sqrt(m) / np.maximum(np.linalg.norm(X, axis=-2, keepdims=True), eps))
    return X.astype(np.asarray(G).dtype)


class OptimizerWithOrthogonaliser:
    """An optimizer object whose orthogonaliser is a method, as Keras 3's
    ``keras.optimizers.Muon().zeropower_via_newtonschulz5(x, steps)``: checked as the target
    ``corpus.impls:OptimizerWithOrthogonaliser().zeropower --kwarg steps=5``."""

    def __init__(self, eps=1e-7):
        self.eps = eps

    def zeropower(self, x, steps):
        return keller_numpy(x, steps, self.eps)


class NeedsArguments:
    def __init__(self, lr):
        self.lr = lr

    def zeropower(self, x):
        return keller_numpy(x)


# == torch / JAX versions (imported lazily) ======================================================

def gn_torch(G):
    import torch
    t = G if isinstance(G, torch.Tensor) else torch.as_tensor(np.asarray(G))
    c = t - t.mean(dim=-1, keepdim=True)
    const = (t.amax(dim=-1, keepdim=True) == t.amin(dim=-1, keepdim=True))
    c = torch.where(const, torch.zeros_like(c), c)
    sd = c.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return torch.where(const, torch.zeros_like(c), c / torch.where(const, torch.ones_like(sd),
                                                                    sd))


def polar_torch(G):
    import torch
    t = G if isinstance(G, torch.Tensor) else torch.as_tensor(np.asarray(G))
    U, s, Vh = torch.linalg.svd(t, full_matrices=False)
    tol = max(t.shape[-2:]) * torch.finfo(t.dtype).eps * s[..., :1]
    keep = (s > tol).to(t.dtype).unsqueeze(-2)
    return (U * keep) @ Vh


def keller_torch_2d(G, steps=5, eps=1e-7):
    """Keller's function as published (bf16 compute, 2-D only, returns the input dtype)."""
    import torch  # noqa: F401 - the target is torch code; fail here if torch is absent
    if G.ndim != 2:
        raise ValueError("2-D only")
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X.to(G.dtype)


def gn_jax(G):
    import jax.numpy as jnp
    x = jnp.asarray(G)
    c = x - x.mean(axis=-1, keepdims=True)
    const = x.max(axis=-1, keepdims=True) == x.min(axis=-1, keepdims=True)
    c = jnp.where(const, 0, c)
    sd = jnp.sqrt((c * c).mean(axis=-1, keepdims=True))
    return jnp.where(const, 0, c / jnp.where(const, 1, sd))


def polar_jax(G):
    import jax.numpy as jnp
    x = jnp.asarray(G)
    U, s, Vh = jnp.linalg.svd(x, full_matrices=False)
    tol = max(x.shape[-2:]) * jnp.finfo(x.dtype).eps * s[..., :1]
    return (U * (s > tol)[..., None, :]) @ Vh


def gn_jax_jit(G):
    """The JAX version compiled with jax.jit (one compilation per shape: check with
    --shapes few)."""
    import jax
    global _GN_JIT
    if "_GN_JIT" not in globals():
        _GN_JIT = jax.jit(gn_jax)
    return _GN_JIT(G)
