"""cuBLAS called through ctypes on a handle of our own.

CuPy's cuBLAS wrappers refuse to run while a stream is being captured into a CUDA graph
(``NotImplementedError: calling cuBLAS API during stream capture``), although cuBLAS supports
capture when the handle has a workspace of its own (cuBLAS documentation, "CUDA Graphs
Support"). So the backend's products go through this module: the library CuPy already loaded,
one handle and one 32 MiB workspace per device, the stream set to the current one at each call.
``selftest()`` checks it against CuPy's wrappers once; should it fail, the backend keeps CuPy's
wrappers and does not capture graphs.
"""
from __future__ import annotations

import ctypes

import numpy as np

from swanref.backends.cupy import _runtime as rt

_c_int, _c_ll, _vp = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p
_state: dict = {"lib": None, "handles": {}, "ok": None, "error": None}
WORKSPACE_BYTES = 32 * 2**20


def _find_lib():
    names = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1] if "/" in line else ""
                if "libcublas.so" in path and "Lt" not in path.rsplit("/", 1)[-1]:
                    names.append(path)
    except OSError:
        pass
    names += ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    for name in dict.fromkeys(names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("libcublas not found")


def lib():
    if _state["lib"] is None:
        L = _find_lib()
        L.cublasCreate_v2.argtypes = [ctypes.POINTER(_vp)]
        L.cublasSetStream_v2.argtypes = [_vp, _vp]
        L.cublasSetWorkspace_v2.argtypes = [_vp, _vp, ctypes.c_size_t]
        L.cublasSetMathMode.argtypes = [_vp, _c_int]
        L.cublasSetPointerMode_v2.argtypes = [_vp, _c_int]
        g = [_vp, _c_int, _c_int, _c_int, _c_int, _c_int, _vp, _vp, _c_int, _vp, _c_int, _vp,
             _vp, _c_int]
        L.cublasSgemm_v2.argtypes = g
        L.cublasDgemm_v2.argtypes = g
        sb = [_vp, _c_int, _c_int, _c_int, _c_int, _c_int, _vp, _vp, _c_int, _c_ll, _vp, _c_int,
              _c_ll, _vp, _vp, _c_int, _c_ll, _c_int]
        L.cublasSgemmStridedBatched.argtypes = sb
        L.cublasDgemmStridedBatched.argtypes = sb
        L.cublasGemmEx.argtypes = [_vp, _c_int, _c_int, _c_int, _c_int, _c_int, _vp, _vp, _c_int,
                                   _c_int, _vp, _c_int, _c_int, _vp, _vp, _c_int, _c_int, _c_int,
                                   _c_int]
        L.cublasGemmStridedBatchedEx.argtypes = [
            _vp, _c_int, _c_int, _c_int, _c_int, _c_int, _vp, _vp, _c_int, _c_int, _c_ll, _vp,
            _c_int, _c_int, _c_ll, _vp, _vp, _c_int, _c_int, _c_ll, _c_int, _c_int, _c_int]
        sy = [_vp, _c_int, _c_int, _c_int, _c_int, _vp, _vp, _c_int, _vp, _vp, _c_int]
        L.cublasSsyrk_v2.argtypes = sy
        L.cublasDsyrk_v2.argtypes = sy
        _state["lib"] = L
    return _state["lib"]


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status}")


def handle(math_mode: int):
    """Our handle for the current device, on the current stream, with ``math_mode``."""
    cp = rt.cp()
    L = lib()
    dev = rt.device()
    entry = _state["handles"].get(dev)
    if entry is None:
        h = _vp()
        _check(L.cublasCreate_v2(ctypes.byref(h)), "create")
        ws = cp.empty(WORKSPACE_BYTES, dtype=cp.uint8)
        _check(L.cublasSetWorkspace_v2(h, ws.data.ptr, WORKSPACE_BYTES), "setWorkspace")
        _check(L.cublasSetPointerMode_v2(h, 0), "setPointerMode")  # host scalars
        entry = _state["handles"][dev] = [h, ws, None, None]
    h = entry[0]
    stream = cp.cuda.get_current_stream().ptr
    if entry[2] != stream:
        _check(L.cublasSetStream_v2(h, stream), "setStream")
        entry[2] = stream
    if entry[3] != math_mode:
        _check(L.cublasSetMathMode(h, math_mode), "setMathMode")
        entry[3] = math_mode
    return h


