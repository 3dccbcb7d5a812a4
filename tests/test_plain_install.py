"""A plain install (no extras) runs every subcommand: each ``--help`` and one real check, with
the packages that only extras bring made unimportable (issue 21).  The slower, complete version
-- a fresh venv, ``pip install .`` without extras -- is in ``.ci/run``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: what the extras bring (test, plot, conformance, gpu); never needed by a plain install
OPTIONAL = ("ml_dtypes", "matplotlib", "threadpoolctl", "torch", "jax", "jaxlib", "optax",
            "cupy", "pytest_optimizer", "heavyball", "safetensors", "scipy_openblas32")

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {OPTIONAL!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

PROBE = BLOCKER + """
import contextlib, io, json
from swanref.cli import COMMANDS, main
codes = {}
for name in COMMANDS:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main([name, "--help"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = f"{type(exc).__name__}: {exc}"
    codes[name] = [code, buf.getvalue()[:300]]
print(json.dumps(codes))
"""


def _python(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_the_blocker_blocks():
    p = _python(BLOCKER + "import ml_dtypes")
    assert p.returncode != 0 and "blocked" in p.stderr


def test_every_subcommand_help_without_optional_packages():
    p = _python(PROBE)
    assert p.returncode == 0, p.stderr
    codes = json.loads(p.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in codes.items() if v[0] not in (0, None) or "usage" not in v[1]}
    assert not bad, bad


def test_a_real_check_without_optional_packages():
    p = _python(BLOCKER + "import sys; from swanref.cli import main; sys.exit(main(sys.argv[1:]))",
                "check", "grad_norm", "tests/meta_impls.py:grad_norm_numpy", "--examples", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verdict: CONFORMING" in p.stdout
