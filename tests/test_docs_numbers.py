"""The numbers docs/guide.md quotes are the tool's numbers.

``swanref study OUTDIR`` writes ``OUTDIR/numbers.json``; the guide's copy is
``docs/figures/study_numbers.json`` (with the command, machine and date that made it).  Two
checks:

* every number the guide quotes is the JSON's number, formatted as quoted (exact: a guide
  edited without regenerating fails);
* a sample of those numbers is recomputed from the tool on a few grid points (every grid point
  has its own generator, so a subset draws the same matrices as the full run) and must agree
  within the noise stated here: step counts and counts of points exactly, errors at the
  rounding level within a factor 3 (they depend on the BLAS build), errors set by the
  arithmetic of the method (convergence) to 2 digits.

Runtimes are quoted with their machine and are not checked.
"""
from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "guide.md")
NUMBERS = os.path.join(ROOT, "docs", "figures", "study_numbers.json")


def _kappa(v):  # 3162277.66 -> "3e6", 100.0 -> "1e2", 1e8 -> "1e8"
    return re.sub(r"e\+?0*(\d)", r"e\1", f"{v:.0e}")


def _e(v):  # 6.45e-16 -> "6.5e-16"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2),
                  f"{v:.1e}")


def _g(v):
    return f"{v:.3g}"


def _d(v):
    return str(int(v))


def _g2(v):
    return f"{v:.2g}"


