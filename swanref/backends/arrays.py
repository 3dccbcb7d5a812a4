"""Conversion between the caller's array kind and the arrays a backend computes on.

``to_backend(G, backend)`` returns ``(array, backend_name, restore)``: the array to compute on,
the backend that will compute, and a function turning a result back into the caller's kind, on
the caller's device.

* NumPy arrays (and anything ``np.asarray`` accepts: lists, scalars...) go to the CPU default
  backend (the C++ core when built, else the reference) without touching any other framework.
* CuPy arrays go to the ``"cupy"`` backend and come back as CuPy arrays.
* Any other object speaking DLPack (``__dlpack__`` + ``__dlpack_device__``: PyTorch and JAX
  tensors, ...): a CPU one is wrapped zero-copy with ``np.from_dlpack`` and computed by the CPU
  default backend; a CUDA one is wrapped zero-copy with ``cupy.from_dlpack`` and computed by the
  ``"cupy"`` backend. The result goes back through the framework's own ``from_dlpack``
  (``torch.from_dlpack``, ``jax.numpy.from_dlpack``, or ``__array_namespace__().from_dlpack``),
  so a torch CUDA tensor comes back as a torch CUDA tensor on the same device. bfloat16 tensors
  (which NumPy and CuPy cannot hold) are widened to float32 inside their framework first and
  the result is rounded back to bfloat16 there; tensors that require grad are detached.
* An explicit ``backend`` moves data when it must: ``backend="cupy"`` with host input copies it
  to the current GPU and the result back to the host; a CPU backend with GPU input copies it to
  the host and the result back to the GPU. Both are copies, meant for comparisons.
"""
from __future__ import annotations

import sys

import numpy as np

from swanref.backends import registry as _backends
from swanref.spec.validate import normalise_host

_DL_CPU = 1
_DL_CUDA = 2
_DL_CUDA_HOST = 3
_DL_CUDA_MANAGED = 13


def _identity(x):
    return x


def _root(obj) -> str:
    return type(obj).__module__.split(".")[0]


def _is_cupy(obj) -> bool:
    return _root(obj) == "cupy" and "cupy" in sys.modules


def _cupy():
    import cupy
    return cupy


# -- results back to the caller ------------------------------------------------------------------

def _to_host(x):
    return x.get() if _root(x) == "cupy" else x


def _to_device(device_id):
    def restore(x):
        cp = _cupy()
        if device_id is None:
            return cp.asarray(x)
        with cp.cuda.Device(device_id):
            return cp.asarray(x)
    return restore


def _framework_restore(G, on_gpu: bool, cast_back):
    """A function giving a result back as G's framework's array (same device as G)."""
    root = _root(G)
    if root == "torch":
        def from_dlpack(x):
            import torch
            if _root(x) == "cupy":
                return _cupy_to_torch(x, torch, _cupy())
            return torch.from_dlpack(x)
    elif root in ("jax", "jaxlib"):
        def from_dlpack(x):
            import jax.numpy as jnp
            xp = sys.modules["cupy"] if _root(x) == "cupy" else np
            return jnp.from_dlpack(xp.ascontiguousarray(x))  # JAX wants row-major buffers
    else:
        ns = getattr(G, "__array_namespace__", None)
        mod = sys.modules.get(root)
        if ns is not None:
            from_dlpack = ns().from_dlpack
        elif mod is not None and hasattr(mod, "from_dlpack"):
            from_dlpack = mod.from_dlpack
        else:
            from_dlpack = _identity  # unknown framework: give back the NumPy/CuPy array

    def restore(x):
        if on_gpu:
            x = _ensure_cupy_on_current(x)
        out = from_dlpack(x)
        return cast_back(out) if cast_back is not None else out
    return restore


def _ensure_cupy_on_current(x):
    return x if _root(x) == "cupy" else _cupy().asarray(x)


def _compose(first, second):
    return lambda x: second(first(x))


# -- framework tensors in ---------------------------------------------------------------------------

def _widen_bfloat16(G):
    """(G as float32, function rounding a float32 result back to G's dtype) for bfloat16 G."""
    dtype = getattr(G, "dtype", None)
    if "bfloat16" not in str(dtype):
        return G, None
    root = _root(G)
    if root == "torch":
        return G.float(), (lambda out: out.to(dtype))
    if hasattr(G, "astype"):  # JAX and other array-API arrays
        return G.astype("float32"), (lambda out: out.astype(dtype))
    return G, None


def bfloat16_words(G, backend):
    """``(words, restore)`` for a PyTorch bfloat16 CUDA tensor bound for the CuPy backend: its
    16-bit words as a zero-copy uint16 CuPy array (CuPy has no bfloat16 dtype) and a function
    giving uint16 words back as a bfloat16 tensor on G's device; None for every other input
    (the caller then takes the general path, which widens to float32)."""
    if backend not in (None, "cupy") or _root(G) != "torch" or not getattr(G, "is_cuda", False):
        return None
    import torch
    if G.dtype != torch.bfloat16 or not _backends.is_available("cupy"):
        return None
    if G.requires_grad:
        G = G.detach()
    cp = _cupy()
    if G.device.index != cp.cuda.runtime.getDevice():
        return None  # the general path computes on the tensor's own device
    words = _torch_to_cupy(G.view(torch.int16), torch, cp).view(cp.uint16)
    return words, _torch_bfloat16_restore


def _torch_bfloat16_restore(out):
    import torch
    cp = _cupy()
    return _cupy_to_torch(out.view(cp.int16), torch, cp).view(torch.bfloat16)


