"""``swanref report``: every backend, every operator, on the embedded gradients.

For each case, operator, backend and dtype it prints the error against the exact reference
and the spec tolerance (docs/spec.md section 8), and PASS/FAIL.  The exact reference is the
float64 SVD polar factor (its own bound is added to the tolerance); GradNorm is judged
against the float64 reference backend, the Newton-Schulz iteration against its spectral
prediction (spec 3.6), with its distance to the polar factor shown for information.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from swanref.backends import registry as _backends
from swanref import ops as api
from swanref.spec import spectral
from swanref.spec import tolerance
from swanref.tools.cases import default_cases
from swanref.spec.readings import SPEC_VERSION, WHITEN_METHODS

DTYPES = (np.float64, np.float32)


def _fro(x):
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


def _per_slice_err(x, ref):
    x = np.asarray(x, dtype=np.float64).reshape((-1,) + ref.shape[-2:])
    ref = ref.reshape(x.shape)
    r = max(min(ref.shape[-2:]), 1)
    return np.array([_fro(a - b) / np.sqrt(r) for a, b in zip(x, ref)])


def _wide(G):
    return G if G.shape[-2] <= G.shape[-1] else np.swapaxes(G, -1, -2)


def _rows_for_case(case, backend, dtype):
    G64 = case.G
    G = G64.astype(dtype)
    Gd = G.astype(np.float64)  # the input actually given, taken as exact
    m, n = G.shape[-2:]
    rows = []
    kappa = np.atleast_1d(tolerance.condition_number(Gd))

    # GradNorm vs the float64 reference backend
    out = api.grad_norm(G, backend=backend)
    ref = api.grad_norm(Gd, backend="reference")
    err = float(np.max(np.abs(out - ref) / (1 + np.abs(ref))))
    tol = tolerance.grad_norm_tolerance(n, dtype) + tolerance.grad_norm_tolerance(n, np.float64)
    rows.append(("grad_norm", err, tol, ""))

    exact = api.whiten(Gd, "svd", backend="reference")
    ref_tol = tolerance.exact_whitening_tolerance(m, n, kappa, np.float64, "svd")
    for method in ("svd", "eigh"):
        tol = tolerance.exact_whitening_tolerance(m, n, kappa, dtype, method) + ref_tol
        err = _per_slice_err(api.whiten(G, method, backend=backend), exact)
        rows.append((f"whiten[{method}]", float(np.max(err)), float(np.max(tol)),
                     f"kappa<={np.max(kappa):.0e}"))

    d = WHITEN_METHODS["newton_schulz"].defaults
    X = api.whiten(G, "newton_schulz", backend=backend, on_divergence="warn")
    W = _wide(Gd)
    pred = spectral.predicted_newton_schulz(W, d["steps"], d["beta"], d["scaling"])
    pred = pred if W is Gd else np.swapaxes(pred, -1, -2)
    s = np.linalg.svd(W, compute_uv=False)
    tol = tolerance.newton_schulz_tolerance(s, *W.shape[-2:], d["steps"], d["beta"],
                                            d["scaling"], dtype)
    err = _per_slice_err(X, pred) * np.sqrt(min(m, n) / W.shape[-2])
    to_polar = float(np.max(_per_slice_err(X, exact)))
    trusted = bool(np.all(np.atleast_1d(tol) <= tolerance.TRUSTED_LIMIT))
    note = f"vs prediction; {to_polar:.1e} from U V^T"
    if not trusted:
        note += "; outside the model's claim"
    rows.append((f"whiten[newton_schulz, {d['steps']} steps]", float(np.nanmax(err)),
                 float(np.max(tol)), note))
    return rows


def run(backends=None, dtypes=DTYPES, stream=sys.stdout, as_json=False) -> int:
    backends = list(backends or [b for b in _backends.available() if b != "cupy"])
    start = time.perf_counter()
    records = []
    for case in default_cases():
        for backend in backends:
            for dtype in dtypes:
                for op, err, tol, note in _rows_for_case(case, backend, dtype):
                    judged = np.isfinite(tol) and "outside the model's claim" not in note
                    ok = bool(np.isfinite(err) and err <= tol) if judged else None
                    records.append(dict(case=case.name, shape="x".join(map(str, case.G.shape)),
                                        op=op, backend=backend, dtype=np.dtype(dtype).name,
                                        error=err, tolerance=tol, ok=ok, note=note))
    failed = sum(1 for r in records if r["ok"] is False)
    passed = sum(1 for r in records if r["ok"])
    elapsed = time.perf_counter() - start
    if as_json:
        json.dump({"spec_version": SPEC_VERSION, "records": records, "passed": passed,
                   "failed": failed, "seconds": elapsed}, stream, indent=1)
        stream.write("\n")
    else:
        _print_table(records, stream)
        stream.write(f"\nspec {SPEC_VERSION}; backends: {', '.join(backends)}; "
                     f"{elapsed:.1f} s\n{passed} passed, {failed} failed\n")
    return 1 if failed else 0


def _print_table(records, stream):
    head = f"{'case':<17} {'shape':<9} {'operator':<31} {'backend':<9} {'dtype':<7} " \
           f"{'error':>9} {'tolerance':>9}  status  note"
    stream.write(head + "\n" + "-" * len(head) + "\n")
    for r in records:
        status = {True: "PASS", False: "FAIL", None: "info"}[r["ok"]]
        stream.write(f"{r['case']:<17} {r['shape']:<9} {r['op']:<31} {r['backend']:<9} "
                     f"{r['dtype']:<7} {r['error']:>9.2e} {r['tolerance']:>9.2e}  "
                     f"{status:<6}  {r['note']}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="swanref report", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=_backends.names(),
                        help="backend(s) to run (default: every CPU backend available)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--plots", metavar="DIR",
                        help="also write the default accuracy study (plots) to DIR")
    args = parser.parse_args(argv)
    for name in args.backend or []:
        if not _backends.is_available(name):
            parser.error(f"backend {name!r} is not available here")
    code = run(args.backend, as_json=args.json)
    if args.plots:
        from swanref.tools import study
        code = max(code, study.main([args.plots, "--quick"]))
    return code
