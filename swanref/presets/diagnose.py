"""Does a function implement a preset?  Fixed probes, the preset and its one-knob variants.

:func:`diagnose` runs a target on fixed probes and compares it with the preset and with variants
that differ in one way (coefficients, epsilon placement, safety factor, step count, compute
precision, rounded coefficients, transpose rule, batch-global norm, product form); docs/presets.md
section 7 and docs/spec.md section 8.6 (the per-probe tolerance).

Per-probe tolerance.  Rounding noise of relative size ``u`` enters every step; the composed
polynomial carries it to the output with the gain of its first-order (Daleckii-Krein) expansion
around the probe's singular values, which on null or tiny singular directions is the slope of the
schedule at 0 (hundreds to 8e4).  The tolerance of a (candidate, probe) pair is::

    tol = max(MATCH_TOLERANCE[precision], C_AMPLIFICATION * u * (1 + sqrt(k)) * N)

with ``N`` = :func:`noise_gain` (output noise per unit roundoff, summed over the steps), ``k`` the
longest product length (1 instead of ``1 + sqrt(k)`` where products accumulate in float32 and
round to bfloat16/float16 once).  A probe whose tolerance exceeds :data:`NO_CLAIM_LIMIT` asserts
nothing and is left out of the verdict ("no claim"), e.g. rank-deficient probes in bfloat16.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from swanref.presets.catalogue import PRESETS, get_preset, run_preset_unchecked, schedule
from swanref.presets.lowprec import is_representable, round_to

#: floor of the match tolerance per compute precision: the largest relative Frobenius difference
#: two correct runs differ by on well-conditioned input (float64/float32: summation order;
#: bfloat16/float16: about 3x / 13x the measured H100-vs-emulation maxima 0.026 / 0.0015,
#: docs/presets.md 6.2).  The per-probe tolerance adds the schedule's amplification above it.
MATCH_TOLERANCE = {"float64": 1e-9, "float32": 1e-5, "bfloat16": 0.08, "float16": 0.02}

#: unit roundoff of each compute precision
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "bfloat16": 2.0 ** -8,
                 "float16": 2.0 ** -11}

#: safety constant on the noise model: the largest observed ratio distance / (u acc N) between
#: two rounding sequences of one preset is 0.62 (bfloat16), 0.28 (float32); docs/spec.md 8.6
C_AMPLIFICATION = 2.0

#: a probe whose tolerance is above this asserts nothing (the relative Frobenius distance of two
#: outputs of the same norm scale is O(1)): it is reported as "no claim" and left out
NO_CLAIM_LIMIT = 0.5

#: input classes of the probes; a target that raises on every probe of an optional class is
#: reported as not supporting it (never as a mismatch)
OPTIONAL_CLASSES = ("batched",)


@dataclass(frozen=True)
class Probe:
    label: str
    G: np.ndarray
    cls: str = "plain"


def _spectral(rng, m, n, s):
    r = len(s)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return (U * s) @ V.T


#: condition numbers of the spectral probes per claimed dtype: as far as the dtype resolves
#: (float32: 1e4 with kappa u = 6e-4; float64 further); low precision is capped by NO_CLAIM_LIMIT
PROBE_KAPPAS = {"float64": (1e4, 1e8), "float32": (1e4,), "bfloat16": (1e2, 1e4),
                "float16": (1e2, 1e4)}


#: Frobenius norm of the float16 range probe: entries up to ~3e4 (representable), norm above
#: float16's largest finite value 65504
FP16_RANGE_NORM = 2e5


def probes(dtype: str = "float64") -> list:
    """The fixed probes for a claim in ``dtype``: four shapes in all (16x40, 40x16, 24x24 and a
    batch 3x16x40), so a JIT-compiled target compiles four times."""
    if dtype not in MATCH_TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(MATCH_TOLERANCE)}, got {dtype!r}")
    rng = np.random.default_rng(6)
    wide = rng.standard_normal((16, 40))
    out = [Probe("wide 16x40", wide), Probe("tall 40x16", rng.standard_normal((40, 16)))]
    kappas = PROBE_KAPPAS[dtype]
    out.append(Probe(f"square 24x24, kappa {kappas[0]:.0e}",
                     _spectral(rng, 24, 24, np.logspace(0, -math.log10(kappas[0]), 24))))
    for k in kappas:
        out.append(Probe(f"wide 16x40, kappa {k:.0e}",
                         _spectral(rng, 16, 40, np.logspace(0, -math.log10(k), 16))))
    out.append(Probe(f"tall 40x16, kappa {kappas[0]:.0e}",
                     _spectral(rng, 40, 16, np.logspace(0, -math.log10(kappas[0]), 16))))
    out += [
        Probe("batch 3x16x40, slice scales 1e-3/1/1e3",
              rng.standard_normal((3, 16, 40)) * np.array([1e-3, 1.0, 1e3])[:, None, None],
              "batched"),
        Probe("||G||_F = 1e-11", wide / np.linalg.norm(wide) * 1e-11),
        Probe("||G||_F = 1e-9", wide / np.linalg.norm(wide) * 1e-9),
        Probe("||G||_F = 1e-6", wide / np.linalg.norm(wide) * 1e-6),
        Probe("rank 1, 16x40", np.outer(rng.standard_normal(16), rng.standard_normal(40))),
        Probe("zero 16x40", np.zeros((16, 40))),
    ]
    if dtype == "float16":
        # entries within float16's range, a norm beyond it (65504): a source that casts before
        # normalising overflows here (DeepSpeed#8533), one that normalises in float32 first
        # (lowprec_order 'normalise_then_cast') does not -- the only probe that tells them apart
        out.append(Probe(f"||G||_F = {FP16_RANGE_NORM:.0e} (beyond float16's range)",
                         wide / np.linalg.norm(wide) * FP16_RANGE_NORM))
    if dtype in ("bfloat16", "float16"):
        return [replace(p, G=round_to(p.G, dtype).astype(np.float32)) for p in out]
    return [replace(p, G=p.G.astype(dtype)) for p in out]


# -- candidates ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    label: str
    preset: object
    sched: tuple
    precision: str         # what it computes in: float64 | float32 | bfloat16 | float16
    knob: str = "claim"    # the one knob it changes (pairs combine two different knobs)


def _round_sched(sched, digits=4):
    return tuple(tuple(round(float(v), digits) for v in t) for t in sched)


#: the normalisation knobs a claim may state on top of a preset (the Preset fields they set)
OVERRIDABLE = ("norm", "eps", "norm_scale", "lowprec_order")


def stated_preset(name: str, overrides=None):
    """Preset ``name`` with the stated normalisation knobs (``OVERRIDABLE``) replaced; a
    ValueError names an unknown one."""
    base = get_preset(name)
    bad = sorted(set(overrides or {}) - set(OVERRIDABLE))
    if bad:
        raise ValueError(f"cannot override {', '.join(bad)} of a preset; only "
                         f"{', '.join(OVERRIDABLE)}")
    return replace(base, **(overrides or {}))


def _override_label(overrides) -> str:
    names = {"norm": "eps form", "eps": "eps", "norm_scale": "safety factor",
             "lowprec_order": "low-precision order"}
    return ", ".join(f"{names[k]} {v:g}" if isinstance(v, float) else f"{names[k]} {v}"
                     for k, v in sorted((overrides or {}).items()))


def variants(name: str, dtype: str = "float64", steps=None, coefficients=None,
             overrides=None) -> list:
    """The candidates an implementation of ``name`` claimed in ``dtype`` is compared with; the
    first is the claim itself.  ``overrides`` (Preset fields of ``OVERRIDABLE``: a claim's
    stated epsilon, its form, the safety factor, the low-precision order) change the claim
    and so the base every one-knob variant differs from."""
    base = stated_preset(name, overrides)
    sched = schedule(name, steps, coefficients)
    if coefficients is not None:
        base = replace(base, coefficients=tuple(tuple(t) for t in sched))
    prec = dtype
    claim_label = f"preset {name!r}" if coefficients is None else \
        f"preset {name!r} with the given coefficients"
    if overrides:
        claim_label += f" ({_override_label(overrides)})"
    out = [Candidate(claim_label, base, sched, prec)]
    for other, p in PRESETS.items():
        if other in (name, "custom"):
            continue
        out.append(Candidate(f"preset {other!r} (different coefficients/normalisation)", p,
                             schedule(other), prec, "preset"))
        if p.steps != len(sched):
            try:
                out.append(Candidate(f"preset {other!r} with {len(sched)} steps", p,
                                     schedule(other, len(sched)), prec, "preset"))
            except ValueError:
                pass
    epss = sorted({1e-6, 1e-7, 1e-8, 1e-15} | ({base.eps} if base.eps > 0 else set()),
                  reverse=True)
    for norm, eps in [(nm, e) for nm in ("add", "clamp") for e in epss] + [("none", 0.0),
                                                                            ("safe", 0.0)]:
        if (norm, eps) != (base.norm, base.eps):
            out.append(Candidate(f"normalisation {norm!r} with eps={eps:g} instead of "
                                 f"{base.norm!r} eps={base.eps:g}",
                                 replace(base, norm=norm, eps=eps), sched, prec, "eps"))
    for scale in (1.0, 1.01, 1.02):
        if scale != base.norm_scale:
            out.append(Candidate(f"norm safety factor {scale:g} instead of {base.norm_scale:g}",
                                 replace(base, norm_scale=scale), sched, prec, "norm_scale"))
    for k in (len(sched) - 1, len(sched) + 1):
        if k >= 0:
            s2 = tuple(sched[:k]) if k < len(sched) else tuple(sched) + (
                _next_triple(name, sched, coefficients),)
            out.append(Candidate(f"{k} steps instead of {len(sched)}", base, s2, prec, "steps"))
    rounded = _round_sched(sched)
    if rounded != tuple(tuple(float(v) for v in t) for t in sched):
        out.append(Candidate("coefficients rounded to 4 decimals", base, rounded, prec,
                             "coefficients"))
    for p2 in _PRECISION_VARIANTS[dtype]:
        out.append(Candidate(f"computes in {p2} (input {dtype})", base, sched, p2, "precision"))
    if dtype in ("bfloat16", "float16"):
        label = (f"normalises in float32, then casts to {dtype} (instead of casting first)"
                 if base.lowprec_order == "cast_then_normalise" else
                 f"casts to {dtype}, then normalises (instead of normalising in float32)")
        other = ("normalise_then_cast" if base.lowprec_order == "cast_then_normalise"
                 else "cast_then_normalise")
        out.append(Candidate(label, replace(base, lowprec_order=other), sched, prec,
                             "lowprec_order"))
    out.append(Candidate("no transpose for tall input", replace(base, transpose="none"), sched,
                         prec, "transpose"))
    out.append(Candidate("one Frobenius norm over the whole batch, not per matrix",
                         replace(base, norm_over="all"), sched, prec, "batch"))
    other_form = "addmm" if base.form == "keller" else "keller"
    if base.form not in ("right", "coupled"):
        out.append(Candidate(f"product form {other_form!r} (rounding only)",
                             replace(base, form=other_form), sched, prec, "form"))
    return out


#: compute precisions a target may use instead of the claimed one (one knob)
_PRECISION_VARIANTS = {"float64": ("float32", "bfloat16", "float16"),
                       "float32": ("bfloat16", "float16"),
                       "bfloat16": ("float32",), "float16": ("float32",)}


def _next_triple(name, sched, coefficients):
    """The triple a source would run as step K+1: the next of its table, else the last."""
    try:
        s = schedule(name, len(sched) + 1, coefficients)
        return s[-1]
    except ValueError:
        return sched[-1]


# -- running the candidates ------------------------------------------------------------------------

def _run(cand: Candidate, G, dtype: str):
    """The candidate's output on ``G`` (a probe of the claimed dtype), as float64."""
    p = cand.precision
    if p in ("bfloat16", "float16"):
        out = run_preset_unchecked(np.asarray(G, np.float32), cand.preset, cand.sched, p)
    elif p == "float32":
        out = run_preset_unchecked(np.asarray(G, np.float32), cand.preset, cand.sched)
    else:
        out = run_preset_unchecked(np.asarray(G, np.float64), cand.preset, cand.sched)
    return np.asarray(out, np.float64)


