"""swanref.deferred_checks (spec 6.7): the finite check and the divergence guard report at the
end of the block, with the error the call would have raised at once; every backend (the CuPy
one keeps its flags on the device, which is the point: no host synchronisation per call)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import swanref
from swanref import ops


def _ns(backend, G, **kw):
    return backend(swanref.whiten, G, method="newton_schulz", **kw)


def _diverging(rng):
    return rng.standard_normal((8, 16)) * 10  # scaling='none': eigenvalues far outside (0, 3)


def test_divergence_reported_at_block_end_with_the_same_error(backend, rng):
    G = _diverging(rng)
    with pytest.raises(swanref.DivergenceError) as now:
        _ns(backend, G, scaling="none")
    with pytest.raises(swanref.DivergenceError) as later:
        with swanref.deferred_checks():
            out = _ns(backend, G, scaling="none")   # returns: the check is queued
            assert out.shape == G.shape
            assert len(ops._pending()) == 1
    assert str(later.value) == str(now.value) and later.value.slices == now.value.slices
    assert ops._pending() is None


def test_first_failing_call_in_call_order_raises(backend, rng):
    good = rng.standard_normal((6, 10))
    bad2 = np.stack([good, _diverging(rng)[:6, :10]])
    with pytest.raises(swanref.DivergenceError) as now:
        _ns(backend, bad2, scaling="none")
    with pytest.raises(swanref.DivergenceError) as later:
        with swanref.deferred_checks():
            _ns(backend, good)                       # passes
            _ns(backend, bad2, scaling="none")       # first failure
            _ns(backend, _diverging(rng), scaling="none")
    assert str(later.value) == str(now.value)


def test_passing_block_raises_nothing_and_results_are_unchanged(backend, rng):
    G = rng.standard_normal((2, 6, 10))
    want = _ns(backend, G)
    with swanref.deferred_checks():
        got = _ns(backend, G)
        gn = backend(swanref.grad_norm, G)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gn, backend(swanref.grad_norm, G))


def test_nonfinite_input_same_error_in_the_block(backend, rng):
    G = rng.standard_normal((6, 10))
    G[1, 2] = np.nan
    for call in (lambda: _ns(backend, G), lambda: backend(swanref.grad_norm, G),
                 lambda: backend(swanref.whiten, G, method="muon_ns5")):
        with pytest.raises(ValueError) as now:
            call()
        with pytest.raises(ValueError) as later:  # at the call (CPU) or at the block's end (GPU)
            with swanref.deferred_checks():
                call()
        assert str(later.value) == str(now.value)
        assert ops._pending() is None


def test_immediate_policies_and_nesting(backend, rng):
    G = _diverging(rng)
    with swanref.deferred_checks():
        with pytest.warns(swanref.DivergenceWarning, match="set to NaN"):   # 'warn': at once
            X = _ns(backend, G, scaling="none", on_divergence="warn")
        assert np.all(np.isnan(X))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _ns(backend, G, scaling="none", on_divergence="ignore")
    with pytest.raises(swanref.DivergenceError):
        with swanref.deferred_checks():
            with swanref.deferred_checks():        # nested: reports at the outer block's end
                _ns(backend, G, scaling="none")
            assert len(ops._pending()) == 1
    # an error inside the block drops the queue: nothing is raised later
    with pytest.raises(KeyError):
        with swanref.deferred_checks():
            _ns(backend, G, scaling="none")
            raise KeyError("user error")
    assert ops._pending() is None
