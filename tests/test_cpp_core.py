"""swanref._core (the C++ backend) against small NumPy transcriptions of the definitions.

The transcriptions below are deliberately plain (float64 unless stated) and independent of
swanref.backends.reference, so this file checks the C++ core on its own; the shared tests run the
same backend through the registry.
"""

from __future__ import annotations

import numpy as np
import pytest

from swanref.backends import cpp as _cpp_backend

pytestmark = pytest.mark.skipif(not _cpp_backend.available(), reason=_cpp_backend.unavailable_reason())

if _cpp_backend.available():
    from swanref import _core

DTYPES = [np.float64, np.float32]
EPS = {np.float64: np.finfo(np.float64).eps, np.float32: np.finfo(np.float32).eps}


# ---------------------------------------------------------------- NumPy transcriptions


def np_grad_norm(G, eps):
    x = np.asarray(G, dtype=np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    v = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (x - mu) / np.sqrt(v + eps)
    const = (x == x[..., :1]).all(axis=-1, keepdims=True)
    return np.where(const, 0.0, out)


def np_whiten_svd(G, rtol):
    G = np.asarray(G, dtype=np.float64)
    out = np.zeros_like(G)
    for idx in np.ndindex(G.shape[:-2]):
        U, s, Vt = np.linalg.svd(G[idx], full_matrices=False)
        if s.size == 0 or s[0] == 0:
            continue
        r = int(np.sum(s > rtol * s[0]))
        out[idx] = U[:, :r] @ Vt[:r]
    return out


def np_whiten_eigh(G, rtol):
    G = np.asarray(G, dtype=np.float64)
    out = np.zeros_like(G)
    for idx in np.ndindex(G.shape[:-2]):
        g = G[idx]
        lam, Q = np.linalg.eigh(g @ g.T)
        if lam[-1] <= 0:
            continue
        keep = (lam > rtol * lam[-1]) & (lam > 0)
        Qr = Q[:, keep]
        out[idx] = Qr @ np.diag(lam[keep] ** -0.5) @ Qr.T @ g
    return out


def _prescale(g, scaling):
    if scaling == "none":
        return g
    amax = np.abs(g).max()
    return g if amax == 0 else np.ldexp(g, -np.frexp(amax)[1])


def np_newton_schulz(G, steps, beta, scaling, dtype=np.float64):
    G = np.asarray(G, dtype=dtype)
    out = np.zeros_like(G)
    for idx in np.ndindex(G.shape[:-2]):
        g = _prescale(G[idx], scaling)
        m = g.shape[0]
        A = g @ g.T
        c = {"gram_fro": np.linalg.norm(A), "grad_fro": np.trace(A), "none": 1.0}[scaling]
        if c == 0:
            continue
        Y, Z, eye = A / c, np.eye(m, dtype=dtype), np.eye(m, dtype=dtype)
        for _ in range(steps):
            T = 3 * eye - Z @ Y
            Y, Z = beta * Y @ T, beta * T @ Z
        out[idx] = Z @ g / np.sqrt(c)
    return out


def np_nsds(G, steps, beta, scaling):
    G = np.asarray(G, dtype=np.float64)
    out = np.zeros_like(G)
    for idx in np.ndindex(G.shape[:-2]):
        g = _prescale(G[idx], scaling)
        A = g @ g.T
        c = {"gram_fro": np.linalg.norm(A), "grad_fro": np.trace(A), "none": 1.0}[scaling]
        if c == 0:
            continue
        y, z = np.diag(A) / c, np.ones(g.shape[0])
        for _ in range(steps):
            t = 3 - z * y
            y, z = beta * y * t, beta * t * z
        out[idx] = z[:, None] * g / np.sqrt(c)
    return out


def np_sinkgd(G, iters):
    X = np.asarray(G, dtype=np.float64).copy()
    m, n = X.shape[-2:]
    for _ in range(iters):
        r = np.linalg.norm(X, axis=-1, keepdims=True)
        X = np.where(r > 0, np.sqrt(n) * X / np.where(r > 0, r, 1), 0)
        c = np.linalg.norm(X, axis=-2, keepdims=True)
        X = np.where(c > 0, np.sqrt(m) * X / np.where(c > 0, c, 1), 0)
    return X


# ---------------------------------------------------------------- helpers


def rng_matrix(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_close(actual, desired, rtol, atol, dtype):
    assert actual.dtype == dtype
    assert actual.flags.c_contiguous
    assert actual.shape == desired.shape
    np.testing.assert_allclose(actual.astype(np.float64), desired, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- agreement


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 1e-8, 1.0])
def test_grad_norm_matches_numpy(dtype, eps):
    G = rng_matrix((3, 7, 129), dtype) * 3 + 1
    G[0, 2] = 5.0  # constant row
    out = _core.grad_norm(G, eps)
    tol = 4 * EPS[dtype]
    assert_close(out, np_grad_norm(G, eps), tol, tol * 10, dtype)
    assert np.all(out[0, 2] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_norm_extreme_scales(dtype):
    base = rng_matrix((4, 33), np.float64)
    ref = np_grad_norm(base, 0.0)
    info = np.finfo(dtype)
    for scale in [info.max / 8, info.tiny, info.smallest_subnormal * 2**20]:
        G = (base * (scale / np.abs(base).max())).astype(dtype)
        out = _core.grad_norm(G, 0.0)
        assert np.all(np.isfinite(out))
        expect = np_grad_norm(G.astype(np.float64) / scale, 0.0)  # scale invariance
        np.testing.assert_allclose(out, expect, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    assert ref.shape == base.shape


def test_grad_norm_eps_with_huge_and_tiny_rows():
    x = np.array([[1e300, -1e300, 3e299], [1e-300, 2e-300, -1e-300], [5e-324, 0.0, 5e-324]])
    eps = 1e-8
    out = _core.grad_norm(x, eps)
    assert np.all(np.isfinite(out))
    # huge row: eps negligible; tiny rows: (x - mu)/sqrt(eps) to full precision
    np.testing.assert_allclose(out[0], np_grad_norm(x[:1] / 1e300, 0.0)[0], rtol=1e-12)
    mu = x[1].mean()
    np.testing.assert_allclose(out[1], (x[1] - mu) / np.sqrt(eps), rtol=1e-12)
    np.testing.assert_allclose(out[2], (x[2] - x[2].mean()) / np.sqrt(eps), rtol=1e-6, atol=1e-320)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 48), (24, 24), (1, 40), (300, 700)])
