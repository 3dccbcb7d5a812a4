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
import ast
import datetime
import importlib
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

from swanref.presets.catalogue import PRESETS, get_preset, schedule
from swanref.presets.diagnose import probe_tolerance
from swanref.presets.lowprec import FORMATS, round_to
from swanref.spec.readings import SCALINGS, WHITEN_METHODS, default_rank_rtol
from swanref.spec.tolerance import condition_number
from swanref.verify.checker import EXIT_CODES, CheckReport, PropertyResult, stopped
from swanref.verify.claims import Claim
from swanref.verify.claims.cli import add_claim_arguments, claim_from_args
from swanref.verify.claims.model import require_evaluable
from swanref.verify.claims.tolerance_model import register_term
from swanref.verify.matrices import conditioned
from swanref.verify.measure import (Measurement, describe_input, measure_grad_norm,
                                    measure_newton_schulz, measure_orthonormal_rows,
                                    measure_whitening)
from swanref.verify.sharded.layouts import (LAYOUTS, SPLITS, ShardLayout, assemble, parse_mesh,
                                            shard_layouts, split)
from swanref.spec.conventions import resolve_scale
from swanref.verify.sharded.mistakes import (EXPLAIN_RATIO, closest, diagnosis,
                                             rel_fro, variants)
from swanref.verify.sharded.calling import CONVENTIONS, forget_meshes, hung_at, run_cases
from swanref.verify.sharded.reduction import (mats, reduced_parts, reduction_term,
                                              reduction_unit)
from swanref.verify.sharded.reference import judge_pack, reference
from swanref.verify.targets import (DEFAULT_TIMEOUT_S, TargetAborted, TargetRunner,
                                    TargetTimeout, UsageError, load_target,
                                    seconds_argument)

__all__ = ["LAYOUTS", "SPLITS", "DTYPES", "ShardLayout", "ShardedClaim", "shard_layouts",
           "split", "assemble", "reduction_term", "sharded_inputs", "reference", "agreement",
           "variants", "evaluate", "RankPool", "check_sharded", "check_in_group", "main"]

BACKENDS = ("auto", "gloo", "nccl")
#: from this many entries per matrix on, the ranks compute the references (in parallel)
RANK_JUDGING_SIZE = 1 << 18
OPS = ("grad_norm", "whiten")
#: compute precisions a sharded claim may state (16-bit: swanref's operators compute in float32
#: and round the output; presets run their PyTorch-eager emulation, spec 8.6)
DTYPES = ("float64", "float32", "bfloat16", "float16")
LOW = ("bfloat16", "float16")


# -- the claim ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardedClaim:
    """What the sharded target computes: ``op`` with a reading, in ``dtype``, on shards cut by
    ``split`` (``tensor_split`` or ``chunk``, the DTensor/FSDP2 rule) over a 1-D world or a 2-D
    ``mesh`` (layout ``grid``).

    op 'grad_norm' (rows, ``eps``); op 'whiten' with ``method`` 'svd' / 'eigh' (exact, the
    accuracy claimed) or 'newton_schulz' (``steps``, ``beta``, ``scaling``), or ``preset`` (a
    swanref.presets name, ``steps`` optional; run in ``dtype``, the presets' reference path;
    bfloat16/float16: the PyTorch-eager emulation).  ``input_dtype``: the shards' dtype
    (default ``dtype``; e.g. float32 gradients orthogonalised in bfloat16); ``reduce_dtype``:
    the precision the all-reduces run in (default ``dtype``; float32 where a bfloat16 Gram
    matrix is reduced in float32).
    """
    op: str
    dtype: str = "float64"
    method: str = "svd"
    steps: int | None = None
    beta: float | None = None
    scaling: str | None = None
    preset: str | None = None
    eps: float = 0.0
    input_dtype: str | None = None
    reduce_dtype: str | None = None
    split: str = "tensor_split"
    mesh: tuple | None = None

    @classmethod
    def from_claim(cls, claim: Claim) -> ShardedClaim:
        """The sharded check's claim of a :class:`~swanref.verify.claims.Claim` (validated)."""
        evaluable = ["steps", "beta", "scaling", "compute_dtype", "io_dtype", "shard_split",
                     "mesh", "world_size", "reduce_dtype"]
        if claim.op == "grad_norm":
            evaluable.append("eps")
        require_evaluable(claim, "sharded", evaluable)
        mesh = claim.mesh if claim.mesh is not None and len(claim.mesh) == 2 else None
        if claim.mesh is not None and len(claim.mesh) == 3:
            raise UsageError("the sharded check runs 1-D and 2-D meshes; mesh "
                             f"{claim.mesh} has 3 axes")
        return cls(claim.op, claim.compute_dtype,
                   "svd" if claim.method == "preset" else claim.method, claim.steps,
                   claim.beta, claim.scaling, claim.preset,
                   (claim.eps or 0.0) if claim.op == "grad_norm" else 0.0,
                   claim.io_dtype, claim.reduce_dtype, claim.shard_split, mesh).validate()

    def validate(self):
        if self.op not in OPS:
            raise UsageError(f"sharded check: OP must be one of {', '.join(OPS)}, got {self.op!r}")
        for opt, val in (("--dtype", self.dtype), ("--input-dtype", self.input_dtype),
                         ("--reduce-dtype", self.reduce_dtype)):
            if val is not None and val not in DTYPES:
                raise UsageError(f"sharded check: {opt} must be one of {', '.join(DTYPES)}, "
                                 f"got {val!r}")
            if val == "bfloat16" and FORMATS["bfloat16"][0] is None:
                raise UsageError(f"sharded check: {opt} bfloat16 needs ml_dtypes "
                                 "(pip install ml_dtypes)")
        if self.split not in SPLITS:
            raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
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

    @property
    def in_dtype(self) -> str:
        return self.input_dtype or self.dtype

    def ns_reading(self):
        d = WHITEN_METHODS["newton_schulz"].defaults
        return (d["steps"] if self.steps is None else self.steps,
                d["beta"] if self.beta is None else self.beta,
                d["scaling"] if self.scaling is None else self.scaling)

    def describe(self) -> dict:
        d = {"op": self.op, "dtype": self.dtype}
        if self.input_dtype and self.input_dtype != self.dtype:
            d["input_dtype"] = self.input_dtype
        if self.reduce_dtype and self.reduce_dtype != self.dtype:
            d["reduce_dtype"] = self.reduce_dtype
        if self.split != "tensor_split":
            d["split"] = self.split
        if self.mesh:
            d["mesh"] = "x".join(map(str, self.mesh))
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


