"""Range edges (spec 6.3): every operator, method, preset and route at the ends of the float
range, on every backend, complex input included.

The input is a well-conditioned matrix scaled by an exact power of two from the smallest
subnormal band to just below the float maximum.  Scale-invariant operators must give the
result of the same (rounded) values at unit scale; presets and routes, whose norm epsilon makes
them scale dependent for tiny input, must give on every backend what the NumPy reference gives.
A scaling failure shows as zeros, NaN or an O(1) error (issue 23: 'svd' on the reference
returned all zeros for s_1 near the float maximum); agreement is to round-off (measured at most
4e-15 in float64 and 1.2e-6 in float32 here), checked with sqrt(eps) of the dtype.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import swanref
from swanref.backends import registry
from swanref.presets.catalogue import ROUTES
from swanref.spec.readings import WHITEN_PRESETS

#: exponents k of the scale 2**k: smallest normal band, subnormal band, ~1e+-300 / ~1e+-38 and
#: the top binade (the base's max|entry| lies in [0.5, 1), so 2**emax keeps it finite)
EDGES = {np.float64: (-1060, -1022, -996, 996, 1023), np.float32: (-140, -126, 126, 127)}
CASES = [(dt, k) for dt, ks in EDGES.items() for k in ks]

#: every operator and exact/iterative method; 'scaling=none' is by definition not scale
#: invariant (spec 3.3) and is left out
OPERATORS = {
    "grad_norm": lambda G, be: swanref.grad_norm(G, backend=be),
    "grad_norm_cols": lambda G, be: swanref.grad_norm(G, axis=-2, backend=be),
    "svd": lambda G, be: swanref.whiten(G, "svd", backend=be),
    "eigh": lambda G, be: swanref.whiten(G, "eigh", backend=be),
    "newton_schulz": lambda G, be: swanref.whiten(G, "newton_schulz", backend=be),
    "newton_schulz_grad_fro": lambda G, be: swanref.whiten(G, "newton_schulz",
                                                           scaling="grad_fro", backend=be),
    "nsds": lambda G, be: swanref.whiten(G, "nsds", backend=be),
    "swan_update": lambda G, be: swanref.swan_update(G, backend=be),
    "swan_update_svd": lambda G, be: swanref.swan_update(G, whiten_method="svd", backend=be),
    "sinkgd_update": lambda G, be: swanref.sinkgd_update(G, backend=be),
}
WHITEN_ROUTES = [p for p in WHITEN_PRESETS if p != "custom"] + list(ROUTES)
BACKENDS = registry.available()


def _base(dtype, shape=(5, 8)):
    R = np.random.default_rng(23).standard_normal(shape)
    # a strong all-ones part: s_1 ~ 4 max|G|, so 2-norms overflow in the top binade
    G = 1.0 + 0.5 * R / np.abs(R).max()
    return (G / (1.0001 * np.abs(G).max())).astype(dtype)  # max|G| in [0.5, 1)


def _scaled(dtype, k, shape=(5, 8)):
    """``(2**k G, G')``: the scaled input and the same rounded values at unit scale."""
    big = np.ldexp(_base(dtype, shape), k).astype(dtype)
    assert np.isfinite(big).all() and np.count_nonzero(big) > big.size // 2
    return big, np.ldexp(big, -k).astype(dtype)


def _tol(dtype):
    return float(np.sqrt(np.finfo(dtype).eps))


def _as_numpy(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _run(fn, G, be):
    if be == "cupy":
        import cupy
        return _as_numpy(fn(cupy.asarray(G), be))
    return fn(G, be)


@pytest.mark.parametrize("shape", [(5, 8), (8, 5)], ids=["wide", "tall"])
@pytest.mark.parametrize("dtype,k", CASES)
@pytest.mark.parametrize("op", list(OPERATORS))
def test_operators_at_range_edges_match_unit_scale_on_every_backend(op, dtype, k, shape):
    G, unit = _scaled(dtype, k, shape)
    want = OPERATORS[op](unit, "reference")
    for be in BACKENDS:
        out = _run(OPERATORS[op], G, be)
        assert out.dtype == dtype and np.isfinite(out).all(), be
        np.testing.assert_allclose(out, want, rtol=0, atol=_tol(dtype), err_msg=be)


@pytest.mark.parametrize("dtype,k", CASES)
@pytest.mark.parametrize("name", WHITEN_ROUTES)
def test_presets_and_routes_at_range_edges_agree_across_backends(name, dtype, k):
    others = [be for be in BACKENDS if be != "reference"]
    if not others:
        pytest.skip("only the reference backend is available here")
    G, _ = _scaled(dtype, k)
    ref = swanref.whiten(G, name, backend="reference")
    if k > 0:  # eps negligible for huge input: the result of the moderately scaled matrix
        np.testing.assert_allclose(ref, swanref.whiten(np.ldexp(G, 40 - k), name),
                                   rtol=0, atol=_tol(dtype))
    for be in others:
        try:
            out = _run(lambda x, b: swanref.whiten(x, name, backend=b), G, be)
        except ValueError as exc:  # the GPU runs the to-wide Keller-form presets only
            assert be == "cupy" and "runs on NumPy arrays only" in str(exc)
            continue
        np.testing.assert_allclose(out, ref, rtol=0, atol=_tol(dtype), err_msg=be)


@pytest.mark.parametrize("k", EDGES[np.float64])
@pytest.mark.parametrize("name", list(OPERATORS)[2:7] + WHITEN_ROUTES)
def test_complex_whitening_at_range_edges_is_phase_equivariant(name, k):
    """Complex input (reference only, spec 9.7): every method, preset and route satisfies
    f(w G) = w f(G) for |w| = 1, so the complex run at each edge must equal the phase times
    the real run, which the tests above tie to the other backends."""
    G, _ = _scaled(np.float64, k)
    # in the subnormal band w G would round: the exact phase 1j there
    phase = 1j if k < np.finfo(np.float64).minexp else np.exp(0.7j)
    fn = OPERATORS.get(name) or (lambda x, be: swanref.whiten(x, name, backend=be))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/underflow warning either
        out = fn(phase * G, "reference")
    real = fn(G, None)  # the default backend: the C++ core when built
    assert out.dtype == np.complex128
    # presets and routes may compute in float32 (their source's format)
    tol = _tol(np.float64 if name in OPERATORS else np.float32)
    np.testing.assert_allclose(out, phase * real, rtol=0, atol=tol)
