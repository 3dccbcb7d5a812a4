"""``swanref check update``: does a function compute the orthogonalised update the spec defines?

The target takes one gradient array (a parameter's shape: 2-D, N-D, or a stack) and returns the
update (what the optimizer adds to the parameter times ``-lr`` on a step with neutral momentum).
The claim names the preset, the scale rule and the conventions of spec section 9; each property
below probes one way real implementations get them wrong and is compared with
:func:`swanref.update.orthogonalized_update` on fixed, tiny probes (a check takes well under a
second per property on NumPy targets).

Probes are pre-scaled by an exact power of two (max|G| in [0.5, 1)), where the spec's operator
and a source's own arithmetic coincide; only ``direction_scale_invariant`` leaves that range.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from swanref.presets.catalogue import PRESETS, ROUTES, get_preset, schedule
from swanref.presets.lowprec import FORMATS, round_to
from swanref.spec.conventions import (SCALE_RULES, matrix_view, resolve_scale,
                                      scale_explanations)
from swanref.spec.readings import WHITEN_METHODS
from swanref.update import first_step_share, load_coefficients, orthogonalized_update
from swanref.verify.checker import (CheckReport, PropertyResult, TargetAborted, TargetTimeout,
                                    UsageError, smoke_call, compile_note, make_call,
                                    refused_everything, stopped)
from swanref.verify.claims import Claim, ClaimError, not_applicable, tolerance, unsupported_shape
from swanref.verify.claims.applicability import stateful
from swanref.verify.claims.model import require_evaluable
from swanref.verify.properties import TargetError
from swanref.verify.targets import recompile_advice

__all__ = ["UpdateClaim", "UPDATE_PROPERTIES", "check_update", "update_claim_knobs",
           "DIRECTION_TOLERANCE"]

#: relative Frobenius distance under which two updates are the same, per claimed dtype: the
#: preset match tolerance of swanref.presets (docs/presets.md 7)
MATCH = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}

#: direction_scale_invariant: an epsilon in its intended place moves the direction by about
#: eps x (slope of the polynomial) relative -- measured <= 1e-7 for the eps-1e-7 presets on these
#: probes (tests/test_update_check.py) -- while a floor that decides the result moves it by O(1)
DIRECTION_TOLERANCE = 1e-4

SCALES = (1e-12, 1e-6, 1e6, 1e12)



@dataclass
class UpdateClaim:
    preset: str = "svd"
    scale: str = "keller"
    scale_factor: float = 1.0
    stack_dims: int = 0
    row_norm: bool = False
    steps: int | None = None
    coefficients: list | None = None
    dtype: str = "float64"
    complex: bool = False
    #: None: the per-probe tolerance of the claim (docs/spec.md 11.4); a number: that, flat
    tolerance: float | None = None
    #: the whole claim (its epsilon, N-D rule, norm axis, low-precision order, ...)
    full: Claim | None = field(default=None, compare=False, repr=False)
    #: the per-probe tolerances of the property being run (the report shows the largest)
    seen: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        self.scale = resolve_scale(self.scale).name
        if self.dtype not in MATCH:
            raise ValueError(f"dtype must be one of {', '.join(MATCH)}, got {self.dtype!r}")
        if self.full is None:
            self.full = self.to_claim()

    #: Claim knobs this level evaluates (docs/spec.md 11.1)
    CLAIM_KNOBS = ("scale", "scale_factor", "stack_dims", "norm_axis", "steps", "coefficients",
                   "compute_dtype", "complex", "eps", "eps_form", "norm_scale", "lowprec_order",
                   "nd", "momentum", "nesterov", "io_dtype", "gate", "gate_rescale",
                   "second_moment", "second_moment_eps", "second_moment_beta",
                   "second_moment_debias")

    @classmethod
    def from_claim(cls, claim: Claim) -> UpdateClaim:
        """The update check's claim of a :class:`~swanref.verify.claims.Claim` (ClaimError for a
        knob this level cannot evaluate: a gate, a second moment, another preconditioner)."""
        require_evaluable(claim, "update", cls.CLAIM_KNOBS)
        if claim.nd == "routed":
            claim = claim.replace(nd="2d_only")  # N-D parameters never reach this update
        stated = claim.eps is not None or claim.eps_form is not None \
            or claim.norm_scale is not None or claim.lowprec_order != "cast_then_normalise"
        if stated and claim.preset is None and claim.method not in ("svd", "eigh"):
            raise ClaimError(f"eps, eps_form, norm_scale and lowprec_order are evaluated for a "
                             f"preset or an exact method, not for method {claim.method!r}")
        return cls(claim.preset or claim.method, claim.scale, claim.scale_factor,
                   claim.stack_dims, claim.norm_axis == "rows", claim.steps,
                   None if claim.coefficients is None else [list(t) for t in claim.coefficients],
                   claim.compute_dtype, claim.complex, claim.tolerance, full=claim)

    @property
    def stated(self) -> bool:
        """True when the claim states the epsilon, its form or the safety factor: the reference
        runs on the raw gradient (spec 9.5)."""
        c = self.full
        return c.eps is not None or c.eps_form is not None or c.norm_scale is not None

    @property
    def rescale(self) -> float:
        """The first step of a Nesterov optimizer orthogonalises (1 + mu) G: an update target
        wrapping one moves its epsilon by that factor (the eps-shift term of spec 11.4)."""
        c = self.full
        return 1.0 + c.momentum if c.nesterov != "off" else 1.0

    def to_claim(self) -> Claim:
        """The same claim as a :class:`~swanref.verify.claims.Claim` (tolerance kept)."""
        named = self.preset in PRESETS or self.preset in ROUTES
        return Claim(level="update", preset=self.preset if named else None,
                     method="preset" if named else self.preset, scale=self.scale,
                     scale_factor=self.scale_factor, stack_dims=self.stack_dims,
                     norm_axis="rows" if self.row_norm else "none", steps=self.steps,
                     coefficients=self.coefficients, compute_dtype=self.dtype,
                     complex=self.complex, tolerance=self.tolerance)

    @property
    def container(self):
        """The gradient's and the update's dtype: the claim's io_dtype, else float64 for a
        float64 claim and float32 otherwise."""
        return _NUMPY[self.full.container]

    @property
    def emulate(self):
        return self.dtype if self.dtype in ("bfloat16", "float16") else None

    def describe(self) -> dict:
        d = {"op": "update", "preset": self.preset, "scale": self.scale,
             "dtype": self.dtype, "tolerance": (self.tolerance if self.tolerance is not None
                                                else "per probe (spec 11.4)")}
        c = self.full
        for k in ("eps", "eps_form", "norm_scale", "second_moment_eps", "second_moment_beta"):
            if getattr(c, k) is not None:
                d[k] = getattr(c, k)
        for k, default in (("nd", "flatten"), ("norm_axis", "none"),
                           ("lowprec_order", "cast_then_normalise"), ("io_dtype", None),
                           ("gate", "none"), ("gate_rescale", "kept"),
                           ("second_moment", "none"), ("second_moment_debias", False)):
            if getattr(c, k) != default and not (k == "norm_axis" and c.norm_axis == "rows"):
                d[k] = getattr(c, k)
        if self.scale_factor != 1.0:
            d["scale_factor"] = self.scale_factor
        if self.stack_dims:
            d["stack_dims"] = self.stack_dims
        if self.row_norm:
            d["row_norm"] = True
        if self.steps is not None:
            d["steps"] = self.steps
        if self.coefficients is not None:
            d["coefficients"] = [list(t) for t in self.coefficients]
        if self.complex:
            d["complex"] = True
        return d


#: the numpy dtype of each claimed io dtype (bfloat16: ml_dtypes', a swanref dependency)
_NUMPY = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
          "float16": np.dtype(np.float16), "bfloat16": FORMATS["bfloat16"][0]}


class _Fail(Exception):
    def __init__(self, error, probe, message, shape=None, G=None):
        super().__init__(message)
        self.error, self.probe, self.message, self.shape, self.G = error, probe, message, shape, G


# -- probes and the reference ----------------------------------------------------------------

def _pow2(G, stack_dims=0):
    batch, m, n = matrix_view(G.shape, stack_dims)
    M = G.reshape(batch + (m, n))
    amax = np.max(np.abs(M), axis=(-2, -1), keepdims=True)
    e = np.frexp(np.where(amax > 0, amax, 1.0))[1]
    return (M * np.ldexp(1.0, -e)).reshape(G.shape)


def _probe(claim, shape, seed, complex_=False):
    rng = np.random.default_rng(seed)
    full = (1,) * claim.stack_dims + tuple(shape)
    G = rng.standard_normal(full)
    if complex_:
        G = G + 1j * rng.standard_normal(full)
    G = _pow2(_representable(claim, _pow2(G, claim.stack_dims)), claim.stack_dims)
    dt = claim.container
    if complex_:
        dt = np.complex128 if dt == np.float64 else np.complex64
    return G.astype(dt)


def _representable(claim, G):
    """G (max|G| in [0.5, 1) per matrix) rounded to the claimed 16-bit formats: the compute
    dtype's and the io dtype's (the probes a 16-bit source sees without a rounding of its
    own)."""
    for fmt in {claim.emulate, claim.full.io_dtype} & {"bfloat16", "float16"}:
        if np.iscomplexobj(G):
            G = (round_to(G.real, fmt).astype(np.float64)
                 + 1j * round_to(G.imag, fmt).astype(np.float64))
        else:
            G = round_to(G, fmt).astype(np.float64)
    return G


def reference(claim, G, stack_dims=None, **changes):
    """The claimed update of G (``changes``: knobs of orthogonalized_update replaced, for the
    diagnosis of a failure)."""
    emulate = claim.emulate
    if claim.preset in WHITEN_METHODS or np.iscomplexobj(G):
        emulate = None  # emulated formats are real-only (spec 9.7)
    c = claim.full
    kw = dict(scale=claim.scale, scale_factor=claim.scale_factor,
              stack_dims=claim.stack_dims if stack_dims is None else stack_dims,
              norm_axis=c.norm_axis, steps=claim.steps, coefficients=claim.coefficients,
              emulate=emulate, nd=c.nd, lowprec_order=c.lowprec_order, gate=c.gate,
              gate_rescale=c.gate_rescale, second_moment_eps=c.second_moment_eps,
              second_moment_beta=c.second_moment_beta,
              second_moment_debias=c.second_moment_debias)
    if claim.stated and claim.preset not in WHITEN_METHODS:
        kw.update(eps=c.eps, eps_form=c.eps_form, norm_scale=c.norm_scale)
    kw.update(changes)
    return orthogonalized_update(G, claim.preset, **kw)


def _tol(claim, G, rescale=None):
    """The tolerance for probe G: the claim's flat one, else spec 11.4's per-probe model."""
    if claim.tolerance is not None:
        return claim.tolerance
    G = np.asarray(G)
    c = claim.full
    if c.nd == "2d_only" and G.ndim - claim.stack_dims > 2:
        c = c.replace(nd="flatten")
    tol = tolerance(c, "update", G, rescale=claim.rescale if rescale is None else rescale)
    if c.gate != "none":  # entries near zero may flip the mask: spec 9.4 / 9.9
        tol = min(2.0 * math.sqrt(tol), 0.5)
    claim.seen.append(tol)
    return tol


def _alternatives(claim, G, out, tol, normalise=True):
    """Named conventions (one knob changed) whose update the target's output matches."""
    c = claim.full
    cands = []
    for ax in ("none", "rows", "columns", "columns_if_wide"):
        if ax != c.norm_axis:
            cands.append((f"norm_axis={ax!r}", dict(norm_axis=ax)))
    if claim.emulate:
        other = ("normalise_then_cast" if c.lowprec_order == "cast_then_normalise"
                 else "cast_then_normalise")
        cands.append((f"lowprec_order={other!r} (the normalisation's precision)",
                      dict(lowprec_order=other)))
        cands.append(("compute_dtype='float32' (no 16-bit compute)", dict(emulate=None)))
    elif claim.preset not in WHITEN_METHODS and not np.iscomplexobj(G):
        for dt in ("bfloat16", "float16"):
            cands.append((f"compute_dtype={dt!r} (computes in {dt})", dict(emulate=dt)))
    if claim.preset not in WHITEN_METHODS:
        for form in ("add", "clamp"):
            for e in (1e-6, 1e-7, 1e-8, 1e-10, 1e-12, 1e-15):
                if claim.stated and (e, form) == tuple(c.effective_eps):
                    continue
                cands.append((f"eps={e:g} ({form})", dict(eps=e, eps_form=form)))
        cands.append(("no epsilon (eps_form='none')", dict(eps=0.0, eps_form="none")))
    if c.nd != "flatten" and G.ndim - claim.stack_dims > 2:
        cands.append(("nd='flatten'", dict(nd="flatten")))
    found = []
    with np.errstate(all="ignore"):
        for label, ch in cands:
            try:
                alt = reference(claim, G, **ch)
                t = tol
                if ch.get("emulate"):  # the alternative's own precision
                    t = max(tol, tolerance(c.replace(compute_dtype=ch["emulate"],
                                                     nd="flatten"), "update", G))
            except (ValueError, TypeError, ClaimError):
                continue
            d = _dist(_mats(out, claim.stack_dims), _mats(alt, claim.stack_dims), normalise)
            if d <= t:
                found.append((d / t if t > 0 else 0.0, label))
    return [label for _, label in sorted(found)]