def _np_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a precision name (bfloat16 through ml_dtypes)."""
    return FORMATS[name][0] if name == "bfloat16" else np.dtype(name)


def _unit(claim: ShardedClaim) -> float:
    """Unit roundoff of the claim's reductions (kept for callers of 0.2)."""
    return reduction_unit(claim)


def claim_reduction_term(claim: Claim, G) -> float:
    """The reduction-order term (spec 10.2) as a level term of the claims tolerance model
    (spec 11.4): ``q`` is the claim's ``world_size`` (else the product of its ``mesh``; 1:
    nothing reduced), an upper bound for every layout."""
    q = claim.world_size or (math.prod(claim.mesh) if claim.mesh else 1)
    return reduction_term(ShardedClaim.from_claim(claim), G, q)


register_term("sharded", claim_reduction_term)


# -- reference and tolerance ------------------------------------------------------------

def agreement(claim: ShardedClaim, G, out, q: int, ref=None, sv=None) -> Measurement:
    """The assembled output against the unsharded operator: the spec's tolerance for the
    claim plus :func:`reduction_term`.  ``ref``, ``sv``: :func:`reference` and the singular
    values of every matrix, when already computed (by the ranks)."""
    G = np.asarray(G)
    dt = _np_dtype(claim.dtype)
    R = reduction_term(claim, G, q, sv)
    if claim.op == "grad_norm":
        meas = measure_grad_norm(_as(out, dt), G, eps=claim.eps, dtype=dt,
                                 prop="agrees_with_unsharded")
    elif claim.preset is not None:
        preset = get_preset(claim.preset)
        sched = schedule(claim.preset, claim.steps)
        tol = probe_tolerance(G, preset, sched, claim.dtype, sv)
        meas = Measurement("agrees_with_unsharded",
                           rel_fro(out, reference(claim, G) if ref is None else ref), tol,
                           "||X - preset(G)||_F / ||preset(G)||_F (worst matrix)",
                           describe_input(G) if sv is None else _describe(G, sv))
    elif claim.iterative:
        steps, beta, scaling = claim.ns_reading()
        meas = measure_newton_schulz(_as(out, dt), G, steps=steps, beta=beta, scaling=scaling,
                                     dtype=dt, prop="agrees_with_unsharded")
    else:
        meas = measure_whitening(_as(out, dt), G, method=claim.method, dtype=dt,
                                 prop="agrees_with_unsharded")
    return replace(meas, tolerance=float(meas.tolerance) + R,
                   note=(meas.note + "; " if meas.note else "") +
                   f"reduction-order term {R:.3g} over {q} partial sums")


def _describe(G, sv):
    """:func:`describe_input` from known singular values (no SVD of a large input again)."""
    sv = np.asarray(sv, np.float64)
    info = {"shape": list(np.shape(G)), "dtype": str(np.asarray(G).dtype)}
    top = sv[:, :1]
    keep = sv > default_rank_rtol(*np.shape(G)[-2:], float(np.finfo(np.float64).eps)) * top
    if np.all(top > 0):
        info["kappa"] = float(np.max(top[:, 0] / np.min(np.where(keep, sv, np.inf), axis=1)))
        info["rank"] = int(np.min(np.sum(keep, axis=1)))
    return info


def _as(out, dt):
    """The output in the claimed dtype for the measures (16-bit outputs arrive widened)."""
    out = np.asarray(out)
    return out.astype(dt) if dt.itemsize < 4 else out


# -- inputs -------------------------------------------------------------------------------------

@dataclass
class Case:
    label: str
    G: np.ndarray                     # float64/float32; 16-bit inputs as float32 of their values
    pair_of: int | None = None        # stack: the case this one perturbs
    changed: int | None = None        # stack: the parameter that was replaced
    dtype: str | None = None          # the shards' dtype (default: G's)

    @property
    def dtype_name(self) -> str:
        return self.dtype or str(self.G.dtype)


def _cast(g, name):
    """``g`` in precision ``name``: 16-bit formats as float32 arrays of representable values."""
    if name in LOW:
        return round_to(np.asarray(g, np.float32), name).astype(np.float32)
    return np.asarray(g).astype(name)


def sharded_inputs(claim: ShardedClaim, kind: str, world: int, shape=(16, 32), seed=0,
                   params=None) -> list:
    """The fixed inputs of a sharded check (deterministic in ``seed``).

    rows/cols/flat/grid: a Gaussian matrix, one with condition number 100, one whose shards
    differ in scale by 4x per rank, and the transposed shape.  stack: ``params`` (default
    ``2 * world``) matrices of very different scales, and the same stack with one parameter
    replaced by a 1000x larger one (for ``stack_independence``).  Inputs are rounded to the
    claim's input dtype.
    """
    rng = np.random.default_rng(seed)
    name = claim.in_dtype
    tag = name if name in LOW else None
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
        return [Case(f"stack of {B} ({m}x{n})", _cast(S, name), dtype=tag),
                Case(f"stack of {B}, parameter 0 replaced", _cast(S2, name), pair_of=0,
                     changed=0, dtype=tag)]
    cases = [Case(f"gaussian {m}x{n}", _cast(gauss(m, n), name), dtype=tag)]
    if claim.op == "whiten":
        cases.append(Case(f"kappa 1e2 {m}x{n}", _cast(conditioned(rng, m, n, 1e2), name),
                          dtype=tag))
    g = gauss(m, n)
    lays = shard_layouts(kind, (m, n), world, claim.split, claim.mesh)
    flat = g.reshape(-1)
    for lay in lays:
        f = 4.0 ** lay.rank
        if kind == "rows":
            g[lay.start:lay.stop] *= f
        elif kind == "cols":
            g[:, lay.start:lay.stop] *= f
        elif kind == "grid":
            g[lay.start:lay.stop, lay.col_start:lay.col_stop] *= f
        else:
            flat[lay.start:lay.stop] *= f
    cases.append(Case(f"shards scaled 4^rank {m}x{n}", _cast(g, name), dtype=tag))
    cases.append(Case(f"gaussian {n}x{m}", _cast(gauss(n, m), name), dtype=tag))
    return cases


