"""Smoke test of the CPU benchmark (swanref.tools.bench): a tiny size runs end to end and reports."""

from __future__ import annotations

import json

import pytest

from swanref.backends import cpp as _cpp_backend

pytestmark = pytest.mark.skipif(not _cpp_backend.available(), reason=_cpp_backend.unavailable_reason())


def test_bench_tiny_run(tmp_path, capsys, monkeypatch):
    from swanref.tools import bench

    # keep the peak measurements small: this checks the plumbing, not the numbers
    monkeypatch.setattr(bench, "measure_gemm_peak", lambda dtype: {"scipy_gflops": 1.0, "numpy_gflops": 1.0})
    monkeypatch.setattr(bench, "measure_copy_bandwidth", lambda: {"copy_gbs": 1.0, "copy_new_gbs": 1.0})
    md, js = tmp_path / "b.md", tmp_path / "b.json"
    rc = bench.main(["--sizes", "48x96", "--repeat", "1", "--steps", "3", "--markdown", str(md), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "BLAS threads pinned to 1" in out and "threadpool:" in out
    for name in ("NumPy SVD polar", "scipy.linalg.polar", "swanref whiten_svd", "NumPy eigh-of-Gram route",
                 "swanref whiten_eigh", "NumPy coupled NS", "swanref whiten_newton_schulz", "swanref grad_norm"):
        assert name in out
    data = json.loads(js.read_text())
    assert {c["dtype"] for c in data["cases"]} == {"float64", "float32"}
    rows = {r["method"]: r for r in data["cases"][0]["rows"]}
    assert rows["swanref whiten_svd (refined eigh route)"]["error"] < 1e-12
    assert md.read_text().startswith("# swanref bench")
    # a 48x96 row runs in well under a millisecond: its time must still show digits
    assert "| 0.000 |" not in out


def test_bench_rejects_bad_sizes():
    from swanref.tools import bench

    with pytest.raises(ValueError):
        bench.main(["--sizes", "48by96"])
