"""The claim record: every knob of :mod:`.knobs`, validated, immutable (docs/spec.md 11.1)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from swanref.presets.catalogue import get_preset
from swanref.verify.claims.knobs import KNOBS, ClaimError

FORMAT = "swanref-claim"
VERSION = 1


def _field(name):
    return dataclasses.field(default=KNOBS[name].default)


@dataclass(frozen=True)
class Claim:
    """What an implementation computes, knob by knob (``KNOBS[name].doc`` / ``.source``).

    Build it with ``Claim(**knobs)``, ``Claim.from_preset(name, **overrides)``,
    ``Claim.from_dict(d)`` or :func:`swanref.verify.claims.load_claim`; derive others with
    :meth:`replace`.  Unknown knobs and invalid values raise :class:`ClaimError`.
    """
    level: str = _field("level")
    op: str = _field("op")
    preset: str | None = _field("preset")
    method: str = _field("method")
    steps: int | None = _field("steps")
    coefficients: tuple | None = _field("coefficients")
    beta: float | None = _field("beta")
    scaling: str | None = _field("scaling")
    eps: float | None = _field("eps")
    eps_form: str | None = _field("eps_form")
    norm: str = _field("norm")
    norm_scale: float | None = _field("norm_scale")
    compute_dtype: str = _field("compute_dtype")
    io_dtype: str | None = _field("io_dtype")
    lowprec_order: str = _field("lowprec_order")
    nd: str = _field("nd")
    stack_dims: int = _field("stack_dims")
    complex: bool = _field("complex")
    norm_axis: str = _field("norm_axis")
    scale: str = _field("scale")
    scale_factor: float = _field("scale_factor")
    gate: str = _field("gate")
    gate_rescale: str = _field("gate_rescale")
    second_moment: str = _field("second_moment")
    second_moment_beta: float | None = _field("second_moment_beta")
    second_moment_eps: float | None = _field("second_moment_eps")
    second_moment_debias: bool = _field("second_moment_debias")
    pre: str = _field("pre")
    momentum: float = _field("momentum")
    nesterov: str = _field("nesterov")
    nesterov_variant: str = _field("nesterov_variant")
    lr: float = _field("lr")
    weight_decay: float = _field("weight_decay")
    shard_split: str = _field("shard_split")
    mesh: tuple | None = _field("mesh")
    world_size: int | None = _field("world_size")
    reduce_dtype: str | None = _field("reduce_dtype")
    tolerance: float | None = _field("tolerance")
    tolerance_overrides: tuple | None = _field("tolerance_overrides")

    def __post_init__(self):
        for name, knob in KNOBS.items():
            object.__setattr__(self, name, knob.check(getattr(self, name), name))
        if self.preset is not None:
            if self.method not in ("svd", "preset"):
                raise ClaimError(f"method={self.method!r} contradicts preset={self.preset!r} "
                                 "(a preset is its own method)")
            object.__setattr__(self, "method", "preset")
        elif self.method == "preset":
            raise ClaimError("method='preset' needs a preset name")
        if self.method != "newton_schulz" and (self.beta is not None or self.scaling is not None):
            raise ClaimError("beta and scaling only apply to method='newton_schulz'")
        if self.op == "grad_norm" and (self.preset is not None or self.method != "svd"):
            raise ClaimError("op='grad_norm' has no orthogonaliser: leave preset/method unset")
        stat = self.norm_axis != "none" or self.second_moment != "none"
        if not stat and (self.second_moment_eps is not None or self.second_moment_debias
                         or self.second_moment_beta is not None):
            raise ClaimError("second_moment_eps, second_moment_beta and second_moment_debias "
                             "need a normalisation after orthogonalising (norm_axis or "
                             "second_moment)")
        if self.second_moment_debias and self.second_moment_beta is None:
            raise ClaimError("second_moment_debias needs second_moment_beta (the bias "
                             "correction is 1 - beta2^t)")
        if self.gate_rescale != "kept" and self.gate == "none":
            raise ClaimError(f"gate_rescale={self.gate_rescale!r} needs a gate")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides) -> Claim:
        """The preset as its source runs it, then ``overrides``: :func:`preset_knobs`.  At the
        optimizer level the preset's N-D rule is not written out: it is the orthogonaliser's
        input rule, and an optimizer reshapes its parameters before calling it (heavyball
        flattens, then calls an orthogonaliser that batches), so ``nd`` stays the spec's
        reading unless stated."""
        _known(overrides)
        knobs = preset_knobs(name)
        if overrides.get("level") == "optimizer":
            knobs.pop("nd")
        knobs.update(overrides)
        return cls(**knobs)

    def replace(self, **changes) -> Claim:
        _known(changes)
        return dataclasses.replace(self, **changes)

    # -- data --------------------------------------------------------------------------------

    def to_dict(self, *, defaults: bool = False) -> dict:
        """Plain data (lists, str, numbers; None left out); ``defaults=False`` leaves out the
        knobs at their default too.  ``from_dict(to_dict())`` gives an equal claim."""
        out = {"format": FORMAT, "version": VERSION}
        for name, knob in KNOBS.items():
            v = getattr(self, name)
            if v is None or (not defaults and v == knob.default):
                continue
            if name == "coefficients":
                v = [list(t) for t in v]
            elif name == "mesh":
                v = list(v)
            elif name == "tolerance_overrides":
                v = {dt: {"tol": tol, "reason": why} for dt, (tol, why) in v}
            out[name] = v
        return out

    @classmethod
    def from_dict(cls, data) -> Claim:
        if not isinstance(data, dict):
            raise ClaimError(f"a claim is a table of knobs, got {type(data).__name__}")
        data = dict(data)
        fmt, version = data.pop("format", FORMAT), data.pop("version", VERSION)
        if fmt != FORMAT:
            raise ClaimError(f"format must be {FORMAT!r}, got {fmt!r}")
        if version != VERSION or isinstance(version, bool):
            raise ClaimError(f"claim format version {version!r} is not supported (this swanref "
                             f"reads version {VERSION})")
        _known(data)
        return cls(**data)

    # -- derived -----------------------------------------------------------------------------

    @property
    def effective_eps(self) -> tuple:
        """``(eps, form)`` the implementation applies: the stated ones, else the preset's."""
        if self.preset is None:
            return (self.eps or 0.0, self.eps_form or "none")
        p = get_preset(self.preset)
        form = self.eps_form or (p.norm if p.norm in ("add", "clamp", "none", "safe")
                                 else "clamp")
        return (p.eps if self.eps is None else self.eps, form)

    @property
    def container(self) -> str:
        """The gradient/update dtype of the probes (io_dtype, else float64/float32)."""
        if self.io_dtype is not None:
            return self.io_dtype
        return "float64" if self.compute_dtype == "float64" else "float32"

    def knobs_changed(self) -> dict:
        """Knobs that differ from the defaults (what a level must be able to evaluate)."""
        return {n: getattr(self, n) for n, k in KNOBS.items() if getattr(self, n) != k.default}


