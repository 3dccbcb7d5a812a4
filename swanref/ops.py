"""Public operators: input policy, readings and dispatch; arithmetic lives in the backends.

Section numbers refer to docs/spec.md.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
import warnings

import numpy as np

from swanref.backends import arrays as _arrays
from swanref.backends import registry as _backends
from swanref.backends.protocol import has as has_kernel
from swanref.spec.validate import (as_matrix_stack, clear_keyword_errors, compute_dtype,
                                   flag, iteration_count, nonfinite_error, real_number,
                                   preset_options, resolve_axis)
from swanref.spec.errors import DivergenceError, DivergenceWarning
from swanref.spec.readings import (ON_DIVERGENCE, SCALINGS, WHITEN_METHODS,
                       WHITEN_PRESETS, default_rank_rtol)

__all__ = ["grad_norm", "whiten", "swan_update", "sinkgd_update", "deferred_checks"]

#: eigenvalues of G G^T below EIGH_NOISE_FACTOR * max(m, n) * eps * l_1 are rounding noise
#: (measured up to 0.32 of max(m, n) * eps * l_1 on rank-deficient input; spec 3.2)
EIGH_NOISE_FACTOR = 8.0


# -- plumbing shared by every operator ------------------------------------------------------

def _check_method(method, name="method"):
    if not isinstance(method, str):
        raise TypeError(f"{name} must be a string naming a whitening method or preset, got "
                        f"{method!r}")


def _is_route(method) -> bool:
    """A hybrid or preconditioned route of swanref.presets.ROUTES (spec 9.6)."""
    # presets load on first use: `import swanref` stays without the catalogue and diagnosis
    from swanref.presets.catalogue import ROUTES
    return isinstance(method, str) and method in ROUTES


def _namespace(arr):
    if type(arr).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


# -- deferred checks (spec 6.7) ----------------------------------------------------------------

_DEFERRED = threading.local()


def _pending():
    """The open deferred_checks block's list of (ok flag, raise function), or None."""
    return getattr(_DEFERRED, "pending", None)


@contextlib.contextmanager
def deferred_checks():
    """Checks without host synchronisation: inside the block, the input finite check (where the
    backend keeps it as a device flag: the CuPy backend) and the divergence guard of the
    iterative methods (``on_divergence='raise'``) leave their flags on the device and the calls
    return at once; all flags are read in one synchronisation when the block ends, where the
    first failing call (in call order) raises the error it would have raised at once, same
    type and message (spec 6.7). After an error the block's results must be discarded. Calls
    with ``check_finite=False`` or ``on_divergence`` 'warn'/'fallback' check at once, as
    outside the block. Nested blocks report at the end of the outermost one."""
    if _pending() is not None:
        yield
        return
    _DEFERRED.pending = []
    try:
        yield
    except BaseException:
        _DEFERRED.pending = None
        raise
    pending, _DEFERRED.pending = _DEFERRED.pending, None
    _resolve(pending)


def _resolve(pending):
    if not pending:
        return
    flags = [ok for ok, _ in pending]
    device = [f for f in flags if hasattr(f, "get")]
    if device:  # one device-to-host copy for all of them
        cp = _namespace(device[0])
        try:
            read = iter(cp.stack([f.reshape(()) for f in device]).get().tolist())
        except Exception:  # flags on several devices: one copy each
            read = iter([bool(f.get()) for f in device])
        flags = [next(read) if hasattr(f, "get") else f for f in flags]
    for ok, (_, fail) in zip(flags, pending):
        if not bool(ok):
            fail()


def _defer(ok, fail) -> bool:
    """Queue ``(ok, fail)`` in the open block; False (nothing queued) outside one."""
    pending = _pending()
    if pending is None:
        return False
    pending.append((ok, fail))
    return True


def _raise_nonfinite(count_fn, name="G"):
    raise nonfinite_error(int(count_fn()), name)


