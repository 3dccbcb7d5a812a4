"""swanref conformance: the table, the verdicts on what is installed here (absent packages are
listed as absent, never a failure), the exit status."""
import importlib.util

import numpy as np
import pytest

from swanref.verify import conformance as C


def test_every_entry_names_a_claim_and_an_expected_verdict():
    for e in C.ENTRIES:
        assert e.claim["op"] in ("whiten", "grad_norm", "update")
        assert (e.claim["op"] == "update") == ("claim" in e.claim)
        assert e.expect in ("CONFORMING", "NOT CONFORMING")
        assert e.why
    pkgs = {e.package for e in C.ENTRIES}
    assert {"torch", "optax", "pytorch-optimizer", "heavyball", "emerging-optimizers",
            "scipy"} <= pkgs


def test_update_rows_under_claims():
    pytest.importorskip("torch")
    rows = C.run(only=["torch"], level="update")
    assert len(rows) == 3 and all("update preset=torch_muon" in r.claim for r in rows)
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    assert "matches compute_dtype='bfloat16'" in rows[2].diagnosis


def test_textbook_and_scipy_rows_and_table():
    rows = C.run(only=["numpy", "scipy"], examples=4)
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    table = C.markdown(rows)
    assert table.splitlines()[0].startswith("| package | version | function | claim | verdict")
    assert "FAIL zero_input" in table and "advisory offset_robustness" in table


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
    rows = C.run(only=["torch"], examples=3)
    assert all(r.verdict == r.expected for r in rows), C.markdown(rows)
    assert "batched unsupported" in rows[0].diagnosis


def test_timed_target_splits_first_calls_from_repeats():
    """A JAX row's time: the first call per (shape, dtype) apart from the repeats."""
    calls = []
    timed = C._Timed(lambda G: calls.append(G.shape) or G)
    for shape in [(4, 7), (4, 7), (7, 4), (4, 7)]:
        timed(np.zeros(shape))
    timed(np.zeros((4, 7), dtype=np.float32))
    assert len(calls) == 5 and len(timed.signatures) == 3
    assert timed.first > 0 and timed.rest > 0
    row = C.Row("p", "1", "f", "c", "CONFORMING", "CONFORMING", "", 1.0,
                first_call_seconds=0.5, repeat_seconds=0.25, signatures=3)
    assert "first call per shape and dtype 0.5 s for 3 shapes, repeats 0.2 s" in \
        C.markdown([row])


def test_optax_rows_run_jitted_with_their_verdicts():
    pytest.importorskip("optax")
    rows = C.run(only=["optax"], examples=3)
    assert [r.verdict for r in rows] == [r.expected for r in rows], C.markdown(rows)
    for r in rows:  # one compilation per probe shape: the jitted target, few distinct shapes
        assert r.signatures is not None and 1 <= r.signatures <= 10, r.signatures
        assert r.first_call_seconds <= r.seconds
