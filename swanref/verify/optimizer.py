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
  raw momentum, or an orthogonalised column.
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

from swanref.spec.conventions import resolve_scale
from swanref.update import orthogonalized_update
from swanref.ops import grad_norm

__all__ = ["OptimizerClaim", "BUILTINS", "check_optimizer", "torch_driver", "optax_driver",
           "main"]

LR, WD, MU = 0.1, 0.1, 0.9
#: relative Frobenius distance accepted, per claimed compute precision (as spec 9.8)
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}
KINDS = {"wide": (8, 16), "tall": (16, 8), "square": (8, 8), "conv": (8, 4, 3, 3)}


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

    def __post_init__(self):
        self.scale = resolve_scale(self.scale).name
        if self.tolerance is None:
            self.tolerance = TOLERANCE[self.precision]

    @property
    def emulate(self):
        return self.precision if self.precision in ("bfloat16", "float16") else None


class Unsupported(Exception):
    """The optimizer refused this parameter (at construction or step)."""


# -- drivers ------------------------------------------------------------------------------------

def torch_driver(factory, dtype="float32"):
    """``factory(params, momentum) -> torch.optim.Optimizer``; returns run(p0, grads)."""
    import torch

    def run(p0, grads, momentum):
        p = torch.nn.Parameter(torch.from_numpy(np.array(p0, dtype=dtype)))
        try:
            opt = factory([p], momentum)
            out = []
            for g in grads:
                p.grad = torch.from_numpy(np.array(g, dtype=dtype))
                opt.step()
                out.append(p.detach().numpy().astype(np.float64))
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding, reported as such
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        return out
    return run


def optax_driver(factory, dtype="float32"):
    """``factory(momentum) -> optax.GradientTransformation``; returns run(p0, grads)."""
    import jax.numpy as jnp
    import optax

    def run(p0, grads, momentum):
        try:
            tx = factory(momentum)
            params = {"w": jnp.asarray(np.array(p0, dtype=dtype))}
            state = tx.init(params)
            out = []
            for g in grads:
                upd, state = tx.update({"w": jnp.asarray(np.array(g, dtype=dtype))}, state,
                                       params)
                params = optax.apply_updates(params, upd)
                out.append(np.asarray(params["w"]).astype(np.float64))
        except Exception as exc:  # noqa: BLE001
            raise Unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
                from exc
        return out
    return run


# -- built-in optimizers ----------------------------------------------------------------------

def _torch_muon(scale_fn=None):
    def build():
        import torch

        def make(ps, mu):
            kw = {} if scale_fn is None else {"adjust_lr_fn": scale_fn}
            return torch.optim.Muon(ps, lr=LR, weight_decay=WD, momentum=mu, nesterov=False,
                                    **kw)
        return torch_driver(make)
    return build


def _optax_muon():
    import jax
    import optax

    def make(mu):
        # beta=0 would give bias correction 1 - 0^t = 1: fine; the first step is g either way
        return optax.contrib.muon(learning_rate=LR, weight_decay=WD, beta=mu, nesterov=False)
    del jax
    return optax_driver(make)


def _ptopt_muon():
    from pytorch_optimizer import Muon

    def make(ps, mu):
        return Muon([dict(params=ps, use_muon=True)], lr=LR, weight_decay=WD, momentum=mu,
                    nesterov=False)
    return torch_driver(make)


def _ptopt_adamuon():
    from pytorch_optimizer import AdaMuon

    def make(ps, mu):
        return AdaMuon([dict(params=ps, use_muon=True)], lr=LR, weight_decay=WD,
                       betas=(mu, 0.95))
    return torch_driver(make)


def _heavyball_muon():
    import heavyball
    from heavyball import utils
    utils.compile_mode = None  # eager: compiling takes minutes per shape on a CPU

    def make(ps, mu):
        return heavyball.Muon(ps, lr=LR, weight_decay=WD, betas=(mu, 0.99), nesterov=False)
    return torch_driver(make, dtype="float64")  # float64: no stochastic bf16 rounding


def _emerging_muon():
    from emerging_optimizers.orthogonalized_optimizers import Muon

    def make(ps, mu):
        return Muon(ps, lr=LR, momentum=mu, weight_decay=WD, nesterov=False)
    return torch_driver(make)


@dataclass
class Builtin:
    name: str
    build: object
    claim: OptimizerClaim
    neutral: str                     # how momentum is neutralised for one_step
    notes: str = ""
    needs: tuple = ()