class _Call:
    """One public call: validated input in its compute dtype, the backend, the way back."""

    def __init__(self, G, backend, check_finite, allow_complex=False):
        self.check_finite = flag(check_finite, "check_finite")  # before any array work
        raw, self.backend_name, self._restore = _arrays.to_backend(G, backend)
        arr = as_matrix_stack(raw, allow_complex=allow_complex)
        if arr.dtype.kind == "c" and self.backend_name != "reference":
            # complex input: the NumPy reference only (spec 9.7); the C++ core is real-only
            if backend is not None or _namespace(arr) is not np:
                raise TypeError(f"complex input runs on backend='reference' only; the "
                                f"{self.backend_name!r} backend is real-only")
            self.backend_name = "reference"
        self.in_dtype = arr.dtype
        self.xp = _namespace(arr)
        self.be = _backends.get(self.backend_name)
        self.dtype = compute_dtype(arr.dtype, allow_complex=allow_complex)
        self.eps = float(np.finfo(self.dtype).eps)
        self.array = arr.astype(self.dtype, copy=False)
        # GradNorm and SinkGD check finiteness on their result where the backend's kernels
        # propagate NaN/Inf (spec 6.4), else on the input before the kernel
        self.check_after = self.check_finite and getattr(self.be, "NONFINITE_PROPAGATES", False)

    def masked(self, arr, ndim_core, name="G", defer=False):
        """Zero the slices (over the last ``ndim_core`` axes) holding NaN/Inf (spec 6.2).
        ``defer``: inside deferred_checks with check_finite, queue the backend's device flag
        instead of reading it (spec 6.7)."""
        xp = self.xp
        if (defer and self.check_finite and has_kernel(self.be, "finite_flag")
                and _defer(self.be.finite_flag(arr),
                           functools.partial(_raise_nonfinite,
                                             lambda: arr.size - int(xp.isfinite(arr).sum()), name))):
            return arr, None
        if has_kernel(self.be, "all_finite") and self.be.all_finite(arr):
            return arr, None  # one pass over arr, no boolean temporary
        axes = tuple(range(arr.ndim - ndim_core, arr.ndim))
        good = xp.isfinite(arr).all(axis=axes)
        if bool(good.all()):
            return arr, None
        if self.check_finite:
            raise nonfinite_error(int(arr.size - int(xp.isfinite(arr).sum())), name)
        keep = good.reshape(good.shape + (1,) * ndim_core)
        return xp.where(keep, arr, 0).astype(arr.dtype), keep

    def checked_after(self, kernel, arr, ndim_core, name="G"):
        """``kernel()`` when its result is finite, for the kernels that are plain arithmetic
        (GradNorm, SinkGD: safe on NaN/Inf, finite input gives finite output).  The finite
        check then runs on the result, that is on the values the kernel actually read: a NaN
        written into G by another thread during the call is an error, never a NaN result
        (spec 6.4).  A non-finite result raises what the check on G raises, or, when G is
        finite again by then, says that G changed during the call."""
        out = kernel()
        if has_kernel(self.be, "all_finite"):
            finite = self.be.all_finite(out)
        else:
            finite = bool(self.xp.isfinite(out).all())
        if finite:
            return out
        self.masked(arr, ndim_core, name)  # raises ValueError naming the count if G holds NaN
        raise ValueError(f"{name} changed during the call: the operator read a non-finite "
                         f"value that is no longer there; {name} must not be written while a "
                         "call reads it (spec 6.4)")

    def unmask(self, out, keep):
        if keep is None:
            return out
        return self.xp.where(keep, out, self.xp.nan).astype(out.dtype)

    def finish(self, out):
        return self._restore(out.astype(self.in_dtype, copy=False))


# -- 2. GradNorm -----------------------------------------------------------------------------

def _grad_norm_core(call: _Call, arr, axis, eps):
    ax = resolve_axis(axis, arr.shape)
    work = arr if ax == -1 else call.xp.swapaxes(arr, -1, -2)
    out = None
    if has_kernel(call.be, "grad_norm_finite"):
        # the backend applies the finite-input policy inside the operator (no pass over G)
        if call.check_finite and _pending() is not None and call.xp is not np:
            out, ok = call.be.grad_norm_finite(work, eps, True, defer=True)  # ok: device flag
            xp = call.xp
            _defer(ok, functools.partial(
                _raise_nonfinite, lambda: work.size - int(xp.isfinite(work).sum())))
            return out if ax == -1 else xp.swapaxes(out, -1, -2)
        out, ok = call.be.grad_norm_finite(work, eps, call.check_finite)
        if not ok:
            out = None  # non-finite input and check_finite: the masked path raises
    if out is None and call.check_after:
        out = call.checked_after(lambda: call.be.grad_norm(work, eps), work, 1)
    if out is None:
        work, keep = call.masked(work, 1)
        out = call.unmask(call.be.grad_norm(work, eps), keep)
    return out if ax == -1 else call.xp.swapaxes(out, -1, -2)


