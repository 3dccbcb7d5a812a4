"""The CuPy backend against the reference backend, on the same inputs (docs/gpu.md).

Skipped as a whole, with the reason, where CuPy or a CUDA GPU is missing.

Tolerances (relative Frobenius error ||gpu - ref|| / ||ref|| unless stated):
  * GradNorm, max abs error (outputs are O(1)): float64 1e-12; float32 2e-6 * sqrt(n / 64),
    at least 2e-6 (the two sums are ordered differently: NumPy pairwise, GPU per thread + tree).
  * svd / Newton-Schulz / NSDS / SinkGD: float64 1e-10, float32 1e-4 (the same algorithm in both
    precisions, on matrices of condition number < 10).
  * eigh: float64 1e-9, float32 1e-3 (error ~ kappa^2 eps, spec 3.2).
Observed errors are written to $SWANREF_GPU_ERRLOG (JSON lines) when that variable is set.
"""
from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np
import pytest

import swanref
from swanref.backends import reference as R

cp = pytest.importorskip("cupy", reason="CuPy is not installed (pip install swanref[gpu])")
from swanref.backends import cupy as CB  # noqa: E402

if not CB.available():
    pytest.skip("CuPy is installed but no CUDA GPU/driver is usable", allow_module_level=True)

pytestmark = pytest.mark.gpu

DTYPES = [np.float64, np.float32]
TOL = {"svd": (1e-10, 1e-4), "newton_schulz": (1e-10, 1e-4), "nsds": (1e-10, 1e-4),
       "eigh": (1e-9, 1e-3), "sinkgd": (1e-10, 1e-4)}


def _log(kind, **kw):
    path = os.environ.get("SWANREF_GPU_ERRLOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": kind, **kw}) + "\n")


def _seed(*key):
    return zlib.crc32(repr(key).encode())


def _rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a - b))


def _tol(method, dtype):
    return TOL[method][0 if np.dtype(dtype) == np.float64 else 1]


def _gn_tol(dtype, n):
    if np.dtype(dtype) == np.float64:
        return 1e-12
    return max(2e-6, 2e-6 * math.sqrt(n / 64))


def _well_conditioned(rng, shape, dtype, kappa=4.0):
    """Random (*batch, m, n) with singular values spread over [1/kappa, 1]."""
    *batch, m, n = shape
    r = min(m, n)
    out = np.empty(shape)
    for idx in np.ndindex(*batch) if batch else [()]:
        U, _ = np.linalg.qr(rng.standard_normal((m, r)))
        V, _ = np.linalg.qr(rng.standard_normal((n, r)))
        s = np.geomspace(1.0, 1.0 / kappa, r)
        out[idx] = (U * s) @ V.T
    return out.astype(dtype)


# -- availability and settings -------------------------------------------------------------------

def test_backend_registered_and_tf32_off_by_default():
    assert "cupy" in swanref.available_backends()
    assert CB.tf32_enabled() is False


def test_header_found_and_compiled_without_flush_to_zero():
    assert (CB.include_dir() / CB.HEADER).is_file()
    # cupy.RawModule would add -ftz=true (float32 subnormals flushed to zero)
    assert CB.compile_path() == "nvrtc", CB._state.get("compile_error")


# -- GradNorm --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 37), (2, 3, 64), (7, 2048), (3, 11008), (2, 70000),
                                   (1, 1), (4, 1)])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_grad_norm_matches_reference(dtype, shape, eps):
    rng = np.random.default_rng(_seed(shape, eps))
    G = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    got = CB.grad_norm(cp.asarray(G), eps)
    assert isinstance(got, cp.ndarray) and got.dtype == G.dtype and got.shape == G.shape
    ref = R.grad_norm(G, eps)
    err = float(np.max(np.abs(cp.asnumpy(got).astype(np.float64) - ref)))
    _log("grad_norm", dtype=np.dtype(dtype).name, shape=shape, eps=eps, max_abs=err)
    assert err <= _gn_tol(dtype, shape[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e30, "subnormal", "near_overflow"])
