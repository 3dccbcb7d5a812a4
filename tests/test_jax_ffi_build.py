"""The build switch of the JAX FFI module (CMakeLists.txt, SWANREF_JAX): configure runs only.

AUTO skips the module when the build's Python cannot import jax (pip's isolated build: the
default install stays as light as before), ON fails with the command to use, OFF never looks.
SWANREF_JAX_INCLUDE_DIR (the user's jax.ffi.include_dir()) builds it without jax in the build
environment. A Python that cannot import jax is made by a ``jax`` package on PYTHONPATH that
raises.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")

needs_cmake = [
    pytest.mark.skipif(CMAKE is None, reason="cmake not found on PATH"),
    pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                       reason="no C++ compiler"),
]


def _configure(tmp_path, value, *extra):
    pybind11 = pytest.importorskip("pybind11")
    fake = tmp_path / "nojax" / "jax"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('jax hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    build = tmp_path / f"build-{value}-{len(extra)}"
    return subprocess.run(
        [CMAKE, "-S", str(ROOT), "-B", str(build), "-DSKBUILD=ON", f"-DSWANREF_JAX={value}", *extra,
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
        capture_output=True, text=True, env=env, timeout=300)


@needs_cmake[0]
@needs_cmake[1]
def test_auto_skips_and_on_fails_without_jax(tmp_path):
    auto = _configure(tmp_path, "AUTO")
    assert auto.returncode == 0, auto.stderr
    assert "JAX FFI module not built" in auto.stdout
    on = _configure(tmp_path, "ON")
    assert on.returncode != 0
    assert "SWANREF_JAX=ON needs jax" in on.stderr and "--no-build-isolation" in on.stderr


@needs_cmake[0]
@needs_cmake[1]
def test_the_include_dir_builds_without_jax_in_the_build_environment(tmp_path):
    """docs/jax.md's one command: pip's isolated build cannot import jax, the user's
    jax.ffi.include_dir() passed as SWANREF_JAX_INCLUDE_DIR builds the module all the same; a
    directory without the FFI headers fails the configure with the command to use."""
    jax = pytest.importorskip("jax")
    include = jax.ffi.include_dir()
    good = _configure(tmp_path, "AUTO", f"-DSWANREF_JAX_INCLUDE_DIR={include}")
    assert good.returncode == 0, good.stderr
    assert f"building the JAX FFI module (headers: {include})" in good.stdout
    bad = _configure(tmp_path, "AUTO", f"-DSWANREF_JAX_INCLUDE_DIR={tmp_path}")
    assert bad.returncode != 0
    assert "has no xla/ffi/api/ffi.h" in bad.stderr
    assert "SWANREF_JAX_INCLUDE_DIR" in " ".join(bad.stderr.split())


def test_without_the_module_the_error_names_the_build_command(monkeypatch):
    from swanref.backends import jax_ffi
    monkeypatch.setattr(jax_ffi, "_jax_ffi", None)
    monkeypatch.setattr(jax_ffi, "_registered", False)
    assert not jax_ffi.available()
    with pytest.raises(RuntimeError) as err:
        jax_ffi.register()
    assert jax_ffi.BUILD_COMMAND in str(err.value)


def test_the_docs_give_the_build_command_the_error_names():
    from swanref.backends import jax_ffi
    text = (ROOT / "docs" / "jax.md").read_text()
    assert f"```\n{jax_ffi.BUILD_COMMAND}\n```" in text