@clear_keyword_errors
def grad_norm(G, *, axis=-1, eps=0.0, backend=None, check_finite=True):
    r"""GradNorm: standardise each row of ``G`` (spec section 2).

    .. math:: \mathrm{GradNorm}(G)_{ij} = \frac{G_{ij} - \mu_i}{\sqrt{v_i + \epsilon}},\quad
              \mu_i = \tfrac1n \textstyle\sum_j G_{ij},\quad v_i = \tfrac1n \sum_j (G_{ij}-\mu_i)^2

    (Ma et al. 2024, SWAN; restated by Gong et al. 2025, App. B.7, eq. 30.)  A row whose
    entries are all equal maps to zeros, so finite input never gives NaN.

    Parameters
    ----------
    G : array_like, shape (..., m, n)
        Gradient(s); float64/float32 computed natively, float16/bfloat16 in float32.
    axis : {-1, -2, 'long'}
        Axis the statistics run over.  -1 (default): over the n entries of each row, the
        paper's (out, in) convention.  -2: per column.  'long': the longer matrix axis.
    eps : float, default 0
        Added to the variance (``sqrt(v + eps)``); the paper has none.
    backend : {None, 'reference', 'cpp', 'cupy'}
        None picks the C++ core for NumPy input when built, else the reference.
    check_finite : bool, default True
        Raise ValueError on NaN/Inf; if False, rows with NaN/Inf come back as NaN.

    Returns
    -------
    ndarray of G's shape and dtype.
    """
    native = _grad_norm_bfloat16(G, axis, eps, backend, check_finite)
    if native is not None:
        return native
    call = _Call(G, backend, check_finite)
    eps = real_number(eps, "eps", minimum=0.0)
    return call.finish(_grad_norm_core(call, call.array, axis, eps))


def _grad_norm_bfloat16(G, axis, eps, backend, check_finite):
    """GradNorm of a bfloat16 GPU tensor read and written natively by the backend (no widened
    copy; the same float32 arithmetic and one rounding, so the same result as the general
    path), or None: any other input, or non-finite input with check_finite, which the general
    path then reports."""
    got = _arrays.bfloat16_words(G, backend)
    if got is None:
        return None
    words, restore = got
    be = _backends.get("cupy")
    if not has_kernel(be, "grad_norm_bf16_finite") or words.ndim < 2 or 0 in words.shape[-2:]:
        return None
    check = flag(check_finite, "check_finite")
    eps = real_number(eps, "eps", minimum=0.0)
    ax = resolve_axis(axis, words.shape)
    work = words if ax == -1 else words.swapaxes(-1, -2)
    if check and _pending() is not None:
        out, ok = be.grad_norm_bf16_finite(work, eps, True, defer=True)  # ok: device flag
        _defer(ok, functools.partial(_raise_nonfinite,
                                     lambda: be.bfloat16_nonfinite_count(work)))
    else:
        out, ok = be.grad_norm_bf16_finite(work, eps, check)
        if not ok:
            return None
    return restore(out if ax == -1 else out.swapaxes(-1, -2))


# -- 3. GradWhitening --------------------------------------------------------------------------

def whiten_params(method, steps, beta, scaling, rank_rtol, on_divergence):
    """(method spec, parameters with defaults applied and validated) of a whitening method
    (one resolution for swanref.whiten and swanref.jax.whiten)."""
    _check_method(method)
    if method not in WHITEN_METHODS:
        raise ValueError(
            f"unknown whitening method {method!r}; choose one of {', '.join(WHITEN_METHODS)}"
            f" or a preset ({', '.join(WHITEN_PRESETS)})")
    spec = WHITEN_METHODS[method]
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence must be one of {ON_DIVERGENCE}, got {on_divergence!r}")
    given = {"steps": steps, "beta": beta, "scaling": scaling, "rank_rtol": rank_rtol}
    for key, value in given.items():
        if value is not None and key not in spec.defaults:
            raise ValueError(f"{key} does not apply to method {method!r}")
    params = {k: (given[k] if given[k] is not None else spec.defaults[k]) for k in spec.defaults}
    if spec.kind == "iterative":
        params["steps"] = iteration_count(params["steps"], "steps")
        params["beta"] = real_number(params["beta"], "beta", minimum=0.0, strict=True)
        if params["scaling"] not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {params['scaling']!r}")
    elif params["rank_rtol"] is not None:
        params["rank_rtol"] = real_number(params["rank_rtol"], "rank_rtol", minimum=0.0)
        if params["rank_rtol"] >= 1.0:  # s_i <= s_1 always: 1 or more would drop every one
            raise ValueError(f"rank_rtol must be < 1 (singular values s_i <= rank_rtol * s_1 "
                             f"count as zero), got {params['rank_rtol']}")
    return spec, params


