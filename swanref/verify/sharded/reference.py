"""The unsharded reference a sharded result is judged against, and the per-case facts the
judging needs (the reference and the singular values of every matrix), computed once per case:
by the ranks in parallel (on the rank's GPU in float64 where the shards are CUDA tensors) or by
the caller."""
from __future__ import annotations

import numpy as np

from swanref import ops
from swanref.presets.catalogue import get_preset, run_preset_unchecked, schedule, whiten_preset
from swanref.spec import spectral
from swanref.verify.sharded.calling import device_reference, device_svdvals
from swanref.verify.sharded.reduction import mats

LOW = ("bfloat16", "float16")


def wide_apply(g, f):
    return f(g.T).T if g.shape[0] > g.shape[1] else f(g)


def reference(claim, G) -> np.ndarray:
    """The unsharded swanref operator on the global array (float64; presets in ``dtype``,
    16-bit presets by their PyTorch-eager emulation)."""
    G = np.asarray(G)
    if claim.op == "grad_norm":
        return ops.grad_norm(G.astype(np.float64), eps=claim.eps)
    if claim.preset is not None:
        if claim.dtype in LOW:
            return np.asarray(run_preset_unchecked(
                G.astype(np.float32), get_preset(claim.preset),
                schedule(claim.preset, claim.steps), claim.dtype), np.float64)
        return np.asarray(whiten_preset(G.astype(claim.dtype), claim.preset, steps=claim.steps),
                          np.float64)
    if claim.iterative:
        steps, beta, scaling = claim.ns_reading()
        return np.stack([wide_apply(g, lambda w: spectral.predicted_newton_schulz(
            w, steps, beta, scaling)) for g in mats(G)]).reshape(G.shape)
    return ops.whiten(G.astype(np.float64), "svd")


def judge_pack(claim, G, device=None) -> dict:
    """``{'ref': reference, 'sv': singular values of every matrix}`` of one case; on a CUDA
    device in float64 where that applies, else on the host."""
    ref = device_reference(claim, G, device) if device is not None else None
    sv = device_svdvals(G, device) if device is not None else None
    if ref is None:
        ref = reference(claim, G)
    if sv is None:
        sv = np.stack([np.linalg.svd(g, compute_uv=False) for g in mats(G)])
    return {"ref": ref, "sv": sv}
