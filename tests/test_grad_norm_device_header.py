"""The GradNorm row header ``swanref/device/grad_norm_row.hpp``, compiled for the host.

The header is the one algorithm source of GradNorm: the CuPy backend compiles it with NVRTC and
the C++ core (``swanref/grad_norm.hpp``) drives it on the CPU. Here it is compiled on its own
(no other swanref header) by the host C++ compiler, run with its serial execution policy at
several chunk widths (W = 1 with a strided row, and the host's vector widths with and without a
tail), and checked against the NumPy reference within the spec's bound (section 8.1), on rows
that exercise every branch: ordinary, offset, constant, near the overflow threshold,
subnormal, and eps that dominates a tiny row. The C++ core must agree with the header to a few
ulps (it is the same code with another execution policy).

Skips when no C++ compiler is found.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from swanref.backends import reference
from swanref.spec.tolerance import grad_norm_tolerance

ROOT = pathlib.Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "cpp" / "include"
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler found (CXX, c++, g++, clang++)")

# Reads rows (float32 or float64, C order) from a file, standardises each with the header's
# grad_norm_row<W> under SerialExec (or the GPU's step order), appends the result to a file, for
# each width asked for. W = 1 reads every other entry of a buffer twice as long (a strided row).
PROGRAM = r"""
#include <swanref/device/grad_norm_row.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// The GPU's order of the steps (prescale first), run serially.
struct PrescaleFirstExec : swanref::device::SerialExec {
  static constexpr bool prescale_first = true;
};

template <int W, class T>
int run(long rows, long n, T eps, const char* src, const char* dst, bool prescale_first) {
  std::vector<T> x(rows * n), out(rows * n), work(n), strided(2 * n);
  FILE* f = std::fopen(src, "rb");
  if (!f || std::fread(x.data(), sizeof(T), x.size(), f) != x.size()) return 2;
  std::fclose(f);
  std::memset(out.data(), 0xff, sizeof(T) * out.size());  // NaN: every entry must be written
  swanref::device::SerialExec ex;
  PrescaleFirstExec pex;
  for (long r = 0; r < rows; ++r) {
    const T* row = x.data() + r * n;
    if (prescale_first) {
      swanref::device::grad_norm_row<W>(pex, row, 1, out.data() + r * n, work.data(), n, eps);
    } else if (W == 1) {
      for (long j = 0; j < n; ++j) strided[2 * j] = row[j], strided[2 * j + 1] = T(-1e30);
      swanref::device::grad_norm_row_serial(strided.data(), 2, out.data() + r * n, work.data(), n, eps);
    } else {
      swanref::device::grad_norm_row<W>(ex, row, 1, out.data() + r * n, work.data(), n, eps);
    }
  }
  f = std::fopen(dst, "ab");
  if (!f || std::fwrite(out.data(), sizeof(T), out.size(), f) != out.size()) return 3;
  std::fclose(f);
  return 0;
}

// bfloat16 rows (16-bit words) in and out, float32 arithmetic, in the GPU's order of the steps:
// the storage type beside the compute type that the CuPy backend uses for bfloat16 tensors.
template <int W>
int run_bf16(long rows, long n, float eps, const char* src, const char* dst) {
  using S = swanref::device::bf16_storage;
  std::vector<S> x(rows * n), out(rows * n);
  std::vector<float> work(n);
  FILE* f = std::fopen(src, "rb");
  if (!f || std::fread(x.data(), sizeof(S), x.size(), f) != x.size()) return 2;
  std::fclose(f);
  std::memset(out.data(), 0xff, sizeof(S) * out.size());  // NaN words: every entry must be written
  PrescaleFirstExec pex;
  for (long r = 0; r < rows; ++r)
    swanref::device::grad_norm_row<W>(pex, x.data() + r * n, 1, out.data() + r * n, work.data(), n, eps);
  f = std::fopen(dst, "ab");
  if (!f || std::fwrite(out.data(), sizeof(S), out.size(), f) != out.size()) return 3;
  std::fclose(f);
  return 0;
}

int one(bool single, int w, bool p, long rows, long n, double eps, const char* src, const char* dst);

int main(int argc, char** argv) {
  if (argc != 8) return 1;
  const bool single = std::strcmp(argv[1], "float32") == 0;
  const long rows = std::atol(argv[3]), n = std::atol(argv[4]);
  const double eps = std::atof(argv[5]);
  if (std::strcmp(argv[1], "bfloat16") == 0) {  // widths 1 and 4, as the GPU kernels
    for (char* tok = std::strtok(argv[2], ","); tok; tok = std::strtok(nullptr, ",")) {
      const int w = std::atoi(tok);
      const int rc = w == 1 ? run_bf16<1>(rows, n, float(eps), argv[6], argv[7])
                   : w == 4 ? run_bf16<4>(rows, n, float(eps), argv[6], argv[7]) : 4;
      if (rc != 0) return rc;
    }
    return 0;
  }
  // argv[2]: comma-separated widths, each result appended to the output file; a negative width:
  // the prescale-first order at that width
  for (char* tok = std::strtok(argv[2], ","); tok; tok = std::strtok(nullptr, ",")) {
    const int wp = std::atoi(tok);
    const int rc = one(single, wp < 0 ? -wp : wp, wp < 0, rows, n, eps, argv[6], argv[7]);
    if (rc != 0) return rc;
  }
  return 0;
}

