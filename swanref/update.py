"""The orthogonalised update of one parameter (spec section 9): the core of every Muon/SWAN-style
step, with the conventions real optimizers wrap around it made explicit.

``orthogonalized_update(G, preset, scale=...)`` is what such an optimizer adds to a parameter
(times ``-lr``) on a step whose momentum is neutral: reshape to the matrix view, orthogonalise,
optionally normalise rows (NorMuon), apply the scale rule, reshape back.  Every choice is a
named convention of :mod:`swanref.spec.conventions` with its source.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from swanref import ops
from swanref.backends import arrays as _arrays
from swanref.presets.coefficient_files import read_coefficient_file
from swanref.spec.conventions import matrix_view, resolve_scale, shape_factor
from swanref.spec.scaling import pow2_exponent
from swanref.spec.validate import (clear_keyword_errors, flag, host_matrix_stack,
                                   real_number)

__all__ = ["orthogonalized_update", "load_coefficients", "ND_RULES", "NORM_AXES", "EPS_FORMS",
           "LOWPREC_ORDERS", "GATES", "GATE_RESCALES", "update_view", "first_step_share"]

#: N-D rules (spec 9.2): how a parameter of >= 3 matrix axes becomes matrices
ND_RULES = ("flatten", "2d_only", "flatten_4d_batch_3d", "batch_leading")
#: NorMuon-style normalisation of the orthogonalised update (spec 9.3)
NORM_AXES = ("none", "rows", "columns", "columns_if_wide")
#: how a stated epsilon enters the normalisation (spec 9.5)
EPS_FORMS = ("add", "clamp", "none", "safe")
#: low-precision order (spec 9.7)
LOWPREC_ORDERS = ("cast_then_normalise", "normalise_then_cast")

#: a cautious gate on the update (spec 9.4): none, per element, per column of the matrix view
GATES = ("none", "per_element", "per_column")
#: how a gate rescales what it keeps (spec 9.4)
GATE_RESCALES = ("kept", "kept_plus_one", "none")
#: the gate's floor on the kept fraction (heavyball / pytorch-optimizer cautious masks)
GATE_FLOOR = 1e-3

def load_coefficients(source):
    """A coefficient table ``[(a, b, c), ...]`` from a list, or from a file (spec 9.6).

    Files: JSON (a list of triples, or ``{"coefficients": [...]}``) or text with one triple per
    line (numbers separated by spaces or commas; ``#`` starts a comment), read and validated by
    :func:`swanref.presets.coefficient_files.read_coefficient_file`.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        table, divisor = read_coefficient_file(source, "coefficients file")
        if divisor != 1.0:
            raise ValueError(f"coefficients file {os.fspath(source)}: a divisor other than 1 "
                             "is not supported here (the presets normalise by ||X||_F)")
        return table
    try:
        return [tuple(float(v) for v in t) for t in source]
    except (TypeError, ValueError) as exc:
        raise TypeError("coefficients must be a sequence of (a, b, c) number triples") from exc


def _row_norm(O, eps=None, factor=1.0):
    """NorMuon: rows to RMS 1 (zero rows stay 0), then the matrix re-matched to ||O||_F.

    ``eps`` (the claim's ``second_moment_eps``): each row is divided by ``sqrt(factor ms) +
    eps`` instead, ``ms`` its mean square and ``factor`` the share the source's statistic
    holds on a first step (``1 - beta2`` for an EMA from zero without bias correction)."""
    sq = (O * O.conj()).real if np.iscomplexobj(O) else O * O
    fro = np.sqrt(np.sum(sq, axis=(-2, -1), keepdims=True))
    rms = np.sqrt(np.mean(sq, axis=-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        if eps is None:
            R = np.where(rms > 0, O / np.where(rms > 0, rms, 1), 0)
        else:
            d = np.sqrt(factor) * rms + eps
            R = np.where(d > 0, O / np.where(d > 0, d, 1), 0)
        sqr = (R * R.conj()).real if np.iscomplexobj(R) else R * R
        fro_r = np.sqrt(np.sum(sqr, axis=(-2, -1), keepdims=True))
        return np.where(fro_r > 0, R * (fro / np.where(fro_r > 0, fro_r, 1)), 0).astype(O.dtype)


def _pow2_scaled(M):
    """M times an exact power of two per matrix, max|M| in [0.5, 1) (spec 9.5).

    The direction of the update then cannot depend on ||G||: a source's epsilon floor sits at
    the same place relative to every gradient.  Non-finite slices are left alone (the input
    policy of whiten reports them).
    """
    amax = np.max(np.abs(M), axis=(-2, -1), keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore"):
        e = np.where(np.isfinite(amax) & (amax > 0), pow2_exponent(np.where(
            np.isfinite(amax), amax, 1.0)), 0)
    e = e.astype(np.int64)
    # ldexp of the data itself: the factor 2**-e alone overflows for subnormal input
    # (e < -1023: 2**1049 is inf in float64)
    if M.dtype.kind == "c":
        W = M.astype(np.complex128)
        return (np.ldexp(W.real, -e) + 1j * np.ldexp(W.imag, -e)).astype(M.dtype)
    if M.dtype.name == "bfloat16" or M.dtype == np.float16:
        return np.ldexp(M.astype(np.float64), -e).astype(np.float32)
    return np.ldexp(M.astype(np.float64), -e).astype(M.dtype)


def update_view(shape, stack_dims=0, nd="flatten") -> tuple:
    """``(batch, m, n)`` of the matrices a parameter of ``shape`` is orthogonalised as, under
    N-D rule ``nd`` (spec 9.2): 'flatten' (out, in*k...), '2d_only' (ValueError for N-D),
    'flatten_4d_batch_3d' (3 matrix axes: a batch of the last two, 4 or more: flattened),
    'batch_leading' (every axis before the last two is a batch axis)."""
    if nd not in ND_RULES:
        raise ValueError(f"nd must be one of {', '.join(ND_RULES)}, got {nd!r}")
    shape = tuple(int(s) for s in shape)
    core = len(shape) - stack_dims
    if core > 2 and nd == "2d_only":
        raise ValueError(f"the update is claimed for 2-D parameters only (nd='2d_only'); got "
                         f"shape {shape} with stack_dims={stack_dims}")
    if core > 2 and (nd == "batch_leading" or (nd == "flatten_4d_batch_3d" and core == 3)):
        return shape[:-2], shape[-2], shape[-1]
    return matrix_view(shape, stack_dims)


def _axis_norm(O, norm_axis, m, n, eps=None, factor=1.0):
    """NorMuon over rows, columns, or columns of wide matrices (rows otherwise)."""
    if norm_axis == "none":
        return O
    cols = norm_axis == "columns" or (norm_axis == "columns_if_wide" and n > m)
    if cols:
        return np.swapaxes(_row_norm(np.swapaxes(O, -1, -2), eps, factor), -1, -2)
    return _row_norm(O, eps, factor)


def first_step_share(beta, debias=False) -> float:
    """The share of one step's statistic in the source's second moment on a first step from
    zero: ``1 - beta2`` for an EMA without bias correction, 1 with it or without an EMA."""
    return 1.0 if beta is None or debias else 1.0 - float(beta)


def _gated(O, M, gate, stack_dims, rescale="kept"):
    """The cautious gate: keep the entries (per_element) or the columns of the matrix view
    (per_column) where the update agrees in sign with the gradient ``Re(O conj(G)) > 0``,
    rescaled by ``1 / max(kept fraction, GATE_FLOOR)`` per parameter (``rescale='kept'``),
    by ``numel / (kept + 1)`` (``'kept_plus_one'``) or not at all (``'none'``), spec 9.4."""
    if gate == "none":
        return O
    prod = np.real(O * np.conj(M)) if np.iscomplexobj(O) else O * M
    if gate == "per_element":
        mask = prod > 0
    else:
        mask = np.broadcast_to(np.sum(prod, axis=-2, keepdims=True) > 0, prod.shape)
    axes = tuple(range(stack_dims, O.ndim))
    if rescale == "none":
        return np.where(mask, O, 0).astype(O.dtype)
    if rescale == "kept_plus_one":  # pytorch-optimizer apply_cautious: numel / (kept + 1)
        numel = math.prod(O.shape[stack_dims:])
        kept = (np.sum(mask, axis=axes, keepdims=True) + 1.0) / numel
    else:
        kept = np.maximum(np.mean(mask, axis=axes, keepdims=True), GATE_FLOOR)
    return np.where(mask, O / kept, 0).astype(O.dtype)


def _fro(X):
    sq = (X * X.conj()).real if np.iscomplexobj(X) else X * X
    return np.sqrt(np.sum(sq, axis=(-2, -1), keepdims=True))


@clear_keyword_errors
def orthogonalized_update(G, preset="svd", *, scale="keller", scale_factor=1.0, stack_dims=0,
                          row_norm=False, steps=None, coefficients=None, emulate=None,
                          backend=None, check_finite=True, eps=None, eps_form=None,
                          norm_scale=None, lowprec_order=None, nd="flatten",
                          norm_axis=None, gate="none", gate_rescale="kept",
                          second_moment_eps=None, second_moment_beta=None,
                          second_moment_debias=False):
    r"""The orthogonalised update of one parameter (or a stack of them), spec section 9.

    .. math:: \Delta = s(m, n)\; \mathrm{reshape}\big(\mathrm{orth}(G_{m \times n})\big)

    Parameters
    ----------
    G : array_like, shape (*stack, out, *in)
        The gradient (or the momentum-combined direction) of a parameter of at least 2 axes
        after ``stack_dims``.  float64/float32/float16/bfloat16, or complex64/complex128.
    preset : str
        The orthogonaliser: an exact method ('svd', 'eigh'), 'newton_schulz', or a production
        preset of ``swanref.presets`` ('muon_ns5', 'torch_muon', 'optax_muon', 'gram_ns', ...).
    scale : str
        The scale rule (``swanref.spec.conventions.SCALE_RULES``): 'keller' sqrt(max(1, m/n))
        (default), 'moonlight' 0.2 sqrt(max(m, n)), 'unit_rms' sqrt(max(m, n)), 'spectral'
        sqrt(m/n), 'swan' sqrt(m n)/||O||_F, 'graft' ||G||_F/||O||_F, 'none'.
    scale_factor : float
        Extra constant factor (e.g. an AdamW-RMS-matching 0.2 on top of 'unit_rms').
    stack_dims : int
        Leading axes indexing independent parameters (each slice is its own problem).
    row_norm : bool
        NorMuon row normalisation with Frobenius re-match, after orthogonalisation.
    steps, coefficients, emulate : passed to the preset (``coefficients`` may be a list of
        (a, b, c) triples or a file, see :func:`load_coefficients`).
    backend, check_finite : as in :func:`swanref.whiten`.
    eps, eps_form, norm_scale : a production preset's epsilon, its form ('add', 'clamp',
        'none', 'safe') and the norm's safety factor, stated (spec 9.5): given any of them, the
        preset runs on the raw gradient (no power-of-two prescale), so the epsilon sits where
        the source puts it; unstated ones are the preset's.  Exact methods ignore them (the
        polar factor does not depend on the norm); 'newton_schulz'/'nsds' refuse them.
    lowprec_order : with ``emulate``: 'cast_then_normalise' (the source casts the gradient to
        the 16-bit format first) or 'normalise_then_cast' (normalises in float32, then casts
        and iterates), spec 9.7; None: the preset's own (``Preset.lowprec_order``).
    nd : N-D rule, see :func:`update_view` (spec 9.2).
    norm_axis : NorMuon normalisation 'rows', 'columns' or 'columns_if_wide' (spec 9.3);
        ``None`` follows ``row_norm``.
    gate : 'none', or a cautious gate after the scale rule (spec 9.4): 'per_element' keeps the
        entries whose sign agrees with G's, 'per_column' the columns of the matrix view whose
        inner product with G's is positive; the kept part is divided by the kept fraction
        (at least 1e-3) of each parameter.
    gate_rescale : 'kept' (the above), 'kept_plus_one' (numel / (kept + 1): pytorch-optimizer's
        ``apply_cautious``) or 'none' (the mask only).
    second_moment_eps, second_moment_beta, second_moment_debias : the epsilon of the
        normalisation (``norm_axis``): each row (column) is divided by ``sqrt(f ms) + eps``,
        ``f`` the first step's share of the source's statistic (``1 - beta2`` for an EMA from
        zero, 1 when debiased or without ``beta2``), spec 9.4.  None: no epsilon.

    Returns
    -------
    A new array of G's shape and dtype; zero slices give zero.  G is never modified.
    """
    row_norm = flag(row_norm, "row_norm")
    check_finite = flag(check_finite, "check_finite")
    if isinstance(stack_dims, (bool, np.bool_)) or not isinstance(stack_dims, (int, np.integer)) \
            or stack_dims < 0:
        raise TypeError(f"stack_dims must be a non-negative integer, got {stack_dims!r}")
    rule = resolve_scale(scale)
    scale_factor = real_number(scale_factor, "scale_factor", minimum=0.0)
    if norm_axis is None:
        norm_axis = "rows" if row_norm else "none"
    elif norm_axis not in NORM_AXES or row_norm:
        raise ValueError(f"norm_axis must be one of {', '.join(NORM_AXES)} (and row_norm "
                         f"False), got {norm_axis!r}")
    if not isinstance(gate, str) or gate not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    if not isinstance(gate_rescale, str) or gate_rescale not in GATE_RESCALES:
        raise ValueError(f"gate_rescale must be one of {', '.join(GATE_RESCALES)}, got "
                         f"{gate_rescale!r}")
    if second_moment_eps is not None:
        second_moment_eps = real_number(second_moment_eps, "second_moment_eps", minimum=0.0)
    if second_moment_beta is not None:
        second_moment_beta = real_number(second_moment_beta, "second_moment_beta", minimum=0.0)
        if not second_moment_beta < 1:
            raise ValueError(f"second_moment_beta must be in [0, 1), got {second_moment_beta!r}")
    share = first_step_share(second_moment_beta, flag(second_moment_debias,
                                                      "second_moment_debias"))
    if lowprec_order is not None and lowprec_order not in LOWPREC_ORDERS:
        raise ValueError(f"lowprec_order must be one of {', '.join(LOWPREC_ORDERS)}, got "
                         f"{lowprec_order!r}")
    stated = _stated_preset(preset, eps, eps_form, norm_scale, lowprec_order)
    if coefficients is not None and not isinstance(coefficients, (list, tuple, np.ndarray)):
        coefficients = load_coefficients(coefficients)
    raw, _, restore = _arrays.to_backend(G, "reference")
    # the input path of spec 6 (the errors of swanref.whiten), on the array as given ...
    arr = host_matrix_stack(raw, "orthogonalized_update", allow_complex=True)
    in_dtype = arr.dtype
    batch, m, n = update_view(arr.shape, int(stack_dims), nd)
    if m == 0 or n == 0:  # ... and on its matrix view (spec 9.2)
        raise ValueError(f"G has an empty matrix dimension: shape {arr.shape} is the matrix "
                         f"{m} x {n} with stack_dims={stack_dims}")
    M = np.ascontiguousarray(arr).reshape(batch + (m, n))
    if M.size == 0:  # a zero-size stack
        return restore(np.zeros(arr.shape, in_dtype))
    if stated is not None:
        O, zero = _run_stated(M, stated, steps, coefficients, emulate, lowprec_order,
                              check_finite)
    else:
        work = _pow2_scaled(M) if M.dtype.kind in "fc" else M  # bad dtypes: whiten raises
        kw = {}
        if steps is not None:
            kw["steps"] = steps
        if coefficients is not None:
            kw["coefficients"] = coefficients
        if emulate is not None:
            kw["emulate"] = emulate
        O = np.asarray(ops.whiten(work, method=preset, backend=backend,
                                  check_finite=check_finite, **kw))
        zero = _fro(work) == 0
    O = np.where(zero, 0, O).astype(O.dtype)  # zero -> zero for every preset (spec 9.4)
    O = _axis_norm(O, norm_axis, m, n, second_moment_eps, share)
    if rule.name == "swan":
        f = _fro(O)
        with np.errstate(divide="ignore", invalid="ignore"):
            O = np.where(f > 0, O * (math.sqrt(m * n) / np.where(f > 0, f, 1)), 0)
    elif rule.name == "graft":
        g = _fro(M.astype(O.dtype))
        f = _fro(O)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            O = np.where(f > 0, O * (g / np.where(f > 0, f, 1)), 0)
    else:
        O = O * shape_factor(rule, m, n)
    if scale_factor != 1.0:
        O = O * scale_factor
    O = _gated(O, M, gate, int(stack_dims), gate_rescale)
    out = np.asarray(O).reshape(arr.shape).astype(in_dtype, copy=True)
    return restore(out)


def _stated_preset(preset, eps, eps_form, norm_scale, lowprec_order):
    """The preset with the stated epsilon, form and safety factor (None: nothing stated, the
    spec reading of 9.5 runs)."""
    from swanref.presets import catalogue as _catalogue  # `import swanref` loads no catalogue
    named = isinstance(preset, str) and (preset in _catalogue.PRESETS
                                         or preset in _catalogue.ROUTES)
    own_order = lowprec_order == (_catalogue.get_preset(preset).lowprec_order if named
                                  else "cast_then_normalise")
    if eps is None and eps_form is None and norm_scale is None \
            and (lowprec_order is None or own_order):
        return None
    if preset in ("svd", "eigh"):
        return None  # the polar factor of G / d is the polar factor of G
    if not named:
        raise ValueError(f"eps, eps_form, norm_scale and lowprec_order are stated for a "
                         f"production preset, not for method {preset!r}")
    p = _catalogue.get_preset(preset)
    changes = {}
    if eps is not None:
        changes["eps"] = real_number(eps, "eps", minimum=0.0)
    if eps_form is not None:
        if eps_form not in EPS_FORMS:
            raise ValueError(f"eps_form must be one of {', '.join(EPS_FORMS)}, got "
                             f"{eps_form!r}")
        if p.norm != "aol":  # AOL has no Frobenius normalisation: its eps is the row floor
            changes["norm"] = eps_form
    if norm_scale is not None:
        changes["norm_scale"] = real_number(norm_scale, "norm_scale", minimum=0.0)
    return dataclasses.replace(p, **changes)


def _run_stated(M, p, steps, coefficients, emulate, lowprec_order, check_finite):
    """The preset ``p`` on the raw gradient (its epsilon where the source puts it)."""
    from swanref.presets import catalogue as _catalogue  # as in _stated_preset
    sched = _catalogue.schedule(p.name, steps, coefficients)
    X = M
    if X.dtype.kind == "c":
        X = X.astype(np.complex128)
    elif X.dtype != np.float32 or emulate is None:
        X = X.astype(np.float64 if X.dtype != np.float32 else np.float32)
    if emulate in ("bfloat16", "float16") and X.dtype.kind == "f" and lowprec_order:
        # the claim's order replaces the preset's own (Preset.lowprec_order)
        p = dataclasses.replace(p, lowprec_order=lowprec_order)
    O = _catalogue.run_preset(X, p, sched, emulate, check_finite=check_finite)
    return np.asarray(O), _fro(X) == 0