def divergence_bound(beta: float, scaling: str, G=None, xp=np):
    """Largest output singular value a convergent run can reach (spec 3.5).

    For a scaled eigenvalue p in [0, 3] the scalar map p -> beta^2 (3 - p)^2 p stays below
    max(p, 4 beta^2), so output singular values stay below max(1, 2 beta) when the scaled
    Gram matrix has spectral radius <= 1 (scalings 'gram_fro', 'grad_fro').  With
    scaling='none' the initial radius is bounded by ||G||_F^2 instead.
    """
    bound = max(1.0, 2.0 * beta)
    if scaling == "none" and G is not None:
        fro = xp.sqrt(xp.sum(xp.abs(G).astype(np.float64) ** 2, axis=(-2, -1)))
        return xp.maximum(bound, fro)
    return bound


def _diverged(out, work, params, xp, be=None):
    r = min(work.shape[-2:])
    limit = 1.01 * divergence_bound(params["beta"], params["scaling"], work, xp) * math.sqrt(r)
    if be is not None and has_kernel(be, "fro_norms"):
        fro = be.fro_norms(out)  # one float64 reduction, no temporaries
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            fro = xp.sqrt(xp.sum(xp.abs(out).astype(np.float64) ** 2, axis=(-2, -1)))
    return ~xp.isfinite(fro) | (fro > limit)


def _whiten_preset_core(call: _Call, arr, method, steps, beta, scaling, rank_rtol,
                        on_divergence, coefficients, emulate):
    """Production presets (docs/presets.md): NumPy only, the preset's own transpose rule.

    Polynomial presets without emulation run on the backend's ``whiten_polynomial`` kernel
    when it has one (the C++ core); everything else on the reference transcription.
    """
    from swanref.presets import catalogue as presets  # on first use, as in _is_route
    steps = preset_options(method, steps, beta, scaling, rank_rtol, on_divergence)
    presets.check_emulate(emulate)  # before any array is looked at
    work, keep = call.masked(arr, 2, defer=True)
    preset = presets.get_preset(method)
    if call.xp is np:
        # exact power-of-two rescale where the norm's squares would overflow: the same input
        # for the backend kernel and the reference transcription (spec 6.3)
        work = presets.prescale_huge(
            work, whole=preset.norm_over == "all",
            fmt=preset.compute_dtype if emulate == "source" else emulate)
    fast = call.be.whiten_polynomial if has_kernel(call.be, "whiten_polynomial") else None
    fmt = emulate
    if fmt == "source":
        fmt = None if preset.compute_dtype == "input" else preset.compute_dtype
    # a backend listing LOWPREC_FORMATS runs those emulations natively (same rounding model)
    native = fmt is None or fmt in getattr(call.be, "LOWPREC_FORMATS", ())
    if fast is not None and native and presets.polynomial_kernel_runs(preset):
        # the backend's polynomial kernel computes the same function (tests/test_cpp_presets.py,
        # tests/test_gpu_presets.py)
        sched = np.asarray(presets.schedule(method, steps, coefficients),
                           dtype=np.float64).reshape(-1, 3)
        tall = work.shape[-2] > work.shape[-1]
        w = call.xp.swapaxes(work, -1, -2) if tall else work
        extra = {} if fmt is None else {"emulate": fmt, "form": preset.form}
        out = fast(w, sched, preset.norm, preset.eps, preset.norm_scale, **extra)
        out = call.xp.swapaxes(out, -1, -2) if tall else out
    elif call.xp is not np:
        raise ValueError(f"preset {method!r} with emulate={emulate!r} runs on NumPy arrays only "
                         "(swanref.presets); the GPU backend runs the polynomial presets "
                         "without emulation or with emulate='bfloat16'/'float16'")
    else:
        # the transcription itself: the input was normalised and masked above
        out = presets.run_preset_unchecked(work, preset,
                                           presets.schedule(method, steps, coefficients), emulate)
    return call.unmask(out, keep)


