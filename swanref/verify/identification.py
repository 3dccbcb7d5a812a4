"""``swanref identify``: which claim does a black-box orthogonaliser match?

Searches the claim space coordinate by coordinate instead of the full product (docs/spec.md
11.6): each knob is fixed from the probes that decide it, the others held at their best value.

1. compute precision from the outputs' representability (bfloat16, float16, float32 values);
2. preset, step count and safety factor on the well-scaled probes (wide, tall, square), where
   no epsilon acts;
3. epsilon value and form (add / clamp / none / safe) on tiny-norm probes and the zero matrix;
4. low-precision order (cast then normalise, or normalise in float32 then cast);
5. batch handling (a 3-D batch per matrix, refused, or read as one matrix).

The result is a :class:`~swanref.verify.claims.Claim` checked on every probe with 8.6's
per-probe tolerance, the nearest alternatives (one knob changed) with their distances and
tolerances, and for each the probes that separate it from the match.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from swanref.presets.catalogue import PRESETS, ROUTES, get_preset, schedule
from swanref.presets.diagnose import (MATCH_TOLERANCE, NO_CLAIM_LIMIT, Candidate, Probe,
                                      candidate_rows, evaluate, map_cause, probes,
                                      refit_triple, relative_distance, run_target,
                                      singular_value_map)
from swanref.presets.lowprec import is_representable, round_to
from swanref.spec.conventions import SCALE_RULES, shape_factor
from swanref.update import ND_RULES, orthogonalized_update
from swanref.verify.checker import (TargetCall, bind, json_number, make_call, parse_kwarg,
                                    separation_text)
from swanref.verify.claims import Claim, dumps, save_claim
from swanref.verify.optimizer_glue import PARAM_STYLES
from swanref.verify.optimizer_glue import parse_kwarg as parse_optimizer_kwarg
from swanref.verify.optimizer_identify import identify_optimizer
from swanref.verify.targets import (DEFAULT_TIMEOUT_S, TargetAborted, TargetRunner,
                                    TargetTimeout, UsageError, load_target, seconds_argument,
                                    stop_message, timeout_seconds)

__all__ = ["identify", "Identification", "main"]

#: epsilons searched (values real code uses: torch.optim.Muon / Keller 1e-7, optax / dion 1e-8,
#: polar_express_nanogpt 1e-6, NeMo 1e-15, dion NorMuon 1e-10, smaller fixes 1e-12)
EPSILONS = (1e-6, 1e-7, 1e-8, 1e-10, 1e-12, 1e-15)
#: safety factors on the norm (Polar Express 1.01, modded-nanogpt 1.02, gram-newton-schulz 1.05)
NORM_SCALES = (1.0, 1.01, 1.02, 1.05)
#: steps searched around each preset's own count
STEP_RANGE = 3
#: well-scaled probes (no epsilon acts there): preset, steps and safety factor
_SHAPE_PROBES = ("wide 16x40", "tall 40x16")


def _eps_probes(dtype: str) -> list:
    """Tiny-norm probes for the epsilon: ||G||_F from 1e-16 (float64) to 1e-6, and zero."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((16, 40))
    W /= np.linalg.norm(W)
    norms = (1e-16, 1e-13, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6) if dtype == "float64" else \
        (1e-13, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6)
    out = [Probe(f"eps probe ||G||_F = {f:g}", W * f) for f in norms]
    out.append(Probe("eps probe zero", np.zeros((16, 40))))
    if dtype in ("bfloat16", "float16"):
        return [replace(p, G=round_to(p.G, dtype).astype(np.float32)) for p in out]
    return [replace(p, G=p.G.astype(dtype)) for p in out]


@dataclass
class Alternative:
    label: str
    knob: str
    distance: float
    tolerance: float
    ratio: float
    separating: list          # [(probe, distance, tolerance)], most decisive first

    def to_dict(self) -> dict:
        return {"label": self.label, "knob": self.knob, "distance": json_number(self.distance),
                "tolerance": json_number(self.tolerance), "ratio": json_number(self.ratio),
                "separating_probes": [{"probe": p, "distance": json_number(d),
                                       "tolerance": json_number(t)}
                                      for p, d, t in self.separating]}


