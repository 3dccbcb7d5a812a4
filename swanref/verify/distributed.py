"""Checking a *sharded* implementation across real processes (torch.distributed).

An orthogonaliser that runs sharded (tensor-parallel row or column shards, FSDP flat shards,
stacks of parameters split across ranks) can only be wrong in ways a single process never sees:
a Frobenius norm over the local shard, a Gram matrix that is not all-reduced, each shard
orthogonalised on its own, blocks gathered in the wrong order, a stack treated as one matrix.
This module runs the implementation on ``world_size`` ranks of a ``torch.distributed`` process
group (gloo on CPUs, NCCL with one GPU per rank), hands every rank its shard, assembles what
the ranks return and judges the assembled result against the unsharded swanref operator within
the spec's tolerance plus the reduction-order term of docs/spec.md section 10, "Sharded operators".

The target is called on every rank as::

    fn(local_shard, group=group, layout=layout) -> local result

``local_shard`` is a torch tensor on the rank's device (this rank's rows, columns, flat chunk
or parameters), ``group`` the process group, ``layout`` a :class:`ShardLayout` saying which
part of the global array the shard is.  The result must have the shard's shape and dtype.

Two entry points: :func:`check_sharded` spawns the ranks itself (``torch.multiprocessing``,
one spawn reused for many checks through :class:`RankPool`), and :func:`check_in_group` runs
inside an existing job (torchrun) on the caller's group.  torch is imported only when a check
runs: swanref does not depend on it.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import multiprocessing
import os
import pickle
import queue as _queue
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace

import numpy as np

from swanref import ops
from swanref.presets.catalogue import PRESETS, get_preset, schedule, whiten_preset
from swanref.presets.diagnose import UNIT_ROUNDOFF, denominator, probe_tolerance
from swanref.spec import spectral
from swanref.spec.readings import SCALINGS, WHITEN_METHODS, default_rank_rtol
from swanref.spec.tolerance import condition_number, unit_roundoff
from swanref.verify.checker import CheckReport, PropertyResult
from swanref.verify.claims import Claim
from swanref.verify.claims.model import require_evaluable
from swanref.verify.targets import UsageError, load_target
from swanref.verify.matrices import conditioned
from swanref.verify.measure import (Measurement, describe_input, measure_grad_norm,
                                    measure_newton_schulz, measure_orthonormal_rows,
                                    measure_whitening)

__all__ = ["LAYOUTS", "ShardLayout", "ShardedClaim", "shard_layouts", "split", "assemble",
           "reduction_term", "sharded_inputs", "evaluate", "RankPool", "check_sharded",
           "check_in_group", "main"]

LAYOUTS = ("rows", "cols", "flat", "stack")
BACKENDS = ("auto", "gloo", "nccl")
OPS = ("grad_norm", "whiten")

#: a diagnostic property fires when the output is this many times closer to the wrong
#: variant than to the unsharded result (and the unsharded comparison failed)
EXPLAIN_RATIO = 10.0


# -- layouts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardLayout:
    """Which part of the global array one rank holds.

    kind:  'rows'  rows ``start:stop`` of the (m, n) matrix (tensor-parallel, row shards)
           'cols'  columns ``start:stop`` (tensor-parallel, column shards)
           'flat'  entries ``start:stop`` of the row-major flattened matrix, zero-padded to
                   ``chunk`` entries (FSDP flat parameter: every rank holds ``chunk`` entries)
           'stack' parameters ``start:stop`` of a (B, m, n) stack (one optimiser step over
                   many same-shaped weights, split across ranks)
    Blocks are contiguous and in rank order; sizes differ by at most one (torch.tensor_split).
    """
    kind: str
    rank: int
    world_size: int
    shape: tuple
    start: int
    stop: int
    chunk: int = 0

    @property
    def local_shape(self) -> tuple:
        m = self.stop - self.start
        if self.kind == "rows":
            return (m, self.shape[1])
        if self.kind == "cols":
            return (self.shape[0], m)
        if self.kind == "flat":
            return (self.chunk,)
        return (m,) + tuple(self.shape[1:])

    def take(self, G: np.ndarray) -> np.ndarray:
        """This rank's shard of the global array ``G`` (a NumPy copy)."""
        G = np.asarray(G)
        if self.kind == "rows":
            return G[self.start:self.stop].copy()
        if self.kind == "cols":
            return G[:, self.start:self.stop].copy()
        if self.kind == "flat":
            out = np.zeros(self.chunk, dtype=G.dtype)
            out[:self.stop - self.start] = G.reshape(-1)[self.start:self.stop]
            return out
        return G[self.start:self.stop].copy()


def _bounds(total: int, world: int) -> list:
    q, r = divmod(total, world)
    sizes = [q + (1 if i < r else 0) for i in range(world)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(starts[i]), int(starts[i + 1])) for i in range(world)]


def shard_layouts(kind: str, shape, world_size: int) -> list:
    """The :class:`ShardLayout` of every rank for a global array of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if kind not in LAYOUTS:
        raise UsageError(f"unknown layout {kind!r}; choose one of {', '.join(LAYOUTS)}")
    if world_size < 1:
        raise UsageError("world_size must be >= 1")
    want = 3 if kind == "stack" else 2
    if len(shape) != want:
        raise UsageError(f"layout {kind!r} takes a {want}-D global array, got shape {shape}")
    if kind == "flat":
        total = int(np.prod(shape))
        chunk = -(-total // world_size)
        return [ShardLayout(kind, r, world_size, shape, min(r * chunk, total),
                            min((r + 1) * chunk, total), chunk) for r in range(world_size)]
    total = {"rows": shape[0], "cols": shape[-1], "stack": shape[0]}[kind]
    if total < world_size:
        raise UsageError(f"layout {kind!r}: {total} {'parameters' if kind == 'stack' else kind}"
                         f" cannot be split over {world_size} ranks")
    return [ShardLayout(kind, r, world_size, shape, a, b)
            for r, (a, b) in enumerate(_bounds(total, world_size))]


def split(G, kind: str, world_size: int) -> list:
    """Every rank's shard of ``G`` (NumPy), in rank order."""
    return [lay.take(G) for lay in shard_layouts(kind, np.shape(G), world_size)]