def test_whiten_svd_matches_numpy(dtype, shape):
    G = rng_matrix(shape, dtype, seed=1)
    out = _core.whiten_svd(G, 0.0)
    m, n = shape[-2:]
    kappa = (np.sqrt(n) + np.sqrt(m)) / max(np.sqrt(n) - np.sqrt(m), 1.0) if m < n else 1e3
    tol = 20 * kappa * EPS[dtype] * np.sqrt(m)
    assert_close(out, np_whiten_svd(G, 0.0), 0, tol, dtype)


@pytest.mark.parametrize("qr_ratio", [1.0, 1e9])
def test_whiten_svd_both_routes(qr_ratio):
    G = rng_matrix((2, 30, 80), seed=2)
    G[1, 5] = G[1, 3]  # rank deficient slice
    out = _core.whiten_svd(G, 1e-10, qr_ratio=qr_ratio)
    np.testing.assert_allclose(out, np_whiten_svd(G, 1e-10), atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_whiten_svd_rtol_truncates(dtype):
    rng = np.random.default_rng(3)
    U, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    V, _ = np.linalg.qr(rng.standard_normal((50, 20)))
    s = np.logspace(0, -6, 20)
    G = ((U * s) @ V.T).astype(dtype)
    out = _core.whiten_svd(G, 1e-3)
    r = int(np.sum(s > 1e-3))
    expect = U[:, :r] @ V[:, :r].T
    np.testing.assert_allclose(out, expect, atol=1e3 * EPS[dtype] * 50)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 48), (24, 24), (1, 40), (260, 500)])
def test_whiten_eigh_matches_numpy(dtype, shape):
    G = rng_matrix(shape, dtype, seed=4)
    out = _core.whiten_eigh(G, 0.0)
    m, n = shape[-2:]
    kappa = (np.sqrt(n) + np.sqrt(m)) / max(np.sqrt(n) - np.sqrt(m), 1.0) if m < n else None
    if kappa is None:  # square: condition number of this draw
        kappa = max(np.linalg.cond(G[idx].astype(np.float64)) for idx in np.ndindex(G.shape[:-2]))
    tol = 20 * kappa**2 * EPS[dtype] * np.sqrt(m)
    assert_close(out, np_whiten_eigh(G, 0.0), 0, tol, dtype)