BUILTINS = {b.name: b for b in [
    Builtin("torch.optim.Muon", _torch_muon(), OptimizerClaim("torch_muon", "keller",
                                                             precision="bfloat16"),
            "momentum=0", "2-D only (conv and 1-D rejected at construction); NS in bf16",
            ("torch",)),
    Builtin("torch.optim.Muon(adjust_lr_fn='match_rms_adamw')", _torch_muon("match_rms_adamw"),
            OptimizerClaim("torch_muon", "moonlight", precision="bfloat16"), "momentum=0",
            "Moonlight's 0.2 sqrt(max(m, n))", ("torch",)),
    Builtin("optax.contrib.muon", _optax_muon, OptimizerClaim("optax_muon", "keller_t", nd="routed"),
            "first step, nesterov=False (bias-corrected EMA = g)",
            "width rule with fan_in = axis 0; ndim != 2 goes to Adam", ("jax", "optax")),
    Builtin("pytorch_optimizer.Muon", _ptopt_muon, OptimizerClaim("torch_muon", "keller",
                                                                  precision="bfloat16"),
            "momentum=0", "groups need use_muon; conv reshaped (out, -1)",
            ("torch", "pytorch_optimizer")),
    Builtin("pytorch_optimizer.AdaMuon", _ptopt_adamuon,
            OptimizerClaim("torch_muon", "moonlight", precision="bfloat16"),
            "first step (beta1 only scales)",
            "step 1 is an elementwise second-moment normalisation of O (about sign(O)): "
            "not an orthogonalised update, so the one-step comparison is expected to fail",
            ("torch", "pytorch_optimizer")),
    Builtin("heavyball.Muon", _heavyball_muon, OptimizerClaim("heavyball_ns5", "keller",
                                                              precision="float32",
                                                              param_dtype="float64"),
            "nesterov=False (debiased EMA = g at step 1)",
            "float64 parameters take heavyball's exact float64 iteration (no stochastic "
            "rounding); the update is then stored in float32 (storage_dtype)",
            ("torch", "heavyball")),
    Builtin("emerging_optimizers.Muon", _emerging_muon,
            OptimizerClaim("you_ns5", "unit_rms", precision="bfloat16"), "momentum=0",
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


@dataclass
class OptimizerReport:
    optimizer: str
    claim: dict
    results: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def conforming(self):
        return not any(r.status == "FAIL" for r in self.results)

    def status(self, name):
        return next(r.status for r in self.results if r.name == name)

    def to_dict(self):
        return {"optimizer": self.optimizer, "claim": self.claim, "conforming": self.conforming,
                "results": [r.__dict__ for r in self.results]}

    def table(self):
        lines = [f"swanref check-optimizer {self.optimizer}",
                 "  claim: " + ", ".join(f"{k}={v}" for k, v in self.claim.items()), ""]
        for r in self.results:
            err = "" if r.error is None else f"{r.error:.3g} (tol {r.tolerance:.3g})"
            lines.append(f"{r.name:<22} {r.status:<12} {err:<24} {r.message}")
        lines.append("")
        lines.append("verdict: " + ("CONFORMING" if self.conforming else "NOT CONFORMING"))
        return "\n".join(lines)


def _rel(a, b):
    nb = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / nb if nb > 0 else float(np.linalg.norm(a))


def _expected(claim, g):
    g = np.asarray(g, np.float64) if claim.precision == "float64" else np.asarray(g, np.float32)
    if claim.pre == "grad_norm":  # SWAN (spec 4.1): GradNorm over rows of the matrix view
        g = grad_norm(g.reshape(g.shape[0], -1)).reshape(g.shape)
    return orthogonalized_update(g, claim.preset,
                                 scale=claim.scale, scale_factor=claim.scale_factor,
                                 emulate=claim.emulate).astype(np.float64)


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
    ``run(p0, grads, momentum)`` returns the parameter after each gradient's step; an exception
    means the optimizer refuses that parameter."""
    raw_run = run

    def run(p0, grads, momentum):
        try:
            return raw_run(p0, grads, momentum)
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
               if d > claim.tolerance else "")
        report.results.append(Result("momentum_before_orth", "pass" if d <= claim.tolerance
                                     else "FAIL", d, claim.tolerance, msg))
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
                                     message=f"rejected (route 1-D parameters elsewhere): {exc}"))
    report.seconds = time.perf_counter() - t0
    return report


def available(b: Builtin):
    missing = [m for m in b.needs if importlib.util.find_spec(m) is None]
    return missing


def run_builtin(name: str) -> OptimizerReport | None:
    b = BUILTINS[name]
    if available(b):
        return None
    return check_optimizer(b.build(), b.claim, name)


def results_table(names=None) -> str:
    """Markdown rows: optimizer, claim, one-step per kind, stateful, 1-D (docs/optimizers.md)."""
    rows = []
    for name in names or BUILTINS:
        b = BUILTINS[name]
        miss = available(b)
        if miss:
            continue
        pkg = b.needs[-1]
        try:
            ver = md.version({"pytorch_optimizer": "pytorch_optimizer",
                              "emerging_optimizers": "emerging-optimizers"}.get(pkg, pkg))
        except md.PackageNotFoundError:
            ver = "?"
        r = check_optimizer(b.build(), b.claim, name)

        def cell(res):
            if res.status == "unsupported":
                return "rejected"
            if res.error is None:
                return res.status
            return f"{res.status} {res.error:.1e}"
        one = " / ".join(cell(x) for x in r.results if x.name.startswith("one_step"))
        st = cell(next(x for x in r.results if x.name == "momentum_before_orth"))
        vec = next(x for x in r.results if x.name == "vector_routed")
        rows.append(f"| `{name}` | {pkg} {ver} | `{b.claim.preset}`, `{b.claim.scale}`, "
                    f"{b.claim.precision} (tol {b.claim.tolerance:g}) | {b.neutral} | {one} | "
                    f"{st} | {vec.status}: {vec.message} |")
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
