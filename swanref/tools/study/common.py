"""What every study shares: the run context, the result record, the progress bar, the inputs
as a user would round them, the exact references and the error metric of spec 0."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from swanref import ops as api
from swanref.spec import spectral
from swanref.tools.progress import bar

NS_BETA = 0.5
NS_SCALING = "gram_fro"
#: the error below which the guide calls a method "accurate" (its summary table); drawn as a line
ACCURATE = 1e-3
#: errors above this are drawn at this height with a distinct marker (diverged or O(1) errors)
CLIP = 5.0
#: the error axes' metric, with k defined where it is drawn (spec 0)
ERROR_METRIC = "||X - X*||_F / sqrt(k), k = min(m, n)"


@dataclass
class Result:
    name: str
    title: str
    description: str
    params: dict
    columns: list
    rows: list
    findings: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)  # headline numbers quoted by docs/guide.md
    seconds: float = 0.0
    figure: object = None


@dataclass
class Context:
    quick: bool
    backend: str
    backends: list
    seed: int
    progress_stream: object = None
    grid: dict = field(default_factory=dict)  # overrides of a study's grid (tests, docs check)
    plots: bool = True  # False: numbers only (Result.figure is None)

    def pick(self, key, quick, full):
        """The grid ``key``: an override if given, else the quick or the full default."""
        if key in self.grid:
            return list(self.grid[key])
        return list(quick if self.quick else full)


def rng_for(ctx: Context, study: int, *key) -> np.random.Generator:
    """A generator per grid point, so a subset of a grid draws the same matrices as the whole."""
    return np.random.default_rng([ctx.seed, study, *[int(k) for k in key]])


def kappa_key(kappa: float) -> int:
    """An integer naming a condition number on the half-decade grid (1e6 -> 120)."""
    return int(round(20 * math.log10(kappa)))


def progress(total: int, label: str, stream=None):
    """A tqdm bar on stderr (or ``stream``) for ``total`` steps of one study."""
    return bar(total, label, stream)


def bf16():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def round_input(G64, dtype_name):
    """The input as a user would hand it over, rounded to ``dtype_name``, in the compute dtype.

    bfloat16 is emulated: round the input to bfloat16, compute in float32.
    """
    if dtype_name == "float64":
        return G64.copy()
    if dtype_name == "float32":
        return G64.astype(np.float32)
    if dtype_name == "bfloat16":
        return G64.astype(bf16()).astype(np.float32)
    raise ValueError(dtype_name)


def compute_dtype(dtype_name):
    return np.float64 if dtype_name == "float64" else np.float32


def err(X, E):
    """``||X - E||_F / sqrt(k)`` per slice (spec 0), k = min(m, n); inf when X is not finite."""
    X = np.asarray(X, dtype=np.float64)
    k = min(E.shape[-2:])
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.sqrt(np.sum((X - E) ** 2, axis=(-2, -1))) / math.sqrt(k)
    return np.where(np.isfinite(d), d, np.inf)


def guard_flag(X, beta=NS_BETA):
    """The divergence test of spec 3.5 (gram_fro/grad_fro scaling): non-finite or too large."""
    X = np.asarray(X, dtype=np.float64)
    k = min(X.shape[-2:])
    with np.errstate(over="ignore", invalid="ignore"):
        fro = np.sqrt(np.sum(X ** 2, axis=(-2, -1)))
    return ~np.isfinite(fro) | (fro > 1.01 * max(1.0, 2 * beta) * math.sqrt(k))


def whiten(G, method, backend, steps=None, beta=None):
    kw = {}
    if method in ("newton_schulz", "nsds"):
        kw = dict(steps=steps, beta=beta, on_divergence="ignore")
    with np.errstate(all="ignore"):
        return np.asarray(api.whiten(G, method, backend=backend, **kw))


def have_mpmath():
    try:
        import mpmath  # noqa: F401
    except ImportError:
        return False
    return True


def _gram_polar_mp(G, dps=34):
    """``(G G^T)^(-1/2) G`` of a full-row-rank wide float64 matrix at ``dps`` digits.

    Same result as ``swanref.verify.highprec.polar_factor`` (mpmath's SVD) on the full-rank
    inputs of the studies, about 5x faster: the eigendecomposition of the m x m Gram matrix
    replaces the SVD.  At 34 digits the Gram matrix's condition kappa^2 <= 1e16 still leaves
    ~1e-18 relative accuracy.
    """
    import mpmath as mp
    with mp.workdps(dps):
        Gm = np.vectorize(mp.mpf, otypes=[object])(G)
        E, Q = mp.eigsy(mp.matrix((Gm @ Gm.T).tolist()))
        Qn = np.array(Q.tolist(), dtype=object)
        d = np.array([1 / mp.sqrt(E[i]) for i in range(G.shape[0])], dtype=object)
        return np.vectorize(float, otypes=[np.float64])(((Qn * d) @ Qn.T) @ Gm)


def exact_polar(Gd, dtype_name):
    """The exact polar factor of the (rounded, full-rank, wide) input ``Gd``.

    For float64 input a float64 SVD would be judged against itself, so the reference is
    mpmath at 34 digits (correct to ~1e-16 at any kappa used here).  Narrower inputs are judged
    against the float64 SVD (reference backend), whose own error (~kappa 1e-16) is far below
    theirs.  Without mpmath the float64 reference is scipy's ``gesvd`` driver (an independent
    LAPACK algorithm, error ~kappa 1e-16).
    """
    if dtype_name != "float64":
        return np.asarray(api.whiten(Gd, "svd", backend="reference"))
    if have_mpmath():
        return _gram_polar_mp(Gd)
    import scipy.linalg
    U, _, Vt = scipy.linalg.svd(Gd, full_matrices=False, lapack_driver="gesvd")
    return U @ Vt


def reference_name():
    f64 = "mpmath 34 digits" if have_mpmath() else "scipy gesvd float64"
    return f"float64 input: {f64}; float32/bfloat16 input: float64 SVD (reference backend)"


def ns_prediction_error(s, steps, beta=NS_BETA, scaling=NS_SCALING):
    """Exact-arithmetic distance of the coupled iteration from ``U V^T`` (spec 3.6)."""
    phi = spectral.newton_schulz_singular_values(s, steps, beta, scaling)
    return float(np.sqrt(np.sum((phi - 1.0) ** 2)) / math.sqrt(len(s)))


def median(values):
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def first(values, default="never"):
    return values[0] if values else default


# -- plotting helpers ---------------------------------------------------------------------------

def legend_below(fig, axes, ncol=3, fontsize=8):
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


def floor(y, lo=1e-18):
    return np.maximum(np.asarray(y, dtype=np.float64), lo)


def clipped(y, clip=CLIP):
    """``(values drawn, mask of clipped points)``: values above ``clip`` (or inf/NaN) at clip."""
    y = np.asarray(y, dtype=np.float64)
    over = ~np.isfinite(y) | (y > clip)
    return np.where(over, clip, y), over


def break_gaps(x, y):
    """``(x, y)`` with NaN inserted where the grid skips points (a log-x gap wider than the
    grid's finest step), so a line never joins measurements across unmeasured values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return x, y
    gaps = np.diff(np.log10(x))
    wide = gaps > 1.01 * float(np.min(gaps))
    xs, ys = [x[0]], [y[0]]
    for i in range(1, x.size):
        if wide[i - 1]:
            xs.append(np.nan)
            ys.append(np.nan)
        xs.append(x[i])
        ys.append(y[i])
    return np.array(xs), np.array(ys)


def mark_clipped(ax, x, over, clip=CLIP, label=None, color="k"):
    """Draw the clipped points with a distinct marker at the clip height."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(over):
        ax.plot(x[over], np.full(int(np.sum(over)), clip), "x", color=color, ms=7, mew=1.6,
                zorder=5, label=label or f"diverged / error > {clip:g} (drawn at {clip:g})")


def accurate_line(ax):
    ax.axhline(ACCURATE, color="0.4", ls="-.", lw=1,
               label=f"{ACCURATE:g}: 'accurate' threshold of the guide's summary table")
