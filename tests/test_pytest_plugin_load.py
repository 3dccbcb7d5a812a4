"""The pytest11 entry point of an installed swanref: its name (``swanref``, as in 0.1) and the
four documented command lines, each run by pytest in a subprocess outside the checkout."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CONFORMANCE = '''
import numpy as np


def sinkgd(G, iters=5):
    import swanref
    return swanref.sinkgd_update(G, iters=iters)
'''


def _swanref_entry_points():
    from importlib.metadata import entry_points
    return [ep for ep in entry_points(group="pytest11") if ep.value.startswith("swanref")]


@pytest.fixture
def installed():
    if not _swanref_entry_points():
        pytest.skip("swanref is not installed (no pytest11 entry point)")


def test_entry_point_is_named_swanref(installed):
    """Named as in 0.1; it points at a shim that loads the plugin module through
    ``pytest_plugins`` (so ``-p swanref.pytest_plugin`` finds it already registered)."""
    eps = _swanref_entry_points()
    assert [(ep.name, ep.value) for ep in eps] == [("swanref", "swanref._pytest_entry")]
    shim = eps[0].load()
    assert shim.pytest_plugins == ["swanref.pytest_plugin"]
    assert [n for n in vars(shim) if n.startswith("pytest_") and n != "pytest_plugins"] == []


def _pytest(tmp_path, *args):
    (tmp_path / "conformance.py").write_text(CONFORMANCE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::pytest.PytestAssertRewriteWarning", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [[], ["-p", "swanref.pytest_plugin"]],
                         ids=["plain", "-p swanref.pytest_plugin"])
def test_plugin_loaded(tmp_path, installed, args):
    proc = _pytest(tmp_path, *args, "--swanref-target", "sinkgd_update=conformance:sinkgd",
                   "--collect-only")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "already registered" not in out
    assert "swanref[sinkgd_update:" in proc.stdout  # the plugin made the items


@pytest.mark.parametrize("args", [["-p", "no:swanref"], ["-p", "no:swanref.pytest_plugin"]],
                         ids=["-p no:swanref", "-p no:swanref.pytest_plugin"])
def test_plugin_disabled(tmp_path, installed, args):
    proc = _pytest(tmp_path, *args, "--help")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "--swanref-target" not in proc.stdout
    assert "swanref conformance checks" not in proc.stdout
    # and the option is really unknown, not merely hidden from the help
    proc = _pytest(tmp_path, *args, "--swanref-target", "sinkgd_update=conformance:sinkgd",
                   "--collect-only")
    assert proc.returncode == 4, (proc.stdout + proc.stderr)[-6000:]
    assert "unrecognized arguments: --swanref-target" in proc.stderr
