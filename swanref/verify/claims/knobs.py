"""The knobs of a claim: name, default, allowed values, one-line meaning and public source.

Each knob is something a real Muon/SWAN-style implementation fixes one way or another; the
``source`` names the public code that makes the choice (docs/verification.md "Writing a claim"
lists them, tests/test_claims.py checks that every knob has both).  ``None`` as a default means
"what the named preset (or the spec) does".
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from swanref.presets.catalogue import PRESETS, ROUTES
from swanref.spec.conventions import resolve_scale
from swanref.spec.readings import SCALINGS, WHITEN_METHODS
from swanref.verify.targets import UsageError

DTYPES = ("float64", "float32", "bfloat16", "float16")
LEVELS = ("operator", "update", "optimizer", "sharded")


class ClaimError(UsageError, ValueError):
    """An unknown knob, an invalid value or an unreadable claim file (CLI exit status 2)."""


@dataclass(frozen=True)
class Knob:
    name: str
    default: object
    doc: str
    source: str
    check: object          # value -> normalised value; raises ClaimError


def _choice(*options, none=False):
    def check(v, name):
        if v is None and none:
            return None
        if isinstance(v, str) and v in options:
            return v
        raise ClaimError(f"{name} must be one of {', '.join(map(repr, options))}"
                         f"{' or None' if none else ''}, got {v!r}")
    check.options = options
    return check


def _number(lo=-math.inf, hi=math.inf, none=False, integer=False, open_lo=False,
            open_hi=False):
    def check(v, name):
        if v is None and none:
            return None
        ok_type = (isinstance(v, numbers.Integral) if integer else isinstance(v, numbers.Real))
        if isinstance(v, bool) or not ok_type:
            kind = "an integer" if integer else "a real number"
            raise ClaimError(f"{name} must be {kind}{' or None' if none else ''}, "
                             f"got {type(v).__name__} {v!r}")
        v = int(v) if integer else float(v)
        if not math.isfinite(v) or v < lo or v > hi or (open_lo and v == lo) or (
                open_hi and v == hi):
            raise ClaimError(f"{name} must be in {'(' if open_lo else '['}{lo:g}, {hi:g}"
                             f"{')' if open_hi else ']'}, got {v!r}")
        return v
    return check


def _bool(v, name):
    if isinstance(v, bool):
        return v
    raise ClaimError(f"{name} must be true or false, got {v!r}")


def _preset(v, name):
    if v is None:
        return None
    if isinstance(v, str) and (v in PRESETS or v in ROUTES):
        return v
    raise ClaimError(f"unknown {name} {v!r}; choose one of "
                     f"{', '.join(list(PRESETS) + list(ROUTES))}")


def _scale(v, name):
    try:
        return resolve_scale(v).name
    except (TypeError, ValueError) as exc:
        raise ClaimError(f"{name}: {exc}") from exc


def _coefficients(v, name):
    if v is None:
        return None
    try:
        table = tuple(tuple(float(x) for x in t) for t in v)
    except (TypeError, ValueError) as exc:
        raise ClaimError(f"{name} must be a list of (a, b, c) number triples") from exc
    if not table or any(len(t) != 3 or not all(map(math.isfinite, t)) for t in table):
        raise ClaimError(f"{name} must be a non-empty list of finite (a, b, c) triples")
    return table


def _mesh(v, name):
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and 1 <= len(v) <= 3 and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 1 for x in v):
        return tuple(int(x) for x in v)
    raise ClaimError(f"{name} must be a list of 1 to 3 positive integers (ranks per mesh axis), "
                     f"got {v!r}")


#: a relative distance of 1 is that of a zero output: a tolerance of 1 or more asserts nothing
_TOLERANCE = _number(0.0, 1.0, open_lo=True, open_hi=True)


def _overrides(v, name):
    """{dtype: {"tol": float, "reason": str}}, as OpInfo's toleranceOverride with its reason."""
    if v is None:
        return None
    if isinstance(v, tuple):  # the normalised form (replace() validates again)
        try:
            v = {dt: {"tol": tol, "reason": why} for dt, (tol, why) in v}
        except (TypeError, ValueError) as exc:
            raise ClaimError(f"{name} must be a table {{dtype: {{tol, reason}}}}") from exc
    if not isinstance(v, dict):
        raise ClaimError(f"{name} must be a table {{dtype: {{tol, reason}}}}, got {v!r}")
    out = {}
    for dt, entry in v.items():
        if dt not in DTYPES:
            raise ClaimError(f"{name}: unknown dtype {dt!r}; choose one of {', '.join(DTYPES)}")
        if not isinstance(entry, dict) or set(entry) != {"tol", "reason"}:
            raise ClaimError(f"{name}[{dt}] must have exactly the keys 'tol' and 'reason'")
        reason = entry["reason"]
        if not isinstance(reason, str) or not reason.strip():
            raise ClaimError(f"{name}[{dt}]: a tolerance override needs a reason (non-empty)")
        out[dt] = (_TOLERANCE(entry["tol"], f"{name}[{dt}].tol"),
                   reason.strip())
    return tuple(sorted(out.items()))