def _whiten_core(call: _Call, arr, method, steps=None, beta=None, scaling=None, rank_rtol=None,
                 on_divergence="raise", coefficients=None, emulate=None, method_name="method",
                 defer_finite=True):
    _check_method(method, method_name)
    if (method in WHITEN_PRESETS and method not in WHITEN_METHODS) or _is_route(method):
        return _whiten_preset_core(call, arr, method, steps, beta, scaling, rank_rtol,
                                   on_divergence, coefficients, emulate)
    if coefficients is not None or emulate is not None:
        raise ValueError(f"coefficients and emulate apply to the presets only, not to method "
                         f"{method!r}")
    spec, params = whiten_params(method, steps, beta, scaling, rank_rtol, on_divergence)
    xp, be = call.xp, call.be
    tall = arr.shape[-2] > arr.shape[-1]
    work = xp.swapaxes(arr, -1, -2) if tall else arr  # backends see m <= n (spec 3.0)
    iterative = method in ("newton_schulz", "nsds")
    if defer_finite and iterative and has_kernel(be, "finite_flag"):
        # a device-side flag, read together with the divergence flags: one host sync per call
        # instead of two; non-finite input is rerun through the checked path below
        finite, keep = be.finite_flag(work), None
    else:
        finite = None
        work, keep = call.masked(work, 2)
    m, n = work.shape[-2:]
    default_rtol = default_rank_rtol(m, n, call.eps)

    def exact_svd(x):
        rtol = params.get("rank_rtol")
        return be.whiten_svd(x, default_rtol if rtol is None else rtol)

    if method == "svd":
        out = exact_svd(work)
    elif method == "eigh":
        rtol = params["rank_rtol"]
        floor = EIGH_NOISE_FACTOR * default_rtol  # Gram rounding noise stays out (spec 3.2)
        out = be.whiten_eigh(work, floor if rtol is None else max(rtol ** 2, floor))
    else:
        fn = be.whiten_newton_schulz if method == "newton_schulz" else be.whiten_nsds
        out = fn(work, params["steps"], params["beta"], params["scaling"])
        bad = _diverged(out, work, params, xp, be)
        if keep is not None:
            bad = bad & keep[..., 0, 0]
        if (call.check_finite and on_divergence in ("raise", "ignore")
                and _defer(_deferred_ok(xp, finite, bad, on_divergence),
                           functools.partial(_deferred_failure, xp, finite, out, work, bad,
                                             method, params))):
            return xp.swapaxes(out, -1, -2) if tall else out
        if finite is None:
            any_bad = bool(bad.any())
        else:
            flags = xp.stack([finite, bad.any()])
            finite, any_bad = (bool(v) for v in (flags.get() if hasattr(flags, "get") else flags))
            if not finite:  # spec 6.2: raise, or NaN for the non-finite slices
                return _whiten_core(call, arr, method, steps, beta, scaling, rank_rtol,
                                    on_divergence, coefficients, emulate, method_name,
                                    defer_finite=False)
        if any_bad and on_divergence != "ignore":
            out = _handle_divergence(out, work, bad, method, params, on_divergence,
                                     exact_svd, xp)
    out = call.unmask(out, keep)
    return xp.swapaxes(out, -1, -2) if tall else out


def _deferred_ok(xp, finite, bad, on_divergence):
    """The flag deferred_checks reads: input finite (device flag, or None: checked at once)
    and, with on_divergence='raise', no slice diverged."""
    ok = ~bad.any() if on_divergence == "raise" else xp.asarray(True)
    return ok if finite is None else ok & finite


def _deferred_failure(xp, finite, out, work, bad, method, params):
    """Raise what the call would have raised at once (same order: the finite check first)."""
    if finite is not None and not bool(finite):
        raise nonfinite_error(int(work.size - int(xp.isfinite(work).sum())))
    _handle_divergence(out, work, bad, method, params, "raise", None, xp)


