"""``swanref check OP TARGET``: does an implementation conform to the spec?

TARGET is ``module:function`` or ``path/to/file.py:function`` (``function`` may be a dotted
attribute path): a callable taking one array and returning one array, with the reading of the
operator it claims given by the options (``--axis``, ``--method``/``--steps``/``--beta``/
``--scaling``, ``--no-rescale``, ``--iters``).  Every property of swanref.verify.properties that
applies to OP is run on hypothesis-generated inputs; a failure is shrunk to a small
counterexample.  Exit status: 0 conforming, 1 not conforming, 2 usage or import error.

The same engine is available from Python (:func:`check`) and from pytest
(swanref.pytest_plugin).
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from swanref import presets
from swanref.presets import schedules
from swanref.presets.catalogue import PRESETS, PROVENANCE, check_coefficients
from swanref.presets.diagnose import MATCH_TOLERANCE, identify
from swanref.spec.readings import SCALINGS, SPEC_VERSION, WHITEN_METHODS
from swanref.verify.claims import DtypeName, add_claim_arguments, claim_from_args, parse_value
from swanref.verify.claims.cli import operator_arguments
from swanref.verify.measure import Measurement, describe_text, fmt
from swanref.verify.targets import UsageError, load_target  # noqa: F401 (re-exported)

__all__ = ["check", "CheckReport", "PropertyResult", "load_target", "main"]

STATUSES = ("pass", "FAIL", "warn", "unsupported", "no-claim", "n/a")

#: version of the --json layout (docs/verification.md, "JSON schema"); bump on any change
JSON_SCHEMA = "swanref-check/2"

#: a tolerance this large asserts nothing: 2 is the largest distance between two partial
#: isometries per sqrt(rank) (spec 8.2's cap) and exceeds any GradNorm/SinkGD output error
#: that still resembles the result; such a measurement is counted as "no claim", never a pass
ASSERTS_NOTHING = 2.0


# -- array conversion -------------------------------------------------------------------------

def _converters(array_type: str):
    """(to_target, to_numpy) for the framework the target takes arrays of."""
    def to_numpy(out):
        if hasattr(out, "get") and type(out).__module__.split(".")[0] == "cupy":
            return out.get()
        if hasattr(out, "detach") and hasattr(out, "cpu"):
            t = out.detach().cpu()
            if str(t.dtype) == "torch.bfloat16":
                import ml_dtypes
                return t.float().numpy().astype(ml_dtypes.bfloat16)
            return t.numpy()
        return np.asarray(out)

    if array_type == "numpy":
        return (lambda a: a), to_numpy
    try:
        if array_type == "torch":
            import torch

            def to_torch(a):
                if a.dtype.name == "bfloat16":
                    return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
                return torch.from_numpy(np.ascontiguousarray(a))
            return to_torch, to_numpy
        if array_type == "jax":
            import jax
            jax.config.update("jax_enable_x64", True)
            import jax.numpy as jnp
            return jnp.asarray, to_numpy
        if array_type == "cupy":
            import cupy
            return cupy.asarray, to_numpy
    except ImportError as exc:
        raise UsageError(f"--array-type {array_type}: cannot import it ({exc})") from exc
    raise UsageError(f"unknown --array-type {array_type!r}")


def make_call(fn, array_type="numpy"):
    """Wrap the target: NumPy in (copied unless asked), NumPy out, TargetError on failure."""
    # the property catalogue (and hypothesis) load when a check runs: without hypothesis this
    # module still imports, and main() says what is missing (exit 2)
    from swanref.verify.properties import TargetError

    to_target, to_numpy = _converters(array_type)

    def call(G, copy=True):
        arg = to_target(G.copy() if copy else G)
        try:
            out = fn(arg)
        except Exception as exc:  # noqa: BLE001 - reported per property
            raise TargetError(f"target raised {type(exc).__name__}: {exc}") from exc
        try:
            arr = to_numpy(out)
        except Exception as exc:  # noqa: BLE001
            raise TargetError(f"target returned {type(out).__name__}, not an array: {exc}") \
                from exc
        if not isinstance(arr, np.ndarray) or arr.dtype == object or (
                arr.dtype.kind not in "fc" and arr.dtype.name != "bfloat16"):
            raise TargetError(f"target returned {type(out).__name__} of dtype "
                              f"{getattr(arr, 'dtype', '?')}, not a floating array")
        return arr
    return call


# -- running one property ----------------------------------------------------------------------

@dataclass
class PropertyResult:
    name: str
    status: str
    level: str
    doc: str
    examples: int = 0
    error: float | None = None
    tolerance: float | None = None
    input: dict | None = None
    message: str = ""
    array: list | None = None
    seconds: float = 0.0
    counterexample: np.ndarray | None = field(default=None, repr=False)
    diagnosis: dict | None = None     # --preset: swanref.presets.Diagnosis.to_dict()
    exception: str | None = None      # the target's exception (unsupported input classes)

    def to_dict(self) -> dict:
        d = {"property": self.name, "status": self.status, "level": self.level,
             "doc": self.doc, "examples": self.examples,
             "error": _num(self.error), "error_infinite": _inf(self.error),
             "tolerance": _num(self.tolerance), "tolerance_infinite": _inf(self.tolerance),
             "input": self.input, "message": self.message, "exception": self.exception,
             "seconds": round(self.seconds, 3)}
        if self.array is not None:
            d["input_array"] = self.array
        if self.diagnosis is not None:
            d["diagnosis"] = self.diagnosis
        return d


def _num(x):
    """A JSON number, or None for missing/inf/nan (JSON has no inf: see the *_infinite flag)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _inf(x) -> bool:
    return x is not None and not math.isfinite(float(x))


