"""The C++ polynomial Newton-Schulz kernel (cpp/include/swanref/polynomial.hpp) computes the
production presets of docs/presets.md exactly as the reference transcription does."""
from __future__ import annotations

import numpy as np
import pytest

from swanref.backends import registry as _backends
from swanref.presets import catalogue as presets

pytestmark = pytest.mark.skipif(not _backends.is_available("cpp"),
                                reason="the C++ core (swanref._core) is not built here")

POLY = [n for n, p in presets.PRESETS.items()
        if p.form in ("keller", "addmm") and p.transpose == "to_wide" and n != "custom"]


def _core():
    from swanref import _core
    return _core


def _cpp(G, name, steps=None):
    p = presets.PRESETS[name]
    sched = np.array(presets.schedule(name, steps), dtype=np.float64).reshape(-1, 3)
    tall = G.shape[-2] > G.shape[-1]
    W = np.swapaxes(G, -1, -2) if tall else G
    out = _core().whiten_polynomial(W, sched, p.norm, p.eps, p.norm_scale)
    return np.swapaxes(out, -1, -2) if tall else out


def _ref(G, name, steps=None):
    return presets.run_preset(G, presets.PRESETS[name], presets.schedule(name, steps))


def test_every_polynomial_preset_is_covered():
    assert {"muon_ns5", "torch_muon", "polar_express", "cubic"} <= set(POLY)


@pytest.mark.parametrize("name", POLY)
@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (3, 8, 8), (1, 1)])
def test_matches_reference_float64(name, shape):
    G = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_allclose(_cpp(G, name), _ref(G, name), atol=1e-13)


@pytest.mark.parametrize("name", POLY)
def test_matches_reference_float32(name):
    G = np.random.default_rng(2).standard_normal((2, 24, 64)).astype(np.float32)
    out, ref = _cpp(G, name), _ref(G, name)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("name", POLY)
def test_zero_matrix_as_the_source_does_it(name):
    out = _cpp(np.zeros((4, 6)), name)
    ref = _ref(np.zeros((4, 6)), name)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.nan_to_num(out), np.nan_to_num(ref))


def test_tiny_float32_input_loses_scale_like_the_source():
    # X/(||X||_F + 1e-7), as in KellerJordan/Muon, is not scale invariant below ||X||_F ~ 1e-7
    G = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
    for scale in (1e-9, 1e-21):
        np.testing.assert_allclose(_cpp(G * scale, "muon_ns5"), _ref(G * scale, "muon_ns5"),
                                   atol=1e-5)
    base = _cpp(G, "muon_ns5")
    assert np.linalg.norm(_cpp(G * 1e-9, "muon_ns5") - base) > 0.1 * np.linalg.norm(base)


def test_custom_schedule_and_steps():
    G = np.random.default_rng(4).standard_normal((6, 10))
    coef = np.array([[3.0, -3.2, 1.2], [2.0, -1.5, 0.5]])
    out = _core().whiten_polynomial(G, coef, "add", 1e-7, 1.0)
    ref = presets.whiten_preset(G, "custom", coefficients=[tuple(c) for c in coef])
    np.testing.assert_allclose(out, ref, atol=1e-13)
    np.testing.assert_allclose(_cpp(G, "muon_ns5", steps=9), _ref(G, "muon_ns5", steps=9),
                               atol=1e-13)


def test_input_untouched_and_bad_arguments():
    G = np.random.default_rng(5).standard_normal((4, 6))
    before = G.copy()
    _core().whiten_polynomial(G, np.ones((2, 3)), "add", 1e-7, 1.0)
    np.testing.assert_array_equal(G, before)
    with pytest.raises(ValueError, match="shape \\(steps, 3\\)"):
        _core().whiten_polynomial(G, np.ones((2, 2)), "add", 1e-7, 1.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        _core().whiten_polynomial(G, np.ones((2, 3)), "l2", 1e-7, 1.0)
    with pytest.raises(ValueError, match="m <= n"):
        _core().whiten_polynomial(G.T, np.ones((2, 3)), "add", 1e-7, 1.0)
    with pytest.raises(ValueError, match="coefficients must be finite"):
        _core().whiten_polynomial(G, np.full((1, 3), np.nan), "add", 1e-7, 1.0)


@pytest.mark.parametrize("name", POLY)
def test_public_api_runs_presets_on_the_cpp_kernel(name, monkeypatch):
    import swanref
    G = np.random.default_rng(6).standard_normal((2, 12, 7))
    ref = swanref.whiten(G, method=name, backend="reference")

    def forbidden(*args, **kwargs):
        raise AssertionError("the reference transcription ran instead of the C++ kernel")

    # the transcription swanref.whiten runs when no backend kernel does
    monkeypatch.setattr(presets, "run_preset_unchecked", forbidden)
    np.testing.assert_allclose(swanref.whiten(G, method=name, backend="cpp"), ref, atol=1e-13)


def test_emulated_presets_stay_on_the_reference(monkeypatch):
    import swanref
    G = np.random.default_rng(7).standard_normal((6, 10))
    calls = []
    real = presets.run_preset_unchecked

    def spy(G, preset, sched, emulate=None):
        calls.append(emulate)
        return real(G, preset, sched, emulate)
    monkeypatch.setattr(presets, "run_preset_unchecked", spy)
    swanref.whiten(G, method="muon_ns5", emulate="bfloat16", backend="cpp")
    assert calls and calls[0] == "bfloat16"
