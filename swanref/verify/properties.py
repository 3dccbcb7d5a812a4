"""The property catalogue of the conformance checker (``swanref check``).

A :class:`Property` names one statement of docs/spec.md about an operator, draws inputs for it
with hypothesis (so a failure is shrunk to a small counterexample) and measures how far a
target implementation is from satisfying it, against the tolerance of the spec's model
(swanref.spec.tolerance, via swanref.verify.measure).

Levels: ``required`` properties decide conformance; ``advisory`` ones (robustness beyond the
accuracy model's usual domain, e.g. huge/tiny scales) are reported but only fail the run
under ``--strict``.  Input classes: ``plain`` inputs must be supported; an exception on an
input of another class (``batched``) is reported as *unsupported*.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from swanref import ops as api
from swanref.spec import spectral
from swanref.spec.readings import WHITEN_METHODS, default_rank_rtol
from swanref.verify import measure as A
from swanref.verify import matrices
from swanref.verify.strategies import SPECTRUM_KINDS, conditioned_batch
from swanref.spec.tolerance import (TRUSTED_LIMIT, exact_whitening_tolerance, grad_norm_tolerance,
                                    unit_roundoff)
from swanref.spec.validate import compute_dtype

OPS = ("grad_norm", "whiten", "swan_update", "sinkgd_update")


# -- the claim: which reading of the spec the target says it implements ---------------------------

@dataclass
class Claim:
    op: str
    dtype: np.dtype = np.dtype(np.float64)
    axis: object = -1                 # grad_norm / swan_update
    eps: float = 0.0                  # grad_norm / swan_update
    method: str = "svd"               # whiten / swan_update: svd | eigh | newton_schulz
    steps: int | None = None
    beta: float | None = None
    scaling: str | None = None
    rescale: bool = True              # swan_update
    iters: int = 5                    # sinkgd_update
    eps_form: str = "clamp"           # sinkgd_update: its line epsilon max(||.||, eps) | + eps
    max_kappa: float | None = None
    max_side: int = 8
    full_rank_only: bool = False
    shapes: tuple | None = None       # a fixed set of (m, n) to draw from (JIT targets)
    two_d_only: bool = False          # claim nd = "2d_only": batched input is not claimed

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        if self.method in WHITEN_METHODS and WHITEN_METHODS[self.method].kind == "iterative":
            d = WHITEN_METHODS[self.method].defaults
            self.steps = d["steps"] if self.steps is None else self.steps
            self.beta = d["beta"] if self.beta is None else self.beta
            self.scaling = d["scaling"] if self.scaling is None else self.scaling
        if self.max_kappa is None:
            self.max_kappa = default_max_kappa(self.dtype, self.iterative,
                                               self.method == "eigh")

    @property
    def iterative(self) -> bool:
        return self.method in WHITEN_METHODS and WHITEN_METHODS[self.method].kind == "iterative"

    def describe(self) -> dict:
        d = {"op": self.op, "dtype": str(self.dtype), "max_kappa": self.max_kappa}
        if self.op in ("grad_norm", "swan_update"):
            d.update(axis=self.axis, eps=self.eps)
        if self.op in ("whiten", "swan_update"):
            d["method"] = self.method
            if self.iterative:
                d.update(steps=self.steps, beta=self.beta, scaling=self.scaling)
            d["full_rank_only"] = self.full_rank_only
        if self.op == "swan_update":
            d["rescale"] = self.rescale
        if self.two_d_only:
            d["nd"] = "2d_only"
        if self.op == "sinkgd_update":
            d["iters"] = self.iters
            if self.eps:
                d.update(eps=self.eps, eps_form=self.eps_form)
        return d


def default_max_kappa(dtype, iterative=False, eigh=False) -> float:
    """Largest condition number drawn by default: inside the domain where spec 8.2 makes a
    claim (``kappa u < 1e-3``; ``kappa^2 u < 1e-3`` for an eigh-accuracy claim)."""
    u = unit_roundoff(dtype)
    if eigh:
        return float(10 ** math.floor(math.log10(math.sqrt(1e-3 / u) / 2)))
    if iterative:
        return 1e3 if u < 1e-10 else 1e2
    return 1e8 if u < 1e-10 else (1e4 if u < 1e-6 else 1e2)


@dataclass
class Case:
    """One drawn input: the array and what it was built from (reported on failure)."""
    G: np.ndarray
    info: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __repr__(self):
        return f"Case({A.describe_text(self.describe())})"

    def describe(self) -> dict:
        return A.describe_input(self.G, **self.info)


class TargetError(Exception):
    """The target raised (or returned something that is not an array) on an input."""


# -- strategies -----------------------------------------------------------------------------

def _shape_kind(shape) -> str:
    m, n = shape
    return "tall" if m > n else ("square" if m == n else "wide")


def _shape(draw, claim, kind, min_side=1):
    if claim.shapes:
        fits = [s for s in claim.shapes if min(s) >= min_side and (
            kind == "any" or _shape_kind(s) == kind or (kind == "wide" and s[0] <= s[1]))]
        return tuple(draw(st.sampled_from(fits or list(claim.shapes))))
    hi = max(claim.max_side, min_side + 1)
    if kind == "tall":
        n = draw(st.integers(max(min_side, 1), hi - 1))
        m = draw(st.integers(n + 1, hi))
    elif kind == "wide":
        m = draw(st.integers(min_side, hi))
        n = draw(st.integers(m, hi))
    elif kind == "square":
        m = n = draw(st.integers(min_side, hi))
    else:
        m = draw(st.integers(min_side, hi))
        n = draw(st.integers(min_side, hi))
    return m, n


def _scale_range(claim, extreme=False):
    if claim.dtype == np.float64:
        return (-100.0, 100.0) if extreme else (-3.0, 3.0)
    if claim.dtype == np.float32:
        return (-15.0, 15.0) if extreme else (-3.0, 3.0)
    return (-1.0, 1.0)


@st.composite
def spectral_cases(draw, claim, *, rank="full", shape="any", batch=(), kappa=None,
                   extreme=False, zero=False, min_side=1):
    """``scale * U diag(s) V^T`` with controlled kappa/rank/scale (swanref.verify.matrices)."""
    min_side = max(min_side, 2 if rank == "deficient" else 1)
    m, n = _shape(draw, claim, shape, min_side)
    k = min(m, n)
    r = k if rank == "full" else draw(st.integers(1, k - 1))
    lo, hi = kappa if kappa is not None else (1.0, claim.max_kappa)
    kap = 10 ** draw(st.floats(math.log10(lo), math.log10(hi)))
    kind = draw(st.sampled_from(SPECTRUM_KINDS))
    if extreme:
        lo_s, hi_s = _scale_range(claim, True)
        sign = draw(st.sampled_from([-1, 1]))
        log_scale = sign * draw(st.floats(0.8 * hi_s, hi_s))
    else:
        log_scale = draw(st.floats(*_scale_range(claim)))
    seed, G = conditioned_batch(draw, m, n, kap, rank=r, scale=10 ** log_scale, kind=kind,
                                batch=batch)
    if zero:
        G = np.zeros_like(G)
    G = G.astype(claim.dtype)
    info = {"seed": seed, "kappa_target": kap, "rank_target": 0 if zero else r,
            "spectrum": kind, "scale": 10 ** log_scale}
    if zero:
        info = {"zero": True}
    return Case(G, info)


@st.composite
def row_cases(draw, claim, *, offset_ratio=4.0, specials=True, shape="any", batch=(),
              extreme=False, log_scale=None):
    """Lines (along the statistics axis) with very different scales and offsets.

    ``offset_ratio`` bounds ``|mean| / std`` of each line (4: ordinary gradients); ``specials`` makes some lines
    constant (at a random offset) or zero.
    """
    m, n = _shape(draw, claim, shape, 1)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    lines_axis = _stat_axis(claim, (m, n))
    L, N = (m, n) if lines_axis == -1 else (n, m)
    count = int(np.prod(batch)) if batch else 1
    lo, hi = log_scale if log_scale is not None else (
        (-10.0, 6.0) if claim.dtype != np.float16 else (-2.0, 2.0))
    if extreme:
        e_lo, e_hi = _scale_range(claim, True)
        sign = draw(st.sampled_from([-1, 1]))
        centre = sign * draw(st.floats(0.8 * e_hi, e_hi))
        lo, hi = centre - 1, centre + 1
    kinds = draw(st.lists(st.sampled_from(["constant", "zero", "none", "none"]),
                          min_size=L, max_size=L)) if specials else ["none"] * L
    mats = []
    for _ in range(count):
        scales = 10 ** rng.uniform(lo, hi, size=(L, 1))
        offsets = scales * rng.uniform(-offset_ratio, offset_ratio, size=(L, 1))
        z = rng.standard_normal((L, N))
        z = z - z.mean(axis=1, keepdims=True)
        sd = np.sqrt(np.mean(z * z, axis=1, keepdims=True))
        z = np.where(sd > 0, z / np.where(sd > 0, sd, 1), 0)   # |mean| / std = |offset| / scale
        X = offsets + scales * z
        for i, kind in enumerate(kinds):
            if kind == "constant":
                X[i] = offsets[i, 0] if offsets[i, 0] != 0 else scales[i, 0]
            elif kind == "zero":
                X[i] = 0
        mats.append(X if lines_axis == -1 else X.T)
    G = np.stack(mats).reshape(tuple(batch) + (m, n)).astype(claim.dtype)
    info = {"seed": seed, "line_kinds": "".join(k[0] for k in kinds),
            "offset_ratio": offset_ratio, "log_scale_range": [float(lo), float(hi)]}
    return Case(G, info)


def _stat_axis(claim, shape) -> int:
    if claim.op not in ("grad_norm", "swan_update"):
        return -1
    ax = claim.axis
    if ax == "long":
        return -1 if shape[-1] >= shape[-2] else -2
    return -1 if ax in (-1, len(shape) - 1, 1) else -2


# -- measuring one output ----------------------------------------------------------------------

def measure(claim: Claim, X, G, prop: str, info: dict, offset_term=True) -> A.Measurement:
    """The op's agreement measurement of output ``X`` for input ``G`` under ``claim``."""
    dt = claim.dtype
    if claim.op == "grad_norm":
        return A.measure_grad_norm(X, G, axis=claim.axis, eps=claim.eps, dtype=dt, prop=prop,
                                   offset_term=offset_term, **info)
    if claim.op == "whiten":
        if claim.iterative:
            return A.measure_newton_schulz(X, G, steps=claim.steps, beta=claim.beta,
                                           scaling=claim.scaling, dtype=dt, prop=prop, **info)
        return A.measure_whitening(X, G, method=claim.method, dtype=dt, prop=prop, **info)
    if claim.op == "swan_update":
        return A.measure_swan_update(X, G, whiten_method=claim.method, steps=claim.steps,
                                     beta=claim.beta, scaling=claim.scaling,
                                     rescale=claim.rescale, axis=claim.axis, eps=claim.eps,
                                     dtype=dt, prop=prop, **info)
    return A.measure_sinkgd(X, G, iters=claim.iters, dtype=dt, prop=prop, eps=claim.eps,
                            eps_form=claim.eps_form, **info)