#: (key in numbers.json, formatter, phrase as it appears in the guide with {} for the number)
QUOTES = [
    ("condition.float64.svd.error_at_kappa_1", _e, "from {} at kappa 1"),
    ("condition.float64.svd.error_at_kappa_max", _e, "to {} at kappa 1e8"),
    ("condition.float64.svd.over_bound", _d, "({} of 51 points above)"),
    ("condition.float32.svd.error_at_kappa_1", _e, "In float32 it stays at ~{}"),
    ("condition.float32.svd.accurate_up_to", _kappa, "below 1e-3 up to kappa {}"),
    ("condition.float64.eigh.accurate_up_to", _kappa, "eigh | {} /"),
    ("condition.float32.eigh.accurate_up_to", _kappa, "/ {} | kappa^2 u"),
    ("condition.float64.newton_schulz_10.accurate_up_to", _kappa, "up to kappa {} with the SWAN default"),
    ("condition.float64.newton_schulz_20.accurate_up_to", _kappa, "{} with 20 steps"),
    ("condition.float64.newton_schulz_40.accurate_up_to", _kappa, "and {} with 40 steps (float64)"),
    ("condition.float32.newton_schulz_40.guard_fires", _d, "fires) on {} of the 51 gradients"),
    ("condition.float64.newton_schulz_40.over_bound", _d, "exceeds prediction + tolerance at {} of"),
    ("condition.float64.newton_schulz_40.judged", _d, "of the {} points where the model makes a claim"),
    ("condition.float64.svd.accurate_up_to", _kappa, "| svd | {} /"),
    ("condition.float32.svd.accurate_up_to", _kappa, "/ {} | float32: rank threshold"),
    ("condition.float64.newton_schulz_10.accurate_up_to", _kappa, "| newton_schulz, 10 steps | {} /"),
    ("condition.float32.newton_schulz_10.accurate_up_to", _kappa, "/ {} | too few steps (spec 3.6)"),
    ("condition.float64.newton_schulz_20.accurate_up_to", _kappa, "| newton_schulz, 20 steps | {} /"),
    ("condition.float32.newton_schulz_20.accurate_up_to", _kappa, "/ {} | too few steps; float32"),
    ("condition.float64.newton_schulz_40.accurate_up_to", _kappa, "| newton_schulz, 40 steps | {} /"),
    ("condition.float32.newton_schulz_40.accurate_up_to", _kappa, "/ {} | float32: null-direction"),
    ("divergence.gradnorm_square_32x32.bfloat16.flagged_at_max", _d, "levels off at {} of 48"),
    ("band.kappa_1e+04.beta_0.4.max", _g, "0.132, {}] after 40 steps"),
    ("steps.float64.kappa_1e+01.first_below_1e-6", _d, "takes {} steps at kappa 10"),
    ("steps.float64.kappa_1e+03.first_below_1e-6", _d, "and {} at kappa 1e3 in float64"),
    ("steps.float64.kappa_1e+06.floor", _e, "the float64 floor is {}"),
    ("steps.float32.kappa_1e+01.floor", _e, "In float32 the floor is {} at kappa 10"),
    ("steps.float32.kappa_1e+03.floor", _e, "{} at kappa 1e3"),
    ("steps.float32.kappa_1e+06.first_diverged", _d, "the iteration blows up after {} steps"),
    ("band.kappa_1e+04.beta_0.4.min", _g, "(band [{}, 0.707] after 40 steps"),
    ("band.kappa_1e+01.beta_0.8.tail_min", _g, "oscillates in [{}, 1.6]"),
    ("nullspace.float64.leakage_at_10", _e, "grows from {} at 10 steps"),
    ("nullspace.float64.leakage_at_40", _e, "to {} at 40 steps"),
    ("nullspace.float64.first_diverged", _d, "the output blows up at {} steps"),
    ("nullspace.float32.leakage_at_10", _e, "in float32 it is {} at 10 steps"),
    ("nullspace.float32.leakage_at_20", _e, "{} at 20 and"),
    ("nullspace.float32.first_diverged", _d, "the output blows up at {} steps;"),
    ("nullspace.bfloat16.leakage_at_10", _e, "already at 10 steps the leakage is {}"),
    ("divergence.gradnorm_square_32x32.float64.first_flagged", _d, "first flags at {} steps in float64"),
    ("divergence.gradnorm_square_32x32.float32.first_flagged", _d, "{} in float32"),
    ("divergence.gradnorm_square_32x32.bfloat16.first_flagged", _d, "{} with bfloat16 input"),
    ("divergence.gradnorm_square_32x32.float32.half_flagged", _d, "half the slices are flagged from {} (float32)"),
    ("divergence.ill_conditioned_32x96.float32.first_flagged", _d, "float32 and bfloat16 from {} steps"),
    ("divergence.ill_conditioned_32x96.bfloat16.first_flagged", _d, "float32 and bfloat16 from {} steps"),
    ("band.kappa_1e+01.beta_0.8.tail_max", _g, "oscillates in [0.563, {}] whatever"),
    ("band.kappa_1e+04.beta_0.4.max", _g, "converges linearly to `sqrt(0.5) = {}`"),
    ("band.kappa_1e+01.beta_0.5.min", _g, "(band [{}, 1] at 40 steps for kappa 10"),
    ("band.kappa_1e+01.beta_0.5.max", _g, "(band [1, {}] at 40 steps for kappa 10"),
    ("band.kappa_1e+04.beta_0.5.min", _g, "(band [{}, 1] at 40 steps for kappa 10"),
    ("band.kappa_1e+04.beta_0.5.max", _g, "(band [1, {}] at 40 steps for kappa 10"),
    ("nullspace.bfloat16.leakage_at_20", _g2, "(leakage {}-1.3)"),
    ("nullspace.bfloat16.leakage_at_40", _g2, "(leakage 1.1-{})"),
    ("nullspace.bfloat16.svd_leakage", _g2, "does with that input ({})"),
]


@pytest.fixture(scope="module")
def numbers():
    with open(NUMBERS) as f:
        return json.load(f)["numbers"]


@pytest.fixture(scope="module")
def guide():
    with open(GUIDE) as f:
        return " ".join(f.read().split())


def test_the_json_says_how_it_was_made():
    with open(NUMBERS) as f:
        meta = json.load(f)["meta"]
    assert meta["command"].startswith("swanref study ") and "--quick" not in meta["command"]
    assert meta["machine"] and meta["versions"]["swanref"]
    with open(GUIDE) as f:
        text = f.read()
    assert "swanref study out/study" in text and "study_numbers.json" in text


