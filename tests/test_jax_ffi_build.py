"""The build switch of the JAX FFI module (CMakeLists.txt, SWANREF_JAX): configure runs only.

AUTO skips the module when the build's Python cannot import jax (pip's isolated build: the
default install stays as light as before), ON fails with the command to use, OFF never looks.
A Python that cannot import jax is made by a ``jax`` package on PYTHONPATH that raises.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
pybind11 = pytest.importorskip("pybind11")

pytestmark = [
    pytest.mark.skipif(CMAKE is None, reason="cmake not found on PATH"),
    pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                       reason="no C++ compiler"),
]


def _configure(tmp_path, value):
    fake = tmp_path / "nojax" / "jax"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('jax hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    build = tmp_path / f"build-{value}"
    return subprocess.run(
        [CMAKE, "-S", str(ROOT), "-B", str(build), "-DSKBUILD=ON", f"-DSWANREF_JAX={value}",
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
        capture_output=True, text=True, env=env, timeout=300)


def test_auto_skips_and_on_fails_without_jax(tmp_path):
    auto = _configure(tmp_path, "AUTO")
    assert auto.returncode == 0, auto.stderr
    assert "JAX FFI module not built" in auto.stdout
    on = _configure(tmp_path, "ON")
    assert on.returncode != 0
    assert "SWANREF_JAX=ON needs jax" in on.stderr and "--no-build-isolation" in on.stderr