@dataclass
class Identification:
    claim: Claim
    dtype: str
    match: bool
    distance: float
    tolerance: float
    worst_probe: str | None
    alternatives: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    label: str = ""

    def claim_text(self) -> str:
        return dumps(self.claim)

    def summary(self) -> str:
        head = ("matches" if self.match else "closest (NOT within tolerance on every probe)")
        lines = [f"swanref identify: {head}: {self.label}",
                 f"  distance {self.distance:.3g} (tolerance {self.tolerance:.3g}, worst probe "
                 f"{self.worst_probe!r}), probes in {self.dtype}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += ["", "claim (swanref check ... --claim FILE):", "", self.claim_text().rstrip(),
                  "", "nearest alternatives (one knob changed):"]
        for a in self.alternatives:
            sep = separation_text(a.separating, 2, "probe")
            lines.append(f"  {a.label}: distance {a.distance:.3g} (tolerance {a.tolerance:.3g})"
                         f"; {sep}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"schema": "swanref-identify/1", "match": self.match, "label": self.label,
                "dtype": self.dtype, "distance": json_number(self.distance),
                "tolerance": json_number(self.tolerance), "worst_probe": self.worst_probe,
                "claim": self.claim.to_dict(), "claim_toml": self.claim_text(),
                "notes": list(self.notes),
                "alternatives": [a.to_dict() for a in self.alternatives]}


def _precisions(outs, dtype: str) -> list:
    """Compute precisions the outputs' values allow, narrowest first (the claimed dtype last)."""
    vals = [np.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0) for o in outs.values()
            if o is not None]
    if not vals:
        return [dtype]
    x = np.concatenate([v.ravel() for v in vals])
    f32 = bool(np.array_equal(x.astype(np.float32).astype(np.float64), x))
    found = []
    if f32:
        x32 = x.astype(np.float32)
        for fmt in ("bfloat16", "float16"):
            if fmt != dtype and is_representable(x32, fmt):
                found.append(fmt)
        if dtype == "float64":
            found.append("float32")
    return found + [dtype] if dtype not in found else found


def _names(include_routes: bool) -> list:
    names = [n for n in PRESETS if n != "custom"]
    if include_routes:
        names += [n for n in ROUTES if get_preset(n).route == "ns" and get_preset(n).norm != "aol"]
    return names


def _cand(name, preset, sched, precision, knob="search", label=None) -> Candidate:
    label = label or _describe(name, preset, sched, precision)
    return Candidate(label, preset, tuple(sched), precision, knob)


def _precisions_update(precs, dtype):
    """Update level: the scale multiplies after the orthogonaliser (in the io dtype), so the
    outputs' format says nothing about the compute dtype; try each plausible one."""
    out = [dtype]
    for p in ("bfloat16", "float16", "float32"):
        if p != dtype and (dtype == "float64" or p != "float32"):
            out.append(p)
    return out


def _row_rms_norm(O, axis):
    """NorMuon: the rows (axis=-1) or columns (axis=-2) to RMS 1, then ||O||_F restored."""
    fro = np.linalg.norm(O)
    rms = np.sqrt(np.mean(O * O, axis=axis, keepdims=True))
    R = np.where(rms > 0, O / np.where(rms > 0, rms, 1), 0)
    fr = np.linalg.norm(R)
    return R * (fro / fr) if fr > 0 else R


_AXES = {"none": lambda O: O, "rows": lambda O: _row_rms_norm(O, -1),
         "columns": lambda O: _row_rms_norm(O, -2),
         "columns_if_wide": lambda O: _row_rms_norm(O, -2) if O.shape[-2] < O.shape[-1]
         else O}


def _per_matrix(fn, O):
    O = np.asarray(O, np.float64)
    if O.ndim == 2:
        return fn(O)
    return np.stack([_per_matrix(fn, o) for o in O])


def _polar(G):
    U, _, Vt = np.linalg.svd(np.asarray(G, np.float64), full_matrices=False)
    return U @ Vt


