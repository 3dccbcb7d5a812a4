"""Spec section 2: GradNorm, on every backend."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import swanref
from swanref.testing import highprec
from swanref.testing.strategies import gradients_with_rows
from swanref.spec.tolerance import grad_norm_tolerance

DTYPES = [np.float64, np.float32]


def _assert_close_elementwise(out, exact, n, dtype):
    tol = grad_norm_tolerance(n, dtype)
    err = np.abs(out.astype(np.float64) - exact) / (1 + np.abs(exact))
    assert np.all(err <= tol), f"max scaled error {err.max():.3g} > tol {tol:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@given(G=gradients_with_rows())
def test_matches_high_precision(backend, dtype, G):
    G = G.astype(dtype)
    exact = highprec.grad_norm(G.astype(np.float64))
    out = backend(swanref.grad_norm, G)
    assert out.dtype == dtype and out.shape == G.shape
    _assert_close_elementwise(out, exact, G.shape[1], dtype)


@given(G=gradients_with_rows())
def test_rows_have_mean_zero_and_unit_population_std(backend, G):
    out = backend(swanref.grad_norm, G)
    constant = np.ptp(G, axis=1) == 0
    tol = grad_norm_tolerance(G.shape[1], np.float64) * 4
    assert np.allclose(out.mean(axis=1)[~constant], 0, atol=tol)
    # ddof = 0: each non-constant row has l2 norm exactly sqrt(n)
    assert np.allclose(out.std(axis=1)[~constant], 1, atol=tol)
    assert np.all(out[constant] == 0)


def test_constant_and_zero_rows_map_to_zero(backend):
    G = np.array([[0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0],
                  [-7e300, -7e300, -7e300, -7e300]])
    out = backend(swanref.grad_norm, G)
    assert np.all(np.isfinite(out))
    assert np.all(out[[0, 1, 3]] == 0)
    np.testing.assert_allclose(out[2], (G[2] - 2.5) / np.sqrt(1.25), rtol=1e-15)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-30, 1.0, 1e30, 1e200, 1e300])
def test_extreme_scales_do_not_overflow_or_underflow(backend, rng, scale):
    base = rng.standard_normal((3, 17))
    out = backend(swanref.grad_norm, base * scale)
    ref = backend(swanref.grad_norm, base)
    np.testing.assert_allclose(out, ref, rtol=0, atol=64 * 17 * np.finfo(float).eps)


def test_subnormal_rows(backend):
    G = np.array([[5e-324, 1e-323, 1.5e-323, 2e-323]])
    out = backend(swanref.grad_norm, G)
    np.testing.assert_allclose(out, [[-1.3416407864998738, -0.4472135954999579,
                                      0.4472135954999579, 1.3416407864998738]], rtol=1e-14)


@given(G=gradients_with_rows(), data=st.data())
def test_invariant_to_positive_row_affine_maps(backend, G, data):
    m = G.shape[0]
    a = np.array(data.draw(st.lists(st.sampled_from([0.25, 0.5, 2.0, 8.0]), min_size=m,
                                    max_size=m)))[:, None]
    b = np.array(data.draw(st.lists(st.sampled_from([-3.0, 0.0, 1.5]), min_size=m,
                                    max_size=m)))[:, None]
    # powers of two keep a*G exact, so only the shift b adds rounding
    out = backend(swanref.grad_norm, G)
    moved = backend(swanref.grad_norm, a * G + b * np.max(np.abs(G), axis=1, keepdims=True))
    tol = 1e-9  # the shift by up to 3 * max|row| costs a few digits of the smallest rows
    nonconst = np.ptp(G, axis=1) > 1e-6 * np.max(np.abs(G), axis=1)
    np.testing.assert_allclose(moved[nonconst], out[nonconst], atol=tol)


def test_negative_row_scale_flips_sign(backend, rng):
    G = rng.standard_normal((4, 9))
    np.testing.assert_allclose(backend(swanref.grad_norm, -G), -backend(swanref.grad_norm, G),
                               atol=1e-14)


def test_row_and_column_permutation_equivariance(backend, rng):
    G = rng.standard_normal((6, 11)) * 10 ** rng.uniform(-3, 3, size=(6, 1))
    p, q = rng.permutation(6), rng.permutation(11)
    out = backend(swanref.grad_norm, G)
    np.testing.assert_allclose(backend(swanref.grad_norm, G[p][:, q]), out[p][:, q], atol=1e-13)


def test_axis_readings(backend, rng):
    G = rng.standard_normal((5, 8))
    col = backend(swanref.grad_norm, G, axis=-2)
    np.testing.assert_allclose(col, backend(swanref.grad_norm, G.T).T, atol=1e-15)
    np.testing.assert_allclose(backend(swanref.grad_norm, G, axis="long"),
                               backend(swanref.grad_norm, G), atol=0)
    # 'long' standardises along the longer axis whichever way round the matrix is stored
    np.testing.assert_allclose(backend(swanref.grad_norm, G.T, axis="long"),
                               backend(swanref.grad_norm, G).T, atol=1e-15)
    np.testing.assert_allclose(backend(swanref.grad_norm, G, axis=1),
                               backend(swanref.grad_norm, G), atol=0)


def test_eps_is_added_to_the_variance(backend, rng):
    G = rng.standard_normal((3, 10)) * 1e-3
    eps = 1e-6
    c = G - G.mean(axis=1, keepdims=True)
    expected = c / np.sqrt((c ** 2).mean(axis=1, keepdims=True) + eps)
    np.testing.assert_allclose(backend(swanref.grad_norm, G, eps=eps), expected, rtol=1e-12)


def test_batch_is_per_slice(backend, rng):
    G = rng.standard_normal((2, 3, 4, 7))
    out = backend(swanref.grad_norm, G)
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(out[idx], backend(swanref.grad_norm, G[idx]), atol=0)


def test_single_column_rows_are_constant(backend):
    out = backend(swanref.grad_norm, np.array([[3.0], [-1.0]]))
    assert np.all(out == 0)


def test_noncontiguous_and_readonly_input(backend, rng):
    base = rng.standard_normal((8, 12))
    G = base[::2, ::3]
    G.flags.writeable = False
    expected = backend(swanref.grad_norm, np.ascontiguousarray(G))
    np.testing.assert_allclose(backend(swanref.grad_norm, G), expected, atol=0)
    np.testing.assert_allclose(backend(swanref.grad_norm, np.asfortranarray(G)), expected, atol=0)


def test_rows_near_the_overflow_threshold(backend):
    big = np.finfo(np.float64).max
    G = np.array([[0.9 * big, -0.9 * big, 0.0, 0.45 * big]])
    expected = np.array([[0.9, -0.9, 0.0, 0.45]])
    expected = (expected - expected.mean()) / expected.std()
    out = backend(swanref.grad_norm, G)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