def _outputs(cand: Candidate, probe_list, dtype: str) -> list:
    """Outputs on every probe; probes of the same matrix shape run as one batch (the presets
    normalise per matrix, so this changes nothing but the number of calls)."""
    if cand.preset.norm_over == "all":
        return [_run(cand, p.G, dtype) for p in probe_list]
    groups: dict = {}
    for i, p in enumerate(probe_list):
        groups.setdefault(p.G.shape[-2:], []).append(i)
    res = [None] * len(probe_list)
    for shape, idx in groups.items():
        stack = np.concatenate([probe_list[i].G.reshape((-1,) + shape) for i in idx])
        out = _run(cand, stack, dtype)
        pos = 0
        for i in idx:
            cnt = int(np.prod(probe_list[i].G.shape[:-2], dtype=int))
            res[i] = out[pos:pos + cnt].reshape(probe_list[i].G.shape)
            pos += cnt
    return res


# -- the noise model -------------------------------------------------------------------------------

def _compose(x, sched):
    """Values and derivatives of the composed polynomial on ``x``, and the intermediate values."""
    v = np.asarray(x, np.float64)
    d = np.ones_like(v)
    stages = [v]
    for a, b, c in sched:
        v2 = v * v
        d = d * (a + 3 * b * v2 + 5 * c * v2 * v2)
        v = v * (a + b * v2 + c * v2 * v2)
        stages.append(v)
    return v, d, stages