def test_grad_norm_extreme_scales(dtype, scale):
    # near_overflow takes the kernel's step-by-step path (|g - g0| or its sums could overflow)
    if isinstance(scale, str):
        tiny, huge = (1e-40, 3e37) if dtype == np.float32 else (1e-310, 1e307)
        scale = tiny if scale == "subnormal" else huge
    rng = np.random.default_rng(1)
    G = (rng.standard_normal((6, 300)) * scale).astype(dtype)
    G[3] += dtype(scale)  # a row with an offset
    for eps in (0.0, 1e-6):
        with np.errstate(all="ignore"):
            ref = R.grad_norm(G, eps)
        got = cp.asnumpy(CB.grad_norm(cp.asarray(G), eps))
        assert np.all(np.isfinite(got))
        assert np.max(np.abs(got - ref)) <= _gn_tol(dtype, 300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_norm_constant_and_zero_rows_are_exactly_zero(dtype):
    G = np.array([[3.7] * 50, [0.0] * 50, [-1e30] * 50, [3e38] * 50, list(range(50))],
                 dtype=dtype)
    for eps in (0.0, 1e-8):
        got = cp.asnumpy(CB.grad_norm(cp.asarray(G), eps))
        assert np.array_equal(got[:4], np.zeros((4, 50), dtype))
        assert np.max(np.abs(got[4] - R.grad_norm(G, eps)[4])) <= _gn_tol(dtype, 50)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["transpose", "col_step", "row_slice", "batch_swap", "negative",
                                  "aligned_slice", "misaligned_slice"])
def test_grad_norm_non_contiguous(dtype, view):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((4, 40, 60)).astype(dtype)
    take = {
        "transpose": lambda a: a[0].T,
        "col_step": lambda a: a[:, :, ::2],
        "row_slice": lambda a: a[1:, 3:30, 5:50],
        "batch_swap": lambda a: a.swapaxes(0, 1),
        "negative": lambda a: a[:, ::-1, ::-1],
        "aligned_slice": lambda a: a[:, 2:38, 4:36],     # rows 16-byte aligned: vector path
        "misaligned_slice": lambda a: a[:, 2:38, 1:33],  # same n, rows off by one entry
    }[view]
    Gc = take(cp.asarray(base))
    G = take(base)
    before = cp.asnumpy(Gc).copy()
    got = cp.asnumpy(CB.grad_norm(Gc, 1e-4))
    assert np.array_equal(cp.asnumpy(Gc), before)  # the input is never written
    assert np.max(np.abs(got - R.grad_norm(G, 1e-4))) <= _gn_tol(dtype, G.shape[-1])


@pytest.mark.parametrize("axis", [-1, -2, "long"])
def test_grad_norm_public_api_keeps_cupy(axis):
    rng = np.random.default_rng(3)
    G = rng.standard_normal((3, 30, 70))
    out = swanref.grad_norm(cp.asarray(G), axis=axis, eps=1e-5)
    assert isinstance(out, cp.ndarray) and out.shape == G.shape
    ref = swanref.grad_norm(G, axis=axis, eps=1e-5, backend="reference")
    assert np.max(np.abs(cp.asnumpy(out) - ref)) <= 1e-12


def test_grad_norm_nan_rows_public_api():
    G = np.random.default_rng(4).standard_normal((4, 16))
    G[2, 5] = np.nan
    out = cp.asnumpy(swanref.grad_norm(cp.asarray(G), check_finite=False))
    ref = swanref.grad_norm(G, check_finite=False, backend="reference")
    assert np.all(np.isnan(out[2])) and not np.any(np.isnan(out[[0, 1, 3]]))
    assert np.max(np.abs(out[[0, 1, 3]] - ref[[0, 1, 3]])) <= 1e-12
    with pytest.raises(ValueError):
        swanref.grad_norm(cp.asarray(G))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("knobs", [dict(vector=False), dict(work_in_shared=False),
                                   dict(threads=32), dict(threads=512), dict(threads=352)])
def test_grad_norm_kernel_variants_agree(dtype, knobs):
    G = np.random.default_rng(17).standard_normal((9, 4100)).astype(dtype)
    Gc = cp.asarray(G)
    got = cp.asnumpy(CB.grad_norm(Gc, 1e-6, **knobs))
    assert np.max(np.abs(got - R.grad_norm(G, 1e-6))) <= _gn_tol(dtype, 4100)


