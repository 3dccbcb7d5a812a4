"""The hybrid/preconditioned routes and complex presets against the real third-party code they
transcribe (spec 9.6, 9.7).  Skipped where the package is absent (none is a dependency); run in
an environment with them, e.g. ``pip install "jax[cpu]" optax torch heavyball``, then
``pytest tests/test_third_party_routes.py``.
"""
import numpy as np
import pytest

from swanref.presets import catalogue as C

SHAPES = [(6, 10), (10, 6), (7, 7)]
rng = np.random.default_rng(1)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def optax_muon():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    from optax.contrib import _muon
    return _muon


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("preconditioning, preset", [("aol", "optax_muon_aol"),
                                                     ("frobenius", "optax_muon")])
def test_optax_orthogonalize(optax_muon, shape, kind, preconditioning, preset):
    import jax.numpy as jnp
    G = rng.standard_normal(shape)
    if kind == "complex":
        G = G + 1j * rng.standard_normal(shape)
    out = np.asarray(optax_muon.orthogonalize_via_newton_schulz(
        jnp.asarray(G), jnp.asarray(C.KELLER_NS5[0]), 5, preconditioning=preconditioning))
    assert rel(C.whiten_preset(G, preset), out) < 1e-13


@pytest.fixture(scope="module")
def heavyball_utils():
    pytest.importorskip("torch")
    pytest.importorskip("heavyball")
    from heavyball import utils
    utils.compile_mode = None  # eager: the compiled path takes minutes per shape on a CPU
    return utils


@pytest.mark.parametrize("shape", SHAPES)
def test_heavyball_svd_mode(heavyball_utils, shape):
    import torch
    G = rng.standard_normal(shape)  # float64: heavyball skips its stochastic bf16 rounding
    y = heavyball_utils._compilable_orthogonal_(torch.from_numpy(G.copy()), "svd", None, "none")
    assert rel(C.whiten_preset(G, "heavyball_svd"), y.numpy()) < 1e-13


def test_heavyball_legacy_svd_is_not_a_polar_factor(heavyball_utils):
    import torch
    G = rng.standard_normal((7, 7))
    y = heavyball_utils._compilable_orthogonal_(torch.from_numpy(G.copy()), "legacy_svd", None,
                                                "none")
    assert rel(y.numpy(), C.whiten_preset(G, "heavyball_svd")) > 0.5  # U V, not U V^T
