"""Meta-tests of ``swanref check``: correct third-party implementations pass, wrong ones fail
with the broken property named (implementations in tests/meta_impls.py)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import swanref
from swanref.verify import checker
from swanref.verify.properties import CATALOGUE, OPS, Claim, properties_for

import meta_impls as M  # noqa: E402  (tests/ is on sys.path under pytest's rootdir insertion)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = 10


def run(fn, op, **kw):
    kw.setdefault("examples", EXAMPLES)
    return checker.check(fn, op, **kw)


# -- correct implementations pass ---------------------------------------------------------------

CORRECT = [
    ("grad_norm_numpy", "grad_norm", {}),
    ("grad_norm_numpy", "grad_norm", {"dtype": "float32"}),
    ("grad_norm_naive_batched", "grad_norm", {}),
    ("whiten_scipy_polar", "whiten", {}),
    ("whiten_scipy_polar", "whiten", {"dtype": "float32"}),
    ("whiten_scipy_polar_raw", "whiten", {"full_rank_only": True}),
    ("whiten_eigh", "whiten", {"method": "eigh"}),
    ("ns_numpy", "whiten", {"method": "newton_schulz"}),
    ("ns_numpy", "whiten", {"method": "newton_schulz", "dtype": "float32"}),
    ("swan_numpy", "swan_update", {}),
    ("swan_ns_numpy", "swan_update", {"method": "newton_schulz"}),
    ("swan_no_rescale", "swan_update", {"rescale": False}),
    ("sinkgd_numpy", "sinkgd_update", {}),
    ("sinkgd_numpy", "sinkgd_update", {"dtype": "float32"}),
]


@pytest.mark.parametrize("name,op,kw", CORRECT, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CORRECT])
def test_correct_third_party_implementations_conform(name, op, kw):
    report = run(getattr(M, name), op, **kw)
    assert report.exit_code == 0, report.table()
    assert not any(r.status == "FAIL" for r in report.results)


@pytest.mark.parametrize("op,fn,kw", [
    ("grad_norm", swanref.grad_norm, {}),
    ("grad_norm", functools.partial(swanref.grad_norm, axis=-2), {"axis": -2}),
    ("grad_norm", functools.partial(swanref.grad_norm, eps=1e-3), {"eps": 1e-3}),
    ("whiten", swanref.whiten, {}),
    ("whiten", functools.partial(swanref.whiten, method="newton_schulz", steps=20,
                                 scaling="grad_fro"),
     {"method": "newton_schulz", "steps": 20, "scaling": "grad_fro"}),
    ("swan_update", swanref.swan_update, {"method": "newton_schulz"}),
    ("sinkgd_update", functools.partial(swanref.sinkgd_update, iters=3), {"iters": 3}),
], ids=["gn", "gn-axis-2", "gn-eps", "whiten", "ns20", "swan", "sinkgd3"])
def test_swanref_itself_conforms(op, fn, kw):
    report = run(fn, op, examples=8, **kw)
    assert report.exit_code == 0, report.table()
    assert not any(r.status in ("FAIL", "warn") for r in report.results), report.table()


# -- wrong implementations fail, naming the property -------------------------------------------

WRONG = [
    # (impl, op, claim, properties that must fail)
    ("grad_norm_ddof1", "grad_norm", {}, {"row_std_one", "agrees_with_reference"}),
    ("grad_norm_wrong_axis", "grad_norm", {}, {"row_mean_zero", "agrees_with_reference"}),
    ("grad_norm_rms", "grad_norm", {}, {"row_mean_zero", "affine_invariance"}),
    ("grad_norm_eps", "grad_norm", {}, {"row_std_one", "agrees_with_reference"}),
    ("grad_norm_nan_constant", "grad_norm", {}, {"constant_row_zero", "finite_output"}),
    ("grad_norm_float64_out", "grad_norm", {"dtype": "float32"}, {"shape_and_dtype"}),
    ("grad_norm_inplace", "grad_norm", {}, {"input_not_modified"}),
    ("grad_norm_numpy", "grad_norm", {"axis": -2}, {"agrees_with_reference", "row_mean_zero"}),
    ("whiten_scipy_polar_raw", "whiten", {}, {"rank_deficient", "zero_input"}),
    ("whiten_full_svd_completion", "whiten", {}, {"rank_deficient"}),
    ("whiten_frobenius", "whiten", {}, {"orthonormal_rows", "agrees_with_reference"}),
    ("whiten_eigh", "whiten", {"max_kappa": 1e7}, {"ill_conditioned"}),
    ("whiten_no_transpose", "whiten", {}, {"tall_input", "transpose_equivariance"}),
    ("ns_beta08", "whiten", {"method": "newton_schulz"}, {"agrees_with_reference",
                                                           "singular_values_match_prediction"}),
    ("ns_no_prescale", "whiten", {"method": "newton_schulz"}, {"scale_invariance",
                                                                "agrees_with_reference"}),
    ("ns_no_output_scale", "whiten", {"method": "newton_schulz"},
     {"singular_values_match_prediction", "scale_invariance"}),
    ("ns_swapped_order", "whiten", {"method": "newton_schulz"}, {"agrees_with_reference"}),
    ("ns_no_transpose_back", "whiten", {"method": "newton_schulz"}, {"shape_and_dtype",
                                                                      "tall_input"}),
    ("ns_numpy", "whiten", {}, {"orthonormal_rows", "agrees_with_reference"}),
    ("whiten_scipy_polar", "whiten", {"method": "newton_schulz"}, {"agrees_with_reference"}),
    ("swan_no_rescale", "swan_update", {}, {"rms_one"}),
    ("swan_numpy", "swan_update", {"rescale": False}, {"agrees_with_reference"}),
    ("swan_no_gradnorm", "swan_update", {}, {"affine_invariance", "agrees_with_reference"}),
    ("swan_rms_gradnorm", "swan_update", {}, {"affine_invariance"}),
    ("sinkgd_columns_first", "sinkgd_update", {}, {"column_norms", "row_scale_invariance"}),
    ("sinkgd_one_iter", "sinkgd_update", {}, {"agrees_with_reference"}),
    ("sinkgd_unit_norms", "sinkgd_update", {}, {"column_norms"}),
    ("sinkgd_eps", "sinkgd_update", {}, {"agrees_with_reference"}),
    ("grad_norm_global", "grad_norm", {}, {"row_mean_zero", "affine_invariance"}),
    ("whiten_eps_regularised", "whiten", {}, {"scale_invariance", "orthonormal_rows"}),
    ("whiten_half_precision", "whiten", {"dtype": "float32"}, {"agrees_with_reference"}),
    ("ns_muon_quintic", "whiten", {"method": "newton_schulz"},
     {"singular_values_match_prediction"}),
    ("swan_wrong_order", "swan_update", {}, {"constant_rows", "affine_invariance"}),
    ("sinkgd_swapped_targets", "sinkgd_update", {}, {"column_norms"}),
]


@pytest.mark.parametrize("name,op,kw,expected", WRONG,
                         ids=[f"{w[0]}-{w[1]}-{w[2]}" for w in WRONG])
def test_wrong_implementations_fail_naming_the_property(name, op, kw, expected):
    # only the named properties: shrinking every other failure too would only cost time
    report = run(getattr(M, name), op, properties=sorted(expected), **kw)
    assert report.exit_code == 1, report.table()
    failed = {r.name for r in report.failures}
    assert expected <= failed, f"expected {expected} among {failed}\n{report.table()}"
    text = report.table()
    for prop_name in expected:
        assert f"[FAIL] {prop_name}" in text
    for r in report.failures:
        assert r.input and "shape" in r.input and "dtype" in r.input
        assert r.error is not None and r.tolerance is not None and r.error > r.tolerance


def test_every_operator_has_wrong_implementations_in_the_meta_suite():
    covered = {w[1] for w in WRONG}
    assert covered == set(OPS)


def test_every_property_is_shown_failing_by_some_wrong_implementation():
    """Each property of the catalogue must be able to fail (else it tests nothing)."""
    # batched: test_optional_class...; nonfinite_input: test_nonfinite_input_property;
    # extreme_scale / offset_robustness: warnings of the naive meta implementations
    shown = set().union(*(w[3] for w in WRONG)) | {"batched", "extreme_scale",
                                                    "offset_robustness", "nonfinite_input"}
    names = {p.name for p in CATALOGUE}
    missing = names - shown - {"permutation_equivariance", "sign_symmetry",
                               "orthogonal_equivariance", "polar_symmetric_psd",
                               "constant_rows", "zero_lines_stay_zero", "finite_output"}
    assert not missing, f"properties without a failing meta-implementation: {missing}"


@pytest.mark.parametrize("prop_name,impl,op,kw", [
    ("polar_symmetric_psd", "whiten_no_transpose", "whiten", {}),
    ("orthogonal_equivariance", "whiten_eigh", "whiten", {"max_kappa": 1e7}),
    ("permutation_equivariance", "swan_no_gradnorm", "swan_update", {}),
    ("constant_rows", "swan_no_rescale", "swan_update", {}),
    ("zero_lines_stay_zero", "sinkgd_unit_norms", "sinkgd_update", {}),
    ("finite_output", "grad_norm_nan_constant", "grad_norm", {}),
])
def test_relational_properties_can_fail(prop_name, impl, op, kw):
    report = run(getattr(M, impl), op, properties=[prop_name], **kw)
    if prop_name == "zero_lines_stay_zero":
        # unit-norm lines still keep zero lines zero: this property must PASS here, and fail
        # for an implementation that fills zero lines
        assert report.status(prop_name) == "pass"

        def fills(G):
            out = M.sinkgd_numpy(G)
            return np.where(out == 0, 1.0, out).astype(out.dtype)
        report = run(fills, op, properties=[prop_name])
    assert report.status(prop_name) == "FAIL", report.table()


def test_sign_symmetry_can_fail():
    def biased(G):
        return (M.whiten_scipy_polar(G) + 1e-3).astype(G.dtype)
    report = run(biased, "whiten", properties=["sign_symmetry"])
    assert report.status("sign_symmetry") == "FAIL"


def test_batched_failure_is_reported_as_unsupported_not_a_crash():
    report = run(M.whiten_polar_2d_only, "whiten")
    assert report.status("batched") == "unsupported"
    assert "only 2-D" in [r for r in report.results if r.name == "batched"][0].message
    assert report.exit_code == 0
    strict = run(M.whiten_polar_2d_only, "whiten", strict=True, properties=["batched"])
    assert strict.exit_code == 1


def test_target_that_raises_on_every_input_is_a_usage_error():
    """Issue 22: an exception on every plain input says the target cannot be called so (exit
    2, with the exception), not NOT CONFORMING with a batch probe 'unsupported'."""
    def broken(G):
        raise RuntimeError("boom")
    for op, kw in (("grad_norm", {}), ("whiten", {}), ("whiten", {"preset": "muon_ns5"}),
                   ("update", {})):
        with pytest.raises(checker.UsageError, match="raised on every plain input.*boom"):
            checker.check(broken, op, suggest=False, **kw)


def test_target_that_fails_on_some_plain_input_is_not_conforming():
    def square_only(G):
        if G.shape[-1] != G.shape[-2]:
            raise RuntimeError("boom")
        return swanref.grad_norm(G)
    report = run(square_only, "grad_norm", properties=["agrees_with_reference"])
    assert report.status("agrees_with_reference") == "FAIL"
    assert "RuntimeError: boom" in report.table()
    assert report.exit_code == 1


def test_every_call_raising_is_a_usage_error_after_the_check():
    """The backstop: a target that accepted nothing in the whole check (the first plain
    shapes aside) is a usage error too."""
    report = checker.CheckReport("grad_norm", "t", {}, 1, 0)
    call = checker.make_call(lambda G: G)
    call.calls, call.raised = 3, "RuntimeError: boom"
    with pytest.raises(checker.UsageError, match="none returned.*boom"):
        checker.refused_everything(call, report)
    call.returned = 1
    checker.refused_everything(call, report)       # one return: the check judges it


def test_target_returning_non_array_fails():
    report = run(lambda G: "nope", "whiten", properties=["agrees_with_reference"])
    assert report.status("first_call") == "FAIL"            # one type mistake, said once
    assert report.status("agrees_with_reference") == "not-run"
    assert report.exit_code == 1 and "not an array" in report.table()


def test_counterexample_is_shrunk_small():
    report = run(M.grad_norm_ddof1, "grad_norm", properties=["row_std_one"], examples=30)
    r = report.results[0]
    assert r.status == "FAIL"
    assert np.prod(r.input["shape"]) <= 4, r.input       # hypothesis shrank it
    assert r.array is not None


def test_seed_makes_reports_reproducible():
    a = run(M.whiten_frobenius, "whiten", seed=7).to_dict()
    b = run(M.whiten_frobenius, "whiten", seed=7).to_dict()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["results"]]
    strip_b = [{k: v for k, v in r.items() if k != "seconds"} for r in b["results"]]
    assert strip == strip_b


def test_claim_options_select_properties():
    claim = Claim("whiten", method="newton_schulz", scaling="none")
    names = {p.name for p in properties_for(claim) if p.not_applicable(claim) is None}
    assert "scale_invariance" not in names
    assert "orthonormal_rows" not in names
    assert "singular_values_match_prediction" in names
    exact = Claim("whiten", full_rank_only=True)
    names = {p.name for p in properties_for(exact) if p.not_applicable(exact) is None}
    assert "rank_deficient" not in names and "orthonormal_rows" in names


def test_report_json_is_serialisable_and_complete():
    report = run(M.grad_norm_ddof1, "grad_norm", properties=["row_std_one", "zero_input"])
    d = json.loads(json.dumps(report.to_dict()))
    assert d["conforming"] is False and d["exit_code"] == 1
    assert d["failed_properties"] == ["row_std_one"]
    row = [r for r in d["results"] if r["property"] == "row_std_one"][0]
    assert row["status"] == "FAIL" and row["error"] > row["tolerance"]
    assert row["input"]["dtype"] == "float64" and "seed" in row["input"]


# -- command line ---------------------------------------------------------------------------

def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    return subprocess.run([sys.executable, "-m", "swanref.cli", "check", *args],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=120)


def test_cli_conforming_target_exits_0():
    p = cli("grad_norm", "meta_impls:grad_norm_numpy", "--examples", "5")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verdict: CONFORMING" in p.stdout
    assert "agrees_with_reference" in p.stdout


def test_cli_wrong_target_exits_1_and_names_property(tmp_path):
    p = cli("whiten", "tests/meta_impls.py:whiten_frobenius", "--examples", "5", "--json",
            "--property", "orthonormal_rows")
    assert p.returncode == 1, p.stdout + p.stderr
    d = json.loads(p.stdout)
    assert d["failed_properties"] == ["orthonormal_rows"]


def test_cli_file_target_with_options(tmp_path):
    impl = tmp_path / "impl.py"
    impl.write_text(textwrap.dedent("""
        import numpy as np
        def ns(G):
            X = G.T if G.shape[0] > G.shape[1] else G
            A = X @ X.T
            c = np.sqrt(np.sum(A * A))
            if c == 0:
                return np.zeros_like(G)
            I = np.eye(len(A))
            Y, Z = A / c, I
            for _ in range(12):
                T = 3 * I - Z @ Y
                Y, Z = 0.5 * Y @ T, 0.5 * T @ Z
            out = Z @ X / np.sqrt(c)
            return (out.T if X is not G else out).astype(G.dtype)
    """))
    p = cli("whiten", f"{impl}:ns", "--method", "newton_schulz", "--steps", "12",
            "--examples", "5", "--property", "agrees_with_reference", cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    p = cli("whiten", f"{impl}:ns", "--method", "newton_schulz", "--steps", "11",
            "--examples", "5", "--property", "agrees_with_reference", cwd=str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr


@pytest.mark.parametrize("args,needle", [
    (("whiten",), "TARGET"),
    (("whiten", "--examples", "3"), "TARGET"),
    (("frobnicate", "meta_impls:ns_numpy"), "invalid choice"),
    (("whiten", "no_such_module_xyz:f"), "cannot import"),
    (("whiten", "meta_impls:no_such_function"), "no attribute"),
    (("whiten", "meta_impls"), "module:function"),
    (("whiten", "missing_file.py:f"), "no such file"),
    (("whiten", "meta_impls:ns_numpy", "--method", "qr"), "--method"),
    (("whiten", "meta_impls:ns_numpy", "--steps", "3"), "only apply"),
    (("grad_norm", "meta_impls:grad_norm_numpy", "--method", "newton_schulz"), "do not apply"),
    (("whiten", "meta_impls:ns_numpy", "--dtype", "int32"), "dtype"),
    (("whiten", "meta_impls:ns_numpy", "--examples", "0"), "examples"),
    (("whiten", "meta_impls:ns_numpy", "--axis", "3"), "axis"),
    (("whiten", "meta_impls:ns_numpy", "--property", "nope"), "unknown properties"),
    (("whiten", "meta_impls:ns_numpy", "--array-type", "torch"), "torch"),
    (("whiten", "meta_impls:ns_numpy", "--preset", "no_such_preset"), "unknown --preset"),
    (("grad_norm", "meta_impls:ns_numpy", "--preset", "muon_ns5"), "only applies"),
    (("whiten", "meta_impls:ns_numpy", "--preset", "muon_ns5", "--method", "eigh"),
     "replaces"),
])
def test_cli_usage_errors_exit_2(args, needle, capsys):
    if "torch" in args:
        import importlib.util
        if importlib.util.find_spec("torch") is not None:
            pytest.skip("torch is installed here")
    code = checker.main(list(args))          # in-process: the same main() the CLI calls
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err


def test_cli_usage_error_through_the_command():
    p = cli("whiten", "no_such_module_xyz:f")
    assert p.returncode == 2 and "cannot import" in p.stderr


def test_cli_not_callable_target_exits_2(capsys):
    assert checker.main(["whiten", "meta_impls:np"]) == 2   # a module, not a function
    assert "not callable" in capsys.readouterr().err


def test_save_failures_writes_the_counterexamples(tmp_path, capsys):
    code = checker.main(["whiten", "meta_impls:whiten_frobenius", "--examples", "5",
                         "--property", "orthonormal_rows", "--property", "zero_input",
                         "--save-failures", str(tmp_path / "cex")])
    assert code == 1
    files = sorted(os.listdir(tmp_path / "cex"))
    assert files == ["orthonormal_rows.npy"]
    G = np.load(tmp_path / "cex" / "orthonormal_rows.npy")
    with pytest.raises(AssertionError, match="orthonormal_rows"):
        from swanref.verify.measure import assert_orthonormal_rows
        assert_orthonormal_rows(M.whiten_frobenius(G))
    capsys.readouterr()


def test_cli_list_properties_and_help():
    p = cli("whiten", "--list-properties")
    assert p.returncode == 0
    assert "orthonormal_rows" in p.stdout and "rank_deficient" in p.stdout
    p = cli("--help")
    assert p.returncode == 0 and "Exit 0 conforming" in " ".join(p.stdout.split())


# -- pytest plugin ----------------------------------------------------------------------------

def _plugin_args():
    """``-p swanref.pytest_plugin`` unless the pytest11 entry point already loads it."""
    from importlib.metadata import entry_points
    eps = entry_points(group="pytest11")
    if any(ep.name == "swanref" for ep in eps):
        return []
    return ["-p", "swanref.pytest_plugin"]


def _pytest(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *_plugin_args(), *args], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=300)


def test_pytest_plugin_fixture(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import meta_impls as M

        def test_good(swanref_check):
            report = swanref_check(M.sinkgd_numpy, "sinkgd_update")
            assert report.conforming

        def test_bad(swanref_check):
            swanref_check(M.sinkgd_columns_first, "sinkgd_update")
    """))
    p = _pytest(tmp_path, "--swanref-examples", "5", "test_user.py")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 failed, 1 passed" in p.stdout
    assert "[FAIL] column_norms" in p.stdout


