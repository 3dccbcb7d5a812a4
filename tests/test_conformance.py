"""swanref conformance: the table, the verdicts on what is installed here (absent packages are
listed as absent, never a failure), the exit status."""
import importlib.util
import math
import pathlib
import shutil
import time

import numpy as np

from swanref.verify.targets import FirstCallTimer
import pytest

from swanref.verify import conformance as C
from swanref.verify import conformance_docs as D


def test_every_entry_names_a_claim_and_an_expected_verdict():
    for e in C.ENTRIES:
        assert C.level_of(e) in ("operator", "update", "optimizer")
        assert e.claim["op"] in ("whiten", "grad_norm", "update", "optimizer")
        assert e.expect in ("CONFORMING", "NOT CONFORMING")
        assert e.why and C.claim_text(e)
        if C.level_of(e) == "update":     # a preset plus overrides, read as the CLI reads it
            assert C.claim_text(e).startswith(f"--preset {e.claim['preset']} --set ")
            assert C.update_claim(e).preset == e.claim["preset"]
    pkgs = {e.package for e in C.ENTRIES}
    assert {"torch", "optax", "pytorch-optimizer", "heavyball", "emerging-optimizers",
            "scipy"} <= pkgs
    for level in ("operator", "update", "optimizer"):   # sharded: the sharded check's table
        assert {e.package for e in C.ENTRIES if C.level_of(e) == level}


def _stored(rows):
    """The stored rows (any environment) of these rows' keys."""
    merged = {(r["level"], r["implementation"], r["claim"]): r for r in D.merge(_stores())}
    return [merged[(r.level, r.function, r.claim)] for r in rows]


def _same_as_stored(rows):
    """A real regeneration agrees with the stored rows: verdict, dtype, and the worst error on
    the same side of its tolerance (the numbers move with the draws and the BLAS build)."""
    for r, s in zip(rows, _stored(rows)):
        assert (r.verdict, r.dtype) == (s["verdict"], s["dtype"]), (r, s)
        if s["worst"] is not None and r.worst is not None:
            assert (r.worst <= r.tolerance) == (s["worst"] <= s["tolerance"]), (r, s)


def test_update_rows_under_claims():
    pytest.importorskip("torch")
    rows = C.run(only=["torch"], level="update")
    assert len(rows) == 3 and all("--preset torch_muon" in r.claim for r in rows)
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    assert "matches compute_dtype='bfloat16'" in rows[2].diagnosis
    assert rows[0].dtype == "bfloat16" and rows[2].cause and not rows[0].cause
    _same_as_stored(rows)


def test_textbook_and_scipy_rows_and_table():
    """Regenerated for real (numpy and scipy are always installed): as stored."""
    rows = C.run(only=["numpy", "scipy"], examples=4)
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    table = C.markdown(rows)
    assert table.splitlines()[0].startswith("| implementation | version | claim | dtype")
    assert "FAIL zero_input" in table
    assert all(math.isfinite(r.worst) for r in rows if r.verdict == "CONFORMING")
    _same_as_stored(rows)


def test_absent_package_is_listed_not_failed():
    e = C.Entry("no-such-dist", "no_such_module_xyz", "f", dict(op="whiten"), lambda: None)
    rows = C.run(entries=[e])
    assert rows[0].verdict == "absent" and rows[0].as_expected


def test_unexpected_verdict_sets_exit_status(monkeypatch, capsys):
    wrong = C.Entry("numpy", "numpy", "G / ||G||_F claimed as polar", dict(op="whiten"),
                    lambda: (lambda G: np.asarray(G) / np.linalg.norm(G)))
    monkeypatch.setattr(C, "ENTRIES", [wrong])
    assert C.main(["--examples", "3"]) == 1
    assert "(unexpected)" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_muon_row():
    rows = C.run(only=["torch"], examples=3, level="operator")
    assert all(r.verdict == r.expected for r in rows), C.markdown(rows)
    assert "batched unsupported" in rows[0].diagnosis


def test_timed_target_splits_first_calls_from_repeats():
    """A JAX row's time: the first call per (shape, dtype) apart from the repeats."""
    calls = []
    timed = FirstCallTimer(lambda G: calls.append(G.shape) or G)
    for shape in [(4, 7), (4, 7), (7, 4), (4, 7)]:
        timed(np.zeros(shape))
    timed(np.zeros((4, 7), dtype=np.float32))
    assert len(calls) == 5 and len(timed.signatures) == 3
    assert timed.first > 0 and timed.rest > 0
    row = C.Row("p", "1", "f", "c", "CONFORMING", "CONFORMING", "", 1.0,
                first_call_seconds=0.5, repeat_seconds=0.25, signatures=3, cpu_seconds=0.75)
    assert row.time_text == ("1.0 s, CPU 0.8 s (first call per shape and dtype 0.5 s for 3 "
                             "shapes, repeats 0.2 s)")


