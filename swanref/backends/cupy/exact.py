"""Exact whitening (spec 3.1 / 3.2): cuSOLVER eigen- and singular-value decompositions.

whiten_svd on float32 input takes the route the C++ core takes on the CPU
(cpp/include/swanref/whiten_exact.hpp): the eigh route computed in float64 and rounded once.
Its error, kappa^2 eps64 in the kept directions, is below the kappa eps32 of a float32 SVD
whenever sigma_rtol^2 >= 1e4 max(m, n) eps64 (every kept sigma_i >= sigma_rtol sigma_1), which
the default sigma_rtol = max(m, n) eps32 satisfies; a smaller sigma_rtol falls back to the
float32 SVD. float64 input goes through the SVD (cuSOLVER gesvd).
"""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import blas
from swanref.backends.cupy.interop import pow2_normalise, stack
from swanref.backends import reference

_EPS64 = float(np.finfo(np.float64).eps)


def _host_fallback(fn_name, G, *args):
    """Recompute on the host with the reference (cuSOLVER reported a failure)."""
    cp = rt.cp()
    return cp.asarray(getattr(reference, fn_name)(cp.asnumpy(G), *args))


def _linalg_raise():
    import cupyx
    return cupyx.errstate(linalg="raise")


def _eigh_stack(A):
    """Eigen-decomposition of a (B, m, m) stack with cuSOLVER syevd.

    CuPy sends stacks to the batched Jacobi solver (syevj), which is fast for small matrices
    but, measured on an H100, 80 ms instead of 11 ms and 200x less accurate (float32) than
    syevd at m = 1024: stacks of matrices larger than 32 go through syevd one slice at a time.
    """
    cp = rt.cp()
    batch, m, _ = A.shape
    if batch == 1:
        lam, Q = cp.linalg.eigh(A[0])
        return lam[None], Q[None]
    if m <= 32:
        return cp.linalg.eigh(A)
    parts = [cp.linalg.eigh(A[i]) for i in range(batch)]
    return cp.stack([p[0] for p in parts]), cp.stack([p[1] for p in parts])


def _eigh_polar(Gs, lambda_rtol, out_dtype):
    """``Q_r diag(l_r)^(-1/2) Q_r^T Gs`` for the C-contiguous stack Gs (its own precision)."""
    cp = rt.cp()
    dtype = Gs.dtype
    batch, m, n = Gs.shape
    with blas.blas_mode(dtype) as handle:
        A = blas.gram(handle, Gs)
    with _linalg_raise():
        lam, Q = _eigh_stack(A)
    del A
    keep = lam > dtype.type(lambda_rtol) * lam[..., -1:]
    inv_sqrt = cp.where(keep, 1 / cp.sqrt(cp.where(keep, lam, 1)), 0).astype(dtype)
    QD = cp.ascontiguousarray(Q * inv_sqrt[..., None, :])
    Qc = cp.ascontiguousarray(Q)
    del Q
    P = cp.empty((batch, m, m), dtype=dtype)
    out = cp.empty((batch, m, n), dtype=dtype)
    with blas.blas_mode(dtype) as handle:
        blas.gemm(handle, QD, Qc, P, transb=True)
        del QD, Qc
        blas.gemm(handle, P, Gs, out)
    return out.astype(out_dtype, copy=False)


def whiten_svd(G, sigma_rtol: float):
    """``U_r V_r^T`` of the thin SVD, ``s_i > sigma_rtol * s_1`` (spec 3.1).

    float32: the float64 eigh route when it is as accurate (module docstring), else cuSOLVER
    gesvd. Each slice is first scaled by an exact power of two (max|G| in [0.5, 1)): cuSOLVER,
    unlike LAPACK's gesdd, does not rescale matrices whose squares under- or overflow.
    """
    cp = rt.cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    m, n = G.shape[-2:]
    if (G.dtype == np.float32 and sigma_rtol > 0
            and sigma_rtol ** 2 >= 1e4 * max(m, n) * _EPS64):
        Gs = stack(pow2_normalise(G, (-2, -1))).astype(cp.float64)
        try:
            out = _eigh_polar(Gs, sigma_rtol ** 2, G.dtype)
        except np.linalg.LinAlgError:
            return _host_fallback("whiten_svd", G, sigma_rtol)
        return out.reshape(G.shape)
    Gs = stack(pow2_normalise(G, (-2, -1)))
    batch = Gs.shape[0]
    try:
        with _linalg_raise():
            if batch == 1:
                U, s, Vt = (x[None] for x in cp.linalg.svd(Gs[0], full_matrices=False))
            else:
                U, s, Vt = cp.linalg.svd(Gs, full_matrices=False)
    except np.linalg.LinAlgError:
        return _host_fallback("whiten_svd", G, sigma_rtol)
    del Gs
    keep = s > s.dtype.type(sigma_rtol) * s[..., :1]
    Uk = cp.ascontiguousarray(U * keep[..., None, :].astype(U.dtype))
    Vt = cp.ascontiguousarray(Vt)
    r = Uk.shape[-1]
    out = cp.empty((batch, m, n), dtype=G.dtype)
    with blas.blas_mode(G.dtype) as handle:
        blas.gemm(handle, Uk, Vt.reshape(batch, r, n), out)
    return out.reshape(G.shape)


def whiten_eigh(G, lambda_rtol: float):
    """``Q_r diag(l_r)^(-1/2) Q_r^T G`` from cuSOLVER syevd of ``G G^T`` (spec 3.2)."""
    cp = rt.cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    Gs = stack(pow2_normalise(G, (-2, -1)))
    try:
        out = _eigh_polar(Gs, lambda_rtol, G.dtype)
    except np.linalg.LinAlgError:
        return _host_fallback("whiten_eigh", G, lambda_rtol)
    return out.reshape(G.shape)
