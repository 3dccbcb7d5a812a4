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
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from swanref.spec.conventions import resolve_scale, shape_factor
from swanref.spec.routing import swan_route
from swanref.update import orthogonalized_update
from swanref.ops import grad_norm
from swanref.verify.claims import Claim, ClaimError
from swanref.verify.claims.model import require_evaluable

__all__ = ["OptimizerClaim", "BUILTINS", "NESTEROV", "check_optimizer", "check_model",
           "torch_driver", "torch_model_driver", "optax_driver", "main"]

LR, WD, MU = 0.1, 0.1, 0.9
#: relative Frobenius distance accepted, per claimed compute precision (as spec 9.8)
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}
KINDS = {"wide": (8, 16), "tall": (16, 8), "square": (8, 8), "conv": (8, 4, 3, 3)}
#: floor of the tolerance of the two-step properties: the optimizer orthogonalises its buffer,
#: a multiple of the combination compared with by a factor that is not a power of two, so a
#: preset's epsilon sits at a slightly different relative place.  Spec 9.5 measures that
#: displacement at most 8.2e-7 for every preset and route over gradient scales 1e-12 .. 1e12
#: (about 1e-8 on these probes); the floor is that bound with a margin of 2.4
STATEFUL_TOLERANCE_FLOOR = 2e-6
STACK_SHAPE = (3, 8, 16)
STACK_RULES = ("flattened", "independent", "routed")
#: same_shape_independent: the group's parameter shape and the gradients' norms (a joint
#: Frobenius normalisation leaves the small ones' singular values at ~1e-3 of the large one's)
GROUP_SHAPE = (8, 16)
GROUP_NORMS = (1.0, 1000.0, 1.0)


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


#: Nesterov conventions: name -> (weights (c1, c2) of the second step's direction
#: c1 g1 + c2 g2 as a function of mu, where it is used).  Every first step is ∝ g1.
NESTEROV = {
    "sutskever": (_nesterov_sutskever,
                  "u = g + mu b (b the momentum, lerp or SGD form): torch.optim.Muon, "
                  "KellerJordan/Muon muon_update, pytorch-optimizer Muon, emerging-optimizers"),
    "optax": (_nesterov_optax,
              "bias-corrected: mu_hat = mu m_t / (1 - mu^(t+1)) + (1 - mu) g_t / (1 - mu^t): "
              "optax.contrib scale_by_muon"),
    "grokfast": (_nesterov_grokfast,
                 "u = g + EMA(g), not debiased: heavyball nesterov_ema ('equivalent to "
                 "Grokfast')"),
}


@dataclass
class OptimizerClaim:
    preset: str
    scale: str = "keller"
    scale_factor: float = 1.0
    precision: str = "float32"        # what the orthogonaliser computes in
    param_dtype: str = "float32"
    lr: float = LR
    weight_decay: float = WD
    momentum: float = MU
    tolerance: float | None = None
    nd: str = "orthogonalised"        # or "routed": N-D parameters go to another rule (Adam)
    pre: str = "none"                 # or "grad_norm": SWAN's GradNorm before orthogonalising
    nesterov: str | None = None       # a NESTEROV convention, or None: no Nesterov claimed
    stack: str = "flattened"          # a 3-D parameter: one of STACK_RULES

    def __post_init__(self):
        self.scale = resolve_scale(self.scale).name
        if self.nesterov is not None and self.nesterov not in NESTEROV:
            raise ValueError(f"nesterov must be one of {sorted(NESTEROV)} or None, "
                             f"got {self.nesterov!r}")
        if self.stack not in STACK_RULES:
            raise ValueError(f"stack must be one of {STACK_RULES}, got {self.stack!r}")
        if self.tolerance is None:
            self.tolerance = TOLERANCE[self.precision]

    #: Claim knobs this level evaluates today (docs/spec.md 11.1)
    CLAIM_KNOBS = ("scale", "scale_factor", "compute_dtype", "io_dtype", "lr", "weight_decay",
                   "momentum", "nd", "pre", "nesterov", "nesterov_variant")
    _STACK_OF_ND = {"flatten": "flattened", "batch_leading": "independent",
                    "flatten_4d_batch_3d": "independent", "routed": "routed"}

    @classmethod
    def from_claim(cls, claim: Claim) -> OptimizerClaim:
        """The optimizer check's claim of a :class:`~swanref.verify.claims.Claim`."""
        require_evaluable(claim, "optimizer", cls.CLAIM_KNOBS)
        if claim.nd not in cls._STACK_OF_ND:
            raise ClaimError(f"the optimizer check cannot evaluate nd={claim.nd!r} yet")
        if claim.nesterov == "always":
            raise ClaimError("the optimizer check cannot evaluate nesterov='always' yet (its "
                             "momentum-neutral step switches Nesterov off)")
        return cls(claim.preset or claim.method, claim.scale, claim.scale_factor,
                   claim.compute_dtype, claim.io_dtype or claim.container, claim.lr,
                   claim.weight_decay, claim.momentum, claim.tolerance,
                   "routed" if claim.nd == "routed" else "orthogonalised", claim.pre,
                   None if claim.nesterov == "off" else claim.nesterov_variant,
                   cls._STACK_OF_ND[claim.nd])

    @property
    def stateful_tolerance(self):
        return max(self.tolerance, STATEFUL_TOLERANCE_FLOOR)

    @property
    def emulate(self):
        return self.precision if self.precision in ("bfloat16", "float16") else None


