"""Study 5: how often the guard of spec 3.5 flags the coupled iteration, by dtype and steps."""
from __future__ import annotations

import warnings

import numpy as np

from swanref import ops as api
from swanref.spec.errors import DivergenceWarning
from swanref.tools.study.common import (NS_BETA, NS_SCALING, Context, Result, bf16, first,
                                        legend_below, progress, rng_for, round_input)
from swanref.verify import matrices

COLUMNS = ["family", "dtype", "steps", "flagged", "batch", "fraction_flagged"]


def families(ctx: Context, batch: int) -> dict:
    """(a) GradNorm'd square gradients, rank n - 1 exactly (spec 4.1), SWAN's own regime;
    (b) full-rank but ill-conditioned wide gradients, kappa log-uniform in [1e2, 1e6]."""
    rng = rng_for(ctx, 5, 0)
    fam_a = np.asarray(api.grad_norm(rng.standard_normal((batch, 32, 32)), backend="reference"))
    fam_b = np.stack([matrices.conditioned(rng, 32, 96, 10 ** rng.uniform(2, 6))
                      for _ in range(batch)])
    return {"gradnorm_square_32x32": fam_a, "ill_conditioned_32x96": fam_b}


def study_divergence(ctx: Context) -> Result:
    batch = int(ctx.grid.get("batch", 16 if ctx.quick else 48))
    dtypes = ctx.pick("dtypes", *[["float64", "float32"] + (["bfloat16"] if bf16() else [])] * 2)
    steps_list = ctx.pick("steps", range(0, 81, 8), range(0, 101, 4))
    fams = families(ctx, batch)
    params = dict(batch=batch, families=list(fams), dtypes=dtypes, steps=steps_list,
                  beta=NS_BETA, scaling=NS_SCALING, backend=ctx.backend,
                  guard="spec 3.5: non-finite or ||X||_F > 1.01 max(1, 2 beta) sqrt(k)",
                  detected_by="whiten(..., on_divergence='warn'): flagged slices come back NaN")
    rows = []
    with progress(len(fams) * len(dtypes) * len(steps_list), "divergence",
                  ctx.progress_stream) as bar:
        for fam, G in fams.items():
            for dt in dtypes:
                Gi = round_input(G, dt)
                for K in steps_list:
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore", DivergenceWarning)
                        X = np.asarray(api.whiten(Gi, "newton_schulz", steps=K, beta=NS_BETA,
                                                  on_divergence="warn", backend=ctx.backend))
                    flagged = int(np.sum(np.any(np.isnan(X), axis=(-2, -1))))
                    rows.append([fam, dt, K, flagged, batch, flagged / batch])
                    bar.update()

    fig = _figure(rows, fams, dtypes, batch) if ctx.plots else None
    findings, numbers = [], {}
    for fam in fams:
        for dt in dtypes:
            sel = [r for r in rows if r[0] == fam and r[1] == dt]
            first_k = [r[2] for r in sel if r[3] > 0]
            half = [r[2] for r in sel if r[5] >= 0.5]
            # the count at the largest K: where the flagged fraction levels off (bfloat16
            # levels off near one half, so "half flagged" alone can flip with the BLAS)
            numbers.update({f"{fam}.{dt}.first_flagged": first(first_k, None),
                            f"{fam}.{dt}.half_flagged": first(half, None),
                            f"{fam}.{dt}.flagged_at_max": sel[-1][3] if sel else None})
            findings.append(f"{fam}, {dt}: first flagged at K = {first(first_k)}"
                            f" (<= {max(steps_list)}), half flagged at K = {first(half)}")
    return Result("divergence", "Divergence of the coupled iteration",
                  "Batches of gradients whitened with whiten(G, 'newton_schulz', steps=K, "
                  "on_divergence='warn'); the fraction of slices the guard of spec 3.5 flags "
                  "(returned as NaN). Left: GradNorm'd square gradients, rank n - 1 (what SWAN "
                  "feeds the iteration for square weights, spec 4.1). Right: full-rank but "
                  "ill-conditioned gradients.",
                  params, COLUMNS, rows, findings, numbers, figure=fig)


def _figure(rows, fams, dtypes, batch):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    markers = {"float64": "o", "float32": "s", "bfloat16": "^"}
    for ax, fam in zip(axes, fams):
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
    legend_below(fig, axes, ncol=4)
    return fig
