"""Spec sections 4-5: the SWAN update, parameter routing and SinkGD."""
from __future__ import annotations

import numpy as np
import pytest

import swanref
from swanref.testing import matrices


def _gradnorm_np(G):
    c = G - G.mean(axis=-1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=-1, keepdims=True))


def test_swan_update_composes_the_spec(backend, rng):
    G = rng.standard_normal((6, 10)) * 3 + 1
    g = _gradnorm_np(G)
    U, _, Vt = np.linalg.svd(g, full_matrices=False)
    expected = np.sqrt(60) * (U @ Vt) / np.linalg.norm(U @ Vt)
    out = backend(swanref.swan_update, G, whiten_method="svd", lr=0.5)
    np.testing.assert_allclose(out, 0.5 * expected, atol=1e-12)
    # RMS one per entry before lr (Adam-like magnitude)
    np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), 0.5, rtol=1e-12)


def test_swan_update_default_is_the_paper_iteration(backend, rng):
    G = rng.standard_normal((4, 9))
    d = backend(swanref.whiten, _gradnorm_np(G), method="newton_schulz")
    expected = np.sqrt(36) * d / np.linalg.norm(d)
    np.testing.assert_allclose(backend(swanref.swan_update, G), expected, atol=1e-12)


def test_swan_update_without_rescale_and_tall(backend, rng):
    G = rng.standard_normal((9, 4))
    out = backend(swanref.swan_update, G, whiten_method="svd", rescale=False)
    U, s, Vt = np.linalg.svd(_gradnorm_np(G), full_matrices=False)
    # GradNorm puts the ones vector in the right null space: a tall (or square) gradient has
    # rank <= n - 1 after it, so the polar factor is the rank-(n-1) partial isometry (spec 4.1)
    assert s[-1] < 1e-12 * s[0]
    np.testing.assert_allclose(out, U[:, :3] @ Vt[:3], atol=1e-12)


def test_swan_update_zero_gradient_is_zero(backend):
    assert np.all(backend(swanref.swan_update, np.zeros((3, 5))) == 0)
    # constant rows are zero after GradNorm: the update is zero, never NaN
    assert np.all(backend(swanref.swan_update, np.ones((3, 5)) * 7) == 0)


def test_swan_update_is_stateless_and_batched(backend, rng):
    G = rng.standard_normal((3, 4, 8))
    a = backend(swanref.swan_update, G)
    b = backend(swanref.swan_update, G)
    np.testing.assert_array_equal(a, b)
    for i in range(3):
        np.testing.assert_allclose(a[i], backend(swanref.swan_update, G[i]), atol=1e-13)


def test_swan_update_keeps_intermediate_in_float32_for_bfloat16(backend, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    G = rng.standard_normal((4, 16)).astype(ml_dtypes.bfloat16)
    out = backend(swanref.swan_update, G, whiten_method="svd")
    assert out.dtype == G.dtype
    ref = backend(swanref.swan_update, G.astype(np.float32), whiten_method="svd")
    np.testing.assert_array_equal(out, ref.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("name,shape,route", [
    ("layers.0.attn.q_proj.weight", (64, 64), "swan"),
    ("layers.0.mlp.up_proj.weight", (172, 64), "swan"),
    ("model.embed_tokens.weight", (1000, 64), "adam"),
    ("lm_head.weight", (1000, 64), "adam"),
    ("layers.0.input_layernorm.weight", (64,), "adam"),
    ("layers.0.attn.q_proj.bias", (64,), "adam"),
    ("conv.weight", (8, 3, 3, 3), "adam"),
])
def test_routing(name, shape, route):
    assert swanref.swan_route(name, shape) == route


def test_routing_rejects_bad_names():
    with pytest.raises(TypeError, match="name must be a string"):
        swanref.swan_route(3, (2, 2))


def _sinkhorn_np(G, iters):
    X = G.copy()
    m, n = X.shape
    for _ in range(iters):
        X = np.sqrt(n) * X / np.linalg.norm(X, axis=1, keepdims=True)
        X = np.sqrt(m) * X / np.linalg.norm(X, axis=0, keepdims=True)
    return X


def test_sinkgd_matches_transcription(backend, rng):
    G = rng.standard_normal((5, 12)) * 10 ** rng.uniform(-2, 2, size=(5, 1))
    for iters in (0, 1, 5):
        np.testing.assert_allclose(backend(swanref.sinkgd_update, G, iters=iters, lr=2.0),
                                   2.0 * _sinkhorn_np(G, iters), atol=1e-12)


def test_sinkgd_fixed_point_is_doubly_balanced(backend, rng):
    X = backend(swanref.sinkgd_update, rng.standard_normal((6, 9)), iters=200)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 3.0, rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(X, axis=0), np.sqrt(6), rtol=1e-10)


def test_sinkgd_zero_lines_and_extreme_scales(backend, rng):
    G = rng.standard_normal((4, 6))
    G[1] = 0
    G[:, 2] = 0
    X = backend(swanref.sinkgd_update, G)
    assert np.all(np.isfinite(X)) and np.all(X[1] == 0) and np.all(X[:, 2] == 0)
    rows = rng.standard_normal((3, 5)) * np.array([[1e-300], [1.0], [1e300]])
    Y = backend(swanref.sinkgd_update, rows, iters=1)
    ref = backend(swanref.sinkgd_update, rows / np.array([[1e-300], [1.0], [1e300]]), iters=1)
    np.testing.assert_allclose(Y, ref, rtol=1e-12)


def test_sinkgd_batched(backend, rng):
    G = rng.standard_normal((2, 3, 5))
    X = backend(swanref.sinkgd_update, G)
    for i in range(2):
        np.testing.assert_allclose(X[i], backend(swanref.sinkgd_update, G[i]), atol=1e-14)


def test_swan_update_whitening_choice_matters_for_ill_conditioned(backend, rng):
    G = matrices.conditioned(rng, 8, 16, 1e4) + 5.0
    a = backend(swanref.swan_update, G, whiten_method="svd")
    b = backend(swanref.swan_update, G, whiten_method="newton_schulz", steps=5)
    assert np.linalg.norm(a - b) > 0.1 * np.linalg.norm(a)
