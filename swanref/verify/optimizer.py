"""``swanref check-optimizer``: drive a real optimizer object and compare each parameter's change
with the spec's update (docs/optimizers.md, spec section 9).

A *driver* runs an optimizer on one parameter from fresh state for a list of gradients and
returns the parameter after each step.  Built-in drivers cover ``torch.optim.Optimizer``
subclasses and optax ``GradientTransformation`` objects; none of these packages is a swanref
dependency (a missing one makes that optimizer "not installed").

Properties, per parameter kind (wide, tall, square, conv 4-D):

* ``one_step_<kind>``: one step from zero state with momentum neutral (momentum 0 or a first
  step whose momentum is a positive multiple of g).  The implied update
  ``U = (p0 (1 - lr wd) - p1) / lr`` (decoupled weight decay with the unadjusted lr, as all five
  packages do it) must equal ``orthogonalized_update(g, preset, scale)`` within the claimed
  precision's tolerance;
* ``momentum_before_orth`` (the stateful rule): two steps with momentum ``mu`` and no Nesterov;
  the second update must be the orthogonalised ``mu g1 + g2`` (every package's EMA, with or
  without bias correction, points there), not the average of orthogonalised gradients;
* ``vector_routed`` (advisory): what a 1-D parameter gets -- an Adam-like step, a rejection, the
  raw momentum, or an orthogonalised column;
* ``nesterov``: two steps with momentum ``mu`` and Nesterov on.  The first update must be the
  orthogonalised ``g1`` (every convention's first Nesterov direction is a positive multiple of
  ``g1``), the second the orthogonalised ``c1 g1 + c2 g2`` with the weights of the claimed
  convention (:data:`NESTEROV`, derived from each package's source): momentum combined before
  orthogonalisation.  The message names the convention (or "after orthogonalisation") that
  explains a failing step;
* ``stacked_3d``: a 3-D parameter ``(B, m, n)``: per the claim, one ``(B, m n)`` matrix
  (``flattened``, spec 9.2: a conv1d weight), ``B`` independent matrices (``independent``,
  spec 9.3), or routed to another rule (``routed``);
* ``complex_input``: a complex parameter (complex64, or complex128 for float64 claims); an
  optimizer that takes it must give the update of the polar factor ``U V^H`` (spec 9.7).
  Rejecting complex parameters is allowed (reported ``rejected``);
* ``same_shape_independent``: three same-shape 2-D parameters in one group (one optimizer, one
  step, momentum neutral) with gradients a joint orthogonalisation cannot pass (norms 1 : 1000 : 1,
  the third with the first's row space); each parameter's update must be its own spec update
  (spec 9.3), not a share of one orthogonalisation of the stack (rows or columns concatenated,
  or one Frobenius norm over the stack: a foreach/batched path gone wrong).  The driver runs a
  group when called with ``group=True`` (see :func:`torch_driver`).

Rejections (an exception at construction or step) are reported, never failed.  The model-level
check :func:`check_model` (SWAN's routing rule) is at the end of this module.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from swanref.presets.catalogue import PRESETS, ROUTES, get_preset, run_preset, schedule
from swanref.presets.diagnose import C_AMPLIFICATION, NO_CLAIM_LIMIT, UNIT_ROUNDOFF, noise_gain
from swanref.spec.conventions import (SCALE_RULES, resolve_scale, scale_explanations,
                                      shape_factor)
from swanref.spec.routing import swan_route
from swanref.update import GATE_RESCALES, orthogonalized_update
from swanref.ops import grad_norm
from swanref.verify.optimizer_glue import (KNOB_NAMES, PARAM_STYLES, Deadline, DriverError,
                                           Unsupported, keyword_for, signature_of,
                                           generic_driver, optax_steps, parse_kwarg,
                                           torch_steps, validated)
from swanref.verify.targets import (DEFAULT_TIMEOUT_S, TargetAborted, TargetRunner,
                                    recompile_advice, recompile_limit_hit,
                                    TargetTimeout, UsageError, load_target, seconds_argument,
                                    stop_message, timeout_seconds)
from swanref.verify.claims import Claim, ClaimError, add_claim_arguments, claim_from_args
from swanref.verify.claims.model import require_evaluable

__all__ = ["OptimizerClaim", "BUILTINS", "NESTEROV", "check_optimizer", "check_model",
           "torch_driver", "torch_model_driver", "optax_driver", "main", "probe_tolerance"]

LR, WD, MU = 0.1, 0.1, 0.9
#: exact methods ('svd', 'eigh', 'newton_schulz' without a preset's table) have no noise model
#: of spec 8.6: their tolerance stays the fixed one by claimed precision (spec 9.8)
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}
#: the smallest tolerance of the noise model: a few units of roundoff of the claimed precision
#: (a probe whose noise gain is tiny still rounds its output once)
FLOOR_ULPS = 4
#: rectangular kernel: a scale read from (kh, kw) differs from one read from (kw, kh)
KINDS = {"wide": (8, 16), "tall": (16, 8), "square": (8, 8), "conv": (8, 4, 5, 3)}
#: the 3-D probe (B, m, n): B > m and tall slices, so that a scale read from the leading axes
#: (B, m), from the flattened (B, m n) or (B m, n) view, or per slice all differ under every
#: shape rule (a (3, 8, 16) stack gave 1 for Keller's rule on all three: Keras 3.10's Muon
#: scaled its batched 3-D variables by shape[0] / shape[1] unseen); keller_t, the transposed
#: rule, is 1 on tall slices and takes the transposed probe.  Every side is at least 4:
#: optimizers route small matrices elsewhere by size (timm's Muon sends a parameter whose
#: matrix view has a side below min_dim_size=4 to AdamW)
STACK_SHAPE = (12, 8, 4)


def stack_shape(claim):
    """The 3-D probe's shape for ``claim``'s scale rule (:data:`STACK_SHAPE`)."""
    B, m, n = STACK_SHAPE
    return (B, n, m) if claim.scale == "keller_t" else STACK_SHAPE
#: the N-D rules a claim can state (spec 9.9): the matrix view of a 3-D (``stack``) and a 4-D
#: (``nd``) parameter
ND_RULES = ("flattened", "flattened_last", "batched", "routed")
_ND_ALIASES = {"orthogonalised": "flattened", "independent": "batched"}
STACK_RULES = ("flattened", "independent", "flattened_last", "routed")
NORMALISE = ("none", "rows", "columns", "columns_if_wide", "elementwise")
REMATCH = ("orth", "rms", "sqrt_min")
GATES = ("none", "cautious", "cautious_columns")
PRECONDITION = ("frobenius", "schatten")
#: "invariant": the epsilon acts on a power-of-two pre-scaled copy (swanref's operator, spec
#: 9.5): scale-invariant, the epsilon never decides
EPS_FORMS = ("add", "clamp", "none", "invariant")
#: same_shape_independent: the group's parameter shape and the gradients' norms (a joint
#: Frobenius normalisation leaves the small ones' singular values at ~1e-3 of the large one's)
GROUP_SHAPE = (8, 16)
GROUP_NORMS = (1.0, 1000.0, 1.0)
#: eps_small_gradient: the probe gradient's Frobenius norm relative to the claimed epsilon.  At
#: 1e-3 eps the normalised input sits in Newton-Schulz's linear range (output ~ prod(a) x), so
#: an epsilon 10x off, or none, moves the update by O(1) (spec 9.9)
EPS_PROBE_RATIO = 1e-3
#: ... and a second probe at half the epsilon, where X / (||X|| + eps) and X / max(||X||, eps)
#: differ by a factor 1.5 in the normalised input (Keller's table turns that into ~0.3 of the
#: update; a converging table such as you_ns5's into ~0.02, seen in float32 only)
EPS_FORM_PROBE_RATIO = 0.5
EPS_FORM_SEED = 24


def _nesterov_sutskever(mu):
    # b_t = mu b_{t-1} + (1 - mu) g_t (torch's lerp; the SGD form b_t = mu b + g only scales),
    # u_t = (1 - mu) g_t + mu b_t  =>  u_1 ∝ g1,  u_2 ∝ mu^2 g1 + (1 + mu) g2
    return mu * mu, 1 + mu


def _nesterov_optax(mu):
    # optax scale_by_muon(nesterov=True): mu_t = EMA, mu_hat = mu m_t / (1 - mu^(t+1))
    #                                                  + (1 - mu) g_t / (1 - mu^t)
    m2_g1, m2_g2 = mu * (1 - mu), 1 - mu
    d = 1 - mu ** 3
    return mu * m2_g1 / d, mu * m2_g2 / d + (1 - mu) / (1 - mu ** 2)


def _nesterov_grokfast(mu):
    # heavyball nesterov_ema: e_t = mu e_{t-1} + (1 - mu) g_t (no debiasing), u_t = g_t + e_t
    return mu * (1 - mu), 1 + (1 - mu)


def _nesterov_ema_mu(mu):
    # u_t = g_t + mu e_t with e the EMA (lerp) buffer: the SGD-form lookahead on an EMA buffer
    return mu * mu * (1 - mu), 1 + mu * (1 - mu)


#: Nesterov conventions: name -> (weights (c1, c2) of the second step's direction
#: c1 g1 + c2 g2 as a function of mu, where it is used).  Every first step is ∝ g1.
NESTEROV = {
    "sutskever": (_nesterov_sutskever,
                  "u = g + mu b (b the momentum, lerp or SGD form): torch.optim.Muon, "
                  "KellerJordan/Muon muon_update, pytorch-optimizer Muon, emerging-optimizers, "
                  "Moonlight, dion Muon"),
    "optax": (_nesterov_optax,
              "bias-corrected: mu_hat = mu m_t / (1 - mu^(t+1)) + (1 - mu) g_t / (1 - mu^t): "
              "optax.contrib scale_by_muon"),
    "grokfast": (_nesterov_grokfast,
                 "u = g + EMA(g), not debiased: heavyball nesterov_ema ('equivalent to "
                 "Grokfast')"),
    "ema_mu": (_nesterov_ema_mu,
               "u = g + mu EMA(g): the SGD-form lookahead applied to an EMA (lerp) buffer"),
}


def _choice(value, allowed, knob, aliases=None):
    value = (aliases or {}).get(value, value)
    if value not in allowed:
        raise ValueError(f"{knob} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass
class OptimizerClaim:
    """What an optimizer claims to do (spec 9.9; docs/optimizers.md lists every knob with the
    public code it comes from).  ``tolerance=None`` (default): the per-probe noise model of
    spec 8.6; a number: a fixed relative tolerance for every probe (an explicit override)."""
    preset: str
    scale: str = "keller"
    scale_factor: float = 1.0
    precision: str = "float32"        # what the orthogonaliser computes in
    param_dtype: str = "float32"
    lr: float = LR
    weight_decay: float = WD
    momentum: float = MU
    tolerance: float | None = None
    nd: str = "flattened"             # a 4-D parameter: one of ND_RULES ("orthogonalised" = flattened)
    pre: str = "none"                 # or "grad_norm": SWAN's GradNorm before orthogonalising
    nesterov: str | None = None       # a NESTEROV convention, or None: no Nesterov claimed
    nesterov_always: bool = False     # Nesterov cannot be switched off (no keyword)
    stack: str = "flattened"          # a 3-D parameter: one of STACK_RULES
    eps: float | None = None          # the normalisation's epsilon (None: the preset's)
    eps_form: str | None = None       # add / clamp / none (None: the preset's)
    norm_scale: float | None = None   # safety factor on the norm (None: the preset's)
    precondition: str = "frobenius"   # or "schatten": the first step rescales by ||X X^T||_F^-1/2
    normalise: str = "none"           # after orthogonalising: rows/columns/columns_if_wide/elementwise
    #: added to the RMS / |O| the normalisation divides by: O / (sqrt(S_t) + eps), S_t the
    #: source's statistic (the claim knob of the same name; 0: no epsilon)
    second_moment_eps: float = 0.0
    rematch: str = "orth"             # the norm a normalised update is re-matched to
    gate: str = "none"                # cautious (per element) / cautious_columns
    #: beta2 of the EMA the normalisation divides by (None: each step's own statistic)
    second_moment_beta: float | None = None
    #: the statistic divided by 1 - beta2^t before the square root (pytorch-optimizer AdaMuon)
    second_moment_debias: bool = False
    #: how the gate rescales the kept entries: kept / kept_plus_one / none (spec 9.4)
    gate_rescale: str = "kept"
    #: complex parameters claimed (True), not claimed (False: complex_input is advisory, a wrong
    #: complex update a warning), or None: judged (the built-ins' tables)
    complex: bool | None = None
    #: a 16-bit claim: cast then normalise, or normalise in float32 then cast (None: the
    #: preset's own order, spec 9.7)
    lowprec_order: str | None = None

    def __post_init__(self):
        self.scale = resolve_scale(self.scale).name
        if self.nesterov is not None and self.nesterov not in NESTEROV:
            raise ValueError(f"nesterov must be one of {sorted(NESTEROV)} or None, "
                             f"got {self.nesterov!r}")
        if self.nesterov_always and self.nesterov is None:
            raise ValueError("nesterov_always=True needs a Nesterov convention (nesterov=...)")
        self.stack = _choice(self.stack, STACK_RULES, "stack", {"batched": "independent"})
        self.nd = _choice(self.nd, ND_RULES, "nd", _ND_ALIASES)
        self.normalise = _choice(self.normalise, NORMALISE, "normalise")
        self.rematch = _choice(self.rematch, REMATCH, "rematch")
        self.gate = _choice(self.gate, GATES, "gate")
        self.gate_rescale = _choice(self.gate_rescale, GATE_RESCALES, "gate_rescale")
        if not (self.second_moment_eps >= 0 and math.isfinite(self.second_moment_eps)):
            raise ValueError(f"second_moment_eps must be a finite number >= 0, got "
                             f"{self.second_moment_eps!r}")
        if self.second_moment_debias and self.second_moment_beta is None:
            raise ValueError("second_moment_debias needs second_moment_beta")
        self.precondition = _choice(self.precondition, PRECONDITION, "precondition")
        if self.eps_form is not None:
            self.eps_form = _choice(self.eps_form, EPS_FORMS, "eps_form")
        if self.precision not in UNIT_ROUNDOFF:
            raise ValueError(f"precision must be one of {', '.join(UNIT_ROUNDOFF)}, "
                             f"got {self.precision!r}")
        if self.eps is not None and not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if (self.eps is not None or self.eps_form not in (None, "invariant")
                or self.norm_scale is not None
                or self.precondition != "frobenius") and self.preset_object is None:
            raise ValueError(f"eps, eps_form, norm_scale and precondition need a preset or "
                             f"route (swanref.presets), not the method {self.preset!r}")
        if self.emulate and self.preset_object is None:
            raise ValueError(f"precision {self.precision} is emulated with a preset's table; "
                             f"the method {self.preset!r} is claimed in float32 or float64 "
                             "(or name the preset the optimizer runs)")
        if self.precondition == "schatten" and self.emulate:
            raise ValueError("precondition='schatten' is modelled in float32/float64 only "
                             "(optax computes in the input dtype)")
        b = self.second_moment_beta
        if b is not None and not (0 <= b < 1):
            raise ValueError(f"second_moment_beta must be in [0, 1), got {b!r}")
        if b is not None and self.normalise == "none":
            raise ValueError("second_moment_beta needs a normalisation (normalise= rows, "
                             "columns, columns_if_wide or elementwise)")
        if self.scale in ("swan", "graft") and self.raw_path:
            raise ValueError(f"scale {self.scale!r} is not combined with eps/precondition "
                             "overrides")

    #: Claim knobs this level evaluates (docs/spec.md 11.1, 9.9)
    CLAIM_KNOBS = ("scale", "scale_factor", "compute_dtype", "io_dtype", "lr", "weight_decay",
                   "momentum", "nd", "pre", "nesterov", "nesterov_variant", "eps", "eps_form",
                   "norm", "norm_scale", "norm_axis", "gate", "gate_rescale",
                   "second_moment", "second_moment_beta", "second_moment_eps",
                   "second_moment_debias", "steps", "complex", "lowprec_order", "tolerance",
                   "tolerance_overrides")
    #: Claim.nd -> (nd, stack) of this check
    _ND = {"flatten": ("flattened", "flattened"), "2d_only": ("flattened", "flattened"),
           "flatten_4d_batch_3d": ("flattened", "independent"),
           "batch_leading": ("batched", "independent"), "routed": ("routed", "routed"),
           "route_4d_batch_3d": ("routed", "independent")}

    @classmethod
    def from_claim(cls, claim: Claim) -> OptimizerClaim:
        """The optimizer check's claim of a :class:`~swanref.verify.claims.Claim` (the shared
        record, docs/spec.md 11): every knob an optimizer has maps to this check's fields."""
        require_evaluable(claim, "optimizer", cls.CLAIM_KNOBS)
        if claim.norm == "spectral":
            raise ClaimError("the optimizer check cannot evaluate norm='spectral' yet")
        preset = claim.preset or claim.method
        if claim.norm == "aol" and (claim.preset is None or get_preset(preset).norm != "aol"):
            raise ClaimError("norm='aol' is the route optax_muon_aol (preset=optax_muon_aol)")
        if claim.steps is not None and claim.preset is not None \
                and claim.steps != get_preset(claim.preset).steps:
            raise ClaimError("the optimizer check takes a preset's own steps (use a preset or "
                             "route with that table)")
        nd, stack = cls._ND[claim.nd]
        eps, form = claim.eps, claim.eps_form
        if eps is None and form is None:
            form = "invariant" if claim.preset is not None else None  # the spec reading
        elif form == "safe":
            form = "none"
        normalise = {"none": "none", "rows": "rows", "columns": "columns",
                     "columns_if_wide": "columns_if_wide"}[claim.norm_axis]
        rematch = "orth"
        if claim.second_moment == "adamuon":
            normalise, rematch = "elementwise", "sqrt_min"
        tol = claim.tolerance
        for dt, (t, _why) in claim.tolerance_overrides or ():
            if dt == claim.compute_dtype:
                tol = t
        return cls(preset, claim.scale, claim.scale_factor, claim.compute_dtype,
                   claim.container, claim.lr, claim.weight_decay, claim.momentum, tol, nd,
                   claim.pre, None if claim.nesterov == "off" else claim.nesterov_variant,
                   claim.nesterov == "always", stack,
                   eps=eps if preset in PRESETS or preset in ROUTES else None,
                   eps_form=form if preset in PRESETS or preset in ROUTES else None,
                   norm_scale=claim.norm_scale if claim.preset is not None else None,
                   precondition="schatten" if claim.norm == "schatten" else "frobenius",
                   normalise=normalise,
                   second_moment_eps=claim.second_moment_eps or 0.0,
                   rematch=rematch,
                   gate={"none": "none", "per_element": "cautious",
                         "per_column": "cautious_columns"}[claim.gate],
                   second_moment_beta=claim.second_moment_beta,
                   second_moment_debias=claim.second_moment_debias,
                   gate_rescale=claim.gate_rescale, complex=claim.complex,
                   lowprec_order=claim.lowprec_order)

    @property
    def preset_object(self):
        if self.preset in PRESETS or self.preset in ROUTES:
            p = get_preset(self.preset)
            form = self.eps_form if self.eps_form not in (None, "invariant") else p.norm
            return replace(p, eps=p.eps if self.eps is None else float(self.eps), norm=form,
                           norm_scale=p.norm_scale if self.norm_scale is None
                           else float(self.norm_scale),
                           lowprec_order=self.lowprec_order or p.lowprec_order)
        return None

    @property
    def raw_path(self):
        """The expected update runs the preset at the buffer's own scale (eps in place)."""
        if self.eps_form == "invariant":
            return False
        return (self.eps is not None or self.eps_form is not None or self.norm_scale is not None
                or self.precondition != "frobenius")

    @property
    def emulate(self):
        return self.precision if self.precision in ("bfloat16", "float16") else None

    def to_dict(self):
        return {k: v for k, v in self.__dict__.items()}


