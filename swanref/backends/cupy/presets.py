"""Muon-style polynomial presets (docs/presets.md) on the GPU.

* compute in the input precision (float32/float64; ``emulate=None``): the function of
  ``cpp/include/swanref/polynomial.hpp``;
* ``emulate='bfloat16'`` / ``'float16'``: native 16-bit arithmetic with PyTorch eager's
  rounding at every step, the model of ``swanref.presets.lowprec``: tensor-core products of
  16-bit operands accumulated in float32 and rounded once (cublasGemmEx, CUBLAS_COMPUTE_32F,
  reduced-precision reduction off), elementwise ops computed in float32 from the rounded
  operands and rounded once (round-to-nearest-even, the hardware conversion). Values are held
  as 16-bit words (uint16 arrays) and come back widened to the input dtype, exactly.

Both prescale huge input by an exact power of two first, as swanref.presets.catalogue does.
"""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import blas, graphs
from swanref.backends.cupy import kernels as K
from swanref.backends.cupy.interop import (huge_shift, huge_shift_bfloat16, lp_sumsq, per_matrix,
                                           stack)

_NORMS = ("add", "clamp", "none", "safe")
_FORMATS = ("bfloat16", "float16")


def _check(G, coefficients, norm, emulate):
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of 'add', 'clamp', 'none', 'safe', got {norm!r}")
    if emulate is not None and emulate not in _FORMATS:
        raise ValueError(f"emulate must be None, 'bfloat16' or 'float16', got {emulate!r}")
    coef = np.asarray(coefficients, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(coef)):
        raise ValueError("coefficients must be finite")
    if G.shape[-2] > G.shape[-1]:
        raise ValueError("whiten_polynomial expects m <= n (pass the transpose of tall matrices)")
    return coef


def _native(G, coef, norm, eps, norm_scale):
    cp = rt.cp()
    dtype = G.dtype
    X = stack(G)
    shift = huge_shift(X)
    X = cp.ldexp(X, -shift[:, None, None]).astype(dtype, copy=False)
    # squares and sum in the compute dtype (after the prescale the sum cannot overflow)
    nrm = cp.sqrt(per_matrix(cp.sum, X * X, keepdims=True))
    scaled = dtype.type(norm_scale) * nrm if norm_scale != 1.0 else nrm
    if norm == "add":
        denom = scaled + dtype.type(eps)
    elif norm == "clamp":
        denom = cp.maximum(scaled, dtype.type(eps))
    else:
        denom = scaled
    X /= denom
    if norm == "safe":
        X = cp.where(scaled > 0, X, dtype.type(0))
    batch, m, n = X.shape
    with blas.blas_mode(dtype) as handle:
        A = cp.empty((batch, m, m), dtype=dtype)
        B = cp.empty_like(A)
        Xn = cp.empty_like(X)
        for a, b, c in coef:
            blas.gemm(handle, X, X, A, transb=True)        # A = X X^T
            cp.multiply(A, dtype.type(b), out=B)
            if c != 0.0:
                blas.gemm(handle, A, A, B, alpha=float(c), beta=1.0)  # B = b A + c A A
            Xn[...] = X
            blas.gemm(handle, B, X, Xn, beta=float(a))     # X <- a X + B X
            X, Xn = Xn, X
    return X.reshape(G.shape)