def assemble(locals_, kind: str, shape) -> np.ndarray:
    """The global array from the ranks' local results (inverse of :func:`split`)."""
    lays = shard_layouts(kind, shape, len(locals_))
    if kind == "rows":
        return np.concatenate(locals_, axis=0)
    if kind == "cols":
        return np.concatenate(locals_, axis=1)
    if kind == "stack":
        return np.concatenate(locals_, axis=0)
    parts = [np.asarray(x).reshape(-1)[:lay.stop - lay.start] for x, lay in zip(locals_, lays)]
    return np.concatenate(parts).reshape(shape)


# -- the claim ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardedClaim:
    """What the sharded target computes: ``op`` with a reading, in ``dtype``.

    op 'grad_norm' (rows, ``eps``); op 'whiten' with ``method`` 'svd' / 'eigh' (exact, the
    accuracy claimed) or 'newton_schulz' (``steps``, ``beta``, ``scaling``), or ``preset`` (a
    swanref.presets name, ``steps`` optional; run in ``dtype``, the presets' reference path).
    """
    op: str
    dtype: str = "float64"
    method: str = "svd"
    steps: int | None = None
    beta: float | None = None
    scaling: str | None = None
    preset: str | None = None
    eps: float = 0.0

    @classmethod
    def from_claim(cls, claim: Claim) -> ShardedClaim:
        """The sharded check's claim of a :class:`~swanref.verify.claims.Claim` (validated)."""
        evaluable = ["steps", "beta", "scaling", "compute_dtype"]
        if claim.op == "grad_norm":
            evaluable.append("eps")
        require_evaluable(claim, "sharded", evaluable)
        return cls(claim.op, claim.compute_dtype,
                   "svd" if claim.method == "preset" else claim.method, claim.steps,
                   claim.beta, claim.scaling, claim.preset,
                   (claim.eps or 0.0) if claim.op == "grad_norm" else 0.0).validate()

    def validate(self):
        if self.op not in OPS:
            raise UsageError(f"sharded check: OP must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.dtype not in ("float64", "float32"):
            raise UsageError("sharded check: --dtype must be float64 or float32")
        if self.op == "grad_norm" and (self.preset or self.method != "svd"):
            raise UsageError("--method/--preset do not apply to grad_norm")
        if self.preset is not None:
            known = [name for name in PRESETS if name != "custom"]   # custom needs a table
            if self.preset not in known:
                raise UsageError(f"unknown --preset {self.preset!r}; choose one of "
                                 f"{', '.join(known)}")
            if self.method != "svd" or self.beta is not None or self.scaling is not None:
                raise UsageError("--preset replaces --method/--beta/--scaling")
        elif self.op == "whiten":
            if self.method not in ("svd", "eigh", "newton_schulz"):
                raise UsageError("--method must be svd, eigh or newton_schulz")
            if self.method != "newton_schulz" and any(
                    v is not None for v in (self.steps, self.beta, self.scaling)):
                raise UsageError("--steps/--beta/--scaling only apply to --method newton_schulz")
            if self.scaling is not None and self.scaling not in SCALINGS:
                raise UsageError(f"--scaling must be one of {', '.join(SCALINGS)}")
        return self

    @property
    def iterative(self) -> bool:
        return self.op == "whiten" and self.preset is None and self.method == "newton_schulz"

    def ns_reading(self):
        d = WHITEN_METHODS["newton_schulz"].defaults
        return (d["steps"] if self.steps is None else self.steps,
                d["beta"] if self.beta is None else self.beta,
                d["scaling"] if self.scaling is None else self.scaling)

    def describe(self) -> dict:
        d = {"op": self.op, "dtype": self.dtype}
        if self.op == "whiten":
            if self.preset:
                d["preset"] = self.preset
                if self.steps is not None:
                    d["steps"] = self.steps
            else:
                d["method"] = self.method
                if self.iterative:
                    d["steps"], d["beta"], d["scaling"] = self.ns_reading()
        elif self.eps:
            d["eps"] = self.eps
        return d


# -- reference, tolerance and reduction-order term ------------------------------------------

def _unit(claim: ShardedClaim) -> float:
    if claim.preset is not None:
        return UNIT_ROUNDOFF[claim.dtype]
    return unit_roundoff(np.dtype(claim.dtype))


def _mats(G):
    G = np.asarray(G, np.float64)
    return G.reshape((-1,) + G.shape[-2:])


def _wide(g):
    return g.T if g.shape[0] > g.shape[1] else g


def _compose(x, sched):
    """Singular values after each step of an odd-polynomial schedule (x -> a x + b x^3 + c x^5)."""
    stages = [np.asarray(x, np.float64)]
    for a, b, c in sched:
        v = stages[-1]
        v2 = v * v
        stages.append(v * (a + b * v2 + c * v2 * v2))
    return stages


def _slope_bound(coef, xmax: float) -> float:
    """max |p'(x)| over |x| <= xmax for p(x) = a x + b x^3 + c x^5 (bounds every divided
    difference of the odd matrix function, hence the norm of its Frechet derivative)."""
    a, b, c = coef
    x = np.linspace(0.0, xmax, 4001)
    return float(np.max(np.abs(a + 3 * b * x ** 2 + 5 * c * x ** 4)))


def _preset_term(g, preset, sched, q: int, u: float) -> float:
    """Relative reduction-order term of a Frobenius-normalised polynomial iteration (spec
    "Sharded operators"): norm error (q-1)u/2, Gram error (q-1)u ||X_k||_F^2 at every step,
    each carried to the output by the product of the later steps' slope bounds."""
    fro = float(np.linalg.norm(g))
    den = denominator(fro, preset)
    if fro == 0 or den == 0:
        return 0.0
    x = np.linalg.svd(_wide(g), compute_uv=False) / den
    stages = _compose(x, sched)
    out = float(np.linalg.norm(stages[-1]))
    if out == 0:
        return 0.0
    gains = [_slope_bound(coef, float(np.max(stages[k])) if stages[k].size else 0.0)
             for k, coef in enumerate(sched)]
    tail = [float(np.prod(gains[k:])) for k in range(len(sched) + 1)]   # tail[K] = 1
    total = (q - 1) * u / 2 * float(np.linalg.norm(stages[0])) * tail[0]
    for k, (a, b, c) in enumerate(sched):
        xk = stages[k]
        smax = float(np.max(xk))
        dA = (q - 1) * u * float(np.sum(xk ** 2))
        total += (abs(b) + 2 * abs(c) * smax ** 2) * dA * smax * tail[k + 1]
    return total / out


def _ns_term(g, q: int, u: float, steps: int, beta: float, scaling: str) -> float:
    """Reduction-order term of the coupled iteration, in ||.||_F / sqrt(m) (spec 8.3's
    metric): the all-reduced Gram matrix carries (q-1)u ||G||_F^2, which the iteration maps
    through the divided differences of z_K and, via the scaling constant, through lam psi'."""
    w = _wide(np.asarray(g, np.float64))
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

    def z(x):
        return spectral.ns_scalar_map(x, steps, beta) / np.sqrt(x)

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


def reduction_term(claim: ShardedClaim, G, q: int) -> float:
    """The reduction-order allowance (docs/spec.md section 10, "Sharded operators") for input ``G``
    when each reduced quantity combines ``q`` partial results (worst matrix of a stack).

    In the metric of the unsharded comparison: elementwise mixed error (grad_norm), per
    ``sqrt(r)`` (exact whitening), per ``sqrt(m)`` (Newton-Schulz), relative Frobenius
    (presets).  Zero when ``q <= 1``.
    """
    if q <= 1:
        return 0.0
    u = _unit(claim)
    worst = 0.0
    for g in _mats(G):
        if claim.op == "grad_norm":
            mean = np.mean(g, axis=-1, keepdims=True)
            sd = np.sqrt(np.mean((g - mean) ** 2, axis=-1) + claim.eps)
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = np.where(sd > 0, np.mean(np.abs(g), axis=-1) / sd, np.inf)
            t = (q - 1) * u * float(np.max(np.maximum(rho, 1.0)))
        elif claim.preset is not None:
            t = _preset_term(g, get_preset(claim.preset), schedule(claim.preset, claim.steps),
                             q, u)
        elif claim.iterative:
            t = _ns_term(g, q, u, *claim.ns_reading())
        else:
            s = np.linalg.svd(g, compute_uv=False)
            if s[0] == 0:
                continue
            rtol = default_rank_rtol(*g.shape, float(np.finfo(np.dtype(claim.dtype)).eps))
            keep = s[s > rtol * s[0]]
            r, sr, fro = keep.size, float(keep[-1]), float(np.linalg.norm(s))
            if claim.method == "svd":
                t = (q - 1) * u * fro / (sr * math.sqrt(r))
            else:
                t = (q - 1) * u * fro ** 2 / (2 * sr ** 2 * math.sqrt(r))
        worst = max(worst, t)
    return worst


def _reduced_parts(kind: str, op: str, world: int) -> int:
    """How many partial results a reduced quantity combines under this layout."""
    if kind == "stack" or (kind == "rows" and op == "grad_norm"):
        return 1          # every reduced quantity lives on one rank
    return world


def _rel_fro(a, b) -> float:
    """Largest relative Frobenius distance over the matrices (NaN or shape mismatch: inf)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return math.inf
    worst = 0.0
    for x, y in zip(_mats(a), _mats(b)):
        worst = max(worst, float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(y)), 1e-300))
    return worst


def reference(claim: ShardedClaim, G) -> np.ndarray:
    """The unsharded swanref operator on the global array (float64; presets in ``dtype``)."""
    G = np.asarray(G)
    if claim.op == "grad_norm":
        return ops.grad_norm(G.astype(np.float64), eps=claim.eps)
    if claim.preset is not None:
        return np.asarray(whiten_preset(G.astype(claim.dtype), claim.preset, steps=claim.steps),
                          np.float64)
    if claim.iterative:
        steps, beta, scaling = claim.ns_reading()
        return np.stack([_wide_apply(g, lambda w: spectral.predicted_newton_schulz(
            w, steps, beta, scaling)) for g in _mats(G)]).reshape(G.shape)
    return ops.whiten(G.astype(np.float64), "svd")


def _wide_apply(g, f):
    return f(g.T).T if g.shape[0] > g.shape[1] else f(g)


def agreement(claim: ShardedClaim, G, out, q: int) -> Measurement:
    """The assembled output against the unsharded operator: the spec's tolerance for the
    claim plus :func:`reduction_term`."""
    G = np.asarray(G)
    dt = np.dtype(claim.dtype)
    R = reduction_term(claim, G, q)
    if claim.op == "grad_norm":
        meas = measure_grad_norm(out, G, eps=claim.eps, dtype=dt, prop="agrees_with_unsharded")
    elif claim.preset is not None:
        preset = get_preset(claim.preset)
        sched = schedule(claim.preset, claim.steps)
        tol = probe_tolerance(G, preset, sched, claim.dtype)
        meas = Measurement("agrees_with_unsharded", _rel_fro(out, reference(claim, G)), tol,
                           "||X - preset(G)||_F / ||preset(G)||_F (worst matrix)",
                           describe_input(G))
    elif claim.iterative:
        steps, beta, scaling = claim.ns_reading()
        meas = measure_newton_schulz(out, G, steps=steps, beta=beta, scaling=scaling, dtype=dt,
                                     prop="agrees_with_unsharded")
    else:
        meas = measure_whitening(out, G, method=claim.method, dtype=dt,
                                 prop="agrees_with_unsharded")
    return replace(meas, tolerance=float(meas.tolerance) + R,
                   note=(meas.note + "; " if meas.note else "") +
                   f"reduction-order term {R:.3g} over {q} partial sums")


# -- wrong variants the diagnostic properties recognise ----------------------------------------

def _per_block(G, kind, world, f):
    """Apply ``f`` to every rank's block of a rows/cols layout and glue the results."""
    parts = [f(b) for b in split(G, kind, world)]
    return assemble(parts, kind, np.shape(G))


def _odd_poly(X, sched):
    """U P(S) V^T: the exact-arithmetic result of the polynomial iteration on X."""
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    return (U * _compose(s, sched)[-1]) @ Vt


def variants(claim: ShardedClaim, G, kind: str, world: int) -> dict:
    """``{property: (description, output)}`` of the global-vs-local mistakes that apply."""
    G = np.asarray(G, np.float64)
    if kind not in ("rows", "cols") or world < 2:
        return {}
    out = {}
    if claim.op == "grad_norm":
        out["whole_matrix"] = ("row statistics over each rank's shard only",
                               _per_block(G, kind, world, ops.grad_norm))
        return out
    if claim.preset is not None:
        preset = get_preset(claim.preset)
        sched = schedule(claim.preset, claim.steps)
        den = denominator(float(np.linalg.norm(G)), preset)
        out["whole_matrix"] = ("the preset applied to each rank's shard on its own",
                               _per_block(G, kind, world, lambda b: _odd_poly(
                                   b / denominator(float(np.linalg.norm(b)), preset), sched)))
        out["global_norm"] = ("each shard divided by its own Frobenius norm",
                              _odd_poly(_per_block(G, kind, world, lambda b: b / denominator(
                                  float(np.linalg.norm(b)), preset)), sched))
        out["global_gram"] = ("global norm but the Gram matrix of each shard alone (no "
                              "all-reduce)", _per_block(G / den, kind, world,
                                                        lambda b: _odd_poly(b, sched)))
        return out
    if claim.iterative:
        steps, beta, scaling = claim.ns_reading()
        out["whole_matrix"] = ("the iteration run on each rank's shard on its own",
                               _per_block(G, kind, world, lambda b: _wide_apply(
                                   b, lambda w: spectral.predicted_newton_schulz(
                                       w, steps, beta, scaling))))
        c = float(spectral.scaling_constant(np.linalg.svd(G, compute_uv=False), scaling))

        def local_gram(b):
            U, s, Vt = np.linalg.svd(b, full_matrices=False)
            return (U * spectral.ns_scalar_map(s ** 2 / c, steps, beta)) @ Vt
        out["global_gram"] = ("global scaling constant but the Gram matrix of each shard "
                              "alone (no all-reduce)", _per_block(G, kind, world, local_gram))
        return out
    out["whole_matrix"] = ("each rank's shard whitened on its own",
                           _per_block(G, kind, world, lambda b: ops.whiten(b, "svd")))
    return out


# -- inputs -------------------------------------------------------------------------------------

@dataclass
class Case:
    label: str
    G: np.ndarray
    pair_of: int | None = None        # stack: the case this one perturbs
    changed: int | None = None        # stack: the parameter that was replaced


def sharded_inputs(claim: ShardedClaim, kind: str, world: int, shape=(16, 32), seed=0,
                   params=None) -> list:
    """The fixed inputs of a sharded check (deterministic in ``seed``).

    rows/cols/flat: a Gaussian matrix, one with condition number 100, one whose shards differ
    in scale by 4x per rank, and the transposed shape.  stack: ``params`` (default
    ``2 * world``) matrices of very different scales, and the same stack with one parameter
    replaced by a 1000x larger one (for ``stack_independence``).
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(claim.dtype)
    m, n = shape

    def gauss(a, b):
        g = rng.standard_normal((a, b))
        if claim.op == "grad_norm":   # offsets and row scales: statistics must be global
            g = g * rng.uniform(0.5, 2.0, (a, 1)) + rng.uniform(-1, 1, (a, 1))
        return g

    if kind == "stack":
        B = params or 2 * world
        S = np.stack([gauss(m, n) * 2.0 ** (i - B // 2) for i in range(B)])
        S2 = S.copy()
        S2[0] = 1e3 * gauss(m, n)
        return [Case(f"stack of {B} ({m}x{n})", S.astype(dt)),
                Case(f"stack of {B}, parameter 0 replaced", S2.astype(dt), pair_of=0, changed=0)]
    cases = [Case(f"gaussian {m}x{n}", gauss(m, n).astype(dt))]
    if claim.op == "whiten":
        cases.append(Case(f"kappa 1e2 {m}x{n}", conditioned(rng, m, n, 1e2).astype(dt)))
    g = gauss(m, n)
    lays = shard_layouts(kind, (m, n), world)
    flat = g.reshape(-1)
    for lay in lays:
        f = 4.0 ** lay.rank
        if kind == "rows":
            g[lay.start:lay.stop] *= f
        elif kind == "cols":
            g[:, lay.start:lay.stop] *= f
        else:
            flat[lay.start:lay.stop] *= f
    cases.append(Case(f"shards scaled 4^rank {m}x{n}", g.astype(dt)))
    cases.append(Case(f"gaussian {n}x{m}", gauss(n, m).astype(dt)))
    return cases


# -- evaluation ---------------------------------------------------------------------------------

_DOC = {
    "ranks_complete": "every rank returned a result for every input (no exception, no hang)",
    "shard_shapes": "every rank's result has its shard's shape and the input dtype",
    "input_not_modified": "no rank modified the shard it was given",
    "agrees_with_unsharded": "the assembled result is the unsharded operator on the assembled "
                             "input, within the spec tolerance plus the reduction-order term",
    "orthonormal_rows": "the assembled whitening has orthonormal rows (columns if tall)",
    "shard_order": "each rank returned its own block, not another rank's",
    "whole_matrix": "the result is not the operator applied to each shard on its own",
    "global_norm": "the Frobenius normalisation is over the whole matrix, not each shard",
    "global_gram": "the Gram matrix is all-reduced over the shards",
    "stack_independent": "replacing one parameter of a stack changes no other parameter's "
                          "result",
}


def property_names(claim: ShardedClaim, kind: str) -> list:
    names = ["ranks_complete", "shard_shapes", "input_not_modified", "agrees_with_unsharded"]
    if claim.op == "whiten" and claim.preset is None and not claim.iterative:
        names.append("orthonormal_rows")
    names.append("shard_order")
    if kind in ("rows", "cols"):
        names.append("whole_matrix")
        if claim.preset is not None:
            names.append("global_norm")
        if claim.preset is not None or claim.iterative:
            names.append("global_gram")
    if kind == "stack":
        names.append("stack_independent")
    return names


def _result(name, status="pass", **kw) -> PropertyResult:
    return PropertyResult(name, status, "required", _DOC[name], **kw)


def _block_distance_matrix(out, ref, kind, world):
    """d[r, s] = relative distance of rank r's returned block to reference block s (inf where
    the shapes differ)."""
    shape = np.shape(ref)
    ob, rb = split(out, kind, world), split(ref, kind, world)
    lays = shard_layouts(kind, shape, world)
    if kind == "flat":   # drop padding; compare real entries only
        ob = [b[:lay.stop - lay.start] for b, lay in zip(ob, lays)]
        rb = [b[:lay.stop - lay.start] for b, lay in zip(rb, lays)]
    d = np.full((world, world), np.inf)
    for r, s in itertools.product(range(world), range(world)):
        if ob[r].shape == rb[s].shape:
            nrm = max(float(np.linalg.norm(rb[s])), 1e-300)
            d[r, s] = float(np.linalg.norm(np.asarray(ob[r], np.float64) - rb[s])) / nrm
    return d


def evaluate(claim: ShardedClaim, kind: str, world: int, cases: list, outputs: list,
             errors=None, target_name="target", seconds=0.0, backend=None) -> CheckReport:
    """Judge the ranks' local results (``outputs[case][rank]``) for ``cases``.

    ``errors``: ``{rank: message}`` of ranks that raised or hung (then only ``ranks_complete``
    is judged).
    """
    names = property_names(claim, kind)
    desc = dict(claim.describe(), layout=kind, world_size=world)
    if backend:
        desc["backend"] = backend
    report = CheckReport(claim.op, target_name, desc, len(cases), 0)
    res = {n: _result(n) for n in names}
    if errors:
        first = min(errors)
        res["ranks_complete"] = _result(
            "ranks_complete", "FAIL", error=math.inf, tolerance=0.0,
            message=f"layout {kind} over {world} ranks: " + "; ".join(
                f"rank {r}: {errors[r]}" for r in sorted(errors)),
            input={"rank": first, "layout": kind, "world_size": world})
        for n in names[1:]:
            res[n].status, res[n].message = "n/a", "not judged: a rank did not complete"
        report.results = [res[n] for n in names]
        return report
    mutated = [(c, r) for c, outs in zip(cases, outputs) for r, o in enumerate(outs)
               if isinstance(o, tuple) and o[1]]
    outputs = [[o[0] if isinstance(o, tuple) else o for o in outs] for outs in outputs]
    if mutated:
        c, r = mutated[0]
        res["input_not_modified"] = _result(
            "input_not_modified", "FAIL", error=math.inf, tolerance=0.0,
            input={"case": c.label, "rank": r, "layout": kind},
            message=f"layout {kind} over {world} ranks: rank {r} modified its input shard "
                    f"(case {c.label}); ranks " + ", ".join(
                        sorted({str(rr) for _, rr in mutated})) + " did")
    lays_by_case = [shard_layouts(kind, c.G.shape, world) for c in cases]
    # shapes and dtypes
    for c, outs, lays in zip(cases, outputs, lays_by_case):
        for lay, o in zip(lays, outs):
            o = np.asarray(o)
            if o.shape != lay.local_shape or o.dtype != c.G.dtype:
                r = res["shard_shapes"]
                if r.status == "pass":
                    r.status, r.error, r.tolerance = "FAIL", math.inf, 0.0
                    r.input = {"case": c.label, "rank": lay.rank, "layout": kind}
                    r.message = (f"layout {kind}, rank {lay.rank} of {world}: returned shape "
                                 f"{o.shape} dtype {o.dtype}, expected {lay.local_shape} "
                                 f"{c.G.dtype} (case {c.label})")
    if res["shard_shapes"].status == "FAIL":
        for n in names[3:]:
            res[n].status, res[n].message = "n/a", "not judged: local results have wrong shapes"
        report.results = [res[n] for n in names]
        return report
    q = _reduced_parts(kind, claim.op, world)
    assembled = [assemble([np.asarray(o, np.float64) for o in outs], kind, c.G.shape)
                 for c, outs in zip(cases, outputs)]
    worst = {}

    def note(name, err, tol, case, message, fail):
        r = res[name]
        r.examples += 1
        if fail and r.status != "FAIL":
            r.status, r.error, r.tolerance, r.message = "FAIL", err, tol, message
            r.input = {"case": case.label, "layout": kind, "world_size": world,
                       **describe_input(case.G)}
        elif r.status == "pass" and err is not None and (
                name not in worst or (tol and err / tol > worst[name])):
            worst[name] = err / tol if tol else 0.0
            r.error, r.tolerance = err, tol
            r.input = {"case": case.label, "layout": kind, "world_size": world,
                       "shape": list(np.shape(case.G)), "dtype": str(case.G.dtype)}

    for c, X in zip(cases, assembled):
        G = np.asarray(c.G)
        meas = agreement(claim, G, X, q)
        bad = not meas.passed
        note("agrees_with_unsharded", meas.error, meas.tolerance, c,
             f"layout {kind} over {world} ranks, case {c.label}: " + meas.message(), bad)
        if "orthonormal_rows" in res:
            kappa = float(np.max(condition_number(G.astype(np.float64))))
            om = measure_orthonormal_rows(X, kappa=kappa, dtype=np.dtype(claim.dtype))
            R = 3 * reduction_term(claim, G, q)
            ot = om.tolerance + R
            note("orthonormal_rows", om.error, ot, c,
                 f"layout {kind} over {world} ranks, case {c.label}: ||X X^T - I||_F/sqrt(m) "
                 f"= {om.error:.3g} > {ot:.3g}", om.error > ot)
        ref = reference(claim, G)
        # shard_order: a rank's block matches another rank's reference block
        if bad:
            d = _block_distance_matrix(X, ref, kind, world)
            swapped = [(r, int(np.argmin(d[r]))) for r in range(world)
                       if int(np.argmin(d[r])) != r and d[r].min() * EXPLAIN_RATIO < d[r, r]]
            msg = "; ".join(f"rank {r} returned the block of rank {s} (distance "
                            f"{d[r, s]:.2g} to it, {d[r, r]:.2g} to its own)" for r, s in swapped)
            note("shard_order", d[swapped[0][0], swapped[0][1]] if swapped else None, None, c,
                 f"layout {kind} over {world} ranks, case {c.label}: {msg}", bool(swapped))
        else:
            note("shard_order", None, None, c, "", False)
        if bad:
            # the closest wrong variant that explains the failure names the property
            dref = _rel_fro(X, ref)
            wrong = {name: v for name, v in variants(claim, G, kind, world).items()
                     if name in res}
            found = [(name, what, _rel_fro(X, var)) for name, (what, var) in wrong.items()]
            hits = [f for f in found if f[2] * EXPLAIN_RATIO < dref]
            best = _diagnosis(hits, {name: var for name, (_, var) in wrong.items()}, dref)
            for name, what, dvar in found:
                note(name, dvar if name == best else None, None, c,
                     f"layout {kind} over {world} ranks, case {c.label}: the result matches "
                     f"{what} (relative distance {dvar:.2g}) rather than the unsharded "
                     f"operator (distance {dref:.2g})", name == best)
        if c.pair_of is not None and "stack_independent" in res:
            base = assembled[c.pair_of]
            keep = [j for j in range(G.shape[0]) if j != c.changed]
            tol_rel = 2 * _stack_rel_tol(claim, cases[c.pair_of].G[keep], base[keep], q)
            diffs = [_rel_fro(X[j], base[j]) for j in keep]
            j = int(np.argmax(diffs))
            note("stack_independent", diffs[j], tol_rel, c,
                 f"layout stack over {world} ranks: replacing parameter {c.changed} changed "
                 f"the result of parameter {keep[j]} (on rank "
                 f"{_rank_of(keep[j], G.shape, world)}) by {diffs[j]:.3g} relative "
                 f"(> {tol_rel:.3g}): parameters are not independent", diffs[j] > tol_rel)
    for r in res.values():
        if r.status == "pass" and r.examples == 0 and r.name not in (
                "ranks_complete", "shard_shapes", "input_not_modified"):
            r.message = "not exercised: every input agreed with the unsharded operator"
    for n in ("ranks_complete", "shard_shapes", "input_not_modified"):
        res[n].examples = len(cases)
    report.results = [res[n] for n in names]
    report.seconds = seconds
    return report


def _diagnosis(hits, outputs, dref):
    """The property a failure is blamed on: the closest explaining variant, except that
    variants this input does not separate from it (closer to each other than EXPLAIN_RATIO
    times the failure) go to the first in catalogue order (the simplest mistake)."""
    if not hits:
        return None
    best = min(hits, key=lambda f: f[2])[0]
    for name, _, _ in hits:       # catalogue order: whole_matrix, global_norm, global_gram
        if name == best or _rel_fro(outputs[name], outputs[best]) * EXPLAIN_RATIO < dref:
            return name
    return best


def _rank_of(j, shape, world):
    for lay in shard_layouts("stack", shape, world):
        if lay.start <= j < lay.stop:
            return lay.rank
    return -1


def _stack_rel_tol(claim, G, X, q):
    """A relative-Frobenius tolerance per parameter derived from the agreement tolerance."""
    meas = agreement(claim, G, X, q)
    if claim.preset is not None:
        return float(meas.tolerance)
    # absolute per-sqrt(k) metrics: relative to ||X||_F / sqrt(k) of a result of singular
    # values <= ~1; the elementwise grad_norm bound is already relative to (1 + |y|)
    if claim.op == "grad_norm":
        return 2 * float(meas.tolerance)
    k = min(G.shape[-2:])
    nrm = min(float(np.linalg.norm(x)) for x in _mats(X)) / math.sqrt(k)
    return float(meas.tolerance) / max(nrm, 1e-300)


# -- running the ranks --------------------------------------------------------------------------

def _to_numpy(t):
    t = t.detach().cpu()
    if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
        t = t.float()
    return t.numpy().copy()


def _run_cases(fn, kind, cases, rank, world, group, device):
    """This rank's local results for every case (raises what ``fn`` raises)."""
    import torch
    outs = []
    for c in cases:
        lay = shard_layouts(kind, c.G.shape, world)[rank]
        local = torch.from_numpy(np.ascontiguousarray(lay.take(c.G))).to(device)
        before = local.clone()
        out = fn(local, group=group, layout=lay)
        if not hasattr(out, "detach"):
            out = torch.as_tensor(np.asarray(out))
        outs.append((_to_numpy(out), not torch.equal(local, before)))
    return outs