# -- drivers ------------------------------------------------------------------------------------

def _factory_args(momentum, nesterov):
    """``factory(..., momentum)``, or with ``nesterov=True`` only when asked (old factories
    without the keyword keep working; a Nesterov run on them is reported unsupported)."""
    return ((momentum,), {"nesterov": True}) if nesterov else ((momentum,), {})


def torch_driver(factory, dtype="float32"):
    """``factory(params, momentum[, nesterov=True]) -> torch.optim.Optimizer``; returns
    run(p0, grads, momentum, nesterov=False, group=False).  With ``group=True``, ``p0`` is a
    list of arrays put in one parameter group, each gradient a list, and each step's result
    a list."""
    import torch  # noqa: F401 - a missing torch fails here, when the driver is made

    def run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        args, kw = _factory_args(momentum, nesterov)
        try:
            out = torch_steps(lambda ps: factory(ps, *args, **kw), p0s, steps, dtype, group)
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding, reported as such
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        return out
    return run


def optax_driver(factory, dtype="float32"):
    """``factory(momentum[, nesterov=True]) -> optax.GradientTransformation``; returns
    run(p0, grads, momentum, nesterov=False, group=False) (``group=True``: leaves ``w0``,
    ``w1``, ... of one params dict, as :func:`torch_driver`)."""
    import optax  # noqa: F401 - a missing optax is an ImportError here, not a refusal later

    def run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        try:
            args, kw = _factory_args(momentum, nesterov)
            out = optax_steps(factory(*args, **kw), p0s, steps, dtype, group)
        except Exception as exc:  # noqa: BLE001
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        return out
    return run


# -- built-in optimizers ----------------------------------------------------------------------

def _torch_muon(scale_fn=None):
    def build():
        import torch

        def make(ps, mu, nesterov=False):
            kw = {} if scale_fn is None else {"adjust_lr_fn": scale_fn}
            return torch.optim.Muon(ps, lr=LR, weight_decay=WD, momentum=mu, nesterov=nesterov,
                                    **kw)
        return torch_driver(make)
    return build


def _optax_dimension_numbers(params):
    """optax's documented way to orthogonalise a 3-D leaf as a stack: MuonDimensionNumbers
    with the last two axes as (reduction, output); the leading axis is a batch axis (vmapped,
    independent).  2-D leaves take the default, other leaves None (Adam)."""
    import jax
    from optax.contrib import MuonDimensionNumbers

    def dims(x):
        if x.ndim == 3:
            return MuonDimensionNumbers(reduction_axis=1, output_axis=2)
        return MuonDimensionNumbers() if x.ndim == 2 else None
    return jax.tree.map(dims, params)


def _optax_muon():
    import optax

    def make(mu, nesterov=False):
        # beta=0 would give bias correction 1 - 0^t = 1: fine; the first step is g either way
        return optax.contrib.muon(learning_rate=LR, weight_decay=WD, beta=mu, nesterov=nesterov,
                                  muon_weight_dimension_numbers=_optax_dimension_numbers)
    return optax_driver(make)


def _ptopt_muon(**extra):
    from pytorch_optimizer import Muon

    def make(ps, mu, nesterov=False):
        return Muon([dict(params=ps, use_muon=True)], lr=LR, weight_decay=WD, momentum=mu,
                    nesterov=nesterov, **extra)
    return torch_driver(make)


def _ptopt_adamuon(**extra):
    from pytorch_optimizer import AdaMuon

    def make(ps, mu):
        return AdaMuon([dict(params=ps, use_muon=True)], lr=LR, weight_decay=WD,
                       betas=(mu, 0.95), **extra)
    return torch_driver(make)


def _ptopt_normuon(**extra):
    from pytorch_optimizer import NorMuon

    def make(ps, mu, nesterov=False):
        return NorMuon([dict(params=ps, use_muon=True)], lr=LR, weight_decay=WD, momentum=mu,
                       nesterov=nesterov, **extra)
    return torch_driver(make)


def _heavyball_muon(**extra):
    import heavyball
    from heavyball import utils
    utils.compile_mode = None  # eager: compiling takes minutes per shape on a CPU

    def make(ps, mu, nesterov=False):
        return heavyball.Muon(ps, lr=LR, weight_decay=WD, betas=(mu, 0.99), nesterov=nesterov,
                              **extra)
    return torch_driver(make, dtype="float64")  # float64: no stochastic bf16 rounding


def _emerging_muon():
    from emerging_optimizers.orthogonalized_optimizers import Muon

    def make(ps, mu, nesterov=False):
        return Muon(ps, lr=LR, momentum=mu, weight_decay=WD, nesterov=nesterov)
    return torch_driver(make)


