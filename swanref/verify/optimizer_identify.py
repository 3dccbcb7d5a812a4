"""``swanref identify --level optimizer``: which optimizer claim does a black-box optimizer match?

The optimizer is driven once per probe (:class:`Recorder` caches every run, so each candidate
claim is judged by ``check_optimizer``'s own properties on the same recorded steps, and the
optimizer runs about 15 times in all).  The search is coordinate-wise (docs/spec.md 11.6):

1. orthogonaliser (preset) and compute precision from the direction of one-step updates of
   wide, tall and square parameters with momentum 0 (no scale rule acts on a direction);
2. scale rule and factor from the update norms over those shapes (the rule whose implied
   factor is the same on all three; the factor snapped to a round value);
3. each remaining knob in turn, every value judged by the full optimizer check with the others
   held at their best (two passes): normalisation / second moment, gate, GradNorm before,
   Schatten preconditioning, epsilon value and form, Nesterov (off / on / always, per
   variant), momentum (when the optimizer takes none), the N-D rule, and again the preset and
   precision among the best four of step 1.

The weight decay's form is read from a zero-gradient step (the update is zero there, so the
parameter shrinks by exactly the decay): the decoupled ``p (1 - lr wd)`` every claim states,
or a note giving the factor observed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from swanref.presets.catalogue import PRESETS, ROUTES, get_preset
from swanref.presets.diagnose import UNIT_ROUNDOFF
from swanref.spec.conventions import SCALE_RULES, shape_factor
from swanref.verify.checker import json_number, separation_text
from swanref.verify.claims import Claim, ClaimError, dumps
from swanref.verify.optimizer import (KINDS, LR, MU, WD, OptimizerClaim, Unsupported,
                                      _expected, _implied, _rel, _unit, check_optimizer,
                                      probe_tolerance, user_settings)
from swanref.verify.optimizer_glue import (Deadline, generic_driver, keyword_for,
                                           signature_of)
from swanref.verify.targets import (DEFAULT_TIMEOUT_S, TargetAborted, TargetRunner,
                                    TargetTimeout, UsageError, load_target, timeout_seconds)

__all__ = ["identify_optimizer", "OptimizerIdentification", "Recorder", "to_claim"]

#: orthogonalisers searched in step 1 (every catalogue table; ``svd``: an exact polar factor)
SEARCH_PRESETS = tuple(p for p in PRESETS if p != "custom") + tuple(ROUTES) + ("svd",)
#: compute precisions, tightest first (the first that passes wins a tie)
PRECISIONS = ("float64", "float32", "bfloat16", "float16")
#: momentum values tried when the optimizer takes no momentum keyword
MOMENTA = (0.9, 0.95, 0.99, 0.8, 0.5)
EPSILONS = (1e-6, 1e-7, 1e-8, 1e-10, 1e-12, 1e-15)
#: second-moment EMA coefficients searched (pytorch-optimizer AdaMuon / NorMuon 0.95)
SECOND_MOMENT_BETAS = (0.95, 0.99, 0.9, 0.999)
#: Nesterov conventions a claim file can state (Claim.nesterov_variant)
CLAIM_VARIANTS = ("sutskever", "optax", "grokfast")
#: Claim.nd -> (nd, stack) of OptimizerClaim (verify/optimizer.py OptimizerClaim._ND)
ND_CLAIMS = {"flatten": ("flattened", "flattened"),
             "flatten_4d_batch_3d": ("flattened", "independent"),
             "batch_leading": ("batched", "independent"), "routed": ("routed", "routed"),
             "route_4d_batch_3d": ("routed", "independent")}
_NICE = (1.0, 0.2, 0.5, 2.0, 0.1, 0.25, 4.0)


class Recorder:
    """A driver that runs the optimizer once per distinct probe (p0, gradients, momentum,
    options) and replays the result, or the refusal, afterwards."""

    def __init__(self, run):
        self.run = run
        self.knobs = getattr(run, "knobs", None)
        self.deadline = getattr(run, "deadline", None)
        self.cache = {}
        self.scores = {}
        self.calls = 0
        #: the TargetTimeout / TargetAborted that stopped a run (identify stops with it)
        self.stopped = None

    @staticmethod
    def _key(x):
        if isinstance(x, (list, tuple)):
            return tuple(Recorder._key(y) for y in x)
        a = np.ascontiguousarray(x)
        return a.shape, a.dtype.str, a.tobytes()

    def __call__(self, p0, grads, momentum, **kw):
        key = (self._key(p0), self._key(grads), float(momentum), tuple(sorted(kw.items())))
        if key not in self.cache:
            self.calls += 1
            try:
                self.cache[key] = ("ok", self.run(p0, grads, momentum, **kw))
            except Exception as exc:  # noqa: BLE001 - replayed to every later candidate
                self.cache[key] = ("raise", exc)
            except (TargetTimeout, TargetAborted) as exc:  # the check reports it; we stop
                self.stopped = exc
                raise
        kind, value = self.cache[key]
        if kind == "raise":
            raise value
        return [list(x) if isinstance(x, list) else np.array(x) for x in value]


@dataclass
class Scored:
    claim: OptimizerClaim
    report: object
    bad: int
    ratio: float
    distance: float
    total: float = 0.0     # the sum of the properties' distances (the tie-breaker of matches)

    @property
    def match(self):
        return self.report.outcome == "conforming"


def _score(run, claim, seed=0) -> Scored:
    """The optimizer check under ``claim`` on the recorded runs (each claim judged once)."""
    key = (repr(claim), seed)
    if key not in run.scores:
        run.scores[key] = _score_now(run, claim, seed)
    return run.scores[key]


def _score_now(run, claim, seed):
    r = check_optimizer(run, claim, "identify", seed, timeout=None)
    if run.stopped is not None:  # a hang or an exit: identify stops there (exit 5 / 4)
        raise run.stopped
    bad, ratio, dist, total = 0, 0.0, 0.0, 0.0
    for x in r.results:
        if x.status in ("FAIL", "error") or (x.status == "unsupported" and not x.explained):
            bad += 1
        if x.error is not None and x.tolerance and x.status != "warn":  # warn: advisory
            e = x.error if math.isfinite(x.error) else math.inf
            ratio = max(ratio, e / x.tolerance)
            dist = max(dist, e)
            total += e
        elif x.status == "FAIL":
            ratio = dist = total = math.inf
    return Scored(claim, r, bad, ratio, dist, total)


def _key(s: Scored):
    return (not s.match, s.bad, s.ratio if not s.match else s.total)


def _common(a: Scored, b: Scored):
    """(failures, worst ratio) of ``a`` and of ``b`` on one yardstick: each property's
    distance over the tighter of the two claims' tolerances (a looser claim -- a gate, a lower
    precision -- is not better for its looser tolerance alone).  A property one claim judges
    and the other does not (not applicable, no claim) counts only where the judging claim
    passes it: then the other asserts less (a failure is no credit to the claim that skips
    it).  A parameter the claim routes and the optimizer was seen to route (status
    ``routed``: an Adam-like step) is a pass at distance 0, and an advisory result (``warn``:
    a premise the claim does not state, such as complex support) is no distance at all."""
    ra = {r.name: r for r in a.report.results}
    rb = {r.name: r for r in b.report.results}

    def judged(r):
        return r is not None and (r.status == "routed" or (
            r.status != "warn" and r.error is not None and r.tolerance))

    def ratio(r, o):
        if r.status == "routed":
            return 0.0
        if o.status == "routed":
            return r.error / r.tolerance
        return r.error / min(r.tolerance, o.tolerance)

    def broken(r):
        return r is not None and (r.status in ("FAIL", "error") or (
            r.status == "unsupported" and not r.explained))
    out = []
    for mine, other in ((ra, rb), (rb, ra)):
        bad, worst = 0, 0.0
        for name in set(mine) | set(other):
            r, o = mine.get(name), other.get(name)
            if judged(r) and judged(o):
                q = ratio(r, o)
                q = q if math.isfinite(q) else math.inf
                bad += q > 1
                worst = max(worst, q)
            elif broken(r) and not judged(r):
                bad, worst = bad + 1, math.inf
            elif not judged(r) and o is not None and o.status in ("pass", "routed") \
                    and judged(o) \
                    and not (r is not None and r.status in ("unsupported", "routed")):
                bad += 1
        out.append((bad, worst))
    return out


def _judged_count(s: Scored) -> int:
    return sum(r.status in ("pass", "FAIL") for r in s.report.results)


def _better(s: Scored, best: Scored, rank=None) -> bool:
    """A knob leaves its current value only for a clearly better reading on the common
    yardstick (:func:`_common`): fewer failures, else a worst ratio 2% smaller; where neither
    fails, half the summed distance.  Two precisions of which exactly one matches under its
    own tolerances: the matching one; both matching: the orthogonaliser ranked nearer in the
    widest precision (``rank``: preset -> place), else the tighter precision."""
    if s.claim.precision != best.claim.precision and s.match != best.match:
        # precision is a noise level: the reading whose own noise model covers every property
        # it judges wins -- if it judges as many as the other (a precision whose noise model
        # exceeds 0.5 judges nothing, "no claim").  On the common yardstick a bfloat16 target
        # is nearer a float16 emulation (one rounding, not two independent ones) and would be
        # read as float16 (timm's Muon)
        m, o = (s, best) if s.match else (best, s)
        if _judged_count(m) >= _judged_count(o):
            return s.match
    if s.match and best.match and s.claim.precision != best.claim.precision:
        # both within their own noise: distances to emulations of different precisions are
        # not comparable (each bfloat16 emulation adds its own rounding).  The orthogonaliser
        # is the one nearer in the widest precision (rank, step 1); for one orthogonaliser the
        # tighter precision asserts more
        if s.claim.preset != best.claim.preset:
            return rank is not None and rank.get(s.claim.preset, math.inf) < rank.get(
                best.claim.preset, math.inf)
        return UNIT_ROUNDOFF[s.claim.precision] < UNIT_ROUNDOFF[best.claim.precision]
    (bs, ws), (bb, wb) = _common(s, best)
    if bs != bb:
        return bs < bb
    ps, pb = (sum(r.status == "pass" for r in x.report.results) for x in (s, best))
    if not bs and ps != pb:  # a claim that asserts more (a Nesterov form that passes)
        return ps > pb
    if bs:
        return ws < 0.98 * wb
    return s.total < 0.5 * best.total


# -- step 1 and 2: orthogonaliser, precision, scale ------------------------------------------------

def _one_steps(run, dt, seed):
    rng = np.random.default_rng([seed, 22])
    out = []
    for kind in ("wide", "tall", "square"):
        shape = KINDS[kind]
        p0 = rng.standard_normal(shape).astype(dt).astype(np.float64)
        g = rng.standard_normal(shape).astype(dt).astype(np.float64)
        try:
            (p1,) = run(p0, [g], 0.0)
        except Unsupported:
            continue
        out.append((p0, g, np.asarray(p1, np.float64)))
    if not out:
        raise UsageError("the optimizer refused every 2-D parameter (wide, tall, square): "
                         "nothing to identify")
    return out


def _distinct_presets():
    """One preset per distinct (table, safety factor): the epsilon is searched on its own."""
    seen, out = set(), []
    for name in SEARCH_PRESETS:
        if name == "svd":
            out.append(name)
            continue
        p = get_preset(name)
        key = (tuple(map(tuple, p.coefficients)), p.steps, p.norm_scale, p.form,
               getattr(p, "norm", None) == "aol")
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def _direction_ranking(base, steps, precisions):
    """[(preset, precision)] best first: presets ranked by the direction distance of the
    one-step updates at the widest precision (no scale rule acts on a direction), each with
    the tightest precision whose tolerance it passes (else its smallest ratio)."""
    per = {}
    for name in _distinct_presets():
        for prec in precisions:
            try:
                c = replace(base, preset=name, precision=prec, scale="none", eps=None,
                            eps_form=None, norm_scale=None)
            except ValueError:
                continue
            ratio, dist = 0.0, 0.0
            try:
                for p0, g, p1 in steps:
                    U = _implied(c, p0, p1)
                    with np.errstate(all="ignore"):
                        d = _rel(_unit(U), _unit(_expected(c, g)))
                    tol = probe_tolerance(c, g)
                    ratio, dist = max(ratio, d / tol), max(dist, d)
            except (ValueError, TypeError):  # a preset this precision does not model
                continue
            per.setdefault(name, []).append((ratio, dist, prec))
    ranked = []
    for name, rows in per.items():
        passing = [r for r in rows if r[0] <= 1]
        prec = passing[0][2] if passing else min(rows)[2]
        ranked.append((rows[0][1], name, prec))
    ranked.sort(key=lambda r: r[0])
    return [(n, p) for _, n, p in ranked]


def _snap(f):
    for nice in _NICE:
        if abs(f / nice - 1) < 0.02:
            return nice
    return float(f"{f:.4g}")


def fit_scale(claim, steps):
    """(scale rule, factor) whose implied factor is the same on every one-step shape."""
    raw = replace(claim, scale="none", scale_factor=1.0)
    ratios = []
    for p0, g, p1 in steps:
        U, E = _implied(raw, p0, p1), _expected(raw, g)
        ne = float(np.linalg.norm(E))
        if ne > 0 and math.isfinite(ne):
            ratios.append((g.shape, float(np.linalg.norm(U)) / ne))
    best = None
    for rule in SCALE_RULES.values():
        if rule.data_dependent:
            continue
        f = [r / shape_factor(rule, *s[-2:]) for s, r in ratios]
        if not f or min(f) <= 0:
            continue
        spread = max(f) / min(f)
        if best is None or spread < best[0] - 1e-3:
            best = (spread, rule.name, float(np.exp(np.mean(np.log(f)))))
    if best is None:
        return claim.scale, claim.scale_factor
    return best[1], _snap(best[2])


# -- step 3: one knob at a time ----------------------------------------------------------------

def _knob_values(claim, run, top):
    """knob label -> list of (value label, OptimizerClaim changes)."""
    P = get_preset(claim.preset) if claim.preset in PRESETS or claim.preset in ROUTES else None
    norm = [("none", dict(normalise="none", rematch="orth", second_moment_eps=0.0,
                          second_moment_beta=None, second_moment_debias=False))]
    norm += [(f"norm_axis={a}", dict(normalise=a, rematch="orth", second_moment_eps=0.0))
             for a in ("rows", "columns", "columns_if_wide")]
    norm += [("second_moment=adamuon", dict(normalise="elementwise", rematch="sqrt_min",
                                            second_moment_eps=0.0))]
    betas = [(f"second_moment_beta={b}", dict(second_moment_beta=b, **(
        {"second_moment_debias": False} if b is None else {})))
             for b in (None,) + SECOND_MOMENT_BETAS] if claim.normalise != "none" else []
    eps = [("eps scale-invariant (spec 9.5)", dict(eps=None, eps_form="invariant"))]
    if P is not None:
        eps += [(f"eps {P.eps:g} ({P.norm}, the preset's)", dict(eps=None, eps_form=None))] \
            if P.norm in ("add", "clamp") else []
        eps += [(f"eps {e:g} ({f})", dict(eps=e, eps_form=f)) for e in EPSILONS
                for f in ("add", "clamp")]
        eps += [("no epsilon", dict(eps=0.0, eps_form="none"))]
    keyword = getattr(run, "knobs", None)
    switchable = keyword is None or keyword.get("nesterov") is not None
    nest = [("nesterov=off", dict(nesterov=None, nesterov_always=False))]
    for v in CLAIM_VARIANTS:
        if switchable:
            nest.append((f"nesterov=on ({v})", dict(nesterov=v, nesterov_always=False)))
        nest.append((f"nesterov=always ({v})", dict(nesterov=v, nesterov_always=True)))
    out = {"normalisation": norm,
           "second_moment_beta": betas,
           "gate": [(f"gate={g}", dict(gate=g)) for g in ("none", "cautious",
                                                           "cautious_columns")],
           "pre": [(f"pre={p}", dict(pre=p)) for p in ("none", "grad_norm")],
           "epsilon": eps,
           "nesterov": nest,
           "nd": [(f"nd={k}", dict(nd=v[0], stack=v[1])) for k, v in ND_CLAIMS.items()],
           "orthogonaliser": [(f"preset={n} ({p})", dict(preset=n, precision=p, eps=None,
                                                        eps_form=None, norm_scale=None))
                              for n, p in top]}
    if P is not None and claim.precision in ("float32", "float64"):
        out["precondition"] = [(f"precondition={p}", dict(precondition=p))
                               for p in ("frobenius", "schatten")]
    if keyword is not None and keyword.get("momentum") is None:
        out["momentum"] = [(f"momentum={m:g}", dict(momentum=m)) for m in MOMENTA]
    return out


def _search(rec, best, top, steps, seed, knob_of, rank=None):
    """One pass over the knobs, each set to its best value with the others held."""
    for knob, values in _knob_values(best.claim, rec, top).items():
        for vlabel, changes in values:
            c = _try(best.claim, changes)
            if c is None:
                continue
            try:
                if knob in ("normalisation", "orthogonaliser", "gate"):
                    s_, f_ = fit_scale(c, steps)
                    c = _try(c, dict(scale=s_, scale_factor=f_)) or c
                s = _score(rec, c, seed)
            except (ValueError, TypeError):  # a combination the model does not evaluate
                continue
            if _better(s, best, rank):
                best, knob_of[knob] = s, vlabel
    return best


def _try(claim, changes):
    try:
        return replace(claim, **changes)
    except (ValueError, TypeError):
        return None


# -- the result ---------------------------------------------------------------------------------

@dataclass
class Alternative:
    label: str
    knob: str
    distance: float
    ratio: float
    separating: list          # [(property, distance, tolerance)]


@dataclass
class OptimizerIdentification:
    claim: Claim
    optimizer_claim: OptimizerClaim
    match: bool
    distance: float
    ratio: float
    report: object
    alternatives: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    label: str = ""
    runs: int = 0

    def claim_text(self) -> str:
        return dumps(self.claim)

    def summary(self) -> str:
        head = "matches" if self.match else "closest (NOT within tolerance on every property)"
        lines = [f"swanref identify --level optimizer: {head}: {self.label}",
                 f"  worst property at {self.ratio:.3g} x its tolerance (distance "
                 f"{self.distance:.3g}); the optimizer ran {self.runs} times"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += ["", "claim (swanref check-optimizer ... --claim FILE):", "",
                  self.claim_text().rstrip(), "", "properties under this claim:"]
        for r in self.report.results:
            err = "" if r.error is None else f" {r.error:.3g} (tol {r.tolerance:.3g})"
            lines.append(f"  {r.name:<24} {r.status}{err}")
        lines += ["", "nearest alternatives (one knob changed):"]
        for a in self.alternatives:
            sep = separation_text(a.separating, 3, "property")
            lines.append(f"  {a.label}: distance {a.distance:.3g} ({a.ratio:.3g} x tolerance)"
                         f"; {sep}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"schema": "swanref-identify/1", "level": "optimizer", "match": self.match,
                "label": self.label, "distance": json_number(self.distance),
                "ratio": json_number(self.ratio),
                "claim": self.claim.to_dict(), "claim_toml": self.claim_text(),
                "notes": list(self.notes), "runs": self.runs,
                "properties": [{**r.__dict__, "error": json_number(r.error)}
                               for r in self.report.results],
                "alternatives": [{"label": a.label, "knob": a.knob,
                                  "distance": json_number(a.distance),
                                  "ratio": json_number(a.ratio),
                                  "separating_probes": [{"probe": p, "distance": json_number(d),
                                                         "tolerance": t}
                                                        for p, d, t in a.separating]}
                                 for a in self.alternatives]}


def to_claim(oc: OptimizerClaim) -> Claim:
    """The shared claim record (docs/spec.md 11) that ``OptimizerClaim.from_claim`` maps back
    to ``oc``; ValueError for a combination no claim file states."""
    nd = next((k for k, v in ND_CLAIMS.items() if v == (oc.nd, oc.stack)), None)
    if nd is None:
        raise ValueError(f"no claim states nd={oc.nd!r} with stack={oc.stack!r}")
    if oc.nesterov is not None and oc.nesterov not in CLAIM_VARIANTS:
        raise ValueError(f"no claim states the Nesterov form {oc.nesterov!r}")
    norm_axis, second = {"none": ("none", "none"), "rows": ("rows", "none"),
                         "columns": ("columns", "none"),
                         "columns_if_wide": ("columns_if_wide", "none"),
                         "elementwise": ("none", "adamuon")}[oc.normalise]
    known = oc.preset in PRESETS or oc.preset in ROUTES
    kw = dict(level="optimizer", compute_dtype=oc.precision, scale=oc.scale,
              scale_factor=oc.scale_factor, lr=oc.lr, weight_decay=oc.weight_decay,
              momentum=oc.momentum, pre=oc.pre, norm_axis=norm_axis, second_moment=second,
              gate={"none": "none", "cautious": "per_element",
                    "cautious_columns": "per_column"}[oc.gate], nd=nd,
              nesterov="off" if oc.nesterov is None else
              ("always" if oc.nesterov_always else "on"),
              nesterov_variant=oc.nesterov or "sutskever",
              second_moment_beta=oc.second_moment_beta, complex=bool(oc.complex),
              second_moment_eps=oc.second_moment_eps or None,
              second_moment_debias=oc.second_moment_debias, gate_rescale=oc.gate_rescale)
    if oc.precondition == "schatten":
        kw["norm"] = "schatten"
    default_io = "float64" if oc.precision == "float64" else "float32"
    if oc.param_dtype != default_io:
        kw["io_dtype"] = oc.param_dtype
    if known:
        kw["preset"] = oc.preset
        if oc.eps_form not in (None, "invariant") or oc.eps is not None:
            P = get_preset(oc.preset)
            kw["eps"] = P.eps if oc.eps is None else oc.eps
            kw["eps_form"] = oc.eps_form or P.norm
        elif oc.eps_form is None:  # the preset's own epsilon at the buffer's scale
            P = get_preset(oc.preset)
            if P.norm in ("add", "clamp"):
                kw["eps"], kw["eps_form"] = P.eps, P.norm
        if oc.norm_scale is not None:
            kw["norm_scale"] = oc.norm_scale
    else:
        kw["method"] = oc.preset
    return Claim(**kw)


def _separating(match: Scored, alt: Scored):
    base = {r.name: r for r in match.report.results}
    out = []
    for r in alt.report.results:
        m = base.get(r.name)
        if r.status in ("FAIL", "error") and m is not None and m.status in (
                "pass", "routed", "not applicable", "no claim", "unsupported"):
            out.append((r.name, r.error if r.error is not None else math.inf,
                        r.tolerance if r.tolerance is not None else 0.0))
    out.sort(key=lambda t: -(t[1] / t[2]) if t[2] else -math.inf)
    return out


def identify_optimizer(target=None, kwargs=None, *, driver=None, params="auto",
                       param_dtype="float32", timeout=DEFAULT_TIMEOUT_S, seed=0,
                       alternatives=6) -> OptimizerIdentification:
    """Search the optimizer claim space for ``target`` (a ``torch.optim`` class, an optax
    factory, or their import path ``pkg.module:Class``, built with ``kwargs``) or for a
    hand-written ``driver`` (``run(p0, grads, momentum, nesterov=False, group=False)``, as
    :func:`~swanref.verify.optimizer.check_optimizer` takes).  Parameters are ``param_dtype``;
    every import, construction and step runs under ``timeout`` seconds (TargetTimeout names
    the property and step).  The returned claim is the one the check was run under (the shared
    record, ``claim_text()`` its TOML for ``check-optimizer --claim``)."""
    if (target is None) == (driver is None):
        raise UsageError("give an optimizer (target) or a driver, not both")
    if param_dtype not in ("float32", "float64"):
        raise UsageError(f"param_dtype must be float32 or float64, got {param_dtype!r}")
    seconds = timeout_seconds(timeout)
    runner = TargetRunner(seconds) if seconds is not None else None
    kwargs = dict(kwargs or {})
    label, user_momentum = "", None
    lr, wd = LR, WD
    if driver is None:
        label = target if isinstance(target, str) else getattr(target, "__qualname__",
                                                               repr(target))
        if isinstance(target, str):
            target = load_target(target, runner)
        sig = signature_of(target)
        kwargs, upd = user_settings(kwargs, {k: keyword_for(sig, k, kwargs) for k in (
            "lr", "weight_decay", "momentum")}, ())
        lr, wd = upd.get("lr", lr), upd.get("weight_decay", wd)
        user_momentum = upd.get("momentum")
        run = generic_driver(target, kwargs, lr=lr, weight_decay=wd, params=params,
                             dtype=param_dtype, claimed=("lr", "weight_decay"),
                             deadline=Deadline(runner))
    else:
        label = getattr(driver, "__qualname__", repr(driver))
        run = driver
    rec = Recorder(run)
    mom = MU if driver is not None or user_momentum is None else user_momentum
    if rec.knobs is not None and rec.knobs.get("momentum") is None:
        mom = getattr(run, "momentum_default", None) or MU
    dt = np.float64 if param_dtype == "float64" else np.float32
    # complex parameters start unclaimed (complex_input advisory: an optimizer that drops the
    # imaginary part, as timm's Muon does, is still identified); claimed below where they pass
    base = OptimizerClaim("svd", precision="float64" if param_dtype == "float64" else "float32",
                          param_dtype=param_dtype, lr=lr, weight_decay=wd, momentum=mom,
                          complex=False)
    notes = []
    with np.errstate(all="ignore"):
        if runner is not None and getattr(run, "deadline", None) is None:
            # a hand-written driver: each of its runs under the deadline
            raw = rec.run
            rec.run = lambda *a, **k: runner.run(lambda: raw(*a, **k),
                                                 where="identify: the driver's run")
        if getattr(run, "deadline", None) is not None:
            run.deadline.probe = "identify: one-step probes"
        steps = _one_steps(rec, dt, seed)
        precisions = [p for p in PRECISIONS if param_dtype == "float64" or p != "float64"]
        ranking = _direction_ranking(base, steps, precisions)
        rank = {name: i for i, (name, _) in enumerate(ranking)}
        # first every knob at the tightest precision the one-step directions pass (the
        # widest where they pass there), where the tolerances are tight enough that a
        # structural knob (a gate, a Nesterov form) is told apart from rounding -- never at a
        # precision no probe can pass, where every knob would be chosen by which failure is
        # smallest (timm's Muon: bfloat16 under float32 parameters); then the precision with
        # the best presets; then every knob again
        wide = ranking[:4]
        every = list(dict.fromkeys(ranking[:2] + [(n, p) for n, _ in ranking[:2]
                                                  for p in precisions]))
        claim = replace(base, preset=ranking[0][0], precision=ranking[0][1])
        scale, factor = fit_scale(claim, steps)
        best = _score(rec, replace(claim, scale=scale, scale_factor=factor), seed)
        knob_of = {}
        for top in (wide, every):
            for _pass in range(3):  # until a pass changes nothing
                before = repr(best.claim)
                best = _search(rec, best, top, steps, seed, knob_of, rank)
                if repr(best.claim) == before:
                    break
        # complex parameters handled right: the claim states it (else complex_input is advisory)
        cplx = _score(rec, replace(best.claim, complex=True), seed)
        if cplx.report.status("complex_input") == "pass":
            best = cplx
        # the claim a file states, checked again as the file reads back
        try:
            claim_rec = to_claim(best.claim)
            oc = OptimizerClaim.from_claim(claim_rec)
        except (ValueError, ClaimError) as exc:
            notes.append(f"the best reading is not a claim file can state ({exc}); the "
                         "nearest claimable one is printed")
            claim_rec = to_claim(replace(best.claim, nd="flattened", stack="flattened",
                                         nesterov=None if best.claim.nesterov not in
                                         CLAIM_VARIANTS else best.claim.nesterov))
            oc = OptimizerClaim.from_claim(claim_rec)
        final = _score(rec, oc, seed)
        # the N-D rule of an optimizer that refuses N-D parameters
        res = {r.name: r for r in final.report.results}
        if all(res[n].status == "unsupported" for n in ("one_step_conv", "stacked_3d")):
            claim_rec = claim_rec.replace(nd="2d_only")
            notes.append("N-D parameters refused: nd = '2d_only'")
        notes += _decay_note(rec, best.claim, dt, seed)
        # nearest alternatives: the best other value of each knob
        alts = []
        for knob, values in _knob_values(best.claim, rec, top).items():
            cands = []
            for vlabel, changes in values:
                c = _try(best.claim, changes)
                if c is None or c == best.claim:
                    continue
                try:
                    if knob in ("normalisation", "orthogonaliser", "gate"):
                        s_, f_ = fit_scale(c, steps)
                        c = _try(c, dict(scale=s_, scale_factor=f_)) or c
                    s = _score(rec, c, seed)
                except (ValueError, TypeError):
                    continue
                cands.append((s, vlabel))
            if cands:
                s, vlabel = min(cands, key=lambda t: _key(t[0]))
                alts.append(Alternative(vlabel, knob, s.distance, s.ratio,
                                        _separating(final, s)))
        alts.sort(key=lambda a: a.ratio)
    what = ", ".join(f"{k}: {v}" for k, v in knob_of.items())
    return OptimizerIdentification(
        claim_rec, oc, final.match, final.distance, final.ratio, final.report,
        alts[:alternatives], notes,
        f"{label}: preset {oc.preset}, {oc.precision}, scale {oc.scale} x {oc.scale_factor:g}"
        + (f"; {what}" if what else ""), rec.calls)


def _decay_note(rec, claim, dt, seed):
    """The weight decay's form from a zero-gradient step: the decoupled factor 1 - lr wd?"""
    rng = np.random.default_rng([seed, 23])
    p0 = rng.standard_normal(KINDS["wide"]).astype(dt).astype(np.float64)
    try:
        (p1,) = rec(p0, [np.zeros_like(p0)], 0.0)
    except Unsupported:
        return []
    p1 = np.asarray(p1, np.float64)
    if not np.all(np.isfinite(p1)):
        return ["a zero gradient gives a non-finite parameter (no epsilon guards the "
                "normalisation)"]
    factor = float(np.sum(p0 * p1) / np.sum(p0 * p0))
    want = 1 - claim.lr * claim.weight_decay
    resid = _rel(p1, factor * p0)
    u = 1e-6 if dt == np.float32 else 1e-12
    if resid > 1e-3:
        return ["a zero gradient moves the parameter off its own direction: the weight decay "
                "is not a plain shrink (coupled into the gradient, or an update at g = 0)"]
    if abs(factor - want) <= 10 * u + 1e-7:
        return [f"weight decay: decoupled p (1 - lr wd) = {want:g} per step (as claimed)"]
    return [f"weight decay: a zero-gradient step multiplies p by {factor:.6g}, not "
            f"1 - lr wd = {want:g} (the decoupled form every claim states): effective "
            f"weight_decay {(1 - factor) / claim.lr:.4g}"]
