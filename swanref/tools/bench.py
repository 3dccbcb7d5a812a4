"""CPU benchmark: swanref's C++ core next to what a NumPy/SciPy user would run.

    python -m swanref.tools.bench [--quick] [--sizes 1024x4096,2048x2048] [--steps 5]
                            [--markdown FILE] [--json FILE]
    python -m swanref.tools.bench --goals [--big]     the CPU performance goals, each ratio
                                                      printed next to its goal
    swanref bench ...                   (``swanref bench --gpu`` forwards to swanref.tools.bench_gpu)

One process, BLAS pinned to ONE thread with threadpoolctl (NumPy's and SciPy's OpenBLAS both;
the C++ core calls SciPy's). For each matrix (default 1024x4096 and 2048x2048 in float64 and
float32, plus 4096x11008 float32 unless ``--quick``):

* exact whitening: swanref ``whiten_svd`` and ``whiten_eigh`` next to the NumPy SVD route
  (``U @ Vt`` from ``np.linalg.svd``), ``scipy.linalg.polar`` and the NumPy eigh-of-Gram route;
* Newton-Schulz (``steps`` steps, beta 1/2, gram_fro): swanref next to a NumPy coupled loop
  with 3 GEMMs per step at equal steps, and swanref's opt-in symmetric-product variant;
  GFLOP/s of each against the measured GEMM peak (square GEMM, same library, same thread);
* NSDS and GradNorm (GradNorm's GB/s against a measured large copy: with a new output array
  against a copy into a new array, with ``out=`` against a copy into an existing one);
* the error of every whitening result against a float64 reference (the float64 SVD polar factor;
  for 4096x11008, whose random Gaussian G has kappa ~ 4, the float64 eigh route, see the notes).

Ratios are NumPy-route time / swanref time (> 1: swanref faster). Times are the best of a few
runs (1 run for anything slower than ``--max-repeat-seconds``). swanref's exact methods use the
spec's default rank tolerances (sigma_rtol = max(m, n) eps, lambda_rtol = max(sigma_rtol^2,
max(m, n) eps)); their errors are against the float64 reference truncated at the same tolerance
(the NumPy routes truncate nothing and are compared with the full polar factor).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import scipy.linalg
import scipy.linalg.blas as sb

from swanref.backends import cpp as _cpp_backend
from swanref.spec.tolerance import exact_whitening_tolerance
from swanref.spec.output_files import output_path_problem
from swanref.tools import bench_gpu

DEFAULT_CASES = [((1024, 4096), "float64"), ((1024, 4096), "float32"), ((2048, 2048), "float64"),
                 ((2048, 2048), "float32"), ((4096, 11008), "float32")]


def _parse_sizes(text):
    out = []
    for item in text.split(","):
        m, n = item.lower().split("x")
        out.append((int(m), int(n)))
    return out


# The clock of every timing: wall time by default; ``--clock thread`` (the default of --goals)
# takes the CPU time of the calling thread, which is where single-threaded BLAS and the C++ core
# run: on a shared machine it leaves out the time spent waiting for a core (not the memory
# bandwidth taken by other processes).
_CLOCK = {"fn": time.perf_counter, "name": "wall"}


def _best_time(fn, repeat, max_repeat_seconds, fast_budget=0.5):
    """Best time of ``repeat`` runs (one run when a run is slower than the limit); fast
    functions (milliseconds, easily disturbed by other processes) run until ``fast_budget``
    seconds are spent, at most 50 times."""
    best, result, spent, runs = float("inf"), None, 0.0, 0
    clock = _CLOCK["fn"]
    while True:
        t0 = clock()
        result = fn()
        dt = clock() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
        if dt > max_repeat_seconds:
            break
        if runs >= max(1, repeat) and (spent >= fast_budget or runs >= 50):
            break
    return best, result


def _rel_err(x, ref):
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return float("nan")
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


# ----------------------------------------------------------------- what a user would run


def numpy_svd_polar(G):
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    return U @ Vt


def scipy_polar(G):
    return scipy.linalg.polar(G)[0]


def numpy_eigh_polar(G):
    lam, Q = np.linalg.eigh(G @ G.T)
    return (Q * lam ** -0.5) @ (Q.T @ G)


def numpy_newton_schulz(G, steps, beta=0.5):
    """The paper's coupled iteration, 3 GEMMs per step, gram_fro scaling."""
    m = G.shape[0]
    A = G @ G.T
    c = np.linalg.norm(A)
    Y, Z = A / c, np.eye(m, dtype=G.dtype)
    eye3 = 3 * np.eye(m, dtype=G.dtype)
    for _ in range(steps):
        T = eye3 - Z @ Y
        Y, Z = beta * (Y @ T), beta * (T @ Z)
    return (Z @ G) / np.sqrt(c).astype(G.dtype)


