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
import contextlib
import functools
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import textwrap
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
from swanref.verify.targets import (COMPILE_ROOM, DEFAULT_TIMEOUT_S,  # noqa: F401
                                    FirstCallTimer,
                                    TargetAborted, TargetRunner, TargetTimeout, UsageError,
                                    load_target, recompile_advice, recompile_limit_hit,
                                    seconds_argument, stop_message)
from swanref.spec.output_files import open_output, real_directory

__all__ = ["check", "CheckReport", "PropertyResult", "load_target", "main"]

STATUSES = ("pass", "FAIL", "warn", "unsupported", "no-claim", "n/a", "compile-limit",
            "timeout", "aborted", "not-run")

#: the outcome of a check and its exit status (docs/verification.md, "Verdicts")
EXIT_CODES = {"CONFORMING": 0, "NOT CONFORMING": 1, "INCONCLUSIVE": 3, "TARGET EXITED": 4,
              "TIMEOUT": 5}

#: version of the --json layout (docs/verification.md, "JSON schema"); bump on any change
JSON_SCHEMA = "swanref-check/3"

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


class TargetCall:
    """The target as the properties call it: ``call(G, copy=True) -> NumPy array``.

    The input is converted to ``array_type`` (copied first unless ``copy=False``), the target
    runs on ``runner``'s worker under its deadline, and the output is converted back; an
    exception of the target, or an output that is not a floating array, raises TargetError.
    With ``copy=False`` whatever the target did to the object it received is written back
    into ``G`` (a bf16 tensor, a CuPy array or a contiguous copy is not ``G`` itself), so a
    mutation check sees what the target saw.  ``where`` names the property running, for a
    timeout's message.
    """

    def __init__(self, fn, array_type="numpy", runner=None):
        # the property catalogue (and hypothesis) load when a check runs: without hypothesis
        # this module still imports, and main() says what is missing (exit 2)
        from swanref.verify.properties import TargetError
        self._error = TargetError
        self.fn, self.array_type = fn, array_type
        self.to_target, self.to_numpy = _converters(array_type)
        self.runner = runner if runner is not None else TargetRunner()
        self.where = "its first call"
        #: calls that returned (anything) and the first exception the target raised: a target
        #: that never returns cannot be checked (refused_everything, a usage error)
        self.returned, self.calls, self.raised = 0, 0, None

    @property
    def compile_raised(self) -> dict:
        """torch.compile limits raised for the target's calls (targets.compile_room)."""
        return self.runner.compile_raised

    def _job(self, G, copy, errstate):
        with np.errstate(**errstate):  # the caller's (thread-local) floating-point modes
            return self._convert_and_call(G, copy)

    def _convert_and_call(self, G, copy):
        TargetError = self._error
        arg = self.to_target(G.copy() if copy else G)
        self.calls += 1
        try:
            out = self.fn(arg)
            self.returned += 1
        except Exception as exc:  # noqa: BLE001 - reported per property
            if self.raised is None:
                self.raised = f"{type(exc).__name__}: {exc}"
            err = TargetError(f"target raised {type(exc).__name__}: {exc}")
            err.recompile_limit = recompile_limit_hit(exc)
            raise err from exc
        finally:
            if not copy and arg is not G:
                _write_back(self.to_numpy, arg, G)
        if isinstance(out, (list, tuple)) or np.isscalar(out) or out is None:
            inner = (f" of {len(out)} {type(out[0]).__name__}" if isinstance(out, (list, tuple))
                     and out else "")
            err = TargetError(f"target returned {type(out).__name__}{inner}, not an array: "
                              "return the array itself")
            err.type_mistake = True
            raise err
        try:
            arr = self.to_numpy(out)
        except Exception as exc:  # noqa: BLE001
            raise TargetError(f"target returned {type(out).__name__}, not an array: {exc}") \
                from exc
        if not isinstance(arr, np.ndarray) or arr.dtype == object or (
                arr.dtype.kind not in "fc" and arr.dtype.name != "bfloat16"):
            err = TargetError(f"target returned {type(out).__name__} of dtype "
                              f"{getattr(arr, 'dtype', '?')}, not a floating array")
            err.type_mistake = True
            raise err
        return arr

    def __call__(self, G, copy=True):
        G = np.asarray(G) if not isinstance(G, np.ndarray) else G
        where = (f"computing {self.where} on a {G.dtype} array of shape "
                 f"{tuple(G.shape)}")
        return self.runner.run(self._job, G, copy, np.geterr(), where=where)


def _write_back(to_numpy, arg, G):
    """Copy what the target left in ``arg`` (its own array object) back into ``G``."""
    try:
        back = np.asarray(to_numpy(arg))
    except Exception:  # noqa: BLE001 - nothing readable to copy
        return
    if back.shape != G.shape:      # resized in place (torch's resize_, unsqueeze_, ...)
        if G.flags.writeable and G.size:
            G[...] = np.nan        # not what it was: make the mutation visible
    elif not np.array_equal(back.astype(G.dtype), G, equal_nan=True):
        np.copyto(G, back.astype(G.dtype))


def make_call(fn, array_type="numpy", runner=None) -> TargetCall:
    """Wrap the target: NumPy in (copied unless asked), NumPy out, TargetError on failure;
    TargetTimeout / TargetAborted (BaseExceptions) when it hangs or exits (see TargetCall)."""
    return TargetCall(fn, array_type, runner)


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
    cause: str = ""                   # what failed, for grouping identical failures
    type_mistake: bool = False        # the target returned a list/tuple/scalar, not an array

    def to_dict(self) -> dict:
        d = {"property": self.name, "status": self.status, "level": self.level,
             "doc": self.doc, "examples": self.examples,
             "error": json_number(self.error), "error_infinite": _inf(self.error),
             "tolerance": json_number(self.tolerance), "tolerance_infinite": _inf(self.tolerance),
             "input": self.input, "message": self.message, "exception": self.exception,
             "seconds": round(self.seconds, 3)}
        if self.array is not None:
            d["input_array"] = self.array
        if self.diagnosis is not None:
            d["diagnosis"] = self.diagnosis
        return d