def _named(found):
    return f" -- matches {', '.join(found[:3])} instead" if found else ""


def _mats(X, stack_dims):
    batch, m, n = matrix_view(X.shape, stack_dims)
    return np.asarray(X).reshape((-1, m, n)).astype(np.complex128 if np.iscomplexobj(X)
                                                   else np.float64)


def _fro(M):
    return float(np.sqrt(np.sum(np.abs(M) ** 2)))


def _unit(M):
    f = _fro(M)
    return M / f if f > 0 else M


def _dist(a, b, normalise=False):
    """Largest relative Frobenius distance over the matrices of the stack (inf on NaN)."""
    worst = 0.0
    for x, y in zip(a, b):
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return math.inf
        if normalise:
            x, y = _unit(x), _unit(y)
        worst = max(worst, _fro(x - y) / max(_fro(y), 1e-300))
    return worst


def _checked(out, G, name):
    out = np.asarray(out)
    if out.shape != G.shape:
        raise _Fail(math.inf, name, f"output shape {out.shape} for input shape {G.shape}: the "
                    "update must have the parameter's shape (reshape the matrix view back)",
                    G.shape, G)
    return out


def _scale_explanations(claim, m, n, ratio, extra_shapes=(), tol=1e-3):
    """:func:`swanref.spec.conventions.scale_explanations` for ``claim``'s scale rule."""
    return scale_explanations(claim.scale, claim.scale_factor, m, n, ratio, extra_shapes, tol)


