"""The CuPy backend runs the polynomial presets (docs/presets.md) like the reference does."""
from __future__ import annotations

import numpy as np
import pytest

import swanref
from swanref.backends import registry as _backends
from swanref import presets

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _backends.is_available("cupy"),
                                 reason="needs CuPy and an NVIDIA GPU")]

POLY = [n for n, p in presets.PRESETS.items()
        if p.form in ("keller", "addmm") and p.transpose == "to_wide" and n != "custom"]


@pytest.mark.parametrize("name", POLY)
@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (3, 8, 24)])
def test_matches_reference_float64(name, shape):
    import cupy
    G = np.random.default_rng(1).standard_normal(shape)
    ref = swanref.whiten(G, method=name, backend="reference")
    out = swanref.whiten(cupy.asarray(G), method=name)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), ref, atol=1e-12)


@pytest.mark.parametrize("name", ["muon_ns5", "torch_muon", "polar_express"])
def test_matches_reference_float32_and_zero(name):
    import cupy
    G = np.random.default_rng(2).standard_normal((2, 24, 64)).astype(np.float32)
    ref = swanref.whiten(G, method=name, backend="reference")
    out = cupy.asnumpy(swanref.whiten(cupy.asarray(G), method=name))
    np.testing.assert_allclose(out, ref, atol=5e-5)
    Z = cupy.zeros((4, 6))
    np.testing.assert_array_equal(cupy.asnumpy(swanref.whiten(Z, method=name)), 0)


def test_emulation_is_refused_on_gpu_arrays():
    import cupy
    with pytest.raises(ValueError, match="runs on NumPy arrays only"):
        swanref.whiten(cupy.ones((3, 4)), method="muon_ns5", emulate="bfloat16")