def _output_and_base(claim: Claim, call, case: Case, prop: str):
    """``f(G)`` in float64, and the agreement measurement of ``f(G)`` rounded to the dtype
    (whose tolerance and claim the property builds on)."""
    X = A.as_float64(call(case.G))
    return X, measure(claim, X.astype(case.G.dtype), case.G, prop, case.info)


def reference(claim: Claim, G) -> np.ndarray:
    """The claimed reading's exact result for input ``G`` (float64)."""
    G64 = A.as_float64(G)
    if claim.op == "grad_norm":
        return api.grad_norm(G64, axis=claim.axis, eps=claim.eps, check_finite=False)
    if claim.op == "sinkgd_update":
        return A.sinkgd_reference(G64, iters=claim.iters, eps=claim.eps,
                                  eps_form=claim.eps_form)
    if claim.op == "swan_update":
        kw = {}
        if claim.iterative:
            kw = {"steps": claim.steps, "beta": claim.beta, "scaling": claim.scaling,
                  "on_divergence": "ignore"}
        return api.swan_update(G64, whiten_method="svd" if claim.method == "eigh" else
                               claim.method, rescale=claim.rescale, axis=claim.axis,
                               eps=claim.eps, check_finite=False, **kw)
    m, n = G64.shape[-2:]
    if claim.iterative:
        tall = m > n
        W = np.swapaxes(G64, -1, -2) if tall else G64
        if claim.scaling != "none":
            amax = np.max(np.abs(W), axis=(-2, -1), keepdims=True)
            W = np.ldexp(W, -np.frexp(np.where(amax > 0, amax, 1))[1])
        P = spectral.predicted_newton_schulz(W, claim.steps, claim.beta, claim.scaling)
        return np.swapaxes(P, -1, -2) if tall else P
    rtol = default_rank_rtol(m, n, float(np.finfo(_compute(claim.dtype)).eps))
    return api.whiten(G64, "svd", rank_rtol=rtol, check_finite=False)