# -- evaluation ---------------------------------------------------------------------------------

_DOC = {
    "ranks_complete": "every rank returned a result for every input (no exception, no hang)",
    "shard_shapes": "every rank's result has its shard's shape and the input (or compute) dtype",
    "input_not_modified": "no rank modified the shard it was given",
    "agrees_with_unsharded": "the assembled result is the unsharded operator on the assembled "
                             "input, within the spec tolerance plus the reduction-order term",
    "orthonormal_rows": "the assembled whitening has orthonormal rows (columns if tall)",
    "shard_order": "each rank returned its own block, not another rank's",
    "whole_matrix": "the result is not the operator applied to each shard on its own",
    "global_norm": "the Frobenius normalisation is over the whole matrix, not each shard",
    "global_gram": "the Gram matrix is all-reduced over the shards",
    "gather_axis": "the shards are gathered along the axis they were split on",
    "norm_scale": "the global norm (scaling constant) is not off by a power of the world size",
    "world_scaled": "the result is not the unsharded one multiplied or divided by a power of "
                    "the world size",
    "stack_independent": "replacing one parameter of a stack changes no other parameter's "
                          "result",
}


def property_names(claim: ShardedClaim, kind: str) -> list:
    names = ["ranks_complete", "shard_shapes", "input_not_modified", "agrees_with_unsharded"]
    if claim.op == "whiten" and claim.preset is None and not claim.iterative:
        names.append("orthonormal_rows")
    names.append("shard_order")
    if kind in ("rows", "cols", "grid"):
        names.append("whole_matrix")
        if claim.preset is not None:
            names.append("global_norm")
        if claim.preset is not None or claim.iterative:
            names.append("global_gram")
        if kind != "grid":
            names.append("gather_axis")
        if claim.preset is not None or claim.iterative:
            names.append("norm_scale")
    names.append("world_scaled")      # a result scaled by the world size, in any layout
    if kind == "stack":
        names.append("stack_independent")
    return names


def _result(name, status="pass", **kw) -> PropertyResult:
    return PropertyResult(name, status, "required", _DOC[name], **kw)


def _block_distance_matrix(out, ref, kind, world, rule="tensor_split", mesh=None):
    """d[r, s] = relative distance of rank r's returned block to reference block s (inf where
    the shapes differ or a block is empty)."""
    shape = np.shape(ref)
    ob, rb = split(out, kind, world, rule, mesh), split(ref, kind, world, rule, mesh)
    lays = shard_layouts(kind, shape, world, rule, mesh)
    if kind == "flat":   # drop padding; compare real entries only
        ob = [b[:lay.stop - lay.start] for b, lay in zip(ob, lays)]
        rb = [b[:lay.stop - lay.start] for b, lay in zip(rb, lays)]
    d = np.full((world, world), np.inf)
    for r, s in itertools.product(range(world), range(world)):
        if ob[r].shape == rb[s].shape and ob[r].size:
            nrm = max(float(np.linalg.norm(rb[s])), 1e-300)
            with np.errstate(over="ignore", invalid="ignore"):
                v = float(np.linalg.norm(np.asarray(ob[r], np.float64) - rb[s])) / nrm
            d[r, s] = v if math.isfinite(v) else np.inf
    return d


class ShardedReport(CheckReport):
    """A sharded check's report: its evidence is ``agrees_with_unsharded`` passing on at least
    one input with a claim.  Complete ranks, right shapes and untouched inputs are
    preconditions, not evidence: with no claimed agreement the check is not CONFORMING."""

    @property
    def evidence(self) -> list:
        return [r for r in self.results if r.name == "agrees_with_unsharded"
                and r.status == "pass" and r.examples > 0]

    @property
    def conforming(self) -> bool:
        return super().conforming and bool(self.evidence)