def _handle_divergence(out, work, bad, method, params, policy, exact_svd, xp):
    flat_bad = xp.nonzero(bad.reshape(-1))[0]
    idx = [int(i) for i in (flat_bad.get() if hasattr(flat_bad, "get") else flat_bad)]
    total = int(bad.size)
    what = (f"{method}(steps={params['steps']}, beta={params['beta']}, "
            f"scaling={params['scaling']!r}) diverged on {len(idx)} of {total} slice(s) "
            f"(flat batch indices {idx[:10]}{'...' if len(idx) > 10 else ''}): output "
            "non-finite or its Frobenius norm above the bound of spec 3.5")
    if policy == "raise":
        raise DivergenceError(
            what + "; use float64, fewer steps, method='svd', or on_divergence='fallback'",
            idx)
    flat = out.reshape((-1,) + out.shape[-2:]).copy()
    if policy == "warn":
        warnings.warn(what + "; those slices are set to NaN", DivergenceWarning, stacklevel=4)
        flat[idx] = xp.nan
    else:  # fallback
        warnings.warn(what + "; those slices were recomputed with method='svd'",
                      DivergenceWarning, stacklevel=4)
        src = work.reshape((-1,) + work.shape[-2:])[idx]
        flat[idx] = exact_svd(src)
    return flat.reshape(out.shape)


@clear_keyword_errors
def whiten(G, method="svd", *, steps=None, beta=None, scaling=None, rank_rtol=None,
           on_divergence="raise", backend=None, check_finite=True, coefficients=None,
           emulate=None):
    r"""GradWhitening: :math:`(G G^T)^{-1/2} G`, the polar factor of ``G`` (spec section 3).

    For ``G = U S V^T`` of rank r the exact result is the partial isometry ``U_r V_r^T``; a
    tall ``G`` (m > n) is whitened as ``G (G^T G)^{-1/2}``, which is the same polar factor.

    Parameters
    ----------
    G : array_like, shape (..., m, n)
    method : {'svd', 'eigh', 'newton_schulz', 'nsds'}
        'svd' (default, error ~ kappa eps) and 'eigh' (Gram eigendecomposition, error ~
        kappa^2 eps) are exact.  'newton_schulz' is the paper's coupled iteration on
        ``G G^T`` (SWAN Alg. 2; Gong et al. 2025 App. B.8).  'nsds' is the reconstructed
        diagonal-substitution variant.
    steps, beta, scaling : iterative methods only
        Number of iterations, step size and pre-scaling reading ('gram_fro': Y0 = A/||A||_F,
        'grad_fro': A/||G||_F^2, 'none').  Defaults: see ``swanref.spec.readings.WHITEN_METHODS``.
    rank_rtol : float, exact methods only
        Singular values ``s_i <= rank_rtol * s_1`` count as zero.  Default max(m, n) * eps.
    on_divergence : {'raise', 'warn', 'fallback', 'ignore'}
        What an iterative method does when the divergence guard (spec 3.5) fires:
        raise DivergenceError; warn and return NaN for that slice; warn and recompute it with
        'svd'; or return the raw iterate.
    backend, check_finite : as in :func:`grad_norm`.
    coefficients, emulate : presets only
        ``method`` may also name a production preset of ``swanref.presets`` ('muon_ns5',
        'torch_muon', 'polar_express', 'polar_express_nanogpt', 'cubic', 'custom', ...; see
        docs/presets.md).  ``steps`` then overrides the preset's step count,
        ``coefficients=[(a, b, c), ...]`` its schedule (required for 'custom'), and
        ``emulate='bfloat16'|'float16'|'source'`` rounds like PyTorch eager on a GPU.
        Presets run in NumPy whatever the backend, with no divergence guard.
    """
    if isinstance(emulate, str) and emulate == "bfloat16" and isinstance(method, str) \
            and ((method in WHITEN_PRESETS and method not in WHITEN_METHODS)
                 or _is_route(method)):
        got = _arrays.bfloat16_words(G, backend)
        if got is not None and got[0].ndim >= 2 and 0 not in got[0].shape[-2:]:
            call = _Bfloat16Call(got, check_finite)
            try:
                return call.finish(_whiten_preset_core(call, call.array, method, steps, beta,
                                                       scaling, rank_rtol, on_divergence,
                                                       coefficients, emulate))
            except _Widen:
                pass  # non-finite input: the general path reports it as it always has
    call = _Call(G, backend, check_finite, allow_complex=True)
    out = _whiten_core(call, call.array, method, steps, beta, scaling, rank_rtol, on_divergence,
                       coefficients, emulate)
    return call.finish(out)