def _gain_rms(x, sched, m, n) -> float:
    """RMS over the m x n entries of the first-order gain of ``U P(S) V^T`` (P the composition
    of ``sched``) at singular values ``x``: sqrt(sum of squared Daleckii-Krein coefficients /
    (m n))."""
    k = len(x)
    P, dP, _ = _compose(x, sched)
    slope0 = float(np.prod([t[0] for t in sched])) if sched else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(x > 0, P / np.where(x > 0, x, 1), slope0)       # P(x)/x
        xi, xj = x[:, None], x[None, :]
        Pi, Pj = P[:, None], P[None, :]
        close = np.abs(xi - xj) <= 1e-7 * np.maximum(np.abs(xi), np.abs(xj))
        # (nearly) equal singular values: the divided difference is the derivative there
        dminus = np.where(close, dP[:, None], (Pi - Pj) / np.where(close, 1, xi - xj))
        s = xi + xj
        dplus = np.where(s > 0, (Pi + Pj) / np.where(s > 0, s, 1), slope0)
    core = 0.5 * (dminus ** 2 + dplus ** 2)
    core[np.diag_indices(k)] = dP ** 2
    total = float(np.sum(core)) + (m - k + n - k) * float(np.sum(ratio ** 2))
    return math.sqrt(total / (m * n))