# -- the properties ----------------------------------------------------------------------------

@dataclass
class UpdateProperty:
    name: str
    doc: str
    run: object
    applies: object = None
    level: str = "required"
    input_class: str = "plain"


def _compare(claim, call, G, label, normalise=True):
    """``(out, tol, d)``: the target's update of probe ``G``, the probe's tolerance and the
    distance to the claimed update (directions when ``normalise``) -- every property's loop."""
    out = _checked(call(G), G, label)
    ref = reference(claim, G)
    tol = _tol(claim, G)
    return out, tol, _dist(_mats(out, claim.stack_dims), _mats(ref, claim.stack_dims),
                           normalise)


def _direction(claim, call):
    worst = 0.0
    for label, shape in (("wide 4x7", (4, 7)), ("tall 7x4", (7, 4)), ("square 5x5", (5, 5))):
        G = _probe(claim, shape, 11)
        out, tol, d = _compare(claim, call, G, label)
        if d > tol:
            raw = _dist(_mats(out, claim.stack_dims), _mats(G, claim.stack_dims), True)
            why = (" -- the update is the raw gradient's direction: orthogonalisation skipped"
                   if raw <= tol else _named(_alternatives(claim, G, out, tol)))
            raise _Fail(d, label, f"direction differs from {claim.preset!r} on the {label} "
                        f"probe by {d:.3g} > {tol:.3g} (relative Frobenius, both "
                        f"normalised){why}", G.shape, G)
        worst = max(worst, d)
    return worst


