"""Numbers in docs/spec.md recomputed from the code that defines them (each under ~1 s).

The reduction-order table of 10.2 has its own file (tests/test_spec_sharded_table.py); the
constants of section 11 are checked in tests/test_claims.py.  One-off measurements the spec
keeps are dated with the commit they were measured at, and the test below checks that they say
so.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

SPEC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def _g(v) -> str:
    """As the spec writes numbers: powers of ten as 1e-9, others as 0.08; "7.9e+04" -> "7.9e4"."""
    if not isinstance(v, str):
        v = f"{v:.0e}" if f"{v:.0e}".startswith("1e") and float(f"{v:.0e}") == v else f"{v:g}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), v)


@pytest.fixture(scope="module")
def spec():
    return " ".join(SPEC.read_text().split())


def test_steps_table_of_3_6_is_steps_to_converge():
    from swanref.spec import spectral
    text = SPEC.read_text()
    start = text.index("| kappa_s | 2 | 10 |")
    lines = text[start:].splitlines()
    kappas = [float(c) for c in lines[0].strip("|").split("|")[1:]]
    rows = 0
    for line in lines[2:]:
        if not line.startswith("| tol"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        tol = float(cells[0].split()[1])
        got = [spectral.steps_to_converge(k, tol=tol) for k in kappas]
        assert [int(c) for c in cells[1:]] == got, (tol, got)
        rows += 1
    assert rows == 3 and kappas == [2, 10, 100, 1e3, 1e4, 1e6, 1e8]


def test_svd_and_eigh_accuracy_at_kappa_1e6(spec):
    """3.2: the median error over the seeds the spec names; rounding-level, so within a factor
    3 (the BLAS build moves it)."""
    import swanref
    from swanref.testing import highprec, matrices
    m = re.search(r"at kappa = 1e6 the SVD route is accurate to (\S+), the eigh route to (\S+)\.",
                  spec)
    assert m and "seeds 0-4" in spec
    errs = {"svd": [], "eigh": []}
    for seed in range(5):
        G = matrices.conditioned(np.random.default_rng(seed), 8, 16, 1e6)
        exact = highprec.polar_factor(G, dps=60)
        for method in errs:
            X = swanref.whiten(G, method=method, backend="reference")
            errs[method].append(np.linalg.norm(X - exact) / np.linalg.norm(exact))
    for method, quoted in zip(("svd", "eigh"), m.groups()):
        got, q = float(np.median(errs[method])), float(quoted)
        assert q / 3 <= got <= q * 3, (method, got, q)


def test_direction_drift_and_its_tolerance(spec):
    """9.5: "at most 8.2e-7 (relative Frobenius, `polar_express_nanogpt`, eps 1e-6)" is what
    `python -m swanref.verify.update_properties` prints; the check's tolerance sits above it."""
    from swanref.verify import update_properties as U
    drift = U.direction_drift()
    worst = max(drift, key=drift.get)
    assert f"at most {_g(f'{drift[worst]:.1e}')} (relative Frobenius, `{worst}`" in spec, \
        (worst, drift[worst])
    assert f"property, {_g(U.DIRECTION_TOLERANCE)}, sits between the two" in spec
    assert drift[worst] < U.DIRECTION_TOLERANCE


def test_deepseek_slope_at_zero(spec):
    """8.6: the slope at 0 of a preset is the product of its linear coefficients."""
    from swanref.presets.catalogue import DEEPSEEK_V4
    slope = float(np.prod([t[0] for t in DEEPSEEK_V4]))
    assert f"deepseek_v4: {_g(f'{slope:.1e}')}" in spec


def test_quoted_constants_are_the_codes(spec):
    from swanref.presets.diagnose import MATCH_TOLERANCE
    from swanref.spec.tolerance import TRUSTED_LIMIT
    from swanref.spec.validate import MAX_ITERATIONS
    t = {k: _g(v) for k, v in MATCH_TOLERANCE.items()}
    assert (f"`MATCH_TOLERANCE` = {t['float64']} (float64), {t['float32']} (float32), "
            f"{t['bfloat16']} (bfloat16), {t['float16']} (float16)") in spec
    assert f"`MATCH_TOLERANCE[p]` ({t['float64']}, {t['float32']}, {t['bfloat16']}, " \
           f"{t['float16']} for float64" in spec
    assert f"exceeds `{_g(TRUSTED_LIMIT)}` (`TRUSTED_LIMIT`)" in spec
    assert f"`MAX_ITERATIONS = {MAX_ITERATIONS:_}`" in spec


def test_norm_error_ratio_of_10_2(spec):
    """10.2: a norm off by 1 + 2^-13 against the norm part (q - 1) 2^-25: 4096 / (q - 1)."""
    assert 2.0 ** -13 / (7 * 2.0 ** -25) == 4096 / 7
    assert f"= `4096 / (q - 1)` times the norm part at any world size: {4096 // 7} at 8 ranks" \
        in spec


@pytest.mark.parametrize("phrase", [
    "Measured at commit bc0b9df on the 2-core dev machine under load, a 3 x 5 float64 matrix",
    "before commit 90abfd3 the `swanref report` rows for 32 x 96",
    "Re-measured at commit 90abfd3 with `python tests/ns_probabilistic_fit.py`",
    "(measured at commit 3d4f13b: 0.42 at `c = 1e-12`",
    "(2.5e-15 measured at commit 3d4f13b)",
    "eps 1e-7, measured at commit 3d4f13b: `||O||_F` 8.07",
    "(`tests/test_identify.py`, measured at commit 3b6b951)",
    "Measured on the table of docs/optimizers.md at commit e2cb8cf:",
])
def test_one_off_measurements_are_dated(spec, phrase):
    assert phrase in spec


def test_feedback_divergence_thresholds_of_8_3(spec):
    """8.3: `u z_max^2` reaches 1 at `kappa_s ~ u^(-1/2)`: 4e3 in float32, 1e8 (its order of
    magnitude) in float64."""
    from swanref.spec.tolerance import unit_roundoff
    k32 = unit_roundoff("float32") ** -0.5
    k64 = unit_roundoff("float64") ** -0.5
    quoted = f"about {_g(f'{k32:.0e}')} in float32 and {_g(f'{10 ** round(np.log10(k64)):.0e}')} in float64"
    assert quoted in spec, quoted
