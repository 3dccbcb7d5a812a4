"""``swanref conformance``: run swanref's checks over the installed third-party implementations.

Each entry names a package, an implementation and the claim it is checked under, at one of
four levels: ``operator`` (``swanref check whiten/grad_norm``), ``update`` (``swanref check
update`` under a claim: ``--preset X --set k=v``), ``optimizer`` (``swanref check-optimizer
pkg.module:Class`` by import path) and ``sharded`` (``swanref check-sharded`` on real gloo
ranks: the rows of :mod:`swanref.verify.sharded.table`, real sharded code and planted bugs at
world sizes 1, 2 and 4).  Entries whose package is not installed (or needs another Python) are
listed as absent.

A row: implementation and version, the claim as the one-line options a user would type, the
dtype, the verdict and the one the source predicts, the worst error against its tolerance, and
the named cause where not conforming.  ``--store`` writes the rows of this environment to
``docs/data/conformance-pyXY.json``; ``--markdown DOC`` renders the document's generated
tables from every stored environment (swanref.verify.conformance_docs), and ``--python
PYTHON`` first runs the entries this interpreter cannot (emerging-optimizers: Python >= 3.12)
in that interpreter.  ``--timeout SECONDS``: each call of the implementation (its import,
construction, step or call, on every rank) gets that deadline, as each level's check applies it
(an optimizer row as a whole also ``ROW_CALLS`` times it); a hung implementation is a TIMEOUT
row.

The optional extra ``conformance`` installs the CPU packages.  Exit status: 0 when every
present entry's verdict is the expected one, 1 otherwise, 2 on usage errors.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from swanref.verify import checker
from swanref.verify import conformance_docs as docs
from swanref.verify import optimizer as opt
from swanref.verify.sharded import table as sharded_table
from swanref.verify.checker import DEFAULT_TIMEOUT_S, UsageError, check
from swanref.verify.claims import Claim, add_claim_arguments, claim_from_args
from swanref.verify.targets import (FirstCallTimer, TargetRunner, TargetTimeout,
                                    seconds_argument)

__all__ = ["ENTRIES", "Entry", "Row", "run", "markdown", "main", "claim_text"]


@dataclass
class Entry:
    package: str                 # distribution name (for the version)
    module: str                  # import name checked for presence
    function: str                # what is shown in the table
    claim: dict                  # keywords of swanref.verify.checker.check
    build: object                # () -> callable(array) -> array
    expect: str = "CONFORMING"   # the verdict the source reading predicts (docs/conformance.md)
    why: str = ""                # the reading of the source behind ``expect``
    python: tuple = (3, 9)


# -- adapters: each returns a callable taking the array type of its claim -----------------------

def _torch_muon():
    from torch.optim._muon import _zeropower_via_newtonschulz

    def fn(G):
        return _zeropower_via_newtonschulz(G, (3.4445, -4.775, 2.0315), 5, 1e-7)
    return fn


def _torch_muon_update(adjust_lr_fn=None):
    """torch.optim.Muon's update of a 2-D parameter on a step with neutral momentum: its
    orthogonaliser, the parameter's dtype (p.add_ casts), its learning-rate adjustment."""
    from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

    def fn(G):
        O = _zeropower_via_newtonschulz(G, (3.4445, -4.775, 2.0315), 5, 1e-7)
        return O.to(G.dtype) * _adjust_lr(1.0, adjust_lr_fn, G.shape)
    return fn


def _ptopt_update(use_adjusted_lr=False):
    """pytorch-optimizer's Muon update: (out, -1) view, zero_power_via_newton_schulz_5 (bf16),
    back to the parameter's shape and dtype, times get_adjusted_lr."""
    from pytorch_optimizer.optimizer.muon.base import get_adjusted_lr
    from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5

    def fn(G):
        O = zero_power_via_newton_schulz_5(G.reshape(G.shape[0], -1))
        return O.reshape(G.shape).to(G.dtype) * get_adjusted_lr(1.0, tuple(G.shape),
                                                                use_adjusted_lr)
    return fn


def _optax(ns_steps=5):
    import jax
    import jax.numpy as jnp
    from optax.contrib._muon import orthogonalize_via_newton_schulz
    coeffs = jnp.array([3.4445, -4.7750, 2.0315])

    def fn(G):
        return orthogonalize_via_newton_schulz(G, coeffs, ns_steps=ns_steps)
    # jitted, as optax's update runs in training: one compilation per probe shape and dtype
    # instead of op-by-op dispatch (the eager run took 5x the CPU time, same verdicts and
    # distances; docs/conformance.md)
    return jax.jit(fn)


def _ptopt(**kw):
    from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5

    def fn(G):
        return zero_power_via_newton_schulz_5(G, **kw)
    return fn


