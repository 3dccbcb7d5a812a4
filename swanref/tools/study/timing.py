"""Study 6 (opt-in, ``--timing``): wall time per operator versus size, per backend and dtype."""
from __future__ import annotations

import time
import warnings

import numpy as np

from swanref import ops as api
from swanref.tools.study.common import Context, Result, legend_below, progress, rng_for

OPS = {
    "grad_norm": lambda G, b: api.grad_norm(G, backend=b),
    "whiten svd": lambda G, b: api.whiten(G, "svd", backend=b),
    "whiten eigh": lambda G, b: api.whiten(G, "eigh", backend=b),
    "whiten newton_schulz (10)": lambda G, b: api.whiten(G, "newton_schulz", backend=b,
                                                         on_divergence="ignore"),
    "whiten nsds (2)": lambda G, b: api.whiten(G, "nsds", backend=b, on_divergence="ignore"),
    "swan_update": lambda G, b: api.swan_update(G, backend=b, on_divergence="ignore"),
}
COLUMNS = ["backend", "dtype", "m", "n", "op", "seconds"]


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    n = sorted({i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "blas"})
    return "/".join(str(x) for x in n) if n else "unknown"


def _best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def study_timing(ctx: Context) -> Result:
    sizes = ctx.pick("sizes", [32, 64, 128], [64, 128, 256, 512, 1024])
    dtypes = ctx.pick("dtypes", ["float32"], ["float32", "float64"])
    repeats = 2 if ctx.quick else 3
    threads = blas_threads()
    params = dict(shapes=[[s, 4 * s] for s in sizes], dtypes=dtypes, repeats=repeats,
                  backends=ctx.backends, timing="best of repeats, after one warm-up call",
                  blas_threads=threads)
    rows = []
    with progress(len(ctx.backends) * len(dtypes) * len(sizes) * len(OPS), "timing",
                  ctx.progress_stream) as bar:
        rng = rng_for(ctx, 6, 0)
        for b in ctx.backends:
            for dt in dtypes:
                for size in sizes:
                    G = rng.standard_normal((size, 4 * size)).astype(dt)
                    for op, fn in OPS.items():
                        with warnings.catch_warnings(), np.errstate(all="ignore"):
                            warnings.simplefilter("ignore")
                            fn(G, b)
                            t = _best_time(lambda: fn(G, b), repeats)
                        rows.append([b, dt, size, 4 * size, op, t])
                        bar.update()

    fig = _figure(rows, ctx.backends, dtypes, sizes, repeats, threads) if ctx.plots else None
    findings = []
    big = max(sizes)
    for b in ctx.backends:
        for dt in dtypes:
            sel = {r[4]: r[5] for r in rows if r[0] == b and r[1] == dt and r[2] == big}
            findings.append(f"{b} {dt} {big} x {4 * big}: " + ", ".join(
                f"{op} {t * 1e3:.3g} ms" for op, t in sel.items()))
    return Result("timing", "Time versus size per backend",
                  "Wall time of one call of each public operator on a Gaussian m x 4m "
                  "gradient (best of the repeats after a warm-up call), one panel per backend "
                  f"and dtype, BLAS threads {threads}. Timings depend on the machine and its "
                  "load; read the ranking, not the digits.",
                  params, COLUMNS, rows, findings, figure=fig)


def _figure(rows, backends, dtypes, sizes, repeats, threads):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(backends), len(dtypes), figsize=(5.5 * len(dtypes) + 1,
                                                                  3.6 * len(backends) + 1.4),
                             sharey=True, sharex=True, squeeze=False)
    markers = "osD^v*"
    for i, b in enumerate(backends):
        for j, dt in enumerate(dtypes):
            ax = axes[i, j]
            for k, op in enumerate(OPS):
                sel = [r for r in rows if r[0] == b and r[1] == dt and r[4] == op]
                ax.plot([r[2] for r in sel], [r[5] for r in sel], "-", marker=markers[k],
                        ms=4, color=f"C{k}", label=op)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(x) for x in sizes])
            ax.set_yscale("log")
            ax.set_title(f"backend {b}, {dt}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(backends) - 1:
                ax.set_xlabel("m (gradient m x 4m)")
        axes[i, 0].set_ylabel(f"seconds per call (best of {repeats})")
    fig.suptitle("Time per call versus size"
                 + ("" if threads == "unknown" else
                    f" (BLAS pinned to {threads} thread{'s' if threads != '1' else ''})"))
    legend_below(fig, axes, ncol=3)
    return fig
