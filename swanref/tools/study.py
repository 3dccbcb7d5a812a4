"""``swanref study``: numerical accuracy studies with plots (issue 7).

Each study sweeps one quantity (condition number, steps, beta, dtype, size), measures the
public operators (``swanref.whiten`` and friends) against the exact reference of spec 3.1 or
the spectral prediction of spec 3.6, draws the spec tolerance (section 8) where it applies,
and writes ``NAME.png``, ``NAME.svg``, ``NAME.csv`` and ``NAME.json`` to the output folder,
plus ``index.md`` / ``index.html`` that show every figure with the command and parameters that
made it.

    swanref study OUTDIR [--quick] [--backend NAME ...] [--only NAME ...] [--seed N]

Studies: condition, steps, band, nullspace, divergence, timing.  BLAS is pinned to one thread
(threadpoolctl) unless ``--threads`` says otherwise, so timings are per core.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import html
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from swanref.backends import registry as _backends
from swanref import ops as api
from swanref.spec import spectral
from swanref.spec import tolerance
from swanref.tools.threads import limit_blas_threads
from swanref.spec.errors import DivergenceWarning
from swanref.spec.readings import SPEC_VERSION
from swanref.verify import matrices

STUDY_NAMES = ("condition", "steps", "band", "nullspace", "divergence", "timing")
NS_BETA = 0.5
NS_SCALING = "gram_fro"


# -- small utilities ------------------------------------------------------------------------------

class Progress:
    """A one-line text progress bar on stderr: ``[#####.....] 12/40 study-name 3.1 s``."""

    def __init__(self, total: int, label: str, stream=None, width: int = 30):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._last = -1.0
        self._draw(force=True)

    def _draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        fill = int(self.width * self.done / self.total)
        bar = "#" * fill + "." * (self.width - fill)
        self.stream.write(f"\r[{bar}] {self.done:>4}/{self.total:<4} {self.label:<11} "
                          f"{now - self.start:6.1f} s")
        self.stream.flush()

    def step(self, n: int = 1):
        self.done = min(self.done + n, self.total)
        self._draw()

    def close(self):
        self.done = self.total
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()


def _bf16():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def _round_input(G64, dtype_name):
    """The input as a user would hand it over: rounded to ``dtype_name``; compute dtype array.

    bfloat16 is emulated as the brief says: round the input to bfloat16, compute in float32.
    """
    if dtype_name == "float64":
        return G64.copy()
    if dtype_name == "float32":
        return G64.astype(np.float32)
    if dtype_name == "bfloat16":
        return G64.astype(_bf16()).astype(np.float32)
    raise ValueError(dtype_name)


def _compute_dtype(dtype_name):
    return np.float64 if dtype_name == "float64" else np.float32


def _err(X, E):
    """``||X - E||_F / sqrt(k)`` per slice (spec 0), k = min(m, n); inf when X is not finite."""
    X = np.asarray(X, dtype=np.float64)
    k = min(E.shape[-2:])
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.sqrt(np.sum((X - E) ** 2, axis=(-2, -1))) / math.sqrt(k)
    return np.where(np.isfinite(d), d, np.inf)


def _guard_flag(X, beta=NS_BETA):
    """The divergence test of spec 3.5 (gram_fro/grad_fro scaling): non-finite or too large."""
    X = np.asarray(X, dtype=np.float64)
    k = min(X.shape[-2:])
    with np.errstate(over="ignore", invalid="ignore"):
        fro = np.sqrt(np.sum(X ** 2, axis=(-2, -1)))
    return ~np.isfinite(fro) | (fro > 1.01 * max(1.0, 2 * beta) * math.sqrt(k))


def _whiten(G, method, backend, steps=None, beta=None):
    kw = {}
    if method in ("newton_schulz", "nsds"):
        kw = dict(steps=steps, beta=beta, on_divergence="ignore")
    with np.errstate(all="ignore"):
        return np.asarray(api.whiten(G, method, backend=backend, **kw))


def _have_mpmath():
    try:
        import mpmath  # noqa: F401
    except ImportError:
        return False
    return True


def _exact_polar(Gd, dtype_name):
    """The exact polar factor of the (rounded) input ``Gd``, independent of the method tested.

    For float64 input a float64 SVD would be judged against itself, so the reference is
    mpmath at 34 digits (``swanref.verify.highprec``; correct to ~1e-16 at any kappa used
    here).  Narrower inputs are judged against the float64 SVD (reference backend), whose own
    error (~kappa 1e-16) is far below theirs.  Without mpmath the float64 reference falls
    back to scipy's ``gesvd`` driver (an independent LAPACK algorithm, error ~kappa 1e-16).
    """
    if dtype_name != "float64":
        return np.asarray(api.whiten(Gd, "svd", backend="reference"))
    if _have_mpmath():
        from swanref.verify import highprec
        return highprec.polar_factor(Gd, dps=34)
    import scipy.linalg
    U, _, Vt = scipy.linalg.svd(Gd, full_matrices=False, lapack_driver="gesvd")
    return U @ Vt


def _reference_name():
    f64 = "mpmath 34 digits" if _have_mpmath() else "scipy gesvd float64"
    return f"float64 input: {f64}; float32/bfloat16 input: float64 SVD (reference backend)"


def _ns_prediction_error(s, steps, beta=NS_BETA, scaling=NS_SCALING):
    """Exact-arithmetic distance of the coupled iteration from ``U V^T`` (spec 3.6)."""
    phi = spectral.newton_schulz_singular_values(s, steps, beta, scaling)
    return float(np.sqrt(np.sum((phi - 1.0) ** 2)) / math.sqrt(len(s)))


def _median(values):
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def _legend_below(fig, axes, ncol=3, fontsize=8):
    """One legend for the whole figure, below the axes (never on top of the data)."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    rows = math.ceil(len(labels) / ncol)
    height = fig.get_size_inches()[1]
    frac = min(0.45, (0.12 + 0.16 * rows) / height)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=fontsize,
               frameon=False)
    fig.tight_layout(rect=(0, frac, 1, 1))


def _floor(y, lo=1e-18):
    return np.maximum(np.asarray(y, dtype=np.float64), lo)


@dataclass
class Result:
    name: str
    title: str
    description: str
    params: dict
    columns: list
    rows: list
    findings: list = field(default_factory=list)
    seconds: float = 0.0
    figure: object = None


@dataclass
class Context:
    quick: bool
    backend: str
    backends: list
    seed: int
    progress_stream: object = None


# -- 1. error versus condition number ---------------------------------------------------------

def study_condition(ctx: Context) -> Result:
    m, n = 16, 48
    kappas = [10.0 ** e for e in ((0, 1, 2, 4, 6, 8) if ctx.quick else np.arange(0, 8.5, 0.5))]
    seeds = 1 if ctx.quick else 3
    dtypes = ["float64", "float32"]
    methods = [("svd", None), ("eigh", None), ("newton_schulz", 10), ("newton_schulz", 20),
               ("newton_schulz", 40)]
    params = dict(shape=[m, n], kappas=kappas, seeds=seeds, dtypes=dtypes,
                  spectrum="geometric", methods=[f"{a}" + (f"[{k}]" if k else "")
                                                 for a, k in methods],
                  beta=NS_BETA, scaling=NS_SCALING, backend=ctx.backend,
                  reference=_reference_name())
    columns = ["kappa", "kappa_measured", "seed", "dtype", "method", "steps", "error",
               "tolerance", "predicted", "within_tolerance", "diverged", "bound_applies"]
    rows = []
    bar = Progress(len(kappas) * seeds * len(dtypes), "condition", ctx.progress_stream)
    rng = np.random.default_rng(ctx.seed)
    for kappa in kappas:
        for seed in range(seeds):
            G = matrices.conditioned(rng, m, n, kappa)
            for dt in dtypes:
                Gi = _round_input(G, dt)
                Gd = Gi.astype(np.float64)
                exact = _exact_polar(Gd, dt)
                kap = float(tolerance.condition_number(Gd))
                s = np.linalg.svd(Gd, compute_uv=False)
                ref_tol = float(tolerance.exact_whitening_tolerance(m, n, kap, np.float64))
                for method, steps in methods:
                    X = _whiten(Gi, method, ctx.backend, steps, NS_BETA if steps else None)
                    e = float(_err(X, exact))
                    if steps is None:
                        tol = float(tolerance.exact_whitening_tolerance(
                            m, n, kap, _compute_dtype(dt), method)) + ref_tol
                        # spec 8.2: the bound applies while kappa u < 1e-3 (svd) or
                        # kappa^2 u < 1e-3 (eigh); beyond, the rank decision is ill-posed
                        u = tolerance.unit_roundoff(_compute_dtype(dt))
                        applies = (kap if method == "svd" else kap ** 2) * u < 1e-3
                        pred = 0.0
                        diverged = False
                    else:
                        pred = _ns_prediction_error(s, steps)
                        ns_tol = float(tolerance.newton_schulz_tolerance(
                            s, m, n, steps, NS_BETA, NS_SCALING, _compute_dtype(dt)))
                        applies = ns_tol <= tolerance.TRUSTED_LIMIT
                        tol = pred + ns_tol + ref_tol
                        diverged = bool(_guard_flag(X))
                    within = bool(e <= tol) if applies else None
                    rows.append([kappa, kap, seed, dt, method, steps or 0, e, tol, pred,
                                 within, diverged, applies])
                bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), sharey=True)
    colors = {"svd": "C0", "eigh": "C1", 10: "C2", 20: "C3", 40: "C4"}
    for ax, dt in zip(axes, dtypes):
        for method, steps in methods:
            key = steps or method
            label = method if steps is None else f"newton_schulz, {steps} steps"
            sel = [r for r in rows if r[3] == dt and r[4] == method and r[5] == (steps or 0)]
            ks = sorted({r[0] for r in sel})
            med = [_median([min(r[6], 5.0) for r in sel if r[0] == k]) for k in ks]
            ax.plot(ks, _floor(med), "o-", color=colors[key], label=label, ms=4)
            ax.scatter([r[0] for r in sel], _floor([min(r[6], 5.0) for r in sel]),
                       color=colors[key], s=6, alpha=0.35)
            if steps is None:
                tol = [_median([r[7] if r[11] else np.nan for r in sel if r[0] == k])
                       for k in ks]
                ax.plot(ks, tol, "--", color=colors[key], lw=1.2,
                        label=f"{method}: spec 8.2 tolerance (where it applies)")
            else:
                pred = [_median([r[8] for r in sel if r[0] == k]) for k in ks]
                ax.plot(ks, _floor(pred), ":", color=colors[key], lw=1.5,
                        label=f"{steps} steps: exact-arithmetic prediction (3.6)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-17, 20)
        ax.set_xlabel("condition number kappa = s_1 / s_r of G")
        ax.set_title(f"{dt} input, {m} x {n}, geometric spectrum")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("error ||X - U V^T||_F / sqrt(k)")
    fig.suptitle("Whitening error versus condition number (errors above 5 clipped to 5)")
    _legend_below(fig, axes, ncol=3)

    findings = []
    for dt in dtypes:
        for method in ("svd", "eigh"):
            sel = [r for r in rows if r[3] == dt and r[4] == method]
            judged = [r for r in sel if r[11]]
            bad = sum(1 for r in judged if r[9] is False)
            kmax = max(r[0] for r in sel)
            top = _median([r[6] for r in sel if r[0] == kmax])
            at1 = _median([r[6] for r in sel if r[0] == 1.0])
            last = max(r[1] for r in judged) if judged else float("nan")
            findings.append(f"{dt} {method}: error at kappa=1 {at1:.1e}, at kappa={kmax:.0e} "
                            f"{top:.1e}; the spec 8.2 bound applies up to kappa {last:.0e} "
                            f"({len(judged)} of {len(sel)} points), {bad} of them above it")
        for steps in (10, 20, 40):
            sel = [r for r in rows if r[3] == dt and r[5] == steps]
            ok = [r[0] for r in sel if r[6] < 1e-3]
            kmax_ok = max(ok) if ok else float("nan")
            nd = sum(1 for r in sel if r[10])
            judged = [r for r in sel if r[9] is not None]
            over = [r for r in judged if r[9] is False]
            text = (f"{dt} newton_schulz {steps} steps: error < 1e-3 up to kappa = "
                    f"{kmax_ok:.0e}; guard (3.5) fires on {nd} of {len(sel)}; "
                    f"{len(over)} of {len(judged)} points where the spec 8.3 model makes a "
                    "claim are above prediction + tolerance")
            if over:
                text += " (at kappa " + ", ".join(sorted({f"{r[0]:.0e}" for r in over})) + \
                    ": the tolerance model under-estimates there)"
            findings.append(text)
    return Result("condition", "Error versus condition number",
                  "Gradients G = U diag(s) V^T with Haar-random U, V and a geometric spectrum "
                  "from 1 to 1/kappa are rounded to the dtype and whitened; the error is the "
                  "distance to the exact polar factor of the rounded input (mpmath at 34 "
                  "digits for float64 input, the float64 SVD for float32 input). Dashed: the "
                  "spec 8.2 tolerance of svd/eigh (including the reference's own bound), drawn "
                  "where the spec says it applies (kappa u < 1e-3 for svd, kappa^2 u < 1e-3 for "
                  "eigh). Dotted: the exact-arithmetic distance of the "
                  "coupled Newton-Schulz iteration from U V^T (spec 3.6): the iteration cannot "
                  "do better than this, however accurate the arithmetic.",
                  params, columns, rows, findings, figure=fig)


# -- 2. error versus steps --------------------------------------------------------------------

def study_steps(ctx: Context) -> Result:
    m, n = 16, 48
    kappas = [10.0, 1e4] if ctx.quick else [10.0, 1e3, 1e6]
    steps_list = list(range(0, 41, 4)) if ctx.quick else list(range(0, 51, 2))
    dtypes = ["float64", "float32"]
    params = dict(shape=[m, n], kappas=kappas, steps=steps_list, dtypes=dtypes,
                  beta=NS_BETA, scaling=NS_SCALING, spectrum="geometric", backend=ctx.backend,
                  reference=_reference_name())
    columns = ["kappa", "dtype", "steps", "error_to_polar", "predicted_error_to_polar",
               "error_to_prediction", "tolerance_to_prediction", "trusted"]
    rows = []
    bar = Progress(len(kappas) * len(dtypes) * len(steps_list), "steps", ctx.progress_stream)
    rng = np.random.default_rng(ctx.seed + 1)
    for kappa in kappas:
        G = matrices.conditioned(rng, m, n, kappa)
        for dt in dtypes:
            Gi = _round_input(G, dt)
            Gd = Gi.astype(np.float64)
            U, s, Vt = np.linalg.svd(Gd, full_matrices=False)
            exact = _exact_polar(Gd, dt)
            for K in steps_list:
                X = _whiten(Gi, "newton_schulz", ctx.backend, K, NS_BETA)
                phi = spectral.newton_schulz_singular_values(s, K, NS_BETA, NS_SCALING)
                pred = (U * phi) @ Vt
                tol = float(tolerance.newton_schulz_tolerance(s, m, n, K, NS_BETA, NS_SCALING,
                                                              _compute_dtype(dt)))
                rows.append([kappa, dt, K, float(_err(X, exact)), _ns_prediction_error(s, K),
                             float(_err(X, pred)), tol, tol <= tolerance.TRUSTED_LIMIT])
                bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True)
    for j, dt in enumerate(dtypes):
        for i, kappa in enumerate(kappas):
            sel = [r for r in rows if r[0] == kappa and r[1] == dt]
            K = [r[2] for r in sel]
            c = f"C{i}"
            axes[0, j].plot(K, _floor([min(r[3], 5) for r in sel]), "o", color=c, ms=4,
                            label=f"kappa={kappa:.0e}: measured")
            axes[0, j].plot(K, _floor([r[4] for r in sel]), "-", color=c, lw=1.2,
                            label=f"kappa={kappa:.0e}: spectral prediction (3.6)")
            axes[1, j].plot(K, _floor([min(r[5], 5) for r in sel]), "o", color=c, ms=4,
                            label=f"kappa={kappa:.0e}: measured")
            tol = [r[6] if r[7] else np.nan for r in sel]
            axes[1, j].plot(K, tol, "--", color=c, lw=1.2,
                            label=f"kappa={kappa:.0e}: spec 8.3 tolerance")
        axes[0, j].set_title(f"{dt}: distance to the polar factor U V^T")
        axes[1, j].set_title(f"{dt}: distance to the exact-arithmetic iterate (prediction)")
        for ax in axes[:, j]:
            ax.set_yscale("log")
            ax.set_ylim(1e-17, 20)
            ax.grid(True, alpha=0.3)
        axes[1, j].set_xlabel("Newton-Schulz steps K (beta = 0.5, gram_fro scaling)")
    axes[0, 0].set_ylabel("||X - U V^T||_F / sqrt(k)")
    axes[1, 0].set_ylabel("||X - U phi_K(S) V^T||_F / sqrt(k)")

    fig.suptitle(f"Coupled Newton-Schulz error versus steps, {m} x {n} "
                 "(tolerance drawn where the model claims it, <= 1e-2; errors clipped at 5)")
    _legend_below(fig, axes, ncol=3)

    findings = []
    for dt in dtypes:
        for kappa in kappas:
            sel = [r for r in rows if r[0] == kappa and r[1] == dt]
            best = min(sel, key=lambda r: r[3])
            conv = [r[2] for r in sel if r[3] < 1e-6]
            over = sum(1 for r in sel if r[7] and r[5] > r[6])
            findings.append(
                f"{dt}, kappa={kappa:.0e}: best error to U V^T {best[3]:.1e} at K={best[2]}; "
                f"first K with error < 1e-6: {conv[0] if conv else 'none'}; spec 8.3 "
                f"tolerance exceeded at {over} of {sum(1 for r in sel if r[7])} trusted points")
    return Result("steps", "Error versus Newton-Schulz steps, with the spectral prediction",
                  "One gradient per condition number, rounded to the dtype, whitened with "
                  "K = 0, 2, 4, ... steps of the coupled iteration. Top: distance to the "
                  "exact polar factor, with the exact-arithmetic prediction of spec 3.6 "
                  "(swanref.spec.spectral) as lines. Bottom: distance to that prediction (the "
                  "floating-point error alone), with the spec 8.3 tolerance dashed where the "
                  "model makes a claim (tolerance <= 1e-2).",
                  params, columns, rows, findings, figure=fig)


# -- 3. singular-value band versus steps and beta --------------------------------------------

def study_band(ctx: Context) -> Result:
    m, n = 32, 96
    kappas = [10.0, 1e4]
    betas = [0.4, 0.5, 0.8]
    steps_list = list(range(0, 31, 2)) if ctx.quick else list(range(0, 41))
    params = dict(shape=[m, n], kappas=kappas, betas=betas, steps=steps_list, dtype="float64",
                  scaling=NS_SCALING, backend=ctx.backend)
    columns = ["kappa", "beta", "steps", "sv_min", "sv_max", "pred_min", "pred_max",
               "guard_bound"]
    rows = []
    bar = Progress(len(kappas) * len(betas) * len(steps_list), "band", ctx.progress_stream)
    rng = np.random.default_rng(ctx.seed + 2)
    for kappa in kappas:
        G = matrices.conditioned(rng, m, n, kappa)
        s = np.linalg.svd(G, compute_uv=False)
        for beta in betas:
            for K in steps_list:
                X = _whiten(G, "newton_schulz", ctx.backend, K, beta)
                with np.errstate(all="ignore"):
                    sx = np.linalg.svd(X, compute_uv=False) if np.all(np.isfinite(X)) \
                        else np.full(m, np.nan)
                phi = spectral.newton_schulz_singular_values(s, K, beta, NS_SCALING)
                rows.append([kappa, beta, K, float(np.min(sx)), float(np.max(sx)),
                             float(np.min(phi)), float(np.max(phi)), max(1.0, 2 * beta)])
                bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(kappas), len(betas), figsize=(12, 3.2 * len(kappas) + 1.2),
                             sharey=True, sharex=True, squeeze=False)
    for i_k, kappa in enumerate(kappas):
        for i_b, beta in enumerate(betas):
            ax = axes[i_k, i_b]
            sel = [r for r in rows if r[0] == kappa and r[1] == beta]
            K = [r[2] for r in sel]
            ax.fill_between(K, _floor([r[3] for r in sel], 1e-6), [r[4] for r in sel],
                            color="C0", alpha=0.35, label="measured band [min, max]")
            ax.plot(K, _floor([r[5] for r in sel], 1e-6), "--", color="C3", lw=1.2,
                    label="predicted min / max (spec 3.6)")
            ax.plot(K, [r[6] for r in sel], "--", color="C3", lw=1.2)
            ax.axhline(1.0, color="k", lw=0.8, label="1 (the whitened value)")
            ax.axhline(max(1, 2 * beta), color="C1", ls=":", lw=1.5,
                       label="guard bound max(1, 2 beta) (spec 3.5)")
            ax.set_yscale("log")
            ax.set_ylim(1e-5, 3)
            ax.set_title(f"beta = {beta}, kappa = {kappa:.0e}", fontsize=10)
            ax.grid(True, alpha=0.3)
            if i_k == len(kappas) - 1:
                ax.set_xlabel("Newton-Schulz steps K")
        axes[i_k, 0].set_ylabel("output singular values")
    fig.suptitle(f"Singular-value band of the coupled Newton-Schulz output, {m} x {n} float64, "
                 "versus steps and beta")
    _legend_below(fig, axes, ncol=4)

    findings = []
    last = max(steps_list)
    for kappa in kappas:
        for beta in betas:
            r = [r for r in rows if r[0] == kappa and r[1] == beta and r[2] == last][0]
            tail = [r for r in rows if r[0] == kappa and r[1] == beta and r[2] >= last // 2]
            findings.append(f"kappa={kappa:.0e}, beta={beta}: band at K={last} "
                            f"[{r[3]:.3g}, {r[4]:.3g}] (predicted [{r[5]:.3g}, {r[6]:.3g}]); "
                            f"max over K >= {last // 2}: {max(t[4] for t in tail):.3g}")
    return Result("band", "Singular-value band versus steps and beta",
                  "Smallest and largest output singular value of whiten(G, 'newton_schulz', "
                  "steps=K, beta=beta) (shaded), with the prediction of spec 3.6 (dashed). "
                  "beta = 0.5 converges to 1; beta = 0.4 converges linearly to sqrt(0.5); "
                  "beta = 0.8 never converges and oscillates inside the guard bound of 3.5.",
                  params, columns, rows, findings, figure=fig)


# -- 4. null-space leakage for rank-deficient input --------------------------------------------

def study_nullspace(ctx: Context) -> Result:
    m, n, rank, kappa = 32, 96, 12, 10.0
    dtypes = ["float64", "float32"] + (["bfloat16"] if _bf16() is not None else [])
    steps_list = list(range(0, 41, 4)) if ctx.quick else list(range(0, 61, 2))
    seeds = 1 if ctx.quick else 2
    params = dict(shape=[m, n], rank=rank, kappa=kappa, dtypes=dtypes, steps=steps_list,
                  seeds=seeds, beta=NS_BETA, scaling=NS_SCALING, backend=ctx.backend,
                  bfloat16="input rounded to bfloat16, computed in float32")
    columns = ["dtype", "seed", "steps", "leakage", "predicted_leakage", "tolerance",
               "trusted", "svd_leakage"]
    rows = []
    bar = Progress(len(dtypes) * seeds * len(steps_list), "nullspace", ctx.progress_stream)
    rng = np.random.default_rng(ctx.seed + 3)
    for seed in range(seeds):
        G = matrices.conditioned(rng, m, n, kappa, rank=rank)
        U, s0, Vt = np.linalg.svd(G, full_matrices=False)
        Ur, Vr = U[:, :rank], Vt[:rank].T

        def leak(X):
            X = np.asarray(X, dtype=np.float64)
            with np.errstate(all="ignore"):
                inside = Ur @ (Ur.T @ X @ Vr) @ Vr.T
                v = float(np.linalg.norm(X - inside) / math.sqrt(rank))
            return v if np.isfinite(v) else np.inf

        for dt in dtypes:
            Gi = _round_input(G, dt)
            Gd = Gi.astype(np.float64)
            s = np.linalg.svd(Gd, compute_uv=False)
            svd_leak = leak(_whiten(Gi, "svd", ctx.backend))
            for K in steps_list:
                X = _whiten(Gi, "newton_schulz", ctx.backend, K, NS_BETA)
                phi = spectral.newton_schulz_singular_values(s, K, NS_BETA, NS_SCALING)
                pred = float(np.sqrt(np.sum(phi[rank:] ** 2)) / math.sqrt(rank))
                tol = float(tolerance.newton_schulz_tolerance(s, m, n, K, NS_BETA, NS_SCALING,
                                                              _compute_dtype(dt)))
                rows.append([dt, seed, K, leak(X), pred, tol, tol <= tolerance.TRUSTED_LIMIT,
                             svd_leak])
                bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for i, dt in enumerate(dtypes):
        c = f"C{i}"
        K = steps_list
        med = [_median([min(r[3], 10) for r in rows if r[0] == dt and r[2] == k]) for k in K]
        pred = [_median([r[4] for r in rows if r[0] == dt and r[2] == k]) for k in K]
        tol = [_median([r[4] + r[5] if r[6] else np.nan for r in rows
                        if r[0] == dt and r[2] == k]) for k in K]
        ax.plot(K, _floor(med), "o-", color=c, ms=4, label=f"{dt}: measured (median)")
        ax.plot(K, _floor(pred), "-", color=c, lw=0.8, alpha=0.7,
                label=f"{dt}: exact arithmetic on the rounded input (3.6)")
        ax.plot(K, tol, "--", color=c, lw=1.2, label=f"{dt}: prediction + spec 8.3 tolerance")
        svd_leak = _median([r[7] for r in rows if r[0] == dt])
        ax.axhline(max(svd_leak, 1e-18), color=c, ls=":", lw=1,
                   label=f"{dt}: svd (exact method) for comparison")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 20)
    ax.set_xlabel("Newton-Schulz steps K (beta = 0.5)")
    ax.set_ylabel("leakage ||X - P_U X P_V||_F / sqrt(r)")
    ax.set_title(f"Null-space leakage, {m} x {n} gradient of rank {rank} (kappa {kappa:g} on "
                 "its range)", fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend_below(fig, [ax], ncol=len(dtypes))

    findings = []
    for dt in dtypes:
        sel = [r for r in rows if r[0] == dt]
        for k in (10, 20, 30, 40, 60):
            at = [r[3] for r in sel if r[2] == k]
            if at:
                findings.append(f"{dt}: leakage at K={k}: {_median(at):.1e}")
        big = [r[2] for r in sel if r[3] > 1e-2]
        findings.append(f"{dt}: leakage first above 1e-2 at K = {min(big) if big else 'never'}"
                        f" (svd: {_median([r[7] for r in sel]):.1e})")
    return Result("nullspace", "Null-space leakage for rank-deficient input",
                  "A rank-12 gradient (32 x 96) is rounded to each dtype and whitened. Leakage "
                  "is the part of the output outside the exact range of the unrounded gradient "
                  "(P_U, P_V: projectors on its 12 left/right singular vectors); the exact "
                  "answer (spec 3.0) has none. Rounding puts noise into the null directions "
                  "which the iteration amplifies by (3 beta)^K = 1.5^K per step (spec 3.5); "
                  "thin lines are that prediction computed from the rounded input's own "
                  "spectrum, dashed adds the spec 8.3 tolerance.",
                  params, columns, rows, findings, figure=fig)


# -- 5. divergence of the coupled iteration --------------------------------------------------------

def study_divergence(ctx: Context) -> Result:
    batch = 16 if ctx.quick else 48
    dtypes = ["float64", "float32"] + (["bfloat16"] if _bf16() is not None else [])
    steps_list = list(range(0, 81, 8)) if ctx.quick else list(range(0, 101, 4))
    rng = np.random.default_rng(ctx.seed + 4)
    # (a) GradNorm'd square gradients: rank n - 1 exactly (spec 4.1), SWAN's own regime
    fam_a = np.asarray(api.grad_norm(rng.standard_normal((batch, 32, 32)), backend="reference"))
    # (b) full-rank but ill-conditioned wide gradients, kappa log-uniform in [1e2, 1e6]
    fam_b = np.stack([matrices.conditioned(rng, 32, 96, 10 ** rng.uniform(2, 6))
                      for _ in range(batch)])
    families = {"gradnorm_square_32x32": fam_a, "ill_conditioned_32x96": fam_b}
    params = dict(batch=batch, families=list(families), dtypes=dtypes, steps=steps_list,
                  beta=NS_BETA, scaling=NS_SCALING, backend=ctx.backend,
                  guard="spec 3.5: non-finite or ||X||_F > 1.01 max(1, 2 beta) sqrt(k)",
                  detected_by="whiten(..., on_divergence='warn'): flagged slices come back NaN")
    columns = ["family", "dtype", "steps", "flagged", "batch", "fraction_flagged"]
    rows = []
    bar = Progress(len(families) * len(dtypes) * len(steps_list), "divergence",
                   ctx.progress_stream)
    for fam, G in families.items():
        for dt in dtypes:
            Gi = _round_input(G, dt)
            for K in steps_list:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", DivergenceWarning)
                    X = np.asarray(api.whiten(Gi, "newton_schulz", steps=K, beta=NS_BETA,
                                              on_divergence="warn", backend=ctx.backend))
                flagged = int(np.sum(np.any(np.isnan(X), axis=(-2, -1))))
                rows.append([fam, dt, K, flagged, batch, flagged / batch])
                bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    markers = {"float64": "o", "float32": "s", "bfloat16": "^"}
    for ax, fam in zip(axes, families):
        for i, dt in enumerate(dtypes):
            sel = [r for r in rows if r[0] == fam and r[1] == dt]
            ax.plot([r[2] for r in sel], [r[5] for r in sel], "-", marker=markers[dt],
                    color=f"C{i}", ms=4, label=dt + (" (input rounded, float32 compute)"
                                                     if dt == "bfloat16" else ""))
        ax.set_xlabel("Newton-Schulz steps K (beta = 0.5)")
        ax.set_title(f"{fam} ({batch} slices)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.axvline(10, color="k", ls=":", lw=1, label="SWAN default: 10 steps")
    axes[0].set_ylabel("fraction of slices flagged by the guard (3.5)")
    fig.suptitle("Divergence of the coupled iteration: slices the guard flags, by dtype and steps")
    _legend_below(fig, axes, ncol=4)

    findings = []
    for fam in families:
        for dt in dtypes:
            sel = [r for r in rows if r[0] == fam and r[1] == dt]
            first = [r[2] for r in sel if r[3] > 0]
            half = [r[2] for r in sel if r[5] >= 0.5]
            findings.append(f"{fam}, {dt}: first flagged at K = {first[0] if first else 'never'}"
                            f" (<= {max(steps_list)}), half flagged at K = "
                            f"{half[0] if half else 'never'}")
    return Result("divergence", "Divergence of the coupled iteration",
                  "Batches of gradients whitened with whiten(G, 'newton_schulz', steps=K, "
                  "on_divergence='warn'); the fraction of slices the guard of spec 3.5 flags "
                  "(returned as NaN). Left: GradNorm'd square gradients, rank n - 1 (what SWAN "
                  "feeds the iteration for square weights, spec 4.1). Right: full-rank but "
                  "ill-conditioned gradients.",
                  params, columns, rows, findings, figure=fig)


# -- 6. time versus size ----------------------------------------------------------------------

def _best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def study_timing(ctx: Context) -> Result:
    sizes = [32, 64, 128] if ctx.quick else [64, 128, 256, 512, 1024]
    dtypes = ["float32"] if ctx.quick else ["float32", "float64"]
    repeats = 2 if ctx.quick else 3
    ops = {
        "grad_norm": lambda G, b: api.grad_norm(G, backend=b),
        "whiten svd": lambda G, b: api.whiten(G, "svd", backend=b),
        "whiten eigh": lambda G, b: api.whiten(G, "eigh", backend=b),
        "whiten newton_schulz (10)": lambda G, b: api.whiten(G, "newton_schulz", backend=b,
                                                             on_divergence="ignore"),
        "whiten nsds (2)": lambda G, b: api.whiten(G, "nsds", backend=b,
                                                   on_divergence="ignore"),
        "swan_update": lambda G, b: api.swan_update(G, backend=b, on_divergence="ignore"),
    }
    params = dict(shapes=[[s, 4 * s] for s in sizes], dtypes=dtypes, repeats=repeats,
                  backends=ctx.backends, timing="best of repeats, after one warm-up call",
                  blas_threads=_blas_threads())
    columns = ["backend", "dtype", "m", "n", "op", "seconds"]
    rows = []
    bar = Progress(len(ctx.backends) * len(dtypes) * len(sizes) * len(ops), "timing",
                   ctx.progress_stream)
    rng = np.random.default_rng(ctx.seed + 5)
    for b in ctx.backends:
        for dt in dtypes:
            for size in sizes:
                G = rng.standard_normal((size, 4 * size)).astype(dt)
                for op, fn in ops.items():
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore")
                        fn(G, b)
                        t = _best_time(lambda: fn(G, b), repeats)
                    rows.append([b, dt, size, 4 * size, op, t])
                    bar.step()
    bar.close()

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.2 * len(dtypes), 4.8), sharey=True,
                             squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, dt in zip(axes[0], dtypes):
        for j, b in enumerate(ctx.backends):
            for i, op in enumerate(ops):
                sel = [r for r in rows if r[0] == b and r[1] == dt and r[4] == op]
                ax.plot([r[2] for r in sel], [r[5] for r in sel], styles[j % 4], marker="o",
                        ms=4, color=f"C{i}", label=f"{op} [{b}]")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("m (matrix m x 4m)")
        ax.set_title(f"{dt}, BLAS threads: {_blas_threads()}")
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("seconds per call (best of %d)" % repeats)
    fig.suptitle("Time versus size per backend and operator")
    _legend_below(fig, axes, ncol=3 if len(dtypes) > 1 else 2)

    findings = []
    big = max(sizes)
    for b in ctx.backends:
        for dt in dtypes:
            sel = {r[4]: r[5] for r in rows if r[0] == b and r[1] == dt and r[2] == big}
            findings.append(f"{b} {dt} {big} x {4 * big}: " + ", ".join(
                f"{op} {t * 1e3:.2f} ms" for op, t in sel.items()))
    return Result("timing", "Time versus size per backend",
                  "Wall time of one call of each public operator on a Gaussian m x 4m "
                  "gradient (best of the repeats after a warm-up call), per backend and dtype.",
                  params, columns, rows, findings, figure=fig)


STUDIES = {
    "condition": study_condition,
    "steps": study_steps,
    "band": study_band,
    "nullspace": study_nullspace,
    "divergence": study_divergence,
    "timing": study_timing,
}


# -- output -------------------------------------------------------------------------------------

def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    n = [i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "blas"]
    return ",".join(str(x) for x in n) if n else "unknown"


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else (None if math.isnan(v) else
                                           ("inf" if v > 0 else "-inf"))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _write_result(res: Result, outdir: str, meta: dict):
    base = os.path.join(outdir, res.name)
    res.figure.savefig(base + ".png", dpi=90)
    res.figure.savefig(base + ".svg")
    import matplotlib.pyplot as plt
    plt.close(res.figure)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(res.columns)
        for r in res.rows:
            w.writerow(["" if v is None else v for v in r])
    with open(base + ".json", "w") as f:
        json.dump(_jsonable({"study": res.name, "title": res.title,
                             "description": res.description, "params": res.params,
                             "seconds": res.seconds, "findings": res.findings,
                             "columns": res.columns, "rows": res.rows, "meta": meta}), f,
                  indent=1)


def _versions():
    import matplotlib
    import scipy
    from swanref import __version__
    v = {"swanref": __version__, "spec": SPEC_VERSION, "python": platform.python_version(),
         "numpy": np.__version__, "scipy": scipy.__version__,
         "matplotlib": matplotlib.__version__}
    bf = _bf16()
    if bf is not None:
        import ml_dtypes
        v["ml_dtypes"] = ml_dtypes.__version__
    return v


def _write_index(results, outdir, meta):
    md = ["# swanref accuracy studies", "",
          f"Generated {meta['date']} by", "", "    " + meta["command"], "",
          f"Total time {meta['seconds']:.1f} s on {meta['machine']}; BLAS threads "
          f"{meta['blas_threads']}; accuracy backend `{meta['backend']}`, timing backends "
          f"{', '.join(meta['backends'])}.", "",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
          "Errors of matrix results are `||X - X*||_F / sqrt(k)`, k = min(m, n) (spec 0); "
          "tolerances are those of docs/spec.md section 8 (`swanref.spec.tolerance`).", "",
          "Contents: " + ", ".join(f"[{r.title}](#{r.name})" for r in results), ""]
    body = []
    for r in results:
        md += [f'<a id="{r.name}"></a>', "", f"## {r.title}", "", r.description, "",
               f"![{r.title}]({r.name}.png)", "",
               f"Files: [{r.name}.png]({r.name}.png), [{r.name}.svg]({r.name}.svg), "
               f"[{r.name}.csv]({r.name}.csv), [{r.name}.json]({r.name}.json). "
               f"Study time {r.seconds:.1f} s.", "",
               "Made with: `" + meta["command"] + f"` (study `{r.name}`); parameters:", "",
               "```json", json.dumps(_jsonable(r.params)), "```", "", "What it shows:", ""]
        md += [f"- {x}" for x in r.findings] + [""]
        body.append(
            f'<h2 id="{r.name}">{html.escape(r.title)}</h2>\n<p>{html.escape(r.description)}</p>\n'
            f'<p><img src="{r.name}.png" alt="{html.escape(r.title)}" style="max-width:100%"></p>\n'
            f'<p>Files: <a href="{r.name}.png">png</a>, <a href="{r.name}.svg">svg</a>, '
            f'<a href="{r.name}.csv">csv</a>, <a href="{r.name}.json">json</a>. '
            f'Study time {r.seconds:.1f} s.</p>\n'
            f'<p>Made with <code>{html.escape(meta["command"])}</code>; parameters:</p>\n'
            f'<pre>{html.escape(json.dumps(_jsonable(r.params)))}</pre>\n<ul>\n'
            + "".join(f"<li>{html.escape(x)}</li>\n" for x in r.findings) + "</ul>\n")
    with open(os.path.join(outdir, "index.md"), "w") as f:
        f.write("\n".join(md))
    head = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>swanref studies</title>"
            f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}"
            f"pre{{white-space:pre-wrap;background:#f4f4f4}}</style></head><body>\n"
            f"<h1>swanref accuracy studies</h1>\n<p>Generated {html.escape(meta['date'])} by "
            f"<code>{html.escape(meta['command'])}</code>; total {meta['seconds']:.1f} s on "
            f"{html.escape(meta['machine'])}, BLAS threads {meta['blas_threads']}.</p>\n<p>"
            + html.escape("Versions: " + ", ".join(f"{k} {v}" for k, v in
                                                    meta["versions"].items()))
            + "</p>\n<ul>" + "".join(f'<li><a href="#{r.name}">{html.escape(r.title)}</a></li>'
                                     for r in results) + "</ul>\n")
    with open(os.path.join(outdir, "index.html"), "w") as f:
        f.write(head + "".join(body) + "</body></html>\n")


def run(outdir, *, quick=False, backends=None, only=None, seed=0, command=None,
        stream=None) -> list:
    """Run the selected studies into ``outdir``; returns the list of Results."""
    import matplotlib
    matplotlib.use("Agg")
    os.makedirs(outdir, exist_ok=True)
    avail = [b for b in _backends.available() if b != "cupy"]
    backends = list(backends or avail)
    names = list(only or STUDY_NAMES)
    ctx = Context(quick=quick, backend=backends[0], backends=backends, seed=seed,
                  progress_stream=stream)
    meta = {"command": command or "swanref study " + outdir + (" --quick" if quick else ""),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "blas_threads": _blas_threads(), "backend": ctx.backend, "backends": backends,
            "versions": _versions(), "quick": quick, "seed": seed}
    t0 = time.perf_counter()
    results = []
    for name in names:
        start = time.perf_counter()
        res = STUDIES[name](ctx)
        res.seconds = time.perf_counter() - start
        _write_result(res, outdir, meta)
        results.append(res)
    meta["seconds"] = time.perf_counter() - t0
    _write_index(results, outdir, meta)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="swanref study", description="numerical accuracy studies with plots "
        "(PNG, SVG, CSV, JSON and an index page in OUTDIR)")
    parser.add_argument("outdir", help="output folder (created)")
    parser.add_argument("--quick", action="store_true",
                        help="coarse grids (well under a minute); default: a few minutes")
    parser.add_argument("--backend", action="append", choices=_backends.names(),
                        help="backend(s): the first runs the accuracy studies, all are timed "
                             "(default: every CPU backend available)")
    parser.add_argument("--only", action="append", choices=STUDY_NAMES, metavar="NAME",
                        help=f"run only these studies ({', '.join(STUDY_NAMES)}); repeatable")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1; 0 leaves the BLAS default)")
    args = parser.parse_args(argv)
    for name in args.backend or []:
        if not _backends.is_available(name):
            parser.error(f"backend {name!r} is not available here")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("swanref study: needs matplotlib (pip install 'swanref[plot]')", file=sys.stderr)
        return 2
    command = "swanref study " + " ".join(argv if argv is not None else sys.argv[1:])
    import scipy.linalg  # noqa: F401  (load every BLAS before limiting its threads)
    limiter = limit_blas_threads(args.threads)
    try:
        t0 = time.perf_counter()
        results = run(args.outdir, quick=args.quick, backends=args.backend, only=args.only,
                      seed=args.seed, command=command)
    finally:
        if limiter is not None:
            limiter.unregister()
    print(f"swanref study: {len(results)} studies in {time.perf_counter() - t0:.1f} s; "
          f"open {os.path.join(args.outdir, 'index.md')} (or index.html)")
    for r in results:
        print(f"\n[{r.name}] {r.title} ({r.seconds:.1f} s)")
        for x in r.findings:
            print(f"  - {x}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