def _compute(dtype):
    return compute_dtype(dtype)


def rounding_slack(claim: Claim, H, H_exact, back_ref_G) -> float:
    """How far rounding a transformed input to the dtype moves the exact result.

    ``H`` is the transformed input as stored (rounded), ``H_exact`` the same transform in
    float64; the exact results of the two differ only through that rounding.
    """
    with np.errstate(all="ignore"):
        d1 = distance(claim, reference(claim, H), reference(claim, H_exact), H)
        d2 = distance(claim, reference(claim, H_exact), back_ref_G, H)
    return float(d1 + d2) if np.isfinite(d1 + d2) else math.inf


def distance(claim: Claim, X, Y, G) -> float:
    """Distance between two outputs in the op's metric (worst slice)."""
    if claim.op in ("grad_norm", "sinkgd_update"):
        return float(np.max(A.mixed_error(X, Y)))
    if claim.op == "swan_update":
        num = A.fro_error(X, Y)
        den = np.sqrt(np.sum(np.nan_to_num(A.as_float64(Y)) ** 2, axis=(-2, -1)))
        return float(np.max(np.where(den > 0, num / np.where(den > 0, den, 1), num)))
    g = A.as_float64(G)
    m, n = g.shape[-2:]
    if claim.iterative:
        return float(np.max(A.fro_error(X, Y))) / math.sqrt(min(m, n))
    s = np.linalg.svd(np.nan_to_num(g), compute_uv=False)
    rtol = default_rank_rtol(m, n, float(np.finfo(_compute(claim.dtype)).eps))
    r = np.maximum(np.sum(s > rtol * s[..., :1], axis=-1), 1)
    return float(np.max(A.fro_error(X, Y) / np.sqrt(r)))


def _sinkgd_eps_premise(claim) -> str | None:
    """Why a scale-invariance property is not applicable under a stated epsilon (spec 11.3):
    SinkGD's line epsilon, or SWAN's GradNorm epsilon in the variance; else None."""
    if claim.op == "sinkgd_update" and claim.eps:
        return (f"the claimed line epsilon ({claim.eps_form} {claim.eps:g}) decides lines of "
                "norm near or below it, so scaling the input changes the result there")
    if claim.op == "swan_update" and claim.eps:
        return (f"the claimed GradNorm epsilon ({claim.eps:g}, added to the variance) decides "
                "rows of variance near or below it, so scaling the input changes the result")
    return None


# -- the property type -----------------------------------------------------------------------

@dataclass
class Property:
    name: str
    ops: tuple
    doc: str
    strategy: Callable            # claim -> SearchStrategy[Case]
    check: Callable               # (claim, call, case) -> Measurement
    level: str = "required"
    input_class: str = "plain"
    applies: Callable = lambda claim: None   # claim -> None, or why not applicable

    def not_applicable(self, claim) -> str | None:
        if claim.op not in self.ops:
            return f"not a property of {claim.op}"
        if getattr(claim, "two_d_only", False) and self.input_class == "batched":
            return ("the claim is 2-D only (nd='2d_only'): batched input is not claimed (a "
                    "function that reads a 3-D array along other axes is not wrong there)")
        return self.applies(claim)


CATALOGUE: list[Property] = []


def prop(name, ops, doc, strategy, level="required", input_class="plain", applies=None):
    def deco(check):
        CATALOGUE.append(Property(name, tuple(ops), doc, strategy, check, level, input_class,
                                  applies or (lambda claim: None)))
        return check
    return deco


def properties_for(claim: Claim) -> list[Property]:
    return [p for p in CATALOGUE if claim.op in p.ops]


# -- generic strategies per op -------------------------------------------------------------------

def plain_inputs(claim, **kw):
    """The op's main input distribution: rows for the row-wise ops, spectra for whitening."""
    if claim.op in ("grad_norm", "sinkgd_update"):
        return row_cases(claim, **kw)
    if claim.op == "swan_update":
        return st.one_of(row_cases(claim, **kw), spectral_cases(claim, **kw))
    return spectral_cases(claim, **kw)