def test_grad_norm_float16_in_float16_out():
    G = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float16)
    out = swanref.grad_norm(cp.asarray(G))
    assert out.dtype == np.float16
    ref = swanref.grad_norm(G, backend="reference")
    assert np.max(np.abs(cp.asnumpy(out).astype(np.float64) - ref.astype(np.float64))) <= 4e-3


# -- whitening ----------------------------------------------------------------------------------

METHODS = ["svd", "eigh", "newton_schulz", "nsds"]
SHAPES = [(16, 48), (3, 8, 20), (40, 12), (2, 2, 24, 24), (1, 64, 64), (1, 200)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES)
def test_whiten_matches_reference(dtype, method, shape):
    rng = np.random.default_rng(_seed(method, shape))
    G = _well_conditioned(rng, shape, dtype)
    got = swanref.whiten(cp.asarray(G), method)
    assert isinstance(got, cp.ndarray) and got.dtype == G.dtype and got.shape == G.shape
    ref = swanref.whiten(G, method, backend="reference")
    err = _rel(cp.asnumpy(got), ref)
    _log("whiten", method=method, dtype=np.dtype(dtype).name, shape=shape, rel=err)
    assert err <= _tol(method, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_whiten_zero_matrix_gives_zeros(dtype, method):
    G = np.zeros((2, 6, 10), dtype)
    got = cp.asnumpy(swanref.whiten(cp.asarray(G), method))
    assert np.array_equal(got, np.zeros_like(G))


@pytest.mark.parametrize("method", ["svd", "eigh"])
def test_whiten_rank_deficient_float64(method):
    rng = np.random.default_rng(6)
    G = rng.standard_normal((8, 3)) @ rng.standard_normal((3, 20))
    got = cp.asnumpy(swanref.whiten(cp.asarray(G), method))
    ref = swanref.whiten(G, method, backend="reference")
    assert _rel(got, ref) <= 1e-8
    s = np.linalg.svd(got, compute_uv=False)
    assert np.sum(s > 0.5) == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,args", [("whiten_newton_schulz", (7, 0.5, "gram_fro")),
                                     ("whiten_newton_schulz", (5, 0.5, "grad_fro")),
                                     ("whiten_newton_schulz", (3, 0.4, "none")),
                                     ("whiten_newton_schulz", (0, 0.5, "gram_fro")),
                                     ("whiten_newton_schulz", (1, 0.5, "gram_fro")),
                                     ("whiten_nsds", (2, 0.4, "grad_fro")),
                                     ("whiten_svd", (1e-12,)),
                                     ("whiten_eigh", (1e-12,))])
def test_backend_functions_on_non_contiguous_views(dtype, fn, args):
    rng = np.random.default_rng(7)
    base = _well_conditioned(rng, (3, 24, 64), dtype)
    G = base[:, ::2, 1::2]  # (3, 12, 32), strided both ways
    got = getattr(CB, fn)(cp.asarray(base)[:, ::2, 1::2], *args)
    ref = getattr(R, fn)(G, *args)
    method = {"whiten_newton_schulz": "newton_schulz", "whiten_nsds": "nsds",
              "whiten_svd": "svd", "whiten_eigh": "eigh"}[fn]
    tol = _tol(method, dtype) * (10 if args[-1] == "none" else 1)
    assert _rel(cp.asnumpy(got), ref) <= tol


def test_newton_schulz_tf32_is_opt_in():
    rng = np.random.default_rng(8)
    G = _well_conditioned(rng, (256, 512), np.float32)
    G64 = G.astype(np.float64)
    exact = R.whiten_newton_schulz(G64, 10, 0.5, "gram_fro")
    plain = cp.asnumpy(CB.whiten_newton_schulz(cp.asarray(G), 10, 0.5, "gram_fro"))
    with CB.tf32(True):
        assert CB.tf32_enabled()
        fast = cp.asnumpy(CB.whiten_newton_schulz(cp.asarray(G), 10, 0.5, "gram_fro"))
    assert not CB.tf32_enabled()
    e_plain, e_fast = _rel(plain, exact), _rel(fast, exact)
    _log("tf32", plain=e_plain, tf32=e_fast)
    assert e_plain <= 1e-5
    assert e_fast <= 1e-2  # TF32 keeps 10 mantissa bits


