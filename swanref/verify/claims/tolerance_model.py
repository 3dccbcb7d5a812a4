"""One tolerance for (claim, level, probe): spec 8.6's per-probe noise model at every level.

    tol = max(floor, noise(probe)) + eps_shift(probe, rescale) + output rounding + level terms

* ``noise``: a preset's per-probe noise model (spec 8.6, :func:`swanref.presets.diagnose.
  probe_tolerance`, floor ``MATCH_TOLERANCE``), the exact-method bounds of spec 8.2 (svd,
  eigh), the coupled Newton-Schulz bound of 8.3, GradNorm's 8.1 -- in the claim's compute dtype.
* ``eps_shift``: where the target orthogonalises ``rescale * G`` but the reference ``G`` (an
  optimizer's first Nesterov step multiplies the gradient by ``1 + mu`` before the
  normalisation), an added or clamped epsilon sits at another relative place: the normalised
  singular values move by ``delta = |d(f) / (d(c f) / c) - 1|`` (``d`` the claim's divisor,
  ``f = ||G||_F``, ``c = rescale``) and the output by ``delta ||x P'(x)|| / ||P(x)||``
  (``P`` the composed polynomial at the normalised singular values ``x``), times
  :data:`C_EPS_SHIFT`.  Derived from eps and the probe, never a fixed number.
* level terms: :func:`register_term` (the sharded level adds its reduction-order term there).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from swanref.presets.catalogue import get_preset, schedule
from swanref.presets.diagnose import MATCH_TOLERANCE, denominator, probe_tolerance
from swanref.spec import tolerance as spec_tol
from swanref.spec.readings import WHITEN_METHODS
from swanref.verify.claims.knobs import LEVELS, ClaimError
from swanref.verify.claims.model import Claim

#: safety on the first-order epsilon shift (the noise model's C_amp)
C_EPS_SHIFT = 2.0

_TERMS: dict = {}


def register_term(level: str, term) -> None:
    """``term(claim, G) -> float`` is added to every tolerance at ``level`` (spec 11.4)."""
    if level not in LEVELS:
        raise ClaimError(f"unknown level {level!r}")
    _TERMS.setdefault(level, []).append(term)


def _matrices(claim: Claim, G) -> list:
    G = np.asarray(G)
    if np.iscomplexobj(G):
        G = np.abs(G)  # singular values of |G| are not G's; complex probes use the real bound
    G = G.astype(np.float64)
    if G.ndim < 2:
        raise ClaimError(f"a tolerance needs a matrix probe, got shape {G.shape}")
    k = claim.stack_dims if G.ndim - claim.stack_dims >= 2 else 0
    if claim.nd in ("batch_leading",) or (claim.nd in ("flatten_4d_batch_3d", "route_4d_batch_3d")
                                          and G.ndim - k == 3):
        mats = G.reshape((-1,) + G.shape[-2:])
    else:
        lead = G.shape[:k]
        mats = G.reshape((int(np.prod(lead)) if lead else 1, G.shape[k], -1))
    return list(mats)


def _preset_and_schedule(claim: Claim):
    p = get_preset(claim.preset)
    eps, form = claim.effective_eps
    changes = {"eps": eps}
    if p.norm != "aol" and form != p.norm:
        changes["norm"] = form
    if claim.norm_scale is not None:
        changes["norm_scale"] = claim.norm_scale
    p = dataclasses.replace(p, **changes)
    try:
        sched = schedule(claim.preset, claim.steps, claim.coefficients)
    except (TypeError, ValueError) as exc:
        raise ClaimError(f"the claim's schedule: {exc}") from exc
    return p, tuple(sched)


def _slope_ratio(x, sched) -> float:
    """||x P'(x)|| / ||P(x)|| of the composed odd polynomial at singular values x."""
    v = np.asarray(x, np.float64)
    d = np.ones_like(v)
    for a, b, c in sched:
        v2 = v * v
        d = d * (a + 3 * b * v2 + 5 * c * v2 * v2)
        v = v * (a + b * v2 + c * v2 * v2)
    num, den = float(np.linalg.norm(x * d)), float(np.linalg.norm(v))
    return num / den if den > 0 and math.isfinite(num) else 0.0


def eps_shift(claim: Claim, G, rescale: float = 1.0) -> float:
    """The epsilon term above (0 without a preset, an epsilon, or a rescale)."""
    if claim.preset is None or rescale == 1.0:
        return 0.0
    p, sched = _preset_and_schedule(claim)
    if p.eps == 0 or p.norm not in ("add", "clamp"):
        return 0.0
    worst = 0.0
    for g in _matrices(claim, G):
        f = float(np.linalg.norm(g))
        if f == 0:
            continue
        d1 = denominator(f, p)
        d2 = denominator(rescale * f, p) / rescale
        delta = abs(d1 / d2 - 1.0)
        s = np.linalg.svd(g, compute_uv=False)
        worst = max(worst, C_EPS_SHIFT * delta * _slope_ratio(s / d1, sched))
    return worst


def _noise(claim: Claim, G, precision: str) -> float:
    floor = MATCH_TOLERANCE[precision]
    mats = _matrices(claim, G)
    if claim.op == "grad_norm":
        n = mats[0].shape[-1]
        return max(floor, float(spec_tol.grad_norm_tolerance(n, _np_dtype(precision))))
    if claim.preset is not None:
        p, sched = _preset_and_schedule(claim)
        return max(probe_tolerance(np.stack(mats), p, sched, precision) if len(
            {g.shape for g in mats}) == 1 else 0.0, floor)
    m, n = mats[0].shape
    dt = _np_dtype(precision)
    if claim.method in ("svd", "eigh"):
        kappa = max(float(np.max(spec_tol.condition_number(g))) for g in mats)
        return max(floor, float(spec_tol.exact_whitening_tolerance(m, n, kappa, dt,
                                                                    claim.method)))
    if claim.method == "newton_schulz":
        d = WHITEN_METHODS["newton_schulz"].defaults
        steps = claim.steps or d["steps"]
        beta = d["beta"] if claim.beta is None else claim.beta
        scaling = claim.scaling or d["scaling"]
        worst = 0.0
        for g in mats:
            w = g if g.shape[0] <= g.shape[1] else g.T
            s = np.linalg.svd(w, compute_uv=False)
            worst = max(worst, float(spec_tol.newton_schulz_tolerance(
                s, w.shape[0], w.shape[1], steps, beta, scaling, dt)))
        return max(floor, worst)
    return floor  # nsds: the floor only (no per-probe model yet)


def _np_dtype(precision: str):
    if precision in ("bfloat16", "float16"):
        return np.float32 if precision == "bfloat16" else np.float16
    return np.dtype(precision)


def tolerance(claim: Claim, level: str, G, *, rescale: float = 1.0) -> float:
    """Relative Frobenius tolerance for comparing a target's result on probe ``G`` (the
    gradient the target saw) with the spec's, at ``level`` (docs/spec.md 11.4)."""
    if level not in LEVELS:
        raise ClaimError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    precision = claim.compute_dtype
    if claim.tolerance is not None:
        return claim.tolerance
    for dt, (tol, _reason) in claim.tolerance_overrides or ():
        if dt == precision:
            return tol
    tol = _noise(claim, G, precision) + eps_shift(claim, G, rescale)
    if claim.io_dtype in ("bfloat16", "float16") and claim.io_dtype != precision:
        tol += 2.0 ** -8 if claim.io_dtype == "bfloat16" else 2.0 ** -11
    for term in _TERMS.get(level, ()):
        tol += float(term(claim, G))
    return float(tol)