def numpy_grad_norm(G, eps=0.0):
    mu = G.mean(axis=-1, keepdims=True)
    d = G - mu
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + eps)


# ----------------------------------------------------------------- peaks


def measure_gemm_peak(dtype, n=2048, repeat=3):
    """Best GFLOP/s of an n^3 GEMM through SciPy's BLAS (the library the C++ core calls) and NumPy's."""
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    gemm = sb.dgemm if dtype == np.float64 else sb.sgemm
    flops = 2.0 * n**3
    t_scipy, _ = _best_time(lambda: gemm(1.0, a, b), repeat, 1e9)
    t_numpy, _ = _best_time(lambda: a @ b, repeat, 1e9)
    return {"scipy_gflops": flops / t_scipy / 1e9, "numpy_gflops": flops / t_numpy / 1e9}


def measure_copy_bandwidth(nbytes=256 << 20, repeat=5):
    """GB/s of a large copy (bytes read + bytes written): into an existing array, and into a new one
    (which adds the page faults of fresh memory, as every function returning a new array pays)."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    t, _ = _best_time(lambda: np.copyto(dst, src), repeat, 1e9)
    t_new, _ = _best_time(lambda: src.copy(), repeat, 1e9)
    return {"copy_gbs": 2 * nbytes / t / 1e9, "copy_new_gbs": 2 * nbytes / t_new / 1e9}


# ----------------------------------------------------------------- the performance goals

GOAL_EXACT = 1.0     # exact (kappa eps accurate) whitening time / NS10 time <= 1
GOAL_GRAD_NORM = 0.8  # GradNorm GB/s / copy GB/s of the same bytes >= 0.8
GOAL_NS_VS_NUMPY = 1.0     # C++ NS10 CPU time / NumPy NS10 loop CPU time <= 1
GOAL_EXACT_VS_NUMPY = 0.67  # C++ exact whitening CPU time / NumPy SVD polar CPU time <= 0.67


def _status(ratio, goal, higher_is_better):
    met = ratio >= goal if higher_is_better else ratio <= goal
    if met:
        return "met"
    return f"missed by {abs(ratio / goal - 1) * 100:.0f}%"


def constructed(m, n, kappa, seed=7):
    """G = U diag(s) V^T (float64) with log-spaced s from 1 to 1/kappa, and its polar factor."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    s = np.logspace(0, -np.log10(kappa), m)
    return (U * s) @ V.T, U, s, V