def _init_group(backend, init_file, rank, world, timeout_s):
    import torch.distributed as dist
    dist.init_process_group(backend, init_method="file://" + init_file, rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.group.WORLD


def _worker(rank, world, backend, init_file, timeout_s, tasks, results):
    """One rank: join the group, then run tasks until told to stop."""
    try:
        _worker_loop(rank, world, backend, init_file, timeout_s, tasks, results)
    except BaseException:  # noqa: BLE001 - anything outside a task is fatal for this rank
        results.put(("fatal", None, rank, traceback.format_exc(limit=4)))
        raise


def _worker_loop(rank, world, backend, init_file, timeout_s, task_queues, results):
    tasks = task_queues[rank]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    try:
        group = _init_group(backend, init_file, rank, world, timeout_s)
        results.put(("ready", None, rank, None))
    except Exception:  # noqa: BLE001 - reported to the parent
        results.put(("error", None, rank, traceback.format_exc(limit=3)))
        return
    loaded = {}
    while True:
        msg = tasks.get()
        if msg[0] == "stop":
            break
        if msg[0] == "reinit":
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group is being replaced anyway
                pass
            try:
                group = _init_group(backend, msg[1], rank, world, timeout_s)
                results.put(("ready", msg[2], rank, None))
            except Exception:  # noqa: BLE001
                results.put(("error", msg[2], rank, traceback.format_exc(limit=3)))
            continue
        _, task_id, target, kind, cases = msg
        t0 = time.perf_counter()
        try:
            if isinstance(target, str):
                fn = loaded.get(target) or load_target(target)
                loaded[target] = fn
            else:
                fn = target
            outs = _run_cases(fn, kind, cases, rank, world, group, device)
            results.put(("ok", task_id, rank, (outs, time.perf_counter() - t0)))
        except BaseException as exc:  # noqa: BLE001 - the parent reports it
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-2)
            results.put(("error", task_id, rank,
                         f"{type(exc).__name__}: {exc}".strip() + "\n" + "".join(tb)))


