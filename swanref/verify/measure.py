"""Tolerance-aware assertions for SWAN operators, in the style of ``numpy.testing``.

Every check is split in two: a ``measure_*`` function returns a :class:`Measurement` (the
error under a named metric, the tolerance of the spec's model for that input, and a
description of the input), and the matching ``assert_*`` function raises
:class:`SwanrefAssertionError` when ``error > tolerance``.  The conformance checker
(``swanref check``) uses the same measurements, so a failing assertion and a failing checker
property say the same thing.

Tolerances come from :mod:`swanref.spec.tolerance` (spec section 8): they depend on the dtype the
implementation computes in, the matrix size and the condition number of the input, never on
one global ``rtol``.  The reference result is computed by swanref in float64 from the input's
exact values; its own error (the float64 tolerance) is added to the allowance.

Error metrics are *total*: they never return NaN, so ``error <= tol`` is always meaningful
(after xsf's ``extended_relative_error``):

* NaN vs NaN counts as agreement (error 0); NaN vs a number is an infinite error;
* +-Inf vs the same infinity is agreement; Inf vs anything else is an infinite error;
* where the reference is zero, the absolute error is used.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from swanref import ops as api
from swanref.spec import spectral
from swanref.spec.readings import WHITEN_METHODS, default_rank_rtol
from swanref.spec.tolerance import (TRUSTED_LIMIT, condition_number, exact_whitening_tolerance,
                         grad_norm_tolerance, newton_schulz_tolerance, output_roundoff,
                         sinkgd_tolerance, unit_roundoff)
from swanref.spec.validate import compute_dtype

__all__ = [
    "SwanrefAssertionError", "NoClaimError", "Measurement", "describe_input",
    "default_close_tolerance", "measure_close",
    "extended_absolute_error", "extended_relative_error", "mixed_error", "fro_error",
    "sinkgd_tolerance", "swan_update_tolerance",
    "measure_grad_norm", "measure_whitening", "measure_newton_schulz", "measure_swan_update",
    "measure_sinkgd", "measure_orthonormal_rows", "measure_partial_isometry",
    "measure_symmetric_psd", "measure_singular_values",
    "assert_close", "assert_grad_norm_close", "assert_whitening_close",
    "assert_newton_schulz_close", "assert_swan_update_close", "assert_sinkgd_close",
    "assert_orthonormal_rows", "assert_partial_isometry", "assert_symmetric_psd",
]



# -- errors and descriptions ------------------------------------------------------------------

class SwanrefAssertionError(AssertionError):
    """An operator output broke a property of the spec; ``.measurement`` has the numbers."""

    def __init__(self, measurement: "Measurement", msg: str = ""):
        self.measurement = measurement
        super().__init__(measurement.message(msg))


class NoClaimError(SwanrefAssertionError):
    """The spec's tolerance model makes no claim for this input: nothing was checked.

    Raised by every ``assert_*`` helper instead of passing (an assertion that cannot fail is
    not a pass).  It is an ``AssertionError``, so pytest reports the test as *failed* with the
    reason and what to do (float64 input, more steps, a claim the model covers); pass
    ``allow_no_claim=True`` to get the :class:`Measurement` (``claim=False``) instead.
    """

    def __init__(self, measurement: "Measurement", msg: str = "", advice: str = ""):
        self.measurement = measurement
        head = (f"NO CLAIM for property '{measurement.property}': the spec's tolerance model "
                "asserts nothing for this input, so nothing was checked (not a pass)")
        lines = [head + (f": {msg}" if msg else "")]
        lines.append(f"  error {fmt(measurement.error)}, tolerance {fmt(measurement.tolerance)}; "
                     f"metric: {measurement.metric}")
        lines.extend(measurement.context_lines())
        lines.append("  what to do: " + (advice or "use float64 input or a reading the model "
                                          "covers (docs/spec.md section 8)") +
                     "; or pass allow_no_claim=True to get the Measurement without asserting")
        AssertionError.__init__(self, "\n".join(lines))


def fmt(x) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}"


def describe_input(G, **extra) -> dict:
    """Shape, dtype, condition number and any extra fields (seed, flags) of an input."""
    arr = np.asarray(G)
    info = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.ndim >= 2 and arr.size and np.isfinite(arr.astype(np.float64)).all():
        a64 = arr.astype(np.float64)
        if np.any(a64):
            kappa = np.atleast_1d(condition_number(a64))
            info["kappa"] = float(np.max(kappa))
            s = np.linalg.svd(a64, compute_uv=False)
            rtol = default_rank_rtol(*arr.shape[-2:], float(np.finfo(np.float64).eps))
            info["rank"] = int(np.min(np.sum(s > rtol * s[..., :1], axis=-1)))
        else:
            info["kappa"] = 1.0
            info["rank"] = 0
    for key, value in extra.items():
        if value is not None:
            info[key] = value
    return info


def describe_text(info: dict) -> str:
    parts = []
    for key, value in info.items():
        if key == "array":
            continue
        if isinstance(value, float):
            value = fmt(value)
        elif isinstance(value, list) and key == "shape":
            value = "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") \
                + ")"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


@dataclass
class Measurement:
    """One comparison: ``error`` under ``metric`` against ``tolerance`` (``passed`` if <=).

    ``claim`` is False when the spec's model makes no accuracy claim for this input (e.g. a
    Newton-Schulz run whose predicted error exceeds ``TRUSTED_LIMIT``); such a measurement
    neither passes nor fails.
    """
    property: str
    error: float
    tolerance: float
    metric: str
    input: dict = field(default_factory=dict)
    claim: bool = True
    note: str = ""

    @property
    def passed(self) -> bool:
        """True only with evidence: a claim was made and the error is within it."""
        return self.claim and self.error <= self.tolerance

    @property
    def failed(self) -> bool:
        """A claim was made and the error exceeds it (``not passed and not failed``: no claim)."""
        return self.claim and not self.error <= self.tolerance

    @property
    def verdict(self) -> str:
        """``'passed'``, ``'failed'`` or ``'no claim'``."""
        return "no claim" if not self.claim else ("passed" if self.passed else "failed")

    @property
    def ratio(self) -> float:
        if not self.claim:
            return 0.0
        if self.tolerance > 0:
            return self.error / self.tolerance
        return 0.0 if self.error == 0 else math.inf

    def message(self, msg: str = "") -> str:
        head = {"failed": f"property '{self.property}' violated",
                "passed": f"property '{self.property}' holds",
                "no claim": f"property '{self.property}': no claim"}[self.verdict]
        lines = [head + (f": {msg}" if msg else "")]
        lines.append(f"  error {fmt(self.error)} vs tolerance {fmt(self.tolerance)} "
                     f"(ratio {fmt(self.ratio)}); metric: {self.metric}")
        lines.extend(self.context_lines())
        return "\n".join(lines)

    def context_lines(self) -> list:
        """The input it was measured on and its note, as indented message lines (shared by
        :meth:`message` and :class:`NoClaimError`)."""
        lines = ["  input: " + describe_text(self.input)] if self.input else []
        return lines + (["  " + self.note] if self.note else [])

    def to_dict(self) -> dict:
        return {"property": self.property, "error": json_float(self.error),
                "tolerance": json_float(self.tolerance), "metric": self.metric,
                "claim": self.claim, "input": self.input, "note": self.note}


def json_float(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


#: a tolerance this large (the largest distance between partial isometries, spec 8.2's cap)
#: asserts nothing: such a measurement is "no claim" (spec changelog, 0.2)
NO_CLAIM_TOLERANCE = 2.0

NO_CLAIM_ADVICE = {
    "grad_norm": "rows whose |mean|/std is too large for the claimed dtype (spec 8.1): compare "
                 "in float64, or claim the offset-free accuracy with offset_term=False if the "
                 "implementation shifts before summing (spec 2.5)",
    "whitening": "kappa is beyond what the claimed method and dtype resolve (spec 8.2): use "
                 "float64 input, method='svd' instead of 'eigh', or check the structure with "
                 "assert_symmetric_psd",
    "newton_schulz": "the predicted error exceeds spec 8.3's trusted limit: use more steps, "
                     "float64, or a better conditioned input",
    "swan_update": "the whitening step carries no claim (spec 8.3/8.4): use more steps, "
                   "float64, or whiten_method='svd'",
    "tolerance": "the tolerance is at its cap (2) and asserts nothing: pass a tighter tol",
}


def _judge(meas: Measurement, msg: str = "", *, allow_no_claim: bool = False,
           advice: str = "", looks_like_output=None) -> Measurement:
    """Raise unless ``meas`` passed with a claim: :class:`NoClaimError` when no claim was made
    (or the tolerance asserts nothing), :class:`SwanrefAssertionError` when it failed.

    ``looks_like_output`` (a callable, evaluated only on failure) says whether the *input*
    argument is itself a fixed point of the operator -- the sign of an expected output passed
    where the operator's input belongs.
    """
    if meas.claim and meas.tolerance >= NO_CLAIM_TOLERANCE:
        meas = replace(meas, claim=False,
                       note=(meas.note + "; " if meas.note else "") +
                       f"tolerance {fmt(meas.tolerance)} >= {NO_CLAIM_TOLERANCE:g} asserts nothing")
        advice = advice or NO_CLAIM_ADVICE["tolerance"]
    if not meas.claim:
        if allow_no_claim:
            return meas
        raise NoClaimError(meas, msg, advice)
    if meas.failed:
        if looks_like_output is not None and _safe(looks_like_output):
            msg = (msg + "; " if msg else "") + (
                "the second argument looks like an operator OUTPUT (it is its own result); "
                "these helpers take the operator's INPUT: assert_..._close(actual, input=G) "
                "with G the array the operator was applied to")
        raise SwanrefAssertionError(meas, msg)
    return meas


def _safe(check) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a hint must never replace the real failure
        return False


def _input_arg(fn: str, input, info: dict):
    """The operator's input, from ``input=`` or the deprecated keyword ``G=``."""
    if "G" in info:
        if input is not None:
            raise TypeError(f"{fn}() got the input twice (input= and G=); pass input=G only")
        warnings.warn(f"{fn}(..., G=...) is deprecated: the keyword is input= (the array the "
                      "operator was applied to, not an expected output)", DeprecationWarning,
                      stacklevel=3)
        input = info.pop("G")
    if input is None:
        raise TypeError(f"{fn}() missing the operator's input: call {fn}(actual, input=G) with "
                        "G the array the operator was APPLIED TO (not the expected output); "
                        "swanref computes the expected output from it in float64")
    return input