def _scale_on(shapes, name):
    def run(claim, call):
        worst = 0.0
        for label, shape in shapes:
            G = _probe(claim, shape, 12)
            out = np.asarray(call(G))
            ref = reference(claim, G)
            tol = _tol(claim, G)
            fo, fr = _fro(out), _fro(ref)
            if not np.isfinite(fo):
                raise _Fail(math.inf, label, f"non-finite update on the {label} probe",
                            G.shape, G)
            ratio = fo / fr
            err = abs(ratio - 1.0)
            if err > tol:
                _, m, n = matrix_view(shape, 0)
                extra = []
                if len(shape) > 2:
                    extra.append(((shape[-2], shape[-1]), " read from the trailing axes "
                                  f"{shape[-2:]}"))
                    extra.append(((shape[0], shape[1]), f" read from axes (0, 1) "
                                  f"{shape[:2]} unflattened"))
                names = _scale_explanations(claim, m, n, ratio, extra, tol)
                hint = f"; matches {', '.join(names[:4])}" if names else ""
                raise _Fail(err, label, f"||update||_F / ||spec update||_F = {ratio:.6g} on the "
                            f"{label} probe (matrix view {m}x{n}, claimed scale "
                            f"{claim.scale!r}: {SCALE_RULES[claim.scale].formula}, tolerance "
                            f"{tol:.3g}){hint}", G.shape, G)
            worst = max(worst, err)
        return worst
    return run


def _nd(claim, call):
    worst = 0.0
    for label, shape in (("conv2d 4x2x3x1", (4, 2, 3, 1)), ("conv1d 3x2x4", (3, 2, 4)),
                         ("conv2d 6x1x2x2", (6, 1, 2, 2))):
        if unsupported_shape(claim.full, shape):  # e.g. 4-D routed, 3-D batched
            continue
        G = _probe(claim, shape, 13)
        out, tol, d = _compare(claim, call, G, label)
        if d > tol:
            rule = {"flatten": "matrix view (out, in*k...)", "batch_leading": "a batch of the "
                    "last two axes", "flatten_4d_batch_3d": "3-D a batch of the last two axes, "
                    "4-D the matrix (out, in*k...)", "route_4d_batch_3d": "3-D a batch of the "
                    "last two axes"}[claim.full.nd]
            raise _Fail(d, label, f"on the {label} probe the update is not the claimed one "
                        f"(nd={claim.full.nd!r}: {rule}, orthogonalised and reshaped back): "
                        f"relative distance of the directions {d:.3g} > {tol:.3g}"
                        f"{_named(_alternatives(claim, G, out, tol))}", G.shape, G)
        worst = max(worst, d)
    return worst


def _stack(claim, call):
    rng = np.random.default_rng(14)
    k = claim.stack_dims
    shape = (3,) + (1,) * (k - 1) + (4, 6)
    G = _pow2(_representable(claim, _pow2(rng.standard_normal(shape), k)), k)
    G = G.astype(claim.container)
    out, tol, d = _compare(claim, call, G, "stack 3x4x6", normalise=False)
    if d > tol:
        raise _Fail(d, "stack 3x4x6", f"a slice of the stack differs from its own update by {d:.3g}"
                    " (each parameter of a stack must be orthogonalised and scaled on its own)",
                    G.shape, G)
    H = G.copy()
    H[0] = _pow2(rng.standard_normal(H[0].shape), k - 1 if k > 1 else 0).astype(H.dtype)
    out2 = np.asarray(call(H))
    d2 = _dist(_mats(out2, k)[1:], _mats(out, k)[1:])
    if d2 > tol:
        raise _Fail(d2, "stack 3x4x6, slice 0 replaced", f"changing slice 0 changed the updates "
                    f"of the other slices by {d2:.3g}: the stack is not treated as independent "
                    "parameters", G.shape, H)
    return max(d, d2)


def _dtype(claim, call):
    """float64 and float32 gradients give updates of their own dtype; a claimed io_dtype: a
    gradient of that dtype gives an update of that dtype."""
    io = claim.full.io_dtype
    for dt in (claim.container,) if io else (np.dtype(np.float64), np.dtype(np.float32)):
        G = _probe(claim, (4, 6), 15).astype(dt)
        out = np.asarray(call(G))
        if out.dtype != G.dtype:
            hint = ""
            if out.dtype.name in ("bfloat16", "float16"):
                hint = (f" -- the update stays in {out.dtype.name}: an orthogonaliser that "
                        "returns its compute dtype; a claim io_dtype="
                        f"{out.dtype.name} states gradients and updates of that dtype")
            elif dt == np.float64 and out.dtype == np.float32 and not io:
                hint = (" -- a framework without float64 (JAX without jax_enable_x64, "
                        "Keras on JAX) computes float64 input in float32: enable float64 "
                        "there, or claim io_dtype=float32 (float32 gradients only)")
            raise _Fail(math.inf, f"{dt.name} 4x6", f"a {dt.name} gradient gave a {out.dtype} "
                        f"update (the update has the {'claimed io_dtype' if io else 'parameter'}"
                        f"'s dtype){hint}", G.shape, G)
    return 0.0


def _mutation(claim, call):
    G = _probe(claim, (4, 6), 16)
    keep = G.copy()
    out = np.asarray(call(G, copy=False))
    if not np.array_equal(G, keep, equal_nan=True):
        changed = int(np.sum(G != keep))
        raise _Fail(math.inf, "4x6", f"the target modified its input ({changed} entries "
                    "changed): the gradient must not be scaled or overwritten in place",
                    G.shape, keep)
    if np.shares_memory(out, G):
        raise _Fail(math.inf, "4x6", "the update shares memory with the gradient (alias)",
                    G.shape, keep)
    return 0.0