def _ptopt_pe_float32():
    import torch
    return _ptopt(weights="polar_express", num_steps=8, dtype=torch.float32)


def _ptopt_pe_float64():
    import torch
    return _ptopt(weights="polar_express", num_steps=8, dtype=torch.float64)


def _heavyball(name, **kw):
    import heavyball.utils as hu
    hu.compile_mode = None      # eager: the compiled default recompiles per shape
    f = getattr(hu, name)

    def fn(G):
        return f(G, **kw)
    return fn


def _emerging(**kw):
    from emerging_optimizers.orthogonalized_optimizers.muon_utils import newton_schulz

    def fn(G):
        return newton_schulz(G, **kw)
    return fn


def _scipy_polar():
    import scipy.linalg

    def fn(G):
        side = "right" if G.shape[-2] <= G.shape[-1] else "left"
        return scipy.linalg.polar(G, side=side)[0]
    return fn


def _textbook_grad_norm():
    def fn(G):
        G = np.asarray(G)
        mu = G.mean(axis=-1, keepdims=True)
        c = G - mu
        const = np.ptp(G, axis=-1, keepdims=True) == 0
        c = np.where(const, 0, c)
        v = np.mean(c * c, axis=-1, keepdims=True)
        return np.where(const, 0, c / np.sqrt(np.where(const, 1, v))).astype(G.dtype)
    return fn


_T = {"array_type": "torch"}
_J = {"array_type": "jax", "shapes": "few"}