class _Violation(Exception):
    def __init__(self, meas, case):
        super().__init__(meas.message())
        self.meas = meas
        self.case = case


def _small_array(G, limit=64):
    G = np.asarray(G)
    if G.size <= limit:
        return np.asarray(G, dtype=np.float64).tolist()
    return None


def run_property(prop, claim, call, examples=30, seed=0) -> PropertyResult:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import HypothesisException

    from swanref.verify.properties import Case, TargetError

    res = PropertyResult(prop.name, "pass", prop.level, prop.doc)
    why = prop.not_applicable(claim)
    if why:
        res.status, res.message = "n/a", why
        return res
    state = {"unsupported": None, "worst": None, "n": 0, "noclaim": 0}
    t0 = time.perf_counter()

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
              verbosity=Verbosity.quiet)
    @given(prop.strategy(claim))
    def run(drawn):
        if state["unsupported"]:
            return
        case = drawn if isinstance(drawn, Case) else drawn[0]
        try:
            meas = prop.check(claim, call, drawn)
        except TargetError as exc:
            if prop.input_class != "plain" and state["n"] == 0:
                # the first input of an optional class was refused: the class is unsupported
                state["unsupported"] = str(exc)
                return
            meas = Measurement(prop.name, math.inf, 0.0, "target must accept this input",
                               case.describe(), note=str(exc) + (
                                   f" (after accepting other {prop.input_class} inputs)"
                                   if prop.input_class != "plain" else ""))
        except Exception as exc:  # noqa: BLE001 - e.g. an output of the wrong shape
            meas = Measurement(prop.name, math.inf, 0.0, "output could not be evaluated",
                               case.describe(), note=f"{type(exc).__name__}: {exc}")
        if not meas.claim or (meas.tolerance is not None
                               and meas.tolerance >= ASSERTS_NOTHING):
            state["noclaim"] += 1
            return
        state["n"] += 1
        w = state["worst"]
        if w is None or meas.ratio > w[0].ratio:
            state["worst"] = (meas, case)
        if not meas.passed:
            raise _Violation(meas, case)

    try:
        run()
    except _Violation as v:
        res.status = "FAIL" if prop.level == "required" else "warn"
        res.error, res.tolerance = v.meas.error, v.meas.tolerance
        res.input = v.case.describe()
        res.message = v.meas.message()
        res.array = _small_array(v.case.G)
        res.counterexample = np.array(v.case.G, copy=True)
    except HypothesisException as exc:  # e.g. Flaky: a failure that did not reproduce
        res.status = "FAIL" if prop.level == "required" else "warn"
        res.message = f"{type(exc).__name__}: {exc}".strip()[:2000]
        w = state["worst"]
        if w is not None:
            res.error, res.tolerance = w[0].error, w[0].tolerance
            res.input = w[1].describe()
    else:
        if state["unsupported"]:
            res.status, res.message = "unsupported", state["unsupported"]
            res.exception = state["unsupported"]
        elif state["n"] == 0:
            res.status = "no-claim"
            res.message = ("the spec's tolerance model makes no accuracy claim on any drawn "
                           "input (predicted error above TRUSTED_LIMIT, or a tolerance >= "
                           f"{ASSERTS_NOTHING:g} that asserts nothing)")
        else:
            meas, case = state["worst"]
            res.error, res.tolerance = meas.error, meas.tolerance
            res.input = case.describe()
    res.examples = state["n"]
    res.seconds = time.perf_counter() - t0
    return res