class RankPool:
    """``world_size`` spawned ranks in one process group, reused for many checks.

    Starting the ranks (importing torch) costs seconds; a pool pays it once.  gloo ranks are
    forked from a fork server that imported torch once, NCCL ranks are spawned
    (``start_method`` overrides: 'spawn', 'forkserver', 'fork').  Every call
    has a deadline: a rank that raises is reported with its exception, the group is rebuilt
    (in the same processes) once the other ranks' collectives time out, and ranks that do not
    answer at all are terminated and respawned on the next call.
    """

    def __init__(self, world_size=2, backend="auto", timeout_s=30.0, start_timeout_s=300.0,
                 start_method=None):
        if start_method not in (None, "spawn", "forkserver", "fork"):
            raise UsageError("start_method must be spawn, forkserver or fork")
        if backend == "nccl" and start_method == "fork":
            raise UsageError("nccl ranks must be spawned (CUDA cannot be used after fork)")
        self.start_method = start_method
        if backend not in BACKENDS:
            raise UsageError(f"--dist-backend must be one of {', '.join(BACKENDS)}")
        if world_size < 1:
            raise UsageError("--world-size must be >= 1")
        self.world_size, self.backend = int(world_size), backend
        self.timeout_s, self.start_timeout_s = float(timeout_s), float(start_timeout_s)
        self._ctx = self._procs = None
        self._ids = itertools.count(1)

    # lifecycle
    def _start(self):
        import torch.multiprocessing as mp
        if self.backend == "auto":     # NCCL when every rank can have its own GPU
            import torch
            self.backend = "nccl" if torch.cuda.is_available() and \
                torch.cuda.device_count() >= self.world_size and \
                self.start_method != "fork" else "gloo"
        if self.start_method is None:
            # gloo: a fork server imports torch once and forks the ranks from it (spawning
            # imports torch in every rank); nccl: plain spawn, nothing CUDA-related is forked
            self.start_method = "forkserver" if self.backend == "gloo" and \
                "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        if self.backend == "nccl":
            import torch
            if torch.cuda.device_count() < self.world_size:
                raise UsageError(f"nccl needs one GPU per rank: {torch.cuda.device_count()} "
                                 f"visible for {self.world_size} ranks")
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":   # import torch once, in the server
            ctx.set_forkserver_preload(["torch", "torch.distributed", __name__])
        self._tasks = [ctx.Queue() for _ in range(self.world_size)]
        self._results = ctx.Queue()
        self._dir = tempfile.mkdtemp(prefix="swanref-dist-")
        init = os.path.join(self._dir, "init0")
        self._ctx = mp.start_processes(
            _worker, args=(self.world_size, self.backend, init, self.timeout_s, self._tasks,
                           self._results),
            nprocs=self.world_size, join=False, start_method=self.start_method)
        self._procs = self._ctx.processes
        ready, errors = self._collect(None, self.start_timeout_s, kind="ready")
        if errors or len(ready) < self.world_size:
            why = "; ".join(f"rank {r}: {e}" for r, e in sorted(errors.items())) or \
                f"only {len(ready)} of {self.world_size} ranks joined"
            self.close(force=True)
            raise RuntimeError(f"could not start {self.world_size} {self.backend} ranks: {why}")

    def close(self, force=False):
        if self._procs is None:
            return
        if not force:
            for q in self._tasks:
                q.put(("stop",))
            deadline = time.monotonic() + 3.0   # they hold nothing: do not wait for teardown
            for p in self._procs:
                p.join(timeout=max(deadline - time.monotonic(), 0.1))
        for p in self._procs:   # only the processes this pool started
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for p in self._procs:
            if p.is_alive():
                p.kill()
        self._procs = self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _collect(self, task_id, timeout, kind="ok"):
        """Results of ``task_id`` from every rank until the deadline: ({rank: payload},
        {rank: error message})."""
        got, errors = {}, {}
        deadline = time.monotonic() + timeout
        while len(got) + len(errors) < self.world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                status, tid, rank, payload = self._results.get(timeout=min(left, 1.0))
            except _queue.Empty:
                dead = [i for i, p in enumerate(self._procs) if not p.is_alive()
                        and i not in got and i not in errors]
                for i in dead:
                    errors[i] = f"process exited with code {self._procs[i].exitcode}"
                continue
            if status == "fatal":
                errors[rank] = payload
                continue
            if tid != task_id:
                continue           # a late answer to an abandoned task
            if status == "error":
                errors[rank] = payload
            elif status in (kind, "ready"):
                got[rank] = payload
        return got, errors

    def run(self, target, kind, cases):
        """Every rank's local results for ``cases``: (outputs[case][rank], errors, seconds)."""
        if self._procs is None:
            self._start()
        tid = next(self._ids)
        for q in self._tasks:
            q.put(("run", tid, target, kind, cases))
        # a rank blocked in a collective whose peer raised gets the group's timeout error
        got, errors = self._collect(tid, self.timeout_s * 2 + 30)
        if errors or len(got) < self.world_size:
            for r in range(self.world_size):
                if r not in got and r not in errors:
                    errors[r] = (f"no answer within {self.timeout_s * 2 + 30:.0f} s (hang: a "
                                 "collective not entered by every rank?); rank terminated")
            self._recover(got, errors)
            return None, errors, 0.0
        outs = [[got[r][0][i] for r in range(self.world_size)] for i in range(len(cases))]
        return outs, {}, max(got[r][1] for r in range(self.world_size))

    def _recover(self, got, errors):
        """After a failed task: rebuild the group in the same processes, or respawn."""
        if all(p.is_alive() for p in self._procs):
            tid = next(self._ids)
            init = os.path.join(self._dir, f"init{tid}")
            for q in self._tasks:
                q.put(("reinit", init, tid))
            ready, errs = self._collect(tid, self.timeout_s + 30, kind="ready")
            if len(ready) == self.world_size:
                return
        self.close(force=True)


