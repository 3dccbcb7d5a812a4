"""Update conventions: how an orthogonalised direction becomes a parameter update (spec 9).

Every Muon/SWAN-style optimizer wraps the same core (the polar factor of the gradient, or a
polynomial approximation of it) in choices that the sources make differently: the scale rule,
how N-D and stacked parameters are reshaped, NorMuon-style row normalisation, the dtype of the
update and what a zero gradient gives.  Each choice is a named reading here, with its default
and the public source it comes from; ``swanref.orthogonalized_update`` evaluates them and
``swanref check update`` verifies an implementation against them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleRule:
    """``update = factor(m, n) * O`` (or a data-dependent factor) for the (m, n) matrix view."""
    name: str
    formula: str
    source: str
    data_dependent: bool = False
    aliases: tuple = ()


#: m = rows (fan-out, first axis after the stack axes), n = product of the remaining axes.
SCALE_RULES = {r.name: r for r in [
    ScaleRule("keller", "sqrt(max(1, m/n))",
              "KellerJordan/Muon muon.py muon_update (`max(1, grad.size(-2)/grad.size(-1))**0.5`);"
              " pytorch/pytorch torch/optim/_muon.py _adjust_lr adjust_lr_fn='original' (default);"
              " NVIDIA-NeMo/Emerging-Optimizers orthogonalized_optimizers/muon.py "
              "get_muon_scale_factor mode='shape_scaling'; optax.contrib scale_by_shape "
              "(consistent_rms=None) with fan_in = axis 0, i.e. this rule on the transpose of "
              "a (m, n) array (flax stores (in, out))",
              aliases=("original", "shape_scaling", "width")),
    ScaleRule("keller_t", "sqrt(max(1, n/m))",
              "google-deepmind/optax optax/contrib/_muon.py scale_by_shape (default, "
              "consistent_rms=None): fan_in = axis 0, fan_out = axis 1 (flax stores (in, out)), "
              "so for an (m, n) array this is Keller's rule on the transpose"),
    ScaleRule("moonlight", "0.2 * sqrt(max(m, n))",
              "MoonshotAI/Moonlight examples/toy_train.py adjust_lr_for_muon (Liu et al. 2025, "
              "arXiv 2502.16982); torch/optim/_muon.py adjust_lr_fn='match_rms_adamw'",
              aliases=("match_rms_adamw",)),
    ScaleRule("unit_rms", "sqrt(max(m, n))",
              "Emerging-Optimizers get_muon_scale_factor mode='spectral' (its name; RMS 1 for a "
              "full-rank orthogonal update); optax.contrib scale_by_shape(consistent_rms=1)"),
    ScaleRule("spectral", "sqrt(m/n)",
              "Bernstein & Newhouse, modular norm / Scion (arXiv 2502.07529): RMS->RMS operator "
              "norm 1; torch/optim/_muon.py adjust_lr_fn='spectral_unclamped'; "
              "Emerging-Optimizers mode='unit_rms_norm' (its name)",
              aliases=("spectral_unclamped",)),
    ScaleRule("swan", "sqrt(m n) / ||O||_F",
              "SWAN (Ma et al. 2024, arXiv 2412.13148) Alg. 1 rescaling, as swanref.swan_update "
              "(spec 4.1): every update has RMS exactly 1", data_dependent=True),
    ScaleRule("graft", "||G||_F / ||O||_F",
              "heavyball heavyball/utils.py _compilable_grafting (scale_mode='graft'): the "
              "update takes the gradient's Frobenius norm", data_dependent=True),
    ScaleRule("none", "1", "no rescaling (optax.contrib.muon without scale_by_shape; "
                           "torch.optim.Muon adjust_lr_fn other than the named ones)"),
]}

DEFAULT_SCALE = "keller"


def resolve_scale(name: str) -> ScaleRule:
    if not isinstance(name, str):
        raise TypeError(f"scale must be a rule name, got {type(name).__name__}")
    for rule in SCALE_RULES.values():
        if name == rule.name or name in rule.aliases:
            return rule
    raise ValueError(f"unknown scale rule {name!r}; choose one of {', '.join(SCALE_RULES)}")


def shape_factor(rule: ScaleRule, m: int, n: int) -> float:
    """The shape-only factor of a rule (1.0 for the data-dependent ones)."""
    if rule.name == "keller":
        return math.sqrt(max(1.0, m / n))
    if rule.name == "keller_t":
        return math.sqrt(max(1.0, n / m))
    if rule.name == "moonlight":
        return 0.2 * math.sqrt(max(m, n))
    if rule.name == "unit_rms":
        return math.sqrt(max(m, n))
    if rule.name == "spectral":
        return math.sqrt(m / n)
    return 1.0


def scale_explanations(scale: str, scale_factor: float, m: int, n: int, ratio: float,
                       extra_shapes=(), tol: float = 1e-3) -> list:
    """Named scale rules (and products of two) that explain a norm ratio ``||update|| /
    ||claimed update||`` of an (m, n) matrix view claimed under rule ``scale`` times
    ``scale_factor``, closest first.  A rule explains it when the ratio is within ``tol`` (the
    probe's own tolerance, at least 1e-3) of that rule's factor; ``extra_shapes`` are
    ``((m', n'), label)`` views a rule may have been read from instead (an N-D parameter's
    trailing or leading axes).  Used by the update and optimizer checks (spec 9.8, 9.9)."""
    rule = SCALE_RULES[resolve_scale(scale).name]
    base = shape_factor(rule, m, n) * scale_factor
    if rule.data_dependent or base == 0:
        return []
    cands = {}
    rules = [r for r in SCALE_RULES.values() if not r.data_dependent]
    for (mm, nn), where in [((m, n), "")] + list(extra_shapes):
        for r in rules:
            cands[f"{r.name}{where}"] = shape_factor(r, mm, nn)
            for r2 in rules:
                if r2.name > r.name and r2.name != "none" and r.name != "none":
                    cands[f"{r.name} x {r2.name}{where}"] = (shape_factor(r, mm, nn)
                                                             * shape_factor(r2, mm, nn))
    within = max(tol, 1e-3)
    close = sorted((abs(ratio * base / v - 1.0), k) for k, v in cands.items()
                   if v > 0 and k != rule.name)
    return [k for d, k in close if d <= within]


def matrix_view(shape, stack_dims: int = 0) -> tuple:
    """``(batch, m, n)`` of the matrix view of a parameter of ``shape`` (spec 9.2).

    The first ``stack_dims`` axes index independent parameters; of the rest, the first axis is
    the output (rows, m) and all later axes are flattened into the input (columns, n): a conv
    weight (out, in, kh, kw) is the matrix (out, in*kh*kw).
    """
    shape = tuple(int(s) for s in shape)
    core = shape[stack_dims:]
    if len(core) < 2:
        raise ValueError(
            f"a parameter of shape {shape} with stack_dims={stack_dims} has {len(core)} "
            "matrix axes; orthogonalised updates need at least 2 (route 1-D parameters such "
            "as biases and norm gains to another optimizer)")
    return shape[:stack_dims], core[0], int(math.prod(core[1:]))


@dataclass(frozen=True)
class Convention:
    name: str
    default: str
    reading: str
    source: str


#: The conventions of spec section 9, in code form (name, default, reading, source).
CONVENTIONS = {c.name: c for c in [
    Convention("scale", DEFAULT_SCALE, "one of SCALE_RULES, times scale_factor (default 1)",
               "see SCALE_RULES"),
    Convention("nd", "flatten", "an N-D parameter (out, *in) is orthogonalised as the matrix "
               "(out, prod(in)) and reshaped back; the scale rule reads m, n from that matrix, "
               "never from the trailing axes of the N-D array",
               "KellerJordan/Muon muon.py muon_update (`update.view(len(update), -1)` for 4-D "
               "conv weights; its scale reads grad.size(-2)/grad.size(-1), the kernel axes, a "
               "known defect for conv weights); optax.contrib MuonDimensionNumbers "
               "(reduction axes flattened)"),
    Convention("stack", "0", "stack_dims leading axes index independent parameters: each "
               "slice is orthogonalised and scaled on its own, never the stack as one matrix",
               "optax.contrib MuonDimensionNumbers (batch axes are vmapped); "
               "Dao-AILab/gram-newton-schulz GramNewtonSchulz (batch of matrices)"),
    Convention("row_norm", "off", "NorMuon: each row of the orthogonalised O scaled to RMS 1 "
               "(zero rows stay zero), then the whole matrix re-matched to ||O||_F; a zero "
               "update stays zero (no 0/0)",
               "zichongli5/NorMuon normuon.py normuon_update (Li et al. 2025, arXiv "
               "2510.05491): first step from a zero second-moment buffer, eps 1e-10"),
    Convention("dtype", "parameter's", "the update has the gradient's dtype and shape, is a "
               "new array, and the gradient is never modified; float16/bfloat16 are computed "
               "in float32; complex64/complex128 in their own dtype", "[S] spec 6.4"),
    Convention("zero", "zero", "a zero gradient (or a zero slice of a stack) gives a zero "
               "update, never NaN, under every scale rule and preset", "[S]"),
    Convention("direction", "scale invariant", "the update for c*G equals the update for G "
               "for every c > 0 from 1e-12 to 1e12 (scale rules other than 'graft'); for 'graft' "
               "the direction is invariant and the norm scales with c.  Presets are evaluated "
               "on G scaled by an exact power of two (max|G| in [0.5, 1)), so a source's "
               "epsilon floor (1e-7 in Keller's normalisation) never decides the direction",
               "[S]; the defect: X / (||X||_F + 1e-7) is not orthogonal once ||G||_F < 1e-7"),
    Convention("complex", "conjugate", "complex gradients use conjugate transposes: A = X X^H, "
               "polar factor U V^H", "google-deepmind/optax optax/contrib/_muon.py "
               "_base_newton_schulz_iteration (`x @ x.T.conj()`)"),
]}