def _lowprec(G, coef, norm, eps, norm_scale, fmt, form):
    cp = rt.cp()
    f32 = np.float32
    Gs = stack(G)
    batch, m, n = Gs.shape
    total, slice_ = Gs.size, m * n
    grid, block = K.grid_1d(total)
    words = Gs.dtype == np.uint16  # bfloat16 input held as its words: no widened copy
    shift = huge_shift_bfloat16(Gs) if words else huge_shift(Gs)
    X = cp.empty((batch, m, n), dtype=cp.uint16)
    if words:
        K.kernel("lp_shift_words", fmt=fmt)(grid, block, (Gs, X, np.int64(total),
                                                          np.int64(slice_), shift))
    else:
        K.kernel("lp_cast_in", Gs.dtype, fmt)(grid, block, (Gs, X, np.int64(total),
                                                            np.int64(slice_), shift))
    # squares of 16-bit values are exact in float32; summed in float32, as PyTorch does (two
    # kernels; through CuPy's reductions where the scan module is off or failed)
    sumsq = lp_sumsq(X, fmt)
    if sumsq is None:
        sumsq = per_matrix(cp.sum, K.lp_squares(fmt)(X)).astype(cp.float64)
    mode = _NORMS.index(norm)
    K.kernel("lp_normalise", fmt=fmt)(grid, block, (X, np.int64(total), np.int64(slice_), sumsq,
                                                    f32(norm_scale), f32(eps), np.int32(mode)))
    mm_total = batch * m * m
    mgrid, mblock = K.grid_1d(mm_total)
    scale = K.kernel("lp_scale", fmt=fmt)
    scale_add = K.kernel("lp_scale_add", fmt=fmt)
    A = cp.empty((batch, m, m), dtype=cp.uint16)
    B = cp.empty_like(A)
    P = cp.empty_like(A)
    Xn = cp.empty_like(X)
    with blas.blas_mode(np.float32, lowprec=True) as handle:
        for a, b, c in coef:
            blas.gemm_lp(handle, fmt, X, X, A, transb=True)               # A = X X^T
            if form == "addmm":
                B[...] = A
                blas.gemm_lp(handle, fmt, A, A, B, alpha=c, beta=b)       # addmm(A, A, A, b, c)
                Xn[...] = X
                blas.gemm_lp(handle, fmt, B, X, Xn, alpha=1.0, beta=a)    # addmm(X, B, X, a, 1)
            else:  # keller: B = b A + (c A) A; X = a X + B X, each op rounded
                if c != 0.0:
                    scale(mgrid, mblock, (A, P, np.int64(mm_total), f32(c)))   # P = c A
                    blas.gemm_lp(handle, fmt, P, A, B)                          # B = (c A) A
                    scale_add(mgrid, mblock, (A, B, B, np.int64(mm_total), f32(b)))
                else:
                    scale(mgrid, mblock, (A, B, np.int64(mm_total), f32(b)))
                blas.gemm_lp(handle, fmt, B, X, Xn)                             # Xn = B X
                scale_add(grid, block, (X, Xn, Xn, np.int64(total), f32(a)))
            X, Xn = Xn, X
    if words:
        return X.reshape(G.shape)
    out = cp.empty((batch, m, n), dtype=G.dtype)
    K.kernel("lp_cast_out", G.dtype, fmt)(grid, block, (X, out, np.int64(total)))
    return out.reshape(G.shape)


def whiten_polynomial(G, coefficients, norm: str, eps: float, norm_scale: float,
                      emulate: str | None = None, form: str = "keller"):
    """Muon-style polynomial Newton-Schulz of the presets (m <= n; docs/presets.md).

    ``emulate`` None: X = G / N(||G||_F) with the preset's normalisation (squares formed in the
    dtype), then per (a, b, c): A = X X^T, B = b A + c A A, X <- a X + B X in G's precision
    (cuBLAS; TF32 per set_tf32). ``emulate`` 'bfloat16'/'float16': the same steps in that
    format with PyTorch eager's rounding of ``form`` ('keller': separate ops, 'addmm': the two
    fused torch.addmm calls); the result holds values of that format, in G's dtype.
    A uint16 G holds bfloat16 words (``emulate='bfloat16'`` only): read as they are, no widened
    copy, and the result comes back as bfloat16 words (bitwise the same values).
    """
    cp = rt.cp()
    coef = _check(G, coefficients, norm, emulate)
    if G.dtype == np.uint16 and emulate != "bfloat16":
        raise TypeError("uint16 input holds bfloat16 words and needs emulate='bfloat16'")
    if form not in ("keller", "addmm"):
        raise ValueError(f"form must be 'keller' or 'addmm', got {form!r}")
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    if emulate is None:
        def fn(X):
            return _native(X, coef, norm, eps, norm_scale)
    else:
        def fn(X):
            return _lowprec(X, coef, norm, eps, norm_scale, emulate, form)
    if graphs.eligible(G):
        key = ("polynomial", coef.tobytes(), norm, float(eps), float(norm_scale), emulate, form)
        return graphs.run(key, fn, G)
    return fn(G)