@dataclass
class Builtin:
    name: str
    build: object
    claim: OptimizerClaim
    neutral: str                     # how momentum is neutralised for one_step
    notes: str = ""
    needs: tuple = ()
    #: label -> build of the same optimizer with another batching option (foreach, multi_tensor),
    #: checked for same_shape_independent as ``same_shape_independent[<label>]``
    variants: dict = field(default_factory=dict)


BUILTINS = {b.name: b for b in [
    Builtin("torch.optim.Muon", _torch_muon(), OptimizerClaim("torch_muon", "keller",
                                                             precision="bfloat16",
                                                             nesterov="sutskever"),
            "momentum=0", "2-D only (conv and 1-D rejected at construction); NS in bf16",
            ("torch",)),
    Builtin("torch.optim.Muon(adjust_lr_fn='match_rms_adamw')", _torch_muon("match_rms_adamw"),
            OptimizerClaim("torch_muon", "moonlight", precision="bfloat16",
                           nesterov="sutskever"), "momentum=0",
            "Moonlight's 0.2 sqrt(max(m, n))", ("torch",)),
    Builtin("optax.contrib.muon", _optax_muon, OptimizerClaim("optax_muon", "keller_t", nd="routed",
                                                nesterov="optax", stack="independent"),
            "first step, nesterov=False (bias-corrected EMA = g)",
            "width rule with fan_in = axis 0; 4-D and 1-D go to Adam; 3-D leaves given "
            "MuonDimensionNumbers(1, 2) (batch axis 0)", ("jax", "optax")),
    Builtin("pytorch_optimizer.Muon", _ptopt_muon, OptimizerClaim("torch_muon", "keller",
                                                                  precision="bfloat16",
                                                                  nesterov="sutskever"),
            "momentum=0", "groups need use_muon; conv reshaped (out, -1)",
            ("torch", "pytorch_optimizer"), {"foreach=True": lambda: _ptopt_muon(foreach=True)}),
    Builtin("pytorch_optimizer.AdaMuon", _ptopt_adamuon,
            OptimizerClaim("torch_muon", "moonlight", precision="bfloat16",
                           normalise="elementwise", rematch="sqrt_min", second_moment_eps=1e-10,
                           second_moment_beta=0.95, second_moment_debias=True),
            "first step (beta1 only scales)",
            "divides O elementwise by sqrt(v / (1 - beta2^t)) + eps (betas[1] = 0.95, eps "
            "1e-10; step 1: |O| + eps), re-matched to sqrt(min(m, n)), then use_adjusted_lr's "
            "0.2 sqrt(max(m, n)); no Nesterov",
            ("torch", "pytorch_optimizer"),
            {"foreach=True": lambda: _ptopt_adamuon(foreach=True)}),
    Builtin("pytorch_optimizer.NorMuon", _ptopt_normuon,
            OptimizerClaim("torch_muon", "keller", precision="bfloat16", nesterov="sutskever",
                           normalise="rows", second_moment_eps=1e-10, second_moment_beta=0.95),
            "momentum=0 (second moment: (1 - beta2) cancels in the re-match)",
            "per-row (per-neuron) second moment after orthogonalising, an EMA from zero "
            "(beta2 0.95, not debiased), O / (sqrt(v) + 1e-10), re-matched to ||O||_F "
            "(update_scale='preserve_norm')", ("torch", "pytorch_optimizer")),
    Builtin("heavyball.Muon", _heavyball_muon, OptimizerClaim("heavyball_ns5", "keller",
                                                              precision="float32",
                                                              param_dtype="float64",
                                                              nesterov="grokfast"),
            "nesterov=False (debiased EMA = g at step 1)",
            "float64 parameters take heavyball's exact float64 iteration (no stochastic "
            "rounding); the update is then stored in float32 (storage_dtype)",
            ("torch", "heavyball"),
            {"multi_tensor=False": lambda: _heavyball_muon(multi_tensor=False)}),
    Builtin("emerging_optimizers.Muon", _emerging_muon,
            OptimizerClaim("you_ns5", "unit_rms", precision="bfloat16",
                           nesterov="sutskever"), "momentum=0",
            "defaults: scale_mode='spectral' = sqrt(max(m, n)), fp32_matmul_prec='medium' "
            "(bf16 iteration), quintic coefficients; Python >= 3.12",
            ("torch", "emerging_optimizers")),
]}


# -- the check ----------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    status: str
    error: float | None = None
    tolerance: float | None = None
    message: str = ""
    #: for status "unsupported": whether the spec allows the refusal (N-D, 3-D, complex and
    #: 1-D parameters may be refused; a 2-D matrix, momentum or a claimed Nesterov may not)
    explained: bool = True


#: outcome -> exit status of ``swanref check-optimizer`` (docs/optimizers.md)
OUTCOMES = {"conforming": 0, "not conforming": 1, "error": 3, "incomplete": 3,
            "no evidence": 3, "target exited": 4, "timeout": 5}


@dataclass
class OptimizerReport:
    optimizer: str
    claim: dict
    results: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outcome(self):
        """'conforming' needs a property that ran under the claim and passed, and nothing that
        could not run for a reason the claim does not explain (spec 9.9, issue 21's rule)."""
        st = [r.status for r in self.results]
        if "timeout" in st:
            return "timeout"
        if "aborted" in st:
            return "target exited"
        if "error" in st:
            return "error"
        if "FAIL" in st:
            return "not conforming"
        if any(r.status == "unsupported" and not r.explained for r in self.results):
            return "incomplete"
        if "pass" not in st:
            return "no evidence"
        return "conforming"

    @property
    def conforming(self):
        return self.outcome == "conforming"

    @property
    def exit_code(self):
        return OUTCOMES[self.outcome]

    def status(self, name):
        return next(r.status for r in self.results if r.name == name)

    def result(self, name):
        return next(r for r in self.results if r.name == name)

    def to_dict(self):
        return {"optimizer": self.optimizer, "claim": self.claim, "conforming": self.conforming,
                "outcome": self.outcome, "exit_code": self.exit_code,
                "results": [r.__dict__ for r in self.results]}

    def table(self):
        lines = [f"swanref check-optimizer {self.optimizer}",
                 "  claim: " + ", ".join(f"{k}={v}" for k, v in self.claim.items()), ""]
        width = max([22] + [len(r.name) + 1 for r in self.results])
        for r in self.results:
            err = "" if r.error is None else f"{r.error:.3g} (tol {r.tolerance:.3g})"
            st = r.status + ("" if r.status != "unsupported" or r.explained else " (!)")
            lines.append(f"{r.name:<{width}} {st:<14} {err:<24} {r.message}")
        lines.append("")
        verdict = {"conforming": "CONFORMING", "not conforming": "NOT CONFORMING",
                   "error": "ERROR: the check could not run as set up (see 'error' above)",
                   "incomplete": "INCOMPLETE: a property the claim needs could not run "
                                 "(marked (!)): fix the driver/claim, or the optimizer refuses "
                                 "what it must take",
                   "no evidence": "NO EVIDENCE: no property ran under the claim and passed"}
        if self.outcome in ("timeout", "target exited"):  # the wording of `swanref check`
            r = next(r for r in self.results if r.status in ("timeout", "aborted"))
            lines.append(f"verdict: {self.outcome.upper()} (exit {self.exit_code})")
            lines.append(f"  cause: {r.message}")
            skipped = sum(q.status == "not-run" for q in self.results)
            if skipped:
                lines.append(f"  not run after it: {skipped} "
                             f"propert{'y' if skipped == 1 else 'ies'}")
            return "\n".join(lines)
        crashed = [r.name for r in self.results if r.status == "error"
                   and r.message.startswith("the optimizer crashed")]
        if self.outcome == "error" and crashed:  # its own code broke, not the set-up
            failed = [r.name for r in self.results if r.status == "FAIL"]
            verdict["error"] = (f"ERROR: the optimizer crashed on {', '.join(crashed)} (see "
                                "'error' above: a defect of its code on a parameter the claim "
                                "covers, not a refusal)"
                                + (f"; failed as well: {', '.join(failed)}" if failed else ""))
        lines.append("verdict: " + verdict[self.outcome])
        return "\n".join(lines)


def _rel(a, b):
    """Relative Frobenius distance; NaN-safe: a non-finite side, or a shape mismatch, is
    infinitely far (so a diverged candidate never wins a ``min``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        nb = float(np.linalg.norm(b))
        d = float(np.linalg.norm(a - b))
    out = d / nb if nb > 0 else d
    return out if math.isfinite(out) else math.inf


def _unit(x):
    n = float(np.linalg.norm(x))
    return x / n if n > 0 and math.isfinite(n) else x


def matrix_view(claim, shape):
    """The shape of the matrix view (``(m, n)`` or ``(B, m, n)``) an N-D parameter is
    orthogonalised as under the claim's rule (``stack`` for 3-D, ``nd`` for 4-D and more), or
    None when the claim routes it elsewhere (spec 9.2, 9.3, 9.9)."""
    shape = tuple(shape)
    if len(shape) <= 2:
        return shape
    rule = claim.stack if len(shape) == 3 else claim.nd
    rule = {"independent": "batched"}.get(rule, rule)
    if rule == "routed":
        return None
    if rule == "flattened":
        return (shape[0], math.prod(shape[1:]))
    if rule == "flattened_last":
        return (math.prod(shape[:-1]), shape[-1])
    return (math.prod(shape[:-2]),) + shape[-2:]


def _schatten(V, preset, sched):
    """optax's ``preconditioning='schatten'``: no Frobenius normalisation; the first step
    rescales ``X <- X s``, ``A <- A s^2`` with ``s = max(||X X^H||_F, eps)^(-1/2)`` (the
    Schatten-4 norm), then the polynomial (optax/contrib/_muon.py
    ``_schatten_first_newton_schulz_iteration``)."""
    X = np.array(V)
    flip = X.shape[-2] > X.shape[-1]
    if flip:
        X = np.swapaxes(X, -1, -2)
    for i, (a, b, c) in enumerate(sched):
        A = X @ np.swapaxes(X, -1, -2).conj()
        if i == 0:
            r = np.maximum(np.linalg.norm(A, axis=(-2, -1), keepdims=True), preset.eps)
            s = (1 / np.sqrt(r)).astype(X.real.dtype)
            X, A = X * s, A * s * s
        X = a * X + (b * A + c * (A @ A)) @ X
    return np.swapaxes(X, -1, -2) if flip else X


def _normalised(claim, O, prev=None):
    """The normalisation after orthogonalising (NorMuon rows/columns, AdaMuon elementwise),
    re-matched per matrix to the claim's norm (spec 9.9).  ``prev``: the previous step's
    orthogonalised update, whose statistic enters the EMA with weight ``second_moment_beta``.
    The statistic is the source's: ``S_t = (1 - beta2) sum_k beta2^(t-k) s(O_k)``, divided by
    ``1 - beta2^t`` when debiased (without ``beta2``: ``s(O_t)``), and ``O`` is divided by
    ``sqrt(S_t) + second_moment_eps``; without an epsilon the constant factors cancel in the
    re-match."""
    if claim.normalise == "none":
        return O
    m, n = O.shape[-2:]
    e = claim.second_moment_eps
    b = claim.second_moment_beta

    def stat(X):
        if claim.normalise == "elementwise":
            return np.abs(X) ** 2
        axis = {"rows": -1, "columns": -2}.get(claim.normalise, -1 if m >= n else -2)
        return np.mean(np.abs(X) ** 2, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        S = stat(O)
        if b is not None:
            t = 1
            if prev is not None:
                S, t = S + b * stat(prev), 2
            S = S * (1 - b) / ((1 - b ** t) if claim.second_moment_debias else 1.0)
        d = np.sqrt(S) + e
        N = np.where(d > 0, O / np.where(d > 0, d, 1), 0)
        N = np.nan_to_num(N)
        fro = np.linalg.norm(N, axis=(-2, -1), keepdims=True)
        target = {"orth": np.linalg.norm(O, axis=(-2, -1), keepdims=True),
                  "rms": np.sqrt(m * n), "sqrt_min": np.sqrt(min(m, n))}[claim.rematch]
        return np.where(fro > 0, N * (target / np.where(fro > 0, fro, 1)), 0)


def _gated(claim, U, g):
    """Cautious gate on the update: keep entries (or columns of the matrix view) whose sign
    agrees with the gradient, rescaled by 1 / max(mean(mask), 1e-3) (``gate_rescale='kept'``),
    by numel / (kept + 1) (``'kept_plus_one'``) or not at all (``'none'``), spec 9.9."""
    if claim.gate == "none":
        return U
    prod = np.real(U * np.conj(g))
    if claim.gate == "cautious":
        mask = (prod > 0).astype(np.float64)
    else:
        view = matrix_view(claim, U.shape) or U.shape
        v = prod.reshape(view if len(view) > 1 else (1, -1))
        mask = np.broadcast_to((v.sum(axis=-2, keepdims=True) > 0), v.shape)
        mask = mask.reshape(U.shape).astype(np.float64)
    if claim.gate_rescale == "none":
        return U * mask
    if claim.gate_rescale == "kept_plus_one":
        return U * mask * (mask.size / (float(mask.sum()) + 1.0))
    return U * mask / max(float(mask.mean()), 1e-3)


def _orth_view(claim, V, prev=None):
    """The orthogonalised update of the matrix view ``V`` (``(m, n)`` or ``(B, m, n)``);
    ``prev``: the previous step's direction in the same view (second moments, spec 9.9)."""
    cplx = np.iscomplexobj(V)
    wide = claim.precision == "float64"
    dt = (np.complex128 if wide else np.complex64) if cplx else \
        (np.float64 if wide else np.float32)
    V = np.asarray(V, dt)
    m, n = V.shape[-2:]
    rule = resolve_scale(claim.scale)
    emulate = None if cplx else claim.emulate  # emulated bf16/fp16 is real-only (spec 9.7)
    if claim.raw_path:  # the preset at the buffer's own scale, with the claimed epsilon
        P, sched = claim.preset_object, schedule(claim.preset)
        if claim.precondition == "schatten":
            O = _schatten(V, P, sched)
        else:
            O = run_preset(V, P, sched, emulate, check_finite=False)
        zero = np.linalg.norm(V, axis=(-2, -1), keepdims=True) == 0
        O = np.where(zero, 0, O)
    elif rule.name in ("swan", "graft"):
        return orthogonalized_update(V, claim.preset, scale=claim.scale,
                                     scale_factor=claim.scale_factor,
                                     stack_dims=V.ndim - 2, emulate=emulate)
    else:
        O = orthogonalized_update(V, claim.preset, scale="none", stack_dims=V.ndim - 2,
                                  emulate=emulate)
    O = np.asarray(O, np.complex128 if cplx else np.float64)
    Op = None
    if prev is not None and claim.second_moment_beta is not None and claim.normalise != "none":
        Op = np.asarray(_orth_view(replace(claim, normalise="none", scale="none",
                                           scale_factor=1.0, second_moment_beta=None,
                                           second_moment_debias=False), prev),
                        O.dtype)
    O = _normalised(claim, O, Op)
    return O * (shape_factor(rule, m, n) * claim.scale_factor)


