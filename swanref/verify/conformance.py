"""``swanref conformance``: run the checker over the installed third-party implementations.

Each entry names a package, a function and the claim it is checked under (a preset with its
dtype, or an operator reading).  Entries whose package is not installed are listed as absent.
The result is a markdown table in the manner of array-api-tests' compliance reports -- package,
version, function, claim, verdict, diagnosis, time -- or JSON (``--json``).  docs/conformance.md
holds the tables generated in two environments with the command next to them.

The optional extra ``conformance`` installs the CPU packages (emerging-optimizers needs Python
>= 3.12).  Exit status: 0 when every present entry's verdict is the expected one, 1 otherwise,
2 on usage errors.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from swanref.verify import checker
from swanref.verify.checker import UsageError, check
from swanref.verify.claims import Claim

__all__ = ["ENTRIES", "Entry", "run", "markdown", "main"]


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
    # -- the update level (spec 9, claims of spec 11): what the optimizer adds times -lr
    Entry("torch", "torch", "torch.optim.Muon update (orthogonaliser, adjust_lr_fn=None)",
          dict(op="update", claim=Claim.from_preset("torch_muon", compute_dtype="bfloat16",
                                                    nd="2d_only"), **_T),
          _torch_muon_update, why="bf16, clamp 1e-7 on the raw gradient, Keller's "
          "sqrt(max(1, A/B)); 2-D parameters only (the optimizer refuses others)"),
    Entry("torch", "torch", "torch.optim.Muon update (adjust_lr_fn='match_rms_adamw')",
          dict(op="update", claim=Claim.from_preset("torch_muon", compute_dtype="bfloat16",
                                                    nd="2d_only", scale="moonlight"), **_T),
          lambda: _torch_muon_update("match_rms_adamw"), why="0.2 sqrt(max(A, B))"),
    Entry("torch", "torch", "torch.optim.Muon update (orthogonaliser, adjust_lr_fn=None)",
          dict(op="update", claim=Claim.from_preset("torch_muon", compute_dtype="float32",
                                                    nd="2d_only"), **_T),
          _torch_muon_update, expect="NOT CONFORMING",
          why="computes in bfloat16 whatever the input dtype"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "Muon update (zero_power_via_newton_schulz_5, get_adjusted_lr)",
          dict(op="update", claim=Claim.from_preset("torch_muon", compute_dtype="bfloat16"),
               **_T), _ptopt_update,
          why="(out, -1) view, bf16, clamp 1e-7, Keller's factor on the flattened shape"),
    Entry("pytorch-optimizer", "pytorch_optimizer",
          "Muon update (use_adjusted_lr=True)",
          dict(op="update", claim=Claim.from_preset("torch_muon", compute_dtype="bfloat16"),
               **_T), lambda: _ptopt_update(True), expect="NOT CONFORMING",
          why="Moonlight's 0.2 sqrt(max(out, in)) under a Keller claim: the scale is named"),
    Entry("numpy", "numpy", "textbook two-pass GradNorm (constant rows -> 0)",
          dict(op="grad_norm"), _textbook_grad_norm,
          why="within spec 8.1's offset term; advisory offset_robustness warns"),
]


class _Timed:
    """The target with its first call per (shape, dtype) timed apart from the others: for a
    JAX target that call traces and compiles (XLA caches the compiled program per shape and
    dtype), so ``first`` is the compile time and ``rest`` the run time of the repeated shapes.
    JAX dispatches asynchronously: each call waits for its result before the clock stops."""

    def __init__(self, fn):
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        self.signatures = set()
        self.first = 0.0
        self.rest = 0.0

    def __call__(self, G, *args, **kwargs):
        key = (tuple(getattr(G, "shape", ())), str(getattr(G, "dtype", "")))
        t0 = time.perf_counter()
        try:
            out = self.fn(G, *args, **kwargs)
            ready = getattr(out, "block_until_ready", None)
            if ready is not None:
                ready()
        finally:
            seconds = time.perf_counter() - t0
            if key in self.signatures:
                self.rest += seconds
            else:
                self.signatures.add(key)
                self.first += seconds
        return out


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

    @property
    def time_text(self) -> str:
        text = f"{self.seconds:.1f} s"
        if self.signatures is not None:
            text += (f" (first call per shape and dtype {self.first_call_seconds:.1f} s for "
                     f"{self.signatures} shapes, repeats {self.repeat_seconds:.1f} s)")
        return text

    @property
    def as_expected(self) -> bool:
        return self.verdict in ("absent",) or self.verdict == self.expected


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _claim_text(claim) -> str:
    c = {k: v for k, v in claim.items() if k not in ("op", "array_type", "shapes", "claim")}
    parts = [claim["op"]] + [f"{k}={v}" for k, v in c.items()]
    full = claim.get("claim")
    if full is not None:  # the knobs beyond the preset as its source runs it
        base = Claim.from_preset(full.preset) if full.preset else Claim()
        parts += [f"preset={full.preset}"] if full.preset else []
        parts += [f"{k}={v}" for k, v in full.to_dict().items()
                  if k not in ("format", "version", "preset", "level")
                  and getattr(base, k) != v]
    return " ".join(parts)


def level_of(entry) -> str:
    """'update' for the update-level rows, 'operator' for the others."""
    return "update" if entry.claim.get("op") == "update" else "operator"


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
    unsup = [f"{r.name.replace('_probe', '')} unsupported ({r.exception or r.message})"
             for r in report.results if r.status == "unsupported"]
    parts += unsup
    if report.matches_preset:
        parts.append(f"matches preset {report.matches_preset['preset']!r}")
    return "; ".join(parts)


def run(entries=None, examples=10, only=None, log=None, level=None) -> list:
    rows = []
    for e in (entries or ENTRIES):
        if only and e.package not in only and e.module not in only:
            continue
        if level is not None and level_of(e) != level:
            continue
        ctext = _claim_text(e.claim)
        if sys.version_info[:2] < e.python:
            rows.append(Row(e.package, "-", e.function, ctext, "absent", e.expect,
                            f"needs Python >= {'.'.join(map(str, e.python))}", 0.0))
            continue
        try:
            importlib.import_module(e.module)
        except Exception as exc:  # noqa: BLE001 - absent or broken install
            rows.append(Row(e.package, "-", e.function, ctext, "absent", e.expect,
                            f"not importable ({type(exc).__name__})", 0.0))
            continue
        t0 = time.perf_counter()
        timed = None
        try:
            fn = e.build()
            if e.claim.get("array_type") == "jax":
                fn = timed = _Timed(fn)
            kw = dict(e.claim)
            op = kw.pop("op")
            with np.errstate(all="ignore"):
                report = check(fn, op, examples=examples, target_name=e.function, **kw)
            verdict = report.outcome       # CONFORMING, NOT CONFORMING, INCONCLUSIVE, ...
            diag = _diagnosis(report)
            details = report.to_dict()
        except UsageError as exc:
            verdict, diag, details = "usage error", str(exc), {}
        except Exception as exc:  # noqa: BLE001 - reported in the table
            verdict, diag, details = "error", f"{type(exc).__name__}: {exc}", {}
        row = Row(e.package, _version(e.package), e.function, ctext, verdict, e.expect, diag,
                  time.perf_counter() - t0, details)
        if timed is not None:
            row.first_call_seconds, row.repeat_seconds = timed.first, timed.rest
            row.signatures = len(timed.signatures)
        rows.append(row)
        if log:
            print(f"  {row.package} {row.function} [{ctext}]: {row.verdict} "
                  f"({row.time_text})", file=log, flush=True)
    return rows


def _rounded(x):
    return None if x is None else round(x, 2)


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows) -> str:
    lines = ["| package | version | function | claim | verdict | expected | diagnosis | time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r.as_expected else " **(unexpected)**"
        lines.append(f"| {_md(r.package)} | {_md(r.version)} | `{_md(r.function)}` | "
                     f"`{_md(r.claim)}` | {r.verdict}{mark} | {r.expected} | "
                     f"{_md(r.diagnosis)} | {r.time_text} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="swanref conformance",
        description="Check the installed third-party orthogonalizers (torch, optax, "
                    "pytorch-optimizer, heavyball, emerging-optimizers, scipy) and a textbook "
                    "GradNorm with swanref check; print a markdown table (package, version, "
                    "function, claim, verdict, diagnosis, time).  Exit 0 when every present "
                    "entry has its expected verdict.")
    p.add_argument("--examples", type=int, default=10,
                   help="hypothesis examples per generic property (default 10)")
    p.add_argument("--only", action="append", default=None, metavar="PACKAGE",
                   help="run only this package's entries (repeatable; default: all)")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="also write the markdown table to FILE")
    p.add_argument("--json", action="store_true", help="JSON rows on stdout instead")
    p.add_argument("--level", choices=("operator", "update"), default=None,
                   help="only the operator rows (swanref check whiten/grad_norm) or the "
                        "update rows (swanref check update under a claim)")
    args = p.parse_args(argv)
    if args.examples < 1:
        print("swanref conformance: error: --examples must be >= 1", file=sys.stderr)
        return 2
    # no .hypothesis/ in the working folder; prints of the checked packages go to stderr
    with checker.private_hypothesis_home(), checker.stdout_to_stderr():
        rows = run(examples=args.examples, only=args.only, log=sys.stderr, level=args.level)
    table = markdown(rows)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(table + "\n")
    if args.json:
        print(json.dumps([{"package": r.package, "version": r.version, "function": r.function,
                           "claim": r.claim, "verdict": r.verdict, "expected": r.expected,
                           "diagnosis": r.diagnosis, "seconds": round(r.seconds, 2),
                           "first_call_seconds": _rounded(r.first_call_seconds),
                           "repeat_seconds": _rounded(r.repeat_seconds),
                           "signatures": r.signatures,
                           "report": r.details} for r in rows], indent=1))
    else:
        print(table)
    return 0 if all(r.as_expected for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