def test_whiten_nan_slice_and_divergence_guard():
    rng = np.random.default_rng(9)
    G = _well_conditioned(rng, (3, 6, 12), np.float64)
    G[1, 0, 0] = np.inf
    out = cp.asnumpy(swanref.whiten(cp.asarray(G), "newton_schulz", check_finite=False))
    ref = swanref.whiten(G, "newton_schulz", check_finite=False, backend="reference")
    assert np.all(np.isnan(out[1]))
    assert _rel(out[[0, 2]], ref[[0, 2]]) <= 1e-10
    big = np.random.default_rng(10).standard_normal((8, 16)) * 100
    with pytest.raises(swanref.DivergenceError):
        swanref.whiten(cp.asarray(big), "newton_schulz", scaling="none", steps=20)
    with pytest.warns(swanref.DivergenceWarning):
        fb = swanref.whiten(cp.asarray(big), "newton_schulz", scaling="none", steps=20,
                            on_divergence="fallback")
    assert _rel(cp.asnumpy(fb), R.whiten_svd(big, 16 * np.finfo(float).eps)) <= 1e-10


# -- SinkGD and the full updates -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(12, 30), (2, 30, 12)])
def test_sinkgd_matches_reference(dtype, shape):
    G = np.random.default_rng(11).standard_normal(shape).astype(dtype)
    G[..., 0, :] = 0  # a zero row stays zero
    got = cp.asnumpy(CB.sinkgd(cp.asarray(G), 5))
    ref = R.sinkgd(G, 5)
    assert np.array_equal(got[..., 0, :], np.zeros_like(got[..., 0, :]))
    assert _rel(got, ref) <= _tol("sinkgd", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["newton_schulz", "svd"])
def test_swan_update_matches_reference(dtype, method):
    G = np.random.default_rng(12).standard_normal((2, 16, 40)).astype(dtype)
    got = swanref.swan_update(cp.asarray(G), lr=0.1, whiten_method=method, eps=1e-8)
    ref = swanref.swan_update(G, lr=0.1, whiten_method=method, eps=1e-8, backend="reference")
    assert isinstance(got, cp.ndarray)
    # GradNorm output is not well conditioned in general: allow kappa-amplified rounding
    assert _rel(cp.asnumpy(got), ref) <= (1e-9 if dtype == np.float64 else 2e-3)


def test_sinkgd_update_matches_reference():
    G = np.random.default_rng(13).standard_normal((20, 9))
    got = swanref.sinkgd_update(cp.asarray(G), iters=3, lr=0.5)
    ref = swanref.sinkgd_update(G, iters=3, lr=0.5, backend="reference")
    assert _rel(cp.asnumpy(got), ref) <= 1e-12


# -- moving data between backends ------------------------------------------------------------------

def test_numpy_input_with_cupy_backend_comes_back_as_numpy():
    G = np.random.default_rng(14).standard_normal((10, 30))
    out = swanref.grad_norm(G, backend="cupy")
    assert isinstance(out, np.ndarray)
    assert np.max(np.abs(out - R.grad_norm(G, 0.0))) <= 1e-12
    w = swanref.whiten(G, "svd", backend="cupy")
    assert isinstance(w, np.ndarray)


def test_cupy_input_with_reference_backend_comes_back_as_cupy():
    G = np.random.default_rng(15).standard_normal((10, 30))
    out = swanref.grad_norm(cp.asarray(G), backend="reference")
    assert isinstance(out, cp.ndarray)
    assert np.array_equal(cp.asnumpy(out), R.grad_norm(G, 0.0))


# -- sizes users train at ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_large_grad_norm_and_newton_schulz(dtype):
    rng = np.random.default_rng(16)
    G = rng.standard_normal((512, 11008)).astype(dtype)
    Gc = cp.asarray(G)
    err = float(np.max(np.abs(cp.asnumpy(CB.grad_norm(Gc, 0.0)) - R.grad_norm(G, 0.0))))
    _log("grad_norm_large", dtype=np.dtype(dtype).name, max_abs=err)
    assert err <= _gn_tol(dtype, 11008)
    H = _well_conditioned(rng, (192, 700), dtype)
    got = cp.asnumpy(CB.whiten_newton_schulz(cp.asarray(H), 10, 0.5, "gram_fro"))
    ref = R.whiten_newton_schulz(H, 10, 0.5, "gram_fro")
    e = _rel(got, ref)
    _log("ns_large", dtype=np.dtype(dtype).name, rel=e)
    assert e <= _tol("newton_schulz", dtype)