def _expected(claim, g, view=None, gate_grad=None, prev=None):
    """The update the claim expects for gradient (or momentum direction) ``g``: its matrix view
    (``view``: a shape, default :func:`matrix_view`), SWAN's GradNorm if claimed, the
    orthogonaliser, the normalisation, the scale rule, the gate; in ``g``'s shape.  ``prev``:
    the previous step's direction (a second moment's EMA, ``second_moment_beta``)."""
    g = np.asarray(g)
    cplx = np.iscomplexobj(g)
    shape = g.shape
    view = view or matrix_view(claim, shape)
    if view is None:
        raise ValueError(f"the claim routes a {len(shape)}-D parameter elsewhere")
    V = g.reshape(view)
    if claim.pre == "grad_norm":  # SWAN (spec 4.1): GradNorm over rows of the matrix view
        if np.iscomplexobj(V):  # a float cast would drop the imaginary part (ComplexWarning)
            raise TypeError("GradNorm is real-only (spec 9.7): a complex parameter has no "
                            "SWAN update")
        wide = claim.precision == "float64"
        V = grad_norm(np.asarray(V.reshape(-1, view[-1]), np.float64 if wide else np.float32)
                      ).reshape(view)
    P = None if prev is None else np.asarray(prev).reshape(view)
    if P is not None and claim.pre == "grad_norm":
        P = grad_norm(np.asarray(P.reshape(-1, view[-1]), V.dtype)).reshape(view)
    U = _orth_view(claim, V, P).reshape(shape)
    U = _gated(claim, U, g if gate_grad is None else gate_grad)
    return U.astype(np.complex128 if cplx else np.float64)


def probe_tolerance(claim, g, view=None, buffer_scale=1.0, second_step=False):
    """The relative tolerance of one probe under the claim: spec 8.6's noise model per matrix
    of the view, ``C_amp (u_p acc + eps / (norm_scale ||X||_F)) N``, with the epsilon's
    relative displacement as one more input perturbation (the optimizer orthogonalises its own
    buffer, ``buffer_scale`` times the compared direction), at least ``FLOOR_ULPS`` units of
    roundoff; after an elementwise normalisation or a gate, whose signs flip where an entry is
    within that noise of 0, ``2 sqrt(tol)`` -- on a second step whose elementwise second moment
    holds the first step's (``second_step`` with ``second_moment_beta``), where a flip of a small
    entry only matters where the first step's entry is small too, ``(2 / sqrt(beta2) + 2)
    tol``; after a row/column normalisation ``2 tol``.  A
    fixed ``claim.tolerance`` overrides it; exact methods keep spec 9.8's fixed tolerance."""
    if claim.tolerance is not None:
        return float(claim.tolerance)
    P = claim.preset_object
    if P is None:
        return TOLERANCE[claim.precision]
    g = np.asarray(g)
    view = view or matrix_view(claim, g.shape) or g.shape
    mats = g.reshape((-1,) + tuple(view[-2:]))
    m, n = view[-2:]
    if claim.pre == "grad_norm":
        mats = np.stack([grad_norm(np.abs(x).astype(np.float64)) for x in mats])
    u = UNIT_ROUNDOFF[claim.precision]
    acc = 1.0 if claim.precision in ("bfloat16", "float16") else 1.0 + math.sqrt(max(m, n))
    if P.form == "coupled":
        acc *= 2.0
    sched = schedule(claim.preset)
    tol = 0.0
    for M in mats:
        sv = np.linalg.svd(M, compute_uv=False)  # the gain depends on the spectrum only
        S = np.zeros((m, n))
        S[np.arange(len(sv)), np.arange(len(sv))] = sv
        fro = float(np.linalg.norm(sv))
        if fro == 0 or not math.isfinite(fro):
            continue
        gain = noise_gain(S, P, sched)
        # the epsilon's displacement: none where the expected update puts it at the buffer's
        # own scale (raw path, buffer = the compared direction)
        exact = (claim.raw_path or claim.eps_form == "invariant") and buffer_scale == 1.0
        # an invariant optimizer pre-scales too: its epsilon sits near max|X| ~ 1
        place = fro / float(np.max(np.abs(M))) if claim.eps_form == "invariant" else fro
        delta = (P.eps / (place * P.norm_scale * buffer_scale)
                 if P.norm in ("add", "clamp") and not exact else 0.0)
        tol = max(tol, C_AMPLIFICATION * (u * acc + delta) * gain)
    smooth = second_step and claim.second_moment_beta and claim.gate == "none"
    if claim.normalise == "elementwise" and smooth:
        # x / sqrt(b y^2 + x^2) moves by at most (|dx| + |dy|) / (sqrt(b) |y|) per entry: a
        # sign flip of a small x only matters where y is small too
        tol = (2 / math.sqrt(claim.second_moment_beta) + 2) * tol
    elif claim.normalise == "elementwise" or claim.gate != "none":
        tol = 2 * math.sqrt(tol)
    elif claim.normalise != "none":
        tol = 2 * tol
    return max(tol, FLOOR_ULPS * u)


def _implied(claim, p0, p1):
    return (p0 * (1 - claim.lr * claim.weight_decay) - p1) / claim.lr


def _classify(claim, p0, p1, g):
    """What an optimizer did to a parameter it does not orthogonalise as a matrix."""
    Ud = _implied(claim, p0, p1)
    Un = (p0 - p1) / claim.lr  # a routed rule may skip the weight decay (optax's Adam branch)
    for U in (Ud, Un):
        if _rel(U / np.linalg.norm(U), g / np.linalg.norm(g)) < 1e-2:
            if abs(np.linalg.norm(U) / np.linalg.norm(g) - 1) < 1e-2:
                return ("the raw gradient/momentum is applied (neither orthogonalised nor "
                        "Adam)"), "warn"
            return ("the gradient's direction with a norm independent of ||g|| (orthogonalised "
                    "as a column or a vector)"), "warn"
    for U in (Ud, Un):
        a = np.abs(U)
        if a.mean() > 0 and a.std() / a.mean() < 0.05:
            return "an Adam-like step (|update| constant, step 1): routed elsewhere", "pass"
    return "some other rule (neither raw, column-orthogonalised nor Adam-like)", "warn"


#: exception types that are a crash of the optimizer's code, never a refusal of a parameter
_CRASH_TYPES = ("IndexError", "ZeroDivisionError", "AttributeError", "NameError",
                "UnboundLocalError", "FloatingPointError", "UnboundLocalError")
_CRASH_WORDS = ("size of tensor", "must match the size", "broadcast", "shapes cannot be",
                "mat1 and mat2", "incompatible shapes", "invalid for input of size",
                "does not match the shape")


def _crashed(exc) -> bool:
    """A refusal says what the optimizer does not take (a ValueError/TypeError/... naming
    what is supported); an exception from broken arithmetic -- a broadcast or shape error, an
    index error -- is a crash: reported as an error, never as 'rejected'."""
    text = str(exc)
    kind = text.split(":", 1)[0].strip()
    if kind in _CRASH_TYPES:
        return True
    low = text.lower()
    return any(w in low for w in _CRASH_WORDS) and "support" not in low


def _failure(name, exc, explained):
    if recompile_limit_hit(exc):
        return Result(name, "error", message=f"{exc} -- {recompile_advice(few=None)}")
    if _crashed(exc):
        return Result(name, "error", message=f"the optimizer crashed (not a refusal): {exc}")
    return Result(name, "unsupported", message=str(exc), explained=explained)


class _Runner:
    """The driver, with every result validated (:func:`validated`) and every exception a
    refusal (:class:`Unsupported`) or a set-up error (:class:`DriverError`)."""

    def __init__(self, run, runner=None):
        self.raw = run
        self.knobs = getattr(run, "knobs", None)
        #: the glue's per-step deadline (generic_driver), else the whole run under ``runner``
        self.deadline = getattr(run, "deadline", None)
        self.runner = runner if self.deadline is None else None
        self.probe = "the check"
        #: runs that returned, and the first refusal: an optimizer that refused every run
        #: cannot be checked as driven (a usage error, :func:`check_optimizer`)
        self.returned, self.calls, self.first = 0, 0, None

    def _raw(self, p0, grads, momentum, kw):
        if self.deadline is not None:
            self.deadline.probe = self.probe
        if self.runner is None:
            return self.raw(p0, grads, momentum, **kw)
        return self.runner.run(lambda: self.raw(p0, grads, momentum, **kw),
                               where=f"{self.probe}: the driver's run (construction and "
                                     f"{len(grads)} step(s))")

    def __call__(self, p0, grads, momentum, **kw):
        self.calls += 1
        try:
            out = self._raw(p0, grads, momentum, kw)
            self.returned += 1
        except (Unsupported, DriverError) as exc:
            self.first = self.first or str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding
            self.first = self.first or f"{type(exc).__name__}: {exc}"
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
        return validated(out, p0, len(grads), group=kw.get("group", False))

    @property
    def momentum_settable(self):
        return self.knobs is None or self.knobs.get("momentum") is not None


def _draw(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt).astype(np.float64)


#: the properties in the order they run (a timeout marks the ones after it ``not-run``)
PROPERTY_ORDER = tuple(f"one_step_{k}" for k in KINDS) + (
    "eps_small_gradient", "second_moment_eps", "momentum_before_orth", "vector_routed", "nesterov", "stacked_3d",
    "complex_input", "same_shape_independent")


