"""swanref conformance: the table, the verdicts on what is installed here (absent packages are
listed as absent, never a failure), the exit status."""
import importlib.util

import numpy as np
import pytest

from swanref.verify import conformance as C


def test_every_entry_names_a_claim_and_an_expected_verdict():
    for e in C.ENTRIES:
        assert e.claim["op"] in ("whiten", "grad_norm")
        assert e.expect in ("CONFORMING", "NOT CONFORMING")
        assert e.why
    pkgs = {e.package for e in C.ENTRIES}
    assert {"torch", "optax", "pytorch-optimizer", "heavyball", "emerging-optimizers",
            "scipy"} <= pkgs


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