def json_number(x):
    """A JSON number, or None for missing/inf/nan (JSON has no inf: see the *_infinite flag)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def separation_text(separating, limit: int, unit: str) -> str:
    """How identify says what tells an alternative claim from the match: the first ``limit``
    ``(name, distance, tolerance)`` triples of ``separating``, or that no ``unit`` does."""
    if not separating:
        return f"no {unit} separates it from the match here"
    return "separated by " + "; ".join(f"{p}: {d:.3g} > {t:.3g}" for p, d, t in separating[:limit])


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
    state = {"unsupported": None, "worst": None, "n": 0, "noclaim": 0, "compile": None}
    t0 = time.perf_counter()
    if hasattr(call, "where"):
        call.where = f"property {prop.name}"

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
              verbosity=Verbosity.quiet)
    @given(prop.strategy(claim))
    def run(drawn):
        if state["unsupported"] or state["compile"]:
            return
        case = drawn if isinstance(drawn, Case) else drawn[0]
        try:
            meas = prop.check(claim, call, drawn)
        except (TargetAborted, TargetTimeout) as exc:
            exc.case = case
            raise
        except TargetError as exc:
            if getattr(exc, "recompile_limit", False):
                # torch.compile refused another shape: no verdict on the numbers (the rest of
                # the property's inputs are skipped; the outcome is INCONCLUSIVE)
                state["compile"] = str(exc)
                return
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
    except (TargetAborted, TargetTimeout) as exc:
        stopped(res, exc)
        res.examples = state["n"]
        res.seconds = time.perf_counter() - t0
        return res
    except _Violation as v:
        res.status = "FAIL" if prop.level == "required" else "warn"
        res.error, res.tolerance = v.meas.error, v.meas.tolerance
        res.input = v.case.describe()
        res.message = v.meas.message()
        res.type_mistake = v.meas.note.startswith("target returned")
        # the summary's cause leads with what was measured; a claim-describing note follows
        res.cause = v.meas.note if v.meas.note.startswith("target ") else (
            f"{v.meas.metric} = {fmt(v.meas.error)}, above the tolerance "
            f"{fmt(v.meas.tolerance)}" + (f"; {v.meas.note}" if v.meas.note else ""))
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
        if state["compile"]:
            res.status, res.exception = "compile-limit", state["compile"]
            res.message = (f"{state['compile']} -- "
                           + recompile_advice(getattr(call, "compile_raised", None)))
        elif state["unsupported"]:
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


def stopped(res, exc):
    """Fill ``res`` for a target that hung (TargetTimeout) or exited (TargetAborted)."""
    case = getattr(exc, "case", None)
    res.status = "timeout" if isinstance(exc, TargetTimeout) else "aborted"
    res.message = stop_message(exc)
    res.exception = f"{type(exc.exc).__name__}: {exc.exc}" if isinstance(exc, TargetAborted) \
        else None
    if case is not None:
        res.input = case.describe()
        res.array = _small_array(case.G)
        res.counterexample = np.array(case.G, copy=True)


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
    #: the command that runs this check again (a list of arguments; None from Python without
    #: a target name): every command the report prints starts from it
    command: list | None = None

    @property
    def failures(self) -> list:
        bad = {"FAIL", "timeout", "aborted"} | ({"warn", "unsupported"} if self.strict
                                                else set())
        return [r for r in self.results if r.status in bad]

    @property
    def evidence(self) -> list:
        """Properties that ran on at least one input with a claim and passed.  A pass that
        counted no input (the first-call or import row) is not evidence."""
        return [r for r in self.results if r.status == "pass" and r.examples > 0]

    @property
    def outcome(self) -> str:
        """CONFORMING needs evidence (a property that ran with a claim and passed) and no
        failure; a hang, an exit or no evidence at all are outcomes of their own."""
        statuses = {r.status for r in self.results}
        if "timeout" in statuses:
            return "TIMEOUT"
        if "aborted" in statuses:
            return "TARGET EXITED"
        if self.failures:
            return "NOT CONFORMING"
        if not self.evidence or "compile-limit" in statuses:
            # a property torch.compile's recompile limit stopped has no verdict either way
            return "INCONCLUSIVE"
        return "CONFORMING"

    @property
    def conforming(self) -> bool:
        return self.outcome == "CONFORMING"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def failed(self, name: str) -> bool:
        return any(r.name == name and r.status in ("FAIL", "warn") for r in self.results)

    def status(self, name: str) -> str:
        for r in self.results:
            if r.name == name:
                return r.status
        raise KeyError(name)

    def rerun(self, *extra, drop=()) -> str | None:
        """The command that reruns this check with ``extra`` arguments (options in ``drop``
        and their values left out), or None when the check did not come from a target name."""
        if self.command is None:
            return None
        return shell_join(_drop_options(self.command, drop) + list(extra))

    def groups(self) -> list:
        """Failing results grouped by cause: [((status, cause), [results])], largest group
        first; the status is the worst in the group (FAIL before warn)."""
        out = {}
        for r in self.results:
            if r.status in ("FAIL", "warn", "timeout", "aborted") or r in self.failures:
                out.setdefault(_cause_key(r), []).append(r)
        rank = {"timeout": 0, "aborted": 0, "FAIL": 1, "unsupported": 2, "warn": 3}
        groups = [((min((m.status for m in ms), key=lambda s_: rank.get(s_, 9)),
                    _cause_text(ms[0])), ms) for ms in out.values()]
        return sorted(groups, key=lambda kv: (rank.get(kv[0][0], 9), -len(kv[1])))

    def summary(self) -> list:
        """The lines that lead the report: verdict, cause, smallest counterexample, next."""
        outcome = self.outcome
        lines = [f"verdict: {outcome} (exit {self.exit_code})"]
        groups = self.groups()
        if outcome in ("TIMEOUT", "TARGET EXITED"):
            r = next(r for r in self.results if r.status in ("timeout", "aborted"))
            lines.append(f"  cause: {r.message.splitlines()[0]}")
            if r.input:
                lines.append(f"  input: {describe_text(r.input)}")
            skipped = [q.name for q in self.results if q.status == "not-run"]
            if skipped:
                lines.append(f"  not run after it: {len(skipped)} "
                             f"propert{'y' if len(skipped) == 1 else 'ies'}")
        elif outcome == "NOT CONFORMING":
            (status, cause), members = groups[0]
            names = ", ".join(q.name for q in members[:6]) + (
                f" (+{len(members) - 6} more)" if len(members) > 6 else "")
            lines.append(f"  cause: {cause} -- {len(members)} propert"
                         f"{'y' if len(members) == 1 else 'ies'}: {names}")
            if len(groups) > 1:
                lines.append(f"  and {len(groups) - 1} other cause"
                             f"{'s' if len(groups) > 2 else ''} (below)")
            small = _smallest(members)
            if small is not None:
                lines.append(f"  smallest counterexample ({small.name}): "
                             f"{describe_text(small.input)}")
            lines.extend("  next: " + n for n in self._next_steps(groups))
        elif outcome == "INCONCLUSIVE":
            counts = {}
            for r in self.results:
                counts.setdefault(r.status, []).append(r.name)
            compiled = counts.get("compile-limit")
            if compiled:
                first = next(r for r in self.results if r.status == "compile-limit")
                lines.append(f"  cause: torch.compile's recompile limit stopped the target in "
                             f"{len(compiled)} propert{'y' if len(compiled) == 1 else 'ies'}: "
                             f"{', '.join(compiled)}")
                lines.append("  next: " + first.message.split(" -- ", 1)[-1])
                few = self.rerun("--shapes", "few", drop=("--shapes",)) \
                    if self.op != "update" else None
                if few:
                    lines.append(f"  next: {few}")
            else:
                lines.append("  no property ran on an input with a claim and passed: "
                             + "; ".join(f"{len(v)} {k}" for k, v in counts.items()))
            if "no-claim" in counts:
                lines.append("  next: the spec's tolerance model makes no claim on the drawn "
                             "inputs (dtype too low for the condition numbers): lower "
                             "--max-kappa, claim a higher --dtype, or fewer --steps limits")
            if "unsupported" in counts:
                lines.append("  next: the target refused every optional input class it was "
                             "given; run the plain-input properties too (drop --property)")
            if "n/a" in counts:
                lines.append("  next: the properties run do not apply to this claim; "
                             "--list-properties shows which do")
        else:
            noclaim = [r.name for r in self.results if r.status == "no-claim"]
            lines.append(f"  evidence: {len(self.evidence)} properties passed on inputs with a "
                         "claim" + (f"; no claim (accuracy not judged): {', '.join(noclaim)}"
                                    if noclaim else ""))
        compiled = [r.name for r in self.results if r.status == "compile-limit"]
        if compiled and outcome != "INCONCLUSIVE":
            lines.append(f"  also: torch.compile's recompile limit stopped {', '.join(compiled)} "
                         "(no verdict there)" + (": rerun with --shapes few"
                                                 if self.op != "update" else ""))
        return lines

    def _next_steps(self, groups) -> list:
        steps = []
        (status, cause), members = groups[0]
        if any(getattr(r, "type_mistake", False) for r in members):
            steps.append("return one array (the input's type, shape and dtype), not a list, "
                         "tuple or scalar")
        elif cause.startswith("target raised"):
            steps.append("the target raised on input the claim covers: make it accept that "
                         "input, or narrow the claim (--full-rank-only, --shapes few, ...)")
        first = members[0]
        if first.name in PSEUDO_PROPERTIES:   # not a property: --property cannot select it
            return steps
        cmd = self.rerun("--property", first.name, drop=("--property", "--json"))
        if cmd:
            steps.append(f"reproduce one property: {cmd}")
            steps.append("write the shrunk inputs as .npy files: add --save-failures DIR")
        return steps

    def to_dict(self) -> dict:
        return {"schema": JSON_SCHEMA, "swanref_spec": SPEC_VERSION, "op": self.op,
                "target": self.target,
                "claim": self.claim, "examples_per_property": self.examples, "seed": self.seed,
                "strict": self.strict, "outcome": self.outcome,
                "conforming": self.conforming, "exit_code": self.exit_code,
                "failed_properties": [r.name for r in self.failures],
                "evidence": [r.name for r in self.evidence],
                "causes": [{"status": st_, "cause": cause,
                            "properties": [r.name for r in members]}
                           for (st_, cause), members in self.groups()],
                "summary": self.summary(),
                "command": self.rerun(),
                "matches_preset": self.matches_preset, "hints": list(self.hints),
                "results": [r.to_dict() for r in self.results]}

    def table(self) -> str:
        claim = ", ".join(f"{k}={v}" for k, v in self.claim.items() if k != "op")
        lines = [f"swanref check {self.op} {self.target}"]
        lines.extend(self.summary())
        lines.extend([f"  claim: {claim}",
                      f"  {self.examples} examples per property, seed {self.seed}, spec "
                      f"{SPEC_VERSION}", ""])
        w = max([len(r.name) for r in self.results] + [8])
        lines.append(f"{'property':<{w}}  {'result':<11}  {'worst error':>11}  "
                     f"{'tolerance':>10}  {'n':>4}  input")
        lines.append("-" * (w + 60))
        not_run = [r for r in self.results if r.status == "not-run"]
        for r in self.results:
            if r.status == "not-run":
                if r is not_run[0]:
                    lines.append(f"{'...':<{w}}  {'not-run':<11}  {len(not_run)} more "
                                 f"(--list-properties): {r.message.removeprefix('not run: ')}")
                continue
            brief = {k: r.input[k] for k in ("probe", "shape", "dtype", "kappa", "rank", "seed",
                                             "zero")
                     if r.input and k in r.input}
            what = describe_text(brief) if r.input else (r.message.splitlines()[0] if (
                r.status in ("n/a", "unsupported", "no-claim", "not-run") and r.message)
                else "the recompile limit (see the top)" if r.status == "compile-limit"
                else "")
            lines.append(f"{r.name:<{w}}  {r.status:<11}  {fmt(r.error):>11}  "
                         f"{fmt(r.tolerance):>10}  {r.examples:>4}  {what}")
        for (status, cause), members in self.groups():
            first = _smallest(members) or members[0]
            lines.append("")
            if len(members) == 1:
                lines.append(f"[{status}] {first.name}: {first.doc}")
            else:
                lines.append(f"[{status}] {len(members)} properties, one cause: {cause}")
                lines.extend(textwrap.wrap(", ".join(f"{q.name} ({q.status})" if q.status !=
                                                     status else q.name for q in members),
                                           width=96, initial_indent="  in: ",
                                           subsequent_indent="      "))
                lines.append(f"  the smallest case ({first.name}: {first.doc}):")
            lines.extend("  " + ln for ln in first.message.splitlines())
            if first.array is not None:
                arr = np.array(first.array)
                with np.printoptions(precision=17, linewidth=100, threshold=100):
                    lines.append("  shrunk input (float64 view of the array passed):")
                    lines.extend("    " + ln for ln in repr(arr).splitlines())
        lines.append("")
        outcome = self.outcome
        if outcome == "CONFORMING":
            lines.append("verdict: CONFORMING" + (
                " (advisory warnings above)" if any(r.status == "warn" for r in self.results)
                else ""))
        elif outcome == "NOT CONFORMING":
            names = ", ".join(r.name for r in self.failures)
            if len(self.failures) > 4:
                n = len(self.groups())
                names = (f"{len(self.failures)} properties, {n} cause{'s' if n > 1 else ''} "
                         "(the first at the top)")
            lines.append(f"verdict: NOT CONFORMING -- failed: {names}")
        else:
            lines.append(f"verdict: {outcome} (exit {self.exit_code}) -- the cause is at the top")
        lines.extend(self.hints)
        return "\n".join(lines)


#: results that are not properties of the catalogue (the first call, the import)
PSEUDO_PROPERTIES = ("first_call", "import")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _cause_text(r) -> str:
    text = r.cause or (r.message.splitlines()[0] if r.message else r.status)
    return text.split(" (after accepting other ")[0].strip()


def _cause_key(r) -> str:
    """What a failure is, without the numbers of its input: equal keys, one mistake."""
    return _NUMBER.sub("#", _cause_text(r))


def _smallest(results):
    best = None
    for r in results:
        if r.input and "shape" in r.input:
            size = math.prod(r.input["shape"])
            if best is None or size < best[0]:
                best = (size, r)
    return best[1] if best else None


def shell_join(args) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def _drop_options(args, drop):
    """``args`` without the options in ``drop`` and their values (``--opt v``, ``--opt=v``)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in drop:
            skip = "=" not in a and name not in _FLAGS
            continue
        out.append(a)
    return out