ENTRIES = [
    Entry("torch", "torch", "torch.optim._muon._zeropower_via_newtonschulz",
          dict(op="whiten", preset="torch_muon", dtype="bfloat16", **_T), _torch_muon,
          expect="NOT CONFORMING",
          why="bf16, clamp 1e-7, addmm; 2-D only (batch unsupported); a bf16 input is "
              "divided in place (grad.bfloat16() is the input itself): input_not_modified"),
    Entry("torch", "torch", "torch.optim._muon._zeropower_via_newtonschulz",
          dict(op="whiten", preset="torch_muon", dtype="float32", **_T), _torch_muon,
          expect="NOT CONFORMING", why="computes in bfloat16 whatever the input dtype"),
    Entry("optax", "optax", "optax.contrib._muon.orthogonalize_via_newton_schulz",
          dict(op="whiten", preset="optax_muon", dtype="float32", **_J), _optax,
          why="input dtype, add 1e-8, Keller x5; 2-D only without dimension_numbers"),
    Entry("optax", "optax", "optax.contrib._muon.orthogonalize_via_newton_schulz",
          dict(op="whiten", preset="optax_muon", dtype="float64", **_J), _optax,
          why="float64 with jax_enable_x64"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "pytorch_optimizer...zero_power_via_newton_schulz_5 (defaults)",
          dict(op="whiten", preset="torch_muon", dtype="bfloat16", **_T), lambda: _ptopt(),
          why="Keller x5, clamp 1e-7, addmm, bf16 (its dtype argument)"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "...zero_power_via_newton_schulz_5(weights='polar_express', num_steps=8, "
          "dtype=float32)",
          dict(op="whiten", preset="ptopt_polar_express", dtype="float32", **_T),
          _ptopt_pe_float32, why="its own PE table, clamp 1e-7, no factor on the norm"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "...zero_power_via_newton_schulz_5(weights='polar_express', num_steps=8, "
          "dtype=float64)",
          dict(op="whiten", preset="polar_express", dtype="float64", **_T),
          _ptopt_pe_float64, expect="NOT CONFORMING",
          why="a different table from polar_express's (0.66% at kappa 1e4)"),
    Entry("heavyball", "heavyball", "heavyball.utils.msign(steps=10)",
          dict(op="whiten", preset="heavyball_msign", dtype="float64", **_T),
          lambda: _heavyball("msign", steps=10),
          why="float64 runs exactly (no stochastic rounding)"),
    Entry("heavyball", "heavyball", "heavyball.utils.msign(steps=10)",
          dict(op="whiten", preset="polar_express", dtype="float64", **_T),
          lambda: _heavyball("msign", steps=10), expect="NOT CONFORMING",
          why="10 steps and no 1.01 on the norm (17.5% at kappa 1e4)"),
    Entry("heavyball", "heavyball", "heavyball.utils.zeropower_via_newtonschulz5",
          dict(op="whiten", preset="you_ns5", dtype="float64", **_T),
          lambda: _heavyball("zeropower_via_newtonschulz5"), expect="NOT CONFORMING",
          why="clamp 1e-7 instead of add 1e-7 (You's table, horner form)"),
    Entry("heavyball", "heavyball", "heavyball.utils.zeropower_via_newtonschulz5",
          dict(op="whiten", preset="you_ns5", dtype="float32", **_T),
          lambda: _heavyball("zeropower_via_newtonschulz5"), expect="NOT CONFORMING",
          why="float32 input is stochastically rounded to bf16 and iterated in bf16"),
    Entry("emerging-optimizers", "emerging_optimizers",
          "emerging_optimizers...muon_utils.newton_schulz('polar_express', steps=5)",
          dict(op="whiten", preset="emerging_polar_express", dtype="float32", **_T),
          lambda: _emerging(steps=5, coefficient_type="polar_express"), python=(3, 12),
          why="4-decimal PE table, clamp 1e-7, fp32"),
    Entry("emerging-optimizers", "emerging_optimizers",
          "emerging_optimizers...muon_utils.newton_schulz('polar_express', steps=5)",
          dict(op="whiten", preset="nemo_polar_express", dtype="float32", **_T),
          lambda: _emerging(steps=5, coefficient_type="polar_express"), python=(3, 12),
          expect="NOT CONFORMING",
          why="0.3.0 rounds the table to 4 decimals and uses eps 1e-7 (the preset: "
              "unreleased main, eps 1e-15)"),
    Entry("emerging-optimizers", "emerging_optimizers",
          "emerging_optimizers...muon_utils.newton_schulz('quintic', steps=5)",
          dict(op="whiten", preset="you_ns5", dtype="float32", **_T),
          lambda: _emerging(steps=5, coefficient_type="quintic"), python=(3, 12),
          expect="NOT CONFORMING", why="clamp 1e-7 instead of add 1e-7"),
    Entry("scipy", "scipy", "scipy.linalg.polar",
          dict(op="whiten", method="svd", full_rank_only=True), _scipy_polar,
          why="exact polar factor; a rank-deficient input gets a unitary completion"),
    Entry("scipy", "scipy", "scipy.linalg.polar",
          dict(op="whiten", method="svd"), _scipy_polar, expect="NOT CONFORMING",
          why="rank-deficient/zero input: unitary completion, not the partial isometry "
              "U_r V_r^T of spec 3.1"),
    # -- the update level (spec 9, claims of spec 11): what the optimizer adds times -lr.  The
    # claim is what `swanref check update TARGET --preset X --set k=v` reads (claim_from_args)
    Entry("torch", "torch", "torch.optim.Muon update (orthogonaliser, adjust_lr_fn=None)",
          dict(op="update", preset="torch_muon",
               sets=dict(compute_dtype="bfloat16", nd="2d_only"), **_T),
          _torch_muon_update, why="bf16, clamp 1e-7 on the raw gradient, Keller's "
          "sqrt(max(1, A/B)); 2-D parameters only (the optimizer refuses others)"),
    Entry("torch", "torch", "torch.optim.Muon update (adjust_lr_fn='match_rms_adamw')",
          dict(op="update", preset="torch_muon",
               sets=dict(compute_dtype="bfloat16", nd="2d_only", scale="moonlight"), **_T),
          lambda: _torch_muon_update("match_rms_adamw"), why="0.2 sqrt(max(A, B))"),
    Entry("torch", "torch", "torch.optim.Muon update (orthogonaliser, adjust_lr_fn=None)",
          dict(op="update", preset="torch_muon",
               sets=dict(compute_dtype="float32", nd="2d_only"), **_T),
          _torch_muon_update, expect="NOT CONFORMING",
          why="computes in bfloat16 whatever the input dtype"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "Muon update (zero_power_via_newton_schulz_5, get_adjusted_lr)",
          dict(op="update", preset="torch_muon", sets=dict(compute_dtype="bfloat16"), **_T),
          _ptopt_update,
          why="(out, -1) view, bf16, clamp 1e-7, Keller's factor on the flattened shape"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "Muon update (use_adjusted_lr=True)",
          dict(op="update", preset="torch_muon", sets=dict(compute_dtype="bfloat16"), **_T),
          lambda: _ptopt_update(True), expect="NOT CONFORMING",
          why="Moonlight's 0.2 sqrt(max(out, in)) under a Keller claim: the scale is named"),
    # the packages' orthogonalisers alone: no scale factor (scale=none)
    Entry("optax", "optax", "optax.contrib._muon.orthogonalize_via_newton_schulz",
          dict(op="update", preset="optax_muon",
               sets=dict(compute_dtype="float32", nd="2d_only", scale="none"),
               array_type="jax"),
          _optax, why="input dtype, add 1e-8, Keller x5; 2-D only without dimension_numbers"),
    Entry("heavyball", "heavyball", "heavyball.utils.zeropower_via_newtonschulz5",
          dict(op="update", preset="heavyball_ns5",
               sets=dict(compute_dtype="float64", nd="batch_leading", scale="none"), **_T),
          lambda: _heavyball("zeropower_via_newtonschulz5"),
          why="float64 runs exactly; You's table, clamp 1e-7, P X form"),
    Entry("heavyball", "heavyball", "heavyball.utils.msign(steps=10)",
          dict(op="update", preset="heavyball_msign",
               sets=dict(compute_dtype="float64", nd="batch_leading", scale="none"), **_T),
          lambda: _heavyball("msign", steps=10),
          why="polar_express's table, clamp 1e-7, no 1.01, 10 steps"),
    Entry("emerging-optimizers", "emerging_optimizers",
          "emerging_optimizers...muon_utils.newton_schulz('quintic', steps=5)",
          dict(op="update", preset="you_ns5",
               sets=dict(compute_dtype="float32", io_dtype="float32", eps_form="clamp",
                         nd="2d_only", scale="none"), **_T),
          lambda: _emerging(steps=5, coefficient_type="quintic"), python=(3, 12),
          why="F.normalize: clamp 1e-7 (you_ns5 adds it), You's quintic table, float32 only "
              "(a TypeError otherwise: io_dtype=float32)"),
    Entry("numpy", "numpy", "textbook two-pass GradNorm (constant rows -> 0)",
          dict(op="grad_norm"), _textbook_grad_norm,
          why="within spec 8.1's offset term; advisory offset_robustness warns"),
    # -- the optimizer level: `swanref check-optimizer IMPORT:PATH ARGS` (docs/optimizers.md)
    Entry("torch", "torch", "torch.optim:Muon",
          dict(op="optimizer", args="--preset torch_muon --precision bfloat16"), None,
          why="torch_muon in bf16, Keller's _adjust_lr, Sutskever Nesterov; 2-D only"),
    Entry("torch", "torch", "torch.optim:Muon",
          dict(op="optimizer", args="--preset torch_muon --precision bfloat16 --scale "
                                    "moonlight --kwarg adjust_lr_fn='match_rms_adamw'"), None,
          why="Moonlight's 0.2 sqrt(max(A, B))"),
    Entry("torch", "torch", "torch.optim:Muon",
          dict(op="optimizer", args="--preset torch_muon --precision float32"), None,
          expect="NOT CONFORMING", why="computes in bfloat16 whatever the parameter dtype"),
    Entry("optax", "optax", "optax.contrib:muon",
          dict(op="optimizer", args="--preset optax_muon --precision float32 --scale keller_t "
                                    "--set nesterov_variant=optax --set nd=routed"), None,
          why="input dtype, add 1e-8, fan_in = axis 0 (keller_t), bias-corrected Nesterov, "
              "N-D leaves to AdamW"),
    Entry("pytorch-optimizer", "pytorch_optimizer", "pytorch_optimizer:Muon",
          dict(op="optimizer", args="--preset torch_muon --precision bfloat16"), None,
          why="bf16, clamp 1e-7, Keller's scale on (out, -1), Sutskever Nesterov"),
    Entry("pytorch-optimizer", "pytorch_optimizer", "pytorch_optimizer:AdaMuon",
          dict(op="optimizer", args="--preset torch_muon --precision bfloat16 --scale "
                                    "moonlight --set second_moment=adamuon --set nesterov=off"),
          None, why="AdaMuon's second moment on the orthogonalised update, Moonlight's scale"),
    Entry("pytorch-optimizer", "pytorch_optimizer", "pytorch_optimizer:NorMuon",
          dict(op="optimizer", args="--preset torch_muon --precision bfloat16 "
                                    "--set norm_axis=rows"), None,
          why="per-row RMS after orthogonalising, re-matched to ||O||_F"),
    Entry("heavyball", "heavyball", "heavyball:Muon",
          dict(op="optimizer", args="--preset heavyball_ns5 --precision float32 "
                                    "--set io_dtype=float64 --set nesterov_variant=grokfast"),
          None, why="float64 parameters iterate exactly, stored in float32; grokfast Nesterov"),
    Entry("heavyball", "heavyball", "heavyball:Muon",
          dict(op="optimizer", args="--preset heavyball_ns5 --precision float32 "
                                    "--set io_dtype=float64 --set nesterov_variant=grokfast "
                                    "--set complex=true"),
          None, expect="NOT CONFORMING",
          why="complex parameters are accepted and their imaginary part dropped (a real "
              "bug: complex_input fails)"),
    Entry("emerging-optimizers", "emerging_optimizers", "emerging_optimizers.orthogonalized_optimizers:Muon",
          dict(op="optimizer", args="--preset you_ns5 --precision bfloat16 --scale unit_rms"),
          None, python=(3, 12),
          why="scale_mode='spectral' = sqrt(max(m, n)), fp32_matmul_prec='medium' (bf16), "
              "You's quintic"),
]