# -- the report -----------------------------------------------------------------------------

@dataclass
class CheckReport:
    op: str
    target: str
    claim: dict
    examples: int
    seed: int
    strict: bool = False
    results: list = field(default_factory=list)
    #: lines printed under the verdict, e.g. the preset the target matches and how to rerun
    hints: list = field(default_factory=list)
    #: a preset the target matches when its exact/iterative claim failed (None otherwise)
    matches_preset: dict | None = None

    @property
    def failures(self) -> list:
        bad = {"FAIL"} | ({"warn", "unsupported"} if self.strict else set())
        return [r for r in self.results if r.status in bad]

    @property
    def conforming(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.conforming else 1

    def failed(self, name: str) -> bool:
        return any(r.name == name and r.status in ("FAIL", "warn") for r in self.results)

    def status(self, name: str) -> str:
        for r in self.results:
            if r.name == name:
                return r.status
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"schema": JSON_SCHEMA, "swanref_spec": SPEC_VERSION, "op": self.op,
                "target": self.target,
                "claim": self.claim, "examples_per_property": self.examples, "seed": self.seed,
                "strict": self.strict, "conforming": self.conforming,
                "exit_code": self.exit_code,
                "failed_properties": [r.name for r in self.failures],
                "matches_preset": self.matches_preset, "hints": list(self.hints),
                "results": [r.to_dict() for r in self.results]}

    def table(self) -> str:
        claim = ", ".join(f"{k}={v}" for k, v in self.claim.items() if k != "op")
        lines = [f"swanref check {self.op} {self.target}",
                 f"  claim: {claim}",
                 f"  {self.examples} examples per property, seed {self.seed}, spec "
                 f"{SPEC_VERSION}", ""]
        w = max([len(r.name) for r in self.results] + [8])
        lines.append(f"{'property':<{w}}  {'result':<11}  {'worst error':>11}  "
                     f"{'tolerance':>10}  {'n':>4}  input")
        lines.append("-" * (w + 60))
        for r in self.results:
            brief = {k: r.input[k] for k in ("probe", "shape", "dtype", "kappa", "rank", "seed",
                                             "zero")
                     if r.input and k in r.input}
            what = describe_text(brief) if r.input else (r.message if r.status in (
                "n/a", "unsupported", "no-claim") else "")
            lines.append(f"{r.name:<{w}}  {r.status:<11}  {fmt(r.error):>11}  "
                         f"{fmt(r.tolerance):>10}  {r.examples:>4}  {what}")
        details = [r for r in self.results if r.status in ("FAIL", "warn")]
        for r in details:
            lines.append("")
            lines.append(f"[{r.status}] {r.name}: {r.doc}")
            lines.extend("  " + ln for ln in r.message.splitlines())
            if r.array is not None:
                arr = np.array(r.array)
                with np.printoptions(precision=17, linewidth=100, threshold=100):
                    lines.append("  shrunk input (float64 view of the array passed):")
                    lines.extend("    " + ln for ln in repr(arr).splitlines())
        lines.append("")
        if self.conforming:
            lines.append("verdict: CONFORMING" + (
                " (advisory warnings above)" if any(r.status == "warn" for r in self.results)
                else ""))
        else:
            names = ", ".join(r.name for r in self.failures)
            lines.append(f"verdict: NOT CONFORMING -- failed: {names}")
        lines.extend(self.hints)
        return "\n".join(lines)


