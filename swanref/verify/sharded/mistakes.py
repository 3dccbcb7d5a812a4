"""The global-versus-local mistakes the sharded check names (docs/spec.md 10.3).

Each mistake is computed by swanref on the global input (float64, exact arithmetic for the
iterations); a failing result is blamed on the one it is 10 times closer to than to the
unsharded result.  Distances are NaN-safe: a result or a mistake that is not finite is at
infinite distance from everything, and a mistake whose own computation diverged or overflowed is
never a candidate (it would otherwise be "distance 0" from a result that also blew up, or win a
``max`` against NaN).
"""
from __future__ import annotations

import math

import numpy as np

from swanref import ops
from swanref.presets.catalogue import get_preset, schedule
from swanref.presets.diagnose import denominator
from swanref.spec import spectral
from swanref.verify.sharded.layouts import assemble, shard_layouts, split
from swanref.verify.sharded.reduction import mats

#: a mistake is named when the result is this many times closer to it than to the unsharded
#: result (and the unsharded comparison failed)
EXPLAIN_RATIO = 10.0
#: a mistake whose output is this many times larger than the unsharded result's diverged
DIVERGED = 1e6

#: catalogue order: where an input does not separate two mistakes, the first is named
ORDER = ("whole_matrix", "global_norm", "global_gram", "gather_axis", "norm_scale",
         "world_scaled")


def rel_fro(a, b) -> float:
    """Largest relative Frobenius distance over the matrices; a shape mismatch or a non-finite
    value on either side is infinitely far."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.sqrt(np.sum((mats(a) - mats(b)) ** 2, axis=(1, 2)))
        ref = np.maximum(np.sqrt(np.sum(mats(b) ** 2, axis=(1, 2))), 1e-300)
        d = diff / ref
    if not np.all(np.isfinite(d)):
        return math.inf
    return float(np.max(d)) if d.size else 0.0


def usable(var, ref) -> bool:
    """A mistake that diverged or overflowed (non-finite, or far larger than the unsharded
    result) explains nothing."""
    var = np.asarray(var, np.float64)
    if not np.all(np.isfinite(var)):
        return False
    big = max(float(np.max(np.abs(ref))) if np.size(ref) else 0.0, 1.0)
    return float(np.max(np.abs(var), initial=0.0)) <= DIVERGED * big


def _per_block(G, kind, world, f, rule, mesh):
    """Apply ``f`` to every rank's (nonempty) block and glue the results."""
    parts = [f(b) if b.size else b for b in split(G, kind, world, rule, mesh)]
    return assemble(parts, kind, np.shape(G), rule, mesh)


def _odd_poly(X, sched):
    """U P(S) V^T: the exact-arithmetic result of the polynomial iteration on X."""
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    with np.errstate(over="ignore", invalid="ignore"):   # a diverging mistake: not usable
        for a, b, c in sched:
            s2 = s * s
            s = s * (a + b * s2 + c * s2 * s2)
        return (U * s) @ Vt


def _wide_apply(g, f):
    return f(g.T).T if g.shape[0] > g.shape[1] else f(g)


def _wrong_axis(G, kind, world, op, rule):
    """Blocks gathered along the other axis (rows laid side by side, columns stacked), the
    operator run on that matrix, and each rank keeping its block along the same wrong axis."""
    lays = shard_layouts(kind, np.shape(G), world, rule)
    blocks = split(G, kind, world, rule)
    if kind not in ("rows", "cols") or len({b.shape for b in blocks}) != 1:
        return None
    axis = 1 if kind == "rows" else 0
    W = op(np.concatenate(blocks, axis=axis))
    outs = np.split(W, world, axis=axis)
    return assemble(outs, kind, np.shape(G), rule) if len(outs) == len(lays) else None