def _noise_total(x, sched, m, n, w=None):
    """``sum_k ||x^(k)|| rms_k / ||x^(K)||`` for all stages at once: the remaining composition
    maps stage k's values to the final ones, so its divided differences are ratios of
    differences along the trajectory and its derivative the product of the later steps'.
    ``w``: how many singular values each entry of ``x`` stands for (a large matrix's values
    binned, :func:`binned`); pairs within a bin count with the diagonal gain."""
    K = len(sched)
    k = len(x)
    w = np.ones(k) if w is None else np.asarray(w, np.float64)
    X = [np.asarray(x, np.float64)]
    steps_d = []
    for a, b, c in sched:
        v = X[-1]
        v2 = v * v
        steps_d.append(a + 3 * b * v2 + 5 * c * v2 * v2)
        X.append(v * (a + b * v2 + c * v2 * v2))
    X = np.array(X)                                   # (K+1, k)
    final = X[-1]
    out_norm = float(np.sqrt(np.sum(w * final ** 2)))
    if out_norm == 0 or not np.isfinite(out_norm):
        return None
    dP = np.ones((K + 1, k))
    slope = np.ones(K + 1)
    for j in range(K - 1, -1, -1):   # P_j' = prod of the derivatives of steps j+1..K
        dP[j] = dP[j + 1] * steps_d[j]
        slope[j] = slope[j + 1] * sched[j][0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xi, xj = X[:, :, None], X[:, None, :]
        Fi, Fj = final[None, :, None], final[None, None, :]
        close = np.abs(xi - xj) <= 1e-7 * np.maximum(np.abs(xi), np.abs(xj))
        dminus = np.where(close, dP[:, :, None], (Fi - Fj) / np.where(close, 1, xi - xj))
        ssum = xi + xj
        dplus = np.where(ssum > 0, (Fi + Fj) / np.where(ssum > 0, ssum, 1),
                         slope[:, None, None])
        ratio = np.where(X > 0, final[None, :] / np.where(X > 0, X, 1), slope[:, None])
        core = 0.5 * (dminus ** 2 + dplus ** 2)
        idx = np.arange(k)
        core[:, idx, idx] = dP ** 2
        kk = float(np.sum(w))
        tot = np.einsum("i,sij,j->s", w, core, w) + (m - kk + n - kk) * (w * ratio ** 2).sum(
            axis=1)
        rms = np.sqrt(tot / (m * n))
        val = float(np.sum(np.sqrt((w * X ** 2).sum(axis=1)) * rms) / out_norm)
    return val if np.isfinite(val) else float("inf")


def denominator(fro, preset) -> float:
    """The preset's normalisation divisor for a Frobenius norm ``fro`` (add, clamp or none)."""
    d = fro * preset.norm_scale
    if preset.norm == "add":
        return d + preset.eps
    if preset.norm == "clamp":
        return max(d, preset.eps)
    return d


_GAIN_CACHE: dict = {}


def noise_gain(G2, preset, sched, sv=None) -> float:
    """Relative output noise per unit roundoff of one matrix ``G2`` run through ``sched``.

    Noise of relative size u injected before step k (k = 0: the normalisation) is carried to the
    output by the RMS first-order gain of the remaining composition at the intermediate singular
    values; the result is ``sum_k ||X_k||_F * gain_k / ||X_K||_F`` (the final rounding counts 1).
    ``sv``: the singular values of ``G2`` when the caller already has them.
    """
    G2 = np.asarray(G2, np.float64)
    m, n = G2.shape
    if sv is not None:
        sv = np.asarray(sv, np.float64)
        fro = float(np.linalg.norm(sv))
        d = denominator(fro, preset)
        if fro == 0 or d == 0 or not np.isfinite(fro):
            return 0.0
        x, w = binned(sv / d)
        total = _noise_total(x, sched, m, n, w)
        return 0.0 if total is None else total
    fro = float(np.linalg.norm(G2))
    d = denominator(fro, preset)
    if fro == 0 or d == 0 or not np.isfinite(fro):
        return 0.0
    key = (G2.shape, hash(G2.tobytes()), fro, float(f"{d:.12g}"), tuple(sched))
    hit = _GAIN_CACHE.get(key)
    if hit is not None:
        return hit
    skey = (G2.shape, key[1], fro)
    sv = _GAIN_CACHE.get(skey)
    if sv is None:
        sv = _GAIN_CACHE[skey] = np.linalg.svd(G2, compute_uv=False)
    x = sv / d
    total = _noise_total(x, sched, m, n)
    if total is None:
        return 0.0
    if len(_GAIN_CACHE) > 20000:
        _GAIN_CACHE.clear()
    _GAIN_CACHE[key] = total
    return total


#: from this many singular values on, noise_gain(sv=...) bins them (the gain is an average
#: over all pairs of values, a smooth function of them; O(K k^2) memory is GBs at k = 4096)
BIN_ABOVE = 1024
BINS = 512


def binned(x, bins: int | None = None):
    """``(values, weights)``: sorted ``x`` in ``bins`` groups of equal count, each stood for by
    its root mean square (so the weighted sum of squares is exact); ``x`` itself (weights 1)
    up to :data:`BIN_ABOVE` values."""
    x = np.sort(np.asarray(x, np.float64))[::-1]
    if x.size <= BIN_ABOVE:
        return x, np.ones(x.size)
    groups = np.array_split(x, bins or BINS)
    return (np.array([math.sqrt(float(np.mean(g * g))) for g in groups]),
            np.array([float(g.size) for g in groups]))


def probe_tolerance(G, preset, sched, precision: str, sv=None) -> float:
    """Match tolerance for one probe (the worst matrix of a batch) in ``precision``; ``sv``:
    the singular values of every matrix of ``G`` (shape (batch, k)) when already known."""
    G = np.asarray(G, np.float64)
    mats = G.reshape((-1,) + G.shape[-2:])
    m, n = G.shape[-2:]
    acc = 1.0 if precision in ("bfloat16", "float16") else 1.0 + math.sqrt(max(m, n))
    if preset.form == "coupled":
        # SWAN's coupled form multiplies Z by T each step: the noise gain of its Z (up to the
        # scalar map's slope) enters twice
        acc *= 2.0
    gain = max(noise_gain(g, preset, sched, None if sv is None else sv[i])
               for i, g in enumerate(mats))
    amp = C_AMPLIFICATION * subnormal_roundoff(mats, preset, precision) * acc * gain
    return max(MATCH_TOLERANCE[precision], amp)


#: spacing of the subnormal numbers of each compute precision (the absolute rounding error of
#: any value below the smallest normal one)
SUBNORMAL_SPACING = {"float64": 2.0 ** -1074, "float32": 2.0 ** -149,
                     "bfloat16": 2.0 ** -133, "float16": 2.0 ** -24}


def subnormal_roundoff(mats, preset, precision: str) -> float:
    """The unit roundoff of ``precision``, or more where the matrix (input or normalised) has
    entries of subnormal size: rounding there is absolute (half the subnormal spacing), i.e.
    relative ``spacing / (2 rms)``.  A float16 probe of norm 1e-13 normalised by eps 1e-7 has
    entries ~4e-8, below float16's spacing 6e-8: it asserts nothing (NO_CLAIM_LIMIT)."""
    u = UNIT_ROUNDOFF[precision]
    tiny = SUBNORMAL_SPACING[precision]
    for g in mats:
        fro = float(np.linalg.norm(g))
        d = denominator(fro, preset)
        if not (fro > 0 and d > 0 and math.isfinite(fro)):
            continue
        rms = min(fro, fro / d) / math.sqrt(g.size)
        u = max(u, tiny / (2.0 * rms))
    return u


# -- distances -------------------------------------------------------------------------------------

def relative_distance(out, ref) -> float:
    """Largest relative Frobenius difference over the matrices (NaN-pattern mismatch = inf)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return math.inf
    o = out.reshape((-1,) + out.shape[-2:])
    r = ref.reshape((-1,) + ref.shape[-2:])
    worst = 0.0
    for a, b in zip(o, r):
        na, nb = np.isnan(a), np.isnan(b)
        if np.any(na != nb):
            return math.inf
        a, b = np.where(na, 0, a), np.where(nb, 0, b)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            # an overflowed output or reference: inf/inf would be NaN, and max(worst, NaN)
            # keeps worst -- a diverged candidate would then look like a match
            return math.inf
        scale = max(np.linalg.norm(b), 1e-30)
        d = float(np.linalg.norm(a - b) / scale)
        worst = math.inf if math.isnan(d) else max(worst, d)
    return worst


_distance = relative_distance


@dataclass
class CandidateResult:
    label: str
    distance: float           # at the probe with the largest distance/tolerance ratio
    tolerance: float
    ratio: float              # max over claimed probes of distance / tolerance
    probe: str | None
    match: bool
    per_probe: dict = field(default_factory=dict)       # probe -> distance
    tolerances: dict = field(default_factory=dict)      # probe -> tolerance (None: no claim)

    def to_dict(self) -> dict:
        return {"label": self.label, "distance": _num(self.distance),
                "distance_infinite": math.isinf(self.distance),
                "tolerance": _num(self.tolerance), "ratio": _num(self.ratio),
                "ratio_infinite": math.isinf(self.ratio), "worst_probe": self.probe,
                "match": self.match}


def _num(x):
    """JSON-safe float: None for inf/nan (the caller adds a flag)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Diagnosis:
    preset: str
    dtype: str
    match: bool
    distance: float
    tolerance: float
    closest: str
    closest_distance: float
    per_probe: dict
    candidates: list          # (label, distance), by ratio
    # every candidate that matches as well (distance within its own tolerance on every claimed
    # probe): differences below the tolerance are rounding, so these are reported together,
    # never ranked; the claim wins a tie
    ties: tuple = ()
    per_probe_tolerance: dict = field(default_factory=dict)   # None: no claim on that probe
    unsupported: dict = field(default_factory=dict)           # input class -> exception text
    errors: dict = field(default_factory=dict)                # plain probe -> exception text
    details: list = field(default_factory=list)               # CandidateResult, by ratio
    note: str = ""
    claim_result: object = None                                # the claim's CandidateResult
    #: passing claim: (label, factor) of matching candidates factor >= NEAR_TIE_FACTOR times
    #: closer (distance/tolerance) than the claim
    near_ties: tuple = ()

    def near_tie_lines(self) -> list:
        """Text lines for a passing verdict that has near-ties (empty otherwise)."""
        if not self.match or not self.near_ties:
            return []
        lines = [f"note: matches preset {self.preset!r}, but the target is closer to (within "
                 "tolerance of both; the probes cannot tell them apart):"]
        for label, factor in self.near_ties[:4]:
            how = "exactly" if math.isinf(factor) else f"{factor:.3g}x closer"
            lines.append(f"  {label} ({how})")
        return lines

    @property
    def worst_probe(self):
        """The claimed probe with the largest distance/tolerance ratio for the claim."""
        best, worst = -1.0, None
        for k, d in self.per_probe.items():
            t = self.per_probe_tolerance.get(k)
            if t is None:
                continue
            r = d / t if t > 0 else (0.0 if d == 0 else math.inf)
            if r > best:
                best, worst = r, k
        return worst

    @property
    def no_claim(self) -> list:
        return [k for k, v in self.per_probe_tolerance.items() if v is None]

    def tie_note(self) -> str:
        others = [t for t in self.ties if t != self.closest]
        return f"; indistinguishable at {self.dtype} from: {', '.join(others)}" if others else ""

    def extras(self) -> str:
        parts = []
        for cls, msg in self.unsupported.items():
            parts.append(f"input class {cls!r} unsupported by the target ({msg}); its probe "
                         "is left out")
        for probe, msg in self.errors.items():
            parts.append(f"the target raised on probe {probe!r}: {msg}")
        if self.no_claim:
            parts.append(f"no claim on probe(s) {', '.join(self.no_claim)} (rounding noise "
                         f"amplified by the schedule exceeds {NO_CLAIM_LIMIT} at {self.dtype})")
        if self.note:
            parts.append(self.note)
        return "".join(f"\n  {p}" for p in parts)

    def summary(self) -> str:
        if self.match and self.closest.startswith(f"preset {self.preset!r}"):
            near = "".join(f"\n  {ln}" for ln in self.near_tie_lines())
            return (f"matches preset {self.preset!r} at {self.dtype} tolerance "
                    f"(distance {self.distance:.3g} <= {self.tolerance:.3g}){self.tie_note()}"
                    + self.extras() + near)
        if self.match:  # pragma: no cover - the claim wins ties
            return (f"within the {self.dtype} tolerance of preset {self.preset!r} (distance "
                    f"{self.distance:.3g} <= {self.tolerance:.3g}), but closer to: "
                    f"{self.closest} ({self.closest_distance:.3g})" + self.extras())
        worst = self.worst_probe
        best = self.details[0] if self.details else None
        if best is not None and best.match:
            why = f"it matches: {self.closest} (distance {self.closest_distance:.3g})"
        else:
            why = (f"no known variant matches; closest: {self.closest} "
                   f"({self.closest_distance:.3g})")
        why += self.tie_note()
        return (f"does NOT match preset {self.preset!r} at {self.dtype} tolerance "
                f"(distance {self.distance:.3g} > {self.tolerance:.3g}, worst on probe "
                f"{worst!r}); {why}" + self.extras())

    def to_dict(self) -> dict:
        return {"preset": self.preset, "dtype": self.dtype, "match": self.match,
                "distance": _num(self.distance), "distance_infinite": math.isinf(self.distance),
                "tolerance": _num(self.tolerance), "closest": self.closest,
                "closest_distance": _num(self.closest_distance), "ties": list(self.ties),
                "per_probe": [{"probe": k, "distance": _num(v),
                               "distance_infinite": math.isinf(v),
                               "tolerance": _num(self.per_probe_tolerance.get(k)),
                               "claim": self.per_probe_tolerance.get(k) is not None}
                              for k, v in self.per_probe.items()],
                "unsupported": dict(self.unsupported), "errors": dict(self.errors),
                "candidates": [c.to_dict() for c in self.details], "note": self.note,
                "near_ties": [{"label": lb, "factor": _num(f), "factor_infinite": math.isinf(f)}
                              for lb, f in self.near_ties]}


_REF_CACHE: dict = {}


def _key(name, dtype, steps, coefficients, overrides=None):
    coef = None if coefficients is None else tuple(tuple(float(v) for v in t)
                                                  for t in coefficients)
    return (name, dtype, steps, coef, tuple(sorted((overrides or {}).items())))


def references(name: str, dtype: str = "float64", steps=None, coefficients=None,
               overrides=None):
    """(probes, [(candidate, outputs, tolerances)]) for a claim, cached: they do not depend on
    the target."""
    key = _key(name, dtype, steps, coefficients, overrides)
    hit = _REF_CACHE.get(key)
    if hit is not None:
        return hit
    plist = probes(dtype)
    gains: dict = {}
    rows = []
    with np.errstate(all="ignore"):
        for cand in variants(name, dtype, steps, coefficients, overrides):
            outs = _outputs(cand, plist, dtype)
            tols = []
            for p in plist:
                gk = (cand.sched, cand.preset.norm, cand.preset.eps, cand.preset.norm_scale,
                      cand.preset.form, cand.precision, p.label)
                if gk not in gains:
                    gains[gk] = probe_tolerance(p.G, cand.preset, cand.sched, cand.precision)
                tols.append(gains[gk])
            rows.append((cand, outs, tols))
    if len(_REF_CACHE) > 64:
        _REF_CACHE.clear()
    _REF_CACHE[key] = (plist, rows)
    return plist, rows


def run_target(fn, plist) -> tuple:
    """``fn`` on every probe: (outputs by label, unsupported input classes, errors by label).

    A probe of an optional input class (a batch) on which ``fn`` raises marks the class as
    unsupported; an exception on any other probe is kept as an error (its output is None)."""
    outs, unsupported, errors = {}, {}, {}
    for p in plist:
        try:
            outs[p.label] = np.asarray(fn(p.G.copy()), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - reported, never a crash
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            text = f"{type(cause).__name__}: {cause}".strip()
            if p.cls in OPTIONAL_CLASSES:
                unsupported[p.cls] = text
            else:
                errors[p.label] = text
            outs[p.label] = None
    return outs, unsupported, errors


def evaluate(cand: Candidate, refs, tols, plist, outs, unsupported, dtype, tolerance=None,
             representable=None) -> CandidateResult:
    """Compare the target's outputs with one candidate's on every probe (spec 8.6).

    A candidate whose own output is not finite where the target's is (a variant that diverged)
    never matches: its distance there is infinite, so it is never named as the cause."""
    representable = {} if representable is None else representable
    narrow = _NARROWER.get((dtype, cand.precision))
    if narrow and narrow not in representable:
        representable[narrow] = _all_representable(outs, narrow)
    per, ptol = {}, {}
    worst_ratio, worst_probe = 0.0, None
    for p, ref, tol in zip(plist, refs, tols):
        if p.cls in unsupported:
            continue
        if tolerance is not None:
            tol = float(tolerance)
        out = outs[p.label]
        d = math.inf if out is None else _distance(out, ref)
        if math.isnan(d):
            d = math.inf
        per[p.label] = d
        if (not math.isfinite(tol) or tol > NO_CLAIM_LIMIT) and tolerance is None:
            ptol[p.label] = None
            continue
        ptol[p.label] = tol
        r = d / tol if tol > 0 else (0.0 if d == 0 else math.inf)
        if worst_probe is None or r > worst_ratio:
            worst_ratio, worst_probe = r, p.label
    dist = per.get(worst_probe, 0.0) if worst_probe else 0.0
    # a target that computes in a narrower format returns values of that format: the
    # candidate needs that signature, not only a distance within its wide tolerance
    ok = worst_ratio <= 1.0 and (not narrow or representable[narrow])
    return CandidateResult(cand.label, dist, ptol.get(worst_probe) or 0.0, worst_ratio,
                           worst_probe, ok, per, ptol)


def candidate_rows(cands, plist, dtype) -> list:
    """[(candidate, outputs, per-probe tolerances)] for candidates not in the cache."""
    rows = []
    with np.errstate(all="ignore"):
        for cand in cands:
            outs = _outputs(cand, plist, dtype)
            tols = [probe_tolerance(p.G, cand.preset, cand.sched, cand.precision)
                    for p in plist]
            rows.append((cand, outs, tols))
    return rows


def diagnose(fn, name: str, *, dtype: str = "float64", steps=None, tolerance=None,
             coefficients=None, overrides=None) -> Diagnosis:
    """Does ``fn`` (NumPy array in -> array out) implement preset ``name`` in ``dtype``?

    ``fn`` is run on the fixed :func:`probes` given as arrays of ``dtype`` (float32 containers
    holding bf16/fp16 values for the low-precision dtypes).  Its outputs are compared with the
    preset -- computed in ``dtype``, emulating PyTorch eager for bfloat16/float16 -- and with
    variants that differ in one way (:func:`variants`).  Each (candidate, probe) pair has its own
    tolerance (:func:`probe_tolerance`, or ``tolerance`` if given); a candidate matches when
    every claimed probe is within it.  A probe of an optional input class (a batch) on which
    ``fn`` raises is reported as unsupported and left out; an exception on any other probe is a
    mismatch (infinite distance) and its text is kept.  ``coefficients`` replaces the preset's
    table (``name='custom'`` requires it); ``overrides`` states the claim's epsilon, its
    form, the safety factor or the low-precision order (:data:`OVERRIDABLE`).

    When nothing matches, pairs of one-knob variants (two differences at once) and a refit of
    one coefficient triple are tried; when the claim matches, candidates that match much more
    closely are kept as near-ties (:attr:`Diagnosis.near_ties`).
    """
    if dtype not in MATCH_TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(MATCH_TOLERANCE)}, got {dtype!r}")
    plist, rows = references(name, dtype, steps, coefficients, overrides)
    outs, unsupported, errors = run_target(fn, plist)
    representable: dict = {}
    with np.errstate(all="ignore"):
        results = [evaluate(cand, refs, tols, plist, outs, unsupported, dtype, tolerance,
                            representable) for cand, refs, tols in rows]
        claim = results[0]
        batch_note = _batch_note(fn, plist, outs, unsupported, dtype)
        judged = unsupported
        batch_alone = any(c.match for (cand, _, _), c in zip(rows, results)
                          if cand.knob == "batch")
        if batch_note and not claim.match and not batch_alone:
            # the batch probe alone decides the batch rule: judge the other knobs without it
            judged = dict(unsupported, batched="judged apart")
            apart = [evaluate(cand, refs, tols, plist, outs, judged, dtype, tolerance,
                              representable) for cand, refs, tols in rows]
            if not apart[0].match:   # something besides the batch rule differs
                results = apart
        extra = []
        if not any(c.match for c in results[1:]) and not claim.match and not errors:
            extra = _second_round(rows, results, plist, outs, judged, dtype, tolerance,
                                  representable, name, steps, coefficients)
    all_rows = list(rows) + [(c, None, None) for c, _ in extra]
    results = results + [r for _, r in extra]
    ranked = sorted(results, key=lambda c: c.ratio)
    matching = [c for c in results if c.match]
    # the claim wins a tie; otherwise the smallest ratio (the other matching candidates are
    # listed as ties: which of them is smallest is decided by rounding)
    if claim.match:
        closest = claim
    elif matching:
        closest = min(matching, key=lambda c: c.ratio)
    else:   # nothing matches: the nearest candidate computing in the claimed precision
        same = [c for c, (cand, _, _) in zip(results, all_rows) if cand.precision == dtype]
        closest = min(same, key=lambda c: (c.distance, c.ratio))
    ties = tuple(c.label for c in matching)
    note, nearest = "", None
    if not matching and not errors and dtype in ("float64", "float32"):
        note = singular_value_map(plist, outs, rows[0], dtype)
        cause = map_cause(note)
        if closest.ratio > FAR_RATIO and not closest.match and cause:
            # no candidate is near (the nearest is FAR_RATIO tolerances away), but the output
            # is a map of G's singular values: name the map -- G itself (nothing ran), the
            # claim times a constant (a scale on the result), else a schedule that differs in
            # more than the one triple the refit tries (a table from another source)
            nearest, closest = closest, replace(closest, label=(
                f"{cause}; nearest known: {closest.label}"))
    if batch_note:
        note = f"{batch_note}; {note}" if note else batch_note
    # the closest first, then by ratio
    details = [closest] + [c for c in ranked if c is not closest and c is not nearest]
    near = ()
    if claim.match and claim.ratio > 0:
        near = tuple((c.label, claim.ratio / c.ratio if c.ratio > 0 else math.inf)
                     for c in ranked if c is not claim and c.match
                     and c.ratio * NEAR_TIE_FACTOR <= claim.ratio)
    return Diagnosis(name, dtype, claim.match and not errors, claim.distance, claim.tolerance,
                     closest.label, closest.distance, claim.per_probe,
                     [(c.label, c.distance) for c in details], ties, claim.tolerances,
                     unsupported, errors, details, note, claim, near)


#: a matching candidate at least this many times closer (in distance / tolerance) than the
#: claim is shown next to a passing verdict (a near-tie: the probes cannot reject either)
NEAR_TIE_FACTOR = 4.0

#: pairs: the best single variants (by ratio) combined with each other and with every
#: precision variant
PAIR_TOP = 5


def _changes(cand: Candidate, base: Candidate) -> tuple:
    """What ``cand`` changes relative to ``base``: (preset fields, schedule or None, precision
    or None)."""
    fields = {f: getattr(cand.preset, f) for f in cand.preset.__dataclass_fields__
              if f not in ("name", "source", "notes") and
              getattr(cand.preset, f) != getattr(base.preset, f)}
    sched = cand.sched if tuple(cand.sched) != tuple(base.sched) else None
    prec = cand.precision if cand.precision != base.precision else None
    return fields, sched, prec


def combine(a: Candidate, b: Candidate, base: Candidate):
    """The candidate with both one-knob changes, or None when they touch the same thing."""
    fa, sa, pa = _changes(a, base)
    fb, sb, pb = _changes(b, base)
    if set(fa) & set(fb) or (sa is not None and sb is not None) or (pa and pb):
        return None
    preset = replace(base.preset, **fa, **fb)
    return Candidate(f"{a.label} AND {b.label}", preset, sa or sb or base.sched,
                     pa or pb or base.precision, f"{a.knob}+{b.knob}")


def _second_round(rows, results, plist, outs, unsupported, dtype, tolerance, representable,
                  name, steps, coefficients) -> list:
    """Nothing matched: two knobs at once (pairs, cheaply pruned) and one refitted triple."""
    base = rows[0][0]
    singles = [(cand, r) for (cand, _, _), r in zip(rows[1:], results[1:])
               if math.isfinite(r.ratio)]
    singles.sort(key=lambda t: t[1].ratio)
    top = [c for c, _ in singles[:PAIR_TOP]]
    # the precision, low-precision order and safety factor variants pair with every top
    # single: each changes every probe a little, so a second difference elsewhere (an epsilon
    # on the tiny probes) pushes them out of the top by ratio
    partners = top + [c for c, _ in singles[PAIR_TOP:] if c.knob in ("precision",
                                                                     "lowprec_order",
                                                                     "norm_scale")]
    pairs, seen = [], set()
    for i, a in enumerate(top):
        for b in partners:
            if b is a or (b in top and top.index(b) < i) or a.knob == b.knob:
                continue
            c = combine(a, b, base)
            if c is not None and c.label not in seen:
                seen.add(c.label)
                pairs.append(c)
    fitted = refit_triple(plist, outs, base, dtype)
    if fitted is not None:
        pairs.insert(0, fitted)
    out = []
    for cand, refs, tols in candidate_rows(pairs, plist, dtype):
        out.append((cand, evaluate(cand, refs, tols, plist, outs, unsupported, dtype,
                                   tolerance, representable)))
    return out


#: the probes whose singular-value map the triple refit reads (well inside the dtype's range)
_FIT_PROBES = ("wide 16x40", "tall 40x16")


def refit_triple(plist, outs, base: Candidate, dtype):
    """Refit one (a, b, c) triple of the claim's schedule to the target's singular-value map.

    The target keeps G's singular vectors (else None); its map of ``x = s / d`` is compared with
    the schedule where triple k is free (least squares, one k at a time).  The best k whose fit
    leaves a residual at rounding level gives the candidate "custom coefficients: triple k
    differs by x%"; the full probe comparison then decides whether it matches."""
    from scipy.optimize import least_squares
    xs, ys = [], []
    for p in plist:
        if p.label not in _FIT_PROBES and not p.label.startswith("square 24x24"):
            continue
        out = outs.get(p.label)
        G = np.asarray(p.G, np.float64)
        if out is None or out.shape != G.shape or not np.all(np.isfinite(out)):
            return None
        U, sv, Vt = np.linalg.svd(G, full_matrices=False)
        core = U.T @ out @ Vt.T
        diag = np.diag(core).copy()
        if np.linalg.norm(core - np.diag(diag)) > 1e-2 * max(np.linalg.norm(out), 1e-300):
            return None
        d = denominator(float(np.linalg.norm(G)), base.preset)
        xs.append(sv / d)
        ys.append(diag)
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    sched = [tuple(t) for t in base.sched]
    if not sched:
        return None

    def composed(s):
        v = x.copy()
        for a, b, c in s:
            v2 = v * v
            v = v * (a + b * v2 + c * v2 * v2)
        return v

    best = None
    floor = max(MATCH_TOLERANCE[base.precision], 1e-12)
    ynorm = max(float(np.linalg.norm(y)), 1e-300)
    # multi-start (the composed map is far from linear in one triple): the claimed triple,
    # then the corners of a +-6% box (the differences real tables have are 2-9%)
    starts = [(1.0, 1.0, 1.0)] + list(itertools.product((0.94, 1.06), repeat=3))
    for g in starts:
        for k in range(len(sched)):
            # the last triple repeating is one table entry
            idx = [i for i in range(len(sched)) if sched[i] == sched[k]] \
                if k == len(sched) - 1 else [k]

            def resid(t, idx=idx):
                s = list(sched)
                for i in idx:
                    s[i] = tuple(t)
                with np.errstate(all="ignore"):
                    r = composed(s) - y
                return np.where(np.isfinite(r), r, 1e6)

            x0 = np.array(sched[k]) * np.array(g)
            try:
                fit = least_squares(resid, x0, method="lm", max_nfev=120)
            except (ValueError, np.linalg.LinAlgError):
                continue
            err = float(np.linalg.norm(fit.fun)) / ynorm
            if best is None or err < best[0]:
                best = (err, k, tuple(float(v) for v in fit.x), idx)
        if best is not None and best[0] <= 1e2 * floor:
            break
    if best is None or best[0] > 1e2 * floor:
        return None
    err, k, t, idx = best
    # the shortest spelling that fits as well (a table written by hand: 3.4, not 3.4000000001)
    for digits in (4, 6, 8, 10, 12):
        short = tuple(float(f"{v:.{digits}g}") for v in t)
        s = list(sched)
        for i in idx:
            s[i] = short
        with np.errstate(all="ignore"):
            e = float(np.linalg.norm(composed(s) - y)) / ynorm
        if e <= max(err, floor):
            t = short
            break
    old = sched[k]
    # relative to each entry, or to the triple's largest entry where the entry is 0 (c = 0)
    big = max(abs(v) for v in old) or 1.0
    rel = max(abs(t[i] - old[i]) / (abs(old[i]) or big) for i in range(3))
    if rel < 1e-4:
        return None
    s = list(sched)
    for i in idx:
        s[i] = t
    trip = ", ".join(f"{v:.6g}" for v in t)
    was = ", ".join(f"{v:.6g}" for v in old)
    table = [tuple(float(v) for v in t) for t in base.preset.coefficients]
    tk = table.index(tuple(float(v) for v in old)) + 1 if tuple(
        float(v) for v in old) in table else k + 1
    steps = f" (steps {idx[0] + 1}-{idx[-1] + 1})" if len(idx) > 1 else ""
    return Candidate(f"custom coefficients: triple {tk} differs by {100 * rel:.3g}% "
                     f"(({trip}) instead of ({was})){steps}", base.preset, tuple(s),
                     base.precision, "coefficients")


def _batch_note(fn, plist, outs, unsupported, dtype) -> str:
    """How the target treats the batch probe, judged against itself: slice by slice (no note),
    one norm over the whole batch, or something else; '' when it refuses batches."""
    batch = next((p for p in plist if p.cls == "batched"), None)
    if batch is None or "batched" in unsupported or outs.get(batch.label) is None:
        return ""
    out = outs[batch.label]
    try:
        slices = [np.asarray(fn(g.copy()), np.float64) for g in batch.G]
    except Exception:  # noqa: BLE001 - the 2-D slices failing is reported elsewhere
        return ""
    if out.shape != batch.G.shape or any(s.shape != batch.G.shape[1:] for s in slices):
        return (f"the batch probe gave shape {out.shape} for input {batch.G.shape}: batches "
                "are not treated as independent matrices")
    with np.errstate(all="ignore"):
        per = [_distance(o, sl) for o, sl in zip(out, slices)]
    per = [math.inf if math.isnan(v) else v for v in per]
    d = max(per)
    if d <= max(1e-6, MATCH_TOLERANCE[dtype]):   # the same up to the dtype's rounding
        return ""
    big = int(np.argmax([np.linalg.norm(g) for g in batch.G]))
    rest = [v for i, v in enumerate(per) if i != big]
    if rest and per[big] < 0.1 * min(rest):
        return ("the target reads a 3-D input as one matrix (one Frobenius norm over the whole "
                f"batch: the largest slice matches its 2-D result, the others differ by up to "
                f"{d:.3g}); judged apart from the other knobs, which the 2-D probes decide")
    return (f"slices of the batch probe differ from the target's own 2-D results by up to "
            f"{d:.3g}: the batch is not treated as independent matrices")


def identify(fn, dtype: str = "float64", names=None) -> list:
    """Which presets does ``fn`` match (each with its own schedule, no variants)?  Returns
    ``[(name, distance)]`` of the matching ones, smallest ratio first; the target is run once
    per probe.  Used to say "the claim failed, but this is preset X"."""
    names = [n for n in (names or PRESETS) if n != "custom"]
    plist = probes(dtype)
    outs = {}
    for p in plist:
        try:
            outs[p.label] = np.asarray(fn(p.G.copy()), dtype=np.float64)
        except Exception:  # noqa: BLE001
            outs[p.label] = None
    found = []
    with np.errstate(all="ignore"):
        for name in names:
            base = get_preset(name)
            cand = Candidate(f"preset {name!r}", base, schedule(name), dtype)
            refs = _outputs(cand, plist, dtype)
            worst, dist, ok = 0.0, 0.0, True
            for p, ref in zip(plist, refs):
                if outs[p.label] is None:
                    if p.cls in OPTIONAL_CLASSES:
                        continue
                    ok = False
                    break
                tol = probe_tolerance(p.G, base, cand.sched, dtype)
                if tol > NO_CLAIM_LIMIT:
                    continue
                d = _distance(outs[p.label], ref)
                if d > tol:
                    ok = False
                    break
                if d / tol >= worst:
                    worst, dist = d / tol, d
            if ok:
                found.append((name, dist, worst))
    found.sort(key=lambda t: t[2])
    return [(n, d) for n, d, _ in found]


#: (claimed dtype, candidate precision) -> the format the outputs must be representable in
_NARROWER = {("float64", "float32"): "float32", ("float64", "bfloat16"): "bfloat16",
             ("float64", "float16"): "float16", ("float32", "bfloat16"): "bfloat16",
             ("float32", "float16"): "float16"}


def _all_representable(outs, fmt) -> bool:
    for out in outs.values():
        if out is None:
            continue
        x = np.nan_to_num(np.asarray(out, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if fmt == "float32":
            if not np.array_equal(x.astype(np.float32).astype(np.float64), x):
                return False
        elif not is_representable(x.astype(np.float32), fmt) or not np.array_equal(
                x.astype(np.float32).astype(np.float64), x):
            return False
    return True


_KEEPS = "the output keeps G's singular vectors"

#: nothing matches and the nearest candidate is this many tolerances away: no one-knob variant
#: explains the output (docs/presets.md 7)
FAR_RATIO = 100.0


def _sv_map_note(plist, outs, claim_row, rtol) -> str:
    """When nothing matches: does the target keep G's singular vectors (a polynomial-type map of
    the singular values) but map them differently from the claim?  Then the difference is in the
    coefficients or the step count, not in the normalisation or the structure.  Two maps are
    named apart: G itself scaled (no iteration ran) and the claim's output times a constant per
    shape (a scale factor on the result, not the orthogonaliser)."""
    cand, refs, _ = claim_row
    first, in_scale, out_scale = "", [], []
    for p, ref in zip(plist, refs):
        if p.label not in _FIT_PROBES or outs.get(p.label) is None:
            continue
        G = np.asarray(p.G, np.float64)
        out = outs[p.label]
        if out.shape != G.shape or not np.all(np.isfinite(out)):
            return ""
        U, s, Vt = np.linalg.svd(G, full_matrices=False)
        core = U.T @ out @ Vt.T
        diag = np.diag(core)
        off = np.linalg.norm(core - np.diag(diag)) + np.linalg.norm(
            out - U @ core @ Vt)
        if off > rtol * np.linalg.norm(out):
            return ("the output does not keep G's singular vectors: not a polynomial map of "
                    "the singular values")
        want = np.diag(U.T @ ref @ Vt.T)
        in_scale.append(_constant_ratio(diag, s, rtol))
        out_scale.append(_constant_ratio(diag, want, rtol))
        if not first:
            i = int(np.argmax(np.abs(diag - want)))
            x = s[i] / np.linalg.norm(G)
            first = (f"{_KEEPS} (a map of the singular values) but maps s/||G||_F = {x:.3g} "
                     f"to {diag[i]:.6g} instead of {want[i]:.6g}: the coefficients, the step "
                     "count or the normalisation's scale differ")
    if in_scale and all(c is not None for c in in_scale):
        return (f"{_SCALED_INPUT} (by {', '.join(f'{c:.4g}' for c in in_scale)} on the "
                f"{' and '.join(_FIT_PROBES)} probes): no orthogonalisation ran (zero steps, "
                "or the iteration was skipped)")
    if out_scale and all(c is not None for c in out_scale) and \
            max(abs(c - 1) for c in out_scale) > rtol:
        return (f"{_SCALED_CLAIM} (by {', '.join(f'{c:.4g}' for c in out_scale)} on the "
                f"{' and '.join(_FIT_PROBES)} probes): a scale factor on the result (an "
                "update's scale rule), not a different orthogonaliser")
    return first


_SCALED_INPUT = "the output is G itself scaled"
_SCALED_CLAIM = "the output is the preset's output times a constant per shape"


def _constant_ratio(a, b, rtol):
    """c when ``a = c b`` (every entry, relative ``rtol``), else None."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nb = float(np.linalg.norm(b))
    if nb == 0 or not np.all(np.isfinite(a)):
        return None
    c = float(a @ b) / (nb * nb)
    if c == 0 or np.linalg.norm(a - c * b) > rtol * abs(c) * nb:
        return None
    return c


#: the singular-value maps the diagnosis names when no candidate is near (their notes' first
#: words -> the cause)
_SV_NAMES = {
    _KEEPS: "a different coefficient table (more than one triple differs from the preset's; "
            "no single refitted triple fits, and the output keeps G's singular vectors)",
    _SCALED_INPUT: "no orthogonalisation: the output is the input scaled (the iteration did "
                   "not run)",
    _SCALED_CLAIM: "the preset's output times a constant per shape (a scale factor on the "
                   "result, e.g. an update's scale rule)",
}


def map_cause(note: str) -> str:
    """The cause a singular-value-map note (:func:`singular_value_map`) names, '' for none."""
    for start, cause in _SV_NAMES.items():
        if note.startswith(start):
            return cause
    return ""


def singular_value_map(plist, outs, claim_row, dtype: str) -> str:
    """The note on how the target maps G's singular values compared with ``claim_row`` (a
    (candidate, outputs, tolerances) row over ``plist``); '' in low precision or when the
    probes are missing."""
    if dtype not in ("float64", "float32"):
        return ""
    return _sv_map_note(plist, outs, claim_row, 1e3 * MATCH_TOLERANCE[dtype])