def preset_knobs(name: str) -> dict:
    """The knobs a catalogue preset fixes, as its source runs it (docs/spec.md 11.1): steps,
    epsilon, epsilon form and safety factor (so the epsilon acts on the raw input), the compute
    dtype (unless the source computes in its input's dtype), the N-D rule (a source that takes
    2-D input only: '2d_only'; one that batches the leading axes: 'batch_leading') and the
    low-precision order."""
    try:
        p = get_preset(name)
    except (KeyError, ValueError, TypeError) as exc:
        raise ClaimError(str(exc)) from exc
    form = p.norm if p.norm in ("add", "clamp", "none", "safe") else "clamp"
    knobs = dict(preset=name, steps=p.steps or None, eps=p.eps, eps_form=form,
                 norm="aol" if p.norm == "aol" else "frobenius", norm_scale=p.norm_scale,
                 nd="batch_leading" if p.batched_in_source else "2d_only",
                 lowprec_order=p.lowprec_order)
    if p.compute_dtype != "input":
        knobs["compute_dtype"] = p.compute_dtype
    return knobs


#: knobs of earlier 0.3 drafts -> what states the same now
REMOVED = {"eps_where": "eps is the orthogonaliser's; the epsilon of the normalisation after "
                        "orthogonalising is second_moment_eps"}


def _known(mapping):
    unknown = sorted(set(mapping) - set(KNOBS))
    gone = [f"{k!r} was removed: {REMOVED[k]}" for k in unknown if k in REMOVED]
    if gone:
        raise ClaimError("; ".join(gone))
    if unknown:
        raise ClaimError(f"unknown claim knob(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(KNOBS)}")


#: knobs that only one level reads; the other levels ignore them (one claim serves all levels)
LEVEL_ONLY = {
    "optimizer": ("momentum", "nesterov", "nesterov_variant", "lr", "weight_decay"),
    "sharded": ("shard_split", "mesh", "world_size", "reduce_dtype"),
}
#: knobs every level reads or records without changing the computation
_ALWAYS = ("level", "op", "preset", "method", "tolerance")


def require_evaluable(claim: Claim, level: str, evaluable) -> None:
    """ClaimError naming the knobs that ``claim`` sets and ``level`` cannot evaluate yet.

    A knob counts as set when it differs from its default, except the preset's own values as
    ``Claim.from_preset`` writes them out (its eps, eps form, safety factor, steps).
    """
    ignored = {k for lv, names in LEVEL_ONLY.items() if lv != level for k in names}
    same_as_preset = set()
    if claim.preset is not None:
        written = preset_knobs(claim.preset)
        same_as_preset = {k for k, v in written.items() if getattr(claim, k) == v}
    bad = [k for k in claim.knobs_changed()
           if k not in evaluable and k not in ignored and k not in _ALWAYS
           and k not in same_as_preset]
    if bad:
        raise ClaimError(f"the {level} check cannot evaluate claim knob(s) "
                         f"{', '.join(f'{k}={getattr(claim, k)!r}' for k in bad)} yet "
                         "(docs/spec.md 11.1 lists what each level reads)")