def test_optax_rows_run_jitted_with_their_verdicts():
    pytest.importorskip("optax")
    rows = C.run(only=["optax"], examples=3, level="operator")
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    for r in rows:  # one compilation per probe shape: the jitted target, few distinct shapes
        assert r.signatures is not None and 1 <= r.signatures <= 10, r.signatures
        assert r.first_call_seconds <= r.seconds
        assert 0 < r.cpu_seconds  # the process's CPU time, reported beside the wall time


# -- the docs' tables: rendered from the stored rows, merged over environments --------------

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _stores():
    return [D.load_store(p) for p in sorted((ROOT / "docs" / "data").glob("conformance-py*.json"))]


@pytest.mark.parametrize("document", sorted(D.DOCUMENTS))
def test_docs_tables_are_what_the_renderer_makes_of_the_stored_rows(document):
    """docs/conformance.md and docs/optimizers.md: every generated section is exactly what
    `swanref conformance --markdown DOC --render-only` renders from docs/data/ (no third-party
    package needed): the docs cannot drift from the stored runs."""
    stores = _stores()
    assert {s["environment"]["python"][:4] for s in stores} >= {"3.11", "3.12"}
    text = (ROOT / document).read_text()
    expected = D.render_document(document, stores)
    assert D.generated_sections(text) == expected
    for level in D.DOCUMENTS[document]:
        rows = [r for r in D.merge(stores) if r["level"] == level]
        assert rows and all(r["verdict"] != "absent" for r in rows), level


def test_stored_rows_cover_every_entry_with_versions():
    """Every entry has a stored row (run in some environment), with its package's version."""
    merged = {(r["level"], r["implementation"], r["claim"]): r for r in D.merge(_stores())}
    for e in C.ENTRIES:
        r = merged[(C.level_of(e), e.function, C.claim_text(e))]
        assert r["version"] != "-" and r["expected"] == e.expect, r
    levels = {r["level"] for r in merged.values()}
    assert levels == set(D.LEVELS)
    from swanref.verify.sharded.table import SHARDED_ENTRIES
    sharded = [r for r in merged.values() if r["level"] == "sharded"]
    assert len(sharded) == 3 * len(SHARDED_ENTRIES)       # world sizes 1, 2 and 4
    assert any(r["dtype"].startswith("bfloat16") for r in merged.values()
               if r["level"] in ("update", "optimizer", "sharded"))


def _store(python, rows):
    return {"format": D.FORMAT, "version": D.VERSION,
            "environment": {"python": python, "platform": "x", "packages": {"p": "1"}},
            "commands": {"operator": "swanref conformance"}, "rows": rows}


def _srow(impl, verdict, level="operator"):
    return {"level": level, "implementation": impl, "version": "1", "claim": "c",
            "dtype": "float32", "verdict": verdict, "expected": "CONFORMING", "worst": 1e-6,
            "tolerance": 1e-5, "worst_property": "p", "cause": "", "seconds": 0.1}


def test_merge_takes_each_row_from_the_first_environment_that_ran_it():
    a = _store("3.11.7", [_srow("x", "CONFORMING"), _srow("e", "absent"),
                          _srow("u", "CONFORMING", "update")])
    b = _store("3.12.1", [_srow("e", "NOT CONFORMING"), _srow("x", "error")])
    for order in ([a, b], [b, a]):                    # deterministic whatever the file order
        rows = D.merge(order)
        assert [(r["implementation"], r["verdict"], r["environment"]) for r in rows] == [
            ("x", "CONFORMING", "Python 3.11.7"), ("e", "NOT CONFORMING", "Python 3.12.1"),
            ("u", "CONFORMING", "Python 3.11.7")]
    table = D.render_level(D.merge([a, b]), "operator")
    assert "NOT CONFORMING **(unexpected)**" in table and "1e-06 / 1e-05 (p)" in table