#: options without a value (for _drop_options)
_FLAGS = {"--json", "--strict", "--full-rank-only", "--rescale", "--no-rescale", "--row-norm",
          "--complex", "--list-properties", "--list-presets"}


#: the defaults of the options of :func:`check` (None there means "not given": an option that
#: does not apply to the operator is refused only when given)
DEFAULTS = {"axis": -1, "eps": 0.0, "method": "svd", "rescale": True, "iters": 5,
            "max_side": 8, "examples": 30, "seed": 0}

#: which operators each reading option applies to
APPLIES = {"axis": ("grad_norm", "swan_update"),
           "eps": ("grad_norm", "swan_update", "sinkgd_update"),
           "eps_form": ("sinkgd_update",),
           "rescale": ("swan_update",), "iters": ("sinkgd_update",),
           "full_rank_only": ("whiten", "swan_update")}

#: the options of OP update (spec 9), refused for the other operators
UPDATE_OPTIONS = ("scale", "scale_factor", "stack_dims", "row_norm", "complex", "tolerance")


def _given(value) -> bool:
    return value is not None and value is not False


def _refuse(op, given: dict, why: str):
    bad = [k for k, v in given.items() if _given(v)]
    if bad:
        opts = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise UsageError(f"{opts} {'does' if len(bad) == 1 else 'do'} not apply to {why}")