def goal_exact_rows(core, m, n, dtype_name, kappa, repeat, max_rep, log, steps=10):
    """Exact whitening (svd reading, the spec's default rank tolerance) against NS10 on the same
    constructed matrix, and the NumPy SVD route; errors against the known polar factor."""
    dtype = np.dtype(dtype_name).type
    G64, U, s, V = constructed(m, n, kappa)
    G = G64.astype(dtype)
    rtol = max(m, n) * float(np.finfo(dtype).eps)
    keep = s > rtol * s[0]
    P = (U[:, keep]) @ V[:, keep].T            # the polar factor at the spec's rank tolerance
    P_full = U @ V.T
    err = lambda X, ref: float(np.linalg.norm(np.asarray(X, np.float64) - ref) / np.sqrt(ref.shape[0]))  # noqa: E731
    t_ns, X_ns = _best_time(lambda: core.whiten_newton_schulz(G, steps, 0.5, "gram_fro"), repeat, max_rep)
    t_ex, X_ex = _best_time(lambda: core.whiten_svd(G, rtol), repeat, max_rep)
    t_np, (Un, _, Vtn) = _best_time(lambda: np.linalg.svd(G, full_matrices=False), repeat, max_rep)
    t_np2, X_np = _best_time(lambda: Un @ Vtn, repeat, max_rep)
    kappa_kept = s[0] / s[keep][-1]
    bound = float(exact_whitening_tolerance(m, n, kappa_kept, dtype))
    ratio = t_ex / t_ns
    log(f"\n### exact whitening vs NS{steps}: G {m}x{n} {dtype_name}, constructed U diag(s) V^T, s log-spaced "
        f"1 .. 1/{kappa:.0e}; sigma_rtol = {rtol:.1e} keeps {int(keep.sum())} of {m} (kappa kept {kappa_kept:.1e}); "
        f"errors ||X - U_r V_r^T||_F / sqrt(m), spec 8.2 bound {bound:.1e}")
    log("| method | time [s] | / NS time | error |")
    log("| --- | ---: | ---: | ---: |")
    log(f"| swanref whiten_newton_schulz, {steps} steps | {t_ns:.4g} | 1.00 | {err(X_ns, P):.1e} (not converged: iterative) |")
    log(f"| swanref whiten_svd (exact) | {t_ex:.4g} | {ratio:.2f} | {err(X_ex, P):.1e} |")
    log(f"| NumPy svd + U @ Vt (no truncation; error vs U V^T) | {t_np + t_np2:.4g} | {(t_np + t_np2) / t_ns:.2f} | "
        f"{err(X_np, P_full):.1e} |")
    return {"shape": [m, n], "dtype": dtype_name, "kappa": kappa, "t_ns": t_ns, "t_exact": t_ex,
            "t_numpy_svd": t_np + t_np2, "err_exact": err(X_ex, P), "err_numpy": err(X_np, P_full),
            "bound": bound, "ratio": ratio}


def goal_grad_norm_rows(core, m, n, dtype_name, log, rounds=7):
    """GradNorm against a NumPy copy of the same bytes, measured alternately in one loop (the
    machine's load changes over seconds): preallocated output vs np.copyto into an existing
    array, and a new output array vs G.copy()."""
    dtype = np.dtype(dtype_name).type
    G = np.random.default_rng(3).standard_normal((m, n)).astype(dtype)
    out, dst = np.empty_like(G), np.empty_like(G)
    fns = {"gn_out": lambda: core.grad_norm(G, 1e-8, out=out), "copy": lambda: np.copyto(dst, G),
           "gn_new": lambda: core.grad_norm(G, 1e-8), "copy_new": lambda: G.copy()}
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t, _ = _best_time(fn, 3, 1e9, fast_budget=0.1)
            best[k] = min(best[k], t)
    nbytes = 2.0 * G.nbytes
    gbs = {k: nbytes / v / 1e9 for k, v in best.items()}
    r_out, r_new = best["copy"] / best["gn_out"], best["copy_new"] / best["gn_new"]
    log(f"| GradNorm {m}x{n} {dtype_name}, out= preallocated | {gbs['gn_out']:.1f} GB/s | copy into an existing array "
        f"{gbs['copy']:.1f} GB/s | {r_out * 100:.0f}% | >= 80% | {_status(r_out, GOAL_GRAD_NORM, True)} |")
    log(f"| GradNorm {m}x{n} {dtype_name}, new output array | {gbs['gn_new']:.1f} GB/s | copy into a new array "
        f"{gbs['copy_new']:.1f} GB/s | {r_new * 100:.0f}% | >= 80% | {_status(r_new, GOAL_GRAD_NORM, True)} |")
    return {"shape": [m, n], "dtype": dtype_name, "gbs": gbs, "ratio_out": r_out, "ratio_new": r_new}