#: an optimizer row's deadline as a whole, in --timeout units (a net under check_target's own
#: per-call deadline; heavyball.Muon's check takes 30 s on 2 shared cores)
ROW_CALLS = 10

_LEVEL_OF_OP = {"update": "update", "optimizer": "optimizer"}


def level_of(entry) -> str:
    """The entry's level: 'operator', 'update' or 'optimizer' (the sharded rows are
    :func:`sharded_rows`)."""
    return _LEVEL_OF_OP.get(entry.claim.get("op"), "operator")


@dataclass
class Row:
    package: str
    version: str
    function: str
    claim: str
    verdict: str
    expected: str
    diagnosis: str
    seconds: float
    details: dict = field(default_factory=dict)
    #: JAX rows: seconds of the first call per (shape, dtype) (trace + compile + run), of the
    #: repeated calls, and the number of distinct (shape, dtype) signatures
    first_call_seconds: float | None = None
    repeat_seconds: float | None = None
    signatures: int | None = None
    #: CPU seconds of this process during the row (every thread): on a shared machine the wall
    #: time of ``seconds`` also counts the waits for a core
    cpu_seconds: float | None = None
    level: str = "operator"
    dtype: str = "-"
    #: the largest error/tolerance ratio among the results that measured both
    worst: float | None = None
    tolerance: float | None = None
    worst_property: str = ""

    @property
    def time_text(self) -> str:
        text = f"{self.seconds:.1f} s"
        if self.cpu_seconds is not None:
            text += f", CPU {self.cpu_seconds:.1f} s"
        if self.signatures is not None:
            text += (f" (first call per shape and dtype {self.first_call_seconds:.1f} s for "
                     f"{self.signatures} shapes, repeats {self.repeat_seconds:.1f} s)")
        return text

    @property
    def as_expected(self) -> bool:
        return self.verdict in ("absent",) or self.verdict == self.expected

    @property
    def cause(self) -> str:
        """The named cause where the verdict is not CONFORMING (empty otherwise)."""
        return "" if self.verdict == "CONFORMING" else self.diagnosis

    def stored(self) -> dict:
        """The row as docs/data/conformance-pyXY.json keeps it."""
        return {"level": self.level, "implementation": self.function, "version": self.version,
                "claim": self.claim, "dtype": self.dtype, "verdict": self.verdict,
                "expected": self.expected, "worst": _sig(self.worst),
                "tolerance": _sig(self.tolerance), "worst_property": self.worst_property,
                "cause": self.cause, "seconds": round(self.seconds, 1)}


