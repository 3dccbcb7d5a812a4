"""Smoke test of ``swanref bench --goals``: tiny sizes run end to end and every goal is printed with
its status (the plumbing, not the numbers: speed is judged by the benchmark, never in tests)."""

from __future__ import annotations

import json
import re

import pytest

from swanref.backends import cpp as _cpp_backend

pytestmark = pytest.mark.skipif(not _cpp_backend.available(), reason=_cpp_backend.unavailable_reason())


def test_goals_tiny_run(tmp_path, capsys, monkeypatch):
    from swanref.tools import bench

    monkeypatch.setattr(bench, "measure_gemm_peak", lambda dtype: {"scipy_gflops": 1.0, "numpy_gflops": 1.0})
    monkeypatch.setattr(bench, "measure_copy_bandwidth", lambda: {"copy_gbs": 1.0, "copy_new_gbs": 1.0})
    js = tmp_path / "g.json"
    rc = bench.main(["--goals", "--goal-sizes", "24x64", "--goal-gn-sizes", "8x40", "--kappa", "1e3,1e6",
                     "--goal-numpy-sizes", "16x48", "--repeat", "1", "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    goals = [line for line in out.splitlines() if line.startswith("| exact whitening time <= NS10")
             or line.startswith("| GradNorm >= 80%") or line.startswith("| NS10 CPU time <= NumPy")
             or line.startswith("| exact CPU time <= 0.67x")]
    # (float64, float32) x 2 kappas; (float32, float64) x (out=, new); (float64, float32) x (NS, exact)
    assert len(goals) == 2 * 2 + 2 * 2 + 2 * 2
    for line in goals:
        assert re.search(r"\| (met|missed by \d+%) \|$", line), line
    data = json.loads(js.read_text())["cases"][0]
    for r in data["exact"]:
        assert r["err_exact"] <= r["bound"]   # the exact route stays within the spec's bound
    assert all(r["ratio_out"] > 0 and r["ratio_new"] > 0 for r in data["grad_norm"])
    for r in data["vs_numpy"]:  # same iteration on both sides; both exact routes near U V^T
        assert r["ns_rel_diff"] < 1e-3 and r["ratio_ns"] > 0 and r["ratio_exact"] > 0
        assert r["errors"]["cpp_exact"] < 1e-3 and r["errors"]["numpy_svd"] < 1e-3