def _update_rules(fn, outs, plist, dtype):
    """Update level: the scale rule and factor from norm ratios, NorMuon's axis from the
    direction, both against the exact polar factor (the orthogonaliser is searched after)."""
    shape = [p for p in plist if p.label in _SHAPE_PROBES or p.label.startswith("square 24")]
    ratios, dirs = {}, {}
    for p in shape:
        out = outs.get(p.label)
        if out is None:
            continue
        O = _polar(p.G)
        ratios[p.G.shape] = float(np.linalg.norm(out) / np.linalg.norm(O))
        dirs[p.label] = (out / max(np.linalg.norm(out), 1e-300), O)
    best = None
    for rule in SCALE_RULES.values():
        if rule.data_dependent:
            continue
        f = [r / shape_factor(rule, m, n) for (m, n), r in ratios.items()]
        spread = max(f) / min(f) if min(f) > 0 else math.inf
        if best is None or spread < best[0] - 1e-3:
            best = (spread, rule.name, float(np.exp(np.mean(np.log(f)))))
    _, scale, factor = best
    for nice in (1.0, 0.2, 0.5, 2.0, 0.1):
        if abs(factor / nice - 1) < 0.03:
            factor = nice
    rule = SCALE_RULES[scale]

    def make(axis):
        def post(G, O):
            O = np.asarray(O, np.float64)
            m, n = O.shape[-2:]
            return _per_matrix(_AXES[axis], O) * shape_factor(rule, m, n)
        return post

    return {axis: make(axis) for axis in _AXES}, {"scale": scale}


def _unit(X):
    """Each matrix of X divided by its Frobenius norm (zero matrices stay zero)."""
    X = np.asarray(X, np.float64)
    f = np.sqrt(np.sum(X * X, axis=(-2, -1), keepdims=True))
    with np.errstate(all="ignore"):
        return np.where(f > 0, X / np.where(f > 0, f, 1), X)


def _refit_factor(cand, rule_post, plist, outs, dtype):
    """The scale factor the target applies on top of the rule, against the chosen
    orthogonaliser (median ratio of norms on the well-scaled probes, snapped to a round value
    within 1e-6)."""
    shape = [p for p in plist if p.label in _SHAPE_PROBES or p.label.startswith("square 24")]
    rows = candidate_rows([cand], shape, dtype)[0]
    ratios = []
    for p, o in zip(shape, rows[1]):
        out = outs.get(p.label)
        ref = rule_post(p.G, o)
        if out is not None and np.linalg.norm(ref) > 0:
            ratios.append(float(np.linalg.norm(out) / np.linalg.norm(ref)))
    factor = float(np.median(ratios)) if ratios else 1.0
    for digits in range(1, 7):
        r = float(f"{factor:.{digits}g}")
        if abs(r / factor - 1) <= 1e-6 * (1 if cand.precision == "float64" else 1e3):
            factor = r
            break

    def post(G, O):
        return rule_post(G, O) * factor
    return post, factor


def _describe(name, preset, sched, precision) -> str:
    eps = {"add": f"add {preset.eps:g}", "clamp": f"clamp {preset.eps:g}", "none": "no eps",
           "safe": "no eps, zero -> 0"}.get(preset.norm, preset.norm)
    order = ", normalised in float32" if preset.lowprec_order == "normalise_then_cast" else ""
    return (f"preset {name!r}, {len(sched)} steps, norm x {preset.norm_scale:g}, {eps}, "
            f"computes in {precision}{order}")


def _score(cands, plist, outs, dtype, unsupported=None, post=None):
    """[(candidate, CandidateResult)] sorted by (ratio, distance); ``post(G, O)`` maps a
    candidate's orthogonaliser output to the update the target returns (update level)."""
    rows = candidate_rows(cands, plist, dtype)
    if post is not None:
        rows = [(c, [post(p.G, o) for p, o in zip(plist, refs)], tols)
                for c, refs, tols in rows]
    res = [(c, evaluate(c, refs, tols, plist, outs, unsupported or {}, dtype))
           for c, refs, tols in rows]
    res.sort(key=lambda t: (t[1].ratio, t[1].distance))
    return res


class _Probing:
    """The target as identify calls it: on a worker under the deadline (``swanref check``'s
    :class:`~swanref.verify.checker.TargetCall`), each call named by its probe, so that a
    hang's message says which probe hung; the target's own exceptions come out unchanged."""

    def __init__(self, fn, timeout):
        self.call = fn if isinstance(fn, TargetCall) else make_call(
            fn, "numpy", TargetRunner(timeout_seconds(timeout)))
        self.names = {}

    @staticmethod
    def _key(G):
        G = np.ascontiguousarray(G)
        return G.shape, G.dtype.str, hash(G.tobytes())

    def add(self, plist):
        self.names.update({self._key(p.G): p.label for p in plist})

    def __call__(self, G):
        G = np.asarray(G)
        label = self.names.get(self._key(G))
        self.call.where = f"probe {label!r}" if label else "a probe"
        try:
            return self.call(G)
        except Exception as exc:  # the TargetCall's TargetError: the target's own exception
            cause = exc.__cause__
            if isinstance(cause, Exception):
                raise cause from None
            raise


