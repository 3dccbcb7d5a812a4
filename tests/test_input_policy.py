"""Spec section 6: the input policy. Every bad input is a clear error, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

import swanref

OPS = {
    "grad_norm": swanref.grad_norm,
    "whiten_svd": lambda G, **kw: swanref.whiten(G, "svd", **kw),
    "whiten_eigh": lambda G, **kw: swanref.whiten(G, "eigh", **kw),
    "whiten_ns": lambda G, **kw: swanref.whiten(G, "newton_schulz", **kw),
    "whiten_nsds": lambda G, **kw: swanref.whiten(G, "nsds", **kw),
    "swan_update": swanref.swan_update,
    "sinkgd_update": swanref.sinkgd_update,
}
op_params = pytest.mark.parametrize("op", list(OPS), ids=list(OPS))


@op_params
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool])
def test_integer_and_bool_are_type_errors(backend, op, dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        OPS[op](np.ones((3, 4), dtype=dtype), backend=backend.name)


@op_params
def test_complex_is_a_type_error(backend, op):
    """Complex input (spec 9.7): whitening on the reference backend only; the others refuse."""
    G = np.ones((3, 4), dtype=np.complex128)
    if op.startswith("whiten") and backend.name == "reference":
        assert OPS[op](G, backend=backend.name).dtype == np.complex128
        return
    with pytest.raises(TypeError, match="complex"):
        OPS[op](G, backend=backend.name)


@op_params
def test_object_and_strings_are_type_errors(backend, op):
    with pytest.raises(TypeError):
        OPS[op](np.array([[1.0, "a"]], dtype=object), backend=backend.name)
    with pytest.raises(TypeError):
        OPS[op](np.array([["a", "b"]]), backend=backend.name)


@op_params
@pytest.mark.parametrize("shape", [(), (5,), (0, 3), (3, 0), (2, 0, 4)])
def test_bad_shapes_are_value_errors(backend, op, shape):
    with pytest.raises(ValueError, match="dimensions|empty"):
        OPS[op](np.ones(shape), backend=backend.name)


@op_params
def test_zero_size_batch_is_fine(backend, op):
    out = OPS[op](np.ones((0, 3, 4)), backend=backend.name)
    assert out.shape == (0, 3, 4)


@op_params
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises_by_default(backend, op, bad):
    G = np.ones((3, 4))
    G[0, 1] = bad
    G[1] = np.arange(4.0)
    with pytest.raises(ValueError, match="non-finite"):
        OPS[op](G, backend=backend.name)


@op_params
def test_nonfinite_propagates_per_slice_when_asked(backend, op, rng):
    G = rng.standard_normal((3, 4, 6))
    G[1, 2, 3] = np.nan
    out = OPS[op](G, backend=backend.name, check_finite=False)
    clean = OPS[op](G[[0, 2]], backend=backend.name)
    np.testing.assert_allclose(out[[0, 2]], clean, atol=1e-14)
    if op == "grad_norm":  # GradNorm's slices are rows
        assert np.all(np.isnan(out[1, 2])) and np.all(np.isfinite(np.delete(out[1], 2, 0)))
    else:
        assert np.all(np.isnan(out[1]))


@op_params
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_dtype_in_dtype_out_and_input_untouched(backend, op, dtype, rng):
    G = rng.standard_normal((4, 6)).astype(dtype)
    before = G.copy()
    out = OPS[op](G, backend=backend.name)
    assert out.dtype == G.dtype and out.shape == G.shape
    np.testing.assert_array_equal(G, before)
    assert not np.shares_memory(out, G)


@op_params
def test_bfloat16_is_computed_in_float32(backend, op, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    G = rng.standard_normal((4, 6)).astype(ml_dtypes.bfloat16)
    out = OPS[op](G, backend=backend.name)
    assert out.dtype == G.dtype
    ref = OPS[op](G.astype(np.float32), backend=backend.name)
    np.testing.assert_array_equal(out, ref.astype(ml_dtypes.bfloat16))


def test_lists_are_accepted(backend):
    out = swanref.grad_norm([[1.0, 2.0, 3.0]], backend=backend.name)
    np.testing.assert_allclose(out, [[-1.224744871391589, 0.0, 1.224744871391589]])


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"method": "qr"}, ValueError, "unknown whitening method"),
    ({"method": "svd", "steps": 3}, ValueError, "steps does not apply"),
    ({"method": "eigh", "beta": 0.5}, ValueError, "beta does not apply"),
    ({"method": "newton_schulz", "rank_rtol": 1e-3}, ValueError, "rank_rtol does not apply"),
    ({"method": "newton_schulz", "steps": -1}, ValueError, "steps must be >= 0"),
    ({"method": "newton_schulz", "steps": 2.5}, TypeError, "steps must be an integer"),
    ({"method": "newton_schulz", "steps": True}, TypeError, "steps must be an integer"),
    ({"method": "newton_schulz", "beta": 0.0}, ValueError, "beta must be >"),
    ({"method": "newton_schulz", "beta": float("nan")}, ValueError, "beta must be finite"),
    ({"method": "newton_schulz", "scaling": "spectral"}, ValueError, "scaling must be one of"),
    ({"method": "newton_schulz", "on_divergence": "retry"}, ValueError, "on_divergence"),
    ({"method": "svd", "rank_rtol": -1.0}, ValueError, "rank_rtol must be >="),
    # issue 23: rank_rtol**2 overflowed ('OverflowError: (34, ...)') on the eigh route
    ({"method": "eigh", "rank_rtol": 1e308}, ValueError, "rank_rtol must be < 1"),
    ({"method": "svd", "rank_rtol": 1.0}, ValueError, "rank_rtol must be < 1"),
    ({"backend": "fortran"}, ValueError, "unknown backend"),
])
def test_bad_whiten_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        swanref.whiten(np.ones((2, 3)) + np.eye(2, 3), **kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"axis": 0}, ValueError, "axis must name one of the two matrix axes"),
    ({"axis": "rows"}, ValueError, "axis must be -1, -2 or 'long'"),
    ({"axis": 1.0}, TypeError, "axis must be"),
    ({"eps": -1e-8}, ValueError, "eps must be >= 0"),
    ({"eps": "small"}, TypeError, "eps must be a real number"),
])
def test_bad_grad_norm_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        swanref.grad_norm(np.ones((2, 3, 4)), **kwargs)


def test_bad_update_options():
    with pytest.raises(ValueError, match="iters must be >= 0"):
        swanref.sinkgd_update(np.ones((2, 3)), iters=-2)
    with pytest.raises(TypeError, match="lr must be a real number"):
        swanref.swan_update(np.ones((2, 3)), lr="fast")
    with pytest.raises(ValueError, match="unknown whitening method"):
        swanref.swan_update(np.ones((2, 3)), whiten_method="none")
