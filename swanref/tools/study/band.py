"""Study 3: the singular-value band of the coupled iteration versus steps and beta."""
from __future__ import annotations

import numpy as np

from swanref.spec import spectral
from swanref.tools.study.common import (NS_SCALING, Context, Result, floor, kappa_key,
                                        legend_below, progress, rng_for, whiten)
from swanref.verify import matrices

COLUMNS = ["kappa", "beta", "steps", "sv_min", "sv_max", "pred_min", "pred_max", "guard_bound"]


def study_band(ctx: Context) -> Result:
    m, n = 32, 96
    kappas = ctx.pick("kappas", [10.0, 1e4], [10.0, 1e4])
    betas = ctx.pick("betas", [0.4, 0.5, 0.8], [0.4, 0.5, 0.8])
    steps_list = ctx.pick("steps", range(0, 31, 2), range(0, 41))
    params = dict(shape=[m, n], kappas=kappas, betas=betas, steps=steps_list, dtype="float64",
                  scaling=NS_SCALING, backend=ctx.backend)
    rows = []
    with progress(len(kappas) * len(betas) * len(steps_list), "band",
                  ctx.progress_stream) as bar:
        for kappa in kappas:
            G = matrices.conditioned(rng_for(ctx, 3, kappa_key(kappa)), m, n, kappa)
            s = np.linalg.svd(G, compute_uv=False)
            for beta in betas:
                for K in steps_list:
                    X = whiten(G, "newton_schulz", ctx.backend, K, beta)
                    with np.errstate(all="ignore"):
                        sx = np.linalg.svd(X, compute_uv=False) if np.all(np.isfinite(X)) \
                            else np.full(m, np.nan)
                    phi = spectral.newton_schulz_singular_values(s, K, beta, NS_SCALING)
                    rows.append([kappa, beta, K, float(np.min(sx)), float(np.max(sx)),
                                 float(np.min(phi)), float(np.max(phi)), max(1.0, 2 * beta)])
                    bar.update()

    fig = _figure(rows, kappas, betas, m, n) if ctx.plots else None
    findings, numbers = [], {}
    last = max(steps_list)
    for kappa in kappas:
        for beta in betas:
            r = [r for r in rows if r[0] == kappa and r[1] == beta and r[2] == last][0]
            tail = [r for r in rows if r[0] == kappa and r[1] == beta and r[2] >= last // 2]
            key = f"kappa_{kappa:.0e}.beta_{beta}"
            numbers.update({f"{key}.min": r[3], f"{key}.max": r[4], f"{key}.at_steps": last,
                            f"{key}.tail_min": min(t[3] for t in tail),
                            f"{key}.tail_max": max(t[4] for t in tail)})
            findings.append(f"kappa={kappa:.0e}, beta={beta}: band at K={last} "
                            f"[{r[3]:.3g}, {r[4]:.3g}] (predicted [{r[5]:.3g}, {r[6]:.3g}]); "
                            f"over K >= {last // 2}: [{min(t[3] for t in tail):.3g}, "
                            f"{max(t[4] for t in tail):.3g}]")
    return Result("band", "Singular-value band versus steps and beta",
                  "Smallest and largest output singular value of whiten(G, 'newton_schulz', "
                  "steps=K, beta=beta) (shaded), with the prediction of spec 3.6 (dashed). "
                  "beta = 0.5 converges to 1; beta = 0.4 converges linearly to sqrt(0.5); "
                  "beta = 0.8 never converges and oscillates inside the guard bound of 3.5.",
                  params, COLUMNS, rows, findings, numbers, figure=fig)


def _figure(rows, kappas, betas, m, n):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(kappas), len(betas), figsize=(12, 3.2 * len(kappas) + 1.2),
                             sharey=True, sharex=True, squeeze=False)
    for i_k, kappa in enumerate(kappas):
        for i_b, beta in enumerate(betas):
            ax = axes[i_k, i_b]
            sel = [r for r in rows if r[0] == kappa and r[1] == beta]
            K = [r[2] for r in sel]
            ax.fill_between(K, floor([r[3] for r in sel], 1e-6), [r[4] for r in sel],
                            color="C0", alpha=0.35, label="measured band [min, max]")
            ax.plot(K, floor([r[5] for r in sel], 1e-6), "--", color="C3", lw=1.2,
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
    legend_below(fig, axes, ncol=4)
    return fig