def test_unquoted_readings_of_the_json(numbers, guide):
    """Readings the guide states without a number: float64 full-rank gradients never diverge
    within 100 steps; bfloat16 never reaches half flagged; the bfloat16 leakage stays in
    1.1-1.3 from 20 steps on."""
    assert numbers["divergence.ill_conditioned_32x96.float64.first_flagged"] is None
    assert "float64 never diverges within 100 steps" in guide
    assert numbers["divergence.gradnorm_square_32x32.bfloat16.half_flagged"] is None
    for k in (20, 30, 40, 60):
        assert 1.05 <= numbers[f"nullspace.bfloat16.leakage_at_{k}"] < 1.35, k


@pytest.mark.parametrize("key,fmt,phrase", QUOTES, ids=[q[0] for q in QUOTES])
def test_guide_quotes_the_json(numbers, guide, key, fmt, phrase):
    value = numbers[key]
    assert value is not None, key
    text = phrase.format(fmt(float(value)))
    assert text in guide, f"docs/guide.md should say {text!r} ({key} = {value})"


# -- recomputed from the tool -------------------------------------------------------------------

def _ctx(**grid):
    from swanref.tools.study import Context
    return Context(quick=False, backend="reference", backends=["reference"], seed=0,
                   progress_stream=io.StringIO(), grid=grid, plots=False)


def _close(res):
    assert res.figure is None
    return res


def test_steps_numbers_recomputed(numbers):
    from swanref.tools.study import study_steps
    k10 = int(numbers["steps.float64.kappa_1e+01.first_below_1e-6"])
    k3 = int(numbers["steps.float64.kappa_1e+03.first_below_1e-6"])
    at = int(numbers["steps.float64.kappa_1e+06.floor_at"])
    res = _close(study_steps(_ctx(kappas=[10.0, 1e3, 1e6], dtypes=["float64"],
                                  steps=[k10 - 2, k10, k3 - 2, k3, at])))
    err = {(r[0], r[2]): r[3] for r in res.rows}
    assert err[(10.0, k10)] < 1e-6 <= err[(10.0, k10 - 2)]
    assert err[(1e3, k3)] < 1e-6 <= err[(1e3, k3 - 2)]
    floor = numbers["steps.float64.kappa_1e+06.floor"]
    assert floor / 3 <= err[(1e6, at)] <= floor * 3  # rounding level: BLAS-dependent
    k = int(numbers["steps.float32.kappa_1e+06.first_diverged"])
    res = _close(study_steps(_ctx(kappas=[1e6], dtypes=["float32"], steps=[k - 2, k])))
    assert [r[8] for r in res.rows] == [False, True]


def test_condition_numbers_recomputed(numbers):
    from swanref.tools.study import study_condition
    res = _close(study_condition(_ctx(kappas=[1.0, 1e8], seeds=3, dtypes=["float64"])))
    svd = {r[0]: [] for r in res.rows}
    for r in res.rows:
        if r[4] == "svd":
            svd[r[0]].append(r[6])
    med = {k: sorted(v)[1] for k, v in svd.items()}
    for kappa, key in ((1.0, "error_at_kappa_1"), (1e8, "error_at_kappa_max")):
        quoted = numbers[f"condition.float64.svd.{key}"]
        assert quoted / 3 <= med[kappa] <= quoted * 3, (kappa, med[kappa], quoted)
    assert all(r[9] for r in res.rows if r[4] == "svd")  # under the bound here too
    # float32 against the float64 SVD: the whole svd sweep, cheaply
    kappas = [float(10.0 ** e) for e in [x / 2 for x in range(17)]]
    res = _close(study_condition(_ctx(kappas=kappas, seeds=3, dtypes=["float32"])))
    from swanref.tools.study.condition import accurate_up_to
    assert accurate_up_to(res.rows, lambda r: r[4] == "svd") == \
        numbers["condition.float32.svd.accurate_up_to"]
    assert accurate_up_to(res.rows, lambda r: r[4] == "eigh") == \
        numbers["condition.float32.eigh.accurate_up_to"]
    assert sum(1 for r in res.rows if r[5] == 40 and r[10]) == \
        numbers["condition.float32.newton_schulz_40.guard_fires"]


