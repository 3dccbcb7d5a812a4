"""swanref inside JAX: the C++ core's operators as XLA FFI custom calls (docs/jax.md).

``grad_norm``, ``whiten`` (the exact methods, Newton-Schulz, NSDS and the polynomial presets the
core runs), ``swan_update`` and ``sinkgd_update`` take and return ``jax.Array``\\ s and work
under ``jax.jit`` and ``jax.vmap`` (mapped axes become batch axes of the core's stacked
input); they have no derivative rule (an update direction is not differentiated).  The
arithmetic is a typed XLA FFI handler around the same C++ headers as ``swanref._core``, called
on the CPU with no host round trip.  They follow
:mod:`swanref.ops` -- the same defaults, validation, tall-matrix rule and finite-input policy
-- and give the same numbers as ``swanref.whiten(..., backend='cpp')`` (bit for bit for the
core's operators; ``swan_update``'s rescale is a JAX reduction, a few ulp apart).

Errors.  Keyword errors (an unknown method, ``steps=-1``) raise their usual TypeError /
ValueError when the function is traced.  Conditions that depend on the values -- NaN/Inf in
the input with ``check_finite=True`` (spec 6.2) and a diverged Newton-Schulz slice with
``on_divergence='raise'`` (spec 3.5) -- fail the FFI call: jax raises ``JaxRuntimeError``
(``jaxlib``'s ``XlaRuntimeError``) whose message is ``INVALID_ARGUMENT: `` followed by the
message of the Python API's ValueError / DivergenceError.

Arrays: float32/float64 computed natively (float64 needs ``jax_enable_x64``), bfloat16/float16
in float32 and rounded back, as in :mod:`swanref.ops`.  CPU only (there is no GPU lowering).
"""
from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from swanref import ops
from swanref.backends import jax_ffi
from swanref.presets import catalogue as presets
from swanref.spec.errors import DivergenceWarning
from swanref.spec.readings import WHITEN_METHODS, WHITEN_PRESETS, default_rank_rtol
from swanref.spec.validate import (compute_dtype, flag, iteration_count, real_number,
                                   preset_options, require_matrix_shape, resolve_axis)

__all__ = ["available", "unavailable_reason", "grad_norm", "whiten", "swan_update",
           "sinkgd_update"]


def available() -> bool:
    """True when this installation has the FFI module (``swanref._jax_ffi``) and its BLAS."""
    return jax_ffi.available()


def unavailable_reason() -> str:
    """Why :func:`available` is False, with the command that builds the module."""
    return jax_ffi.unavailable_reason()


# -- plumbing ------------------------------------------------------------------------------------

def _prepare(G):
    """(G in its compute dtype, the input dtype), validated as swanref.spec.validate does."""
    if not isinstance(G, (jax.Array, np.ndarray)):
        try:
            G = jnp.asarray(G)
        except Exception as exc:
            raise TypeError(f"G must be an array, got {type(G).__name__}: {exc}") from exc
    in_dtype = np.dtype(G.dtype)
    if in_dtype.kind == "c":
        raise TypeError("swanref.jax is real-only; complex input runs on swanref.whiten "
                        "(backend='reference')")
    dt = compute_dtype(in_dtype)  # TypeError for integers, booleans, ...
    require_matrix_shape(G.shape)
    return jnp.asarray(G).astype(dt), in_dtype


def _call(target, x, outs, **attrs):
    """One FFI call on x (mapped axes of jax.vmap arrive as leading batch axes)."""
    jax_ffi.register()
    fn = jax.ffi.ffi_call(target, outs, vmap_method="broadcast_all")
    return fn(x, **attrs)