def goal_vs_numpy_rows(core, m, n, dtype_name, log, rounds=3, steps=10, kappa=1e3):
    """The C++ core against what a NumPy user runs, on one constructed matrix (kappa 1e3: no
    singular value below the spec's default cutoff in either precision, so both sides compute
    the same factor): NS10 against the plain NumPy loop (3 GEMMs per step), exact whitening
    against ``np.linalg.svd`` + ``U @ Vt``. Process CPU time (``time.process_time``: every
    thread of this process, so a BLAS thread pool could not hide work), runs interleaved over
    ``rounds`` rounds (the machine's load changes over seconds), best of each."""
    dtype = np.dtype(dtype_name).type
    G64, U, s, V = constructed(m, n, kappa)
    G = G64.astype(dtype)
    P = U @ V.T
    rtol = max(m, n) * float(np.finfo(dtype).eps)
    fns = {"cpp_ns": lambda: core.whiten_newton_schulz(G, steps, 0.5, "gram_fro"),
           "numpy_ns": lambda: numpy_newton_schulz(G, steps),
           "cpp_exact": lambda: core.whiten_svd(G, rtol),
           "numpy_svd": lambda: numpy_svd_polar(G)}
    best = {k: float("inf") for k in fns}
    res = {}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.process_time()
            res[k] = fn()
            best[k] = min(best[k], time.process_time() - t0)
    err = {k: float(np.linalg.norm(np.asarray(v, np.float64) - P) / np.sqrt(m)) for k, v in res.items()}
    ns_diff = float(np.linalg.norm(np.asarray(res["cpp_ns"], np.float64) - res["numpy_ns"])
                    / np.linalg.norm(np.asarray(res["numpy_ns"], np.float64)))
    r_ns, r_ex = best["cpp_ns"] / best["numpy_ns"], best["cpp_exact"] / best["numpy_svd"]
    log(f"| {m}x{n} {dtype_name} | NS{steps}: C++ {best['cpp_ns']:.3f} s, NumPy loop {best['numpy_ns']:.3f} s "
        f"(outputs differ by {ns_diff:.1e}) | {r_ns:.2f}x | <= {GOAL_NS_VS_NUMPY:.2f}x | "
        f"{_status(r_ns, GOAL_NS_VS_NUMPY, False)} |")
    log(f"| {m}x{n} {dtype_name} | exact: C++ whiten_svd {best['cpp_exact']:.3f} s (error {err['cpp_exact']:.1e}), "
        f"NumPy SVD polar {best['numpy_svd']:.3f} s (error {err['numpy_svd']:.1e}) | {r_ex:.2f}x | "
        f"<= {GOAL_EXACT_VS_NUMPY:.2f}x | {_status(r_ex, GOAL_EXACT_VS_NUMPY, False)} |")
    return {"shape": [m, n], "dtype": dtype_name, "kappa": kappa, "times": best, "errors": err,
            "ratio_ns": r_ns, "ratio_exact": r_ex, "ns_rel_diff": ns_diff}


