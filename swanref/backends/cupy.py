"""The CuPy backend ("cupy"): the operators of docs/spec.md on NVIDIA GPUs.

Implements the backend protocol of docs/backends.md on CuPy arrays and computes what
swanref/reference.py computes (docs/gpu.md describes the GPU path):

* ``grad_norm``: ONE fused kernel, one thread block per row; the row algorithm is the
  host/device C++ header ``cpp/include/swanref/device/grad_norm_row.hpp``, compiled at first use
  by CuPy's NVRTC (``cupy.RawModule`` with ``-I`` to the header directory).
* ``whiten_newton_schulz`` / ``whiten_nsds``: cuBLAS. The Gram matrix ``G G^T`` of a single
  matrix through SYRK (half the flops of a GEMM; the other triangle mirrored by a small
  kernel), of a batch through one strided-batched GEMM; the iteration through GEMM (strided
  batched for stacks), with ``3I - Z Y`` fused into the GEMM (beta = 1 on a preset 3I) and the
  first step's products with ``Z0 = I`` skipped (exact: they return their other operand).
* ``whiten_svd`` / ``whiten_eigh``: cuSOLVER through ``cupy.linalg.svd`` / ``cupy.linalg.eigh``
  (batched input in one call); a slice where cuSOLVER reports failure is recomputed on the
  host by the reference backend.
* ``sinkgd``: the reference's steps as CuPy array operations.

TF32 is OFF by default: every float32 product is a true float32 product. ``set_tf32(True)``
(or the environment variable ``SWANREF_CUPY_TF32=1`` read at import) lets cuBLAS round float32
operands to TF32 on tensor cores (about 3e-4 relative error per product): faster, no longer a
reference. float64 is never affected.

Importing this module does not import CuPy; ``available()`` does, and says False without CuPy,
a driver or a GPU.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import threading

import numpy as np

name = "cupy"

_state = {"tf32": os.environ.get("SWANREF_CUPY_TF32", "0").strip().lower() in
          ("1", "true", "yes", "on")}
_lock = threading.Lock()
_available: bool | None = None
_modules: dict = {}

HEADER = "swanref/device/grad_norm_row.hpp"


# -- settings ----------------------------------------------------------------------------------

def set_tf32(enabled: bool) -> None:
    """Allow (True) or forbid (False, the default) TF32 tensor-core math for float32 products."""
    _state["tf32"] = bool(enabled)


def tf32_enabled() -> bool:
    return bool(_state["tf32"])


@contextlib.contextmanager
def tf32(enabled: bool = True):
    """Context manager: ``with swanref.backends.cupy.tf32(): ...`` runs its body with TF32."""
    old = _state["tf32"]
    _state["tf32"] = bool(enabled)
    try:
        yield
    finally:
        _state["tf32"] = old


# -- availability and lazy imports ---------------------------------------------------------------

def _cp():
    import cupy
    return cupy


def available() -> bool:
    global _available
    if _available is None:
        if os.environ.get("SWANREF_DISABLE_CUPY", "").strip() not in ("", "0"):
            _available = False
        else:
            try:
                import cupy
                _available = cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:  # no CuPy, no driver, no device
                _available = False
    return _available


def include_dir() -> pathlib.Path:
    """Directory holding ``swanref/device/grad_norm_row.hpp``.

    Looked up in order: ``$SWANREF_INCLUDE_DIR``; ``<package>/include`` (where an installed
    wheel ships it); ``<source tree>/cpp/include`` (a checkout or an editable install).
    """
    here = pathlib.Path(__file__).resolve().parent.parent  # the swanref package folder
    candidates = []
    env = os.environ.get("SWANREF_INCLUDE_DIR")
    if env:
        candidates.append(pathlib.Path(env))
    candidates += [here / "include", here.parent / "cpp" / "include"]
    for cand in candidates:
        if (cand / HEADER).is_file():
            return cand
    raise RuntimeError(
        f"swanref's CuPy backend cannot find the header {HEADER} (looked in "
        f"{', '.join(str(c) for c in candidates)}); set SWANREF_INCLUDE_DIR to the directory "
        "that holds swanref/device/")


# GradNorm: the kernel is the header's (compiled with -I to its directory).
_GRAD_NORM_SOURCE = r"""
// %(tag)s
#include <swanref/device/grad_norm_row.hpp>
"""

# Helpers of the whitening routes: self-contained, so that they need no header on disk.
_HELPER_SOURCE = r"""
namespace swanref_cupy {
// Row-major stack of square matrices (batch, m, m) whose upper triangle holds a symmetric
// matrix: copy it into the lower triangle (32x32 tiles through shared memory, coalesced).
template <class T>
__global__ void mirror_upper(T* a, int m, long long batch_stride) {
  __shared__ T tile[32][33];
  const int bx = blockIdx.x, by = blockIdx.y;
  if (by < bx) return;
  T* A = a + (long long)blockIdx.z * batch_stride;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int k = 0; k < 32; k += 8) {
    const int r = bx * 32 + ty + k, c = by * 32 + tx;
    if (r < m && c < m) tile[ty + k][tx] = A[(long long)r * m + c];
  }
  __syncthreads();
  for (int k = 0; k < 32; k += 8) {
    const int r = by * 32 + ty + k, c = bx * 32 + tx;
    if (r < m && c < m && r > c) A[(long long)r * m + c] = tile[tx][ty + k];
  }
}