def test_whiten_eigh_rank_deficient_and_zero():
    G = rng_matrix((3, 10, 30), seed=5)
    G[1, 4] = 2 * G[1, 0]
    G[2] = 0
    out = _core.whiten_eigh(G, 1e-12)
    np.testing.assert_allclose(out, np_whiten_eigh(G, 1e-12), atol=1e-9)
    assert np.all(out[2] == 0)
    np.testing.assert_array_equal(_core.whiten_svd(G[2:], 0.0), 0)


@pytest.mark.parametrize("scaling", ["gram_fro", "grad_fro", "none"])
@pytest.mark.parametrize("steps", [0, 1, 2, 7])
def test_newton_schulz_matches_numpy_f64(scaling, steps):
    G = rng_matrix((2, 20, 50), seed=6) * (0.1 if scaling == "none" else 1)
    out = _core.whiten_newton_schulz(G, steps, 0.5, scaling)
    expect = np_newton_schulz(G, steps, 0.5, scaling)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-13 * np.abs(expect).max())


@pytest.mark.parametrize("beta", [0.5, 0.45])
def test_newton_schulz_large_uses_symmetric_blocks(beta):
    # m above the symmetric-product leaf size, so the blocked lower-triangle path runs.
    G = rng_matrix((420, 600), seed=7)
    out = _core.whiten_newton_schulz(G, 5, beta, "gram_fro")
    expect = np_newton_schulz(G, 5, beta, "gram_fro")
    np.testing.assert_allclose(out, expect, atol=1e-12 * np.abs(expect).max())


def test_newton_schulz_converges_to_polar():
    G = rng_matrix((16, 64), seed=8)
    out = _core.whiten_newton_schulz(G, 40, 0.5, "gram_fro")
    np.testing.assert_allclose(out, np_whiten_svd(G, 0.0), atol=1e-12)


def test_newton_schulz_f32():
    G = rng_matrix((3, 24, 40), np.float32, seed=9)
    out = _core.whiten_newton_schulz(G, 6, 0.5, "gram_fro")
    expect = np_newton_schulz(G.astype(np.float64), 6, 0.5, "gram_fro")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expect, atol=1e-5)