def identify(fn, dtype: str = "float64", *, level: str = "operator", names=None,
             include_routes: bool = True, alternatives: int = 6,
             timeout=DEFAULT_TIMEOUT_S) -> Identification:
    """Search the claim space for what ``fn`` (array in -> array out, an orthogonaliser of
    matrices or batches of them) computes; probes are arrays of ``dtype`` (float32 containers
    for bfloat16/float16).  Returns an :class:`Identification` whose ``claim`` loads with
    ``--claim`` (TOML: ``claim_text()``).  Every call of ``fn`` runs under ``timeout`` seconds
    (0 or None: no deadline); a hang raises :class:`~swanref.verify.targets.TargetTimeout`
    naming the probe (an exit: TargetAborted)."""
    if dtype not in MATCH_TOLERANCE:
        raise UsageError(f"dtype must be one of {', '.join(MATCH_TOLERANCE)}, got {dtype!r}")
    if level not in ("operator", "update"):
        raise UsageError(f"level must be 'operator' or 'update', got {level!r}")
    plist = probes(dtype)
    shape_probes = [p for p in plist if p.label in _SHAPE_PROBES]
    fn = _Probing(fn, timeout)
    fn.add(plist)
    fn.add(_eps_probes(dtype))
    with np.errstate(all="ignore"):
        outs, unsupported, errors = run_target(fn, plist)
        if all(outs[p.label] is None for p in shape_probes):
            raise UsageError("the target raised on every 2-D probe: "
                             + "; ".join(sorted(set(errors.values())))[:500])
        precs = _precisions(outs, dtype)
        post, update_knobs = None, {}
        raw_outs = outs
        if level == "update":
            # the search compares directions (each matrix to unit norm); the scale factor is
            # refitted against the chosen orthogonaliser at the end
            rule_posts, update_knobs = _update_rules(fn, outs, plist, dtype)
            outs = {k: None if v is None else _unit(v) for k, v in outs.items()}
            precs = _precisions_update(precs, dtype)
        # 2. preset x steps x safety factor, in float64 on the well-scaled probes (cheap)
        cands = []
        for name in names or _names(include_routes):
            p = get_preset(name)
            base_steps = p.steps or len(p.coefficients)
            for k in range(max(1, base_steps - STEP_RANGE), base_steps + STEP_RANGE + 1):
                try:
                    sched = schedule(name, k)
                except ValueError:
                    continue
                for s in sorted({p.norm_scale, *NORM_SCALES}):
                    cands.append((name, _cand(name, replace(p, norm_scale=s), sched,
                                              "float64")))
        if level == "update":
            # NorMuon's axis: the one under which some orthogonaliser matches best
            best_axis = None
            pool = [c for _, c in cands]
            for axis, rp in rule_posts.items():
                sc = _score(pool, shape_probes, outs, dtype,
                            post=lambda G, O, rp=rp: _unit(rp(G, O)))
                if axis == "none":
                    pool = [c for c, _ in sc[:24]]   # the other axes rerank the best only
                key = (sc[0][1].ratio, sc[0][1].distance)
                if best_axis is None or key < best_axis[0]:
                    best_axis = (key, axis, sc)
            _, axis, coarse = best_axis
            rule_post = rule_posts[axis]
            update_knobs["norm_axis"] = axis
            post = lambda G, O: _unit(rule_post(G, O))  # noqa: E731
        else:
            coarse = _score([c for _, c in cands], shape_probes, outs, dtype)
        by_label = {c.label: n for n, c in cands}
        top = coarse[:4]
        # 1 + 4. precision and low-precision order for the best shapes
        refined = []
        for c, _ in top:
            name = by_label[c.label]
            for prec in precs:
                orders = ("cast_then_normalise", "normalise_then_cast") if prec in (
                    "bfloat16", "float16") else ("cast_then_normalise",)
                for order in orders:
                    pr = replace(c.preset, lowprec_order=order)
                    refined.append((name, _cand(name, pr, c.sched, prec)))
        scored = _score([c for _, c in refined], plist, outs, dtype,
                        {"batched": "later", **unsupported}, post=post)
        by_label.update({c.label: n for n, c in refined})
        best, _ = scored[0]
        name = by_label[best.label]
        notes = []
        # 3. epsilon value and form on tiny-norm probes
        eprobes = _eps_probes(dtype)
        eouts, _, _ = run_target(fn, eprobes)
        raw_eouts = eouts
        if level == "update":
            eouts = {k: None if v is None else _unit(v) for k, v in eouts.items()}
        forms = [("add", e) for e in EPSILONS] + [("clamp", e) for e in EPSILONS] + [
            ("none", 0.0), ("safe", 0.0)]
        p0 = best.preset
        if (p0.norm, p0.eps) not in forms:
            forms.insert(0, (p0.norm, p0.eps))
        ecands = [_cand(name, replace(p0, norm=f, eps=e), best.sched, best.precision)
                  for f, e in forms]
        escored = _score(ecands, eprobes, eouts, dtype, post=post)
        # ties on these probes: prefer the preset's own epsilon, then the source's form
        tied = [c for c, r in escored if r.ratio <= max(escored[0][1].ratio, 1.0)
                and r.match]
        own = [c for c in tied if (c.preset.norm, c.preset.eps) == (
            get_preset(name).norm, get_preset(name).eps)]
        chosen = own[0] if own else (tied[0] if tied else escored[0][0])
        for c in refined:
            by_label[c[1].label] = c[0]
        by_label.update({c.label: name for c in ecands})
        final = chosen
        if level == "operator" and not escored[0][1].match:
            # no table of the catalogue: refit one triple of the best schedules (8.6), with
            # the preset's own safety factor too (a factor can mimic a changed triple)
            bases = [final, _cand(name, replace(final.preset, norm_scale=get_preset(
                name).norm_scale), final.sched, final.precision)]
            for c, _ in coarse[:3]:
                bases.append(_cand(by_label[c.label], replace(
                    c.preset, norm=final.preset.norm, eps=final.preset.eps,
                    lowprec_order=final.preset.lowprec_order), c.sched, final.precision))
            fits, origin = [], {}
            for b in bases:
                f = refit_triple(plist, outs, b, dtype)
                if f is not None and f.label not in origin:
                    fits.append(f)
                    origin[f.label] = by_label.get(b.label, name)
                    break   # a fit within 100x the floor: the schedule is found
            if fits:
                ranked = _score([final] + fits, plist + eprobes, dict(outs, **eouts), dtype,
                                {"batched": "later", **unsupported})
                if ranked[0][0] is not final:
                    final = ranked[0][0]
                    name = origin[final.label]
                    notes.append(final.label)
        name = _own_preset(name, final)
        # 5. batch handling (operator level; an update's N-D rule is spec 9.2's)
        batch_probe = next(p for p in plist if p.cls == "batched")
        nd = "batch_leading" if level == "operator" else "flatten"
        if level == "update":
            unsupported = dict(unsupported, batched="update level")
        if "batched" in unsupported and level == "operator":
            nd = "2d_only"
            notes.append(f"3-D input refused ({unsupported['batched']}): claim nd='2d_only' "
                         "(N-D probes not applicable)")
        full_plist = plist + eprobes
        full_outs = dict(outs, **eouts)
        if level == "update":
            post, factor = _refit_factor(final, rule_post, plist, raw_outs, dtype)
            update_knobs["scale_factor"] = factor
            full_outs = dict(raw_outs, **raw_eouts)
            outs = raw_outs
        skip = {"batched": "refused"} if "batched" in unsupported else {}
        rows = candidate_rows([final], full_plist, dtype)
        if post is not None:
            rows = [(c, [post(p.G, o) for p, o in zip(full_plist, refs)], t)
                    for c, refs, t in rows]
        res = evaluate(final, rows[0][1], rows[0][2], full_plist, full_outs, skip, dtype)
        if not skip and batch_probe.label in res.per_probe:
            whole = replace(final.preset, norm_over="all")
            wrow = candidate_rows([_cand(name, whole, final.sched, final.precision)],
                                  [batch_probe], dtype)[0]
            if post is not None:
                wrow = (wrow[0], [post(batch_probe.G, wrow[1][0])], wrow[2])
            dw = relative_distance(outs[batch_probe.label], wrow[1][0])
            if res.per_probe[batch_probe.label] > (res.tolerances.get(batch_probe.label) or 0) \
                    and dw <= (wrow[2][0] if wrow[2][0] <= NO_CLAIM_LIMIT else 0):
                notes.append("the target reads a 3-D input as one matrix (one Frobenius norm "
                             "over the whole batch): no claim states that; the claim is "
                             "2-D only")
                nd = "2d_only"
                skip = {"batched": "one matrix"}
                res = evaluate(final, rows[0][1], rows[0][2], full_plist, full_outs, skip,
                               dtype)
        # alternatives: one knob changed from the match
        alts = _alternatives(name, final, res, full_plist, full_outs, skip, dtype, precs, post)
        if level == "operator" and not res.match and not errors:
            notes.extend(_map_notes(final, plist, outs, dtype))
    if level == "update":
        nd, note = _nd_rule(fn, name, final, update_knobs, dtype)
        if note:
            notes.append(note)
    claim = _claim(name, final, dtype, nd, level, update_knobs)
    return Identification(claim, dtype, res.match and not errors, res.distance, res.tolerance,
                          res.probe, alts[:alternatives], notes
                          + [f"the target raised on probe {k!r}: {v}" for k, v in errors.items()],
                          final.label)