def _agree(claim, call, case, name):
    X = call(case.G)
    return measure(claim, X, case.G, name, case.info)


ALL = OPS


@prop("shape_and_dtype", ALL, "output has the input's shape and dtype (spec 6.1)",
      lambda c: plain_inputs(c))
def _shape_dtype(claim, call, case):
    X = call(case.G)
    ok_shape = tuple(X.shape) == tuple(case.G.shape)
    ok_dtype = np.dtype(X.dtype) == np.dtype(case.G.dtype)
    note = "" if ok_shape and ok_dtype else (
        f"output shape {tuple(X.shape)} dtype {X.dtype}; expected shape "
        f"{tuple(case.G.shape)} dtype {case.G.dtype}")
    return A.Measurement("shape_and_dtype", 0.0 if ok_shape and ok_dtype else math.inf, 0.0,
                         "shape and dtype equal (0) or not (inf)", case.describe(), note=note)


@prop("input_not_modified", ALL, "the target does not write into its input",
      lambda c: plain_inputs(c))
def _not_modified(claim, call, case):
    G = case.G.copy()
    call(G, copy=False)
    same = np.array_equal(G, case.G, equal_nan=True)
    return A.Measurement("input_not_modified", 0.0 if same else math.inf, 0.0,
                         "input unchanged (0) or modified (inf)", case.describe(),
                         note="" if same else "the input array was modified in place")


@prop("agrees_with_reference", ("grad_norm", "sinkgd_update", "swan_update"),
      "agrees with the float64 reference within the spec tolerance (spec 8)",
      lambda c: plain_inputs(c))
def _agree_ref(claim, call, case):
    return _agree(claim, call, case, "agrees_with_reference")


@prop("agrees_with_reference", ("whiten",),
      "agrees with U_r V_r^T (exact claim: spec 8.2, kappa-aware) or with the spectral "
      "prediction U phi(S) V^T (iterative claim: spec 8.3)",
      lambda c: spectral_cases(c))
def _agree_whiten(claim, call, case):
    return _agree(claim, call, case, "agrees_with_reference")


@prop("ill_conditioned", ("whiten", "swan_update"),
      "agreement at condition numbers near --max-kappa (where eigh/normal-equation routes "
      "lose kappa^2 accuracy)",
      # two singular values at least: a 1 x n input has kappa 1 whatever was asked
      lambda c: spectral_cases(c, kappa=(max(1.0, c.max_kappa / 100), c.max_kappa),
                               min_side=2))
def _ill(claim, call, case):
    return _agree(claim, call, case, "ill_conditioned")


@prop("zero_input", ALL, "the zero matrix maps to exactly the zero matrix (no NaN)",
      lambda c: spectral_cases(c, zero=True),
      applies=lambda c: "--full-rank-only claimed"
      if c.op == "whiten" and c.full_rank_only else None)
def _zero(claim, call, case):
    X = A.as_float64(call(case.G))
    bad = _shape_mismatch(X, case, "zero_input")
    if bad:
        return bad
    err = np.abs(X)
    err = float(np.max(np.where(np.isnan(err), np.inf, err))) if err.size else 0.0
    return A.Measurement("zero_input", err, 0.0, "max |X| (must be exactly 0)",
                         case.describe())


def _shape_mismatch(X, case, name):
    if tuple(X.shape) != tuple(case.G.shape):
        return A.Measurement(name, math.inf, 0.0, "output shape",
                             case.describe(), note=f"output shape {tuple(X.shape)} != input "
                                                   f"shape {tuple(case.G.shape)}")
    return None


@prop("tall_input", ("whiten", "swan_update", "grad_norm", "sinkgd_update"),
      "tall input (m > n) agrees with the reference as wide input does (whitening: "
      "G (G^T G)^(-1/2), the same polar factor, spec 3.0)",
      lambda c: plain_inputs(c, shape="tall"))
def _tall(claim, call, case):
    return _agree(claim, call, case, "tall_input")


@prop("batched", ALL, "a (batch, m, n) stack is processed slice by slice (spec 6)",
      lambda c: plain_inputs(c, batch=(3,)), input_class="batched")
def _batched(claim, call, case):
    return _agree(claim, call, case, "batched")


@prop("extreme_scale", ALL, "no overflow/underflow for huge or tiny gradients (spec 6.3)",
      lambda c: plain_inputs(c, extreme=True), level="advisory")
def _extreme(claim, call, case):
    return _agree(claim, call, case, "extreme_scale")


# -- GradNorm --------------------------------------------------------------------------------

def _lines(X, axis):
    x = A.as_float64(X)
    return x if axis == -1 else np.swapaxes(x, -1, -2)


@prop("row_mean_zero", ("grad_norm",), "every non-constant line has mean 0 (spec 2)",
      lambda c: row_cases(c))
def _mean0(claim, call, case):
    X = call(case.G)
    ax = _stat_axis(claim, case.G.shape)
    bad = _shape_mismatch(A.as_float64(X), case, "row_mean_zero")
    if bad:
        return bad
    x = _lines(X, ax)
    err = np.abs(np.mean(x, axis=-1)) if x.size else np.zeros(1)
    err = np.where(np.isnan(err), np.inf, err)
    e, t, claimed = _per_line(claim, case.G, ax, err, 2.0)
    return A.Measurement("row_mean_zero", e, t, "max |mean of output line| (per-line bound)",
                         case.describe(), claim=claimed)