def test_pytest_plugin_target_items(tmp_path):
    p = _pytest(tmp_path, "--swanref-target", "whiten=meta_impls:whiten_polar_2d_only",
                "--swanref-examples", "5", "-rs", "-k", "batched or orthonormal")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed, 1 skipped" in p.stdout
    assert "unsupported" in p.stdout          # batched input class skipped, not crashed
    p = _pytest(tmp_path, "--swanref-target", "whiten=meta_impls:ns_numpy",
                "--swanref-target", "sinkgd_update=meta_impls:sinkgd_numpy",
                "--swanref-claim", "sinkgd_update:iters=5", "--swanref-examples", "5",
                "-k", "orthonormal_rows or column_norms")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 failed, 1 passed" in p.stdout
    assert "[FAIL] orthonormal_rows" in p.stdout
    p = _pytest(tmp_path, "--swanref-target", "frob=meta_impls:ns_numpy")
    assert p.returncode != 0 and "OP=TARGET" in p.stderr + p.stdout


# -- --preset (swanref.presets.diagnose) --------------------------------------------------------

def test_preset_claim_matches_and_names_the_difference():
    from swanref import presets
    good = run(lambda G: presets.whiten_preset(G, "muon_ns5"), "whiten", preset="muon_ns5",
               examples=3)
    assert good.exit_code == 0, good.table()
    assert good.status("matches_preset") == "pass"
    bad = run(lambda G: presets.whiten_preset(G, "muon_ns5", steps=6), "whiten",
              preset="muon_ns5", examples=3)
    assert bad.exit_code == 1
    assert bad.failures[0].name == "matches_preset"
    assert "6 steps instead of 5" in bad.table()