def _map_notes(final, plist, outs, dtype) -> list:
    """No claim matches: what the target's map of G's singular values says about the closest
    one (a different table, no iteration at all, a scale on the result), as the preset
    diagnosis names it (docs/spec.md 8.6 (d))."""
    note = singular_value_map(plist, outs, candidate_rows([final], plist, dtype)[0], dtype)
    cause = map_cause(note)
    return [f"{cause}: {note}"] if cause else []


#: N-D gradients of the update level: a conv weight with a rectangular kernel and a 3-D one
_ND_SHAPES = ((8, 4, 3, 5), (6, 4, 5))


def _nd_rule(fn, name, cand: Candidate, knobs: dict, dtype: str) -> tuple:
    """The update's N-D rule (spec 9.2), judged with :func:`swanref.update.
    orthogonalized_update` under the identified knobs: refused N-D input is '2d_only'."""
    p = cand.preset
    rng = np.random.default_rng(9)
    low = cand.precision in ("bfloat16", "float16")
    kw = dict(scale=knobs.get("scale", "keller"), scale_factor=knobs.get("scale_factor", 1.0),
              norm_axis=knobs.get("norm_axis", "none"), steps=len(cand.sched),
              eps=p.eps, eps_form=p.norm, norm_scale=p.norm_scale,
              emulate=cand.precision if low else None,
              lowprec_order=p.lowprec_order)
    if tuple(schedule(name, len(cand.sched))) != tuple(cand.sched):
        kw["coefficients"] = [list(t) for t in cand.sched]
    cont = np.float64 if dtype == "float64" else np.float32
    worst = {r: 0.0 for r in ND_RULES if r not in ("2d_only", "route_4d_batch_3d")}
    for shape in _ND_SHAPES:
        G = rng.standard_normal(shape)
        G = (round_to(G, dtype) if dtype in ("bfloat16", "float16") else G).astype(cont)
        try:
            out = np.asarray(fn(G.copy()), np.float64)
        except Exception as exc:  # noqa: BLE001 - a refusal is the 2-D-only rule
            return "2d_only", (f"N-D gradient {shape} refused ({type(exc).__name__}: "
                               f"{exc}): claim nd='2d_only'")
        for rule in worst:
            with np.errstate(all="ignore"):
                ref = orthogonalized_update(G, name if p.name == name else p.name,
                                            nd=rule, **kw)
            d = relative_distance(out.reshape((-1,) + shape[-2:]),
                                  np.asarray(ref, np.float64).reshape((-1,) + shape[-2:]))
            worst[rule] = max(worst[rule], d if math.isfinite(d) else math.inf)
    rule = min(worst, key=lambda r: (worst[r], r != "flatten"))
    tol = 1e3 * MATCH_TOLERANCE[cand.precision]
    if worst[rule] > tol:
        return rule, (f"N-D gradients: no N-D rule matches (closest {rule!r}, distance "
                      f"{worst[rule]:.3g})")
    return rule, ""