def _jax_compile_time(check_fn):
    """For ``array_type='jax'``: time the target's first call per (shape, dtype) -- tracing
    and XLA compilation -- apart from the repeats, and say so in the report (issue 26)."""
    @functools.wraps(check_fn)
    def run(fn, op, *args, array_type="numpy", **kw):
        timer = FirstCallTimer(fn) if array_type == "jax" and callable(fn) else None
        report = check_fn(timer or fn, op, *args, array_type=array_type, **kw)
        if timer is not None and timer.signatures:
            report.hints.append(
                f"JAX target: {timer.first:.2f} s in the first call per shape and dtype "
                f"({len(timer.signatures)} signatures: tracing and compilation), "
                f"{timer.rest:.2f} s in the repeated calls; --shapes few draws fewer shapes")
        return report
    return run


@_jax_compile_time
def check(fn, op, *, dtype=None, axis=None, eps=None, method=None, steps=None, beta=None,
          scaling=None, rescale=None, iters=None, max_kappa=None, max_side=None,
          full_rank_only=False, examples=None, seed=None, properties=None, strict=False,
          array_type="numpy", target_name=None, preset=None, coefficients=None,
          kwargs=None, shapes=None, suggest=True, timeout=DEFAULT_TIMEOUT_S, scale=None,
          scale_factor=None, stack_dims=None, row_norm=False, complex=False, tolerance=None,
          command=None, claim=None, eps_form=None, two_d_only=False) -> CheckReport:
    """Run the property catalogue for ``op`` on callable ``fn``; returns a CheckReport.

    The keywords are the CLI's options (``--max-kappa`` -> ``max_kappa``); one that does not
    apply to ``op`` raises UsageError, as on the command line.  ``kwargs`` are bound to ``fn``
    (``fn(G, **kwargs)``; the CLI's ``--kwarg``).  ``shapes``: ``None`` (hypothesis draws the
    shapes) or ``"few"`` (a fixed small set, :data:`FEW_SHAPES`, for JIT-compiled targets).
    ``preset`` (with ``coefficients`` for ``'custom'``) checks a named orthogonalisation
    preset instead of the reading given by ``method``/``steps``/....  ``op='update'`` checks
    an optimizer update (spec 9) with ``preset``, ``scale``, ``scale_factor``, ``stack_dims``,
    ``row_norm``, ``complex``, ``tolerance``, ``steps``, ``coefficients``.  ``timeout``:
    seconds one call of the target may take (None: no deadline, and the target runs on the
    caller's thread).  When a whitening claim fails and the target matches a preset, the
    report says so (``suggest``).  ``command``: the CLI arguments of this check, for the
    commands the report prints (built from the keywords when ``target_name`` is given).
    ``claim`` (a swanref.verify.claims.Claim) replaces the reading keywords (docs/spec.md 11.5).
    """
    overrides = None
    if claim is not None and op != "update":  # OP update takes the claim as it is, below
        kw = operator_arguments(claim, op)
        preset, coefficients, dtype, steps = (kw.get("preset"), kw.get("coefficients"),
                                              kw["dtype"], kw["steps"])
        overrides = kw.get("overrides")
        method, beta, scaling = kw.get("method", method), kw.get("beta"), kw.get("scaling")
        eps, eps_form = kw.get("eps", eps), kw.get("eps_form", eps_form)
        two_d_only = kw.get("two_d_only", two_d_only)
    from swanref.verify.properties import OPS, Claim, properties_for

    raw_fn, fn = fn, bind(fn, kwargs)
    if shapes not in (None, "few", "any"):
        raise UsageError(f"--shapes must be 'few' or 'any', got {shapes!r}")
    runner = TargetRunner(timeout)
    if command is None and target_name is not None:
        command = _command(op, target_name, dict(
            dtype=dtype, axis=axis, eps=eps, method=method, steps=steps, beta=beta,
            scaling=scaling, rescale=rescale, iters=iters, max_kappa=max_kappa,
            max_side=max_side, full_rank_only=full_rank_only, examples=examples, seed=seed,
            properties=properties, strict=strict, array_type=array_type, preset=preset,
            coefficients=coefficients, kwargs=kwargs, shapes=shapes, timeout=timeout,
            scale=scale, scale_factor=scale_factor, stack_dims=stack_dims, row_norm=row_norm,
            complex=complex, tolerance=tolerance))

    if op == "update":  # spec 9: fixed probes, swanref.verify.update_properties
        _refuse(op, dict(axis=axis, eps=eps, method=method, beta=beta, scaling=scaling,
                         rescale=rescale, iters=iters, max_kappa=max_kappa, max_side=max_side,
                         full_rank_only=full_rank_only, examples=examples, seed=seed,
                         shapes=None if shapes in (None, "any") else shapes),
                "OP update (fixed probes, spec 9)")
        # imported here: update_properties imports this module's report types (a circle)
        from swanref.verify.update_properties import check_update
        fn = bind_arrays(raw_fn, kwargs, array_type, runner)
        report = check_update(  # None: not stated (a preset's own reading, as the CLI's)
            fn, preset=preset, scale=scale, scale_factor=scale_factor,
            stack_dims=stack_dims, row_norm=row_norm, steps=steps,
            coefficients=coefficients, dtype=dtype, complex=complex, tolerance=tolerance,
            properties=properties, array_type=array_type, target_name=target_name,
            strict=strict, runner=runner, claim=claim)
        report.command = command
        return report
    dtype = "float64" if dtype is None else dtype  # OP update: None is the preset's own
    if op not in OPS:
        raise UsageError(f"unknown OP {op!r}; choose one of {', '.join(OPS)}, update")
    _refuse(op, {k: v for k, v in zip(UPDATE_OPTIONS, (scale, scale_factor, stack_dims,
                                                        row_norm, complex, tolerance))},
            f"OP {op} (they are OP update's)")
    for key, value in (("axis", axis), ("eps", eps), ("eps_form", eps_form),
                       ("rescale", rescale), ("iters", iters),
                       ("full_rank_only", full_rank_only)):
        if _given(value) and op not in APPLIES[key]:
            _refuse(op, {key: value}, f"OP {op} (only to {', '.join(APPLIES[key])})")
    examples = DEFAULTS["examples"] if examples is None else examples
    seed = DEFAULTS["seed"] if seed is None else seed
    shapes = FEW_SHAPES if shapes == "few" else None
    if preset is not None:
        _refuse(op, dict(axis=axis, eps=eps, rescale=rescale, iters=iters,
                         max_kappa=max_kappa, max_side=max_side,
                         full_rank_only=full_rank_only), "a --preset check")
        report = check_preset(fn, preset, dtype=dtype, steps=steps, examples=examples,
                              seed=seed, strict=strict, array_type=array_type,
                              target_name=target_name, op=op, method=method or "svd",
                              beta=beta, scaling=scaling, coefficients=coefficients,
                              shapes=shapes, properties=properties, runner=runner,
                              overrides=overrides)
        report.command = command
        return report
    if coefficients is not None:
        raise UsageError("--coefficients needs --preset (e.g. --preset custom)")
    method = method or DEFAULTS["method"]
    dt = _parse_dtype(dtype)
    _validate_reading(op, method, steps, beta, scaling)
    if eps_form not in (None, "clamp", "add"):
        raise UsageError(f"a SinkGD line epsilon is 'clamp' (max(||line||, eps)) or 'add' "
                         f"(||line|| + eps), got eps_form={eps_form!r}")
    claim = Claim(op, dt, axis=DEFAULTS["axis"] if axis is None else axis,
                  eps=DEFAULTS["eps"] if eps is None else eps, method=method, steps=steps,
                  eps_form=eps_form or "clamp", two_d_only=bool(two_d_only),
                  beta=beta, scaling=scaling,
                  rescale=DEFAULTS["rescale"] if rescale is None else rescale,
                  iters=DEFAULTS["iters"] if iters is None else iters, max_kappa=max_kappa,
                  max_side=DEFAULTS["max_side"] if max_side is None else max_side,
                  full_rank_only=full_rank_only, shapes=shapes)
    props = properties_for(claim)
    if properties:
        known = {p.name for p in props}
        unknown = [p for p in properties if p not in known]
        if unknown:
            raise UsageError(f"unknown properties for {op}: {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        props = [p for p in props if p.name in properties]
    call = make_call(fn, array_type, runner)
    report = CheckReport(op, target_name or getattr(fn, "__qualname__", repr(fn)),
                         claim.describe(), examples, seed, strict, command=command)
    if smoke_call(call, dt, shapes, report):
        report.results.extend(_not_run(props, report.results[0]))
        return report
    with np.errstate(all="ignore"):
        for i, p in enumerate(props):
            res = run_property(p, claim, call, examples, seed)
            report.results.append(res)
            if res.status in ("timeout", "aborted"):
                report.results.extend(_not_run(props[i + 1:], res))
                break
    refused_everything(call, report)
    if suggest and op == "whiten" and report.outcome == "NOT CONFORMING":
        _suggest_preset(report, call, dt, target_name)
    compile_note(report, call)
    runner.close()
    return report


def compile_note(report, call):
    """Say in ``report`` that torch.compile's recompile limit was raised for the target's calls
    (targets.compile_room): the user's torch config is never changed silently."""
    raised = getattr(call, "compile_raised", None) or {}
    if "recompile_limit" in raised:
        report.hints.append(
            f"note: torch._dynamo.config.recompile_limit was {raised['recompile_limit']}; the "
            f"check raised it to {COMPILE_ROOM} around each call of the target, on the thread "
            "that calls it, and put it back after (a compiled target compiles per shape)")


def refused_everything(call, report, what="fn(G) with one array"):
    """A usage error (exit 2) when the target raised on every call of the check and never
    returned: nothing about its numbers was seen, so no verdict -- 'NOT CONFORMING' with
    every property failing on one exception would only hide that it cannot be called so."""
    if call.returned or call.raised is None or any(
            r.status in ("timeout", "aborted") for r in report.results):
        return
    raise UsageError(f"the target raised on every input of the check ({call.calls} calls, "
                     f"none returned): {call.raised.splitlines()[0][:300]} -- it cannot be "
                     f"checked when called as {what}: bind its other arguments with --kwarg "
                     "name=value, convert the array with --array-type, set its dtype with "
                     "--dtype, or fix the error")


def _not_run(props, cause) -> list:
    return [PropertyResult(p.name, "not-run", p.level, p.doc,
                           message=f"not run: {cause.name} stopped the check ({cause.status})")
            for p in props]


def _command(op, target, opts) -> list:
    """The CLI arguments that run the check ``opts`` describes (non-default options only)."""
    args = ["swanref", "check", op, target]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if key == "timeout" and value is None:
            args += ["--timeout", "0"]          # no deadline
            continue
        if value is None or value is False or (key == "dtype" and value == "float64") or (
                key == "array_type" and value == "numpy") or (
                key == "shapes" and value in ("any",)) or (
                key == "timeout" and value == DEFAULT_TIMEOUT_S):
            continue
        if key == "properties":
            for name in value:
                args += ["--property", name]
        elif key == "kwargs":
            for name, v in value.items():
                args += ["--kwarg", f"{name}={v!r}" if not isinstance(v, str) else
                         f"{name}={v}" if _literal_is_string(v) else f"{name}={v!r}"]
        elif key == "rescale":
            args.append("--rescale" if value else "--no-rescale")
        elif value is True:
            args.append(flag)
        elif key == "coefficients":
            if isinstance(value, (str, os.PathLike)):
                args += [flag, os.fspath(value)]
            else:
                return None  # a table given from Python has no command-line form
        elif key == "shapes" and not isinstance(value, str):
            return None
        else:
            args += [flag, str(value)]
    return args


def _literal_is_string(v: str) -> bool:
    """Does ``--kwarg name=v`` read back as the string ``v`` (parse_kwarg)?"""
    try:
        ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return True
    return False


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


def _numeric_list(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) or _numeric_list(x) for x in v)


