"""cuBLAS plumbing: products on C-contiguous (batch, ., .) stacks, row-major.

Row-major data is column-major transposed, so cuBLAS computes out^T = op(b)^T a^T.
"""
from __future__ import annotations

import contextlib

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import _cublas_ct as ct
from swanref.backends.cupy import kernels as K

_CUBLAS_DEFAULT_MATH = 0
_CUBLAS_TF32_TENSOR_OP_MATH = 3
#: products of 16-bit operands accumulate in float32 all the way (no reduced-precision split-K)
_CUBLAS_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
_CUDA_R = {"bfloat16": 14, "float16": 2}
_CUBLAS_COMPUTE_32F = 68
_CUBLAS_GEMM_DEFAULT = -1
#: single matrices at least this tall form their Gram matrix with SYRK (see gram)
SYRK_MIN_M = 2048


def cublas():
    from cupy_backends.cuda.libs import cublas
    return cublas


@contextlib.contextmanager
def blas_mode(dtype, lowprec: bool = False):
    """Host pointer mode, and TF32 on only if asked for (float32 only), restored afterwards.

    ``lowprec``: 16-bit products with float32 accumulation and no reduced-precision reduction.
    """
    cp = rt.cp()
    if _use_ctypes(None):  # products through our own handle (_cublas_ct); CuPy's untouched
        yield None
        return
    cb = cublas()
    handle = cp.cuda.device.get_cublas_handle()
    old_ptr = cb.getPointerMode(handle)
    old_math = cb.getMathMode(handle)
    if lowprec:
        math = _CUBLAS_DEFAULT_MATH | _CUBLAS_DISALLOW_REDUCED_PRECISION_REDUCTION
    elif rt.state["tf32"] and np.dtype(dtype) == np.float32:
        math = _CUBLAS_TF32_TENSOR_OP_MATH
    else:
        math = _CUBLAS_DEFAULT_MATH
    cb.setPointerMode(handle, cb.CUBLAS_POINTER_MODE_HOST)
    cb.setMathMode(handle, math)
    try:
        yield handle
    finally:
        cb.setMathMode(handle, old_math)
        cb.setPointerMode(handle, old_ptr)


def _scalar(value, dtype):
    arr = np.array(value, dtype=dtype)
    return arr, arr.ctypes.data


def _math(dtype, lowprec=False) -> int:
    if lowprec:
        return _CUBLAS_DEFAULT_MATH | _CUBLAS_DISALLOW_REDUCED_PRECISION_REDUCTION
    if rt.state["tf32"] and np.dtype(dtype) == np.float32:
        return _CUBLAS_TF32_TENSOR_OP_MATH
    return _CUBLAS_DEFAULT_MATH


def _use_ctypes(flag) -> bool:
    """With CUDA graphs on, products go through our own handle (capturable; _cublas_ct), once
    it is self-tested; otherwise through CuPy's wrappers."""
    return (bool(rt.state["graphs"]) and ct.usable()) if flag is None else bool(flag)


def gemm(handle, a, b, out, alpha=1.0, beta=0.0, transb=False, _ctypes=None):
    """``out = alpha * a @ op(b) + beta * out`` on C-contiguous (batch, ., .) stacks.

    a: (B, M, K); b: (B, K, N), or (B, N, K) with ``transb`` (then op(b) = b^T); out: (B, M, N).
    """
    cb = cublas()
    batch, M, K_ = a.shape
    N = out.shape[-1]
    dtype = a.dtype
    al, al_ptr = _scalar(alpha, dtype)
    be, be_ptr = _scalar(beta, dtype)
    opb = cb.CUBLAS_OP_T if transb else cb.CUBLAS_OP_N
    ldb = K_ if transb else N
    if _use_ctypes(_ctypes):
        ct.gemm(ct.handle(_math(dtype)), dtype, opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr,
                b.data.ptr, ldb, a.data.ptr, K_, be_ptr, out.data.ptr, N, batch, K_ * N,
                M * K_, M * N)
    elif batch == 1:
        fn = cb.sgemm if dtype == np.float32 else cb.dgemm
        fn(handle, opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr, b.data.ptr, ldb, a.data.ptr, K_,
           be_ptr, out.data.ptr, N)
    else:
        fn = cb.sgemmStridedBatched if dtype == np.float32 else cb.dgemmStridedBatched
        fn(handle, opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr, b.data.ptr, ldb, K_ * N,
           a.data.ptr, K_, M * K_, be_ptr, out.data.ptr, N, M * N, batch)
    del al, be
    return out