def run_goals(core, big, repeat, max_rep, log, kappas=(1e6,), exact_shapes=((1024, 4096),),
              gn_shapes=((2048, 2048), (4096, 11008)), numpy_shapes=((1024, 4096), (2048, 2048))):
    """The CPU goals: exact whitening no slower than NS10 (1024x4096 and, with ``big``,
    4096x4096; kappa up to 1e6) and GradNorm at >= 80% of the copy bandwidth."""
    shapes = list(exact_shapes) + ([(4096, 4096)] if big else [])
    exact = []
    for (m, n) in shapes:
        for d in ("float64", "float32"):
            if (m, n) == (4096, 4096) and d == "float32":
                continue  # float32 runs the float64 eigh route: the float64 case bounds its time
            for kappa in kappas:
                exact.append(goal_exact_rows(core, m, n, d, kappa, repeat, max_rep, log))
    log("\n### GradNorm against the copy ceiling (same bytes read + written, same run)")
    log("| case | GradNorm | copy | ratio | goal | status |")
    log("| --- | ---: | ---: | ---: | --- | --- |")
    gn = [goal_grad_norm_rows(core, m, n, d, log) for (m, n) in gn_shapes for d in ("float32", "float64")]
    vs_numpy = []
    if numpy_shapes:
        log("\n### The C++ core against the NumPy routes (process CPU time, interleaved runs, "
            "constructed G with kappa 1e3; errors ||X - U V^T||_F / sqrt(m))")
        log("| case | times | C++ / NumPy | goal | status |")
        log("| --- | --- | ---: | --- | --- |")
        vs_numpy = [goal_vs_numpy_rows(core, m, n, d, log) for (m, n) in numpy_shapes
                    for d in ("float64", "float32")]
    log("\n### Goals (CPU)")
    log("| goal | case | measured | status |")
    log("| --- | --- | ---: | --- |")
    for r in exact:
        m, n = r["shape"]
        log(f"| exact whitening time <= NS10 time | {m}x{n} {r['dtype']} kappa {r['kappa']:.0e} | "
            f"{r['ratio']:.2f}x (error {r['err_exact']:.1e}, bound {r['bound']:.1e}) | "
            f"{_status(r['ratio'], GOAL_EXACT, False)} |")
    for r in gn:
        m, n = r["shape"]
        for key, what in (("ratio_out", "out="), ("ratio_new", "new array")):
            log(f"| GradNorm >= 80% of copy bandwidth | {m}x{n} {r['dtype']} {what} | {r[key] * 100:.0f}% | "
                f"{_status(r[key], GOAL_GRAD_NORM, True)} |")
    for r in vs_numpy:
        m, n = r["shape"]
        log(f"| NS10 CPU time <= NumPy loop | {m}x{n} {r['dtype']} | {r['ratio_ns']:.2f}x | "
            f"{_status(r['ratio_ns'], GOAL_NS_VS_NUMPY, False)} |")
        log(f"| exact CPU time <= 0.67x NumPy SVD polar | {m}x{n} {r['dtype']} | {r['ratio_exact']:.2f}x "
            f"(error {r['errors']['cpp_exact']:.1e} vs {r['errors']['numpy_svd']:.1e}) | "
            f"{_status(r['ratio_exact'], GOAL_EXACT_VS_NUMPY, False)} |")
    return {"exact": exact, "grad_norm": gn, "vs_numpy": vs_numpy}


# ----------------------------------------------------------------- the run


def _threadpool_lines():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return ["threadpoolctl not installed: BLAS threads NOT pinned (set OPENBLAS_NUM_THREADS=1)"]
    lines = []
    for info in threadpool_info():
        lines.append(f"{info.get('internal_api')} {info.get('version')} threads={info.get('num_threads')} "
                     f"arch={info.get('architecture')} {info.get('filepath', '').split('/')[-1]}")
    return lines


