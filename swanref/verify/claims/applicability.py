"""Which properties a claim's premises exclude (docs/spec.md 11.3).

A property whose premise the claim rules out -- scale invariance when the claimed epsilon acts
on the raw input, N-D probes when the claim is 2-D only, complex input when no complex support
is claimed, an optimizer's state (an AdaMuon second moment) at the update level -- is reported
``n/a`` with the reason, never as a failure (OpInfo's DecorateInfo
skips, as data).  Levels add their own premises with :func:`register_premise`.
"""
from __future__ import annotations

from swanref.verify.claims.model import Claim

_PREMISES: dict = {}


def register_premise(prop: str, rule) -> None:
    """``rule(claim) -> reason or None`` joins the premises of property ``prop``."""
    _PREMISES.setdefault(prop, []).append(rule)


def not_applicable(claim: Claim, prop: str):
    """The reason the claim excludes property ``prop``, or None when it applies."""
    for rule in _PREMISES.get(prop, ()):
        why = rule(claim)
        if why:
            return why
    return None


def unsupported_shape(claim: Claim, shape) -> str | None:
    """Why a probe of this gradient ``shape`` is outside the claim (None: inside)."""
    core = len(shape) - claim.stack_dims
    if core > 2 and claim.nd == "2d_only":
        return f"the claim is 2-D only (nd='2d_only'): no probe of shape {tuple(shape)}"
    if core > 3 and claim.nd == "route_4d_batch_3d":
        return (f"4-D parameters are routed to another optimizer (nd='route_4d_batch_3d'): no "
                f"probe of shape {tuple(shape)}")
    if core > 2 and claim.nd == "routed":
        return (f"N-D parameters are routed to another optimizer (nd='routed'): no probe of "
                f"shape {tuple(shape)}")
    return None


def _eps_decides(claim):
    eps, form = claim.effective_eps
    if claim.eps is not None and eps > 0 and form in ("add", "clamp"):
        return (f"the claimed epsilon ({form} {eps:g}) acts on the raw input, so it decides the "
                f"direction of gradients with ||G||_F near or below {eps:g}: scale invariance "
                "down to 1e-12 is not claimed")
    return None


def _unguarded(claim):
    if claim.eps_form == "none":
        return ("the claimed normalisation has no guard (eps_form='none': X / ||X||_F), so a "
                "zero gradient gives 0/0 as in the source; no zero-to-zero is claimed")
    return None


def _nd(claim):
    return unsupported_shape(claim, (1,) * claim.stack_dims + (4, 2, 3, 1))


def _any_nd(claim):
    """N-D round trips: not applicable only when neither a 4-D nor a 3-D probe is claimed
    (``route_4d_batch_3d`` claims 3-D only)."""
    return _nd(claim) and unsupported_shape(claim, (1,) * claim.stack_dims + (3, 2, 4))


def _stack(claim):
    if claim.stack_dims == 0 and claim.nd != "batch_leading":
        return "no stack claimed (stack_dims=0)"
    return None


def _complex(claim):
    return None if claim.complex else "no complex support claimed (complex=false)"


def _nesterov_on(claim):
    if claim.nesterov == "off":
        return "no Nesterov momentum claimed (nesterov='off')"
    return None


def stateful(claim: Claim) -> str | None:
    """Why a one-gradient update function cannot show what the claim states (None: it can)."""
    if claim.second_moment != "none":
        return (f"second_moment={claim.second_moment!r} is optimizer state: AdaMuon's v = beta2 "
                "v + (1 - beta2) O*O accumulates over steps, so the update of one gradient "
                "depends on the history; swanref check-optimizer checks it")
    return None


for _prop, _rule in [("direction_scale_invariant", _eps_decides), ("nd_round_trip", _any_nd),
                     ("scale_conv", _nd), ("stacked_3d", _nd), ("stack_independent", _stack),
                     ("complex_input", _complex), ("nesterov", _nesterov_on),
                     ("zero_to_zero", _unguarded)]:
    register_premise(_prop, _rule)