def test_store_keeps_the_other_levels_and_document_sections_are_replaced(tmp_path):
    path = tmp_path / "docs" / "data" / "conformance-py311.json"
    env = {"python": "3.11.7", "platform": "x", "packages": {"p": "1"}}
    D.save_rows(path, [_srow("a", "CONFORMING"), _srow("o", "CONFORMING", "optimizer")],
                ("operator", "optimizer"), env, "swanref conformance")
    D.save_rows(path, [_srow("b", "CONFORMING")], ("operator",), env, "swanref conformance X")
    stored = D.load_store(path)
    assert [r["implementation"] for r in stored["rows"]] == ["b", "o"]
    assert stored["commands"] == {"operator": "swanref conformance X",
                                  "optimizer": "swanref conformance"}
    text = ("a\n<!-- generated by swanref conformance: operator -->\nold\n"
            "<!-- end generated: operator -->\nb\n")
    new = D.update_document(text, {"operator": "| new |"})
    assert D.generated_sections(new) == {"operator": "| new |"} and new.endswith("b\n")
    with pytest.raises(ValueError, match="no generated section 'update'"):
        D.update_document(text, {"update": "x"})


def test_render_only_command_reproduces_the_docs(tmp_path):
    """`swanref conformance --markdown DOC --render-only` on a copy: the docs are unchanged."""
    for rel in ["docs/conformance.md", "docs/optimizers.md"] + [
            str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "data").glob("conformance-*")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert C.main(["--markdown", "docs/conformance.md", "--markdown", "docs/optimizers.md",
                   "--render-only", "--root", str(tmp_path)]) == 0
    for doc in ("docs/conformance.md", "docs/optimizers.md"):
        assert (tmp_path / doc).read_text() == (ROOT / doc).read_text()


def test_command_text_names_no_machine_paths():
    assert C._command(["--markdown", "docs/conformance.md", "--python", "/x/bin/python",
                       "--root", "/tmp/r"]) == \
        "swanref conformance --markdown docs/conformance.md --python PYTHON3.12"


def _hangs(G):
    time.sleep(30)
    return G


def test_timeout_makes_a_hung_implementation_a_timeout_row(capsys):
    """--timeout: a target that never returns is a TIMEOUT row within about the deadline."""
    e = C.Entry("numpy", "numpy", "hangs", dict(op="whiten", method="svd"), lambda: _hangs)
    t0 = time.perf_counter()
    rows = C.run(entries=[e], examples=2, timeout=0.3)
    assert time.perf_counter() - t0 < 10
    assert rows[0].verdict == "TIMEOUT" and not rows[0].as_expected, rows[0].diagnosis
    assert "0.3 s" in rows[0].diagnosis
    slow_build = C.Entry("numpy", "numpy", "slow import", dict(op="whiten"),
                         lambda: _hangs(None))
    assert C.run(entries=[slow_build], timeout=0.2)[0].verdict == "TIMEOUT"
    with pytest.raises(SystemExit) as exc:
        C.main(["--timeout", "-1"])
    assert exc.value.code == 2 and "--timeout takes seconds >= 0" in capsys.readouterr().err


def _table_row(**kw):
    d = dict(implementation="newton_schulz_tp, norm of the local shard", source="NeMo@x f",
             target="real_bugs.py:f", claim="--shard cols --preset p --dtype float32",
             world_size=2, dtype="float32", expected="NOT CONFORMING",
             expected_named="global_norm", named="global_norm", error=0.3, tolerance=1e-5,
             seconds=1.0, note="", verdict="NOT CONFORMING", as_expected=True)
    d.update(kw)
    return d


def test_sharded_level_takes_the_sharded_checks_own_rows(monkeypatch):
    """With swanref.verify.sharded.table present, the sharded rows are its rows: the named
    mistake is part of the verdict, so a rejection for the wrong reason is unexpected."""
    class Table:
        @staticmethod
        def sharded_conformance_rows(timeout=None, log=None):
            return [_table_row(), _table_row(named="norm_scale", as_expected=False),
                    _table_row(world_size=1, expected="CONFORMING", expected_named=None,
                               named="", verdict="CONFORMING", error=1e-6),
                    _table_row(source="torch", note="torch 2.13.0", verdict="absent",
                               named="", as_expected=False)]
    monkeypatch.setattr(C, "sharded_table", Table)
    rows = C.run(level="sharded")
    assert [r.as_expected for r in rows] == [True, False, True, True]
    assert rows[0].verdict == rows[0].expected == "NOT CONFORMING (global_norm)"
    assert rows[1].verdict == "NOT CONFORMING (norm_scale)"
    assert rows[2].claim.endswith("--world-size 1") and rows[2].cause == ""
    assert rows[0].stored()["worst"] == 0.3 and rows[0].version == "NeMo@x f"
    assert "real_bugs.py:f" in rows[0].function and rows[3].version == "-"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        C.main(["--level", "bogus"])
    assert exc.value.code == 2
    assert C.main(["--render-only"]) == 2
    assert C.main(["--markdown", "docs/conformance.md", "--only", "torch"]) == 2
    err = capsys.readouterr().err
    assert "--level takes operator" in err and "--render-only needs --markdown" in err
    assert "drop --only" in err