def _sig(x):
    """Three significant digits (the table's), None for missing or non-finite."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.3g}")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _flag(key, value) -> str:
    opt = "--" + key.replace("_", "-")
    return opt if value is True else f"{opt} {value}"


def claim_text(entry) -> str:
    """The claim as the options a user types after the target (one line)."""
    c = entry.claim
    level = level_of(entry)
    if level == "optimizer":
        return c["args"]
    if level == "update":
        return " ".join([f"--preset {c['preset']}"] +
                        [f"--set {k}={v}" for k, v in c["sets"].items()])
    skip = ("op", "array_type", "shapes")
    return " ".join([c["op"]] + [_flag(k, v) for k, v in c.items() if k not in skip])


def update_claim(entry) -> Claim:
    """The Claim ``swanref check update TARGET --preset X --set k=v ...`` reads."""
    c = entry.claim
    args = argparse.Namespace(claim=None, preset=c["preset"],
                              set_knobs=[f"{k}={v}" for k, v in c["sets"].items()])
    return claim_from_args(args, {"level": "update"})


def _dtype_of(entry) -> str:
    c, level = entry.claim, level_of(entry)
    if level == "update":
        return update_claim(entry).compute_dtype
    if level == "optimizer":
        words = c["args"].split()
        for opt in ("--precision", "--dtype"):
            if opt in words:
                d = words[words.index(opt) + 1]
                if "--input-dtype" in words:
                    d += f" (input {words[words.index('--input-dtype') + 1]})"
                return d
        return "float32"
    return c.get("dtype", "float64")


def _diagnosis(report) -> str:
    """One line: the preset diagnosis, failed properties, unsupported classes, suggestion."""
    parts = []
    for r in report.results:
        if r.name == "matches_preset":
            parts.append(r.message.splitlines()[0])
        elif r.status == "FAIL":
            cause = ""
            for mark in (" -- ", "; matches "):
                if mark in (r.message or ""):
                    cause = r.message.split(mark, 1)[1].strip()
                    cause = f" ({'matches ' if mark == '; matches ' else ''}{cause})"
                    break
            parts.append(f"FAIL {r.name}{cause}")
        elif r.status == "warn":
            parts.append(f"advisory {r.name}")
        elif r.status in ("timeout", "aborted"):
            parts.append(f"{r.status} {r.name}: {(r.message or '').splitlines()[0]}")
    unsup = [f"{r.name.replace('_probe', '')} unsupported ({r.exception or r.message})"
             for r in report.results if r.status == "unsupported"]
    parts += unsup
    if report.matches_preset:
        parts.append(f"matches preset {report.matches_preset['preset']!r}")
    return "; ".join(parts)


def _optimizer_diagnosis(report) -> str:
    parts = []
    for r in report.results:
        if r.status in ("FAIL", "error") or (r.status == "unsupported" and not r.explained):
            msg = (r.message or "").splitlines()[0] if r.message else ""
            parts.append(f"{r.status} {r.name}" + (f": {msg}" if msg else ""))
    return "; ".join(parts)


def _worst_of(results):
    """(error, tolerance, property) of the result with the largest error/tolerance."""
    best = None
    for r in results:
        e, t = getattr(r, "error", None), getattr(r, "tolerance", None)
        if e is None or t is None or not (math.isfinite(e) and math.isfinite(t)) or t <= 0:
            continue
        if getattr(r, "status", "") not in ("pass", "FAIL"):   # advisories carry no verdict
            continue
        if best is None or e / t > best[0] / best[1]:
            best = (e, t, r.name)
    return best or (None, None, "")


# -- running one entry per level ---------------------------------------------------------------

def _split_args(text):
    return shlex.split(text)


def _run_checker(e, fn, examples, timeout):
    """operator and update levels: swanref check under ``timeout`` per call."""
    kw = {k: v for k, v in e.claim.items() if k not in ("preset", "sets")
          or level_of(e) == "operator"}
    op = kw.pop("op")
    if op == "update":
        kw["claim"] = update_claim(e)
    else:
        kw["examples"] = examples
    with np.errstate(all="ignore"):
        report = check(fn, op, target_name=e.function, timeout=timeout, **kw)
    return report.outcome, _diagnosis(report), report.to_dict(), report.results


def _run_optimizer(e, timeout):
    """``swanref check-optimizer TARGET ARGS``: the claim parsed as its command line does."""
    p = argparse.ArgumentParser(prog="check-optimizer", add_help=False)
    p.add_argument("--kwarg", action="append", default=[])
    p.add_argument("--scale")
    p.add_argument("--precision")
    p.add_argument("--params", default="auto")
    add_claim_arguments(p)
    args = p.parse_args(_split_args(e.claim["args"]))
    base = {"level": "optimizer", "compute_dtype": args.precision or "float32"}
    if args.scale is not None:
        base["scale"] = args.scale
    claim = claim_from_args(args, base)
    kwargs = dict(opt.parse_kwarg(k) for k in args.kwarg)
    report = opt.check_target(e.function, claim, kwargs=kwargs, params=args.params,
                              timeout=timeout)
    verdict = report.outcome.upper()
    return verdict, _optimizer_diagnosis(report), report.to_dict(), report.results


def _environment() -> dict:
    pk = {p: _version(p) for p in sorted({e.package for e in ENTRIES} | {"jax", "swanref"})}
    return {"python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "packages": {k: v for k, v in pk.items() if v != "-"}}


def run(entries=None, examples=10, only=None, log=None, level=None,
        timeout=DEFAULT_TIMEOUT_S) -> list:
    """One Row per selected entry.  ``level``: one level name, a list of them, or None (all).
    ``timeout``: seconds per call of the implementation at every level (``ROW_CALLS`` times
    that per optimizer row as a whole); None: no deadline."""
    levels = None if level is None else ({level} if isinstance(level, str) else set(level))
    rows = []
    for e in (entries or ENTRIES):
        if only and e.package not in only and e.module not in only:
            continue
        if levels is not None and level_of(e) not in levels:
            continue
        rows.append(_run_entry(e, examples, timeout))
        if log:
            r = rows[-1]
            print(f"  [{r.level}] {r.package} {r.function} [{r.claim}]: {r.verdict} "
                  f"({r.time_text})", file=log, flush=True)
    # the sharded level: the sharded check's own rows (real sharded code, planted bugs)
    if entries is None and (levels is None or "sharded" in levels) and \
            (not only or "torch" in only):
        rows += sharded_rows(timeout, log)
    return rows


def sharded_rows(timeout=DEFAULT_TIMEOUT_S, log=None) -> list:
    """The sharded level: the rows of ``swanref.verify.sharded.table`` (every entry at world
    sizes 1, 2 and 4), as Rows; a planted bug's verdict and expected verdict carry the mistake
    named, so a right verdict with the wrong name is unexpected.  No torch: one absent row."""
    try:
        found = sharded_table.sharded_conformance_rows(timeout=timeout or None, log=log)
    except ImportError as exc:
        return [Row("torch", "-", "sharded implementations", "-", "absent", "CONFORMING",
                    f"not importable ({exc})", 0.0, level="sharded")]
    return [sharded_row(d) for d in found]


def sharded_row(d: dict) -> Row:
    """One Row of a ``sharded_conformance_rows`` dict."""
    verdict = d["verdict"] + (f" ({d['named']})" if d.get("named") else "")
    expected = d["expected"] + (f" ({d['expected_named']})" if d.get("expected_named") else "")
    if d["verdict"] != "absent" and not d.get("as_expected", True) and verdict == expected:
        verdict += " (not as expected)"
    ver = d.get("note", "") if d["source"] == "torch" else d["source"]
    diag = "; ".join(x for x in (f"names {d['named']}" if d.get("named") else "",
                                 d.get("note", "") if d["source"] != "torch" else "") if x)
    if d["verdict"] == "absent":
        ver, diag = "-", d.get("note", "")
    r = Row("torch", ver.replace("torch ", "") if d["source"] == "torch" else ver,
            f"{d['implementation']} -- {d['target']}",
            f"whiten {d['claim']} --world-size {d['world_size']}", verdict, expected, diag,
            d.get("seconds", 0.0), level="sharded", dtype=d["dtype"])
    r.worst, r.tolerance = d.get("error"), d.get("tolerance")
    r.worst_property = "agrees_with_unsharded" if r.worst is not None else ""
    return r


def _run_entry(e, examples, timeout):
    ctext, lv = claim_text(e), level_of(e)
    try:
        dtype = _dtype_of(e)
    except Exception as exc:  # noqa: BLE001 - a bad claim is the row's usage error
        dtype = f"? ({type(exc).__name__})"

    def row(version, verdict, diag, seconds, details=None):
        return Row(e.package, version, e.function, ctext, verdict, e.expect, diag, seconds,
                   details or {}, level=lv, dtype=dtype)

    if sys.version_info[:2] < e.python:
        return row("-", "absent", f"needs Python >= {'.'.join(map(str, e.python))}", 0.0)
    try:
        importlib.import_module(e.module)
    except Exception as exc:  # noqa: BLE001 - absent or broken install
        return row("-", "absent", f"not importable ({type(exc).__name__})", 0.0)
    if e.function.startswith("tests/") and not os.path.exists(e.function.split(":")[0]):
        return row("-", "absent", "run from the repository root (tests/ not found)", 0.0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    timed, results = None, []
    # the checks apply the deadline per call; an optimizer row as a whole gets ROW_CALLS times
    runner = TargetRunner(timeout if timeout is None or lv != "optimizer"
                          else timeout * ROW_CALLS)
    try:
        if lv in ("operator", "update"):
            fn = runner.run(e.build, where="building the target")
            if e.claim.get("array_type") == "jax":
                fn = timed = FirstCallTimer(fn)
            verdict, diag, details, results = _run_checker(e, fn, examples, timeout)
        else:
            verdict, diag, details, results = runner.run(_run_optimizer, e, timeout,
                                                         where="checking the optimizer")
    except TargetTimeout as exc:
        verdict, diag, details = "TIMEOUT", str(exc), {}
    except UsageError as exc:
        verdict, diag, details = "usage error", str(exc), {}
    except Exception as exc:  # noqa: BLE001 - reported in the table
        verdict, diag, details = "error", f"{type(exc).__name__}: {exc}", {}
    finally:
        runner.close()
    r = row(_version(e.package), verdict, diag, time.perf_counter() - t0, details)
    r.cpu_seconds = time.process_time() - cpu0
    r.worst, r.tolerance, r.worst_property = _worst_of(results)
    if timed is not None:
        r.first_call_seconds, r.repeat_seconds = timed.first, timed.rest
        r.signatures = len(timed.signatures)
    return r


def _rounded(x):
    return None if x is None else round(x, 2)


def markdown(rows) -> str:
    """The rows as the docs' tables render them (one table per level present)."""
    env = f"Python {platform.python_version()}"
    stored = [{**r.stored(), "environment": env} for r in rows]
    return "\n\n".join(docs.render_level(stored, lv) for lv in docs.LEVELS
                       if any(r["level"] == lv for r in stored))