class Unsupported(Exception):
    """The optimizer refused this parameter (at construction or step)."""


# -- drivers ------------------------------------------------------------------------------------

def _dtypes(p0, dtype):
    """(array dtype, read-back dtype) for p0: complex values take the complex counterpart."""
    if np.iscomplexobj(p0):
        return (np.complex128 if np.dtype(dtype) == np.float64 else np.complex64), np.complex128
    return np.dtype(dtype), np.float64


def _factory_args(momentum, nesterov):
    """``factory(..., momentum)``, or with ``nesterov=True`` only when asked (old factories
    without the keyword keep working; a Nesterov run on them is reported unsupported)."""
    return ((momentum,), {"nesterov": True}) if nesterov else ((momentum,), {})


def torch_driver(factory, dtype="float32"):
    """``factory(params, momentum[, nesterov=True]) -> torch.optim.Optimizer``; returns
    run(p0, grads, momentum, nesterov=False, group=False).  With ``group=True``, ``p0`` is a
    list of arrays put in one parameter group, each gradient a list, and each step's result
    a list."""
    import torch

    def run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        dt, back = _dtypes(p0s[0], dtype)
        ps = [torch.nn.Parameter(torch.from_numpy(np.array(x, dtype=dt))) for x in p0s]
        try:
            args, kw = _factory_args(momentum, nesterov)
            opt = factory(ps, *args, **kw)
            out = []
            for gs in steps:
                for p, g in zip(ps, gs):
                    p.grad = torch.from_numpy(np.array(g, dtype=dt))
                opt.step()
                now = [p.detach().numpy().astype(back) for p in ps]
                out.append(now if group else now[0])
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding, reported as such
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        return out
    return run


def optax_driver(factory, dtype="float32"):
    """``factory(momentum[, nesterov=True]) -> optax.GradientTransformation``; returns
    run(p0, grads, momentum, nesterov=False, group=False) (``group=True``: leaves ``w0``,
    ``w1``, ... of one params dict, as :func:`torch_driver`)."""
    import jax.numpy as jnp
    import optax

    def run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        dt, back = _dtypes(p0s[0], dtype)
        keys = [f"w{i}" for i in range(len(p0s))]
        try:
            args, kw = _factory_args(momentum, nesterov)
            tx = factory(*args, **kw)
            params = {k: jnp.asarray(np.array(x, dtype=dt)) for k, x in zip(keys, p0s)}
            state = tx.init(params)
            out = []
            for gs in steps:
                upd, state = tx.update({k: jnp.asarray(np.array(g, dtype=dt))
                                        for k, g in zip(keys, gs)}, state, params)
                params = optax.apply_updates(params, upd)
                now = [np.asarray(params[k]).astype(back) for k in keys]
                out.append(now if group else now[0])
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
            OptimizerClaim("torch_muon", "moonlight", precision="bfloat16"),
            "first step (beta1 only scales)",
            "step 1 is an elementwise second-moment normalisation of O (about sign(O)): "
            "not an orthogonalised update, so the one-step comparison is expected to fail",
            ("torch", "pytorch_optimizer"),
            {"foreach=True": lambda: _ptopt_adamuon(foreach=True)}),
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