def test_newton_schulz_scale_invariance_and_none_overflow():
    G = rng_matrix((12, 30), seed=10)
    base = _core.whiten_newton_schulz(G, 5, 0.5, "gram_fro")
    for s in [2.0**600, 2.0**-600, 1e300, 1e-300]:
        np.testing.assert_allclose(_core.whiten_newton_schulz(G * s, 5, 0.5, "gram_fro"), base, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(_core.whiten_newton_schulz(G * s, 5, 0.5, "grad_fro"),
                                   _core.whiten_newton_schulz(G, 5, 0.5, "grad_fro"), rtol=1e-13, atol=1e-15)
    with np.errstate(all="ignore"):
        bad = _core.whiten_newton_schulz(G * 1e200, 3, 0.5, "none")
    assert not np.all(np.isfinite(bad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaling", ["gram_fro", "grad_fro", "none"])
def test_nsds_matches_numpy(dtype, scaling):
    G = rng_matrix((2, 9, 31), dtype, seed=11) * (0.2 if scaling == "none" else 1)
    out = _core.whiten_nsds(G, 3, 0.5, scaling)
    expect = np_nsds(G, 3, 0.5, scaling)
    tol = 50 * EPS[dtype]
    assert_close(out, expect, tol, tol * np.abs(expect).max(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("iters", [0, 1, 5])
def test_sinkgd_matches_numpy(dtype, iters):
    G = rng_matrix((2, 13, 37), dtype, seed=12)
    G[0, 3] = 0  # zero row stays zero
    G[1, :, 5] = 0  # zero column stays zero
    out = _core.sinkgd(G, iters)
    expect = np_sinkgd(G, iters)
    if iters == 0:  # zero iterations: G itself
        np.testing.assert_array_equal(out, G)
        return
    tol = 20 * EPS[dtype] * iters
    assert_close(out, expect, tol, tol * 10, dtype)
    assert np.all(out[0, 3] == 0) and np.all(out[1, :, 5] == 0)


def test_sinkgd_extreme_scales():
    G = rng_matrix((6, 9), seed=13)
    base = _core.sinkgd(G, 3)
    for s in [1e300, 1e-300]:
        np.testing.assert_allclose(_core.sinkgd(G * s, 3), base, rtol=1e-12, atol=1e-14)
    tiny = np.ldexp(G, -1060)  # subnormal input: compare with the exactly rescaled (rounded) values
    np.testing.assert_allclose(_core.sinkgd(tiny, 3), _core.sinkgd(np.ldexp(tiny, 1060), 3), rtol=1e-12, atol=1e-14)
    G2 = G.copy()
    G2[2] *= 1e-310  # a row far below the rest, with subnormal entries
    out = _core.sinkgd(G2, 1)
    assert np.all(np.isfinite(out)) and np.linalg.norm(out[2]) > 0


# ---------------------------------------------------------------- layouts


def _layouts(G):
    yield "c", G
    yield "fortran", np.asfortranarray(G)
    yield "negative", G[..., ::-1, ::-1].copy()[..., ::-1, ::-1]
    ro = G.copy()
    ro.setflags(write=False)
    yield "readonly", ro
    big = np.zeros(G.shape[:-2] + (2 * G.shape[-2], 3 * G.shape[-1]), G.dtype)
    big[..., ::2, ::3] = G
    yield "strided", big[..., ::2, ::3]
    yield "swapped", np.ascontiguousarray(np.swapaxes(G, -1, -2)).swapaxes(-1, -2)
    rev = np.ascontiguousarray(G[..., ::-1, :])
    yield "negstride", rev[..., ::-1, :]


FUNCS = {
    "grad_norm": lambda G: _core.grad_norm(G, 1e-6),
    "whiten_svd": lambda G: _core.whiten_svd(G, 1e-12),
    "whiten_eigh": lambda G: _core.whiten_eigh(G, 1e-12),
    "whiten_newton_schulz": lambda G: _core.whiten_newton_schulz(G, 4, 0.5, "gram_fro"),
    "whiten_nsds": lambda G: _core.whiten_nsds(G, 2, 0.5, "grad_fro"),
    "sinkgd": lambda G: _core.sinkgd(G, 2),
}


@pytest.mark.parametrize("fname", sorted(FUNCS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_identical_results(fname, dtype):
    f = FUNCS[fname]
    G = rng_matrix((2, 3, 6, 11), dtype, seed=14)
    ref = f(G)
    for label, H in _layouts(G):
        before = H.copy()
        out = f(H)
        assert out.dtype == dtype and out.flags.c_contiguous and out.shape == G.shape, label
        tol = 0 if fname in ("grad_norm", "whiten_nsds", "sinkgd") else 50 * EPS[dtype]
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol, err_msg=label)
        np.testing.assert_array_equal(H, before, err_msg=f"{label}: input modified")


@pytest.mark.parametrize("fname", sorted(FUNCS))
@pytest.mark.parametrize("shape", [(0, 3, 5), (2, 0, 5), (4, 0, 6, 7), (3, 0, 0)])
def test_empty_inputs(fname, shape):
    G = np.zeros(shape)
    out = FUNCS[fname](G)
    assert out.shape == shape and out.dtype == np.float64


def test_zero_width_rows_grad_norm():
    out = _core.grad_norm(np.zeros((3, 4, 0), np.float32), 0.0)
    assert out.shape == (3, 4, 0)


def test_batch_slices_independent():
    G = rng_matrix((5, 8, 20), seed=15)
    for fname, f in FUNCS.items():
        full = f(G)
        for b in range(5):
            np.testing.assert_allclose(full[b], f(G[b]), rtol=0, atol=1e-15, err_msg=fname)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fname", sorted(FUNCS))
def test_bad_types_raise_type_error(fname):
    f = FUNCS[fname]
    for bad in [
        [[1.0, 2.0], [3.0, 4.0]],
        np.ones((3, 4), np.int64),
        np.ones((3, 4), np.float16),
        np.ones((3, 4), np.complex128),
        np.ones((3, 4), ">f8"),
        "abc",
        None,
    ]:
        with pytest.raises(TypeError):
            f(bad)


@pytest.mark.parametrize("fname", sorted(FUNCS))
def test_bad_ndim_raises_value_error(fname):
    for bad in [np.ones(5), np.ones(()), np.ones((0,))]:
        with pytest.raises(ValueError, match="ndim"):
            FUNCS[fname](bad)


def test_bad_values_raise_value_error():
    G = rng_matrix((3, 5))
    tall = rng_matrix((6, 4))
    for call in [
        lambda: _core.grad_norm(G, -1.0),
        lambda: _core.grad_norm(G, float("nan")),
        lambda: _core.whiten_svd(tall, 0.0),
        lambda: _core.whiten_eigh(tall, 0.0),
        lambda: _core.whiten_newton_schulz(tall, 3, 0.5, "gram_fro"),
        lambda: _core.whiten_nsds(tall, 3, 0.5, "gram_fro"),
        lambda: _core.whiten_svd(G, -1.0),
        lambda: _core.whiten_eigh(G, float("inf")),
        lambda: _core.whiten_newton_schulz(G, -1, 0.5, "gram_fro"),
        lambda: _core.whiten_newton_schulz(G, 3, float("nan"), "gram_fro"),
        lambda: _core.whiten_newton_schulz(G, 3, 0.5, "spectral"),
        lambda: _core.whiten_nsds(G, -2, 0.5, "none"),
        lambda: _core.sinkgd(G, -1),
    ]:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="m <= n"):
        _core.whiten_svd(tall, 0.0)
    with pytest.raises(TypeError):
        _core.whiten_newton_schulz(G, 2.5, 0.5, "gram_fro")


def test_backend_module_protocol():
    import inspect

    assert _cpp_backend.name == "cpp"
    expected = {
        "grad_norm": ["G", "eps"],
        "whiten_svd": ["G", "sigma_rtol"],
        "whiten_eigh": ["G", "lambda_rtol"],
        "whiten_newton_schulz": ["G", "steps", "beta", "scaling"],
        "whiten_nsds": ["G", "steps", "beta", "scaling"],
        "sinkgd": ["G", "iters"],
    }
    for fname, params in expected.items():
        assert list(inspect.signature(getattr(_cpp_backend, fname)).parameters) == params
    G = rng_matrix((4, 9))
    np.testing.assert_array_equal(_cpp_backend.grad_norm(G, 0.0), _core.grad_norm(G, 0.0))


def test_blas_is_scipys():
    info = _core.blas_info()
    assert info["complete"] and "scipy" in info["source"]


def test_gil_released_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    G = rng_matrix((4, 64, 128), seed=16)
    ref = _core.whiten_newton_schulz(G, 5, 0.5, "gram_fro")
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: _core.whiten_newton_schulz(G, 5, 0.5, "gram_fro"), range(4)))
    for o in outs:
        np.testing.assert_array_equal(o, ref)


def test_newton_schulz_stable_on_rank_deficient_input():
    # The plain coupled iteration stays within rounding of the NumPy transcription on
    # rank-deficient G even after many steps (forcing symmetric iterates does not: see
    # NewtonSchulzOptions::symmetric and docs/performance.md).
    rng = np.random.default_rng(17)
    for m, n, r in [(10, 17, 5), (4, 12, 2), (2, 13, 1)]:
        G = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
        for steps in (25, 40):
            out = _core.whiten_newton_schulz(G, steps, 0.5, "gram_fro")
            expect = np_newton_schulz(G, steps, 0.5, "gram_fro")
            np.testing.assert_allclose(out, expect, atol=1e-6)
            np.testing.assert_allclose(out, np_whiten_svd(G, 1e-10), atol=1e-6)


def test_newton_schulz_symmetric_option_on_well_conditioned_input():
    G = rng_matrix((2, 400, 520), seed=18)
    out = _core.whiten_newton_schulz(G, 6, 0.5, "gram_fro", symmetric=True)
    expect = np_newton_schulz(G, 6, 0.5, "gram_fro")
    np.testing.assert_allclose(out, expect, atol=1e-10 * np.abs(expect).max())


def test_flop_counts():
    assert _core.newton_schulz_products(1) == 0 and _core.newton_schulz_products(5) == 12
    m, n = 64, 128
    assert _core.newton_schulz_flops(m, n, 5) == m * m * n + 12 * 2 * m**3 + 2 * m * m * n
    assert _core.newton_schulz_step_flops(1024, symmetric=True) < 0.7 * _core.newton_schulz_step_flops(1024)


def test_whiten_svd_float32_routes():
    G = rng_matrix((2, 40, 120), np.float32, seed=19)
    ref = np_whiten_svd(G.astype(np.float64), 1e-3)
    auto = _core.whiten_svd(G, 1e-3)  # rtol far above float64 noise: float64 eigh route
    eig = _core.whiten_svd(G, 1e-3, route="eigh_double")
    svd64 = _core.whiten_svd(G, 1e-3, route="svd_double")
    svd32 = _core.whiten_svd(G, 1e-3, route="svd")
    np.testing.assert_array_equal(auto, eig)
    for X in (auto, svd64):  # rounded once from float64: within an ulp of float32
        assert X.dtype == np.float32
        np.testing.assert_allclose(X, ref, atol=2 * EPS[np.float32])
    np.testing.assert_allclose(svd32, ref, atol=50 * EPS[np.float32] * 4)
    # a tolerance near float64 noise: the float64 SVD route (eigh_double is refused)
    np.testing.assert_array_equal(_core.whiten_svd(G, 0.0), _core.whiten_svd(G, 0.0, route="svd_double"))
    with pytest.raises(ValueError):
        _core.whiten_svd(G, 0.0, route="eigh_double")
    with pytest.raises(ValueError):
        _core.whiten_svd(G.astype(np.float64), 0.0, route="eigh_double")
    with pytest.raises(ValueError):
        _core.whiten_svd(G, 0.0, route="fast")


def test_whiten_svd_float32_rank_deficient_default_rtol():
    rng = np.random.default_rng(20)
    G = (rng.standard_normal((30, 6)) @ rng.standard_normal((6, 90))).astype(np.float32)
    rtol = 90 * np.finfo(np.float32).eps
    out = _core.whiten_svd(G, rtol)
    expect = np_whiten_svd(G.astype(np.float64), rtol)
    np.testing.assert_allclose(out, expect, atol=1e-5)
    assert np.linalg.matrix_rank(out.astype(np.float64), tol=0.5) == 6


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_norm_out_parameter_and_large_streaming_path(dtype):
    G = rng_matrix((600, 2100), dtype, seed=21)  # > 8 MiB output: streaming stores
    out = np.empty_like(G)
    res = _core.grad_norm(G, 1e-6, out=out)
    assert res is out
    np.testing.assert_array_equal(out, _core.grad_norm(G, 1e-6))
    np.testing.assert_allclose(out, np_grad_norm(G, 1e-6), rtol=4 * EPS[dtype], atol=40 * EPS[dtype])
    for bad, exc in [(np.empty_like(G, dtype=np.float16), TypeError), (np.empty(G.shape[::-1], dtype), ValueError),
                     (np.empty_like(G, order="F"), ValueError), (G, ValueError)]:
        with pytest.raises(exc):
            _core.grad_norm(G, 0.0, out=bad)


@pytest.mark.parametrize("shape", [(48, 160), (64, 64)])
def test_whiten_svd_refined_route_is_kappa_eps_accurate(shape):
    # float64 default = the refined eigh route; it must match the SVD route's kappa*eps accuracy,
    # falling back to the SVD route where the first-order refinement would not be accurate.
    rng = np.random.default_rng(22)
    m, n = shape
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    for kappa in [1e1, 1e4, 1e6, 1e8, 1e11]:
        s = np.logspace(0, -np.log10(kappa), m)
        G = (U * s) @ V.T
        P = U @ V.T
        for route in ("auto", "refined", "svd"):
            X = _core.whiten_svd(G, 0.0, route=route)
            err = np.linalg.norm(X - P) / np.linalg.norm(P)
            assert err <= 50 * kappa * EPS[np.float64], (route, kappa, err)


def test_whiten_svd_refined_route_rank_deficient_and_clustered():
    rng = np.random.default_rng(23)
    m, n = 60, 200
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    s = np.r_[np.ones(20), 0.5 * np.ones(20), np.zeros(20)]
    G = (U * s) @ V.T
    X = _core.whiten_svd(G, 1e-10)
    np.testing.assert_allclose(X, U[:, :40] @ V[:, :40].T, atol=1e-13)
    np.testing.assert_allclose(_core.whiten_svd(G, 1e-10, route="refined"), X, atol=0)


def test_whiten_svd_zero_rtol_on_rank_deficient_input_keeps_orthonormal_rows():
    # rank 2 (all rows in span{sin, cos}); rtol = 0 keeps noise-level singular values: the
    # result must still have orthonormal rows, like the SVD route's U_r V_r^T.
    i, j = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    G = np.sin(1.0 + 7 * i + 3 * j) * (1 + i)
    X = _core.whiten_svd(G, 0.0)
    np.testing.assert_allclose(X @ X.T, np.eye(4), atol=1e-12)