def gemm(h, dtype, opb, opa, m, n, k, alpha_ptr, B, ldb, A, lda, beta_ptr, C, ldc, batch,
         sB, sA, sC):
    L = lib()
    if batch == 1:
        fn = L.cublasSgemm_v2 if dtype == np.float32 else L.cublasDgemm_v2
        _check(fn(h, opb, opa, m, n, k, alpha_ptr, B, ldb, A, lda, beta_ptr, C, ldc), "gemm")
    else:
        fn = L.cublasSgemmStridedBatched if dtype == np.float32 else L.cublasDgemmStridedBatched
        _check(fn(h, opb, opa, m, n, k, alpha_ptr, B, ldb, sB, A, lda, sA, beta_ptr, C, ldc, sC,
                  batch), "gemmStridedBatched")


def gemm_ex(h, opb, opa, m, n, k, alpha_ptr, B, t, ldb, A, lda, beta_ptr, C, ldc, batch, sB, sA,
            sC, compute, algo):
    L = lib()
    if batch == 1:
        _check(L.cublasGemmEx(h, opb, opa, m, n, k, alpha_ptr, B, t, ldb, A, t, lda, beta_ptr,
                              C, t, ldc, compute, algo), "gemmEx")
    else:
        _check(L.cublasGemmStridedBatchedEx(h, opb, opa, m, n, k, alpha_ptr, B, t, ldb, sB, A, t,
                                            lda, sA, beta_ptr, C, t, ldc, sC, batch, compute,
                                            algo), "gemmStridedBatchedEx")


def syrk(h, dtype, uplo, trans, n, k, alpha_ptr, A, lda, beta_ptr, C, ldc):
    L = lib()
    fn = L.cublasSsyrk_v2 if dtype == np.float32 else L.cublasDsyrk_v2
    _check(fn(h, uplo, trans, n, k, alpha_ptr, A, lda, beta_ptr, C, ldc), "syrk")


def usable() -> bool:
    """True once :func:`selftest` passed in this process (run at first use)."""
    if _state["ok"] is None:
        if _state.get("testing"):
            return False  # the self-test's own reference products use CuPy's wrappers
        _state["testing"] = True
        try:
            _state["ok"] = selftest()
        except Exception as exc:  # no library, missing symbol, failing call
            _state["ok"] = False
            _state["error"] = repr(exc)
        finally:
            _state["testing"] = False
        if not _state["ok"]:
            rt.state["graphs"] = False
            rt.state["graph_error"] = "ctypes cuBLAS self-test failed: " + str(_state["error"])
    return bool(_state["ok"])


def selftest() -> bool:
    """Products through this module against the same products through CuPy's wrappers."""
    from swanref.backends.cupy import blas  # blas imports this module: a circle at the top
    cp = rt.cp()
    rng = cp.random.default_rng(0)
    ok = True
    for dt in (np.float32, np.float64):
        for batch in (1, 3):
            a = rng.standard_normal((batch, 20, 33)).astype(dt)
            b = rng.standard_normal((batch, 33, 17)).astype(dt)
            outs = []
            for use in (False, True):
                out = cp.zeros((batch, 20, 17), dtype=dt) + 1
                with blas.blas_mode(dt) as hd:
                    blas.gemm(hd, a, b, out, alpha=0.5, beta=2.0, _ctypes=use)
                outs.append(out)
            ok &= bool(cp.allclose(outs[0], outs[1], rtol=1e-5 if dt == np.float32 else 1e-12))
    a = rng.standard_normal((2, 16, 40)).astype(np.float32)
    ref = a @ cp.swapaxes(a, -1, -2)
    x = cp.empty((2, 16, 16), dtype=np.float32)
    mode = rt.state.get("gram")
    for rows in (a[:1], a):
        rt.state["gram"] = "syrk"  # a single matrix through SYRK, the stack through GEMM
        try:
            with blas.blas_mode(np.float32) as hd:
                blas.gram(hd, rows, out=x[:rows.shape[0]], _ctypes=True)
        finally:
            rt.state["gram"] = mode
        ok &= bool(cp.allclose(x[:rows.shape[0]], ref[:rows.shape[0]], rtol=1e-5, atol=1e-5))
    bits = rng.standard_normal((2, 16, 40)).astype(np.float32).view(np.uint32)
    w = ((bits >> 16).astype(np.uint16))  # bfloat16 words (truncated: any values will do)
    y = cp.empty((2, 16, 16), dtype=np.uint16)
    with blas.blas_mode(np.float32, lowprec=True) as hd:
        blas.gemm_lp(hd, "bfloat16", w, w, y, transb=True, _ctypes=True)
    wf = (w.astype(np.uint32) << 16).view(np.float32)
    yf = (y.astype(np.uint32) << 16).view(np.float32)
    ok &= bool(cp.allclose(yf, wf @ cp.swapaxes(wf, -1, -2), rtol=2e-2, atol=1e-2))
    if not ok:
        _state["error"] = "results differ from CuPy's cuBLAS wrappers"
    return ok