def evaluate(claim: ShardedClaim, kind: str, world: int, cases: list, outputs: list,
             errors=None, target_name="target", seconds=0.0, backend=None,
             refs=None, svs=None) -> CheckReport:
    """Judge the ranks' local results (``outputs[case][rank]``: an array, or ``(array,
    mutated[, dtype name])``) for ``cases``.

    ``errors``: ``{rank: message}`` of ranks that raised or hung (then only ``ranks_complete``
    is judged).  ``refs``: the unsharded reference of every case when already computed (by
    the ranks, in parallel); otherwise each is computed here, once.  ``svs``: the singular
    values of every case's matrices, likewise.
    """
    t_judge = time.perf_counter()
    names = property_names(claim, kind)
    desc = dict(claim.describe(), layout=kind, world_size=world)
    if backend:
        desc["backend"] = backend
    report = ShardedReport(claim.op, target_name, desc, len(cases), 0)
    res = {n: _result(n) for n in names}
    where = f"layout {kind}" + (f" ({claim.split})" if claim.split != "tensor_split" else "") \
        + (f" on mesh {desc['mesh']}" if claim.mesh else "") + f" over {world} ranks"
    hung = {r: e for r, e in (errors or {}).items() if isinstance(e, TargetTimeout)}
    if hung:
        # the same outcome and wording as swanref check: TIMEOUT (exit 5), the probe and rank
        # lead with a rank that hangs by itself, not one waiting for it in a collective
        first = min(hung, key=lambda k: (getattr(hung[k], "waiting", False), k))
        r = res["ranks_complete"]
        stopped(r, hung[first])
        r.message = r.message.replace("the call was left running in the background",
                                      "the ranks were stopped")
        if len(hung) > 1:
            r.message += "; also past the deadline: " + "; ".join(
                f"rank {k}, {hung[k].where}" for k in sorted(hung) if k != first)
        others = {k: e for k, e in errors.items() if k not in hung}
        if others:
            r.message += "; " + "; ".join(f"rank {k}: {others[k]}" for k in sorted(others))
        r.input = {"rank": first, "layout": kind, "world_size": world}
        for n in names[1:]:
            res[n].status, res[n].message = "not-run", "not run: a rank's call timed out"
        report.results = [res[n] for n in names]
        return report
    if errors:
        first = min(errors)
        res["ranks_complete"] = _result(
            "ranks_complete", "FAIL", error=math.inf, tolerance=0.0,
            message=f"{where}: " + "; ".join(
                f"rank {r}: {errors[r]}" for r in sorted(errors)),
            input={"rank": first, "layout": kind, "world_size": world})
        for n in names[1:]:
            res[n].status, res[n].message = "n/a", "not judged: a rank did not complete"
        report.results = [res[n] for n in names]
        return report
    mutated = [(c, r) for c, outs in zip(cases, outputs) for r, o in enumerate(outs)
               if isinstance(o, tuple) and o[1]]
    dtypes = [[o[2] if isinstance(o, tuple) and len(o) > 2 else None for o in outs]
              for outs in outputs]
    outputs = [[o[0] if isinstance(o, tuple) else o for o in outs] for outs in outputs]
    if mutated:
        c, r = mutated[0]
        res["input_not_modified"] = _result(
            "input_not_modified", "FAIL", error=math.inf, tolerance=0.0,
            input={"case": c.label, "rank": r, "layout": kind},
            message=f"{where}: rank {r} modified its input shard "
                    f"(case {c.label}); ranks " + ", ".join(
                        sorted({str(rr) for _, rr in mutated})) + " did")
    rule, mesh = claim.split, claim.mesh
    lays_by_case = [shard_layouts(kind, c.G.shape, world, rule, mesh) for c in cases]
    # shapes and dtypes: the input's dtype, or the claimed compute dtype
    for c, outs, dts, lays in zip(cases, outputs, dtypes, lays_by_case):
        allowed = {c.dtype_name, claim.dtype}
        for lay, o, dn in zip(lays, outs, dts):
            o = np.asarray(o)
            dn = dn or str(o.dtype)
            if o.shape != lay.local_shape or dn not in allowed:
                r = res["shard_shapes"]
                if r.status == "pass":
                    r.status, r.error, r.tolerance = "FAIL", math.inf, 0.0
                    r.input = {"case": c.label, "rank": lay.rank, "layout": kind}
                    r.message = (f"layout {kind} ({rule}), rank {lay.rank} of {world}: "
                                 f"returned shape {o.shape} dtype {dn}, expected "
                                 f"{lay.local_shape} {' or '.join(sorted(allowed))} "
                                 f"(case {c.label})" + _other_rule(kind, c.G.shape, world,
                                                                   rule, mesh, outs))
    if res["shard_shapes"].status == "FAIL":
        for n in names[3:]:
            res[n].status, res[n].message = "n/a", "not judged: local results have wrong shapes"
        report.results = [res[n] for n in names]
        return report
    q = reduced_parts(kind, claim.op, world, mesh)
    assembled = [assemble([np.asarray(o, np.float64) for o in outs], kind, c.G.shape, rule,
                          mesh).astype(np.float64) for c, outs in zip(cases, outputs)]
    if refs is None:
        refs = [reference(claim, c.G) for c in cases]
    worst = {}

    def note(name, err, tol, case, message, fail):
        r = res[name]
        r.examples += 1
        if fail and r.status != "FAIL":
            r.status, r.error, r.tolerance, r.message = "FAIL", err, tol, message
            r.input = {"case": case.label, "layout": kind, "world_size": world,
                       **describe_input(case.G)}
        elif r.status == "pass" and err is not None and math.isfinite(err) and (
                name not in worst or (tol and err / tol > worst[name])):
            worst[name] = err / tol if tol else 0.0
            r.error, r.tolerance = err, tol
            r.input = {"case": case.label, "layout": kind, "world_size": world,
                       "shape": list(np.shape(case.G)), "dtype": case.dtype_name}

    tol_by_case, failing = {}, []
    for i, (c, X, ref) in enumerate(zip(cases, assembled, refs)):
        G = np.asarray(c.G)
        meas = agreement(claim, G, X, q, ref=ref, sv=None if svs is None else svs[i])
        tol_by_case[i] = meas
        bad = meas.failed
        if meas.claim:   # an input without a claim is neither a pass nor a failure
            note("agrees_with_unsharded", meas.error, meas.tolerance, c,
                 f"{where}, case {c.label}: " + meas.message(), bad)
        if "orthonormal_rows" in res:
            sv = None if svs is None else svs[i]
            kappa = float(np.max(condition_number(G.astype(np.float64)))) if sv is None \
                else _describe(G, sv).get("kappa", np.inf)
            om = measure_orthonormal_rows(_as(X, _np_dtype(claim.dtype)), kappa=kappa,
                                          dtype=_np_dtype(claim.dtype))
            R = 3 * reduction_term(claim, G, q, sv)
            ot = om.tolerance + R
            note("orthonormal_rows", om.error, ot, c,
                 f"{where}, case {c.label}: ||X X^T - I||_F/sqrt(m) "
                 f"= {om.error:.3g} > {ot:.3g}", not om.error <= ot)
        # shard_order: a rank's block matches another rank's reference block
        if bad and world > 1:
            d = _block_distance_matrix(X, ref, kind, world, rule, mesh)
            swapped = [(r, int(np.argmin(d[r]))) for r in range(world)
                       if np.isfinite(d[r]).any() and int(np.argmin(d[r])) != r
                       and d[r].min() * EXPLAIN_RATIO < d[r, r]]
            msg = "; ".join(f"rank {r} returned the block of rank {s} (distance "
                            f"{d[r, s]:.2g} to it, {d[r, r]:.2g} to its own)" for r, s in swapped)
            note("shard_order", d[swapped[0][0], swapped[0][1]] if swapped else None, None, c,
                 f"{where}, case {c.label}: {msg}", bool(swapped))
        else:
            note("shard_order", None, None, c, "", False)
        if bad:
            # which wrong variants explain this failure; named once every case is seen
            dref = rel_fro(X, ref)
            wrong = {name: forms for name, forms in
                     variants(claim, G, kind, world, ref, rule, mesh).items() if name in res}
            failing.append((c, dref, closest(X, ref, wrong)))
        if c.pair_of is not None and "stack_independent" in res:
            base = assembled[c.pair_of]
            keep = [j for j in range(G.shape[0]) if j != c.changed]
            tol_rel = 2 * _stack_rel_tol(claim, cases[c.pair_of].G[keep], base[keep], q)
            diffs = [rel_fro(X[j], base[j]) for j in keep]
            j = int(np.argmax(diffs))
            note("stack_independent", diffs[j], tol_rel, c,
                 f"layout stack over {world} ranks: replacing parameter {c.changed} changed "
                 f"the result of parameter {keep[j]} (on rank "
                 f"{_rank_of(keep[j], G.shape, world, rule)}) by {diffs[j]:.3g} relative "
                 f"(> {tol_rel:.3g}): parameters are not independent", not diffs[j] <= tol_rel)
    best = diagnosis(failing)
    for c, dref, found in failing:
        for name, what, dvar, _ in found:
            hit = name == best and math.isfinite(dref) and dvar * EXPLAIN_RATIO < dref
            note(name, dvar if hit else None, None, c,
                 f"{where}, case {c.label}: the result matches "
                 f"{what} (relative distance {dvar:.2g}) rather than the unsharded "
                 f"operator (distance {dref:.2g})", hit)
    agree = res["agrees_with_unsharded"]
    if agree.status == "pass" and agree.examples == 0:
        agree.status = "no-claim"
        agree.message = ("the spec's tolerance model makes no accuracy claim on any input of "
                         "this claim (predicted error above its trusted limit): nothing was "
                         "checked; claim a higher precision or more steps")
        report.hints.append("no evidence: agrees_with_unsharded made no claim on any input, "
                            "so this check is not CONFORMING (docs/spec.md 10)")
    for r in res.values():
        if r.status == "pass" and r.examples == 0 and r.name not in (
                "ranks_complete", "shard_shapes", "input_not_modified"):
            r.message = "not exercised: every input agreed with the unsharded operator"
    for n in ("ranks_complete", "shard_shapes", "input_not_modified"):
        res[n].examples = len(cases)
    report.results = [res[n] for n in names]
    report.seconds = seconds
    report.judge_seconds = time.perf_counter() - t_judge
    return report


