"""The README's main job (``swanref report``) and the CLI dispatcher."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from swanref import cli
from swanref.tools import report
from swanref.tools.cases import default_cases


def test_report_passes_on_every_cpu_backend_and_covers_the_regimes():
    out = io.StringIO()
    assert report.run(stream=out, as_json=True) == 0
    data = json.loads(out.getvalue())
    assert data["failed"] == 0 and data["passed"] > 50
    cases = {r["case"] for r in data["records"]}
    assert {"well_conditioned", "ill_conditioned", "rank_deficient", "tall", "batched",
            "zero"} <= cases
    ops = {r["op"].split("[")[0] for r in data["records"]}
    assert ops == {"grad_norm", "whiten"}


def test_report_fails_when_an_operator_is_wrong(monkeypatch):
    from swanref.backends import reference
    real = reference.whiten_svd
    monkeypatch.setattr(reference, "whiten_svd",
                        lambda G, rtol: real(G, rtol) * np.float64(1 + 1e-6).astype(G.dtype))
    out = io.StringIO()
    assert report.run(backends=["reference"], stream=out) == 1
    assert "FAIL" in out.getvalue()


def test_cases_are_deterministic():
    a, b = default_cases(), default_cases()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.G, y.G)


def test_cli_usage_and_errors(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "report" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0


def test_console_script_runs_report():
    proc = subprocess.run([sys.executable, "-m", "swanref.cli", "report", "--backend",
                           "reference"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "0 failed" in proc.stdout


def test_report_rejects_unavailable_backend():
    from swanref.backends import registry as _backends
    if _backends.is_available("cupy"):
        pytest.skip("cupy is available here")
    with pytest.raises(SystemExit) as info:
        report.main(["--backend", "cupy"])
    assert info.value.code == 2