def _per_line(claim, G, ax, err, factor):
    """(error, tolerance, claimed) of the line with the largest error/tolerance ratio, each
    line with spec 8.1's bound for its own |mean|/std (offset term) times ``factor``."""
    g = _lines(G, ax)
    n = g.shape[-1]
    r = A.line_offset_ratio(g, -1, claim.eps)[..., 0] if g.size else np.zeros(1)
    tol = factor * (grad_norm_tolerance(n, claim.dtype, r) + grad_norm_tolerance(
        n, np.float64, r))
    tol = np.broadcast_to(tol, np.shape(err))
    ok = tol <= factor * TRUSTED_LIMIT
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ok, np.where(tol > 0, err / tol, np.inf * (err > 0)), -1.0)
    if not np.any(ok):
        return float(np.max(err)), float(np.max(tol)), False
    i = np.unravel_index(int(np.argmax(ratio)), np.shape(ratio))
    return float(np.asarray(err)[i]), float(tol[i]), True


@prop("row_std_one", ("grad_norm",),
      "every non-constant line has population std 1, i.e. ddof=0 (spec 2; sqrt(v/(v+eps)) "
      "with eps)", lambda c: row_cases(c))
def _std1(claim, call, case):
    X = call(case.G)
    ax = _stat_axis(claim, case.G.shape)
    bad = _shape_mismatch(A.as_float64(X), case, "row_std_one")
    if bad:
        return bad
    g = _lines(case.G, ax)
    x = _lines(X, ax)
    v = np.var(g - g[..., :1], axis=-1)
    nonconst = np.ptp(g, axis=-1) > 0
    expect = np.sqrt(v / (v + claim.eps)) if claim.eps else np.ones_like(v)
    with np.errstate(invalid="ignore", over="ignore"):
        sd = np.std(x, axis=-1)
    err = np.where(nonconst, np.abs(sd - expect), 0.0)
    err = np.where(np.isnan(err), np.inf, err)
    if not err.size:
        return A.Measurement("row_std_one", 0.0, 0.0, "", case.describe(), claim=False)
    e, t, claimed = _per_line(claim, case.G, ax, err, 4.0)
    return A.Measurement("row_std_one", e, t, "max |population std of output line - 1| "
                         "(per-line bound)", case.describe(), claim=claimed)


@prop("constant_row_zero", ("grad_norm",),
      "a line whose entries are all equal maps to zeros, never NaN (spec 2)",
      lambda c: row_cases(c, specials=True))
def _const(claim, call, case):
    X = call(case.G)
    ax = _stat_axis(claim, case.G.shape)
    g = _lines(case.G, ax)
    x = _lines(X, ax)
    const = np.ptp(g, axis=-1) == 0
    if not const.any():
        return A.Measurement("constant_row_zero", 0.0, 0.0, "", case.describe(), claim=False)
    err = np.abs(np.where(const[..., None], x, 0.0))
    err = np.where(np.isnan(err), np.inf, err)
    if claim.eps:  # (G - mean) / sqrt(var + eps): the rounded mean over sqrt(eps), per line
        e, t, claimed = _per_line(claim, case.G, ax, np.max(err, axis=-1), 1.0)
        return A.Measurement("constant_row_zero", e, t, "max |output| on constant lines "
                             "(per-line bound, offset term |mean| / sqrt(eps))",
                             case.describe(), claim=claimed)
    tol = measure(claim, X, case.G, "constant_row_zero", case.info).tolerance
    return A.Measurement("constant_row_zero", float(np.max(err)), tol,
                         "max |output| on constant lines", case.describe())


@prop("finite_output", ("grad_norm", "sinkgd_update", "swan_update"),
      "finite input gives finite output (constant/zero lines included)",
      lambda c: row_cases(c, specials=True))
def _finite(claim, call, case):
    X = A.as_float64(call(case.G))
    bad = int(np.size(X) - np.count_nonzero(np.isfinite(X)))
    return A.Measurement("finite_output", math.inf if bad else 0.0, 0.0,
                         "number of NaN/Inf entries (0 or inf)", case.describe(),
                         note=f"{bad} non-finite output entries" if bad else "")


@prop("affine_invariance", ("grad_norm", "swan_update"),
      "GradNorm(a G + b 1^T) = GradNorm(G) for per-line a > 0 and offsets b",
      lambda c: st.tuples(row_cases(c, specials=False), st.integers(0, 2 ** 32 - 1)))
def _affine(claim, call, pair):
    case, seed = pair
    G = case.G
    ax = _stat_axis(claim, G.shape)
    rng = np.random.default_rng(seed)
    g = _lines(G, ax)
    L = g.shape[-2]
    a = 2.0 ** rng.integers(-8, 9, size=g.shape[:-1] + (1,)) * rng.uniform(0.5, 2, g.shape[:-1]
                                                                           + (1,))
    if claim.eps:  # eps breaks scale invariance; only the shift invariance remains
        a = np.ones_like(a)
    sd = np.std(g, axis=-1, keepdims=True)
    b = rng.uniform(-3, 3, size=g.shape[:-1] + (1,)) * sd
    h = a * g + b
    H = (h if ax == -1 else np.swapaxes(h, -1, -2)).astype(claim.dtype)
    X1, X2 = call(G), call(H)
    b1 = measure(claim, X1, G, "affine_invariance", case.info)
    b2 = measure(claim, X2, H, "affine_invariance", case.info)
    err = distance(claim, X2, X1, G)
    slack = rounding_slack(claim, H, h if ax == -1 else np.swapaxes(h, -1, -2),
                           reference(claim, G))
    if claim.op == "grad_norm":
        return _gn_relational(claim, "affine_invariance", case, X2, A.as_float64(X1), H,
                              _gn_tol(claim, G), slack, b1.claim and b2.claim,
                              "distance between f(aG+b) and f(G)")
    meas = A.Measurement("affine_invariance", err,
                         b1.tolerance + b2.tolerance + 2 * slack,
                         "distance between f(aG+b) and f(G)", case.describe(),
                         note=f"{L} lines rescaled by a > 0 and shifted by b")
    meas.claim = b1.claim and b2.claim
    return meas