# -- torch CUDA tensors on the default streams: DLPack capsules without the stream handshake -----
#
# torch.Tensor.__dlpack__(stream=...) and torch.from_dlpack(obj) run a Python stream handshake
# (current stream objects, an event when the streams differ) on every exchange. When torch's
# and CuPy's current streams are both the legacy default stream the handshake does nothing, so
# the capsules are exchanged directly (torch.utils.dlpack's C functions); any other stream
# takes the general path and its handshake.

class _Capsule:
    """A DLPack producer handing over a capsule made beforehand (device (type, id))."""
    __slots__ = ("capsule", "device")

    def __init__(self, capsule, device):
        self.capsule, self.device = capsule, device

    def __dlpack__(self, stream=None, **_):
        return self.capsule

    def __dlpack_device__(self):
        return self.device


_fast = {"on": True}


def _default_streams(torch, cp, index) -> bool:
    if cp.cuda.get_current_stream().ptr != 0:
        return False
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return (raw(index) if raw is not None else torch.cuda.current_stream(index).cuda_stream) == 0


def _torch_to_cupy(G, torch, cp):
    """Zero-copy CuPy view of the CUDA tensor G (on CuPy's current device), by capsule when
    both frameworks are on the default stream, else through cupy.from_dlpack's handshake."""
    index = G.device.index
    if _fast["on"] and _default_streams(torch, cp, index):
        try:
            return cp.from_dlpack(_Capsule(torch.utils.dlpack.to_dlpack(G), (_DL_CUDA, index)))
        except Exception:  # an exchange this CuPy/torch pair refuses: handshake from now on
            _fast["on"] = False
    return cp.from_dlpack(G)


def _cupy_to_torch(x, torch, cp):
    """The CuPy array x as a torch CUDA tensor (zero-copy), as :func:`_torch_to_cupy`."""
    if _fast["on"] and _default_streams(torch, cp, x.device.id):
        try:
            return torch.utils.dlpack.from_dlpack(x.__dlpack__(stream=-1))  # -1: no sync asked
        except Exception:
            _fast["on"] = False
    return torch.from_dlpack(x)


def _dlpack_device(G):
    try:
        dev_type, dev_id = G.__dlpack_device__()
        return int(dev_type), int(dev_id)
    except Exception:
        return None


def _from_framework(G, backend):
    """DLPack input that is neither NumPy nor CuPy: (array, backend name, restore)."""
    if getattr(G, "requires_grad", False) and hasattr(G, "detach"):
        G = G.detach()
    dev = _dlpack_device(G)
    on_gpu = dev is not None and dev[0] in (_DL_CUDA, _DL_CUDA_MANAGED)
    work, cast_back = _widen_bfloat16(G)
    restore = _framework_restore(G, on_gpu, cast_back)
    if on_gpu:
        cp = _cupy()
        if _root(work) == "torch" and dev[1] == cp.cuda.runtime.getDevice():
            import torch
            arr = _torch_to_cupy(work, torch, cp)
        else:
            with cp.cuda.Device(dev[1]):
                arr = cp.from_dlpack(work)
        return _gpu_array(arr, backend, restore)
    try:
        arr = np.from_dlpack(work)
    except (BufferError, TypeError, RuntimeError):
        arr = np.asarray(work)  # e.g. a framework that exports only a copy
    return _host_array(arr, backend, restore)


# -- dispatch -------------------------------------------------------------------------------------

def _host_array(arr, backend, restore):
    # masks rejected, subclasses/byte order/alignment normalised before any backend (a GPU
    # copy included) sees the data (spec 6.1)
    arr = normalise_host(arr)
    name = backend if backend is not None else _backends.default_cpu()
    _backends.get(name)
    if name != "cupy":
        return arr, name, restore
    # explicit GPU backend for host data: copy up, copy the result back down
    dtype = arr.dtype
    widen = dtype.name == "bfloat16" or (dtype.kind == "f" and dtype not in _CUPY_FLOATS)
    if dtype.kind not in "fiub" and not widen:
        return arr, name, restore  # the input policy rejects it before any GPU work
    if widen:
        # bfloat16 (ml_dtypes) and other floats CuPy cannot hold: widen on the host (the
        # compute dtype anyway), round the result back on the host
        up = arr.astype(np.float32)
        return _cupy().asarray(up), name, _compose(
            _compose(_to_host, lambda x: x.astype(dtype)), restore)
    return _cupy().asarray(arr), name, _compose(_to_host, restore)


_CUPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _gpu_array(arr, backend, restore):
    name = backend if backend is not None else "cupy"
    _backends.get(name)
    device_id = arr.device.id
    if name == "cupy":
        cp = _cupy()
        if cp.cuda.runtime.getDevice() != device_id:
            # compute on the array's own device; the current device is restored by `restore`
            prev = cp.cuda.runtime.getDevice()
            cp.cuda.runtime.setDevice(device_id)

            def back(x, _prev=prev):
                try:
                    return restore(x)
                finally:
                    cp.cuda.runtime.setDevice(_prev)
            return arr, name, back
        return arr, name, restore
    # explicit CPU backend for GPU data: copy down, copy the result back up
    return arr.get(), name, _compose(_to_device(device_id), restore)


def to_backend(G, backend: str | None):
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be None or a backend name (str), got {backend!r}")
    if isinstance(G, np.ndarray):  # the common case first: no framework is looked at
        return _host_array(G, backend, _identity)
    if _is_cupy(G):
        return _gpu_array(G, backend, _identity)
    if hasattr(G, "__dlpack__") and hasattr(G, "__dlpack_device__"):
        return _from_framework(G, backend)
    try:
        arr = np.asarray(G)
    except Exception:
        # not an array: let the input policy raise its TypeError
        name = backend if backend is not None else _backends.default_cpu()
        _backends.get(name)
        return G, name, _identity
    return _host_array(arr, backend, _identity)
