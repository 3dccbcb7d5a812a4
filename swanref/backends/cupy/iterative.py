"""Iterative whitening (spec 3.3 / 3.4) and SinkGD (spec 5) on cuBLAS and CuPy.

Newton-Schulz: the Gram matrix by one GEMM (strided-batched for stacks), the iteration by
GEMMs with the first step's products with Z0 = I skipped (exact: they return their other
operand), ``3I - Z Y`` as a GEMM with alpha = -1 plus a diagonal update, four m x m buffers
rotated between the steps. Small calls replay a captured CUDA graph (graphs.py).
"""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import blas, graphs
from swanref.backends.cupy.interop import per_matrix, pow2_normalise, stack


def _scaled_gram(handle, G, scaling: str):
    """``(Gs, A, c)`` of spec 3.3 on a (B, m, n) stack; c has shape (B, 1, 1)."""
    cp = rt.cp()
    if scaling not in ("gram_fro", "grad_fro", "none"):
        raise ValueError(f"unknown scaling {scaling!r}")
    Gs = stack(G if scaling == "none" else pow2_normalise(G, (-2, -1)))
    A = blas.gram(handle, Gs)
    dtype = G.dtype
    if scaling == "gram_fro":
        c = cp.sqrt(per_matrix(cp.sum, A * A))
    elif scaling == "grad_fro":
        c = per_matrix(cp.sum, Gs * Gs)
    else:
        c = cp.ones(Gs.shape[0], dtype=dtype)
    c = cp.where(c > 0, c, 1).astype(dtype)
    return Gs, A, c[:, None, None]


def newton_schulz_flops(m: int, n: int, steps: int, batch: int = 1) -> float:
    """Floating-point operations this backend executes for whiten_newton_schulz."""
    gram = 2 * m * m * n
    iters = 2 * m ** 3 * (1 + 3 * max(steps - 1, 0)) if steps else 0
    return float(batch * (gram + iters + 2 * m * m * n))


def _newton_schulz(G, steps: int, beta: float, scaling: str):
    cp = rt.cp()
    dtype = G.dtype
    b = float(dtype.type(beta))
    with blas.blas_mode(dtype) as handle:
        Gs, Y, c = _scaled_gram(handle, G, scaling)
        Y /= c
        if steps == 0:
            del Y
            out = Gs.copy()
        else:
            # Step 1 with Z0 = I: T = 3I - Y, Y1 = b * (Y T), Z1 = b * (T I) = b * T.
            Z = blas.add_diagonal(cp.negative(Y), 3.0)
            spare = cp.empty_like(Y)
            blas.gemm(handle, Y, Z, spare, alpha=b)
            Z *= dtype.type(b)
            Y, spare = spare, Y
            T = cp.empty_like(Y) if steps > 1 else None
            for _ in range(steps - 1):
                blas.gemm(handle, Z, Y, T, alpha=-1.0)    # T = -Z Y
                blas.add_diagonal(T, 3.0)                 # T = 3I - Z Y
                blas.gemm(handle, Y, T, spare, alpha=b)   # Y' = b Y T
                blas.gemm(handle, T, Z, Y, alpha=b)       # Z' = b T Z (Y is free now)
                Y, Z, spare = spare, Y, Z
            del Y, T, spare
            out = cp.empty_like(Gs)
            blas.gemm(handle, Z, Gs, out)
            del Z
    out /= cp.sqrt(c)
    return out.reshape(G.shape)


def whiten_newton_schulz(G, steps: int, beta: float, scaling: str):
    """The coupled Newton-Schulz iteration for ``A^(-1/2)`` applied to ``G`` (spec 3.3)."""
    cp = rt.cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    if scaling not in ("gram_fro", "grad_fro", "none"):
        raise ValueError(f"unknown scaling {scaling!r}")
    if graphs.eligible(G):
        return graphs.run(("newton_schulz", int(steps), float(beta), scaling, rt.state["gram"]),
                          lambda X: _newton_schulz(X, steps, beta, scaling), G)
    return _newton_schulz(G, steps, beta, scaling)


def whiten_nsds(G, steps: int, beta: float, scaling: str):
    """Newton-Schulz with diagonal substitution (reconstructed; spec 3.4)."""
    cp = rt.cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    dtype = G.dtype
    with blas.blas_mode(dtype) as handle:
        Gs, A, c = _scaled_gram(handle, G, scaling)
    y = cp.diagonal(A, axis1=-2, axis2=-1) / c[..., 0]
    z = cp.ones_like(y)
    b = dtype.type(beta)
    for _ in range(steps):
        t = 3 - z * y
        y, z = b * y * t, b * t * z
    out = z[..., :, None] * Gs / cp.sqrt(c)
    return out.astype(dtype, copy=False).reshape(G.shape)


def _normalise_lines(X, axis: int, target: float):
    """Scale every line along ``axis`` to l2 norm ``target``; zero lines stay zero."""
    cp = rt.cp()
    Xs = pow2_normalise(X, axis)
    norm = cp.sqrt(cp.sum(Xs * Xs, axis=axis, keepdims=True))
    # as the reference: the ratio is formed in float64 (NumPy promotes its float64 target)
    ratio = target / cp.where(norm > 0, norm, 1).astype(cp.float64)
    return cp.where(norm > 0, Xs * ratio, 0).astype(X.dtype)


def sinkgd(G, iters: int):
    """SR-Sinkhorn: ``iters`` alternating row/column l2 normalisations (spec 5)."""
    cp = rt.cp()
    m, n = G.shape[-2:]
    X = cp.array(G, copy=True)
    for _ in range(iters):
        X = _normalise_lines(X, -1, float(np.sqrt(n)))
        X = _normalise_lines(X, -2, float(np.sqrt(m)))
    return X