def _zero(claim, call):
    shapes = [("zero 4x6", (4, 6)), ("zero conv 4x2x3x1", (4, 2, 3, 1))]
    worst = 0.0
    for label, shape in shapes:
        full = (1,) * claim.stack_dims + shape
        if unsupported_shape(claim.full, full):
            continue  # outside the claim (a 2-D-only claim): no N-D probe
        G = np.zeros(full, claim.container)
        out = np.asarray(call(G))
        err = float(np.max(np.abs(out))) if np.all(np.isfinite(out)) else math.inf
        if err > 0:
            raise _Fail(err, label, f"a zero gradient gave a nonzero or non-finite update "
                        f"(max |update| = {err:g}); the spec's update is exactly zero",
                        G.shape, G)
    if claim.stack_dims:
        G = _probe(claim, (4, 6), 17)
        G = np.concatenate([np.zeros_like(G), G], axis=0)
        out = np.asarray(call(G))
        ref = reference(claim, G)
        if not (np.all(np.isfinite(out)) and np.all(out[0] == 0)):
            raise _Fail(math.inf, "stack with a zero slice", "a zero slice of a stack gave a "
                        "nonzero or non-finite update", G.shape, G)
        worst = _dist(_mats(out, claim.stack_dims)[1:], _mats(ref, claim.stack_dims)[1:])
    return worst


def _invariant(claim, call):
    G = _probe(claim, (5, 8), 18).astype(np.float64)
    ref = reference(claim, G.astype(claim.container))
    tol = max(DIRECTION_TOLERANCE, _tol(claim, G))
    graft = claim.scale == "graft"
    worst = 0.0
    for c in SCALES:
        with np.errstate(over="ignore", under="ignore"):
            Gc = (G * c).astype(claim.container)
        if not np.all(np.isfinite(Gc)) or not np.any(Gc):
            continue  # outside the claimed io format's range: the claim says nothing here
        out = np.asarray(call(Gc))
        if not np.all(np.isfinite(out)):
            raise _Fail(math.inf, f"G x {c:g}", f"non-finite update for the gradient scaled by "
                        f"{c:g}", G.shape, Gc)
        d = _dist(_mats(out, claim.stack_dims), _mats(ref, claim.stack_dims), normalise=True)
        if d > tol:
            raise _Fail(d, f"G x {c:g}", f"the direction of the update for {c:g} * G differs "
                        f"from that for G by {d:.3g} (relative); an epsilon floor in the "
                        "normalisation (e.g. X / (||X||_F + 1e-7)) decides the result for small "
                        "gradients: state it (--set eps=1e-7 --set eps_form=add, or --preset "
                        "NAME) and the 'epsilon' property checks it instead", G.shape, Gc)
        if not graft:
            r = abs(_fro(out) / _fro(ref) - 1)
            if r > tol:
                raise _Fail(r, f"G x {c:g}", f"the size of the update for {c:g} * G differs "
                            f"from that for G by {r:.3g} (relative); scale rule {claim.scale!r} "
                            "does not depend on ||G||", G.shape, Gc)
            d = max(d, r)
        worst = max(worst, d)
    return worst


#: the scales of the 'epsilon' property per compute dtype (float16 cannot hold 1e-12 * G)
EPS_SCALES = {"float16": (1e-4, 1e-2, 1e2, 1e6), "default": (1e-12, 1e-9, 1e-7, 1e-6, 1e6,
                                                              1e12)}


def _epsilon(claim, call):
    """The stated epsilon, form and safety factor at their place: c * G against the claimed
    update of c * G itself (the epsilon acting on the raw gradient), c from tiny to huge."""
    G = _probe(claim, (5, 8), 18).astype(np.float64)
    worst = 0.0
    for c in EPS_SCALES.get(claim.dtype, EPS_SCALES["default"]):
        with np.errstate(over="ignore", under="ignore"):
            Gc = (G * c).astype(claim.container)
        if not np.all(np.isfinite(Gc)) or not np.any(Gc):
            continue  # outside the claimed io format's range: the claim says nothing here
        with np.errstate(all="ignore"):
            ref = reference(claim, Gc)
        if not np.all(np.isfinite(ref)) or _fro(ref) == 0:
            continue  # outside the claimed format's range: the claim says nothing here
        out = np.asarray(call(Gc))
        if not np.all(np.isfinite(out)):
            why = ""
            big = float(np.max(np.abs(Gc)))
            if claim.emulate == "float16" and big > 65504:
                why = (f" -- max |G| = {big:.3g} exceeds float16's range: a cast to float16 "
                       "before the normalisation overflows (lowprec_order='cast_then_normalise'"
                       ", not the claimed 'normalise_then_cast')")
            raise _Fail(math.inf, f"G x {c:g}", f"non-finite update for the gradient scaled by "
                        f"{c:g} (||G||_F = {_fro(Gc):.3g}); the claimed update is finite{why}",
                        G.shape, Gc)
        tol = _tol(claim, Gc, rescale=1.0)
        # directions: the size is the scale properties' (a scale mistake is named there)
        d = _dist(_mats(out, claim.stack_dims), _mats(ref, claim.stack_dims), normalise=True)
        if d > tol:
            eps, form = claim.full.effective_eps
            safety = claim.full.norm_scale
            if safety is None:
                safety = get_preset(claim.preset).norm_scale
            found = _alternatives(claim, Gc, out, tol)
            raise _Fail(d, f"G x {c:g}", f"for the gradient scaled by {c:g} (||G||_F = "
                        f"{_fro(Gc):.3g}) the update differs by {d:.3g} > {tol:.3g} from the "
                        f"claimed one (epsilon {form} {eps:g} on the raw gradient, norm safety "
                        f"factor {safety:g}){_named(found)}", G.shape, Gc)
        worst = max(worst, d)
    return worst


#: second_moment_eps: candidate epsilons the diagnosis names
_AXIS_EPS_CANDIDATES = (1e-6, 1e-7, 1e-8, 1e-10, 1e-12)