#: the message of a property that passed because the optimizer refused the parameter
REFUSED = "rejected"


@dataclass
class Result:
    name: str
    status: str
    error: float | None = None
    tolerance: float | None = None
    message: str = ""


@dataclass
class OptimizerReport:
    optimizer: str
    claim: dict
    results: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def evidence(self) -> list:
        """Properties that ran a step and passed: ``routed``, ``unsupported`` and a 1-D
        parameter the optimizer refused (``vector_routed`` passes by a refusal) are none."""
        return [r for r in self.results if r.status == "pass"
                and not r.message.startswith(REFUSED)]

    @property
    def conforming(self):
        """No failure and at least one property that passed: an optimizer whose every step
        raises is not CONFORMING (issue 21)."""
        return bool(self.evidence) and not any(r.status == "FAIL" for r in self.results)

    def status(self, name):
        return next(r.status for r in self.results if r.name == name)

    def to_dict(self):
        return {"optimizer": self.optimizer, "claim": self.claim, "conforming": self.conforming,
                "results": [r.__dict__ for r in self.results]}

    def table(self):
        lines = [f"swanref check-optimizer {self.optimizer}",
                 "  claim: " + ", ".join(f"{k}={v}" for k, v in self.claim.items()), ""]
        width = max([22] + [len(r.name) + 1 for r in self.results])
        for r in self.results:
            err = "" if r.error is None else f"{r.error:.3g} (tol {r.tolerance:.3g})"
            lines.append(f"{r.name:<{width}} {r.status:<12} {err:<24} {r.message}")
        lines.append("")
        if self.conforming:
            lines.append("verdict: CONFORMING")
        elif not any(r.status == "FAIL" for r in self.results):
            lines.append("verdict: INCONCLUSIVE -- no property ran and passed (every step "
                         "refused or unsupported): nothing was checked; see the messages "
                         "above for what the optimizer raised")
        else:
            lines.append("verdict: NOT CONFORMING")
        return "\n".join(lines)


def _rel(a, b):
    nb = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / nb if nb > 0 else float(np.linalg.norm(a))


def _expected(claim, g, stack_dims=0):
    cplx = np.iscomplexobj(g)
    wide = claim.precision == "float64"
    g = np.asarray(g, (np.complex128 if wide else np.complex64) if cplx else
                   (np.float64 if wide else np.float32))
    if claim.pre == "grad_norm":  # SWAN (spec 4.1): GradNorm over rows of the matrix view
        rows = g.shape[0] if stack_dims == 0 else int(np.prod(g.shape[:stack_dims + 1]))
        g = grad_norm(g.reshape(rows, -1)).reshape(g.shape)
    # emulated bf16/fp16 is real-only (spec 9.7): complex is compared in the compute dtype
    return orthogonalized_update(g, claim.preset, scale=claim.scale,
                                 scale_factor=claim.scale_factor, stack_dims=stack_dims,
                                 emulate=None if cplx else claim.emulate
                                 ).astype(np.complex128 if cplx else np.float64)


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


