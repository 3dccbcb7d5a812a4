"""The checker's runtime (issue 21, 23 item 5/8, 24 "the checker's report"): how targets are
loaded and called, the outcomes and exit statuses, the output channel, forwarded options,
the commands the report prints, and the grouped report."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading

import numpy as np
import pytest

import swanref
from swanref.verify import checker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import meta_impls as M  # noqa: E402


def _file(tmp_path, text, name="t.py"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def _main(args, capsys):
    code = checker.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- outcomes: an exit, a BaseException, a hang, no evidence ---------------------------------

@pytest.mark.parametrize("where", ["call", "import"])
@pytest.mark.parametrize("code", [0, 1])
def test_a_target_that_exits_is_its_own_outcome(tmp_path, capsys, where, code):
    body = (f"raise SystemExit({code})\ndef f(G):\n    return G\n" if where == "import" else
            f"def f(G):\n    raise SystemExit({code})\n")
    rc, out, _ = _main(["grad_norm", _file(tmp_path, body) + ":f"], capsys)
    assert rc == 4, out
    assert "TARGET EXITED" in out and f"sys.exit({code})" in out
    assert ("importing" if where == "import" else "first call") in out


def test_a_target_raising_keyboardinterrupt_or_generatorexit_is_an_exit():
    for exc in (KeyboardInterrupt, GeneratorExit):
        def f(G, exc=exc):
            if G.shape[0] > 3:
                raise exc("from the target")
            return M.grad_norm_numpy(G)
        rep = checker.check(f, "grad_norm", examples=10)
        assert rep.exit_code == 4 and rep.outcome == "TARGET EXITED", rep.table()
        assert exc.__name__ in rep.table()
        assert any(r.status == "not-run" for r in rep.results)   # the check stopped there


def test_a_target_that_never_returns_times_out_naming_the_probe():
    release = threading.Event()

    def hangs_on_batches(G):
        if np.ndim(G) > 2:
            release.wait(60)
        return M.whiten_scipy_polar(G)
    try:
        rep = checker.check(hangs_on_batches, "whiten", examples=5, timeout=0.5,
                            properties=["shape_and_dtype", "batched", "nonfinite_input"])
    finally:
        release.set()
    assert rep.outcome == "TIMEOUT" and rep.exit_code == 5, rep.table()
    (hung,) = [r for r in rep.results if r.status == "timeout"]
    assert hung.name == "batched" and "within 0.5 s" in hung.message
    assert "property batched" in hung.message and len(hung.input["shape"]) == 3
    assert rep.status("shape_and_dtype") == "pass"
    assert rep.status("nonfinite_input") == "not-run"
    assert "--timeout" in rep.table()


def test_a_hanging_target_does_not_hang_the_command(tmp_path):
    """At import and at call: the process reports and exits although the target never
    returns (a daemon thread keeps it)."""
    for body in ("import time\nwhile True:\n    time.sleep(0.05)\n",
                 "import time\ndef f(G):\n    while True:\n        time.sleep(0.05)\n"):
        f = _file(tmp_path, body + "\ndef f(G):\n    return G\n" if "def f" not in body
                  else body)
        p = subprocess.run([sys.executable, "-m", "swanref.cli", "check", "grad_norm", f + ":f",
                            "--timeout", "1", "--json"], capture_output=True, text=True,
                           cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
        assert p.returncode == 5, p.stdout + p.stderr
        assert json.loads(p.stdout)["outcome"] == "TIMEOUT"


def test_a_target_that_hangs_holding_the_gil_ends_the_process_with_exit_5(tmp_path):
    """A call into compiled code that never returns while holding the GIL (numpy.linalg.svd
    on some Inf inputs: LAPACK's gesdd loops, Reference-LAPACK/lapack#1409; here a regular
    expression that backtracks for ever, which holds it on every Python and BLAS) starves
    every Python thread: the deadline's waiter never runs.  The C++ watchdog ends the process
    with the timeout's exit status and says why, instead of hanging with the target."""
    from swanref.backends import cpp
    from swanref.verify import targets
    if cpp.watchdog() is None:
        pytest.skip("the C++ core is not built")
    assert targets.TIMEOUT_EXIT == checker.EXIT_CODES["TIMEOUT"]
    f = _file(tmp_path, "import re\ndef f(G):\n    re.match(r'(a+)+$', 'a' * 64 + 'b')\n"
                        "    return G\n")
    # the swanref this process imported (an installed one has the core; the source tree of a
    # plain install does not, and without the core nothing can end such a hang)
    where = os.path.dirname(os.path.dirname(os.path.abspath(swanref.__file__)))
    p = subprocess.run([sys.executable, "-m", "swanref.cli", "check", "grad_norm", f + ":f",
                        "--timeout", "1"], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=where), timeout=90)
    assert p.returncode == 5, p.stdout + p.stderr
    assert "holds Python's GIL" in p.stderr and "its first call" in p.stderr, p.stderr