def _like(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _masked(x, check_finite, ndim_core):
    """check_finite=False: zero the slices holding NaN/Inf, remember them (spec 6.2)."""
    if check_finite:
        return x, None  # the FFI handler raises on non-finite input
    axes = tuple(range(x.ndim - ndim_core, x.ndim))
    keep = jnp.isfinite(x).all(axis=axes, keepdims=True)
    return jnp.where(keep, x, 0).astype(x.dtype), keep


def _unmask(out, keep):
    return out if keep is None else jnp.where(keep, out, jnp.nan).astype(out.dtype)


def _swap(x):
    return jnp.swapaxes(x, -1, -2)


def _lr(lr):
    """A Python number is validated as in swanref.ops; a JAX scalar (a schedule) passes."""
    if isinstance(lr, jax.Array):
        return lr
    return real_number(lr, "lr")


# -- operators -----------------------------------------------------------------------------------

def _grad_norm(x, axis, eps, check_finite):
    ax = resolve_axis(axis, x.shape)
    work = x if ax == -1 else _swap(x)
    work, keep = _masked(work, check_finite, 1)
    out = _call("swanref_grad_norm", work, _like(work), eps=np.float64(eps),
                check_finite=np.bool_(check_finite))
    out = _unmask(out, keep)
    return out if ax == -1 else _swap(out)


def grad_norm(G, *, axis=-1, eps=0.0, check_finite=True):
    """GradNorm (spec 2) as an FFI call: :func:`swanref.grad_norm` inside JAX."""
    check_finite = flag(check_finite, "check_finite")
    x, in_dtype = _prepare(G)
    eps = real_number(eps, "eps", minimum=0.0)
    return _grad_norm(x, axis, eps, check_finite).astype(in_dtype)


def _prescale_huge(x):
    """swanref.presets.prescale_huge per matrix, in JAX: an exact power of two where the norm's
    squares would overflow, so the polynomial kernel sees the same input as in swanref.whiten."""
    lim = presets.huge_exponents(x.dtype)
    amax = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    _, e = jnp.frexp(jnp.where(jnp.isfinite(amax), amax, 0))
    shift = jnp.where(e > lim[0], e - lim[1], 0)
    return jnp.ldexp(x, -shift).astype(x.dtype)


def _whiten_preset(x, method, steps, beta, scaling, rank_rtol, on_divergence, coefficients,
                   check_finite):
    steps = preset_options(method, steps, beta, scaling, rank_rtol, on_divergence)
    preset = presets.get_preset(method)
    if not presets.polynomial_kernel_runs(preset):
        raise ValueError(f"preset {method!r} has no C++ kernel (its form, norm or route is "
                         "computed by the NumPy transcription only); swanref.jax runs the "
                         "polynomial presets with one norm per matrix and Keller/addmm steps")
    sched = np.asarray(presets.schedule(method, steps, coefficients),
                       dtype=np.float64).reshape(-1)
    work, keep = _masked(x, check_finite, 2)
    work = _prescale_huge(work)
    tall = work.shape[-2] > work.shape[-1]
    w = _swap(work) if tall else work
    out = _call("swanref_whiten_polynomial", w, _like(w), coefficients=sched, norm=preset.norm,
                eps=np.float64(preset.eps), norm_scale=np.float64(preset.norm_scale),
                check_finite=np.bool_(check_finite))
    out = _swap(out) if tall else out
    return _unmask(out, keep)


#: the end of swanref.ops' DivergenceWarning for each host-side policy
_POLICY_TAIL = {"warn": "those slices are set to NaN",
                "fallback": "those slices were recomputed with method='svd'"}


def _warn_divergence(bad, label, policy):
    bad = np.asarray(bad).reshape(-1)
    idx = [int(i) for i in np.nonzero(bad)[0]]
    if idx:
        warnings.warn(f"{label} diverged on {len(idx)} of {bad.size} slice(s) (flat batch indices "
                      f"{idx[:10]}{'...' if len(idx) > 10 else ''}): output non-finite or its "
                      f"Frobenius norm above the bound of spec 3.5; {_POLICY_TAIL[policy]}",
                      DivergenceWarning, stacklevel=2)


def _host_policy(work, out, bad, on_divergence, label, exact_svd):
    """on_divergence 'warn'/'fallback' after the iterative FFI call: the host-side warning of
    swanref.whiten through a debug callback, then NaN or the exact SVD in the diverged slices.

    Under jax.vmap a debug callback would run once per mapped element (counting one slice, at
    flat index 0); custom_vmap keeps the mapped axes as leading batch axes instead, so one
    warning counts and indexes the whole stack as the FFI call's DivergenceError message does,
    and the fallback's lax.cond stays one branch rather than a select that computes both."""

    @jax.custom_batching.custom_vmap
    def policy(work, out, bad):
        jax.debug.callback(_warn_divergence, bad, label, on_divergence)
        sel = bad[..., None, None]
        if on_divergence == "warn":
            return jnp.where(sel, jnp.nan, out).astype(out.dtype)
        # recompute with the exact SVD, only when a slice diverged
        return jax.lax.cond(jnp.any(bad), lambda: jnp.where(sel, exact_svd(work), out),
                            lambda: out)

    @policy.def_vmap
    def _stacked(axis_size, in_batched, work, out, bad):
        # the three come from one FFI call on the mapped input; the mapped axis leads
        work, out, bad = (a if mapped else jnp.broadcast_to(a, (axis_size,) + a.shape)
                          for a, mapped in zip((work, out, bad), in_batched))
        return policy(work, out, bad), True

    return policy(work, out, bad)


def _whiten(x, method, steps=None, beta=None, scaling=None, rank_rtol=None,
            on_divergence="raise", coefficients=None, check_finite=True):
    if not isinstance(method, str):
        raise TypeError(f"method must be a string naming a whitening method or preset, got "
                        f"{method!r}")
    if (method in WHITEN_PRESETS and method not in WHITEN_METHODS) or method in presets.ROUTES:
        return _whiten_preset(x, method, steps, beta, scaling, rank_rtol, on_divergence,
                              coefficients, check_finite)
    if coefficients is not None:
        raise ValueError(f"coefficients apply to the presets only, not to method {method!r}")
    _, params = ops.whiten_params(method, steps, beta, scaling, rank_rtol, on_divergence)
    tall = x.shape[-2] > x.shape[-1]
    work = _swap(x) if tall else x  # the core sees m <= n (spec 3.0)
    work, keep = _masked(work, check_finite, 2)
    m, n = work.shape[-2:]
    default_rtol = default_rank_rtol(m, n, float(np.finfo(work.dtype).eps))
    finite = np.bool_(check_finite)

    def exact_svd(w):
        rtol = params.get("rank_rtol")
        return _call("swanref_whiten_svd", w, _like(w), route="auto", check_finite=finite,
                     sigma_rtol=np.float64(default_rtol if rtol is None else rtol))

    if method == "svd":
        out = exact_svd(work)
    elif method == "eigh":
        rtol = params["rank_rtol"]
        floor = ops.EIGH_NOISE_FACTOR * default_rtol  # spec 3.2, as swanref.whiten
        out = _call("swanref_whiten_eigh", work, _like(work), check_finite=finite,
                    lambda_rtol=np.float64(floor if rtol is None else max(rtol ** 2, floor)))
    else:
        label = (f"{method}(steps={params['steps']}, beta={params['beta']}, "
                 f"scaling={params['scaling']!r})")
        out, bad = _call(
            "swanref_whiten_iterative", work,
            (_like(work), jax.ShapeDtypeStruct(work.shape[:-2], jnp.bool_)),
            method=method, steps=np.int64(params["steps"]), beta=np.float64(params["beta"]),
            scaling=params["scaling"], check_finite=finite, label=label,
            raise_on_divergence=np.bool_(on_divergence == "raise"))
        if on_divergence in ("warn", "fallback"):
            out = _host_policy(work, out, bad, on_divergence, label, exact_svd)
    out = _unmask(out, keep)
    return _swap(out) if tall else out


def whiten(G, method="svd", *, steps=None, beta=None, scaling=None, rank_rtol=None,
           on_divergence="raise", check_finite=True, coefficients=None):
    """GradWhitening (spec 3) as an FFI call: :func:`swanref.whiten` inside JAX.

    ``method``: 'svd', 'eigh', 'newton_schulz', 'nsds' or a polynomial preset the C++ core runs
    ('muon_ns5', 'polar_express', 'optax_muon', ..., 'custom' with ``coefficients``); the
    keywords are those of :func:`swanref.whiten` (no ``backend``, no ``emulate``).
    ``on_divergence='warn'``/``'fallback'`` warn through ``jax.debug.callback``.
    """
    check_finite = flag(check_finite, "check_finite")
    x, in_dtype = _prepare(G)
    out = _whiten(x, method, steps, beta, scaling, rank_rtol, on_divergence, coefficients,
                  check_finite)
    return out.astype(in_dtype)


def swan_update(G, *, lr=1.0, whiten_method="newton_schulz", rescale=True, axis=-1, eps=0.0,
                steps=None, beta=None, scaling=None, rank_rtol=None, on_divergence="raise",
                check_finite=True):
    """The SWAN step (spec 4): ``lr * R(whiten(grad_norm(G)))``, :func:`swanref.swan_update`
    inside JAX; ``lr`` may be a traced scalar (a schedule)."""
    rescale = flag(rescale, "rescale")
    check_finite = flag(check_finite, "check_finite")
    x, in_dtype = _prepare(G)
    lr = _lr(lr)
    eps = real_number(eps, "eps", minimum=0.0)
    if not isinstance(whiten_method, str):
        raise TypeError(f"whiten_method must be a string naming a whitening method or preset, "
                        f"got {whiten_method!r}")
    g = _grad_norm(x, axis, eps, check_finite)
    d = _whiten(g, whiten_method, steps, beta, scaling, rank_rtol, on_divergence, None,
                check_finite)
    if rescale:  # sqrt(m n) d / ||d||_F per slice, a zero slice stays zero
        m, n = d.shape[-2:]
        fro = jnp.sqrt(jnp.sum(d * d, axis=(-2, -1), keepdims=True))
        scale = jnp.where(fro > 0, math.sqrt(m * n) / jnp.where(fro > 0, fro, 1), 0)
        d = (d * scale).astype(d.dtype)
    return (lr * d).astype(d.dtype).astype(in_dtype)


def sinkgd_update(G, *, iters=5, lr=1.0, check_finite=True):
    """The SinkGD step (spec 5): ``lr * SR-Sinkhorn(G, iters)``, :func:`swanref.sinkgd_update`
    inside JAX."""
    check_finite = flag(check_finite, "check_finite")
    x, in_dtype = _prepare(G)
    iters = iteration_count(iters, "iters")
    lr = _lr(lr)
    work, keep = _masked(x, check_finite, 2)
    out = _call("swanref_sinkgd", work, _like(work), iters=np.int64(iters),
                check_finite=np.bool_(check_finite))
    out = _unmask(out, keep)
    return (lr * out).astype(out.dtype).astype(in_dtype)