def test_optional_class_supported_only_sometimes_is_a_failure():
    calls = {"n": 0}

    def flaky_batches(G):
        if G.ndim > 2:
            calls["n"] += 1
            if calls["n"] > 2:
                raise ValueError("batch too large")
        return M.whiten_scipy_polar(G)
    report = run(flaky_batches, "whiten", properties=["batched"])
    assert report.status("batched") == "FAIL", report.table()
    assert "after accepting other batched inputs" in report.table()


def test_nonfinite_input_property():
    # swanref raises by default (check_finite=True): fine; NaN output: fine
    assert run(swanref.whiten, "whiten", properties=["nonfinite_input"]).status(
        "nonfinite_input") == "pass"
    nan_out = run(functools.partial(swanref.grad_norm, check_finite=False), "grad_norm",
                  properties=["nonfinite_input"])
    assert nan_out.status("nonfinite_input") == "pass"

    def scrub(G):                   # replaces NaN/Inf by 0 and carries on: plausible garbage
        return M.grad_norm_numpy(np.nan_to_num(G, nan=0.0, posinf=0.0, neginf=0.0))
    report = run(scrub, "grad_norm", properties=["nonfinite_input"])
    assert report.status("nonfinite_input") == "warn"
    assert report.exit_code == 3          # an advisory warning alone is no evidence
    report = run(scrub, "grad_norm", properties=["nonfinite_input", "shape_and_dtype"])
    assert report.exit_code == 0
    assert run(scrub, "grad_norm", properties=["nonfinite_input"], strict=True).exit_code == 1


