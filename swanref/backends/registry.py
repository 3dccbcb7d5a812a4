"""Backend registry: name -> module implementing docs/backends.md."""
from __future__ import annotations

import importlib

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
    """The default backend for NumPy input: the C++ core when built, else the reference."""
    return "cpp" if is_available("cpp") else "reference"