@prop("permutation_equivariance", ("grad_norm", "swan_update", "sinkgd_update", "whiten"),
      "f(P G Q) = P f(G) Q for permutations P, Q",
      lambda c: st.tuples(plain_inputs(c), st.integers(0, 2 ** 32 - 1)))
def _perm(claim, call, pair):
    case, seed = pair
    G = case.G
    rng = np.random.default_rng(seed)
    p = rng.permutation(G.shape[-2])
    q = rng.permutation(G.shape[-1])
    H = G[..., p, :][..., :, q]
    X1, b1 = _output_and_base(claim, call, case, "permutation_equivariance")
    X2 = call(H)
    b2 = measure(claim, X2, H, "permutation_equivariance", case.info)
    err = distance(claim, X2, X1[..., p, :][..., :, q], H)
    if claim.op == "grad_norm":   # permuted lines keep their |mean|/std
        return _gn_relational(claim, "permutation_equivariance", case, X2,
                              X1[..., p, :][..., :, q], H, _gn_tol(claim, H), 0.0,
                              b1.claim and b2.claim, "distance between f(PGQ) and P f(G) Q")
    return A.Measurement("permutation_equivariance", err, b1.tolerance + b2.tolerance,
                         "distance between f(PGQ) and P f(G) Q", case.describe())


# -- whitening ------------------------------------------------------------------------------

def _needs_exact(claim):
    return None if not claim.iterative else "iterative claim: see agrees_with_reference"


@prop("orthonormal_rows", ("whiten",),
      "full-rank input: X X^T = I (rows orthonormal; columns for tall X)",
      lambda c: spectral_cases(c), applies=_needs_exact)
def _orth(claim, call, case):
    X = call(case.G)
    base = measure(claim, X, case.G, "orthonormal_rows", case.info)
    kappa = case.describe().get("kappa", 1.0)
    m, n = case.G.shape[-2:]
    tol = 3 * float(np.max(exact_whitening_tolerance(m, n, kappa, claim.dtype, claim.method)))
    meas = A.measure_orthonormal_rows(X, tol=max(tol, base.tolerance * 3), dtype=claim.dtype,
                                      prop="orthonormal_rows")
    meas.input = case.describe()
    return meas


@prop("polar_symmetric_psd", ("whiten",),
      "X G^T is symmetric positive semidefinite: X has G's singular vectors",
      lambda c: spectral_cases(c))
def _psd(claim, call, case):
    X = call(case.G)
    base = measure(claim, X, case.G, "polar_symmetric_psd", case.info)
    tol = 2 * base.tolerance + 64 * unit_roundoff(np.float64) * max(case.G.shape[-2:])
    meas = A.measure_symmetric_psd(X, case.G, tol=tol, dtype=claim.dtype)
    meas.input = case.describe()
    if not base.claim:
        meas.claim = False
    return meas


@prop("singular_values_match_prediction", ("whiten",),
      "iterative claim: the output singular values are phi(s_i) (spec 3.6)",
      lambda c: spectral_cases(c), applies=lambda c: None if c.iterative else
      "exact claim: covered by orthonormal_rows")
def _svals(claim, call, case):
    X = call(case.G)
    base = measure(claim, X, case.G, "singular_values_match_prediction", case.info)
    s = np.linalg.svd(A.as_float64(case.G), compute_uv=False)
    phi = spectral.newton_schulz_singular_values(s, claim.steps, claim.beta, claim.scaling)
    m = min(case.G.shape[-2:])
    meas = A.measure_singular_values(X, phi, tol=base.tolerance * math.sqrt(m),
                                     prop="singular_values_match_prediction")
    meas.input = case.describe()
    meas.claim = base.claim
    return meas


@prop("rank_deficient", ("whiten",),
      "rank-deficient input gives the partial isometry U_r V_r^T (no completion of the null "
      "space; spec 3.1)",
      lambda c: spectral_cases(c, rank="deficient"),
      applies=lambda c: "--full-rank-only claimed" if c.full_rank_only else None)
def _rankdef(claim, call, case):
    return _agree(claim, call, case, "rank_deficient")


def _relational(claim, call, case, name, transform, back, note, exact=None):
    """f(T(G)) vs back(f(G)), within the two agreement tolerances.

    ``exact`` is the transform in float64 (default: ``transform`` of the float64 input); the
    effect of rounding T(G) to the dtype on the exact result is added to the tolerance.
    """
    G = case.G
    H = transform(G)
    X1 = call(G)
    X2 = call(H)
    b1 = measure(claim, X1, G, name, case.info)
    b2 = measure(claim, X2, H, name, case.info)
    err = distance(claim, X2, back(A.as_float64(X1)), H)
    H_exact = (exact or transform)(G.astype(np.float64))
    slack = rounding_slack(claim, H, H_exact, back(reference(claim, G)))
    if claim.op == "grad_norm":   # sign symmetry: the lines keep their |mean|/std
        return _gn_relational(claim, name, case, X2, back(A.as_float64(X1)), H,
                              _gn_tol(claim, H), slack, b1.claim and b2.claim,
                              f"distance between {note}")
    meas = A.Measurement(name, err, b1.tolerance + b2.tolerance + 2 * slack,
                         f"distance between {note}", case.describe())
    meas.claim = b1.claim and b2.claim
    return meas


def _gn_tol(claim, G) -> np.ndarray:
    """spec 8.1's elementwise GradNorm bound of input ``G`` (target dtype + float64
    reference), each line with its own offset term, broadcast to G's shape."""
    ax = _stat_axis(claim, G.shape)
    n = G.shape[ax]
    r = A.line_offset_ratio(G, ax, claim.eps)
    return np.broadcast_to(grad_norm_tolerance(n, claim.dtype, r)
                           + grad_norm_tolerance(n, np.float64, r), G.shape)