def check_optimizer(run, claim: OptimizerClaim, name="optimizer", seed=0,
                    timeout=DEFAULT_TIMEOUT_S) -> OptimizerReport:
    """Run the optimizer-level properties on driver ``run`` (see torch_driver/optax_driver, or
    :func:`swanref.verify.optimizer_glue.generic_driver`): ``run(p0, grads, momentum,
    nesterov=False)`` returns the parameter after each gradient's step (complex ``p0`` and
    ``grads`` for ``complex_input``; a driver without the ``nesterov`` keyword gets ``nesterov``
    reported unsupported); an exception means the optimizer refuses that parameter, a result
    of the wrong shape, too few steps or None is an error of the driver (outcome 'error').

    ``timeout`` (seconds; 0 or None: none): the longest a construction or step may take (for a
    driver of :func:`~swanref.verify.optimizer_glue.generic_driver` built with a deadline, each
    construction and step; for any other driver, one run of it); a hang stops the check with
    outcome 'timeout' (exit 5) naming the property and step, an exit with 'target exited'."""
    seconds = timeout_seconds(timeout)
    run = _Runner(run, TargetRunner(seconds) if seconds is not None else None)
    rng = np.random.default_rng(seed)
    report = OptimizerReport(name, {"preset": claim.preset, "scale": claim.scale,
                                    "precision": claim.precision, "lr": claim.lr,
                                    "weight_decay": claim.weight_decay,
                                    "momentum": claim.momentum,
                                    "tolerance": "noise model (spec 8.6)"
                                    if claim.tolerance is None else claim.tolerance,
                                    **{k: v for k, v in claim.to_dict().items()
                                       if k in _NON_DEFAULT and v != _NON_DEFAULT[k]}})
    t0 = time.perf_counter()
    dt = np.float64 if claim.param_dtype == "float64" else np.float32
    try:
        _run_properties(report, run, claim, rng, dt, seed)
    except DriverError as exc:
        report.results.append(Result("driver", "error", message=str(exc)))
    except (TargetTimeout, TargetAborted) as exc:
        _stopped(report, run.probe, exc)
    finally:
        if run.runner is not None:
            run.runner.close()
    if run.calls and not run.returned and not any(
            r.status in ("timeout", "aborted") for r in report.results):
        raise UsageError(f"the optimizer raised on every run of the check ({run.calls} runs, "
                         f"none returned): {run.first.splitlines()[0][:300]} -- it cannot be "
                         "checked as driven: give its constructor arguments with --kwarg "
                         "name=value, the parameter layout with --params, or fix the error")
    report.seconds = time.perf_counter() - t0
    return report


def _stopped(report, probe, exc):
    """The property ``probe`` hung or exited: its row, and every later one ``not-run``."""
    report.results.append(Result(probe, "timeout" if isinstance(exc, TargetTimeout)
                                 else "aborted", message=stop_message(exc)))
    done = {r.name for r in report.results}
    later = PROPERTY_ORDER[PROPERTY_ORDER.index(probe) + 1:] if probe in PROPERTY_ORDER else ()
    report.results.extend(Result(n, "not-run", message="not run after the stop")
                          for n in later if n not in done)


_NON_DEFAULT = {"nesterov": None, "nesterov_always": False, "nd": "flattened",
                "stack": "flattened", "eps": None, "eps_form": None, "norm_scale": None,
                "precondition": "frobenius", "normalise": "none", "rematch": "orth",
                "gate": "none", "pre": "none", "second_moment_beta": None, "complex": None,
                "second_moment_eps": 0.0, "second_moment_debias": False,
                "gate_rescale": "kept"}


def _run_properties(report, run, claim, rng, dt, seed):
    add = report.results.append

    def at(probe):  # the property the next runs belong to (named by a timeout)
        run.probe = probe
    for kind, shape in KINDS.items():
        p0, g = _draw(rng, shape, dt), _draw(rng, shape, dt)
        at(f"one_step_{kind}")
        try:
            (p1,) = run(p0, [g], 0.0)
        except Unsupported as exc:
            add(_failure(f"one_step_{kind}", exc, explained=len(shape) != 2))
            continue
        add(_one_step(claim, kind, p0, p1, g))
    at("eps_small_gradient")
    add(_eps_property(run, claim, rng, dt))
    at("second_moment_eps")  # its own generator: the properties after it keep their draws
    add(_axis_eps_property(run, claim, np.random.default_rng([seed, 22]), dt))
    at("momentum_before_orth")
    add(_momentum_property(run, claim, rng, dt))
    # 1-D parameters; a gradient of norm 10 sqrt(n) tells the raw gradient from a unit column
    v0 = _draw(rng, 12, dt)
    gv = (10 * rng.standard_normal(12)).astype(dt).astype(np.float64)
    at("vector_routed")
    try:
        (v1,) = run(v0, [gv], 0.0)
        what, st = _classify(claim, v0, v1, gv)
        add(Result("vector_routed", st, message=what))
    except Unsupported as exc:
        add(Result("vector_routed", "pass",
                   message=f"rejected (route 1-D parameters elsewhere): {exc}")
            if not _crashed(exc) else _failure("vector_routed", exc, True))
    at("nesterov")
    add(_nesterov_property(run, claim, rng, dt))
    at("stacked_3d")
    add(_stack_property(run, claim, rng, dt))
    at("complex_input")
    add(_complex_property(run, claim, rng, dt))
    # its own generator: the properties above keep their draws
    at("same_shape_independent")
    add(same_shape_property(run, claim, seed, dt))


def _nd_readings(claim, g):
    """Other readings of an N-D gradient, for the diagnosis: every N-D rule, and the scale read
    from the trailing (kernel) axes; each with its own tolerance."""
    out = {}
    for rule in ("flattened", "flattened_last", "batched"):
        view = matrix_view(replace(claim, stack="independent" if rule == "batched" else rule,
                                   nd=rule), g.shape)
        out[f"N-D rule {rule} {view}"] = (_expected(claim, g, view),
                                          probe_tolerance(claim, g, view))
    view = matrix_view(claim, g.shape)
    if view is not None and len(view) == 2 and g.ndim > 2:
        rule = resolve_scale(claim.scale)
        f = shape_factor(rule, *g.shape[-2:]) / shape_factor(rule, *view)
        out[f"scale read from the trailing axes {g.shape[-2:]} (kh, kw), not from {view}"] = \
            (_expected(claim, g) * f, probe_tolerance(claim, g))
    return out


def _one_step(claim, kind, p0, p1, g):
    name = f"one_step_{kind}"
    if matrix_view(claim, g.shape) is None:
        what, st = _classify(claim, p0, p1, g)
        return Result(name, "routed" if st == "pass" else "FAIL",
                      message=what + " (claimed: routed)")
    U, E = _implied(claim, p0, p1), _expected(claim, g)
    tol = probe_tolerance(claim, g)
    d = _rel(U, E)
    if d <= tol:
        return _judged(name, d, tol)
    msg = _ratio_note(U, E)
    if math.isfinite(d) and _rel(_unit(U), _unit(E)) <= tol:
        # the direction is the claimed one, the norm is not: a scale rule explains it?
        near = _closest(U, _scale_readings(claim, g), tol)
        if "; matches" not in near and g.ndim == 2:  # a product of two rules (Keller's and
            near = _scale_note(claim, U, E, tol) or near  # Moonlight's applied together)?
        msg += near
    if g.ndim > 2 and "; matches" not in msg:
        near = _closest(U, _nd_readings(claim, g), tol)
        msg += near
        if "; matches" not in near:  # no N-D reading explains it: what the optimizer did
            what, st = _classify(claim, p0, p1, g)
            msg += f"; observed: {what}" + (" (claim nd=routed)" if st == "pass" else "")
    return _judged(name, d, tol, msg)


def _scale_note(claim, U, E, tol):
    """'; the norm ratio is scale rule X ...' when the direction agrees and only the norm is
    off, and a named rule (or a product of two: Keller's and Moonlight's factors applied
    together) explains the ratio (spec 9.1, 9.8)."""
    nu, ne = float(np.linalg.norm(U)), float(np.linalg.norm(E))
    if not (math.isfinite(nu) and ne > 0 and nu > 0) or _rel(_unit(U), _unit(E)) > tol:
        return ""
    m, n = U.shape[-2:]
    names = scale_explanations(claim.scale, claim.scale_factor, m, n, nu / ne, tol=tol)
    if not names:
        return ""
    rule = f"{claim.scale}" + (f" x {claim.scale_factor:g}" if claim.scale_factor != 1 else "")
    return (f"; matches: the norm of scale rule {', '.join(names[:3])} instead of the claimed "
            f"{rule}")


def _scale_readings(claim, g):
    """The update under each other scale rule of spec 9.1, at the claimed factor and at 1."""
    out = {}
    for rule in SCALE_RULES.values():
        for f in dict.fromkeys((claim.scale_factor, 1.0)):
            if (rule.name, f) == (claim.scale, claim.scale_factor):
                continue
            try:
                out[f"scale {rule.name}" + ("" if f == 1.0 else f" x {f:g}")] = _expected(
                    replace(claim, scale=rule.name, scale_factor=f), g)
            except (ValueError, TypeError):  # a rule this claim cannot combine with
                continue
    return out


def _judged(name, d, tol, msg=""):
    if tol > NO_CLAIM_LIMIT:
        return Result(name, "no claim", d, tol, "the noise model's tolerance exceeds "
                      f"{NO_CLAIM_LIMIT} at the claimed precision: the probe asserts nothing")
    return Result(name, "pass" if d <= tol else "FAIL", d, tol, msg)


def _ratio_note(U, E):
    if not (np.all(np.isfinite(U))):
        return "the update is not finite"
    nu, ne = float(np.linalg.norm(U)), float(np.linalg.norm(E))
    if nu == 0 or ne == 0:
        return f"norm of the update {nu:.3g}, expected {ne:.3g}"
    return f"norm ratio {nu / ne:.4g}, direction distance {_rel(_unit(U), _unit(E)):.3g}"


def _closest(U, cands, tol):
    """'; closest: NAME (d)' over candidates that are finite (a diverged reading is never
    named), and whether it matches within its tolerance (a candidate may be an (array, tol)
    pair; else ``tol``)."""
    dist, tols = {}, {}
    for k, v in cands.items():
        arr, t = v if isinstance(v, tuple) else (v, tol)
        d = _rel(U, arr)
        if math.isfinite(d):
            dist[k], tols[k] = d, t
    if not dist:
        return ""
    best = min(dist, key=dist.get)
    return (f"; {'matches' if dist[best] <= tols[best] else 'closest'}: {best} "
            f"({dist[best]:.3g})")


_EPS_CANDIDATES = (1e-6, 1e-7, 1e-8, 1e-10)


