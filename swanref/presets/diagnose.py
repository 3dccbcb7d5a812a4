"""Does a function implement a preset?  Fixed probes, the preset and its one-knob variants.

:func:`diagnose` runs a target on probes and compares it with the preset and with variants that
differ in one way (coefficients, epsilon placement, safety factor, step count, transpose rule,
batch-global norm, product form); docs/presets.md section 7.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from swanref.presets.catalogue import PRESETS, get_preset, run_preset, schedule

#: distance (max over probes of ||out - preset||_F / ||preset||_F per matrix) under which an
#: implementation counts as the preset, per claimed dtype.  bfloat16/float16: about 3x / 13x
#: the measured H100-vs-emulation maxima 0.026 / 0.0015 (docs/presets.md 6.2).
MATCH_TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}


def _probes(dtype: str):
    rng = np.random.default_rng(6)
    wide = rng.standard_normal((24, 56))
    probes = {
        "wide 24x56": wide,
        "tall 56x24": rng.standard_normal((56, 24)),
        "batch 3x16x40, slice scales 1e-3/1/1e3":
            rng.standard_normal((3, 16, 40)) * np.array([1e-3, 1.0, 1e3])[:, None, None],
        "||G||_F = 1e-9": wide / np.linalg.norm(wide) * 1e-9,
        "||G||_F = 1e-6": wide / np.linalg.norm(wide) * 1e-6,
        "rank 1, 20x48": np.outer(rng.standard_normal(20), rng.standard_normal(48)),
        "zero 8x12": np.zeros((8, 12)),
    }
    if dtype in ("bfloat16", "float16"):
        # rank-deficient input is chaotic in low precision: its null-space output is rounding
        # noise times the slope at 0 (hundreds), different for every summation order
        del probes["rank 1, 20x48"]
        from swanref.presets.lowprec import round_to
        probes = {k: round_to(v, dtype).astype(np.float32) for k, v in probes.items()}
    elif dtype == "float32":
        probes = {k: v.astype(np.float32) for k, v in probes.items()}
    return probes


def _distance(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    o = out.reshape((-1,) + out.shape[-2:])
    r = ref.reshape((-1,) + ref.shape[-2:])
    worst = 0.0
    for a, b in zip(o, r):
        na, nb = np.isnan(a), np.isnan(b)
        if np.any(na != nb):
            return float("inf")
        a, b = np.where(na, 0, a), np.where(nb, 0, b)
        if not np.all(np.isfinite(a)):
            return float("inf")
        scale = max(np.linalg.norm(b), 1e-30)
        worst = max(worst, float(np.linalg.norm(a - b) / scale))
    return worst


def _variants(name: str, steps):
    """(label, Preset, schedule) candidates an implementation of ``name`` is compared with."""
    base = get_preset(name)
    sched = schedule(name, steps)
    out = [(f"preset {name!r}", base, sched)]
    for other, p in PRESETS.items():
        if other in (name, "custom"):
            continue
        out.append((f"preset {other!r} (different coefficients/normalisation)", p,
                    schedule(other)))
        if p.steps != len(sched):
            try:
                out.append((f"preset {other!r} with {len(sched)} steps", p,
                            schedule(other, len(sched))))
            except ValueError:
                pass
    for norm, eps in (("add", 1e-7), ("add", 1e-8), ("add", 1e-6), ("clamp", 1e-7),
                      ("clamp", 1e-15), ("none", 0.0), ("safe", 0.0)):
        if (norm, eps) != (base.norm, base.eps):
            out.append((f"normalisation {norm!r} with eps={eps:g} instead of "
                        f"{base.norm!r} eps={base.eps:g}", replace(base, norm=norm, eps=eps),
                        sched))
    for scale in (1.0, 1.01, 1.02):
        if scale != base.norm_scale:
            out.append((f"norm safety factor {scale:g} instead of {base.norm_scale:g}",
                        replace(base, norm_scale=scale), sched))
    for k in (len(sched) - 1, len(sched) + 1):
        if k >= 0:
            try:
                s2 = schedule(name, k) if k <= len(sched) or base.after == "repeat" else \
                    tuple(sched) + (sched[-1],)
            except ValueError:
                s2 = tuple(sched) + (sched[-1],)
            out.append((f"{k} steps instead of {len(sched)}", base, s2))
    out.append(("no transpose for tall input", replace(base, transpose="none"), sched))
    out.append(("one Frobenius norm over the whole batch, not per matrix",
                replace(base, norm_over="all"), sched))
    other_form = "addmm" if base.form == "keller" else "keller"
    if base.form != "right":
        out.append((f"product form {other_form!r} (rounding only)",
                    replace(base, form=other_form), sched))
    return out


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
    candidates: list
    # every candidate whose distance is within ``tolerance`` of the closest one: differences
    # below the match tolerance are rounding, so these are reported together, never ranked
    ties: tuple = ()

    def tie_note(self) -> str:
        others = [t for t in self.ties if t != self.closest]
        return f"; indistinguishable at {self.dtype} from: {', '.join(others)}" if others else ""

    def summary(self) -> str:
        if self.match and self.closest.startswith(f"preset {self.preset!r}"):
            return (f"matches preset {self.preset!r} at {self.dtype} tolerance "
                    f"(distance {self.distance:.3g} <= {self.tolerance:g}){self.tie_note()}")
        if self.match:
            return (f"within the {self.dtype} tolerance of preset {self.preset!r} (distance "
                    f"{self.distance:.3g} <= {self.tolerance:g}), but closer to: {self.closest} "
                    f"({self.closest_distance:.3g})")
        worst = max(self.per_probe, key=lambda k: self.per_probe[k])
        if self.closest_distance <= self.tolerance:
            why = f"it matches: {self.closest} (distance {self.closest_distance:.3g})"
        else:
            why = (f"no known variant matches; closest: {self.closest} "
                   f"({self.closest_distance:.3g})")
        why += self.tie_note()
        return (f"does NOT match preset {self.preset!r} at {self.dtype} tolerance "
                f"(distance {self.distance:.3g} > {self.tolerance:g}, worst on probe "
                f"{worst!r}); {why}")


def diagnose(fn, name: str, *, dtype: str = "float64", steps=None, tolerance=None) -> Diagnosis:
    """Does ``fn`` (NumPy array in -> array out) implement preset ``name`` in ``dtype``?

    ``fn`` is run on fixed probes (wide, tall, batched with unequal scales, tiny norms, rank 1,
    zero) given as arrays of ``dtype`` (float32 containers holding bf16/fp16 values for the
    low-precision dtypes).  Its outputs are compared with the preset -- computed in ``dtype``,
    emulating PyTorch eager for bfloat16/float16 -- and with variants that differ in one way
    (other coefficients, epsilon placement, safety factor, step count, no transpose for tall
    input, batch-global norm, product form).  The distance is the largest relative Frobenius
    difference over the probes' matrices (NaN pattern mismatch = inf).
    """
    if dtype not in MATCH_TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(MATCH_TOLERANCE)}, got {dtype!r}")
    tol = MATCH_TOLERANCE[dtype] if tolerance is None else float(tolerance)
    emulate = dtype if dtype in ("bfloat16", "float16") else None
    probes = _probes(dtype)
    outs = {}
    for label, G in probes.items():
        try:
            outs[label] = np.asarray(fn(G.copy()), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - a crash is a mismatch on that probe
            outs[label] = exc
    cands = []
    per_probe = {}
    for label, preset, sched in _variants(name, steps):
        worst = 0.0
        for plabel, G in probes.items():
            out = outs[plabel]
            if isinstance(out, Exception):
                d = float("inf")
            else:
                ref = run_preset(G, preset, sched, emulate)
                d = _distance(out, ref)
            if not cands:
                per_probe[plabel] = d
            worst = max(worst, d)
        cands.append((label, worst))
    dist = cands[0][1]
    best = min(d for _, d in cands)
    # distances that differ by less than the match tolerance are not ordered (rounding decides
    # them, and it changes with the BLAS build): the claim wins a tie, else the first listed
    ties = tuple(label for label, d in cands if d <= best + tol) if np.isfinite(best) else ()
    closest = next(label for label, d in cands if d <= best + tol)
    cdist = dict(cands)[closest]
    return Diagnosis(name, dtype, dist <= tol, dist, tol, closest, cdist, per_probe,
                     sorted(cands, key=lambda t: t[1]), ties)
