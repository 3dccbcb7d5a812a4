"""The C++ backend: ``swanref._core`` (pybind11) wrapped into the backend protocol.

See ``docs/backends.md`` for the protocol and ``docs/architecture.md`` for the design. Every
function takes a float32/float64 NumPy array of shape ``(*batch, m, n)`` with any strides and
returns a new C-contiguous array of the same dtype and shape; the input is never written.
The BLAS/LAPACK calls go to SciPy's OpenBLAS (the function table is filled from SciPy's
``cython_blas``/``cython_lapack`` capsules), so ``threadpoolctl`` controls their threads.
"""

from __future__ import annotations

name = "cpp"
#: grad_norm and sinkgd give a non-finite result for non-finite input (the finite check may run
#: on their output: spec 6.4; tests/test_bad_input_matrix.py's NaN/Inf cells check it)
NONFINITE_PROPAGATES = True


def _interruption(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt / SystemExit (any BaseException that is not an Exception) behind
    ``exc``: pybind11 reports an exception raised while the module initialises as
    ``ImportError("initialization failed")`` caused by it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if not isinstance(exc, Exception):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


try:  # the extension may be missing (pure-Python install) or fail to load
    from swanref import _core
except ImportError as exc:  # pragma: no cover - depends on the build
    stop = _interruption(exc)
    if stop is not None:
        # Ctrl-C (or SystemExit) during the first load says nothing about this installation:
        # let it propagate. The failed import leaves this module out of sys.modules, so the
        # next use loads the core again instead of finding it marked unavailable for good.
        raise stop.with_traceback(stop.__traceback__) from None
    _core = None
    import_error: BaseException | None = exc
else:
    import_error = None


def available() -> bool:
    """True when the compiled core imported and its BLAS/LAPACK table is complete."""
    if _core is None:
        return False
    try:
        return bool(_core.blas_info()["complete"])
    except Exception:  # pragma: no cover - defensive
        return False


def watchdog():
    """A fresh ``swanref._core.Watchdog`` (a process deadline that fires even while another
    thread holds the GIL), or None without the compiled core."""
    make = getattr(_core, "Watchdog", None)
    return make() if make is not None else None


def built() -> bool:
    """Was the compiled core built into this installation (whether or not it loads)?

    Only "no module named swanref._core" means a pure-Python install; any other import error
    (a missing symbol, a wrong architecture) is a broken build that must not go unnoticed.
    """
    if _core is not None:
        return True
    return not (isinstance(import_error, ModuleNotFoundError)
                and import_error.name == "swanref._core")


def source_tree(package_dir=None) -> str:
    """The checkout this swanref was imported from ('' when it is an installed package).

    A directory holding ``pyproject.toml`` and ``cpp/`` next to the package is the source
    tree: running ``python -m swanref`` (or ``import swanref``) inside it picks up the
    sources, which have no compiled core, ahead of the installed package.
    """
    from pathlib import Path
    pkg = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parents[1]
    root = pkg.parent
    if (root / "pyproject.toml").is_file() and (root / "cpp").is_dir():
        return str(root)
    return ""


def _core_absent(exc) -> bool:
    """Does ``exc`` say the compiled module is simply not there (not a broken build)?"""
    if isinstance(exc, ModuleNotFoundError):
        return exc.name == "swanref._core"
    return isinstance(exc, ImportError) and "cannot import name '_core'" in str(exc)


def source_tree_hint(package_dir=None) -> str:
    """A warning with the fix when the core is missing because the source tree was imported."""
    root = source_tree(package_dir)
    if not root:
        return ""
    if package_dir is None and (_core is not None or not _core_absent(import_error)):
        return ""  # loaded, or a broken build (its own error says more)
    return (f"swanref was imported from its source tree {root} (as `python -m swanref` run "
            "inside the checkout does: the current directory comes first on sys.path), which "
            "has no compiled C++ core: only the reference backend runs. Fix: run the installed "
            "`swanref` command from another directory, or build the core in place with "
            "`pip install -e .`")


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    if _core is None:
        hint = source_tree_hint()
        return hint or f"swanref._core failed to import: {import_error!r}"
    info = _core.blas_info()
    if not info["complete"]:
        return info["error"] or f"BLAS/LAPACK entries missing: {info['missing']}"
    return ""


def _require():
    if _core is None:
        raise RuntimeError(unavailable_reason())
    return _core


def grad_norm(G, eps):
    """Row standardisation over the last axis, population std, eps added to the variance."""
    return _require().grad_norm(G, eps)


def whiten_svd(G, sigma_rtol):
    """U_r V_r^T from the thin SVD, keeping s_i > sigma_rtol * s_1 (zero matrix -> zeros)."""
    return _require().whiten_svd(G, sigma_rtol)


def whiten_eigh(G, lambda_rtol):
    """Q_r diag(l_r^-1/2) Q_r^T G from eigh(G G^T), keeping l_i > lambda_rtol * l_max."""
    return _require().whiten_eigh(G, lambda_rtol)


def whiten_newton_schulz(G, steps, beta, scaling):
    """Coupled Newton-Schulz whitening; scaling in {"gram_fro", "grad_fro", "none"}."""
    return _require().whiten_newton_schulz(G, steps, beta, scaling)


def whiten_nsds(G, steps, beta, scaling):
    """Newton-Schulz with diagonal substitution (elementwise recurrence on diag(G G^T)/c)."""
    return _require().whiten_nsds(G, steps, beta, scaling)


def sinkgd(G, iters):
    """SR-Sinkhorn: iters x (rows to l2 norm sqrt(n), then columns to l2 norm sqrt(m))."""
    return _require().sinkgd(G, iters)


def whiten_polynomial(G, coefficients, norm, eps, norm_scale):
    """Muon-style polynomial Newton-Schulz of the presets (m <= n; docs/presets.md)."""
    return _require().whiten_polynomial(G, coefficients, norm, eps, norm_scale)