# -- command line ------------------------------------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _levels(text):
    out = []
    for part in text.split(","):
        if part == "all":
            out += list(docs.LEVELS)
        elif part in docs.LEVELS:
            out.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"--level takes {', '.join(docs.LEVELS)} or all (comma-separated), got {part!r}")
    return tuple(dict.fromkeys(out))



def _command(argv) -> str:
    """The command line as the docs show it: no --root, the other interpreter as PYTHON3.12."""
    out, skip = ["swanref conformance"], None
    for a in argv:
        if skip:
            out += [] if skip == "--root" else ["PYTHON3.12"]
            skip = None
        elif a in ("--root", "--python"):
            skip = a
            out += [] if a == "--root" else [a]
        elif not a.startswith("--root="):
            out.append(a)
    return " ".join(out)


def _other_python(python, levels, args, store_root) -> int:
    """Run the entries this interpreter cannot in ``python`` (storing its rows there)."""
    need = {e.package for e in ENTRIES if sys.version_info[:2] < e.python
            and level_of(e) in levels}
    if not need:
        return 0
    cmd = [python, "-m", "swanref.cli", "conformance", "--level", ",".join(levels),
           "--examples", str(args.examples), "--timeout", str(args.timeout),
           "--store", "--root", str(store_root)]
    for pkg in sorted(need):
        cmd += ["--only", pkg]
    print(f"swanref conformance: running {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="swanref conformance",
        description="Check the installed third-party implementations (torch, optax, "
                    "pytorch-optimizer, heavyball, emerging-optimizers, scipy) at the "
                    "operator, update, optimizer and sharded levels; print the rows (markdown "
                    "or JSON), store them (--store) and render the docs' tables (--markdown). "
                    "Exit 0 when every present entry has its expected verdict.")
    p.add_argument("--examples", type=int, default=10,
                   help="hypothesis examples per generic property (default 10)")
    p.add_argument("--only", action="append", default=None, metavar="PACKAGE",
                   help="run only this package's entries (repeatable; default: all)")
    p.add_argument("--level", type=_levels, default=None, metavar="LEVELS",
                   help="operator, update, optimizer, sharded or all, comma-separated "
                        "(default all)")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="deadline of each call of an implementation at every level "
                        f"(default {DEFAULT_TIMEOUT_S:g}; 0: none; an optimizer row as a "
                        f"whole: {ROW_CALLS}x); a hung implementation becomes a TIMEOUT row")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="also write the markdown rows to FILE")
    p.add_argument("--json", action="store_true", help="JSON rows on stdout instead")
    p.add_argument("--store", action="store_true",
                   help="write this environment's rows of the selected levels to "
                        "docs/data/conformance-pyXY.json (under --root)")
    p.add_argument("--markdown", action="append", default=[], metavar="DOC",
                   choices=sorted(docs.DOCUMENTS),
                   help="after the run (with --store implied), render DOC's generated tables "
                        "from every stored environment: docs/conformance.md (operator, "
                        "update, sharded) or docs/optimizers.md (optimizer)")
    p.add_argument("--render-only", action="store_true",
                   help="with --markdown: render from the stored rows without running")
    p.add_argument("--python", default=None, metavar="PYTHON",
                   help="another interpreter (with swanref and the packages) that runs, and "
                        "stores, the entries this one cannot (emerging-optimizers: >= 3.12)")
    p.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.examples < 1:
        print("swanref conformance: error: --examples must be >= 1", file=sys.stderr)
        return 2
    if args.only and args.markdown and not args.render_only:
        print("swanref conformance: error: --markdown stores whole levels; drop --only",
              file=sys.stderr)
        return 2
    if args.render_only and not args.markdown:
        print("swanref conformance: error: --render-only needs --markdown DOC", file=sys.stderr)
        return 2
    levels = args.level or docs.LEVELS
    if args.markdown:
        levels = args.level or tuple(lv for d in args.markdown for lv in docs.DOCUMENTS[d])
    root = pathlib.Path(args.root)
    status = 0
    if not args.render_only:
        # no .hypothesis/ in the working folder; prints of the checked packages go to stderr
        with checker.private_hypothesis_home(), checker.stdout_to_stderr():
            rows = run(examples=args.examples, only=args.only, log=sys.stderr, level=levels,
                       timeout=args.timeout or None)
        status = 0 if all(r.as_expected for r in rows) else 1
        table = markdown(rows)
        if args.output:
            pathlib.Path(args.output).write_text(table + "\n")
        if args.store or args.markdown:
            docs.save_rows(docs.store_path(root, sys.version_info[:2]),
                           [r.stored() for r in rows], levels, _environment(),
                           _command(argv))
        if args.python:
            other = _other_python(args.python, levels, args, root)
            status = status or (1 if other else 0)
        if args.json:
            print(json.dumps([{**r.stored(), "package": r.package, "diagnosis": r.diagnosis,
                               "first_call_seconds": _rounded(r.first_call_seconds),
                               "repeat_seconds": _rounded(r.repeat_seconds),
                               "signatures": r.signatures, "cpu_seconds": _rounded(r.cpu_seconds),
                               "report": r.details}
                              for r in rows], indent=1, default=str))
        elif not args.markdown:
            print(table)
    for doc in args.markdown:
        stores = [docs.load_store(f) for f in sorted((root / "docs" / "data")
                                                      .glob("conformance-py*.json"))]
        path = root / doc
        path.write_text(docs.update_document(path.read_text(),
                                             docs.render_document(doc, stores)))
        print(f"swanref conformance: rendered {doc} from {len(stores)} environment(s)",
              file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
