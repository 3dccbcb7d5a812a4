"""The reduction-order term of docs/spec.md 10.2: what summing ``q`` partial results in an order
the unsharded computation never uses may change, carried to the output to first order.

Every bound starts from recursive summation (Higham 2002, section 4.2):
``|fl(S) - S| <= (q - 1) u sum_r |S_r|`` with ``u`` the unit roundoff of the precision the
reduction runs in.  The preset term propagates it exactly (to first order) through the
composed polynomial instead of through a product of worst-case slopes: the norm's error is a
scalar, which moves every singular value by ``x P'(x)``; a Gram error ``dA`` reaches the output
through the step's entrywise gain and the Daleckii-Krein divided differences of the remaining
steps.  That keeps the float32 term near ``1e-6`` where faithful code errs by ``1e-6``, so a
norm off by ``1 + 2^-13`` is caught at every world size.
"""
from __future__ import annotations

import math

import numpy as np

from swanref.presets.catalogue import get_preset, schedule
from swanref.presets.diagnose import C_AMPLIFICATION, UNIT_ROUNDOFF, denominator, noise_gain
from swanref.spec import spectral
from swanref.spec.readings import default_rank_rtol


def mats(G):
    """The matrices of ``G`` as a (batch, m, n) float64 stack."""
    G = np.asarray(G, np.float64)
    return G.reshape((-1,) + G.shape[-2:])


def wide(g):
    return g.T if g.shape[0] > g.shape[1] else g


def _trajectory(x, sched):
    """Singular values after each step of an odd-polynomial schedule (x -> a x + b x^3 + c x^5)
    and each step's derivative at them."""
    stages, slopes = [np.asarray(x, np.float64)], []
    for a, b, c in sched:
        v = stages[-1]
        v2 = v * v
        slopes.append(a + 3 * b * v2 + 5 * c * v2 * v2)
        stages.append(v * (a + b * v2 + c * v2 * v2))
    return stages, slopes


