"""Study 2: coupled Newton-Schulz error versus steps, with the spectral prediction (spec 3.6)."""
from __future__ import annotations

import numpy as np

from swanref.spec import spectral, tolerance
from swanref.tools.study.common import (CLIP, NS_BETA, NS_SCALING, Context, Result,
                                        accurate_line, clipped, compute_dtype, err, exact_polar,
                                        first, floor, guard_flag, kappa_key, legend_below,
                                        mark_clipped, ns_prediction_error, progress,
                                        reference_name, rng_for, round_input, whiten)
from swanref.verify import matrices

COLUMNS = ["kappa", "dtype", "steps", "error_to_polar", "predicted_error_to_polar",
           "error_to_prediction", "tolerance_to_prediction", "trusted", "diverged"]


def study_steps(ctx: Context) -> Result:
    m, n = 16, 48
    kappas = ctx.pick("kappas", [10.0, 1e4], [10.0, 1e3, 1e6])
    steps_list = ctx.pick("steps", range(0, 41, 4), range(0, 51, 2))
    dtypes = ctx.pick("dtypes", ["float64", "float32"], ["float64", "float32"])
    params = dict(shape=[m, n], kappas=kappas, steps=steps_list, dtypes=dtypes,
                  beta=NS_BETA, scaling=NS_SCALING, spectrum="geometric", backend=ctx.backend,
                  reference=reference_name())
    rows = []
    with progress(len(kappas) * len(dtypes) * len(steps_list), "steps",
                  ctx.progress_stream) as bar:
        for kappa in kappas:
            G = matrices.conditioned(rng_for(ctx, 2, kappa_key(kappa)), m, n, kappa)
            for dt in dtypes:
                Gi = round_input(G, dt)
                Gd = Gi.astype(np.float64)
                U, s, Vt = np.linalg.svd(Gd, full_matrices=False)
                exact = exact_polar(Gd, dt)
                for K in steps_list:
                    X = whiten(Gi, "newton_schulz", ctx.backend, K, NS_BETA)
                    phi = spectral.newton_schulz_singular_values(s, K, NS_BETA, NS_SCALING)
                    pred = (U * phi) @ Vt
                    tol = float(tolerance.newton_schulz_tolerance(
                        s, m, n, K, NS_BETA, NS_SCALING, compute_dtype(dt)))
                    rows.append([kappa, dt, K, float(err(X, exact)), ns_prediction_error(s, K),
                                 float(err(X, pred)), tol, tol <= tolerance.TRUSTED_LIMIT,
                                 bool(guard_flag(X))])
                    bar.update()

    fig = _figure(rows, kappas, dtypes, m, n) if ctx.plots else None
    findings, numbers = [], {}
    for dt in dtypes:
        for kappa in kappas:
            sel = [r for r in rows if r[0] == kappa and r[1] == dt]
            best = min(sel, key=lambda r: r[3])
            conv = [r[2] for r in sel if r[3] < 1e-6]
            blown = [r[2] for r in sel if r[8]]
            trusted = sum(1 for r in sel if r[7])
            over = sum(1 for r in sel if r[7] and r[5] > r[6])
            key = f"{dt}.kappa_{kappa:.0e}"
            numbers.update({f"{key}.floor": best[3], f"{key}.floor_at": best[2],
                            f"{key}.first_below_1e-6": first(conv, None),
                            f"{key}.first_diverged": first(blown, None),
                            f"{key}.trusted": trusted, f"{key}.over_bound": over})
            findings.append(
                f"{dt}, kappa={kappa:.0e}: best error to U V^T {best[3]:.1e} at K={best[2]}; "
                f"first K with error < 1e-6: {first(conv, 'none')}; diverged from K = "
                f"{first(blown)}; spec 8.3 tolerance exceeded at {over} of {trusted} "
                "trusted points")
    return Result("steps", "Error versus Newton-Schulz steps, with the spectral prediction",
                  "One gradient per condition number, rounded to the dtype, whitened with "
                  "K = 0, 2, 4, ... steps of the coupled iteration. Top: distance to the "
                  "exact polar factor, with the exact-arithmetic prediction of spec 3.6 "
                  "(swanref.spec.spectral) as lines. Bottom: distance to that prediction (the "
                  "floating-point error alone), with the spec 8.3 tolerance dashed where the "
                  "model makes a claim (tolerance <= 1e-2). Errors are ||.||_F / sqrt(k), "
                  f"k = min(m, n); crosses mark diverged runs (drawn at {CLIP:g}).",
                  params, COLUMNS, rows, findings, numbers, figure=fig)


def _figure(rows, kappas, dtypes, m, n):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(dtypes), figsize=(12, 8.5), sharex=True, squeeze=False)
    for j, dt in enumerate(dtypes):
        for i, kappa in enumerate(kappas):
            sel = [r for r in rows if r[0] == kappa and r[1] == dt]
            K = np.array([r[2] for r in sel])
            c = f"C{i}"
            div = np.array([bool(r[8]) for r in sel])
            for row, col, what in ((0, 3, "measured"), (1, 5, "measured")):
                y, over = clipped([r[col] for r in sel])
                over |= div
                axes[row, j].plot(K[~over], floor(y[~over]), "o", color=c, ms=4,
                                  label=f"kappa={kappa:.0e}: {what}")
                mark_clipped(axes[row, j], K, over, color=c,
                             label=f"kappa={kappa:.0e}: diverged (drawn at {CLIP:g})")
            axes[0, j].plot(K, floor([r[4] for r in sel]), "-", color=c, lw=1.2,
                            label=f"kappa={kappa:.0e}: spectral prediction (3.6)")
            tol = [r[6] if r[7] else np.nan for r in sel]
            axes[1, j].plot(K, tol, "--", color=c, lw=1.2,
                            label=f"kappa={kappa:.0e}: spec 8.3 tolerance")
        accurate_line(axes[0, j])
        axes[0, j].set_title(f"{dt}: distance to the polar factor U V^T")
        axes[1, j].set_title(f"{dt}: distance to the exact-arithmetic iterate (prediction)")
        for ax in axes[:, j]:
            ax.set_yscale("log")
            ax.set_ylim(1e-17, 50)
            ax.grid(True, alpha=0.3)
        axes[1, j].set_xlabel("Newton-Schulz steps K (beta = 0.5, gram_fro scaling)")
    axes[0, 0].set_ylabel("||X - U V^T||_F / sqrt(k),  k = min(m, n)")
    axes[1, 0].set_ylabel("||X - U phi_K(S) V^T||_F / sqrt(k)")
    fig.suptitle(f"Coupled Newton-Schulz error versus steps, {m} x {n} "
                 "(tolerance drawn where the model claims it, <= 1e-2)")
    legend_below(fig, axes, ncol=3)
    return fig