def check_optimizer(run, claim: OptimizerClaim, name="optimizer", seed=0) -> OptimizerReport:
    """Run the optimizer-level properties on driver ``run`` (see torch_driver/optax_driver):
    ``run(p0, grads, momentum, nesterov=False)`` returns the parameter after each gradient's
    step (complex ``p0`` and ``grads`` for ``complex_input``; a driver without the ``nesterov``
    keyword gets ``nesterov`` reported unsupported); an exception means the optimizer refuses
    that parameter."""
    raw_run = run

    def run(p0, grads, momentum, **kw):
        try:
            return raw_run(p0, grads, momentum, **kw)
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc

    rng = np.random.default_rng(seed)
    report = OptimizerReport(name, {"preset": claim.preset, "scale": claim.scale,
                                    "precision": claim.precision, "lr": claim.lr,
                                    "weight_decay": claim.weight_decay,
                                    "momentum": claim.momentum})
    t0 = time.perf_counter()
    dt = np.float64 if claim.param_dtype == "float64" else np.float32
    for kind, shape in KINDS.items():
        p0 = rng.standard_normal(shape).astype(dt).astype(np.float64)
        g = rng.standard_normal(shape).astype(dt).astype(np.float64)
        try:
            (p1,) = run(p0, [g], 0.0)
        except Unsupported as exc:
            report.results.append(Result(f"one_step_{kind}", "unsupported", message=str(exc)))
            continue
        if claim.nd == "routed" and len(shape) != 2:
            what, st = _classify(claim, p0, p1, g)
            report.results.append(Result(f"one_step_{kind}", "routed" if st == "pass" else
                                         "FAIL", message=what + " (claimed: routed)"))
            continue
        U = _implied(claim, p0, p1)
        E = _expected(claim, g)
        d = _rel(U, E)
        msg = ""
        if d > claim.tolerance:
            ratio = float(np.linalg.norm(U) / np.linalg.norm(E))
            dirn = _rel(U / np.linalg.norm(U), E / np.linalg.norm(E))
            msg = f"norm ratio {ratio:.4g}, direction distance {dirn:.3g}"
        report.results.append(Result(f"one_step_{kind}", "pass" if d <= claim.tolerance
                                     else "FAIL", d, claim.tolerance, msg))
    # the stateful rule: momentum before orthogonalisation
    shape = KINDS["wide"]
    p0 = rng.standard_normal(shape).astype(dt).astype(np.float64)
    g1, g2 = (rng.standard_normal(shape).astype(dt).astype(np.float64) for _ in range(2))
    mu = claim.momentum
    try:
        p1, p2 = run(p0, [g1, g2], mu)
        U2 = _implied(claim, p1, p2)
        E2 = _expected(claim, mu * g1 + g2)
        W2 = mu * _expected(claim, g1) + _expected(claim, g2)
        d = _rel(U2 / np.linalg.norm(U2), E2 / np.linalg.norm(E2))
        dw = _rel(U2 / np.linalg.norm(U2), W2 / np.linalg.norm(W2))
        msg = (f"direction vs orth(mu g1 + g2): {d:.3g}; vs mu orth(g1) + orth(g2): {dw:.3g}"
               if d > claim.stateful_tolerance else "")
        report.results.append(Result("momentum_before_orth", "pass"
                                     if d <= claim.stateful_tolerance else "FAIL", d,
                                     claim.stateful_tolerance, msg))
    except Unsupported as exc:
        report.results.append(Result("momentum_before_orth", "unsupported", message=str(exc)))
    # 1-D parameters; a gradient of norm 10 sqrt(n) tells the raw gradient from a unit column
    v0 = rng.standard_normal(12).astype(dt).astype(np.float64)
    gv = (10 * rng.standard_normal(12)).astype(dt).astype(np.float64)
    try:
        (v1,) = run(v0, [gv], 0.0)
        what, st = _classify(claim, v0, v1, gv)
        report.results.append(Result("vector_routed", st, message=what))
    except Unsupported as exc:
        report.results.append(Result("vector_routed", "pass",
                                     message=f"{REFUSED} (route 1-D parameters elsewhere): {exc}"))
    report.results.append(_nesterov_property(run, claim, rng, dt))
    report.results.append(_stack_property(run, claim, rng, dt))
    report.results.append(_complex_property(run, claim, rng, dt))
    # its own generator: the properties above keep their draws (and the docs' numbers)
    report.results.append(same_shape_property(run, claim, seed, dt))
    report.seconds = time.perf_counter() - t0
    return report


def _unsup(name, exc):
    return Result(name, "unsupported", message=str(exc))