def _tiny_axis_probe(claim, eps, share):
    """A probe whose first five rows (row normalisation: a tall 10x4 gradient) or columns
    (column normalisation: a wide 4x10 one) are scaled by a power of two ``t`` so small that
    their RMS in the orthogonalised update is about ``eps / sqrt(share)``: there the epsilon
    halves them, a 10x larger one shrinks them 6x and none restores them (spec 9.4).  The rest
    keeps full rank, so the orthogonaliser converges and the small rows stay proportional."""
    c = claim.full
    cols = c.norm_axis == "columns" or c.norm_axis == "columns_if_wide"
    shape = (4, 10) if cols else (10, 4)
    G = _probe(claim, shape, 21).astype(np.float64)
    t0 = 2.0 ** -20
    sel = (slice(None), slice(0, 5)) if cols else (slice(0, 5), slice(None))

    def scaled(t):
        H = G.copy()
        H[sel] *= t
        return H
    O = _mats(reference(claim, scaled(t0).astype(claim.container), norm_axis="none",
                        scale="none", scale_factor=1.0, gate="none",
                        second_moment_eps=None), claim.stack_dims)[0]
    part = O[sel]
    r0 = float(np.sqrt(np.mean(np.abs(part) ** 2)))
    target = (eps if eps > 0 else 1e-10) / math.sqrt(share)
    t = 2.0 ** round(math.log2(t0 * target / r0)) if r0 > 0 else t0
    return scaled(t).reshape((1,) * claim.stack_dims + shape).astype(claim.container)


def _second_moment_eps(claim, call):
    """The stated epsilon of the normalisation after orthogonalising at its place: rows (or
    columns) of the update small enough that ``sqrt(share ms) + eps`` is decided by eps."""
    c = claim.full
    share = first_step_share(c.second_moment_beta, c.second_moment_debias)
    G = _tiny_axis_probe(claim, c.second_moment_eps, share)
    cols = G.shape[-1] > G.shape[-2]
    label = f"{'wide' if cols else 'tall'} {G.shape[-2]}x{G.shape[-1]}, five small " \
            f"{'columns' if cols else 'rows'}"

    def sizes(X):  # what the epsilon decides: the size of each row (column)
        return np.linalg.norm(_mats(X, claim.stack_dims), axis=-2 if cols else -1)
    out = _checked(call(G), G, label)
    tol = _tol(claim, G)
    d = _dist(sizes(out), sizes(reference(claim, G)))
    if d <= tol:
        return d
    cands = [(f"second_moment_eps={e:g}", dict(second_moment_eps=e))
             for e in _AXIS_EPS_CANDIDATES if e != c.second_moment_eps]
    cands.append(("no epsilon in the normalisation (second_moment_eps=None)",
                  dict(second_moment_eps=None)))
    if c.second_moment_beta is not None:
        cands.append((f"second_moment_debias={not c.second_moment_debias}",
                      dict(second_moment_debias=not c.second_moment_debias)))
    found = []
    with np.errstate(all="ignore"):
        for lab, ch in cands:
            da = _dist(sizes(out), sizes(reference(claim, G, **ch)))
            if da <= tol:
                found.append((da, lab))
    raise _Fail(d, label, f"on the {label} probe the {'column' if cols else 'row'} sizes of "
                f"the update differ by {d:.3g} > {tol:.3g} from the claimed ones "
                f"(second_moment_eps {c.second_moment_eps:g} added to sqrt({share:g} x mean "
                f"square) of each {'column' if cols else 'row'})"
                f"{_named([lab for _, lab in sorted(found)])}", G.shape, G)


def _axis_eps_premise(claim):
    c = claim.full
    if c.second_moment_eps is None:
        return ("the claim states no epsilon for the normalisation after orthogonalising "
                "(second_moment_eps)")
    if c.norm_axis == "none":
        return "no normalisation after orthogonalising claimed (norm_axis)"
    if "float16" in (claim.dtype, c.container):
        return "the probe's small rows underflow float16"
    return None


def _conjugate_free(claim, G):
    """The claimed polynomial iteration with plain transposes (a missing conjugate), or None
    when the claim is no polynomial preset."""
    if claim.preset in WHITEN_METHODS:
        return None
    p = get_preset(claim.preset)
    if p.norm == "aol" or p.form in ("coupled", "gram") or p.route == "svd_square":
        return None
    eps, form = claim.full.effective_eps if claim.stated else (p.eps, p.norm)
    sched = schedule(claim.preset, claim.steps, claim.coefficients)
    out = []
    for X in _mats(G, claim.stack_dims):
        m, n = X.shape
        flip = {"to_wide": m > n, "to_tall": n > m}.get(p.transpose, False)
        X = X.T if flip else X
        f = np.sqrt(np.sum(np.abs(X) ** 2)) * p.norm_scale
        X = X / (f + eps if form == "add" else max(f, eps) if form == "clamp" else f)
        for a, b, cc in sched:
            A = X @ X.T
            X = a * X + (b * A + cc * A @ A) @ X
        out.append(X.T if flip else X)
    return np.stack(out)


def _complex(claim, call):
    worst = 0.0
    for label, shape in (("complex wide 4x7", (4, 7)), ("complex tall 7x4", (7, 4))):
        G = _probe(claim, shape, 19, complex_=True)
        try:
            out = call(G)
        except Exception as exc:  # noqa: BLE001
            raise _Fail(math.inf, label, f"target refused complex input: {exc}", G.shape, G) \
                from exc
        out = _checked(out, G, label)
        if not np.iscomplexobj(out):
            raise _Fail(math.inf, label, f"a complex gradient gave a {out.dtype} update",
                        G.shape, G)
        ref = reference(claim, G)
        tol = _tol(claim, G)
        d = _dist(_mats(out, claim.stack_dims), _mats(ref, claim.stack_dims))
        if d > tol:
            why = ""
            free = _conjugate_free(claim, G)
            if free is not None:
                dc = _dist(_mats(out, claim.stack_dims), free, normalise=True)
                why = (" -- a missing conjugate: X X^T instead of X X^H (distance to that "
                       f"variant {dc:.3g})" if dc <= max(tol, 1e-6) else
                       f" -- not a missing conjugate (the conjugate-free update is {dc:.3g} "
                       "away)")
            raise _Fail(d, label, f"complex {label}: relative distance {d:.3g} > {tol:.3g} "
                        f"from the claimed update (conjugate transposes: A = X X^H, polar "
                        f"factor U V^H){why}", G.shape, G)
        worst = max(worst, d)
    return worst