# -- total error metrics ------------------------------------------------------------------------

def as_float64(x) -> np.ndarray:
    if hasattr(x, "get") and type(x).__module__.split(".")[0] == "cupy":
        x = x.get()
    elif hasattr(x, "detach") and hasattr(x, "cpu"):  # torch, without importing it
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x).astype(np.float64)


def _special(a: np.ndarray, d: np.ndarray):
    """Masks: agreement on non-finite entries, and disagreement involving one."""
    both_nan = np.isnan(a) & np.isnan(d)
    same_inf = np.isinf(a) & np.isinf(d) & (np.sign(a) == np.sign(d))
    agree = both_nan | same_inf
    nonfinite = ~(np.isfinite(a) & np.isfinite(d))
    return agree, nonfinite & ~agree


def extended_absolute_error(actual, desired) -> np.ndarray:
    """Elementwise ``|a - d|`` that is 0 on matching NaN/Inf and ``inf`` on mismatches."""
    a, d = np.broadcast_arrays(as_float64(actual), as_float64(desired))
    agree, bad = _special(a, d)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - d)
    return np.where(agree, 0.0, np.where(bad, np.inf, err))


def extended_relative_error(actual, desired) -> np.ndarray:
    """Elementwise ``|a - d| / |d|``; absolute error where ``d == 0``; total on NaN/Inf."""
    a, d = np.broadcast_arrays(as_float64(actual), as_float64(desired))
    err = extended_absolute_error(a, d)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = np.where((d != 0) & np.isfinite(d), err / np.abs(np.where(d != 0, d, 1)), err)
    return rel


def mixed_error(actual, desired) -> np.ndarray:
    """Elementwise ``|a - d| / (1 + |d|)`` (the GradNorm metric of spec 8.1), total."""
    a, d = np.broadcast_arrays(as_float64(actual), as_float64(desired))
    err = extended_absolute_error(a, d)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(d), err / (1.0 + np.abs(np.where(np.isfinite(d), d, 0))),
                        err)


def fro_error(actual, desired) -> np.ndarray:
    """Per-slice Frobenius norm of the extended absolute error (shape: batch shape)."""
    err = extended_absolute_error(actual, desired)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.sum(err * err, axis=(-2, -1)))


def _worst(values) -> tuple[float, tuple]:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    idx = int(np.argmax(v)) if v.size else 0
    return float(v.reshape(-1)[idx]) if v.size else 0.0, np.unravel_index(idx, v.shape)