def check_sharded(target, op="whiten", *, layout="rows", world_size=2, backend="auto",
                  shape=(16, 32), params=None, dtype="float64", method="svd", steps=None,
                  beta=None, scaling=None, preset=None, eps=0.0, seed=0, pool=None,
                  timeout_s=30.0, target_name=None) -> CheckReport:
    """Run a sharded implementation on ``world_size`` spawned ranks and judge it.

    ``target``: ``'module:function'`` / ``'file.py:function'`` (loaded in every rank) or a
    picklable callable ``fn(local_shard, group=..., layout=...)``.  ``pool``: a
    :class:`RankPool` to reuse (its world size and backend win); otherwise one is started and
    closed here.  ``timeout_s``: the process group's collective timeout (a rank blocked on a
    peer that raised gives up after it).
    """
    claim = ShardedClaim(op, dtype, method, steps, beta, scaling, preset, eps).validate()
    _check_target(target)
    own = pool is None
    pool = pool or RankPool(world_size, backend, timeout_s)
    world = pool.world_size
    if kind_err := _layout_error(layout, shape, world):
        raise UsageError(kind_err)
    cases = sharded_inputs(claim, layout, world, shape, seed, params)
    try:
        outs, errors, secs = pool.run(target, layout, cases)
    finally:
        if own:
            pool.close()
    name = target_name or (target if isinstance(target, str) else
                           getattr(target, "__qualname__", repr(target)))
    return evaluate(claim, layout, world, cases, outs, errors, name, secs, pool.backend)


