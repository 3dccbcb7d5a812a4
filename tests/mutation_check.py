"""Mutation check (spec issue: each test must catch plausible mistakes).

Run ``python tests/mutation_check.py`` from the repository root: it breaks the NumPy reference
in one plausible way at a time, runs the spec tests on the reference backend, and prints which
test caught each mutation (every line must show a FAILED test). Restores the sources after.
"""
import subprocess, shutil, sys
muts = [
 ("swanref/reference.py", "var = np.mean(centred * centred, axis=-1, keepdims=True)", "var = np.sum(centred * centred, axis=-1, keepdims=True) / max(G.shape[-1] - 1, 1)", "gradnorm ddof=1"),
 ("swanref/reference.py", "centred = d - d.mean(axis=-1, keepdims=True)", "centred = d", "gradnorm no centring"),
 ("swanref/reference.py", "out = np.where(std > 0, centred / np.where(std > 0, std, 1), 0)", "out = centred / std", "gradnorm NaN on constant rows"),
 ("swanref/reference.py", "keep = s > sigma_rtol * s[..., :1]", "keep = s >= 0", "svd full completion"),
 ("swanref/reference.py", "            Y, Z = b * (Y @ T), b * (T @ Z)", "            Y = b * (Y @ T); Z = b * (3 * eye - Z @ Y) @ Z", "NS uses new Y"),
 ("swanref/reference.py", "        return (Z @ Gs / np.sqrt(c)).astype(dtype, copy=False)", "        return (Z @ Gs).astype(dtype, copy=False)", "NS no output rescale"),
 ("swanref/reference.py", "        X = _normalise_lines(X, -1, np.sqrt(n))\n        X = _normalise_lines(X, -2, np.sqrt(m))", "        X = _normalise_lines(X, -2, np.sqrt(m))\n        X = _normalise_lines(X, -1, np.sqrt(n))", "sinkgd columns first"),
 ("swanref/reference.py", "    keep = lam > lambda_rtol * lam[..., -1:]", "    keep = lam > 0", "eigh no rank tolerance"),
 ("swanref/api.py", "    tall = arr.shape[-2] > arr.shape[-1]", "    tall = False", "no transpose for tall"),
 ("swanref/api.py", "        d = _rescale_to_rms_one(call.xp, d)", "        pass", "swan no rescale"),
 ("swanref/reference.py", "    Gs = pow2_normalise(G, axes=(-2, -1))\n    lam, Q", "    Gs = G\n    lam, Q", "eigh no prescale"),
 ("swanref/reference.py", "    e1 = pow2_exponent(np.max(np.abs(G), axis=-1, keepdims=True))", "    e1 = np.zeros(G.shape[:-1] + (1,), dtype=int)", "gradnorm no overflow scaling"),
]
for path, old, new, name in muts:
    src = open(path).read()
    assert old in src, name
    shutil.copy(path, "/tmp/backup.py")
    open(path, "w").write(src.replace(old, new, 1))
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "reference", "tests/test_grad_norm.py", "tests/test_whiten_exact.py", "tests/test_newton_schulz.py", "tests/test_swan_sinkgd.py", "tests/test_input_policy.py", "tests/test_tolerance_model.py"], capture_output=True, text=True)
        last = [l for l in r.stdout.splitlines() if "FAILED" in l or "passed" in l or "failed" in l]
        print(f"{name:32s} rc={r.returncode}  {last[0] if last else r.stdout[-200:]}")
    finally:
        shutil.copy("/tmp/backup.py", path)