def _other_rule(kind, shape, world, rule, mesh, outs) -> str:
    """A hint when every rank's block has the shape the *other* split rule gives (a target
    that cuts by torch.tensor_split where DTensor/FSDP2 cut by torch.chunk, or back)."""
    for other in SPLITS:
        if other == rule:
            continue
        try:
            lays = shard_layouts(kind, shape, world, other, mesh)
        except UsageError:
            continue
        if all(np.shape(o) == lay.local_shape for o, lay in zip(outs, lays)):
            return (f"; every rank's block has the shape {other} gives: the target splits by "
                    f"{other}, the claim says {rule} (--split)")
    return ""


def _rank_of(j, shape, world, rule="tensor_split"):
    for lay in shard_layouts("stack", shape, world, rule):
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
    nrm = min(float(np.linalg.norm(x)) for x in mats(X)) / math.sqrt(k)
    return float(meas.tolerance) / max(nrm, 1e-300)


# -- running the ranks --------------------------------------------------------------------------

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
    loaded, last_cases = {}, []
    while True:
        msg = tasks.get()
        if msg[0] == "stop":
            break
        if msg[0] == "reinit":
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group is being replaced anyway
                pass
            forget_meshes()
            try:
                group = _init_group(backend, msg[1], rank, world, timeout_s)
                results.put(("ready", msg[2], rank, None))
            except Exception:  # noqa: BLE001
                results.put(("error", msg[2], rank, traceback.format_exc(limit=3)))
            continue
        if msg[0] == "refs":     # this rank's share of the unsharded references
            _, task_id, claim, which = msg
            t0 = time.perf_counter()
            try:
                refs = {i: judge_pack(claim, last_cases[i].G, device) for i in which}
                results.put(("ok", task_id, rank, (refs, time.perf_counter() - t0)))
            except BaseException as exc:  # noqa: BLE001 - the parent computes them instead
                results.put(("error", task_id, rank, f"{type(exc).__name__}: {exc}"))
            continue
        _, task_id, target, kind, cases, claim, convention, kwargs, scale, call_timeout = msg
        last_cases = cases
        t0 = time.perf_counter()
        # each call of the target (and its import) under the per-call deadline (--timeout)
        runner = TargetRunner(call_timeout) if call_timeout else None
        try:
            if isinstance(target, str):
                fn = loaded.get(target) or load_target(target, runner)
                loaded[target] = fn
            else:
                fn = target
            outs = run_cases(fn, kind, cases, rank, world, group, device, claim, convention,
                             kwargs, scale, runner)
            results.put(("ok", task_id, rank, (outs, time.perf_counter() - t0)))
        except TargetTimeout as exc:   # the hung call stays behind: the parent ends this rank
            at, waiting = hung_at()
            results.put(("timeout", task_id, rank,
                         (exc.seconds, exc.where + (f" ({at})" if at else ""), waiting)))
        except BaseException as exc:  # noqa: BLE001 - the parent reports it
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-2)
            results.put(("error", task_id, rank,
                         f"{type(exc).__name__}: {exc}".strip() + "\n" + "".join(tb)))
        finally:
            if runner is not None:
                runner.close()      # an idle worker ends; a hung one stays (a daemon)


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
                 start_method=None, dtensor=False):
        if start_method not in (None, "spawn", "forkserver", "fork"):
            raise UsageError("start_method must be spawn, forkserver or fork")
        if backend == "nccl" and start_method == "fork":
            raise UsageError("nccl ranks must be spawned (CUDA cannot be used after fork)")
        self.start_method = start_method
        self.dtensor = bool(dtensor)     # preload torch.distributed.tensor once, in the server
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
            ctx.set_forkserver_preload(["torch", "torch.distributed", __name__] + (
                ["torch.distributed.tensor"] if self.dtensor else []))
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
            elif status == "timeout":
                errors[rank] = TargetTimeout(*payload[:2])
                errors[rank].waiting = payload[2]     # only waits for a peer in a collective
            elif status in (kind, "ready"):
                got[rank] = payload
        return got, errors

    def run(self, target, kind, cases, claim=None, convention="local", kwargs=None,
            scale="keller", timeout=None):
        """Every rank's local results for ``cases``: (outputs[case][rank], errors, seconds).

        ``timeout``: seconds each rank's call of the target (and its import) may take (None:
        no deadline); a rank past it is an error that is a :class:`TargetTimeout` naming the
        case and the rank, and the ranks are ended (the hung call cannot be interrupted) and
        respawned on the next call."""
        if self._procs is None:
            self._start()
        claim = claim or ShardedClaim("whiten")
        tid = next(self._ids)
        for q in self._tasks:
            q.put(("run", tid, target, kind, cases, claim, convention, kwargs, scale, timeout))
        # a rank blocked in a collective whose peer raised gets the group's timeout error;
        # without a per-call deadline a rank may compute for as long as it needs
        wait = self.timeout_s * 2 + 30
        wait = wait + (len(cases) + 1) * timeout if timeout else math.inf
        got, errors = self._collect(tid, wait)
        if errors or len(got) < self.world_size:
            for r in range(self.world_size):
                if r not in got and r not in errors:
                    errors[r] = (f"no answer within {wait:.0f} s (hang: a collective not "
                                 "entered by every rank?); rank terminated")
            if any(isinstance(e, TargetTimeout) for e in errors.values()):
                self.close(force=True)
            else:
                self._recover(got, errors)
            return None, errors, 0.0
        outs = [[got[r][0][i] for r in range(self.world_size)] for i in range(len(cases))]
        return outs, {}, max(got[r][1] for r in range(self.world_size))

    def references(self, claim, n_cases, timeout_s=3600.0):
        """The judging facts of the last run's cases (:func:`judge_pack`), case ``i`` computed
        by rank ``i % world`` (all ranks in parallel; on the GPU for CUDA ranks): ``{i: pack}``
        and the slowest rank's seconds; ``None`` for any case a rank could not compute."""
        tid = next(self._ids)
        for r, q in enumerate(self._tasks):
            q.put(("refs", tid, claim, list(range(r, n_cases, self.world_size))))
        got, errors = self._collect(tid, timeout_s)
        packs = {}
        for r, (part, _) in got.items():
            packs.update(part)
        secs = max((got[r][1] for r in got), default=0.0)
        return [packs.get(i) for i in range(n_cases)], secs

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
                  timeout_s=30.0, target_name=None, input_dtype=None, reduce_dtype=None,
                  split=None, mesh=None, convention="local", kwargs=None, scale="keller",
                  judge_on_ranks=None, timeout=DEFAULT_TIMEOUT_S) -> CheckReport:
    """Run a sharded implementation on ``world_size`` spawned ranks and judge it.

    ``target``: ``'module:function'`` / ``'file.py:function'`` (loaded in every rank) or a
    picklable callable, called as ``convention`` says (``local``: ``fn(local_shard, group=...,
    layout=..., **kwargs)``; ``dtensor``: ``fn(dtensor, **kwargs)``; ``optimizer``: an optimizer
    class built over one DTensor parameter, see :mod:`swanref.verify.sharded.calling`).
    ``split``: ``tensor_split`` or ``chunk`` (default: ``chunk`` for the DTensor conventions,
    as DTensor and FSDP2 shard; ``tensor_split`` otherwise); ``mesh``: ``(a, b)`` for layout
    ``grid``.  ``pool``: a :class:`RankPool` to reuse (its world size and backend win);
    otherwise one is started and closed here.  ``timeout_s``: the process group's collective
    timeout.  ``timeout``: seconds each rank's call of the target (and the target's import)
    may take (default 60, as ``swanref.check``; None or 0: no deadline); a call past it makes
    the report's outcome TIMEOUT (exit 5), naming the case and the rank.  ``judge_on_ranks``: compute the unsharded references on the ranks, in parallel
    (on their GPUs in float64 where the shards are CUDA tensors) instead of here; default:
    for matrices of at least ``RANK_JUDGING_SIZE`` entries (below it, loading swanref's core
    in every rank costs more than it saves).
    """
    world = pool.world_size if pool is not None else int(world_size)
    claim = _claim(op, dtype, method, steps, beta, scaling, preset, eps, input_dtype,
                   reduce_dtype, split, mesh, layout, world, convention, scale)
    if kind_err := _layout_error(layout, shape, world, claim):
        raise UsageError(kind_err)
    timeout = _call_timeout(timeout)
    _check_target(target, timeout)
    own = pool is None
    pool = pool or RankPool(world_size, backend, timeout_s, dtensor=convention != "local")
    cases = sharded_inputs(claim, layout, world, shape, seed, params)
    packs, ref_secs = None, 0.0
    try:
        outs, errors, secs = pool.run(target, layout, cases, claim, convention, kwargs, scale,
                                      timeout)
        if judge_on_ranks is None:
            judge_on_ranks = math.prod(shape) >= RANK_JUDGING_SIZE
        if outs is not None and judge_on_ranks:
            packs, ref_secs = pool.references(claim, len(cases))
    finally:
        if own:
            pool.close()
    name = target_name or (target if isinstance(target, str) else
                           getattr(target, "__qualname__", repr(target)))
    t0 = time.perf_counter()
    refs = svs = None
    if packs is not None:
        packs = [p if p is not None else judge_pack(claim, c.G) for p, c in zip(packs, cases)]
        refs, svs = [p["ref"] for p in packs], [p["sv"] for p in packs]
    report = evaluate(claim, layout, world, cases, outs, errors, name, secs, pool.backend,
                      refs=refs, svs=svs)
    judged = time.perf_counter() - t0
    report.hints.append(
        f"timing: ranks {secs:.2g} s, references on the ranks {ref_secs:.2g} s, judging "
        f"{judged:.2g} s" if packs else
        f"timing: ranks {secs:.2g} s, references and judging {judged:.2g} s")
    return report


