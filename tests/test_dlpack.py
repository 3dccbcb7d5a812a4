"""Arrays of other frameworks in and out through DLPack (swanref/_arrays.py, docs/gpu.md).

* A minimal DLPack-only object (no framework needed) checks the CPU path everywhere.
* PyTorch CPU tensors: skipped without torch. PyTorch CUDA tensors: skipped without torch with
  CUDA, or without the CuPy backend. JAX arrays likewise.
Every result is compared with the NumPy reference backend on the same numbers.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import swanref
from swanref.backends import arrays as _arrays
from swanref.backends import registry as _backends
from swanref.backends import reference as R

# JAX must not grab most of the GPU memory when it shares the device with CuPy and PyTorch.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


class DLPackOnly:
    """An array of an unknown framework: only the DLPack protocol (and dtype) is offered."""

    def __init__(self, arr):
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()

    @property
    def dtype(self):
        return self._arr.dtype


def _rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# -- no framework at all ---------------------------------------------------------------------------

def test_numpy_input_touches_no_framework():
    before = {m for m in ("torch", "jax", "cupy") if m in sys.modules}
    G = np.random.default_rng(0).standard_normal((4, 9))
    arr, name, restore = _arrays.to_backend(G, None)
    assert arr is G and name == _backends.default_cpu()
    assert restore(G) is G
    swanref.grad_norm(G)
    assert {m for m in ("torch", "jax", "cupy") if m in sys.modules} == before


def test_dlpack_only_object_is_zero_copy_on_cpu():
    G = np.random.default_rng(1).standard_normal((5, 12))
    arr, name, _ = _arrays.to_backend(DLPackOnly(G), None)
    assert isinstance(arr, np.ndarray) and np.shares_memory(arr, G)
    out = swanref.grad_norm(DLPackOnly(G), eps=1e-6)
    assert np.max(np.abs(np.asarray(out) - R.grad_norm(G, 1e-6))) <= 1e-13
    w = swanref.whiten(DLPackOnly(G), "svd")
    assert _rel(w, swanref.whiten(G, "svd", backend="reference")) <= 1e-12


# -- PyTorch on the CPU ------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_cpu_round_trip(dtype):
    torch = _torch()
    G = np.random.default_rng(2).standard_normal((3, 8, 20)).astype(dtype)
    t = torch.from_numpy(G.copy())
    arr, _, _ = _arrays.to_backend(t, None)
    assert isinstance(arr, np.ndarray) and arr.ctypes.data == t.data_ptr()  # zero-copy
    for fn, ref in [(lambda x: swanref.grad_norm(x, eps=1e-6), R.grad_norm(G, 1e-6)),
                    (lambda x: swanref.whiten(x, "svd"), swanref.whiten(G, "svd", backend="reference")),
                    (lambda x: swanref.whiten(x, "newton_schulz"),
                     swanref.whiten(G, "newton_schulz", backend="reference"))]:
        out = fn(t)
        assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
        assert str(out.dtype) == f"torch.{dtype}" and tuple(out.shape) == G.shape
        assert _rel(out.numpy(), ref) <= (1e-12 if dtype == "float64" else 1e-5)


def test_torch_cpu_non_contiguous_requires_grad_and_bfloat16():
    torch = _torch()
    G = np.random.default_rng(3).standard_normal((20, 9))
    t = torch.tensor(G, requires_grad=True)
    out = swanref.grad_norm(t.T)  # a transposed view of a tensor that requires grad
    assert isinstance(out, torch.Tensor)
    assert np.max(np.abs(out.numpy() - R.grad_norm(np.ascontiguousarray(G.T), 0.0))) <= 1e-13
    tb = torch.tensor(G, dtype=torch.bfloat16)
    ob = swanref.grad_norm(tb)
    assert ob.dtype == torch.bfloat16
    ref = R.grad_norm(tb.float().numpy(), 0.0)
    assert np.max(np.abs(ob.float().numpy() - ref)) <= 2 ** -7


# -- PyTorch on the GPU -------------------------------------------------------------------------------

def _torch_cuda():
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    if not _backends.is_available("cupy"):
        pytest.skip("the CuPy backend is not available (no CuPy or no GPU)")
    return torch


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", ["grad_norm", "svd", "eigh", "newton_schulz", "nsds", "swan",
                                "sinkgd"])
def test_torch_cuda_in_torch_cuda_out(dtype, op):
    torch = _torch_cuda()
    rng = np.random.default_rng(4)
    G = rng.standard_normal((2, 24, 56)).astype(dtype)
    t = torch.from_numpy(G).cuda()
    calls = {
        "grad_norm": lambda x, **kw: swanref.grad_norm(x, eps=1e-6, **kw),
        "svd": lambda x, **kw: swanref.whiten(x, "svd", **kw),
        "eigh": lambda x, **kw: swanref.whiten(x, "eigh", **kw),
        "newton_schulz": lambda x, **kw: swanref.whiten(x, "newton_schulz", **kw),
        "nsds": lambda x, **kw: swanref.whiten(x, "nsds", **kw),
        "swan": lambda x, **kw: swanref.swan_update(x, lr=0.1, **kw),
        "sinkgd": lambda x, **kw: swanref.sinkgd_update(x, **kw),
    }
    out = calls[op](t)
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.device == t.device
    assert out.dtype == t.dtype and tuple(out.shape) == G.shape
    ref = calls[op](G, backend="reference")
    tol = {"float64": 1e-9, "float32": 2e-3 if op in ("eigh", "swan") else 1e-4}[dtype]
    assert _rel(out.cpu().numpy(), ref) <= tol


def test_torch_cuda_zero_copy_non_contiguous_and_bfloat16():
    torch = _torch_cuda()
    import cupy as cp
    G = np.random.default_rng(5).standard_normal((30, 50))
    t = torch.from_numpy(G).cuda()
    arr, name, _ = _arrays.to_backend(t, None)
    assert name == "cupy" and isinstance(arr, cp.ndarray) and arr.data.ptr == t.data_ptr()
    out = swanref.grad_norm(t.T, eps=1e-6)
    assert out.is_cuda
    assert np.max(np.abs(out.cpu().numpy() - R.grad_norm(np.ascontiguousarray(G.T), 1e-6))) <= 1e-12
    tb = t.to(torch.bfloat16)
    ob = swanref.whiten(tb, "newton_schulz")
    assert ob.dtype == torch.bfloat16 and ob.is_cuda
    ref = swanref.whiten(tb.float().cpu().numpy(), "newton_schulz", backend="reference")
    assert _rel(ob.float().cpu().numpy(), ref) <= 1e-2


@pytest.mark.parametrize("shape, axis", [((3, 40, 64), -1), ((37, 50), -1), ((64, 48), -2),
                                         ((2, 60000), -1)])
def test_torch_cuda_bfloat16_grad_norm_native(shape, axis, monkeypatch):
    """bfloat16 GradNorm is read and written natively (no float32 copy of the input) and gives
    bitwise the float32 result rounded once: what the widening path computed. Shapes: vector
    rows, odd rows (scalar kernel), the other axis (strided rows), rows too long for shared
    memory (widened inside the backend)."""
    torch = _torch_cuda()
    from swanref.backends import cupy as CB
    G = np.random.default_rng(8).standard_normal(shape) * 3 + 1
    tb = torch.from_numpy(G).cuda().to(torch.bfloat16)
    calls = []
    real = CB.grad_norm_bf16_finite
    monkeypatch.setattr(CB, "grad_norm_bf16_finite", lambda W, e, c: calls.append(W.dtype) or real(W, e, c))
    before = tb.clone()
    out = swanref.grad_norm(tb, axis=axis, eps=1e-6)
    assert calls == [np.dtype(np.uint16)]          # the native path ran
    assert out.dtype == torch.bfloat16 and out.is_cuda and tuple(out.shape) == shape
    assert torch.equal(tb, before)                 # input untouched
    want = swanref.grad_norm(tb.float(), axis=axis, eps=1e-6).to(torch.bfloat16)
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))


def test_torch_cuda_bfloat16_grad_norm_nonfinite_policy():
    torch = _torch_cuda()
    G = np.random.default_rng(9).standard_normal((4, 32))
    G[2, 5] = np.inf
    tb = torch.from_numpy(G).cuda().to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"G contains 1 non-finite value\(s\)"):
        swanref.grad_norm(tb)
    out = swanref.grad_norm(tb, check_finite=False).float().cpu().numpy()
    assert np.isnan(out[2]).all() and np.isfinite(out[[0, 1, 3]]).all()
    with pytest.raises(TypeError, match="check_finite"):
        swanref.grad_norm(tb, check_finite="yes")


@pytest.mark.parametrize("preset, shape, scale", [("muon_ns5", (64, 200), 1.0),
                                                  ("polar_express", (2, 48, 96), 1.0),
                                                  ("torch_muon", (150, 40), 1.0),
                                                  ("muon_ns5", (32, 96), 2.0 ** 100)])
def test_torch_cuda_bfloat16_presets_native(preset, shape, scale, monkeypatch):
    """emulate='bfloat16' on a bfloat16 CUDA tensor hands the backend the tensor's words (no
    float32 copy either way) and gives bitwise the widening path's result: wide, batched, tall
    (transposed) and huge input (the exact power-of-two prescale on the words)."""
    torch = _torch_cuda()
    from swanref.backends import cupy as CB
    G = np.random.default_rng(10).standard_normal(shape) * scale
    tb = torch.from_numpy(G).cuda().to(torch.bfloat16)
    seen = []
    real = CB.whiten_polynomial
    monkeypatch.setattr(CB, "whiten_polynomial",
                        lambda X, *a, **k: seen.append(X.dtype) or real(X, *a, **k))
    before = tb.clone()
    out = swanref.whiten(tb, preset, emulate="bfloat16")
    assert seen == [np.dtype(np.uint16)]
    assert out.dtype == torch.bfloat16 and out.is_cuda and tuple(out.shape) == shape
    assert torch.equal(tb, before)
    want = swanref.whiten(tb.float(), preset, emulate="bfloat16").to(torch.bfloat16)
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))


def test_torch_cuda_bfloat16_presets_nonfinite_policy():
    torch = _torch_cuda()
    G = np.random.default_rng(11).standard_normal((2, 16, 32))
    G[1, 3, 4] = np.nan
    tb = torch.from_numpy(G).cuda().to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"G contains 1 non-finite value\(s\)"):
        swanref.whiten(tb, "muon_ns5", emulate="bfloat16")
    out = swanref.whiten(tb, "muon_ns5", emulate="bfloat16", check_finite=False)
    o = out.float().cpu().numpy()
    assert np.isnan(o[1]).all() and np.isfinite(o[0]).all()


def test_torch_cuda_with_cpu_backend_comes_back_on_gpu():
    torch = _torch_cuda()
    G = np.random.default_rng(6).standard_normal((6, 10))
    out = swanref.grad_norm(torch.from_numpy(G).cuda(), backend="reference")
    assert out.is_cuda
    assert np.array_equal(out.cpu().numpy(), R.grad_norm(G, 0.0))


# -- JAX -------------------------------------------------------------------------------------------

def _jax():
    return pytest.importorskip("jax", reason="JAX is not installed")


def test_jax_round_trip_on_its_default_device():
    jax = _jax()
    import jax.numpy as jnp
    G = np.random.default_rng(7).standard_normal((12, 40)).astype(np.float32)
    x = jnp.asarray(G)
    platform = x.devices().pop().platform if hasattr(x, "devices") else "cpu"
    if platform == "gpu" and not _backends.is_available("cupy"):
        pytest.skip("JAX array on a GPU but the CuPy backend is not available")
    out = swanref.whiten(x, "newton_schulz")
    assert isinstance(out, jax.Array)
    assert out.devices() == x.devices()
    ref = swanref.whiten(G, "newton_schulz", backend="reference")
    assert _rel(np.asarray(out), ref) <= 1e-4
    g = swanref.grad_norm(x.T)
    assert _rel(np.asarray(g), R.grad_norm(np.ascontiguousarray(G.T), 0.0)) <= 1e-5


def test_torch_cuda_capsule_exchange_only_on_default_streams(monkeypatch):
    """On the default streams a torch CUDA tensor goes to CuPy and back as plain DLPack capsules
    (no per-call stream handshake); on another torch stream the handshake path runs. Both give
    the same numbers, zero-copy in, and leave the input untouched."""
    torch = _torch_cuda()
    import torch.utils.dlpack as tdl
    G = np.random.default_rng(12).standard_normal((3, 40, 64)).astype(np.float32)
    t = torch.from_numpy(G).cuda()
    used = []
    real = tdl.to_dlpack
    monkeypatch.setattr(tdl, "to_dlpack", lambda x: used.append(1) or real(x))
    arr, _, _ = _arrays.to_backend(t, None)
    assert arr.data.ptr == t.data_ptr() and used == [1] and _arrays._fast["on"]
    fast = swanref.grad_norm(t.mT, eps=1e-6)
    assert fast.is_cuda and tuple(fast.shape) == (3, 64, 40)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    used.clear()
    with torch.cuda.stream(side):
        slow = swanref.grad_norm(t.mT, eps=1e-6)
        wb = swanref.whiten(t.to(torch.bfloat16), "muon_ns5", emulate="bfloat16")
    side.synchronize()
    assert used == [] and _arrays._fast["on"]
    assert torch.equal(fast, slow)
    want = swanref.whiten(t.to(torch.bfloat16), "muon_ns5", emulate="bfloat16")
    assert torch.equal(wb.view(torch.int16), want.view(torch.int16))
    assert np.array_equal(t.cpu().numpy(), G)
