"""The tree passes the project's lint configuration ([tool.ruff] in pyproject.toml:
pyflakes-level checks: unused and undefined names, syntax errors)."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    if (ROOT / "pyproject.toml").is_file() is False:
        pytest.skip("not run from a source checkout")
    try:
        import ruff  # noqa: F401
        cmd = [sys.executable, "-m", "ruff"]
    except ImportError:
        if shutil.which("ruff") is None:
            pytest.skip("ruff is not installed (it is in the test extra)")
        cmd = ["ruff"]
    r = subprocess.run([*cmd, "check", "--output-format", "concise", "swanref", "tests"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