def bind_arrays(fn, kwargs, array_type, runner=None):
    """``bind(fn, kwargs)``, except that number lists become arrays of the target's framework in
    the gradient's precision when the target refuses the lists (optax's
    ``orthogonalize_via_newton_schulz(x, ns_coeffs)`` reads ``ns_coeffs.ndim``): one trial call
    on a float32 4x7 gradient decides, through ``runner``'s deadline."""
    from swanref.verify.properties import TargetError  # a circle at the top (as in smoke_call)
    lists = {k for k, v in (kwargs or {}).items() if _numeric_list(v)}
    plain = bind(fn, kwargs)
    if not lists or array_type not in ("jax", "torch"):
        return plain
    G = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    try:
        make_call(plain, array_type, runner)(G)
        return plain
    except TargetError as exc:
        if not re.match(r"target raised (AttributeError|TypeError)", str(exc)):
            return plain

    def with_arrays(G, **extra):
        dt = G.real.dtype if hasattr(G, "real") else G.dtype
        if array_type == "torch":
            import torch
            conv = {k: torch.tensor(kwargs[k], dtype=dt) for k in lists}
        else:
            import jax.numpy as jnp
            conv = {k: jnp.asarray(kwargs[k], dtype=dt) for k in lists}
        return fn(G, **{**kwargs, **conv, **extra})
    with_arrays.__qualname__ = getattr(fn, "__qualname__", repr(fn))
    try:
        make_call(with_arrays, array_type, runner)(G)
    except TargetError:
        return plain  # the lists were not the problem: the check reports the target's error
    return with_arrays


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