def _nesterov_property(run, claim, rng, dt):
    """Two Nesterov steps from zero buffers: u_1 = orth(g1), u_2 = orth(c1 g1 + c2 g2)."""
    shape = KINDS["wide"]
    p0, g1, g2 = (rng.standard_normal(shape).astype(dt).astype(np.float64) for _ in range(3))
    if claim.nesterov is None:
        return Result("nesterov", "no claim", message="no Nesterov convention claimed")
    mu = claim.momentum
    try:
        p1, p2 = run(p0, [g1, g2], mu, nesterov=True)
    except TypeError as exc:  # a driver or factory without the nesterov keyword
        if "nesterov" in str(exc):
            return _unsup("nesterov", exc)
        raise
    except Unsupported as exc:
        return _unsup("nesterov", exc)
    U1, U2 = _implied(claim, p0, p1), _implied(claim, p1, p2)
    c1, c2 = NESTEROV[claim.nesterov][0](mu)
    d1 = _rel(U1, _expected(claim, g1))
    d2 = _rel(U2, _expected(claim, c1 * g1 + c2 * g2))
    d = max(d1, d2)
    msg = ""
    if d > claim.stateful_tolerance:
        cands = {f"{k} ({c[0]:.3g} g1 + {c[1]:.3g} g2)": _expected(claim, c[0] * g1 + c[1] * g2)
                 for k, c in ((k, v[0](mu)) for k, v in NESTEROV.items())}
        cands[f"no Nesterov ({mu:g} g1 + g2)"] = _expected(claim, mu * g1 + g2)
        b1 = (1 - mu) * g1
        cands["Nesterov after orthogonalisation ((1-mu) orth(g2) + mu orth(b2))"] = \
            (1 - mu) * _expected(claim, g2) + mu * _expected(claim, mu * b1 + (1 - mu) * g2)
        best = min(cands, key=lambda k: _rel(U2, cands[k]))
        msg = (f"step 1 {d1:.3g}, step 2 {d2:.3g} vs claimed {claim.nesterov}; step 2 closest "
               f"to {best}: {_rel(U2, cands[best]):.3g}")
    tol = claim.stateful_tolerance
    return Result("nesterov", "pass" if d <= tol else "FAIL", d, tol,
                  msg)


def _stack_property(run, claim, rng, dt):
    """A 3-D parameter (B, m, n): flattened (B, m n), B independent slices, or routed."""
    p0, g = (rng.standard_normal(STACK_SHAPE).astype(dt).astype(np.float64) for _ in range(2))
    try:
        (p1,) = run(p0, [g], 0.0)
    except Unsupported as exc:
        return _unsup("stacked_3d", exc)
    if claim.stack == "routed":
        what, st = _classify(claim, p0, p1, g)
        return Result("stacked_3d", "routed" if st == "pass" else "FAIL",
                      message=what + " (claimed: routed)")
    U = _implied(claim, p0, p1)
    readings = {"flattened": _expected(claim, g, 0), "independent": _expected(claim, g, 1)}
    d = _rel(U, readings[claim.stack])
    msg = ""
    if d > claim.tolerance:
        other = "independent" if claim.stack == "flattened" else "flattened"
        do = _rel(U, readings[other])
        what, _ = _classify(claim, p0, p1, g)
        msg = (f"claimed {claim.stack}; the {other} reading is at {do:.3g}"
               + (" (matches it)" if do <= claim.tolerance else f"; observed: {what}"))
    return Result("stacked_3d", "pass" if d <= claim.tolerance else "FAIL", d, claim.tolerance,
                  msg)


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
    except (TypeError, ValueError) as exc:  # a driver that does not run groups
        return _unsup(name, Unsupported(f"the driver does not run a group: {exc}"))
    Us = [_implied(claim, a, b) for a, b in zip(p0s, p1s)]
    ds = [_rel(U, _expected(claim, g)) for U, g in zip(Us, gs)]
    d = max(ds)
    if d <= claim.tolerance:
        return Result(name, "pass", d, claim.tolerance)
    per = ", ".join(f"{x:.3g}" for x in ds)
    msg = f"per parameter (gradient norms {' : '.join(f'{x:g}' for x in GROUP_NORMS)}): {per}"
    readings = _joint_readings(claim, gs)
    best = min(readings, key=lambda k: max(_rel(U, E) for U, E in zip(Us, readings[k])))
    db = max(_rel(U, E) for U, E in zip(Us, readings[best]))
    if db <= claim.tolerance:
        msg += f"; matches {best}: {db:.3g}"
    else:
        small = [i for i, x in enumerate(GROUP_NORMS) if x < max(GROUP_NORMS)]
        big = ds[GROUP_NORMS.index(max(GROUP_NORMS))]
        if all(ds[i] > claim.tolerance and big < 0.01 * ds[i] for i in small):
            msg += ("; only the small-gradient parameters deviate: one norm shared across the "
                    "stack (a joint Frobenius normalisation)")
    try:  # each parameter stepped alone: does the grouping cause it?
        alone = [_rel(U, _implied(claim, a, run(a, [g], 0.0)[0]))
                 for U, a, g in zip(Us, p0s, gs)]
        msg += ("; the same update as each stepped alone: not a batching effect"
                if max(alone) <= claim.tolerance else
                f"; stepped alone differs by {max(alone):.3g}: the grouping changes it")
    except Unsupported:
        pass
    return Result(name, "FAIL", d, claim.tolerance, msg)


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
        return _unsup("complex_input", exc)
    U = _implied(claim, p0, p1)
    try:
        E = _expected(claim, g)
    except TypeError as exc:  # e.g. SWAN's GradNorm is real-only (spec 9.7)
        return Result("complex_input", "no claim", message=f"the claim is real-only: {exc}")
    d = _rel(U, E)
    msg = ""
    if d > claim.tolerance:
        im = float(np.linalg.norm(U.imag) / np.linalg.norm(E.imag))
        msg = (f"norm ratio {np.linalg.norm(U) / np.linalg.norm(E):.4g}; imaginary part of the "
               f"update / of the expected {im:.3g}")
        if im < 1e-3:
            msg += (f": the imaginary part is dropped (distance to the update of Re(g) "
                    f"{_rel(U, _expected(claim, g.real)):.3g})")
        else:
            msg += "; a transpose without conjugate (X X^T) gives this"
    return Result("complex_input", "pass" if d <= claim.tolerance else "FAIL", d,
                  claim.tolerance, msg)


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
        msg = ""
        if d > claim.tolerance:
            msg = (f"norm ratio {np.linalg.norm(U) / np.linalg.norm(E):.4g}, direction "
                   f"distance {_rel(U / np.linalg.norm(U), E / np.linalg.norm(E)):.3g}")
        report.results.append(Result(f"update[{n}]", "pass" if d <= claim.tolerance
                                     else "FAIL", d, claim.tolerance, msg))
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