# -- the public call's one-pass checks, CUDA-graph replay, the float64 route of whiten_svd --------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_grad_norm_finite_flags_rows_with_nan_or_inf(dtype, bad):
    rng = np.random.default_rng(_seed("gnf", np.dtype(dtype).name, str(bad)))
    G = rng.standard_normal((9, 257)).astype(dtype)
    cols = rng.integers(0, 257, size=4)
    cols[0] = 0  # a first entry: the row's reference value itself
    rows = [1, 4, 5, 8]
    clean = cp.asarray(G)
    out, ok = CB.grad_norm_finite(clean, 0.0, True)
    assert ok
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(CB.grad_norm(clean, 0.0)))
    for r, c in zip(rows, cols):
        G[r, c] = bad
    _, ok = CB.grad_norm_finite(cp.asarray(G), 0.0, True)
    assert not ok
    out, ok = CB.grad_norm_finite(cp.asarray(G), 0.0, False)
    assert ok
    out = cp.asnumpy(out)
    assert np.isnan(out[rows]).all()
    good = [i for i in range(9) if i not in rows]
    np.testing.assert_array_equal(out[good], cp.asnumpy(CB.grad_norm(cp.asarray(G[good]), 0.0)))
    with pytest.raises(ValueError, match="4 non-finite"):
        swanref.grad_norm(cp.asarray(G))


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_and_fro_norms(dtype):
    rng = np.random.default_rng(3)
    G = rng.standard_normal((3, 20, 30)).astype(dtype)
    assert CB.all_finite(cp.asarray(G))
    # squares summed in G's dtype: 600 terms in any order, relative error <= 600 eps
    np.testing.assert_allclose(cp.asnumpy(CB.fro_norms(cp.asarray(G))),
                               np.linalg.norm(G.astype(np.float64), axis=(-2, -1)),
                               rtol=600 * float(np.finfo(dtype).eps))
    G[1, 3, 4] = np.nan
    assert not CB.all_finite(cp.asarray(G))


