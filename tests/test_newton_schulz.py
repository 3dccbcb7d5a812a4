"""Spec section 3.3-3.6: the iterative methods (coupled Newton-Schulz, NSDS) and the guard."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given

import swanref
from swanref.backends import registry
from swanref.spec import spectral
from swanref.testing import matrices
from swanref.testing.strategies import gradients
from swanref.spec.tolerance import TRUSTED_LIMIT, newton_schulz_tolerance

from helpers import random_orthogonal, rel_err, singular_values

SCALINGS = ["gram_fro", "grad_fro"]


def _ns(backend, G, **kw):
    return backend(swanref.whiten, G, method="newton_schulz", **kw)


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(G=gradients(max_side=12, max_kappa=1e6, rank="any"))
def test_matches_spectral_prediction_within_model(backend, scaling, dtype, G):
    G = G.astype(dtype)
    m, n = G.shape
    w = G if m <= n else G.T
    for steps in (0, 3, 10, 25):
        s = singular_values(w)
        tol = float(newton_schulz_tolerance(s, *w.shape, steps, 0.5, scaling, dtype))
        if tol > TRUSTED_LIMIT:
            continue  # outside the model's claim: the guard's domain (spec 8.3)
        X = _ns(backend, G, steps=steps, scaling=scaling, on_divergence="ignore")
        pred = spectral.predicted_newton_schulz(w.astype(np.float64), steps, 0.5, scaling)
        pred = pred if m <= n else pred.T
        assert rel_err(X, pred) * np.sqrt(min(m, n)) / np.sqrt(w.shape[0]) <= tol, steps


def test_converges_to_exact_as_steps_grow(backend, rng):
    G = matrices.conditioned(rng, 16, 40, 1e3)
    exact = backend(swanref.whiten, G)
    errs = [rel_err(_ns(backend, G, steps=k), exact) for k in (5, 10, 20, 30, 40)]
    assert all(a > b for a, b in zip(errs[:3], errs[1:4])), errs
    assert errs[-1] < 1e-10  # converged to rounding level (kappa = 1e3)
    # the prediction of how many steps that takes (spec 3.6)
    s = singular_values(G)
    kappa_scaled = np.sqrt(spectral.scaling_constant(s, "gram_fro")) / s[-1]
    k = spectral.steps_to_converge(kappa_scaled, tol=1e-10)
    assert rel_err(_ns(backend, G, steps=k), exact) < 1e-9
    assert rel_err(_ns(backend, G, steps=k - 3), exact) > 1e-9


def test_beta_half_with_grad_fro_is_cubic_newton_schulz(backend, rng):
    # Z_k (G/||G||_F) equals the polar cubic iterate X <- 1.5 X - 0.5 X X^T X (Higham 2008)
    G = matrices.conditioned(rng, 6, 10, 30.0)
    X = G / np.linalg.norm(G)
    for _ in range(7):
        X = 1.5 * X - 0.5 * X @ X.T @ X
    np.testing.assert_allclose(_ns(backend, G, steps=7, scaling="grad_fro"), X, atol=1e-13)


@pytest.mark.parametrize("beta", [0.4, 0.5, 0.8])
@given(G=gradients(max_side=10, max_kappa=1e4))
def test_output_shares_singular_vectors_and_stays_in_band(backend, beta, G):
    X = _ns(backend, G, steps=6, beta=beta)
    m, n = G.shape
    P = X @ G.T if m <= n else G.T @ X
    scale = np.abs(P).max() + 1e-300
    np.testing.assert_allclose(P, P.T, atol=1e-9 * scale)
    assert np.linalg.eigvalsh((P + P.T) / 2).min() >= -1e-9 * scale
    assert singular_values(X).max() <= max(1.0, 2 * beta) * (1 + 1e-9)


@pytest.mark.parametrize("method", ["newton_schulz", "nsds"])
def test_equivariances(backend, method, rng):
    G = matrices.conditioned(rng, 5, 9, 20.0)
    X = backend(swanref.whiten, G, method=method)
    tol = 1e-12
    np.testing.assert_allclose(backend(swanref.whiten, 2.0 ** 40 * G, method=method), X,
                               atol=tol)
    np.testing.assert_allclose(backend(swanref.whiten, 3.7e-9 * G, method=method), X,
                               atol=tol)
    np.testing.assert_allclose(backend(swanref.whiten, -G, method=method), -X, atol=tol)
    np.testing.assert_allclose(backend(swanref.whiten, G.T, method=method), X.T, atol=tol)
    p = rng.permutation(5)
    np.testing.assert_allclose(backend(swanref.whiten, G[p], method=method), X[p], atol=tol)
    if method == "newton_schulz":  # NSDS is diagonal, hence only permutation-equivariant
        P, Q = random_orthogonal(rng, 5), random_orthogonal(rng, 9)
        np.testing.assert_allclose(backend(swanref.whiten, P @ G @ Q, method=method),
                                   P @ X @ Q, atol=tol)


def test_nsds_is_a_row_scaling(backend, rng):
    G = rng.standard_normal((6, 11))
    X = backend(swanref.whiten, G, method="nsds")
    ratio = X / G
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-12)
    # scalar recursion on the scaled row norms (spec 3.4)
    d = np.sum(G * G, axis=1) / np.linalg.norm(G @ G.T)
    z = np.ones_like(d)
    y = d.copy()
    for _ in range(2):
        t = 3 - z * y
        y, z = 0.4 * y * t, 0.4 * t * z
    np.testing.assert_allclose(ratio[:, 0], z / np.sqrt(np.linalg.norm(G @ G.T)), rtol=1e-12)


@pytest.mark.parametrize("method", ["newton_schulz", "nsds"])
def test_zero_and_partly_zero_input(backend, method):
    assert np.all(backend(swanref.whiten, np.zeros((3, 4)), method=method) == 0)
    G = np.zeros((4, 6))
    G[1] = np.arange(6.0) + 1
    X = backend(swanref.whiten, G, method=method, steps=30)
    assert np.all(X[[0, 2, 3]] == 0)
    if method == "newton_schulz":
        np.testing.assert_allclose(X[1], G[1] / np.linalg.norm(G[1]), atol=1e-12)


def test_rank_deficient_float64_converges_to_partial_isometry(backend, rng):
    G = matrices.conditioned(rng, 12, 20, 10.0, rank=5)
    X = _ns(backend, G, steps=25)
    U, s, Vt = np.linalg.svd(G)
    np.testing.assert_allclose(X, U[:, :5] @ Vt[:5], atol=1e-9)


def test_guard_fires_on_unscaled_overflow(backend, rng):
    G = rng.standard_normal((8, 16)) * 10  # eigenvalues of G G^T >> 5: outside (0, 3)
    with pytest.raises(swanref.DivergenceError, match="diverged on 1 of 1"):
        _ns(backend, G, scaling="none")
    with pytest.warns(swanref.DivergenceWarning, match="set to NaN"):
        X = _ns(backend, G, scaling="none", on_divergence="warn")
    assert np.all(np.isnan(X))
    with pytest.warns(swanref.DivergenceWarning, match="recomputed"):
        X = _ns(backend, G, scaling="none", on_divergence="fallback")
    np.testing.assert_allclose(X, backend(swanref.whiten, G), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = _ns(backend, G, scaling="none", on_divergence="ignore")
    assert not np.all(np.isfinite(raw)) or np.linalg.norm(raw) > 1e3


def test_guard_fires_on_float32_rank_deficient_blowup_only_for_bad_slices(backend, rng):
    # the coupled iteration diverges in float32 on rank-deficient input (null-space rounding grows)
    good = matrices.conditioned(rng, 32, 64, 10.0).astype(np.float32)
    bad = matrices.conditioned(rng, 32, 64, 10.0, rank=8).astype(np.float32)
    G = np.stack([good, bad])
    with pytest.raises(swanref.DivergenceError) as info:
        _ns(backend, G, steps=40)
    assert info.value.slices == (1,)
    with pytest.warns(swanref.DivergenceWarning):
        X = _ns(backend, G, steps=40, on_divergence="fallback")
    np.testing.assert_allclose(X[1], backend(swanref.whiten, bad), atol=1e-5)
    np.testing.assert_allclose(X[0], backend(swanref.whiten, good), atol=1e-5)


def test_guard_does_not_fire_on_healthy_runs(backend, rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for beta in (0.4, 0.5, 0.8):
            for steps in (0, 1, 5, 20):
                G = matrices.conditioned(rng, 6, 10, 1e2)
                _ns(backend, G, steps=steps, beta=beta)


def test_unscaled_reading_matches_scaled_when_input_is_small(backend, rng):
    G = matrices.conditioned(rng, 5, 8, 10.0) * 0.1
    A = G @ G.T
    c = np.linalg.norm(A)
    X = _ns(backend, G / np.sqrt(c), steps=15, scaling="none")
    np.testing.assert_allclose(X, _ns(backend, G, steps=15), atol=1e-12)


@pytest.fixture
def deferred_reference(monkeypatch):
    """The reference backend given the optional ``finite_flag`` kernel: the public call then
    reads the finite check with the divergence flags after the iteration (the CuPy backend's
    path, here on the CPU)."""
    from swanref.backends import reference
    calls = []

    def finite_flag(X):
        calls.append(X.shape)
        return np.asarray(np.isfinite(X).all())
    monkeypatch.setattr(reference, "finite_flag", finite_flag, raising=False)
    return calls


@pytest.mark.parametrize("method", ["newton_schulz", "nsds"])
def test_deferred_finite_check_gives_the_checked_results(deferred_reference, method, rng):
    G = rng.standard_normal((3, 6, 10))
    want = swanref.whiten(G, method, backend="reference")
    assert deferred_reference == [(3, 6, 10)]  # the deferred path ran
    if "cpp" in registry.available():  # the C++ core has no finite_flag: the checked path
        plain = [swanref.whiten(g, method, backend="cpp") for g in G]
        np.testing.assert_allclose(want, np.stack(plain), atol=1e-12)
    G[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        swanref.whiten(G, method, backend="reference")
    out = swanref.whiten(G, method, backend="reference", check_finite=False)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_array_equal(out[[0, 2]], want[[0, 2]])
    # tall input: checked on the transposed view, returned in the input's orientation
    T = rng.standard_normal((10, 6))
    np.testing.assert_array_equal(swanref.whiten(T, method, backend="reference"),
                                  swanref.whiten(T.T, method, backend="reference").T)


def test_deferred_finite_check_keeps_the_divergence_policies(deferred_reference, rng):
    G = rng.standard_normal((8, 16)) * 10  # diverges without scaling (as above)
    with pytest.raises(swanref.DivergenceError, match="diverged on 1 of 1"):
        swanref.whiten(G, "newton_schulz", scaling="none", backend="reference")
    with pytest.warns(swanref.DivergenceWarning, match="recomputed"):
        X = swanref.whiten(G, "newton_schulz", scaling="none", on_divergence="fallback",
                           backend="reference")
    np.testing.assert_allclose(X, swanref.whiten(G, backend="reference"), atol=1e-12)
    G[0, 0] = np.inf  # non-finite input is reported as such, not as a divergence
    with pytest.raises(ValueError, match="non-finite"):
        swanref.whiten(G, "newton_schulz", scaling="none", backend="reference")
