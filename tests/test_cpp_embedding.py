"""The standalone C++ build: configure + build + ctest, cmake --install, and the example
consumer in cpp/examples built against the installed CMake package (find_package(swanref)).

Skips (with the reason) when cmake or a C/C++ compiler is missing. With the
`scipy-openblas32` wheel installed (the `test` extra) the build links it and the C API
library, its C test and the C consumer are built too; without it only the header-only parts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

pytestmark = [
    pytest.mark.skipif(CMAKE is None, reason="cmake not found on PATH"),
    pytest.mark.skipif(CXX is None or CC is None, reason="no C/C++ compiler found (CC/CXX, cc/c++)"),
    pytest.mark.skipif(shutil.which("ninja") is None and shutil.which("make") is None,
                       reason="no build tool for CMake (ninja or make)"),
    pytest.mark.skipif(not (ROOT / "cpp" / "examples" / "CMakeLists.txt").exists(), reason="source tree not available"),
]


def _run(cmd, cwd=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _generator():
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def _wheel_cmake_dir():
    """The scipy-openblas32 wheel's CMake directory ('' without the wheel)."""
    try:
        import scipy_openblas32
    except ImportError:
        return ""
    return os.path.join(scipy_openblas32.get_lib_dir(), "cmake", "openblas")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The build as docs/architecture.md gives it: with the wheel, the C API is asked for
    (SWANREF_C_API=ON) and its BLAS copied into the prefix (SWANREF_BUNDLE_BLAS=ON)."""
    base = tmp_path_factory.mktemp("swanref_cmake")
    build, prefix = base / "build", base / "prefix"
    want_c = ["-DSWANREF_C_API=ON", "-DSWANREF_BUNDLE_BLAS=ON"] if _wheel_cmake_dir() else []
    log = _run([CMAKE, "-S", str(ROOT), "-B", str(build), *_generator(), "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
                *want_c, f"-DCMAKE_C_COMPILER={CC}", f"-DCMAKE_CXX_COMPILER={CXX}"])
    _run([CMAKE, "--build", str(build), "--parallel", "2"])
    _run([CMAKE, "--install", str(build)])
    with_blas = "BLAS/LAPACK from" in log
    return {"build": build, "prefix": prefix, "with_blas": with_blas, "log": log, "base": base}


def test_ctest_passes(installed):
    out = _run(["ctest", "--output-on-failure"], cwd=installed["build"])
    assert "100% tests passed" in out, out
    if installed["with_blas"]:
        assert "capi" in out and "core" in out


def test_install_layout(installed):
    prefix = installed["prefix"]
    assert (prefix / "include" / "swanref" / "c_api.h").exists()
    assert (prefix / "include" / "swanref" / "whiten_exact.hpp").exists()
    cfg = list(prefix.glob("lib*/cmake/swanref/swanrefConfig.cmake"))
    assert cfg, "swanrefConfig.cmake not installed"
    if installed["with_blas"]:
        assert list(prefix.glob("lib*/libswanref.so*")), "C API library not installed"


@pytest.fixture(scope="module")
def examples(installed):
    """cpp/examples built against the installed CMake package (find_package(swanref))."""
    build = installed["base"] / "example"
    _run([CMAKE, "-S", str(ROOT / "cpp" / "examples"), "-B", str(build), *_generator(),
          f"-DCMAKE_PREFIX_PATH={installed['prefix']}", f"-DCMAKE_C_COMPILER={CC}", f"-DCMAKE_CXX_COMPILER={CXX}"])
    _run([CMAKE, "--build", str(build)])
    return build


def test_example_consumer_builds_and_runs(installed, examples):
    build = examples
    out = _run([str(build / "consumer")])
    assert "consumer OK" in out
    if installed["with_blas"]:
        assert "whiten_svd orthonormality error" in out and "bad call rejected" in out
        assert "consumer_c OK" in _run([str(build / "consumer_c")])


def test_c_api_header_is_plain_c(installed, tmp_path):
    src = tmp_path / "t.c"
    src.write_text('#include "swanref/c_api.h"\nint main(void) { return SWANREF_OK; }\n')
    _run([CC, "-std=c99", "-Wall", "-Werror", "-I", str(installed["prefix"] / "include"), "-c", str(src),
          "-o", str(tmp_path / "t.o")])


def _c_api_cases(vecdir):
    """Names of the golden-vector cases the C API covers (what golden_vectors.cpp runs)."""
    names = []
    for line in (vecdir / "index.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, op, _dtype, _shape, *_rest, reading = line.split("\t")
        kv = dict(p.split("=", 1) for p in reading.split(";") if "=" in p)
        if (op == "grad_norm" and kv.get("axis") == "-1" or op == "sinkgd_update"
                or op == "whiten" and kv.get("method") in ("svd", "newton_schulz")):
            names.append(name)
    return names


def test_golden_vectors_round_trip_through_the_c_api(installed, examples, tmp_path):
    if not installed["with_blas"]:
        pytest.skip("the C API library needs a linked BLAS/LAPACK (scipy-openblas32 or system)")
    from swanref.verify import vectors
    vecdir = Path(vectors.SHIPPED)
    expected = _c_api_cases(vecdir)
    assert len(expected) >= 30  # grad_norm, whiten (svd, newton_schulz), sinkgd cases
    out = _run([str(examples / "golden_vectors"), str(vecdir), str(tmp_path)])
    assert f"ran {len(expected)}," in out, out
    assert sorted(p.name[:-len(".out.npy")] for p in tmp_path.glob("*.out.npy")) == sorted(expected)
    check = subprocess.run([sys.executable, "-m", "swanref.cli", "check-vectors", str(vecdir),
                            "--outputs", str(tmp_path), "--allow-missing"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 failed" in check.stdout


def test_golden_vectors_check_catches_a_wrong_c_output(installed, examples, tmp_path):
    if not installed["with_blas"]:
        pytest.skip("the C API library needs a linked BLAS/LAPACK (scipy-openblas32 or system)")
    import numpy as np
    from swanref.verify import vectors
    vecdir = Path(vectors.SHIPPED)
    _run([str(examples / "golden_vectors"), str(vecdir), str(tmp_path)])
    victim = sorted(tmp_path.glob("whiten*.out.npy"))[0]
    np.save(victim, np.load(victim) * 1.001)
    check = subprocess.run([sys.executable, "-m", "swanref.cli", "check-vectors", str(vecdir),
                            "--outputs", str(tmp_path), "--allow-missing"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 1, check.stdout + check.stderr


def _configure_only(tmp_path, *args, path_first=None):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    if path_first is not None:
        # PATH alone is not enough: a pyenv shim for cmake (as in CI) puts its own bin first,
        # so the directory is also named as CMAKE_PROGRAM_PATH, which find_program reads before PATH.
        env["PATH"] = os.pathsep.join([str(path_first), env.get("PATH", "")])
        args = (*args, f"-DCMAKE_PROGRAM_PATH={path_first}")
    return subprocess.run([CMAKE, "-S", str(ROOT), "-B", str(tmp_path / "cfg"), *_generator(),
                           "-DSWANREF_BUILD_TESTS=OFF", f"-DCMAKE_C_COMPILER={CC}",
                           f"-DCMAKE_CXX_COMPILER={CXX}", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_asking_for_the_c_api_without_a_blas_is_a_configure_error_with_the_fix(tmp_path):
    """Issue 24: a python3 without the wheel used to give a silent header-only build."""
    # Every interpreter CMake may ask lacks the wheel: the named one, and python3/python on PATH
    # (CI runs in an interpreter that has the wheel, so the PATH ones are shadowed here too).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = "#!/bin/sh\necho 'ModuleNotFoundError: no scipy_openblas32' >&2\nexit 1\n"
    for name in ("python-without-the-wheel", "python3", "python"):
        (bin_dir / name).write_text(fake)
        (bin_dir / name).chmod(0o755)
    no_python = bin_dir / "python-without-the-wheel"
    proc = _configure_only(tmp_path, "-DSWANREF_C_API=ON", "-DSWANREF_BLAS=scipy-openblas32",
                           f"-DPython3_EXECUTABLE={no_python}", path_first=bin_dir)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, text
    assert "the wheel was not found" in text and str(no_python) in text  # what was tried
    assert "-DPython3_EXECUTABLE=" in text and "-DSWANREF_OPENBLAS_DIR=" in text  # the fix


def test_the_c_api_is_found_through_the_named_python(tmp_path):
    if not _wheel_cmake_dir():
        pytest.skip("scipy-openblas32 not installed (the test extra has it)")
    proc = _configure_only(tmp_path, "-DSWANREF_C_API=ON", "-DSWANREF_BLAS=scipy-openblas32",
                           f"-DPython3_EXECUTABLE={sys.executable}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BLAS/LAPACK from scipy-openblas32" in proc.stdout


def test_installed_c_api_carries_its_blas(installed):
    """SWANREF_BUNDLE_BLAS=ON: the library loads the copy in its own directory, so it
    survives the Python environment it was built from."""
    if not installed["with_blas"]:
        pytest.skip("the C API library needs scipy-openblas32 here")
    libdir = next(installed["prefix"].glob("lib*/libswanref.so")).parent
    assert (libdir / "libscipy_openblas.so").exists()
    ldd = shutil.which("ldd")
    if ldd:
        out = _run([ldd, str(libdir / "libswanref.so")])
        line = next(x for x in out.splitlines() if "libscipy_openblas" in x)
        assert str(libdir) in line, line


def test_header_only_core_with_the_applications_blas(installed, tmp_path):
    """Recipe (a) of docs/architecture.md, built as written there: cpp/examples/header_only_blas
    (the docs quote its CMakeLists.txt)."""
    example = ROOT / "cpp" / "examples" / "header_only_blas"
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for line in (example / "CMakeLists.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert line in doc, f"docs/architecture.md does not show {line!r}"
    if not _wheel_cmake_dir():
        pytest.skip("no BLAS to link here (the test uses scipy-openblas32's CMake package)")
    build = tmp_path / "ho"
    _run([CMAKE, "-S", str(example), "-B", str(build), *_generator(),
          f"-DCMAKE_PREFIX_PATH={installed['prefix']}", "-DAPP_BLAS=scipy-openblas32",
          f"-DOpenBLAS_DIR={_wheel_cmake_dir()}", f"-DCMAKE_C_COMPILER={CC}",
          f"-DCMAKE_CXX_COMPILER={CXX}"])
    _run([CMAKE, "--build", str(build)])
    assert "whiten_app OK" in _run([str(build / "whiten_app")])
# -- the C API validates what the Python API validates (issue 23) ------------------------------

#: (function, C keyword values) cells; None for an rtol is swanref's default, which the C API
#: takes as SWANREF_DEFAULT_RTOL
_BAD_AND_GOOD = {
    "grad_norm": [{"eps": v} for v in (-1.0, float("nan"), float("inf"), 0.0, 1e-8, 2.0)],
    "svd": [{"rtol": v} for v in (-0.5, 1.0, 1e308, float("nan"), float("inf"), 0.0, 0.5, None)],
    "eigh": [{"rtol": v} for v in (-0.5, 1.0, 1e308, float("nan"), 0.0, 0.5, None)],
    "newton_schulz": ([{"steps": s, "beta": 0.5} for s in (-1, 0, 3, 100_001)]
                      + [{"steps": 3, "beta": b} for b in (0.0, -0.5, float("nan"),
                                                           float("inf"), 1e-3)]
                      + [{"steps": 3, "beta": 0.5, "scaling": s} for s in ("grad_fro", "none")]),
    "nsds": ([{"steps": s, "beta": 0.4} for s in (-1, 0, 2, 100_001)]
             + [{"steps": 2, "beta": b} for b in (0.0, -0.5, float("nan"), 0.4)]),
    "sinkgd": [{"iters": k} for k in (-1, 0, 5, 100_000, 100_001)],
}
_CELLS = [(f, kw) for f, kws in _BAD_AND_GOOD.items() for kw in kws]
_SCALING = {"gram_fro": 0, "grad_fro": 1, "none": 2}


@pytest.fixture(scope="module")
def capi(installed):
    import ctypes
    if not installed["with_blas"]:
        pytest.skip("the C API library needs a linked BLAS/LAPACK (scipy-openblas32 or system)")
    lib = ctypes.CDLL(str(sorted(installed["prefix"].glob("lib*/libswanref.so*"))[0]))
    lib.swanref_last_error.restype = ctypes.c_char_p
    return lib


def _python_call(f, kw, G):
    import swanref
    if f == "grad_norm":
        return swanref.grad_norm(G, eps=kw["eps"], backend="cpp")
    if f in ("svd", "eigh"):
        return swanref.whiten(G, f, rank_rtol=kw["rtol"], backend="cpp")
    if f == "sinkgd":
        return swanref.sinkgd_update(G, iters=kw["iters"], backend="cpp")
    return swanref.whiten(G, f, steps=kw["steps"], beta=kw["beta"],
                          scaling=kw.get("scaling", "gram_fro"), backend="cpp")


def _c_call(lib, f, kw, G):
    import ctypes
    import numpy as np
    out = np.zeros_like(G)
    ptr = ctypes.POINTER(ctypes.c_double)
    args = [G.ctypes.data_as(ptr), out.ctypes.data_as(ptr), ctypes.c_int64(1),
            ctypes.c_int64(G.shape[0]), ctypes.c_int64(G.shape[1])]
    if f == "grad_norm":
        st = lib.swanref_grad_norm_f64(*args, ctypes.c_double(kw["eps"]))
    elif f in ("svd", "eigh"):
        r = -1.0 if kw["rtol"] is None else kw["rtol"]  # SWANREF_DEFAULT_RTOL
        st = getattr(lib, f"swanref_whiten_{f}_f64")(*args, ctypes.c_double(r))
    elif f == "sinkgd":
        st = lib.swanref_sinkgd_f64(*args, ctypes.c_int64(kw["iters"]))
    else:
        st = getattr(lib, f"swanref_whiten_{f}_f64")(
            *args, ctypes.c_int64(kw["steps"]), ctypes.c_double(kw["beta"]),
            ctypes.c_int(_SCALING[kw.get("scaling", "gram_fro")]))
    return st, out


@pytest.mark.parametrize("f,kw", _CELLS, ids=[f"{f}-{kw}" for f, kw in _CELLS])
def test_c_api_validates_and_defaults_as_the_python_api(capi, f, kw):
    """Each cell: the Python API raises ValueError exactly when the C API returns
    SWANREF_INVALID_ARGUMENT (1); where both run, the results agree (the C defaults are the
    Python ones). The input is rank 1 up to rounding, so a rank tolerance of 0 differs."""
    import numpy as np
    G = np.array([[0.1, 0.2, 0.3], [0.1 * 3, 0.2 * 3, 0.3 * 3 + 1e-17]])
    try:
        want, py_error = _python_call(f, kw, G), None
    except ValueError as exc:
        want, py_error = None, exc
    st, out = _c_call(capi, f, kw, G)
    if py_error is not None:
        assert st == 1, f"Python: {py_error}; C status {st}"
        assert capi.swanref_last_error()
    else:
        assert st == 0, capi.swanref_last_error()
        tol = 1e-6 if f == "eigh" else 1e-12  # eigh: kappa^2 eps on the kept direction
        np.testing.assert_allclose(out, want, rtol=0, atol=tol)