@pytest.mark.parametrize("impl,op,prop_name,kw", [
    ("ns_numpy", "whiten", "extreme_scale", {"method": "newton_schulz"}),
    ("grad_norm_naive_batched", "grad_norm", "offset_robustness", {}),
])
def test_advisory_properties_warn_without_failing_the_run(impl, op, prop_name, kw):
    report = run(getattr(M, impl), op, properties=[prop_name, "shape_and_dtype"], **kw)
    assert report.status(prop_name) == "warn", report.table()
    assert report.exit_code == 0
    assert "advisory warnings" in report.table()


def test_missing_hypothesis_is_a_usage_error():
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); sys.modules['hypothesis'] = None\n"
            "from swanref.verify import checker\n"
            "sys.exit(checker.main(['whiten', 'tests/meta_impls.py:ns_numpy']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "needs hypothesis" in p.stderr


# -- CI usability: arguments, presets, JSON, few shapes, suggestions ----------------------------

def _keller(G, steps=5, eps=1e-7, a=3.4445, b=-4.7750, c=2.0315):
    X = np.asarray(G, dtype=float)
    t = X.shape[-2] > X.shape[-1]
    X = np.swapaxes(X, -1, -2) if t else X
    X = X / (np.linalg.norm(X, axis=(-2, -1), keepdims=True) + eps)
    for _ in range(steps):
        A = X @ np.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * A @ A) @ X
    return (np.swapaxes(X, -1, -2) if t else X).astype(np.asarray(G).dtype)


