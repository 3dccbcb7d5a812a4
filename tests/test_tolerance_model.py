"""Spec section 8: the tolerance model holds, and is not vacuously loose."""
from __future__ import annotations

import numpy as np
import pytest

import swanref
from swanref.spec import spectral
from swanref.spec import tolerance
from swanref.testing import highprec, matrices

from helpers import rel_err, singular_values


def _exact_cases(seed, count):
    rng = np.random.default_rng(seed)
    for i in range(count):
        m = int(rng.integers(1, 9))
        n = int(rng.integers(m, 14))
        kind = ("geometric", "linear", "cluster")[i % 3]
        yield matrices.conditioned(rng, m, n, 10 ** rng.uniform(0, 10), kind=kind)


@pytest.mark.parametrize("method", ["svd", "eigh"])
def test_exact_bound_holds_and_is_within_100x_of_observed(backend, method):
    ratios = []
    for G in _exact_cases(7, 40):
        kappa = float(tolerance.condition_number(G))
        if (kappa if method == "svd" else kappa ** 2) * 1.1e-16 > 1e-3:
            continue
        X = backend(swanref.whiten, G, method=method)
        err = rel_err(X, highprec.polar_factor(G, dps=60))
        tol = float(tolerance.exact_whitening_tolerance(*G.shape, kappa, np.float64, method))
        ratios.append(err / tol)
    assert len(ratios) >= 15
    assert max(ratios) <= 1.0, max(ratios)
    assert max(ratios) >= 1e-2, "bound is over 100x looser than any observed error"


def test_newton_schulz_bound_holds_and_is_not_vacuous(backend):
    rng = np.random.default_rng(11)
    ratios = []
    for i in range(60):
        m = int(rng.integers(2, 20))
        n = int(rng.integers(m, 40))
        rank = None if i % 3 else int(rng.integers(1, m + 1))
        G = matrices.conditioned(rng, m, n, 10 ** rng.uniform(0, 6), rank=rank)
        steps = int(rng.integers(0, 30))
        tol = float(tolerance.newton_schulz_tolerance(singular_values(G), m, n, steps, 0.5,
                                                      "gram_fro", np.float64))
        X = backend(swanref.whiten, G, method="newton_schulz", steps=steps)
        pred = spectral.predicted_newton_schulz(G, steps, 0.5, "gram_fro")
        ratios.append(rel_err(X, pred) / tol)
    assert max(ratios) <= 1.0, max(ratios)
    assert max(ratios) >= 1e-2, "bound is over 100x looser than any observed error"


def test_grad_norm_bound_holds_and_is_not_vacuous(backend):
    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(30):
        n = int(rng.integers(2, 200))
        G = (rng.standard_normal((3, n)) * 10 ** rng.uniform(-4, 4)
             + 10 ** rng.uniform(-2, 5) * rng.standard_normal((3, 1)))
        exact = highprec.grad_norm(G)
        out = backend(swanref.grad_norm, G)
        err = np.max(np.abs(out - exact) / (1 + np.abs(exact)))
        ratios.append(err / tolerance.grad_norm_tolerance(n, np.float64))
    assert max(ratios) <= 1.0
    assert max(ratios) >= 1e-3, "bound is over 1000x looser than any observed error"


def test_output_roundoff_of_narrow_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert tolerance.output_roundoff(np.float64) == 0.0
    assert tolerance.output_roundoff(np.float32) == 0.0
    assert tolerance.output_roundoff(np.float16) == 2.0 ** -11
    assert tolerance.output_roundoff(ml_dtypes.bfloat16) == 2.0 ** -8
    assert tolerance.unit_roundoff(ml_dtypes.bfloat16) == 2.0 ** -24


def test_condition_number_ignores_null_space():
    rng = np.random.default_rng(0)
    G = matrices.with_spectrum(rng, 5, 8, [1.0, 0.1, 0.01])
    assert tolerance.condition_number(G) == pytest.approx(100.0, rel=1e-10)
    assert tolerance.condition_number(np.zeros((3, 4))) == 1.0


def test_steps_table_in_spec_matches_spectral_module():
    table = {2: (4, 6, 7), 10: (9, 10, 11), 100: (14, 15, 16), 1e3: (20, 21, 22),
             1e4: (26, 27, 28), 1e6: (37, 38, 39), 1e8: (48, 49, 50)}
    for kappa_s, expected in table.items():
        got = tuple(spectral.steps_to_converge(kappa_s, tol=t) for t in (1e-3, 1e-6, 1e-12))
        assert got == expected, (kappa_s, got)


def test_newton_schulz_bound_in_the_high_kappa_many_steps_regime(backend):
    # the regime where a linear-in-z_max model failed (swanref study, kappa 1e6-3e7, 40 steps)
    rng = np.random.default_rng(17)
    ratios = []
    for i in range(12):
        m, n = int(rng.integers(2, 7)), int(rng.integers(7, 13))
        G = matrices.conditioned(rng, m, n, 10 ** rng.uniform(6, 7.5),
                                 kind=("geometric", "linear", "cluster")[i % 3])
        tol = float(tolerance.newton_schulz_tolerance(singular_values(G), m, n, 40, 0.5,
                                                      "gram_fro", np.float64))
        X = backend(swanref.whiten, G, method="newton_schulz", steps=40)
        exact = highprec.predicted_newton_schulz(G, 40, 0.5, "gram_fro")
        ratios.append(rel_err(X, exact) / tol)
    assert max(ratios) <= 1.0, max(ratios)
    assert max(ratios) >= 1e-3, "bound is over 1000x looser than any observed error"


@pytest.mark.parametrize("shape", [(32, 96), (96, 24), (64, 128)])
def test_newton_schulz_float32_default_reading_is_claimed_and_holds(backend, shape):
    """Spec 8.3 (0.3): with the probabilistic size factor the model claims what SWAN's
    default (10 steps, float32) does on gradients of these sizes, and the claim holds; the
    worst-case factor max(m, n) claimed none of them (issue 24)."""
    rng = np.random.default_rng(sum(shape))
    G = rng.standard_normal(shape).astype(np.float32)
    W = G if shape[0] <= shape[1] else G.T
    m, n = W.shape
    s = singular_values(W.astype(np.float64))
    tol = sum(float(tolerance.newton_schulz_tolerance(s, m, n, 10, 0.5, "gram_fro", d))
              for d in (np.float32, np.float64))
    assert tol <= tolerance.TRUSTED_LIMIT
    X = backend(swanref.whiten, W, method="newton_schulz", steps=10)
    pred = spectral.predicted_newton_schulz(W.astype(np.float64), 10, 0.5, "gram_fro")
    ratio = rel_err(X, pred) / tol
    assert ratio <= 1.0 and ratio >= 1e-5, ratio