def _eps_property(run, claim, rng, dt):
    """One step of a gradient of norm ``EPS_PROBE_RATIO * eps`` from p0 = 0 (momentum 0): the
    epsilon's value decides the update there; and one of norm ``EPS_FORM_PROBE_RATIO * eps``,
    where an added epsilon (``X / (||X|| + eps)``) and a clamped one (``X / max(||X||, eps)``)
    differ (at 1e-3 eps both divide by eps) (spec 9.9)."""
    name = "eps_small_gradient"
    P = claim.preset_object
    if P is None or P.norm not in ("add", "clamp") or P.eps <= 0:
        return Result(name, "not applicable", message="the claim has no epsilon in the "
                      "normalisation (an exact method, or eps_form none)")
    if claim.precision == "float16":
        return Result(name, "not applicable", message="the probe's gradient underflows "
                      "float16")
    if not run.momentum_settable:
        return Result(name, "not applicable", message="momentum cannot be set to 0, so the "
                      "first buffer's scale (and the epsilon's place) is the optimizer's")
    if claim.pre != "none" or claim.precondition != "frobenius":
        return Result(name, "not applicable", message="the claim normalises before the "
                      "epsilon (GradNorm) or has no Frobenius normalisation")
    shape = KINDS["wide"]
    # the form probe has its own generator: the properties after this one keep their draws
    draws = ((EPS_PROBE_RATIO, rng.standard_normal(shape)),
             (EPS_FORM_PROBE_RATIO, np.random.default_rng([EPS_FORM_SEED]).standard_normal(
                 shape)))
    raw = claim if claim.eps_form == "invariant" else replace(claim, eps=P.eps, eps_form=P.norm)
    Us, gs, worst = [], [], None
    for ratio, g in draws:
        g = (g * (ratio * P.eps * P.norm_scale ** -1 / np.linalg.norm(g))
             ).astype(dt).astype(np.float64)
        try:
            (p1,) = run(np.zeros(shape), [g], 0.0)
        except Unsupported as exc:
            return _failure(name, exc, explained=False)
        U, E = -p1 / claim.lr, _expected(raw, g)
        tol, d = probe_tolerance(raw, g), _rel(U, E)
        Us.append(U)
        gs.append(g)
        if worst is None or not (d / tol <= worst[0] / worst[1]):  # NaN-safe: NaN is worst
            worst = (d, tol, U, E, g)
    d, tol, U, E, g = worst
    if d <= tol or tol > NO_CLAIM_LIMIT:
        return _judged(name, d, tol)

    def both(c):  # a reading on both probes, side by side (the distance over both)
        return np.concatenate([_expected(c, x).ravel() for x in gs])
    cands = {f"eps {e:g} ({form})": both(replace(claim, eps=e, eps_form=form))
             for e in sorted(set(_EPS_CANDIDATES) | {P.eps}) for form in ("add", "clamp")}
    cands["no epsilon (X / ||X||_F)"] = both(replace(claim, eps=0.0, eps_form="add"))
    cands["scale-invariant (the gradient pre-scaled, spec 9.5: eps_form=invariant)"] = \
        both(replace(claim, eps=None, eps_form="invariant"))
    return _judged(name, d, tol, f"claimed eps {P.eps:g} ({P.norm}) at ||g||_F = "
                   f"{np.linalg.norm(g):.3g}; {_ratio_note(U, E)}"
                   + _closest(np.concatenate([u.ravel() for u in Us]), cands, tol))


#: second_moment_eps: candidate epsilons the diagnosis names
_AXIS_EPS_CANDIDATES = (1e-6, 1e-7, 1e-8, 1e-10, 1e-12)


def _axis_eps_property(run, claim, rng, dt):
    """One step of a gradient whose first half of the rows (a column normalisation: columns)
    are so small that ``sqrt(S) + second_moment_eps`` is decided by the epsilon: there the claimed
    epsilon halves them in the normalised update, a 10x larger one shrinks them 6x and none
    restores them (spec 9.9).  The rest keeps full rank, so the orthogonaliser converges and
    the small rows stay proportional."""
    name = "second_moment_eps"
    if claim.normalise == "none" or claim.second_moment_eps <= 0:
        return Result(name, "not applicable", message="the claim states no epsilon for a "
                      "normalisation after orthogonalising (second_moment_eps)")
    if claim.precision == "float16" or claim.param_dtype == "float16":
        return Result(name, "not applicable", message="the probe's small rows underflow "
                      "float16")
    cols = claim.normalise == "columns"
    shape = (6, 16) if cols else (16, 6)
    g = rng.standard_normal(shape)
    sel = (slice(None), slice(0, 8)) if cols else (slice(0, 8), slice(None))
    t0 = 2.0 ** -20
    h = g.copy()
    h[sel] *= t0
    O = _expected(replace(claim, normalise="none", scale="none", scale_factor=1.0, gate="none",
                          second_moment_beta=None, second_moment_debias=False),
                  h.astype(dt).astype(np.float64))
    r0 = float(np.sqrt(np.mean(O[sel] ** 2)))
    b = claim.second_moment_beta
    share = 1.0 if b is None or claim.second_moment_debias else 1.0 - b
    t = 2.0 ** round(math.log2(t0 * claim.second_moment_eps / (math.sqrt(share) * r0))) \
        if r0 > 0 else t0
    g[sel] *= t
    g = g.astype(dt).astype(np.float64)
    p0 = _draw(rng, shape, dt)
    try:
        (p1,) = run(p0, [g], 0.0)
    except Unsupported as exc:
        return _failure(name, exc, explained=False)
    axis = 0 if cols else 1

    def sizes(X):  # what the epsilon decides: the size of each row (column, entry)
        X = np.asarray(X).reshape(shape)
        return np.abs(X) if claim.normalise == "elementwise" else np.linalg.norm(X, axis=axis)
    U, E = _implied(claim, p0, p1), _expected(claim, g)
    # sizes are blind to the sign flips of entries near 0 that a gate or an elementwise
    # normalisation turns into O(1) changes: the tolerance before that widening (spec 9.9)
    tol = probe_tolerance(replace(claim, normalise="rows", gate="none"), g) \
        if claim.gate == "none" else probe_tolerance(claim, g)
    d = _rel(sizes(U), sizes(E))
    if d <= tol or tol > NO_CLAIM_LIMIT:
        return _judged(name, d, tol)
    cands = {f"second_moment_eps={e:g}": sizes(_expected(replace(claim, second_moment_eps=e), g))
             for e in _AXIS_EPS_CANDIDATES if e != claim.second_moment_eps}
    cands["no epsilon in the normalisation"] = sizes(_expected(
        replace(claim, second_moment_eps=0.0), g))
    if b is not None:
        cands[f"second_moment_debias={not claim.second_moment_debias}"] = sizes(_expected(
            replace(claim, second_moment_debias=not claim.second_moment_debias), g))
    return _judged(name, d, tol, f"sizes of the {'columns' if cols else 'rows'}"
                   f"{' (entries)' if claim.normalise == 'elementwise' else ''} differ by "
                   f"{d:.3g}; claimed second_moment_eps {claim.second_moment_eps:g} added to "
                   f"sqrt({share:g} x the statistic), small rows sized to it"
                   + _closest(sizes(U), cands, tol))


def _momentum_property(run, claim, rng, dt):
    """The stateful rule: two steps with momentum mu; the second is the orthogonalised
    momentum (mu g1 + g2, or the claimed Nesterov weights where Nesterov is always on)."""
    name = "momentum_before_orth"
    shape = KINDS["wide"]
    p0, g1, g2 = (_draw(rng, shape, dt) for _ in range(3))
    mu = claim.momentum
    try:
        p1, p2 = run(p0, [g1, g2], mu)
    except Unsupported as exc:
        return _failure(name, exc, explained=False)
    c1, c2 = NESTEROV[claim.nesterov][0](mu) if claim.nesterov_always else (mu, 1.0)
    U2 = _implied(claim, p1, p2)
    D = c1 * g1 + c2 * g2
    E2 = _expected(claim, D, gate_grad=g2, prev=g1)
    W2 = mu * _expected(claim, g1) + _expected(claim, g2)
    tol = probe_tolerance(claim, D, buffer_scale=min(1.0, 1 - mu) if mu < 1 else 1.0,
                          second_step=True)
    d = _rel(_unit(U2), _unit(E2))
    msg = ""
    if d > tol:
        msg = (f"direction vs orth({c1:.3g} g1 + {c2:.3g} g2): {d:.3g}; vs mu orth(g1) + "
               f"orth(g2): {_rel(_unit(U2), _unit(W2)):.3g}")
        if not claim.nesterov_always:
            cands = {f"Nesterov always on, {k}": _expected(claim, c[0] * g1 + c[1] * g2,
                                                           prev=g1)
                     for k, c in ((k, v[0](mu)) for k, v in NESTEROV.items())}
            cands["orthogonalised before momentum (mu orth(g1) + orth(g2))"] = W2
            dist = {k: _rel(_unit(U2), _unit(v)) for k, v in cands.items()}
            best = min(dist, key=dist.get)
            if dist[best] <= tol:
                msg += f"; matches {best}: {dist[best]:.3g}" + (
                    " (claim nesterov=always)" if best.startswith("Nesterov") else "")
    return _judged(name, d, tol, msg)


def _unsup(name, exc, explained=True):
    return _failure(name, exc, explained)


def _nesterov_property(run, claim, rng, dt):
    """Two Nesterov steps from zero buffers: u_1 = orth(g1), u_2 = orth(c1 g1 + c2 g2)."""
    shape = KINDS["wide"]
    p0, g1, g2 = (_draw(rng, shape, dt) for _ in range(3))
    if claim.nesterov is None:
        return Result("nesterov", "no claim", message="no Nesterov convention claimed")
    mu = claim.momentum
    try:
        p1, p2 = run(p0, [g1, g2], mu, **({} if claim.nesterov_always else {"nesterov": True}))
    except TypeError as exc:  # a driver or factory without the nesterov keyword
        if "nesterov" in str(exc):
            return _unsup("nesterov", exc, explained=False)
        raise
    except Unsupported as exc:
        return _unsup("nesterov", exc, explained=False)
    U1, U2 = _implied(claim, p0, p1), _implied(claim, p1, p2)
    c1, c2 = NESTEROV[claim.nesterov][0](mu)
    D2 = c1 * g1 + c2 * g2
    d1 = _rel(U1, _expected(claim, g1))
    d2 = _rel(U2, _expected(claim, D2, gate_grad=g2, prev=g1))
    d = max(d1, d2)
    bs = min(1.0, 1 - mu) if mu < 1 else 1.0
    tol = max(probe_tolerance(claim, g1, buffer_scale=bs),
              probe_tolerance(claim, D2, buffer_scale=bs, second_step=True))
    msg = ""
    if d > tol:
        cands = {f"{k} ({c[0]:.3g} g1 + {c[1]:.3g} g2)": _expected(claim, c[0] * g1 + c[1] * g2,
                                                                   prev=g1)
                 for k, c in ((k, v[0](mu)) for k, v in NESTEROV.items())}
        cands[f"no Nesterov ({mu:g} g1 + g2)"] = _expected(claim, mu * g1 + g2, prev=g1)
        b1 = (1 - mu) * g1
        cands["Nesterov after orthogonalisation ((1-mu) orth(g2) + mu orth(b2))"] = \
            (1 - mu) * _expected(claim, g2) + mu * _expected(claim, mu * b1 + (1 - mu) * g2)
        dist = {k: _rel(U2, v) for k, v in cands.items()}
        dist = {k: v for k, v in dist.items() if math.isfinite(v)}
        best = min(dist, key=dist.get) if dist else "nothing finite"
        msg = (f"step 1 {d1:.3g}, step 2 {d2:.3g} vs claimed {claim.nesterov}; step 2 closest "
               f"to {best}: {dist.get(best, math.inf):.3g}")
    return _judged("nesterov", d, tol, msg)


def _stack_property(run, claim, rng, dt):
    """A 3-D parameter (B, m, n): flattened (B, m n), B independent slices, or routed."""
    shape = stack_shape(claim)
    p0, g = (_draw(rng, shape, dt) for _ in range(2))
    try:
        (p1,) = run(p0, [g], 0.0)
    except Unsupported as exc:
        return _unsup("stacked_3d", exc)
    if claim.stack == "routed":
        what, st = _classify(claim, p0, p1, g)
        return Result("stacked_3d", "routed" if st == "pass" else "FAIL",
                      message=what + " (claimed: routed)")
    U = _implied(claim, p0, p1)
    B, m, n = shape
    views = {"flattened": (B, m * n), "independent": shape, "flattened_last": (B * m, n)}
    readings = {k: _expected(claim, g, v) for k, v in views.items()}
    # each reading judged with its own matrices' noise (a (5, 128) matrix is not five (8, 16))
    tols = {k: probe_tolerance(claim, g, v) for k, v in views.items()}
    tol = tols[claim.stack]
    d = _rel(U, readings[claim.stack])
    msg = ""
    if d > tol:
        others = {k: _rel(U, v) for k, v in readings.items() if k != claim.stack}
        best = min(others, key=lambda k: others[k] / tols[k] if math.isfinite(others[k])
                   else math.inf)
        note = _stack_scale_note(claim, U, readings[claim.stack], views[claim.stack], shape,
                                 tol)
        what, _ = _classify(claim, p0, p1, g)
        msg = f"claimed {claim.stack}" + (note or (
            f"; the {best} reading is at {others[best]:.3g}"
            + (" (matches it)" if others[best] <= tols[best] else f"; observed: {what}")))
    return _judged("stacked_3d", d, tol, msg)