int one(bool single, int w, bool p, long rows, long n, double eps, const char* src, const char* dst) {
  if (single) {
    if (w == 1) return run<1, float>(rows, n, float(eps), src, dst, p);
    if (w == 4) return run<4, float>(rows, n, float(eps), src, dst, p);
    if (w == 16) return run<16, float>(rows, n, float(eps), src, dst, p);
  } else {
    if (w == 1) return run<1, double>(rows, n, eps, src, dst, p);
    if (w == 2) return run<2, double>(rows, n, eps, src, dst, p);
    if (w == 8) return run<8, double>(rows, n, eps, src, dst, p);
  }
  return 4;
}
"""

# the chunk widths of the GPU (1, 16 bytes) and of the host (64 bytes); negative: the GPU's order of
# the steps (Exec::prescale_first) at that width, run serially
WIDTHS = {np.float32: (1, 4, 16, -4, -16), np.float64: (1, 2, 8, -2, -8)}
HOST_WIDTH = {np.float32: 16, np.float64: 8}  # grad_norm.hpp: 64 bytes of lanes


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    d = tmp_path_factory.mktemp("grad_norm_header")
    src = d / "grad_norm_header.cpp"
    src.write_text(PROGRAM)
    exe = d / "grad_norm_header"
    # -Wall -Werror: the header must compile cleanly on its own; -fopenmp-simd as the CMake
    # target swanref::core passes it (its lane loops); -ffp-contract=off: no FMA contraction, so
    # the comparison with the C++ core below is of the same operations.
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Werror", "-fopenmp-simd", "-ffp-contract=off", f"-I{INCLUDE}",
           str(src), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    return exe


def run_header(exe, x, widths, eps, tmp_path, dtype_name=None):
    """The header's result for each width in ``widths`` (one process for all); ``dtype_name``
    'bfloat16': x holds bfloat16 words (uint16)."""
    x = np.ascontiguousarray(x)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    x.tofile(src)
    dst.unlink(missing_ok=True)
    rows, n = x.shape
    res = subprocess.run([str(exe), dtype_name or x.dtype.name, ",".join(map(str, widths)), str(rows),
                          str(n), repr(float(eps)), str(src), str(dst)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return np.fromfile(dst, dtype=x.dtype).reshape((len(widths),) + x.shape)


def to_bfloat16_words(x32):
    """float32 -> bfloat16 words, rounding to nearest even (PyTorch's conversion; finite x)."""
    u = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.mark.parametrize("n", [1, 17, 132])
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_bfloat16_storage_is_the_float32_result_rounded_once(program, tmp_path, n, eps):
    """bfloat16 words in and out (the GPU's storage type for bfloat16 tensors): bitwise the
    float32 computation of the widened rows, in the same order of steps, rounded once."""
    words = to_bfloat16_words(rows_for(np.float32, n)[[0, 1, 2, 3, 6, 8, 9]])
    wide = (words.astype(np.uint32) << 16).view(np.float32)   # exact
    got = run_header(program, words, [1, 4], eps, tmp_path, "bfloat16")
    f32 = run_header(program, wide, [-1, -4], eps, tmp_path)
    for w, mine, ref in zip((1, 4), got, f32):
        assert np.all(np.isfinite(ref)), w
        np.testing.assert_array_equal(mine, to_bfloat16_words(ref), err_msg=f"width {w}")


def rows_for(dtype, n):
    """Rows of length n that take every branch of the row algorithm."""
    rng = np.random.default_rng(n)
    fi = np.finfo(dtype)
    g = rng.standard_normal((10, n))
    rows = [
        g[0],                                   # ordinary
        1e4 + g[1],                             # large offset: the shift removes it
        np.full(n, 3.0),                        # constant -> exactly zero
        np.where(np.arange(n) == n // 2, 1.0, 0.0),  # one spike
        np.clip(g[2], -7, 7) / 8 * float(fi.max),             # near overflow: d or sum(d) overflows -> prescaled
        np.full(n, float(fi.max)) * np.where(np.arange(n) % 2, 1, -1),  # +-max: d overflows
        g[3] * float(fi.smallest_subnormal) * 64,   # subnormal rows
        g[4] * 1e-30,                           # tiny row (float32: eps' overflows with eps > 0)
        np.abs(g[5]) * 1e20,                    # positive, large
        g[6] * 2.0**-60 + 1.0,                  # deviations far below the entries
    ]
    return np.stack(rows).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 133])
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_header_matches_reference(program, tmp_path, dtype, n, eps):
    x = rows_for(dtype, n)
    ref = reference.grad_norm(x.astype(np.float64), eps)   # exact enough to judge either dtype
    tol = grad_norm_tolerance(n, dtype)
    outs = run_header(program, x, WIDTHS[dtype], eps, tmp_path)
    for width, out in zip(WIDTHS[dtype], outs):  # n % width != 0 takes the tail loops
        assert out.dtype == dtype and np.all(np.isfinite(out)), width
        err = np.abs(out.astype(np.float64) - ref) / (1 + np.abs(ref))
        assert np.max(err) <= tol, (width, int(np.argmax(np.max(err, axis=1))), float(np.max(err)), tol)
        # an exactly constant row is exactly zero, for every eps
        assert np.all(out[2] == 0), width


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_core_runs_the_header(program, tmp_path, dtype):
    """The C++ core is the header under another execution policy: same values to rounding."""
    core = pytest.importorskip("swanref._core")
    x = rows_for(dtype, 133)
    for eps in (0.0, 1e-8):
        mine = run_header(program, x, [HOST_WIDTH[dtype]], eps, tmp_path)[0]
        theirs = core.grad_norm(x, eps)
        ulp = np.finfo(dtype).eps
        np.testing.assert_array_less(np.abs(theirs.astype(np.float64) - mine) / (1 + np.abs(mine)), 4 * ulp)