// out = v * I (batch, m, m), any v: the 3I that T = 3I - Z Y starts from.
template <class T>
__global__ void fill_scaled_identity(T* out, long long total, int m, T v) {
  const long long mm = (long long)m * m;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long k = i % mm;
    out[i] = (k / m == k % m) ? v : T(0);
  }
}
}  // namespace swanref_cupy
"""

_NAMES = {
    "grad_norm": "swanref::device::grad_norm_rows<%s, 1>",
    "grad_norm_vec": "swanref::device::grad_norm_rows<%s, %d>",
    "mirror": "swanref_cupy::mirror_upper<%s>",
    "eye": "swanref_cupy::fill_scaled_identity<%s>",
}
_MODULE_OF = {"grad_norm": "grad_norm", "grad_norm_vec": "grad_norm", "mirror": "helpers",
              "eye": "helpers"}
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _kernel_name(kind, dtype):
    dtype = np.dtype(dtype)
    if kind == "grad_norm_vec":
        return _NAMES[kind] % (_CTYPE[dtype], 16 // dtype.itemsize)
    return _NAMES[kind] % _CTYPE[dtype]


def _compile(code: str, options: tuple, names: list):
    """``(how, keep_alive, {name expression: kernel})`` for ``code``.

    CuPy's RawModule appends ``-ftz=true`` to every NVRTC compilation (cupy/cuda/compiler.py,
    ``_compile_with_cache_cuda``), which would flush float32 subnormals to zero and break the
    spec's exact handling of tiny rows. So the module is compiled here through CuPy's NVRTC
    wrapper ``compile_using_nvrtc`` (no option added; ``--ftz=false`` stated explicitly) and
    loaded as a plain module. Should that private API change, RawModule is used instead and
    ``compile_path()`` says so.
    """
    cp = _cp()
    opts = options + ("--ftz=false", "--prec-div=true", "--prec-sqrt=true")
    try:
        from cupy.cuda import compiler, function
        obj, mapping = compiler.compile_using_nvrtc(code, options=opts, name_expressions=names)
        if isinstance(obj, str):
            obj = obj.encode()
        mod = function.Module()
        mod.load(obj)
        return "nvrtc", mod, {n: mod.get_function(mapping[n]) for n in names}
    except Exception as exc:  # pragma: no cover - depends on the CuPy version
        raw = cp.RawModule(code=code, options=options, name_expressions=names)
        raw.compile()
        _state["compile_error"] = repr(exc)
        return "cupy.RawModule (-ftz=true)", raw, {n: raw.get_function(n) for n in names}


def _module(which: str = "grad_norm"):
    """The compiled kernels ``which`` ("grad_norm" or "helpers") for the current device."""
    cp = _cp()
    key = (which, cp.cuda.runtime.getDevice())
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                kinds = [k for k, w in _MODULE_OF.items() if w == which]
                names = [_kernel_name(kind, dt) for kind in kinds for dt in _CTYPE]
                if which == "grad_norm":
                    inc = include_dir()
                    header = (inc / HEADER).read_bytes()
                    tag = "swanref header sha256 " + hashlib.sha256(header).hexdigest()
                    code = _GRAD_NORM_SOURCE % {"tag": tag}
                    options = ("-std=c++17", f"-I{inc}")
                else:
                    code, options = _HELPER_SOURCE, ("-std=c++17",)
                mod = _modules[key] = _compile(code, options, names)
    return mod


def compile_path() -> str:
    """How the kernels were compiled: "nvrtc" (IEEE float32 subnormals) or the RawModule
    fallback (float32 subnormals flushed to zero)."""
    return _module()[0]


_functions: dict = {}
_smem_set: dict = {}


def _kernel(kind: str, dtype):
    key = (_cp().cuda.runtime.getDevice(), kind, np.dtype(dtype))
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = _module(_MODULE_OF[kind])[2][_kernel_name(kind, dtype)]
    return fn


def _allow_dynamic_smem(fn, nbytes: int) -> None:
    """Raise the kernel's dynamic shared-memory limit (needed above 48 KiB)."""
    key = id(fn)
    if _smem_set.get(key, 48 * 1024) >= nbytes:
        return
    if hasattr(fn, "max_dynamic_shared_size_bytes"):
        fn.max_dynamic_shared_size_bytes = nbytes
    else:
        from cupy_backends.cuda.api import driver
        attr = getattr(driver, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8)
        driver.funcSetAttribute(fn.ptr, attr, nbytes)
    _smem_set[key] = nbytes