def _claim(op, dtype, method, steps, beta, scaling, preset, eps, input_dtype, reduce_dtype,
           split, mesh, layout, world, convention, scale):
    if convention not in CONVENTIONS:
        raise UsageError(f"--convention must be one of {', '.join(CONVENTIONS)}")
    if convention == "replicated":
        if layout != "stack":
            raise UsageError("--convention replicated steps a list of whole parameters, the "
                             "same on every rank: use --shard stack")
    elif convention != "local":
        if layout == "flat":
            raise UsageError("layout flat is FSDP1's flat parameter; a DTensor/FSDP2 "
                             "parameter is sharded by rows (Shard(0)): use --shard rows")
        if split == "tensor_split":
            raise UsageError("DTensor shards by torch.chunk: --split tensor_split cannot be "
                             "used with the dtensor/optimizer conventions")
        split = "chunk"
    if convention in ("optimizer", "replicated"):
        try:
            resolve_scale(scale)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--update-scale: {exc}") from None
    if layout == "grid":
        mesh = parse_mesh(mesh if mesh is not None else (world, 1), world)
    elif mesh is not None:
        raise UsageError("--mesh applies to layout grid only")
    return ShardedClaim(op, dtype, method, steps, beta, scaling, preset, eps, input_dtype,
                        reduce_dtype, split or "tensor_split", mesh).validate()


