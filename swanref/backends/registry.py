"""Backend registry: name -> module implementing docs/backends.md."""
from __future__ import annotations

import importlib
import warnings

_MODULES = {
    "reference": "swanref.backends.reference",
    "cpp": "swanref.backends.cpp",
    "cupy": "swanref.backends.cupy",
}
_cache: dict[str, object] = {}


def names() -> tuple[str, ...]:
    return tuple(_MODULES)


def get(name: str):
    """The backend module called ``name``; ValueError if unknown or unavailable here."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    if name not in _cache:
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            raise ValueError(f"backend {name!r} is not available: {exc}") from exc
        if not module.available():
            raise ValueError(f"backend {name!r} is not available on this machine")
        _cache[name] = module
    return _cache[name]


def is_available(name: str) -> bool:
    try:
        get(name)
    except ValueError:
        return False
    return True


def available() -> tuple[str, ...]:
    """Names of the backends that work in this process."""
    return tuple(n for n in _MODULES if is_available(n))


def default_cpu() -> str:
    """The default backend for NumPy input: the C++ core when built, else the reference.

    Falling back is never silent: when the compiled core is present but fails to import or
    its BLAS table is incomplete, a RuntimeWarning says why (once per process).
    """
    if is_available("cpp"):
        return "cpp"
    _warn_fallback()
    return "reference"


_warned = False


def _warn_fallback() -> None:
    global _warned
    if _warned:
        return
    from swanref.backends import cpp  # loads the compiled core: only when it is selected
    reason = cpp.unavailable_reason()
    if cpp.built():  # a pure-Python install has no core to lose: nothing to warn about
        warnings.warn(f"swanref: the C++ core is unusable ({reason}); falling back to the "
                      "NumPy reference backend", RuntimeWarning, stacklevel=3)
    _warned = True