def test_nullspace_and_divergence_numbers_recomputed(numbers):
    from swanref.tools.study import study_divergence, study_nullspace
    res = _close(study_nullspace(_ctx(dtypes=["float64", "float32"], steps=[10, 20, 40])))
    for dt, k in (("float64", 10), ("float64", 40), ("float32", 10), ("float32", 20)):
        got = float(np.median([r[3] for r in res.rows if r[0] == dt and r[2] == k]))
        quoted = numbers[f"nullspace.{dt}.leakage_at_{k}"]
        assert quoted / 3 <= got <= quoted * 3, (dt, k, got, quoted)
    fam = "gradnorm_square_32x32"
    k = int(numbers[f"divergence.{fam}.float32.first_flagged"])
    res = _close(study_divergence(_ctx(dtypes=["float32"], steps=[k - 4, k])))
    flagged = {r[2]: r[3] for r in res.rows if r[0] == fam}
    assert flagged[k - 4] == 0 < flagged[k]


def test_bfloat16_divergence_level_recomputed(numbers):
    """The bfloat16 plateau the guide quotes (issue 24: "half flagged at 28" came out "never"
    elsewhere): recomputed at the largest K; rounding details of the BLAS may move it by a few
    of the 48 slices, never to a different regime."""
    pytest.importorskip("ml_dtypes")
    from swanref.tools.study import study_divergence
    fam = "gradnorm_square_32x32"
    res = _close(study_divergence(_ctx(dtypes=["bfloat16"], steps=[100])))
    got = next(r[3] for r in res.rows if r[0] == fam)
    quoted = int(numbers[f"divergence.{fam}.bfloat16.flagged_at_max"])
    assert abs(got - quoted) <= 4, (got, quoted)
    assert numbers[f"divergence.{fam}.bfloat16.half_flagged"] is None  # so not quoted


def test_study_run_time_quoted_from_the_json(guide):
    with open(NUMBERS) as f:
        meta = json.load(f)["meta"]
    assert f"the run of the figures below took {round(meta['seconds'])} s wall inside the tool" \
        in guide


def test_no_development_paths_in_docs():
    """Generated files and docs name no absolute path of the machine that made them."""
    bad = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|[A-Z]:\\\\)")
    for folder in ("docs", os.path.join("docs", "figures"), os.path.join("docs", "data")):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith((".md", ".json")):
                with open(os.path.join(ROOT, folder, name)) as f:
                    hits = bad.findall(f.read())
                assert not hits, f"{folder}/{name} names {hits[:3]}"


def test_study_command_is_recorded_without_absolute_paths():
    from swanref.tools.study.driver import portable_command
    assert portable_command(["/tmp/x/out", "--quick"]) == "swanref study out --quick"
    assert portable_command(["out/study"]) == "swanref study out/study"


def _counts_line(records):
    c = {s: sum(1 for r in records if r["status"] == s) for s in ("PASS", "FAIL", "no claim")}
    return f"{len(records)} rows: {c['PASS']} PASS, {c['FAIL']} FAIL, {c['no claim']} no claim"


def test_report_counts_quoted_in_the_guide(guide):
    """``swanref report --backend reference`` and, with the C++ core, ``swanref report``: one run
    over both backends (the rows of one backend do not depend on the other)."""
    import swanref
    from swanref.tools import report
    both = "cpp" in swanref.available_backends()
    out = io.StringIO()
    report.run(backends=["reference", "cpp"] if both else ["reference"], stream=out,
               as_json=True)
    records = json.loads(out.getvalue())["records"]
    ref = [r for r in records if r["backend"] == "reference"]
    assert f"ends with {_counts_line(ref)} (T s)" in guide, _counts_line(ref)
    assert f"has {len(ref)} rows instead of {2 * len(ref)}" in guide
    if both:
        line = _counts_line(records)
        assert f"`swanref report` prints {line};" in guide, line


# -- runtimes: stored by tests/guide_runtimes.py -----------------------------------------------

RUNTIMES = os.path.join(ROOT, "docs", "figures", "guide_runtimes.json")


def runtime_phrase(run):
    """How the guide quotes one run of tests/guide_runtimes.py."""
    cpu = run["user_s"] + run["sys_s"]
    return (f"{cpu:.1f} s of CPU ({run['user_s']:.1f} s user, {run['sys_s']:.1f} s system) and "
            f"{run['wall_s']:.0f} s wall (load average "
            f"{run['load_average_before'][0]:.0f} at its start)")