@pytest.mark.parametrize("shape", [(3, 20, 30), (1, 4, 1 << 17), (2, 7, 3 << 15), (300, 9)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_matrix_reductions_match_numpy(shape, dtype):
    """The two-pass per-matrix max/sum (rows first, long rows cut into pieces)."""
    from swanref.backends.cupy.interop import per_matrix
    G = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    X = cp.asarray(G)
    for transposed in (False, True):
        Xv, Gv = (cp.swapaxes(X, -1, -2), np.swapaxes(G, -1, -2)) if transposed else (X, G)
        np.testing.assert_array_equal(cp.asnumpy(per_matrix(cp.max, Xv)),
                                      np.max(Gv, axis=(-2, -1)))
        got = cp.asnumpy(per_matrix(cp.sum, cp.abs(Xv), keepdims=True))
        want = np.abs(Gv.astype(np.float64)).sum(axis=(-2, -1), keepdims=True)
        n = shape[-1] * shape[-2]
        np.testing.assert_allclose(got, want, rtol=n * float(np.finfo(dtype).eps))


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_flag_stays_on_the_device(dtype):
    G = np.random.default_rng(6).standard_normal((2, 8, 12)).astype(dtype)
    flag = CB.finite_flag(cp.asarray(G))
    assert isinstance(flag, cp.ndarray) and flag.shape == () and bool(flag)
    G[1, 2, 3] = np.inf
    assert not bool(CB.finite_flag(cp.asarray(G)))
    # the public iterative call reads the flag after the iteration: NaN/Inf input still raises,
    # or gives NaN in exactly the affected slice with check_finite=False (spec 6.2)
    with pytest.raises(ValueError, match="non-finite"):
        swanref.whiten(cp.asarray(G), "newton_schulz")
    out = cp.asnumpy(swanref.whiten(cp.asarray(G), "newton_schulz", check_finite=False))
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
    # the good slice as the spec's masked run gives it: the bad slice zeroed, same batch shape
    # (cuBLAS may pick another kernel for another batch size, so compare like with like)
    Z = G.copy()
    Z[1] = 0
    np.testing.assert_array_equal(out[0], cp.asnumpy(swanref.whiten(cp.asarray(Z),
                                                                     "newton_schulz"))[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_graph_replay_gives_the_eager_result_on_new_input(dtype):
    from swanref.backends.cupy import graphs, iterative
    rng = np.random.default_rng(4)
    Gs = [cp.asarray(rng.standard_normal((2, 24, 40)).astype(dtype)) for _ in range(3)]
    graphs.clear()
    CB.set_graphs(True)  # opt-in
    try:
        eager = [iterative._newton_schulz(G, 6, 0.5, "gram_fro") for G in Gs]  # no graph
        before = graphs.stats()
        replayed = [CB.whiten_newton_schulz(G, 6, 0.5, "gram_fro") for G in Gs]
        after = graphs.stats()
        for a, b in zip(eager, replayed):
            np.testing.assert_array_equal(cp.asnumpy(a), cp.asnumpy(b))
        if "graph_error" not in CB._state:  # capture works here: the later calls were replays
            assert after["replays"] - before["replays"] == 2
        replayed[1][...] = 0  # results are the caller's own arrays, not the graph's buffers
        again = CB.whiten_newton_schulz(Gs[2], 6, 0.5, "gram_fro")
        np.testing.assert_array_equal(cp.asnumpy(again), cp.asnumpy(eager[2]))
    finally:
        CB.set_graphs(False)
        graphs.clear()


def test_whiten_svd_float32_route_accuracy():
    # float32 through the float64 eigh route (taken when sigma_rtol^2 >= 1e4 n eps64, i.e. for
    # the default sigma_rtol = n eps32 once n >= 157): the error against the polar factor of
    # the float32-rounded matrix is the float32 rounding of the result (kappa = 1e3, so the
    # route's kappa^2 eps64 is far below it)
    rng = np.random.default_rng(6)
    m, n = 48, 200
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    G = ((U * np.geomspace(1, 1e-3, m)) @ V.T).astype(np.float32)
    ref = R.whiten_svd(G.astype(np.float64), 1e-6)
    got = cp.asnumpy(CB.whiten_svd(cp.asarray(G), max(m, n) * float(np.finfo(np.float32).eps)))
    assert got.dtype == np.float32
    # rounding each entry to float32 moves X by at most eps32 / 2 relative, entrywise
    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    assert _rel(got, ref) <= eps32 / 2 + 1e6 * n * eps64


MIXED32 = np.array([[1.5e-38, 1.0e-38, -6e-39], [3e-39, 1.2e-38, 0.0]], np.float32)


@pytest.mark.parametrize("dtype,k", [(np.float32, -135), (np.float64, -1050), (np.float32, 100),
                                     (np.float32, "mixed")])
@pytest.mark.parametrize("axes", [(-2, -1), -1, -2])
def test_pow2_normalise_is_exact_on_subnormals(dtype, k, axes):
    """CuPy compiles its own kernels with -ftz=true (cp.abs, cp.frexp, cp.ldexp flush float32
    subnormals to zero), so a float32 subnormal matrix was normalised to zeros and whitened to
    zeros, and subnormal entries next to a small normal maximum ("mixed") were lost; the
    normalisation now reads bit patterns and scales subnormals from their significands."""
    from swanref.backends.cupy.interop import pow2_normalise
    from swanref.spec.scaling import pow2_normalise as host
    if k == "mixed":  # max|G| normal, the other entries subnormal
        G, k = np.stack([MIXED32, -MIXED32[::-1]]), -126
        assert (np.abs(G) < np.finfo(dtype).tiny).sum() == 8  # 0 and the entries below 1.18e-38
    else:
        G = np.ldexp(np.random.default_rng(7).standard_normal((2, 3, 5)).astype(dtype), k)
        if k < 0:
            assert (np.abs(G) < np.finfo(dtype).tiny).all()
    np.testing.assert_array_equal(cp.asnumpy(pow2_normalise(cp.asarray(G), axes)), host(G, axes))
    for method in ("svd", "newton_schulz"):
        out = swanref.whiten(cp.asarray(G[0]), method)
        np.testing.assert_allclose(cp.asnumpy(out), swanref.whiten(np.ldexp(G[0], -k), method),
                                   atol=64 * np.finfo(dtype).eps, err_msg=method)
