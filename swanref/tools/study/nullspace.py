"""Study 4: null-space leakage of the coupled iteration for rank-deficient input."""
from __future__ import annotations

import math

import numpy as np

from swanref.spec import spectral, tolerance
from swanref.tools.study.common import (CLIP, NS_BETA, NS_SCALING, Context, Result, bf16,
                                        clipped,
                                        compute_dtype, first, floor, legend_below,
                                        mark_clipped, median, progress, rng_for, round_input,
                                        whiten)
from swanref.verify import matrices

COLUMNS = ["dtype", "seed", "steps", "leakage", "predicted_leakage", "tolerance", "trusted",
           "svd_leakage"]


def study_nullspace(ctx: Context) -> Result:
    m, n, rank, kappa = 32, 96, 12, 10.0
    dtypes = ctx.pick("dtypes", *[["float64", "float32"] + (["bfloat16"] if bf16() else [])] * 2)
    steps_list = ctx.pick("steps", range(0, 41, 4), range(0, 61, 2))
    seeds = int(ctx.grid.get("seeds", 1 if ctx.quick else 2))
    params = dict(shape=[m, n], rank=rank, kappa=kappa, dtypes=dtypes, steps=steps_list,
                  seeds=seeds, beta=NS_BETA, scaling=NS_SCALING, backend=ctx.backend,
                  bfloat16="input rounded to bfloat16, computed in float32")
    rows = []
    with progress(len(dtypes) * seeds * len(steps_list), "nullspace",
                  ctx.progress_stream) as bar:
        for seed in range(seeds):
            G = matrices.conditioned(rng_for(ctx, 4, seed), m, n, kappa, rank=rank)
            U, _, Vt = np.linalg.svd(G, full_matrices=False)
            Ur, Vr = U[:, :rank], Vt[:rank].T

            def leak(X):
                X = np.asarray(X, dtype=np.float64)
                with np.errstate(all="ignore"):
                    inside = Ur @ (Ur.T @ X @ Vr) @ Vr.T
                    v = float(np.linalg.norm(X - inside) / math.sqrt(rank))
                return v if np.isfinite(v) else np.inf

            for dt in dtypes:
                Gi = round_input(G, dt)
                s = np.linalg.svd(Gi.astype(np.float64), compute_uv=False)
                svd_leak = leak(whiten(Gi, "svd", ctx.backend))
                for K in steps_list:
                    X = whiten(Gi, "newton_schulz", ctx.backend, K, NS_BETA)
                    phi = spectral.newton_schulz_singular_values(s, K, NS_BETA, NS_SCALING)
                    pred = float(np.sqrt(np.sum(phi[rank:] ** 2)) / math.sqrt(rank))
                    tol = float(tolerance.newton_schulz_tolerance(
                        s, m, n, K, NS_BETA, NS_SCALING, compute_dtype(dt)))
                    rows.append([dt, seed, K, leak(X), pred, tol,
                                 tol <= tolerance.TRUSTED_LIMIT, svd_leak])
                    bar.update()

    fig = _figure(rows, dtypes, steps_list, m, n, rank, kappa) if ctx.plots else None
    findings, numbers = [], {}
    for dt in dtypes:
        sel = [r for r in rows if r[0] == dt]
        for k in (10, 20, 30, 40, 60):
            at = [r[3] for r in sel if r[2] == k]
            if at:
                numbers[f"{dt}.leakage_at_{k}"] = median(at)
                findings.append(f"{dt}: leakage at K={k}: {median(at):.1e}")
        big = sorted({r[2] for r in sel if r[3] > 1e-2})
        blown = sorted({r[2] for r in sel if not np.isfinite(r[3]) or r[3] > CLIP})
        numbers.update({f"{dt}.first_above_1e-2": first(big, None),
                        f"{dt}.first_diverged": first(blown, None),
                        f"{dt}.svd_leakage": median([r[7] for r in sel])})
        findings.append(f"{dt}: leakage first above 1e-2 at K = {first(big)}, diverged (inf "
                        f"or > {CLIP:g}) from K = {first(blown)} (svd: "
                        f"{median([r[7] for r in sel]):.1e})")
    return Result("nullspace", "Null-space leakage for rank-deficient input",
                  "A rank-12 gradient (32 x 96) is rounded to each dtype and whitened. Leakage "
                  "is the part of the output outside the exact range of the unrounded gradient "
                  "(P_U, P_V: projectors on its 12 left/right singular vectors); the exact "
                  "answer (spec 3.0) has none. Rounding puts noise into the null directions "
                  "which the iteration amplifies by (3 beta)^K = 1.5^K per step (spec 3.5); "
                  "thin lines are that prediction computed from the rounded input's own "
                  "spectrum, dashed adds the spec 8.3 tolerance. Crosses: diverged outputs "
                  f"(inf or leakage > {CLIP:g}), drawn at {CLIP:g}.",
                  params, COLUMNS, rows, findings, numbers, figure=fig)


def _figure(rows, dtypes, steps_list, m, n, rank, kappa):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 6.5))
    K = np.array(steps_list)
    for i, dt in enumerate(dtypes):
        c = f"C{i}"
        med = np.array([median([min(r[3], CLIP) for r in rows if r[0] == dt and r[2] == k])
                        for k in K])
        y, over = clipped(med, CLIP)
        over |= np.array([any(not np.isfinite(r[3]) or r[3] > CLIP
                              for r in rows if r[0] == dt and r[2] == k) for k in K])
        pred = [median([r[4] for r in rows if r[0] == dt and r[2] == k]) for k in K]
        tol = [median([r[4] + r[5] if r[6] else np.nan for r in rows
                       if r[0] == dt and r[2] == k]) for k in K]
        ax.plot(K[~over], floor(y[~over]), "o-", color=c, ms=4, label=f"{dt}: measured (median over seeds)")
        mark_clipped(ax, K, over, CLIP, color=c,
                     label=f"{dt}: diverged (inf or > {CLIP:g}), drawn at {CLIP:g}")
        ax.plot(K, floor(pred), "-", color=c, lw=0.8, alpha=0.7,
                label=f"{dt}: exact arithmetic on the rounded input (3.6)")
        ax.plot(K, tol, "--", color=c, lw=1.2, label=f"{dt}: prediction + spec 8.3 tolerance")
        svd_leak = median([r[7] for r in rows if r[0] == dt])
        ax.axhline(max(svd_leak, 1e-18), color=c, ls=":", lw=1,
                   label=f"{dt}: svd (exact method) for comparison")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 50)
    ax.set_xlabel("Newton-Schulz steps K (beta = 0.5)")
    ax.set_ylabel("leakage ||X - P_U X P_V||_F / sqrt(r),  r = rank of G")
    ax.set_title(f"Null-space leakage, {m} x {n} gradient of rank {rank} (kappa {kappa:g} on "
                 "its range)", fontsize=10)
    ax.grid(True, alpha=0.3)
    legend_below(fig, [ax], ncol=len(dtypes))
    return fig
