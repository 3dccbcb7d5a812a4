"""One version source: cpp/include/swanref/version.hpp.

CMake parses it for project(VERSION), scikit-build-core's regex provider for the package
metadata (pyproject.toml), and swanref._core reports the string built from it; swanref's
__version__ is the installed metadata. All of them must agree.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import swanref

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "cpp" / "include" / "swanref" / "version.hpp"

pytestmark = pytest.mark.skipif(not HEADER.exists(), reason="source tree not available")


def header_version() -> str:
    text = HEADER.read_text()
    parts = [re.search(rf"^#define SWANREF_VERSION_{k} (\d+)$", text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    assert all(parts), "version.hpp must define SWANREF_VERSION_MAJOR/MINOR/PATCH"
    return ".".join(p.group(1) for p in parts)


def test_python_versions_match_the_header():
    v = header_version()
    assert importlib.metadata.version("swanref") == v
    assert swanref.__version__ == v


def test_compiled_core_reports_the_header_version():
    try:
        from swanref import _core
    except ImportError:
        pytest.skip("swanref._core not built")
    assert _core.__version__ == header_version()
    # the spec version moves with docs/spec.md, separately from releases, in both languages
    assert _core.spec_version == swanref.SPEC_VERSION


def test_pyproject_reads_the_version_from_the_header():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    meta = cfg["tool"]["scikit-build"]["metadata"]["version"]
    assert meta["provider"] == "scikit_build_core.metadata.regex"
    assert (ROOT / meta["input"]).resolve() == HEADER.resolve()
    # the provider's own rule applied to the header gives the header's version
    match = re.search(meta["regex"], HEADER.read_text(), re.MULTILINE)
    assert match is not None
    assert meta.get("result", "{value}").format(*match.groups(), **match.groupdict()) == header_version()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found on PATH")
def test_cmake_project_version_is_the_header_version(tmp_path):
    # configure only (no BLAS lookup, no tests); the package version file is written at configure time
    proc = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), "-DSWANREF_BLAS=none",
                           "-DSWANREF_BUILD_TESTS=OFF"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No CMAKE_CXX_COMPILER could be found" in proc.stderr:
        pytest.skip("no C++ compiler for CMake")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (tmp_path / "swanrefConfigVersion.cmake").read_text()
    m = re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', text)
    assert m and m.group(1) == header_version()
