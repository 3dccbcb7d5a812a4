"""GradNorm (spec 2.1): one fused kernel, one thread block per row.

The row algorithm is the host/device C++ header ``cpp/include/swanref/device/grad_norm_row.hpp``.
A row holding NaN/Inf comes out non-finite in every entry (its mean is not finite), so the
public call's finite check reads one entry per output row instead of the whole input.
"""
from __future__ import annotations

import numpy as np

from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import kernels as K

#: Block size (docs/performance_gpu.md has the measurements behind it): up to 256 threads with
#: at least 16 entries each, and enough threads that the blocks which fit an SM's shared memory
#: keep at least 768 threads (24 warps) resident; at most 512.
_GN_ITEMS_PER_THREAD = 16
_GN_BASE_THREADS = 256
_GN_RESIDENT_THREADS = 768
_GN_MAX_THREADS = 512
_threads_cache: dict = {}


def _gn_threads(n: int, row_bytes: int, use_smem: bool) -> int:
    key = (rt.device(), n, row_bytes, use_smem)
    t = _threads_cache.get(key)
    if t is None:
        base = 32 * max(1, min(_GN_BASE_THREADS // 32, -(-n // (32 * _GN_ITEMS_PER_THREAD))))
        if use_smem:
            per_sm = rt.device_attr("sharedMemPerMultiprocessor", 228 * 1024)
            blocks = max(1, min(32, per_sm // (row_bytes + 1024)))
        else:
            blocks = 32
        occupancy = 32 * -(-_GN_RESIDENT_THREADS // (32 * blocks))
        t = _threads_cache[key] = min(_GN_MAX_THREADS, max(base, occupancy))
    return t


def _rows_layout(G):
    """(array, row_stride, col_stride) in elements if the rows of G can be walked in place."""
    itemsize = G.dtype.itemsize
    n = G.shape[-1]
    if any(s < 0 or s % itemsize for s in G.strides):
        return None
    st = [s // itemsize for s in G.strides]
    col = st[-1] if n > 1 else 1
    if col != 1:
        return None  # uncoalesced row walk: cheaper to transpose-copy once
    lead = [(size, stride) for size, stride in zip(G.shape[:-1], st[:-1]) if size != 1]
    for (size_a, stride_a), (size_b, stride_b) in zip(lead, lead[1:]):
        if stride_a != stride_b * size_b:
            return None
    row = lead[-1][1] if lead else n
    return G, row, col


def _smem_optin_limit() -> int:
    return rt.device_attr("sharedMemPerBlockOptin", 48 * 1024)


def grad_norm(G, eps: float, *, work_in_shared=None, threads=None, vector=True):
    """Row standardisation over the last axis (spec 2.1): one fused kernel, one block per row.

    Keyword arguments are tuning/benchmark knobs: ``work_in_shared`` None keeps the row in
    shared memory whenever it fits the device's opt-in limit, False in the output row (L1/L2);
    ``threads`` sets the block size (a multiple of 32, at most 1024); ``vector`` False forbids
    the 16-byte vector accesses.
    """
    return _launch(G, eps, G.dtype, work_in_shared, threads, vector)


def grad_norm_bf16(W, eps: float, *, threads=None, vector=True):
    """GradNorm of bfloat16 rows held as 16-bit words (a uint16 CuPy array: CuPy has no
    bfloat16 dtype): read and written as bfloat16 by the kernel, computed in float32, rounded
    once to nearest even. Bitwise the float32 GradNorm of the widened rows rounded to bfloat16
    (what the public call computed before, through two widening/rounding passes in torch).
    Rows whose float32 working copy does not fit shared memory take that widened route here.
    """
    cp = rt.cp()
    if W.dtype != np.uint16:
        raise TypeError(f"grad_norm_bf16 takes bfloat16 words as uint16, got {W.dtype}")
    n = W.shape[-1]
    if n * 4 + 99 * 4 > _smem_optin_limit():
        wide = cp.empty(W.shape, dtype=cp.float32)
        Wc = cp.ascontiguousarray(W)
        K.kernel("lp_cast_out", np.float32, "bfloat16")(
            *K.grid_1d(Wc.size), (Wc, wide, np.int64(Wc.size)))
        out32 = grad_norm(wide, eps)
        out = cp.empty(W.shape, dtype=cp.uint16)
        shift = cp.zeros(1, dtype=cp.int32)
        K.kernel("lp_cast_in", np.float32, "bfloat16")(
            *K.grid_1d(out.size), (out32, out, np.int64(out.size), np.int64(out.size), shift))
        return out
    return _launch(W, eps, np.dtype(np.float32), True, threads, vector, storage_bf16=True)


def _launch(G, eps, compute, work_in_shared, threads, vector, storage_bf16=False):
    cp = rt.cp()
    dtype = G.dtype  # the storage type (uint16 words for bfloat16)
    n = G.shape[-1]
    out = cp.empty(G.shape, dtype=dtype)
    rows = G.size // n if n else 0
    if rows == 0:
        return out
    layout = _rows_layout(G)
    if layout is None:
        X = cp.ascontiguousarray(G)
        row_stride, col_stride = n, 1
    else:
        X, row_stride, col_stride = layout
    if n >= 2**31:
        raise ValueError(f"rows of {n} entries are longer than the GPU kernel supports")
    # vector accesses (16 bytes; 8 bytes of four bfloat16 words) when every row starts aligned
    # and n fills whole vectors
    width = 4 if storage_bf16 else 16 // dtype.itemsize
    align = width * dtype.itemsize
    vector = (vector and col_stride == 1 and n % width == 0 and X.data.ptr % align == 0
              and (row_stride * dtype.itemsize) % align == 0)
    if storage_bf16:
        kern = K.kernel("grad_norm_bf16_vec" if vector else "grad_norm_bf16")
    else:
        kern = K.kernel("grad_norm_vec" if vector else "grad_norm", dtype)
    work_bytes = n * compute.itemsize
    use_smem = work_bytes + 99 * compute.itemsize <= _smem_optin_limit()
    if work_in_shared is not None and not storage_bf16:
        use_smem = use_smem and bool(work_in_shared)
    if use_smem and work_bytes > 48 * 1024:
        try:
            K.allow_dynamic_smem(kern, work_bytes)
        except Exception:  # opt-in refused: keep the row in the output instead
            if storage_bf16:
                raise
            use_smem = False
    smem = work_bytes if use_smem else 0
    if threads is None:
        threads = _gn_threads(n, work_bytes, use_smem)
    grid = min(rows, 2**31 - 1)
    kern((grid,), (threads,),
         (X, np.int64(rows), np.int64(n), np.int64(row_stride), np.int64(col_stride), out,
          compute.type(eps), np.int32(1 if use_smem else 0)),
         shared_mem=smem)
    return out


def grad_norm_finite(G, eps: float, check: bool, impl=None, defer=False):
    """GradNorm with the public call's finite-input policy folded in: ``(out, ok)``.

    ``check`` True: ok is False when some row of G holds NaN/Inf (read from the first entry of
    every output row; one host synchronisation), and out must then be discarded. ``check``
    False: rows with NaN/Inf come back all NaN and ok is True, without a host synchronisation.
    ``impl`` replaces :func:`grad_norm` (the package passes its own attribute). ``defer`` (with
    ``check``): ok is a device boolean, not read (no synchronisation; deferred_checks reads it).
    """
    out = (impl or grad_norm)(G, eps)
    return _finite_policy(out, G.shape[-1], check, defer)


def grad_norm_bf16_finite(W, eps: float, check: bool, defer=False):
    """:func:`grad_norm_bf16` with the finite-input policy of :func:`grad_norm_finite` (a NaN
    or Inf in a row makes its first output word non-finite): ``(out, ok)``."""
    return _finite_policy(grad_norm_bf16(W, eps), W.shape[-1], check, defer)


def _finite_policy(out, n: int, check: bool, defer: bool = False):
    if out.size == 0:
        return out, (rt.cp().asarray(True) if defer else True)
    rows = out.size // n
    if check:
        flag = _first_entries_flag(out, rows, n)
        return out, (flag[0] == 0 if defer else int(flag.get()[0]) == 0)
    grid = min(rows, 65535 * 32)
    K.kernel("nan_rows", out.dtype)((grid,), (128,), (out, np.int64(rows), np.int64(n)))
    return out, True



def _first_entries_flag(out, rows: int, n: int):
    """Device int32[1]: 1 when some row of ``out`` starts with NaN/Inf, else 0 (one small
    kernel; reading it is the synchronisation the immediate check needs)."""
    cp = rt.cp()
    flag = cp.empty(1, dtype=cp.int32)
    K.kernel("first_finite", out.dtype)((1,), (1024,), (out, np.int64(rows), np.int64(n), flag))
    return flag