def run_builtin(name: str) -> OptimizerReport | None:
    b = BUILTINS[name]
    if available(b):
        return None
    report = check_optimizer(b.build(), b.claim, name)
    _add_variants(report, b)
    return report


def _add_variants(report, b):
    """same_shape_independent under the builtin's other batching options."""
    dt = np.float64 if b.claim.param_dtype == "float64" else np.float32
    for label, build in b.variants.items():
        report.results.append(same_shape_property(build(), b.claim, 0, dt,
                                                  f"same_shape_independent[{label}]"))


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
        rows.append(f"| `{name}` | {package_label(b)} | `{b.claim.preset}`, `{b.claim.scale}`, "
                    f"{b.claim.precision} (tol {b.claim.tolerance:g}) | {b.neutral} | {one} | "
                    f"{st} | {nest} | {stack} | {cplx} | {group} | {vec.status}: {vec.message} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="swanref check-optimizer",
                                description="Drive a real optimizer one and two steps and "
                                            "compare with the spec's update (docs/optimizers.md)")
    p.add_argument("optimizer", nargs="?", help=f"one of: {', '.join(BUILTINS)}")
    p.add_argument("--list", action="store_true", help="list the built-in optimizers")
    p.add_argument("--table", action="store_true",
                   help="markdown results rows for every installed built-in optimizer")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.list:
        for name, b in BUILTINS.items():
            miss = available(b)
            print(f"{name:<52} {'not installed: ' + ', '.join(miss) if miss else 'installed'}")
        return 0
    if args.table:
        print(results_table())
        return 0
    if args.optimizer not in BUILTINS:
        print(f"swanref check-optimizer: error: choose one of {', '.join(BUILTINS)}",
              file=sys.stderr)
        return 2
    miss = available(BUILTINS[args.optimizer])
    if miss:
        print(f"swanref check-optimizer: {args.optimizer} needs {', '.join(miss)} (not "
              "installed)", file=sys.stderr)
        return 2
    report = run_builtin(args.optimizer)
    print(json.dumps(report.to_dict(), indent=1, default=float) if args.json else report.table())
    return 0 if report.conforming else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