def _stack_scale_note(claim, U, E, view, shape, tol):
    """'; the claimed reading's direction with the scale of rule X read from axes ...': a 3-D
    parameter orthogonalised as claimed but scaled from other axes (Keras 3.10's Muon batched
    3-D variables and scaled them by ``shape[0] / shape[1]``, the batch and the rows)."""
    nu, ne = float(np.linalg.norm(U)), float(np.linalg.norm(E))
    if not (math.isfinite(nu) and nu > 0 and ne > 0) or _rel(_unit(U), _unit(E)) > tol:
        return ""
    B, m, n = shape
    extra = [((B, m), f" read from axes (0, 1) {(B, m)}"),
             ((B, m * n), f" read from the flattened view {(B, m * n)}"),
             ((B * m, n), f" read from the view {(B * m, n)}")]
    names = scale_explanations(claim.scale, claim.scale_factor, *view[-2:], nu / ne,
                               extra, tol)
    return (f"; its direction, with the norm of scale rule {names[0]} instead of the claimed "
            f"{claim.scale} per matrix {view[-2:]}" if names else "")


def _group_gradients(seed, dt):
    """p0s and gradients of same_shape_independent: norms GROUP_NORMS; the third gradient is the
    first plus 10% noise (the same row space), so concatenating along rows or columns couples
    them visibly even where the norms alone would not."""
    rng = np.random.default_rng([seed, 13])
    p0s = [rng.standard_normal(GROUP_SHAPE) for _ in GROUP_NORMS]
    base = [rng.standard_normal(GROUP_SHAPE) for _ in GROUP_NORMS]
    base[2] = base[0] + 0.1 * base[2]
    gs = [s * b / np.linalg.norm(b) * np.sqrt(b.size) for s, b in zip(GROUP_NORMS, base)]

    def rnd(x):
        return x.astype(dt).astype(np.float64)
    return [rnd(x) for x in p0s], [rnd(g) for g in gs]


def _joint_readings(claim, gs):
    """The updates of a joint orthogonalisation: rows concatenated ((B m, n), one Gram
    sum_i G_i^T G_i), columns concatenated ((m, B n)); each parameter's block."""
    m, n = gs[0].shape
    B = len(gs)
    rule = resolve_scale(claim.scale)

    def joint(M):  # the joint orthogonalisation, scaled as one parameter of shape (m, n)
        return _expected(claim, M) * (shape_factor(rule, m, n) / shape_factor(rule, *M.shape))
    rows = joint(np.concatenate(gs, axis=0))
    cols = joint(np.concatenate(gs, axis=1))
    assert rows.shape == (B * m, n)
    return {"rows concatenated (one orthogonalisation of the (B m, n) stack)":
            [rows[i * m:(i + 1) * m] for i in range(len(gs))],
            "columns concatenated (one orthogonalisation of the (m, B n) stack)":
            [cols[:, i * n:(i + 1) * n] for i in range(len(gs))]}


def same_shape_property(run, claim, seed=0, dt=np.float32, name="same_shape_independent"):
    """Three same-shape 2-D parameters in one group, one step, momentum neutral: each
    parameter's update is its own spec update (spec 9.3), whatever the optimizer batches."""
    p0s, gs = _group_gradients(seed, dt)
    try:
        out = run(p0s, [gs], 0.0, group=True)
        (p1s,) = out
        if not isinstance(p1s, (list, tuple)):  # e.g. a driver that read the list as a stack
            raise Unsupported("the driver did not return a list of parameters (does it take "
                              "group=True?)")
        p1s = [np.asarray(x, dtype=np.float64) for x in p1s]
        if len(p1s) != len(p0s) or any(x.shape != GROUP_SHAPE for x in p1s):
            raise Unsupported("the driver did not return one array per parameter")
    except Unsupported as exc:
        return _unsup(name, exc)
    except DriverError as exc:  # e.g. a driver that read the list as a stack
        return _unsup(name, Unsupported(f"the driver does not run a group: {exc}"))
    except (TypeError, ValueError) as exc:  # a driver that does not run groups
        return _unsup(name, Unsupported(f"the driver does not run a group: {exc}"))
    Us = [_implied(claim, a, b) for a, b in zip(p0s, p1s)]
    ds = [_rel(U, _expected(claim, g)) for U, g in zip(Us, gs)]
    d = max(ds)
    tol = max(probe_tolerance(claim, g) for g in gs)
    if d <= tol or tol > NO_CLAIM_LIMIT:
        return _judged(name, d, tol)
    per = ", ".join(f"{x:.3g}" for x in ds)
    msg = f"per parameter (gradient norms {' : '.join(f'{x:g}' for x in GROUP_NORMS)}): {per}"
    readings = _joint_readings(claim, gs)
    best = min(readings, key=lambda k: max(_rel(U, E) for U, E in zip(Us, readings[k])))
    db = max(_rel(U, E) for U, E in zip(Us, readings[best]))
    if db <= tol:
        msg += f"; matches {best}: {db:.3g}"
    else:
        small = [i for i, x in enumerate(GROUP_NORMS) if x < max(GROUP_NORMS)]
        big = ds[GROUP_NORMS.index(max(GROUP_NORMS))]
        if all(ds[i] > tol and big < 0.01 * ds[i] for i in small):
            msg += ("; only the small-gradient parameters deviate: one norm shared across the "
                    "stack (a joint Frobenius normalisation)")
    try:  # each parameter stepped alone: does the grouping cause it?
        alone = [_rel(U, _implied(claim, a, run(a, [g], 0.0)[0]))
                 for U, a, g in zip(Us, p0s, gs)]
        msg += ("; the same update as each stepped alone: not a batching effect"
                if max(alone) <= tol else
                f"; stepped alone differs by {max(alone):.3g}: the grouping changes it")
    except (Unsupported, DriverError):
        pass
    return Result(name, "FAIL", d, tol, msg)


def _complex_property(run, claim, rng, dt):
    """A complex wide parameter: the update of the polar factor U V^H (spec 9.7)."""
    shape = KINDS["wide"]
    cd = np.complex128 if dt == np.float64 else np.complex64

    def draw():
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cd)
    p0, g = (draw().astype(np.complex128) for _ in range(2))
    try:
        (p1,) = run(p0, [g], 0.0)
    except Unsupported as exc:
        if claim.complex is False:
            return Result("complex_input", "not applicable", message="the claim states no "
                          f"complex support (complex = false); the optimizer refuses: {exc}")
        return _unsup("complex_input", exc)
    U = _implied(claim, p0, p1)
    try:
        E = _expected(claim, g)
    except TypeError as exc:  # e.g. SWAN's GradNorm is real-only (spec 9.7)
        return Result("complex_input", "no claim", message=f"the claim is real-only: {exc}")
    d = _rel(U, E)
    tol = probe_tolerance(claim, g)
    msg = ""
    if d > tol:
        im = float(np.linalg.norm(U.imag) / np.linalg.norm(E.imag))
        msg = (f"norm ratio {np.linalg.norm(U) / np.linalg.norm(E):.4g}; imaginary part of the "
               f"update / of the expected {im:.3g}")
        if im < 1e-3:
            msg += (f": the imaginary part is dropped (distance to the update of Re(g) "
                    f"{_rel(U, _expected(claim, g.real)):.3g})")
        else:
            msg += "; a transpose without conjugate (X X^T) gives this"
    if claim.complex is False:  # its premise is not claimed: advisory (issue 22)
        return Result("complex_input", "warn" if d > tol else "not applicable", d, tol,
                      ("the claim states no complex support (complex = false), but the "
                       "optimizer accepts a complex parameter and its update is wrong: " + msg)
                      if d > tol else "the claim states no complex support (complex = false); "
                      "the optimizer's complex update matches anyway")
    return _judged("complex_input", d, tol, msg)


# -- the model-level check: a routing rule and the update per parameter -------------------------

def torch_model_driver(factory, model):
    """``factory(named_parameters) -> torch.optim.Optimizer`` for ``model`` (an ``nn.Module``);
    returns ``run(grads) -> (p0, p1)``: each parameter (by name) before and after one step from
    fresh state with the given gradients.  The model's parameters are restored afterwards, so
    every run starts from the same point.  ``run.shapes`` maps names to shapes."""
    import torch

    named = list(model.named_parameters())

    def run(grads):
        p0 = {n: p.detach().numpy().copy() for n, p in named}
        try:
            opt = factory(named)
            for n, p in named:
                p.grad = torch.from_numpy(np.array(grads[n], dtype=p0[n].dtype))
            opt.step()
            p1 = {n: p.detach().numpy().copy() for n, p in named}
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        finally:
            with torch.no_grad():
                for n, p in named:
                    p.copy_(torch.from_numpy(p0[n]))
                    p.grad = None
        return p0, p1
    run.shapes = {n: tuple(p.shape) for n, p in named}
    return run


def _adam_like(claim, p0, p1):
    """A first AdamW step: |update| constant (= lr), with or without decoupled decay."""
    for U in (_implied(claim, p0, p1), (p0 - p1) / claim.lr):
        a = np.abs(U)
        if a.size > 1 and a.mean() > 0 and a.std() / a.mean() < 0.05:
            return True
    return False


def check_model(run, claim: OptimizerClaim, route=None, name="model", seed=0,
                shapes=None) -> OptimizerReport:
    """One step of a model's optimizer with controlled gradients on every parameter.

    ``run(grads) -> (p0, p1)`` (see :func:`torch_model_driver`); ``route(name, shape)`` is the
    routing rule the optimizer claims (default :func:`swanref.swan_route`): ``"adam"`` sends a
    parameter to an Adam-like rule, any other value to the orthogonalised update of ``claim``.
    Properties per parameter: ``routing[<name>]`` (the observed rule -- an Adam-like first step
    or not -- is the routed one) and, for the orthogonalised ones, ``update[<name>]`` (the
    implied update equals the claim's; N-D parameters in the flattened view, spec 9.2).
    """
    if route is None:
        route = swan_route
    shapes = shapes or run.shapes
    rng = np.random.default_rng(seed)
    dt = np.float64 if claim.param_dtype == "float64" else np.float32
    grads = {n: rng.standard_normal(sh).astype(dt) for n, sh in shapes.items()}
    report = OptimizerReport(name, {"preset": claim.preset, "scale": claim.scale,
                                    "pre": claim.pre, "precision": claim.precision,
                                    "lr": claim.lr, "weight_decay": claim.weight_decay})
    t0 = time.perf_counter()
    try:
        p0, p1 = run(grads)
    except Unsupported as exc:
        report.results.append(Result("step", "FAIL", message=str(exc)))
        return report
    for n, sh in shapes.items():
        a, b = p0[n].astype(np.float64), p1[n].astype(np.float64)
        g = grads[n].astype(np.float64)
        want = "adam" if route(n, sh) == "adam" else "orthogonalised"
        got = "adam" if _adam_like(claim, a, b) else "orthogonalised"
        msg = ""
        if got != want:
            msg = f"routed to {want}, observed {got}"
            if got != "adam":
                msg += (f" ({_classify(claim, a, b, g)[0]})" if len(sh) < 2 else
                        " (a matrix rule, not an Adam-like step)")
        report.results.append(Result(f"routing[{n}]", "pass" if got == want else "FAIL",
                                     message=msg))
        if want != "orthogonalised":
            continue
        if len(sh) < 2:
            report.results.append(Result(f"update[{n}]", "FAIL",
                                         message="the routing rule sends a vector to the "
                                                 "orthogonaliser: no update is defined"))
            continue
        U, E = _implied(claim, a, b), _expected(claim, g)
        d = _rel(U, E)
        tol = probe_tolerance(claim, g)
        msg = ""
        if d > tol:
            msg = (f"norm ratio {np.linalg.norm(U) / np.linalg.norm(E):.4g}, direction "
                   f"distance {_rel(U / np.linalg.norm(U), E / np.linalg.norm(E)):.3g}")
        report.results.append(_judged(f"update[{n}]", d, tol, msg))
    report.seconds = time.perf_counter() - t0
    return report


def available(b: Builtin):
    missing = [m for m in b.needs if importlib.util.find_spec(m) is None]
    return missing


def package_label(b: Builtin) -> str:
    """'module version' of the package a builtin drives (the results table's package cell)."""
    pkg = b.needs[-1]
    try:
        ver = md.version({"emerging_optimizers": "emerging-optimizers"}.get(pkg, pkg))
    except md.PackageNotFoundError:
        ver = "?"
    return f"{pkg} {ver}"