def test_guide_quotes_the_stored_runtimes(guide):
    import guide_runtimes
    with open(RUNTIMES) as f:
        data = json.load(f)
    assert [r["command"] for r in data["runs"]] == list(guide_runtimes.COMMANDS)
    assert data["meta"]["machine"] and data["meta"]["commit"]
    assert "{{rt:" not in guide
    for run in data["runs"]:
        assert run["returncode"] == 0, run
        assert runtime_phrase(run) in guide, (run["command"], runtime_phrase(run))
    assert "python tests/guide_runtimes.py" in guide


# -- the training demo: docs/figures/demo_numbers.json is the demo.json of the command ---------

DEMO = os.path.join(ROOT, "docs", "figures", "demo_numbers.json")


@pytest.fixture(scope="module")
def demo():
    with open(DEMO) as f:
        return json.load(f)


def test_demo_json_says_how_it_was_made(demo, guide):
    assert demo["meta"]["command"] == "swanref train-demo out/demo"
    assert demo["meta"]["machine"] and demo["meta"]["versions"]["swanref"]
    assert demo["config"]["steps"] == 1000 and demo["config"]["seeds"] == 3
    assert "swanref train-demo out/demo (its `demo.json` is" in guide


def test_demo_table_is_the_json(demo, guide):
    for name, s in demo["summary"].items():
        row = (f"| {name} | {s['lr']:g} ({s['grid'][0]:g} .. {s['grid'][-1]:g}) | "
               f"{s['test_loss_mean']:.3f} +- {s['test_loss_std']:.3f} | {s['test_acc_mean']:.3f} | "
               f"{s['state_bytes_swan_routed']:,} / {s['state_bytes_other']:,} / "
               f"{s['state_bytes']:,} B |")
        assert row in guide, row


def test_demo_prose_quotes_the_json(demo, guide):
    s = demo["summary"]
    sw, ad, sg = s["SWAN"], s["Adam"], s["SGD"]
    for text in (
            f"its training loss falls from {sw['first_train_loss']:.2f} to "
            f"{sw['final_train_loss_mean']:.2f}",
            f"({sw['test_loss_mean']:.3f} vs {ad['test_loss_mean']:.3f} test loss",
            f"its {sw['state_bytes']:,} bytes are Adam's two moments",
            f"Adam keeps {ad['state_bytes']:,} bytes = 2 x the {ad['param_bytes']:,} bytes",
            f"SWAN {sw['ms_per_step']:.2f} ms, Adam {ad['ms_per_step']:.2f} ms, SGD "
            f"{sg['ms_per_step']:.2f} ms"):
        assert text in guide, text
    assert ad["state_bytes"] == 2 * ad["param_bytes"] and sw["state_bytes_swan_routed"] == 0
    # "a gap within twice the seed spread"
    gap = ad["test_loss_mean"] - sw["test_loss_mean"]
    assert 0 < gap <= 2 * max(sw["test_loss_std"], ad["test_loss_std"])


def test_demo_run_recomputed(demo):
    """The first 100 steps of the SWAN run on seed 0 reproduce the stored evaluation at step
    100 (same teacher, batches and initialisation; rounding may differ by the BLAS build)."""
    from swanref.tools import demo as D
    from swanref.tools.threads import limit_blas_threads
    run = next(r for r in demo["runs"] if r["optimizer"] == "SWAN" and r["seed"] == 0)
    teacher = D.Teacher()
    test_set = teacher.sample(np.random.default_rng(98), demo["config"]["n_test"])
    limiter = limit_blas_threads(1)
    try:
        r = D.train("SWAN", run["lr"], 100, teacher, test_set, seed=0, eval_every=50)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    assert r["evals"][1][0] == run["evals"][1][0] == 100
    assert r["evals"][1][1] == pytest.approx(run["evals"][1][1], rel=1e-6)