def _call_timeout(timeout):
    """The per-call deadline in seconds, or None (None or 0: no deadline)."""
    if timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                           and timeout == 0):
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def _check_target(target, timeout=None):
    """Fail early (UsageError) on a target the ranks could not load or receive; its import
    here runs under the per-call deadline (TargetTimeout)."""
    if isinstance(target, str):
        runner = TargetRunner(timeout) if timeout else None
        try:
            load_target(target, runner)
        finally:
            if runner is not None:
                runner.close()
        return
    if not callable(target):
        raise UsageError(f"target must be callable or 'module:function', got {target!r}")
    try:
        pickle.dumps(target)
    except Exception as exc:  # noqa: BLE001 - lambdas, closures, local functions
        raise UsageError(f"target {getattr(target, '__qualname__', target)!r} cannot be sent "
                         f"to the ranks ({type(exc).__name__}: {exc}); pass 'module:function' "
                         "or 'file.py:function'") from None


def _layout_error(layout, shape, world, claim=None):
    if layout not in LAYOUTS:
        return f"--shard must be one of {', '.join(LAYOUTS)}"
    if len(shape) != 2:
        return "shape must be (m, n)"
    if layout in ("rows", "cols") and min(shape) < world and \
            (claim is None or claim.split == "tensor_split"):
        return (f"shape {tuple(shape)} has fewer rows or columns than {world} ranks "
                "(--split chunk gives the last ranks empty shards)")
    return None


def check_in_group(fn, op="whiten", *, layout="rows", group=None, shape=(16, 32), params=None,
                   dtype="float64", method="svd", steps=None, beta=None, scaling=None,
                   preset=None, eps=0.0, seed=0, device=None, input_dtype=None,
                   reduce_dtype=None, split=None, mesh=None, convention="local", kwargs=None,
                   scale="keller") -> CheckReport:
    """The same check inside an existing job (torchrun): call it on every rank of ``group``
    (default: the world).  Every rank builds the same inputs, runs ``fn`` on its shard, the
    local results are all-gathered, every rank computes the references of its share of the
    cases (case ``i`` on rank ``i % world``), those are all-gathered too, and every rank
    returns the same report.  The DTensor conventions build their device mesh on the world.

    A rank whose ``fn`` raises reports the exception, but its peers may be blocked inside
    ``fn``'s collectives: only the group's own timeout (``init_process_group(timeout=...)``)
    ends that.  There is no per-call deadline here (``check_sharded``'s ``timeout=``): a call
    left hanging inside the job's own process group could not be stopped.
    """
    import torch
    import torch.distributed as dist
    group = group or dist.group.WORLD
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    claim = _claim(op, dtype, method, steps, beta, scaling, preset, eps, input_dtype,
                   reduce_dtype, split, mesh, layout, world, convention, scale)
    if kind_err := _layout_error(layout, shape, world, claim):
        raise UsageError(kind_err)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend(group) == "nccl" else torch.device("cpu")
    cases = sharded_inputs(claim, layout, world, shape, seed, params)
    t0 = time.perf_counter()
    try:
        mine = ("ok", run_cases(fn, layout, cases, rank, world, group, device, claim,
                                convention, kwargs, scale))
    except Exception as exc:  # noqa: BLE001 - every rank learns of it
        mine = ("error", f"{type(exc).__name__}: {exc}")
    gathered = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    seconds = time.perf_counter() - t0
    errors = {r: g[1] for r, g in enumerate(gathered) if g[0] == "error"}
    outs = refs = svs = None
    if not errors:
        outs = [[gathered[r][1][i] for r in range(world)] for i in range(len(cases))]
        share = {i: judge_pack(claim, cases[i].G, device)
                 for i in range(rank, len(cases), world)}
        parts = [None] * world
        dist.all_gather_object(parts, share, group=group)
        packs = [next(p[i] for p in parts if i in p) for i in range(len(cases))]
        refs, svs = [p["ref"] for p in packs], [p["sv"] for p in packs]
    return evaluate(claim, layout, world, cases, outs, errors,
                    getattr(fn, "__qualname__", repr(fn)), seconds,
                    dist.get_backend(group), refs=refs, svs=svs)


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
                            "across processes. Exit 0 conforming, 1 not, 2 usage error, 3 "
                            "inconclusive (no property judged), 4 the target exited, 5 "
                            "timeout.")
    p.add_argument("op", choices=OPS, metavar="OP", help=f"the operator: {', '.join(OPS)}")
    p.add_argument("target", metavar="TARGET",
                   help="the sharded implementation, module:function or file.py:function")
    p.add_argument("--method", default="svd",
                   help="whiten, swan_update: the claimed reading, svd (default), eigh or "
                        "newton_schulz (as in swanref check)")
    p.add_argument("--steps", type=int, default=None,
                   help="newton_schulz: iteration count (default 10); --preset: polynomial "
                        "steps (default: the preset's)")
    p.add_argument("--beta", type=float, default=None,
                   help="newton_schulz: step size (default 0.5)")
    p.add_argument("--scaling", default=None,
                   help="newton_schulz: initial scaling (default gram_fro)")
    p.add_argument("--preset", default=None,
                   help="whiten: claim a named orthogonalisation preset (swanref check "
                        "--list-presets)")
    p.add_argument("--eps", type=float, default=0.0,
                   help="grad_norm, swan_update: eps added to the variance (default 0)")
    p.add_argument("--dtype", default="float64",
                   help="dtype of the shards and the precision claimed (default float64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the drawn inputs (default 0)")
    p.add_argument("--json", action="store_true",
                   help="the report as JSON on stdout")
    p.add_argument("--input-dtype", default=None,
                   help="dtype of the shards handed to the target (default: --dtype)")
    p.add_argument("--reduce-dtype", default=None,
                   help="precision the target's all-reduces run in (default: --dtype)")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="how an axis is cut over the ranks: tensor_split (3,3,2,2 for 10 rows "
                        "on 4 ranks) or chunk (3,3,3,1: DTensor Shard, FSDP2); default "
                        "tensor_split, chunk for the DTensor conventions")
    p.add_argument("--mesh", default=None,
                   help="2-D device mesh AxB for --shard grid (rows over A, columns over B)")
    p.add_argument("--convention", choices=CONVENTIONS, default="local",
                   help="how the target is called: local (fn(shard, group=, layout=)), "
                        "dtensor (fn(DTensor)), optimizer (an optimizer class stepped on one "
                        "DTensor parameter), replicated (--shard stack: an optimizer class "
                        "stepped on whole parameters, the same on every rank)")
    p.add_argument("--kwarg", action="append", default=[], metavar="NAME=VALUE",
                   help="keyword argument for the target (repeatable); VALUE is a Python "
                        "literal, a dotted name such as torch.bfloat16, or a string")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="the longest one rank's call of the target (or its import) may take; "
                        "past it the check stops with outcome TIMEOUT (exit 5) naming the "
                        f"case and the rank (default {DEFAULT_TIMEOUT_S:g}; 0: no deadline; "
                        "--dist-timeout bounds the collectives)")
    p.add_argument("--update-scale", default="keller",
                   help="optimizer convention: the scale rule the step applies (spec 9.1)")
    add_claim_arguments(p, preset=False)
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