def _own_preset(name, cand: Candidate) -> str:
    """Among presets with the same schedule, the one whose own epsilon, form and safety factor
    are the ones found (its claim then needs no override)."""
    p = cand.preset
    for other in [name] + _names(True):
        q = get_preset(other)
        try:
            same = tuple(schedule(other, len(cand.sched))) == tuple(cand.sched)
        except ValueError:
            continue
        if same and (q.norm, q.eps, q.norm_scale) == (p.norm, p.eps, p.norm_scale):
            return other
    return name


def _alternatives(name, final, res, plist, outs, skip, dtype, precs, post=None) -> list:
    p = final.preset
    alts = []
    own = get_preset(name)
    for other in _names(True):
        if other != name:
            try:
                alts.append(_cand(other, replace(get_preset(other), norm=p.norm, eps=p.eps),
                                  schedule(other, len(final.sched))
                                  if get_preset(other).after == "repeat" else schedule(other),
                                  final.precision, "preset"))
            except ValueError:
                pass
    for k in (len(final.sched) - 1, len(final.sched) + 1):
        try:
            alts.append(_cand(name, p, schedule(name, k), final.precision, "steps"))
        except ValueError:
            pass
    for f, e in [("add", p.eps), ("clamp", p.eps), ("add", own.eps), ("clamp", own.eps),
                 ("none", 0.0), ("safe", 0.0)] + [("add", e) for e in EPSILONS] + [
                     ("clamp", e) for e in EPSILONS]:
        if (f, e) != (p.norm, p.eps):
            alts.append(_cand(name, replace(p, norm=f, eps=e), final.sched, final.precision,
                              "eps"))
    for s in NORM_SCALES:
        if s != p.norm_scale:
            alts.append(_cand(name, replace(p, norm_scale=s), final.sched, final.precision,
                              "norm_scale"))
    for prec in set(precs) | {dtype}:
        if prec != final.precision:
            alts.append(_cand(name, p, final.sched, prec, "compute_dtype"))
    if final.precision in ("bfloat16", "float16"):
        other = ("cast_then_normalise" if p.lowprec_order == "normalise_then_cast"
                 else "normalise_then_cast")
        alts.append(_cand(name, replace(p, lowprec_order=other), final.sched, final.precision,
                          "lowprec_order"))
    seen, uniq = set(), []
    for a in alts:
        if a.label not in seen and a.label != final.label:
            seen.add(a.label)
            uniq.append(a)
    out = []
    for c, r in _score(uniq, plist, outs, dtype, skip, post=post):
        sep = []
        for probe, d in r.per_probe.items():
            t = r.tolerances.get(probe)
            mine_ok = res.tolerances.get(probe) is not None and \
                res.per_probe.get(probe, math.inf) <= res.tolerances[probe]
            if t is not None and d > t and mine_ok:
                sep.append((probe, d, t))
        sep.sort(key=lambda x: -(x[1] / x[2] if x[2] > 0 else math.inf))
        out.append(Alternative(c.label, c.knob, r.distance, r.tolerance, r.ratio, sep))
    # the nearest of each knob first, then the rest by ratio
    firsts, rest, knobs = [], [], set()
    for a in out:
        (rest if a.knob in knobs else firsts).append(a)
        knobs.add(a.knob)
    return firsts + rest


