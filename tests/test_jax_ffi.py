"""swanref.jax: the C++ core as XLA FFI custom calls under jax.jit and jax.vmap (docs/jax.md).

Same numbers as the C++ backend of swanref.ops (bit for bit for the core's operators), the
finite-input policy and the divergence guard as FFI errors with the Python API's messages.
Skipped without jax or without the FFI module (a build without SWANREF_JAX).
"""
import numpy as np
import pytest

import swanref
from swanref.backends import cpp as cpp_backend
from swanref.spec.errors import DivergenceError, DivergenceWarning

jax = pytest.importorskip("jax", reason="JAX is not installed")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

sj = pytest.importorskip("swanref.jax")
if not sj.available():
    pytest.skip(f"no JAX FFI module: {sj.unavailable_reason()}", allow_module_level=True)
if not cpp_backend.available():
    pytest.skip("the C++ backend (the reference for bit equality) is not built",
                allow_module_level=True)

RNG = np.random.default_rng(26)
#: what jax raises for an FFI error status (a RuntimeError: JaxRuntimeError, formerly jaxlib's
#: XlaRuntimeError)
RUNTIME_ERROR = getattr(jax.errors, "JaxRuntimeError", None) or \
    getattr(jax.errors, "XlaRuntimeError", RuntimeError)

#: (name, swanref.jax call, swanref call on the C++ backend); the core is deterministic for a
#: given input, so these agree bit for bit
CASES = [
    ("grad_norm", lambda x: sj.grad_norm(x), lambda g: swanref.grad_norm(g, backend="cpp")),
    ("grad_norm_axis", lambda x: sj.grad_norm(x, axis=-2, eps=1e-3),
     lambda g: swanref.grad_norm(g, axis=-2, eps=1e-3, backend="cpp")),
    ("svd", lambda x: sj.whiten(x), lambda g: swanref.whiten(g, backend="cpp")),
    ("svd_rtol", lambda x: sj.whiten(x, rank_rtol=1e-3),
     lambda g: swanref.whiten(g, rank_rtol=1e-3, backend="cpp")),
    ("eigh", lambda x: sj.whiten(x, "eigh"), lambda g: swanref.whiten(g, "eigh", backend="cpp")),
    ("newton_schulz", lambda x: sj.whiten(x, "newton_schulz", steps=7, scaling="grad_fro"),
     lambda g: swanref.whiten(g, "newton_schulz", steps=7, scaling="grad_fro", backend="cpp")),
    ("nsds", lambda x: sj.whiten(x, "nsds"), lambda g: swanref.whiten(g, "nsds", backend="cpp")),
    ("muon_ns5", lambda x: sj.whiten(x, "muon_ns5"),
     lambda g: swanref.whiten(g, "muon_ns5", backend="cpp")),
    ("polar_express", lambda x: sj.whiten(x, "polar_express"),
     lambda g: swanref.whiten(g, "polar_express", backend="cpp")),
    ("custom", lambda x: sj.whiten(x, "custom", coefficients=[(2.0, -1.5, 0.5)] * 3),
     lambda g: swanref.whiten(g, "custom", coefficients=[(2.0, -1.5, 0.5)] * 3,
                              backend="cpp")),
    ("sinkgd", lambda x: sj.sinkgd_update(x, iters=3, lr=0.5),
     lambda g: swanref.sinkgd_update(g, iters=3, lr=0.5, backend="cpp")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 8), (7, 4)], ids=["wide_batch", "tall"])
@pytest.mark.parametrize("name, ours, ref", CASES, ids=[c[0] for c in CASES])
def test_jit_matches_the_cpp_backend_bit_for_bit(name, ours, ref, shape, dtype):
    G = RNG.standard_normal(shape).astype(dtype)
    out = np.asarray(jax.jit(ours)(jnp.asarray(G)))
    expected = ref(G)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name, ours, ref", CASES[::2], ids=[c[0] for c in CASES[::2]])