def _check_target(target):
    """Fail early (UsageError) on a target the ranks could not load or receive."""
    if isinstance(target, str):
        load_target(target)
        return
    if not callable(target):
        raise UsageError(f"target must be callable or 'module:function', got {target!r}")
    try:
        pickle.dumps(target)
    except Exception as exc:  # noqa: BLE001 - lambdas, closures, local functions
        raise UsageError(f"target {getattr(target, '__qualname__', target)!r} cannot be sent "
                         f"to the ranks ({type(exc).__name__}: {exc}); pass 'module:function' "
                         "or 'file.py:function'") from None


def _layout_error(layout, shape, world):
    if layout not in LAYOUTS:
        return f"--shard must be one of {', '.join(LAYOUTS)}"
    if len(shape) != 2:
        return "shape must be (m, n)"
    if layout in ("rows", "cols") and min(shape) < world:
        return f"shape {tuple(shape)} has fewer rows or columns than {world} ranks"
    return None


def check_in_group(fn, op="whiten", *, layout="rows", group=None, shape=(16, 32), params=None,
                   dtype="float64", method="svd", steps=None, beta=None, scaling=None,
                   preset=None, eps=0.0, seed=0, device=None) -> CheckReport:
    """The same check inside an existing job (torchrun): call it on every rank of ``group``
    (default: the world).  Every rank builds the same inputs, runs ``fn`` on its shard, the
    local results are all-gathered and every rank returns the same report.

    A rank whose ``fn`` raises reports the exception, but its peers may be blocked inside
    ``fn``'s collectives: only the group's own timeout (``init_process_group(timeout=...)``)
    ends that.
    """
    import torch
    import torch.distributed as dist
    group = group or dist.group.WORLD
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    claim = ShardedClaim(op, dtype, method, steps, beta, scaling, preset, eps).validate()
    if kind_err := _layout_error(layout, shape, world):
        raise UsageError(kind_err)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend(group) == "nccl" else torch.device("cpu")
    cases = sharded_inputs(claim, layout, world, shape, seed, params)
    t0 = time.perf_counter()
    try:
        mine = ("ok", _run_cases(fn, layout, cases, rank, world, group, device))
    except Exception as exc:  # noqa: BLE001 - every rank learns of it
        mine = ("error", f"{type(exc).__name__}: {exc}")
    gathered = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    errors = {r: g[1] for r, g in enumerate(gathered) if g[0] == "error"}
    outs = None if errors else [[gathered[r][1][i] for r in range(world)]
                                for i in range(len(cases))]
    return evaluate(claim, layout, world, cases, outs, errors,
                    getattr(fn, "__qualname__", repr(fn)), time.perf_counter() - t0,
                    dist.get_backend(group))


