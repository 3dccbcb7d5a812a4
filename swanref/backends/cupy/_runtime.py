"""Process-wide state of the CuPy backend: settings, lazy CuPy import, device properties."""
from __future__ import annotations

import contextlib
import os
import threading

from swanref.spec.validate import flag


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


#: tf32: cuBLAS may round float32 operands to TF32 (off: every float32 product is float32).
#: graphs: replay small iterative whitening calls from captured CUDA graphs (graphs.py; off by
#: default: on an H100 the replays were no faster, the calls being GPU-bound, and their buffers
#: stay allocated). bf16_scan: the bfloat16-word finite flag and huge-value shift by the two
#: scan kernels (interop.py; off: the elementwise route, their definition).
state = {"tf32": _env_flag("SWANREF_CUPY_TF32", "0"),
         "graphs": _env_flag("SWANREF_CUPY_GRAPHS", "0"),
         "bf16_scan": _env_flag("SWANREF_CUPY_BF16_SCAN", "1"),
         "gram": os.environ.get("SWANREF_CUPY_GRAM", "auto").strip().lower()}
lock = threading.Lock()
_available: list = []
_props: dict = {}


def cp():
    import cupy
    return cupy


def available() -> bool:
    if not _available:
        ok = False
        if os.environ.get("SWANREF_DISABLE_CUPY", "").strip() in ("", "0"):
            try:
                import cupy
                ok = cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:  # no CuPy, no driver, no device
                ok = False
        _available.append(ok)
    return _available[0]


def device() -> int:
    return cp().cuda.runtime.getDevice()


def device_attr(prop: str, default: int) -> int:
    dev = device()
    key = (prop, dev)
    if key not in _props:
        props = cp().cuda.runtime.getDeviceProperties(dev)
        _props[key] = int(props.get(prop, default))
    return _props[key]


# -- settings ----------------------------------------------------------------------------------

def set_tf32(enabled: bool) -> None:
    """Allow (True) or forbid (False, the default) TF32 tensor-core math for float32 products."""
    state["tf32"] = flag(enabled, "enabled")


def tf32_enabled() -> bool:
    return bool(state["tf32"])


@contextlib.contextmanager
def tf32(enabled: bool = True):
    """Context manager: ``with swanref.backends.cupy.tf32(): ...`` runs its body with TF32."""
    enabled = flag(enabled, "enabled")
    old = state["tf32"]
    state["tf32"] = enabled
    try:
        yield
    finally:
        state["tf32"] = old


def set_graphs(enabled: bool) -> None:
    """Allow (True) or forbid (False, the default) CUDA-graph replay of small iterative calls."""
    state["graphs"] = flag(enabled, "enabled")