def run_case(core, m, n, dtype_name, steps, repeat, max_rep, peaks, bandwidth, log, full=False):
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(1234)
    G = rng.standard_normal((m, n)).astype(dtype)
    big = m * n >= 4096 * 8192
    rows = []

    # Rank tolerances: the spec defaults (docs/spec.md 3.0/3.2) for swanref's exact methods.
    eps = float(np.finfo(dtype).eps)
    sigma_rtol = max(m, n) * eps
    lambda_rtol = max(sigma_rtol**2, max(m, n) * eps)

    # float64 references: the full polar factor (NumPy routes, Newton-Schulz) and the one
    # truncated at sigma_rtol (swanref whiten_svd); identical unless a singular value is cut.
    G64 = G.astype(np.float64)
    if big:
        t_ref, ref = _best_time(lambda: core.whiten_eigh(G64, 0.0), 1, 0)
        ref_trunc, ref_eigh, kappa, cut, cut_eigh = ref, ref, float("nan"), 0, 0
        ref_name = "float64 eigh route (random Gaussian 4096x11008: kappa ~ 4, so kappa^2 eps64 ~ 1e-15)"
    else:
        t0 = time.perf_counter()
        U, sv, Vt = np.linalg.svd(G64, full_matrices=False)
        ref = U @ Vt
        t_ref = time.perf_counter() - t0
        r = int(np.sum(sv > sigma_rtol * sv[0]))
        ref_trunc = U[:, :r] @ Vt[:r] if r < m else ref
        re = int(np.sum(sv**2 > lambda_rtol * sv[0] ** 2))
        ref_eigh = U[:, :re] @ Vt[:re] if re < m else ref
        kappa, cut, cut_eigh = float(sv[0] / sv[-1]), m - r, m - re
        ref_name = "float64 NumPy SVD polar"
    log(f"\n## G {m}x{n} {dtype_name}  (reference: {ref_name}, {t_ref:.2f} s; kappa = {kappa:.3g}; "
        f"sigma_rtol = {sigma_rtol:.2g} cuts {cut} singular value(s), lambda_rtol = {lambda_rtol:.2g} cuts {cut_eigh})")

    def add(group, name, impl, fn, flops=None, err=True, reference=None):
        t, X = _best_time(fn, repeat, max_rep)
        row = {"group": group, "method": name, "impl": impl, "seconds": t,
               "error": _rel_err(X, ref if reference is None else reference) if err else None,
               "gflops": (flops / t / 1e9) if flops else None}
        rows.append(row)
        return row

    # exact whitening
    svd_rows = full or not big
    if dtype == np.float64 and not big:  # the reference computation *is* the NumPy SVD route: reuse it
        np_svd = {"group": "exact", "method": "NumPy SVD polar (U @ Vt)", "impl": "numpy", "seconds": t_ref,
                  "error": 0.0, "gflops": None}
        rows.append(np_svd)
    elif svd_rows:
        np_svd = add("exact", "NumPy SVD polar (U @ Vt)", "numpy", lambda: numpy_svd_polar(G))
    else:
        np_svd = None
        log("(SVD-based rows skipped for the big case, ~2 min more: pass --full)")
    if not big:
        add("exact", "scipy.linalg.polar", "scipy", lambda: scipy_polar(G))
    if dtype == np.float64:
        route = " (refined eigh route)"
    elif sigma_rtol**2 >= 1e4 * max(m, n) * np.finfo(np.float64).eps:
        route = " (float64 eigh route)"
    else:
        route = " (float64 refined eigh route)"
    add("exact", f"swanref whiten_svd{route}", "swanref", lambda: core.whiten_svd(G, sigma_rtol),
        reference=ref_trunc)
    if svd_rows:
        label = "float32 LAPACK SVD" if dtype == np.float32 else "QR + gesdd" if n >= 1.5 * m else "gesdd"
        add("exact", f"swanref whiten_svd route='svd' ({label})", "swanref",
            lambda: core.whiten_svd(G, sigma_rtol, route="svd"), reference=ref_trunc)
    add("exact", "NumPy eigh-of-Gram route", "numpy", lambda: numpy_eigh_polar(G))
    add("exact", "swanref whiten_eigh", "swanref", lambda: core.whiten_eigh(G, lambda_rtol), reference=ref_eigh)

    # Newton-Schulz
    dense_flops = 2.0 * m * m * n + steps * 6.0 * m**3 + 2.0 * m * m * n
    np_ns = add("newton_schulz", f"NumPy coupled NS, {steps} steps (3 GEMMs/step)", "numpy",
                lambda: numpy_newton_schulz(G, steps), flops=dense_flops)
    ours = add("newton_schulz", f"swanref whiten_newton_schulz, {steps} steps", "swanref",
               lambda: core.whiten_newton_schulz(G, steps, 0.5, "gram_fro"),
               flops=core.newton_schulz_flops(m, n, steps))
    if not big:
        add("newton_schulz", f"swanref NS symmetric=True (opt-in), {steps} steps", "swanref",
            lambda: core.whiten_newton_schulz(G, steps, 0.5, "gram_fro", symmetric=True),
            flops=core.newton_schulz_flops(m, n, steps, True))
        # per-step rate: `steps` minus 1 step (both codes do 3 (steps - 1) more m x m products)
        t1, _ = _best_time(lambda: core.whiten_newton_schulz(G, 1, 0.5, "gram_fro"), repeat, max_rep)
        t1np, _ = _best_time(lambda: numpy_newton_schulz(G, 1), repeat, max_rep)
        step_flops = 6.0 * m**3 * (steps - 1)
        ours["step_gflops"] = step_flops / max(ours["seconds"] - t1, 1e-12) / 1e9
        np_ns["step_gflops"] = step_flops / max(np_ns["seconds"] - t1np, 1e-12) / 1e9
    add("newton_schulz", f"swanref whiten_nsds, {steps} steps", "swanref",
        lambda: core.whiten_nsds(G, steps, 0.5, "grad_fro"), err=False)

    # GradNorm
    nbytes = 2 * G.nbytes
    out = np.empty_like(G)
    gn = add("grad_norm", "swanref grad_norm (new output array)", "swanref", lambda: core.grad_norm(G, 1e-8),
             err=False)
    gn_out = add("grad_norm", "swanref grad_norm (out=, preallocated)", "swanref",
                 lambda: core.grad_norm(G, 1e-8, out=out), err=False)
    gn_np = add("grad_norm", "NumPy (x - mean) / std", "numpy", lambda: numpy_grad_norm(G, 1e-8), err=False)
    for r in (gn, gn_out, gn_np):
        r["gbs"] = nbytes / r["seconds"] / 1e9

    peak = peaks[dtype_name]["scipy_gflops"]
    for r in rows:
        if r["gflops"] is not None:
            r["peak_fraction"] = r["gflops"] / peak
        if r.get("step_gflops") is not None:
            r["step_peak_fraction"] = r["step_gflops"] / peak
        if r["group"] == "exact" and np_svd is not None:
            r["speedup_vs_numpy_svd"] = np_svd["seconds"] / r["seconds"]
        if r["group"] == "newton_schulz" and r is not np_ns and r["gflops"] is not None:
            r["speedup_vs_numpy_ns"] = np_ns["seconds"] / r["seconds"]
        if r["group"] == "grad_norm":
            # new output array vs a copy into a new array; out= vs a copy into an existing one
            r["bandwidth_fraction"] = r["gbs"] / (bandwidth["copy_gbs"] if r is gn_out else bandwidth["copy_new_gbs"])
    gn["speedup_vs_numpy"] = gn_np["seconds"] / gn["seconds"]
    gn_out["speedup_vs_numpy"] = gn_np["seconds"] / gn_out["seconds"]

    _print_rows(rows, log)
    return {"m": m, "n": n, "dtype": dtype_name, "kappa": kappa, "reference": ref_name, "sigma_rtol": sigma_rtol,
            "cut": cut, "rows": rows}