_PRESET_NAMES = "swanref.presets.catalogue PRESETS/ROUTES (docs/presets.md)"

#: every knob, in the order of the record and of docs/verification.md
KNOBS = {k.name: k for k in [
    # -- what is claimed, at which level
    Knob("level", "update", "the check level the claim is used at: operator, update, "
         "optimizer or sharded", "[S] docs/spec.md 11", _choice(*LEVELS)),
    Knob("op", "whiten", "the operator: whiten (polar factor) or grad_norm (row standardisation)",
         "[S] docs/spec.md 2, 3", _choice("whiten", "grad_norm")),
    Knob("preset", None, "named starting point: a catalogue preset (its table, steps, epsilon, "
         "norm and safety factor), or None for an exact method", _PRESET_NAMES, _preset),
    Knob("method", "svd", "without a preset: the orthogonaliser (svd, eigh, newton_schulz, "
         "nsds); 'preset' when a preset is named", "swanref.spec.readings WHITEN_METHODS; "
         "jax.scipy.linalg.polar (svd), scipy.linalg.polar", _choice(*WHITEN_METHODS, "preset")),
    Knob("steps", None, "iteration count (None: the preset's or method's default)",
         "torch.optim.Muon ns_steps=5; optax ns_steps=5; NeMo newton_schulz(steps)",
         _number(1, 10_000, none=True, integer=True)),
    Knob("coefficients", None, "the (a, b, c) table, one triple per step, last repeats (None: "
         "the preset's)", "torch.optim.Muon ns_coefficients; optax ns_coeffs (n, 3); NeMo "
         "custom_coefficient_sets", _coefficients),
    Knob("beta", None, "newton_schulz method: the step's beta (None: 0.5)",
         "[S] docs/spec.md 3.3", _number(0.0, 1.0, none=True, open_lo=True)),
    Knob("scaling", None, "newton_schulz method: the input scaling (None: gram_fro)",
         "[S] docs/spec.md 3.3", _choice(*SCALINGS, none=True)),
    # -- the normalisation before the iteration
    Knob("eps", None, "the epsilon of the normalisation, acting on the raw input (None: the "
         "spec reading, the preset's epsilon after an exact power-of-two prescale, never "
         "deciding the direction)", "KellerJordan/Muon 1e-7; torch.optim.Muon eps=1e-7; optax "
         "eps=1e-8; NeMo F.normalize eps=1e-15 (NeMo#230); dion Muon epsilon=1e-8",
         _number(0.0, 1.0, none=True)),
    Knob("eps_form", None, "how the epsilon enters: add X/(||X|| s + eps), clamp "
         "X/max(||X|| s, eps), none (no guard), safe (zero stays zero)",
         "add: KellerJordan/Muon, Polar Express, optax, dion; clamp: torch.optim.Muon "
         "(norm().clamp(min=eps)), NeMo F.normalize", _choice("add", "clamp", "none", "safe",
                                                             none=True)),
    Knob("norm", "frobenius", "the norm (preconditioning) of the input normalisation",
         "optax orthogonalize_via_newton_schulz preconditioning in {frobenius, spectral, aol, "
         "schatten}; schatten = the Schatten-4 first step (||X X^T||_F^(1/2))",
         _choice("frobenius", "spectral", "aol", "schatten")),
    Knob("norm_scale", None, "safety factor multiplying the norm (None: the preset's)",
         "Polar Express basic.py 1.01; modded-nanogpt polar_express 1.02; "
         "Dao-AILab/gram-newton-schulz 1.05", _number(0.5, 2.0, none=True)),
    # -- precision
    Knob("compute_dtype", "float64", "the dtype the orthogonaliser computes in (bfloat16/"
         "float16 emulated as PyTorch eager on a GPU)", "KellerJordan/Muon and torch.optim.Muon "
         "G.bfloat16(); NeMo float32 (bf16 iff matmul precision 'medium'); "
         "Dao-AILab/gram-newton-schulz float16; optax input dtype", _choice(*DTYPES)),
    Knob("io_dtype", None, "dtype of the gradient and update (None: float64 for a float64 "
         "claim, float32 otherwise)", "torch.optim.Muon returns the parameter's dtype (its "
         "_zeropower_via_newtonschulz returns bf16); pytorch-optimizer "
         "zero_power_via_newton_schulz_5 dtype argument (bf16); heavyball x.to(G.dtype)",
         _choice(*DTYPES, none=True)),
    Knob("lowprec_order", "cast_then_normalise", "low precision: cast to compute_dtype then "
         "normalise, or normalise in float32 then cast",
         "cast_then_normalise: KellerJordan/Muon, torch.optim.Muon; normalise_then_cast: "
         "Dao-AILab/gram-newton-schulz (normalises in float32, iterates in float16)",
         _choice("cast_then_normalise", "normalise_then_cast")),
    # -- shapes
    Knob("nd", "flatten", "N-D parameters: flatten (shape[0], -1) [spec 9.2]; 2d_only (refuses "
         "N-D); flatten_4d_batch_3d; batch_leading (all leading axes are a batch); routed "
         "(N-D parameters go to another optimizer)",
         "flatten: KellerJordan/Muon muon_update view(len, -1), dion flatten=True, "
         "pytorch#180561; 2d_only: torch.optim.Muon; flatten_4d_batch_3d: KellerJordan/Muon "
         "(4-D flattened, 3-D batched by zeropower); batch_leading: optax MuonDimensionNumbers, "
         "NeMo 3-D, dion flatten=False; routed: Moonlight / torch examples (Adam for N-D)",
         _choice("flatten", "2d_only", "flatten_4d_batch_3d", "batch_leading", "routed")),
    Knob("stack_dims", 0, "leading axes that index independent parameters",
         "optax MuonDimensionNumbers batch axes; Dao-AILab/gram-newton-schulz batches",
         _number(0, 4, integer=True)),
    Knob("complex", False, "complex gradients supported (conjugate transposes)",
         "optax _base_newton_schulz_iteration x @ x.T.conj()", _bool),
    # -- the update around the orthogonaliser
    Knob("norm_axis", "none", "NorMuon-style normalisation of the orthogonalised update: none, "
         "rows, columns, or columns of wide matrices", "zichongli5/NorMuon normuon.py (rows); "
         "dion normuon.py (over the larger dimension)",
         _choice("none", "rows", "columns", "columns_if_wide")),
    Knob("scale", "keller", "the scale rule (spec 9.1)", "swanref.spec.conventions SCALE_RULES "
         "(each rule names its sources)", _scale),
    Knob("scale_factor", 1.0, "a constant multiplying the scale rule",
         "Moonlight 0.2; torch.optim.Muon adjust_lr_fn", _number(0.0, 1e6, open_lo=True)),
    Knob("gate", "none", "a cautious gate on the update (stateless: update and gradient "
         "agree in sign): none, per_column (of the matrix view), per_element; kept part divided "
         "by the kept fraction", "heavyball utils._compilable_cautioning (signbit mask, "
         "numel / kept); pytorch-optimizer apply_cautious (update * grad > 0)",
         _choice("none", "per_column", "per_element")),
    Knob("gate_rescale", "kept", "how a gate rescales the kept entries: kept (numel / kept, "
         "the kept fraction at least 1e-3), kept_plus_one (numel / (kept + 1)), none",
         "kept: heavyball _compilable_cautioning (numel / max(kept, 1)), timm cautious "
         "(mask.mean().clamp_(min=1e-3)); kept_plus_one: pytorch-optimizer apply_cautious "
         "(mask.numel() / (mask.sum() + 1))", _choice("kept", "kept_plus_one", "none")),
    Knob("second_moment", "none", "an Adam-style second moment on the orthogonalised update "
         "(optimizer state: n/a at the update level)",
         "pytorch-optimizer AdaMuon (v on O, eps on sqrt(v))", _choice("none", "adamuon")),
    Knob("second_moment_beta", None, "the EMA coefficient beta2 of the statistic a "
         "second moment (second_moment) or a NorMuon normalisation (norm_axis) divides by: "
         "step t divides by beta2 s(O_{t-1}) + s(O_t) (up to factors the re-match cancels); "
         "None: each step's own statistic only (a claim about the first step)",
         "pytorch-optimizer AdaMuon betas[1]=0.95 (v.mul_(beta2).addcmul_(O, O, 1 - beta2)), "
         "NorMuon beta2=0.95 (second_momentum_buffer.lerp_(mean(O^2, -1), 1 - beta2)); "
         "zichongli5/NorMuon beta2", _number(0.0, 1.0, none=True, open_hi=True)),
    Knob("second_moment_eps", None, "the epsilon added to the square root of the statistic "
         "the normalisation after orthogonalising divides by (norm_axis's row/column RMS, "
         "second_moment's sqrt(v)): O / (sqrt(S_t) + eps), S_t as the source keeps it -- "
         "(1 - beta2) s on a first step under second_moment_beta, unless debiased (None: no "
         "epsilon, a zero row stays zero)", "pytorch-optimizer NorMuon / AdaMuon eps=1e-10 "
         "(second_momentum_buffer.sqrt().add_(eps)); zichongli5/NorMuon 1e-10; dion NorMuon "
         "1e-8 (V.sqrt() + 1e-8); timm AdaMuon its eps (exp_avg_sq.sqrt().add_(eps))",
         _number(0.0, 1.0, none=True)),
    Knob("second_moment_debias", False, "the statistic is divided by its bias correction "
         "1 - beta2^t before the square root (moves only where second_moment_eps sits)",
         "pytorch-optimizer AdaMuon ((v / (1 - beta2^t)).sqrt()); timm AdaMuon without "
         "match_rms_adamw; NorMuon (zichongli5, dion, pytorch-optimizer): none", _bool),
    Knob("pre", "none", "a transform before orthogonalising: none or SWAN's grad_norm",
         "SWAN (Ma et al. 2024) Alg. 1", _choice("none", "grad_norm")),
    # -- optimizer
    Knob("momentum", 0.9, "the momentum coefficient mu", "torch.optim.Muon momentum=0.95; "
         "dion 0.95; optax beta=0.95", _number(0.0, 1.0)),
    Knob("nesterov", "on", "Nesterov momentum: off, on (switchable) or always (cannot be "
         "switched off)", "torch.optim.Muon nesterov=True; dion nesterov=False; "
         "KellerJordan/Muon muon_update nesterov=True", _choice("off", "on", "always")),
    Knob("nesterov_variant", "sutskever", "the Nesterov form: sutskever (u = g + mu b), optax "
         "(bias-corrected), grokfast (g + EMA, not debiased)", "swanref.verify.optimizer "
         "NESTEROV (each form names its sources)", _choice("sutskever", "optax", "grokfast")),
    Knob("lr", 0.1, "learning rate the optimizer is built with", "[S] verify/optimizer.py LR",
         _number(0.0, 1e3, open_lo=True)),
    Knob("weight_decay", 0.1, "decoupled weight decay", "torch.optim.Muon weight_decay=0.1",
         _number(0.0, 1.0)),
    # -- shards
    Knob("shard_split", "tensor_split", "how N rows split over ranks: tensor_split (3,3,2,2 for "
         "10 on 4) or chunk (3,3,3,1)", "numpy.array_split / torch.tensor_split; "
         "torch.chunk as DTensor Shard(0) and FSDP2 do", _choice("tensor_split", "chunk")),
    Knob("mesh", None, "device mesh shape (None: one axis of world_size ranks)",
         "torch.distributed.device_mesh init_device_mesh((dp, tp))", _mesh),
    Knob("world_size", None, "ranks of a sharded run (None: the check's --world-size)",
         "torch.distributed.get_world_size()", _number(1, 1 << 20, none=True, integer=True)),
    Knob("reduce_dtype", None, "precision the all-reduces run in (None: compute_dtype)",
         "torch.distributed.all_reduce on the tensor's own dtype (a bfloat16 Gram matrix) or a "
         "float32 buffer", _choice("float64", "float32", "bfloat16", "float16", none=True)),
    # -- judging
    Knob("tolerance", None, "a flat tolerance replacing the level's model (None: the model)",
         "[S] docs/spec.md 11.4", _number(0.0, 1.0, none=True, open_lo=True, open_hi=True)),
    Knob("tolerance_overrides", None, "per compute dtype {tol, reason}: replaces the model for "
         "that dtype, with the reason stated", "PyTorch OpInfo toleranceOverride / DecorateInfo",
         _overrides),
]}


def knob_table() -> str:
    """The markdown table of docs/verification.md "Writing a claim" (tests compare the two)."""
    rows = ["| knob | default | meaning | public source |", "| --- | --- | --- | --- |"]
    for k in KNOBS.values():
        default = "None" if k.default is None else f"`{k.default!r}`"
        rows.append(f"| `{k.name}` | {default} | {k.doc} | {k.source} |")
    return "\n".join(rows)