# -- cuBLAS plumbing ----------------------------------------------------------------------------

def _cublas():
    from cupy_backends.cuda.libs import cublas
    return cublas


_CUBLAS_DEFAULT_MATH = 0
_CUBLAS_TF32_TENSOR_OP_MATH = 3


@contextlib.contextmanager
def _blas_mode(dtype):
    """Host pointer mode, and TF32 on only if asked for (float32 only), restored afterwards."""
    cp = _cp()
    cublas = _cublas()
    handle = cp.cuda.device.get_cublas_handle()
    old_ptr = cublas.getPointerMode(handle)
    old_math = cublas.getMathMode(handle)
    math = (_CUBLAS_TF32_TENSOR_OP_MATH if (_state["tf32"] and np.dtype(dtype) == np.float32)
            else _CUBLAS_DEFAULT_MATH)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    cublas.setMathMode(handle, math)
    try:
        yield handle
    finally:
        cublas.setMathMode(handle, old_math)
        cublas.setPointerMode(handle, old_ptr)


def _scalar(value, dtype):
    arr = np.array(value, dtype=dtype)
    return arr, arr.ctypes.data


def _gemm(handle, a, b, out, alpha=1.0, beta=0.0, transb=False):
    """``out = alpha * a @ op(b) + beta * out`` on C-contiguous (batch, ., .) stacks.

    a: (B, M, K); b: (B, K, N), or (B, N, K) with ``transb`` (then op(b) = b^T); out: (B, M, N).
    Row-major data is column-major transposed, so cuBLAS computes out^T = op(b)^T a^T.
    """
    cublas = _cublas()
    batch, M, K = a.shape
    N = out.shape[-1]
    dtype = a.dtype
    al, al_ptr = _scalar(alpha, dtype)
    be, be_ptr = _scalar(beta, dtype)
    opb = cublas.CUBLAS_OP_T if transb else cublas.CUBLAS_OP_N
    ldb = K if transb else N
    if batch == 1:
        fn = cublas.sgemm if dtype == np.float32 else cublas.dgemm
        fn(handle, opb, cublas.CUBLAS_OP_N, N, M, K, al_ptr, b.data.ptr, ldb, a.data.ptr, K,
           be_ptr, out.data.ptr, N)
    else:
        fn = (cublas.sgemmStridedBatched if dtype == np.float32
              else cublas.dgemmStridedBatched)
        fn(handle, opb, cublas.CUBLAS_OP_N, N, M, K, al_ptr, b.data.ptr, ldb, K * N,
           a.data.ptr, K, M * K, be_ptr, out.data.ptr, N, M * N, batch)
    del al, be
    return out