def _pick_worst(err, tol, claim=True):
    """(error, tolerance, index, claimed) of the slice with the largest error/tolerance ratio.

    Slices without a claim are ignored unless no slice has one.
    """
    err = np.atleast_1d(np.asarray(err, dtype=np.float64))
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), err.shape)
    claim = np.broadcast_to(np.asarray(claim, dtype=bool), err.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1), np.where(err > 0, np.inf, 0))
    any_claim = bool(claim.any())
    ratio = np.where(claim, ratio, -1.0) if any_claim else ratio
    flat = int(np.argmax(ratio.reshape(-1)))
    idx = tuple(int(i) for i in np.unravel_index(flat, err.shape))
    return float(err.reshape(-1)[flat]), float(tol.reshape(-1)[flat]), idx, any_claim


def _shape_check(name, actual, G, expected_shape=None) -> Measurement | None:
    a = np.asarray(actual) if not hasattr(actual, "shape") else actual
    shape = tuple(expected_shape if expected_shape is not None else np.shape(G))
    if tuple(a.shape) != shape:
        return Measurement(name, math.inf, 0.0, "output shape", describe_input(G),
                           note=f"output shape {tuple(a.shape)} != {shape}, the shape of the "
                                "operator's INPUT G (the second argument: the array the operator "
                                "was applied to, not an expected output)")
    return None


def _dtype_of(dtype, *arrays):
    if dtype is not None:
        return np.dtype(dtype)
    for arr in arrays:
        dt = getattr(arr, "dtype", None)
        if dt is not None:
            try:
                return np.dtype(dt)
            except TypeError:
                name = str(dt).replace("torch.", "")
                return np.dtype(name)
    return np.dtype(np.float64)


def default_close_tolerance(dtype) -> float:
    """``rtol = atol = 64 eps(dtype)``: :func:`assert_close`'s default (``eps = 2 u``)."""
    return 64 * 2 * unit_roundoff(dtype)


_OLD_METRICS = ("mixed", "relative", "absolute")


def assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=True, check_dtype=False,
                 err_msg="", metric=None, desired=None):
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    The semantics of ``numpy.testing.assert_allclose`` and ``torch.testing.assert_close``:
    ``expected`` may be a scalar (broadcast; otherwise the shapes must be equal), NaN equals NaN
    (``equal_nan=True``, numpy's default), an infinity equals the same infinity only.
    ``check_dtype=True`` also requires equal dtypes (torch's ``check_dtype``; numpy's
    ``strict``).  ``rtol``/``atol`` default to ``64 eps`` of ``actual``'s dtype (float64:
    1.4e-14, float32: 7.6e-6; half types are judged as float32 after the output rounding).
    Accepts NumPy, torch, CuPy and JAX arrays (compared as float64).  The failure message
    gives the mismatch count, the greatest absolute and relative differences with their
    index, and the tolerance used with its source.  Returns the :class:`Measurement`
    (``error`` = the largest ``|a-e| / (atol + rtol |e|)``, ``tolerance`` = 1).

    Changed in 0.3: before, this bounded ``max(metric) <= rtol + atol`` with the metric
    ``|a-e|/(1+|e|)``; ``metric=`` still selects that old rule (deprecated), and the default
    call gives the same verdicts (``atol = rtol``).  ``desired=`` is numpy's name for
    ``expected``.
    """
    meas = measure_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan,
                         check_dtype=check_dtype, metric=metric, desired=desired, _stack=3)
    return _judge(meas, err_msg)


def measure_close(actual, expected=None, *, rtol=None, atol=None, equal_nan=True,
                  check_dtype=False, metric=None, desired=None, _stack=2) -> Measurement:
    """The :class:`Measurement` behind :func:`assert_close` (no exception)."""
    if desired is not None:
        if expected is not None:
            raise TypeError("assert_close() got both expected and desired; pass one")
        expected = desired
    if expected is None:
        raise TypeError("assert_close() missing the expected value (a scalar or an array)")
    dt = _dtype_of(None, actual)
    dt_e = _dtype_of(None, expected) if hasattr(expected, "dtype") else None
    if metric is not None:
        return _measure_close_old(actual, expected, rtol, atol, metric, dt, _stack + 1)
    default = default_close_tolerance(dt)
    src = []
    for name, val in (("rtol", rtol), ("atol", atol)):
        src.append(f"{name} {fmt(default if val is None else val)} "
                   + (f"(default: 64 eps of {dt})" if val is None else "(given)"))
    rtol = default if rtol is None else float(rtol)
    atol = default if atol is None else float(atol)
    if rtol < 0 or atol < 0 or math.isnan(rtol) or math.isnan(atol):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    a, e = as_float64(actual), as_float64(expected)
    tol_text = "tolerance |a - e| <= atol + rtol |e|: " + ", ".join(src)
    info = {"shape": list(a.shape), "dtype": str(dt)}
    if check_dtype and dt_e is not None and dt != dt_e:
        return Measurement("close", math.inf, 1.0, "dtype", info,
                           note=f"dtypes differ: actual {dt}, expected {dt_e} (check_dtype=True)")
    if a.shape != e.shape and a.ndim and e.ndim:
        return Measurement("close", math.inf, 1.0, "shape", info,
                           note=f"shapes differ: actual {a.shape}, expected {e.shape} (only a "
                                "scalar is broadcast, as in numpy.testing.assert_allclose)")
    a, e = np.broadcast_arrays(a, e)
    diff = extended_absolute_error(a, e)
    if not equal_nan:
        diff = np.where(np.isnan(a) | np.isnan(e), np.inf, diff)
    allowed = atol + rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, np.where(allowed > 0, diff / allowed, np.inf))
    if ratio.size == 0:
        return Measurement("close", 0.0, 1.0, "|a - e| / (atol + rtol |e|) elementwise", info,
                           note="empty arrays; " + tol_text)
    bad = ratio > 1
    worst = float(np.max(ratio))
    note = tol_text
    if bad.any():
        rel = extended_relative_error(a, e)
        ia = np.unravel_index(int(np.argmax(diff)), diff.shape)
        ir = np.unravel_index(int(np.argmax(rel)), rel.shape)
        n_bad, total = int(bad.sum()), int(bad.size)
        note = (f"mismatched elements: {n_bad} / {total} ({100 * n_bad / total:.1f}%)\n"
                f"  greatest absolute difference: {fmt(diff[ia])} at index {_idx(ia)} "
                f"(actual {float(a[ia]):.9g}, expected {float(e[ia]):.9g}; up to {fmt(atol)} allowed)\n"
                f"  greatest relative difference: {fmt(rel[ir])} at index {_idx(ir)} "
                f"(actual {float(a[ir]):.9g}, expected {float(e[ir]):.9g}; up to {fmt(rtol)} allowed)\n  "
                + tol_text)
    return Measurement("close", worst, 1.0, "|a - e| / (atol + rtol |e|) elementwise", info,
                       note=note)


def _idx(index) -> str:
    return "(" + ", ".join(str(int(i)) for i in index) + ("," if len(index) == 1 else "") + ")"


def _measure_close_old(actual, expected, rtol, atol, metric, dt, stack) -> Measurement:
    """The 0.2 rule ``max(metric(a, e)) <= rtol + atol`` (``metric=``, deprecated)."""
    if metric not in _OLD_METRICS:
        raise ValueError(f"metric must be one of {_OLD_METRICS}, got {metric!r}")
    warnings.warn("assert_close(metric=...) is deprecated since 0.3: assert_close now uses "
                  "numpy/torch semantics |a - e| <= atol + rtol |e|; for the old mixed metric "
                  "pass rtol=atol=t (same verdict as metric='mixed' with rtol=t, atol=0)",
                  DeprecationWarning, stacklevel=stack + 1)
    rtol = 64 * unit_roundoff(dt) * 2 if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    fn = {"mixed": mixed_error, "relative": extended_relative_error,
          "absolute": extended_absolute_error}[metric]
    a, e = as_float64(actual), as_float64(expected)
    if a.shape != e.shape and a.ndim and e.ndim:
        return Measurement("close", math.inf, rtol + atol, metric, {"shape": list(a.shape)},
                           note=f"shapes differ: {a.shape} vs {e.shape}")
    err = fn(*np.broadcast_arrays(a, e))
    worst, idx = _worst(err)
    return Measurement("close", worst, float(rtol + atol), f"{metric} elementwise error",
                       {"shape": list(a.shape), "dtype": str(dt)},
                       note=f"worst entry at index {tuple(int(i) for i in idx)}")


# -- GradNorm ---------------------------------------------------------------------------------

def _stat_length(shape, axis) -> int:
    if axis == "long":
        return max(shape[-1], shape[-2])
    return shape[-1] if axis in (-1, len(shape) - 1) else shape[-2]


def measure_grad_norm(actual, G, *, axis=-1, eps=0.0, dtype=None, desired=None,
                      prop="agrees_with_reference", offset_term=True, **info) -> Measurement:
    """Elementwise ``|X - GradNorm(G)| / (1 + |GradNorm(G)|)`` vs spec 8.1's bound.

    The bound of each line includes the offset term ``|mean|/std`` (the textbook two-pass
    algorithm's loss); ``offset_term=False`` asks for the offset-free accuracy of spec 2.5.
    """
    bad = _shape_check(prop, actual, G)
    if bad:
        return bad
    dt = _dtype_of(dtype, actual, G)
    G64 = as_float64(G)
    if desired is None:
        desired = api.grad_norm(G64, axis=axis, eps=eps, check_finite=False)
    n = _stat_length(G64.shape, axis)
    r = line_offset_ratio(G64, axis, eps) if offset_term else 0.0
    tol = np.broadcast_to(grad_norm_tolerance(n, dt, r) + grad_norm_tolerance(n, np.float64, r),
                          np.shape(G64))
    err = mixed_error(actual, desired)
    if np.size(err) == 0:
        return Measurement(prop, 0.0, float(np.max(tol, initial=0.0)),
                           "max |X - ref| / (1 + |ref|) elementwise", describe_input(G, **info))
    err = np.where(np.isnan(err), np.inf, err)
    # spec 8.1: lines whose offset term exceeds TRUSTED_LIMIT carry no claim
    e, t, idx, claim = _pick_worst(err, tol, tol <= TRUSTED_LIMIT)
    note = f"worst entry at index {tuple(int(i) for i in idx)}"
    if offset_term and np.any(r):
        note += "; tolerance includes the offset term (|mean|/std of the line, spec 8.1)"
    return Measurement(prop, e, t, "max |X - ref| / (1 + |ref|) elementwise",
                       describe_input(G, **info), claim=claim, note=note)


def line_offset_ratio(G, axis=-1, eps=0.0) -> np.ndarray:
    """``|mean| / sqrt(std^2 + eps)`` of each statistics line of ``G`` (the offset term of
    spec 8.1 over GradNorm's own denominator), broadcast to G's shape.  Without eps a constant
    line gives 0 (its output is exactly zero by spec 2.4); with eps it gives ``|mean| /
    sqrt(eps)``: the textbook ``(G - mean) / sqrt(var + eps)`` turns the rounded mean of a
    constant line into outputs of that size times the summation's error, as it does for an
    offset line."""
    G64 = as_float64(G)
    ax = _line_axis(G64.shape, axis)
    with np.errstate(all="ignore"):
        mu = np.mean(G64, axis=ax, keepdims=True)
        sd = np.std(G64 - np.take(G64, [0], axis=ax), axis=ax, keepdims=True)
        den = np.sqrt(sd * sd + eps) if eps else sd
        r = np.where(den > 0, np.abs(mu) / np.where(den > 0, den, 1), 0.0)
    r = np.where(np.isfinite(r), r, 0.0)
    return np.broadcast_to(r, G64.shape)


def _line_axis(shape, axis) -> int:
    if axis == "long":
        return -1 if shape[-1] >= shape[-2] else -2
    return -1 if axis in (-1, len(shape) - 1) else -2


def assert_grad_norm_close(actual, input=None, *, axis=-1, eps=0.0, dtype=None, err_msg="",
                           offset_term=True, allow_no_claim=False, **info):
    """Assert ``actual == GradNorm(input)``: the second argument is the operator's INPUT G.

    ``input`` is the array the implementation was applied to (its values are taken as exact,
    not an expected output): the reference is computed from it in float64 and compared
    elementwise within spec 8.1's tolerance.  ``dtype`` is the dtype the implementation
    claims (default: ``actual.dtype``); ``offset_term=False`` claims the offset-free accuracy
    of spec 2.5.  Lines whose bound exceeds ``TRUSTED_LIMIT`` carry no claim: if every
    line is such, :class:`NoClaimError` is raised (``allow_no_claim=True`` returns the
    measurement instead).  Extra keywords (``seed=...``) are reported on failure.
    """
    G = _input_arg("assert_grad_norm_close", input, info)
    meas = measure_grad_norm(actual, G, axis=axis, eps=eps, dtype=dtype,
                             offset_term=offset_term, **info)
    return _judge(meas, err_msg, allow_no_claim=allow_no_claim,
                  advice=NO_CLAIM_ADVICE["grad_norm"],
                  looks_like_output=lambda: measure_grad_norm(G, G, axis=axis, eps=eps,
                                                              dtype=dtype).passed)


# -- exact whitening ----------------------------------------------------------------------------

def _wide(x):
    x = as_float64(x)
    tall = x.shape[-2] > x.shape[-1]
    return (np.swapaxes(x, -1, -2) if tall else x), tall


def _rank_rtol(m, n, dt, rank_rtol):
    if rank_rtol is not None:
        return float(rank_rtol)
    return default_rank_rtol(m, n, float(np.finfo(compute_dtype(dt)).eps))


def measure_whitening(actual, G, *, method="svd", rank_rtol=None, dtype=None,
                      prop="agrees_with_reference", **info) -> Measurement:
    """``||X - U_r V_r^T||_F / sqrt(r)`` (worst slice) vs the kappa-aware bound of spec 8.2.

    The rank ``r`` uses the claimed dtype's default threshold ``max(m, n) eps(dtype) s_1``
    (or ``rank_rtol``); ``kappa = s_1 / s_r`` over the kept singular values.  ``method`` is
    the accuracy claimed: ``'svd'`` (error ~ kappa u) or ``'eigh'`` (~ kappa^2 u).
    """
    bad = _shape_check(prop, actual, G)
    if bad:
        return bad
    dt = _dtype_of(dtype, actual, G)
    G64 = as_float64(G)
    m, n = G64.shape[-2:]
    rtol = _rank_rtol(m, n, dt, rank_rtol)
    desired = api.whiten(G64, "svd", rank_rtol=rtol, check_finite=False)
    s = np.linalg.svd(np.nan_to_num(G64), compute_uv=False)
    r = np.sum(s > rtol * s[..., :1], axis=-1)
    kappa = condition_number(np.nan_to_num(G64), rank_rtol=rtol)
    tol = exact_whitening_tolerance(m, n, kappa, dt, method) + \
        exact_whitening_tolerance(m, n, kappa, np.float64, "svd")
    err = fro_error(actual, desired) / np.sqrt(np.maximum(r, 1))
    # spec 8.2: the bound applies while the method resolves the rank
    u = unit_roundoff(dt)
    resolved = np.asarray(kappa) ** (2 if method == "eigh" else 1) * u < 1e-3
    e, t, idx, claim = _pick_worst(err, tol, resolved)
    where = f"worst slice {idx}, " if np.ndim(err) else ""
    note = f"{where}claimed accuracy: method {method!r}, dtype {dt}"
    if not claim:
        note += "; kappa beyond what the method resolves (spec 8.2): no claim"
    return Measurement(prop, e, t, "||X - U_r V_r^T||_F / sqrt(r)",
                       describe_input(G, **info), claim=claim, note=note)


def assert_whitening_close(actual, input=None, *, method="svd", rank_rtol=None, dtype=None,
                           err_msg="", allow_no_claim=False, **info):
    """Assert ``actual == U_r V_r^T`` of ``input``: the second argument is the operator's INPUT G.

    ``input`` is the array the whitening was applied to (not an expected output); swanref
    computes ``U_r V_r^T`` from it in float64 (spec 3.1/3.2, 8.2).  The tolerance is
    ``8 max(m,n) kappa u`` for ``method='svd'`` and ``8 max(m,n) kappa^2 u`` for ``'eigh'``
    (the accuracy the implementation claims), ``u`` the unit roundoff of ``dtype``, ``kappa``
    the condition number of ``G`` over its numerically nonzero singular values.  Rank-deficient
    input expects the partial isometry; zero input expects zeros.  Where the method cannot
    resolve the rank (``kappa^p u >= 1e-3``) the spec claims nothing and
    :class:`NoClaimError` is raised (``allow_no_claim=True`` returns the measurement).
    """
    G = _input_arg("assert_whitening_close", input, info)
    meas = measure_whitening(actual, G, method=method, rank_rtol=rank_rtol, dtype=dtype, **info)
    return _judge(meas, err_msg, allow_no_claim=allow_no_claim,
                  advice=NO_CLAIM_ADVICE["whitening"],
                  looks_like_output=lambda: measure_whitening(G, G, method=method,
                                                              dtype=dtype).passed)


# -- Newton-Schulz ----------------------------------------------------------------------------

def measure_newton_schulz(actual, G, *, steps=10, beta=0.5, scaling="gram_fro", dtype=None,
                          prop="agrees_with_prediction", **info) -> Measurement:
    """``||X - U phi(S) V^T||_F / sqrt(m)`` vs spec 8.3 (``claim=False`` above TRUSTED_LIMIT).

    ``phi`` is the exact-arithmetic singular value map of the coupled iteration with the
    claimed ``steps``, ``beta`` and ``scaling`` (swanref.spec.spectral).
    """
    bad = _shape_check(prop, actual, G)
    if bad:
        return bad
    dt = _dtype_of(dtype, actual, G)
    W, tall = _wide(G)
    X, _ = _wide(actual)
    m, n = W.shape[-2:]
    Wc = np.nan_to_num(W)
    if scaling != "none":  # the prediction is scale invariant; keep s**4 in range
        amax = np.max(np.abs(Wc), axis=(-2, -1), keepdims=True)
        Wc = np.ldexp(Wc, -np.frexp(np.where(amax > 0, amax, 1))[1])
    s = np.linalg.svd(Wc, compute_uv=False)
    desired = spectral.predicted_newton_schulz(Wc, steps, beta, scaling)
    nan_in = ~np.isfinite(W).all(axis=(-2, -1))
    if np.any(nan_in):
        desired = np.where(nan_in[..., None, None], np.nan, desired)
    tol = np.asarray(newton_schulz_tolerance(s, m, n, steps, beta, scaling, dt)) + \
        np.asarray(newton_schulz_tolerance(s, m, n, steps, beta, scaling, np.float64))
    err = fro_error(X, desired) / np.sqrt(m)
    e, t, idx, claim = _pick_worst(err, tol, tol <= TRUSTED_LIMIT)
    note = f"claimed reading: steps={steps}, beta={beta}, scaling={scaling!r}, dtype {dt}"
    if not claim:
        note += f"; predicted error above {TRUSTED_LIMIT}: the spec makes no claim here"
    return Measurement(prop, e, t, "||X - U phi(S) V^T||_F / sqrt(min(m, n))",
                       describe_input(G, **info), claim=claim, note=note)


def assert_newton_schulz_close(actual, input=None, *, steps=10, beta=0.5, scaling="gram_fro",
                               dtype=None, err_msg="", allow_no_claim=False, **info):
    """Assert ``actual`` is Newton-Schulz of ``input``: the second argument is the operator's INPUT G.

    ``input`` is the array the iteration was applied to (not an expected output); the
    prediction ``U phi_K(S) V^T`` of spec 3.6 for the claimed ``steps``, ``beta`` and
    ``scaling`` is computed from it, and the tolerance is spec 8.3's.  Where the tolerance
    model makes no claim (predicted error above ``swanref.spec.tolerance.TRUSTED_LIMIT``: too
    few steps for the input's conditioning, or float32 at high kappa) nothing can be asserted,
    so this raises :class:`NoClaimError` -- an assertion that cannot fail is not a pass.
    ``allow_no_claim=True`` returns the measurement (``claim=False``) instead;
    :func:`measure_newton_schulz` never raises.
    """
    G = _input_arg("assert_newton_schulz_close", input, info)
    meas = measure_newton_schulz(actual, G, steps=steps, beta=beta, scaling=scaling,
                                 dtype=dtype, **info)
    return _judge(meas, err_msg, allow_no_claim=allow_no_claim,
                  advice=NO_CLAIM_ADVICE["newton_schulz"],
                  looks_like_output=lambda: measure_newton_schulz(
                      G, G, steps=steps, beta=beta, scaling=scaling, dtype=dtype).passed)


# -- structural properties ------------------------------------------------------------------

def measure_orthonormal_rows(X, *, tol=None, kappa=1.0, dtype=None,
                             prop="orthonormal_rows", **info) -> Measurement:
    """``||X X^T - I||_F / sqrt(m)`` for wide X (columns for tall X); worst slice.

    Default tolerance ``3 * exact_whitening_tolerance(m, n, kappa, dtype)`` (an error dX of
    the polar factor moves ``X X^T`` by at most ``2 dX + dX^2``).
    """
    dt = _dtype_of(dtype, X)
    W, _ = _wide(X)
    m, n = W.shape[-2:]
    gram = W @ np.swapaxes(W, -1, -2)
    err = fro_error(gram, np.broadcast_to(np.eye(m), gram.shape)) / np.sqrt(m)
    if tol is None:
        tol = 3 * exact_whitening_tolerance(m, n, kappa, dt, "svd")
    worst, _ = _worst(err)
    return Measurement(prop, worst, float(np.max(tol)),
                       "||X X^T - I||_F / sqrt(m) (X^T X for tall X)",
                       describe_input(X, **info))


def assert_orthonormal_rows(X, *, tol=None, kappa=1.0, dtype=None, err_msg="",
                            allow_no_claim=False, **info):
    """Assert the rows (columns, if tall) of ``X`` are orthonormal (full-rank whitening)."""
    return _judge(measure_orthonormal_rows(X, tol=tol, kappa=kappa, dtype=dtype, **info),
                  err_msg, allow_no_claim=allow_no_claim)


def measure_partial_isometry(X, rank, *, tol=None, kappa=1.0, dtype=None,
                             prop="partial_isometry", **info) -> Measurement:
    """Singular values of ``X``: ``rank`` of them 1, the rest 0 (worst deviation)."""
    dt = _dtype_of(dtype, X)
    x = as_float64(X)
    m, n = x.shape[-2:]
    if not np.isfinite(x).all():
        return Measurement(prop, math.inf, 0.0, "max |sigma_i(X) - [i < r]|",
                           describe_input(X, **info), note="output contains NaN/Inf")
    s = np.linalg.svd(x, compute_uv=False)
    target = (np.arange(s.shape[-1]) < np.asarray(rank)[..., None]).astype(np.float64)
    err = np.max(np.abs(s - target), axis=-1)
    if tol is None:
        tol = exact_whitening_tolerance(m, n, kappa, dt, "svd") * math.sqrt(min(m, n))
    worst, _ = _worst(err)
    return Measurement(prop, worst, float(np.max(tol)), "max |sigma_i(X) - [i < r]|",
                       describe_input(X, **info), note=f"expected rank {np.max(rank)}")


def assert_partial_isometry(X, rank, *, tol=None, kappa=1.0, dtype=None, err_msg="",
                            allow_no_claim=False, **info):
    """Assert ``X`` is a partial isometry of the given rank (rank-deficient whitening)."""
    return _judge(measure_partial_isometry(X, rank, tol=tol, kappa=kappa, dtype=dtype, **info),
                  err_msg, allow_no_claim=allow_no_claim)


def measure_symmetric_psd(X, G, *, tol=None, kappa=1.0, dtype=None,
                          prop="polar_symmetric_psd", **info) -> Measurement:
    """``X G^T`` (``X^T G`` if tall) is symmetric positive semidefinite.

    Holds for the exact polar factor (``U S U^T``) and for every Newton-Schulz iterate
    (``U phi(S) S U^T``): it says that ``X`` has ``G``'s singular vectors.  Error:
    ``max(||M - M^T||_F, max(0, -lambda_min(M + M^T)/2) ) / (||G||_2 sqrt(r))``.
    """
    dt = _dtype_of(dtype, X)
    bad = _shape_check(prop, X, G)
    if bad:
        return bad
    x, g = as_float64(X), as_float64(G)
    m, n = g.shape[-2:]
    if m > n:
        M = np.swapaxes(x, -1, -2) @ g
    else:
        M = x @ np.swapaxes(g, -1, -2)
    if not np.isfinite(M).all():
        return Measurement(prop, math.inf, 0.0, "asymmetry / negativity of X G^T",
                           describe_input(G, **info), note="output contains NaN/Inf")
    s = np.linalg.svd(g, compute_uv=False)
    norm = np.where(s[..., 0] > 0, s[..., 0], 1.0)
    r = np.maximum(np.sum(s > default_rank_rtol(m, n, 2.2e-16) * s[..., :1], axis=-1), 1)
    asym = np.sqrt(np.sum((M - np.swapaxes(M, -1, -2)) ** 2, axis=(-2, -1)))
    lam = np.linalg.eigvalsh((M + np.swapaxes(M, -1, -2)) / 2)
    neg = np.maximum(0.0, -lam[..., 0]) * np.sqrt(r)
    err = np.maximum(asym, neg) / (norm * np.sqrt(r))
    if tol is None:
        tol = 2 * exact_whitening_tolerance(m, n, kappa, dt, "svd") + 64 * unit_roundoff(
            np.float64) * max(m, n)
    worst, _ = _worst(err)
    return Measurement(prop, worst, float(np.max(tol)),
                       "asymmetry or negative eigenvalue of X G^T, / (||G||_2 sqrt(r))",
                       describe_input(G, **info))


def assert_symmetric_psd(X, input=None, *, tol=None, kappa=1.0, dtype=None, err_msg="",
                         allow_no_claim=False, **info):
    """Assert ``X input^T`` is symmetric PSD: ``X`` shares the singular vectors of the INPUT G.

    ``input`` is the array the whitening was applied to (not an expected output).
    """
    G = _input_arg("assert_symmetric_psd", input, info)
    return _judge(measure_symmetric_psd(X, G, tol=tol, kappa=kappa, dtype=dtype, **info),
                  err_msg, allow_no_claim=allow_no_claim)


def measure_singular_values(X, expected, *, tol, prop="singular_values", **info):
    """Sorted singular values of ``X`` vs ``expected`` (max abs difference)."""
    x = as_float64(X)
    if not np.isfinite(x).all():
        return Measurement(prop, math.inf, float(tol), "max |sigma_i(X) - expected_i|",
                           describe_input(X, **info), note="output contains NaN/Inf")
    s = np.sort(np.linalg.svd(x, compute_uv=False), axis=-1)
    e = np.sort(np.asarray(expected, dtype=np.float64), axis=-1)
    err = np.max(np.abs(s - e), axis=-1)
    worst, _ = _worst(err)
    return Measurement(prop, worst, float(np.max(tol)), "max |sigma_i(X) - expected_i|",
                       describe_input(X, **info))


# -- SWAN update ----------------------------------------------------------------------------

def _lipschitz_bound(s, steps, beta, scaling):
    """Bound on the Frechet derivative norm of ``G -> U phi(S) V^T`` from divided differences."""
    s = np.asarray(s, dtype=np.float64)
    c = spectral.scaling_constant(s, scaling)
    floor = max(float(np.max(s)) * 1e-8, 1e-300)
    sf = np.maximum(s, floor)

    def phi(x):
        return spectral.ns_scalar_map(x ** 2 / c, steps, beta)

    p = phi(sf)
    h = sf * 1e-6
    dphi = np.abs(phi(sf + h) - phi(sf - h)) / (2 * h)
    si, sj = sf[:, None], sf[None, :]
    pi, pj = p[:, None], p[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = np.where(np.abs(si - sj) > 1e-6 * si, np.abs(pi - pj) / np.abs(si - sj), 0)
    d2 = (pi + pj) / (si + sj)
    d3 = p / sf
    return 2.0 * float(max(np.max(dphi), np.max(d1), np.max(d2), np.max(d3)))


def _swan_reading(whiten_method, steps, beta, scaling):
    """The reading ``swanref.swan_update`` uses: None takes the method's default (spec 3)."""
    d = WHITEN_METHODS[whiten_method].defaults if whiten_method in WHITEN_METHODS else {}
    return (d.get("steps") if steps is None else steps, d.get("beta") if beta is None else beta,
            d.get("scaling") if scaling is None else scaling)


def swan_update_tolerance(G, *, whiten_method="newton_schulz", steps=None, beta=None,
                          scaling=None, rescale=True, axis=-1, eps=0.0, dtype=np.float64):
    """Relative Frobenius tolerance of ``swan_update(G)`` per slice, and whether it is claimed.

    Propagates spec 8.1 (GradNorm, elementwise ``t``: ``||dg||_F <= 2 t sqrt(mn)``) through the
    whitening of ``g = GradNorm(G)``: exact methods add ``4 t sqrt(mn) / (s_min(g) sqrt(r))``
    to spec 8.2's bound; iterative ones add ``L ||dg||_F / ||P||_F`` with ``L`` a
    divided-difference bound on the derivative of the predicted map, to spec 8.3's bound.
    A rescaled update may double the relative error.  Returns ``(tol, claim)`` arrays.
    """
    steps, beta, scaling = _swan_reading(whiten_method, steps, beta, scaling)
    G64 = as_float64(G)
    g = api.grad_norm(np.nan_to_num(G64), axis=axis, eps=eps)
    W, _ = _wide(g)
    m, n = W.shape[-2:]
    flat = W.reshape((-1, m, n))
    n_stat = _stat_length(G64.shape, axis)
    t_gn = grad_norm_tolerance(n_stat, dtype) + grad_norm_tolerance(n_stat, np.float64)
    dg = 2 * t_gn * math.sqrt(m * n)
    tols, claims = [], []
    for w in flat:
        amax = np.max(np.abs(w))
        if amax > 0 and whiten_method not in ("svd", "eigh") and scaling != "none":
            w = np.ldexp(w, -np.frexp(amax)[1])  # scale invariant; keeps s**4 in range
        s = np.linalg.svd(w, compute_uv=False)
        if whiten_method in ("svd", "eigh"):
            rtol = _rank_rtol(m, n, dtype, None)
            keep = s > rtol * s[0] if s[0] > 0 else np.zeros_like(s, bool)
            r = int(np.sum(keep))
            if r == 0:
                tols.append(dg)
                claims.append(True)
                continue
            kappa = s[0] / s[keep][-1]
            tol = float(exact_whitening_tolerance(m, n, kappa, dtype, whiten_method)) + \
                float(exact_whitening_tolerance(m, n, kappa, np.float64, "svd")) + \
                2 * dg / (s[keep][-1] * math.sqrt(r))
            tol = min(tol, 2.0)
            claim = True
        else:
            tns = float(np.max(newton_schulz_tolerance(s, m, n, steps, beta, scaling, dtype))) \
                + float(np.max(newton_schulz_tolerance(s, m, n, steps, beta, scaling,
                                                       np.float64)))
            claim = tns <= TRUSTED_LIMIT
            phi = spectral.newton_schulz_singular_values(s, steps, beta, scaling)
            pnorm = float(np.sqrt(np.sum(phi ** 2)))
            if pnorm == 0:
                tols.append(dg)
                claims.append(claim)
                continue
            L = _lipschitz_bound(s, steps, beta, scaling) if s[0] > 0 else 0.0
            tol = (tns * math.sqrt(m) + L * dg) / pnorm
        if rescale:
            tol *= 2
        tols.append(tol + output_roundoff(dtype))
        claims.append(claim)
    shape = G64.shape[:-2]
    return np.array(tols).reshape(shape), np.array(claims).reshape(shape)


def measure_swan_update(actual, G, *, whiten_method="newton_schulz", steps=None, beta=None,
                        scaling=None, rescale=True, axis=-1, eps=0.0, dtype=None,
                        prop="agrees_with_reference", **info) -> Measurement:
    """``||X - D||_F / ||D||_F`` per slice (absolute where ``D = 0``) vs the propagated bound.

    ``D = swan_update(G)`` in float64 with the claimed reading; ``lr = 1``.  The defaults are
    ``swanref.swan_update``'s (Newton-Schulz; steps, beta, scaling None take the method's
    defaults), so ``assert_swan_update_close(swanref.swan_update(G), G)`` holds.
    """
    steps, beta, scaling = _swan_reading(whiten_method, steps, beta, scaling)
    bad = _shape_check(prop, actual, G)
    if bad:
        return bad
    dt = _dtype_of(dtype, actual, G)
    G64 = as_float64(G)
    kw = {}
    if whiten_method not in ("svd", "eigh"):
        kw = {"steps": steps, "beta": beta, "scaling": scaling, "on_divergence": "ignore"}
    desired = api.swan_update(G64, whiten_method="svd" if whiten_method == "eigh" else
                              whiten_method, rescale=rescale, axis=axis, eps=eps,
                              check_finite=False, **kw)
    tol, claim = swan_update_tolerance(G64, whiten_method=whiten_method, steps=steps,
                                       beta=beta, scaling=scaling, rescale=rescale,
                                       axis=axis, eps=eps, dtype=dt)
    num = fro_error(actual, desired)
    den = np.sqrt(np.sum(np.nan_to_num(desired) ** 2, axis=(-2, -1)))
    err = np.where(den > 0, num / np.where(den > 0, den, 1), num)
    e, t, idx, c = _pick_worst(err, tol, claim)
    reading = f"whiten_method={whiten_method!r}, rescale={rescale}, axis={axis!r}"
    if whiten_method not in ("svd", "eigh"):
        reading += f", steps={steps}, beta={beta}, scaling={scaling!r}"
    return Measurement(prop, e, t, "||X - D||_F / ||D||_F (absolute if D = 0)",
                       describe_input(G, **info), claim=c,
                       note=f"claimed reading: {reading}, dtype {dt}")


def assert_swan_update_close(actual, input=None, *, whiten_method="newton_schulz", steps=None,
                             beta=None, scaling=None, rescale=True, axis=-1, eps=0.0, dtype=None,
                             err_msg="", allow_no_claim=False, **info):
    """Assert ``actual`` is the SWAN update of ``input``: the second argument is the operator's INPUT G.

    ``input`` is the gradient the update was computed from (not an expected update); the
    reference ``swan_update(G)`` (spec 4) for the claimed reading is computed from it in
    float64, lr 1.  No claim (spec 8.3/8.4) raises :class:`NoClaimError`
    (``allow_no_claim=True`` returns the measurement).
    """
    G = _input_arg("assert_swan_update_close", input, info)
    meas = measure_swan_update(actual, G, whiten_method=whiten_method, steps=steps, beta=beta,
                               scaling=scaling, rescale=rescale, axis=axis, eps=eps,
                               dtype=dtype, **info)
    return _judge(meas, err_msg, allow_no_claim=allow_no_claim,
                  advice=NO_CLAIM_ADVICE["swan_update"],
                  looks_like_output=lambda: measure_swan_update(
                      G, G, whiten_method=whiten_method, steps=steps, beta=beta,
                      scaling=scaling, rescale=rescale, axis=axis, eps=eps, dtype=dtype).passed)


# -- SinkGD -----------------------------------------------------------------------------------

def sinkgd_reference(G, *, iters=5, eps=0.0, eps_form="clamp"):
    """SR-Sinkhorn in float64 (spec 5): ``sinkgd_update(G, iters)``, or with a stated epsilon
    on every line norm -- ``clamp`` divides by ``max(||line||, eps)``, ``add`` by
    ``||line|| + eps`` -- as the public implementations write it (axolotl ``sr_sinkhorn``:
    ``clamp_min(eps=1e-8)``).  A line of norm at or below eps is then not normalised."""
    G64 = as_float64(G)
    if not eps:
        return api.sinkgd_update(G64, iters=iters, check_finite=False)
    if eps_form not in ("clamp", "add"):
        raise ValueError(f"a SinkGD epsilon is clamped or added, got eps_form={eps_form!r}")
    m, n = G64.shape[-2:]
    X = G64.copy()

    def scaled(X, axis, target):
        norm = np.linalg.norm(X, axis=axis, keepdims=True)
        d = np.maximum(norm, eps) if eps_form == "clamp" else norm + eps
        return X * (target / d)
    for _ in range(int(iters)):
        X = scaled(X, -1, math.sqrt(n))
        X = scaled(X, -2, math.sqrt(m))
    return X


def measure_sinkgd(actual, G, *, iters=5, dtype=None, prop="agrees_with_reference",
                   eps=0.0, eps_form="clamp", **info) -> Measurement:
    """Elementwise mixed error against ``sinkgd_update(G, iters)`` computed in float64 (with a
    stated line epsilon: :func:`sinkgd_reference`)."""
    bad = _shape_check(prop, actual, G)
    if bad:
        return bad
    dt = _dtype_of(dtype, actual, G)
    G64 = as_float64(G)
    desired = sinkgd_reference(G64, iters=iters, eps=eps, eps_form=eps_form)
    m, n = G64.shape[-2:]
    tol = sinkgd_tolerance(m, n, iters, dt) + sinkgd_tolerance(m, n, iters, np.float64)
    err = mixed_error(actual, desired)
    worst, idx = _worst(err)
    return Measurement(prop, worst, float(tol), "max |X - ref| / (1 + |ref|) elementwise",
                       describe_input(G, **info),
                       note=f"worst entry at index {tuple(int(i) for i in idx)}; iters {iters}")


def assert_sinkgd_close(actual, input=None, *, iters=5, dtype=None, err_msg="",
                        allow_no_claim=False, **info):
    """Assert ``actual == sinkgd_update(input, iters)``: the second argument is the operator's INPUT G.

    ``input`` is the gradient SinkGD was applied to (not an expected output); the reference
    (spec 5, lr 1) is computed from it in float64 and compared within spec 8.4's tolerance.
    """
    G = _input_arg("assert_sinkgd_close", input, info)
    meas = measure_sinkgd(actual, G, iters=iters, dtype=dtype, **info)
    return _judge(meas, err_msg, allow_no_claim=allow_no_claim,
                  looks_like_output=lambda: measure_sinkgd(G, G, iters=iters,
                                                           dtype=dtype).passed)


# -- the measure_* twin of every assert_*_close, under the matching name ----------------------
measure_grad_norm_close = measure_grad_norm
measure_whitening_close = measure_whitening
measure_newton_schulz_close = measure_newton_schulz
measure_swan_update_close = measure_swan_update
measure_sinkgd_close = measure_sinkgd
