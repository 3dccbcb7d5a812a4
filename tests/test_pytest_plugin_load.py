"""The documented plugin commands work on an installed swanref, with or without ``-p``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFORMANCE = '''
import numpy as np


def sinkgd(G, iters=5):
    import swanref
    return swanref.sinkgd_update(G, iters=iters)
'''


def test_entry_point_is_named_after_its_module():
    """``-p swanref.pytest_plugin`` is then a no-op where the entry point already loaded it."""
    from importlib.metadata import entry_points
    eps = [ep for ep in entry_points(group="pytest11") if ep.value == "swanref.pytest_plugin"]
    if not eps:
        pytest.skip("swanref is not installed (no pytest11 entry point)")
    assert [ep.name for ep in eps] == ["swanref.pytest_plugin"]


@pytest.mark.parametrize("explicit", [False, True], ids=["plain", "with -p"])
def test_plugin_command_line(tmp_path, explicit):
    from importlib.metadata import entry_points
    installed = any(ep.value == "swanref.pytest_plugin" for ep in entry_points(group="pytest11"))
    if not explicit and not installed:
        pytest.skip("without the entry point the plugin needs -p")
    (tmp_path / "conformance.py").write_text(CONFORMANCE)
    args = ["-p", "swanref.pytest_plugin"] if explicit else []
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args, "--swanref-target", "sinkgd_update=conformance:sinkgd",
                           "--collect-only", "-W", "ignore::pytest.PytestAssertRewriteWarning"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "already registered" not in proc.stdout + proc.stderr
    assert "swanref[sinkgd_update:" in proc.stdout  # the plugin made the items