def check(fn, op, *, dtype="float64", axis=-1, eps=0.0, method="svd", steps=None, beta=None,
          scaling=None, rescale=True, iters=5, max_kappa=None, max_side=8,
          full_rank_only=False, examples=30, seed=0, properties=None, strict=False,
          array_type="numpy", target_name=None, preset=None, coefficients=None,
          kwargs=None, shapes=None, suggest=True, claim=None) -> CheckReport:
    """Run the property catalogue for ``op`` on callable ``fn``; returns a CheckReport.

    ``kwargs`` are bound to ``fn`` (``fn(G, **kwargs)``; the CLI's ``--kwarg``).  ``shapes``:
    ``None`` (hypothesis draws the shapes) or ``"few"`` (a fixed small set, :data:`FEW_SHAPES`,
    for JIT-compiled targets that recompile per shape).  ``preset`` (with ``coefficients`` for
    ``'custom'``) checks a named orthogonalisation preset instead of the reading given by
    ``method``/``steps``/....  When a whitening claim fails and the target matches a preset,
    the report says so (``suggest``).  ``claim`` (a swanref.verify.claims.Claim) replaces the
    reading keywords (docs/spec.md 11.5).
    """
    if claim is not None:
        if op == "update":
            from swanref.verify.update_properties import check_update  # the circle below
            return check_update(bind(fn, kwargs), claim=claim, properties=properties,
                                array_type=array_type, target_name=target_name, strict=strict)
        kw = operator_arguments(claim)
        preset, coefficients, dtype, steps = (kw.get("preset"), kw.get("coefficients"),
                                              kw["dtype"], kw["steps"])
        method, beta, scaling = kw.get("method", method), kw.get("beta"), kw.get("scaling")
    from swanref.verify.properties import OPS, Claim, properties_for

    fn = bind(fn, kwargs)
    if shapes not in (None, "few", "any"):
        raise UsageError(f"--shapes must be 'few' or 'any', got {shapes!r}")
    shapes = FEW_SHAPES if shapes == "few" else None

    if op == "update":  # spec 9: fixed probes, swanref.verify.update_properties
        # imported here: update_properties imports this module's report types (a circle)
        from swanref.verify.update_properties import check_update
        return check_update(fn, preset=preset or "svd", steps=steps, dtype=dtype,
                            properties=properties, array_type=array_type,
                            target_name=target_name, strict=strict)
    if op not in OPS:
        raise UsageError(f"unknown OP {op!r}; choose one of {', '.join(OPS)}")
    if preset is not None:
        return check_preset(fn, preset, dtype=dtype, steps=steps, examples=examples, seed=seed,
                            strict=strict, array_type=array_type, target_name=target_name,
                            op=op, method=method, beta=beta, scaling=scaling,
                            coefficients=coefficients, shapes=shapes)
    if coefficients is not None:
        raise UsageError("--coefficients needs --preset (e.g. --preset custom)")
    dt = _parse_dtype(dtype)
    _validate_reading(op, method, steps, beta, scaling)
    claim = Claim(op, dt, axis=axis, eps=eps, method=method, steps=steps, beta=beta,
                  scaling=scaling, rescale=rescale, iters=iters, max_kappa=max_kappa,
                  max_side=max_side, full_rank_only=full_rank_only, shapes=shapes)
    props = properties_for(claim)
    if properties:
        known = {p.name for p in props}
        unknown = [p for p in properties if p not in known]
        if unknown:
            raise UsageError(f"unknown properties for {op}: {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        props = [p for p in props if p.name in properties]
    call = make_call(fn, array_type)
    _smoke(call, dt, shapes)
    report = CheckReport(op, target_name or getattr(fn, "__qualname__", repr(fn)),
                         claim.describe(), examples, seed, strict)
    with np.errstate(all="ignore"):
        for p in props:
            report.results.append(run_property(p, claim, call, examples, seed))
    if suggest and op == "whiten" and not report.conforming:
        _suggest_preset(report, call, dt, target_name)
    return report


#: the shapes drawn with ``shapes='few'`` (``--shapes few``): wide, tall and square, each also
#: as a batch of 3 where a property draws batches -- six compilations for a JIT target
FEW_SHAPES = ((4, 7), (7, 4), (6, 6))


def bind(fn, kwargs):
    """``fn`` with keyword arguments bound (``--kwarg name=value``)."""
    if not kwargs:
        return fn
    bound = functools.partial(fn, **kwargs)
    bound.__qualname__ = getattr(fn, "__qualname__", repr(fn))
    return bound


def parse_kwarg(text: str):
    """``name=value`` -> (name, value); the value is a Python literal when it parses as one
    (``5``, ``1e-7``, ``True``, ``(3.4, -4.7, 2.0)``, ``None``), a dtype name
    (``torch.float64``, ``jnp.bfloat16``, ``np.float32``: imported and resolved), else the
    string (docs/spec.md 11.5)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise UsageError(f"--kwarg takes name=value, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        typed = parse_value(value)
        return name, typed.resolve() if isinstance(typed, DtypeName) else value


def _smoke(call, dt, shapes=None):
    """One plain call before any property: a target that cannot be called with one array (a
    TypeError: missing arguments, wrong array type, refused dtype) is a usage error, exit 2."""
    from swanref.verify.properties import TargetError
    m, n = (shapes or ((4, 7),))[0]
    G = np.random.default_rng(0).standard_normal((m, n)).astype(dt)
    try:
        call(G)
    except TargetError as exc:
        if isinstance(exc.__cause__, TypeError):
            raise UsageError(f"the target cannot be called with one {dt} array of shape "
                             f"{G.shape}: {exc.__cause__.__class__.__name__}: {exc.__cause__} "
                             "(bind other arguments with --kwarg name=value; --array-type "
                             "converts the array; --dtype sets its dtype)") from exc


def _suggest_preset(report, call, dt, target_name):
    """After a failed whitening claim: does the target match one of the presets?"""
    name = "bfloat16" if dt.name == "bfloat16" else str(dt)
    if name not in MATCH_TOLERANCE:
        return
    try:
        found = identify(lambda G: call(np.asarray(G)), dtype=name)
    except Exception:  # noqa: BLE001 - a suggestion must never break the report
        return
    if not found:
        return
    best = found[0]
    report.matches_preset = {"preset": best[0], "distance": _num(best[1]), "dtype": name,
                             "others": [f[0] for f in found[1:]]}
    target = target_name or "TARGET"
    report.hints.append(f"note: the claim failed, but the target matches preset {best[0]!r} "
                        f"at {name} (distance {best[1]:.3g}"
                        + (f"; also: {', '.join(f[0] for f in found[1:])}" if found[1:] else "")
                        + "); rerun with:")
    report.hints.append(f"  swanref check whiten {target} --preset {best[0]} --dtype {name}")


#: claim-independent properties also run for a --preset claim
PRESET_GENERIC = ("shape_and_dtype", "input_not_modified", "zero_input")


def check_preset(fn, preset, *, dtype="float64", steps=None, examples=30, seed=0, strict=False,
                 array_type="numpy", target_name=None, op="whiten", method="svd", beta=None,
                 scaling=None, coefficients=None, shapes=None, kwargs=None) -> CheckReport:
    """``--preset NAME``: does ``fn`` implement a named orthogonalisation preset?

    Runs swanref.presets.diagnose (fixed probes, the preset and its one-knob variants, each
    probe with its own tolerance) as the property ``matches_preset``, plus the
    claim-independent properties of the catalogue.  The closest variant names what differs;
    an input class the target refuses (a batch) is reported as ``unsupported`` with the
    exception, never as a mismatch.  ``coefficients`` (a list of (a, b, c), or a file path as
    read by ``swanref schedule``) replaces the table; ``preset='custom'`` requires it.
    """
    from swanref.verify.properties import CATALOGUE, Claim

    fn = bind(fn, kwargs)
    if op != "whiten":
        raise UsageError("--preset only applies to OP whiten")
    if method != "svd" or beta is not None or scaling is not None:
        raise UsageError("--preset replaces --method/--beta/--scaling (--steps passes through)")
    known = list(getattr(presets, "PRESETS", {}))
    if preset not in known:
        raise UsageError(f"unknown --preset {preset!r}; choose one of {', '.join(known)} "
                         "(swanref check --list-presets)")
    if str(dtype) not in presets.MATCH_TOLERANCE:
        raise UsageError(f"--preset: --dtype must be one of "
                         f"{', '.join(presets.MATCH_TOLERANCE)}")
    coefficients = load_coefficients(coefficients)
    if preset == "custom" and coefficients is None:
        raise UsageError("--preset custom needs --coefficients FILE (JSON list of [a, b, c] or "
                         "one 'a b c' per line)")
    try:
        presets.schedule(preset, steps, coefficients)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    call = make_call(fn, array_type)
    claim_desc = {"op": "whiten", "preset": preset, "dtype": str(dtype)}
    if steps is not None:
        claim_desc["steps"] = steps
    if coefficients is not None:
        claim_desc["coefficients"] = [list(t) for t in coefficients]
    report = CheckReport("whiten", target_name or getattr(fn, "__qualname__", repr(fn)),
                         claim_desc, examples, seed, strict)
    try:  # the generic properties in the claimed dtype (its float32 container if unavailable)
        dt = _parse_dtype(dtype)
    except UsageError:
        dt = np.dtype(np.float32)
    low = str(dtype) in ("bfloat16", "float16")
    if low and array_type in ("torch", "jax"):
        # frameworks with a native bf16/fp16 get arrays of that dtype (the probes are float32
        # containers of its values); NumPy targets get the float32 containers
        native = dt
        probe_call = lambda G: call(np.asarray(G).astype(native))  # noqa: E731
    else:
        if low:
            dt = np.dtype(np.float32)
        probe_call = lambda G: call(np.asarray(G))  # noqa: E731
    _smoke(call, dt, shapes)
    generic = Claim("whiten", dt, shapes=(FEW_SHAPES if shapes in ("few", FEW_SHAPES)
                                          else None))
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        d = presets.diagnose(probe_call, preset, dtype=str(dtype), steps=steps,
                             coefficients=coefficients)
        top = "; ".join(f"{c.label}: {c.distance:.3g} (tol {c.tolerance:.3g})"
                        for c in d.details[:4])
        worst = d.worst_probe
        claim_row = d.claim_result
        res = PropertyResult("matches_preset", "pass" if d.match else "FAIL", "required",
                             f"outputs match preset {preset!r} on swanref.presets' probes "
                             "(relative Frobenius difference within each probe's tolerance, "
                             "spec 8.6)",
                             examples=len(d.per_probe), error=claim_row.distance,
                             tolerance=claim_row.tolerance,
                             input={"probe": worst, "dtype": str(dtype)} if worst else None,
                             message=d.summary() + f"\n  closest variants: {top}",
                             seconds=time.perf_counter() - t0, diagnosis=d.to_dict())
        report.results.append(res)
        report.hints.extend(d.near_tie_lines())  # a pass can hide a closer candidate
        for cls, text in d.unsupported.items():
            report.results.append(PropertyResult(
                f"{cls}_probe", "unsupported", "optional",
                f"the preset's {cls} probe (an optional input class)", message=text,
                exception=text))
        for p in CATALOGUE:
            if p.name in PRESET_GENERIC and "whiten" in p.ops:
                report.results.append(run_property(p, generic, call, examples, seed))
    if coefficients is not None:
        report.hints.append("the schedule itself (slope at 0, band, blow-up margin): swanref "
                            "schedule FILE")
    return report


def load_coefficients(coefficients):
    """``None``, a sequence of (a, b, c), or a path to a JSON/text table (as ``swanref
    schedule`` reads it) -> tuple of triples or None."""
    if coefficients is None:
        return None
    if isinstance(coefficients, (str, os.PathLike)):
        try:
            sched = schedules.load(os.fspath(coefficients))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--coefficients {coefficients}: {exc}") from exc
        if getattr(sched, "divisor", 1.0) != 1.0:
            raise UsageError(f"--coefficients {coefficients}: a divisor other than 1 is not "
                             "supported by --preset (custom uses X / (||X||_F + 1e-7))")
        coefficients = sched.coefficients
    try:
        return check_coefficients(coefficients)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--coefficients: {exc}") from exc


def _parse_dtype(name):
    try:
        if str(name) == "bfloat16":
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        dt = np.dtype(name)
    except (TypeError, ImportError) as exc:
        raise UsageError(f"unsupported --dtype {name!r}: {exc}") from exc
    if dt not in (np.float64, np.float32, np.float16):
        raise UsageError(f"--dtype must be float64, float32, float16 or bfloat16, got {name}")
    return dt


def _validate_reading(op, method, steps, beta, scaling):
    if op in ("whiten", "swan_update"):
        if method not in ("svd", "eigh", "newton_schulz"):
            extra = " (nsds has no tolerance model in spec 8)" if method == "nsds" else ""
            raise UsageError(f"--method must be svd, eigh or newton_schulz{extra}; got "
                             f"{method!r}")
        if WHITEN_METHODS[method].kind == "exact" and any(
                v is not None for v in (steps, beta, scaling)):
            raise UsageError("--steps/--beta/--scaling only apply to --method newton_schulz")
        if scaling is not None and scaling not in SCALINGS:
            raise UsageError(f"--scaling must be one of {', '.join(SCALINGS)}")
        if steps is not None and steps < 0:
            raise UsageError("--steps must be >= 0")
        if beta is not None and not beta > 0:
            raise UsageError("--beta must be > 0")
    elif method != "svd" or any(v is not None for v in (steps, beta, scaling)):
        raise UsageError(f"--method/--steps/--beta/--scaling do not apply to {op}")


# -- command line -----------------------------------------------------------------------------

def _axis(text):
    if text == "long":
        return "long"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"axis must be -1, -2 or 'long', got {text!r}") \
            from None
    if v not in (-1, -2):
        raise argparse.ArgumentTypeError(f"axis must be -1, -2 or 'long', got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from swanref.verify.properties import OPS
    p = _Parser(prog="swanref check", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Check an implementation of a SWAN operator against the spec. "
                            "Exit 0 conforming, 1 not conforming, 2 usage/import error.")
    p.add_argument("op", choices=OPS + ("update",), metavar="OP",
                   help=f"one of {', '.join(OPS + ('update',))}")
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="module:function or path/file.py:function (array in, array out)")
    g = p.add_argument_group("claimed reading")
    g.add_argument("--axis", type=_axis, default=-1, help="GradNorm axis: -1, -2 or long")
    g.add_argument("--eps", type=float, default=0.0, help="GradNorm eps added to the variance")
    g.add_argument("--method", default="svd",
                   help="whitening: svd (exact, default), eigh (exact, kappa^2 accuracy), "
                        "newton_schulz (iterative)")
    g.add_argument("--steps", type=int, default=None,
                   help="newton_schulz: iteration count (default 10); --preset: polynomial "
                        "steps (default: the preset's)")
    g.add_argument("--beta", type=float, default=None,
                   help="newton_schulz: step size beta (default 0.5, the convergent reading)")
    g.add_argument("--scaling", default=None,
                   help=f"newton_schulz: initial scaling, one of {', '.join(SCALINGS)} "
                        "(default gram_fro)")
    g.add_argument("--rescale", dest="rescale", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="swan_update: the target rescales to RMS 1 (default) or not")
    g.add_argument("--iters", type=int, default=5, help="sinkgd_update iterations")
    g.add_argument("--full-rank-only", action="store_true",
                   help="whiten: claim only full-rank input (skips rank_deficient)")
    g.add_argument("--preset", default=None,
                   help="whiten: claim a named orthogonalisation preset of swanref.presets "
                        "(e.g. muon_ns5; --list-presets); --steps passes through; 'custom' "
                        "takes its table from --coefficients FILE")
    g.add_argument("--kwarg", action="append", default=None, metavar="NAME=VALUE",
                   help="bind a keyword argument of the target: fn(G, NAME=VALUE); VALUE is a "
                        "Python literal (5, 1e-7, True, (3.4, -4.7, 2.0)) or a string; "
                        "repeatable")
    h = p.add_argument_group("inputs")
    h.add_argument("--dtype", default="float64",
                   help="dtype of the arrays passed to the target, and the precision claimed: "
                        "float64 (default), float32, float16, bfloat16")
    h.add_argument("--shapes", default="any", choices=("any", "few"),
                   help="any (default): hypothesis draws the shapes; few: a fixed set "
                        f"{', '.join('x'.join(map(str, s)) for s in FEW_SHAPES)} (and batches "
                        "of them), for JIT-compiled targets that recompile per shape; values "
                        "and spectra are drawn as usual")
    h.add_argument("--max-kappa", type=float, default=None,
                   help="largest condition number drawn (default depends on dtype/method)")
    h.add_argument("--max-side", type=int, default=8, help="largest matrix side drawn")
    h.add_argument("--examples", type=int, default=30, help="examples per property")
    h.add_argument("--seed", type=int, default=0,
                   help="seed of the drawn inputs (default 0: reproducible runs)")
    h.add_argument("--array-type", default="numpy", choices=("numpy", "torch", "jax", "cupy"),
                   help="convert inputs to this framework before calling the target")
    h.add_argument("--property", action="append", dest="properties", default=None,
                   help="run only this property (repeatable)")
    u = p.add_argument_group("OP update (spec 9; --preset names the orthogonaliser, default svd)")
    u.add_argument("--scale", default="keller",
                   help="scale rule: keller, moonlight, unit_rms, spectral, swan, graft, none")
    u.add_argument("--scale-factor", type=float, default=1.0)
    u.add_argument("--stack-dims", type=int, default=0,
                   help="leading axes indexing independent parameters")
    u.add_argument("--row-norm", action="store_true", help="NorMuon row normalisation")
    u.add_argument("--complex", action="store_true", help="claim complex gradients")
    u.add_argument("--coefficients", default=None, metavar="FILE",
                   help="coefficient table (JSON or one 'a b c' per line) for the preset")
    u.add_argument("--tolerance", type=float, default=None,
                   help="relative distance accepted (default: by --dtype)")
    add_claim_arguments(u, preset=False)  # --claim FILE, --set KNOB=VALUE (docs/spec.md 11.5)
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    o.add_argument("--strict", action="store_true",
                   help="advisory failures and unsupported input classes also fail")
    o.add_argument("--list-properties", action="store_true",
                   help="list the properties for OP and exit")
    o.add_argument("--list-presets", action="store_true",
                   help="list the presets of --preset with their source package, version and "
                        "function, and exit")
    o.add_argument("--save-failures", metavar="DIR", default=None,
                   help="write each failing property's (shrunk) input as DIR/<property>.npy")
    return p


def list_presets() -> str:
    """The presets of ``--preset``: name, source package, version, function."""
    rows = [("preset", "package", "version", "function")]
    for name, p in PRESETS.items():
        pkg, ver, func = PROVENANCE.get(name, ("-", "-", p.source))
        rows.append((name, pkg, ver, func))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    if "--list-presets" in argv:
        print(list_presets())
        return 0
    try:
        args = build_parser().parse_args(argv)
        kwargs = dict(parse_kwarg(k) for k in (args.kwarg or []))
        if args.examples < 1:
            raise UsageError("--examples must be >= 1")
        if args.max_kappa is not None and not args.max_kappa >= 1:
            raise UsageError("--max-kappa must be >= 1")
        if args.max_side < 2:
            raise UsageError("--max-side must be >= 2")
        if args.iters < 1:
            raise UsageError("--iters must be >= 1")
        if args.op == "update":
            from swanref.verify import update_properties as up  # a circle at the top, as above
            if args.list_properties:
                for q in up.UPDATE_PROPERTIES:
                    print(f"{q.name:<34} {q.level:<9} {q.doc}")
                return 0
            if args.target is None:
                raise UsageError("the following arguments are required: TARGET")
            fn = bind(load_target(args.target), kwargs)
            legacy = dict(preset=args.preset or "svd", scale=args.scale,
                          scale_factor=args.scale_factor, stack_dims=args.stack_dims,
                          row_norm=args.row_norm, steps=args.steps,
                          coefficients=args.coefficients, dtype=args.dtype,
                          complex=args.complex, tolerance=args.tolerance)
            claim = None
            if args.claim is not None or args.set_knobs:
                if args.coefficients is not None and not isinstance(args.coefficients, list):
                    legacy["coefficients"] = up.load_coefficients(args.coefficients)
                try:
                    legacy_claim = up.UpdateClaim(**legacy)
                except (ValueError, TypeError) as exc:
                    raise UsageError(f"invalid update claim: {exc}") from exc
                base = {k: v for k, v in legacy_claim.to_claim().to_dict().items()
                        if k not in ("format", "version")}
                if args.tolerance is None:
                    base.pop("tolerance", None)   # the dtype's, after --claim / --set
                claim = claim_from_args(args, base, preset=False)
            report = up.check_update(
                fn, **({} if claim is not None else legacy), claim=claim,
                properties=args.properties, array_type=args.array_type,
                target_name=args.target, strict=args.strict)
        elif args.list_properties:
            from swanref.verify.properties import Claim, properties_for
            for p in properties_for(Claim(args.op)):
                print(f"{p.name:<34} {p.level:<9} {p.input_class:<8} {p.doc}")
            return 0
        else:
            if args.target is None:
                raise UsageError("the following arguments are required: TARGET")
            fn = load_target(args.target)
            claim = None
            if args.claim is not None or args.set_knobs:
                base = {"preset": args.preset, "compute_dtype": args.dtype, "steps": args.steps}
                if args.preset is None:
                    base.update(method=args.method, beta=args.beta, scaling=args.scaling)
                claim = claim_from_args(args, {k: v for k, v in base.items() if v is not None},
                                        preset=False)
            report = check(fn, args.op, claim=claim, dtype=args.dtype, axis=args.axis, eps=args.eps,
                           method=args.method, steps=args.steps, beta=args.beta,
                           scaling=args.scaling, rescale=args.rescale, iters=args.iters,
                           max_kappa=args.max_kappa, max_side=args.max_side,
                           full_rank_only=args.full_rank_only, examples=args.examples,
                           seed=args.seed, properties=args.properties, strict=args.strict,
                           array_type=args.array_type, target_name=args.target,
                           preset=args.preset, coefficients=args.coefficients,
                           kwargs=kwargs, shapes=args.shapes)
    except UsageError as exc:
        print(f"swanref check: error: {exc}", file=sys.stderr)
        print("usage: swanref check OP TARGET [options]  (swanref check --help)",
              file=sys.stderr)
        return 2
    except ImportError as exc:
        if getattr(exc, "name", "") == "hypothesis" or "hypothesis" in str(exc):
            print("swanref check: error: the checker needs hypothesis (pip install hypothesis)",
                  file=sys.stderr)
            return 2
        raise
    if args.save_failures:
        os.makedirs(args.save_failures, exist_ok=True)
        for r in report.results:
            if r.counterexample is not None:
                np.save(os.path.join(args.save_failures, f"{r.name}.npy"), r.counterexample,
                        allow_pickle=False)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.table())
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