def test_the_gil_watchdog_is_disarmed_after_every_call():
    """A call that returns, raises or times out (GIL free) leaves no deadline armed: the
    process must not end later for a call that is over."""
    from swanref.backends import cpp
    from swanref.verify import targets
    if cpp.watchdog() is None:
        pytest.skip("the C++ core is not built")
    armed = []
    real = targets._gil_watchdog

    def spy(timeout, where):
        dog = real(timeout, where)
        armed.append(dog)
        return dog
    runner = targets.TargetRunner(timeout=0.3)
    try:
        targets._gil_watchdog = spy
        assert runner.run(lambda: 3) == 3
        with pytest.raises(ValueError):
            runner.run(lambda: (_ for _ in ()).throw(ValueError("x")))
        gate = threading.Event()
        with pytest.raises(targets.TargetTimeout):
            runner.run(gate.wait, 5)
        gate.set()
    finally:
        targets._gil_watchdog = real
        runner.close()
    assert len(armed) == 3 and not any(d.armed for d in armed)
    with pytest.raises(ValueError, match="finite and > 0"):
        cpp.watchdog().arm(float("nan"), "x", 5)


def test_an_accuracy_failure_leads_its_summary_with_what_was_measured():
    """The summary's cause is the measured error against its tolerance, not only the claim
    that was checked ("claimed accuracy: method 'svd'" said what was claimed, not what broke)."""
    rep = checker.check(M.whiten_frobenius, "whiten", examples=3,
                        properties=["agrees_with_reference", "tall_input"])
    cause = next(ln for ln in rep.table().splitlines() if ln.startswith("  cause: "))
    assert "above the tolerance" in cause and "claimed accuracy" in cause, cause
    assert "2 properties" in cause, cause        # one mistake, still one group


def test_no_evidence_is_inconclusive():
    def two_d_only(G):
        if np.ndim(G) != 2:
            raise ValueError("2-D only")
        return M.grad_norm_numpy(G)
    rep = checker.check(two_d_only, "grad_norm", examples=3, properties=["batched"])
    assert rep.status("batched") == "unsupported"
    assert rep.outcome == "INCONCLUSIVE" and rep.exit_code == 3 and not rep.conforming
    assert "no property ran on an input with a claim and passed" in rep.table()
    rep = checker.check(two_d_only, "grad_norm", examples=3,
                        properties=["batched", "shape_and_dtype"])
    assert rep.exit_code == 0 and rep.evidence


def test_a_pass_that_counted_no_input_is_not_evidence():
    """The rule counts inputs per property, not the examples the check asked for."""
    rep = checker.CheckReport("grad_norm", "f", {"op": "grad_norm"}, examples=30, seed=0)
    rep.results.append(checker.PropertyResult("first_call", "pass", "required", "one call"))
    rep.results.append(checker.PropertyResult("row_mean_zero", "n/a", "required", "n/a here"))
    assert rep.evidence == [] and rep.outcome == "INCONCLUSIVE" and rep.exit_code == 3
    rep.results.append(checker.PropertyResult("row_std_one", "pass", "required", "ran",
                                              examples=2))
    assert rep.outcome == "CONFORMING" and rep.exit_code == 0