def _premise(name, own=None):
    """applies(claim): the claim's own premise for ``name`` (spec 11.3), then ``own``."""
    def applies(claim):
        return not_applicable(claim.full, name) or (own(claim) if own else None)
    return applies


def _eps_premise(claim):
    if not claim.stated:
        return ("the claim states no epsilon (the spec reading: 'direction_scale_invariant' "
                "checks it); state eps, eps_form or norm_scale, or use --preset")
    return None


def _eps_invariant_premise(claim):
    if claim.stated:
        eps, form = claim.full.effective_eps
        return (f"the claimed epsilon ({form} {eps:g}) acts on the raw gradient, so it decides "
                "the direction of tiny gradients: the 'epsilon' property checks it at its place")
    return None


UPDATE_PROPERTIES = [
    UpdateProperty("direction", "the update's direction is the claimed preset's on wide, tall "
                   "and square gradients (catches a skipped orthogonalisation, wrong "
                   "coefficients, a wrong SVD branch or preconditioner)", _direction),
    UpdateProperty("scale_wide", "||update||_F is the claimed scale rule's on a wide gradient",
                   _scale_on([("wide 4x7", (4, 7))], "scale_wide")),
    UpdateProperty("scale_tall", "||update||_F is the claimed scale rule's on a tall gradient",
                   _scale_on([("tall 7x4", (7, 4))], "scale_tall")),
    UpdateProperty("scale_square", "||update||_F is the claimed scale rule's on a square "
                   "gradient", _scale_on([("square 5x5", (5, 5))], "scale_square")),
    UpdateProperty("scale_conv", "the scale rule reads m, n from the claimed N-D view of a conv "
                   "weight", _scale_on([("conv2d 4x2x3x1", (4, 2, 3, 1)),
                                        ("conv2d 8x1x1x3", (8, 1, 1, 3))], "scale_conv"),
                   applies=_premise("scale_conv")),
    UpdateProperty("nd_round_trip", "an N-D gradient is orthogonalised as the claimed matrix "
                   "view (nd) and reshaped back to the parameter's shape", _nd,
                   applies=_premise("nd_round_trip")),
    UpdateProperty("stack_independent", "each parameter of a stack (stack_dims leading axes) "
                   "is updated on its own", _stack,
                   applies=lambda c: None if c.stack_dims else
                   "no stack claimed (pass --stack-dims 1 for stacked parameters)"),
    UpdateProperty("dtype_kept", "float64 and float32 gradients give updates of their own dtype",
                   _dtype),
    UpdateProperty("no_mutation", "the gradient is not modified and the update does not alias "
                   "it", _mutation),
    UpdateProperty("zero_to_zero", "a zero gradient (or zero slice) gives a zero update, never "
                   "NaN", _zero, applies=_premise("zero_to_zero")),
    UpdateProperty("direction_scale_invariant", "the update for c*G, c = 1e-12 .. 1e12, is the "
                   "update for G (direction and, except for 'graft', size)", _invariant,
                   applies=_eps_invariant_premise),
    UpdateProperty("epsilon", "a stated epsilon, its form and the norm's safety factor at "
                   "their place: the update of c*G, c = 1e-12 .. 1e12, is the claimed update of "
                   "c*G on the raw gradient", _epsilon, applies=_eps_premise),
    UpdateProperty("second_moment_eps", "the stated epsilon of the row/column normalisation "
                   "after orthogonalising (NorMuon) at its place: rows or columns of the update "
                   "small enough that the epsilon decides their size", _second_moment_eps,
                   applies=_axis_eps_premise),
    UpdateProperty("complex_input", "complex gradients: conjugate transposes, polar factor "
                   "U V^H", _complex,
                   applies=lambda c: None if c.complex else
                   "no complex support claimed (pass --complex or --set complex=true)"),
]


def update_claim_knobs(*, preset=None, scale=None, scale_factor=None, stack_dims=None,
                       row_norm=False, steps=None, coefficients=None, dtype=None,
                       complex=False, tolerance=None) -> tuple:
    """``(knobs, preset name or None)``: the claim the update check's options state, as
    ``swanref check update`` and :func:`check_update` both read them (docs/spec.md 11.1): a
    catalogue preset is written out as its source runs it (``Claim.from_preset``: compute
    dtype, N-D rule, epsilon, low-precision order) below the options given; an exact or
    iterative method is the ``method``; ``None`` options are not stated."""
    given = {"level": "update"}
    for key, value in (("scale", scale), ("scale_factor", scale_factor),
                       ("stack_dims", stack_dims), ("steps", steps),
                       ("compute_dtype", dtype), ("tolerance", tolerance)):
        if value is not None:
            given[key] = value
    if row_norm:
        given["norm_axis"] = "rows"
    if complex:
        given["complex"] = True
    if coefficients is not None:
        table = coefficients if isinstance(coefficients, (list, tuple)) else \
            load_coefficients(coefficients)
        given["coefficients"] = [list(t) for t in table]
    if preset is None or preset in WHITEN_METHODS:  # an exact or iterative method
        given["method"] = preset or "svd"
        return given, None
    return given, preset