def preset_term(g, preset, sched, q: int, u: float, sv=None) -> float:
    """Relative Frobenius reduction-order term of a Frobenius-normalised polynomial iteration.

    Norm: the all-reduced sum of squares has relative error ``(q-1) u`` (nonnegative parts), so
    the normalised input is ``X_0 (1 + e)``, ``|e| <= (q-1) u / 2``, and the output moves by
    ``e ||x_0 P'(x_0)||_2`` exactly to first order.  Step ``k`` all-reduces ``A_k = X_k X_k^T``
    with ``||dA||_F <= (q-1) u ||x_k||_2^2``; in the singular basis of ``X_k`` the step
    ``X <- aX + (bA + cA^2)X`` turns it into ``dX_ij = g_ij dA_ij``,
    ``g_ij = (b + c (x_i^2 + x_j^2)) x_j``, and the remaining steps map the symmetric part by
    ``(F_i - F_j) / (y_i - y_j)`` and the antisymmetric part by ``(F_i + F_j) / (y_i + y_j)``
    (``y`` the values after step k, ``F`` the final ones).  With ``dA`` symmetric both parts
    combine into one gain ``h_ij`` per entry, so the step contributes at most
    ``(q-1) u ||x_k||^2 max |h_ij|``.  The sum, over ``||P(x_0)||_2``, is the term.
    """
    sv = np.linalg.svd(g, compute_uv=False) if sv is None else np.asarray(sv, np.float64)
    fro = float(np.linalg.norm(sv))
    den = denominator(fro, preset)
    if fro == 0 or den == 0:
        return 0.0
    x = sv / den
    stages, slopes = _trajectory(x, sched)
    final = stages[-1]
    out = float(np.linalg.norm(final))
    if out == 0 or not np.isfinite(out):
        return 0.0
    K = len(sched)
    dP = [np.ones_like(x) for _ in range(K + 1)]      # d final / d stage_k, elementwise
    for k in range(K - 1, -1, -1):
        dP[k] = dP[k + 1] * slopes[k]
    # the norm: a scalar factor (1 + e) on x_0 moves the output by e x_0 P'(x_0)
    total = (q - 1) * u / 2 * float(np.linalg.norm(stages[0] * dP[0]))
    # the worst entry gain over all pairs of values: on a large matrix over each group's
    # extremes of the sorted values (the gain is continuous in the pair; O(k^2) otherwise)
    pick = _extremes(x)
    stages_p = [st[pick] for st in stages]
    dP_p = [d[pick] for d in dP]
    final_p = stages_p[-1]
    Fi, Fj = final_p[:, None], final_p[None, :]
    for k, (a, b, c) in enumerate(sched):
        xk, y = stages_p[k], stages_p[k + 1]
        xi2, xj2 = xk[:, None] ** 2, xk[None, :] ** 2
        gain = (b + c * (xi2 + xj2)) * xk[None, :]
        yi, yj = y[:, None], y[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            close = np.abs(yi - yj) <= 1e-9 * np.maximum(np.abs(yi), np.abs(yj))
            dminus = np.where(close, np.maximum(np.abs(dP_p[k + 1])[:, None],
                                                np.abs(dP_p[k + 1])[None, :]),
                              (Fi - Fj) / np.where(close, 1.0, yi - yj))
            ssum = yi + yj
            dplus = np.where(ssum > 0, (Fi + Fj) / np.where(ssum > 0, ssum, 1.0), 0.0)
        h = dminus * (gain + gain.T) / 2 + dplus * (gain - gain.T) / 2
        total += (q - 1) * u * float(np.sum(stages[k] ** 2)) * float(np.max(np.abs(h)))
    return total / out


def _extremes(x, groups: int = 512):
    """Indices of ``x`` to evaluate a worst pair on: all of them up to 1024 values, else the
    largest and smallest of each of ``groups`` equal-count groups of the sorted values."""
    order = np.argsort(x)
    if x.size <= 2 * groups:
        return order
    parts = np.array_split(order, groups)
    return np.unique(np.concatenate([[p[0], p[-1]] for p in parts]))


def ns_term(g, q: int, u: float, steps: int, beta: float, scaling: str) -> float:
    """Reduction-order term of the coupled iteration, in ||.||_F / sqrt(m) (spec 8.3's
    metric): the all-reduced Gram matrix carries (q-1)u ||G||_F^2, which the iteration maps
    through the divided differences of z_K and, via the scaling constant, through lam psi'."""
    w = wide(np.asarray(g, np.float64))
    m, n = w.shape
    if scaling != "none":
        amax = float(np.max(np.abs(w)))
        if amax > 0:
            w = np.ldexp(w, -np.frexp(amax)[1])
    s = np.linalg.svd(w, compute_uv=False)
    if not np.any(s > 0):
        return 0.0
    s = np.concatenate([s, np.zeros(n - s.size)])   # the n x n Gram of row shards too
    c = float(spectral.scaling_constant(s, scaling))
    fro2 = float(np.sum(s ** 2))
    if scaling == "gram_fro":
        eta = (q - 1) * u * fro2 / c
        eps_c = eta                      # ||dA||_F / ||A||_F with c = ||A||_F
    elif scaling == "grad_fro":
        eta = (q - 1) * u
        eps_c = (q - 1) * u              # c = trace A: a sum of nonnegative partial sums
    else:
        eta, eps_c = (q - 1) * u * fro2, 0.0
    lam = np.maximum(s ** 2 / c, n * u)

    def z(v):
        return spectral.ns_scalar_map(v, steps, beta) / np.sqrt(v)

    zl = z(lam)
    h = lam * 1e-6
    dz = (z(lam + h) - z(lam - h)) / (2 * h)
    li, lj = lam[:, None], lam[None, :]
    close = np.abs(li - lj) <= 1e-6 * np.maximum(li, lj)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(close, np.maximum(np.abs(dz)[:, None], np.abs(dz)[None, :]),
                      np.abs(zl[:, None] - zl[None, :]) / np.where(close, 1, np.abs(li - lj)))
    M1 = float(np.max(dd * np.sqrt(lj)))
    psi = spectral.ns_scalar_map
    dpsi = lam * (psi(lam + h, steps, beta) - psi(lam - h, steps, beta)) / (2 * h)
    return (eta * M1 + eps_c * float(np.linalg.norm(dpsi))) / math.sqrt(m)


def reduction_unit(claim) -> float:
    """Unit roundoff of the precision the claim's reductions run in."""
    name = claim.reduce_dtype or claim.dtype
    if claim.preset is None and name in ("bfloat16", "float16"):
        name = "float32"        # swanref's operators compute 16-bit input in float32
    return UNIT_ROUNDOFF[name]


def reduction_term(claim, G, q: int, sv=None) -> float:
    """The reduction-order allowance (docs/spec.md 10.2) for input ``G`` when each reduced
    quantity combines ``q`` partial results (worst matrix of a stack).

    In the metric of the unsharded comparison: elementwise mixed error (grad_norm), per
    ``sqrt(r)`` (exact whitening), per ``sqrt(m)`` (Newton-Schulz), relative Frobenius
    (presets).  Zero when ``q <= 1``.  ``sv``: the singular values of every matrix of ``G``
    (shape (batch, k)) when already known.
    """
    if q <= 1:
        return 0.0
    u = reduction_unit(claim)
    worst = 0.0
    for i, g in enumerate(mats(G)):
        s = None if sv is None else np.asarray(sv[i], np.float64)
        if claim.op == "grad_norm":
            mean = np.mean(g, axis=-1, keepdims=True)
            sd = np.sqrt(np.mean((g - mean) ** 2, axis=-1) + claim.eps)
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = np.where(sd > 0, np.mean(np.abs(g), axis=-1) / sd, np.inf)
            t = (q - 1) * u * float(np.max(np.maximum(rho, 1.0)))
        elif claim.preset is not None and claim.dtype in ("bfloat16", "float16"):
            # 16-bit: the statistical reading of spec 8.6 -- each of the q - 1 additions
            # rounds every reduced entry once more (relative u, independent, mean zero), so
            # the noise grows as sqrt(q - 1) and reaches the output through the probe's noise
            # gain N; the worst-case bound would exceed the 0.5 no-claim limit at q = 2
            t = C_AMPLIFICATION * u * math.sqrt(q - 1) * noise_gain(
                g, get_preset(claim.preset), schedule(claim.preset, claim.steps), s)
        elif claim.preset is not None:
            t = preset_term(g, get_preset(claim.preset), schedule(claim.preset, claim.steps),
                            q, u, s)
        elif claim.iterative:
            t = ns_term(g, q, u, *claim.ns_reading())
        else:
            s = np.linalg.svd(g, compute_uv=False) if s is None else s
            if s[0] == 0:
                continue
            rtol = default_rank_rtol(*g.shape, 2 * u)
            keep = s[s > rtol * s[0]]
            r, sr, fro = keep.size, float(keep[-1]), float(np.linalg.norm(s))
            if claim.method == "svd":
                t = (q - 1) * u * fro / (sr * math.sqrt(r))
            else:
                t = (q - 1) * u * fro ** 2 / (2 * sr ** 2 * math.sqrt(r))
        worst = max(worst, t)
    return worst


def reduced_parts(kind: str, op: str, world: int, mesh=None) -> int:
    """How many partial results a reduced quantity combines under this layout."""
    if kind == "stack" or (kind == "rows" and op == "grad_norm"):
        return 1          # every reduced quantity lives on one rank
    if kind == "grid" and mesh:
        # row statistics reduce over the column dimension only; a Gram or a norm over all
        return int(mesh[1]) if op == "grad_norm" else int(world)
    return world