def test_vmap_maps_onto_the_core_batch(name, ours, ref):
    """Two vmapped axes over a (2, 3, 4, 6) stack: each (4, 6) slice as if alone."""
    G = RNG.standard_normal((2, 3, 4, 6))
    out = np.asarray(jax.jit(jax.vmap(jax.vmap(ours)))(jnp.asarray(G)))
    np.testing.assert_array_equal(out, ref(G))
    # and the vmapped axis in the middle of the stack (in_axes=1)
    out1 = np.asarray(jax.vmap(ours, in_axes=1, out_axes=1)(jnp.asarray(G)))
    np.testing.assert_array_equal(out1, ref(G))


def test_swan_update_within_the_rescale_rounding():
    """GradNorm and whitening are the core's bits; the rescale's Frobenius norm is a JAX
    reduction summing in another order than NumPy's: the relative difference of a sum of
    m n non-negative terms is below m n eps, and the square root halves it."""
    for dtype in (np.float32, np.float64):
        G = RNG.standard_normal((3, 6, 10)).astype(dtype)
        for method in ("newton_schulz", "svd", "muon_ns5"):
            out = np.asarray(jax.jit(lambda x: sj.swan_update(x, whiten_method=method,
                                                              lr=0.1))(jnp.asarray(G)))
            ref = swanref.swan_update(G, whiten_method=method, lr=0.1, backend="cpp")
            assert out.dtype == dtype
            bound = 60 * np.finfo(dtype).eps * np.abs(ref).max() + 0.1 * np.finfo(dtype).tiny
            assert np.abs(out - ref).max() <= bound, (method, dtype)
        no_rescale = np.asarray(sj.swan_update(jnp.asarray(G), rescale=False))
        np.testing.assert_array_equal(no_rescale,
                                      swanref.swan_update(G, rescale=False, backend="cpp"))


def test_traced_learning_rate():
    G = jnp.asarray(RNG.standard_normal((4, 6)))
    step = jax.jit(lambda g, lr: sj.sinkgd_update(g, lr=lr))
    np.testing.assert_array_equal(np.asarray(step(G, jnp.float64(0.25))),
                                  np.asarray(sj.sinkgd_update(G, lr=0.25)))


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_low_precision_computes_in_float32(low):
    G = jnp.asarray(RNG.standard_normal((4, 6)), dtype=low)
    out = jax.jit(lambda x: sj.whiten(x, "newton_schulz"))(G)
    assert out.dtype == G.dtype
    ref = swanref.whiten(np.asarray(G), "newton_schulz", backend="cpp")
    np.testing.assert_array_equal(np.asarray(out).astype(np.float32), ref.astype(np.float32))


def test_nonfinite_input_is_an_ffi_error_with_the_python_message():
    G = np.ones((2, 4, 6))
    G[1, 2, 3] = np.nan
    G[0, 0, 0] = np.inf
    with pytest.raises(ValueError) as py_err:
        swanref.whiten(G, backend="cpp")
    for fn in (sj.whiten, sj.grad_norm, sj.sinkgd_update, sj.swan_update,
               lambda x: sj.whiten(x, "muon_ns5"), lambda x: sj.whiten(x, "newton_schulz")):
        with pytest.raises(RUNTIME_ERROR) as err:
            np.asarray(jax.jit(fn)(jnp.asarray(G)))
        assert str(err.value) == "INVALID_ARGUMENT: " + str(py_err.value)


def test_check_finite_false_gives_nan_slices_like_swanref():
    G = RNG.standard_normal((3, 4, 6))
    G[1, 2, 3] = np.nan
    for ours, ref in [
            (lambda x: sj.whiten(x, "newton_schulz", check_finite=False),
             lambda g: swanref.whiten(g, "newton_schulz", check_finite=False, backend="cpp")),
            (lambda x: sj.grad_norm(x, check_finite=False),
             lambda g: swanref.grad_norm(g, check_finite=False, backend="cpp")),
            (lambda x: sj.swan_update(x, whiten_method="svd", rescale=False,
                                      check_finite=False),
             lambda g: swanref.swan_update(g, whiten_method="svd", rescale=False,
                                           check_finite=False, backend="cpp"))]:
        out = np.asarray(jax.jit(ours)(jnp.asarray(G)))
        expected = ref(G)
        assert np.isnan(out[1]).any() and not np.isnan(out[0]).any()
        np.testing.assert_array_equal(out, expected)