def smoke_call(call, dt, shapes=None, report=None, make=None) -> bool:
    """One plain call before any property.  A TypeError there (missing arguments, wrong array
    type, refused dtype) is a usage error, exit 2.  A hang, an exit, or a return that is not
    an array (a list, a tuple, a scalar) ends the check with that one cause in ``report``
    (returns True); every property would only repeat it.  So is an exception on every plain
    shape (refuses_plain_input).  ``make(shape)``: the level's own probe of that shape."""
    from swanref.verify.properties import TargetError
    m, n = (shapes or ((4, 7),))[0]
    G = make((m, n)) if make else np.random.default_rng(0).standard_normal((m, n)).astype(dt)
    where = getattr(call, "where", None)
    if where is not None:
        call.where = "its first call (before any property)"
    res = PropertyResult("first_call", "pass", "required",
                         f"the target accepts one {dt} array of shape {G.shape} and returns "
                         "an array")
    try:
        call(G)
    except TargetError as exc:
        if isinstance(exc.__cause__, TypeError):
            raise UsageError(f"the target cannot be called with one {dt} array of shape "
                             f"{G.shape}: {exc.__cause__.__class__.__name__}: {exc.__cause__} "
                             "(bind other arguments with --kwarg name=value; --array-type "
                             "converts the array; --dtype sets its dtype)") from exc
        if not getattr(exc, "type_mistake", False):
            refuses_plain_input(call, dt, exc, (m, n), make=make)
        if not getattr(exc, "type_mistake", False) or report is None:
            return False
        res.status, res.error, res.tolerance = "FAIL", math.inf, 0.0
        res.message = f"{exc} (on a {dt} array of shape {G.shape})"
        res.cause, res.type_mistake = str(exc), True
        res.input = {"shape": list(G.shape), "dtype": str(dt)}
    except (TargetAborted, TargetTimeout) as exc:
        if report is None:
            raise
        exc.case = None
        stopped(res, exc)
        res.input = {"shape": list(G.shape), "dtype": str(dt)}
    else:
        return False
    finally:
        if where is not None:
            call.where = where
    res.examples = 1
    report.results.append(res)
    return True


def refuses_plain_input(call, dt, first, first_shape=(4, 7), shapes=FEW_SHAPES[1:], make=None):
    """After the first call raised ``first`` (a TargetError): a UsageError (exit 2) when the
    target also raises on a tall and a square array -- it refuses every plain input, so the
    check could only repeat that exception as every property's failure."""
    from swanref.verify.properties import TargetError
    tried = ["x".join(map(str, first_shape))]
    for i, (m, n) in enumerate(shapes):
        G = make((m, n)) if make else \
            np.random.default_rng(i + 1).standard_normal((m, n)).astype(dt)
        try:
            call(G)
            return
        except TargetError as exc:
            if getattr(exc, "type_mistake", False):
                return
        tried.append(f"{m}x{n}")
    raise UsageError(f"the target raised on every plain input it was given ({dt} arrays "
                     f"{', '.join(tried)}): {first} -- a target must return the "
                     "operator's result for a plain 2-D array: bind its other arguments with "
                     "--kwarg name=value, convert the array with --array-type, set the dtype "
                     "with --dtype, or fix the error") from first


def _suggest_preset(report, call, dt, target_name):
    """After a failed whitening claim: does the target match one of the presets?"""
    name = "bfloat16" if dt.name == "bfloat16" else str(dt)
    if name not in MATCH_TOLERANCE:
        return
    try:
        found = identify(lambda G: call(np.asarray(G)), dtype=name)
    except (Exception, TargetAborted, TargetTimeout):  # noqa: BLE001 - a suggestion must
        return                                          # never break the report
    if not found:
        return
    best = found[0]
    report.matches_preset = {"preset": best[0], "distance": json_number(best[1]), "dtype": name,
                             "others": [f[0] for f in found[1:]]}
    report.hints.append(f"note: the claim failed, but the target matches preset {best[0]!r} "
                        f"at {name} (distance {best[1]:.3g}"
                        + (f"; also: {', '.join(f[0] for f in found[1:])}" if found[1:] else "")
                        + "); rerun with:")
    cmd = report.rerun("--preset", best[0], "--dtype", name, drop=PRESET_REPLACES)
    report.hints.append("  " + (cmd or f"check(fn, 'whiten', preset={best[0]!r}, "
                                       f"dtype={name!r})"))


#: options a --preset claim replaces or has no use for (dropped from a suggested command)
PRESET_REPLACES = ("--method", "--steps", "--beta", "--scaling", "--max-kappa", "--max-side",
                   "--full-rank-only", "--property", "--dtype", "--json")


#: claim-independent properties also run for a --preset claim
PRESET_GENERIC = ("shape_and_dtype", "input_not_modified", "zero_input")


