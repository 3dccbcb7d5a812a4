"""swanref.orthogonalized_update: the conventions of spec section 9 (scale rules, N-D and stacked
parameters, NorMuon row normalisation, dtype, zero, scale invariance, bad input)."""
import math

import numpy as np
import pytest

import swanref
from swanref.spec.conventions import SCALE_RULES, matrix_view, resolve_scale, shape_factor
from swanref.update import load_coefficients, orthogonalized_update as ou

rng = np.random.default_rng(3)


def polar(M):
    U, _, Vh = np.linalg.svd(M, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", [(4, 7), (7, 4), (5, 5)])
@pytest.mark.parametrize("rule, f", [
    ("keller", lambda m, n: math.sqrt(max(1, m / n))),
    ("moonlight", lambda m, n: 0.2 * math.sqrt(max(m, n))),
    ("unit_rms", lambda m, n: math.sqrt(max(m, n))),
    ("spectral", lambda m, n: math.sqrt(m / n)),
    ("none", lambda m, n: 1.0),
])
def test_shape_scale_rules_on_the_polar_factor(shape, rule, f):
    G = rng.standard_normal(shape)
    out = ou(G, "svd", scale=rule)
    np.testing.assert_allclose(out, f(*shape) * polar(G), rtol=0, atol=1e-13)


def test_source_aliases_name_the_same_rules():
    assert resolve_scale("original").name == "keller"
    assert resolve_scale("match_rms_adamw").name == "moonlight"
    assert resolve_scale("spectral_unclamped").name == "spectral"
    with pytest.raises(ValueError, match="unknown scale rule"):
        resolve_scale("kimi")


def test_data_dependent_rules():
    G = rng.standard_normal((3, 8))
    swan = ou(G, "muon_ns5", scale="swan")
    assert np.sqrt(np.mean(swan ** 2)) == pytest.approx(1.0, rel=1e-12)  # RMS exactly 1
    graft = ou(G, "muon_ns5", scale="graft")
    assert np.linalg.norm(graft) == pytest.approx(np.linalg.norm(G), rel=1e-12)


def test_conv_weight_is_flattened_and_reshaped_back():
    G = rng.standard_normal((4, 2, 3, 1))
    out = ou(G, "svd")
    assert out.shape == G.shape
    np.testing.assert_allclose(out.reshape(4, 6), polar(G.reshape(4, 6)), atol=1e-13)
    assert matrix_view(G.shape) == ((), 4, 6)


def test_stack_slices_are_independent():
    S = rng.standard_normal((3, 4, 6)) * np.array([1e-3, 1.0, 1e3])[:, None, None]
    out = ou(S, "muon_ns5", stack_dims=1)
    for k in range(3):
        np.testing.assert_allclose(out[k], ou(S[k], "muon_ns5"), rtol=0, atol=1e-12)


def test_row_norm_rematches_the_frobenius_norm():
    G = rng.standard_normal((5, 3))
    out = ou(G, "svd", row_norm=True, scale="none")
    assert np.linalg.norm(out) == pytest.approx(np.linalg.norm(polar(G)), rel=1e-12)
    rms = np.sqrt(np.mean(out ** 2, axis=-1))
    np.testing.assert_allclose(rms, rms[0], rtol=1e-12)  # every row the same RMS


@pytest.mark.parametrize("preset", ["svd", "muon_ns5", "jiacheng6", "cubic"])
@pytest.mark.parametrize("rule", ["keller", "swan", "graft"])
def test_zero_gives_zero(preset, rule):
    for shape in [(3, 4), (4, 2, 2, 2)]:
        out = ou(np.zeros(shape), preset, scale=rule, row_norm=True)
        assert np.all(out == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dtype_kept_input_untouched(dtype):
    G = rng.standard_normal((4, 6)).astype(dtype)
    keep = G.copy()
    out = ou(G, "muon_ns5")
    assert out.dtype == dtype and not np.shares_memory(out, G)
    np.testing.assert_array_equal(G, keep)


@pytest.mark.parametrize("c", [1e-12, 1e-6, 1e6, 1e12])
def test_direction_is_scale_invariant(c):
    G = rng.standard_normal((5, 8))
    a, b = ou(G, "muon_ns5"), ou(G * c, "muon_ns5")
    # the only difference is rounding of c*G and the mantissa of max|c G| seen by eps 1e-7
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-6


def test_coefficients_from_a_list_and_a_file(tmp_path):
    table = [(3.4445, -4.7750, 2.0315)] * 5
    G = rng.standard_normal((4, 6))
    ref = ou(G, "muon_ns5")
    np.testing.assert_allclose(ou(G, "custom", coefficients=table), ref, atol=1e-14)
    j = tmp_path / "t.json"
    j.write_text('{"coefficients": [[3.4445, -4.7750, 2.0315]]}')
    t = tmp_path / "t.txt"
    t.write_text("# a b c\n3.4445, -4.7750, 2.0315\n")
    for path in (j, t):
        assert load_coefficients(path) == [(3.4445, -4.775, 2.0315)]
        np.testing.assert_allclose(ou(G, "custom", coefficients=str(path), steps=5), ref,
                                   atol=1e-14)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="at least 2 dimensions"):  # spec 6.6, as whiten
        ou(np.ones(5))
    with pytest.raises(TypeError, match="stack_dims"):
        ou(np.ones((2, 3)), stack_dims=-1)
    with pytest.raises(ValueError, match="stack_dims=1 has 1 matrix axes"):
        ou(np.ones((2, 3)), stack_dims=1)
    with pytest.raises(ValueError, match="not found"):
        load_coefficients(tmp_path / "missing.json")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x\n")
    with pytest.raises(ValueError, match="cannot read"):
        load_coefficients(bad)
    with pytest.raises(TypeError):
        ou(np.ones((2, 3), dtype=int))


def test_exported():
    assert swanref.orthogonalized_update is ou
    assert set(SCALE_RULES) >= {"keller", "moonlight", "unit_rms", "spectral", "swan", "none"}
    assert shape_factor(SCALE_RULES["keller"], 8, 2) == 2.0


def test_swan_update_is_an_orthogonalized_update_of_gradnorm():
    """SWAN (spec 4.1) in the terms of section 9: GradNorm, then the coupled Newton-Schulz, then
    the 'swan' scale rule (RMS 1)."""
    G = rng.standard_normal((6, 10))
    a = swanref.swan_update(G)
    b = ou(swanref.grad_norm(G), "newton_schulz", scale="swan")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_one_coefficient_file_end_to_end(tmp_path):
    """The same file through whiten, the update operator, and the schedule verifier."""
    from swanref.presets import schedules
    path = tmp_path / "table.txt"
    path.write_text("# You's first two quintics\n4.0848 -6.8946 2.9270\n3.9505, -6.3029, 2.6377\n")
    table = load_coefficients(path)
    assert list(schedules.load(str(path)).coefficients) == table
    G = rng.standard_normal((4, 6))
    G = G / 2.0 ** np.ceil(np.log2(np.abs(G).max()))  # max|G| in [0.5, 1): no rescale (9.5)
    w = swanref.whiten(G, "custom", coefficients=table)
    np.testing.assert_allclose(ou(G, "custom", coefficients=str(path), scale="none"), w,
                               atol=1e-14)
    assert schedules.analyse(schedules.load(str(path)))["slope0"] == pytest.approx(
        4.0848 * 3.9505)