def _mirror_upper(A):
    """Copy the upper triangle of each (m, m) slice of the C-contiguous stack A into its lower."""
    batch, m, _ = A.shape
    tiles = (m + 31) // 32
    kern = _kernel("mirror", A.dtype)
    for start in range(0, batch, 65535):
        part = A[start:start + 65535]
        kern((tiles, tiles, part.shape[0]), (32, 8, 1), (part, np.int32(m), np.int64(m * m)))


def _gram(handle, Gs):
    """``Gs @ Gs^T`` for a C-contiguous (B, m, n) stack: SYRK for one matrix, batched GEMM else."""
    cp = _cp()
    cublas = _cublas()
    batch, m, n = Gs.shape
    A = cp.empty((batch, m, m), dtype=Gs.dtype)
    syrk = getattr(cublas, "ssyrk" if Gs.dtype == np.float32 else "dsyrk", None)
    if batch == 1 and syrk is not None:
        # Column-major view of row-major Gs is X = Gs^T (n x m, ld n); A = X^T X (trans = T).
        # cuBLAS fills its lower triangle = the row-major upper triangle; mirror it.
        al, al_ptr = _scalar(1.0, Gs.dtype)
        be, be_ptr = _scalar(0.0, Gs.dtype)
        syrk(handle, cublas.CUBLAS_FILL_MODE_LOWER, cublas.CUBLAS_OP_T, m, n, al_ptr,
             Gs.data.ptr, n, be_ptr, A.data.ptr, m)
        del al, be
        _mirror_upper(A)
    else:
        _gemm(handle, Gs, Gs, A, transb=True)
    return A