def _cli_claim(args) -> dict:
    """The claim's options: the sharded options, then ``--claim FILE`` and each ``--set``
    (docs/spec.md 11.5) when given."""
    opts = dict(op=args.op, dtype=str(args.dtype), method=args.method, steps=args.steps,
                beta=args.beta, scaling=args.scaling, preset=args.preset, eps=args.eps,
                input_dtype=getattr(args, "input_dtype", None),
                reduce_dtype=getattr(args, "reduce_dtype", None),
                split=getattr(args, "split", None), mesh=getattr(args, "mesh", None))
    if getattr(args, "claim", None) is None and not getattr(args, "set_knobs", None):
        return opts
    base = {"level": "sharded", "op": args.op, "compute_dtype": opts["dtype"]}
    if args.preset is not None:
        base["preset"] = args.preset
    elif args.op == "whiten":
        base["method"] = args.method
    for key, knob in (("steps", "steps"), ("beta", "beta"), ("scaling", "scaling"),
                      ("input_dtype", "io_dtype"), ("reduce_dtype", "reduce_dtype"),
                      ("split", "shard_split")):
        if opts[key] is not None:
            base[knob] = opts[key]
    if opts["mesh"] is not None:
        try:
            base["mesh"] = tuple(int(v) for v in str(opts["mesh"]).lower().split("x"))
        except ValueError:
            raise UsageError(f"--mesh must be AxB, got {opts['mesh']!r}") from None
    if args.op == "grad_norm" and args.eps:
        base["eps"] = args.eps
    sc = ShardedClaim.from_claim(claim_from_args(args, base, preset=False))
    return dict(op=sc.op, dtype=sc.dtype, method=sc.method, steps=sc.steps, beta=sc.beta,
                scaling=sc.scaling, preset=sc.preset, eps=sc.eps, input_dtype=sc.input_dtype,
                reduce_dtype=sc.reduce_dtype, mesh=sc.mesh,
                # the claim's default split leaves the convention's default (chunk for DTensor)
                split=sc.split if opts["split"] is not None or sc.split != "tensor_split"
                else None)


def _cli_check(args):
    c = _cli_claim(args)
    return check_sharded(args.target, c.pop("op"), layout=args.shard,
                         world_size=args.world_size or 2, backend=args.dist_backend,
                         shape=args.shape, seed=args.seed, timeout_s=args.dist_timeout, **c,
                         convention=getattr(args, "convention", "local"),
                         kwargs=parse_kwargs(getattr(args, "kwarg", [])),
                         scale=getattr(args, "update_scale", "keller"),
                         timeout=getattr(args, "timeout", DEFAULT_TIMEOUT_S))


def parse_kwargs(items) -> dict:
    """``NAME=VALUE`` options as typed keyword arguments: a Python literal (numbers, strings,
    tuples, lists, dicts, True/None), else a dotted importable name (``torch.bfloat16``,
    ``math.pi``), else the string itself."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--kwarg must be NAME=VALUE with NAME an identifier, got {item!r}")
        out[name] = _typed(text)
    return out


def _typed(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    mod, dot, attr = text.rpartition(".")
    if dot and mod and all(p.isidentifier() for p in text.split(".")):
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            pass
    return text


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
    except (TargetAborted, TargetTimeout) as exc:
        # the same outcomes and exit codes as swanref check (docs/verification.md)
        outcome = "TARGET EXITED" if isinstance(exc, TargetAborted) else "TIMEOUT"
        print(f"swanref check-sharded: {outcome}: {exc}", file=sys.stderr)
        return EXIT_CODES[outcome]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
