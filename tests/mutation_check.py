"""Mutation check: each spec test must catch plausible mistakes.

Run ``python tests/mutation_check.py`` from the repository root.  It copies ``swanref/`` and
``tests/`` into a temporary folder, breaks the copy of the NumPy reference in one plausible way
at a time, runs the spec tests of the reference backend against that copy, and prints which test
caught each mutation (every line must show a FAILED test; the exit status is 1 otherwise).  The
checkout is never written, so a killed run leaves nothing behind but its temporary folder.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
REF, OPS = "swanref/backends/reference.py", "swanref/ops.py"
TESTS = ["tests/test_grad_norm.py", "tests/test_whiten_exact.py", "tests/test_newton_schulz.py",
         "tests/test_swan_sinkgd.py", "tests/test_input_policy.py", "tests/test_tolerance_model.py"]

MUTATIONS = [
    (REF, "var = np.mean(centred * centred, axis=-1, keepdims=True)",
     "var = np.sum(centred * centred, axis=-1, keepdims=True) / max(G.shape[-1] - 1, 1)",
     "gradnorm ddof=1"),
    (REF, "centred = d - d.mean(axis=-1, keepdims=True)", "centred = d", "gradnorm no centring"),
    (REF, "out = np.where(zero, 0, centred / np.where(zero, 1, std))", "out = centred / std",
     "gradnorm NaN on constant rows"),
    (REF, "keep = s > sigma_rtol * s[..., :1]", "keep = s >= 0", "svd full completion"),
    (REF, "            Y, Z = b * (Y @ T), b * (T @ Z)",
     "            Y = b * (Y @ T); Z = b * (3 * eye - Z @ Y) @ Z", "NS uses new Y"),
    (REF, "        return (Z @ Gs / np.sqrt(c)).astype(dtype, copy=False)",
     "        return (Z @ Gs).astype(dtype, copy=False)", "NS no output rescale"),
    (REF, "        X = _normalise_lines(X, -1, np.sqrt(n))\n        X = _normalise_lines(X, -2, np.sqrt(m))",
     "        X = _normalise_lines(X, -2, np.sqrt(m))\n        X = _normalise_lines(X, -1, np.sqrt(n))",
     "sinkgd columns first"),
    (REF, "    keep = lam > lambda_rtol * lam[..., -1:]", "    keep = lam > 0", "eigh no rank tolerance"),
    (OPS, "    tall = arr.shape[-2] > arr.shape[-1]", "    tall = False", "no transpose for tall"),
    (OPS, "        d = _rescale_to_rms_one(call.xp, d, call.be)", "        pass", "swan no rescale"),
    (REF, "    Gs = _pow2n(G, axes=(-2, -1))\n    lam, Q", "    Gs = G\n    lam, Q",
     "eigh no prescale"),
    (REF, "    e1 = pow2_exponent(np.max(np.abs(G), axis=-1, keepdims=True))",
     "    e1 = np.zeros(G.shape[:-1] + (1,), dtype=int)", "gradnorm no overflow scaling"),
]

# Runs pytest on the copy: editable installs put a finder ahead of sys.path, so drop it first.
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        "import swanref, pytest; assert swanref.__file__.startswith(sys.argv[1]), swanref.__file__; "
        "sys.exit(pytest.main(sys.argv[2:]))")


def run(work: pathlib.Path, path: str, old: str, new: str) -> subprocess.CompletedProcess:
    target = work / path
    original = target.read_text()
    if old not in original:
        raise SystemExit(f"mutation no longer applies to {path}: {old!r}")
    target.write_text(original.replace(old, new, 1))
    try:
        return subprocess.run([sys.executable, "-c", BOOT, str(work), "-q", "-x",
                               "-p", "no:cacheprovider", "-k", "reference", *TESTS],
                              cwd=work, capture_output=True, text=True)
    finally:
        target.write_text(original)


def main() -> int:
    survived = []
    with tempfile.TemporaryDirectory(prefix="swanref-mutants-") as tmp:
        work = pathlib.Path(tmp)
        for folder in ("swanref", "tests"):
            shutil.copytree(ROOT / folder, work / folder,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        for path, old, new, name in MUTATIONS:
            r = run(work, path, old, new)
            lines = [ln for ln in r.stdout.splitlines() if "FAILED" in ln or "passed" in ln
                     or "failed" in ln or "error" in ln.lower()]
            print(f"{name:32s} rc={r.returncode}  {lines[0] if lines else r.stdout[-200:]}")
            if r.returncode != 1:
                survived.append(name)
    if survived:
        print(f"survived (no test failed): {', '.join(survived)}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