def _scaled_identity(shape, dtype, value):
    cp = _cp()
    out = cp.empty(shape, dtype=dtype)
    total = out.size
    if total:
        threads = 256
        blocks = min((total + threads - 1) // threads, 65535 * 4)
        _kernel("eye", dtype)((blocks,), (threads,),
                              (out, np.int64(total), np.int32(shape[-1]),
                               np.dtype(dtype).type(value)))
    return out


# -- helpers shared by the operators -----------------------------------------------------------

def _pow2_normalise(x, axes):
    """``x * 2**-e`` per slice over ``axes`` so that max|x| lies in [0.5, 1) (exact)."""
    cp = _cp()
    amax = cp.max(cp.abs(x), axis=axes, keepdims=True)
    _, e = cp.frexp(amax)
    return cp.ldexp(x, -e)


def _stack(G):
    """C-contiguous (B, m, n) view or copy of G (B = product of the batch dimensions)."""
    cp = _cp()
    m, n = G.shape[-2:]
    return cp.ascontiguousarray(G).reshape((-1, m, n))


# -- 2. GradNorm -----------------------------------------------------------------------------

#: Block size (docs/performance_gpu.md has the measurements behind it): up to 256 threads with
#: at least 16 entries each, and enough threads that the blocks which fit an SM's shared memory
#: keep at least 768 threads (24 warps) resident; at most 512.
_GN_ITEMS_PER_THREAD = 16
_GN_BASE_THREADS = 256
_GN_RESIDENT_THREADS = 768
_GN_MAX_THREADS = 512


def _gn_threads(n: int, row_bytes: int, use_smem: bool) -> int:
    base = 32 * max(1, min(_GN_BASE_THREADS // 32, -(-n // (32 * _GN_ITEMS_PER_THREAD))))
    if use_smem:
        per_sm = _device_attr("smem_per_sm", "sharedMemPerMultiprocessor", 228 * 1024)
        blocks = max(1, min(32, per_sm // (row_bytes + 1024)))
    else:
        blocks = 32
    occupancy = 32 * -(-_GN_RESIDENT_THREADS // (32 * blocks))
    return min(_GN_MAX_THREADS, max(base, occupancy))


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


def _device_attr(label: str, prop: str, default: int) -> int:
    cp = _cp()
    dev = cp.cuda.runtime.getDevice()
    key = (label, dev)
    if key not in _modules:
        props = cp.cuda.runtime.getDeviceProperties(dev)
        _modules[key] = int(props.get(prop, default))
    return _modules[key]


def _smem_optin_limit() -> int:
    return _device_attr("smem_optin", "sharedMemPerBlockOptin", 48 * 1024)


def grad_norm(G, eps: float, *, work_in_shared=None, threads=None, vector=True):
    """Row standardisation over the last axis (spec 2.1): one fused kernel, one block per row.

    Keyword arguments are tuning/benchmark knobs: ``work_in_shared`` None keeps the row in
    shared memory whenever it fits the device's opt-in limit, False in the output row (L1/L2);
    ``threads`` sets the block size (a multiple of 32, at most 1024); ``vector`` False forbids
    the 16-byte vector accesses.
    """
    cp = _cp()
    dtype = G.dtype
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
    # 16-byte vector accesses when every row starts 16-byte aligned and n fills whole vectors
    width = 16 // dtype.itemsize
    vector = (vector and col_stride == 1 and n % width == 0 and X.data.ptr % 16 == 0
              and (row_stride * dtype.itemsize) % 16 == 0)
    kern = _kernel("grad_norm_vec" if vector else "grad_norm", dtype)
    work_bytes = n * dtype.itemsize
    use_smem = work_bytes + 99 * dtype.itemsize <= _smem_optin_limit()
    if work_in_shared is not None:
        use_smem = use_smem and bool(work_in_shared)
    if use_smem and work_bytes > 48 * 1024:
        try:
            _allow_dynamic_smem(kern, work_bytes)
        except Exception:  # opt-in refused: keep the row in the output instead
            use_smem = False
    smem = work_bytes if use_smem else 0
    if threads is None:
        threads = _gn_threads(n, work_bytes, use_smem)
    grid = min(rows, 2**31 - 1)
    kern((grid,), (threads,),
         (X, np.int64(rows), np.int64(n), np.int64(row_stride), np.int64(col_stride), out,
          dtype.type(eps), np.int32(1 if use_smem else 0)),
         shared_mem=smem)
    return out


# -- 3.1 / 3.2 Exact whitening ---------------------------------------------------------------

def _host_fallback(fn_name, G, *args):
    """Recompute on the host with the reference (cuSOLVER reported a failure)."""
    cp = _cp()
    from swanref.backends import reference
    return cp.asarray(getattr(reference, fn_name)(cp.asnumpy(G), *args))


def _linalg_raise():
    import cupyx
    return cupyx.errstate(linalg="raise")


def whiten_svd(G, sigma_rtol: float):
    """``U_r V_r^T`` from the thin SVD (cuSOLVER gesvd), ``s_i > sigma_rtol * s_1`` (spec 3.1).

    Each slice is first scaled by an exact power of two (max|G| in [0.5, 1)): cuSOLVER, unlike
    LAPACK's gesdd, does not rescale matrices whose squares under- or overflow.
    """
    cp = _cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    Gs = _stack(_pow2_normalise(G, (-2, -1)))
    batch, m, n = Gs.shape
    try:
        with _linalg_raise():
            if batch == 1:
                U, s, Vt = (x[None] for x in cp.linalg.svd(Gs[0], full_matrices=False))
            else:
                U, s, Vt = cp.linalg.svd(Gs, full_matrices=False)
    except np.linalg.LinAlgError:
        return _host_fallback("whiten_svd", G, sigma_rtol)
    keep = s > s.dtype.type(sigma_rtol) * s[..., :1]
    Uk = cp.ascontiguousarray(U * keep[..., None, :].astype(U.dtype))
    Vt = cp.ascontiguousarray(Vt)
    r = Uk.shape[-1]
    out = cp.empty((batch, m, n), dtype=G.dtype)
    with _blas_mode(G.dtype) as handle:
        _gemm(handle, Uk, Vt.reshape(batch, r, n), out)
    return out.reshape(G.shape)


def _eigh_stack(A):
    """Eigen-decomposition of a (B, m, m) stack with cuSOLVER syevd.

    CuPy sends stacks to the batched Jacobi solver (syevj), which is fast for small matrices
    but, measured on an H100, 80 ms instead of 11 ms and 200x less accurate (float32) than
    syevd at m = 1024: stacks of matrices larger than 32 go through syevd one slice at a time.
    """
    cp = _cp()
    batch, m, _ = A.shape
    if batch == 1:
        lam, Q = cp.linalg.eigh(A[0])
        return lam[None], Q[None]
    if m <= 32:
        return cp.linalg.eigh(A)
    parts = [cp.linalg.eigh(A[i]) for i in range(batch)]
    return cp.stack([p[0] for p in parts]), cp.stack([p[1] for p in parts])


def whiten_eigh(G, lambda_rtol: float):
    """``Q_r diag(l_r)^(-1/2) Q_r^T G`` from cuSOLVER syevd of ``G G^T`` (spec 3.2)."""
    cp = _cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    dtype = G.dtype
    Gs = _stack(_pow2_normalise(G, (-2, -1)))
    batch, m, n = Gs.shape
    with _blas_mode(dtype) as handle:
        A = _gram(handle, Gs)
    try:
        with _linalg_raise():
            lam, Q = _eigh_stack(A)
    except np.linalg.LinAlgError:
        return _host_fallback("whiten_eigh", G, lambda_rtol)
    keep = lam > dtype.type(lambda_rtol) * lam[..., -1:]
    inv_sqrt = cp.where(keep, 1 / cp.sqrt(cp.where(keep, lam, 1)), 0).astype(dtype)
    QD = cp.ascontiguousarray(Q * inv_sqrt[..., None, :])
    Qc = cp.ascontiguousarray(Q)
    P = cp.empty((batch, m, m), dtype=dtype)
    out = cp.empty((batch, m, n), dtype=dtype)
    with _blas_mode(dtype) as handle:
        _gemm(handle, QD, Qc, P, transb=True)
        _gemm(handle, P, Gs, out)
    return out.reshape(G.shape)


# -- 3.3 / 3.4 Iterative whitening -----------------------------------------------------------

def _scaled_gram(handle, G, scaling: str):
    """``(Gs, A, c)`` of spec 3.3 on a (B, m, n) stack; c has shape (B, 1, 1)."""
    cp = _cp()
    if scaling not in ("gram_fro", "grad_fro", "none"):
        raise ValueError(f"unknown scaling {scaling!r}")
    Gs = _stack(G if scaling == "none" else _pow2_normalise(G, (-2, -1)))
    A = _gram(handle, Gs)
    if scaling == "gram_fro":
        c = cp.sqrt(cp.sum(A * A, axis=(-2, -1)))
    elif scaling == "grad_fro":
        c = cp.sum(Gs * Gs, axis=(-2, -1))
    else:
        c = cp.ones(Gs.shape[0], dtype=G.dtype)
    c = cp.where(c > 0, c, 1).astype(G.dtype)
    return Gs, A, c[:, None, None]


def newton_schulz_flops(m: int, n: int, steps: int, batch: int = 1) -> float:
    """Floating-point operations this backend executes for whiten_newton_schulz."""
    gram = (m * m * n if batch == 1 else 2 * m * m * n)
    iters = 2 * m ** 3 * (1 + 3 * max(steps - 1, 0)) if steps else 0
    return float(batch * (gram + iters + 2 * m * m * n))


def whiten_newton_schulz(G, steps: int, beta: float, scaling: str):
    """The coupled Newton-Schulz iteration for ``A^(-1/2)`` applied to ``G`` (spec 3.3)."""
    cp = _cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    dtype = G.dtype
    b = float(dtype.type(beta))
    with _blas_mode(dtype) as handle:
        Gs, A, c = _scaled_gram(handle, G, scaling)
        batch, m, n = Gs.shape
        Y = A
        Y /= c
        if steps == 0:
            Z = None
        else:
            # Step 1 with Z0 = I: T = 3I - Y, Y1 = b * (Y T), Z1 = b * (T I) = b * T.
            T = _scaled_identity(Y.shape, dtype, 3.0)
            T -= Y
            Yn = cp.empty_like(Y)
            _gemm(handle, Y, T, Yn, alpha=b)
            Z = T
            Z *= dtype.type(b)
            Y = Yn
            Zn = cp.empty_like(Y)
            Yn = cp.empty_like(Y)
            three_eye = _scaled_identity(Y.shape, dtype, 3.0) if steps > 1 else None
            T = cp.empty_like(Y)
            for _ in range(steps - 1):
                T[...] = three_eye
                _gemm(handle, Z, Y, T, alpha=-1.0, beta=1.0)  # T = 3I - Z Y
                _gemm(handle, Y, T, Yn, alpha=b)              # Y <- b Y T
                _gemm(handle, T, Z, Zn, alpha=b)              # Z <- b T Z
                Y, Yn = Yn, Y
                Z, Zn = Zn, Z
        if Z is None:
            out = Gs.copy()
        else:
            out = cp.empty_like(Gs)
            _gemm(handle, Z, Gs, out)
    out /= cp.sqrt(c)
    return out.reshape(G.shape)


def whiten_nsds(G, steps: int, beta: float, scaling: str):
    """Newton-Schulz with diagonal substitution (reconstructed; spec 3.4)."""
    cp = _cp()
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    dtype = G.dtype
    with _blas_mode(dtype) as handle:
        Gs, A, c = _scaled_gram(handle, G, scaling)
    y = cp.diagonal(A, axis1=-2, axis2=-1) / c[..., 0]
    z = cp.ones_like(y)
    b = dtype.type(beta)
    for _ in range(steps):
        t = 3 - z * y
        y, z = b * y * t, b * t * z
    out = z[..., :, None] * Gs / cp.sqrt(c)
    return out.astype(dtype, copy=False).reshape(G.shape)


def whiten_polynomial(G, coefficients, norm: str, eps: float, norm_scale: float):
    """Muon-style polynomial Newton-Schulz of the presets (m <= n; docs/presets.md).

    Same function as ``cpp/include/swanref/polynomial.hpp``: X = G / N(||G||_F) with the
    preset's normalisation (squares formed in the dtype, as the sources do), then per
    (a, b, c): A = X X^T, B = b A + c A A, X <- a X + B X (cuBLAS; TF32 per set_tf32).
    """
    cp = _cp()
    if norm not in ("add", "clamp", "none", "safe"):
        raise ValueError(f"norm must be one of 'add', 'clamp', 'none', 'safe', got {norm!r}")
    coef = np.asarray(coefficients, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(coef)):
        raise ValueError("coefficients must be finite")
    if G.shape[-2] > G.shape[-1]:
        raise ValueError("whiten_polynomial expects m <= n (pass the transpose of tall matrices)")
    if G.size == 0:
        return cp.empty(G.shape, G.dtype)
    dtype = G.dtype
    X = _stack(G).copy()
    nrm = cp.sqrt(cp.sum(X * X, axis=(-2, -1), keepdims=True))
    scaled = dtype.type(norm_scale) * nrm
    if norm == "add":
        denom = scaled + dtype.type(eps)
    elif norm == "clamp":
        denom = cp.maximum(scaled, dtype.type(eps))
    else:
        denom = nrm
    with np.errstate(invalid="ignore", divide="ignore"):
        X = X / denom
    if norm == "safe":
        X = cp.where(nrm > 0, X, 0).astype(dtype)
    batch, m, n = X.shape
    with _blas_mode(dtype) as handle:
        A = cp.empty((batch, m, m), dtype=dtype)
        B = cp.empty_like(A)
        Xn = cp.empty_like(X)
        for a, b, c in coef:
            _gemm(handle, X, X, A, transb=True)        # A = X X^T
            B[...] = A
            B *= dtype.type(b)
            if c != 0.0:
                _gemm(handle, A, A, B, alpha=float(c), beta=1.0)  # B = b A + c A A
            Xn[...] = X
            _gemm(handle, B, X, Xn, beta=float(a))     # X <- a X + B X
            X, Xn = Xn, X
    return X.reshape(G.shape)


# -- 5. SinkGD ----------------------------------------------------------------------------------

def _normalise_lines(X, axis: int, target: float):
    """Scale every line along ``axis`` to l2 norm ``target``; zero lines stay zero."""
    cp = _cp()
    Xs = _pow2_normalise(X, axis)
    norm = cp.sqrt(cp.sum(Xs * Xs, axis=axis, keepdims=True))
    # as the reference: the ratio is formed in float64 (NumPy promotes its float64 target)
    ratio = target / cp.where(norm > 0, norm, 1).astype(cp.float64)
    return cp.where(norm > 0, Xs * ratio, 0).astype(X.dtype)


def sinkgd(G, iters: int):
    """SR-Sinkhorn: ``iters`` alternating row/column l2 normalisations (spec 5)."""
    cp = _cp()
    m, n = G.shape[-2:]
    X = cp.array(G, copy=True)
    for _ in range(iters):
        X = _normalise_lines(X, -1, float(np.sqrt(n)))
        X = _normalise_lines(X, -2, float(np.sqrt(m)))
    return X