def check_preset(fn, preset, *, dtype="float64", steps=None, examples=30, seed=0, strict=False,
                 array_type="numpy", target_name=None, op="whiten", method="svd", beta=None,
                 scaling=None, coefficients=None, shapes=None, kwargs=None, properties=None,
                 runner=None, overrides=None) -> CheckReport:
    """``--preset NAME``: does ``fn`` implement a named orthogonalisation preset?

    Runs swanref.presets.diagnose (fixed probes, the preset and its one-knob variants, each
    probe with its own tolerance) as the property ``matches_preset``, plus the
    claim-independent properties of the catalogue.  The closest variant names what differs;
    an input class the target refuses (a batch) is reported as ``unsupported`` with the
    exception, never as a mismatch.  ``coefficients`` (a list of (a, b, c), or a file path as
    read by ``swanref schedule``) replaces the table; ``preset='custom'`` requires it.
    ``overrides``: the claim's stated epsilon, epsilon form, safety factor or low-precision
    order as Preset fields (``swanref.presets.diagnose.OVERRIDABLE``), the source's own where
    it differs from the catalogue's.
    """
    from swanref.verify.properties import CATALOGUE, Claim

    fn = bind(fn, kwargs)
    shapes = FEW_SHAPES if shapes in ("few", FEW_SHAPES) else None
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
    coefficients_file = coefficients if isinstance(coefficients, (str, os.PathLike)) else None
    coefficients = load_coefficients(coefficients)
    if preset == "custom" and coefficients is None:
        raise UsageError("--preset custom needs --coefficients FILE (JSON list of [a, b, c] or "
                         "one 'a b c' per line)")
    try:
        presets.schedule(preset, steps, coefficients)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    known_props = ("matches_preset",) + PRESET_GENERIC
    if properties:
        unknown = [p for p in properties if p not in known_props]
        if unknown:
            raise UsageError(f"unknown properties for a --preset check: {', '.join(unknown)}; "
                             f"known: {', '.join(known_props)}")
    wanted = set(properties or known_props)
    call = make_call(fn, array_type, runner)
    claim_desc = {"op": "whiten", "preset": preset, "dtype": str(dtype)}
    if steps is not None:
        claim_desc["steps"] = steps
    if coefficients is not None:
        claim_desc["coefficients"] = [list(t) for t in coefficients]
    for k, v in (overrides or {}).items():
        claim_desc[{"norm": "eps_form"}.get(k, k)] = v
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
    generic = Claim("whiten", dt, shapes=(FEW_SHAPES if shapes in ("few", FEW_SHAPES)
                                          else None))
    generic_props = [p for p in CATALOGUE if p.name in PRESET_GENERIC and "whiten" in p.ops
                     and p.name in wanted]
    if smoke_call(call, dt, shapes, report):
        report.results.extend(_not_run(generic_props, report.results[0]))
        return report
    with np.errstate(all="ignore"):
        if "matches_preset" in wanted:
            t0 = time.perf_counter()
            call.where = "property matches_preset"
            try:
                d = presets.diagnose(probe_call, preset, dtype=str(dtype), steps=steps,
                                     coefficients=coefficients, overrides=overrides)
            except (TargetAborted, TargetTimeout) as exc:
                res = PropertyResult("matches_preset", "pass", "required",
                                     f"outputs match preset {preset!r}")
                stopped(res, exc)
                report.results.append(res)
                report.results.extend(_not_run(generic_props, res))
                return report
            top = "; ".join(f"{c.label}: {c.distance:.3g} (tol {c.tolerance:.3g})"
                            for c in d.details[:4])
            worst = d.worst_probe
            claim_row = d.claim_result
            res = PropertyResult("matches_preset", "pass" if d.match else "FAIL", "required",
                                 f"outputs match preset {preset!r} on swanref.presets' probes "
                                 "(relative Frobenius difference within each probe's "
                                 "tolerance, spec 8.6)",
                                 examples=len(d.per_probe), error=claim_row.distance,
                                 tolerance=claim_row.tolerance,
                                 input={"probe": worst, "dtype": str(dtype)} if worst else None,
                                 message=d.summary() + f"\n  closest variants: {top}",
                                 seconds=time.perf_counter() - t0, diagnosis=d.to_dict())
            res.cause = d.summary().splitlines()[0] if d.summary() else ""
            report.results.append(res)
            report.hints.extend(d.near_tie_lines())  # a pass can hide a closer candidate
            for cls, text in d.unsupported.items():
                limit = recompile_limit_hit(Exception(text))
                report.results.append(PropertyResult(
                    f"{cls}_probe", "compile-limit" if limit else "unsupported", "optional",
                    f"the preset's {cls} probe (an optional input class)",
                    message=f"{text} -- {recompile_advice(call.compile_raised)}" if limit
                    else text, exception=text))
        for i, p in enumerate(generic_props):
            res = run_property(p, generic, call, examples, seed)
            report.results.append(res)
            if res.status in ("timeout", "aborted"):
                report.results.extend(_not_run(generic_props[i + 1:], res))
                return report
    if coefficients is not None:
        report.hints.append("the schedule itself (slope at 0, band, blow-up margin): "
                            + (shell_join(["swanref", "schedule", os.fspath(coefficients_file)])
                               if coefficients_file is not None else
                               "swanref.presets.schedules.analyse(...)"))
    compile_note(report, call)
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
    p = _Parser(prog="swanref check",
                description="Check an implementation of a SWAN operator against the spec. "
                            "Exit 0 conforming, 1 not conforming, 2 usage or import "
                            "error, 3 inconclusive (no property ran with a claim and passed), "
                            "4 the target exited or raised a BaseException, 5 the target did "
                            "not return within --timeout.  The report goes to stdout; what "
                            "the target prints goes to stderr.")
    p.add_argument("op", choices=OPS + ("update",), metavar="OP",
                   help=f"one of {', '.join(OPS + ('update',))}")
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="module:function or path/file.py:function (array in, array out)")
    g = p.add_argument_group("claimed reading")
    g.add_argument("--axis", type=_axis, default=None,
                   help="grad_norm, swan_update: statistics axis -1 (default), -2 or long")
    g.add_argument("--eps", type=float, default=None,
                   help="grad_norm, swan_update: eps added to the variance (default 0); "
                        "sinkgd_update: every line norm clamped to at least eps "
                        "(max(||line||, eps); --set eps_form=add for ||line|| + eps)")
    g.add_argument("--method", default=None,
                   help="whiten, swan_update: svd (exact, the default), eigh (exact, kappa^2 "
                        "accuracy), newton_schulz (iterative)")
    g.add_argument("--steps", type=int, default=None,
                   help="newton_schulz: iteration count (default 10); --preset and OP "
                        "update: polynomial steps (default: the preset's)")
    g.add_argument("--beta", type=float, default=None,
                   help="newton_schulz: step size beta (default 0.5, the convergent reading)")
    g.add_argument("--scaling", default=None,
                   help=f"newton_schulz: initial scaling, one of {', '.join(SCALINGS)} "
                        "(default gram_fro)")
    g.add_argument("--rescale", dest="rescale", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="swan_update: the target rescales to RMS 1 (the default) or not")
    g.add_argument("--iters", type=int, default=None,
                   help="sinkgd_update: iterations (default 5)")
    g.add_argument("--full-rank-only", action="store_true",
                   help="whiten, swan_update: claim only full-rank input (skips "
                        "rank_deficient)")
    g.add_argument("--preset", default=None,
                   help="whiten: claim a named orthogonalisation preset of swanref.presets "
                        "(e.g. muon_ns5; --list-presets); --steps passes through; 'custom' "
                        "takes its table from --coefficients FILE; OP update: the "
                        "orthogonaliser (default svd)")
    g.add_argument("--kwarg", action="append", default=None, metavar="NAME=VALUE",
                   help="bind a keyword argument of the target: fn(G, NAME=VALUE); VALUE is a "
                        "Python literal (5, 1e-7, True, (3.4, -4.7, 2.0)) or a string; "
                        "repeatable")
    h = p.add_argument_group("inputs")
    h.add_argument("--dtype", default=None,
                   help="dtype of the arrays passed to the target, and the precision claimed: "
                        "float64 (default), float32, float16, bfloat16; OP update --preset: "
                        "the compute dtype (default: the preset's source's)")
    h.add_argument("--shapes", default=None, choices=("any", "few"),
                   help="any (default): hypothesis draws the shapes; few: a fixed set "
                        f"{', '.join('x'.join(map(str, s)) for s in FEW_SHAPES)} (and batches "
                        "of them), for JIT-compiled targets that recompile per shape; values "
                        "and spectra are drawn as usual")
    h.add_argument("--max-kappa", type=float, default=None,
                   help="largest condition number drawn (default depends on dtype/method)")
    h.add_argument("--max-side", type=int, default=None,
                   help="largest matrix side drawn (default 8)")
    h.add_argument("--examples", type=int, default=None,
                   help="hypothesis examples per property (default 30)")
    h.add_argument("--seed", type=int, default=None,
                   help="seed of the drawn inputs (default 0: reproducible runs)")
    h.add_argument("--array-type", default="numpy", choices=("numpy", "torch", "jax", "cupy"),
                   help="convert inputs to this framework before calling the target "
                        "(default numpy)")
    h.add_argument("--property", action="append", dest="properties", default=None,
                   help="run only this property (repeatable; default: all)")
    h.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="longest one call of the target (or its import) may take before the "
                        f"check stops with a timeout naming the probe (default "
                        f"{DEFAULT_TIMEOUT_S:g}; 0: no deadline)")
    u = p.add_argument_group("OP update (spec 9; --preset names the orthogonaliser, default svd)")
    u.add_argument("--scale", default=None,
                   help="scale rule: keller (default), moonlight, unit_rms, spectral, swan, "
                        "graft, none")
    u.add_argument("--scale-factor", type=float, default=None,
                   help="factor on the scale rule (default 1)")
    u.add_argument("--stack-dims", type=int, default=None,
                   help="leading axes indexing independent parameters (default 0)")
    u.add_argument("--row-norm", action="store_true", help="NorMuon row normalisation")
    u.add_argument("--complex", action="store_true", help="claim complex gradients")
    u.add_argument("--coefficients", default=None, metavar="FILE",
                   help="coefficient table (JSON or one 'a b c' per line) for --preset custom")
    u.add_argument("--tolerance", type=float, default=None,
                   help="relative distance accepted (default: by --dtype)")
    add_claim_arguments(u, preset=False)  # --claim FILE, --set KNOB=VALUE (docs/spec.md 11.5)
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="the report as one JSON document on stdout (schema "
                        f"{JSON_SCHEMA}, docs/verification.md)")
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
    """``swanref check``: the report on stdout, everything else (the target's prints
    included) on stderr; the exit status of :data:`EXIT_CODES` (2: usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    if "--list-presets" in argv:
        print(list_presets())
        return 0
    with private_hypothesis_home(), stdout_to_stderr() as out:
        code, text = _run(argv)
        if text is not None and out is not None:
            print(text, file=out)
            out.flush()
            text = None
    if text is not None:
        print(text)
    return code


def _update_claim_from_args(args):
    """OP update's claim: ``--preset NAME`` read as its source runs it (``Claim.from_preset``:
    compute dtype, N-D rule, epsilon, ...), below the options given, the ``--claim`` file and
    each ``--set`` (docs/spec.md 11.5)."""
    # imported here: update_properties imports this module's report types (a circle)
    from swanref.verify import update_properties as up
    try:
        given, name = up.update_claim_knobs(
            preset=args.preset, scale=args.scale, scale_factor=args.scale_factor,
            stack_dims=args.stack_dims, row_norm=args.row_norm, steps=args.steps,
            coefficients=args.coefficients, dtype=args.dtype, complex=args.complex,
            tolerance=args.tolerance)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid update claim: {exc}") from exc
    return claim_from_args(args, given, preset=False, write_out=name)


def _operator_claim_from_args(args):
    """An operator check with --claim/--set: the reading options give the base record."""
    base = {"preset": args.preset, "compute_dtype": args.dtype or "float64",
            "steps": args.steps}
    if args.preset is None:
        base.update(method=args.method, beta=args.beta, scaling=args.scaling)
    return claim_from_args(args, {k: v for k, v in base.items() if v is not None}, preset=False)


def _run(argv):
    """(exit status, report text or None); runs with stdout sent to stderr."""
    try:
        args = build_parser().parse_args(argv)
        kwargs = dict(parse_kwarg(k) for k in (args.kwarg or []))
        for name, value, low in (("--examples", args.examples, 1), ("--max-side", args.max_side, 2),
                                 ("--iters", args.iters, 1)):
            if value is not None and value < low:
                raise UsageError(f"{name} must be >= {low}")
        if args.max_kappa is not None and not args.max_kappa >= 1:
            raise UsageError("--max-kappa must be >= 1")
        if args.list_properties:
            return 0, _list_properties(args.op)
        if args.target is None:
            raise UsageError("the following arguments are required: TARGET")
        claim = None
        if args.op == "update":
            claim = _update_claim_from_args(args)
        elif args.claim is not None or args.set_knobs:
            claim = _operator_claim_from_args(args)
        dtype = args.dtype or "float64"
        timeout = args.timeout or None
        runner = TargetRunner(timeout)
        fn = load_target(args.target, runner)
        report = check(fn, args.op, dtype=dtype, axis=args.axis, eps=args.eps,
                       method=args.method, steps=args.steps, beta=args.beta,
                       scaling=args.scaling, rescale=args.rescale, iters=args.iters,
                       max_kappa=args.max_kappa, max_side=args.max_side,
                       full_rank_only=args.full_rank_only, examples=args.examples,
                       seed=args.seed, properties=args.properties, strict=args.strict,
                       array_type=args.array_type, target_name=args.target,
                       preset=args.preset, coefficients=args.coefficients, kwargs=kwargs,
                       shapes=args.shapes, timeout=timeout, scale=args.scale,
                       scale_factor=args.scale_factor, stack_dims=args.stack_dims,
                       row_norm=args.row_norm, complex=args.complex,
                       tolerance=args.tolerance, command=_cli_command(argv),
                       claim=claim)
    except UsageError as exc:
        print(f"swanref check: error: {exc}", file=sys.stderr)
        print("usage: swanref check OP TARGET [options]  (swanref check --help)",
              file=sys.stderr)
        return 2, None
    except (TargetAborted, TargetTimeout) as exc:  # at import
        report = CheckReport(args.op, args.target, {"op": args.op}, 0, 0,
                             command=_cli_command(argv))
        res = PropertyResult("import", "pass", "required", f"importing {args.target}")
        stopped(res, exc)
        report.results.append(res)
    except ImportError as exc:
        if getattr(exc, "name", "") == "hypothesis" or "hypothesis" in str(exc):
            print("swanref check: error: the checker needs hypothesis (pip install hypothesis)",
                  file=sys.stderr)
            return 2, None
        raise
    if args.save_failures:
        real_directory(args.save_failures, "--save-failures")
        for r in report.results:
            if r.counterexample is not None:
                with open_output(os.path.join(args.save_failures, f"{r.name}.npy"), "wb") as fh:
                    np.save(fh, r.counterexample, allow_pickle=False)
    text = json.dumps(report.to_dict(), indent=1) if args.json else report.table()
    return report.exit_code, text


def _list_properties(op) -> str:
    if op == "update":
        from swanref.verify import update_properties as up  # a circle at the top, as above
        return "\n".join(f"{q.name:<34} {q.level:<9} {q.doc}" for q in up.UPDATE_PROPERTIES)
    from swanref.verify.properties import Claim, properties_for
    return "\n".join(f"{p.name:<34} {p.level:<9} {p.input_class:<8} {p.doc}"
                     for p in properties_for(Claim(op)))


def _cli_command(argv) -> list:
    """``swanref check`` + the arguments given, minus those that only shape the output."""
    return ["swanref", "check"] + _drop_options(list(argv), ("--json", "--save-failures"))


@contextlib.contextmanager
def stdout_to_stderr():
    """While the check runs, file descriptor 1 and ``sys.stdout`` point at stderr, so nothing
    the target (or a library it calls, or C code) prints can reach the report's channel.

    Yields a stream on the process's real stdout for the report, or None when ``sys.stdout``
    was replaced by the caller (pytest's capsys, a notebook): then print the report to
    ``sys.stdout`` after the block, which restores it."""
    old = sys.stdout
    try:
        old.flush()
    except (OSError, ValueError):
        pass
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        saved = None
    sys.stdout = sys.stderr
    out = None
    try:
        if saved is not None and old is sys.__stdout__:
            out = os.fdopen(os.dup(saved), "w", encoding=getattr(old, "encoding", None)
                            or "utf-8", errors="replace")
        yield out
    finally:
        if out is not None:
            try:
                out.close()
            except OSError:
                pass
        sys.stdout = old
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def private_hypothesis_home():
    """Keep hypothesis's files (its constants cache, any database) out of the working folder
    while a command runs: a fresh temporary folder, removed afterwards; the previous setting
    is restored (``main()`` may run inside someone else's process, e.g. a test)."""
    try:
        from hypothesis import configuration
    except ImportError:
        yield
        return
    previous = getattr(configuration, "__hypothesis_home_directory", None)
    home = tempfile.mkdtemp(prefix="swanref-hypothesis-")
    configuration.set_hypothesis_home_dir(home)
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