def _diverging():
    """Newton-Schulz without prescaling on a large input leaves its convergence region."""
    G = RNG.standard_normal((3, 4, 6))
    G[1] *= 50.0
    with pytest.raises(DivergenceError):
        swanref.whiten(G, "newton_schulz", scaling="none", backend="cpp")
    return G


def test_divergence_raises_with_the_python_message():
    G = _diverging()
    with pytest.raises(DivergenceError) as py_err:
        swanref.whiten(G, "newton_schulz", scaling="none", backend="cpp")
    with pytest.raises(RUNTIME_ERROR) as err:
        np.asarray(jax.jit(lambda x: sj.whiten(x, "newton_schulz", scaling="none"))(
            jnp.asarray(G)))
    assert str(err.value) == "INVALID_ARGUMENT: " + str(py_err.value)
    # 'ignore' returns the raw iterate, as swanref.whiten does
    raw = np.asarray(sj.whiten(jnp.asarray(G), "newton_schulz", scaling="none",
                               on_divergence="ignore"))
    np.testing.assert_array_equal(raw, swanref.whiten(G, "newton_schulz", scaling="none",
                                                      on_divergence="ignore", backend="cpp"))


@pytest.mark.parametrize("policy", ["warn", "fallback"])
def test_divergence_warn_and_fallback(policy):
    G = _diverging()
    with pytest.warns(DivergenceWarning) as want:
        ref = swanref.whiten(G, "newton_schulz", scaling="none", on_divergence=policy,
                             backend="cpp")
    with pytest.warns(DivergenceWarning) as got:
        out = np.asarray(jax.jit(lambda x: sj.whiten(x, "newton_schulz", scaling="none",
                                                     on_divergence=policy))(jnp.asarray(G)))
        jax.effects_barrier()
    np.testing.assert_array_equal(out, ref)
    # the Python API's warning, word for word (fallback: "recomputed with method='svd'")
    assert [str(w.message) for w in got if w.category is DivergenceWarning] == \
        [str(w.message) for w in want if w.category is DivergenceWarning]


@pytest.mark.parametrize("policy", ["warn", "fallback"])
def test_divergence_warning_under_vmap_counts_the_whole_stack(policy):
    """One warning for a vmapped call, counting and indexing every slice of the mapped stack
    (the DivergenceError message of the FFI call does), not one warning per mapped element."""
    G = 0.05 * RNG.standard_normal((2, 3, 4, 6))
    G[1, 2] *= 2000.0   # only flat slice 5 leaves the convergence region
    kw = dict(scaling="none", on_divergence=policy)
    with pytest.warns(DivergenceWarning) as want:
        ref = swanref.whiten(G, "newton_schulz", backend="cpp", **kw)
    assert "diverged on 1 of 6 slice(s) (flat batch indices [5])" in str(want[0].message)
    fn = jax.jit(jax.vmap(jax.vmap(lambda x: sj.whiten(x, "newton_schulz", **kw))))
    with pytest.warns(DivergenceWarning) as got:
        out = np.asarray(fn(jnp.asarray(G)))
        jax.effects_barrier()
    assert [str(w.message) for w in got if w.category is DivergenceWarning] == \
        [str(want[0].message)]
    np.testing.assert_array_equal(out, ref)


def test_no_derivative_rule():
    """An update direction is applied, not differentiated: jax.grad through it is an error."""
    with pytest.raises(ValueError, match="cannot be differentiated"):
        jax.grad(lambda x: sj.whiten(x).sum())(jnp.eye(3, 4))