def _claim(name, cand: Candidate, dtype: str, nd: str, level="operator",
           update_knobs=None) -> Claim:
    p = cand.preset
    sched = tuple(cand.sched)
    knobs = dict(level=level, steps=len(sched), eps=p.eps, **(update_knobs or {}),
                 eps_form=p.norm if p.norm in ("add", "clamp", "none", "safe") else None,
                 norm_scale=p.norm_scale, compute_dtype=cand.precision, nd=nd)
    if tuple(schedule(name, len(sched))) != sched:  # a refitted triple
        table = list(sched)
        while len(table) > 1 and table[-1] == table[-2]:   # the last triple repeats
            table.pop()
        knobs["coefficients"] = [list(t) for t in table]
    knobs["lowprec_order"] = (p.lowprec_order if cand.precision in ("bfloat16", "float16")
                              else "cast_then_normalise")
    io = dtype if dtype != ("float64" if cand.precision == "float64" else "float32") else None
    if io is not None:
        knobs["io_dtype"] = io
    return Claim.from_preset(name, **knobs)


# -- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="swanref identify",
        description="Which claim does an orthogonaliser match? Prints the claim file (TOML, "
                    "loadable by --claim), the nearest alternatives with distances and "
                    "tolerances, and the probes that separate them. Exit 0 when the claim "
                    "matches every probe, 1 when only a closest claim was found, 2 on usage "
                    "errors, 4 when the target exited, 5 when it did not return within "
                    "--timeout.")
    p.add_argument("target", metavar="TARGET", help="module:function or path/file.py:function "
                   "(--level optimizer: pkg.module:Class, a torch.optim optimizer, or "
                   "pkg.module:factory, an optax GradientTransformation factory)")
    p.add_argument("--dtype", default=None, choices=tuple(MATCH_TOLERANCE),
                   help="dtype of the probes passed to the target (bfloat16/float16: float32 "
                        "arrays holding those values; default float64); --level optimizer: "
                        "the parameters' dtype, float32 (default) or float64")
    p.add_argument("--level", default="operator", choices=("operator", "update", "optimizer"),
                   help="operator: an orthogonaliser; update: a whole update (scale rule, "
                        "NorMuon axis, then the orthogonaliser); optimizer: an optimizer "
                        "class or factory, driven like check-optimizer (Nesterov, momentum, "
                        "scale, weight decay, second moment, gate, epsilon, N-D rule, ...)")
    p.add_argument("--optimizer", action="store_true",
                   help="short for --level optimizer")
    p.add_argument("--params", default="auto", help="--level optimizer: how the parameters "
                   f"reach the constructor: {', '.join(PARAM_STYLES)} (default auto)")
    p.add_argument("--kwarg", action="append", default=None, metavar="NAME=VALUE",
                   help="bind a keyword argument of the target (repeatable)")
    p.add_argument("--array-type", default="numpy", choices=("numpy", "torch", "jax", "cupy"))
    p.add_argument("--output", metavar="FILE", default=None,
                   help="also write the claim to FILE (.toml or .json)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="the longest the import or one call of the target may take; past it "
                        "identify stops with TIMEOUT (exit 5) naming the probe (default "
                        f"{DEFAULT_TIMEOUT_S:g}; 0: no deadline)")
    return p