def check_update(fn, *, preset=None, scale=None, scale_factor=None, stack_dims=None,
                 row_norm=False, steps=None, coefficients=None, dtype=None,
                 complex=False, tolerance=None, properties=None, array_type="numpy",
                 target_name=None, strict=False, claim=None, runner=None, **knobs):
    """Run every update property on callable ``fn``; returns a checker.CheckReport.

    The keywords are ``swanref check update``'s options, read the same way
    (:func:`update_claim_knobs`): ``preset`` names the orthogonaliser (default the exact
    ``'svd'``); a catalogue preset is read as its source runs it -- its compute dtype, N-D
    rule, epsilon and low-precision order -- below the keywords given (``dtype`` states another
    compute dtype).  The spec reading of a preset (its epsilon after an exact power-of-two
    prescale, float64) is ``claim=Claim(preset=NAME)``.  ``claim`` (a
    :class:`~swanref.verify.claims.Claim`) replaces the claim keywords; other keywords
    ``knobs`` are claim knobs (``eps=1e-8, eps_form="add", nd="2d_only"``) applied to ``claim``
    or to the claim the keywords make.  ``runner``: the checker's TargetRunner
    (deadline per call); a hang or an exit of the target stops the check with that outcome
    (the remaining properties are ``not-run``).
    """

    try:
        if claim is not None and not isinstance(claim, Claim):
            raise TypeError(f"claim must be a swanref Claim, got {type(claim).__name__}")
        if claim is None:  # the keywords read as `swanref check update` reads its options
            given, name = update_claim_knobs(
                preset=preset, scale=scale, scale_factor=scale_factor, stack_dims=stack_dims,
                row_norm=row_norm, steps=steps, coefficients=coefficients, dtype=dtype,
                complex=complex, tolerance=tolerance)
            given.update(knobs)
            claim = Claim.from_preset(name, **given) if name is not None else Claim(**given)
        elif knobs:
            claim = claim.replace(**knobs)
        claim = UpdateClaim.from_claim(claim)
        reference(claim, _probe(claim, (3, 4), 0))  # the claim itself must be evaluable
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid update claim: {exc}") from exc
    props = UPDATE_PROPERTIES
    if properties:
        unknown = [p for p in properties if p not in {q.name for q in props}]
        if unknown:
            raise UsageError(f"unknown properties for update: {', '.join(unknown)}; known: "
                             f"{', '.join(p.name for p in props)}")
        props = [p for p in props if p.name in properties]
    call = make_call(fn, array_type, runner)
    report = CheckReport("update", target_name or getattr(fn, "__qualname__", repr(fn)),
                         claim.describe(), 1, 0, strict)
    stop = None
    with np.errstate(all="ignore"):
        if smoke_call(call, claim.container, None, report, make=lambda s: _probe(claim, s, 0)):
            stop = report.results[0]  # a hang, an exit or a list returned: one cause
        for p in props:
            if stop is not None:
                report.results.append(PropertyResult(
                    p.name, "not-run", p.level, p.doc,
                    message=f"not run: {stop.name} stopped the check ({stop.status})"))
                continue
            call.where = f"property {p.name}"
            claim.seen.clear()
            res = PropertyResult(p.name, "pass", p.level, p.doc, examples=1)
            why = stateful(claim.full) or (p.applies(claim) if p.applies else None)
            t0 = time.perf_counter()
            if why:
                res.status, res.message, res.examples = "n/a", why, 0
            else:
                try:
                    res.error = float(p.run(claim, call))
                except _Fail as f:
                    res.status, res.error = "FAIL", f.error
                    res.input = {"probe": f.probe, "shape": list(f.shape) if f.shape else None}
                    res.message = f"property '{p.name}' violated: {f.message}"
                    if f.G is not None:
                        res.counterexample = np.array(f.G, copy=True)
                except TargetError as exc:
                    if getattr(exc, "recompile_limit", False):  # no verdict on the numbers
                        res.status, res.exception = "compile-limit", str(exc)
                        res.message = f"{exc} -- {recompile_advice(call.compile_raised, None)}"
                        res.seconds = time.perf_counter() - t0
                        report.results.append(res)
                        continue
                    res.status, res.error = "FAIL", math.inf
                    res.message = f"property '{p.name}' violated: {exc}"
                    res.cause = str(exc)
                    res.type_mistake = bool(getattr(exc, "type_mistake", False))
                except (TargetAborted, TargetTimeout) as exc:
                    stopped(res, exc)
                    res.error = res.tolerance = None
                    stop = res
                if res.status == "FAIL" and not res.cause:
                    res.cause = res.message.split(": ", 1)[-1]
            if stop is not res:
                res.tolerance = max(claim.seen) if claim.seen else claim.tolerance
                if p.name == "direction_scale_invariant" and res.tolerance is not None:
                    res.tolerance = max(DIRECTION_TOLERANCE, res.tolerance)
            res.seconds = time.perf_counter() - t0
            report.results.append(res)
    refused_everything(call, report)
    compile_note(report, call)
    return report


def direction_drift(presets=None, shape=(5, 8), seed=18) -> dict:
    """Largest change of the spec update's direction over c in SCALES, per preset: the
    epsilon-in-place effect DIRECTION_TOLERANCE must cover (docs/spec.md 9.5)."""
    names = presets or [n for n in list(PRESETS) + list(ROUTES) if n != "custom"]
    G = _pow2(np.random.default_rng(seed).standard_normal(shape))
    out = {}
    for name in names:
        ref = _mats(orthogonalized_update(G, name), 0)
        out[name] = max(_dist(_mats(orthogonalized_update(G * c, name), 0), ref, True)
                        for c in SCALES)
    return out


if __name__ == "__main__":  # python -m swanref.verify.update_properties
    for k, v in direction_drift().items():
        print(f"{k:<24} {v:.2e}")