class _Widen(Exception):
    """The bfloat16-word path hands the call back to the general (widening) path."""


class _Bfloat16Call:
    """A bfloat16 GPU tensor given to the CuPy backend as its 16-bit words (uint16), for the
    presets' native bfloat16 kernels, which read and return words: no float32 copy in either
    direction, bitwise the widening path's result. The parts of :class:`_Call` that
    _whiten_preset_core uses; non-finite input raises _Widen."""

    def __init__(self, got, check_finite):
        self.check_finite = flag(check_finite, "check_finite")
        self.array, self._restore = got
        self.xp = _namespace(self.array)
        self.be = _backends.get("cupy")
        self._finite = None

    def masked(self, arr, ndim_core, name="G", defer=False):
        flag_ = self.be.bfloat16_finite_flag(arr)
        if defer and self.check_finite and _defer(
                flag_, functools.partial(_raise_nonfinite,
                                         lambda: self.be.bfloat16_nonfinite_count(arr), name)):
            return arr, None
        # read in finish, after the operator's launches: one synchronisation at the end of the
        # call, the launches overlapping the GPU work (non-finite input: the result is dropped)
        self._finite = flag_
        return arr, None

    def unmask(self, out, keep):
        return out

    def finish(self, out):
        if self._finite is not None and not bool(self._finite):
            raise _Widen()
        return self._restore(out)


# -- 4. SWAN update, 5. SinkGD --------------------------------------------------------------------

def _rescale_to_rms_one(xp, d, be=None):
    """``sqrt(m n) d / ||d||_F`` per slice; a zero slice stays zero (spec 4, step 3)."""
    m, n = d.shape[-2:]
    if be is not None and has_kernel(be, "fro_norms"):
        # the backend's per-matrix norms (on the GPU a plain reduction over both trailing axes
        # ran each matrix on one SM)
        fro = be.fro_norms(d).astype(d.dtype)[..., None, None]
    else:
        fro = xp.sqrt(xp.sum(d * d, axis=(-2, -1), keepdims=True))
    scale = xp.where(fro > 0, math.sqrt(m * n) / xp.where(fro > 0, fro, 1), 0)
    return (d * scale).astype(d.dtype)


@clear_keyword_errors
def swan_update(G, *, lr=1.0, whiten_method="newton_schulz", rescale=True, axis=-1, eps=0.0,
                steps=None, beta=None, scaling=None, rank_rtol=None, on_divergence="raise",
                backend=None, check_finite=True):
    r"""The SWAN step for one weight matrix: ``W_new = W - swan_update(G, lr=lr)`` (spec 4).

    ``lr * R(GradWhitening(GradNorm(G)))`` where R rescales to ``sqrt(m n) / ||.||_F`` (RMS
    one per entry) when ``rescale`` is true.  No state is kept.  The intermediate GradNorm
    result stays in the compute dtype (never rounded to a bfloat16/float16 input dtype).
    """
    rescale = flag(rescale, "rescale")
    call = _Call(G, backend, check_finite)
    lr = real_number(lr, "lr")
    eps = real_number(eps, "eps", minimum=0.0)
    g = _grad_norm_core(call, call.array, axis, eps)
    d = _whiten_core(call, g, whiten_method, steps, beta, scaling, rank_rtol, on_divergence,
                     method_name="whiten_method")
    if rescale:
        d = _rescale_to_rms_one(call.xp, d, call.be)
    return call.finish((lr * d).astype(d.dtype))


@clear_keyword_errors
def sinkgd_update(G, *, iters=5, lr=1.0, backend=None, check_finite=True):
    r"""The SinkGD step (Scetbon, Ma, Gong, Meeds 2025): ``lr * SR-Sinkhorn(G, iters)`` (spec 5).

    Each iteration scales every row to l2 norm sqrt(n), then every column to sqrt(m);
    zero rows/columns stay zero.  ``W_new = W - sinkgd_update(G, lr=lr)``.
    """
    call = _Call(G, backend, check_finite)
    iters = iteration_count(iters, "iters")
    lr = real_number(lr, "lr")
    if call.check_after:
        out = call.checked_after(lambda: call.be.sinkgd(call.array, iters), call.array, 2)
    else:
        work, keep = call.masked(call.array, 2)
        out = call.unmask(call.be.sinkgd(work, iters), keep)
    return call.finish((lr * out).astype(out.dtype))