# -- command line ------------------------------------------------------------------------------

def _shape(text):
    try:
        m, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be MxN, got {text!r}") from None
    if m < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"shape must be positive, got {text!r}")
    return (m, n)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def add_arguments(p):
    """The sharding options (shared with ``swanref check``)."""
    g = p.add_argument_group("sharded check (torch.distributed)")
    g.add_argument("--world-size", type=int, default=None,
                   help="run the target on N ranks of a process group (sharded check)")
    g.add_argument("--shard", choices=LAYOUTS, default="rows",
                   help="layout: rows, cols (tensor parallel), flat (FSDP), stack (parameters)")
    g.add_argument("--dist-backend", choices=BACKENDS, default="auto",
                   help="gloo (CPU), nccl (one GPU per rank), or auto (default): nccl when "
                        "every rank can have its own GPU, else gloo")
    g.add_argument("--shape", type=_shape, default=(16, 32),
                   help="global matrix shape MxN (stack: each parameter)")
    g.add_argument("--dist-timeout", type=float, default=60.0,
                   help="collective timeout in seconds (a rank blocked on a failed peer)")
    return p


def build_parser():
    p = _Parser(prog="swanref check-sharded",
                description="Check a sharded implementation fn(local_shard, group=, layout=) "
                            "across processes. Exit 0 conforming, 1 not, 2 usage error.")
    p.add_argument("op", choices=OPS, metavar="OP", help=f"the operator: {', '.join(OPS)}")
    p.add_argument("target", metavar="TARGET",
                   help="the sharded implementation, module:function or file.py:function")
    p.add_argument("--method", default="svd")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--scaling", default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--eps", type=float, default=0.0)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    add_arguments(p)
    return p


def run_from_args(args) -> int:
    """Run a sharded check from parsed options (``swanref check --world-size`` hands off here)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("swanref: the sharded check needs torch (pip install torch)", file=sys.stderr)
        return 2
    try:
        report = _cli_check(args)
    except RuntimeError as exc:
        print(f"swanref check-sharded: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else
          report.table().replace("swanref check ", "swanref check-sharded ", 1))
    return report.exit_code


def _cli_check(args):
    return check_sharded(args.target, args.op, layout=args.shard,
                         world_size=args.world_size or 2, backend=args.dist_backend,
                         shape=args.shape, dtype=str(args.dtype), method=args.method,
                         steps=args.steps, beta=args.beta, scaling=args.scaling,
                         preset=args.preset, eps=args.eps, seed=args.seed,
                         timeout_s=args.dist_timeout)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    try:
        return run_from_args(build_parser().parse_args(argv))
    except UsageError as exc:
        print(f"swanref check-sharded: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