def test_keyword_errors_raise_when_traced():
    G = jnp.ones((4, 6))
    with pytest.raises(ValueError, match="unknown whitening method"):
        sj.whiten(G, "nope")
    with pytest.raises(ValueError, match="steps"):
        sj.whiten(G, "newton_schulz", steps=-1)
    with pytest.raises(ValueError, match="does not apply"):
        sj.whiten(G, "svd", steps=3)
    with pytest.raises(ValueError, match="no C\\+\\+ kernel"):
        sj.whiten(G, "swan_coupled")
    with pytest.raises(TypeError):
        sj.grad_norm(jnp.ones((4, 6), dtype=jnp.int32))
    with pytest.raises(TypeError, match="real-only"):
        sj.whiten(jnp.ones((4, 6), dtype=jnp.complex64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sj.whiten(jnp.ones(6))


@pytest.mark.parametrize("G, kw", [
    (np.ones((4, 6)), dict(axis=0.5)), (np.ones((4, 6)), dict(axis="short")),
    (np.ones((2, 4, 6)), dict(axis=0)), (np.ones((4, 6)), dict(axis=True)),
    (np.ones(6), {}), (np.ones((4, 0)), {})])
def test_jax_frontend_refuses_what_numpy_refuses_with_the_same_message(G, kw):
    """One validation for both frontends (swanref.spec.validate): same type, same words."""
    with pytest.raises((TypeError, ValueError)) as want:
        swanref.grad_norm(G, **kw)
    with pytest.raises(want.type) as got:
        sj.grad_norm(jnp.asarray(G, jnp.float32), **kw)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("kw", [dict(beta=0.5), dict(scaling="none"), dict(rank_rtol=1e-3),
                                dict(on_divergence="bogus"), dict(steps=-1), dict(steps=2.5)])
def test_jax_preset_options_are_refused_as_in_numpy(kw):
    """One preset option validation for both frontends (spec.validate.preset_options)."""
    G = np.random.default_rng(3).standard_normal((4, 6))
    with pytest.raises((TypeError, ValueError)) as want:
        swanref.whiten(G, "muon_ns5", **kw)
    with pytest.raises(want.type) as got:
        sj.whiten(jnp.asarray(G, jnp.float32), "muon_ns5", **kw)
    assert str(got.value) == str(want.value)


def test_the_guide_example_runs():
    """docs/jax.md's example: a jitted SWAN step on a small model (the test the guide cites)."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "jax.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "docs/jax.md", "exec"), scope)
    losses = scope["losses"]
    assert losses[-1] < 0.5 * losses[0], losses


def _preset_names():
    from swanref.presets import catalogue
    from swanref.spec.readings import WHITEN_METHODS, WHITEN_PRESETS
    names = sorted(n for n in set(WHITEN_PRESETS) | set(catalogue.ROUTES)
                   if n not in WHITEN_METHODS)
    runs = [n for n in names if catalogue.polynomial_kernel_runs(catalogue.get_preset(n))]
    return runs, [n for n in names if n not in runs]


def test_the_guide_lists_the_presets_it_runs():
    import pathlib
    text = " ".join((pathlib.Path(__file__).resolve().parents[1] / "docs" / "jax.md")
                    .read_text().split())
    runs, refused = _preset_names()
    assert "are " + ", ".join(f"`{n}`" for n in runs) + ";" in text
    assert "others, " + ", ".join(f"`{n}`" for n in refused) + ", are" in text


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_preset_the_core_runs_is_bit_equal_and_the_others_refused(dtype):
    """The whole catalogue, not a sample: a batched wide and a tall input per preset (one
    compilation per shape for all of them)."""
    runs, refused = _preset_names()
    kws = [{"coefficients": [(2.0, -1.5, 0.5)] * 3} if n == "custom" else {} for n in runs]
    every = jax.jit(lambda x: [sj.whiten(x, n, **kw) for n, kw in zip(runs, kws)])
    for shape in [(2, 3, 5), (5, 3)]:
        G = RNG.standard_normal(shape).astype(dtype)
        for name, kw, out in zip(runs, kws, every(jnp.asarray(G))):
            np.testing.assert_array_equal(np.asarray(out),
                                          swanref.whiten(G, name, backend="cpp", **kw),
                                          err_msg=name)
    for name in refused:
        with pytest.raises(ValueError, match="no C\\+\\+ kernel"):
            sj.whiten(jnp.ones((3, 5), dtype), name)


def test_blas_comes_from_scipy_as_for_the_core():
    """Both extensions fill their BLAS tables from SciPy's capsules: one OpenBLAS in the process
    (cpp/python/scipy_blas.hpp)."""
    from swanref import _core, _jax_ffi
    ours, core = _jax_ffi.blas_info(), _core.blas_info()
    assert ours["complete"] and ours["source"] == core["source"]
    assert ours == core   # one blas_info() (scipy_blas.hpp) behind both modules
    assert ours["source"].startswith("scipy.linalg.cython_blas")