def variants(claim, G, kind: str, world: int, ref=None, rule="tensor_split", mesh=None) -> dict:
    """``{property: [(description, output), ...]}`` of the mistakes that apply (a property may
    have several forms, e.g. a norm scaled by sqrt(p) or by p)."""
    G = np.asarray(G, np.float64)
    if world < 2:
        return {}
    out: dict = {}
    factors = sorted({float(world), math.sqrt(world)})
    if ref is not None:     # any layout: an average over the ranks where a sum was due, ...
        out["world_scaled"] = [(f"the result multiplied by {f:g} (world size {world})", ref * f)
                               for f in factors] + \
                              [(f"the result divided by {f:g} (world size {world})", ref / f)
                               for f in factors]
    if kind not in ("rows", "cols", "grid"):
        return out
    per_block = (lambda f: _per_block(G, kind, world, f, rule, mesh))
    if claim.op == "grad_norm":
        out["whole_matrix"] = [("row statistics over each rank's shard only",
                                per_block(ops.grad_norm))]
        wa = _wrong_axis(G, kind, world, ops.grad_norm, rule)
        if wa is not None:
            out["gather_axis"] = [("the shards gathered along the wrong axis", wa)]
        return out
    if claim.preset is not None:
        preset = get_preset(claim.preset)
        sched = schedule(claim.preset, claim.steps)
        den = denominator(float(np.linalg.norm(G)), preset)

        def run(b):
            return _odd_poly(b / denominator(float(np.linalg.norm(b)), preset), sched)
        out["whole_matrix"] = [("the preset applied to each rank's shard on its own",
                                per_block(run))]
        out["global_norm"] = [("each shard divided by its own Frobenius norm",
                               _odd_poly(per_block(lambda b: b / denominator(
                                   float(np.linalg.norm(b)), preset)), sched))]
        out["global_gram"] = [("global norm but the Gram matrix of each shard alone (no "
                               "all-reduce)", per_block(lambda b: _odd_poly(b / den, sched)))]
        wa = _wrong_axis(G, kind, world, run, rule)
        if wa is not None:
            out["gather_axis"] = [("the shards gathered along the wrong axis", wa)]
        fro = float(np.linalg.norm(G))
        out["norm_scale"] = [
            (f"the global Frobenius norm {how} {f:g} (world size {world})",
             _odd_poly(G / denominator(fro * (f if how == "multiplied by" else 1 / f), preset),
                       sched))
            for f in factors for how in ("multiplied by", "divided by")]
        return out
    if claim.iterative:
        steps, beta, scaling = claim.ns_reading()

        def ns(b):
            return _wide_apply(b, lambda w: spectral.predicted_newton_schulz(w, steps, beta,
                                                                             scaling))
        out["whole_matrix"] = [("the iteration run on each rank's shard on its own",
                                per_block(ns))]
        c = float(spectral.scaling_constant(np.linalg.svd(G, compute_uv=False), scaling))

        def local_gram(b):
            U, s, Vt = np.linalg.svd(b, full_matrices=False)
            return (U * spectral.ns_scalar_map(s ** 2 / c, steps, beta)) @ Vt
        out["global_gram"] = [("global scaling constant but the Gram matrix of each shard "
                               "alone (no all-reduce)", per_block(local_gram))]
        wa = _wrong_axis(G, kind, world, ns, rule)
        if wa is not None:
            out["gather_axis"] = [("the shards gathered along the wrong axis", wa)]
        if scaling != "none":
            U, s, Vt = np.linalg.svd(G, full_matrices=False)
            forms = []
            for f in factors:
                for how, cc in (("multiplied by", c * f), ("divided by", c / f)):
                    y = spectral.ns_scalar_map(s ** 2 / cc, steps, beta) * math.sqrt(c / cc)
                    forms.append((f"the scaling constant {how} {f:g} (world size {world})",
                                  (U * y) @ Vt))
            out["norm_scale"] = forms
        return out
    out["whole_matrix"] = [("each rank's shard whitened on its own",
                            per_block(lambda b: ops.whiten(b, "svd")))]
    wa = _wrong_axis(G, kind, world, lambda b: ops.whiten(b, "svd"), rule)
    if wa is not None:
        out["gather_axis"] = [("the shards gathered along the wrong axis", wa)]
    return out


def closest(X, ref, wrong: dict):
    """``(property, description, distance)`` of the usable forms, the closest form of each
    property, in catalogue order."""
    found = []
    for name in sorted(wrong, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        best = None
        for what, var in wrong[name]:
            if not usable(var, ref):
                continue
            d = rel_fro(X, var)
            if best is None or d < best[2]:
                best = (name, what, d, var)
        if best is not None:
            found.append(best)
    return found


def diagnosis(failing):
    """The property the failures are blamed on, judged over every failing input at once:
    ``failing`` is ``[(case, distance to the unsharded result, closest(...))]``.

    A form explains a failure when the result is EXPLAIN_RATIO times closer to it than to the
    unsharded result.  The property explaining the most failing inputs wins (one input may
    not separate two mistakes: two shards of equal norm make "each shard's own norm" the
    same as "the norm divided by sqrt(2)"; another input does); among those, the ones whose
    worst fit is within EXPLAIN_RATIO of the best go to the first in catalogue order (the
    simplest mistake).  ``None`` when nothing explains any failure (a result that is not
    finite is closer to nothing).
    """
    stats: dict = {}
    for _, dref, found in failing:
        if not math.isfinite(dref):
            continue
        for name, _, d, _ in found:
            if math.isfinite(d) and d * EXPLAIN_RATIO < dref:
                n, worst = stats.get(name, (0, 0.0))
                stats[name] = (n + 1, max(worst, d / dref if dref else 0.0))
    if not stats:
        return None
    most = max(n for n, _ in stats.values())
    top = {name: worst for name, (n, worst) in stats.items() if n == most}
    best = min(top.values())
    eligible = [name for name, worst in top.items() if worst <= best * EXPLAIN_RATIO or
                worst <= 1e-12]
    return min(eligible, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