def _fmt(v, spec):
    return "" if v is None or (isinstance(v, float) and np.isnan(v) and spec != ".1e") else format(v, spec)


def _print_rows(rows, log):
    log("| method | time [s] | speed-up | GFLOP/s | % GEMM peak | GB/s | % copy BW | rel. error vs f64 ref |")
    log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        sp = r.get("speedup_vs_numpy_svd") or r.get("speedup_vs_numpy_ns") or r.get("speedup_vs_numpy")
        gfl = _fmt(r["gflops"], ".1f")
        frac = _fmt(r.get("peak_fraction"), ".0%")
        if r.get("step_gflops") is not None:
            gfl += f" (steps: {r['step_gflops']:.1f})"
            frac += f" (steps: {r['step_peak_fraction']:.0%})"
        err = "" if r["error"] is None else format(r["error"], ".1e")
        log(f"| {r['method']} | {r['seconds']:.4g} | {'' if sp is None else format(sp, '.2f') + 'x'} | {gfl} | "
            f"{frac} | {_fmt(r.get('gbs'), '.1f')} | {_fmt(r.get('bandwidth_fraction'), '.0%')} | {err} |")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--gpu" in argv:
        return int(bench_gpu.main([a for a in argv if a != "--gpu"]) or 0)
    p = argparse.ArgumentParser(prog="swanref bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the 4096x11008 case")
    p.add_argument("--full", action="store_true",
                   help="also the SVD-based rows for 4096x11008 (about 2 more minutes)")
    p.add_argument("--sizes", help="comma-separated MxN list (each run in float64 and float32)")
    p.add_argument("--dtypes", default="float64,float32", help="with --sizes: dtypes to run")
    p.add_argument("--steps", type=int, default=5, help="Newton-Schulz / NSDS steps (default 5)")
    p.add_argument("--repeat", type=int, default=3, help="runs per timing (best is kept)")
    p.add_argument("--max-repeat-seconds", type=float, default=3.0,
                   help="a run slower than this is not repeated")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--markdown", help="also write the printed tables to this file")
    p.add_argument("--json", help="write all numbers as JSON to this file")
    p.add_argument("--goals", action="store_true",
                   help="only the CPU performance goals (exact whitening vs NS10 at kappa 1e6, GradNorm vs copy)")
    p.add_argument("--big", action="store_true", help="with --goals: also 4096x4096 (several minutes)")
    p.add_argument("--goal-sizes", default="1024x4096", help="with --goals: exact-whitening sizes ('none': skip)")
    p.add_argument("--goal-gn-sizes", default="2048x2048,4096x11008", help="with --goals: GradNorm sizes")
    p.add_argument("--kappa", default="1e6", help="with --goals: comma-separated condition numbers")
    p.add_argument("--goal-numpy-sizes", default="1024x4096,2048x2048",
                   help="with --goals: sizes of the C++-vs-NumPy rows (NS10, exact; 'none': skip)")
    p.add_argument("--clock", choices=("wall", "thread"), default=None,
                   help="wall time, or the calling thread's CPU time (default: thread with --goals, else wall)")
    args = p.parse_args(argv)
    for option, path in (("--markdown", args.markdown), ("--json", args.json)):
        problem = path and output_path_problem(path, option)
        if problem:  # before the run, not a traceback after it
            p.error(problem)
    clock = args.clock or ("thread" if args.goals else "wall")
    _CLOCK.update(fn=time.thread_time if clock == "thread" else time.perf_counter, name=clock)

    if not _cpp_backend.available():
        print(f"swanref bench: the C++ core is not available: {_cpp_backend.unavailable_reason()}", file=sys.stderr)
        return 2
    core = _cpp_backend._core

    if args.sizes:
        cases = [(s, d) for s in _parse_sizes(args.sizes) for d in args.dtypes.split(",")]
    else:
        cases = [c for c in DEFAULT_CASES if not (args.quick and c[0] == (4096, 11008))]

    out_lines = []

    def log(line=""):
        print(line, flush=True)
        out_lines.append(line)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    limiter = threadpool_limits(limits=args.threads) if threadpool_limits else None
    try:
        log(f"# swanref bench (CPU): BLAS threads pinned to {args.threads} with threadpoolctl; "
            f"clock: {'CPU time of the calling thread' if clock == 'thread' else 'wall time'}")
        log(f"python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {__import__('scipy').__version__}, machine {platform.machine()}, "
            f"{_cpu_name()}")
        log(f"swanref._core BLAS: {core.blas_info()['source']}; load average at start "
            f"{' '.join(f'{x:.2f}' for x in _loadavg())}")
        for line in _threadpool_lines():
            log(f"threadpool: {line}")
        peaks = {d: measure_gemm_peak(np.dtype(d).type) for d in ("float64", "float32")}
        bw = measure_copy_bandwidth()
        for d, pk in peaks.items():
            log(f"GEMM peak {d} (2048^3, 1 thread): SciPy BLAS {pk['scipy_gflops']:.1f} GFLOP/s, "
                f"NumPy {pk['numpy_gflops']:.1f} GFLOP/s")
        log(f"copy bandwidth (256 MiB, read+write): {bw['copy_gbs']:.1f} GB/s into an existing array, "
            f"{bw['copy_new_gbs']:.1f} GB/s into a new one")
        results = []
        t0 = time.perf_counter()
        if args.goals:
            results.append(run_goals(core, args.big, args.repeat, args.max_repeat_seconds, log,
                                     kappas=[float(k) for k in args.kappa.split(",")],
                                     exact_shapes=_parse_sizes(args.goal_sizes) if args.goal_sizes != "none" else [],
                                     gn_shapes=_parse_sizes(args.goal_gn_sizes),
                                     numpy_shapes=(_parse_sizes(args.goal_numpy_sizes)
                                                   if args.goal_numpy_sizes != "none" else [])))
            cases = []
        for (m, n), d in cases:
            results.append(run_case(core, m, n, d, args.steps, args.repeat, args.max_repeat_seconds, peaks, bw, log,
                                    full=args.full))
        log(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s; load average now "
            f"{' '.join(f'{x:.2f}' for x in _loadavg())} (other processes on the machine distort timings)")
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out_lines) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "peaks": peaks, "bandwidth": bw, "cases": results}, f, indent=1)
    return 0


def _loadavg():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):  # pragma: no cover
        return (float("nan"),) * 3


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