def _two_d_only(G):
    if np.ndim(G) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    return _keller(G)


def test_kwarg_binds_target_arguments(tmp_path, capsys):
    f = tmp_path / "t.py"
    f.write_text("import numpy as np\nimport sys\nsys.path.insert(0, %r)\n"
                 "from test_checker import _keller\n"
                 "def ns(G, steps, eps):\n    return _keller(G, steps=steps, eps=eps)\n"
                 % os.path.dirname(__file__))
    code = checker.main(["whiten", f"{f}:ns", "--preset", "muon_ns5", "--kwarg", "steps=5",
                         "--kwarg", "eps=1e-7", "--examples", "3"])
    assert code == 0, capsys.readouterr().out
    assert checker.parse_kwarg("c=(3.4, -4.7, 2.0)") == ("c", (3.4, -4.7, 2.0))
    assert checker.parse_kwarg("mode=fast") == ("mode", "fast")
    with pytest.raises(checker.UsageError):
        checker.parse_kwarg("no_equals_sign")


def test_target_that_cannot_take_one_array_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "t.py"
    f.write_text("def ns(G, steps):\n    return G\n")
    assert checker.main(["whiten", f"{f}:ns", "--examples", "3"]) == 2
    err = capsys.readouterr().err
    assert "TypeError" in err and "steps" in err and "--kwarg" in err


