"""Shared command-line parsing: ``--claim FILE``, ``--preset NAME``, ``--set KNOB=VALUE`` and
typed ``--kwarg NAME=VALUE`` values (docs/spec.md 11.5).

Precedence, lowest first: a level's own defaults (``defaults``), then, with ``--preset NAME``,
the preset's knobs as its source runs them (``Claim.from_preset``; it also replaces the
preset), a level's own legacy options (``base``), the ``--claim`` file, each ``--set`` in
order.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
from dataclasses import dataclass

from swanref.presets.catalogue import get_preset
from swanref.verify.claims.fileformat import load_claim
from swanref.verify.claims.knobs import KNOBS, ClaimError
from swanref.verify.claims.model import Claim, preset_knobs, require_evaluable

_DTYPE = re.compile(r"^(torch|jnp|jax\.numpy|np|numpy|ml_dtypes)\.([A-Za-z_][A-Za-z0-9_]*)$")
_MODULES = {"torch": "torch", "jnp": "jax.numpy", "jax.numpy": "jax.numpy", "np": "numpy",
            "numpy": "numpy", "ml_dtypes": "ml_dtypes"}


@dataclass(frozen=True)
class DtypeName:
    """A dtype named on the command line (``torch.float64``), imported only when resolved."""
    module: str
    name: str

    def resolve(self):
        try:
            mod = importlib.import_module(_MODULES[self.module])
        except ImportError as exc:
            raise ClaimError(f"{self}: cannot import {_MODULES[self.module]} ({exc})") from exc
        try:
            return getattr(mod, self.name)
        except AttributeError as exc:
            raise ClaimError(f"{self}: {_MODULES[self.module]} has no {self.name!r}") from exc

    def __str__(self):
        return f"{self.module}.{self.name}"


def parse_value(text: str):
    """A typed value from the command line: JSON (numbers, true/false, null, lists, objects),
    Python spellings True/False/None, a dtype name (``torch.float64``, ``jnp.bfloat16`` ->
    :class:`DtypeName`), otherwise the string itself."""
    if not isinstance(text, str):
        raise ClaimError(f"a value is text, got {type(text).__name__}")
    s = text.strip()
    if s in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[s]
    m = _DTYPE.match(s)
    if m:
        return DtypeName(m.group(1), m.group(2))
    try:
        return json.loads(s, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return text


def _reject_constant(name):
    raise ValueError(name)


def parse_assignment(text: str, what: str = "--set") -> tuple:
    """``'KEY=VALUE'`` -> ``(KEY, typed value)``."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ClaimError(f"{what} takes KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def add_claim_arguments(parser: argparse.ArgumentParser, *, preset: bool = True) -> None:
    """Add ``--claim``, ``--set`` and (unless the level has its own) ``--preset``."""
    parser.add_argument("--claim", metavar="FILE", default=None,
                        help="a claim file (.toml or .json, docs/spec.md 11.2)")
    if preset:
        parser.add_argument("--preset", metavar="NAME", default=None,
                            help="start from a catalogue preset as its source runs it")
    parser.add_argument("--set", metavar="KNOB=VALUE", action="append", default=[],
                        dest="set_knobs", help="override one knob (repeatable), e.g. eps=1e-12")


def claim_from_args(args, base: dict | None = None, *, preset: bool = True,
                    write_out: str | None = None, defaults: dict | None = None) -> Claim:
    """The claim of parsed arguments (precedence in the module's docstring); a dtype name in
    ``--set`` (``compute_dtype=torch.bfloat16``) stands for its short name.  ``preset=False``:
    the level's own ``--preset`` is a legacy option, already in ``base``, or (``write_out``)
    the catalogue preset to write out below everything else.  ``defaults``: a level's own
    defaults, below even the preset's written-out knobs (each applies only where neither
    ``base``, the file, ``--set`` nor the preset states that knob)."""
    knobs = dict(base or {})
    path = getattr(args, "claim", None)
    if path is not None:
        knobs.update(load_claim(path).knobs_changed())
    name = getattr(args, "preset", None) if preset else write_out
    sets = [parse_assignment(t) for t in getattr(args, "set_knobs", None) or []]
    for key, _ in sets:
        if key not in KNOBS:
            raise ClaimError(f"--set {key}: unknown knob; known: {', '.join(KNOBS)}")
    knobs.update((k, str(v.name) if isinstance(v, DtypeName) else v) for k, v in sets)
    if name is not None:
        knobs.pop("preset", None)
        knobs.pop("method", None)
        below = preset_knobs(name)
        knobs = {**{k: v for k, v in (defaults or {}).items() if k not in below}, **knobs}
        return Claim.from_preset(name, **knobs)
    return Claim(**_known({**(defaults or {}), **knobs}))


def _known(knobs):
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ClaimError(f"unknown claim knob(s) {', '.join(unknown)}")
    return knobs


#: the knobs the operator check (``swanref check OP``) reads (docs/spec.md 11.1); the
#: normalisation ones only with a preset (its source's epsilon, form, safety factor, order)
OPERATOR_KNOBS = ("preset", "method", "steps", "coefficients", "beta", "scaling",
                  "compute_dtype", "eps", "eps_form", "norm_scale", "lowprec_order")
#: claim knob -> the Preset field it states (swanref.presets.diagnose.OVERRIDABLE)
_PRESET_FIELDS = {"eps": "eps", "eps_form": "norm", "norm_scale": "norm_scale",
                  "lowprec_order": "lowprec_order"}


def operator_arguments(claim: Claim) -> dict:
    """The keywords of ``swanref.verify.checker.check`` a claim stands for (ClaimError for a
    knob the operator check cannot evaluate: an update convention, a stated epsilon other than
    the preset's, ...)."""
    require_evaluable(claim, "operator", OPERATOR_KNOBS + ("scale", "scale_factor"))
    out = {"dtype": claim.compute_dtype, "steps": claim.steps}
    if claim.preset is not None:
        out["preset"] = claim.preset
        if claim.coefficients is not None:
            out["coefficients"] = [list(t) for t in claim.coefficients]
        own = get_preset(claim.preset)
        overrides = {f: getattr(claim, k) for k, f in _PRESET_FIELDS.items()
                     if getattr(claim, k) is not None and getattr(claim, k) != getattr(own, f)}
        if claim.eps_form is not None and claim.eps_form not in ("add", "clamp", "none",
                                                                 "safe"):
            raise ClaimError(f"eps_form={claim.eps_form!r} is not a normalisation the "
                             "operator check evaluates")
        if overrides:
            out["overrides"] = overrides
    else:
        stated = [k for k in _PRESET_FIELDS if getattr(claim, k) is not None]
        if stated:
            raise ClaimError(f"the operator check evaluates {', '.join(stated)} on a preset "
                             f"only (claimed method {claim.method!r}: exact methods do not "
                             "depend on the norm)")
        out.update(method=claim.method, beta=claim.beta, scaling=claim.scaling)
    return out