def _gn_relational(claim, name, case, X2, Y1, H, tol1, slack, claimed, metric):
    """GradNorm relations compared element by element: ``|f(T G) - back(f(G))|`` against the
    sum of the two elementwise bounds at that position (lines of different offsets have
    different bounds, so a scalar sum of the two worst-ratio tolerances is not one)."""
    err = np.asarray(A.mixed_error(X2, Y1), dtype=np.float64)
    tolH = _gn_tol(claim, H)
    if err.shape != tolH.shape:
        return A.Measurement(name, math.inf, 0.0, metric, case.describe(),
                             note="output shape differs from the input's")
    err = np.where(np.isnan(err), np.inf, err)
    tol = tolH + np.broadcast_to(tol1, tolH.shape) + 2 * slack
    ok = (tolH <= TRUSTED_LIMIT) & (np.broadcast_to(tol1, tolH.shape) <= TRUSTED_LIMIT)
    if err.size == 0:
        return A.Measurement(name, 0.0, 0.0, metric, case.describe(), claim=claimed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ok, np.where(tol > 0, err / np.where(tol > 0, tol, 1),
                                      np.where(err > 0, np.inf, 0.0)), -1.0)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return A.Measurement(name, float(err[i]), float(tol[i]), metric + " (elementwise bound)",
                         case.describe(), claim=claimed and bool(ok.any()))


@prop("scale_invariance", ("whiten", "swan_update", "sinkgd_update"),
      "f(c G) = f(G) for c > 0 (exact powers of two and general factors)",
      lambda c: st.tuples(spectral_cases(c), st.floats(-3, 3), st.booleans()),
      applies=lambda c: "scaling='none' is not scale invariant"
      if c.iterative and c.scaling == "none" else _sinkgd_eps_premise(c))
def _scale(claim, call, triple):
    case, logc, pow2 = triple
    c = 2.0 ** round(logc * 3.3) if pow2 else 10 ** logc
    return _relational(claim, call, case, "scale_invariance",
                       lambda G: (G.astype(np.float64) * c).astype(G.dtype), lambda X: X,
                       f"f({c:.3g} G) and f(G)", exact=lambda G: G * c)


@prop("transpose_equivariance", ("whiten",), "f(G^T) = f(G)^T",
      lambda c: spectral_cases(c))
def _transpose(claim, call, case):
    return _relational(claim, call, case, "transpose_equivariance",
                       lambda G: np.ascontiguousarray(np.swapaxes(G, -1, -2)),
                       lambda X: np.swapaxes(X, -1, -2), "f(G^T) and f(G)^T")


@prop("orthogonal_equivariance", ("whiten",), "f(Q1 G Q2) = Q1 f(G) Q2 for orthogonal Q1, Q2",
      lambda c: st.tuples(spectral_cases(c), st.integers(0, 2 ** 32 - 1)))
def _orth_eq(claim, call, pair):
    case, seed = pair
    rng = np.random.default_rng(seed)
    m, n = case.G.shape[-2:]
    Q1 = matrices.haar_orthogonal(rng, m, m)
    Q2 = matrices.haar_orthogonal(rng, n, n)
    meas = _relational(claim, call, case, "orthogonal_equivariance",
                       lambda G: (Q1 @ G.astype(np.float64) @ Q2).astype(G.dtype),
                       lambda X: Q1 @ X @ Q2, "f(Q1 G Q2) and Q1 f(G) Q2",
                       exact=lambda G: Q1 @ G @ Q2)
    return meas


# -- SWAN update ---------------------------------------------------------------------------------

@prop("rms_one", ("swan_update",),
      "rescaled update has ||X||_F = sqrt(m n) (RMS one per entry; spec 4 step 3)",
      lambda c: plain_inputs(c), applies=lambda c: None if c.rescale else
      "--no-rescale claimed")
def _rms(claim, call, case):
    X, base = _output_and_base(claim, call, case, "rms_one")
    m, n = case.G.shape[-2:]
    ref = api.swan_update(case.G.astype(np.float64), whiten_method="svd", axis=claim.axis,
                          eps=claim.eps)
    nz = np.sqrt(np.sum(ref ** 2, axis=(-2, -1))) > 0
    with np.errstate(over="ignore", invalid="ignore"):
        rms = np.sqrt(np.sum(X ** 2, axis=(-2, -1)) / (m * n))
    err = np.where(nz, np.abs(rms - 1), np.abs(rms))
    err = np.where(np.isnan(err), np.inf, err)
    return A.Measurement("rms_one", float(np.max(err)), 2 * base.tolerance,
                         "| ||X||_F / sqrt(mn) - 1 |", case.describe(), claim=base.claim)


@prop("constant_rows", ("swan_update",),
      "constant rows become zero rows of GradNorm(G): the whitening sees a rank-deficient "
      "matrix and must return the partial isometry (spec 3.1, 4)",
      lambda c: row_cases(c, specials=True))
def _const_swan(claim, call, case):
    return _agree(claim, call, case, "constant_rows")


# -- SinkGD ------------------------------------------------------------------------------------

@prop("column_norms", ("sinkgd_update",),
      "after the last (column) step every nonzero column has l2 norm sqrt(m) (spec 5)",
      lambda c: row_cases(c, specials=False))