def test_list_presets_names_package_and_version(capsys):
    assert checker.main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "pytorch-optimizer" in out and "4.1.0" in out and "torch_muon" in out
    from swanref.presets import PRESETS
    assert all(name in out for name in PRESETS)


def test_custom_preset_from_a_coefficient_file(tmp_path):
    js = tmp_path / "table.json"
    js.write_text(json.dumps([[3.4445, -4.7750, 2.0315]] * 5))
    txt = tmp_path / "table.txt"
    txt.write_text("# a b c\n" + "3.4445 -4.7750 2.0315\n" * 5)
    for path in (js, txt):
        rep = checker.check(_keller, "whiten", preset="custom", coefficients=str(path),
                            examples=3)
        assert rep.exit_code == 0, rep.table()
        assert any(f"swanref schedule {path}" in h for h in rep.hints)
    rep = checker.check(_keller, "whiten", preset="custom",
                        coefficients=[(3.4445, -4.7750, 2.0315)] * 6, examples=3)
    assert rep.exit_code == 1 and "5 steps instead of 6" in rep.table()
    with pytest.raises(checker.UsageError, match="--coefficients"):
        checker.check(_keller, "whiten", preset="custom", examples=3)


def test_two_d_only_target_batch_is_unsupported_in_preset_check():
    rep = checker.check(_two_d_only, "whiten", preset="muon_ns5", examples=3)
    assert rep.exit_code == 0, rep.table()
    assert rep.status("batched_probe") == "unsupported"
    r = next(r for r in rep.results if r.name == "batched_probe")
    assert "must be a 2D matrix" in r.exception
    d = next(r for r in rep.results if r.name == "matches_preset").diagnosis
    assert d["unsupported"]["batched"].startswith("ValueError")
    assert all(p["distance"] is not None for p in d["per_probe"])