def run_builtin(name: str, timeout=DEFAULT_TIMEOUT_S) -> OptimizerReport | None:
    b = BUILTINS[name]
    if available(b):
        return None
    report = check_optimizer(b.build(), b.claim, name, timeout=timeout)
    _add_variants(report, b)
    return report


def _add_variants(report, b):
    """same_shape_independent under the builtin's other batching options."""
    dt = np.float64 if b.claim.param_dtype == "float64" else np.float32
    for label, build in b.variants.items():
        report.results.append(same_shape_property(build(), b.claim, 0, dt,
                                                  f"same_shape_independent[{label}]"))


def _tol_label(claim):
    return "noise model" if claim.tolerance is None else f"tol {claim.tolerance:g}"


def results_table(names=None) -> str:
    """Markdown rows: optimizer, claim, one-step per kind, stateful, Nesterov, 3-D stack,
    complex, same-shape group (default; other batching options), 1-D (docs/optimizers.md)."""
    rows = []
    for name in names or BUILTINS:
        b = BUILTINS[name]
        miss = available(b)
        if miss:
            continue
        r = check_optimizer(b.build(), b.claim, name)
        _add_variants(r, b)

        def cell(res):
            if res.status == "unsupported":
                return "rejected"
            if res.error is None:
                return res.status
            return f"{res.status} {res.error:.1e}"
        one = " / ".join(cell(x) for x in r.results if x.name.startswith("one_step"))
        eps = cell(next(x for x in r.results if x.name == "eps_small_gradient"))
        axis_eps = next(x for x in r.results if x.name == "second_moment_eps")
        if axis_eps.status != "not applicable":
            eps += f"; second_moment_eps: {cell(axis_eps)}"
        st = cell(next(x for x in r.results if x.name == "momentum_before_orth"))
        vec = next(x for x in r.results if x.name == "vector_routed")
        nest = next(x for x in r.results if x.name == "nesterov")
        nest = cell(nest) + (f" (`{b.claim.nesterov}`)" if nest.status != "unsupported" and
                             b.claim.nesterov else "")
        stack = next(x for x in r.results if x.name == "stacked_3d")
        stack = cell(stack) + ("" if stack.status in ("unsupported", "routed") else
                               f" (`{b.claim.stack}`)")
        cplx = next(x for x in r.results if x.name == "complex_input")
        cplx = cell(cplx) + (f": {cplx.message}" if cplx.status == "FAIL" else "")
        group = "; ".join((x.name[len("same_shape_independent["):-1] + ": "
                           if x.name.endswith("]") else "") + cell(x)
                          + (f" ({x.message.split('; ', 1)[1]})" if x.status == "FAIL"
                             and "; " in x.message else "")
                          for x in r.results if x.name.startswith("same_shape_independent"))
        knobs = "".join(f", {k}={v}" for k, v in b.claim.to_dict().items()
                        if k in _NON_DEFAULT and v != _NON_DEFAULT[k]
                        and k not in ("nesterov", "stack"))
        rows.append(f"| `{name}` | {package_label(b)} | `{b.claim.preset}`, `{b.claim.scale}`, "
                    f"{b.claim.precision}{knobs} ({_tol_label(b.claim)}) | {b.neutral} | "
                    f"{one} | {eps} | {st} | {nest} | {stack} | {cplx} | {group} | "
                    f"{vec.status}: {vec.message} |")
    return "\n".join(rows)


_CLAIM_FIELDS = {f for f in OptimizerClaim.__dataclass_fields__}


def make_claim(knobs: dict) -> OptimizerClaim:
    """An :class:`OptimizerClaim` from a dict of knobs (unknown names and bad values are a
    :class:`UsageError` naming the knob)."""
    unknown = sorted(set(knobs) - _CLAIM_FIELDS)
    if unknown:
        raise UsageError(f"unknown claim knob(s) {', '.join(unknown)}; the knobs are "
                         f"{', '.join(sorted(_CLAIM_FIELDS))}")
    if "preset" not in knobs:
        raise UsageError("the claim needs a preset (--preset NAME: the orthogonaliser the "
                         "optimizer uses; swanref presets --list, or svd for an exact polar "
                         "factor)")
    try:
        return OptimizerClaim(**knobs)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"bad claim: {exc}") from exc


def user_settings(kwargs, keywords, claimed):
    """(kwargs, claim updates): an ``lr``/``weight_decay``/momentum the user passes with
    ``--kwarg`` under the optimizer's own keyword is the claim's too, unless the claim states
    it.  The momentum keyword is taken out of the kwargs (``betas`` keeps its other entries):
    the probes set it themselves -- 0 for the one-step properties, the claim's for the
    two-step ones -- so a user's ``momentum=0.95`` is the claim's 0.95, never a first step
    run at 0.95 where the check assumed 0."""
    kwargs, upd = dict(kwargs), {}
    for k in ("lr", "weight_decay", "momentum"):
        name = keywords.get(k)
        if name not in kwargs:
            continue
        value = kwargs[name]
        if k == "momentum":
            if name == "betas":
                value = tuple(value)[0] if isinstance(value, (tuple, list)) and value else None
            else:
                kwargs.pop(name)
            if value is None:
                continue
        if k not in claimed:
            try:
                upd[k] = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"--kwarg {name}={value!r}: {k} must be a number") from None
    return kwargs, upd


def check_target(target, claim=None, *, kwargs=None, params="auto", name=None, seed=0,
                 claimed=None, timeout=DEFAULT_TIMEOUT_S, **knobs) -> OptimizerReport:
    """Zero glue (docs/optimizers.md): check ``target`` -- a ``torch.optim.Optimizer`` class,
    an optax ``GradientTransformation`` factory, or their import path ``"pkg.module:Class"``
    -- under ``claim`` (a shared :class:`~swanref.verify.claims.Claim`, an
    :class:`OptimizerClaim`, or OptimizerClaim knobs such as ``preset="torch_muon",
    precision="bfloat16", nesterov="sutskever"``).  ``kwargs`` go to every construction; an
    ``lr``/``weight_decay`` among them is also the claim's unless the claim states it
    (``claimed``: the knob names the caller stated; default the ``knobs`` given).  An optimizer
    without a momentum keyword runs at its own momentum, which the claim must state.
    ``timeout`` (seconds, 0 or None: none): the deadline of the import, of every construction
    and of every step (a hang: outcome 'timeout', exit 5, naming the property and the step)."""
    label = name or (target if isinstance(target, str) else
                     getattr(target, "__qualname__", repr(target)))
    seconds = timeout_seconds(timeout)
    runner = TargetRunner(seconds) if seconds is not None else None
    if isinstance(target, str):
        try:
            target = load_target(target, runner)
        except (TargetTimeout, TargetAborted) as exc:
            report = OptimizerReport(label, {})
            _stopped(report, f"importing {target.rpartition(':')[0]}", exc)
            return report
    kwargs = dict(kwargs or {})
    if isinstance(claim, Claim):
        if claimed is None:
            claimed = tuple(claim.knobs_changed())
        try:
            claim = OptimizerClaim.from_claim(claim)
        except ValueError as exc:  # a combination the check does not model
            raise UsageError(f"bad claim: {exc}") from exc
    if claim is None:
        claim = make_claim(knobs)
    elif knobs:
        try:
            claim = replace(claim, **knobs)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"bad claim: {exc}") from exc
    claimed = tuple(knobs) if claimed is None else tuple(claimed)
    sig = signature_of(target)
    sig_kn = {k: keyword_for(sig, k, kwargs) for k in ("lr", "weight_decay", "momentum")}
    kwargs, upd = user_settings(kwargs, sig_kn, claimed)
    claim = replace(claim, **upd) if upd else claim
    run = generic_driver(target, kwargs, lr=claim.lr, weight_decay=claim.weight_decay,
                         params=params, dtype=claim.param_dtype, claimed=claimed,
                         deadline=Deadline(runner))
    if sig_kn["momentum"] is None and "momentum" not in claimed:
        raise UsageError(f"{label} takes no momentum keyword (tried "
                         f"{', '.join(KNOB_NAMES['momentum'])}): it runs at its own momentum; "
                         "claim that value (--set momentum=VALUE)")
    return check_optimizer(run, claim, label, seed, timeout=seconds)



def build_parser() -> argparse.ArgumentParser:
    """The parser of ``swanref check-optimizer``."""
    p = argparse.ArgumentParser(
        prog="swanref check-optimizer",
        description="Drive a real optimizer one and two steps and compare with the spec's "
                    "update (docs/optimizers.md).  OPTIMIZER is a built-in name (--list) or "
                    "an import path pkg.module:Class (a torch.optim optimizer class) or "
                    "pkg.module:factory (an optax GradientTransformation factory).")
    p.add_argument("optimizer", nargs="?", help=f"one of: {', '.join(BUILTINS)}; or "
                   "pkg.module:Class / file.py:Class")
    p.add_argument("--list", action="store_true", help="list the built-in optimizers")
    p.add_argument("--table", action="store_true",
                   help="markdown results rows for every installed built-in optimizer")
    p.add_argument("--json", action="store_true",
                   help="the report as one JSON document on stdout instead of the table")
    p.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="the longest the import, one construction or one step of the "
                        "optimizer may take; past it the check stops with outcome TIMEOUT "
                        f"(exit 5) naming the property and step (default {DEFAULT_TIMEOUT_S:g}; "
                        "0: no deadline)")
    g = p.add_argument_group("an optimizer by import path")
    g.add_argument("--kwarg", action="append", metavar="NAME=VALUE",
                   help="keyword for the optimizer's constructor/factory (repeatable); the "
                        "value is a Python literal, a dotted name (torch.float64), or a dotted "
                        "callable on a literal (jnp.array([[3.4, -4.7, 2.0]]))")
    g.add_argument("--scale", help="the scale rule (the claim's scale knob; default keller)")
    g.add_argument("--precision", help="what the orthogonaliser computes in (the claim's "
                   "compute_dtype: float32, bfloat16, float16, float64)")
    add_claim_arguments(g)  # --claim FILE, --preset NAME, --set KNOB=VALUE (docs/spec.md 11)
    g.add_argument("--params", default="auto", help="how the parameters reach the "
                   f"constructor: {', '.join(PARAM_STYLES)} (default auto)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        for name, b in BUILTINS.items():
            miss = available(b)
            print(f"{name:<52} {'not installed: ' + ', '.join(miss) if miss else 'installed'}")
        return 0
    if args.table:
        print(results_table())
        return 0
    if args.optimizer is None:
        print("swanref check-optimizer: error: name an optimizer (--list) or an import path",
              file=sys.stderr)
        return 2
    try:
        if args.optimizer in BUILTINS:
            if args.kwarg or args.set_knobs or args.preset or args.claim:
                raise UsageError(f"{args.optimizer} is a built-in with its own claim; check "
                                 "it by import path to pass --kwarg/--preset/--set/--claim")
            miss = available(BUILTINS[args.optimizer])
            if miss:
                raise UsageError(f"{args.optimizer} needs {', '.join(miss)} (not installed)")
            report = run_builtin(args.optimizer, timeout=args.timeout)
        elif ":" not in args.optimizer:
            raise UsageError(f"{args.optimizer!r} is neither a built-in ({', '.join(BUILTINS)}) "
                             "nor an import path pkg.module:Class")
        else:
            base = {"level": "optimizer"}
            if args.scale is not None:
                base["scale"] = args.scale
            if args.precision is not None:
                base["compute_dtype"] = args.precision
            named = {str(t).partition("=")[0].strip() for t in args.set_knobs or ()}
            if args.preset is None and not args.claim and not named & {"preset", "method"}:
                raise UsageError("the claim needs a preset (--preset NAME: the orthogonaliser "
                                 "the optimizer uses, written out as its source runs it; or "
                                 "--claim FILE, or --set method=svd for an exact polar factor)")
            # float32 only where neither the user nor the preset's source states a dtype
            claim = claim_from_args(args, base, defaults={"compute_dtype": "float32"})
            kwargs = dict(parse_kwarg(k) for k in (args.kwarg or []))
            report = check_target(args.optimizer, claim, kwargs=kwargs, params=args.params,
                                  timeout=args.timeout)
    except UsageError as exc:
        print(f"swanref check-optimizer: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1, default=float) if args.json else report.table())
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