def _colnorm(claim, call, case):
    X, base = _output_and_base(claim, call, case, "column_norms")
    m = case.G.shape[-2]
    nz = np.any(A.as_float64(case.G) != 0, axis=-2)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.sum(X ** 2, axis=-2))
        # a stated line epsilon leaves columns of norm below it unnormalised: the claimed
        # reading's own column norms (sqrt(m) wherever the epsilon does not act)
        want = (np.sqrt(np.sum(reference(claim, case.G) ** 2, axis=-2)) if claim.eps
                else math.sqrt(m))
    err = np.where(nz, np.abs(norms / want - 1), 0)
    err = np.where(np.isnan(err), np.inf, err)
    return A.Measurement("column_norms", float(np.max(err)), 2 * base.tolerance,
                         "max | ||column||_2 / sqrt(m) - 1 |", case.describe())


@prop("zero_lines_stay_zero", ("sinkgd_update",),
      "zero rows and columns stay zero, with no NaN (spec 5)",
      lambda c: st.tuples(row_cases(c, specials=True), st.integers(0, 2 ** 32 - 1)))
def _zero_lines(claim, call, pair):
    case, seed = pair
    rng = np.random.default_rng(seed)
    G = case.G.copy()
    n = G.shape[-1]
    if n > 1:
        G[..., :, int(rng.integers(n))] = 0
    X = A.as_float64(call(G))
    zr = ~np.any(A.as_float64(G) != 0, axis=-1)
    zc = ~np.any(A.as_float64(G) != 0, axis=-2)
    bad = (zr[..., :, None] | zc[..., None, :]) & (X != 0)
    nonfinite = ~np.isfinite(X)
    err = math.inf if (bad.any() or nonfinite.any()) else 0.0
    return A.Measurement("zero_lines_stay_zero", err, 0.0,
                         "nonzero or non-finite entries on zero lines (0 or inf)",
                         A.describe_input(G, **case.info))


@prop("row_scale_invariance", ("sinkgd_update",),
      "f(D G) = f(G) for a positive diagonal D (the first step normalises rows)",
      lambda c: st.tuples(row_cases(c, specials=False), st.integers(0, 2 ** 32 - 1)),
      applies=lambda c: _sinkgd_eps_premise(c))
def _rowscale(claim, call, pair):
    case, seed = pair
    rng = np.random.default_rng(seed)
    span = 3.0 if claim.dtype.itemsize > 2 else 1.0    # float16 overflows at 65504
    d = 10 ** rng.uniform(-span, span, size=case.G.shape[:-1] + (1,))
    return _relational(claim, call, case, "row_scale_invariance",
                       lambda G: (G.astype(np.float64) * d).astype(G.dtype), lambda X: X,
                       "f(D G) and f(G)", exact=lambda G: G * d)


@prop("sign_symmetry", ("sinkgd_update", "grad_norm", "whiten"), "f(-G) = -f(G)",
      lambda c: plain_inputs(c))
def _sign(claim, call, case):
    return _relational(claim, call, case, "sign_symmetry", lambda G: -G, lambda X: -X,
                       "f(-G) and -f(G)")


@prop("offset_robustness", ("grad_norm",),
      "lines with |mean| up to 1e4 std keep the offset-free accuracy of spec 8.1 (the "
      "textbook two-pass mean/var loses |mean|/std * u: allowed by the required bound, "
      "flagged here)",
      lambda c: row_cases(c, specials=False,
                          offset_ratio=1e4 if c.dtype == np.float64 else 1e2),
      level="advisory")
def _offset(claim, call, case):
    # the offset-free bound: spec 8.1's offset term is what this advisory property flags
    X = call(case.G)
    return measure(claim, X, case.G, "offset_robustness", case.info, offset_term=False)


#: seconds a target may take on one input with a NaN/Inf before it counts as hung
NONFINITE_TIMEOUT_S = 30.0


def call_with_deadline(call, G, seconds):
    """``(call(G), False)``, or ``(None, True)`` when it has not returned after ``seconds``.

    Non-finite input is where real code hangs (a LAPACK loop that never converges); the call
    runs in a daemon thread so the check reports it instead of hanging with it.  Exceptions
    propagate as from a direct call.
    """
    box = {}

    def run():
        try:
            box["out"] = call(G)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["exc"] = exc
    worker = threading.Thread(target=run, name="swanref-nonfinite-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return None, True
    if "exc" in box:
        raise box["exc"]
    return box["out"], False


@prop("nonfinite_input", ALL,
      "NaN/Inf input is refused (an exception) or propagated (NaN output), never turned into "
      "plausible finite numbers (spec 6.2)",
      lambda c: st.tuples(plain_inputs(c), st.integers(0, 2 ** 32 - 1),
                          st.sampled_from([np.nan, np.inf, -np.inf])), level="advisory")
def _nonfinite(claim, call, triple):
    case, seed, bad = triple
    rng = np.random.default_rng(seed)
    G = case.G.copy()
    idx = tuple(int(rng.integers(k)) for k in G.shape)
    G[idx] = bad
    info = A.describe_input(case.G, **case.info)
    info["nonfinite_at"] = list(idx)
    try:
        out, hung = call_with_deadline(call, G, NONFINITE_TIMEOUT_S)
    except TargetError:
        return A.Measurement("nonfinite_input", 0.0, 0.0, "raised (ok) or NaN output (ok)",
                             info, note="refused")
    if hung:
        return A.Measurement(
            "nonfinite_input", math.inf, 0.0, "raised (ok) or NaN output (ok); a hang fails",
            info, note=f"{bad} at index {idx}: no return within {NONFINITE_TIMEOUT_S:g} s (LAPACK's "
                       "gesdd can loop forever on Inf, Reference-LAPACK/lapack#1409: check "
                       "finiteness before an SVD); the call is left running in the background")
    X = A.as_float64(out)
    ok = X.shape == G.shape and not np.isfinite(X).all()
    return A.Measurement("nonfinite_input", 0.0 if ok else math.inf, 0.0,
                         "raised (ok) or NaN output (ok); all-finite output fails", info,
                         note="" if ok else f"{bad} at index {idx} gave an all-finite output")