def test_readme_commands_are_the_ci_commands():
    """The README's quick start holds exactly two commands that work in a fresh clone (never a
    bare package name, which pip would look up on the index), and .ci/run runs the second."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    python -m pip")]
    assert commands[0] == "python -m pip install . && swanref report"
    assert commands[1] == 'python -m pip install ".[test]" && pytest'
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert commands[1] in f.read()


def test_readme_offers_the_quick_subset_and_every_slow_test_exists():
    """The `slow` marker is used (tests/conftest.py marks the slowest tests) and the README
    says how to leave them out; a renamed test would silently fall out of the list."""
    import conftest
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert 'pytest -n 2 -m "not slow"' in readme
    for prefix in conftest.SLOW_TESTS:
        path, _, name = prefix.partition("::")
        with open(os.path.join(ROOT, path)) as f:
            source = f.read()
        assert not name or "def " + name.split("[")[0] in source, prefix


def test_readme_suite_figures_are_dated_history():
    """The suite's size and duration change with every commit: the README states them once, as
    a measurement at a named commit, and gives the command that counts the current checkout."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    history = re.search(r"At commit [0-9a-f]{7,40} \(\d{4}-\d\d-\d\d\) the whole suite \(([\d,]+) "
                        r"tests; ([\d,]+) passed[^)]*\) took \d+ min \d+ s", readme)
    assert history, "the README's suite figures are not dated with their commit"
    counts = re.findall(r"\b[\d,]+ (?:tests|passed)\b", readme)
    assert counts == [f"{history.group(1)} tests", f"{history.group(2)} passed"], counts
    assert "`pytest --co -q | tail -1` counts the tests" in readme
    assert "`pytest -m slow --co -q | tail -1` counts them" in readme


def test_verification_default_close_tolerance_quoted():
    """docs/verification.md 4: assert_close's default ``64 eps`` in figures."""
    from swanref.verify.measure import default_close_tolerance
    with open(os.path.join(ROOT, "docs", "verification.md")) as f:
        text = " ".join(f.read().split())
    quoted = (f"`rtol = atol = 64 eps` of `actual`'s dtype ({default_close_tolerance('float64'):.1e} "
              f"for float64, {default_close_tolerance('float32'):.1e} for float32)")
    assert quoted.replace("e-06", "e-6") in text, quoted


#: one-off measurements kept in the docs, each dated with the commit it was measured at
DATED = [
    ("README.md", "At commit 52ff361 (2026-12-07) the whole suite"),
    ("docs/verification.md", "At commit 38f47ba, `tests/test_distributed.py` (96 tests;"),
    ("docs/verification.md", "in two device sessions at commit 01f69cd: the first"),
    ("docs/verification.md", "Measured at commit 38f47ba on this CPU"),
    ("docs/performance.md", "a one-off measurement recorded at commit 7beda0f, 2048x2048"),
    ("docs/performance.md", "which is what was measured at commit 3db7956 (1.14-1.29x;"),
    ("docs/performance.md", "(measured at commit 3db7956: 0.79 s vs 0.51 s at 1024x4096"),
    ("docs/performance.md", "It is implemented and was measured at commit 3db7956 (`symmetric=True`"),
    ("docs/performance.md", "per product, 82% of peak at commit 0164a62)"),
    ("docs/performance.md", "(measured in cache at commit 7beda0f: 0.27-0.36 vs"),
    ("docs/performance.md", "the exact route then cost 1.5-1.8x NS10, measured at commit 7beda0f"),
    ("docs/architecture.md", "(measured at commit 6400186: `eigh(2048)` 13x slower"),
    ("docs/jax.md", "Measured at commit a45715a on the 2-core machine"),
    ("docs/jax.md", "Re-measured at commit 3229747 (issue 26 audit), same machine"),
    ("docs/gpu.md", "on an H100 (commit 4343693), max|G| took 0.88 ms"),
    ("docs/gpu.md", "on an H100 at m = 1024 (commit d52f752) was 7x"),
    ("docs/gpu.md", "Largest differences observed in the GPU test run of commit d52f752"),
]


@pytest.mark.parametrize("path,phrase", DATED, ids=[f"{p}:{q[:30]}" for p, q in DATED])
def test_one_off_measurements_are_dated(path, phrase):
    with open(os.path.join(ROOT, path)) as f:
        assert phrase in " ".join(f.read().split())