def test_json_is_numeric_and_versioned():
    rep = checker.check(lambda G: np.zeros_like(G) + np.nan, "whiten", preset="muon_ns5",
                        examples=3)
    text = json.dumps(rep.to_dict())

    def bad_constant(name):
        raise AssertionError(f"non-JSON number {name}")
    d = json.loads(text, parse_constant=bad_constant)   # no Infinity/NaN tokens

    def strings(x):
        if isinstance(x, dict):
            return [v for k, v in x.items() if k in ("error", "tolerance", "distance")
                    and isinstance(v, str)] + sum((strings(v) for v in x.values()), [])
        if isinstance(x, list):
            return sum((strings(v) for v in x), [])
        return []
    assert strings(d) == []    # numbers are numbers or null, never the string "inf"
    assert d["schema"] == checker.JSON_SCHEMA
    m = next(r for r in d["results"] if r["property"] == "matches_preset")
    assert m["diagnosis"]["distance_infinite"] and m["diagnosis"]["distance"] is None
    assert len(m["diagnosis"]["candidates"]) > 20
    assert {"label", "distance", "tolerance", "ratio", "match"} <= set(
        m["diagnosis"]["candidates"][0])


def test_few_shapes_mode_draws_a_fixed_set():
    seen = set()

    def spy(G):
        seen.add(np.shape(G)[-2:])
        return M.whiten_scipy_polar(G)
    rep = checker.check(spy, "whiten", shapes="few", examples=6,
                        properties=["agrees_with_reference", "tall_input", "batched",
                                    "orthonormal_rows"])
    assert rep.exit_code == 0, rep.table()
    assert seen <= set(checker.FEW_SHAPES), seen