class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.__class__ = _Parser
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
        if args.optimizer or args.level == "optimizer":
            return _main_optimizer(args)
        args.dtype = args.dtype or "float64"
        kwargs = dict(parse_kwarg(k) for k in (args.kwarg or []))
        runner = TargetRunner(timeout_seconds(args.timeout))
        fn = bind(load_target(args.target, runner), kwargs)
        call = make_call(fn, args.array_type, runner)
        result = identify(call, args.dtype, level=args.level)
        if args.output:
            save_claim(result.claim, args.output)
    except UsageError as exc:
        print(f"swanref identify: error: {exc}", file=sys.stderr)
        return 2
    except (TargetTimeout, TargetAborted) as exc:  # the wording and exit of `swanref check`
        outcome = "TIMEOUT" if isinstance(exc, TargetTimeout) else "TARGET EXITED"
        code = 5 if outcome == "TIMEOUT" else 4
        print(f"swanref identify: verdict: {outcome} (exit {code})\n  cause: "
              f"{stop_message(exc)}")
        return code
    return _print(result, args.json)


def _print(result, as_json) -> int:
    if as_json:
        print(json.dumps(result.to_dict(), indent=1, default=json_number))
    else:
        print(result.summary())
    return 0 if result.match else 1


def _main_optimizer(args) -> int:
    """``swanref identify --level optimizer pkg.module:Class --kwarg ...``"""
    if args.array_type != "numpy":
        raise UsageError("--array-type applies to function targets, not --level optimizer")
    dtype = args.dtype or "float32"
    if dtype not in ("float32", "float64"):
        raise UsageError(f"--level optimizer takes --dtype float32 or float64 (the parameters' "
                         f"dtype), got {dtype!r}")
    kwargs = dict(parse_optimizer_kwarg(k) for k in (args.kwarg or []))
    try:
        result = identify_optimizer(args.target, kwargs, params=args.params, param_dtype=dtype,
                                    timeout=args.timeout)
    except (TargetTimeout, TargetAborted) as exc:
        outcome = "TIMEOUT" if isinstance(exc, TargetTimeout) else "TARGET EXITED"
        code = 5 if outcome == "TIMEOUT" else 4
        print(f"swanref identify: verdict: {outcome} (exit {code})\n  cause: "
              f"{stop_message(exc)}")
        return code
    if args.output:
        save_claim(result.claim, args.output)
    return _print(result, args.json)
