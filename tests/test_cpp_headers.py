"""Each public C++ header compiles on its own (includes what it uses), and the C API header is
plain C: a one-line translation unit per header, syntax only, with the system compiler and the
flags the CMake target swanref::core gives its users (C++17, -fopenmp-simd)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "cpp" / "include"
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

pytestmark = pytest.mark.skipif(not INCLUDE.is_dir(), reason="source tree not available")

HEADERS = sorted(p.relative_to(INCLUDE).as_posix() for p in (INCLUDE / "swanref").rglob("*.hpp"))


def _compile(compiler: str, flags: list[str], header: str, suffix: str, tmp: Path) -> tuple[str, int, str]:
    src = tmp / (re.sub(r"[^A-Za-z0-9]", "_", header) + suffix)
    src.write_text(f'#include "{header}"\n')
    proc = subprocess.run([compiler, *flags, "-fsyntax-only", "-I", str(INCLUDE), str(src)],
                          capture_output=True, text=True, timeout=300)
    return header, proc.returncode, proc.stderr


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (CXX, c++)")
def test_every_public_header_compiles_on_its_own(tmp_path):
    assert len(HEADERS) >= 15, HEADERS
    flags = ["-x", "c++", "-std=c++17", "-fopenmp-simd", "-Wall", "-Wextra"]
    jobs = [(CXX, flags, h, ".cpp") for h in HEADERS] + [(CXX, flags, "swanref/c_api.h", ".cpp")]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda j: _compile(*j, tmp_path), jobs))
    failed = {h: err for h, rc, err in results if rc != 0}
    assert not failed, "\n\n".join(f"{h}:\n{err}" for h, err in failed.items())


@pytest.mark.skipif(CC is None, reason="no C compiler (CC, cc)")
def test_c_api_header_is_c99(tmp_path):
    header, rc, err = _compile(CC, ["-x", "c", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"],
                               "swanref/c_api.h", ".c", tmp_path)
    assert rc == 0, err


def test_umbrella_header_includes_every_public_header():
    """swanref/swanref.hpp is "everything of the C++ core": every header but the ones that are
    not core API (the BLAS linker glue, the C API, device kernels included by their host header,
    the bindings' watchdog: a process deadline on a thread of its own, which would make every
    embedder link a thread library)."""
    text = (INCLUDE / "swanref" / "swanref.hpp").read_text()
    included = set(re.findall(r'#include "(swanref/[^"]+)"', text))
    expected = {h for h in HEADERS if h != "swanref/swanref.hpp" and h != "swanref/blas_linked.hpp"
                and h != "swanref/watchdog.hpp" and not h.startswith("swanref/device/")}
    assert expected <= included, sorted(expected - included)