def test_failed_exact_claim_names_the_matching_preset():
    rep = checker.check(_keller, "whiten", examples=3,
                        properties=["agrees_with_reference"], target_name="mod:fn")
    assert rep.exit_code == 1
    assert rep.matches_preset and rep.matches_preset["preset"] == "muon_ns5"
    assert "swanref check whiten mod:fn --examples 3 --preset muon_ns5 --dtype float64" \
        in rep.table()


def test_tolerance_that_asserts_nothing_is_no_claim():
    from swanref.verify.measure import Measurement
    from swanref.verify.properties import Property, spectral_cases

    def always_capped(claim, call, case):
        return Measurement("capped", 0.43, 2.0, "m", case.describe())
    prop = Property("capped", ("whiten",), "doc", lambda c: spectral_cases(c), always_capped)
    res = checker.run_property(prop, Claim("whiten", np.float32), lambda G, copy=True: G, 3)
    assert res.status == "no-claim"


def test_a_target_that_hangs_on_nonfinite_input_fails_instead_of_hanging(monkeypatch):
    """gesdd loops forever on some Inf inputs (Reference-LAPACK/lapack#1409): the property
    reports the hang after its deadline; the check does not hang with the target."""
    import threading
    from swanref.verify import properties
    monkeypatch.setattr(properties, "NONFINITE_TIMEOUT_S", 0.2)
    release = threading.Event()

    def polar(G):
        G = np.asarray(G, dtype=float)
        if not np.isfinite(G).all():
            release.wait(30)          # stands in for the LAPACK loop
        return swanref.whiten(G) if np.isfinite(G).all() else G
    try:
        rep = checker.check(polar, "whiten", examples=3, properties=["nonfinite_input"])
    finally:
        release.set()
    (res,) = [r for r in rep.results if r.name == "nonfinite_input"]
    assert res.status == "warn" and "no return within" in res.message, res  # advisory property
