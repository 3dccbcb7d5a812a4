"""Spec section 3.1-3.2: exact whitening (the polar factor U_r V_r^T), on every backend."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings

import swanref
from swanref.testing import highprec, matrices
from swanref.testing.strategies import gradients
from swanref.spec.tolerance import condition_number, exact_whitening_tolerance

from helpers import random_orthogonal, rel_err, singular_values

EXACT = ["svd", "eigh"]


def _kappa_limit(method, dtype):
    u = np.finfo(dtype).eps / 2
    return 1e-3 / u if method == "svd" else 1e-3 / np.sqrt(u)


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25)
@given(G=gradients(max_side=9, max_kappa=1e12))
def test_accuracy_against_mpmath_within_spec_bound(backend, method, dtype, G):
    G = G.astype(dtype)
    kappa = float(condition_number(G.astype(np.float64)))
    if kappa > _kappa_limit(method, dtype):
        return  # outside the regime where the method resolves the full rank (spec 8.2)
    exact = highprec.polar_factor(G.astype(np.float64), dps=60)
    X = backend(swanref.whiten, G, method=method)
    tol = exact_whitening_tolerance(*G.shape, kappa, dtype, method)
    assert rel_err(X, exact) <= tol, (rel_err(X, exact), tol, kappa)


@pytest.mark.parametrize("method", EXACT)
@given(G=gradients(max_side=10, max_kappa=1e4))
def test_orthonormal_rows_and_symmetric_psd_cross_product(backend, method, G):
    X = backend(swanref.whiten, G, method=method)
    m, n = G.shape
    k = min(m, n)
    tol = 4 * exact_whitening_tolerance(m, n, condition_number(G), np.float64, method)
    small = X @ X.T if m <= n else X.T @ X
    np.testing.assert_allclose(small, np.eye(k), atol=tol)
    P = X @ G.T if m <= n else G.T @ X  # (G G^T)^(1/2) resp. (G^T G)^(1/2): symmetric PSD
    np.testing.assert_allclose(P, P.T, atol=tol * np.abs(P).max())
    assert np.linalg.eigvalsh((P + P.T) / 2).min() >= -tol * np.abs(P).max()


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e-20, 1e20, 1e150, 1e300])
def test_positive_scale_invariance_at_extreme_scales(backend, method, rng, scale):
    G = matrices.conditioned(rng, 4, 7, 10.0)
    ref = backend(swanref.whiten, G, method=method)
    np.testing.assert_allclose(backend(swanref.whiten, G * scale, method=method), ref,
                               atol=1e-12)


@pytest.mark.parametrize("method", EXACT)
def test_sign_transpose_and_orthogonal_equivariance(backend, method, rng):
    G = matrices.conditioned(rng, 5, 8, 100.0)
    X = backend(swanref.whiten, G, method=method)
    P, Q = random_orthogonal(rng, 5), random_orthogonal(rng, 8)
    tol = 1e-11
    np.testing.assert_allclose(backend(swanref.whiten, -G, method=method), -X, atol=tol)
    np.testing.assert_allclose(backend(swanref.whiten, G.T, method=method), X.T, atol=tol)
    np.testing.assert_allclose(backend(swanref.whiten, P @ G @ Q, method=method), P @ X @ Q,
                               atol=tol)


@pytest.mark.parametrize("method", EXACT)
def test_idempotent(backend, method, rng):
    X = backend(swanref.whiten, matrices.conditioned(rng, 6, 9, 1e3), method=method)
    np.testing.assert_allclose(backend(swanref.whiten, X, method=method), X, atol=1e-12)


@pytest.mark.parametrize("method", EXACT)
@given(G=gradients(max_side=10, max_kappa=1e3, rank="deficient"))
def test_rank_deficient_gives_partial_isometry(backend, method, G):
    X = backend(swanref.whiten, G, method=method)
    r = int(np.sum(singular_values(G) > 1e-8 * singular_values(G)[0]))
    sx = singular_values(X)
    np.testing.assert_allclose(sx[:r], 1, atol=1e-8)
    np.testing.assert_allclose(sx[r:], 0, atol=1e-8)
    np.testing.assert_allclose(X @ X.T @ X, X, atol=1e-8)  # partial isometry
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    np.testing.assert_allclose(X, U[:, :r] @ Vt[:r], atol=1e-7)


@pytest.mark.parametrize("method", EXACT)
def test_zero_matrix_gives_zero(backend, method):
    for shape in [(3, 5), (5, 3), (1, 1), (2, 2, 4)]:
        X = backend(swanref.whiten, np.zeros(shape), method=method)
        assert X.shape == shape and np.all(X == 0)


def test_differs_from_scipy_polar_only_on_rank_deficient_input(backend, rng):
    G = matrices.conditioned(rng, 6, 4, 50.0)  # tall, full column rank
    u, _ = scipy.linalg.polar(G)
    np.testing.assert_allclose(backend(swanref.whiten, G), u, atol=1e-12)
    D = matrices.conditioned(rng, 4, 4, 10.0, rank=2)
    u, _ = scipy.linalg.polar(D)  # completes the null space: singular values all 1
    X = backend(swanref.whiten, D)
    assert np.linalg.matrix_rank(u) == 4 and np.linalg.matrix_rank(X) == 2


@pytest.mark.parametrize("method", EXACT)
def test_batch_is_per_slice_and_tall_is_transpose(backend, method, rng):
    G = rng.standard_normal((2, 3, 7, 4))
    X = backend(swanref.whiten, G, method=method)
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(X[idx], backend(swanref.whiten, G[idx], method=method),
                                   atol=1e-13)
        np.testing.assert_allclose(X[idx], backend(swanref.whiten, G[idx].T, method=method).T,
                                   atol=1e-13)


def test_eigh_loses_kappa_squared_where_svd_does_not(backend, rng):
    G = matrices.conditioned(rng, 8, 16, 1e6)
    exact = highprec.polar_factor(G, dps=60)
    err_svd = rel_err(backend(swanref.whiten, G, method="svd"), exact)
    err_eigh = rel_err(backend(swanref.whiten, G, method="eigh"), exact)
    assert err_svd < 1e-9 and err_eigh > 100 * err_svd


def test_rank_rtol_controls_the_numerical_rank(backend, rng):
    G = matrices.with_spectrum(rng, 4, 6, [1.0, 0.5, 1e-3, 1e-9])
    assert np.linalg.matrix_rank(backend(swanref.whiten, G)) == 4
    assert np.linalg.matrix_rank(backend(swanref.whiten, G, rank_rtol=1e-6)) == 3
    assert np.linalg.matrix_rank(backend(swanref.whiten, G, rank_rtol=0.1)) == 2
    # eigh cannot resolve s_i / s_1 below sqrt(max(m, n) eps): 1e-9 is dropped by default
    assert np.linalg.matrix_rank(backend(swanref.whiten, G, method="eigh"), tol=0.5) == 3


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "negative"])
def test_layouts(backend, method, layout, rng):
    base = rng.standard_normal((10, 14))
    G = {"fortran": np.asfortranarray(base[:5, :9]), "strided": base[::2, ::2],
         "readonly": base[:5, :9].copy(), "negative": base[::-2, ::-3]}[layout]
    if layout == "readonly":
        G.flags.writeable = False
    before = G.copy()
    X = backend(swanref.whiten, G, method=method)
    np.testing.assert_allclose(X, backend(swanref.whiten, np.ascontiguousarray(G),
                                          method=method), atol=1e-13)
    np.testing.assert_array_equal(G, before)