def test_the_python_api_and_the_cli_share_the_rule(tmp_path, capsys):
    f = _file(tmp_path, "def f(G):\n    raise SystemExit(0)\n")
    rc, _, _ = _main(["grad_norm", f + ":f"], capsys)
    rep = checker.check(checker.load_target(f + ":f"), "grad_norm", examples=3)
    assert rc == rep.exit_code == 4


# -- the output channel ----------------------------------------------------------------------

def test_target_prints_go_to_stderr_and_json_stays_valid(tmp_path):
    f = _file(tmp_path, "import os, sys\nimport numpy as np\nprint('at import')\n"
                        "def f(G):\n    print('python print')\n    os.write(1, b'fd write\\n')\n"
                        "    c = G - G.mean(axis=-1, keepdims=True)\n"
                        "    s = np.sqrt((c * c).mean(axis=-1, keepdims=True))\n"
                        "    return np.where(s > 0, c / np.where(s > 0, s, 1), 0).astype(G.dtype)\n")
    p = subprocess.run([sys.executable, "-m", "swanref.cli", "check", "grad_norm", f + ":f",
                        "--examples", "2", "--property", "shape_and_dtype", "--json"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    doc = json.loads(p.stdout)                      # one document, nothing else
    assert doc["schema"] == checker.JSON_SCHEMA and doc["outcome"] == "CONFORMING"
    assert p.returncode == doc["exit_code"] == 0
    for text in ("at import", "python print", "fd write"):
        assert text in p.stderr
    # issue 23 item 8: nothing written into the working folder
    assert not (tmp_path / ".hypothesis").exists()
    assert sorted(os.listdir(tmp_path)) == ["t.py"] or "__pycache__" in os.listdir(tmp_path)


# -- every option reaches the check ----------------------------------------------------------

def _svd_update(G, boost=0.0):
    from swanref.update import orthogonalized_update
    return (orthogonalized_update(np.asarray(G), "svd") * (1 + boost)).astype(G.dtype)


def test_update_forwards_kwarg_and_the_python_api_takes_the_update_options(tmp_path, capsys):
    f = _file(tmp_path, "import numpy as np\nfrom swanref.update import orthogonalized_update\n"
                        "def f(G, boost=0.0):\n"
                        "    return (orthogonalized_update(np.asarray(G), 'svd') * (1 + boost))"
                        ".astype(G.dtype)\n")
    args = ["update", f + ":f", "--property", "scale_wide"]
    assert _main(args, capsys)[0] == 0
    rc, out, _ = _main(args + ["--kwarg", "boost=0.5"], capsys)
    assert rc == 1                                                  # reaches the target
    cause = next(ln for ln in out.splitlines() if ln.startswith("  cause: "))
    assert "#" not in cause and "1.5" in cause, cause   # the measured ratio, not a template
    rep = checker.check(_svd_update, "update", scale="keller", kwargs={"boost": 0.5},
                        properties=["scale_wide"])
    assert rep.exit_code == 1
    rep = checker.check(_svd_update, "update", scale="moonlight", properties=["scale_wide"])
    assert rep.exit_code == 1 and rep.claim["scale"] == "moonlight"


@pytest.mark.parametrize("op,kw,needle", [
    ("whiten", {"axis": -2}, "--axis"),
    ("whiten", {"scale": "moonlight"}, "--scale"),
    ("grad_norm", {"iters": 3}, "--iters"),
    ("update", {"examples": 5}, "--examples"),
    ("update", {"max_kappa": 10.0}, "--max-kappa"),
])
def test_options_that_do_not_apply_are_refused(op, kw, needle):
    with pytest.raises(checker.UsageError, match=needle):
        checker.check(M.whiten_scipy_polar, op, **kw)


# -- what the target received ----------------------------------------------------------------

def test_mutation_is_seen_through_any_conversion():
    """The object the target receives may not be the NumPy array (a bf16 tensor is a copy;
    a non-contiguous array is made contiguous): what it writes there is still seen."""
    def scales_in_place(G):
        G *= 2.0
        return M.grad_norm_numpy(np.asarray(G))
    rep = checker.check(scales_in_place, "grad_norm", examples=3,
                        properties=["input_not_modified"])
    assert rep.status("input_not_modified") == "FAIL"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("ml_dtypes") is None,
                    reason="needs torch and ml_dtypes")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_torch_in_place_write_fails_in_every_dtype(tmp_path, capsys, dtype):
    f = _file(tmp_path, "def f(G):\n    return G.mul_(2.0)\n")
    rc, out, _ = _main(["grad_norm", f + ":f", "--array-type", "torch", "--dtype", dtype,
                        "--property", "input_not_modified", "--examples", "3"], capsys)
    assert rc == 1 and "FAIL" in out, out


# -- the commands the report prints ----------------------------------------------------------

def _printed_commands(text):
    return [ln[ln.index("swanref check "):].strip() for ln in text.splitlines()
            if "swanref check " in ln and not ln.startswith("swanref check ")]


def test_printed_commands_reproduce_the_check(tmp_path, capsys, monkeypatch):
    """The rerun lines keep --kwarg, --dtype, --timeout, ...: run as printed, the verdicts
    are the ones the report promises."""
    _file(tmp_path, "import numpy as np\n"
                        "def ns(G, steps=1, a=3.4445, b=-4.7750, c=2.0315):\n"
                        "    X = np.asarray(G, dtype=float)\n"
                        "    t = X.shape[-2] > X.shape[-1]\n"
                        "    X = np.swapaxes(X, -1, -2) if t else X\n"
                        "    X = X / (np.linalg.norm(X, axis=(-2, -1), keepdims=True) + 1e-7)\n"
                        "    for _ in range(steps):\n"
                        "        A = X @ np.swapaxes(X, -1, -2)\n"
                        "        X = a * X + (b * A + c * A @ A) @ X\n"
                        "    return (np.swapaxes(X, -1, -2) if t else X).astype(G.dtype)\n",
                  name="ns.py")
    monkeypatch.chdir(tmp_path)
    args = ["whiten", "ns.py:ns", "--kwarg", "steps=5", "--dtype", "float32", "--examples", "3",
            "--timeout", "30", "--array-type", "numpy", "--property", "agrees_with_reference"]
    rc, out, _ = _main(args, capsys)
    assert rc == 1, out
    cmds = _printed_commands(out)
    assert len(cmds) == 2, out         # reproduce one property; the matching preset
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[:2] == ["swanref", "check"]
        assert "--kwarg" in argv and "steps=5" in argv and "--timeout" in argv
        assert argv[argv.index("--array-type") + 1] == "numpy"   # issue 21 item 8 (jax)
        expect = 0 if "--preset" in argv else 1
        got, rerun_out, _ = _main(argv[2:], capsys)
        assert got == expect, (cmd, rerun_out)


def test_python_api_hint_without_a_target_name_is_python():
    rep = checker.check(lambda G: M.__dict__["whiten_frobenius"](G), "whiten", examples=3,
                        properties=["orthonormal_rows"])
    assert rep.exit_code == 1 and rep.command is None
    assert "swanref check" not in "\n".join(rep.summary())


# -- the report: one cause, said once --------------------------------------------------------

def test_one_mistake_is_one_block_with_a_summary_first():
    def refuses_tall(G):
        if G.shape[-2] > G.shape[-1]:
            raise ValueError("tall input is not supported")
        return M.whiten_scipy_polar(G)
    rep = checker.check(refuses_tall, "whiten", examples=10)
    text = rep.table()
    failing = [r for r in rep.results if r.status == "FAIL"]
    assert len(failing) >= 5, text
    assert text.count("ValueError: tall input is not supported") <= 3, text
    assert text.splitlines()[1].startswith("verdict: NOT CONFORMING (exit 1)")
    assert "cause: target raised ValueError: tall input is not supported" in text
    assert "smallest counterexample" in text
    assert len(rep.groups()) == 1, rep.groups()
    assert len(text.splitlines()) < 55, text


def test_returning_a_list_is_one_type_mistake():
    rep = checker.check(lambda G: [swanref.whiten(G)], "whiten", examples=5)
    assert rep.exit_code == 1
    assert [r.status for r in rep.results if r.status != "not-run"] == ["FAIL"]
    assert "returned list of 1 ndarray, not an array" in rep.table()
    assert "return one array" in rep.table()


def test_help_has_no_contradicting_defaults(capsys):
    assert checker.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "default: False" not in out
    for flag in ("--timeout", "--kwarg", "--scale"):
        assert flag in out


@pytest.mark.parametrize("module", ["distributed", "optimizer"])
def test_every_check_sharded_and_check_optimizer_option_has_help(module):
    import importlib
    p = importlib.import_module(f"swanref.verify.{module}").build_parser()
    bare = [a.option_strings for a in p._actions if a.option_strings and not a.help]
    assert not bare, bare


def test_tall_input_is_described_for_every_operator():
    from swanref.verify.properties import CATALOGUE
    (tall,) = [p for p in CATALOGUE if p.name == "tall_input"]
    assert tall.doc.startswith("tall input (m > n) agrees with the reference")


# -- the pytest plugin: the same rule --------------------------------------------------------

def test_the_fixture_is_green_only_on_conforming(request):
    """The fixture of swanref.pytest_plugin (loaded by its entry point, or -p) fails the test
    for an inconclusive check and for a target that exits, as the CLI exits non-zero."""
    if "swanref_check" not in request.fixturenames and not request.config.pluginmanager.hasplugin(
            "swanref"):
        pytest.skip("the swanref pytest plugin is not loaded in this session")
    swanref_check = request.getfixturevalue("swanref_check")

    def two_d_only(G):
        if np.ndim(G) != 2:
            raise ValueError("2-D only")
        return M.grad_norm_numpy(G)
    with pytest.raises(pytest.fail.Exception, match="INCONCLUSIVE"):
        swanref_check(two_d_only, "grad_norm", examples=3, properties=["batched"])

    def exits(G):
        raise SystemExit(0)
    with pytest.raises(pytest.fail.Exception, match="TARGET EXITED"):
        swanref_check(exits, "grad_norm", examples=3)
    assert swanref_check(two_d_only, "grad_norm", examples=3,
                         properties=["shape_and_dtype"]).exit_code == 0


def test_a_jax_target_reports_its_compile_time_apart():
    """Issue 26: the first call per (shape, dtype) of a JAX target traces and compiles; the
    report gives that time apart from the repeats."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    @jax.jit
    def grad_norm(G):
        mu = jnp.mean(G, axis=-1, keepdims=True)
        sd = jnp.std(G, axis=-1, keepdims=True)
        return (G - mu) / jnp.where(sd > 0, sd, 1.0)

    from swanref.verify.checker import check
    report = check(grad_norm, "grad_norm", array_type="jax", shapes="few", examples=3,
                   properties=["agrees_with_reference"])
    hint = [h for h in report.hints if h.startswith("JAX target:")]
    assert len(hint) == 1, report.hints
    assert "signatures: tracing and compilation" in hint[0]
    ran = [r for r in report.results if r.name == "agrees_with_reference"]
    assert ran and ran[0].examples > 0   # the timing wraps the target, the check still runs


# -- a method of an instance as the target ---------------------------------------------------

def test_a_method_of_an_instance_built_with_no_arguments_is_a_target(capsys):
    from corpus import impls
    fn = checker.load_target("corpus.impls:OptimizerWithOrthogonaliser().zeropower")
    G = np.random.default_rng(0).standard_normal((4, 7))
    assert np.array_equal(fn(G, 5), impls.keller_numpy(G, 5))
    rc, out, _ = _main(["whiten", "corpus.impls:OptimizerWithOrthogonaliser().zeropower",
                        "--preset", "muon_ns5", "--dtype", "float32", "--kwarg", "steps=5",
                        "--examples", "2"], capsys)
    assert rc == 0 and "CONFORMING" in out, out
    # a constructor that needs arguments, or a malformed part, is a usage error naming it
    for spec, words in (("corpus.impls:NeedsArguments().zeropower", "NeedsArguments()"),
                        ("corpus.impls:OptimizerWithOrthogonaliser(1).zeropower", "not an "
                         "attribute name")):
        with pytest.raises(checker.UsageError, match=words.replace("(", r"\(").replace(
                ")", r"\)")):
            checker.load_target(spec)