def gemm_lp(handle, fmt, a, b, out, alpha=1.0, beta=0.0, transb=False, _ctypes=None):
    """:func:`gemm` on 16-bit words of format ``fmt`` (bfloat16/float16; uint16 arrays):
    tensor-core products accumulated in float32, ``alpha acc + beta out`` in float32, rounded
    once to ``fmt`` (cublasGemmEx, CUBLAS_COMPUTE_32F): what PyTorch eager's matmul/addmm do."""
    cb = cublas()
    batch, M, K_ = a.shape
    N = out.shape[-1]
    al, al_ptr = _scalar(alpha, np.float32)
    be, be_ptr = _scalar(beta, np.float32)
    opb = cb.CUBLAS_OP_T if transb else cb.CUBLAS_OP_N
    ldb = K_ if transb else N
    t = _CUDA_R[fmt]
    if _use_ctypes(_ctypes):
        ct.gemm_ex(ct.handle(_math(None, lowprec=True)), opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr,
                   b.data.ptr, t, ldb, a.data.ptr, K_, be_ptr, out.data.ptr, N, batch, K_ * N,
                   M * K_, M * N, _CUBLAS_COMPUTE_32F, _CUBLAS_GEMM_DEFAULT)
    elif batch == 1:
        cb.gemmEx(handle, opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr, b.data.ptr, t, ldb,
                  a.data.ptr, t, K_, be_ptr, out.data.ptr, t, N, _CUBLAS_COMPUTE_32F,
                  _CUBLAS_GEMM_DEFAULT)
    else:
        cb.gemmStridedBatchedEx(handle, opb, cb.CUBLAS_OP_N, N, M, K_, al_ptr, b.data.ptr, t,
                                ldb, K_ * N, a.data.ptr, t, K_, M * K_, be_ptr, out.data.ptr,
                                t, N, M * N, batch, _CUBLAS_COMPUTE_32F, _CUBLAS_GEMM_DEFAULT)
    del al, be
    return out


def mirror_upper(A):
    """Copy the upper triangle of each (m, m) slice of the C-contiguous stack A into its lower."""
    batch, m, _ = A.shape
    tiles = (m + 31) // 32
    kern = K.kernel("mirror", A.dtype)
    for start in range(0, batch, 65535):
        part = A[start:start + 65535]
        kern((tiles, tiles, part.shape[0]), (32, 8, 1), (part, np.int32(m), np.int64(m * m)))


def add_diagonal(A, value):
    """``A[b] += value * I`` in place on a C-contiguous (batch, m, m) stack."""
    batch, m, _ = A.shape
    total = batch * m
    grid, block = K.grid_1d(total)
    K.kernel("add_diag", A.dtype)(grid, block, (A, np.int64(total), np.int32(m),
                                                A.dtype.type(value)))
    return A


def gram(handle, Gs, out=None, _ctypes=None):
    """``Gs @ Gs^T`` for a C-contiguous (B, m, n) stack.

    Single matrices with m >= ``SYRK_MIN_M`` through SYRK (half the flops; the other triangle
    mirrored by a small kernel), the rest through one GEMM (strided-batched for stacks): on an
    H100 cuBLAS's SYRK took 4.7 ms against the GEMM's 7.1 ms at 4096 x 11008 float32 and
    0.24 against 0.19 ms at 1024 x 4096 (docs/performance_gpu.md). ``SWANREF_CUPY_GRAM`` =
    ``gemm`` / ``syrk`` forces one.
    """
    cp = rt.cp()
    cb = cublas()
    batch, m, n = Gs.shape
    A = cp.empty((batch, m, m), dtype=Gs.dtype) if out is None else out
    syrk = getattr(cb, "ssyrk" if Gs.dtype == np.float32 else "dsyrk", None)
    mode = rt.state.get("gram", "auto")
    if mode not in ("gemm", "syrk"):
        mode = "syrk" if m >= SYRK_MIN_M else "gemm"
    if batch == 1 and syrk is not None and mode == "syrk":
        # Column-major view of row-major Gs is X = Gs^T (n x m, ld n); A = X^T X (trans = T).
        # cuBLAS fills its lower triangle = the row-major upper triangle; mirror it.
        al, al_ptr = _scalar(1.0, Gs.dtype)
        be, be_ptr = _scalar(0.0, Gs.dtype)
        if _use_ctypes(_ctypes):
            ct.syrk(ct.handle(_math(Gs.dtype)), Gs.dtype, cb.CUBLAS_FILL_MODE_LOWER,
                    cb.CUBLAS_OP_T, m, n, al_ptr, Gs.data.ptr, n, be_ptr, A.data.ptr, m)
        else:
            syrk(handle, cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_OP_T, m, n, al_ptr,
                 Gs.data.ptr, n, be_ptr, A.data.ptr, m)
        del al, be
        mirror_upper(A)
    else:
        gemm(handle, Gs, Gs, A, transb=True, _ctypes=_ctypes)
    return A

